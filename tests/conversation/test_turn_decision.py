"""turn_wait: every verdict x transcript cell of its table, with stubbed verdicts."""

from __future__ import annotations

import pytest

from bot.conversation.turn_decision import TurnVerdict, turn_wait

SPEECH, UNFINISHED = 0.3, 1.2
COMPLETE = TurnVerdict(complete=True, probability=0.93, elapsed_ms=31.0)
INCOMPLETE = TurnVerdict(complete=False, probability=0.12, elapsed_ms=29.0)

# (verdict, transcript, the transcript rule's reading, expected wait)
TABLE = [
    (COMPLETE, "Do you deliver to Bangalore?", False, 0.0),
    (COMPLETE, "I would like to change the delivery address to", True, UNFINISHED),
    (COMPLETE, "", False, SPEECH),
    (INCOMPLETE, "Do you deliver to Bangalore?", False, UNFINISHED),
    (INCOMPLETE, "I would like to change the delivery address to", True, UNFINISHED),
    (INCOMPLETE, "  ", False, SPEECH),
    (None, "Do you deliver to Bangalore?", False, SPEECH),
    (None, "I would like to change the delivery address to", True, UNFINISHED),
    (None, "", False, SPEECH),
]


@pytest.mark.parametrize(("verdict", "transcript", "unfinished", "wait"), TABLE)
def test_table(verdict, transcript, unfinished, wait):
    assert turn_wait(verdict, transcript, unfinished, SPEECH, UNFINISHED) == wait


@pytest.mark.parametrize("verdict", [INCOMPLETE, None])
def test_a_long_wait_never_undercuts_the_speech_timeout(verdict):
    """With the unfinished-word rule off (timeout 0) an unfinished or incomplete turn waits
    the speech timeout, never less."""
    assert turn_wait(verdict, "the address to", True, SPEECH, 0.0) == SPEECH
    assert turn_wait(INCOMPLETE, "Where is it?", False, SPEECH, 0.0) == SPEECH


def test_only_agreement_answers_at_once():
    """The model makes a turn faster only when it and the words agree."""
    cells = [(v, t, u) for v, t, u, _ in TABLE]
    at_once = [c for c in cells if turn_wait(*c, SPEECH, UNFINISHED) == 0.0]
    assert at_once == [(COMPLETE, "Do you deliver to Bangalore?", False)]


def test_the_probability_is_not_reread():
    """``complete`` decides (the threshold was applied by the model's runner)."""
    odd = TurnVerdict(complete=True, probability=0.2, elapsed_ms=1.0)
    assert turn_wait(odd, "Where is it?", False, SPEECH, UNFINISHED) == 0.0
