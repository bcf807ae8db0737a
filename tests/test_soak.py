"""Soak: many calls in a row, each hung up at a random moment; nothing may accumulate.

``SOAK_CALLS`` (default 20, the short form the default test run and CI use; 200 for the full
soak) sequential calls against the real server with fast fakes. Each call is hung up at a
random time (seeded by ``SOAK_SEED``) between connecting and a little after the answer, so it
lands before ``start``, in the greeting, mid-utterance, while the LLM or the TTS works, or
after the answer; half with ``stop``, half by dropping the line. After a warm-up, the process's
tasks, sockets and file descriptors must come back to the same count; RSS growth is printed.

    SOAK_CALLS=200 .venv/bin/pytest -m soak -s tests/test_soak.py
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import time
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect

from bot.simulator import CallConfig, Say, Wait, WaitForBot
from bot.testing import FakeCartesia, FakeDeepgram, FakeOpenAI, FakeProviders
from tests.callkit import (
    BotUnderTest,
    CallerSim,
    Usage,
    bot_under_test,
    captured_logs,
    errors,
    live_tasks,
    open_sockets,
    settled_usage,
    usage,
)
from tests.helpers import tone

SOAK_CALLS = int(os.environ.get("SOAK_CALLS", "20"))
SOAK_SEED = int(os.environ.get("SOAK_SEED", "1"))
WARM_UP_CALLS = 3
PRE_START_SHARE = 0.1  # calls that hang up before sending start
LATEST_HANGUP_SECS = 2.5  # greeting ~0.3 s, question 0.5 s, answer by ~1.5 s


@pytest.fixture
async def bot() -> AsyncIterator[BotUnderTest]:
    fakes = FakeProviders(
        deepgram=FakeDeepgram(finalize_latency=0.02),
        openai=FakeOpenAI(first_token_latency=0.05, inter_token_delay=0.01),
        cartesia=FakeCartesia(first_audio_latency=0.02, seconds_per_word=0.1),
    )
    async with fakes, bot_under_test(fakes, bot_greeting="Hello there.") as b:
        yield b


async def hang_up_before_start(b: BotUnderTest, stop: bool) -> None:
    async with connect(b.url) as ws:
        await ws.send(json.dumps({"event": "connected"}))
        if stop:
            await ws.close()
        else:
            ws.transport.abort()


async def hang_up_at(b: BotUnderTest, secs: float, stop: bool) -> None:
    sim = CallerSim(CallConfig(url=b.url, wait_timeout=5))
    script = [WaitForBot(gap=0.05, timeout=5), Say(tone(0.5)), Wait(LATEST_HANGUP_SECS + 2)]
    running = asyncio.create_task(sim.run(script))
    await asyncio.sleep(secs)
    await sim.hang_up_now(stop=stop)
    await asyncio.wait_for(running, 10)


async def one_call(b: BotUnderTest, rng: random.Random) -> str:
    stop = rng.random() < 0.5
    if rng.random() < PRE_START_SHARE:
        await hang_up_before_start(b, stop)
        where = "before start"
    else:
        secs = rng.uniform(0.0, LATEST_HANGUP_SECS)
        await hang_up_at(b, secs, stop)
        where = f"{secs:.2f} s"
    await b.idle()
    return f"{where} ({'stop' if stop else 'drop'})"


def _growth(before: Usage, after: Usage) -> str:
    return (
        f"tasks {after.tasks - before.tasks:+d}, sockets {after.sockets - before.sockets:+d}, "
        f"fds {after.fds - before.fds:+d}, RSS {(after.rss - before.rss) / 2**20:+.1f} MiB, "
        f"sockets to the LLM {after.aside_client - before.aside_client:+d}"
    )


@pytest.mark.soak
async def test_soak_sequential_calls_with_random_hang_ups(bot: BotUnderTest) -> None:
    rng = random.Random(SOAK_SEED)
    aside = (bot.fakes.openai.port,)  # see callkit.Usage: the fake's side is judged apart
    for _ in range(WARM_UP_CALLS):
        await one_call(bot, rng)
    gc.collect()
    baseline, baseline_objects = usage(aside), len(gc.get_objects())
    began = time.monotonic()
    with captured_logs() as lines:
        for i in range(SOAK_CALLS):
            where = await one_call(bot, rng)
            if (i + 1) % 50 == 0:
                print(f"\nsoak: {i + 1} calls, last hung up at {where}; {usage(aside)}")
        after = await settled_usage(baseline, aside)
    took = time.monotonic() - began
    gc.collect()
    objects = len(gc.get_objects()) - baseline_objects
    print(
        f"\nsoak: {SOAK_CALLS} calls in {took:.1f} s ({took / SOAK_CALLS:.2f} s per call); "
        f"growth after warm-up: {_growth(baseline, after)}; live Python objects after a full "
        f"collection {objects:+d}"
    )
    assert bot.runtime.active_calls == 0
    assert errors(lines) == [], "\n".join(map(str, errors(lines)[:10]))
    assert after.tasks <= baseline.tasks, "\n".join(live_tasks())
    assert after.sockets <= baseline.sockets, "\n".join(open_sockets())
    assert after.fds <= baseline.fds, (baseline, after)
    assert after.aside_client <= baseline.aside_client, "\n".join(open_sockets())
    # A leaked call would keep ~1,600 objects alive; the fakes record ~10 per call, and the
    # first calls import a few modules lazily.
    assert objects <= 10_000 + 100 * SOAK_CALLS, objects
