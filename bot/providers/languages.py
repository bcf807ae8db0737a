"""What each speech provider calls a language, which languages each model has, and a voice
per language.

The rest of the bot speaks full BCP-47 tags (``en-IN``, ``hi-IN``; bot.languages). Providers
each want their own spelling: Deepgram ``hi`` / ``en-IN`` / ``multi``, Cartesia the bare ``hi``,
Sarvam ``hi-IN``, Whisper ``hi``. This module is that table, the start-up check that the chosen
models have the configured languages (a clear error before the first call, not a silent
English transcript mid-call), and the settings delta a call applies when its language changes.

English keeps exactly today's request: the language it sends is today's ``BOT_LANGUAGE``
(``en`` by default), so an English call's connect URL and messages are unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from loguru import logger

from bot.config import ConfigError, Settings

ENGLISH = "en-IN"

# Deepgram: which languages each model family streams (indian-languages.md §1.1). ``multi``
# (code-switching) covers every Indian language here on nova-3 only.
_DEEPGRAM_MODELS: dict[str, frozenset[str]] = {
    "nova-3": frozenset({"en-IN", "hi-IN", "bn-IN", "mr-IN", "ta-IN", "te-IN", "kn-IN", "multi"}),
    "nova-2": frozenset({"en-IN", "hi-IN"}),
}
# Cartesia: sonic-3.x speaks every target language; sonic-2 and sonic-turbo only Hindi.
_CARTESIA_OLD_MODELS = ("sonic-2", "sonic-turbo", "sonic-english", "sonic-multilingual")
_CARTESIA_OLD_LANGUAGES = frozenset({"en-IN", "hi-IN"})
# Sarvam speaks and hears every target language (bulbul:v3, saaras:v3).
SARVAM_LANGUAGES = frozenset({"en-IN", "hi-IN", "bn-IN", "mr-IN", "ta-IN", "te-IN", "kn-IN"})
# Offline: tiny.en hears English; the multilingual Whisper base hears Hindi (poorly) and tells
# the two apart; Piper speaks English, espeak-ng Hindi.
OFFLINE_LANGUAGES = frozenset({"en-IN", "hi-IN"})


def bare(tag: str) -> str:
    """``hi-IN`` -> ``hi``: the spelling Cartesia, Deepgram and Whisper take."""
    return tag.split("-")[0]


def english_code(settings: Settings) -> str:
    """Today's ``BOT_LANGUAGE`` when it is English (``en``), so English requests stay as they
    were; ``en-IN`` otherwise."""
    legacy = (settings.bot_language or "").strip()
    return legacy if legacy.lower().startswith("en") else ENGLISH


def deepgram_language(tag: str | None, settings: Settings, *, auto: bool = False) -> str:
    """The ``language`` query value: ``multi`` for an ``auto`` call, else ``hi``, ``en-IN``..."""
    if auto:
        return "multi"
    if tag is None or tag == ENGLISH:
        return english_code(settings)
    return bare(tag)


def deepgram_extra(allowed: Iterable[str], *, auto: bool) -> dict[str, Any]:
    """``language_hint`` per allowed language for ``multi`` (deepgram-sdk >= 7.15)."""
    return {"language_hint": [bare(tag) for tag in allowed]} if auto else {}


def _deepgram_family(model: str) -> str | None:
    for family in _DEEPGRAM_MODELS:
        if model == family or model.startswith(family + "-"):
            return family
    return None


def cartesia_language(tag: str | None, settings: Settings) -> str:
    """Cartesia's ``language``: the bare code (``hi``); English as today (``en``)."""
    if tag is None or tag == ENGLISH:
        return bare(english_code(settings))
    return bare(tag)


def cartesia_voice(
    tag: str | None, settings: Settings, env: Mapping[str, str] | None = None
) -> str:
    """The voice for ``tag``: ``CARTESIA_VOICE_ID_HI_IN``, else ``[voices] hi-IN``, else the
    default voice (``CARTESIA_VOICE_ID``), which Cartesia can make speak the language."""
    if tag is None or tag == ENGLISH:
        return settings.cartesia_voice_id
    env = os.environ if env is None else env
    name = "CARTESIA_VOICE_ID_" + tag.upper().replace("-", "_")
    voices = settings.room_tables.get("voices") or {}
    return env.get(name) or voices.get(tag) or voices.get(bare(tag)) or settings.cartesia_voice_id


def call_system_prompt(
    settings: Settings,
    language: str | None,
    *,
    auto: bool = False,
    hinglish: bool = False,
    base: str | None = None,
) -> str:
    """The LLM's instruction for a call: its prompt (``base``, the agent's rendered one, else
    the configured one), plus the language line (``bot.languages.language_instruction``)
    unless the call is English and stays English."""
    from bot.languages import language_instruction

    base = base or settings.system_prompt()
    if language is None or (language == ENGLISH and not auto):
        return base
    return f"{base}\n\n{language_instruction(language, hinglish=hinglish)}"


