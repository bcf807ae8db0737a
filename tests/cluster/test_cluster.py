"""Many instances behind a real HAProxy, shared state in a real Redis (issue 22).

Each test starts its own cluster (``bot.cli.cluster.LocalCluster``, the code behind
``python -m bot cluster``) on loopback ports, with ``deploy/haproxy.cfg`` rendered for them,
and places simulated Exotel calls; the providers are the fakes in this process. The figures
each test measured are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx
import pytest

from bot.agent.transfer import record_transfer
from bot.server.runtime import served_key
from bot.simulator.client import CallConfig, CallRecording, ExotelSimulator, Hangup, Say, WaitForBot
from bot.state import open_store
from tests.helpers import tone

pytestmark = pytest.mark.cluster

# What a dropped call looks like on the wire: abnormal closure, internal error, service restart.
DROP_CODES = {1006, 1011, 1012}


def conversation(turns: int = 2) -> list:
    """The greeting, then ``turns`` caller lines each answered, then the caller hangs up."""
    script: list = [WaitForBot(gap=0.2)]
    for i in range(turns):
        script += [Say(tone(0.5), gap=0.2, label=f"turn {i + 1}")]
    return [*script, WaitForBot(gap=0.2), Hangup()]


async def call(url: str, turns: int = 2, call_sid: str | None = None) -> CallRecording:
    ids = {"call_sid": call_sid} if call_sid else {}
    config = CallConfig(url=url, wait_timeout=15, overall_timeout=60, connect_timeout=5, **ids)
    return await ExotelSimulator(config).run(conversation(turns))


def completed(rec: CallRecording, turns: int = 2) -> bool:
    """Connected, every caller line answered, hung up by the caller with a clean close."""
    answered = [t for t in rec.turns if t.latency_secs is not None]
    return (
        rec.connect_error is None
        and rec.closed_by == "caller"
        and rec.close_code not in DROP_CODES
        and len(answered) == turns == len(rec.turns)
    )


def outcome(rec: CallRecording) -> str:
    return rec.connect_error or f"{rec.closed_by}/{rec.close_code}/{len(rec.turns)} turns"


async def call_record(store, call_sid: str, ended: bool = True) -> dict:
    """The call's ``served`` record once it has (or, ``ended=False``, whatever is there)."""
    record: dict = {}
    for _ in range(50):  # the bot writes the end just after the caller's hang-up
        record = json.loads(await store.get(served_key(call_sid)) or "{}")
        if not ended or "ended_at" in record:
            break
        await asyncio.sleep(0.1)
    return record


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.get(url)


async def test_capacity_refusal_is_http_503_and_haproxy_serves_it_elsewhere(cluster):
    async with cluster(instances=2, BOT_MAX_CALLS="3") as c:
        direct = c.instance_url(0, "ws") + "/exotel/ws"
        first = [asyncio.create_task(call(direct)) for _ in range(3)]
        while (await get(c.instance_url(0) + "/ready")).json()["status"] != "full":
            await asyncio.sleep(0.05)
        fourth = await call(direct)
        served = await asyncio.gather(*first)
        print(
            f"\ndirect, limit 3: 4th call {outcome(fourth)}, others {[outcome(r) for r in served]}"
        )
        assert fourth.connect_error == "HTTP 503"  # refused on the upgrade, never accepted
        assert all(completed(r) for r in served), [outcome(r) for r in served]

        # bot1 was "full" long enough for HAProxy to take it out; it comes back when it is not.
        await c.wait_backend(0, "UP")
        through = await asyncio.gather(*(call(c.ws_url) for _ in range(6)))
        print(f"through HAProxy, 2 x limit 3: {[outcome(r) for r in through]}")
        assert all(completed(r) for r in through), [outcome(r) for r in through]

        # bot1 full while HAProxy still has it UP: its 503s are retried on bot2. (Both must
        # have let go of the last calls first: a slot is freed once the bot's side has ended.)
        for i in range(2):
            while (await get(c.instance_url(i) + "/ready")).json()["status"] != "ready":
                await asyncio.sleep(0.05)
            await c.wait_backend(i, "UP")
        held = [asyncio.create_task(call(direct)) for _ in range(3)]
        while (await get(c.instance_url(0) + "/ready")).json()["status"] != "full":
            await asyncio.sleep(0.02)
        spill = await asyncio.gather(*(call(c.ws_url) for _ in range(3)))
        held_recs = await asyncio.gather(*held)
        bot1 = (await c.backend_stats())["bot1"]
        print(
            f"bot1 full: {[outcome(r) for r in spill]} through HAProxy; upgrades retried "
            f"{bot1['wretr']} times, moved from bot1 {bot1['wredis']} times"
        )
        assert all(completed(r) for r in spill + held_recs), [outcome(r) for r in spill]
        assert int(bot1["wredis"]) >= 1  # at least one upgrade went to bot1 and was moved


