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

With ``TURN_MODEL=off`` none of this is built: the pipeline uses the classes of
:mod:`bot.conversation.turns` as they are, and no audio is kept.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
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
    "preload_turn_model",
    "with_turn_model",
]

# The model reads the last 8 s; a little more lets its resampler settle (smart_turn.features).
MAX_BUFFER_SECS = 8.5
# Audio kept from before the VAD's start: the start window itself plus 0.3 s of lead-in, as
# Pipecat's analyzer keeps (and as the research clips had).
PRE_SPEECH_SECS = 0.3
MODEL_RATES = (8000, 16000, 24000)

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
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self._init_turn_model(
            ask=ask, threshold=threshold, incomplete_waits_long=incomplete_waits_long
        )

    def _init_turn_model(
        self, *, ask: TurnModelAsk | None, threshold: float, incomplete_waits_long: bool
    ) -> None:
        self._ask = ask or _default_ask()
        self._threshold = threshold
        self._incomplete_waits_long = incomplete_waits_long
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
        if audio and self._audio_rate in MODEL_RATES and not self._user_speech_wait_done:
            self._verdict_task = self.task_manager.create_task(
                self._judge(audio, self._audio_rate), f"{self}::_judge"
            )

    async def _judge(self, audio: bytes, rate: int) -> None:
        try:
            verdict = await self._ask(audio, rate, self._user_speech_timeout)
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
        return turn_wait(self._verdict, text, False, self._user_speech_timeout, long_wait)

    async def _cancel_verdict(self) -> None:
        self._verdict = None
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
            )
        stops.append(strategy)
    strategies.stop = stops
    return strategies
