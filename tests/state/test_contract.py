"""One contract for every backend: memory, SQLite (a temp file) and a real redis-server."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot.state import MemoryStore, QueuedItem, RedisStore, SQLiteStore, StateStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def make_store(request, tmp_path) -> AsyncIterator[Callable[[], StateStore]]:
    """A factory of stores that share one backing (one dict, one file, one server)."""
    if request.param == "memory":
        shared = MemoryStore()

        def factory() -> StateStore:
            return shared
    elif request.param == "sqlite":

        def factory() -> StateStore:
            return SQLiteStore(tmp_path / "state.sqlite3")
    else:
        url = request.getfixturevalue("redis_server")

        def factory() -> StateStore:
            return RedisStore(url)

    opened: list[StateStore] = []

    def make() -> StateStore:
        opened.append(factory())
        return opened[-1]

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
def store(make_store) -> StateStore:
    return make_store()


async def test_set_get_overwrite_delete(store):
    assert await store.get("call:A:outcome") is None
    await store.set("call:A:outcome", '{"transfer": "+91"}')
    await store.set("call:A:outcome", '{"transfer": "+92"}')
    assert await store.get("call:A:outcome") == '{"transfer": "+92"}'
    await store.delete("call:A:outcome")
    await store.delete("call:A:outcome")  # absent is fine
    assert await store.get("call:A:outcome") is None


async def test_ttl_expiry(store):
    await store.set("call:A:settings", "short", ttl_secs=0.05)
    await store.set("call:B:settings", "long", ttl_secs=600)
    await asyncio.sleep(0.3)
    assert await store.get("call:A:settings") is None
    assert await store.get("call:B:settings") == "long"
    assert await store.keys("call:") == ["call:B:settings"]
    # an expired key can be claimed again
    assert await store.claim("call:A:settings", "again", ttl_secs=600) is True
    assert await store.get("call:A:settings") == "again"


async def test_claim_is_atomic_across_store_objects(make_store):
    stores = [make_store(), make_store()]
    results = await asyncio.gather(
        *(stores[i % 2].claim("call:A:hangup", f"worker-{i}", 600) for i in range(10))
    )
    assert results.count(True) == 1
    winner = results.index(True)
    assert await stores[1].get("call:A:hangup") == f"worker-{winner}"
    assert await stores[0].claim("call:A:hangup", "late") is False


async def test_keys_by_prefix(store):
    for key in ["call:A:outcome", "call:A:settings", "call:AB:outcome", "campaign:1", "a*b:1"]:
        await store.set(key, "v")
    await store.set("axb:1", "v")
    await store.enqueue("outbox", "e1", "{}", 1.0)  # queues are not keys
    assert sorted(await store.keys("call:A:")) == ["call:A:outcome", "call:A:settings"]
    assert sorted(await store.keys("call:A")) == [
        "call:A:outcome",
        "call:A:settings",
        "call:AB:outcome",
    ]
    assert await store.keys("a*b") == ["a*b:1"]  # glob characters match only themselves
    assert await store.keys("nothing:") == []
    assert len(await store.keys("")) == 6


async def test_enqueue_is_idempotent(store):
    assert await store.enqueue("outbox", "e1", "first", 10.0) is True
    assert await store.enqueue("outbox", "e1", "second", 5.0) is False
    assert await store.items("outbox") == [QueuedItem("e1", "first", 10.0)]
    assert await store.items("other") == []


async def test_take_due_leases_items(store):
    await store.enqueue("outbox", "a", "pa", 100.0)
    await store.enqueue("outbox", "b", "pb", 200.0)
    await store.enqueue("outbox", "c", "pc", 300.0)
    assert await store.take_due("outbox", now=250.0, lease_secs=30.0) == [
        QueuedItem("a", "pa", 100.0),
        QueuedItem("b", "pb", 200.0),
    ]
    assert await store.take_due("outbox", now=279.0, lease_secs=30.0) == []  # leased
    taken = await store.take_due("outbox", now=300.0, lease_secs=30.0, limit=2)
    assert [item.item_id for item in taken] == ["a", "b"]  # the lease ran out; limit holds
    assert [item.due_at for item in await store.items("outbox")] == [300.0, 330.0, 330.0]


async def test_concurrent_take_due_never_shares_an_item(make_store):
    stores = [make_store(), make_store()]
    for i in range(20):
        await stores[0].enqueue("outbox", f"e{i:02}", f"p{i}", float(i))
    batches = await asyncio.gather(
        *(stores[i % 2].take_due("outbox", now=100.0, lease_secs=60.0, limit=3) for i in range(8))
    )
    taken = [item.item_id for batch in batches for item in batch]
    assert len(taken) == 20
    assert sorted(taken) == [f"e{i:02}" for i in range(20)]


async def test_reschedule_remove_items_order(store):
    await store.enqueue("outbox", "x", "px", 10.0)
    await store.enqueue("outbox", "y", "py", 20.0)
    await store.enqueue("outbox", "z", "pz", 30.0)
    await store.reschedule("outbox", "x", 40.0, payload="px-attempt-2")
    await store.reschedule("outbox", "y", 25.0)  # payload kept
    await store.reschedule("outbox", "ghost", 1.0)  # absent: nothing is created
    assert await store.items("outbox") == [
        QueuedItem("y", "py", 25.0),
        QueuedItem("z", "pz", 30.0),
        QueuedItem("x", "px-attempt-2", 40.0),
    ]
    await store.remove("outbox", "z")
    await store.remove("outbox", "ghost")
    assert [item.item_id for item in await store.items("outbox")] == ["y", "x"]
    assert await store.take_due("outbox", now=30.0, lease_secs=5.0) == [QueuedItem("y", "py", 25.0)]


_WRITER = """
import asyncio, sys
from pathlib import Path
from bot.state.sqlite import SQLiteStore

async def main():
    store = SQLiteStore(Path(sys.argv[1]))
    await store.set("call:K:outcome", "transfer", ttl_secs=7200)
    await store.enqueue("outbox", "e1", "{}", 5.0)
    print("written", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_sqlite_survives_kill_9(tmp_path):
    path = tmp_path / "state.sqlite3"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _WRITER, str(path), cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.strip() == b"written"
    finally:
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)
    store = SQLiteStore(path)
    try:
        assert await store.get("call:K:outcome") == "transfer"
        assert await store.items("outbox") == [QueuedItem("e1", "{}", 5.0)]
    finally:
        await store.close()


async def test_sqlite_survives_reopen_without_close(tmp_path):
    first = SQLiteStore(tmp_path / "state.sqlite3")
    await first.set("campaign:1", "running")
    del first  # dropped without close, as a crashed process would
    second = SQLiteStore(tmp_path / "state.sqlite3")
    try:
        assert await second.get("campaign:1") == "running"
    finally:
        await second.close()
