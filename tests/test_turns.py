"""Turn ends with the LLM asked early (bot.conversation.turns): the answer is held until the
turn really ends, and dropped when the caller goes on after a pause; unfinished words wait
longer."""

from __future__ import annotations

import numpy as np
import pytest

from bot.conversation.turns import sounds_unfinished
from bot.simulator import CallConfig, ExotelSimulator, Hangup, Say, WaitForBot
from bot.testing import FakeCartesia, FakeDeepgram, FakeOpenAI, FakeProviders
from tests.helpers import bot_on_fakes, tone

LLM_FIRST_TOKEN = 1.0
SPEECH_TIMEOUT = 1.0  # long, so a pause inside it is clearly "the caller goes on"
VAD_STOP = 0.2  # the EnergyVAD the tests use


@pytest.fixture
async def fakes():
    providers = FakeProviders(
        deepgram=FakeDeepgram(finalize_latency=0.05),
        openai=FakeOpenAI(first_token_latency=LLM_FIRST_TOKEN),
        cartesia=FakeCartesia(first_audio_latency=0.05, seconds_per_word=0.2),
    )
    async with providers:
        yield providers


async def call(fakes: FakeProviders, question: np.ndarray, **settings):
    settings.setdefault("turn_speech_timeout_secs", SPEECH_TIMEOUT)
    async with bot_on_fakes(fakes, bot_greeting="Hi.", **settings) as (url, _runtime):
        sim = ExotelSimulator(CallConfig(url=url, wait_timeout=15))
        return await sim.run([WaitForBot(gap=0.2), Say(question), WaitForBot(gap=0.5), Hangup()])


@pytest.mark.parametrize("speculative", [True, False])
async def test_the_llm_works_while_the_turn_waits(fakes, speculative):
    fakes.deepgram.add_transcripts("what are your opening hours")
    fakes.openai.add_replies("Nine to six.")
    rec = await call(fakes, tone(0.8), turn_speculative=speculative)

    assert len(fakes.openai.requests) == 1  # kept, not asked twice
    latency = rec.turns[0].latency_secs
    assert latency is not None
    # Asked only at the turn end, the answer cannot come before VAD stop + the speech
    # timeout + the LLM's first token; asked at the VAD stop, it comes well before that.
    waited = VAD_STOP + SPEECH_TIMEOUT + LLM_FIRST_TOKEN
    if speculative:
        assert latency < waited - 0.5
    else:
        assert latency >= waited
    # Never before the turn has ended: the caller may still go on until then.
    assert latency >= VAD_STOP + SPEECH_TIMEOUT


async def test_a_pause_inside_the_turn_drops_the_early_answer(fakes):
    fakes.deepgram.add_transcripts("I would like", "a table for two")
    fakes.openai.add_replies("Early guess.", "A table for two, done.")
    # 0.5 s of silence: the VAD stops and the LLM is asked, but the caller goes on.
    question = np.concatenate([tone(0.6), np.zeros(4000, np.int16), tone(0.6)])
    rec = await call(fakes, question)

    assert rec.violations == []
    assert len(fakes.openai.requests) == 2  # the guess, then the whole turn
    guess, answer = (r["messages"][-1]["content"] for r in fakes.openai.requests)
    assert guess == "I would like"
    assert "I would like" in answer and "a table for two" in answer
    # One answer heard, after the whole question; nothing during the pause.
    turn = rec.turns[0]
    assert turn.latency_secs is not None and turn.latency_secs >= VAD_STOP + SPEECH_TIMEOUT
    assert turn.bot_audio_after_onset_secs == 0.0


@pytest.mark.parametrize(
    ("text", "unfinished"),
    [
        ("I would like to change the delivery address to", True),
        ("my order number is, um", True),
        ("I want to talk about my order and", True),
        ("the refund for my", True),
        ("I was calling about,", True),
        ("What are your opening hours?", False),
        ("Where is it from?", False),
        ("I cannot log in", False),
        ("Do you deliver to Bangalore", False),
        ("", False),
    ],
)
def test_sounds_unfinished(text, unfinished):
    assert sounds_unfinished(text) is unfinished


@pytest.mark.parametrize("first_words", ["I want to change the address to", "I want an address."])
async def test_a_pause_after_unfinished_words_stays_inside_the_turn(fakes, first_words):
    """0.7 s of silence is past the 0.2 s VAD stop + 0.3 s timeout; only the words tell the
    pause apart from the end of the question."""
    fakes.deepgram.add_transcripts(first_words, "my office in Pune.")
    fakes.openai.add_replies("Noted.", "Changed to your office in Pune.")
    question = np.concatenate([tone(0.6), np.zeros(5600, np.int16), tone(0.6)])
    rec = await call(
        fakes, question, turn_speech_timeout_secs=0.3, turn_unfinished_timeout_secs=1.2
    )

    asked = [r["messages"][-1]["content"] for r in fakes.openai.requests]
    if sounds_unfinished(first_words):
        # Not guessed on, not answered: one request, for the whole question.
        assert len(asked) == 1 and "my office in Pune." in asked[0]
        turn = rec.turns[0]
        assert turn.latency_secs is not None and turn.bot_audio_after_onset_secs == 0.0
    else:
        # A finished sentence: the turn ends in the pause, as before.
        assert asked[0] == first_words
