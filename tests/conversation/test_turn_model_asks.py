"""When the speculative hybrid asks the turn model (bot.conversation.turn_hybrid): only once
the early answer is held and enough of the wait is left for a verdict to matter."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from pipecat.frames.frames import (
    LLMFullResponseStartFrame,
    LLMTextFrame,
    VADUserStartedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.turns.speculation_gate import SpeculationGate
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from bot.config import Settings
from bot.conversation.turn_hybrid import (
    ModelPatientStopStrategy,
    ModelSpeculativeStopStrategy,
    notify_held_answers,
    with_turn_model,
)
from bot.conversation.turns import SpeculativeSpeechTimeoutStopStrategy
from tests.conversation.test_turn_hybrid import FINISHED, SPEECH, Harness, StubModel, harness


async def lazy(model: StubModel) -> Harness:
    return await harness(model, cls=ModelSpeculativeStopStrategy, ask_when_answer_held=True)


async def test_nothing_is_asked_until_the_answer_is_held_then_it_ends_the_turn():
    model = StubModel(0.95)
    h = await lazy(model)
    await h.say(FINISHED)
    await asyncio.sleep(0.05)
    assert model.asked == []  # the VAD stop alone asks nothing
    h.strategy.answer_held()
    await asyncio.sleep(0.005)  # the ask runs as its own task
    assert len(model.asked) == 1
    _bytes, _rate, timeout = model.asked[0]
    assert 0 < timeout < SPEECH  # what is left of the wait, not the whole of it
    assert await h.ended_within(SPEECH / 2)
    assert h.confirmed == [True]


async def test_an_answer_held_near_the_end_of_the_wait_asks_nothing():
    model = StubModel(0.95)
    h = await lazy(model)
    await h.say(FINISHED)
    await asyncio.sleep(SPEECH - 0.02)
    h.strategy.answer_held()
    await asyncio.sleep(0.005)
    assert model.asked == []
    assert await h.ended_within(0.2)  # today's wait


async def test_one_ask_per_vad_stop_and_none_while_the_caller_speaks():
    model = StubModel(None, 0.95)
    h = await lazy(model)
    await h.say(FINISHED)
    h.strategy.answer_held()
    h.strategy.answer_held()  # the answer's next words
    await asyncio.sleep(0.005)
    assert len(model.asked) == 1
    await h.strategy.process_frame(VADUserStartedSpeakingFrame(start_secs=0.2))
    h.strategy.answer_held()  # an answer from before the caller went on
    await asyncio.sleep(0.005)
    assert len(model.asked) == 1


def test_with_turn_model_makes_only_the_speculative_shorten_only_form_lazy():
    def built(settings: Settings):
        strategies = UserTurnStrategies(
            stop=[SpeculativeSpeechTimeoutStopStrategy(user_speech_timeout=0.3)]
        )
        return with_turn_model(strategies, settings, ask=StubModel()).stop[0]

    assert built(Settings(turn_model="smart-turn")).asks_when_answer_held
    long = Settings(turn_model="smart-turn", turn_model_incomplete="unfinished-timeout")
    assert not built(long).asks_when_answer_held  # "incomplete" must be heard at the stop
    assert not ModelPatientStopStrategy(ask=StubModel()).asks_when_answer_held


def test_the_gate_tells_the_strategy_only_about_held_text():
    told = []
    listener = SimpleNamespace(asks_when_answer_held=True, answer_held=lambda: told.append(1))
    llm = SimpleNamespace(_speculation_gate=SpeculationGate(name="gate"))
    notify_held_answers(llm, UserTurnStrategies(stop=[listener]))
    gate, down = llm._speculation_gate, FrameDirection.DOWNSTREAM

    gate.process(LLMFullResponseStartFrame(), down)
    gate.process(LLMTextFrame("Nine to six."), down)
    assert told == []  # an answer to a turn that has ended passes, nothing is held

    gate.begin_speculation(True)
    gate.process(LLMFullResponseStartFrame(), down)
    assert gate.process(LLMTextFrame("Nine"), down) == []  # held
    assert told == [1]


async def test_with_the_early_stop_an_answer_held_at_once_is_judged_and_waits_the_window():
    """The VAD stopped 0.1 s early: the answer held right away may still save the rest of
    the 0.4 s wait, but "complete" ends the turn no sooner than the configured VAD stop."""
    model = StubModel(0.95, delay=0.0)
    strategy = ModelSpeculativeStopStrategy(
        ask=model,
        threshold=0.5,
        ask_when_answer_held=True,
        user_speech_timeout=SPEECH + 0.1,
        unfinished_timeout=1.3,
        extra_wait=0.1,
    )
    h = await Harness(strategy).start()
    await h.say(FINISHED)
    h.strategy.answer_held()
    await asyncio.sleep(0.005)
    assert len(model.asked) == 1
    assert not await h.ended_within(0.05)
    assert await h.ended_within(0.1)
