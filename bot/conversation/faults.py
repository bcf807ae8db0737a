"""Provider faults: the caller never sits in silence because STT, LLM or TTS failed.

Why this exists: Pipecat reports most provider failures as an ``ErrorFrame`` that travels
upstream to the pipeline worker and is logged, and then the call simply goes quiet. Some
failures are never reported at all: a hung OpenAI request waits for the client's 600 s timeout,
and a dead STT means the caller's turn never ends (Pipecat's turn-stop strategy waits for a
transcript, then its 5 s stop timeout ends the turn empty and the LLM never runs). Exotel drops
streams that stay quiet too long, and a caller hangs up long before that.

:class:`FaultWatchdog` sits just before ``transport.output()`` and watches for that silence:

* The clock starts when the caller stops speaking (``VADUserStoppedSpeakingFrame``, not the
  turn end: with a dead STT the turn may never end) and stops when the caller speaks again or
  the *real* answer's audio arrives. Holding phrases, the apology and other cached phrases
  (``context_id`` starting with ``holding-``) are bot audio too, but not an answer.
* A service ``ErrorFrame`` for the turn (reported by the worker's ``on_pipeline_error`` event,
  see :meth:`FaultWatchdog.watch`) acts sooner than the clock, once the bot's partial answer
  (if any) has finished: the apology follows what the caller was hearing, never cuts it.
* Otherwise, ``timeout_secs`` after the caller stopped speaking with no answer audio, the turn
  has failed. An upstream-only ``InterruptionFrame`` then cancels whatever is stuck upstream (a
  hung LLM request, a TTS context waiting for audio) without touching the audio the caller is
  hearing; a full interruption would also ``clear`` a holding phrase mid-word.
* A failed turn gets the cached apology (``settings.apology``). If the apology is not cached,
  it is spoken by the TTS, but only if the TTS is not the part that failed.
* ``max_failures`` failed turns in a row, or a provider Pipecat has marked unusable (it gave up
  reconnecting, or its key was refused), end the call politely through the call's ``end_call``
  hook, with the goodbye (cached if possible).

A short burst of non-speech (a cough, line noise) that the STT transcribes as nothing is not a
failure: it ends an empty turn and the call's idle handling deals with it. Speech of at least
``min_speech_secs`` that produced no turn within the timeout is treated as a failed STT turn.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    FunctionCallInProgressFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService

from bot.config import Settings

Kind = Literal["stt", "llm", "tts"]
EndCallHook = Callable[[str, str | None], Awaitable[None]]
"""``CallSession.end_call(reason, goodbye)``: goodbye (if any) -> mark -> echo -> close."""
SayHook = Callable[[str], Awaitable[bool]]
"""Plays a cached phrase by text now; False if it is not cached (``HoldingPhraseProcessor.say``)."""

CACHED_CONTEXT_PREFIX = "holding-"
"""``context_id`` prefix of audio pushed from the phrase cache (bot.conversation.holding)."""
END_CALL_FUNCTION = "end_call"
DEFAULT_TIMEOUT_SECS = 4.0
"""Caller's end of speech -> apology when no answer audio came (Settings.provider_timeout_secs)."""
POLL_SECS = 0.1  # while a turn is open; idle calls wait on an event and cost nothing
MERGE_SECS = 1.5  # errors this soon after acting belong to the failure already handled


@dataclass
class FaultEvent:
    """What the watchdog did about one failure, for logs, tests and the call record."""

    at: float  # time.monotonic()
    action: Literal["apology", "end"]
    culprit: Kind | None
    reason: str
    failures: int  # consecutive failed turns, this one included
    silence_secs: float  # caller's end of speech (or the error) -> this action
    played_cached: bool  # the phrase came from the cache (False: TTS, or nothing)


@dataclass
class _Turn:
    """The caller stopped speaking and is owed an answer (or it is a failure we caught)."""

    utterance: int
    speech_end: float
    speech_secs: float
    deadline: float
    turn_ended: bool = False
    llm_started: bool = False
    tts_started: bool = False
    failed: Kind | None = None
    error_at: float = 0.0
    error: str = ""


@dataclass
class _Answer:
    """The real answer's audio has started; it is a success once its context ends cleanly."""

    context: str
    started_at: float
    stopped_at: float | None = None


