"""A call record mapped to call.ended, the calls-page copy, retention and the settings check."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bot.config import ConfigError, Settings
from bot.delivery.calls import call_detail, recent_calls, save_call
from bot.delivery.events import call_ended_event
from bot.delivery.from_record import CallContext, call_ended_data, call_outcome
from bot.delivery.service import PostCall, check_webhook_settings
from bot.observability.records.retention import prune_record_files
from bot.state import MemoryStore

CONTEXT = CallContext(providers={"stt": "deepgram"}, language="en", greeting="Hello!")


def record(**changes: object) -> dict:
    base = {
        "call_sid": "CA1",
        "stream_sid": "ST1",
        "from": "+911",
        "to": "+912",
        "custom_parameters": {"direction": "outbound-api"},
        "started_at": "2026-01-02T03:04:05.000+00:00",
        "duration_secs": 12.5,
        "end_reason": "caller hung up (stop: callended)",
        "hung_up_by": "caller",
        "turns": [
            {
                "index": 0,
                "speech_start": 2.0,
                "speech_end": 3.0,
                "speech": [[2.0, 3.0]],
                "heard": "hours please",
                "spoken": "Nine to five.",
                "first_bot_audio": 3.5,
                "response_latency": 0.5,
                "interrupted": False,
            },
            {
                "index": 1,
                "speech_start": 4.0,
                "speech_end": 5.0,
                "speech": [[4.0, 5.0]],
                "heard": "stop",
                "spoken": "",
                "answered": "Sure.",
                "first_bot_audio": 5.4,
                "interrupted": True,
            },
        ],
        "bot_speech": [[0.2, 1.5], [3.5, 4.1], [5.4, 6.0]],
        "events": [{"t": 3.2, "type": "holding_phrase", "text": "One moment."}],
        "summary": {"turns": 2, "response_latency": {"p50_ms": 500, "max_ms": 500}},
    }
    return {**base, **changes}


def test_the_record_maps_to_call_ended() -> None:
    data = call_ended_data(record(), CONTEXT).to_json()
    assert data["ended_at"] == "2026-01-02T03:04:17.500Z" and data["duration_secs"] == 12.5
    assert (data["outcome"], data["ended_by"], data["direction"]) == (
        "caller_hung_up",
        "caller",
        "outbound",
    )
    lines = [(t["role"], t["text"], t["start_secs"], t["end_secs"]) for t in data["turns"]]
    assert lines == [
        ("bot", "Hello!", 0.2, 1.5),
        ("caller", "hours please", 2.0, 3.0),
        ("bot", "Nine to five.", 3.5, 4.1),
        ("caller", "stop", 4.0, 5.0),
        ("bot", "Sure.", 5.4, 6.0),
    ]
    assert [t["interrupted"] for t in data["turns"]] == [False, False, True, False, False]
    assert data["holding_phrases"] == ["One moment."]
    assert data["latency"]["response_latency"] == {"p50_ms": 500, "max_ms": 500}
    assert data["providers"] == {"stt": "deepgram"} and data["language"] == "en"


@pytest.mark.parametrize(
    ("changes", "transfer", "expected"),
    [
        ({"end_reason": "llm called end_call", "hung_up_by": "bot"}, None, ("completed", {})),
        ({"end_reason": "caller silent", "hung_up_by": "bot"}, None, ("idle", {})),
        ({"end_reason": "provider fault: tts unusable"}, None, ("failed", {"why": ...})),
        ({"end_reason": "internal error", "hung_up_by": None}, None, ("failed", {"why": ...})),
        ({}, {"reason": "wants a human", "department": "sales"}, ("transferred", {})),
        ({"outcome": "transferred", "outcome_detail": {"department": "x"}}, None, None),
    ],
)
def test_outcomes(changes: dict, transfer: dict | None, expected: tuple | None) -> None:
    outcome, detail = call_outcome(record(**changes), transfer)
    if expected is None:  # the record's own outcome wins
        assert (outcome, detail) == ("transferred", {"department": "x"})
        return
    assert outcome == expected[0]
    if outcome == "failed":
        assert detail["why"] == changes["end_reason"]
    if outcome == "transferred":
        assert detail == {"reason": "wants a human", "department": "sales"}


async def test_calls_are_listed_newest_first_and_filtered() -> None:
    store = MemoryStore()
    for sid, start, reason in (
        ("CA1", "2026-01-02T03:00:00+00:00", "caller hung up"),
        ("CA2", "2026-01-02T04:00:00+00:00", "caller silent"),
    ):
        rec = record(call_sid=sid, started_at=start, end_reason=reason)
        event = call_ended_event(call_ended_data(rec, CONTEXT))
        await save_call(store, event.data, rec, ttl_secs=60)
    rows = await recent_calls(store)
    assert [r["call_sid"] for r in rows] == ["CA2", "CA1"]
    assert rows[1]["turns"] == 2 and rows[1]["p50_response_ms"] == 500
    assert [r["call_sid"] for r in await recent_calls(store, outcome="idle")] == ["CA2"]
    detail = await call_detail(store, "CA1")
    assert detail is not None and detail["timeline"]["caller_speech"] == [[2.0, 3.0], [4.0, 5.0]]
    assert await call_detail(store, "nope") is None


async def test_analysis_with_the_scripted_responder_uses_captures() -> None:
    from bot.delivery.analysis import AnalysisConfig

    schema = {"type": "object", "properties": {"satisfied": {"type": "boolean"}}}
    post = PostCall(
        MemoryStore(), context=CONTEXT, analysis=AnalysisConfig(summary=True, extract=schema)
    )
    event = await post.call_ended(record(), captures={"satisfied": "yes", "other": "x"})
    assert event is not None
    assert event.data["extraction"] == {"satisfied": True}
    assert event.data["analysis_error"] == "no LLM in use: no summary"


def test_a_webhook_url_needs_a_secret() -> None:
    with pytest.raises(ConfigError, match="WEBHOOK_SECRET.*python -m bot webhooks secret"):
        check_webhook_settings(Settings(webhook_url="https://crm.example/hooks"))
    with pytest.raises(ConfigError, match="WEBHOOK_SECRET"):
        check_webhook_settings(Settings(webhook_url="https://x.example", webhook_secret="whsec_!!"))
    check_webhook_settings(Settings(webhook_url="https://x.example", webhook_secret="a" * 32))


def test_retention_removes_old_day_folders_only(tmp_path: Path) -> None:
    now = time.time()
    old = tmp_path / time.strftime("%Y-%m-%d", time.gmtime(now - 40 * 86400))
    fresh = tmp_path / time.strftime("%Y-%m-%d", time.gmtime(now))
    other = tmp_path / "notes"
    for folder in (old, fresh, other):
        folder.mkdir()
        (folder / "CA.json").write_text("{}")
    assert prune_record_files(tmp_path, 30 * 86400, now) == 1
    assert sorted(os.listdir(tmp_path)) == sorted([fresh.name, "notes"])
