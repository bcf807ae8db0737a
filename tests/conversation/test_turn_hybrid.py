"""The hybrid turn end in the stop strategies (bot.conversation.turn_hybrid): the verdict x
the words -> when the turn ends, with a stubbed model; one run with the real ONNX model."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from pipecat.clocks.system_clock import SystemClock
from pipecat.frames.frames import (
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.turns.user_start import VADUserTurnStartStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.utils.asyncio.task_manager import TaskManager

from bot.config import Settings
from bot.conversation.turn_decision import TurnVerdict
from bot.conversation.turn_hybrid import (
    MAX_BUFFER_SECS,
    ModelPatientStopStrategy,
    ModelSpeculativeStopStrategy,
    with_turn_model,
)
from bot.conversation.turns import (
    PatientSpeechTimeoutStopStrategy,
    SpeculativeSpeechTimeoutStopStrategy,
)

RATE = 8000
SPEECH = 0.3
UNFINISHED = 0.9
FRAME = 0.1  # Exotel's inbound framing
FINISHED = "Do you deliver to Bangalore?"
UNFINISHED_WORDS = "I would like to change the delivery address to"


def verdict(p: float) -> TurnVerdict:
    return TurnVerdict(complete=p > 0.5, probability=p, elapsed_ms=20.0)


class StubModel:
    """Answers each request with the next scripted probability (None: no verdict) after
    ``delay``; notes what it was asked and whether the ask was cancelled."""

    def __init__(self, *answers: float | None, delay: float = 0.02) -> None:
        self.answers = list(answers)
        self.delay = delay
        self.asked: list[tuple[int, int, float]] = []  # (audio bytes, rate, timeout)
        self.cancelled = 0

    async def __call__(self, audio: bytes, rate: int, timeout: float) -> TurnVerdict | None:
        self.asked.append((len(audio), rate, timeout))
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        p = self.answers.pop(0) if self.answers else None
        return None if p is None else verdict(p)


class Harness:
    """One stop strategy, fed frames as the user aggregator would; notes turn ends."""

    def __init__(self, strategy) -> None:
        self.strategy = strategy
        self.stopped = asyncio.Event()
        self.confirmed: list[bool] = []
        self.guesses = 0

        @strategy.event_handler("on_user_turn_stopped")
        async def _stopped(_s, params) -> None:
            self.confirmed.append(params.confirms_speculation)
            self.stopped.set()

        @strategy.event_handler("on_user_turn_inference_triggered")
        async def _guess(_s, speculation) -> None:
            self.guesses += speculation is not None

    async def start(self) -> Harness:
        manager = TaskManager(loop=asyncio.get_running_loop())
        await self.strategy.setup(
            FrameProcessorSetup(clock=SystemClock(), task_manager=manager, pipeline_worker=None)
        )
        return self

    async def audio(self, secs: float, loud: bool = True) -> None:
        n = round(FRAME * RATE)
        for _ in range(round(secs / FRAME)):
            samples = (np.ones(n) * (3000 if loud else 0)).astype(np.int16)
            await self.strategy.process_frame(InputAudioRawFrame(samples.tobytes(), RATE, 1))

    async def say(self, words: str | None, speech: float = 1.0, lead: float = 1.0) -> None:
        """Silence, speech (VAD start after 0.2 s of it), the VAD stop, then the words."""
        await self.audio(lead, loud=False)
        await self.audio(0.2)
        await self.strategy.process_frame(VADUserStartedSpeakingFrame(start_secs=0.2))
        await self.audio(speech - 0.2)
        await self.audio(0.2, loud=False)
        await self.strategy.process_frame(VADUserStoppedSpeakingFrame(stop_secs=0.2))
        if words is not None:
            await self.words(words)

    async def words(self, text: str) -> None:
        await self.strategy.process_frame(TranscriptionFrame(text, "caller", "t", finalized=True))

    async def ended_within(self, secs: float) -> bool:
        try:
            await asyncio.wait_for(self.stopped.wait(), secs)
        except TimeoutError:
            return False
        return True


async def harness(model: StubModel, cls=ModelPatientStopStrategy, **kwargs) -> Harness:
    kwargs.setdefault("threshold", 0.5)
    strategy = cls(ask=model, user_speech_timeout=SPEECH, unfinished_timeout=UNFINISHED, **kwargs)
    return await Harness(strategy).start()


async def test_complete_and_finished_words_answer_at_once():
    model = StubModel(0.95)
    h = await harness(model)
    await h.say(FINISHED)
    assert await h.ended_within(SPEECH / 2)
    assert model.asked[0][1:] == (RATE, SPEECH)  # bounded by the speech timeout


async def test_the_words_veto_a_complete_verdict():
    h = await harness(StubModel(0.98))
    await h.say(UNFINISHED_WORDS)
    assert not await h.ended_within(SPEECH + 0.2)  # not at the speech timeout
    assert await h.ended_within(UNFINISHED)


@pytest.mark.parametrize(("long", "first_window"), [(False, True), (True, False)])
async def test_incomplete_waits_the_speech_or_the_unfinished_timeout(long, first_window):
    h = await harness(StubModel(0.1), incomplete_waits_long=long)
    await h.say(FINISHED)
    assert not await h.ended_within(SPEECH / 2)  # never sooner than without the model
    assert await h.ended_within(SPEECH / 2 + 0.2) is first_window
    assert await h.ended_within(UNFINISHED)


@pytest.mark.parametrize("answer", [None, 0.7])
async def test_no_verdict_or_one_below_the_threshold_is_todays_wait(answer):
    """Below the threshold is "incomplete"; by default (shorten-only) that is today's wait."""
    h = await harness(StubModel(answer), threshold=0.9)
    await h.say(FINISHED)
    assert not await h.ended_within(SPEECH / 2)
    assert await h.ended_within(SPEECH)


