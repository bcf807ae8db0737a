"""Sarvam STT and TTS end to end, through the fake that speaks Sarvam's wire protocol."""

from __future__ import annotations

import asyncio

import pytest

from bot.config import ConfigError
from bot.languages import DEFAULT_PHRASES
from bot.providers.languages import check_provider_languages
from bot.server.startup import load_room_configs
from bot.simulator import BargeIn, CallConfig, ExotelSimulator, Hangup, Say, WaitForBot
from bot.testing import FakeOpenAI, FakeProviders
from bot.testing.fakes.sarvam import STT_PATH, TTS_PATH, FakeSarvam
from tests.helpers import bot_on_fakes, cloud_settings, tone

LONG = "आपका ऑर्डर कल तक पहुँच जाएगा। " * 4


@pytest.fixture
async def fakes():
    async with FakeProviders(openai=FakeOpenAI(first_token_latency=0.05)) as providers:
        yield providers


def sarvam_settings(sarvam: FakeSarvam) -> dict:
    return {
        "bot_stt": "sarvam",
        "bot_tts": "sarvam",
        "sarvam_api_key": "fake-sarvam-key",
        "sarvam_stt_url": sarvam.ws_base,
        "sarvam_base_url": sarvam.ws_base.replace("ws://", "http://"),
        "sarvam_tts_url": sarvam.tts_url,
    }


async def test_a_hindi_call_on_sarvam_stt_and_tts_with_a_barge_in(fakes, monkeypatch):
    monkeypatch.setenv("AGENT_LANGUAGES", "en-IN,hi-IN")
    async with FakeSarvam(transcripts=["मेरा ऑर्डर कब आएगा", "और रिफ़ंड?"]) as sarvam:
        fakes.openai.add_replies(LONG, "रिफ़ंड 5 दिन में।")
        async with bot_on_fakes(fakes, **sarvam_settings(sarvam)) as (url, runtime):
            config = CallConfig(url=url, wait_timeout=10, custom_parameters={"lang": "hi"})
            await ExotelSimulator(config).run(
                [
                    WaitForBot(gap=0.3),
                    Say(tone(0.8), label="q1"),
                    BargeIn(tone(0.8), after_bot_start=0.5, label="q2"),
                    WaitForBot(gap=0.4),
                    Hangup(),
                ]
            )
            await asyncio.sleep(0.2)

    (stt,) = sarvam.of(STT_PATH)
    assert stt.query["language-code"] == "hi-IN"
    assert stt.query["model"] == "saaras:v3" and stt.query["mode"] == "codemix"
    assert stt.query["sample_rate"] == "8000" and stt.audio_bytes > 0
    assert [m["data"]["transcript"] for m in stt.sent] == ["मेरा ऑर्डर कब आएगा", "और रिफ़ंड?"]
    heard = [m["content"] for m in fakes.openai.requests[-1]["messages"] if m["role"] == "user"]
    assert heard == ["मेरा ऑर्डर कब आएगा", "और रिफ़ंड?"]

    tts = sarvam.of(TTS_PATH)
    assert len(tts) >= 2  # Pipecat reconnects the TTS socket on the barge-in
    for connection in tts:
        assert connection.query["model"] == "bulbul:v3"
        (config, *_) = connection.configs
        assert config["target_language_code"] == "hi-IN" and config["speaker"] == "priya"
        assert config["speech_sample_rate"] == "8000"  # the call's rate, not bulbul's 24 kHz
    spoken = [t for c in tts for t in c.texts]
    assert spoken[0].strip() == DEFAULT_PHRASES["hi-IN"].greeting
    assert any("पाँच दिन" in t or "पांच दिन" in t for t in spoken)  # numbers read in Hindi
    assert all(c.audio_bytes > 0 for c in tts[:1])


def test_a_language_the_deepgram_model_lacks_stops_the_start(fakes, monkeypatch):
    monkeypatch.setenv("AGENT_LANGUAGES", "en-IN,hi-IN")  # two languages: auto needs multi
    settings = cloud_settings(fakes, deepgram_model="nova-2-general")
    with pytest.raises(ConfigError, match="DEEPGRAM_MODEL=nova-2-general does not stream multi"):
        load_room_configs(settings)
    load_room_configs(cloud_settings(fakes, deepgram_model="nova-3"))  # nova-3 has them all


def test_providers_refuse_a_language_they_lack(fakes):
    settings = cloud_settings(fakes, cartesia_model="sonic-2")
    with pytest.raises(ConfigError, match=r"CARTESIA_MODEL=sonic-2 has no ta-IN.*sonic-3.6"):
        check_provider_languages(settings, "deepgram", "cartesia", ["ta-IN"], auto=False)
    with pytest.raises(ConfigError, match=r"BOT_TTS=piper \(offline\) has no ta-IN"):
        check_provider_languages(settings, "sarvam", "piper", ["ta-IN"], auto=False)
    with pytest.raises(ConfigError, match=r"BOT_STT=whisper \(offline\) has no ta-IN"):
        check_provider_languages(settings, "whisper", "sarvam", ["ta-IN"], auto=False)
    warnings = check_provider_languages(settings, "sarvam", "cartesia", ["hi-IN"], auto=False)
    assert warnings and "CARTESIA_VOICE_ID_HI_IN" in warnings[0]
