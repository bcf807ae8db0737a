"""When the caller's turn ends, and asking the LLM before it has.

The turn ends as with Pipecat's speech timeout: the VAD has stopped, the transcript is in, and
``TURN_SPEECH_TIMEOUT_SECS`` passed without more speech (the caller may go on after a
pause). Waiting that window out before asking the LLM put it in front of every answer.

Here the LLM is asked as soon as the VAD has stopped and the transcript is final, on a
provisional context, through Pipecat's speculation support (the mechanism it has for STTs
that predict an end of turn): the LLM service's ``SpeculationGate`` holds the answer until
the turn really ends, and the answer is dropped if the caller speaks again or the words
changed. Turns end exactly when they did; only the LLM's own latency is hidden behind the
window. A dropped guess costs the tokens of a cancelled request.

Silence alone cannot tell a finished question from a pause for thought, so the words are
read too: when the transcript stops on a word a sentence of the call's language hardly ever
ends on ("...the delivery address to", "my order number is, um", "मेरा नंबर है और"), the
turn waits ``TURN_UNFINISHED_TIMEOUT_SECS`` instead, and nothing is guessed meanwhile. The
lists are per language (bot.languages.turns); a language without one always gets the normal
timeout.

The guess can start before the VAD's stop window is over (``TURN_GUESS_AFTER_SECS``, 0.1 s
of silence against ``VAD_STOP_SECS`` 0.2 s): the VAD is then told to report its stop that
early, the STT finalizes and the LLM is asked 0.1 s sooner, and every wait of the strategy
grows by the difference (:func:`guess_windows`), so the turn ends exactly when it did, at
``VAD_STOP_SECS`` + ``TURN_SPEECH_TIMEOUT_SECS`` after the last word. Only a streaming STT
takes it: a segmented one (Whisper) transcribes each VAD segment whole, and cutting them at
0.1 s pauses would cost it words and CPU. A pause of 0.1-0.2 s inside a sentence is now a
VAD stop: the guess it starts is dropped when the caller goes on, as after any pause.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    Frame,
    TranscriptionFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.turns.types import ProcessFrameResult, UserTurnSpeculation
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy

from bot.config import Settings
from bot.languages import sounds_unfinished as sounds_unfinished_in
from bot.languages.turns import ENGLISH_UNFINISHED

# Words a spoken English sentence hardly ever ends on (bot.languages.turns has every list).
UNFINISHED_LAST_WORDS = ENGLISH_UNFINISHED


@dataclass(frozen=True)
class TurnWindows:
    """The VAD's stop window for one call, and what the stop strategy adds to its waits.

    ``vad_stop_secs`` + ``extra_wait`` is always the configured ``VAD_STOP_SECS``: the turn
    ends as long after the last word whether the guess starts early or not."""

    vad_stop_secs: float
    extra_wait: float = 0.0


def guess_windows(s: Settings, *, speculative: bool, streaming_stt: bool) -> TurnWindows:
    """The call's windows: the early stop when the LLM is asked early (``speculative``) and
    the STT streams; otherwise the VAD stops after ``VAD_STOP_SECS`` as configured.

    ``TURN_GUESS_AFTER_SECS`` 0, or at or above ``VAD_STOP_SECS``, switches the early stop off.
    """
    early = s.turn_guess_after_secs
    if not (speculative and streaming_stt) or early <= 0 or early >= s.vad_stop_secs:
        return TurnWindows(vad_stop_secs=s.vad_stop_secs)
    return TurnWindows(vad_stop_secs=early, extra_wait=round(s.vad_stop_secs - early, 6))


def sounds_unfinished(text: str, language: str = "en-IN") -> bool:
    """The words stop mid-sentence in ``language``: a trailing comma, dash or ellipsis, or a
    last word from its list. A question mark always finishes ("Where is it from?")."""
    return sounds_unfinished_in(text, language)


class PatientSpeechTimeoutStopStrategy(SpeechTimeoutUserTurnStopStrategy):
    """Pipecat's speech-timeout turn end, waiting longer when the words stop mid-sentence.

    The wait counts from the VAD stop either way, and is chosen again on each transcript:
    later words that finish the sentence bring the turn end back to the normal timeout.
    """

    def __init__(
        self,
        *,
        unfinished_timeout: float = 0.0,
        language: str = "en-IN",
        extra_wait: float = 0.0,
        **kwargs,
    ) -> None:
        """``unfinished_timeout``: the wait after an unfinished-sounding transcript; at or
        below ``user_speech_timeout`` the words are not read. ``language``: whose words
        (changed by the call's language switcher between turns). ``extra_wait``: the part
        of the configured VAD stop window the VAD no longer waits (:class:`TurnWindows`);
        both timeouts given already include it, and no wait is ever shorter."""
        super().__init__(**kwargs)
        self._unfinished_timeout = unfinished_timeout
        self.language = language
        self.extra_wait = extra_wait
        self._vad_stopped_at = 0.0

    def _wait_for(self, text: str) -> float:
        if self._unfinished_timeout > self._user_speech_timeout and sounds_unfinished_in(
            text, self.language
        ):
            return self._unfinished_timeout
        return self._user_speech_timeout

    @property
    def _waiting_longer(self) -> bool:
        return self._wait_for(self._text) > self._user_speech_timeout

    async def _handle_vad_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame) -> None:
        self._vad_stopped_at = time.monotonic()
        if self.extra_wait:
            # Pipecat warns when stop_secs is not its 0.2 s (its STT p99 figures assume
            # it); the STT wait still counts from the VAD stop, so it covers as long.
            self._stop_secs_warned = True
        await super()._handle_vad_user_stopped_speaking(frame)
        if self._transcript_finalized:  # the words came before the silence
            await self._rewait(self._text)

    async def _handle_transcription(self, frame: TranscriptionFrame) -> None:
        if self._vad_stopped and not self._vad_user_speaking:
            # Before the base class sees it: it ends the turn at once if the normal wait
            # is already over.
            await self._rewait(self._text + frame.text)
        await super()._handle_transcription(frame)

    async def _rewait(self, text: str) -> None:
        """Restart the speech timer for what is left of the wait ``text`` calls for."""
        wait = self._wait_for(text)
        remaining = self._vad_stopped_at + wait - time.monotonic()
        if self._user_speech_wait_done and remaining <= 0:
            return
        if self._user_speech_timeout_task:
            await self.task_manager.cancel_task(self._user_speech_timeout_task)
            self._user_speech_timeout_task = None
        self._user_speech_wait_done = False
        self._user_speech_timeout_task = self.task_manager.create_task(
            self._user_speech_timeout_handler(max(0.0, remaining)),
            f"{self}::_user_speech_timeout_handler",
        )


class SpeculativeSpeechTimeoutStopStrategy(PatientSpeechTimeoutStopStrategy):
    """The patient speech-timeout turn end, with the LLM asked at the VAD stop."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._speculation: UserTurnSpeculation | None = None
        self.speculations = 0  # guesses made
        self.confirmed = 0  # guesses the turn end kept

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, EagerEndOfTurnCancelFrame):
            # Withdrawn elsewhere: by us, or by the LLM service because the guess wanted a
            # tool call (end_call), which it will not run on a guess. The turn end then
            # asks again, for real.
            self._speculation = None
        return await super().process_frame(frame)

    async def _handle_vad_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame) -> None:
        await super()._handle_vad_user_stopped_speaking(frame)
        await self._maybe_speculate()

    async def _handle_transcription(self, frame: TranscriptionFrame) -> None:
        await super()._handle_transcription(frame)
        await self._maybe_speculate()

    async def _maybe_speculate(self) -> None:
        """Guess once per pause: the VAD stopped and the STT has nothing more to send."""
        if self._speculation is not None or self._user_speech_wait_done:
            return  # already guessing, or the turn ends now anyway
        if not self._vad_stopped or self._vad_user_speaking or not self._stt_wait_done:
            return
        if not self._text.strip() or self._waiting_longer:
            return  # nothing to answer yet, or the caller is likely to go on
        self._speculation = UserTurnSpeculation(text=self._text)
        self.speculations += 1
        await self.trigger_user_turn_inference_triggered(speculation=self._speculation)

    async def trigger_user_turn_stopped(self, *, enable_user_speaking_frames: bool | None = None):
        speculation, self._speculation = self._speculation, None
        if speculation is not None and speculation.text == self._text:
            # The answer is already on its way (held); the turn end releases it.
            self.confirmed += 1
            await self.trigger_user_turn_finalized(
                enable_user_speaking_frames=enable_user_speaking_frames,
                confirms_speculation=True,
            )
            return
        if speculation is not None:
            await self.trigger_user_turn_speculation_cancelled()  # more words came
        await super().trigger_user_turn_stopped(
            enable_user_speaking_frames=enable_user_speaking_frames
        )

    async def _discard_pending_end_of_turn(self) -> None:
        # The caller speaks again (or a turn boundary): the guess answers words that are
        # not the whole turn.
        await super()._discard_pending_end_of_turn()
        if self._speculation is not None:
            self._speculation = None
            await self.trigger_user_turn_speculation_cancelled()
