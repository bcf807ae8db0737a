"""Speed fixes to Pipecat 1.14 internals, applied once at import of the pipeline.

Each one changes how much work Pipecat's code costs, never what it does, and is checked
against the original in tests/test_pipecat_fixes.py.

* ``TextSegment.is_transformed`` is computed once per segment. Pipecat reads it two or three
  times for every word the TTS reports as spoken, and each read folds the whole segment (a
  sentence) to letters and digits one character at a time, so a sentence of n words cost
  O(n²) character folds: 38 µs a read for a sentence of 22 words, ~0.1 ms of the event loop
  per spoken word with Cartesia's word timestamps. The segment is a frozen dataclass and the
  property reads only its two texts, so the first answer stays right.
* On Python 3.11, ``asyncio.wait_for`` is the one Python 3.12 has: it awaits in the caller's
  task under ``asyncio.timeout``. 3.11's runs the awaitable in a new task, and Pipecat waits
  that way for every TTS audio frame (its audio context queue) and twice for every chunk the
  output sends (its media sender), so each cost a task and two extra event-loop steps. 3.12
  made the change (gh-96764) with the same outcomes: the result, ``TimeoutError`` after
  cancelling the awaitable, and the awaitable cancelled when the wait is.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from functools import cached_property
from typing import TypeVar

from pipecat.utils.context.text_segment_map import TextSegment


def _memoize_segment_is_transformed() -> None:
    current = TextSegment.__dict__["is_transformed"]
    if isinstance(current, cached_property):
        return
    memoized = cached_property(current.fget)
    # A frozen dataclass forbids setattr, but cached_property writes the instance's
    # __dict__ directly, which freezing does not cover (TextSegment has no __slots__).
    memoized.__set_name__(TextSegment, "is_transformed")
    TextSegment.is_transformed = memoized  # type: ignore[assignment, method-assign]


T = TypeVar("T")

_task_wait_for = asyncio.wait_for


async def wait_for_in_task(awaitable: Awaitable[T], timeout: float | None) -> T:
    """``asyncio.wait_for`` as in Python 3.12: no new task, unless the timeout is already up
    (3.12 keeps the old path for that case too)."""
    if timeout is not None and timeout <= 0:
        return await _task_wait_for(awaitable, timeout)
    async with asyncio.timeout(timeout):
        return await awaitable


def _wait_for_without_a_task() -> None:
    if sys.version_info >= (3, 12) or asyncio.wait_for is wait_for_in_task:
        return
    # Modules look it up as asyncio.wait_for when they call it; both names point here.
    asyncio.wait_for = asyncio.tasks.wait_for = wait_for_in_task  # type: ignore[assignment]


def apply() -> None:
    """Apply every fix (idempotent)."""
    _memoize_segment_is_transformed()
    _wait_for_without_a_task()
