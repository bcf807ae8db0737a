"""The hybrid turn end: the smart-turn verdict on the caller's audio with the words.

``TURN_MODEL=smart-turn`` swaps the stop strategies of :mod:`bot.conversation.turns` for the
subclasses here. They keep the turn's caller audio (at most :data:`MAX_BUFFER_SECS`, from
the ``InputAudioRawFrame`` the stop strategy sees anyway), and at each VAD stop ask the
process's one smart-turn session for a verdict (:func:`bot.conversation.smart_turn.
verdict_within`), bounded by the speech timeout: a later verdict could not shorten anything.
The wait after the VAD stop is then :func:`bot.conversation.turn_decision.turn_wait` of the
verdict and the words, chosen again when either changes; the caller speaking again drops the
request and the verdict.

The words keep their veto: when the base strategy's rule hears an unfinished sentence, that
wait stands whatever the model says. Two knobs, both measured on the repo's synthetic speech
(/work/notes/smart-turn-research.md):

* ``threshold``: the probability above which the model's "complete" is trusted to answer at
  once. Pipecat's 0.5 cut 20-27 of 64 first halves the word rule does not catch; 0.9 cut 8-12.
* ``incomplete_waits_long``: whether an "incomplete" verdict waits the unfinished timeout
  (the issue's table) or only the normal speech timeout ("shorten-only"). The model calls
  7-17 % of finished sentences incomplete, so the long form puts 1.2 s on the p95; the
  short form never waits longer than today.

When is the model asked? A verdict can only end a turn sooner than the speech timeout, and
with the LLM asked early (the speculative strategy) the turn wait is only on the caller's
clock while the held answer is ready and waiting: with an LLM slower than the wait, a
"complete" changes nothing the caller hears. So the speculative form in the shorten-only
policy asks the model only once the answer's first words are held by Pipecat's speculation
gate (:func:`notify_held_answers`) and enough of the wait is left for a verdict to matter,
on the audio as it was at the VAD stop. The other forms (the patient strategy, whose LLM is
asked only at the turn end, and the long policy, where "incomplete" stretches the wait) ask
at every VAD stop.

With ``TURN_MODEL=off`` none of this is built: the pipeline uses the classes of
:mod:`bot.conversation.turns` as they are, and no audio is kept.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    LLMTextFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.turns.speculation_gate import SpeculationState
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from bot.config import Settings
from bot.conversation.turn_decision import TurnVerdict, turn_wait
from bot.conversation.turns import (
    PatientSpeechTimeoutStopStrategy,
    SpeculativeSpeechTimeoutStopStrategy,
)

__all__ = [
    "MAX_BUFFER_SECS",
    "ModelPatientStopStrategy",
    "ModelSpeculativeStopStrategy",
    "TurnModelAsk",
    "notify_held_answers",
    "preload_turn_model",
    "with_turn_model",
]

# The model reads the last 8 s; a little more lets its resampler settle (smart_turn.features).
MAX_BUFFER_SECS = 8.5
# Audio kept from before the VAD's start: the start window itself plus 0.3 s of lead-in, as
# Pipecat's analyzer keeps (and as the research clips had).
PRE_SPEECH_SECS = 0.3
MODEL_RATES = (8000, 16000, 24000)
# Less of the wait left than this when the answer is held: a verdict (~26 ms of CPU, plus
# the queue) could not come in time to end the turn any sooner.
MIN_WAIT_LEFT_SECS = 0.04

# (audio int16 bytes, sample rate, timeout secs) -> the verdict, or None if none came in time.
TurnModelAsk = Callable[[bytes, int, float], Awaitable[TurnVerdict | None]]


def _default_ask() -> TurnModelAsk:
    from bot.conversation.smart_turn import verdict_within  # onnxruntime: only when on

    return verdict_within


def preload_turn_model() -> None:
    """Load the process's smart-turn session now (blocking, ~0.3 s): call it in a thread at
    start-up, so the first call's first VAD stop does not pay for it."""
    from bot.conversation.smart_turn import shared_session

    shared_session()


