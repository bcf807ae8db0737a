"""Smart-turn v3 for the whole process: one ONNX session on one thread, shared by every call.

Pipecat's ``LocalSmartTurnAnalyzerV3`` loads its own session per call (~30 MB, pipecat-notes
§4.3) and runs it on a private thread per analyzer. The weights are read-only and a verdict
has no state (each is a fresh look at the turn's last 8 s), so here one session serves every
call: a call hands its turn's audio to the process's :class:`SmartTurnBatch` and awaits the
:class:`~bot.conversation.turn_decision.TurnVerdict`.

The model's input is ``(batch, 80, 800)`` (80 log-mel bins x 8 s at 10 ms) with a free batch
dimension, so the requests pending when the thread comes round can run in one
``session.run`` (up to ``max_batch``). On this CPU a batch costs as much per turn as single
runs, so ``max_batch`` is 1: the thread takes pending turns one by one, oldest first, and
each call's answer comes as soon as its own run is done. Nothing waits to gather a batch; a
lone call never waits. The features (soxr upsampling 8 -> 16 kHz and Pipecat's own numpy
Whisper log-mel code, ~2 ms) are computed on the same thread, off the event loop.

A request carries a deadline: the stop strategy only uses a verdict that comes before the
speech timeout would have ended the turn anyway (:func:`verdict_within`), so a request
whose deadline has passed when its run starts is dropped unrun. Under overload the queue
sheds the work nobody waits for instead of growing.

Numbers on this machine (2 shared vCPU) are in /work/notes/smart-turn-research.md.
"""

from __future__ import annotations

import asyncio
import ctypes
import re
import threading
import time
from dataclasses import dataclass
from importlib import resources

import numpy as np
import onnxruntime
import soxr
from loguru import logger
from pipecat.audio.turn.smart_turn._whisper_features import compute_whisper_log_mel_features

from bot.conversation.turn_decision import TurnVerdict

__all__ = [
    "MAX_TURN_SECS",
    "MODEL_SAMPLE_RATE",
    "SmartTurnBatch",
    "TurnVerdict",
    "TurnVerdictExpired",
    "check_audio",
    "features",
    "shared_batch",
    "shared_session",
    "verdict",
    "verdict_within",
]

MODEL_FILE = "smart-turn-v3.2-cpu.onnx"
MODEL_PACKAGE = "pipecat.audio.turn.smart_turn.data"
MODEL_SAMPLE_RATE = 16000
MAX_TURN_SECS = 8  # the model looks at the last 8 s of the turn, zero-padded in front
SAMPLE_RATES = (8000, 16000, 24000)  # the call rates the bot takes; all resampled to 16 kHz
COMPLETE_THRESHOLD = 0.5  # Pipecat's: probability > 0.5 is "complete"
# Requests per session.run. Measured on this CPU (one intra-op thread), a turn costs ~26 ms
# of CPU alone and 26-29 ms in batches of 2-8 (52 ms at 50): batching saves nothing, and a
# batch answers all its turns only when the last is done. So by default the thread takes the
# pending turns one at a time, oldest first; a larger cap is there for CPUs where a batch
# does pay (measure first: tests/conversation/smart_turn_measure.py).
MAX_BATCH = 1

_lock = threading.Lock()
_session: onnxruntime.InferenceSession | None = None


def shared_session() -> onnxruntime.InferenceSession:
    """The process's smart-turn session, loaded from the Pipecat wheel on first use (call it
    at start-up: the load takes ~0.3 s). One intra-op thread: the calls' event loops and the
    VAD need the other core more than one verdict needs two."""
    global _session
    with _lock:
        if _session is None:
            opts = onnxruntime.SessionOptions()
            opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
            opts.inter_op_num_threads = 1
            opts.intra_op_num_threads = 1
            opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
            path = resources.files(MODEL_PACKAGE).joinpath(MODEL_FILE)
            _session = onnxruntime.InferenceSession(
                str(path), providers=["CPUExecutionProvider"], sess_options=opts
            )
            logger.debug(f"Loaded smart-turn from {path}")
            single_threaded_blas()
        return _session


# numpy's OpenBLAS, whichever build the wheel bundles (scipy-openblas64 in numpy 2.x).
_BLAS_SET_THREADS = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)


