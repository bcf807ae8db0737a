"""Finished calls kept in the state store for the calls page (``/calls``, ``/api/calls``).

Why the store and not the records folder: the page must work across restarts and on every
instance sharing a Redis, with or without ``CALL_RECORDS_DIR``. Per call, written once at
its end, both expiring after the retention (``CALL_RECORDS_RETENTION_DAYS``):

* ``calls:<ended_at ISO UTC>:<call_sid>``: one row of the list (time, from, outcome,
  duration, turns, p50 response, language). ISO times sort as text, so the newest calls are
  the last keys, without an index;
* ``call:<call_sid>:record``: the ``call.ended`` data and what the page draws (the speech
  spans of the timeline, latency per turn);
* ``call:<call_sid>:status``: the latest Exotel status report (Passthru: status, who
  disconnected, the recording link).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from loguru import logger

from bot.state.base import StateStore

LIST_PREFIX = "calls:"
MAX_LISTED = 200
TIMELINE_EVENTS = ("holding_phrase", "clear", "dtmf", "error")


def record_key(call_sid: str) -> str:
    return f"call:{quote(call_sid, safe='')}:record"


def status_key(call_sid: str) -> str:
    return f"call:{quote(call_sid, safe='')}:status"


def list_key(ended_at: str, call_sid: str) -> str:
    return f"{LIST_PREFIX}{ended_at}:{quote(call_sid, safe='')}"


def call_row(data: Mapping[str, Any]) -> dict[str, Any]:
    """The list's columns, from the ``call.ended`` data."""
    response = (data.get("latency") or {}).get("response_latency") or {}
    return {
        "call_sid": data["call_sid"],
        "started_at": data["started_at"],
        "ended_at": data["ended_at"],
        "from": data.get("from"),
        "to": data.get("to"),
        "direction": data.get("direction"),
        "outcome": data["outcome"],
        "duration_secs": data.get("duration_secs"),
        "turns": sum(1 for t in data.get("turns") or () if t.get("role") == "caller"),
        "p50_response_ms": response.get("p50_ms"),
        "language": data.get("language"),
    }


def timeline_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """What the page draws from the full record: speech spans, marks in time, per-turn times."""
    turns = record.get("turns") or []
    return {
        "duration_secs": record.get("duration_secs") or 0.0,
        "caller_speech": [s for t in turns for s in t.get("speech") or () if s[0] is not None],
        "bot_speech": [s for s in record.get("bot_speech") or () if s[0] is not None],
        "events": [e for e in record.get("events") or () if e.get("type") in TIMELINE_EVENTS],
        "turns": [
            {
                "index": t.get("index"),
                "heard": t.get("heard"),
                "response_latency": t.get("response_latency"),
                "holding_latency": t.get("holding_latency"),
                "interrupted": t.get("interrupted"),
                "clear_latency": t.get("clear_latency"),
            }
            for t in turns
        ],
    }


async def save_call(
    store: StateStore, data: Mapping[str, Any], record: Mapping[str, Any], ttl_secs: float
) -> None:
    """Keep one finished call for the page (its detail first, so a listed call always has one)."""
    detail = {"data": dict(data), "timeline": timeline_of(record)}
    await store.set(record_key(data["call_sid"]), json.dumps(detail), ttl_secs)
    await store.set(
        list_key(data["ended_at"], data["call_sid"]), json.dumps(call_row(data)), ttl_secs
    )


async def save_status(
    store: StateStore, call_sid: str, status: Mapping[str, Any], ttl_secs: float
) -> None:
    """The latest status report of a call (later reports fill in what earlier ones lacked)."""
    old = await load_json(store, status_key(call_sid)) or {}
    merged = {**old, **{k: v for k, v in status.items() if v not in (None, "")}}
    await store.set(status_key(call_sid), json.dumps(merged), ttl_secs)


async def recent_calls(
    store: StateStore, *, outcome: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """The newest calls first (at most ``limit``, scanning the newest ``MAX_LISTED``)."""
    keys = sorted(await store.keys(LIST_PREFIX), reverse=True)[:MAX_LISTED]
    rows = []
    for key in keys:
        row = await load_json(store, key)
        if row is not None and outcome in (None, "", row.get("outcome")):
            rows.append(row)
            if len(rows) >= limit:
                break
    return rows


async def call_detail(store: StateStore, call_sid: str) -> dict[str, Any] | None:
    """``{"data", "timeline", "status"}`` of one call, or None when it is not kept."""
    detail = await load_json(store, record_key(call_sid))
    if detail is None:
        return None
    detail["status"] = await load_json(store, status_key(call_sid))
    return detail


async def load_json(store: StateStore, key: str) -> dict[str, Any] | None:
    raw = await store.get(key)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        logger.warning(f"unreadable calls-page entry {key}; skipped")
        return None
    return value if isinstance(value, dict) else None
