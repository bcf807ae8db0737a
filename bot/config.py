"""Settings from the environment and an optional TOML file, validated at start-up.

Every setting is an environment variable (``DEEPGRAM_API_KEY``, ``BOT_STT``, ...). In the TOML
file the same setting is written as a section and a key: ``[deepgram] api_key = ...`` is
``DEEPGRAM_API_KEY``, ``[bot] stt = "whisper"`` is ``BOT_STT``. The environment wins over the
file, so a deployment can keep one file and override a key per instance.

Errors name the key (in both spellings) and say how to fix it; the server never starts
half-configured.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from serializers.exotel import SUPPORTED_SAMPLE_RATES

DATA_DIR = Path(__file__).parent / "data"

# Live calls one process takes before refusing more. Measured on 2 cores with faked cloud
# providers, with and without TLS (bench/capacity.py): 50 calls keep every figure, 55 add
# 240 ms to the p99 and 60 break pacing. The margin is for what fakes do not show (real
# networks, longer prompts and replies).
DEFAULT_MAX_CALLS = 40

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly, concise phone assistant for a customer-service line in India. "
    "Your words are spoken aloud on a phone call: answer in one or two short sentences, "
    "no lists, no markdown, no emojis. If the caller says goodbye or has nothing else, "
    "say a short goodbye and call the end_call function."
)


class ConfigError(ValueError):
    """A configuration problem, worded for the person who has to fix it."""


class Settings(BaseSettings):
    """All of the bot's settings. Field names are the environment variable names."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    # Server
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=1, le=65535)
    exotel_basic_auth: SecretStr | None = None
    public_url: str | None = None
    bot_sample_rate: int = 8000
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

    # Providers (None: the cloud one if its key is set, else the offline one)
    bot_stt: str | None = None
    bot_llm: str | None = None
    bot_tts: str | None = None

    deepgram_api_key: SecretStr | None = None
    deepgram_base_url: str | None = None
    deepgram_model: str = "nova-3-general"

    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4.1-mini"

    cartesia_api_key: SecretStr | None = None
    cartesia_url: str | None = None
    cartesia_voice_id: str = "f786b574-daa5-4673-aa0c-cbe3e8534c02"
    cartesia_model: str = "sonic-3.6"

    # Conversation
    bot_language: str = "en"
    bot_system_prompt: str | None = None
    bot_system_prompt_file: Path | None = None
    bot_greeting: str = "Namaste! Thank you for calling. How can I help you today?"
    bot_knowledge_file: Path = DATA_DIR / "knowledge.toml"
    vad_start_secs: float = Field(0.2, gt=0, le=2)
    vad_stop_secs: float = Field(0.2, gt=0, le=2)
    vad_confidence: float = Field(0.7, gt=0, le=1)
    turn_speech_timeout_secs: float = Field(0.3, ge=0, le=5)
    # The wait instead when the words stop mid-sentence (English only, bot.conversation.turns).
    turn_unfinished_timeout_secs: float = Field(1.2, ge=0, le=5)
    # Ask the LLM at the VAD stop and hold its answer until the turn ends (bot.conversation.turns).
    turn_speculative: bool = True
    # With it, the silence after which the STT finalizes and the LLM is asked; the turn still
    # ends VAD_STOP_SECS + TURN_SPEECH_TIMEOUT_SECS after the last word (bot.conversation.turns).
    # 0 (or >= VAD_STOP_SECS): at the VAD stop. Streaming STTs only.
    turn_guess_after_secs: float = Field(0.1, ge=0, le=2)
    # Pause the bot at the caller's first voiced window, resume if it was not speech.
    barge_in_pause: bool = True

    # Holding phrases
    holding_mode: Literal["off", "always", "adaptive"] = "adaptive"
    holding_delay_secs: float = Field(0.7, ge=0, le=10)
    holding_second_delay_secs: float = Field(3.0, ge=0, le=30)
    holding_max_per_turn: int = Field(2, ge=0, le=10)
    holding_phrases: list[str] = [
        "One moment, please.",
        "Let me check that for you.",
        "Just a second.",
        "Give me a moment.",
    ]
    holding_cache_dir: Path = Path.home() / ".cache" / "exotel-bot" / "phrases"

    # Lifecycle
    handshake_timeout_secs: float = Field(10.0, gt=0)
    idle_prompt_secs: float = Field(8.0, gt=0)
    idle_hangup_secs: float = Field(8.0, gt=0)
    idle_prompt: str = "Are you still there?"
    goodbye: str = "Thank you for calling. Goodbye!"
    apology: str = "Sorry, I am having trouble right now. Please bear with me."
    max_call_secs: float = Field(55 * 60, gt=0, le=60 * 60)
    # Streams past this many live calls are refused (HTTP 503 on the upgrade, which a balancer
    # retries elsewhere) instead of slowing every call in the process;
    # 0 = no limit. See bench/capacity.py for the measured ceiling.
    bot_max_calls: int = Field(DEFAULT_MAX_CALLS, ge=0)
    # SIGTERM: live calls run on for up to this long before the goodbye. 30 s suits a PaaS
    # restart; on Kubernetes use 3900 (Exotel's 60-minute stream cap plus margin) with the same
    # terminationGracePeriodSeconds (deploy/k8s/, docs/scaling.md).
    shutdown_drain_secs: float = Field(30.0, ge=0)
    # Caller's end of speech -> the cached apology when no answer audio came
    # (bot.conversation.faults).
    # Holding phrases cover 0.7 s and 3 s; past ~4 s of silence a caller thinks the line died.
    provider_timeout_secs: float = Field(4.0, gt=0)

    # Shared state (bot.state): unset = an SQLite file under BOT_DATA_DIR (one instance, no
    # server); redis://host:port/db to share call outcomes between instances (docs/scaling.md).
    bot_state_url: str | None = None
    bot_data_dir: Path = Path(".bot-data")
    # /ready turns 503 once the shared store has been unreachable this long.
    state_down_grace_secs: float = Field(10.0, ge=0)

    # Observability
    call_records_dir: Path | None = None
    call_records_audio: bool = False
    call_records_retention_days: float = Field(30, gt=0)
    # The calls page and /api/calls: "user:password"; required off loopback.
    admin_basic_auth: SecretStr | None = None

    # Post-call webhooks ([webhooks] url / secret in the file)
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_give_up_secs: float = Field(86400, gt=0)
    webhook_timeout_secs: float = Field(10, gt=0, le=60)
    # The first retry's backoff ceiling (doubling to 1 h); tests shorten it.
    webhook_first_retry_secs: float = Field(5, gt=0, le=3600)

    # Outbound calls through Exotel's Calls API
    exotel_account_sid: str | None = None
    exotel_api_key: SecretStr | None = None
    exotel_api_token: SecretStr | None = None
    exotel_api_url: str = "https://api.in.exotel.com"
    exotel_caller_id: str | None = None
    exotel_app_id: str | None = None
    # Bearer token for POST /api/calls.
    bot_api_token: SecretStr | None = None

    # Sarvam AI speech (Indian languages)
    sarvam_api_key: SecretStr | None = None
    sarvam_base_url: str | None = None
    sarvam_stt_url: str | None = None
    sarvam_tts_url: str | None = None
    sarvam_stt_model: str = "saaras:v3"
    # codemix: Hindi words in Devanagari, English words in Latin (Hinglish).
    sarvam_stt_mode: str = "codemix"
    sarvam_tts_model: str = "bulbul:v3"
    sarvam_speaker: str = "priya"  # a woman's voice, like the phrases' feminine forms

    # Turn end: the smart-turn model's verdict with the transcript rule (bot.conversation).
    turn_model: Literal["smart-turn", "off"] = "off"
    # With the model on: the probability above which "complete" answers at once, and what an
    # "incomplete" verdict waits (bot.conversation.turn_hybrid; measured defaults in README).
    turn_model_threshold: float = Field(0.9, gt=0, lt=1)
    turn_model_incomplete: Literal["speech-timeout", "unfinished-timeout"] = "speech-timeout"

    # Tables a room reads itself, as the file gives them (see room_tables).
    _room_tables: dict[str, Any] = PrivateAttr(default_factory=dict)

    @field_validator("bot_sample_rate")
    @classmethod
    def _supported_rate(cls, value: int) -> int:
        if value not in SUPPORTED_SAMPLE_RATES:
            raise ValueError(f"must be one of {', '.join(map(str, SUPPORTED_SAMPLE_RATES))}")
        return value

    @field_validator("exotel_basic_auth")
    @classmethod
    def _user_colon_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and ":" not in value.get_secret_value():
            raise ValueError('must look like "user:password"')
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Order is priority: explicit arguments, then the environment, then the TOML file.
        return init_settings, env_settings, _TomlSource(settings_cls)

    @property
    def room_tables(self) -> dict[str, Any]:
        """[agent] (with [agent.departments], [agent.digits]), [[tools]], [phrases.<lang>],
        [voices] and [analysis] (with [analysis.extract]) as the file gives them. Each room's
        parser checks its own keys at start and reads the environment's overrides
        (AGENT_CONTEXT_URL, AGENT_LANGUAGE, ...)."""
        return self._room_tables

    def system_prompt(self) -> str:
        if self.bot_system_prompt_file:
            return self.bot_system_prompt_file.read_text(encoding="utf-8").strip()
        return self.bot_system_prompt or DEFAULT_SYSTEM_PROMPT


