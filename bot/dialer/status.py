"""Exotel status callbacks and the stream-end reports: parsing, de-duplication, routing.

Exotel posts ``answered`` and ``terminal`` events to the ``StatusCallback`` URL (JSON when the
dialer asks for ``StatusCallbackContentType=application/json``, form fields otherwise; GET query
strings are accepted too). Exotel does not sign them, so the URL carries an unguessable token
(:func:`callback_token`, shared by every process through the store) and a request without it,
or with a wrong one, is answered 403 (:func:`handle_status_callback`).

Events are de-duplicated on (CallSid, EventType) with ``store.claim`` and routed to the
campaign that placed the call through a queue in the store (``dialer:events:{campaign}``), so
the process serving the callbacks and the one running the campaign may differ.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from loguru import logger

from bot.dialer.variables import call_record
from bot.state.base import StateStore

TERMINAL_STATUSES = frozenset({"completed", "failed", "busy", "no-answer"})
DEDUPE_TTL_SECS = 2 * 86400.0
_LEG_KEY = re.compile(r"^Legs\[(\d+)\]\[(\w+)\]$")


@dataclass(frozen=True)
class StatusEvent:
    """One status callback. ``event_type`` is ``answered`` or ``terminal``."""

    call_sid: str
    event_type: str
    status: str | None = None
    custom_field: str | None = None
    conversation_duration: float | None = None
    recording_url: str | None = None
    answered_by: str | None = None
    legs: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class StreamEndEvent:
    """What the bot learned once an outbound call's stream ended.

    ``outcome``: ``completed`` (a conversation), or what the answer detector found
    (``unreachable``, ``busy``, ``voicemail``, ``ivr``). ``extraction``: the post-call
    analysis fields, exported one column each.
    """

    call_sid: str
    custom_field: str | None = None
    outcome: str = "completed"
    opt_out: bool = False
    transferred: bool = False
    duration_secs: float | None = None
    extraction: dict[str, Any] = field(default_factory=dict)


class StatusParseError(ValueError):
    """A callback body we cannot read (no CallSid)."""


def parse_status_body(body: bytes | str, content_type: str | None) -> StatusEvent:
    """A JSON or ``application/x-www-form-urlencoded`` body -> :class:`StatusEvent`."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if "json" in (content_type or "") or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise StatusParseError(f"status callback is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise StatusParseError("status callback JSON is not an object")
        return status_from_fields(data)
    return status_from_fields(dict(parse_qsl(text, keep_blank_values=True)))


def status_from_fields(fields: Mapping[str, Any]) -> StatusEvent:
    """Already-parsed fields (JSON object, form or query) -> :class:`StatusEvent`."""
    call_sid = str(fields.get("CallSid") or "").strip()
    if not call_sid:
        raise StatusParseError("status callback without CallSid")
    legs = _legs(fields)
    answered_by = _text(fields.get("AnsweredBy")) or next(
        (_text(leg.get("AnsweredBy")) for leg in legs if _text(leg.get("AnsweredBy"))), None
    )
    return StatusEvent(
        call_sid=call_sid,
        # Without StatusCallbackEvents Exotel sends only the terminal event, untyped.
        event_type=(_text(fields.get("EventType")) or "terminal").lower(),
        status=(_text(fields.get("Status")) or "").lower() or None,
        custom_field=_text(fields.get("CustomField")),
        conversation_duration=_number(fields.get("ConversationDuration")),
        recording_url=_text(fields.get("RecordingUrl")),
        answered_by=answered_by,
        legs=tuple(legs),
    )


def _legs(fields: Mapping[str, Any]) -> list[dict[str, Any]]:
    legs = fields.get("Legs")
    if isinstance(legs, list):
        return [dict(leg) for leg in legs if isinstance(leg, dict)]
    if isinstance(legs, str) and legs.strip().startswith("["):
        try:
            parsed = json.loads(legs)
            return [dict(leg) for leg in parsed if isinstance(leg, dict)]
        except ValueError:
            return []
    indexed: dict[int, dict[str, Any]] = {}
    for key, value in fields.items():
        match = _LEG_KEY.match(str(key))
        if match:
            indexed.setdefault(int(match.group(1)), {})[match.group(2)] = value
    return [indexed[i] for i in sorted(indexed)]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text if text and text.lower() not in ("null", "none") else None


