"""Providers: which speech-to-text, language model and voice a call gets, and how each is built.

Owns: the registry (one name -> one small factory per kind), the cloud services (Deepgram,
OpenAI-compatible, Cartesia) with their base-URL overrides, the offline set (Whisper, Piper, the
scripted responder) loaded once per process, the LLM stream reader, the shared TLS context, and
the few patches to Pipecat internals the call path needs.

Must not touch: the call (telephony), the pipeline's assembly or turn taking (conversation), HTTP
routes (server). It imports only ``bot.config``, ``bot.observability`` and ``bot.languages``.
"""

from bot.providers.base import (
    DEFAULTS,
    REGISTRY,
    Provider,
    ProviderContext,
    SharedResources,
    secret_value,
)
from bot.providers.cloud import deepgram_service_class, openai_service_class, stock_name
from bot.providers.registry import ProviderChoice, choose_providers, load_shared_resources

__all__ = [
    "DEFAULTS",
    "REGISTRY",
    "Provider",
    "ProviderChoice",
    "ProviderContext",
    "SharedResources",
    "choose_providers",
    "deepgram_service_class",
    "load_shared_resources",
    "openai_service_class",
    "secret_value",
    "stock_name",
]