def sarvam_language(tag: str | None) -> str | None:
    """Sarvam's code (``hi-IN``); None (auto-detect, ``unknown``) for an ``auto`` call."""
    return tag


@dataclass(frozen=True)
class LanguagePlan:
    """What a call's providers are set to for one language (see :func:`switch_deltas`)."""

    language: str
    stt: Any  # an STTSettings delta, or None when the STT needs no change
    tts: Any  # a TTSSettings delta, or None


def switch_deltas(
    stt: Any, tts: Any, language: str, settings: Settings, *, auto: bool
) -> LanguagePlan:
    """The settings deltas that move a call's STT and TTS services to ``language``.

    Deepgram ``multi`` (an ``auto`` call) already hears every allowed language and keeps its
    socket; a service that has its own ``set_call_language`` (our offline ones) is left to it.
    """
    return LanguagePlan(
        language, _stt_delta(stt, language, settings, auto), _tts_delta(tts, language, settings)
    )


def _stt_delta(stt: Any, language: str, settings: Settings, auto: bool) -> Any:
    from pipecat.transcriptions.language import Language

    name = type(stt).__name__
    if hasattr(stt, "set_call_language"):
        return None
    if "Deepgram" in name:
        if auto:
            return None  # multi hears both; reconnecting would lose words
        return type(stt).Settings(language=deepgram_language(language, settings))
    if "Sarvam" in name:
        return type(stt).Settings(language=Language(language))
    return None


def _tts_delta(tts: Any, language: str, settings: Settings) -> Any:
    from pipecat.transcriptions.language import Language

    name = type(tts).__name__
    if hasattr(tts, "set_call_language"):
        return None
    if "Cartesia" in name:
        return type(tts).Settings(
            language=cartesia_language(language, settings), voice=cartesia_voice(language, settings)
        )
    if "Sarvam" in name:
        return type(tts).Settings(language=Language(language))
    return None


# -- start-up check -----------------------------------------------------------------------------


def check_provider_languages(
    settings: Settings, stt: str, tts: str, languages: Iterable[str], *, auto: bool
) -> list[str]:
    """Raise ``ConfigError`` naming the setting when a chosen model lacks a language.

    Returns warnings worth a log line (a language with no voice of its own).
    """
    languages = tuple(languages)
    _check_stt(settings, stt, languages, auto)
    warnings = _check_tts(settings, tts, languages)
    for line in warnings:
        logger.warning(line)
    return warnings


def _check_stt(settings: Settings, stt: str, languages: tuple[str, ...], auto: bool) -> None:
    if stt == "deepgram":
        family = _deepgram_family(settings.deepgram_model)
        wanted = set(languages) | ({"multi"} if auto else set())
        have = _DEEPGRAM_MODELS.get(family or "", frozenset({ENGLISH}))
        missing = sorted(wanted - have)
        if missing:
            raise ConfigError(
                f"DEEPGRAM_MODEL={settings.deepgram_model} does not stream "
                f"{', '.join(missing)} (AGENT_LANGUAGE / AGENT_LANGUAGES); use "
                "DEEPGRAM_MODEL=nova-3 (every Indian language, and multi for auto)"
            )
    elif stt == "sarvam":
        _require(languages, SARVAM_LANGUAGES, "BOT_STT=sarvam (saaras)")
    elif stt == "whisper":
        _require(languages, OFFLINE_LANGUAGES, "BOT_STT=whisper (offline)")


def _check_tts(settings: Settings, tts: str, languages: tuple[str, ...]) -> list[str]:
    warnings: list[str] = []
    if tts == "cartesia":
        model = settings.cartesia_model
        if model.startswith(_CARTESIA_OLD_MODELS):
            _require(languages, _CARTESIA_OLD_LANGUAGES, f"CARTESIA_MODEL={model}", "sonic-3.6")
        for tag in languages:
            if tag != ENGLISH and cartesia_voice(tag, settings) == settings.cartesia_voice_id:
                env = "CARTESIA_VOICE_ID_" + tag.upper().replace("-", "_")
                warnings.append(
                    f"no Cartesia voice of its own for {tag}: the default voice speaks it; set "
                    f'{env} or [voices] {tag} = "<voice id>" (python -m bot voices '
                    f"--provider cartesia --language {bare(tag)} lists them)"
                )
    elif tts == "sarvam":
        _require(languages, SARVAM_LANGUAGES, "BOT_TTS=sarvam (bulbul)")
    elif tts == "piper":
        _require(languages, OFFLINE_LANGUAGES, "BOT_TTS=piper (offline)")
    return warnings


def _require(languages: tuple[str, ...], have: frozenset[str], what: str, fix: str = "") -> None:
    missing = [tag for tag in languages if tag not in have]
    if missing:
        hint = (
            f"; use {fix}" if fix else "; remove it from AGENT_LANGUAGES or pick another provider"
        )
        raise ConfigError(f"{what} has no {', '.join(missing)} (AGENT_LANGUAGES){hint}")