class _TurnModelMixin:
    """The verdict half of the hybrid, over a :class:`PatientSpeechTimeoutStopStrategy`."""

    def __init__(
        self,
        *,
        ask: TurnModelAsk | None = None,
        threshold: float = 0.9,
        incomplete_waits_long: bool = False,
        ask_when_answer_held: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self._init_turn_model(
            ask=ask,
            threshold=threshold,
            incomplete_waits_long=incomplete_waits_long,
            ask_when_answer_held=ask_when_answer_held,
        )

    def _init_turn_model(
        self,
        *,
        ask: TurnModelAsk | None,
        threshold: float,
        incomplete_waits_long: bool,
        ask_when_answer_held: bool = False,
    ) -> None:
        self._ask = ask or _default_ask()
        self._threshold = threshold
        self._incomplete_waits_long = incomplete_waits_long
        # Only when a "complete" is all the verdict can do (shorten-only) and an early
        # answer exists to be held (the module docstring).
        self.asks_when_answer_held = ask_when_answer_held and not incomplete_waits_long
        self._stop_audio = b""  # the turn's audio at the last VAD stop, not yet judged
        self._audio: deque[bytes] = deque()
        self._audio_bytes = 0
        self._audio_rate = 0
        self._in_speech = False  # the VAD has started since the last turn end
        self._vad_start_secs = 0.2  # the VAD's start window, from its frames
        self._verdict: TurnVerdict | None = None
        self._verdict_task: asyncio.Task | None = None
        # The last VAD stops' answers, newest last (tests, debugging); bounded for long calls.
        self.verdicts: deque[TurnVerdict | None] = deque(maxlen=32)

    # -- the caller's audio -----------------------------------------------------------------

    def _keep_audio(self, frame: InputAudioRawFrame) -> None:
        if frame.sample_rate != self._audio_rate:
            self._audio.clear()
            self._audio_bytes = 0
            self._audio_rate = frame.sample_rate
        self._audio.append(frame.audio)
        self._audio_bytes += len(frame.audio)
        secs = MAX_BUFFER_SECS if self._in_speech else self._pre_speech_secs
        self._trim(round(secs * frame.sample_rate) * 2)

    def _trim(self, cap: int) -> None:
        # Whole frames off the front: cheap, and the cap is a bound, not an exact length.
        while self._audio and self._audio_bytes - len(self._audio[0]) >= cap:
            self._audio_bytes -= len(self._audio.popleft())

    @property
    def _pre_speech_secs(self) -> float:
        return PRE_SPEECH_SECS + self._vad_start_secs

    def turn_audio(self) -> bytes:
        """The turn's caller audio so far (what the model is given at a VAD stop)."""
        return b"".join(self._audio)

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, InputAudioRawFrame):
            self._keep_audio(frame)
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self._vad_start_secs = frame.start_secs
            self._in_speech = True
        return await super().process_frame(frame)

    async def handle_user_turn_stopped(self) -> None:
        await super().handle_user_turn_stopped()
        self._in_speech = False  # the next turn starts from its own pre-speech
        self._trim(round(self._pre_speech_secs * (self._audio_rate or 8000)) * 2)

    # -- the verdict ------------------------------------------------------------------------

    async def _handle_vad_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame) -> None:
        await self._cancel_verdict()
        audio = self.turn_audio()
        await super()._handle_vad_user_stopped_speaking(frame)
        if not audio or self._audio_rate not in MODEL_RATES or self._user_speech_wait_done:
            return
        if self.asks_when_answer_held:
            self._stop_audio = audio  # judged if the answer comes while the turn still waits
            return
        self._start_judging(audio, self._user_speech_timeout)

    def _start_judging(self, audio: bytes, timeout: float) -> None:
        self._verdict_task = self.task_manager.create_task(
            self._judge(audio, self._audio_rate, timeout), f"{self}::_judge"
        )

    def answer_held(self) -> None:
        """The early answer's first words are held: ask the model now, if its verdict could
        still end the turn sooner (called from the LLM's push, on the event loop)."""
        audio, self._stop_audio = self._stop_audio, b""
        if not audio or not self._vad_stopped or self._vad_user_speaking:
            return
        if self._user_speech_wait_done or self._verdict_task is not None:
            return
        now = time.monotonic()
        ends = self._vad_stopped_at + self._wait_for(self._text)
        soonest = max(now, self._vad_stopped_at + self.extra_wait)  # what "complete" gives
        if ends - soonest < MIN_WAIT_LEFT_SECS:
            return  # the turn ends before a verdict could end it sooner
        self._start_judging(audio, ends - now)

    async def _judge(self, audio: bytes, rate: int, timeout: float) -> None:
        try:
            verdict = await self._ask(audio, rate, timeout)
        except asyncio.CancelledError:
            return
        except Exception as e:  # the model's failure must never stop the turn ending
            logger.warning(f"turn model failed ({type(e).__name__}: {e}); using the timeout")
            verdict = None
        finally:
            self._verdict_task = None
        if verdict is not None and verdict.complete != (verdict.probability > self._threshold):
            verdict = replace(verdict, complete=verdict.probability > self._threshold)
        self.verdicts.append(verdict)
        if verdict is None:
            logger.debug("turn model: no verdict within the speech timeout")
        else:
            logger.debug(
                f"turn model: {'complete' if verdict.complete else 'incomplete'} "
                f"(p {verdict.probability:.2f}, {verdict.elapsed_ms:.0f} ms)"
            )
        if verdict is None or self._vad_user_speaking or not self._vad_stopped:
            return
        self._verdict = verdict
        await self._verdict_came()

    async def _verdict_came(self) -> None:
        """Choose the wait again, now with the verdict."""
        await self._rewait(self._text)

    def _wait_for(self, text: str) -> float:
        wait = super()._wait_for(text)
        if wait > self._user_speech_timeout:
            return wait  # the words are unfinished: their wait stands
        long_wait = self._unfinished_timeout if self._incomplete_waits_long else 0.0
        wait = turn_wait(self._verdict, text, False, self._user_speech_timeout, long_wait)
        # "At once" means at the configured VAD stop, not at the early one (turns.TurnWindows).
        return max(wait, self.extra_wait)

    async def _cancel_verdict(self) -> None:
        self._verdict = None
        self._stop_audio = b""
        if self._verdict_task is not None:
            task, self._verdict_task = self._verdict_task, None
            await self.task_manager.cancel_task(task)

    async def _discard_pending_end_of_turn(self) -> None:
        # The caller speaks again (or a turn boundary): the verdict was on a shorter turn.
        await super()._discard_pending_end_of_turn()
        await self._cancel_verdict()

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._cancel_verdict()


