"""HTTP side of the server: auth on the upgrade, dynamic URL, passthru, health, metrics."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from bot.config import Settings
from bot.providers import SharedResources, choose_providers
from bot.server.app import create_app
from bot.server.exotel_routes import BasicAuth, parse_passthru_stream, parse_sample_rate
from bot.server.runtime import Runtime


def make_client(**settings) -> TestClient:
    s = Settings(**settings)
    runtime = Runtime(settings=s, choice=choose_providers(s), shared=SharedResources())
    return TestClient(create_app(s, runtime=runtime))


def basic(user_pass: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(user_pass.encode()).decode()}


def test_basic_auth_checks():
    auth = BasicAuth("exo:s3cret")
    assert auth.allows(basic("exo:s3cret")["Authorization"])
    assert not auth.allows(None)
    assert not auth.allows(basic("exo:wrong")["Authorization"])
    assert not auth.allows("Bearer abc")
    assert not auth.allows("Basic !!!notbase64")
    assert BasicAuth(None).allows(None)


@pytest.mark.parametrize("headers", [{}, basic("exo:wrong"), {"Authorization": "Basic"}])
def test_stream_refused_without_the_right_auth(headers):
    client = make_client(exotel_basic_auth="exo:s3cret")
    with pytest.raises(WebSocketDisconnect) as e, client:
        with client.websocket_connect("/exotel/ws", headers=headers):
            pass
    assert e.value.code == 1008


def test_stream_accepted_with_the_right_auth():
    client = make_client(exotel_basic_auth="exo:s3cret")
    with client, client.websocket_connect("/exotel/ws", headers=basic("exo:s3cret")) as ws:
        ws.send_json({"event": "connected"})
        ws.close()  # closing before start ends the stream quietly


def test_sample_rate_parsing():
    assert parse_sample_rate(None) == 8000
    assert parse_sample_rate("16000") == 16000
    assert parse_sample_rate("24000") == 24000
    assert parse_sample_rate("44100") == 8000
    assert parse_sample_rate("abc") == 8000


def test_dynamic_url_uses_forwarded_headers_and_passes_parameters():
    client = make_client()
    with client:
        r = client.get(
            "/exotel/url?CallSid=abc&CallFrom=0999&lang=hi&tier=gold&sample-rate=16000",
            headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "bot.example.com"},
        )
    assert r.status_code == 200
    assert r.json() == {
        "url": "wss://bot.example.com/exotel/ws?sample-rate=16000&lang=hi&tier=gold"
    }


def test_dynamic_url_post_form_and_auth():
    client = make_client(exotel_basic_auth="exo:s3cret", bot_sample_rate=24000)
    with client:
        assert client.post("/exotel/url").status_code == 401
        r = client.post(
            "/exotel/url",
            data={"CallSid": "abc", "a": "1", "b": "2", "c": "3", "d": "4"},
            headers={"host": "bot.local:8080", **basic("exo:s3cret")},
        )
    assert (
        r.json()["url"] == "ws://exo:s3cret@bot.local:8080/exotel/ws?sample-rate=24000&a=1&b=2&c=3"
    )


def test_passthru_flat_and_json_forms():
    flat = parse_passthru_stream({"Stream[Status]": "completed", "Stream[DisconnectedBy]": "bot"})
    assert flat == {"Status": "completed", "DisconnectedBy": "bot"}
    as_json = parse_passthru_stream({"Stream": '{"Status": "failed", "Error": "timeout"}'})
    assert as_json == {"Status": "failed", "Error": "timeout"}
    client = make_client()
    with client:
        assert client.get("/exotel/passthru?CallSid=c1&Stream[Status]=completed").status_code == 200
        assert client.post("/exotel/passthru", data={"Stream": "not json"}).status_code == 200


def test_health_and_metrics():
    client = make_client()
    with client:
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        assert health.json()["providers"] == {"stt": "whisper", "llm": "scripted", "tts": "piper"}
        metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "exotel_active_calls" in metrics.text
