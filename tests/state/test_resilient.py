"""ResilientStore: writes kept and replayed in order through an outage, reads fail fast.

Against a fake backend that can be switched off (exact and fast), and against a real
redis-server stopped and started again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

import pytest
from loguru import logger

from bot.state import MemoryStore, QueuedItem, RedisStore, ResilientStore, StateUnavailable


class SwitchableStore(MemoryStore):
    """A MemoryStore that raises StateUnavailable for every call while ``down``."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.calls: list[str] = []
        self.refused: set[str] = set()

    def __getattribute__(self, name: str):
        attr = super().__getattribute__(name)
        if name in {"get", "set", "claim", "delete", "keys", "enqueue", "take_due",
                    "reschedule", "remove", "items"}:  # fmt: skip

            async def guarded(*args, **kwargs):
                self.calls.append(name)
                if self.down:
                    raise StateUnavailable("switched off")
                if args and args[0] in self.refused:
                    raise ValueError(f"refused {args[0]}")
                return await attr(*args, **kwargs)

            return guarded
        return attr


@pytest.fixture
def logs() -> Iterator[list[tuple[str, str]]]:
    records: list[tuple[str, str]] = []
    sink = logger.add(lambda m: records.append((m.record["level"].name, m.record["message"])))
    yield records
    logger.remove(sink)


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def fast(inner, **kwargs) -> ResilientStore:
    return ResilientStore(inner, first_backoff_secs=0.01, max_backoff_secs=0.05, **kwargs)


async def test_writes_kept_in_order_and_replayed(logs):
    inner = SwitchableStore()
    retries: list[int] = []
    store = fast(inner, on_retry=lambda: retries.append(1), down_grace_secs=0.05)
    await store.set("call:A:outcome", "none")
    inner.down = True
    await store.set("call:A:outcome", "transfer")
    await store.set("call:A:outcome", "transfer-2")
    await store.delete("call:B:outcome")
    assert await store.enqueue("outbox", "e1", "{}", 1.0) is True
    await store.reschedule("outbox", "e1", 9.0, payload="{retry}")
    assert store.pending_writes() == 5
    for read in (store.get("k"), store.keys(""), store.items("q"), store.claim("k", "v")):
        with pytest.raises(StateUnavailable):
            await read
    calls_before = len(inner.calls)
    with pytest.raises(StateUnavailable):
        await store.take_due("outbox", 10.0, 5.0)
    assert len(inner.calls) == calls_before  # reads fail fast, without touching the backend
    await asyncio.sleep(0.1)
    assert not store.healthy() and store.healthy(grace_secs=60)
    assert store.down_for_secs() > 0.05
    assert len(retries) >= 5  # each kept write, plus the failed replays
    inner.down = False
    await wait_until(lambda: store.healthy() and store.pending_writes() == 0)
    assert store.down_for_secs() == 0.0
    assert await store.get("call:A:outcome") == "transfer-2"
    assert await store.items("outbox") == [QueuedItem("e1", "{retry}", 9.0)]
    assert [level for level, msg in logs if "unreachable" in msg] == ["WARNING"]
    back = [msg for level, msg in logs if level == "INFO" and "reachable again" in msg]
    assert len(back) == 1 and "5 kept writes replayed" in back[0]
    await store.close()


async def test_ttl_runs_while_a_write_waits():
    inner = SwitchableStore()
    store = fast(inner)
    await inner.set("call:A:settings", "old")
    inner.down = True
    await store.set("call:A:settings", "new", ttl_secs=0.05)  # expires before it can land
    await store.set("call:B:settings", "kept", ttl_secs=600)
    await asyncio.sleep(0.1)
    inner.down = False
    await wait_until(lambda: store.pending_writes() == 0)
    assert await inner.get("call:A:settings") is None  # the old value is gone too
    assert await inner.get("call:B:settings") == "kept"
    await store.close()


