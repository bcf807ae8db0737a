"""Speed fixes to Pipecat 1.14 internals, applied once at import of the pipeline.

Each one changes how often Pipecat computes something, never what it computes, and is checked
against the original in tests/test_pipecat_fixes.py.

* ``TextSegment.is_transformed`` is computed once per segment. Pipecat reads it two or three
  times for every word the TTS reports as spoken, and each read folds the whole segment (a
  sentence) to letters and digits one character at a time, so a sentence of n words cost
  O(n²) character folds: 38 µs a read for a sentence of 22 words, ~0.1 ms of the event loop
  per spoken word with Cartesia's word timestamps. The segment is a frozen dataclass and the
  property reads only its two texts, so the first answer stays right.
"""

from __future__ import annotations

from functools import cached_property

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


def apply() -> None:
    """Apply every fix (idempotent)."""
    _memoize_segment_is_transformed()
