"""Provider faults: what the caller hears, in order, when the STT, the LLM or the TTS fails.

Every test is a whole call through the real server, the Exotel simulator and the fake
Deepgram/OpenAI/Cartesia servers, with a fault injected into one fake. What the caller heard
is read back from the simulator's recording of the phone's audio (see ``tests/callkit.py``):
the greeting and answers come from the fake Cartesia, the apology and goodbye from the phrase
cache, and the two sound different, so a cached apology is told apart from a spoken one.

The rule checked everywhere: after the caller stops speaking, the line is never silent for
longer than the fault timeout plus a margin, and a call that cannot go on ends with the
goodbye and the bot closing the socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.simulator import (
    Action,
    CallConfig,
    CallRecording,
    Hangup,
    Say,
    Wait,
    WaitForBot,
    WaitForBotHangup,
)
from bot.testing import FakeCartesia, FakeDeepgram, FakeOpenAI, FakeProviders
from tests.callkit import (
    BotUnderTest,
    CallerSim,
    Voice,
    bot_under_test,
    heard,
    labels,
    silences_after_turns,
)
from tests.helpers import tone

TIMEOUT = 3.0  # provider_timeout_secs in these tests
MARGIN = 1.5  # scheduling slack on a shared 2-core machine; the rule is about seconds
GREETING = "Hello, how can I help?"
ANSWER = "Refunds reach your card in five days."
TTS_SECONDS_PER_WORD = 0.2
QUESTION = tone(1.0)


@pytest.fixture
async def fakes() -> AsyncIterator[FakeProviders]:
    providers = FakeProviders(
        deepgram=FakeDeepgram(finalize_latency=0.05),
        openai=FakeOpenAI(first_token_latency=0.1, responder=lambda *_: ANSWER),
        cartesia=FakeCartesia(first_audio_latency=0.05, seconds_per_word=TTS_SECONDS_PER_WORD),
    )
    async with providers:
        yield providers


def voices(b: BotUnderTest) -> dict[str, Voice]:
    s = b.settings
    return {
        "greeting": Voice(GREETING, TTS_SECONDS_PER_WORD),
        "answer": Voice(ANSWER, TTS_SECONDS_PER_WORD),
        "prompt": Voice(s.idle_prompt, TTS_SECONDS_PER_WORD),
        "apology": Voice(s.apology),  # cached
        "goodbye": Voice(s.goodbye),  # cached
        "holding": Voice(s.holding_phrases[0]),  # cached
        "spoken apology": Voice(s.apology, TTS_SECONDS_PER_WORD),  # must never be needed here
    }


def two_questions() -> list[Action]:
    return [
        WaitForBot(gap=0.3, timeout=15),
        Say(QUESTION, label="q1"),
        WaitForBot(gap=0.8, timeout=TIMEOUT + 5),
        Say(QUESTION, label="q2"),
        WaitForBot(gap=0.8, timeout=TIMEOUT + 5),
        WaitForBotHangup(timeout=8),
    ]


async def call(b: BotUnderTest, script: list[Action]) -> CallRecording:
    rec = await CallerSim(CallConfig(url=b.url, wait_timeout=15)).run(script)
    await b.idle()
    return rec


def assert_never_silent_too_long(rec: CallRecording) -> None:
    gaps = silences_after_turns(rec)
    assert all(gap <= TIMEOUT + MARGIN for gap in gaps), (gaps, rec.turns)


def assert_ended_politely(b: BotUnderTest, rec: CallRecording) -> None:
    assert rec.closed_by == "bot", rec.closed_by
    session = b.runtime.finished_calls[-1]
    assert session.hung_up_by == "bot" and "provider fault" in (session.end_reason or "")
    goodbye = [h for h in heard(rec, voices(b)) if h.label == "goodbye"]
    assert goodbye and goodbye[-1].complete, "the goodbye was cut"


# --------------------------------------------------------------------------------------------
# Each provider, each way of failing, for the whole call
# --------------------------------------------------------------------------------------------

# What the caller hears when the fault persists. "answer" here is a part of the answer: the
# fault cut it, and the apology (or goodbye) follows once it has been played.
EXPECTED: dict[tuple[str, str], list[str]] = {
    # Pipecat's Deepgram connect retries stall the pipeline start ~8 s (then it gives up and
    # marks the STT unusable): greeting late, then apology and goodbye at the first turn.
    ("stt", "refuse"): ["greeting", "apology", "goodbye"],
    # Deepgram drops every connection: the first lost turn gets the apology; once Pipecat
    # gives up reconnecting (unusable), the next turn ends the call.
    ("stt", "error_midstream"): ["greeting", "apology", "goodbye"],
    # Deepgram accepts audio and never answers: no transcript, no turn; the clock runs out.
    ("stt", "hang"): ["greeting", "apology", "goodbye"],
    # OpenAI answers 503 (the SDK retries twice): the error arrives after ~1.5 s.
    ("llm", "refuse"): ["greeting", "apology", "goodbye"],
    # OpenAI streams two tokens, then an error event: the two words are spoken, then sorry.
    ("llm", "error_midstream"): ["greeting", "answer", "apology", "answer", "goodbye"],
    # OpenAI never answers (Pipecat would wait 600 s): the clock runs out, the request is
    # cancelled upstream, the goodbye is not stuck behind it.
    ("llm", "hang"): ["greeting", "apology", "goodbye"],
    # Cartesia refuses the connection: the greeting is lost; the cached apology stands in for
    # it, and the first answer's failure ends the call.
    ("tts", "refuse"): ["apology", "goodbye"],
    # Cartesia fails mid-generation: what it sent is played, then the apology.
    ("tts", "error_midstream"): ["greeting", "answer", "apology", "answer", "goodbye"],
    # Cartesia accepts and never sends audio: Pipecat reports the empty context after 3 s.
    ("tts", "hang"): ["apology", "goodbye"],
}


@pytest.mark.parametrize(("kind", "mode"), list(EXPECTED))
async def test_persistent_fault(fakes: FakeProviders, kind: str, mode: str) -> None:
    fake = {"stt": fakes.deepgram, "llm": fakes.openai, "tts": fakes.cartesia}[kind]
    # TTS: the greeting (12 chunks) survives, the longer answer breaks.
    fake.set_fault(mode, after=14 if kind == "tts" else 2)
    async with bot_under_test(fakes, bot_greeting=GREETING, provider_timeout_secs=TIMEOUT) as b:
        rec = await call(b, two_questions())
        events = b.watchdogs[-1].events
    what = heard(rec, voices(b))
    assert labels(what) == EXPECTED[(kind, mode)], (what, events)
    for h in what:
        if h.label in ("apology", "goodbye", "greeting"):
            assert h.complete, f"{h.label} was cut: {what}"
    assert [e.action for e in events][-1] == "end"
    assert all(e.culprit == kind for e in events), events
    assert all(e.played_cached for e in events)
    assert_never_silent_too_long(rec)
    assert_ended_politely(b, rec)
    assert rec.violations == []


# --------------------------------------------------------------------------------------------
# Faults that pass: the call goes on
# --------------------------------------------------------------------------------------------


async def test_stt_drop_mid_utterance_loses_that_turn_only(fakes: FakeProviders) -> None:
    """Deepgram drops the socket while the caller speaks: the transcript is lost (Pipecat
    reconnects after a 4 s backoff); the caller hears the apology, and is answered next time.
    """
    async with bot_under_test(fakes, bot_greeting=GREETING, provider_timeout_secs=TIMEOUT) as b:
        sim = CallerSim(CallConfig(url=b.url, wait_timeout=15))
        script = [
            WaitForBot(gap=0.3, timeout=15),
            Say(QUESTION, label="q1"),
            WaitForBot(gap=2.5, timeout=TIMEOUT + 5),  # past Pipecat's reconnect backoff
            Say(QUESTION, label="q2"),
            WaitForBot(gap=0.5, timeout=TIMEOUT + 5),
            Hangup(),
        ]
        running = asyncio.create_task(sim.run(script))
        await sim.until(lambda: sim.turns and sim.now() > sim.turns[0].audio_start + 0.4)
        fakes.deepgram.set_fault("error_midstream", after=0, times=1)
        rec = await running
        await b.idle()
        events = b.watchdogs[-1].events
    assert labels(heard(rec, voices(b))) == ["greeting", "apology", "answer"]
    assert [(e.action, e.culprit) for e in events] == [("apology", "stt")]
    assert b.watchdogs[-1].failures == 0  # the answered turn reset the count
    assert_never_silent_too_long(rec)
    assert rec.violations == []


async def test_llm_fails_once_then_answers(fakes: FakeProviders) -> None:
    fakes.openai.set_fault("refuse", times=3)  # the first request and the SDK's two retries
    async with bot_under_test(fakes, bot_greeting=GREETING, provider_timeout_secs=TIMEOUT) as b:
        rec = await call(b, [*two_questions()[:-1], Hangup()])
    assert labels(heard(rec, voices(b))) == ["greeting", "apology", "answer"]
    assert_never_silent_too_long(rec)
    assert rec.closed_by == "caller"


async def test_tts_breaks_once_then_answers(fakes: FakeProviders) -> None:
    fakes.cartesia.set_fault("error_midstream", after=14, times=1)
    async with bot_under_test(fakes, bot_greeting=GREETING, provider_timeout_secs=TIMEOUT) as b:
        rec = await call(b, [*two_questions()[:-1], Hangup()])
    what = heard(rec, voices(b))
    assert labels(what) == ["greeting", "answer", "apology", "answer"]
    assert not what[1].complete and what[3].complete
    assert_never_silent_too_long(rec)


async def test_hung_llm_holding_phrase_is_not_an_answer_and_the_request_is_cancelled(
    fakes: FakeProviders,
) -> None:
    """A holding phrase plays, then the apology (the phrase is bot audio, not the answer).

    The hung request is cancelled: the idle prompt, which has to pass the LLM, is heard.
    """
    fakes.openai.set_fault("hang", times=1)
    settings = {
        "bot_greeting": GREETING,
        "provider_timeout_secs": TIMEOUT,
        "holding_mode": "adaptive",
        "holding_max_per_turn": 1,
        "idle_prompt_secs": 2.0,
    }
    async with bot_under_test(fakes, **settings) as b:
        script = [WaitForBot(gap=0.3, timeout=15), Say(QUESTION), Wait(TIMEOUT + 5.5), Hangup()]
        rec = await call(b, script)
        events = b.watchdogs[-1].events
    what = heard(rec, voices(b))
    assert labels(what) == ["greeting", "holding", "apology", "prompt"], what
    assert all(h.complete for h in what), f"something was cut: {what}"
    assert [(e.action, e.culprit) for e in events] == [("apology", "llm")]
    assert_never_silent_too_long(rec)


async def test_slow_answer_within_the_timeout_is_not_a_fault(fakes: FakeProviders) -> None:
    fakes.openai.first_token_latency = TIMEOUT - 1.2
    settings = {"bot_greeting": GREETING, "provider_timeout_secs": TIMEOUT}
    settings["holding_mode"] = "always"
    async with bot_under_test(fakes, **settings) as b:
        script = [WaitForBot(gap=0.3, timeout=15), Say(QUESTION), Wait(TIMEOUT + 2), Hangup()]
        rec = await call(b, script)
        events = b.watchdogs[-1].events
    assert labels(heard(rec, voices(b))) == ["greeting", "holding", "answer"]
    assert events == []


async def test_a_cough_that_is_no_words_is_not_a_fault(fakes: FakeProviders) -> None:
    """Short non-speech ends as an empty turn (no LLM run): the idle logic's business."""
    fakes.deepgram.transcriber = lambda *_: ""
    async with bot_under_test(fakes, bot_greeting=GREETING, provider_timeout_secs=TIMEOUT) as b:
        script = [WaitForBot(gap=0.3, timeout=15), Say(tone(0.3)), Wait(TIMEOUT + 1.5), Hangup()]
        rec = await call(b, script)
        events = b.watchdogs[-1].events
    assert labels(heard(rec, voices(b))) == ["greeting"]
    assert events == []
