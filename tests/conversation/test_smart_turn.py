"""The shared smart-turn runner: features, batching, deadlines, failures; and the real model
on a Piper sentence vs its first half (marked ``models``)."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from bot.conversation.smart_turn import (
    MAX_TURN_SECS,
    SmartTurnBatch,
    check_audio,
    features,
    verdict_within,
)

RATE = 8000


def tone(secs: float, rate: int = RATE, freq: float = 220.0) -> bytes:
    t = np.arange(round(secs * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * 8000).astype(np.int16).tobytes()


class StubSession:
    """Stands in for the ONNX session: answers each row's probability from its first
    feature, records the batch sizes, and can be made slow or failing."""

    def __init__(self, probability: float = 0.8, delay: float = 0.0, fail: bool = False):
        self.probability = probability
        self.delay = delay
        self.fail = fail
        self.batches: list[int] = []
        self.release = threading.Event()
        self.release.set()

    def run(self, _outputs, inputs):
        x = inputs["input_features"]
        assert x.shape[1:] == (80, 800) and x.dtype == np.float32
        self.release.wait(5)
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("onnx broke")
        self.batches.append(len(x))
        return [np.full((len(x), 1), self.probability, np.float32)]


def batch_with(session: StubSession, **kwargs) -> SmartTurnBatch:
    return SmartTurnBatch(session_factory=lambda: session, **kwargs)


def test_features_are_the_models_shape_at_both_rates():
    for rate in (8000, 16000, 24000):
        x = features(tone(1.0, rate), rate)
        assert x.shape == (80, 800) and x.dtype == np.float32


def test_short_turns_are_padded_in_front_and_long_ones_keep_their_end():
    short = features(tone(1.0), RATE)
    # 1 s of sound at the end of 8 s: the first 7 s are padding, all one value.
    assert np.ptp(short[:, :650]) == 0 and np.ptp(short[:, -90:]) > 0
    silence_then_tone = np.concatenate(
        [np.zeros(RATE * 5, np.int16), np.frombuffer(tone(MAX_TURN_SECS), np.int16)]
    ).tobytes()
    # Only the last 8 s count: the leading silence is gone, so it matches 8 s of tone alone.
    # (The resampler's lead-in differs in the first milliseconds only.)
    kept = features(silence_then_tone, RATE)
    assert np.abs(kept - features(tone(MAX_TURN_SECS), RATE)).max() < 0.01


def test_8k_audio_is_upsampled_like_16k_audio():
    """The same sound at 8 and 16 kHz gives nearly the same features (the band above 4 kHz
    is empty either way for a 220 Hz tone; only the onset's click differs)."""
    diff = np.abs(features(tone(2.0, 8000), 8000) - features(tone(2.0, 16000), 16000))
    assert np.percentile(diff, 99) < 0.01 and diff.mean() < 0.001


def test_bad_audio_is_refused_naming_the_problem():
    with pytest.raises(ValueError, match="8000, 16000 or 24000"):
        check_audio(b"\0\0", 44100)
    with pytest.raises(ValueError, match="even byte count"):
        check_audio(b"\0\0\0", 8000)


async def test_a_verdict_carries_the_probability_and_threshold():
    session = StubSession(probability=0.8)
    v = await batch_with(session).verdict(tone(1.0), RATE)
    assert v.complete and v.probability == pytest.approx(0.8) and v.elapsed_ms >= 0
    strict = await batch_with(StubSession(probability=0.8), threshold=0.9).verdict(tone(1), RATE)
    assert not strict.complete


async def test_pending_turns_run_one_by_one_by_default():
    session = StubSession()
    session.release.clear()  # hold the first run so the others pile up behind it
    runner = batch_with(session)
    tasks = [asyncio.create_task(runner.verdict(tone(0.5), RATE)) for _ in range(5)]
    await asyncio.sleep(0.05)
    session.release.set()
    assert len(await asyncio.gather(*tasks)) == 5
    assert session.batches == [1, 1, 1, 1, 1] and runner.judged == 5


async def test_pending_turns_share_a_run_up_to_max_batch():
    session = StubSession()
    session.release.clear()
    runner = batch_with(session, max_batch=3)
    first = asyncio.create_task(runner.verdict(tone(0.5), RATE))
    await asyncio.sleep(0.05)  # the thread has taken the first and waits in run()
    rest = [asyncio.create_task(runner.verdict(tone(0.5), RATE)) for _ in range(4)]
    await asyncio.sleep(0.05)
    session.release.set()
    await asyncio.gather(first, *rest)
    assert session.batches == [1, 3, 1] and runner.runs == 3


async def test_a_request_past_its_deadline_is_not_run():
    session = StubSession()
    session.release.clear()
    runner = batch_with(session)
    first = asyncio.create_task(runner.verdict(tone(0.5), RATE))
    await asyncio.sleep(0.05)
    late = asyncio.create_task(verdict_within(tone(0.5), RATE, 0.05, batch=runner))
    await asyncio.sleep(0.15)  # its deadline passes while the first run holds the thread
    session.release.set()
    await first
    assert await late is None
    await asyncio.sleep(0.05)
    assert session.batches == [1] and runner.expired == 1


async def test_a_slow_verdict_counts_as_none():
    runner = batch_with(StubSession(delay=0.3))
    assert await verdict_within(tone(0.5), RATE, 0.05, batch=runner) is None


async def test_a_verdict_in_time_is_returned():
    runner = batch_with(StubSession(probability=0.2))
    v = await verdict_within(tone(0.5), RATE, 2.0, batch=runner)
    assert v is not None and not v.complete


async def test_a_failed_run_is_no_verdict_and_the_thread_lives_on():
    session = StubSession(fail=True)
    runner = batch_with(session)
    assert await verdict_within(tone(0.5), RATE, 2.0, batch=runner) is None
    session.fail = False
    assert (await runner.verdict(tone(0.5), RATE)).complete


async def test_a_model_that_does_not_load_fails_every_request():
    def broken():
        raise OSError("no such model file")

    runner = SmartTurnBatch(session_factory=broken)
    with pytest.raises(OSError, match="no such model"):
        await runner.verdict(tone(0.5), RATE)
    assert await verdict_within(tone(0.5), RATE, 2.0, batch=runner) is None


async def test_bad_audio_raises_before_anything_is_queued():
    session = StubSession()
    with pytest.raises(ValueError):
        await verdict_within(tone(0.5), 44100, 1.0, batch=batch_with(session))
    assert session.batches == []


@pytest.mark.models
async def test_the_real_model_tells_a_sentence_from_its_first_half():
    """Measured (smart-turn-research.md): on the Piper voice at 8 kHz, "Can I get a refund
    if the product is damaged?" scores 0.70 and its first half, cut from the same utterance
    at the word gap after "if", 0.10. Many other pairs do not separate; this one does."""
    from bot.conversation.smart_turn import SmartTurnBatch as RealBatch
    from tests.conversation.smart_turn_measure import Voices, at_vad_stop, cut_at, trim

    voices = Voices()
    full = trim(voices.english("Can I get a refund if the product is damaged?"))
    head = trim(full[: cut_at(full, voices.english("Can I get a refund if"))])
    assert 0.3 * len(full) < len(head) < 0.7 * len(full)
    runner = RealBatch()
    whole = await runner.verdict(at_vad_stop(full, "clean", 0), RATE)
    half = await runner.verdict(at_vad_stop(head, "clean", 0), RATE)
    assert whole.complete and whole.probability > 0.6
    assert not half.complete and half.probability < 0.3


def test_numpy_blas_is_left_with_one_thread_when_the_model_loads():
    """OpenBLAS's idle workers spin ~0.1 s after each of the features' matrix products: ten
    times a verdict's own CPU. The session's load sets numpy's BLAS to one thread."""
    import ctypes
    import re

    from bot.conversation.smart_turn import single_threaded_blas

    assert single_threaded_blas()
    with open("/proc/self/maps") as maps:
        path = re.findall(r"(/\S*openblas\S*\.so\S*)", maps.read())[0]
    lib = ctypes.CDLL(path)
    getter = next(
        getattr(lib, n)
        for n in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads")
        if hasattr(lib, n)
    )
    assert getter() == 1
