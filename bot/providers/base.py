"""What every provider module shares: the registry table and what a factory is given.

A provider is one name -> one small factory (``register``); the modules that register them are
``bot.providers.cloud`` (Deepgram, OpenAI, Cartesia) and ``bot.providers.registry`` (the offline
set and the choice between them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pipecat.processors.frame_processor import FrameProcessor

from bot.config import Settings

Kind = Literal["stt", "llm", "tts"]
EndCall = Callable[[str], Awaitable[None]]


@dataclass
class SharedResources:
    """Process-wide objects the offline providers need (loaded once, shared by calls)."""

    offline_models: Any = None  # bot.providers.offline.OfflineModels
    hindi_models: Any = None  # bot.providers.offline_hindi.HindiModels (offline Hindi calls)
    knowledge: Any = None  # bot.providers.scripted.Knowledge
    knowledge_by_language: dict[str, Any] = field(default_factory=dict)  # "hi-IN" -> Knowledge
    phrases: Any = None  # bot.conversation.holding.PhraseCache: holding phrases, greeting, goodbye
    phrase_caches: dict[str, Any] = field(default_factory=dict)  # the other languages' caches
    language_policy: Any = None  # bot.languages.LanguagePolicy (runtime.rooms.languages)
    phrase_book: Any = None  # bot.languages.PhraseBook (runtime.rooms.phrases)


@dataclass(frozen=True)
class ProviderContext:
    """What a factory may use to build one call's service."""

    settings: Settings
    in_rate: int  # the pipeline's input rate (STT hears this)
    out_rate: int  # the call's rate (TTS is asked for this)
    shared: SharedResources = field(default_factory=SharedResources)
    end_call: EndCall | None = None  # ends the call once the goodbye has been heard
    # The call's system prompt, its {{variables}} rendered (None: the configured one).
    system_prompt: str | None = None
    # The call's language (a full tag, bot.languages); None: the configured default, as
    # before languages were per call. ``auto``: the caller's words may change it, among
    # ``allowed`` (Deepgram then listens with ``multi``).
    language: str | None = None
    auto: bool = False
    allowed: tuple[str, ...] = ()
    # The call's captures: what the scripted responder's tool intents took from the caller.
    captures: dict[str, Any] = field(default_factory=dict)


Factory = Callable[[ProviderContext], FrameProcessor]


@dataclass(frozen=True)
class Provider:
    kind: Kind
    name: str
    label: str
    factory: Factory
    key: str | None = None  # the setting that must be set (cloud providers)
    modules: tuple[str, ...] = ()  # importable modules it needs (optional extras)
    tools: bool = False  # whether it can call the agent's tools (bot.agent)


REGISTRY: dict[tuple[Kind, str], Provider] = {}
# Which provider a kind falls back to: the cloud one when its key is set, else the offline one.
DEFAULTS: dict[Kind, tuple[str, str]] = {
    "stt": ("deepgram", "whisper"),
    "llm": ("openai", "scripted"),
    "tts": ("cartesia", "piper"),
}
OFFLINE_EXTRA_HINT = 'pip install -e ".[offline]"'


def register(
    kind: Kind,
    name: str,
    *,
    label: str,
    key: str | None = None,
    modules: tuple[str, ...] = (),
    tools: bool = False,
) -> Callable[[Factory], Factory]:
    def add(factory: Factory) -> Factory:
        REGISTRY[(kind, name)] = Provider(kind, name, label, factory, key, modules, tools)
        return factory

    return add


def names(kind: Kind) -> list[str]:
    return sorted(name for k, name in REGISTRY if k == kind)


def secret_value(value: Any) -> str:
    """A ``SecretStr`` setting's text, or empty when it is unset."""
    return value.get_secret_value() if value is not None else ""
