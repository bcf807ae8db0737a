"""``memory://``: the state store in this process's memory, for tests and one-off runs.

Nothing survives the process; the default for serving is SQLite (``bot.state.sqlite``).
"""

from __future__ import annotations

import time

from bot.state.base import QueuedItem, StateStore


class MemoryStore(StateStore):
    """A dict of values with expiry times, and a dict of queues."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[str, float | None]] = {}
        self._queues: dict[str, dict[str, QueuedItem]] = {}

    def _live(self, key: str) -> str | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        value, expires_at = entry
        if expires_at is not None and expires_at <= time.time():
            del self._values[key]
            return None
        return value

    async def get(self, key: str) -> str | None:
        return self._live(key)

    async def set(self, key: str, value: str, ttl_secs: float | None = None) -> None:
        expires_at = None if ttl_secs is None else time.time() + ttl_secs
        self._values[key] = (value, expires_at)

    async def claim(self, key: str, value: str, ttl_secs: float | None = None) -> bool:
        if self._live(key) is not None:
            return False
        await self.set(key, value, ttl_secs)
        return True

    async def delete(self, key: str) -> None:
        self._values.pop(key, None)

    async def keys(self, prefix: str) -> list[str]:
        return [key for key in list(self._values) if key.startswith(prefix) and self._live(key)]

    async def enqueue(self, queue: str, item_id: str, payload: str, due_at: float) -> bool:
        items = self._queues.setdefault(queue, {})
        if item_id in items:
            return False
        items[item_id] = QueuedItem(item_id, payload, due_at)
        return True

    async def take_due(
        self, queue: str, now: float, lease_secs: float, limit: int = 10
    ) -> list[QueuedItem]:
        items = self._queues.get(queue, {})
        due = sorted((item for item in items.values() if item.due_at <= now), key=_due)[:limit]
        for item in due:
            items[item.item_id] = QueuedItem(item.item_id, item.payload, now + lease_secs)
        return due

    async def reschedule(
        self, queue: str, item_id: str, due_at: float, payload: str | None = None
    ) -> None:
        items = self._queues.get(queue, {})
        item = items.get(item_id)
        if item is not None:
            items[item_id] = QueuedItem(
                item_id, item.payload if payload is None else payload, due_at
            )

    async def remove(self, queue: str, item_id: str) -> None:
        self._queues.get(queue, {}).pop(item_id, None)

    async def items(self, queue: str) -> list[QueuedItem]:
        return sorted(self._queues.get(queue, {}).values(), key=_due)


def _due(item: QueuedItem) -> float:
    return item.due_at
