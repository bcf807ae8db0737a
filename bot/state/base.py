"""The interface every state backend implements (memory, SQLite, Redis).

Values are strings (callers store JSON); times are unix seconds (``time.time()``), so a queue
shared by several processes agrees on what is due. Every method is a coroutine with its own
timeout inside the backend: a slow or absent server raises :class:`StateUnavailable`, never hangs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


class StateUnavailable(RuntimeError):
    """The backend could not be reached in time; the caller decides whether to retry."""


@dataclass(frozen=True)
class QueuedItem:
    """One item of a queue: its id (unique in the queue), its payload and when it is due."""

    item_id: str
    payload: str
    due_at: float


class StateStore(ABC):
    """Keys with a time to live, an atomic claim, and queues of due items.

    Key names starting with ``queue:{`` are reserved (the Redis backend keeps queues there).
    """

    @abstractmethod
    async def get(self, key: str) -> str | None:
        """The value of ``key``, or None when it is absent or expired."""

    @abstractmethod
    async def set(self, key: str, value: str, ttl_secs: float | None = None) -> None:
        """Store ``value`` under ``key``, expiring after ``ttl_secs`` (None: never)."""

    @abstractmethod
    async def claim(self, key: str, value: str, ttl_secs: float | None = None) -> bool:
        """Set ``key`` only if it is absent; True for the one caller that set it."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove ``key`` (absent is fine)."""

    @abstractmethod
    async def keys(self, prefix: str) -> list[str]:
        """Every live key that starts with ``prefix``, in no particular order."""

    @abstractmethod
    async def enqueue(self, queue: str, item_id: str, payload: str, due_at: float) -> bool:
        """Add an item; False (and nothing changed) when ``item_id`` is already queued."""

    @abstractmethod
    async def take_due(
        self, queue: str, now: float, lease_secs: float, limit: int = 10
    ) -> list[QueuedItem]:
        """Items due at ``now``, each leased: it is not due again for ``lease_secs``.

        The lease makes two workers (two processes on one Redis) never take the same item at
        once, and an item whose worker died becomes due again when its lease runs out.
        """

    @abstractmethod
    async def reschedule(
        self, queue: str, item_id: str, due_at: float, payload: str | None = None
    ) -> None:
        """Make an item due at ``due_at`` (and replace its payload when one is given)."""

    @abstractmethod
    async def remove(self, queue: str, item_id: str) -> None:
        """Take an item out of the queue (absent is fine)."""

    @abstractmethod
    async def items(self, queue: str) -> list[QueuedItem]:
        """Every item of the queue, soonest due first."""

    def down_for_secs(self) -> float:
        """How long the backend has been unreachable; 0.0 for backends that cannot be."""
        return 0.0

    def healthy(self, grace_secs: float | None = None) -> bool:
        """False once the backend has been unreachable for longer than ``grace_secs``.

        ``/ready`` asks this so a balancer stops sending calls to an instance that cannot see
        the shared state; only ``ResilientStore`` (around Redis) ever answers False.
        """
        return True

    async def close(self) -> None:
        """Release connections and files; the store is not used afterwards."""
        return None
