"""Holding phrases: pre-rendered "one moment" audio, played when the answer is slow.

Why this exists: the seed synthesized "One second." on demand (677 ms of TTS plus conversion)
and the caller heard dead air exactly when the bot was already slow. Here every phrase is
rendered once per (TTS provider, voice, model, language, text, sample rate), converted to the
call's rate, cut into Exotel-compliant chunks, kept in memory and persisted on disk, so playing
one is a dictionary look-up and a handful of queue puts, and a restart synthesizes nothing.

Owns, one module each:

* ``phrase``: what a rendered phrase is (:class:`VoiceId`, :class:`RenderedPhrase`);
* ``renderer``: rendering with the configured TTS through a tiny Pipecat pipeline (so any TTS
  service works), and the offline Piper voice as the fallback when it cannot (bad key,
  provider down);
* ``cache``: :class:`PhraseCache` in memory, :class:`PhraseStore` on disk (``<key>.wav`` plus an
  ``index.json`` in ``holding_cache_dir``) and :func:`start_phrase_cache`. The default rate is
  rendered at process start, other rates on first use in the background. The greeting and the
  goodbye are cached the same way (:func:`cache_texts`) and played with
  :meth:`HoldingPhraseProcessor.say`;
* ``processor``: :class:`HoldingPhraseProcessor`, between the TTS and ``transport.output()``,
  which pushes a cached phrase as ordinary bot audio when the caller's answer is late.

Must not touch: the transport and the call (the chunk rule comes from ``serializers.exotel``,
not from bot.telephony), the server, the test kit, and the LLM context (a holding phrase never
reaches it; only ``say(append_to_context=True)`` adds the greeting or goodbye as the
assistant's). It imports only config, providers and serializers.
"""

from bot.conversation.holding.cache import (
    INDEX_FILE,
    PhraseCache,
    PhraseStore,
    WarmReport,
    cache_texts,
    language_texts,
    start_language_caches,
    start_phrase_cache,
)
from bot.conversation.holding.phrase import (
    CACHE_FORMAT,
    DEFAULT_HOLDING_PHRASES,
    RenderedPhrase,
    VoiceId,
)
from bot.conversation.holding.processor import (
    PHRASE_CONTEXT_PREFIX,
    SAY_START_TIMEOUT_SECS,
    HoldingEvent,
    HoldingMode,
    HoldingPhraseProcessor,
    PhraseSource,
    holding_processor_for_call,
    session_factory_with_holding,
)
from bot.conversation.holding.renderer import (
    FallbackFactory,
    RenderError,
    TTSFactory,
    TTSRenderer,
    offline_fallback,
    provider_renderer,
    resample_pcm,
    voice_of,
)

__all__ = [
    "CACHE_FORMAT",
    "DEFAULT_HOLDING_PHRASES",
    "INDEX_FILE",
    "PHRASE_CONTEXT_PREFIX",
    "SAY_START_TIMEOUT_SECS",
    "FallbackFactory",
    "HoldingEvent",
    "HoldingMode",
    "HoldingPhraseProcessor",
    "PhraseCache",
    "PhraseSource",
    "PhraseStore",
    "RenderError",
    "RenderedPhrase",
    "TTSFactory",
    "TTSRenderer",
    "VoiceId",
    "WarmReport",
    "cache_texts",
    "holding_processor_for_call",
    "language_texts",
    "start_language_caches",
    "offline_fallback",
    "provider_renderer",
    "resample_pcm",
    "session_factory_with_holding",
    "start_phrase_cache",
    "voice_of",
]
