"""Caller hang-ups at every moment of a call: everything the call took is given back.

Exotel ends a stream with ``stop`` then a close, or the line just drops (a close without
``stop``, code 1006). Either can happen at any moment. Each test holds a call in one state
(slow fakes keep it there), hangs up both ways, and then checks that:

* the runtime has no live call and the session says the caller ended it;
* this process's asyncio tasks, inet sockets and file descriptors are back to what they were
  before the call (measured with the fakes and the server already running and warmed up);
* nothing was logged at ERROR (an ordinary hang-up is not an error);
* the caller's side saw the socket close (with ``stop``: the server completed the close
  handshake, code 1000).

One server and one set of fakes serve the whole module, so the file stays well under a minute.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import psutil
import pytest
import pytest_asyncio
from websockets.asyncio.client import connect

from bot.conversation import memory
from bot.server.runtime import RELEASE_MEMORY_AFTER_SECS
from bot.simulator import CallConfig, CallRecording, Say, Wait, WaitForBot
from bot.testing import FakeCartesia, FakeDeepgram, FakeOpenAI, FakeProviders, ToolCall
from tests.callkit import (
    BotUnderTest,
    CallerSim,
    LogLine,
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

pytestmark = pytest.mark.asyncio(loop_scope="module")

GREETING = "Hello and welcome, thank you for calling us today, how can I help you this morning?"
LONG_ANSWER = (
    "We are open from nine in the morning until six in the evening from Monday to Saturday "
    "and on Sunday we are closed but our website is always open"
)
LONG_GOODBYE = (
    "Thank you so much for calling us today, it was a pleasure to help you, have a "
    "wonderful day and goodbye"
)
SHORT_REPLY = "Sure."
QUESTION = tone(0.8)


@dataclass
class Tuning:
    """The fakes' speed for one test (restored to fast afterwards)."""

    first_token_latency: float = 0.05
    inter_token_delay: float = 0.01
    chunk_interval: float = 0.0
    reply: object = SHORT_REPLY


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot() -> AsyncIterator[BotUnderTest]:
    replies: dict[str, object] = {"reply": SHORT_REPLY}
    fakes = FakeProviders(
        deepgram=FakeDeepgram(finalize_latency=0.05),
        openai=FakeOpenAI(first_token_latency=0.05, responder=lambda *_: replies["reply"]),
        cartesia=FakeCartesia(first_audio_latency=0.05, seconds_per_word=0.2),
    )
    async with fakes:
        settings = {"bot_greeting": "Hi.", "goodbye": LONG_GOODBYE, "provider_timeout_secs": 1.5}
        async with bot_under_test(fakes, **settings) as b:
            b.replies = replies  # type: ignore[attr-defined]
            await _warm_up(b)
            yield b


async def _warm_up(b: BotUnderTest) -> None:
    """One whole call first: lazy imports, thread pools and caches are not per-call costs."""
    script = [WaitForBot(gap=0.1, timeout=10), Say(QUESTION), WaitForBot(gap=0.1, timeout=10)]
    await CallerSim(CallConfig(url=b.url)).run(script)
    await b.idle()
    await asyncio.sleep(0.3)


def tune(b: BotUnderTest, t: Tuning, **settings: object) -> None:
    b.fakes.openai.first_token_latency = t.first_token_latency
    b.fakes.openai.inter_token_delay = t.inter_token_delay
    b.fakes.cartesia.chunk_interval = t.chunk_interval
    b.replies["reply"] = t.reply  # type: ignore[attr-defined]
    defaults = {"bot_greeting": "Hi.", "holding_mode": "off", "goodbye": LONG_GOODBYE}
    b.configure(**{**defaults, **settings})


# --------------------------------------------------------------------------------------------
# The check after every hang-up
# --------------------------------------------------------------------------------------------


def aside(b: BotUnderTest) -> tuple[int, ...]:
    """The fake OpenAI's port: its own (server) side of a cancelled request lingers until its
    scripted delay ends, so sockets there are judged apart; ours must still close (see
    callkit.Usage)."""
    return (b.fakes.openai.port,)


