"""The events the bot sends after a call, in the Standard Webhooks envelope.

Every body is ``{"type": ..., "timestamp": "<ISO 8601 UTC>", "data": {...}}``:

* ``call.ended`` once per stream, built from :class:`CallEndedData` (what the call did);
* ``call.status`` when Exotel reports on the call afterwards: its Passthru applet
  (``Stream[Status]``, ``Stream[DisconnectedBy]``, ...) or a status callback of the REST API
  (``Status``, ``EventType``, ...), built by :func:`call_status_event`.

An event's id is derived from what it is about (call sid, type, and for ``call.status`` which
report), never random: the same call's event rebuilt after a restart has the same id, so the
outbox's ``add`` stays idempotent and a receiver de-duplicating on ``webhook-id`` sees one event.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal

CALL_ENDED = "call.ended"
CALL_STATUS = "call.status"
OUTCOMES = ("completed", "transferred", "caller_hung_up", "idle", "failed")
Outcome = Literal["completed", "transferred", "caller_hung_up", "idle", "failed"]


def event_id(call_sid: str, event_type: str, key: str = "") -> str:
    """``evt_`` + 32 hex digits of a hash of what the event is about (no '.', as the spec asks)."""
    digest = hashlib.sha256(f"{event_type}\n{call_sid}\n{key}".encode()).hexdigest()
    return f"evt_{digest[:32]}"


def iso_utc(value: datetime | float | str) -> str:
    """ISO 8601 in UTC with a ``Z``, to the millisecond; naive datetimes are taken as UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    elif not isinstance(value, datetime):
        value = datetime.fromtimestamp(float(value), tz=UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    text = value.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


@dataclass(frozen=True)
class Event:
    """One event: its stable id, its type, and the envelope's timestamp and data."""

    id: str
    type: str
    timestamp: str
    data: dict[str, Any]
    call_sid: str

    def envelope(self) -> dict[str, Any]:
        return {"type": self.type, "timestamp": self.timestamp, "data": self.data}

    def body(self) -> str:
        """The exact JSON text that is signed and sent (compact; the same on every attempt)."""
        return json.dumps(self.envelope(), ensure_ascii=False, separators=(",", ":"))


# --------------------------------------------------------------------------------------------
# call.ended
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    """One line of the transcript. start/end: seconds since the call started."""

    role: Literal["caller", "bot"]
    text: str
    start_secs: float | None = None
    end_secs: float | None = None
    interrupted: bool = False
    language: str | None = None

    @classmethod
    def from_mapping(cls, turn: Mapping[str, Any]) -> Turn:
        if turn.get("role") not in ("caller", "bot"):
            raise ValueError(f"a turn's role is 'caller' or 'bot', not {turn.get('role')!r}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in turn.items() if k in known})

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "text": self.text,
            "start_secs": _round(self.start_secs),
            "end_secs": _round(self.end_secs),
            "interrupted": self.interrupted,
            "language": self.language,
        }


@dataclass(frozen=True)
class CallEndedData:
    """What ``call.ended`` carries. The caller masks keypad digits in turns and tool calls.

    outcome: ``completed`` (the bot ended the conversation), ``transferred`` (outcome_detail:
    reason, department), ``caller_hung_up``, ``idle`` (nobody spoke), ``failed`` (outcome_detail:
    why). ended_by: ``bot``, ``caller`` or ``system``. latency: the record's summary (p50/max
    per stage, in ms). providers: role -> provider name (``{"stt": "deepgram", ...}``).
    """

    call_sid: str
    stream_sid: str
    from_number: str
    to_number: str
    started_at: datetime | float | str
    ended_at: datetime | float | str
    duration_secs: float
    outcome: Outcome
    outcome_detail: dict[str, Any] = field(default_factory=dict)
    direction: Literal["inbound", "outbound"] = "inbound"
    ended_by: str | None = None
    custom_parameters: dict[str, str] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    language: str | None = None
    languages: list[str] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    latency: dict[str, Any] = field(default_factory=dict)
    holding_phrases: list[str] = field(default_factory=list)
    providers: dict[str, str] = field(default_factory=dict)
    summary: str | None = None
    extraction: dict[str, Any] | None = None
    analysis_error: str | None = None

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, not {self.outcome!r}")
        if not self.call_sid:
            raise ValueError("call.ended needs the call_sid")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> CallEndedData:
        """From a dict using either the wire names (``from``, ``to``) or the field names."""
        values = dict(data)
        for wire, name in (("from", "from_number"), ("to", "to_number")):
            if wire in values:
                values[name] = values.pop(wire)
        values["turns"] = [
            t if isinstance(t, Turn) else Turn.from_mapping(t) for t in values.get("turns", ())
        ]
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"call.ended has no field(s) {', '.join(unknown)}")
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return {
            "call_sid": self.call_sid,
            "stream_sid": self.stream_sid,
            "from": self.from_number,
            "to": self.to_number,
            "direction": self.direction,
            "started_at": iso_utc(self.started_at),
            "ended_at": iso_utc(self.ended_at),
            "duration_secs": _round(self.duration_secs),
            "ended_by": self.ended_by,
            "outcome": self.outcome,
            "outcome_detail": dict(self.outcome_detail),
            "custom_parameters": dict(self.custom_parameters),
            "variables": dict(self.variables),
            "language": self.language,
            "languages": list(self.languages) or ([self.language] if self.language else []),
            "turns": [turn.to_json() for turn in self.turns],
            "tool_calls": list(self.tool_calls),
            "latency": dict(self.latency),
            "holding_phrases": list(self.holding_phrases),
            "providers": dict(self.providers),
            "summary": self.summary,
            "extraction": self.extraction,
            "analysis_error": self.analysis_error,
        }


