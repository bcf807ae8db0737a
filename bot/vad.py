"""Silero VAD with one ONNX session and one small thread pool for the whole process.

Pipecat's SileroVADAnalyzer loads its own ONNX session per call (~10 MB and ~40 ms on the
event loop, pipecat-notes §8.4) and starts a private thread per call. The model's weights are
read-only and onnxruntime's ``run`` is thread-safe; only the recurrent state and context are
per stream. So each call gets its own small state object on a shared session, and its windows
run on a shared pool (one analyzer's windows are awaited one by one, so they never overlap).

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
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import numpy as np
import onnxruntime
from loguru import logger
from pipecat.audio.utils import exp_smoothing, normalize_value
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams, VADState
from pipecat.audio.volume import VOLUME_WINDOW_SECS

# BS.1770's K-weighting gains at most 4.25 dB at any frequency (measured with sines at 8 and
# 16 kHz); with a margin, mean square x this gain bounds the loudness from above.
K_WEIGHTING_MAX_GAIN = 10 ** (4.5 / 10)


class _ProcessPool(ThreadPoolExecutor):
    """A pool that outlives every analyzer: Pipecat shuts an analyzer's executor down when
    its call ends, which must not stop the other calls' VAD."""

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


_lock = threading.Lock()
_session: onnxruntime.InferenceSession | None = None
# Two cores: more threads than that only queue inside onnxruntime.
_executor = _ProcessPool(max_workers=2, thread_name_prefix="silero")


def shared_session() -> onnxruntime.InferenceSession:
    """The process's Silero session, loaded on first use (call it at start-up)."""
    global _session
    with _lock:
        if _session is None:
            opts = onnxruntime.SessionOptions()
            opts.inter_op_num_threads = 1
            opts.intra_op_num_threads = 1
            path = resources.files("pipecat.audio.vad.data").joinpath("silero_vad.onnx")
            _session = onnxruntime.InferenceSession(
                str(path), providers=["CPUExecutionProvider"], sess_options=opts
            )
        return _session


class _StreamState(SileroOnnxModel):
    """Silero's per-stream state and call logic on the shared session (no load)."""

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self.session = session
        self.sample_rates = [8000, 16000]
        self.reset_states()


def _energy(audio: bytes) -> float:
    """Sum of squared samples (16-bit PCM)."""
    samples = np.frombuffer(audio, np.int16).astype(np.float64)
    return float(np.dot(samples, samples))


class SharedSileroVADAnalyzer(SileroVADAnalyzer):
    """SileroVADAnalyzer without a per-call model load or thread."""

    def __init__(self, *, sample_rate: int | None = None, params: VADParams | None = None):
        # Skip SileroVADAnalyzer.__init__ (it loads a session); set what it would set.
        VADAnalyzer.__init__(self, sample_rate=sample_rate, params=params)
        self._executor.shutdown(wait=False)
        self._executor = _executor
        self._model = _StreamState(shared_session())
        self._windows_since_reset = 0
        self._low_confidence_windows = 0
        self._window_volume = 0.0
        self._recent_energy: deque[float] = deque()
        self.model_windows = 0  # windows the model judged
        self.quiet_windows = 0  # windows under the volume floor, model skipped
        self.buffers_on_loop = 0  # buffers judged quiet without leaving the event loop

    async def analyze_audio(self, buffer: bytes) -> VADState:
        if self._surely_quiet(buffer):
            # No window in it can reach the floor, so the model will not run: the state
            # machine alone costs less on the loop than the hop to a thread and back.
            self.buffers_on_loop += 1
            return self._run_analyzer(buffer)
        return await super().analyze_audio(buffer)

    def _surely_quiet(self, buffer: bytes) -> bool:
        """Every window this buffer completes is itself under the volume floor, and a
        window's volume never exceeds its own level (``_measure_volume``)."""
        window = self._vad_frames_num_bytes
        audio = self._vad_buffer + buffer
        complete = len(audio) // window * window
        if not complete:
            return True  # nothing to judge yet: the analyzer only keeps the audio
        samples = np.frombuffer(audio[:complete], np.int16).astype(np.float64)
        loudest = float((samples.reshape(-1, window // 2) ** 2).sum(axis=1).max())
        return self._normalized_bound(loudest, window // 2) < self._params.min_volume

    def voice_confidence(self, buffer: bytes) -> float:
        # Pipecat's loop asks for the confidence, then the volume; measure the volume here
        # so a window under the floor never reaches the model.
        self._window_volume = self._measure_volume(buffer)
        if self._window_volume < self._params.min_volume:
            self.quiet_windows += 1
            self._maybe_reset_model(0.0)  # keep Pipecat's reset schedule counting
            return 0.0
        self.model_windows += 1
        return super().voice_confidence(buffer)

    def _get_smoothed_volume(self, audio: bytes) -> float:
        return self._window_volume  # measured in voice_confidence, for the same window

    def set_sample_rate(self, sample_rate: int) -> None:
        super().set_sample_rate(sample_rate)
        windows = math.ceil(VOLUME_WINDOW_SECS * self.sample_rate / self.num_frames_required())
        self._recent_energy = deque(maxlen=windows)

    def _measure_volume(self, audio: bytes) -> float:
        """Pipecat's smoothed volume, except that it rises at once and never exceeds this
        window's own level."""
        self._volume_tracker.update(audio, self.sample_rate)
        energy = _energy(audio)
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
