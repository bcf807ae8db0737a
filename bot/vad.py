"""Silero VAD with one ONNX session and one small thread pool for the whole process.

Pipecat's SileroVADAnalyzer loads its own ONNX session per call (~10 MB and ~40 ms on the
event loop, pipecat-notes §8.4) and starts a private thread per call. The model's weights are
read-only and onnxruntime's ``run`` is thread-safe; only the recurrent state and context are
per stream. So each call gets its own small state object on a shared session, and its windows
run on a shared pool (one analyzer's windows are awaited one by one, so they never overlap).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import onnxruntime
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams


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
