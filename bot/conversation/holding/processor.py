"""The processor: plays a cached phrase as ordinary bot audio while the answer is slow.

It sits between the TTS and ``transport.output()``. When the caller's turn ends
(``UserStoppedSpeakingFrame``) it arms a timer; if the real answer's audio has not reached it
when the timer fires, it pushes a cached phrase as ordinary bot audio (``TTSStartedFrame`` /
``TTSAudioRawFrame`` chunks / ``TTSStoppedFrame``), so interruption, bot-speaking state and marks
treat it like speech. The phrase never reaches the LLM context (``append_to_context=False`` and
no text frames) and the answer queues behind it, never on top of it.

Modes (``holding_mode``): ``off``; ``always`` (a phrase at once on every turn: the seed's
behaviour); ``adaptive`` (default: only after ``holding_delay_secs`` and only if the LLM is
working on an answer whose audio is not on its way yet). A second, different phrase follows if
the answer is still missing ``holding_second_delay_secs`` after the turn ended; never more than
``holding_max_per_turn`` per turn, never the same phrase twice in a row.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    FunctionCallCancelFrame,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    FunctionCallsStartedFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMMessagesAppendFrame,
    StartFrame,
    SystemFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bot.config import Settings
from bot.conversation.holding.phrase import DEFAULT_HOLDING_PHRASES, RenderedPhrase, unique_texts

HoldingMode = Literal["off", "always", "adaptive"]

PHRASE_CONTEXT_PREFIX = "holding-"
SAY_START_TIMEOUT_SECS = 2.0


class PhraseSource(Protocol):
    """What the processor needs from a cache: a non-blocking look-up and a warm-up request."""

    def get(self, text: str, sample_rate: int) -> RenderedPhrase | None: ...

    def request(self, sample_rate: int) -> Any: ...


@dataclass(frozen=True)
class HoldingEvent:
    """A holding phrase was played. Times are ``time.monotonic()`` seconds.

    ``turn`` counts the caller's turns in this call (1 = first), ``slot`` the phrases within
    the turn (1 = first). ``pushed_at`` is when the phrase's last frame was handed to the output
    transport, which sends the first chunk at once when nothing else is playing.
    """

    turn: int
    slot: int
    text: str
    turn_ended_at: float
    fired_at: float
    pushed_at: float
    duration_secs: float

    @property
    def latency_secs(self) -> float:
        """Turn end to phrase handed to the output (the ``holding_latency`` metric)."""
        return self.pushed_at - self.turn_ended_at


@dataclass
class _Turn:
    """One caller turn, from its end until the answer's audio (or the next turn)."""

    number: int
    ended_at: float
    answer_started_at: float | None = None  # the real TTS began synthesizing the answer
    answer_audio: bool = False  # the real answer's audio has reached us
    phrase_ends_at: float = 0.0  # when the last phrase finishes playing, by our estimate


@dataclass
class _AnswerTracker:
    """Whether the LLM is working on an answer for the current turn.

    An empty turn (no transcript) does not run the LLM, and an LLM reply can be empty: a phrase
    then would promise an answer that never comes.
    """

    response_open: bool = False
    calls_running: set[str] = field(default_factory=set)
    response_due: bool = False  # a function result asked the LLM to run again

    @property
    def expected(self) -> bool:
        return self.response_open or bool(self.calls_running) or self.response_due

    def track(self, frame: Frame) -> bool:
        """Update from a frame; True if an answer is expected after it."""
        if isinstance(frame, LLMFullResponseStartFrame):
            self.response_open, self.response_due = True, False
        elif isinstance(frame, LLMFullResponseEndFrame):
            self.response_open = False
        elif isinstance(frame, FunctionCallsStartedFrame):
            self.calls_running.update(call.tool_call_id for call in frame.function_calls)
        elif isinstance(frame, FunctionCallInProgressFrame):
            self.calls_running.add(frame.tool_call_id)
        elif isinstance(frame, FunctionCallResultFrame):
            self.calls_running.discard(frame.tool_call_id)
            self.response_due = self.response_due or _runs_llm(frame)
        elif isinstance(frame, FunctionCallCancelFrame):
            self.calls_running.discard(frame.tool_call_id)
        return self.expected


