"""Event envelopes: shapes, stable ids, and Exotel's status reports in their three forms."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from bot.delivery.events import (
    CallEndedData,
    Turn,
    call_ended_event,
    call_status_event,
    event_id,
)


def ended(**overrides) -> CallEndedData:
    values = dict(
        call_sid="CA1",
        stream_sid="ST1",
        from_number="+919800000001",
        to_number="+918047000000",
        started_at=datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC),
        ended_at=1772359265.5,  # 2026-03-01T10:01:05.500Z
        duration_secs=65.5004,
        outcome="transferred",
        outcome_detail={"reason": "wants a human", "department": "support"},
        ended_by="bot",
        custom_parameters={"campaign": "c7"},
        variables={"customer_name": "Asha"},
        language="hi",
        turns=[
            Turn("bot", "Namaste!", 0.2, 1.1),
            Turn("caller", "order **34", 2.0, 3.25, interrupted=True, language="hi"),
        ],
        tool_calls=[{"name": "lookup_order", "arguments": {"order_id": "**34"}}],
        latency={"response_latency": {"p50_ms": 640, "max_ms": 900}},
        holding_phrases=["One moment."],
        providers={"stt": "deepgram", "llm": "openai", "tts": "cartesia"},
    )
    values.update(overrides)
    return CallEndedData(**values)


def test_call_ended_envelope_carries_the_call():
    event = call_ended_event(ended())
    body = json.loads(event.body())
    assert list(body) == ["type", "timestamp", "data"]
    assert body["type"] == "call.ended"
    assert body["timestamp"] == "2026-03-01T10:01:05.500Z" == body["data"]["ended_at"]
    data = body["data"]
    assert data["started_at"] == "2026-03-01T10:00:00.000Z"
    assert (data["from"], data["to"], data["direction"]) == (
        "+919800000001",
        "+918047000000",
        "inbound",
    )
    assert data["duration_secs"] == 65.5
    assert data["outcome"] == "transferred"
    assert data["outcome_detail"] == {"reason": "wants a human", "department": "support"}
    assert data["languages"] == ["hi"]
    assert data["turns"][1] == {
        "role": "caller",
        "text": "order **34",
        "start_secs": 2.0,
        "end_secs": 3.25,
        "interrupted": True,
        "language": "hi",
    }
    assert data["summary"] is None and data["extraction"] is None
    assert event.id.startswith("evt_") and "." not in event.id


def test_the_id_and_body_are_the_same_when_rebuilt_from_a_dict():
    first = call_ended_event(ended())
    again = call_ended_event(json.loads(first.body())["data"])  # wire names, ISO strings
    assert again.id == first.id
    assert again.body() == first.body()
    assert call_ended_event(ended(call_sid="CA2")).id != first.id


def test_bad_call_ended_data_is_refused():
    with pytest.raises(ValueError, match="outcome must be one of"):
        ended(outcome="hung_up")
    with pytest.raises(ValueError, match="no field"):
        CallEndedData.from_mapping({**call_ended_event(ended()).data, "colour": "red"})
    with pytest.raises(ValueError, match="role"):
        Turn.from_mapping({"role": "agent", "text": "hi"})


NOW = datetime(2026, 3, 1, 10, 2, tzinfo=UTC)


def test_passthru_bracket_form():
    event = call_status_event(
        {
            "CallSid": "CA1",
            "From": "+919800000001",
            "To": "+918047000000",
            "Stream[StreamSID]": "ST1",
            "Stream[Status]": "completed",
            "Stream[Duration]": "28",
            "Stream[RecordingUrl]": "https://recordings.exotel.com/x.mp3",
            "Stream[DisconnectedBy]": "bot",
            "flow_id": "123",
        },
        now=NOW,
    )
    assert event.type == "call.status" and event.call_sid == "CA1"
    assert event.timestamp == "2026-03-01T10:02:00.000Z"
    assert event.data == {
        "source": "passthru",
        "call_sid": "CA1",
        "from": "+919800000001",
        "to": "+918047000000",
        "status": "completed",
        "disconnected_by": "bot",
        "duration_secs": 28.0,
        "recording_url": "https://recordings.exotel.com/x.mp3",
        "error": None,
        "detailed_status": None,
        "stream_sid": "ST1",
    }


def test_passthru_json_form_gives_the_same_event():
    blob = {"Status": "failed", "Error": "ws handshake failed", "DetailedStatus": "wss_error"}
    event = call_status_event({"CallSid": "CA1", "Stream": json.dumps(blob)}, now=NOW)
    assert (event.data["status"], event.data["error"]) == ("failed", "ws handshake failed")
    assert event.data["detailed_status"] == "wss_error"
    bracket = {"CallSid": "CA1", **{f"Stream[{k}]": v for k, v in blob.items()}}
    assert call_status_event(bracket, now=NOW).id == event.id


def test_status_callback_form():
    fields = {
        "CallSid": "CA9",
        "EventType": "terminal",
        "Status": "completed",
        "ConversationDuration": 320,
        "RecordingUrl": "https://recordings.exotel.com/y.mp3",
        "Legs": [{"OnCallDuration": 320, "Status": "completed", "AnsweredBy": "Human"}],
    }
    event = call_status_event(fields, now=NOW)
    assert event.data["source"] == "status_callback"
    assert event.data["event_type"] == "terminal"
    assert event.data["answered_by"] == "Human"
    assert event.data["conversation_duration_secs"] == 320.0
    assert call_status_event(fields, now=NOW).id == event.id  # Exotel repeats: one id
    answered = call_status_event({**fields, "EventType": "answered"}, now=NOW)
    assert answered.id != event.id
    flat = {"CallSid": "CA9", "Status": "busy", "Legs[0][AnsweredBy]": "NA"}
    assert call_status_event(flat, now=NOW).data["answered_by"] == "NA"


def test_status_without_call_sid_is_refused():
    with pytest.raises(ValueError, match="CallSid"):
        call_status_event({"Stream[Status]": "completed"}, now=NOW)
    assert event_id("CA1", "call.status", "passthru:completed") != event_id("CA1", "call.ended")
