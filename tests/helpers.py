"""Test helpers: caller audio, a runtime on fake cloud providers, the server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np

from bot.config import Settings
from bot.providers import SharedResources, choose_providers
from bot.server.app import create_app
from bot.server.runtime import Runtime
from bot.testing import FakeProviders
from bot.testing.localserver import serving
from tests.conftest import energy_vad_factory


def tone(secs: float, rate: int = 8000, freq: float = 300.0, amp: float = 8000.0) -> np.ndarray:
    """A loud tone: 'speech' to the EnergyVAD, and to the fake Deepgram any audio is words."""
    t = np.arange(int(secs * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * amp).astype(np.int16)


def cloud_settings(fakes: FakeProviders, **overrides) -> Settings:
    env = {k.lower(): v for k, v in fakes.env().items()}
    values = {
        "bot_stt": "deepgram",
        "bot_llm": "openai",
        "bot_tts": "cartesia",
        "bot_greeting": "Hello, how can I help?",
        "holding_mode": "off",
        **env,
        **overrides,
    }
    return Settings(**values)


@asynccontextmanager
async def bot_on_fakes(fakes: FakeProviders, **settings) -> AsyncIterator[tuple[str, Runtime]]:
    """The real server, cloud providers pointed at the fakes; yields (ws url, runtime)."""
    s = cloud_settings(fakes, **settings)
    runtime = Runtime(
        settings=s,
        choice=choose_providers(s),
        shared=SharedResources(),
        vad_factory=energy_vad_factory,
        keep_finished=4,
    )
    async with serving(create_app(s, runtime=runtime)) as base:
        yield base.replace("http://", "ws://") + "/exotel/ws", runtime