def _runs_llm(frame: FunctionCallResultFrame) -> bool:
    if frame.run_llm is not None:
        return frame.run_llm
    props = frame.properties
    return props.run_llm if props is not None and props.run_llm is not None else True


class HoldingPhraseProcessor(FrameProcessor):
    """Plays a cached holding phrase when the caller's answer is slow. Place before the output.

    Events: ``on_holding_phrase(processor, event: HoldingEvent)``, called after the phrase has
    been pushed (in a task, so a slow handler never delays audio).
    """

    def __init__(
        self,
        phrases: PhraseSource,
        texts: Sequence[str] = DEFAULT_HOLDING_PHRASES,
        *,
        mode: HoldingMode = "adaptive",
        delay_secs: float = 0.7,
        second_delay_secs: float = 3.0,
        max_per_turn: int = 2,
        **kwargs: Any,
    ) -> None:
        """Args:
        phrases: the cache (``get`` is called when a timer fires; it must not block).
        texts: the holding phrases, in rotation order.
        mode: ``off``, ``always`` (first phrase at once) or ``adaptive``.
        delay_secs: adaptive mode: turn end to first phrase. Also the minimum quiet after a
            phrase before the next, and the grace given to a TTS that started but is silent.
        second_delay_secs: turn end to the second phrase (if the answer is still missing).
        max_per_turn: phrases per turn at most.
        """
        # Direct mode: every frame of the answer's audio passes through here, and queueing
        # it cost two event-loop steps per frame (6.7 % of the loop's CPU at 50 calls). The
        # processor never holds a frame long: the only wait is the push lock, held while a
        # phrase's frames are queued at the output.
        kwargs.setdefault("enable_direct_mode", True)
        super().__init__(**kwargs)
        self._phrases = phrases
        self._texts = unique_texts(texts)
        self.mode: HoldingMode = mode
        self._delay = delay_secs
        self._second_delay = second_delay_secs
        self._max_per_turn = max_per_turn
        self._rate = 0
        self._started = asyncio.Event()
        self._turns = itertools.count(1)
        self._turn: _Turn | None = None
        self._answer = _AnswerTracker()
        self._answer_expected = asyncio.Event()
        self._timer: asyncio.Task | None = None
        self._pushing = False
        self._push_lock = asyncio.Lock()
        self._rotation = 0
        self._last_text: str | None = None
        self._contexts = itertools.count(1)
        self.events: list[HoldingEvent] = []
        self._register_event_handler("on_holding_phrase")

    @classmethod
    def from_settings(
        cls, settings: Settings, phrases: PhraseSource, **overrides: Any
    ) -> HoldingPhraseProcessor:
        """The processor as configured (``holding_*`` settings); keyword overrides win."""
        params: dict[str, Any] = {
            "mode": settings.holding_mode,
            "delay_secs": settings.holding_delay_secs,
            "second_delay_secs": settings.holding_second_delay_secs,
            "max_per_turn": settings.holding_max_per_turn,
        }
        params.update(overrides)
        return cls(phrases, settings.holding_phrases or DEFAULT_HOLDING_PHRASES, **params)

    def use_phrases(self, phrases: PhraseSource, texts: Sequence[str]) -> None:
        """Play other phrases from now on (the call switched language): another cache (the
        language's voice) and its texts. Takes effect at the next timer; a phrase playing now
        finishes."""
        self._phrases = phrases
        self._texts = unique_texts(texts)
        self._rotation, self._last_text = 0, None
        if self._rate:
            phrases.request(self._rate)

    @property
    def waiting_for_answer(self) -> bool:
        """The caller's turn ended and an answer is being prepared, none of it heard yet.

        The end of a holding phrase makes Pipecat's user-idle timer start (the bot "stopped
        speaking"); while this is True the caller is not idle, the bot is.
        """
        return self._turn is not None and not self._turn.answer_audio and self._answer.expected

    # -- frames ---------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            self._rate = self.processor_setup.audio_out_sample_rate  # the call's rate
            self._phrases.request(self._rate)
            self._started.set()
        elif isinstance(frame, EndFrame | CancelFrame):
            await self._stop_timer(force=True)
        elif direction == FrameDirection.DOWNSTREAM:
            await self._observe(frame)
        await self._forward(frame, direction)

    async def _observe(self, frame: Frame) -> None:
        if isinstance(frame, UserStoppedSpeakingFrame):
            await self._turn_ended()
        elif isinstance(frame, UserStartedSpeakingFrame | InterruptionFrame):
            # Before the interruption goes on: nothing of ours may follow it downstream.
            await self._turn_started()
        elif isinstance(frame, TTSStartedFrame):
            if self._turn and self._turn.answer_started_at is None:
                self._turn.answer_started_at = time.monotonic()
        elif isinstance(frame, TTSAudioRawFrame):
            if self._turn and not self._turn.answer_audio:
                self._turn.answer_audio = True
                await self._stop_timer(force=False)
        elif self._answer.track(frame):
            self._answer_expected.set()
        elif not self._answer.expected:
            self._answer_expected.clear()

    async def _forward(self, frame: Frame, direction: FrameDirection) -> None:
        """Pass a frame on; the answer's frames wait while a phrase is being pushed."""
        if direction == FrameDirection.DOWNSTREAM and not isinstance(frame, SystemFrame):
            async with self._push_lock:
                await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    # -- turns ----------------------------------------------------------------------------

    async def _turn_ended(self) -> None:
        await self._stop_timer(force=True)
        self._turn = _Turn(next(self._turns), time.monotonic())
        if self.mode != "off" and self._max_per_turn > 0 and self._texts:
            self._timer = self.create_task(self._hold(self._turn), name="holding_timer")

    async def _turn_started(self) -> None:
        await self._stop_timer(force=True)
        self._turn = None
        self._answer = _AnswerTracker()
        self._answer_expected.clear()

    async def _stop_timer(self, *, force: bool) -> None:
        """Cancel the timer; unless forced, let a phrase that is being pushed finish."""
        timer, self._timer = self._timer, None
        if timer is None or timer.done():
            return
        if self._pushing and not force:
            self._timer = timer  # it sees answer_audio and ends after this phrase
            return
        await self.cancel_task(timer)

    async def _hold(self, turn: _Turn) -> None:
        """The turn's timer: up to ``max_per_turn`` phrases while the answer is missing."""
        for slot in range(1, self._max_per_turn + 1):
            fired_at = await self._sleep_until_due(turn, slot)
            if turn.answer_audio:
                return
            if (self.mode == "adaptive" or slot > 1) and not self._answer.expected:
                # Nothing is working on an answer (yet): an empty turn, an empty reply, or an
                # LLM request still queued. Promise nothing until something is.
                while not self._answer.expected:
                    await self._answer_expected.wait()
                fired_at = time.monotonic()
                if turn.answer_audio:
                    return
            if not await self._play(turn, slot, fired_at):
                return

    async def _sleep_until_due(self, turn: _Turn, slot: int) -> float:
        """Sleep until the slot is due; the due time can move later while we sleep."""
        while True:
            wait = self._due(turn, slot) - time.monotonic()
            if wait <= 0:
                return time.monotonic()
            await asyncio.sleep(wait)

    def _due(self, turn: _Turn, slot: int) -> float:
        if slot == 1:
            due = turn.ended_at + (0.0 if self.mode == "always" else self._delay)
        else:
            due = max(turn.ended_at + self._second_delay, turn.phrase_ends_at + self._delay)
        if turn.answer_started_at is not None:
            # The TTS is on the answer; give it the same grace before covering its silence.
            due = max(due, turn.answer_started_at + self._delay)
        return due

    # -- playing --------------------------------------------------------------------------

    def _pick(self) -> RenderedPhrase | None:
        """Next phrase in rotation that is ready and is not the one played last."""
        n = len(self._texts)
        for step in range(n):
            text = self._texts[(self._rotation + step) % n]
            if text == self._last_text and n > 1:
                continue
            phrase = self._phrases.get(text, self._rate)
            if phrase is not None and phrase.chunks:
                self._rotation = (self._rotation + step + 1) % n
                return phrase
        return None

    async def _play(self, turn: _Turn, slot: int, fired_at: float) -> bool:
        """Push one phrase for the turn; False when there is nothing (else) to play."""
        phrase = self._pick()
        if phrase is None or (slot > 1 and phrase.text == self._last_text):
            logger.debug(f"holding phrase for turn {turn.number} skipped: none ready")
            return False
        self._pushing = True
        try:
            async with self._push_lock:
                await self._push_phrase(phrase)
                pushed_at = time.monotonic()
        finally:
            self._pushing = False
        self._last_text = phrase.text
        turn.phrase_ends_at = pushed_at + phrase.duration_secs
        event = HoldingEvent(
            turn.number, slot, phrase.text, turn.ended_at, fired_at, pushed_at, phrase.duration_secs
        )
        self.events.append(event)
        logger.info(
            f"holding phrase {slot} of turn {turn.number}: {phrase.text!r} "
            f"{event.latency_secs * 1000:.0f} ms after the turn ended "
            f"(timer +{(pushed_at - fired_at) * 1000:.1f} ms)"
        )
        await self._call_event_handler("on_holding_phrase", event)
        return not turn.answer_audio

    async def _push_phrase(self, phrase: RenderedPhrase, *, append: bool = False) -> None:
        """Push a phrase as ordinary TTS output: started, one frame per chunk, stopped."""
        context_id = f"{PHRASE_CONTEXT_PREFIX}{next(self._contexts)}"
        frames: list[Frame] = [TTSStartedFrame(context_id=context_id, append_to_context=False)]
        frames += [
            TTSAudioRawFrame(chunk, phrase.sample_rate, 1, context_id=context_id)
            for chunk in phrase.chunks
        ]
        frames.append(TTSStoppedFrame(context_id=context_id))
        if append:
            message = {"role": "assistant", "content": phrase.text}
            frames.append(LLMMessagesAppendFrame(messages=[message], run_llm=False))
        for frame in frames:
            await self.push_frame(frame)

    async def say(self, text: str, *, append_to_context: bool = True) -> bool:
        """Play a cached utterance (the greeting, the goodbye) now; False if it is not cached.

        With ``append_to_context`` the text is added to the LLM context as the assistant's,
        after the audio (an interruption drops it with the audio). On False, speak it with a
        ``TTSSpeakFrame`` instead.
        """
        try:  # the call may ask before the StartFrame has reached us
            await asyncio.wait_for(self._started.wait(), SAY_START_TIMEOUT_SECS)
        except TimeoutError:
            return False
        phrase = self._phrases.get(text.strip(), self._rate)
        if phrase is None or not phrase.chunks:
            return False
        async with self._push_lock:
            await self._push_phrase(phrase, append=append_to_context)
        return True