async def assert_all_given_back(
    b: BotUnderTest,
    baseline: Usage,
    lines: list[LogLine],
    rec: CallRecording | None,
    stop: bool,
    *,
    ended_by: str = "caller",
) -> None:
    """Everything is back; ``ended_by``: who the session says ended the call."""
    await b.idle()
    after = await settled_usage(baseline, aside(b))
    assert after.within(baseline), "\n".join(
        [f"before {baseline}, after {after}", *live_tasks(), *open_sockets()]
    )
    assert errors(lines) == [], "\n".join(map(str, errors(lines)))
    sends = [line for line in lines if "send" in line.message.lower()]
    assert sends == [], "\n".join(map(str, sends))  # nothing written to a closed socket
    if rec is not None:
        assert rec.closed_by == ("caller" if stop else "caller_abrupt")
        if stop:
            assert rec.close_code == 1000, rec.close_code
        session = b.runtime.finished_calls[-1]
        assert session.info.call_sid == rec.call_sid
        assert session.hung_up_by == ended_by, session.end_reason


Driver = Callable[[BotUnderTest, CallerSim], Awaitable[None]]


async def hang_up_during(
    b: BotUnderTest,
    script: list,
    wait_for_moment: Driver,
    *,
    stop: bool,
    ended_by: str = "caller",
) -> None:
    """Run ``script``; when ``wait_for_moment`` returns, the caller hangs up (both ways)."""
    baseline = usage(aside(b))
    with captured_logs() as lines:
        sim = CallerSim(CallConfig(url=b.url, wait_timeout=15))
        running = asyncio.create_task(sim.run([*script, Wait(30)]))
        await wait_for_moment(b, sim)
        await sim.hang_up_now(stop=stop)
        rec = await asyncio.wait_for(running, 10)
        await assert_all_given_back(b, baseline, lines, rec, stop, ended_by=ended_by)


BOTH = pytest.mark.parametrize("stop", [True, False], ids=["stop", "drop"])


# --------------------------------------------------------------------------------------------
# The moments
# --------------------------------------------------------------------------------------------


@BOTH
async def test_before_start(bot: BotUnderTest, stop: bool) -> None:
    """Connected, then gone before ``start``: no session is ever built."""
    tune(bot, Tuning())
    baseline = usage(aside(bot))
    with captured_logs() as lines:
        async with connect(bot.url) as ws:
            await ws.send(json.dumps({"event": "connected"}))
            if stop:
                stop_event = {"event": "stop", "stop": {"reason": "callended"}}
                await ws.send(json.dumps(stop_event))
                await ws.close()
                assert ws.close_code == 1000
            else:
                ws.transport.abort()
        await assert_all_given_back(bot, baseline, lines, None, stop)
    assert bot.runtime.active_calls == 0


@BOTH
async def test_while_the_greeting_streams(bot: BotUnderTest, stop: bool) -> None:
    tune(bot, Tuning(chunk_interval=0.15), bot_greeting=GREETING)

    async def moment(_b: BotUnderTest, sim: CallerSim) -> None:
        await sim.until(lambda: len(sim.player.chunks) >= 2, what="greeting audio")

    await hang_up_during(bot, [], moment, stop=stop)
    assert bot.fakes.cartesia.connections[-1].closed_at is not None


@BOTH
async def test_mid_utterance(bot: BotUnderTest, stop: bool) -> None:
    tune(bot, Tuning())

    async def moment(_b: BotUnderTest, sim: CallerSim) -> None:
        await sim.until(lambda: sim.turns and sim.now() > sim.turns[0].audio_start + 0.6)

    await hang_up_during(bot, [WaitForBot(gap=0.1), Say(tone(3.0))], moment, stop=stop)


@BOTH
async def test_during_a_holding_phrase(bot: BotUnderTest, stop: bool) -> None:
    tune(bot, Tuning(first_token_latency=5.0), holding_mode="always")

    async def moment(_b: BotUnderTest, sim: CallerSim) -> None:
        await _answer_audio(sim, chunks=1)

    await hang_up_during(bot, [WaitForBot(gap=0.1), Say(QUESTION)], moment, stop=stop)


@BOTH
async def test_while_the_llm_streams(bot: BotUnderTest, stop: bool) -> None:
    # One long sentence, a token every 0.3 s: the LLM is mid-stream and the TTS waits for the
    # sentence to end.
    tune(bot, Tuning(first_token_latency=0.1, inter_token_delay=0.3, reply=LONG_ANSWER))
    before = len(bot.fakes.openai.requests)

    async def moment(b: BotUnderTest, _sim: CallerSim) -> None:
        async with asyncio.timeout(10):
            while len(b.fakes.openai.requests) == before:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.8)

    await hang_up_during(bot, [WaitForBot(gap=0.1), Say(QUESTION)], moment, stop=stop)