async def test_pending_writes_are_bounded(logs):
    inner = SwitchableStore()
    inner.down = True
    store = fast(inner, max_pending=3)
    for i in range(5):
        await store.set(f"k{i}", "v")
    assert store.pending_writes() == 3
    inner.down = False
    await wait_until(lambda: store.healthy(grace_secs=0) and store.pending_writes() == 0)
    assert sorted(await store.keys("k")) == ["k2", "k3", "k4"]  # the oldest were dropped
    assert len([msg for level, msg in logs if level == "ERROR"]) == 1
    assert any("2 dropped" in msg for level, msg in logs if level == "INFO")
    await store.close()


async def test_outage_begun_by_a_read_ends_by_probing(logs):
    inner = SwitchableStore()
    store = fast(inner, down_grace_secs=0.0)
    inner.down = True
    with pytest.raises(StateUnavailable):
        await store.get("call:A:outcome")
    await asyncio.sleep(0.02)
    assert not store.healthy()
    inner.down = False
    await wait_until(lambda: store.healthy())
    assert await store.claim("call:A:hangup", "me") is True
    await store.close()


async def test_a_broken_retry_callback_does_not_break_writes():
    def broken() -> None:
        raise RuntimeError("metric registry gone")

    inner = SwitchableStore()
    inner.down = True
    store = fast(inner, on_retry=broken)
    await store.set("k", "v")
    inner.down = False
    await wait_until(lambda: store.pending_writes() == 0)
    assert await inner.get("k") == "v"
    await store.close()


async def test_a_refused_write_is_dropped_not_retried_forever(logs):
    inner = SwitchableStore()
    inner.down = True
    store = fast(inner)
    await store.set("bad", "v")
    await store.set("good", "v")
    inner.refused.add("bad")
    inner.down = False
    await wait_until(lambda: store.healthy(grace_secs=0) and store.pending_writes() == 0)
    assert await inner.get("good") == "v"
    assert any("dropping a kept set" in msg for level, msg in logs if level == "ERROR")
    await store.close()


async def test_watch_notices_an_outage_on_an_idle_store():
    inner = SwitchableStore()
    store = fast(inner, down_grace_secs=0.0)
    watcher = asyncio.create_task(store.watch(interval_secs=0.01))
    try:
        inner.down = True
        await wait_until(lambda: not store.healthy())
        inner.down = False
        await wait_until(lambda: store.healthy())
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await store.close()


async def test_redis_stopped_mid_use(redis_process_handle, logs):
    server = redis_process_handle
    retries: list[int] = []
    store = ResilientStore(
        RedisStore(server.url),
        on_retry=lambda: retries.append(1),
        down_grace_secs=0.1,
        max_backoff_secs=0.2,
    )
    check = RedisStore(server.url)
    try:
        await store.set("call:A:outcome", "none", ttl_secs=7200)
        await store.set("call:B:outcome", "transfer")
        await asyncio.to_thread(server.stop)
        writes = [
            store.set("call:A:outcome", "transfer", ttl_secs=7200),
            store.delete("call:B:outcome"),
            store.enqueue("outbox", "e1", '{"event": "call.ended"}', 5.0),
            store.set("call:C:settings", "{}", ttl_secs=7200),
        ]
        for write in writes:  # none raises, none waits for a timeout of its own
            await asyncio.wait_for(write, 2.0)
        assert store.pending_writes() == 4
        with pytest.raises(StateUnavailable):
            await store.claim("call:A:hangup", "me")
        await asyncio.sleep(0.2)
        assert not store.healthy()
        assert retries
        assert len([msg for level, msg in logs if level == "WARNING"]) == 1
        await asyncio.to_thread(server.start)  # same port, empty: only what was replayed is there
        await wait_until(lambda: store.healthy() and store.pending_writes() == 0)
        assert await check.get("call:A:outcome") == "transfer"
        assert await check.get("call:B:outcome") is None
        assert await check.get("call:C:settings") == "{}"
        assert await check.items("outbox") == [QueuedItem("e1", '{"event": "call.ended"}', 5.0)]
        assert 0 < await check._redis.ttl("call:A:outcome") <= 7200  # TTL kept on replay
        assert [level for level, msg in logs if "reachable again" in msg] == ["INFO"]
    finally:
        await check.close()
        await store.close()
