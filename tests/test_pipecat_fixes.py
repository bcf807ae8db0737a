"""The Pipecat speed fixes compute what Pipecat computes, only less often."""

from __future__ import annotations

import asyncio
import sys

import pytest
from pipecat.utils.context import text_segment_map
from pipecat.utils.context.text_segment_map import TextSegment

from bot.providers import pipecat_fixes

SEGMENTS = [
    ("Hello there, how are you?", "Hello there, how are you?"),
    ("$42.50", "forty two dollars"),
    ("café au lait", "cafe au lait"),
    ("Siobhan", "<phoneme ph='x'>Siobhan</phoneme>"),
    ("two  words", "two words"),
    ("dropped", ""),
    ("", ""),
]


@pytest.mark.parametrize(("original", "tts"), SEGMENTS)
def test_is_transformed_answers_as_pipecat_does(original: str, tts: str) -> None:
    pipecat_fixes.apply()
    segment = TextSegment(original, tts, 0, len(original))
    pipecats_own = TextSegment.__dict__["is_transformed"].func
    assert segment.is_transformed == pipecats_own(segment)


def test_is_transformed_is_worked_out_once_per_segment(monkeypatch) -> None:
    pipecat_fixes.apply()
    pipecat_fixes.apply()  # idempotent
    folds: list[str] = []
    fold = text_segment_map.alnum_only
    monkeypatch.setattr(text_segment_map, "alnum_only", lambda t: folds.append(t) or fold(t))

    segment = TextSegment("We are open until six.", "We are open until six.", 0, 22)
    reads = {segment.is_transformed for _ in range(5)}

    assert reads == {False}
    assert len(folds) == 2  # the original and the TTS side, once
    assert segment == TextSegment("We are open until six.", "We are open until six.", 0, 22)
    other = TextSegment("$5", "five dollars", 0, 2)
    assert other.is_transformed and not segment.is_transformed


# -- asyncio.wait_for without a task (Python 3.11) -------------------------------------------

wait_for = pipecat_fixes.wait_for_in_task


async def test_wait_for_awaits_in_the_callers_task() -> None:
    async def which_task() -> asyncio.Task | None:
        await asyncio.sleep(0)
        return asyncio.current_task()

    assert await wait_for(which_task(), 1.0) is asyncio.current_task()
    assert await wait_for(which_task(), None) is asyncio.current_task()


async def test_wait_for_times_out_after_cancelling_the_awaitable() -> None:
    cancelled = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        await wait_for(slow(), 0.01)
    assert cancelled.is_set()

    future = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await wait_for(future, 0.01)
    assert future.cancelled()


async def test_wait_for_cancelled_cancels_the_awaitable() -> None:
    future = asyncio.get_running_loop().create_future()
    waiter = asyncio.create_task(wait_for(future, 10))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert future.cancelled()


async def test_wait_for_with_no_time_left_never_starts_a_coroutine() -> None:
    started = False

    async def work() -> None:
        nonlocal started
        started = True

    with pytest.raises(TimeoutError):
        await wait_for(work(), 0)
    assert not started


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12's wait_for is already this one")
def test_apply_replaces_asyncio_wait_for_on_python_3_11() -> None:
    pipecat_fixes.apply()
    assert asyncio.wait_for is wait_for
    assert asyncio.tasks.wait_for is wait_for
