"""``python -m bot doctor``: is this deployment ready for a real call?

Checks the config, which providers are chosen and why, whether each chosen cloud key works
(one cheap request each, bounded by a timeout), that the offline models load and match their
pinned hashes, and prints the Exotel applet settings to paste.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx
import websockets
from websockets.asyncio.client import connect

from bot.config import ConfigError, Settings, load_settings
from bot.providers import ProviderChoice, choose_providers, secret_value

CHECK_TIMEOUT_SECS = 8.0
CARTESIA_VERSION = "2026-03-01"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


async def check_deepgram(s: Settings) -> str:
    """Open Deepgram's live socket with the key and close it: no audio, no cost."""
    base = s.deepgram_base_url or "wss://api.deepgram.com"
    parts = urlsplit(base if "://" in base else f"wss://{base}")
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    url = urlunsplit((scheme, parts.netloc, "/v1/listen", "encoding=linear16&sample_rate=8000", ""))
    headers = {"Authorization": f"Token {secret_value(s.deepgram_api_key)}"}
    async with connect(url, additional_headers=headers, open_timeout=CHECK_TIMEOUT_SECS) as ws:
        await ws.send('{"type": "CloseStream"}')
    return f"key accepted by {parts.netloc}"


async def check_openai(s: Settings) -> str:
    """List models: authenticates the key and shows whether OPENAI_MODEL exists."""
    base = (s.openai_base_url or "https://api.openai.com/v1").rstrip("/")
    headers = {"Authorization": f"Bearer {secret_value(s.openai_api_key)}"}
    async with httpx.AsyncClient(timeout=CHECK_TIMEOUT_SECS) as client:
        response = await client.get(f"{base}/models", headers=headers)
    if response.status_code in (401, 403):
        raise RuntimeError(f"key refused ({response.status_code})")
    response.raise_for_status()
    models = {m.get("id") for m in response.json().get("data", [])}
    known = "listed" if s.openai_model in models else "NOT listed (check OPENAI_MODEL)"
    return f"key accepted; model {s.openai_model} {known}"


async def check_cartesia(s: Settings) -> str:
    """Open Cartesia's TTS socket with the key and close it: no synthesis, no cost."""
    url = s.cartesia_url or "wss://api.cartesia.ai/tts/websocket"
    headers = {"X-API-Key": secret_value(s.cartesia_api_key), "Cartesia-Version": CARTESIA_VERSION}
    async with connect(url, additional_headers=headers, open_timeout=CHECK_TIMEOUT_SECS):
        pass
    return f"key accepted by {urlsplit(url).netloc}"


async def check_offline(_s: Settings) -> str:
    from bot.providers.offline import load_offline_models

    started = time.monotonic()
    models = await load_offline_models()
    return (
        f"Whisper tiny.en and Piper {models.piper_voice_id} "
        f"loaded, sha256 verified, in {time.monotonic() - started:.1f} s"
    )


async def _run(name: str, check: Callable[[Settings], Awaitable[str]], s: Settings) -> Check:
    try:
        detail = await asyncio.wait_for(check(s), CHECK_TIMEOUT_SECS + 2)
        return Check(name, True, detail)
    except TimeoutError:
        return Check(name, False, f"no answer within {CHECK_TIMEOUT_SECS:.0f} s")
    except websockets.InvalidStatus as e:
        return Check(name, False, f"refused: HTTP {e.response.status_code}")
    except Exception as e:
        return Check(name, False, f"{e.__class__.__name__}: {e}")


async def run_checks(s: Settings, choice: ProviderChoice) -> list[Check]:
    checks = []
    for kind, provider in (("stt", choice.stt), ("llm", choice.llm), ("tts", choice.tts)):
        probe = {"deepgram": check_deepgram, "openai": check_openai, "cartesia": check_cartesia}
        if provider.name in probe:
            checks.append(await _run(f"{kind} {provider.name}", probe[provider.name], s))
    if choice.needs_offline_models:
        checks.append(await _run("offline models", check_offline, s))
    if choice.llm.name == "scripted":
        checks.append(await _run("knowledge file", _check_knowledge, s))
    return checks


async def _check_knowledge(s: Settings) -> str:
    from bot.providers.scripted import load_knowledge

    knowledge = await asyncio.to_thread(load_knowledge, s.bot_knowledge_file)
    return f"{len(knowledge.intents)} intents in {s.bot_knowledge_file}"


def applet_settings(s: Settings, public_url: str | None) -> list[str]:
    """What to paste into Exotel's Voicebot (and Passthru) applets."""
    base = (public_url or s.public_url or "https://YOUR-APP.example.com").rstrip("/")
    scheme, _, host = base.partition("://")
    ws_scheme = "wss" if scheme == "https" else "ws"
    rate = s.bot_sample_rate
    user = secret_value(s.exotel_basic_auth).partition(":")[0] if s.exotel_basic_auth else None
    creds = f"{user}:<password>@" if user else ""
    lines = [
        f"  Voicebot URL (static):   {ws_scheme}://{creds}{host}/exotel/ws?sample-rate={rate}",
        f"  Voicebot URL (dynamic):  {scheme}://{creds}{host}/exotel/url",
        f"  Passthru applet URL:     {scheme}://{host}/exotel/passthru",
        f"  Health check:            {scheme}://{host}/healthz",
    ]
    if not user:
        lines.append("  Auth: none. Set EXOTEL_BASIC_AUTH=user:password and use the user:password@")
        lines.append("        form above so only Exotel can open streams.")
    if not (public_url or s.public_url):
        lines.append("  (Set PUBLIC_URL or pass --public-url to print your real host.)")
    return lines


def doctor_main(config: str | None, public_url: str | None) -> int:
    print("Exotel voice bot: doctor\n")
    try:
        settings = load_settings(config)
        choice = choose_providers(settings)
    except ConfigError as e:
        print(f"  [FAIL] configuration: {e}")
        return 1
    print("  [ ok ] configuration")
    print(f"  [ ok ] providers: {choice.summary()}")
    checks = asyncio.run(run_checks(settings, choice))
    for check in checks:
        print(f"  [{' ok ' if check.ok else 'FAIL'}] {check.name}: {check.detail}")
    print("\nExotel applet settings:")
    print("\n".join(applet_settings(settings, public_url)))
    failed = [c for c in checks if not c.ok]
    print(f"\n{'All checks passed.' if not failed else f'{len(failed)} check(s) failed.'}")
    return 1 if failed else 0