class ModelPatientStopStrategy(_TurnModelMixin, PatientSpeechTimeoutStopStrategy):
    """The patient speech-timeout turn end, shortened or stretched by the turn model."""


class ModelSpeculativeStopStrategy(_TurnModelMixin, SpeculativeSpeechTimeoutStopStrategy):
    """The speculative turn end with the turn model. The guess is made at the VAD stop as
    without it; a "complete" verdict releases it sooner, an "incomplete" one (long form)
    keeps it held longer."""


_WITH_MODEL: dict[type, type] = {
    PatientSpeechTimeoutStopStrategy: ModelPatientStopStrategy,
    SpeculativeSpeechTimeoutStopStrategy: ModelSpeculativeStopStrategy,
}


def with_turn_model(
    strategies: UserTurnStrategies, settings: Settings, ask: TurnModelAsk | None = None
) -> UserTurnStrategies:
    """``strategies`` as they are when ``settings.turn_model`` is "off"; else each stop
    strategy of ours replaced by its model form.

    The model form takes over the strategy's state as built (not rebuilt from settings), so
    whatever the pipeline passed to the strategy's constructor is kept as it was. Call it
    before the strategies are handed to the user aggregator.
    """
    if settings.turn_model != "smart-turn":
        return strategies
    stops = []
    for strategy in strategies.stop or []:
        model_class = _WITH_MODEL.get(type(strategy))
        if model_class is not None:
            built, strategy = strategy, model_class.__new__(model_class)
            strategy.__dict__.update(built.__dict__)
            strategy._init_turn_model(
                ask=ask,
                threshold=settings.turn_model_threshold,
                incomplete_waits_long=settings.turn_model_incomplete == "unfinished-timeout",
                ask_when_answer_held=isinstance(strategy, ModelSpeculativeStopStrategy),
            )
        stops.append(strategy)
    strategies.stop = stops
    return strategies


def notify_held_answers(llm: FrameProcessor, strategies: UserTurnStrategies) -> None:
    """Tell the stop strategies that ask when the answer is held (``answer_held``) each time
    ``llm``'s speculation gate holds a piece of an early answer's text.

    Pipecat's LLM service keeps the gate private (``_speculation_gate``, 1.14) and offers no
    event for it; a service without one (none of ours) is left alone."""
    listeners = [
        s.answer_held for s in strategies.stop or [] if getattr(s, "asks_when_answer_held", False)
    ]
    gate = getattr(llm, "_speculation_gate", None)
    if not listeners or gate is None:
        return
    process = gate.process

    def process_and_tell(frame: Frame, direction):
        emitted = process(frame, direction)
        if isinstance(frame, LLMTextFrame) and gate.state == SpeculationState.HOLDING:
            for listener in listeners:
                listener()
        return emitted

    gate.process = process_and_tell
