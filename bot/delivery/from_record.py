"""A finished call's record (``bot.observability.records``) as the ``call.ended`` data.

Plain dicts in, :class:`~bot.delivery.events.CallEndedData` out, so the mapping is tested
without a call. The record is read defensively: other rooms add fields to it over time
(``outcome``, ``tool_calls``, ``variables``, ``language``, ``captures``), and a record
without them still maps, with the outcome derived from ``end_reason`` / ``hung_up_by``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.delivery.events import OUTCOMES, CallEndedData, Turn

# end_reason words that mean the call did not end as a conversation should.
FAILURE_WORDS = ("error", "fault", "shutting down", "failed", "unusable")
IDLE_WORDS = ("silent", "idle")
LATENCY_KEYS = ("response_latency", "holding_latency", "clear_latency", "provider_ttfb")


@dataclass(frozen=True)
class CallContext:
    """What the record does not know: set once per process by the server.

    transfer: the call's transfer (``reason``, ``department``) when the agent recorded one.
    """

    providers: dict[str, str] = field(default_factory=dict)
    language: str | None = None
    greeting: str | None = None
    transfer: Mapping[str, Any] | None = None


def call_ended_data(record: Mapping[str, Any], context: CallContext) -> CallEndedData:
    """The ``call.ended`` data of one record (analysis fields left empty)."""
    custom = dict(record.get("custom_parameters") or {})
    started = _parse_time(record.get("started_at"))
    duration = float(record.get("duration_secs") or 0.0)
    outcome, detail = call_outcome(record, context.transfer)
    languages = [str(tag) for tag in record.get("languages") or []]
    # The call's language: the record's (the last turn's, after any switch), else the default.
    language = record.get("language") or (languages[-1] if languages else context.language)
    return CallEndedData(
        call_sid=str(record["call_sid"]),
        stream_sid=str(record.get("stream_sid") or ""),
        from_number=str(record.get("from") or ""),
        to_number=str(record.get("to") or ""),
        started_at=started,
        ended_at=started + timedelta(seconds=duration),
        duration_secs=duration,
        outcome=outcome,
        outcome_detail=detail,
        direction=_direction(record, custom),
        ended_by=_ended_by(record.get("hung_up_by")),
        custom_parameters={str(k): str(v) for k, v in custom.items()},
        variables=dict(record.get("variables") or {}),
        language=language,
        languages=languages or ([language] if language else []),
        turns=transcript(record, context.greeting),
        tool_calls=list(record.get("tool_calls") or []),
        latency=latency_summary(record),
        holding_phrases=holding_phrases(record),
        providers=dict(record.get("providers") or context.providers),
    )


def call_outcome(
    record: Mapping[str, Any], transfer: Mapping[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    """(outcome, outcome_detail): the record's own ``outcome`` first, else derived.

    completed: the bot ended the conversation; transferred: the agent recorded a transfer;
    caller_hung_up; idle: the caller stayed silent; failed: an error, a provider fault or a
    shutdown ended it (detail ``why``).
    """
    own = record.get("outcome")
    if own in OUTCOMES:
        return str(own), dict(record.get("outcome_detail") or {})
    if transfer is not None:
        keep = ("reason", "department")
        return "transferred", {k: transfer.get(k) for k in keep if transfer.get(k) is not None}
    reason = str(record.get("end_reason") or "")
    lowered = reason.lower()
    if any(word in lowered for word in FAILURE_WORDS):
        return "failed", {"why": reason}
    if any(word in lowered for word in IDLE_WORDS):
        return "idle", {"reason": reason}
    if record.get("hung_up_by") == "caller":
        return "caller_hung_up", {"reason": reason} if reason else {}
    return "completed", {"reason": reason} if reason else {}


def transcript(record: Mapping[str, Any], greeting: str | None = None) -> list[Turn]:
    """Caller and bot lines in call order, with their times on the call's timeline.

    A record that carries its own ``transcript`` (role/text/...) is used as it is. Otherwise
    each caller turn gives the caller's words (``heard``) and the bot's answer (``spoken``,
    else ``answered``); the answer counts as interrupted when the next turn barged in. The
    greeting (said before any turn) is the bot's first line when the bot spoke first.
    """
    own = record.get("transcript")
    if isinstance(own, Sequence) and own:
        return [Turn.from_mapping(t) for t in own if isinstance(t, Mapping)]
    turns = list(record.get("turns") or [])
    speech = [span for span in record.get("bot_speech") or [] if span and span[0] is not None]
    lines: list[Turn] = []
    first_onset = turns[0].get("speech_start") if turns else None
    if greeting and speech and (first_onset is None or speech[0][0] < first_onset):
        lines.append(Turn("bot", greeting, speech[0][0], speech[0][1]))
    for index, turn in enumerate(turns):
        heard = str(turn.get("heard") or "").strip()
        if heard:
            end = turn.get("speech_end") or turn.get("turn_end")
            lines.append(Turn("caller", heard, turn.get("speech_start"), end))
        said = str(turn.get("spoken") or turn.get("answered") or "").strip()
        if said:
            start = turn.get("first_bot_audio")
            cut = index + 1 < len(turns) and bool(turns[index + 1].get("interrupted"))
            lines.append(Turn("bot", said, start, _span_end(speech, start), cut))
    return lines


def latency_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """p50/max per stage in ms, and counts, from the record's summary."""
    summary = record.get("summary") or {}
    found: dict[str, Any] = {k: summary.get(k) for k in LATENCY_KEYS if k in summary}
    for key in ("turns", "answered", "interruptions", "errors"):
        if key in summary:
            found[key] = summary[key]
    return found


def holding_phrases(record: Mapping[str, Any]) -> list[str]:
    """The holding phrases played, in order (the record's events keep every one)."""
    events = record.get("events") or []
    return [str(e.get("text")) for e in events if e.get("type") == "holding_phrase"]


def _span_end(speech: Sequence[Sequence[float | None]], start: float | None) -> float | None:
    """The end of the bot's speaking span that contains ``start``."""
    if start is None:
        return None
    for a, b in speech:
        if a is not None and a - 1e-3 <= start and (b is None or start <= b):
            return b
    return None


def _direction(record: Mapping[str, Any], custom: Mapping[str, Any]) -> str:
    value = str(record.get("direction") or custom.get("direction") or "inbound").lower()
    return "outbound" if value.startswith("outbound") else "inbound"


def _ended_by(hung_up_by: Any) -> str:
    return str(hung_up_by) if hung_up_by in ("bot", "caller") else "system"


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
