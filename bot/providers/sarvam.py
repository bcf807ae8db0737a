"""Sarvam AI speech for Indian languages: saaras STT and bulbul TTS, through Pipecat's services.

``BOT_STT=sarvam`` / ``BOT_TTS=sarvam`` with ``SARVAM_API_KEY``. Overrides (the tests point them
at ``bot.testing`` 's fake): ``SARVAM_STT_URL`` (the SDK's WebSocket base; it appends
``/speech-to-text/ws``), ``SARVAM_TTS_URL`` (the whole TTS WebSocket URL) and
``SARVAM_BASE_URL`` (the SDK's HTTP base).

* STT: ``saaras:v3`` in ``codemix`` mode (Hindi words in Devanagari, English words in Latin:
  Hinglish as callers speak it), ``language-code`` the call's tag, or ``unknown`` (Sarvam
  detects) on an ``auto`` call. Pipecat's ``SarvamSTTService`` takes no base URL, so
  :class:`LocalSarvamSTTService` swaps its SDK client for one on ``SARVAM_STT_URL``.
* TTS: ``bulbul:v3`` asked for the call's rate (it would default to 24 kHz), speaker
  ``SARVAM_SPEAKER`` (``priya``), ``target_language_code`` the call's tag.
"""

from __future__ import annotations

import functools
from typing import Any

from pipecat.processors.frame_processor import FrameProcessor

from bot.providers.base import ProviderContext, register, secret_value
from bot.providers.cloud import stock_name

PRODUCTION_WS = "wss://api.sarvam.ai"
PRODUCTION_HTTP = "https://api.sarvam.ai"
PRODUCTION_TTS = PRODUCTION_WS + "/text-to-speech/ws"
STT_RATES = (8000, 16000)  # the streaming endpoint takes only these


@functools.cache
def sarvam_stt_class() -> type:
    from pipecat.services.sarvam.stt import SarvamSTTService
    from sarvamai import AsyncSarvamAI
    from sarvamai.environment import SarvamAIEnvironment

    class LocalSarvamSTTService(SarvamSTTService):
        """Pipecat's Sarvam STT on a chosen endpoint: the SDK client it builds always talks to
        api.sarvam.ai, so it is replaced by one on ``ws_base`` / ``http_base``."""

        def __init__(self, *, ws_base: str, http_base: str, api_key: str, **kwargs: Any):
            super().__init__(api_key=api_key, **kwargs)
            self._sarvam_client = AsyncSarvamAI(
                api_subscription_key=api_key,
                headers=self._sdk_headers,
                environment=SarvamAIEnvironment(base=http_base, production=ws_base),
            )

    return LocalSarvamSTTService


@register("stt", "sarvam", label="Sarvam AI speech-to-text (saaras)", key="sarvam_api_key")
def _sarvam_stt(ctx: ProviderContext) -> FrameProcessor:
    from pipecat.transcriptions.language import Language

    s = ctx.settings
    service = sarvam_stt_class()
    language = None if ctx.auto or not ctx.language else Language(ctx.language)
    rate = ctx.in_rate if ctx.in_rate in STT_RATES else 16000
    return service(
        name=stock_name("SarvamSTTService"),
        api_key=secret_value(s.sarvam_api_key),
        ws_base=(s.sarvam_stt_url or PRODUCTION_WS).rstrip("/"),
        http_base=(s.sarvam_base_url or PRODUCTION_HTTP).rstrip("/"),
        mode=s.sarvam_stt_mode or None,
        sample_rate=rate,
        settings=service.Settings(model=s.sarvam_stt_model, language=language),
    )


@register("tts", "sarvam", label="Sarvam AI text-to-speech (bulbul)", key="sarvam_api_key")
def _sarvam_tts(ctx: ProviderContext) -> FrameProcessor:
    from pipecat.services.sarvam.tts import SarvamTTSService
    from pipecat.transcriptions.language import Language

    s = ctx.settings
    return SarvamTTSService(
        name=stock_name("SarvamTTSService"),
        api_key=secret_value(s.sarvam_api_key),
        url=s.sarvam_tts_url or PRODUCTION_TTS,
        sample_rate=ctx.out_rate,  # bulbul defaults to 24 kHz whatever the call's rate
        settings=SarvamTTSService.Settings(
            model=s.sarvam_tts_model,
            voice=s.sarvam_speaker,
            language=Language(ctx.language or "en-IN"),
        ),
    )