async def test_a_failing_model_falls_back_to_the_speech_timeout():
    async def broken(audio: bytes, rate: int, timeout: float) -> TurnVerdict | None:
        raise RuntimeError("no session")

    h = await harness(StubModel())
    h.strategy._ask = broken
    await h.say(FINISHED)
    assert not await h.ended_within(SPEECH / 2)
    assert await h.ended_within(SPEECH)
    assert list(h.strategy.verdicts) == [None]


async def test_the_verdict_waits_for_the_words():
    """Complete before the transcript is in: the turn ends when the words come, at once."""
    h = await harness(StubModel(0.95, delay=0.0))
    await h.say(None)
    assert not await h.ended_within(0.05)
    await h.words(FINISHED)
    assert await h.ended_within(0.05)


async def test_the_caller_speaking_again_drops_the_request():
    model = StubModel(0.95, delay=0.1)
    h = await harness(model)
    await h.say(FINISHED)
    await h.strategy.process_frame(VADUserStartedSpeakingFrame(start_secs=0.2))
    assert not await h.ended_within(SPEECH + 0.1)
    assert model.cancelled == 1
    assert list(h.strategy.verdicts) == []


async def test_the_model_hears_the_turn_from_just_before_its_start_up_to_8_5_s():
    model = StubModel(0.95, 0.95)
    h = await harness(model)
    await h.say(FINISHED, speech=1.0, lead=3.0)
    lead_in = model.asked[0][0] / (2 * RATE) - 1.2  # 1.0 s of speech + the 0.2 s stop window
    # 0.3 s of the silence before the speech started (the VAD's start window is speech),
    # not the 3 s of it.
    assert 0.25 <= lead_in <= 0.35
    await h.strategy.handle_user_turn_stopped()
    h.stopped.clear()
    await h.say(FINISHED, speech=12.0, lead=0.5)
    assert MAX_BUFFER_SECS - FRAME <= model.asked[1][0] / (2 * RATE) <= MAX_BUFFER_SECS


async def test_a_complete_verdict_releases_the_guess_at_once():
    h = await harness(StubModel(0.95), cls=ModelSpeculativeStopStrategy)
    await h.say(FINISHED)
    assert await h.ended_within(SPEECH / 2)
    assert h.guesses == 1 and h.confirmed == [True]


def strategies() -> UserTurnStrategies:
    return UserTurnStrategies(
        start=[VADUserTurnStartStrategy()],
        stop=[
            SpeculativeSpeechTimeoutStopStrategy(user_speech_timeout=0.4, unfinished_timeout=1.1)
        ],
    )


def test_off_leaves_todays_strategies_untouched():
    before = strategies()
    stop = before.stop[0]
    after = with_turn_model(before, Settings(turn_model="off"))
    assert after.stop[0] is stop and type(stop) is SpeculativeSpeechTimeoutStopStrategy
    assert not hasattr(stop, "_audio")  # no buffer kept