def single_threaded_blas() -> bool:
    """Run numpy's BLAS on the calling thread only, process-wide; True if it was set.

    The features' mel projection is one small matrix product, and OpenBLAS's worker threads
    spin for ~0.1 s after each one: measured here, 0.11 s of CPU per verdict with its two
    threads against 0.006 s with one, ten times the model's own run. A voice bot's other
    numpy work is as small, and its cores belong to the calls, so one BLAS thread is no loss
    anywhere. Done through the library's own setter (what threadpoolctl does); a numpy
    without OpenBLAS is left as it is.
    """
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted(set(re.findall(r"(/\S*openblas\S*\.so\S*)", maps.read())))
    except OSError:
        return False
    done = False
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _BLAS_SET_THREADS:
            if hasattr(lib, name):
                getattr(lib, name)(1)
                done = True
                break
    logger.debug(f"numpy BLAS threads: {'1' if done else 'left as they were'}")
    return done


class TurnVerdictExpired(TimeoutError):
    """The request's deadline passed before the model got to it; it was not run."""


def check_audio(audio_int16: bytes, sample_rate: int) -> None:
    """Raise ValueError, naming the problem, for audio the model cannot take."""
    if sample_rate not in SAMPLE_RATES:
        raise ValueError(f"smart-turn takes 8000, 16000 or 24000 Hz audio, not {sample_rate}")
    if len(audio_int16) % 2:
        raise ValueError(f"16-bit PCM has an even byte count, not {len(audio_int16)}")


def features(audio_int16: bytes, sample_rate: int) -> np.ndarray:
    """The model's input for one turn: ``(80, 800)`` float32 log-mel of its last 8 s.

    As ``LocalSmartTurnAnalyzerV3._predict_endpoint``: int16 -> float in [-1, 1), soxr HQ
    to 16 kHz (from 8 or 24 kHz), the last 8 s (zeros in front when shorter), Whisper
    features normalized. Only the last 8 s are resampled, plus a little lead so the filter
    has settled.
    """
    check_audio(audio_int16, sample_rate)
    samples = np.frombuffer(audio_int16, np.int16)
    lead = sample_rate // 10  # 0.1 s, dropped after resampling
    samples = samples[-(MAX_TURN_SECS * sample_rate + lead) :]
    audio = samples.astype(np.float32) / 32768.0
    if sample_rate != MODEL_SAMPLE_RATE:
        audio = soxr.resample(audio, sample_rate, MODEL_SAMPLE_RATE, quality="HQ")
    keep = MAX_TURN_SECS * MODEL_SAMPLE_RATE
    audio = audio[-keep:]
    if len(audio) < keep:
        audio = np.pad(audio, (keep - len(audio), 0))
    return compute_whisper_log_mel_features(audio, do_normalize=True)


