"""The cloud providers: Deepgram speech-to-text, OpenAI-compatible LLMs, Cartesia voices.

Each factory builds Pipecat's service pointed at the provider's base URL (the tests point it at
the fakes in ``bot.testing``), through our subclasses where Pipecat's stock service costs a call
CPU it does not need.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections import defaultdict
from typing import Any

from loguru import logger
from pipecat.processors.frame_processor import FrameProcessor

from bot.providers.base import ProviderContext, register, secret_value
from bot.providers.languages import (
    call_system_prompt,
    cartesia_language,
    cartesia_voice,
    deepgram_extra,
    deepgram_language,
)
from bot.providers.tls import SharedTLSWebsocket, share_tls_in_deepgram_sdk, shared_tls_context

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
    settings = service.Settings(
        model=s.deepgram_model, language=deepgram_language(ctx.language, s, auto=ctx.auto)
    )
    if extra := deepgram_extra(ctx.allowed, auto=ctx.auto):
        settings.extra = extra  # lists become repeated query parameters
    return service(
        name=stock_name("DeepgramSTTService"),
        api_key=secret_value(s.deepgram_api_key),
        base_url=s.deepgram_base_url or "",
        sample_rate=ctx.in_rate,
        settings=settings,
    )


@functools.cache
def openai_service_class() -> type:
    """Our OpenAI LLM service class (built on first use: the cloud SDKs load only if used)."""
    from openai import APITimeoutError, AsyncOpenAI
    from pipecat.services.openai.llm import OpenAILLMService
    from pipecat.utils.types import assert_given

    from bot.providers.openai_stream import aiohttp_client, open_chunk_stream

    class ClosingOpenAILLMService(OpenAILLMService):
        """OpenAILLMService that closes its HTTP client when the call ends, builds it on the
        process's TLS context (bot.providers.tls), and streams replies cheaply
        (bot.providers.openai_stream).

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
        api_key=secret_value(s.openai_api_key),
        base_url=s.openai_base_url or None,
        settings=OpenAILLMService.Settings(
            model=s.openai_model,
            system_instruction=call_system_prompt(
                s, ctx.language, auto=ctx.auto, base=ctx.system_prompt
            ),
        ),
    )
    # The call's tools are registered by the conversation (bot.agent), not here.
    return llm


@functools.cache
def _cartesia_service() -> type:
    from pipecat.services.cartesia.tts import CartesiaTTSService

    class SharedTLSCartesiaTTSService(SharedTLSWebsocket, CartesiaTTSService):
        """CartesiaTTSService whose WebSocket uses the process's TLS context (bot.providers.tls)."""

    return SharedTLSCartesiaTTSService


@register("tts", "cartesia", label="Cartesia text-to-speech", key="cartesia_api_key")
def _cartesia(ctx: ProviderContext) -> FrameProcessor:
    service = _cartesia_service()
    s = ctx.settings
    kwargs: dict[str, Any] = {"url": s.cartesia_url} if s.cartesia_url else {}
    return service(
        name=stock_name("CartesiaTTSService"),
        api_key=secret_value(s.cartesia_api_key),
        sample_rate=ctx.out_rate,
        settings=service.Settings(
            voice=cartesia_voice(ctx.language, s),
            model=s.cartesia_model,
            language=cartesia_language(ctx.language, s),
        ),
        **kwargs,
    )


# -- offline ----------------------------------------------------------------------------------
