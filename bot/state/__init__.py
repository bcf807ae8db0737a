"""The state store: every piece of state that outlives one request or one process.

Owns: one small interface (:class:`StateStore`: keys with a time to live, an atomic claim, and
queues of due items for the outbox) and its backends, chosen by ``BOT_STATE_URL`` through
:func:`open_store`: an embedded SQLite file by default, ``memory://`` for tests, Redis (wrapped
in :class:`ResilientStore`, so an outage never stops a call) to share state between instances.
Call outcomes (a transfer), context fetched at the dynamic URL, the post-call outbox and
campaign state all live here, so any instance can answer for a call another instance served.

Must not touch: calls, pipelines, HTTP, metrics or providers. It imports only ``bot.config``;
every other room may import it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from bot.config import ConfigError
from bot.state.base import QueuedItem, StateStore, StateUnavailable
from bot.state.memory import MemoryStore
from bot.state.redis import RedisStore, safe_url
from bot.state.resilient import ResilientStore
from bot.state.sqlite import SQLiteStore

__all__ = [
    "DEFAULT_SQLITE_FILE",
    "MemoryStore",
    "QueuedItem",
    "RedisStore",
    "ResilientStore",
    "SQLiteStore",
    "StateStore",
    "StateUnavailable",
    "open_store",
]

# The default store's file, under BOT_DATA_DIR.
DEFAULT_SQLITE_FILE = "state.sqlite3"

_FORMS = (
    "unset (an SQLite file under BOT_DATA_DIR), memory://, sqlite:///path/to/file, "
    "redis://host:port/db or rediss://host:port/db"
)


def open_store(
    url: str | None,
    data_dir: Path,
    *,
    on_retry: Callable[[], None] | None = None,
    down_grace_secs: float = 10.0,
) -> StateStore:
    """The store ``BOT_STATE_URL`` names; raises ConfigError for a URL it cannot use.

    ``on_retry`` and ``down_grace_secs`` (``STATE_DOWN_GRACE_SECS``) configure the
    :class:`ResilientStore` put around Redis; the embedded backends have no server to lose.
    """
    url = (url or "").strip()
    if not url:
        return _sqlite(Path(data_dir) / DEFAULT_SQLITE_FILE, "BOT_DATA_DIR")
    if url == "memory://":
        return MemoryStore()
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        if path in ("", "/"):
            return _sqlite(Path(data_dir) / DEFAULT_SQLITE_FILE, "BOT_DATA_DIR")
        return _sqlite(Path(path), "BOT_STATE_URL")
    if url.startswith(("redis://", "rediss://")):
        try:
            inner = RedisStore(url)
        except ValueError as e:
            raise ConfigError(
                f"BOT_STATE_URL={safe_url(url)} is not a usable Redis URL ({e}); "
                "write it as redis://host:port/db"
            ) from None
        return ResilientStore(inner, on_retry=on_retry, down_grace_secs=down_grace_secs)
    scheme = url.split("://", 1)[0] if "://" in url else url
    raise ConfigError(f"BOT_STATE_URL: unknown store {scheme!r}; use one of: {_FORMS}")


def _sqlite(path: Path, key: str) -> SQLiteStore:
    try:
        return SQLiteStore(path)
    except (OSError, sqlite3.Error) as e:
        raise ConfigError(
            f"{key}: cannot open the state file {path} ({e}); point {key} at a writable place"
        ) from None