def holding_processor_for_call(
    settings: Settings, phrases: PhraseSource | None, texts: Sequence[str] | None = None
) -> HoldingPhraseProcessor | None:
    """The call's holding-phrase processor, or None without a cache.

    With ``holding_mode=off`` it still exists (no timers), so the call can ``say`` the cached
    greeting and goodbye. ``texts``: the holding phrases of the call's language (default:
    the configured English ones).
    """
    if phrases is None:
        return None
    processor = HoldingPhraseProcessor.from_settings(settings, phrases)
    if texts is not None:
        processor._texts = unique_texts(texts)
    return processor


def session_factory_with_holding(session_cls: type) -> Callable[..., Any]:
    """Until ``bot.telephony.call.CallSession`` builds the processor itself: a drop-in factory for
    ``bot.server.runtime.CallSession`` that adds it (tests and the benchmark patch it in).

    Once ``CallSession`` declares a ``holding`` attribute it is integrated, and this returns
    the class unchanged so nothing is inserted twice.
    """
    if hasattr(session_cls, "holding"):
        return session_cls

    def build(websocket, info, settings, choice, shared, **kwargs: Any) -> Any:
        holding = holding_processor_for_call(settings, getattr(shared, "phrases", None))
        extra = [*(kwargs.pop("extra_processors", None) or []), *([holding] if holding else [])]
        session = session_cls(
            websocket, info, settings, choice, shared, extra_processors=extra, **kwargs
        )
        session.holding = holding
        return session

    return build
