"""The Pipecat speed fixes compute what Pipecat computes, only less often."""

from __future__ import annotations

import pytest
from pipecat.utils.context import text_segment_map
from pipecat.utils.context.text_segment_map import TextSegment

from bot import pipecat_fixes

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
