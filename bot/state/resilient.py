"""A store that keeps calls going while its backend (Redis) is unreachable.

Writes (set, delete, enqueue, reschedule, remove) never fail on an outage: a write that finds
the backend down is kept, in order with every later write, and one background task replays
them with capped exponential backoff until the backend answers. A write therefore returns as
soon as it is stored, or at once when it is kept for replay; at worst the first write of an
outage waits for the backend's own timeout (about 1 s for Redis).

Reads and the operations that need an answer (get, keys, items, claim, take_due) raise
:class:`StateUnavailable` while the backend is down or writes are still waiting, without
touching the network: the caller decides (a Passthru answers as for an unknown call, the
outbox worker tries again later). A read never sees state older than a write kept for replay.

One warning per outage, one info when it ends; every retried write is counted through the
``on_retry`` callback (the server wires a Prometheus counter; this package imports none), and
:meth:`healthy` turns False after ``down_grace_secs`` so ``/ready`` can answer 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from loguru import logger

from bot.state.base import QueuedItem, StateStore, StateUnavailable

T = TypeVar("T")

# Read while no write is waiting, to learn that an outage begun by a read is over.
PROBE_KEY = "state:probe"


@dataclass
class _Write:
    """One write kept for replay: the method of the inner store and its arguments."""

    method: str
    args: tuple
    kept_at: float = field(default_factory=time.monotonic)


class ResilientStore(StateStore):
    """Wraps a store whose server may go away; see the module docstring for the contract."""

    def __init__(
        self,
        inner: StateStore,
        on_retry: Callable[[], None] | None = None,
        down_grace_secs: float = 10.0,
        *,
        max_pending: int = 10_000,
        first_backoff_secs: float = 0.1,
        max_backoff_secs: float = 2.0,
        close_flush_secs: float = 2.0,
    ) -> None:
        self.inner = inner
        self.on_retry = on_retry
        self.down_grace_secs = down_grace_secs
        self._max_pending = max_pending
        self._first_backoff = first_backoff_secs
        self._max_backoff = max_backoff_secs
        self._close_flush = close_flush_secs
        self._pending: deque[_Write] = deque()
        self._down_since: float | None = None  # monotonic time the outage began
        self._dropped = 0
        self._replayed = 0
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"ResilientStore({self.inner!r})"

    # -- health ---------------------------------------------------------------------------

    def down_for_secs(self) -> float:
        """How long the backend has been unreachable (0.0 while it answers)."""
        return 0.0 if self._down_since is None else time.monotonic() - self._down_since

    def healthy(self, grace_secs: float | None = None) -> bool:
        """False once the backend has been down longer than the grace (default: the store's)."""
        grace = self.down_grace_secs if grace_secs is None else grace_secs
        return self.down_for_secs() <= grace

    def pending_writes(self) -> int:
        """Writes kept for replay, not yet in the backend."""
        return len(self._pending)

    # -- reads: fail fast ------------------------------------------------------------------

    async def _read(self, op: Callable[[], Awaitable[T]]) -> T:
        if self._down_since is not None or self._pending:
            raise StateUnavailable(f"{self.inner!r} unreachable for {self.down_for_secs():.1f} s")
        try:
            return await op()
        except StateUnavailable as e:
            self._went_down(e)
            raise

    async def get(self, key: str) -> str | None:
        return await self._read(lambda: self.inner.get(key))

    async def claim(self, key: str, value: str, ttl_secs: float | None = None) -> bool:
        """Raises StateUnavailable while the backend is down: a claim needs the backend's answer."""
        return await self._read(lambda: self.inner.claim(key, value, ttl_secs))

    async def keys(self, prefix: str) -> list[str]:
        return await self._read(lambda: self.inner.keys(prefix))

    async def take_due(
        self, queue: str, now: float, lease_secs: float, limit: int = 10
    ) -> list[QueuedItem]:
        """Raises StateUnavailable while the backend is down (the lease needs its answer)."""
        return await self._read(lambda: self.inner.take_due(queue, now, lease_secs, limit))

    async def items(self, queue: str) -> list[QueuedItem]:
        return await self._read(lambda: self.inner.items(queue))

    # -- writes: never fail on an outage ---------------------------------------------------

    async def _write(self, write: _Write) -> None:
        """Apply the write now if nothing is waiting, else keep it for replay."""
        if self._down_since is None and not self._pending:
            try:
                await self._apply(write)
                return
            except StateUnavailable as e:
                self._went_down(e)
        self._keep(write)

    def _keep(self, write: _Write) -> None:
        if len(self._pending) >= self._max_pending:
            self._pending.popleft()
            if self._dropped == 0:
                logger.error(
                    f"state store: more than {self._max_pending} writes waiting; "
                    "dropping the oldest until it is back"
                )
            self._dropped += 1
        self._pending.append(write)
        self._count_retry()
        self._ensure_replayer()

    async def set(self, key: str, value: str, ttl_secs: float | None = None) -> None:
        await self._write(_Write("set", (key, value, ttl_secs)))

    async def delete(self, key: str) -> None:
        await self._write(_Write("delete", (key,)))

    async def enqueue(self, queue: str, item_id: str, payload: str, due_at: float) -> bool:
        """As the inner store's; True when the item was kept for replay (its id is checked then)."""
        write = _Write("enqueue", (queue, item_id, payload, due_at))
        if self._down_since is None and not self._pending:
            try:
                return await self.inner.enqueue(queue, item_id, payload, due_at)
            except StateUnavailable as e:
                self._went_down(e)
        self._keep(write)
        return True

    async def reschedule(
        self, queue: str, item_id: str, due_at: float, payload: str | None = None
    ) -> None:
        await self._write(_Write("reschedule", (queue, item_id, due_at, payload)))

    async def remove(self, queue: str, item_id: str) -> None:
        await self._write(_Write("remove", (queue, item_id)))

    async def _apply(self, write: _Write) -> None:
        if write.method == "set":
            key, value, ttl_secs = write.args
            if ttl_secs is not None:
                # The TTL ran while the write waited; a value that would have expired by now
                # is the same as no value, which also clears whatever the key held before.
                ttl_secs -= time.monotonic() - write.kept_at
                if ttl_secs <= 0:
                    await self.inner.delete(key)
                    return
            await self.inner.set(key, value, ttl_secs)
            return
        await getattr(self.inner, write.method)(*write.args)

    # -- outage bookkeeping and replay -----------------------------------------------------

    def _count_retry(self) -> None:
        if self.on_retry is not None:
            try:
                self.on_retry()
            except Exception:  # a broken metric must not break a write
                logger.exception("state store: on_retry callback failed")

    def _went_down(self, error: StateUnavailable) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._dropped = 0
            self._replayed = 0
            logger.warning(
                f"state store unreachable ({error}); calls go on, writes are kept and retried "
                "in the background"
            )
        self._ensure_replayer()

    def _ensure_replayer(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._replay(), name="state-store-replay"
            )

    async def _replay(self) -> None:
        """Replay kept writes in order; with none, probe until the backend answers."""
        backoff = self._first_backoff
        while self._pending or self._down_since is not None:
            write = self._pending[0] if self._pending else None
            try:
                if write is None:
                    await self.inner.get(PROBE_KEY)
                else:
                    await self._apply(write)
                    self._replayed += 1
            except StateUnavailable:
                if self._pending:
                    self._count_retry()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            except Exception:  # the backend answered and refused it: retrying cannot help
                what = "probe" if write is None else f"kept {write.method}"
                logger.exception(f"state store: dropping a {what} it refused")
            backoff = self._first_backoff
            # _keep may have dropped this very write (the oldest) while it was replayed.
            if self._pending and self._pending[0] is write:
                self._pending.popleft()
            if not self._pending:
                self._came_back()

    def _came_back(self) -> None:
        if self._down_since is None:
            return
        dropped = f", {self._dropped} dropped" if self._dropped else ""
        logger.info(
            f"state store reachable again after {self.down_for_secs():.1f} s; "
            f"{self._replayed} kept writes replayed{dropped}"
        )
        self._down_since = None

    async def watch(self, interval_secs: float = 1.0) -> None:
        """Probe the backend every ``interval_secs`` while it seems well, until cancelled.

        Without it an outage is noticed by the first read or write that fails; with it
        ``healthy()`` (and so ``/ready``) turns False on an idle instance too.
        """
        while True:
            await asyncio.sleep(interval_secs)
            if self._down_since is None and not self._pending:
                try:
                    await self.inner.get(PROBE_KEY)
                except StateUnavailable as e:
                    self._went_down(e)

    async def close(self) -> None:
        """Give kept writes a last short chance to land, then release the backend."""
        if self._task is not None and not self._task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), self._close_flush)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._pending:
            logger.warning(f"state store: {len(self._pending)} kept writes lost at shutdown")
        await self.inner.close()
