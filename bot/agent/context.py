"""The call-start context webhook: who is calling, fetched once per call, bounded in time.

``[agent] context_url`` gets ``POST {"call_sid", "stream_sid", "from", "to",
"custom_parameters": {...}}`` and may answer ``{"variables": {...}, "system_prompt"?,
"greeting"?, "language"?}``. A timeout, a non-2xx, bad JSON or an unreachable server gives
no answer, one warning line and an error string for the call record: the call goes on with
the configured defaults, and the greeting waits at most the timeout.

When Exotel uses the dynamic-URL endpoint the answer is fetched there (the call has a CallSid
but no stream yet) and kept in the state store under ``call:{CallSid}:context`` for the
stream's ``start`` to pick up instead of fetching again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
from loguru import logger

from bot.state.base import StateStore, StateUnavailable

CONTEXT_TTL_SECS = 2 * 60 * 60  # longer than any call (the cap is 60 min), so start finds it
MAX_ANSWER_BYTES = 64 * 1024
_ANSWER_TEXTS = ("system_prompt", "greeting", "language")


@dataclass(frozen=True)
class ContextAnswer:
    """A validated webhook answer: per-call variables and optional overrides."""

    variables: dict[str, Any] = field(default_factory=dict)
    system_prompt: str | None = None
    greeting: str | None = None
    language: str | None = None


@dataclass(frozen=True)
class ContextResult:
    """What a fetch gave: an answer, or the error to record (never both)."""

    answer: ContextAnswer | None
    error: str | None = None
    duration_secs: float = 0.0

    @property
    def ok(self) -> bool:
        return self.answer is not None


def context_payload(
    *,
    call_sid: str,
    stream_sid: str | None,
    from_number: str,
    to_number: str,
    custom_parameters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The request body; ``stream_sid`` is null when fetched at the dynamic URL."""
    return {
        "call_sid": call_sid,
        "stream_sid": stream_sid or None,
        "from": from_number,
        "to": to_number,
        "custom_parameters": dict(custom_parameters or {}),
    }


def parse_answer(data: Any) -> ContextAnswer:
    """Validate a decoded answer; ValueError says what is wrong. Unknown keys are ignored."""
    if not isinstance(data, dict):
        raise ValueError(f"the answer is a JSON {type(data).__name__}, not an object")
    variables = data.get("variables", {})
    if variables is None:
        variables = {}
    if not isinstance(variables, dict):
        raise ValueError('"variables" must be an object of names to values')
    texts: dict[str, str | None] = {}
    for key in _ANSWER_TEXTS:
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise ValueError(f'"{key}" must be a string')
        texts[key] = value or None
    return ContextAnswer(variables={str(k): v for k, v in variables.items()}, **texts)


async def fetch_context(
    url: str,
    payload: Mapping[str, Any],
    timeout_secs: float = 1.5,
    *,
    session: aiohttp.ClientSession | None = None,
) -> ContextResult:
    """POST ``payload`` to the webhook; never raises, never takes longer than the timeout."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_secs):
            answer = await _post(url, payload, timeout_secs, session)
    except TimeoutError:
        error = f"context webhook timed out after {timeout_secs:g} s"
    except aiohttp.ClientError as e:
        error = f"context webhook unreachable ({type(e).__name__})"
    except ValueError as e:
        error = f"context webhook answer rejected: {e}"
    else:
        return ContextResult(answer, None, time.monotonic() - started)
    logger.warning(f"{error}; the call goes on with the configured defaults")
    return ContextResult(None, error, time.monotonic() - started)


async def _post(
    url: str, payload: Mapping[str, Any], timeout_secs: float, session: aiohttp.ClientSession | None
) -> ContextAnswer:
    own = session is None
    client = session or aiohttp.ClientSession()
    try:
        timeout = aiohttp.ClientTimeout(total=timeout_secs)
        async with client.post(url, json=dict(payload), timeout=timeout) as resp:
            if not 200 <= resp.status < 300:
                raise ValueError(f"HTTP {resp.status}")
            body = await resp.content.read(MAX_ANSWER_BYTES + 1)
        if len(body) > MAX_ANSWER_BYTES:
            raise ValueError(f"the answer is larger than {MAX_ANSWER_BYTES // 1024} KB")
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError("the answer is not JSON") from None
        return parse_answer(data)
    finally:
        if own:
            await client.close()


def context_key(call_sid: str) -> str:
    return f"call:{call_sid}:context"


async def remember_context(store: StateStore, call_sid: str, result: ContextResult) -> bool:
    """Keep a fetch (answer or failure) for the stream's ``start``; False if the store failed.

    A failure is kept too: ``start`` then goes on with the defaults instead of making the
    caller wait for a second try of a webhook that just failed.
    """
    value = json.dumps(
        {"answer": asdict(result.answer) if result.answer else None, "error": result.error}
    )
    try:
        await store.set(context_key(call_sid), value, ttl_secs=CONTEXT_TTL_SECS)
    except StateUnavailable as e:
        logger.warning(f"could not keep the call's context for its stream ({e}); start refetches")
        return False
    return True


async def recall_context(store: StateStore, call_sid: str) -> ContextResult | None:
    """The fetch made at the dynamic URL, or None when there was none (fetch at ``start``)."""
    try:
        raw = await store.get(context_key(call_sid))
    except StateUnavailable as e:
        logger.warning(f"could not read the call's context ({e}); fetching it again")
        return None
    if raw is None:
        return None
    try:
        kept = json.loads(raw)
        answer = parse_answer(kept["answer"]) if kept.get("answer") is not None else None
        return ContextResult(answer, kept.get("error") if answer is None else None)
    except (ValueError, KeyError, TypeError, AttributeError):
        logger.warning("the kept context of this call is unreadable; fetching it again")
        return None