@dataclass
class _Errors:
    """Provider errors seen in this call (times are monotonic)."""

    last_at: dict[str, float] = field(default_factory=dict)
    last_text: dict[str, str] = field(default_factory=dict)
    unusable: Kind | None = None

    def since(self, kind: Kind, t: float) -> bool:
        return self.last_at.get(kind, -1.0) >= t


def provider_kind(processor: Any) -> Kind | None:
    """Which provider a processor is, by its Pipecat service base class."""
    if isinstance(processor, STTService):
        return "stt"
    if isinstance(processor, LLMService):
        return "llm"
    if isinstance(processor, TTSService):
        return "tts"
    return None


class FaultWatchdog(FrameProcessor):
    """Covers provider failures with the cached apology; ends the call when they persist.

    Place it last before ``transport.output()`` (after the holding-phrase processor), hand it
    the call's ``end_call`` and the phrase player, and call :meth:`watch` with the worker.
    Events: ``on_fault(watchdog, event: FaultEvent)`` after each action.
    """

    def __init__(
        self,
        *,
        end_call: EndCallHook,
        say: SayHook | None = None,
        apology: str = "Sorry, I am having trouble right now. Please bear with me.",
        goodbye: str = "Thank you for calling. Goodbye!",
        timeout_secs: float = DEFAULT_TIMEOUT_SECS,
        max_failures: int = 2,
        settle_secs: float = 0.5,
        min_speech_secs: float = 0.5,
        startup_grace_secs: float = 2.0,
        **kwargs: Any,
    ) -> None:
        """Args:
        end_call: the call's polite end (goodbye, mark, echo, close).
        say: plays a cached phrase by text; None: the TTS speaks the apology.
        timeout_secs: caller's end of speech -> apology, when no answer audio came.
        max_failures: failed turns in a row that end the call.
        settle_secs: quiet after the bot's last real audio before an error's apology, so it
            follows a partial answer instead of cutting in.
        min_speech_secs: shorter speech that never became a turn is noise, not a failure.
        startup_grace_secs: a failure known at start waits this long for the greeting.
        """
        # Direct mode: frames are watched in the task that pushes them, not queued for two
        # tasks of this processor's own. Watching never waits, so nothing is held up, and
        # every chunk of bot audio passes here: two loop steps fewer per chunk.
        kwargs.setdefault("enable_direct_mode", True)
        super().__init__(**kwargs)
        self._end_call = end_call
        self._say = say
        self.apology = apology
        self.goodbye = goodbye
        self.timeout_secs = timeout_secs
        self.max_failures = max_failures
        self._settle = settle_secs
        self._min_speech = min_speech_secs
        self._startup_grace = startup_grace_secs
        self._started_at: float | None = None
        self._turn: _Turn | None = None
        self._answering: _Answer | None = None
        self._utterance = 0
        self._resolved_utterance = -1
        self._speech_started_at: float | None = None
        self._caller_speaking = False
        self._open_contexts: set[str] = set()
        self._last_real_audio_at = 0.0
        self._last_action_at = -MERGE_SECS
        self._errors = _Errors()
        self._early_errors: list[ErrorFrame] = []
        self._failures = 0
        self._ending = False
        self._wake = asyncio.Event()
        self._supervisor: asyncio.Task | None = None
        self._end_task: asyncio.Task | None = None
        self.events: list[FaultEvent] = []
        self._register_event_handler("on_fault")

    @classmethod
    def from_settings(
        cls, settings: Settings, *, end_call: EndCallHook, say: SayHook | None = None, **kw: Any
    ) -> FaultWatchdog:
        """The watchdog as configured: ``provider_timeout_secs``, ``apology``, ``goodbye``."""
        params: dict[str, Any] = {
            "apology": settings.apology,
            "goodbye": settings.goodbye,
            "timeout_secs": settings.provider_timeout_secs,
        }
        params.update(kw)
        return cls(end_call=end_call, say=say, **params)

    def watch(self, worker: Any) -> None:
        """Receive the pipeline's errors: they travel upstream, never past this processor."""

        @worker.event_handler("on_pipeline_error")
        async def _on_error(_worker: Any, frame: ErrorFrame) -> None:
            await self.report_error(frame)

    def stand_down(self) -> None:
        """The call is ending (goodbye under way): silence is expected from now on."""
        self._ending = True
        self._turn = None

    @property
    def failures(self) -> int:
        """Consecutive failed turns (0 after a turn that was answered)."""
        return self._failures

    # -- errors -------------------------------------------------------------------------------

    async def report_error(self, frame: ErrorFrame) -> None:
        """A provider reported an error (the worker's ``on_pipeline_error``)."""
        kind = provider_kind(frame.processor)
        if kind is None or self._ending:
            return
        if self._started_at is None:
            self._early_errors.append(frame)  # during setup (e.g. a refused STT connect)
            return
        self._record_error(kind, frame)

    def _record_error(self, kind: Kind, frame: ErrorFrame) -> None:
        now = time.monotonic()
        text = str(frame.error)[:120]
        self._errors.last_at[kind], self._errors.last_text[kind] = now, text
        if frame.processor is not None and not frame.processor.is_usable:
            self._errors.unusable = self._errors.unusable or kind
        if kind == "tts":
            # A failed context may never send its TTSStoppedFrame; do not wait for it.
            self._open_contexts.clear()
        turn = self._turn
        if turn is not None and turn.failed is None:
            turn.failed, turn.error_at, turn.error = kind, now, text
        elif turn is None and self._error_needs_a_turn(kind, now):
            self._open_turn(now, speech_secs=0.0, failed=kind, error=text)
        self._wake.set()

    def _error_needs_a_turn(self, kind: Kind, now: float) -> bool:
        """An error with no caller turn open: a lost bot utterance, or a provider gone for good.

        STT errors wait for the caller's next utterance (its transcript is what is lost). An LLM
        error counts if it cut an answer that had started. A TTS error means something the bot
        was saying (the answer, the greeting, a prompt) was lost. Bursts of errors for one
        failure count once.
        """
        if now - self._last_action_at < MERGE_SECS:
            return False
        if kind == "llm" and self._answering is not None:
            return True  # the answer broke off half-way
        return self._errors.unusable is not None or kind == "tts"

    # -- frames -------------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            self._start()
            return
        if isinstance(frame, EndFrame | CancelFrame):
            await self._stop(cancel_end=isinstance(frame, CancelFrame))
        elif direction == FrameDirection.DOWNSTREAM:
            self._observe(frame)
        await self.push_frame(frame, direction)

    def _observe(self, frame: Frame) -> None:
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._caller_started(frame)
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._caller_stopped(frame)
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._turn_ended()
        elif isinstance(frame, LLMFullResponseStartFrame) and self._turn:
            self._turn.llm_started = True
        elif isinstance(frame, FunctionCallInProgressFrame):
            if frame.function_name == END_CALL_FUNCTION:
                self.stand_down()
        elif isinstance(frame, TTSStartedFrame | TTSStoppedFrame | TTSAudioRawFrame):
            self._tts_frame(frame)
        elif isinstance(frame, LLMFullResponseEndFrame):
            self._wake.set()

    def _caller_started(self, frame: VADUserStartedSpeakingFrame) -> None:
        """The caller speaks: whatever we were waiting for, they are not waiting now.

        Even a known failure is dropped: the caller has moved on, and what they say now is
        the turn that matters (a new turn also cancels the LLM and TTS work of the old one).
        """
        self._utterance += 1
        self._caller_speaking = True
        self._speech_started_at = time.monotonic() - frame.start_secs
        self._turn = None
        self._answering = None

    def _caller_stopped(self, frame: VADUserStoppedSpeakingFrame) -> None:
        now = time.monotonic()
        self._caller_speaking = False
        speech_end = now - frame.stop_secs
        started = self._speech_started_at if self._speech_started_at is not None else speech_end
        failed: Kind | None = None
        if self._errors.since("stt", started) or self._errors.unusable == "stt":
            failed = "stt"  # the transcript of this utterance is lost
        error = self._errors.last_text.get("stt", "") if failed else ""
        self._open_turn(speech_end, speech_secs=speech_end - started, failed=failed, error=error)

    def _turn_ended(self) -> None:
        if self._turn is not None:
            self._turn.turn_ended = True
        elif not self._ending and self._resolved_utterance != self._utterance:
            # A turn that ended without our seeing the caller stop (e.g. started by a
            # transcript): count it from now.
            turn = self._open_turn(time.monotonic(), speech_secs=self._min_speech)
            if turn is not None:
                turn.turn_ended = True

    def _tts_frame(self, frame: TTSStartedFrame | TTSStoppedFrame | TTSAudioRawFrame) -> None:
        context = str(frame.context_id or "")
        if context.startswith(CACHED_CONTEXT_PREFIX):
            return  # a holding phrase, the apology, a cached greeting: not an answer
        if isinstance(frame, TTSStartedFrame):
            self._open_contexts.add(context)
            if self._turn:
                self._turn.tts_started = True
        elif isinstance(frame, TTSStoppedFrame):
            self._open_contexts.discard(context)
            self._answer_finished(context)
            self._wake.set()
        else:
            self._last_real_audio_at = time.monotonic()
            turn = self._turn
            if turn is not None and turn.failed is None:
                self._answer_started(turn, context)

    def _answer_started(self, turn: _Turn, context: str) -> None:
        """The answer is being heard: the clock stops. It counts as a success only once its
        audio has ended with no error (a TTS that always fails half-way must not look healthy).
        """
        self._resolve(turn)
        self._answering = _Answer(context, time.monotonic())

    def _answer_finished(self, context: str) -> None:
        """The answer's audio ended; it is confirmed by the supervisor a moment later, since
        a TTS may send its stop frame before the error that cut the audio short."""
        answer = self._answering
        if answer is not None and answer.context == context:
            answer.stopped_at = time.monotonic()
            self._wake.set()

    def _confirm_answer(self, now: float) -> None:
        answer = self._answering
        if answer is None or answer.stopped_at is None or now - answer.stopped_at < self._settle:
            return
        self._answering = None
        if any(self._errors.since(kind, answer.started_at) for kind in ("llm", "tts")):
            return  # the error has opened a failed turn of its own
        if self._failures:
            logger.info(f"provider faults: the call recovered after {self._failures} failed turns")
        self._failures = 0

    # -- the clock ----------------------------------------------------------------------------

    def _open_turn(
        self,
        speech_end: float,
        *,
        speech_secs: float,
        failed: Kind | None = None,
        error: str = "",
    ) -> _Turn | None:
        if self._ending:
            return None
        turn = _Turn(self._utterance, speech_end, speech_secs, speech_end + self.timeout_secs)
        if failed is not None:
            turn.failed, turn.error_at, turn.error = failed, time.monotonic(), error
        self._turn = turn
        self._wake.set()
        return turn

    def _resolve(self, turn: _Turn) -> None:
        if self._turn is turn:
            self._turn = None
        self._resolved_utterance = turn.utterance

    def _start(self) -> None:
        self._started_at = time.monotonic()
        for frame in self._early_errors:
            kind = provider_kind(frame.processor)
            if kind is not None:
                self._record_error(kind, frame)
        self._early_errors.clear()
        self._supervisor = self.create_task(self._supervise(), name="fault_watchdog")

    async def _stop(self, *, cancel_end: bool) -> None:
        self._ending = True
        if self._supervisor is not None:
            await self.cancel_task(self._supervisor)
            self._supervisor = None
        if cancel_end and self._end_task is not None and not self._end_task.done():
            await self.cancel_task(self._end_task)
        self._end_task = None

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._stop(cancel_end=True)

    async def _supervise(self) -> None:
        """One task per call: sleeps on an event while no turn is open, polls while one is."""
        while not self._ending:
            busy = self._turn is not None or (self._answering and self._answering.stopped_at)
            try:
                await asyncio.wait_for(self._wake.wait(), POLL_SECS if busy else None)
            except TimeoutError:
                pass
            self._wake.clear()
            self._confirm_answer(time.monotonic())
            decision = self._decide(time.monotonic())
            if decision is not None:
                await self._act(*decision)

    def _decide(self, now: float) -> tuple[_Turn, Kind | None, bool] | None:
        """(turn, culprit, stuck) when it is time to act on the open turn, else None."""
        turn = self._turn
        if turn is None or self._ending or self._caller_speaking:
            return None
        if turn.failed is not None:
            return self._decide_failed(turn, now)
        if now < turn.deadline:
            return None
        if turn.llm_started:
            return turn, ("tts" if turn.tts_started else "llm"), True
        stt_suspect = self._errors.unusable == "stt" or "stt" in self._errors.last_at
        if turn.speech_secs >= self._min_speech or stt_suspect:
            return turn, "stt", True  # speech that never became an answered turn
        logger.debug(f"{turn.speech_secs:.2f} s of non-speech with no answer; not a fault")
        self._resolve(turn)
        return None

    def _decide_failed(self, turn: _Turn, now: float) -> tuple[_Turn, Kind | None, bool] | None:
        """A known failure: act once the bot's own speech has paused (or give up waiting)."""
        ready_at = max(turn.error_at, turn.speech_end) + self._settle
        if self._started_at is not None:
            ready_at = max(ready_at, self._started_at + self._startup_grace)
        quiet = not self._open_contexts and now - self._last_real_audio_at >= self._settle
        if now >= ready_at and quiet:
            return turn, turn.failed, False
        if now >= max(turn.deadline, ready_at + self.timeout_secs):
            return turn, turn.failed, True  # its TTS context never ended: something is stuck
        return None

    # -- acting -------------------------------------------------------------------------------

    async def _act(self, turn: _Turn, culprit: Kind | None, stuck: bool) -> None:
        now = time.monotonic()
        self._resolve(turn)
        self._last_action_at = now
        self._failures += 1
        reason = self._describe(turn, culprit, now)
        if stuck:
            await self._cancel_upstream()
        fatal = self._errors.unusable
        if fatal is not None or self._failures >= self.max_failures:
            why = f"{fatal} unusable" if fatal else f"{self._failures} failed turns in a row"
            logger.warning(f"provider fault: {reason}; ending the call ({why})")
            cached = await self._end(f"provider fault: {why}", apology=self._failures == 1)
            await self._record("end", turn, culprit, reason, now, cached)
            return
        logger.warning(f"provider fault: {reason}; apology ({self._failures} failed)")
        cached = await self._play(self.apology, culprit)
        await self._record("apology", turn, culprit, reason, now, cached)

    def _describe(self, turn: _Turn, culprit: Kind | None, now: float) -> str:
        waited = now - max(turn.speech_end, turn.error_at if turn.failed else 0.0)
        if turn.failed:
            return f"{culprit} error ({turn.error}), acted {waited:.1f} s later"
        return f"no answer {now - turn.speech_end:.1f} s after the caller stopped ({culprit})"

    async def _cancel_upstream(self) -> None:
        """Cancel what is stuck upstream (a hung LLM request, a silent TTS context).

        The interruption goes upstream only: the LLM and the TTS drop their work, the output
        does not ``clear``, so a holding phrase being played is not cut.
        """
        await self.push_frame(InterruptionFrame(), FrameDirection.UPSTREAM)

    async def _play(self, text: str, culprit: Kind | None) -> bool:
        """Cached audio if there is some; else the TTS, unless the TTS is what failed."""
        if self._say is not None and await self._say(text):
            return True
        if culprit == "tts" or self._errors.unusable == "tts":
            logger.warning(f"{text!r} is not cached and the TTS is failing: nothing to play")
            return False
        # Upstream, straight into the TTS: queued at the worker it would wait behind a
        # stuck LLM.
        await self.push_frame(TTSSpeakFrame(text, append_to_context=False), FrameDirection.UPSTREAM)
        return False

    async def _end(self, reason: str, *, apology: bool) -> bool:
        """Apology (if the caller has not heard why) and goodbye, then the call's polite end."""
        self._ending = True
        if apology:
            await self._play(self.apology, self._errors.unusable)
        cached = self._say is not None and await self._say(self.goodbye)
        goodbye = None if cached else self.goodbye  # end_call speaks it through the TTS
        self._end_task = self.create_task(self._end_call(reason, goodbye), name="fault_end_call")
        return cached

    async def _record(
        self,
        action: Literal["apology", "end"],
        turn: _Turn,
        culprit: Kind | None,
        reason: str,
        now: float,
        cached: bool,
    ) -> None:
        since = turn.speech_end if turn.speech_secs > 0 else turn.error_at
        event = FaultEvent(now, action, culprit, reason, self._failures, now - since, cached)
        self.events.append(event)
        await self._call_event_handler("on_fault", event)
