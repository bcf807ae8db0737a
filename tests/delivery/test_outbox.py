"""The outbox against a real HTTP receiver on 127.0.0.1, with the clock moved by hand."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from random import Random

import pytest
from standardwebhooks import Webhook

from bot.delivery.events import Event, event_id
from bot.delivery.outbox import (
    MAX_RETRY_SECS,
    QUEUE,
    Outbox,
    deliveries_for_call,
    list_events,
    prune,
    retry,
    retry_dead,
)
from bot.state.memory import MemoryStore
from bot.state.sqlite import SQLiteStore
from tests.delivery.conftest import SECRET, Receiver, serve, spec_verifies

pytestmark = pytest.mark.timeout(10)


@pytest.fixture(params=["memory", "sqlite"])
async def store(request, tmp_path):
    """Every behaviour on the test backend and on the default serving one."""
    found = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "state.db")
    yield found
    await found.close()


def make_event(call_sid: str = "CA1", kind: str = "call.ended") -> Event:
    return Event(
        id=event_id(call_sid, kind),
        type=kind,
        timestamp="2026-03-01T10:01:05.500Z",
        data={"call_sid": call_sid, "outcome": "completed", "note": "नमस्ते"},
        call_sid=call_sid,
    )


def make_outbox(store, url, clock, events=None, **kwargs) -> Outbox:
    on_event = events.append if events is not None else None
    return Outbox(store, url, SECRET, clock=clock, on_event=on_event, **kwargs)


async def drive(outbox: Outbox, clock, passes: int, step: float = MAX_RETRY_SECS + 1) -> None:
    for _ in range(passes):
        await outbox.run_once()
        clock.advance(step)


async def test_down_three_times_then_delivered_on_the_fourth_with_one_id(receiver, clock, store):
    receiver.statuses = [500, 502, 500, 200]
    events = []
    outbox = make_outbox(store, receiver.url, clock, events)
    event = make_event()
    assert await outbox.add(event)
    assert [d.state for d in await list_events(store)] == ["pending"]

    assert await outbox.run_once() == 1
    assert await outbox.run_once() == 0  # not due again until its backoff has passed
    await drive(outbox, clock, 4)
    await outbox.stop()

    assert len(receiver.requests) == 4
    assert {r.headers["webhook-id"] for r in receiver.requests} == {event.id}
    stamps = [int(r.headers["webhook-timestamp"]) for r in receiver.requests]
    assert stamps == sorted(set(stamps))  # a fresh timestamp (and signature) per attempt
    for request in receiver.requests:
        assert request.body == event.body().encode()
        assert spec_verifies(SECRET, request.headers, request.body)
        assert request.headers["content-type"] == "application/json"
    assert events == ["retried", "retried", "retried", "delivered"]
    [delivered] = await list_events(store, state="delivered")
    assert [a["status"] for a in delivered.attempts] == [500, 502, 500, 200]
    assert delivered.finished_at == delivered.attempts[-1]["at"]
    assert await store.items(QUEUE) == []  # settled events leave the work queue


async def test_refused_then_timeout_then_delivered(clock, store):
    with socket.socket() as probe:  # a port nobody listens on, yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    events = []
    url = f"http://127.0.0.1:{port}/hooks?token=s3cret"
    outbox = make_outbox(store, url, clock, events, timeout_secs=0.3)
    await outbox.add(make_event())
    await drive(outbox, clock, 1)  # refused

    slow = Receiver(statuses=[200], delay_secs=2.0)
    runner = await serve(slow, port)
    try:
        await drive(outbox, clock, 1)  # timeout
        slow.delay_secs = 0.0
        await drive(outbox, clock, 1)
    finally:
        await outbox.stop()
        await runner.cleanup()

    [delivered] = await list_events(store, state="delivered")
    errors = [a.get("error", "") for a in delivered.attempts[:2]]
    assert "ClientConnectorError" in errors[0] and "s3cret" not in errors[0]
    assert errors[1].startswith("timeout")
    assert delivered.attempts[2] == {"at": delivered.attempts[2]["at"], "status": 200}
    assert len({r.headers["webhook-id"] for r in slow.requests}) == 1
    assert events == ["retried", "retried", "delivered"]


async def test_410_stops_all_attempts(receiver, clock, store):
    receiver.statuses = [410]
    events = []
    outbox = make_outbox(store, receiver.url, clock, events)
    await outbox.add(make_event())
    await drive(outbox, clock, 5)
    await outbox.stop()
    assert len(receiver.requests) == 1
    assert events == ["gone"]
    assert [d.state for d in await list_events(store)] == ["gone"]
    assert outbox.pending() == 0


async def test_dead_after_give_up_then_listed_and_resent(receiver, clock, store):
    receiver.statuses = [500]
    events = []
    outbox = make_outbox(store, receiver.url, clock, events, give_up_secs=600)
    await outbox.add(make_event("CA1"))
    clock.advance(1)
    await outbox.add(make_event("CA2"))
    await drive(outbox, clock, 4, step=400)

    # each failed at once, was retried at the give-up time at the latest, and then died
    dead = await list_events(store, state="dead")
    assert [d.call_sid for d in dead] == ["CA1", "CA2"]
    assert all(d.next_attempt_at is None for d in dead)
    assert events.count("dead") == 2 and events.count("retried") >= 2
    attempts_when_dead = len(receiver.requests)
    await drive(outbox, clock, 3)
    assert len(receiver.requests) == attempts_when_dead  # dead means no more attempts

    receiver.statuses = [200]
    assert await retry(outbox.store, dead[0].id, now=clock())
    await outbox.run_once()
    assert [d.call_sid for d in await list_events(store, state="delivered")] == ["CA1"]
    assert await retry_dead(store, now=clock()) == 1
    await outbox.run_once()
    await outbox.stop()
    assert await list_events(store, state="dead") == []
    assert len(await list_events(store, state="delivered")) == 2
    assert receiver.requests[-1].headers["webhook-id"] == dead[1].id
    assert not await retry(store, "evt_nosuch", now=clock())


async def test_add_is_idempotent_before_and_after_delivery(receiver, clock, store):
    outbox = make_outbox(store, receiver.url, clock)
    event = make_event()
    assert await outbox.add(event) is True
    assert await outbox.add(event) is False
    assert len(await store.items(QUEUE)) == 1
    await outbox.run_once()
    assert await outbox.add(event) is False  # delivered: a rebuild after restart is a no-op
    await drive(outbox, clock, 2)
    await outbox.stop()
    assert len(receiver.requests) == 1


async def test_two_workers_on_one_store_send_an_event_once(receiver, clock, store):
    receiver.delay_secs = 0.3  # both passes overlap while the POST is in flight
    first, second = (make_outbox(store, receiver.url, clock) for _ in range(2))
    await first.add(make_event())
    taken = await asyncio.gather(first.run_once(), second.run_once())
    await first.stop()
    await second.stop()
    assert sorted(taken) == [0, 1]
    assert len(receiver.requests) == 1


async def test_a_worker_dying_mid_attempt_leaves_it_for_the_next(receiver, clock, store):
    receiver.delay_secs = 5.0
    dying = make_outbox(store, receiver.url, clock)
    event = make_event()
    await dying.add(event)
    attempt = asyncio.create_task(dying.run_once())
    await asyncio.wait_for(receiver.arrived.wait(), 3)
    attempt.cancel()  # the process is gone before the answer is stored
    await dying.stop()

    receiver.delay_secs = 0.0
    heir = make_outbox(store, receiver.url, clock)
    assert await heir.run_once() == 0  # still leased by the dead worker
    clock.advance(60)  # past the lease (timeout + 30 s)
    assert await heir.run_once() == 1
    await heir.stop()
    assert [r.headers["webhook-id"] for r in receiver.requests] == [event.id, event.id]
    assert [d.state for d in await list_events(store)] == ["delivered"]


async def test_retry_after_is_honoured(receiver, clock, store):
    receiver.statuses = [503, 200]
    receiver.extra_headers = {"Retry-After": "1200"}
    outbox = make_outbox(store, receiver.url, clock)
    await outbox.add(make_event())
    await outbox.run_once()
    [pending] = await list_events(store, state="pending")
    assert pending.next_attempt_at == pytest.approx(clock() + 1200)
    clock.advance(1199)
    assert await outbox.run_once() == 0
    clock.advance(2)
    assert await outbox.run_once() == 1
    await outbox.stop()


async def test_backoff_grows_to_the_cap(receiver, clock, store):
    receiver.statuses = [500]
    outbox = make_outbox(store, receiver.url, clock, give_up_secs=10 * 86400, rng=Random(7))
    await outbox.add(make_event())
    delays = []
    for _ in range(14):
        await outbox.run_once()
        [pending] = await list_events(store, state="pending")
        delays.append(pending.next_attempt_at - clock())
        clock.now = pending.next_attempt_at
    await outbox.stop()
    assert all(1.0 <= d <= MAX_RETRY_SECS for d in delays)
    assert max(delays[:2]) <= 10.0  # 5 s, then 10 s windows
    assert max(delays[8:]) > 300  # windows of 640 s and more by then (full jitter)


async def test_calls_page_view_and_retention(receiver, clock, store):
    receiver.statuses = [200, 500]  # the first request succeeds, every later one fails
    outbox = make_outbox(store, receiver.url, clock)
    await outbox.add(make_event("CA1"))
    await outbox.run_once()
    clock.advance(1)
    await outbox.add(make_event("CA1", "call.status"))
    await outbox.add(make_event("CA2"))
    await outbox.run_once()
    one = await deliveries_for_call(store, "CA1")
    assert [(d.type, d.state) for d in one] == [
        ("call.ended", "delivered"),
        ("call.status", "pending"),
    ]
    assert one[1].next_attempt_at is not None and one[1].attempts[0]["status"] == 500
    assert [d.call_sid for d in await deliveries_for_call(store, "CA2")] == ["CA2"]
    assert json.loads(one[0].to_json(include_body=True)["body"])["type"] == "call.ended"
    assert "body" not in one[0].to_json()

    assert await prune(store, 3600, now=clock() + 10) == 0
    assert await prune(store, 3600, now=clock() + 3601) == 1
    remaining = await list_events(store)
    assert sorted((d.call_sid, d.state) for d in remaining) == [
        ("CA1", "pending"),
        ("CA2", "pending"),
    ]
    await outbox.stop()


async def test_the_worker_delivers_in_the_background_verifiably(receiver, store):
    events = []
    outbox = Outbox(store, receiver.url, SECRET, on_event=events.append, poll_secs=0.2)
    outbox.start()
    event = make_event()
    await outbox.add(event)
    await asyncio.wait_for(receiver.arrived.wait(), 3)
    for _ in range(50):  # the result is stored just after the answer
        if events:
            break
        await asyncio.sleep(0.02)
    await outbox.stop()
    [request] = receiver.requests
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    assert Webhook(SECRET).verify(request.body, request.headers)["data"]["note"] == "नमस्ते"
    assert events == ["delivered"]
    assert outbox.pending() == 0


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match="WEBHOOK_URL"):
        Outbox(MemoryStore(), "ftp://example.com/x", SECRET)
    with pytest.raises(ValueError, match="WEBHOOK_SECRET"):
        Outbox(MemoryStore(), "https://example.com/x", "")
