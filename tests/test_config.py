"""Settings from env and TOML, provider choice, and errors a user can act on."""

from __future__ import annotations

import pytest

from bot.config import ConfigError, load_settings
from bot.providers import REGISTRY, choose_providers

CLOUD_KEYS = ("DEEPGRAM_API_KEY", "OPENAI_API_KEY", "CARTESIA_API_KEY")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in (*CLOUD_KEYS, "BOT_STT", "BOT_LLM", "BOT_TTS", "BOT_CONFIG", "EXOTEL_BASIC_AUTH"):
        monkeypatch.delenv(name, raising=False)


def test_no_keys_means_the_offline_set():
    choice = choose_providers(load_settings())
    assert (choice.stt.name, choice.llm.name, choice.tts.name) == ("whisper", "scripted", "piper")
    assert "no DEEPGRAM_API_KEY" in choice.summary()


def test_keys_choose_the_cloud(monkeypatch):
    for key in CLOUD_KEYS:
        monkeypatch.setenv(key, "k")
    choice = choose_providers(load_settings())
    assert (choice.stt.name, choice.llm.name, choice.tts.name) == ("deepgram", "openai", "cartesia")


def test_explicit_choice_wins_over_keys(monkeypatch):
    monkeypatch.setenv("DEEPGRAM_API_KEY", "k")
    monkeypatch.setenv("BOT_STT", "whisper")
    assert choose_providers(load_settings()).stt.name == "whisper"


def test_cloud_without_key_names_provider_and_offline_alternative(monkeypatch):
    monkeypatch.setenv("BOT_TTS", "cartesia")
    with pytest.raises(ConfigError) as e:
        choose_providers(load_settings())
    text = str(e.value)
    assert "CARTESIA_API_KEY" in text and "Cartesia" in text and "BOT_TTS=piper" in text


def test_unknown_provider_lists_the_known_ones(monkeypatch):
    monkeypatch.setenv("BOT_LLM", "gpt5000")
    with pytest.raises(ConfigError, match="openai, scripted"):
        choose_providers(load_settings())


def test_toml_file_sections_map_to_env_names(tmp_path, monkeypatch):
    config = tmp_path / "bot.toml"
    config.write_text(
        '[bot]\nstt = "deepgram"\ngreeting = "Hello from TOML"\n'
        '[deepgram]\napi_key = "file-key"\nmodel = "nova-2"\n'
        '[holding]\nmode = "always"\n'
    )
    settings = load_settings(config)
    assert settings.bot_greeting == "Hello from TOML"
    assert settings.deepgram_model == "nova-2" and settings.holding_mode == "always"
    assert settings.deepgram_api_key.get_secret_value() == "file-key"
    # The environment wins over the file.
    monkeypatch.setenv("DEEPGRAM_MODEL", "nova-3")
    monkeypatch.setenv("BOT_CONFIG", str(config))
    assert load_settings().deepgram_model == "nova-3"


def test_unknown_toml_key_suggests_the_right_one(tmp_path):
    config = tmp_path / "bot.toml"
    config.write_text('[deepgram]\nmodle = "nova-3"\n')
    with pytest.raises(
        ConfigError, match=r"unknown setting \[deepgram\] modle.*\[deepgram\] model"
    ):
        load_settings(config)


def test_malformed_toml_names_file_and_line(tmp_path):
    config = tmp_path / "bot.toml"
    config.write_text("[bot]\ngreeting = \n")
    with pytest.raises(ConfigError, match=r"bot.toml is not valid TOML.*line 2"):
        load_settings(config)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("env", "value", "fragment"),
    [
        ("BOT_SAMPLE_RATE", "44100", "8000, 16000, 24000"),
        ("EXOTEL_BASIC_AUTH", "nocolon", "user:password"),
        ("HOLDING_MODE", "sometimes", "HOLDING_MODE"),
        ("VAD_STOP_SECS", "-1", "VAD_STOP_SECS"),
    ],
)
def test_bad_values_name_the_key(monkeypatch, env, value, fragment):
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=fragment) as e:
        load_settings()
    if "AUTH" in env:
        assert value not in str(e.value)  # secrets are not echoed back


def test_every_registered_provider_has_a_label_and_factory():
    assert {kind for kind, _ in REGISTRY} == {"stt", "llm", "tts"}
    for provider in REGISTRY.values():
        assert provider.label and callable(provider.factory)