@dataclass
class _Request:
    audio: bytes
    sample_rate: int
    deadline: float | None  # time.monotonic(); None: no deadline
    asked_at: float
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class SmartTurnBatch:
    """Runs every pending turn, up to ``max_batch`` per run, on one thread."""

    def __init__(
        self,
        session_factory=shared_session,
        max_batch: int = MAX_BATCH,
        threshold: float = COMPLETE_THRESHOLD,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self._session_factory = session_factory
        self.max_batch = max_batch
        self.threshold = threshold
        self._pending: list[_Request] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0  # session.run calls
        self.judged = 0  # turns judged in them
        self.expired = 0  # requests dropped unrun: their deadline had passed
        self.cpu_secs = 0.0  # the thread's CPU time in features and runs (for metrics)

    async def verdict(
        self, audio_int16: bytes, sample_rate: int, *, deadline: float | None = None
    ) -> TurnVerdict:
        """The model's verdict on a turn's audio (16-bit mono PCM at 8, 16 or 24 kHz; only the
        last 8 s count). ``deadline`` (``time.monotonic()``): if the thread only gets to
        the request later, it raises :class:`TurnVerdictExpired` without running it. A bad
        rate raises ValueError here, before anything is queued."""
        check_audio(audio_int16, sample_rate)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        request = _Request(
            bytes(audio_int16), sample_rate, deadline, time.monotonic(), future, loop
        )
        with self._lock:
            self._pending.append(request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="smart-turn", daemon=True)
                self._thread.start()
        self._wake.set()
        return await future

    def _serve(self) -> None:
        try:
            session = self._session_factory()
        except Exception as e:  # no model: every request so far and later fails with it
            logger.error(f"smart-turn: the model did not load: {e}")
            session = e
        while True:
            self._wake.wait()
            with self._lock:
                batch, self._pending = (
                    self._pending[: self.max_batch],
                    self._pending[self.max_batch :],
                )
                if not self._pending:
                    self._wake.clear()
            if isinstance(session, Exception):
                outcomes: list = [session] * len(batch)
            else:
                started = time.thread_time()
                batch, outcomes = self._judge(session, batch)
                self.cpu_secs += time.thread_time() - started
            for request, outcome in zip(batch, outcomes, strict=True):
                try:
                    request.loop.call_soon_threadsafe(_deliver, request, outcome)
                except RuntimeError:
                    pass  # that loop has closed: its call is gone

    def _judge(
        self, session: onnxruntime.InferenceSession, batch: list[_Request]
    ) -> tuple[list[_Request], list]:
        """Run the batch; returns each request with its verdict or exception, in order."""
        now = time.monotonic()
        outcomes: list = []
        inputs: list[np.ndarray] = []
        for r in batch:
            if r.deadline is not None and now > r.deadline:
                self.expired += 1
                outcomes.append(TurnVerdictExpired("smart-turn: deadline passed before the run"))
                continue
            try:
                inputs.append(features(r.audio, r.sample_rate))
                outcomes.append(None)  # filled in after the run
            except Exception as e:  # a bad request fails alone
                outcomes.append(e)
        if inputs:
            try:
                (logits,) = session.run(None, {"input_features": np.stack(inputs)})
                probabilities = iter(float(p) for p in np.asarray(logits)[:, 0])
                self.runs += 1
                self.judged += len(inputs)
            except Exception as e:  # the run failed: each of its requests failed
                probabilities = iter([e] * len(inputs))
            done = time.monotonic()
            for i, r in enumerate(batch):
                if outcomes[i] is None:
                    outcomes[i] = self._verdict(next(probabilities), r.asked_at, done)
        return batch, outcomes

    def _verdict(
        self, probability: float | Exception, asked_at: float, done: float
    ) -> TurnVerdict | Exception:
        if isinstance(probability, Exception):
            return probability
        # The model's output is already a sigmoid probability (Pipecat reads it so).
        return TurnVerdict(
            complete=probability > self.threshold,
            probability=probability,
            elapsed_ms=(done - asked_at) * 1000.0,
        )


def _deliver(request: _Request, outcome: TurnVerdict | BaseException) -> None:
    if request.future.done():
        return  # its caller stopped waiting (wait_for timed out, call ended)
    if isinstance(outcome, BaseException):
        request.future.set_exception(outcome)
    else:
        request.future.set_result(outcome)


_batch = SmartTurnBatch()


def shared_batch() -> SmartTurnBatch:
    """The process's batch runner, started with the first request."""
    return _batch


async def verdict(audio_int16: bytes, sample_rate: int) -> TurnVerdict:
    """The shared model's verdict on a turn's last <= 8 s of caller audio (8, 16 or 24 kHz)."""
    return await _batch.verdict(audio_int16, sample_rate)


async def verdict_within(
    audio_int16: bytes,
    sample_rate: int,
    timeout: float,
    batch: SmartTurnBatch | None = None,
) -> TurnVerdict | None:
    """The verdict if it comes within ``timeout`` seconds, else None (as if the model were
    off): a late verdict is no verdict, since the speech timeout has ended the turn by then.
    A failed run is logged and is None too, so the turn falls back to today's rule; audio
    the model cannot take raises ValueError (a caller's bug, not a slow model).
    """
    check_audio(audio_int16, sample_rate)
    batch = batch or _batch
    deadline = time.monotonic() + timeout
    try:
        return await asyncio.wait_for(
            batch.verdict(audio_int16, sample_rate, deadline=deadline), timeout
        )
    except TimeoutError:  # wait_for's, or TurnVerdictExpired
        return None
    except Exception as e:
        logger.warning(f"smart-turn: no verdict ({type(e).__name__}: {e}); using the timeout")
        return None
