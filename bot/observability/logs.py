"""Logging: one line per event, each carrying the call's ids when it belongs to a call.

Call code runs inside ``logger.contextualize(call_sid=..., stream_sid=...)``; Pipecat's tasks
inherit that context, so their lines carry the ids too. ``LOG_FORMAT=json`` writes one JSON
object per line for log platforms. Secrets are never formatted into messages (settings hold
them as ``SecretStr``, which prints as ``**********``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any

from loguru import logger

TEXT_FORMAT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <7}</level> | "
    "{extra[ids]}<cyan>{name}</cyan> - <level>{message}</level>"
)


def _add_ids(record: dict[str, Any]) -> None:
    extra = record["extra"]
    call_sid, stream_sid = extra.get("call_sid"), extra.get("stream_sid")
    extra["ids"] = f"call={call_sid} stream={stream_sid} | " if call_sid or stream_sid else ""


def _json_sink(message: Any) -> None:
    record = message.record
    line = {
        "time": record["time"].isoformat(),
        "level": record["level"].name,
        "logger": record["name"],
        "message": record["message"],
        "call_sid": record["extra"].get("call_sid"),
        "stream_sid": record["extra"].get("stream_sid"),
    }
    if record["exception"]:
        line["exception"] = str(record["exception"].value)
    sys.stderr.write(json.dumps(line) + "\n")


def setup_logging(level: str = "INFO", fmt: str = "text", secrets: Iterable[str] = ()) -> None:
    """Replace loguru's default sink with ours (text or JSON).

    ``secrets`` are masked in every message as a second line of defence: nothing should
    format them into a message in the first place.
    """
    from bot.observability.records.redaction import Redactor, mask_values

    redactor = Redactor(list(secrets))

    def patch(record: Any) -> None:
        _add_ids(record)
        redactor.patch_log_record(record)
        # A call runs in ``logger.contextualize(masked=<list>)`` and adds its keypad entries
        # once keyed: they are masked in every line it logs.
        masked = record["extra"].get("masked")
        if masked:
            record["message"] = mask_values(record["message"], masked)

    logger.remove()
    logger.configure(patcher=patch)
    if fmt == "json":
        logger.add(_json_sink, level=level.upper())
    else:
        logger.add(sys.stderr, level=level.upper(), format=TEXT_FORMAT)
