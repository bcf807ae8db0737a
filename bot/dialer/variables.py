"""Per-call data without Exotel's 128-character ``CustomField`` limit.

The dialer stores a contact's variables (name, amount due, language, ...) under a random token
and sends only the token as ``CustomField``. When the stream starts, the call finds its
variables by the custom parameter ``CustomField`` (as the flow passes it) or by its CallSid,
which the dialer indexes as soon as Exotel's API answers.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from bot.state.base import StateStore

VARIABLES_TTL_SECS = 6 * 3600.0
"""Long enough for a call placed now plus retries of the stream handshake (>= 2 h)."""

_TOKEN_BYTES = 12  # 16 URL-safe characters, far below 128


def _key(token: str) -> str:
    return f"dial:{token}"


def _sid_key(call_sid: str) -> str:
    return f"dial:call:{call_sid}"


async def store_call_variables(
    store: StateStore,
    variables: dict[str, str],
    *,
    meta: dict[str, Any] | None = None,
    ttl_secs: float = VARIABLES_TTL_SECS,
) -> str:
    """Store ``variables`` (and dialer ``meta``: campaign, contact, attempt); return the token."""
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    record = {"variables": dict(variables), "meta": dict(meta or {})}
    await store.set(_key(token), json.dumps(record), max(ttl_secs, 2 * 3600.0))
    return token


async def index_call_sid(
    store: StateStore, token: str, call_sid: str, *, ttl_secs: float = VARIABLES_TTL_SECS
) -> None:
    """Let a stream that carries only its CallSid find the token's variables."""
    await store.set(_sid_key(call_sid), token, max(ttl_secs, 2 * 3600.0))


async def call_record(
    store: StateStore, custom_field: str | None = None, call_sid: str | None = None
) -> dict[str, Any] | None:
    """The stored ``{"variables", "meta", "token"}`` of a dialled call, or None."""
    token = (custom_field or "").strip() or None
    if token is None and call_sid:
        token = await store.get(_sid_key(call_sid))
    if token is None:
        return None
    raw = await store.get(_key(token))
    if raw is None and call_sid and custom_field:
        # The flow may pass a CustomField that is not ours; try the CallSid index too.
        other = await store.get(_sid_key(call_sid))
        raw = await store.get(_key(other)) if other else None
        token = other or token
    if raw is None:
        return None
    record = json.loads(raw)
    record["token"] = token
    return record


async def variables_for_stream(
    store: StateStore, custom_field: str | None, call_sid: str | None
) -> dict[str, str]:
    """The variables of the call the stream belongs to; {} for a call we did not dial."""
    record = await call_record(store, custom_field, call_sid)
    return dict(record["variables"]) if record else {}
