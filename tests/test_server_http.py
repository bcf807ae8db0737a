"""HTTP side of the server: auth on the upgrade, dynamic URL, passthru, health, metrics."""

from __future__ import annotations

import asyncio
import base64

import httpx
import pytest
import websockets
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from bot.agent.transfer import record_transfer
from bot.config import Settings
from bot.observability.metrics import Metrics
from bot.providers import SharedResources, choose_providers
from bot.server.app import create_app
from bot.server.exotel_routes import BasicAuth, parse_passthru_stream, parse_sample_rate
from bot.server.runtime import Runtime, open_runtime_store
from bot.state import ResilientStore, SQLiteStore, StateUnavailable
from bot.testing.localserver import serving


def make_runtime(**settings) -> Runtime:
    s = Settings(**settings)
    return Runtime(settings=s, choice=choose_providers(s), shared=SharedResources())


def make_client(**settings) -> TestClient:
    runtime = make_runtime(**settings)
    return TestClient(create_app(runtime.settings, runtime=runtime))


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
    assert "exotel_state_write_retries_total 0.0" in metrics.text


def test_ready_says_why_an_instance_takes_no_new_call():
    runtime = make_runtime(bot_max_calls=1, state_down_grace_secs=5)
    client = TestClient(create_app(runtime.settings, runtime=runtime))
    with client:
        first = client.get("/ready")
        assert (first.status_code, first.json()) == (200, {"status": "ready", "active_calls": 0})
        runtime.store.down_for_secs = lambda: 6.0  # type: ignore[method-assign]
        runtime.store.healthy = lambda grace=None: False  # type: ignore[method-assign]
        blind = client.get("/ready")
        assert (blind.status_code, blind.json()["status"]) == (503, "state store down")
        assert runtime.reserve_slot() is None  # a blind store does not refuse the call itself
        full = client.get("/ready")
        assert (full.status_code, full.json()["status"]) == (503, "full")
        runtime.draining = True
        draining = client.get("/ready")
        assert (draining.status_code, draining.json()["status"]) == (503, "draining")
        health = client.get("/healthz")  # liveness: the process still works
        assert (health.status_code, health.json()["status"]) == (200, "draining")


def test_slots_are_reserved_and_given_back():
    runtime = make_runtime(bot_max_calls=2)
    assert runtime.reserve_slot() is None and runtime.reserve_slot() is None
    assert runtime.reserve_slot() == "full" and runtime.admitted == 2
    runtime.release_slot()
    assert runtime.reserve_slot() is None
    runtime.draining = True
    runtime.release_slot()
    assert runtime.reserve_slot() == "draining" and runtime.admitted == 1


@pytest.mark.parametrize("reason", ["full", "draining"])
def test_a_stream_that_cannot_be_served_gets_http_503_before_accept(reason):
    runtime = make_runtime(bot_max_calls=1)
    if reason == "full":
        runtime.admitted = 1
    else:
        runtime.draining = True
    client = TestClient(create_app(runtime.settings, runtime=runtime))
    with pytest.raises(WebSocketDenialResponse) as e, client:
        with client.websocket_connect("/exotel/ws"):
            pass
    assert e.value.status_code == 503
    assert e.value.json() == {"status": reason, "active_calls": 0}
    assert runtime.metrics.calls_refused.labels(reason=reason)._value.get() == 1


async def test_two_racing_upgrades_cannot_both_take_the_last_slot():
    runtime = make_runtime(bot_max_calls=1, handshake_timeout_secs=2)
    async with serving(create_app(runtime.settings, runtime=runtime)) as base:
        url = base.replace("http://", "ws://") + "/exotel/ws"

        async def connect() -> int:
            try:
                async with websockets.connect(url, open_timeout=5):
                    await asyncio.sleep(0.3)
                    return 101
            except websockets.InvalidStatus as e:
                return e.response.status_code

        codes = await asyncio.gather(*(connect() for _ in range(4)))
        for _ in range(100):  # the accepted one ends its handshake wait when it closes
            if runtime.admitted == 0:
                break
            await asyncio.sleep(0.05)
    assert sorted(codes) == [101, 503, 503, 503]
    assert runtime.admitted == 0


def test_passthru_answers_302_for_a_transferred_call_from_the_store():
    runtime = make_runtime()
    asyncio.run(record_transfer(runtime.store, "c-xfer", "angry caller", "support"))
    client = TestClient(create_app(runtime.settings, runtime=runtime))
    with client:
        for _ in range(2):  # idempotent: Exotel may ask again
            r = client.get("/exotel/passthru?CallSid=c-xfer&Stream[Status]=completed")
            assert r.status_code == 302
        posted = client.post(
            "/exotel/passthru", data={"CallSid": "c-xfer", "Stream": '{"Status": "completed"}'}
        )
        assert posted.status_code == 302
        assert client.get("/exotel/passthru?CallSid=unknown").status_code == 200
        assert client.get("/exotel/passthru").status_code == 200


def test_passthru_answers_200_when_the_store_cannot_be_read():
    runtime = make_runtime()

    async def unreachable(_key: str) -> str | None:
        raise StateUnavailable("down")

    runtime.store.get = unreachable  # type: ignore[method-assign]
    with TestClient(create_app(runtime.settings, runtime=runtime)) as client:
        assert client.get("/exotel/passthru?CallSid=c1").status_code == 200


def test_the_runtime_opens_the_configured_store_and_counts_retries(tmp_path):
    metrics = Metrics()
    default = open_runtime_store(Settings(bot_data_dir=tmp_path), metrics)
    assert isinstance(default, SQLiteStore) and (tmp_path / "state.sqlite3").exists()
    shared = open_runtime_store(Settings(bot_state_url="redis://127.0.0.1:1/0"), metrics)
    assert isinstance(shared, ResilientStore)
    shared.on_retry()
    shared.on_retry()
    assert metrics.state_write_retries._value.get() == 2
    asyncio.run(default.close())
    asyncio.run(shared.close())


async def test_the_app_stops_the_runtime_it_started(monkeypatch):
    stopped: list[Runtime] = []
    runtime = make_runtime()

    async def start(_settings, **_options) -> Runtime:
        return runtime

    async def stop() -> None:
        stopped.append(runtime)

    monkeypatch.setattr(Runtime, "start", staticmethod(start))
    monkeypatch.setattr(runtime, "stop", stop)
    async with serving(create_app(runtime.settings)) as base, httpx.AsyncClient() as client:
        assert (await client.get(f"{base}/ready")).json()["status"] == "ready"
        assert stopped == []
    assert stopped == [runtime]
