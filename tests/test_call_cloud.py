"""A whole call over a real WebSocket: simulator -> server -> fake Deepgram/OpenAI/Cartesia."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import websockets

from bot.conversation.vad import OnsetReportingVADController
from bot.simulator import (
    BargeIn,
    CallConfig,
    ExotelSimulator,
    Hangup,
    Say,
    WaitForBot,
    WaitForBotHangup,
)
from bot.testing import FakeCartesia, FakeDeepgram, FakeOpenAI, FakeProviders, ToolCall
from serializers.exotel import chunk_rule
from tests.helpers import bot_on_fakes, tone

LONG_ANSWER = (
    "We are open from nine in the morning until six in the evening, Monday to Saturday, "
    "and on Sunday we are closed."
)
SHORT_ANSWER = "Refunds reach your card in five days."


@pytest.fixture
async def fakes():
    providers = FakeProviders(
        deepgram=FakeDeepgram(finalize_latency=0.05),
        openai=FakeOpenAI(first_token_latency=0.1),
        cartesia=FakeCartesia(first_audio_latency=0.05, seconds_per_word=0.25),
    )
    async with providers:
        yield providers


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
async def test_conversation_with_barge_in(fakes, rate):
    fakes.deepgram.add_transcripts("what are your opening hours", "and refunds?")
    fakes.openai.add_replies(LONG_ANSWER, SHORT_ANSWER)
    async with bot_on_fakes(fakes) as (url, runtime):
        sim = ExotelSimulator(CallConfig(url=f"{url}?sample-rate={rate}", wait_timeout=15))
        rec = await sim.run(
            [
                WaitForBot(gap=0.3),  # the greeting
                Say(tone(1.0, rate), label="hours"),
                BargeIn(tone(0.8, rate), after_bot_start=1.0, label="refunds"),
                WaitForBot(gap=0.5),
                Hangup(),
            ]
        )
        await asyncio.sleep(0.3)
        assert runtime.active_calls == 0
        session = runtime.finished_calls[-1]

    assert rec.violations == []
    rule = chunk_rule(rate)
    assert rec.media_sizes and all(rule.is_compliant(n) for n in rec.media_sizes)
    assert session.serializer.sample_rate == rate

    # Greeting + answer 1 (cut) + answer 2: three utterances, the first and last marked heard.
    echoed = [m for m in rec.marks if m.echoed_at is not None]
    assert len(echoed) >= 2
    # One clear: the pause at the first voiced window; the interruption had nothing left.
    assert len(rec.clears) == 1
    controller = session.pipeline.aggregators.user()._vad_controller
    assert isinstance(controller, OnsetReportingVADController)

    # No media of the interrupted answer after the clear: the next media is the next answer,
    # which can only start after the caller's barge-in speech ended.
    clear_at = rec.clears[0]
    barge = rec.turns[1]
    assert barge.kind == "barge_in" and barge.interrupted
    after_clear = [m.t for m in rec.messages if m.direction == "from_bot" and m.event == "media"]
    after_clear = [t for t in after_clear if t > clear_at]
    assert after_clear and min(after_clear) > barge.speech_end

    # Both questions answered.
    assert rec.turns[0].latency_secs is not None and rec.turns[1].latency_secs is not None

    # The assistant context keeps only what was spoken of the interrupted answer.
    messages = [m for m in session.pipeline.context.messages if m.get("role") == "assistant"]
    texts = [str(m.get("content")) for m in messages]
    assert any("Hello" in t for t in texts)
    cut = [t for t in texts if t.startswith("We are open")]
    assert cut and len(cut[0]) < len(LONG_ANSWER)
    assert any("Refunds" in t for t in texts)
    # The LLM saw the second question after the cut answer.
    assert fakes.openai.last_messages[-1]["content"] == "and refunds?"


async def test_socket_close_without_stop_ends_the_call(fakes):
    async with bot_on_fakes(fakes) as (url, runtime):
        sim = ExotelSimulator(CallConfig(url=url, wait_timeout=10))
        rec = await sim.run([WaitForBot(gap=0.2), Hangup(stop=False)])
        for _ in range(50):
            if runtime.active_calls == 0:
                break
            await asyncio.sleep(0.05)
        assert runtime.active_calls == 0
        session = runtime.finished_calls[-1]
    assert rec.closed_by == "caller_abrupt"
    assert session.hung_up_by == "caller" and "without stop" in session.end_reason


async def test_llm_ends_the_call_even_when_the_goodbye_is_interrupted(fakes):
    # The LLM calls end_call without saying anything: the bot says its goodbye; the caller
    # talks over it (which cancels the LLM's task that called end_call); the bot answers and
    # still hangs up once its last words have been heard.
    fakes.deepgram.add_transcripts("that's all", "oh and thanks")
    # Replies by question, not by request: the bot asks early and may ask again
    # (bot.conversation.turns).
    replies = {"that's all": ToolCall("end_call", {}), "oh and thanks": "You are welcome. Bye!"}
    fakes.openai.responder = lambda messages, _tools: replies[messages[-1]["content"]]
    async with bot_on_fakes(
        fakes, goodbye="Thank you for calling, have a lovely day. Goodbye!"
    ) as (
        url,
        runtime,
    ):
        rec = await ExotelSimulator(CallConfig(url=url, wait_timeout=15)).run(
            [
                WaitForBot(gap=0.3),
                Say(tone(0.8), label="that's all"),
                BargeIn(tone(0.6), after_bot_start=0.6, label="oh and thanks"),
                WaitForBotHangup(timeout=20),
            ]
        )
        await asyncio.sleep(0.2)
        session = runtime.finished_calls[-1]
    assert rec.closed_by == "bot", rec.script_warnings
    assert session.end_reason == "llm called end_call" and session.hung_up_by == "bot"
    assert len(rec.clears) == 1 and rec.violations == []
    assert rec.utterances[-1].played_secs > 0.5  # the last words were heard before the close


async def test_streams_past_the_call_limit_are_refused_until_a_call_ends(fakes):
    async with bot_on_fakes(fakes, bot_max_calls=1) as (url, runtime):
        first = ExotelSimulator(CallConfig(url=url, wait_timeout=10))
        call = asyncio.create_task(first.run([WaitForBot(gap=0.2), Say(tone(0.8)), Hangup()]))
        while runtime.active_calls == 0:
            await asyncio.sleep(0.02)
        health_url = url.replace("ws://", "http://").replace("/exotel/ws", "/healthz")
        async with httpx.AsyncClient() as client:
            health = (await client.get(health_url)).json()
        assert health["status"] == "full" and health["max_calls"] == 1
        # Refused on the upgrade, before any pipeline exists: Exotel sees the stream fail.
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(url):
                pass
        await call
        while runtime.admitted:
            await asyncio.sleep(0.02)
        again = await ExotelSimulator(CallConfig(url=url, wait_timeout=10)).run(
            [WaitForBot(gap=0.2), Hangup()]
        )
    assert again.media_sizes  # the slot came back: the next call was answered
    refused = runtime.metrics.calls_refused.labels(reason="full")._value.get()
    assert refused == 1