async def test_rolling_restart_under_load_drops_no_call(cluster):
    async with cluster(instances=2) as c:
        calls: list[asyncio.Task[CallRecording]] = []
        stop = asyncio.Event()

        async def steady_load() -> None:
            while not stop.is_set():
                calls.append(asyncio.create_task(call(c.ws_url)))
                await asyncio.sleep(0.4)

        load = asyncio.create_task(steady_load())
        await asyncio.sleep(1.5)
        for i in range(2):
            started = time.monotonic()
            assert await c.stop_instance(i, signal.SIGTERM, timeout=40) == 0
            drained = time.monotonic() - started
            await c.start_instance(i)
            await c.wait_backend(i, "UP")
            print(f"\nbot{i + 1}: drained in {drained:.1f} s, replaced and UP again")
            await asyncio.sleep(1.0)
        stop.set()
        await load
        recs = await asyncio.gather(*calls)
        stats = await c.backend_stats()
    bad = [outcome(r) for r in recs if not completed(r)]
    retried = {n: (r["wretr"], r["wredis"], r["hrsp_5xx"]) for n, r in stats.items()}
    print(f"rolling restart: {len(recs)} calls, {len(bad)} not completed")
    print(f"HAProxy per instance (retries, redispatches, 5xx answers): {retried}")
    assert len(recs) >= 10 and bad == []


async def test_passthru_for_a_call_served_on_a_is_answered_by_b(cluster):
    async with cluster(instances=2) as c:
        a = c.instance_url(0, "ws") + "/exotel/ws"
        rec = await call(a, turns=1, call_sid="call-on-a")
        assert completed(rec, 1), outcome(rec)
        store = open_store(c.redis_url, c.workdir)
        try:
            # What the agent room's transfer_call writes on the instance serving the call.
            await record_transfer(store, "call-on-a", "caller asked for a person", "support")
            served = await call_record(store, "call-on-a")
        finally:
            await store.close()
        b = c.instance_url(1)
        query = "/exotel/passthru?CallSid=call-on-a&Stream[Status]=completed"
        answers = [(await get(b + query)).status_code for _ in range(2)]
        unknown = (await get(b + "/exotel/passthru?CallSid=never-seen")).status_code
        via_lb = (await get(c.http_url + query)).status_code
    print(f"\npassthru on B: {answers}, unknown {unknown}, via HAProxy {via_lb}; record {served}")
    assert answers == [302, 302] and unknown == 200 and via_lb == 302
    assert served["end_reason"] and served["ended_at"] >= served["started_at"]


async def test_kill_9_ends_only_that_instances_calls(cluster):
    async with cluster(instances=2) as c:
        on_a = asyncio.create_task(call(c.instance_url(0, "ws") + "/exotel/ws", 4, "on-a"))
        on_b = asyncio.create_task(call(c.instance_url(1, "ws") + "/exotel/ws", 4, "on-b"))
        while (await get(c.instance_url(0) + "/ready")).json()["active_calls"] == 0:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        await c.stop_instance(0, signal.SIGKILL)
        killed_at = time.monotonic()
        after = await asyncio.gather(*(call(c.ws_url, 1) for _ in range(3)))
        await c.wait_backend(0, "DOWN", timeout=10)
        seen_down = time.monotonic() - killed_at
        rec_a, rec_b = await on_a, await on_b
        store = open_store(c.redis_url, c.workdir)
        try:
            record_a = await call_record(store, "on-a", ended=False)
            record_b = await call_record(store, "on-b")
        finally:
            await store.close()
    print(
        f"\nkill -9 A: A's call {outcome(rec_a)}, B's call {outcome(rec_b)}, new calls "
        f"{[outcome(r) for r in after]}, HAProxy saw A down after {seen_down:.1f} s"
    )
    assert not completed(rec_a, 4) and rec_a.closed_by != "caller"
    assert completed(rec_b, 4)
    assert all(completed(r, 1) for r in after)
    # The store's view: A's call never got its end, B's did.
    assert "ended_at" not in record_a and record_b.get("ended_at")


async def test_calls_go_on_while_redis_restarts_and_writes_resume(cluster):
    async with cluster(instances=1) as c:
        direct = c.instance_url(0, "ws") + "/exotel/ws"
        before = asyncio.create_task(call(direct, 4, "before-outage"))
        await asyncio.sleep(1.0)
        await c.stop_redis()
        for _ in range(100):
            if (await get(c.instance_url(0) + "/ready")).json()["status"] == "state store down":
                break
            await asyncio.sleep(0.1)
        ready_down = (await get(c.instance_url(0) + "/ready")).json()["status"]
        during = await call(direct, 1, "during-outage")  # a blind instance still serves
        await c.start_redis()
        rec = await before
        for _ in range(100):
            if (await get(c.instance_url(0) + "/ready")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        metrics = (await get(c.instance_url(0) + "/metrics")).text
        store = open_store(c.redis_url, c.workdir)
        try:
            for _ in range(50):  # the kept writes are replayed in the background
                records = [
                    await store.get(served_key(s)) for s in ("before-outage", "during-outage")
                ]
                if all(r and "ended_at" in r for r in records):
                    break
                await asyncio.sleep(0.1)
        finally:
            await store.close()
    retries = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("exotel_state_write_retries_total")
    )
    print(
        f"\nredis restart: call across it {outcome(rec)}, call during it {outcome(during)}, "
        f"/ready during: {ready_down!r}, write retries {retries:.0f}"
    )
    assert completed(rec, 4) and completed(during, 1)
    assert ready_down == "state store down"
    assert retries >= 1
    assert all(r and "ended_at" in json.loads(r) for r in records), records
