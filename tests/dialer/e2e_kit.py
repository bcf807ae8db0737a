"""The whole outbound path on loopback: the real bot, fake providers, the fake Exotel API.

The fake Exotel places each call by opening the bot's WebSocket and playing the callee's
persona through the simulator (``bot.testing.exotel_callee``); the fake Deepgram hears each
persona's tones as its phrases, so concurrent calls keep their own transcripts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from bot.config import Settings
from bot.providers import SharedResources, choose_providers
from bot.server.app import create_app
from bot.server.runtime import Runtime
from bot.state.memory import MemoryStore
from bot.testing.exotel_api import DEFAULT_KEY, DEFAULT_SID, DEFAULT_TOKEN, FakeExotelApi
from bot.testing.exotel_callee import SimulatedCallee, ToneTranscriber
from bot.testing.fakes import FakeDeepgram, FakeProviders
from bot.testing.localserver import serving
from tests.conftest import energy_vad_factory
from tests.helpers import cloud_settings

API_TOKEN = "test-api-token"


@dataclass
class Outbound:
    base: str
    runtime: Runtime
    exotel: FakeExotelApi
    callee: SimulatedCallee
    fakes: FakeProviders

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def store(self) -> MemoryStore:
        return self.runtime.store  # type: ignore[return-value]


def exotel_env(exotel: FakeExotelApi, public_url: str) -> dict[str, str]:
    """The settings that point the dialer at the fake Exotel and back at the bot."""
    return {
        "exotel_account_sid": DEFAULT_SID,
        "exotel_api_key": DEFAULT_KEY,
        "exotel_api_token": DEFAULT_TOKEN,
        "exotel_api_url": exotel.base_url,
        "exotel_caller_id": "08047491899",
        "exotel_app_id": "123456",
        "public_url": public_url,
        "bot_api_token": API_TOKEN,
    }


@asynccontextmanager
async def outbound_bot(personas: dict[str, str] | None = None) -> AsyncIterator[Outbound]:
    fakes = FakeProviders(deepgram=FakeDeepgram(transcriber=ToneTranscriber()))
    async with fakes, FakeExotelApi() as exotel:
        s = cloud_settings(fakes, bot_greeting="Hello Asha, this is the bank.")
        runtime = Runtime(
            settings=s,
            choice=choose_providers(s),
            shared=SharedResources(),
            vad_factory=energy_vad_factory,
            keep_finished=8,
            store=MemoryStore(),
        )
        async with serving(create_app(s, runtime=runtime)) as base:
            runtime.settings = Settings(**{**s.model_dump(), **exotel_env(exotel, base)})
            ws_url = base.replace("http://", "ws://") + "/exotel/ws"
            callee = SimulatedCallee(ws_url, dict(personas or {}))
            exotel.on_call = callee
            yield Outbound(base, runtime, exotel, callee, fakes)
            await exotel.wait_idle(20.0)
