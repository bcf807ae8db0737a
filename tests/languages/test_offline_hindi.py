"""Offline Hindi with the real models: the multilingual Whisper base and espeak-ng's Hindi."""

from __future__ import annotations

import asyncio
import shutil

import numpy as np
import pytest

from bot.config import Settings
from bot.conversation.language import prepare_languages
from bot.languages import DEFAULT_PHRASES
from bot.providers import SharedResources, choose_providers
from bot.providers.offline import _resample_once, get_offline_models, synthesize
from bot.providers.offline_hindi import (
    BASE_PIN,
    DetectingWhisperSTT,
    EspeakHindiTTS,
    espeak_pcm,
    get_hindi_models,
    hear,
    joined_model_dir,
    restricted_language,
)
from bot.providers.scripted import load_knowledge, load_language_knowledge
from bot.server.app import create_app
from bot.server.runtime import Runtime
from bot.server.startup import load_room_configs
from bot.simulator import CallConfig, ExotelSimulator, Hangup, Say, WaitForBot
from bot.testing.localserver import serving

pytestmark = [
    pytest.mark.models,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="apt-get install espeak-ng"),
]


def test_the_joined_base_model_is_the_pinned_file():
    model = joined_model_dir() / BASE_PIN.filename
    assert model.stat().st_size == BASE_PIN.size
    assert get_hindi_models().model_dir == str(model.parent)


def test_espeak_speaks_hindi_at_the_call_rate():
    pcm = espeak_pcm(DEFAULT_PHRASES["hi-IN"].holding[0], rate=8000)
    samples = np.frombuffer(pcm, np.int16)
    assert 0.8 < len(samples) / 8000 < 4.0 and np.abs(samples).max() > 1000


def test_whispers_guess_is_restricted_to_the_calls_languages():
    class Info:  # faster-whisper's TranscriptionInfo, as much as the guess reads
        all_language_probs = [("id", 0.40), ("hi", 0.30), ("th", 0.20), ("en", 0.10)]

    # English counts a tenth (ENGLISH_BIAS): 0.30 / (0.30 + 0.01)
    assert restricted_language(Info(), ("en", "hi")) == ("hi", pytest.approx(0.30 / 0.31))
    assert restricted_language(Info(), ("ta",)) == (None, 0.0)


def _16k(pcm8k: bytes) -> np.ndarray:
    return np.frombuffer(_resample_once(pcm8k, 8000, 16000), np.int16).astype(np.float32) / 32768


def test_whisper_base_hears_espeak_hindi_as_hindi_and_its_intent_by_sound():
    whisper = get_hindi_models().whisper
    question = _16k(espeak_pcm("मुझे किसी एजेंट से बात करनी है, शिकायत करनी है।", rate=8000))
    auto = hear(whisper, question, language=None)
    assert auto.language == "hi" and auto.probability >= 0.7 and auto.seconds >= 3.0
    fixed = hear(whisper, question, language="hi")  # decoded as Urdu: see hear()
    match = load_language_knowledge()["hi-IN"].match(fixed.text)
    assert match.name == "agent", fixed.text
    english = _16k(
        synthesize(
            get_offline_models(),
            "Where exactly is your office? Please tell me the full address and a landmark.",
            8000,
        )
    )
    assert hear(whisper, english, language=None).language == "en"


async def test_a_hindi_call_offline_is_heard_answered_and_spoken_in_hindi(monkeypatch):
    monkeypatch.setenv("AGENT_LANGUAGE", "hi-IN")
    monkeypatch.setenv("AGENT_LANGUAGES", "hi-IN,en-IN")
    # Whisper base on Hindi takes a few seconds of CPU; with other tests running beside this
    # one it can pass the 4 s fault timeout, and the apology would stand in for the answer.
    settings = Settings(
        bot_stt="whisper",
        bot_llm="scripted",
        bot_tts="piper",
        holding_mode="off",
        provider_timeout_secs=30,
    )
    rooms = load_room_configs(settings)
    shared = SharedResources(
        offline_models=get_offline_models(),
        knowledge=load_knowledge(settings.bot_knowledge_file),
        knowledge_by_language=load_language_knowledge(settings.bot_knowledge_file),
    )
    choice = choose_providers(settings)
    await prepare_languages(settings, choice, shared, rooms)
    runtime = Runtime(settings, choice, shared, rooms=rooms, keep_finished=1)
    text = "मेरा ऑर्डर अभी तक नहीं आया, डिलीवरी कब होगी?"
    question = np.frombuffer(espeak_pcm(text, rate=8000), np.int16)
    async with serving(create_app(settings, runtime=runtime)) as base:
        url = base.replace("http", "ws") + "/exotel/ws"
        rec = await ExotelSimulator(CallConfig(url=url, wait_timeout=30)).run(
            [WaitForBot(gap=0.3), Say(question, label="q"), WaitForBot(gap=0.3), Hangup()]
        )
        await asyncio.sleep(0.2)
        session = runtime.finished_calls[-1]

    assert rec.violations == [] and rec.turns[0].latency_secs is not None
    assert session.language.language == "hi-IN"
    assert isinstance(session.pipeline.stt, DetectingWhisperSTT)
    assert isinstance(session.pipeline.tts, EspeakHindiTTS)
    hindi = load_language_knowledge()["hi-IN"]
    said = [m["content"] for m in session.pipeline.context.messages if m["role"] == "assistant"]
    answers = {i.answer for i in hindi.intents} | {hindi.fallback}
    assert said[0] == DEFAULT_PHRASES["hi-IN"].greeting
    assert said[-1] in answers  # from the Hindi knowledge (the offline STT hears Hindi poorly)
    assert rec.turns[0].first_bot_audio is not None