def call_ended_event(data: CallEndedData | Mapping[str, Any]) -> Event:
    """The ``call.ended`` event; its timestamp is the call's end, so a rebuild is identical."""
    if not isinstance(data, CallEndedData):
        data = CallEndedData.from_mapping(data)
    payload = data.to_json()
    return Event(
        id=event_id(data.call_sid, CALL_ENDED),
        type=CALL_ENDED,
        timestamp=payload["ended_at"],
        data=payload,
        call_sid=data.call_sid,
    )


# --------------------------------------------------------------------------------------------
# call.status
# --------------------------------------------------------------------------------------------

# Passthru names (after the Voicebot applet): the bracket form first, then the JSON ``Stream``.
_PASSTHRU = {
    "status": "Status",
    "disconnected_by": "DisconnectedBy",
    "duration_secs": "Duration",
    "recording_url": "RecordingUrl",
    "error": "Error",
    "detailed_status": "DetailedStatus",
    "stream_sid": "StreamSID",
}


def call_status_event(fields_in: Mapping[str, Any], *, now: float | datetime) -> Event:
    """``call.status`` from Exotel's Passthru query/form or a status callback's fields.

    Passthru sends ``Stream[Status]`` etc. (sometimes one JSON string in ``Stream``); a status
    callback sends ``Status``, ``EventType``, ``ConversationDuration``, ``RecordingUrl`` and
    ``Legs[]`` with ``AnsweredBy``. Only the named fields are kept: the rest may be personal
    data the receiver did not ask for. ``now``: when the report arrived (the envelope time).
    """
    call_sid = _text(fields_in.get("CallSid"))
    if not call_sid:
        raise ValueError("an Exotel status report without CallSid cannot be tied to a call")
    stream = _stream_fields(fields_in)
    common = {
        "call_sid": call_sid,
        "from": _text(fields_in.get("From")),
        "to": _text(fields_in.get("To")),
    }
    if stream:
        data = {"source": "passthru", **common}
        data.update({name: stream.get(key) for name, key in _PASSTHRU.items()})
        data["duration_secs"] = _number(data["duration_secs"])
        key = f"passthru:{data['status']}"
    else:
        event_type = _text(fields_in.get("EventType")) or "terminal"
        data = {
            "source": "status_callback",
            **common,
            "status": _text(fields_in.get("Status")),
            "event_type": event_type,
            "answered_by": _answered_by(fields_in),
            "conversation_duration_secs": _number(fields_in.get("ConversationDuration")),
            "recording_url": _text(fields_in.get("RecordingUrl")),
        }
        key = f"status_callback:{event_type}"  # Exotel's advice: dedupe on (CallSid, EventType)
    return Event(
        id=event_id(call_sid, CALL_STATUS, key),
        type=CALL_STATUS,
        timestamp=iso_utc(now),
        data=data,
        call_sid=call_sid,
    )


def _stream_fields(fields_in: Mapping[str, Any]) -> dict[str, str | None]:
    """``Stream[X]`` keys, else the JSON object in ``Stream``; {} when neither is there."""
    found = {
        key[len("Stream[") : -1]: _text(value)
        for key, value in fields_in.items()
        if key.startswith("Stream[") and key.endswith("]")
    }
    if found:
        return found
    blob = fields_in.get("Stream")
    if isinstance(blob, str):
        try:
            blob = json.loads(blob)
        except ValueError:
            return {}
    if isinstance(blob, Mapping):
        return {str(k): _text(v) for k, v in blob.items()}
    return {}


def _answered_by(fields_in: Mapping[str, Any]) -> str | None:
    """Top-level ``AnsweredBy``, else the first leg's (JSON list or ``Legs[0][AnsweredBy]``)."""
    direct = _text(fields_in.get("AnsweredBy")) or _text(fields_in.get("Legs[0][AnsweredBy]"))
    if direct:
        return direct
    legs = fields_in.get("Legs")
    if isinstance(legs, Sequence) and not isinstance(legs, str):
        for leg in legs:
            if isinstance(leg, Mapping) and _text(leg.get("AnsweredBy")):
                return _text(leg.get("AnsweredBy"))
    return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _number(value: Any) -> float | None:
    try:
        return None if value in (None, "", "null") else float(value)
    except (TypeError, ValueError):
        return None


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)