@BOTH
async def test_while_the_answer_streams(bot: BotUnderTest, stop: bool) -> None:
    tune(bot, Tuning(chunk_interval=0.15, reply=LONG_ANSWER))

    async def moment(_b: BotUnderTest, sim: CallerSim) -> None:
        await _answer_audio(sim, chunks=2)

    script = [WaitForBot(gap=0.1), Say(QUESTION)]
    await hang_up_during(bot, script, moment, stop=stop)


@BOTH
async def test_during_the_goodbye(bot: BotUnderTest, stop: bool) -> None:
    """The LLM calls end_call; the call says its (cached, long) goodbye; the caller hangs up."""
    tune(bot, Tuning(reply=ToolCall("end_call")))

    async def moment(_b: BotUnderTest, sim: CallerSim) -> None:
        await _answer_audio(sim, chunks=2, timeout=10)

    script = [WaitForBot(gap=0.1), Say(QUESTION)]
    # The bot decided to end first; the record keeps the first reason.
    await hang_up_during(bot, script, moment, stop=stop, ended_by="bot")
    assert "end_call" in (bot.runtime.finished_calls[-1].end_reason or "")


@BOTH
async def test_during_the_apology(bot: BotUnderTest, stop: bool) -> None:
    """The LLM hangs; the fault watchdog's apology is playing when the caller hangs up."""
    tune(bot, Tuning())
    bot.fakes.openai.set_fault("hang", times=1)

    async def moment(_b: BotUnderTest, sim: CallerSim) -> None:
        await _answer_audio(sim, chunks=1, timeout=10)

    try:
        await hang_up_during(bot, [WaitForBot(gap=0.1), Say(QUESTION)], moment, stop=stop)
    finally:
        bot.fakes.openai.set_fault(None)
    assert bot.watchdogs[-1].events and bot.watchdogs[-1].events[0].action == "apology"


async def _answer_audio(sim: CallerSim, *, chunks: int, timeout: float = 15.0) -> None:
    """Wait until ``chunks`` bot chunks arrived after the caller's (first) utterance ended."""

    def arrived() -> bool:
        if not sim.turns or sim.turns[0].speech_end is None:
            return False
        return sim.bot_chunks_since(sim.turns[0].speech_end) >= chunks

    await sim.until(arrived, timeout, "bot audio after the caller's turn")


async def test_llm_connection_is_closed_after_the_call(bot: BotUnderTest) -> None:
    tune(bot, Tuning())
    before = llm_client_ports(bot)
    script = [WaitForBot(gap=0.1), Say(QUESTION), WaitForBot(gap=0.1)]
    rec = await CallerSim(CallConfig(url=bot.url)).run(script)
    assert rec.turns[0].latency_secs is not None  # the LLM answered
    await bot.idle()
    deadline = asyncio.get_running_loop().time() + 3
    while (left := llm_client_ports(bot) - before) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert not left, f"the call's connection to the LLM is still open (local ports {left})"


def llm_client_ports(b: BotUnderTest) -> set[int]:
    """Local ports of this process's connections to the fake OpenAI."""
    conns = psutil.Process().net_connections(kind="inet")
    return {c.laddr.port for c in conns if c.raddr and c.raddr.port == b.fakes.openai.port}


async def test_memory_is_given_back_once_the_last_call_has_ended(bot: BotUnderTest) -> None:
    """After a burst, the process should not sit at its peak RSS (issue 7): when no call is
    left, garbage is collected and free heap pages go back to the system."""
    tune(bot, Tuning())
    script = [WaitForBot(gap=0.1), Say(QUESTION), WaitForBot(gap=0.1)]
    first = CallerSim(CallConfig(url=bot.url)).run(script)
    second = CallerSim(CallConfig(url=bot.url)).run([WaitForBot(gap=0.1)])
    await asyncio.gather(first, second)
    await bot.idle()
    runtime = bot.runtime
    released_before = runtime.memory_releases
    await asyncio.sleep(RELEASE_MEMORY_AFTER_SECS + 0.5)
    assert runtime.memory_releases == released_before + 1  # once, after the last call
    assert memory.can_trim()  # glibc here: pages really go back, not only a collection
