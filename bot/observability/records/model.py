"""The call record's data: one turn's record, the constants that define it, and its summary.

Pure data and arithmetic (no I/O, no Pipecat): the observer fills these, the files keep them,
and the report reads them back. Times are seconds on the call's timeline (since it started).
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

RECORD_VERSION = 1
# A clear more than this long after a caller's onset was not caused by that onset.
BARGE_IN_WINDOW_SECS = 3.0
# The bot pauses at the caller's first voiced window, which the onset estimate (VAD start
# minus start_secs) places to within an inbound frame or so: a clear this much before a
# turn's onset is still that turn's.
CLEAR_BEFORE_ONSET_SECS = 0.1
# Float slack when comparing times on the call timeline.
EPSILON = 1e-3
_INSTANCE_SUFFIX = re.compile(r"#\d+$")


class CallInfoLike(Protocol):
    """What the observer needs to know about the call (``bot.telephony.call.CallInfo`` fits)."""

    call_sid: str
    stream_sid: str
    account_sid: str
    from_number: str
    to_number: str
    custom_parameters: dict[str, str]
    sample_rate: int


@dataclass
class TurnRecord:
    """One caller turn (Pipecat's user turn) and what the bot did about it.

    speech_start / speech_end: the caller's speech as VAD saw it (VAD decision time minus its
    start_secs / stop_secs), so they estimate when the caller really started and stopped.
    turn_end: UserStoppedSpeakingFrame, when Pipecat committed to answering.
    first_bot_audio: the first bot audio sent after the caller stopped (a holding phrase
    counts: it is what the caller hears). response_latency = first_bot_audio - speech_end.
    interrupted: the caller's onset cut the bot off (a ``clear`` was sent);
    clear_latency = clear_at - speech_start.
    answered: the LLM's text after this turn; spoken: what the TTS said after it (either may
    include later prompts until the next turn).
    """

    index: int
    speech_start: float | None = None
    speech_end: float | None = None
    speech: list[list[float | None]] = field(default_factory=list)
    turn_start: float | None = None
    turn_end: float | None = None
    heard: list[str] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)
    spoken: list[str] = field(default_factory=list)
    bot_speaking_at_onset: bool = False
    first_bot_audio: float | None = None
    response_latency: float | None = None
    holding: list[dict[str, Any]] = field(default_factory=list)
    holding_latency: float | None = None
    interrupted: bool = False
    clear_at: float | None = None
    clear_latency: float | None = None
    language: str | None = None  # what the caller spoke in this turn (a BCP-47 tag)

    @property
    def speaking(self) -> bool:
        """The caller is mid-utterance (VAD started, not yet stopped)."""
        return bool(self.speech) and self.speech[-1][1] is None

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "speech_start": round_ms(self.speech_start),
            "speech_end": round_ms(self.speech_end),
            "speech": [[round_ms(a), round_ms(b)] for a, b in self.speech],
            "turn_start": round_ms(self.turn_start),
            "turn_end": round_ms(self.turn_end),
            "heard": " ".join(t.strip() for t in self.heard if t.strip()),
            "answered": "".join(self.answered).strip(),
            "spoken": " ".join(t.strip() for t in self.spoken if t.strip()),
            "bot_speaking_at_onset": self.bot_speaking_at_onset,
            "first_bot_audio": round_ms(self.first_bot_audio),
            "response_latency": round_ms(self.response_latency),
            "holding_phrase": bool(self.holding),
            "holding": self.holding,
            "holding_latency": round_ms(self.holding_latency),
            "interrupted": self.interrupted,
            "clear_at": round_ms(self.clear_at),
            "clear_latency": round_ms(self.clear_latency),
            "language": self.language,
        }


def round_ms(value: float | None) -> float | None:
    """Seconds rounded to the millisecond: finer is noise, and it keeps records readable."""
    return None if value is None else round(value, 3)


def provider_label(processor_name: str) -> str:
    """``DeepgramSTTService#12`` -> ``DeepgramSTTService``: the suffix counts instances per
    process, so as a Prometheus label it would grow without bound (one series per call)."""
    return _INSTANCE_SUFFIX.sub("", processor_name)


def _p50_max(values: Sequence[float]) -> tuple[float, float] | None:
    return (statistics.median(values), max(values)) if values else None


def summarize(record: Mapping[str, Any]) -> dict[str, Any]:
    """Counts and latency p50/max in milliseconds, for the log line and dashboards."""
    turns = record["turns"]

    def stats(key: str) -> dict[str, int] | None:
        found = _p50_max([t[key] for t in turns if t.get(key) is not None])
        return (
            None
            if found is None
            else {"p50_ms": round(found[0] * 1000), "max_ms": round(found[1] * 1000)}
        )

    ttfb = {}
    for provider, values in record["provider_ttfb"].items():
        p50, top = _p50_max(values) or (0.0, 0.0)
        ttfb[provider] = {
            "p50_ms": round(p50 * 1000),
            "max_ms": round(top * 1000),
            "n": len(values),
        }
    return {
        "turns": len(turns),
        "answered": sum(1 for t in turns if t.get("first_bot_audio") is not None),
        "interruptions": sum(1 for t in turns if t.get("interrupted")),
        "holding_phrases": sum(len(t.get("holding") or ()) for t in turns),
        "response_latency": stats("response_latency"),
        "holding_latency": stats("holding_latency"),
        "clear_latency": stats("clear_latency"),
        "provider_ttfb": ttfb,
        "errors": sum(1 for e in record["events"] if e["type"] == "error"),
    }


def summary_line(record: Mapping[str, Any], path: Path | None = None) -> str:
    """One ``key=value`` line per call: grep-able in text logs, parseable in JSON ones."""
    s = record["summary"]
    parts = [
        f"duration={record['duration_secs']:.1f}s",
        f"turns={s['turns']}",
        f"answered={s['answered']}",
        f"interruptions={s['interruptions']}",
        f"holding_phrases={s['holding_phrases']}",
    ]
    for key, name in (
        ("response_latency", "response"),
        ("holding_latency", "holding"),
        ("clear_latency", "clear"),
    ):
        if s[key]:
            parts.append(f"{name}_p50={s[key]['p50_ms']}ms {name}_max={s[key]['max_ms']}ms")
    for provider, v in s["provider_ttfb"].items():
        parts.append(f"ttfb[{provider}]_p50={v['p50_ms']}ms")
    if s["errors"]:
        parts.append(f"errors={s['errors']}")
    parts.append(f"end_reason={json.dumps(record['end_reason'])}")
    parts.append(f"hung_up_by={record['hung_up_by']}")
    if path is not None:
        parts.append(f"record={path}")
    return "call summary: " + " ".join(parts)
