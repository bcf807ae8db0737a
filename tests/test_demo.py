"""The demo joins the server's call record to the caller's utterances by time."""

from __future__ import annotations

from types import SimpleNamespace

from bot.cli.demo import transcript_by_time


def test_server_turns_join_caller_utterances_by_time():
    rec = SimpleNamespace(turns=[SimpleNamespace(audio_start=s) for s in (4.0, 15.0, 20.9)])
    record = {
        "turns": [
            {"turn_end": 7.1, "heard": "opening hours?", "answered": "Nine to six."},
            {"turn_end": 18.6, "heard": "refunds?", "answered": "Seven days."},
            # The barge-in: the cut answer's words land on it, then a blip turn with the answer.
            {"turn_end": 23.8, "heard": "where is your office?", "answered": "Seven days."},
            {"turn_end": 24.4, "heard": "", "answered": "Twelve M G Road."},
        ]
    }
    notes = transcript_by_time(rec, record)
    assert [n["heard"] for n in notes] == ["opening hours?", "refunds?", "where is your office?"]
    assert [n["answered"] for n in notes] == ["Nine to six.", "Seven days.", "Twelve M G Road."]
