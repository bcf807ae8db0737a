"""`python -m bot doctor` against the fake providers: good keys pass, a bad key fails."""

from __future__ import annotations

import pytest

from bot.cli.doctor import applet_settings, run_checks
from bot.config import Settings
from bot.providers import choose_providers
from bot.testing import FakeProviders
from tests.helpers import cloud_settings


async def test_cloud_keys_checked_against_fakes():
    async with FakeProviders() as fakes:
        settings = cloud_settings(fakes, openai_model="gpt-4.1")
        checks = await run_checks(settings, choose_providers(settings))
        assert [c.ok for c in checks] == [True, True, True], checks
        assert "listed" in checks[1].detail

        bad = cloud_settings(fakes, deepgram_api_key="wrong", cartesia_api_key="wrong")
        checks = {c.name: c for c in await run_checks(bad, choose_providers(bad))}
        assert not checks["stt deepgram"].ok and "401" in checks["stt deepgram"].detail
        assert not checks["tts cartesia"].ok and checks["llm openai"].ok


@pytest.mark.models
async def test_offline_models_and_knowledge_checked():
    settings = Settings(bot_stt="whisper", bot_llm="scripted", bot_tts="piper")
    checks = await run_checks(settings, choose_providers(settings))
    assert [c.name for c in checks] == ["offline models", "knowledge file"]
    assert all(c.ok for c in checks), checks


def test_applet_settings_mask_the_password():
    settings = Settings(exotel_basic_auth="exo:s3cret", bot_sample_rate=16000)
    lines = "\n".join(applet_settings(settings, "https://bot.example.com"))
    assert "wss://exo:<password>@bot.example.com/exotel/ws?sample-rate=16000" in lines
    assert "https://exo:<password>@bot.example.com/exotel/url" in lines
    assert "s3cret" not in lines
