"""The default backend: an embedded SQLite file under the data directory.

A single instance needs no server and loses nothing on restart: every write is committed
before its coroutine returns, so a ``kill -9`` right after keeps it. Several processes may
share the file (the CLI and a running ``serve``): WAL mode lets readers run beside the one
writer, and the claim and take_due's lease are single transactions, atomic across processes.

All SQLite work runs on one worker thread that owns the connection, never on the event loop;
each operation is bounded by SQLite's busy timeout and an outer asyncio timeout, and a locked
or broken file raises :class:`StateUnavailable`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from bot.state.base import QueuedItem, StateStore, StateUnavailable

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS kv_expires ON kv (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS queue_items (
    queue TEXT NOT NULL,
    item_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    due_at REAL NOT NULL,
    PRIMARY KEY (queue, item_id)
);
CREATE INDEX IF NOT EXISTS queue_due ON queue_items (queue, due_at);
"""

# A live row: no expiry, or an expiry still ahead of the time passed as the last parameter.
_LIVE = "(expires_at IS NULL OR expires_at > ?)"


class SQLiteStore(StateStore):
    """Keys and queues in one SQLite file, safe to share between processes on one machine."""

    def __init__(
        self, path: Path, *, op_timeout_secs: float = 5.0, prune_every_secs: float = 60.0
    ) -> None:
        self.path = Path(path)
        self._op_timeout = op_timeout_secs
        self._prune_every = prune_every_secs
        self._last_prune = 0.0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The connection is opened here (so a bad path fails at startup, not on the first call)
        # and used only by the single worker thread afterwards.
        self._conn = sqlite3.connect(
            self.path, timeout=op_timeout_secs, isolation_level=None, check_same_thread=False
        )
        try:
            # WAL: readers never wait for the writer. synchronous=NORMAL in WAL mode is durable
            # against a process crash (kill -9); only a power cut may lose the last commits.
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error:
            self._conn.close()
            raise
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-sqlite")
        self._closed = False

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StateUnavailable(f"{self!r} is closed")
        loop = asyncio.get_running_loop()
        try:
            # The busy timeout bounds the wait for another process's lock; the outer timeout
            # (a little longer) bounds everything else, such as a stalled disk.
            return await asyncio.wait_for(
                loop.run_in_executor(self._worker, fn, self._conn), self._op_timeout + 1.0
            )
        except (sqlite3.OperationalError, TimeoutError) as e:
            raise StateUnavailable(f"state file {self.path}: {str(e) or 'timed out'}") from e

    def _maybe_prune(self, conn: sqlite3.Connection, now: float) -> None:
        """Delete expired keys now and then (reads already ignore them)."""
        if now - self._last_prune >= self._prune_every:
            self._last_prune = now
            conn.execute("DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))

    async def get(self, key: str) -> str | None:
        def op(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                f"SELECT value FROM kv WHERE key = ? AND {_LIVE}", (key, time.time())
            ).fetchone()
            return None if row is None else row[0]

        return await self._run(op)

    async def set(self, key: str, value: str, ttl_secs: float | None = None) -> None:
        def op(conn: sqlite3.Connection) -> None:
            now = time.time()
            expires_at = None if ttl_secs is None else now + ttl_secs
            conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (key, value, expires_at))
            self._maybe_prune(conn, now)

        await self._run(op)

    async def claim(self, key: str, value: str, ttl_secs: float | None = None) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            now = time.time()
            expires_at = None if ttl_secs is None else now + ttl_secs
            # One statement, so atomic across connections: insert, or take over an expired row.
            cursor = conn.execute(
                "INSERT INTO kv VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE"
                " SET value = excluded.value, expires_at = excluded.expires_at"
                " WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= ?",
                (key, value, expires_at, now),
            )
            self._maybe_prune(conn, now)
            return cursor.rowcount == 1

        return await self._run(op)

    async def delete(self, key: str) -> None:
        await self._run(lambda conn: conn.execute("DELETE FROM kv WHERE key = ?", (key,)))

    async def keys(self, prefix: str) -> list[str]:
        def op(conn: sqlite3.Connection) -> list[str]:
            # substr, not LIKE: a prefix may hold % or _ and needs no escaping this way.
            rows = conn.execute(
                f"SELECT key FROM kv WHERE substr(key, 1, ?) = ? AND {_LIVE}",
                (len(prefix), prefix, time.time()),
            )
            return [row[0] for row in rows]

        return await self._run(op)

    async def enqueue(self, queue: str, item_id: str, payload: str, due_at: float) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO queue_items VALUES (?, ?, ?, ?)",
                (queue, item_id, payload, due_at),
            )
            return cursor.rowcount == 1

        return await self._run(op)

    async def take_due(
        self, queue: str, now: float, lease_secs: float, limit: int = 10
    ) -> list[QueuedItem]:
        def op(conn: sqlite3.Connection) -> list[QueuedItem]:
            # BEGIN IMMEDIATE takes the write lock before reading, so another process cannot
            # select the same items between our SELECT and our UPDATE.
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute(
                    "SELECT item_id, payload, due_at FROM queue_items"
                    " WHERE queue = ? AND due_at <= ? ORDER BY due_at, item_id LIMIT ?",
                    (queue, now, limit),
                ).fetchall()
                conn.executemany(
                    "UPDATE queue_items SET due_at = ? WHERE queue = ? AND item_id = ?",
                    [(now + lease_secs, queue, row[0]) for row in rows],
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return [QueuedItem(*row) for row in rows]

        return await self._run(op)

    async def reschedule(
        self, queue: str, item_id: str, due_at: float, payload: str | None = None
    ) -> None:
        await self._run(
            lambda conn: conn.execute(
                "UPDATE queue_items SET due_at = ?, payload = coalesce(?, payload)"
                " WHERE queue = ? AND item_id = ?",
                (due_at, payload, queue, item_id),
            )
        )

    async def remove(self, queue: str, item_id: str) -> None:
        await self._run(
            lambda conn: conn.execute(
                "DELETE FROM queue_items WHERE queue = ? AND item_id = ?", (queue, item_id)
            )
        )

    async def items(self, queue: str) -> list[QueuedItem]:
        def op(conn: sqlite3.Connection) -> list[QueuedItem]:
            rows = conn.execute(
                "SELECT item_id, payload, due_at FROM queue_items WHERE queue = ?"
                " ORDER BY due_at, item_id",
                (queue,),
            )
            return [QueuedItem(*row) for row in rows]

        return await self._run(op)

    async def close(self) -> None:
        if self._closed:
            return
        await self._run(lambda conn: conn.close())
        self._closed = True
        self._worker.shutdown(wait=False)