# Sections whose tables a room parses itself (see Settings.room_tables).
ROOM_TABLES = {"agent", "tools", "phrases", "voices", "analysis"}
# File spellings whose variable is named differently: [webhooks] url is WEBHOOK_URL.
SPELLED_IN_THE_FILE = {
    "webhooks_url": "webhook_url",
    "webhooks_secret": "webhook_secret",
    "webhooks_give_up_secs": "webhook_give_up_secs",
    "webhooks_timeout_secs": "webhook_timeout_secs",
}

# The TOML file in use; set by load_settings before Settings() reads its sources.
_toml_path: Path | None = None


class _TomlSource(PydanticBaseSettingsSource):
    """Flattens ``[section] key = v`` to the ``section_key`` setting."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self._values = read_toml_settings(_toml_path, settings_cls) if _toml_path else {}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (--config or BOT_CONFIG)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


def read_room_tables(path: Path) -> dict[str, Any]:
    """The sections a room parses itself (ROOM_TABLES), keyed by their lower-case name."""
    return {k.lower(): v for k, v in _read_toml(path).items() if k.lower() in ROOM_TABLES}


def read_toml_settings(path: Path, settings_cls: type[BaseSettings] = Settings) -> dict:
    """Read a config file into flat setting names, refusing unknown keys."""
    data = _read_toml(path)
    known = set(settings_cls.model_fields)
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key.lower() in ROOM_TABLES:
            continue  # read_room_tables
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, sub_value in items:
            name = f"{key}_{sub}".lower() if sub else key.lower()
            name = SPELLED_IN_THE_FILE.get(name, name)
            if name not in known:
                spelled = f"[{key}] {sub}" if sub else key
                hint = difflib.get_close_matches(name, known, n=1)
                fix = f"; did you mean {_toml_spelling(hint[0])}?" if hint else ""
                raise ConfigError(f"config file {path}: unknown setting {spelled}{fix}")
            flat[name] = sub_value
    return flat


def _toml_spelling(name: str) -> str:
    section, _, key = name.partition("_")
    return f"[{section}] {key} (env {name.upper()})"


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from env + optional TOML (``config_file`` or ``BOT_CONFIG``), validated."""
    global _toml_path
    path = config_file or os.environ.get("BOT_CONFIG")
    _toml_path = Path(path) if path else None
    try:
        settings = Settings(**overrides)
    except ValidationError as e:
        raise ConfigError(_explain(e)) from None
    finally:
        _toml_path = None
    if path:
        settings._room_tables = read_room_tables(Path(path))
    if settings.bot_system_prompt_file and not settings.bot_system_prompt_file.is_file():
        raise ConfigError(
            f"BOT_SYSTEM_PROMPT_FILE ([bot] system_prompt_file): {settings.bot_system_prompt_file}"
            " does not exist"
        )
    return settings


def _explain(error: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for item in error.errors():
        name = str(item["loc"][0]) if item["loc"] else "?"
        value = item.get("input")
        shown = "" if "key" in name or "auth" in name else f" (got {value!r})"
        lines.append(f"  {name.upper()} / {_toml_spelling(name)}: {item['msg']}{shown}")
    return "\n".join(lines)