def test_on_swaps_in_the_model_form_keeping_the_settings():
    model = StubModel()
    settings = Settings(turn_model="smart-turn", turn_model_threshold=0.8)
    after = with_turn_model(strategies(), settings, ask=model)
    stop = after.stop[0]
    assert type(stop) is ModelSpeculativeStopStrategy
    assert (stop._user_speech_timeout, stop._unfinished_timeout) == (0.4, 1.1)
    assert stop._threshold == 0.8 and stop._incomplete_waits_long is False
    patient = with_turn_model(
        UserTurnStrategies(stop=[PatientSpeechTimeoutStopStrategy(user_speech_timeout=0.3)]),
        Settings(turn_model="smart-turn", turn_model_incomplete="unfinished-timeout"),
        ask=model,
    )
    assert type(patient.stop[0]) is ModelPatientStopStrategy
    assert patient.stop[0]._incomplete_waits_long is True


@pytest.mark.models
async def test_the_real_model_ends_a_sentence_at_once_and_waits_for_a_first_half():
    """The measured pair (smart-turn-research.md): "Can I get a refund if the product is
    damaged?" 0.70, its first half "Can I get a refund if" 0.10, through the strategy with
    the process's shared session (threshold 0.5; "if" is no word the rule knows)."""
    from tests.conversation.smart_turn_measure import Voices, cut_at, trim

    voices = Voices()
    full = trim(voices.english("Can I get a refund if the product is damaged?"))
    head = trim(full[: cut_at(full, voices.english("Can I get a refund if"))])
    for audio, words, at_once in [
        (full, "Can I get a refund if the product is damaged?", True),
        (head, "Can I get a refund if", False),
    ]:
        strategy = ModelPatientStopStrategy(
            user_speech_timeout=1.0, unfinished_timeout=2.0, threshold=0.5
        )
        h = await Harness(strategy).start()
        silence = np.zeros(round(0.3 * RATE), np.int16)
        stop_window = np.zeros(round(0.2 * RATE), np.int16)
        await strategy.process_frame(VADUserStartedSpeakingFrame(start_secs=0.2))
        for part in (silence, audio, stop_window):
            await strategy.process_frame(InputAudioRawFrame(part.tobytes(), RATE, 1))
        await strategy.process_frame(VADUserStoppedSpeakingFrame(stop_secs=0.2))
        await h.words(words)
        assert await h.ended_within(0.8) is at_once, strategy.verdicts
        await strategy.cleanup()


async def test_a_call_with_the_model_on_asks_it_once_the_answer_is_held():
    """Wired end to end: the real server, TURN_MODEL=smart-turn, the real shared session; the
    caller's audio reaches the stop strategy, and the early answer (a 50 ms LLM, well inside
    the speech timeout) held by the LLM's gate gets the model asked (a tone's verdict means
    nothing; that one comes is the point)."""
    from bot.simulator import CallConfig, ExotelSimulator, Hangup, Say, WaitForBot
    from bot.testing import FakeCartesia, FakeDeepgram, FakeOpenAI, FakeProviders
    from tests.callkit import captured_logs
    from tests.helpers import bot_on_fakes, tone

    fakes = FakeProviders(
        deepgram=FakeDeepgram(finalize_latency=0.05),
        openai=FakeOpenAI(first_token_latency=0.05),
        cartesia=FakeCartesia(first_audio_latency=0.05, seconds_per_word=0.1),
    )
    fakes.deepgram.add_transcripts("what are your opening hours")
    fakes.openai.add_replies("Nine to six.")
    async with (
        fakes,
        bot_on_fakes(fakes, bot_greeting="Hi.", turn_model="smart-turn") as (
            url,
            _runtime,
        ),
    ):
        with captured_logs("DEBUG") as lines:
            sim = ExotelSimulator(CallConfig(url=url, wait_timeout=15))
            rec = await sim.run([WaitForBot(gap=0.2), Say(tone(0.8)), WaitForBot(), Hangup()])
    verdicts = [line.message for line in lines if line.message.startswith("turn model:")]
    assert rec.turns[0].latency_secs is not None
    assert verdicts and all("complete" in v or "no verdict" in v for v in verdicts), verdicts
    assert any("(p " in v for v in verdicts), verdicts  # the model answered, in time
