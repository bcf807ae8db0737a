"""kill -9: an event stored with SQLite survives the process, and is sent with the same id."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bot.delivery.outbox import Outbox, list_events
from tests.delivery.conftest import SECRET, spec_verifies

sqlite = pytest.importorskip("bot.state.sqlite")  # the state room's backend
pytestmark = pytest.mark.timeout(20)

ROOT = Path(__file__).resolve().parents[2]

# The child: store a call.ended event; with a worker, attempt it; then wait to be killed.
CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from bot.delivery.events import call_ended_event
    from bot.delivery.outbox import Outbox
    from bot.state.sqlite import SQLiteStore

    async def main(path, url, start):
        outbox = Outbox(SQLiteStore(path), url, {secret!r}, poll_secs=0.1)
        event = call_ended_event(dict(
            call_sid="CA-kill", stream_sid="ST", from_number="+91", to_number="+91",
            started_at=0.0, ended_at=65.0, duration_secs=65.0, outcome="completed",
        ))
        await outbox.add(event)
        print(event.id, flush=True)
        if start == "worker":
            outbox.start()
        await asyncio.sleep(60)

    asyncio.run(main(*sys.argv[1:]))
    """
).format(secret=SECRET)


async def run_child(db: Path, url: str, mode: str) -> tuple[asyncio.subprocess.Process, str]:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(db), url, mode, cwd=ROOT, stdout=subprocess.PIPE
    )
    line = (await asyncio.wait_for(child.stdout.readline(), 10)).decode()
    assert line.startswith("evt_"), "the child did not store its event"
    return child, line.strip()


async def kill(child: asyncio.subprocess.Process) -> None:
    os.kill(child.pid, signal.SIGKILL)
    assert await asyncio.wait_for(child.wait(), 5) == -signal.SIGKILL


async def deliver_in_a_new_process(db: Path, url: str, clock) -> Outbox:
    store = sqlite.SQLiteStore(db)
    outbox = Outbox(store, url, SECRET, clock=clock)
    for _ in range(3):
        await outbox.run_once()
    return outbox


async def test_killed_before_the_first_attempt(receiver, tmp_path):
    db = tmp_path / "state.db"
    child, sent_id = await run_child(db, receiver.url, "no-worker")
    await kill(child)
    assert receiver.requests == []

    outbox = await deliver_in_a_new_process(db, receiver.url, time.time)
    [request] = receiver.requests
    assert request.headers["webhook-id"] == sent_id
    assert spec_verifies(SECRET, request.headers, request.body)
    assert [d.state for d in await list_events(outbox.store)] == ["delivered"]
    await outbox.stop()
    await outbox.store.close()


async def test_killed_while_the_attempt_is_in_flight(receiver, tmp_path):
    receiver.delay_secs = 30.0  # the child's request hangs until the child is gone
    db = tmp_path / "state.db"
    child, sent_id = await run_child(db, receiver.url, "worker")
    await asyncio.wait_for(receiver.arrived.wait(), 10)
    await kill(child)

    receiver.delay_secs = 0.0
    later = time.time() + 60  # the dead worker's lease (timeout + 30 s) has run out
    outbox = await deliver_in_a_new_process(db, receiver.url, lambda: later)
    assert [r.headers["webhook-id"] for r in receiver.requests] == [sent_id, sent_id]
    assert receiver.requests[0].body == receiver.requests[1].body
    assert [d.state for d in await list_events(outbox.store)] == ["delivered"]
    await outbox.stop()
    await outbox.store.close()
