"""Rendering phrases with any Pipecat TTS service: the configured provider or the offline voice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import numpy as np
import soxr
from loguru import logger
from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from bot.config import Settings
from bot.conversation.holding.phrase import VoiceId
from bot.providers import REGISTRY, ProviderContext, SharedResources

TTSFactory = Callable[[int], FrameProcessor]
"""Builds a fresh TTS service for one sample rate (a service must not serve two pipelines)."""


def voice_of(provider: str, tts: FrameProcessor) -> VoiceId:
    """Read voice, model and language from a Pipecat TTS service's settings."""
    settings = getattr(tts, "_settings", None)

    def text_of(name: str) -> str:
        value = getattr(settings, name, None)
        return value if isinstance(value, str) else ""

    return VoiceId(provider, text_of("voice"), text_of("model"), text_of("language"))


def resample_pcm(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """One-shot (file) resampling of a whole phrase; blocking, so call it in a thread.

    A stream resampler would need a flush and drops the tail if it does not get one
    (pipecat-notes §8.3); a phrase is short and complete, so one call does it.
    """
    if from_rate == to_rate or not pcm:
        return pcm
    samples = np.frombuffer(pcm, dtype=np.int16)
    out = soxr.resample(samples, from_rate, to_rate, quality="VHQ")
    return np.clip(out, -32768, 32767).astype(np.int16).tobytes()


class RenderError(RuntimeError):
    """The TTS could not render a phrase; ``partial`` holds what it did render before."""

    def __init__(self, message: str, partial: dict[str, bytes]) -> None:
        super().__init__(message)
        self.partial = partial


class _Collector(FrameProcessor):
    """End of the render pipeline: hands the TTS's audio and stop frames to the renderer."""

    def __init__(self, inbox: asyncio.Queue[Frame]) -> None:
        super().__init__(name="HoldingPhraseCollector")
        self._inbox = inbox

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSStartedFrame | TTSAudioRawFrame | TTSStoppedFrame):
            self._inbox.put_nowait(frame)
        await self.push_frame(frame, direction)


class TTSRenderer:
    """Renders texts with one TTS provider through ``Pipeline([tts, collector])``.

    This works for any Pipecat TTS service (websocket, HTTP, local) because it drives the
    service exactly as a call does: ``TTSSpeakFrame`` in, ``TTSAudioRawFrame``s out until the
    ``TTSStoppedFrame``. Errors travel upstream in Pipecat, so the worker's
    ``on_pipeline_error`` event is what tells us the provider failed.
    """

    def __init__(self, voice: VoiceId, make_tts: TTSFactory, *, timeout_secs: float = 8.0):
        self.voice = voice
        self._make_tts = make_tts
        self._timeout = timeout_secs

    async def render(self, texts: Sequence[str], sample_rate: int) -> dict[str, bytes]:
        """PCM at ``sample_rate`` for each text, in order; RenderError at the first failure."""
        inbox: asyncio.Queue[Frame] = asyncio.Queue()
        worker = PipelineWorker(
            Pipeline([self._make_tts(sample_rate), _Collector(inbox)]),
            params=PipelineParams(audio_out_sample_rate=sample_rate),
            enable_rtvi=False,
            idle_timeout_secs=None,
        )

        @worker.event_handler("on_pipeline_error")
        async def _failed(_worker: PipelineWorker, error: ErrorFrame) -> None:
            inbox.put_nowait(error)

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        running = asyncio.create_task(runner.run())
        done: dict[str, bytes] = {}
        try:
            for text in texts:
                await worker.queue_frame(TTSSpeakFrame(text, append_to_context=False))
                pcm, rate = await self._collect(inbox, text, done)
                done[text] = await asyncio.to_thread(resample_pcm, pcm, rate, sample_rate)
        finally:
            await _stop_worker(worker, running, graceful=len(done) == len(texts))
        return done

    async def _collect(
        self, inbox: asyncio.Queue[Frame], text: str, done: dict[str, bytes]
    ) -> tuple[bytes, int]:
        pcm = bytearray()
        rate = 0
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                frame = await asyncio.wait_for(inbox.get(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise RenderError(f"no audio for {text!r} in {self._timeout:.0f} s", done) from None
            if isinstance(frame, ErrorFrame):
                raise RenderError(f"{text!r}: {frame.error}", done)
            if isinstance(frame, TTSStartedFrame):
                pcm.clear()
            elif isinstance(frame, TTSAudioRawFrame):
                pcm += frame.audio
                rate = frame.sample_rate
            elif isinstance(frame, TTSStoppedFrame):
                if not pcm:
                    raise RenderError(f"the TTS returned no audio for {text!r}", done)
                return bytes(pcm), rate


async def _stop_worker(worker: PipelineWorker, running: asyncio.Task, *, graceful: bool) -> None:
    """End the render pipeline; cancel it if it does not end in time (a hung provider)."""
    try:
        if graceful:
            await worker.queue_frame(EndFrame())
            await asyncio.wait_for(asyncio.shield(running), 5.0)
            return
    except TimeoutError:
        pass
    await worker.cancel()
    try:
        await asyncio.wait_for(running, 5.0)
    except (TimeoutError, asyncio.CancelledError):
        logger.warning("holding phrases: the render pipeline did not stop in time")


FallbackFactory = Callable[[], Awaitable["TTSRenderer | None"]]
"""Builds the fallback renderer when it is first needed; None when it cannot be had."""


def provider_renderer(
    provider_name: str,
    settings: Settings,
    shared: SharedResources,
    *,
    probe_rate: int,
    language: str | None = None,
) -> TTSRenderer:
    """A renderer for a registered TTS provider, built by its registry factory per rate;
    ``language`` (a full tag) picks that language's voice, None today's."""
    provider = REGISTRY[("tts", provider_name)]

    def make(rate: int) -> FrameProcessor:
        return provider.factory(
            ProviderContext(
                settings=settings, in_rate=rate, out_rate=rate, shared=shared, language=language
            )
        )

    voice = voice_of(provider_name, make(probe_rate))
    return TTSRenderer(voice, make, timeout_secs=settings.provider_timeout_secs)


def offline_fallback(
    settings: Settings, shared: SharedResources, probe_rate: int, language: str | None = None
) -> FallbackFactory:
    """A factory for the offline renderer (Piper; espeak-ng for Hindi), loading the offline
    voice only if it is needed."""

    async def build() -> TTSRenderer | None:
        try:
            if shared.offline_models is None:
                from bot.providers.offline import load_offline_models

                shared.offline_models = await load_offline_models()
            return provider_renderer(
                "piper", settings, shared, probe_rate=probe_rate, language=language
            )
        except Exception as e:  # ImportError without the extra, or a model that won't load
            logger.error(f"holding phrases: the offline voice is not available either ({e})")
            return None

    return build