def _number(value: Any) -> float | None:
    try:
        return float(value) if _text(value) is not None else None
    except (TypeError, ValueError):
        return None


# -- the callback URL token ------------------------------------------------------------------

_TOKEN_KEY = "dialer:callback_token"


def callback_token() -> str:
    """A new unguessable token (32 URL-safe characters) for the callback URL."""
    return secrets.token_urlsafe(24)


def check_callback_token(expected: str | None, presented: str | None) -> bool:
    """Constant-time comparison; a missing token on either side fails."""
    if not expected or not presented:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())


async def shared_callback_token(store: StateStore) -> str:
    """The deployment's callback token: made once, kept in the store for every process."""
    existing = await store.get(_TOKEN_KEY)
    if existing:
        return existing
    await store.claim(_TOKEN_KEY, callback_token())
    token = await store.get(_TOKEN_KEY)
    if not token:
        raise RuntimeError("the state store lost the callback token it just stored")
    return token


def status_callback_url(public_url: str, token: str) -> str:
    """``{PUBLIC_URL}/exotel/status/{token}``: the ``StatusCallback`` given to Exotel."""
    return f"{public_url.rstrip('/')}/exotel/status/{token}"


# -- routing ---------------------------------------------------------------------------------


def events_queue(campaign: str) -> str:
    return f"dialer:events:{campaign}"


async def publish_status(store: StateStore, event: StatusEvent) -> bool:
    """Record a callback once per (CallSid, EventType); False for a duplicate."""
    first = await store.claim(
        f"dialer:status:{event.call_sid}:{event.event_type}", "1", DEDUPE_TTL_SECS
    )
    if not first:
        logger.debug(f"status {event.event_type} for {event.call_sid}: duplicate, dropped")
        return False
    await _route(store, event.call_sid, event.custom_field, f"status:{event.event_type}", event)
    return True


async def publish_stream_end(store: StateStore, event: StreamEndEvent) -> bool:
    """Record the end of a dialled call's stream once; False for a duplicate."""
    if not await store.claim(f"dialer:stream:{event.call_sid}", "1", DEDUPE_TTL_SECS):
        return False
    await _route(store, event.call_sid, event.custom_field, "stream", event)
    return True


async def _route(
    store: StateStore,
    call_sid: str,
    custom_field: str | None,
    kind: str,
    event: StatusEvent | StreamEndEvent,
) -> None:
    record = await call_record(store, custom_field, call_sid)
    campaign = (record or {}).get("meta", {}).get("campaign")
    payload = json.dumps({"kind": kind, "event": asdict(event)})
    if campaign:
        await store.enqueue(events_queue(campaign), f"{kind}:{call_sid}", payload, 0.0)
    else:
        # A single `dial`: keep the latest report for the call record.
        await store.set(f"dialer:result:{call_sid}:{kind}", payload, DEDUPE_TTL_SECS)


def event_from_payload(payload: str) -> StatusEvent | StreamEndEvent:
    """Decode an item of :func:`events_queue`."""
    data = json.loads(payload)
    fields = data["event"]
    if data["kind"] == "stream":
        return StreamEndEvent(**fields)
    fields["legs"] = tuple(fields.get("legs") or ())
    return StatusEvent(**fields)


async def handle_status_callback(
    store: StateStore,
    *,
    expected_token: str | None,
    presented_token: str | None,
    body: bytes,
    content_type: str | None,
    query: Mapping[str, str] | None = None,
) -> tuple[int, StatusEvent | None]:
    """The ``/exotel/status`` endpoint's logic: (HTTP status, the new event or None).

    403 for a missing or wrong token, 400 for an unreadable body, 200 otherwise (duplicates too,
    so Exotel stops resending).
    """
    if not check_callback_token(expected_token, presented_token):
        return 403, None
    try:
        if body.strip():
            event = parse_status_body(body, content_type)
        else:
            event = status_from_fields(dict(query or {}))
    except StatusParseError as exc:
        logger.warning(f"status callback refused: {exc}")
        return 400, None
    return 200, event if await publish_status(store, event) else None
