"""Switching a provider is a config change only: every STT x LLM x TTS combination builds."""

from __future__ import annotations

import itertools
from unittest.mock import MagicMock

import pytest
from starlette.websockets import WebSocketState

from bot.config import Settings
from bot.providers import DEFAULTS, SharedResources, choose_providers
from bot.providers.offline import get_offline_models
from bot.providers.scripted import load_knowledge
from bot.telephony.call import CallInfo, CallSession

pytestmark = pytest.mark.models  # the offline providers load the real (shared) models

SERVICE_CLASS = {
    "deepgram": "DirectAudioDeepgramSTTService",
    "whisper": "LocalWhisperSTT",
    "openai": "ClosingOpenAILLMService",
    "scripted": "ScriptedResponder",
    "cartesia": "SharedTLSCartesiaTTSService",
    "piper": "LocalPiperTTS",
}
COMBINATIONS = list(itertools.product(*(DEFAULTS[kind] for kind in ("stt", "llm", "tts"))))


def fake_websocket() -> MagicMock:
    websocket = MagicMock()
    websocket.client_state = WebSocketState.CONNECTED
    websocket.application_state = WebSocketState.CONNECTED
    websocket.headers = {}
    return websocket


@pytest.fixture(scope="module")
def shared() -> SharedResources:
    return SharedResources(
        offline_models=get_offline_models(), knowledge=load_knowledge(Settings().bot_knowledge_file)
    )


@pytest.mark.parametrize(("stt", "llm", "tts"), COMBINATIONS)
@pytest.mark.parametrize("rate", [8000, 24000])
def test_every_combination_builds_from_settings_alone(shared, stt, llm, tts, rate):
    settings = Settings(
        bot_stt=stt,
        bot_llm=llm,
        bot_tts=tts,
        deepgram_api_key="k",
        openai_api_key="k",
        cartesia_api_key="k",
        # Building connects nowhere; the URLs only have to be well formed.
        deepgram_base_url="ws://127.0.0.1:9",
        openai_base_url="http://127.0.0.1:9/v1",
        cartesia_url="ws://127.0.0.1:9/tts/websocket",
    )
    choice = choose_providers(settings)
    info = CallInfo(stream_sid="S", call_sid="C", sample_rate=rate)
    session = CallSession(fake_websocket(), info, settings, choice, shared)
    built = session.pipeline
    classes = {type(built.stt).__name__, type(built.llm).__name__, type(built.tts).__name__}
    assert classes == {SERVICE_CLASS[stt], SERVICE_CLASS[llm], SERVICE_CLASS[tts]}
    # TTS is asked for the call's rate; STT hears the pipeline's input rate.
    assert built.tts._init_sample_rate == rate
    assert built.stt._init_sample_rate == info.in_rate
    # A 24 kHz call is heard at 16 kHz (Silero takes 8 or 16), spoken at 24 kHz.
    assert info.in_rate == (16000 if rate == 24000 else rate)
