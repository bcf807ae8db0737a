"""The early guess (bot.conversation.turns.guess_windows): the VAD reports its stop after
``TURN_GUESS_AFTER_SECS`` so the STT and the LLM start sooner, and every wait of the stop
strategy grows by what the VAD no longer waits, so the turn ends when it did."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from pipecat.frames.frames import VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame
from pipecat.processors.aggregators.llm_context import LLMContext

from bot.config import Settings
from bot.conversation.pipeline import _aggregators
from bot.conversation.turn_hybrid import ModelSpeculativeStopStrategy
from bot.conversation.turns import (
    SpeculativeSpeechTimeoutStopStrategy,
    TurnWindows,
    guess_windows,
)
from bot.providers import ProviderContext
from tests.conversation.test_turn_hybrid import FINISHED, Harness, StubModel

SPEECH = 0.3
EARLY = 0.1
EXTRA = 0.2 - EARLY  # the default VAD_STOP_SECS less the early stop


@pytest.mark.parametrize(
    ("settings", "speculative", "streaming", "windows"),
    [
        ({}, True, True, TurnWindows(0.1, 0.1)),
        ({"turn_guess_after_secs": 0.05}, True, True, TurnWindows(0.05, 0.15)),
        ({}, True, False, TurnWindows(0.2)),  # Whisper transcribes whole VAD segments
        ({}, False, True, TurnWindows(0.2)),  # nothing is guessed: nothing to start early
        ({"turn_guess_after_secs": 0}, True, True, TurnWindows(0.2)),
        ({"turn_guess_after_secs": 0.3}, True, True, TurnWindows(0.2)),
        ({"vad_stop_secs": 0.5}, True, True, TurnWindows(0.1, 0.4)),
    ],
)
def test_the_windows_add_up_to_the_configured_vad_stop(settings, speculative, streaming, windows):
    got = guess_windows(Settings(**settings), speculative=speculative, streaming_stt=streaming)
    assert got == windows
    assert got.vad_stop_secs + got.extra_wait == pytest.approx(settings.get("vad_stop_secs", 0.2))


def test_a_streaming_stt_call_gets_the_early_stop_and_the_longer_waits():
    settings = Settings(barge_in_pause=False)
    ctx = ProviderContext(settings=settings, in_rate=8000, out_rate=8000)
    pair = _aggregators(LLMContext(), ctx, SimpleNamespace(), None, streaming_stt=True)
    user = pair.user()
    assert user._vad_controller._vad_analyzer.params.stop_secs == pytest.approx(EARLY)
    (strategy,) = user._params.user_turn_strategies.stop
    assert isinstance(strategy, SpeculativeSpeechTimeoutStopStrategy)
    assert strategy._user_speech_timeout == pytest.approx(SPEECH + EXTRA)
    assert strategy._unfinished_timeout == pytest.approx(1.2 + EXTRA)


def test_a_segmented_stt_or_an_auto_call_keeps_the_configured_window():
    settings = Settings(barge_in_pause=False)
    for ctx, streaming in (
        (ProviderContext(settings=settings, in_rate=8000, out_rate=8000), False),
        (ProviderContext(settings=settings, in_rate=8000, out_rate=8000, auto=True), True),
    ):
        pair = _aggregators(LLMContext(), ctx, SimpleNamespace(), None, streaming_stt=streaming)
        user = pair.user()
        assert user._vad_controller._vad_analyzer.params.stop_secs == pytest.approx(0.2)
        (strategy,) = user._params.user_turn_strategies.stop
        assert strategy._user_speech_timeout == pytest.approx(SPEECH)


async def early_harness(cls=SpeculativeSpeechTimeoutStopStrategy, **kwargs) -> Harness:
    strategy = cls(
        user_speech_timeout=SPEECH + EXTRA,
        unfinished_timeout=1.2 + EXTRA,
        extra_wait=EXTRA,
        **kwargs,
    )
    return await Harness(strategy).start()


async def stop_early(h: Harness, words: str) -> None:
    await h.audio(0.5)  # what the turn model would be given
    await h.strategy.process_frame(VADUserStartedSpeakingFrame(start_secs=0.2))
    await h.strategy.process_frame(VADUserStoppedSpeakingFrame(stop_secs=EARLY))
    await h.words(words)


async def test_the_guess_starts_at_the_early_stop_and_the_turn_ends_as_before():
    h = await early_harness()
    await stop_early(h, FINISHED)
    assert h.guesses == 1  # asked at 0.1 s of silence
    # The turn ends VAD_STOP_SECS + the speech timeout after the last word, as without the
    # early stop: 0.4 s after this 0.1 s stop, not 0.3.
    assert not await h.ended_within(SPEECH - 0.05)
    assert await h.ended_within(EXTRA + 0.15)
    assert h.confirmed == [True]


async def test_a_caller_going_on_after_an_early_stop_drops_the_guess():
    h = await early_harness()
    cancelled = []

    @h.strategy.event_handler("on_user_turn_speculation_cancelled")
    async def _cancelled(_s) -> None:
        cancelled.append(True)

    await stop_early(h, "I would like")
    await asyncio.sleep(0.15)  # a 0.25 s pause in all, then more words
    await h.strategy.process_frame(VADUserStartedSpeakingFrame(start_secs=0.2))
    assert cancelled == [True]
    assert not await h.ended_within(SPEECH + EXTRA + 0.1)


async def test_a_complete_verdict_answers_at_the_configured_stop_not_the_early_one():
    h = await early_harness(cls=ModelSpeculativeStopStrategy, ask=StubModel(0.95), threshold=0.5)
    await stop_early(h, FINISHED)
    assert not await h.ended_within(EXTRA / 2)
    assert await h.ended_within(EXTRA + 0.1)
