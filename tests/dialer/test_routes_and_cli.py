"""The dialer's HTTP endpoints and the dial command, without streams (the fake places none)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from bot.cli.main import main
from bot.config import Settings
from bot.dialer.status import events_queue, shared_callback_token
from bot.dialer.variables import store_call_variables
from bot.providers import SharedResources, choose_providers
from bot.server.app import create_app
from bot.server.runtime import Runtime
from bot.state import open_store
from bot.state.memory import MemoryStore
from bot.testing.exotel_api import FakeExotelApi
from bot.testing.localserver import serving

from .e2e_kit import API_TOKEN, exotel_env

pytestmark = pytest.mark.timeout(20)


def _runtime(**settings) -> Runtime:
    keys = {f"{p}_api_key": "unused" for p in ("deepgram", "openai", "cartesia")}
    s = Settings(bot_stt="deepgram", bot_llm="openai", bot_tts="cartesia", **keys, **settings)
    return Runtime(settings=s, choice=choose_providers(s), shared=SharedResources())


@pytest.fixture
async def http():
    """The app with no Exotel credentials; ``(client, runtime)``."""
    runtime = _runtime(bot_api_token=API_TOKEN)
    async with serving(create_app(runtime.settings, runtime=runtime)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            yield client, runtime


async def test_status_callback_needs_the_token_and_dedupes(http):
    client, runtime = http
    token = await shared_callback_token(runtime.store)
    mark = await store_call_variables(runtime.store, {"name": "A"}, meta={"campaign": "c1"})
    body = {"CallSid": "CA1", "EventType": "terminal", "Status": "busy", "CustomField": mark}
    assert (await client.post("/exotel/status", json=body)).status_code == 403
    assert (await client.post("/exotel/status/wrong-token", json=body)).status_code == 403
    assert (await client.post(f"/exotel/status/{token}", json=body)).status_code == 200
    assert (await client.post(f"/exotel/status/{token}", json=body)).status_code == 200
    # Form body and GET query reach the same parser; a new EventType is a new event.
    form = {"CallSid": "CA1", "EventType": "answered", "Status": "in-progress", "CustomField": mark}
    assert (await client.post(f"/exotel/status/{token}", data=form)).status_code == 200
    query = {**form, "EventType": "answered"}
    assert (await client.get(f"/exotel/status/{token}", params=query)).status_code == 200
    queued = await runtime.store.items(events_queue("c1"))
    kinds = sorted(json.loads(item.payload)["kind"] for item in queued)
    assert kinds == ["status:answered", "status:terminal"]  # each once
    assert (await client.post(f"/exotel/status/{token}", content=b"{}")).status_code == 400


async def test_api_calls_needs_the_bearer_and_names_missing_credentials(http):
    client, _ = http
    body = {"to": "+919876543210", "variables": {"name": "Asha"}}
    assert (await client.post("/api/calls", json=body)).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (await client.post("/api/calls", json=body, headers=wrong)).status_code == 401
    answer = await client.post(
        "/api/calls", json=body, headers={"Authorization": f"Bearer {API_TOKEN}"}
    )
    assert answer.status_code == 503
    for name in ("EXOTEL_ACCOUNT_SID", "EXOTEL_API_KEY", "EXOTEL_API_TOKEN", "PUBLIC_URL"):
        assert name in answer.json()["detail"]


async def test_api_calls_places_the_call_with_a_token_not_the_data():
    async with FakeExotelApi() as exotel:
        runtime = _runtime(**exotel_env(exotel, "https://bot.example.com"))
        async with serving(create_app(runtime.settings, runtime=runtime)) as base:
            async with httpx.AsyncClient(base_url=base, timeout=5) as client:
                auth = {"Authorization": f"Bearer {API_TOKEN}"}
                bad = await client.post("/api/calls", json={"to": "12345"}, headers=auth)
                answer = await client.post(
                    "/api/calls",
                    json={"to": "9876543210", "variables": {"name": "Asha", "amount": 1500}},
                    headers=auth,
                )
            await exotel.wait_idle()
    assert bad.status_code == 422
    assert answer.status_code == 200
    form = exotel.calls[0].form
    assert answer.json()["call_sid"] == exotel.calls[0].call_sid
    assert form["From"] == "+919876543210" and "Asha" not in json.dumps(form)
    token = await shared_callback_token(runtime.store)
    assert form["StatusCallback"] == f"https://bot.example.com/exotel/status/{token}"
    assert form["Url"].endswith("/exoml/start_voice/123456")


async def test_dial_command_prints_the_call_sid(tmp_path, monkeypatch, capsys):
    async with FakeExotelApi() as exotel:
        for key, value in exotel_env(exotel, "https://bot.example.com").items():
            monkeypatch.setenv(key.upper(), value)
        monkeypatch.setenv("BOT_DATA_DIR", str(tmp_path))
        argv = ["dial", "+919876543210", "--var", "name=Asha", "--var", "amount=1500"]
        code = await asyncio.to_thread(main, argv)
        await exotel.wait_idle()
    assert code == 0
    assert capsys.readouterr().out.strip() == exotel.calls[0].call_sid
    # The variables wait in the shared store (the one `serve` opens) under the CustomField.
    store = open_store(None, tmp_path)
    try:
        raw = await store.get(f"dial:{exotel.calls[0].custom_field}")
    finally:
        await store.close()
    assert raw is not None and json.loads(raw)["variables"] == {"name": "Asha", "amount": "1500"}


async def test_dial_and_campaign_name_missing_settings(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    for key in ("EXOTEL_ACCOUNT_SID", "EXOTEL_API_KEY", "EXOTEL_API_TOKEN", "PUBLIC_URL"):
        monkeypatch.delenv(key, raising=False)
    assert await asyncio.to_thread(main, ["dial", "+919876543210"]) == 2
    err = capsys.readouterr().err
    for name in ("EXOTEL_ACCOUNT_SID", "EXOTEL_API_KEY", "EXOTEL_API_TOKEN", "EXOTEL_CALLER_ID"):
        assert name in err
    assert "EXOTEL_APP_ID" in err and "PUBLIC_URL" in err
    (tmp_path / "c.csv").write_text("phone\n+919876543210\n")
    assert await asyncio.to_thread(main, ["campaign", "run", str(tmp_path / "c.csv")]) == 2
    assert "EXOTEL_API_KEY" in capsys.readouterr().err
    assert not (tmp_path / ".bot-data").exists()


def test_memory_store_is_the_default_of_a_built_runtime():
    assert isinstance(_runtime().store, MemoryStore)
