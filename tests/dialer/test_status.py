"""Status callbacks: parsing both body kinds, the URL token, de-duplication, routing."""

from __future__ import annotations

import json

import aiohttp

from bot.dialer.status import (
    StreamEndEvent,
    callback_token,
    check_callback_token,
    event_from_payload,
    events_queue,
    parse_status_body,
    publish_status,
    publish_stream_end,
    shared_callback_token,
    status_callback_url,
)
from bot.dialer.variables import index_call_sid, store_call_variables, variables_for_stream

TERMINAL = {
    "CallSid": "80bf",
    "EventType": "terminal",
    "Status": "completed",
    "ConversationDuration": 320,
    "CustomField": "job_42",
    "RecordingUrl": "https://rec/1.mp3",
    "Legs": [{"OnCallDuration": 335, "Status": "completed", "AnsweredBy": "Human"}],
}


def test_json_body():
    event = parse_status_body(json.dumps(TERMINAL).encode(), "application/json")
    assert (event.call_sid, event.event_type, event.status) == ("80bf", "terminal", "completed")
    assert event.conversation_duration == 320.0 and event.custom_field == "job_42"
    assert event.recording_url == "https://rec/1.mp3" and event.answered_by == "Human"
    assert event.legs[0]["OnCallDuration"] == 335


def test_form_body_with_indexed_legs_and_no_event_type():
    body = (
        "CallSid=abc&Status=no-answer&CustomField=tok&RecordingUrl=null"
        "&Legs%5B0%5D%5BStatus%5D=no-answer&Legs%5B0%5D%5BOnCallDuration%5D=0"
    )
    event = parse_status_body(body.encode(), "application/x-www-form-urlencoded")
    assert event.event_type == "terminal"  # Exotel's default when no events were asked for
    assert event.status == "no-answer" and event.recording_url is None
    assert event.legs == ({"Status": "no-answer", "OnCallDuration": "0"},)


def test_tokens_compare_in_constant_time_and_refuse_missing():
    token = callback_token()
    assert len(token) >= 32 and token != callback_token()
    assert check_callback_token(token, token)
    assert not check_callback_token(token, token[:-1] + "x")
    assert not check_callback_token(token, None) and not check_callback_token(None, None)
    assert status_callback_url("https://bot.example/", token) == (
        f"https://bot.example/exotel/status/{token}"
    )


async def test_shared_token_is_made_once(store):
    first = await shared_callback_token(store)
    assert await shared_callback_token(store) == first


async def test_endpoint_refuses_bad_tokens_and_drops_duplicates(store, receiver):
    token = await store_call_variables(store, {"name": "Asha"}, meta={"campaign": "c1"})
    body = dict(TERMINAL, CustomField=token)
    async with aiohttp.ClientSession() as http:
        for url in (
            receiver.url,
            f"{receiver.base}/exotel/status/wrong",
            f"{receiver.base}/exotel/status",
        ):
            async with http.post(url, json=body):
                pass
        async with http.post(receiver.url, json=dict(body, EventType="answered")):
            pass
        async with http.post(receiver.url, data=b"not=a-callback"):
            pass
    assert receiver.answers == [200, 403, 403, 200, 400]
    items = await store.items(events_queue("c1"))
    assert sorted(item.item_id for item in items) == [
        "status:answered:80bf",
        "status:terminal:80bf",
    ]
    assert not await publish_status(store, event_from_payload(items[0].payload))  # duplicate


async def test_stream_end_is_routed_once_by_call_sid(store):
    token = await store_call_variables(store, {}, meta={"campaign": "c2"})
    await index_call_sid(store, token, "sid-9")
    event = StreamEndEvent("sid-9", outcome="voicemail", extraction={"x": 1})
    assert await publish_stream_end(store, event)
    assert not await publish_stream_end(store, event)
    [item] = await store.items(events_queue("c2"))
    assert event_from_payload(item.payload) == event


async def test_variables_by_custom_field_or_call_sid(store):
    variables = {"name": "Asha", "amount": "1500", "note": "x" * 500}
    token = await store_call_variables(store, variables)
    assert len(token) < 128
    assert await variables_for_stream(store, token, None) == variables
    assert await variables_for_stream(store, None, "sid-1") == {}
    await index_call_sid(store, token, "sid-1")
    assert await variables_for_stream(store, None, "sid-1") == variables
    assert await variables_for_stream(store, "someone-elses-field", "sid-1") == variables
