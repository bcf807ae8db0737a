"""Silero VAD for phone calls: Pipecat's speech decisions, cheaper and a little sooner.

The model runs on one session and one thread for the whole process, every call's windows in
one batch (bot/silero.py); the analyzer and its volume checks stay on the event loop.

Three changes to how a window is judged, all about the volume floor (``min_volume``) that
Pipecat applies next to the model's confidence:

* the volume is measured first, and a window below the floor skips the model: it could not
  count as speech whatever the model said, and on a phone line most windows are quiet (the
  caller listening), so this removes most of the VAD's CPU;
* the smoothed volume rises at once. Pipecat smooths both ways, so the volume needs ~6
  windows (~190 ms) to climb over the floor at speech onset, and every barge-in was heard
  that much later. The floor still rejects quiet speech and line noise;
* a window that is itself under the floor is quiet, whatever the last 400 ms were. Pipecat's
  volume is the loudness of the last 400 ms, so a finished sentence kept it over the floor
  for ~65 ms after the last word, and every turn ended that much later than ``stop_secs``.
  Now ``stop_secs`` means what it says, for pauses inside a sentence too (a 0.25 s pause
  after a comma is now a VAD stop); the turn still waits its speech timeout after it.

Measuring the volume is itself a cost: Pipecat computes BS.1770 loudness over the last
400 ms for every 32 ms window. A plain mean square over the same window bounds it from above
(the K-weighting lifts no frequency by more than 4.25 dB), so the loudness is only computed
when the bound reaches the floor.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
from loguru import logger
from pipecat.audio.utils import exp_smoothing, normalize_value
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams, VADState
from pipecat.audio.vad.vad_controller import VADController
from pipecat.audio.volume import VOLUME_WINDOW_SECS

from bot.conversation.silero import SileroBatch, SileroStream, shared_batch, shared_session

# BS.1770's K-weighting gains at most 4.25 dB at any frequency (measured with sines at 8 and
# 16 kHz); with a margin, mean square x this gain bounds the loudness from above.
K_WEIGHTING_MAX_GAIN = 10 ** (4.5 / 10)


def _energy(audio: bytes) -> float:
    """Sum of squared samples (16-bit PCM)."""
    samples = np.frombuffer(audio, np.int16).astype(np.float64)
    return float(np.dot(samples, samples))


def _energies(audio: bytes, count: int) -> list[float]:
    """``_energy`` of each of ``count`` equal windows, in one pass."""
    samples = np.frombuffer(audio, np.int16).astype(np.float64).reshape(count, -1)
    return np.einsum("ij,ij->i", samples, samples).tolist()


class SharedSileroVADAnalyzer(SileroVADAnalyzer):
    """SileroVADAnalyzer without a per-call model load or thread: the model's windows go to
    the process's batch (bot/silero.py), and the rest runs on the event loop."""

    def __init__(
        self,
        *,
        sample_rate: int | None = None,
        params: VADParams | None = None,
        batch: SileroBatch | None = None,
    ):
        # Skip SileroVADAnalyzer.__init__ (it loads a session); set what it would set.
        VADAnalyzer.__init__(self, sample_rate=sample_rate, params=params)
        self._executor.shutdown(wait=False)  # Pipecat's per-analyzer thread, never used here
        self._batch = batch or shared_batch()
        self._model = SileroStream(shared_session())
        self._windows_since_reset = 0
        self._low_confidence_windows = 0
        self._recent_energy: deque[float] = deque()
        self.model_windows = 0  # windows the model judged
        self.quiet_windows = 0  # windows under the volume floor, model skipped

    async def analyze_audio(self, buffer: bytes) -> VADState:
        """Pipecat's ``VADAnalyzer._run_analyzer`` (1.14) step for step, except that the
        model's confidences come from the batch, every loud window of the buffer at once."""
        self._vad_buffer += buffer
        size = self._vad_frames_num_bytes
        count = len(self._vad_buffer) // size
        if count == 0:
            return self._vad_state
        audio = self._vad_buffer[: count * size]
        self._vad_buffer = self._vad_buffer[count * size :]
        windows = [audio[i : i + size] for i in range(0, len(audio), size)]
        # The volumes first (the model's answers do not change them), so windows under the
        # floor never reach the model and the rest go to it in one request.
        volumes = []
        for window, energy in zip(windows, _energies(audio, count), strict=True):
            self._prev_volume = self._measure_volume(window, energy)
            volumes.append(self._prev_volume)
        loud = [i for i, volume in enumerate(volumes) if volume >= self._params.min_volume]
        judged = await self._judge(windows, loud)
        for i, volume in enumerate(volumes):
            confidence, reset = self._window_confidence(judged.get(i))
            if reset and (later := [j for j in loud if j > i]):
                # Pipecat resets the model between two windows; the later ones were judged
                # on the state from before the reset (rare: it needs clear non-speech).
                judged.update(await self._judge(windows, later))
            self._step(confidence >= self._params.confidence and volume >= self._params.min_volume)
        self._settle()
        return self._vad_state

    async def _judge(self, windows: list[bytes], which: list[int]) -> dict:
        """The model's answers for ``windows[i]``, i in ``which``, in order."""
        if not which:
            return {}
        try:
            answers = await self._batch.confidences(
                self._model, [windows[i] for i in which], self.sample_rate
            )
        except Exception as e:  # the whole run failed: each window failed
            answers = [e] * len(which)
        return dict(zip(which, answers, strict=True))

    def _window_confidence(self, answer: float | BaseException | None) -> tuple[float, bool]:
        """A window's confidence (``answer`` None: under the floor, not judged), and whether
        Pipecat's reset schedule reset the model's state after it."""
        if answer is None:
            self.quiet_windows += 1
            return 0.0, self._count_towards_reset(0.0)  # keep the schedule counting
        self.model_windows += 1
        if isinstance(answer, BaseException):  # as Pipecat: a failed window is no speech
            logger.error(f"Error analyzing audio with Silero VAD: {answer}")
            return 0.0, False
        return answer, self._count_towards_reset(answer)

    def _count_towards_reset(self, confidence: float) -> bool:
        self._maybe_reset_model(confidence)
        return self._windows_since_reset == 0

    def _step(self, speaking: bool) -> None:
        """One window's move through Pipecat's states."""
        match self._vad_state, speaking:
            case VADState.QUIET, True:
                self._vad_state = VADState.STARTING
                self._vad_starting_count = 1
            case VADState.STARTING, True:
                self._vad_starting_count += 1
            case VADState.STOPPING, True:
                self._vad_state = VADState.SPEAKING
                self._vad_stopping_count = 0
            case VADState.STARTING, False:
                self._vad_state = VADState.QUIET
                self._vad_starting_count = 0
            case VADState.SPEAKING, False:
                self._vad_state = VADState.STOPPING
                self._vad_stopping_count = 1
            case VADState.STOPPING, False:
                self._vad_stopping_count += 1

    def _settle(self) -> None:
        """After a buffer: enough speaking windows start speech, enough quiet ones end it."""
        if (
            self._vad_state == VADState.STARTING
            and self._vad_starting_count >= self._vad_start_frames
        ):
            self._vad_state = VADState.SPEAKING
            self._vad_starting_count = 0
        if (
            self._vad_state == VADState.STOPPING
            and self._vad_stopping_count >= self._vad_stop_frames
        ):
            self._vad_state = VADState.QUIET
            self._vad_stopping_count = 0

    def set_sample_rate(self, sample_rate: int) -> None:
        super().set_sample_rate(sample_rate)
        windows = math.ceil(VOLUME_WINDOW_SECS * self.sample_rate / self.num_frames_required())
        self._recent_energy = deque(maxlen=windows)

    def _measure_volume(self, audio: bytes, energy: float) -> float:
        """Pipecat's smoothed volume, except that it rises at once and never exceeds this
        window's own level. ``energy`` is the window's (``_energy``)."""
        self._volume_tracker.update(audio, self.sample_rate)
        volume = self._loudness_upper_bound(energy)
        if volume >= self._params.min_volume:
            volume = self._volume_tracker.volume  # the real loudness, only when it matters
        if volume < self._prev_volume:
            volume = exp_smoothing(volume, self._prev_volume, self._smoothing_factor)
        # Fast release: this window's own level (a bound, so never below its loudness).
        return min(volume, self._normalized_bound(energy, len(audio) // 2))

    def _loudness_upper_bound(self, energy: float) -> float:
        """Normalized like Pipecat's volume; never below the loudness of the last 400 ms.

        ``energy`` is the newest window's; the windows kept span at least the tracker's
        400 ms, so their energy is not less than the tracker's, and dividing by the
        tracker's length keeps the result a bound."""
        self._recent_energy.append(energy)
        return self._normalized_bound(sum(self._recent_energy))

    def _normalized_bound(self, energy: float, samples: float | None = None) -> float:
        """The level of ``samples`` samples (default: the tracker's 400 ms) of this energy."""
        samples = samples or VOLUME_WINDOW_SECS * self.sample_rate
        mean_square = energy / (samples * 32768.0**2)
        if mean_square <= 0.0:
            return 0.0
        level = -0.691 + 10 * math.log10(K_WEIGHTING_MAX_GAIN * mean_square)
        return normalize_value(level, -110, -10)

    async def cleanup(self) -> None:
        windows = self.model_windows + self.quiet_windows
        logger.debug(
            f"VAD: the model judged {self.model_windows} of {windows} windows; "
            f"{self.quiet_windows} were under the volume floor"
        )
        await super().cleanup()


class OnsetReportingVADController(VADController):
    """Pipecat's VAD controller, plus two events for the first sound of speech.

    Pipecat reports speech once ``start_secs`` of it have been heard. ``on_speech_onset``
    fires at the first window that sounds like speech (the analyzer's STARTING), and
    ``on_speech_onset_dismissed`` when the analyzer falls back to QUIET before that (a cough,
    a click on the line). The call pauses the bot on the first and resumes it on the second.
    """

    _heard: VADState

    async def _handle_vad(self, audio: bytes, vad_state: VADState) -> VADState:
        new_state = await self._vad_analyzer.analyze_audio(audio)
        before, self._heard = self._heard, new_state
        if before == VADState.QUIET and new_state in (VADState.STARTING, VADState.SPEAKING):
            await self._call_event_handler("on_speech_onset")
        elif before == VADState.STARTING and new_state == VADState.QUIET:
            await self._call_event_handler("on_speech_onset_dismissed")
        # Pipecat 1.14's VADController._handle_vad from here on.
        if new_state != vad_state and new_state not in (VADState.STARTING, VADState.STOPPING):
            if new_state == VADState.SPEAKING:
                await self._call_event_handler("on_speech_started")
            elif new_state == VADState.QUIET:
                await self._call_event_handler("on_speech_stopped")
            vad_state = new_state
        return vad_state


def report_onsets(controller: VADController) -> OnsetReportingVADController:
    """Give a controller that Pipecat built (with its handlers wired) the onset events."""
    controller.__class__ = OnsetReportingVADController
    assert isinstance(controller, OnsetReportingVADController)
    controller._heard = VADState.QUIET
    controller._register_event_handler("on_speech_onset", sync=True)
    controller._register_event_handler("on_speech_onset_dismissed", sync=True)
    return controller
