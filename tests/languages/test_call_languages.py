"""Language per call, end to end: simulator -> server -> fake Deepgram/OpenAI/Cartesia."""

from __future__ import annotations

import asyncio
import json

import pytest

from bot.conversation.holding import RenderedPhrase, VoiceId
from bot.languages import DEFAULT_PHRASES
from bot.simulator import CallConfig, ExotelSimulator, Hangup, Say, WaitForBot
from bot.testing import FakeCartesia, FakeDeepgram, FakeOpenAI, FakeProviders, synthesize_speech
from tests.callkit import phrase_cache
from tests.helpers import bot_on_fakes, tone

HINDI = DEFAULT_PHRASES["hi-IN"]
HINDI_VOICE = "hindi-voice-0001"


@pytest.fixture
async def fakes():
    providers = FakeProviders(
        deepgram=FakeDeepgram(finalize_latency=0.05),
        openai=FakeOpenAI(first_token_latency=0.05),
        cartesia=FakeCartesia(first_audio_latency=0.02, seconds_per_word=0.05),
    )
    async with providers:
        yield providers


def _generations(fakes: FakeProviders) -> list[dict]:
    return [
        m
        for c in fakes.cartesia.connections
        for m in c.messages
        if isinstance(m.get("transcript"), str) and m["transcript"].strip()
    ]


async def test_a_hindi_call_hears_speaks_and_holds_in_hindi(fakes, monkeypatch):
    monkeypatch.setenv("CARTESIA_VOICE_ID_HI_IN", HINDI_VOICE)
    monkeypatch.setenv("AGENT_LANGUAGES", "en-IN,hi-IN")
    fakes.deepgram.add_transcripts("मेरा ऑर्डर कब आएगा")
    fakes.openai.add_replies("आपका ऑर्डर 3 दिन में आएगा।")
    async with bot_on_fakes(fakes) as (url, runtime):
        hindi_cache = phrase_cache(list(HINDI.holding))
        runtime.shared.phrase_caches = {"hi-IN": hindi_cache}
        config = CallConfig(url=url, wait_timeout=10, custom_parameters={"lang": "hi-IN"})
        await ExotelSimulator(config).run(
            [WaitForBot(gap=0.3), Say(tone(0.8), label="q"), WaitForBot(gap=0.3), Hangup()]
        )
        await asyncio.sleep(0.2)
        session = runtime.finished_calls[-1]

    query = fakes.deepgram.connections[0].query
    assert query["language"] == "hi" and query["model"] == "nova-3-general"
    spoken = _generations(fakes)
    assert spoken and all(m["language"] == "hi" for m in spoken)
    assert all(m["voice"]["id"] == HINDI_VOICE for m in spoken)
    assert spoken[0]["transcript"].strip() == HINDI.greeting
    # Numbers are read out in Hindi before the TTS.
    assert any("तीन दिन" in m["transcript"] for m in spoken)
    assert session.holding is not None and session.holding._texts == list(HINDI.holding)
    assert session.holding._phrases is hindi_cache
    system = fakes.openai.requests[-1]["messages"][0]["content"]
    assert "Reply in Hindi, written in Devanagari" in system
    assert session.language.language_of_turn("मेरा ऑर्डर कब आएगा") == "hi-IN"


async def test_an_english_call_is_as_before(fakes):
    fakes.deepgram.add_transcripts("what are your opening hours")
    fakes.openai.add_replies("Nine to six.")
    async with bot_on_fakes(fakes) as (url, runtime):
        await ExotelSimulator(CallConfig(url=url, wait_timeout=10)).run(
            [WaitForBot(gap=0.3), Say(tone(0.8)), WaitForBot(gap=0.3), Hangup()]
        )
        await asyncio.sleep(0.2)
        session = runtime.finished_calls[-1]
    query = fakes.deepgram.connections[0].query
    assert query["language"] == "en" and "language_hint" not in query
    spoken = _generations(fakes)
    assert all(m["language"] == "en" for m in spoken)
    assert spoken[0]["transcript"].strip() == runtime.settings.bot_greeting
    system = fakes.openai.requests[-1]["messages"][0]["content"]
    assert system == runtime.settings.system_prompt()
    assert session.languages.switcher is None  # no per-turn work on a fixed-language call


async def test_auto_switches_after_two_hindi_turns_and_not_before(fakes, monkeypatch, tmp_path):
    monkeypatch.setenv("CARTESIA_VOICE_ID_HI_IN", HINDI_VOICE)
    monkeypatch.setenv("AGENT_LANGUAGES", "en-IN,hi-IN")
    turns = [
        "what are your opening hours please",
        "मेरा ऑर्डर कब आएगा बताइए",
        "मुझे अपना पैसा वापस चाहिए",
        "धन्यवाद आपका बहुत शुक्रिया",
    ]
    fakes.deepgram.add_transcripts(*turns)
    fakes.openai.add_replies("Nine to six.", "Order soon.", "रिफ़ंड मिलेगा।", "जी।")
    script = [WaitForBot(gap=0.3)]
    for i in range(len(turns)):
        script += [Say(tone(0.8), label=f"t{i}"), WaitForBot(gap=0.3)]
    async with bot_on_fakes(fakes, call_records_dir=tmp_path) as (url, runtime):
        config = CallConfig(url=url, wait_timeout=10, custom_parameters={"lang": "auto"})
        await ExotelSimulator(config).run([*script, Hangup()])
        await asyncio.sleep(0.2)
        session = runtime.finished_calls[-1]

    query = fakes.deepgram.connections[0].query
    assert query["language"] == "multi"
    systems = [r["messages"][0]["content"] for r in fakes.openai.requests]
    assert len(systems) == 4
    assert "Indian English" in systems[0] and "Indian English" in systems[1]  # one odd turn
    assert "Hindi" in systems[2] and "Hindi" in systems[3]  # the second Hindi turn switches
    assert [d.reason for d in session.languages.switcher.switches] == ["two turns"]
    assert session.language.tracker.turn_languages() == ["en-IN", "hi-IN", "hi-IN", "hi-IN"]
    spoken = _generations(fakes)
    assert spoken[-1]["language"] == "hi" and spoken[-1]["voice"]["id"] == HINDI_VOICE
    assert spoken[0]["language"] == "en"
    assert session.faults is not None and session.faults.apology == HINDI.apology
    # Deepgram multi hears both: the socket is kept, not reconnected, on the switch.
    assert len(fakes.deepgram.connections) == 1
    (path,) = tmp_path.rglob("*.json")
    record = json.loads(path.read_text(encoding="utf-8"))
    assert [t["language"] for t in record["turns"]] == ["en-IN", "hi-IN", "hi-IN", "hi-IN"]
    assert record["languages"] == ["en-IN", "hi-IN", "hi-IN", "hi-IN"]


def test_holding_processor_switches_cache_and_texts():
    from bot.conversation.holding import HoldingPhraseProcessor

    english = phrase_cache(["One moment, please."])
    hindi = phrase_cache(list(HINDI.holding))
    processor = HoldingPhraseProcessor(english, ["One moment, please."])
    processor.use_phrases(hindi, HINDI.holding)
    assert processor._phrases is hindi and processor._texts == list(HINDI.holding)
    pcm = synthesize_speech("x", 8000, 0.1).pcm
    hindi.put(RenderedPhrase.from_pcm("नया", pcm, 8000, VoiceId("t")))
    assert processor._phrases.get("नया", 8000) is not None
