"""Transfer to a human: the outcome under the CallSid, and Exotel's two questions about it.

The flow drawn in Exotel is Voicebot -> Passthru (sync) -> on 302 a Connect applet whose
"Dial whom" is our URL. After ``transfer_call`` the call records ``transferred`` here and
closes the stream; Exotel then asks Passthru (we answer 302 for a transferred call, 200 for
every other, unknown CallSids included) and the Connect URL (the department's numbers, or
``"numbers": []``, Exotel's "nobody dialled" branch). Both answers come from the state store
only (the caller waits in silence), and both are idempotent: nothing is deleted on read, the
entry simply expires after 10 minutes.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from loguru import logger

from bot.config import ConfigError
from bot.state.base import StateStore, StateUnavailable

TRANSFER_TTL_SECS = 600
DEFAULT_DEPARTMENT = "default"
DEFAULT_CONNECT_PLAYBACK = "Connecting you to an agent."
MAX_RINGING_SECS = 45
_NUMBER = re.compile(r"^\+?[0-9]{6,15}$")
_DEPARTMENT = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@dataclass(frozen=True)
class TransferRecord:
    """Why and where a call was transferred, and when (unix seconds)."""

    reason: str
    department: str | None
    at: float


def transfer_key(call_sid: str) -> str:
    return f"call:{call_sid}:transfer"


async def record_transfer(
    store: StateStore, call_sid: str, reason: str, department: str | None = None
) -> bool:
    """Record the outcome ``transferred``; True the first time, False when already recorded.

    Raises StateUnavailable when the store is down: the caller must then not close the
    stream as a transfer (Passthru would answer 200 and the caller would be hung up on).
    """
    record = TransferRecord(reason=reason, department=department, at=time.time())
    fresh = await store.claim(
        transfer_key(call_sid), json.dumps(asdict(record)), ttl_secs=TRANSFER_TTL_SECS
    )
    if fresh:
        logger.info(f"transfer recorded: department={department or DEFAULT_DEPARTMENT}")
    return fresh


async def transfer_for(store: StateStore, call_sid: str) -> TransferRecord | None:
    """The call's transfer, or None (none, expired, or unreadable)."""
    raw = await store.get(transfer_key(call_sid))
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return TransferRecord(str(data["reason"]), data.get("department"), float(data["at"]))
    except (ValueError, KeyError, TypeError):
        logger.warning("the call's transfer entry is unreadable; treated as no transfer")
        return None


async def passthru_answer(store: StateStore, call_sid: str) -> int:
    """302 for a transferred call (Exotel's second branch), 200 for everything else."""
    if not call_sid:
        return 200
    try:
        record = await transfer_for(store, call_sid)
    except StateUnavailable as e:
        logger.error(f"passthru: state store unavailable ({e}); answering 200 (no transfer)")
        return 200
    return 302 if record else 200


async def connect_answer(
    store: StateStore,
    call_sid: str,
    departments: Mapping[str, list[str]],
    *,
    playback: str = DEFAULT_CONNECT_PLAYBACK,
) -> dict[str, Any]:
    """Exotel's Programmable Connect JSON for ``GET /exotel/connect?CallSid=…``."""
    numbers: list[str] = []
    try:
        record = await transfer_for(store, call_sid) if call_sid else None
    except StateUnavailable as e:
        logger.error(f"connect: state store unavailable ({e}); dialling nobody")
        record = None
    if record is not None:
        numbers = numbers_for(departments, record.department)
    answer: dict[str, Any] = {
        "fetch_after_attempt": False,
        "destination": {"numbers": numbers},
        "record": True,
        "max_ringing_duration": MAX_RINGING_SECS,
    }
    if playback:
        answer["start_call_playback"] = {"playback_to": "both", "type": "text", "value": playback}
    return answer


def numbers_for(departments: Mapping[str, list[str]], department: str | None) -> list[str]:
    """The department's numbers, else the ``default`` department's (logged), else none."""
    if department and department in departments:
        return list(departments[department])
    if department:
        logger.warning(f"no department {department!r} in [agent.departments]; using default")
    return list(departments.get(DEFAULT_DEPARTMENT, []))


def parse_departments(raw: Any) -> dict[str, list[str]]:
    """``[agent.departments] support = ["+9180…"]``, checked; ConfigError names the key."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError("[agent.departments] must be a table of name = [numbers]")
    departments: dict[str, list[str]] = {}
    for name, numbers in raw.items():
        key = f"[agent.departments] {name}"
        if not _DEPARTMENT.match(str(name)):
            raise ConfigError(f"{key}: a department name is a short lower-case word")
        if isinstance(numbers, str):
            numbers = [numbers]
        if not isinstance(numbers, list) or not numbers:
            raise ConfigError(f'{key}: give a list of phone numbers, e.g. ["+918012345678"]')
        cleaned = []
        for number in numbers:
            text = re.sub(r"[\s\-()]", "", str(number))
            if not _NUMBER.match(text):
                raise ConfigError(f"{key}: {number!r} is not a phone number (digits, optional +)")
            cleaned.append(text)
        departments[str(name)] = cleaned
    return departments
