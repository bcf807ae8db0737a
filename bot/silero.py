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

It also keeps the model out of the event loop's way. When each call's buffer went to a pool
of two threads, at 50 calls a buffer waited ~16 ms for a free thread, ~7 ms inside it for the
GIL and ~14 ms for the loop to pick the result up again. One thread that drains everything
pending hands back to the loop once per batch.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
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
class _Window:
    stream: SileroStream
    audio: bytes  # one window of 16-bit PCM: 256 samples at 8 kHz, 512 at 16 kHz
    sample_rate: int
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


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
        self._pending: list[_Window] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0  # model runs
        self.windows = 0  # windows judged in them

    async def confidence(self, stream: SileroStream, audio: bytes, sample_rate: int) -> float:
        """The model's speech confidence for this stream's next window."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self._pending.append(_Window(stream, audio, sample_rate, future, loop))
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
                for w in pending:
                    judged[w.loop].append((w.future, e))
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

    def _judge(self, session: onnxruntime.InferenceSession, pending: list[_Window]) -> dict:
        """Every pending window's result, grouped by the event loop that waits for it."""
        results: dict[asyncio.AbstractEventLoop, list] = defaultdict(list)
        now = time.monotonic()
        for w in pending:
            self._last_judged[id(w.stream)] = now
        while pending:
            batch, pending = _one_per_stream(pending)
            for rate in {w.sample_rate for w in batch}:
                same_rate = [w for w in batch if w.sample_rate == rate]
                outcomes = self._run(session, same_rate, rate)
                for window, outcome in zip(same_rate, outcomes, strict=True):
                    results[window.loop].append((window.future, outcome))
        return results

    def _run(
        self, session: onnxruntime.InferenceSession, batch: list[_Window], rate: int
    ) -> list[float | BaseException]:
        """One model run over ``batch``; each stream's state moves on one window."""
        samples, context = (512, 64) if rate == 16000 else (256, 32)
        try:
            audio = np.frombuffer(b"".join(w.audio for w in batch), np.int16)
            audio = audio.reshape(len(batch), samples).astype(np.float32) / 32768.0
            x = np.concatenate(
                [np.stack([_context(w.stream, rate, context) for w in batch]), audio], 1
            )
            state = np.concatenate([w.stream._state for w in batch], axis=1)
            out, state = session.run(
                None, {"input": x, "state": state, "sr": np.array(rate, dtype="int64")}
            )
        except Exception as e:  # a bad window fails its batch, not the thread
            return [e] * len(batch)
        self.runs += 1
        self.windows += len(batch)
        for i, w in enumerate(batch):
            w.stream._state = state[:, i : i + 1].copy()
            w.stream._context = x[i : i + 1, -context:].copy()
            w.stream._last_sr, w.stream._last_batch_size = rate, 1
        return [float(c) for c in out[:, 0]]


def _context(stream: SileroStream, rate: int, size: int) -> np.ndarray:
    """The stream's last ``size`` samples; zeros after a reset or a change of rate."""
    if stream._last_sr != rate or stream._context.shape[1] != size:
        stream.reset_states()
        return np.zeros(size, dtype=np.float32)
    return stream._context[0]


def _one_per_stream(pending: list[_Window]) -> tuple[list[_Window], list[_Window]]:
    """A stream's windows depend on each other's state: at most one of them per batch."""
    seen: set[int] = set()
    batch, later = [], []
    for w in pending:
        (later if id(w.stream) in seen else batch).append(w)
        seen.add(id(w.stream))
    return batch, later


def _deliver(results: list[tuple[asyncio.Future, float | BaseException]]) -> None:
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
