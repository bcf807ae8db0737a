"""Silero VAD model for the whole process: one ONNX session, one thread, every call's windows
in one batch.

Pipecat's SileroVADAnalyzer loads its own ONNX session per call (~10 MB and ~40 ms on the
event loop, pipecat-notes §8.4) and runs each 32 ms window on a private thread. The model's
weights are read-only; only the recurrent state and the audio context are per stream, and the
model takes a batch dimension. So each call keeps its small state (``SileroStream``), and the
windows every call is waiting on run together (``SileroBatch``): measured on this machine, a
window costs 109 µs alone and ~45 µs in a batch of 8 or more, with the same confidences.

Windows from different calls rarely arrive together by chance (a run takes ~0.1 ms, and at 50
calls a loud window arrives every ~1.6 ms), so while more than one call is being judged, the
thread waits ``gather_secs`` (4 ms) after the first window of a run for others to join it. A
lone call never waits.

A call asks for all of a buffer's windows that need the model in one request (an Exotel
frame of 100 ms is three windows at 8 kHz): the thread is woken once for them, and the call
once with their answers. They run in order, one per run, since each window's state is the
output of the one before.

It also keeps the model out of the event loop's way. When each call's buffer went to a pool
of two threads, at 50 calls a buffer waited ~16 ms for a free thread, ~7 ms inside it for the
GIL and ~14 ms for the loop to pick the result up again. One thread that drains everything
pending hands back to the loop once per batch.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import onnxruntime
from pipecat.audio.vad.silero import SileroOnnxModel

_lock = threading.Lock()
_session: onnxruntime.InferenceSession | None = None


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


class SileroStream(SileroOnnxModel):
    """One stream's recurrent state and audio context on the shared session (no load).

    It keeps Pipecat's attributes, so Pipecat's ``reset_states`` (the analyzer's periodic
    reset) and a direct unbatched call still work on it.
    """

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self.session = session
        self.sample_rates = [8000, 16000]
        self.reset_states()


@dataclass
class _Request:
    """One stream's next windows, judged in order, with one future for all of them."""

    stream: SileroStream
    windows: list[bytes]  # each 16-bit PCM: 256 samples at 8 kHz, 512 at 16 kHz
    sample_rate: int
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    results: list[float | BaseException] = field(default_factory=list)


# How long a run waits for other calls' windows once more than one call is being judged, and
# how recently a call must have been judged to count.
GATHER_SECS = 0.004
ACTIVE_STREAM_SECS = 0.1


class SileroBatch:
    """Runs every pending window, one per stream per batch, on one thread."""

    def __init__(self, session_factory=shared_session, gather_secs: float = GATHER_SECS) -> None:
        self._session_factory = session_factory
        self.gather_secs = gather_secs
        self._last_judged: dict[int, float] = {}  # id(stream) -> when (thread only)
        self._pending: list[_Request] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0  # model runs
        self.windows = 0  # windows judged in them

    async def confidences(
        self, stream: SileroStream, windows: list[bytes], sample_rate: int
    ) -> list[float | BaseException]:
        """The model's speech confidence for each of this stream's next windows, in order; a
        window whose run failed gets the exception instead. One wake of the caller for all
        of them: a 100 ms frame is three windows at 8 kHz."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self._pending.append(_Request(stream, list(windows), sample_rate, future, loop))
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="silero", daemon=True)
                self._thread.start()
        self._wake.set()
        return await future

    def _serve(self) -> None:
        session = self._session_factory()
        while True:
            self._wake.wait()
            if self.gather_secs and self._other_streams_active():
                time.sleep(self.gather_secs)  # let other calls' windows join this run
            with self._lock:
                pending, self._pending = self._pending, []
                self._wake.clear()
            try:
                judged = self._judge(session, pending)
            except Exception as e:  # never let the thread die: every call's VAD waits on it
                judged = defaultdict(list)
                for r in pending:
                    judged[r.loop].append((r.future, e))
            for loop, results in judged.items():
                try:
                    loop.call_soon_threadsafe(_deliver, results)
                except RuntimeError:
                    pass  # that loop has closed: its calls are gone

    def _other_streams_active(self) -> bool:
        """Whether more than one stream was judged lately (so a wait would gather windows)."""
        now = time.monotonic()
        recent = {k: t for k, t in self._last_judged.items() if now - t < ACTIVE_STREAM_SECS}
        self._last_judged = recent
        return len(recent) > 1

    def _judge(self, session: onnxruntime.InferenceSession, pending: list[_Request]) -> dict:
        """Every pending request's results, grouped by the event loop that waits for them."""
        now = time.monotonic()
        for r in pending:
            self._last_judged[id(r.stream)] = now
        # A window's state is the output of its stream's window before it, so a run takes at
        # most one window per stream, each stream's in the order they came.
        queues: dict[int, deque[tuple[_Request, bytes]]] = {}
        for r in pending:
            queues.setdefault(id(r.stream), deque()).extend((r, w) for w in r.windows)
        while queues:
            batch = [queue.popleft() for queue in queues.values()]
            queues = {k: queue for k, queue in queues.items() if queue}
            for rate in {r.sample_rate for r, _ in batch}:
                same_rate = [(r, w) for r, w in batch if r.sample_rate == rate]
                outcomes = self._run(session, same_rate, rate)
                for (r, _), outcome in zip(same_rate, outcomes, strict=True):
                    r.results.append(outcome)
        results: dict[asyncio.AbstractEventLoop, list] = defaultdict(list)
        for r in pending:
            results[r.loop].append((r.future, r.results))
        return results

    def _run(
        self,
        session: onnxruntime.InferenceSession,
        batch: list[tuple[_Request, bytes]],
        rate: int,
    ) -> list[float | BaseException]:
        """One model run over ``batch``; each stream's state moves on one window."""
        samples, context = (512, 64) if rate == 16000 else (256, 32)
        streams = [r.stream for r, _ in batch]
        try:
            audio = np.frombuffer(b"".join(w for _, w in batch), np.int16)
            audio = audio.reshape(len(batch), samples).astype(np.float32) / 32768.0
            x = np.concatenate([np.stack([_context(s, rate, context) for s in streams]), audio], 1)
            state = np.concatenate([s._state for s in streams], axis=1)
            out, state = session.run(
                None, {"input": x, "state": state, "sr": np.array(rate, dtype="int64")}
            )
        except Exception as e:  # a bad window fails its batch, not the thread
            return [e] * len(batch)
        self.runs += 1
        self.windows += len(batch)
        for i, stream in enumerate(streams):
            stream._state = state[:, i : i + 1].copy()
            stream._context = x[i : i + 1, -context:].copy()
            stream._last_sr, stream._last_batch_size = rate, 1
        return [float(c) for c in out[:, 0]]


def _context(stream: SileroStream, rate: int, size: int) -> np.ndarray:
    """The stream's last ``size`` samples; zeros after a reset or a change of rate."""
    if stream._last_sr != rate or stream._context.shape[1] != size:
        stream.reset_states()
        return np.zeros(size, dtype=np.float32)
    return stream._context[0]


def _deliver(results: list[tuple[asyncio.Future, list | BaseException]]) -> None:
    for future, result in results:
        if future.done():
            continue  # its call was cancelled meanwhile
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


_batch = SileroBatch()


def shared_batch() -> SileroBatch:
    """The process's batch runner, started with the first window."""
    return _batch
