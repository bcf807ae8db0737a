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
"""

from __future__ import annotations

from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    Frame,
    TranscriptionFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.turns.types import ProcessFrameResult, UserTurnSpeculation
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy


class SpeculativeSpeechTimeoutStopStrategy(SpeechTimeoutUserTurnStopStrategy):
    """Pipecat's speech-timeout turn end, with the LLM asked at the VAD stop."""

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
        if not self._text.strip():
            return
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
