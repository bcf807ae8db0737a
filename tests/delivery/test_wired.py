"""The delivery room wired into the server: a real call through the fakes, end to end.

A simulated Exotel call ends; the server builds ``call.ended`` (with the summary and the
extraction of the fake LLM, validated against the schema), keeps it for the calls page and
delivers it, signed, to a local receiver that is down for the first three attempts. Then a
Passthru sends ``call.status`` with the recording link, and the page shows it all.
"""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks import Webhook

from bot.simulator import CallConfig, Hangup, Say, WaitForBot, simulate_call
from bot.state import MemoryStore
from bot.testing.fakes import FakeProviders
from tests.delivery.conftest import SECRET, Receiver, spec_verifies
from tests.delivery.wiring import ADMIN, EXTRACT, analysis_responder, until, wired_bot
from tests.helpers import tone


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return 0.0


async def test_a_call_is_delivered_signed_after_three_failures_and_shown(
    receiver: Receiver,
) -> None:
    receiver.statuses = [503, 503, 500, 200]
    async with FakeProviders() as fakes:
        fakes.deepgram.add_transcripts("my order is A123")
        fakes.openai.responder = analysis_responder(["Order A123 ships tomorrow."])
        analysis = {"summary": True, "extract": EXTRACT}
        async with wired_bot(
            fakes, MemoryStore(), analysis=analysis, webhook_url=receiver.url
        ) as bot:
            config = CallConfig(url=bot.ws_url, custom_parameters={"tier": "gold"})
            rec = await simulate_call(
                config, [WaitForBot(gap=0.3), Say(tone(1.0)), WaitForBot(gap=0.5), Hangup()]
            )
            await until(lambda: len(receiver.requests) >= 4, 15, "four attempts")
            async with bot.client() as client:
                passthru = {
                    "CallSid": rec.call_sid,
                    "Stream[Status]": "completed",
                    "Stream[DisconnectedBy]": "caller",
                    "Stream[Duration]": "4",
                    "Stream[RecordingUrl]": "https://recordings.example/a.mp3",
                }
                assert (await client.get("/exotel/passthru", params=passthru)).status_code == 200
                await until(lambda: len(receiver.requests) >= 5, 10, "call.status")
                detail = (await client.get(f"/api/calls/{rec.call_sid}")).json()
                listing = (await client.get("/api/calls")).json()["calls"]
                page = (await client.get(f"/calls/{rec.call_sid}")).text
                async with bot.client(auth=None) as anonymous:
                    unauthorised = await anonymous.get("/api/calls")
                async with bot.client(auth=(ADMIN[0], "nope")) as guessing:
                    wrong = await guessing.get("/calls")
                metrics = (await client.get("/metrics")).text

    # Four attempts of one event: same id and body, each signed (spec algorithm + library).
    attempts = receiver.requests[:4]
    assert {a.headers["webhook-id"] for a in attempts} == {attempts[0].headers["webhook-id"]}
    assert {a.body for a in attempts} == {attempts[0].body}
    for a in attempts:
        assert spec_verifies(SECRET, a.headers, a.body)
    event = Webhook(SECRET).verify(attempts[-1].body, attempts[-1].headers)
    assert event["type"] == "call.ended"
    data = event["data"]
    assert (data["call_sid"], data["stream_sid"]) == (rec.call_sid, rec.stream_sid)
    assert (data["from"], data["to"]) == (config.from_number, config.to_number)
    assert data["outcome"] == "caller_hung_up" and data["ended_by"] == "caller"
    assert data["custom_parameters"] == {"tier": "gold"}
    assert data["started_at"].endswith("Z") and data["duration_secs"] > 1
    roles = [(t["role"], t["text"]) for t in data["turns"]]
    assert roles[0] == ("bot", "Hello, how can I help?")  # the greeting
    assert ("caller", "my order is A123") in roles
    # What was spoken: the code read as written (bot.languages.numbers).
    assert ("bot", "Order A one two three ships tomorrow.") in roles
    assert data["providers"] == {"stt": "deepgram", "llm": "openai", "tts": "cartesia"}
    assert data["latency"]["turns"] == 1 and data["latency"]["response_latency"]["p50_ms"] > 0
    # Extraction validated: the good field kept, the wrong-typed one dropped and named.
    assert data["summary"].startswith("The caller asked about order A123")
    assert data["extraction"] == {"order_id": "A123"}
    assert "satisfied" in data["analysis_error"]
    analysis_request = fakes.openai.requests[-1]
    assert analysis_request["response_format"] == {"type": "json_object"}
    assert "my order is A123" in analysis_request["messages"][1]["content"]

    # call.status after the Passthru, signed too.
    status = receiver.requests[4]
    assert spec_verifies(SECRET, status.headers, status.body)
    status_event = json.loads(status.body)
    assert status_event["type"] == "call.status"
    assert status_event["data"]["recording_url"] == "https://recordings.example/a.mp3"
    assert status_event["data"]["disconnected_by"] == "caller"

    # The calls page and its API.
    assert [c["call_sid"] for c in listing] == [rec.call_sid]
    assert listing[0]["outcome"] == "caller_hung_up" and listing[0]["turns"] == 1
    assert detail["data"]["turns"] == data["turns"]
    assert detail["status"]["recording_url"] == "https://recordings.example/a.mp3"
    states = {d["type"]: d["state"] for d in detail["deliveries"]}
    assert states["call.ended"] == "delivered"
    ended = next(d for d in detail["deliveries"] if d["type"] == "call.ended")
    assert [a.get("status") for a in ended["attempts"]] == [503, 503, 500, 200]
    assert "my order is A123" in page and "caller hung up" in page
    assert 'href="https://recordings.example/a.mp3"' in page
    assert unauthorised.status_code == 401 and wrong.status_code == 401

    # Metrics: three retries, then delivered; nothing pending.
    assert metric(metrics, "exotel_webhook_events_total", state="retried") == 3
    assert metric(metrics, "exotel_webhook_events_total", state="delivered") == 2
    assert metric(metrics, "exotel_webhook_pending") == 0
