"""Holding phrases: pre-rendered "one moment" audio, played when the answer is slow.

Why this exists: the seed synthesized "One second." on demand (677 ms of TTS plus conversion)
and the caller heard dead air exactly when the bot was already slow. Here every phrase is
rendered once per (TTS provider, voice, model, language, text, sample rate), converted to the
call's rate, cut into Exotel-compliant chunks, kept in memory and persisted on disk, so playing
one is a dictionary look-up and a handful of queue puts, and a restart synthesizes nothing.

Two parts:

* :class:`PhraseCache` renders phrases with the configured TTS through a tiny Pipecat pipeline
  (so any TTS service works), falls back to the offline Piper voice when the configured TTS
  cannot render (bad key, provider down), and stores ``<key>.wav`` files plus an
  ``index.json`` in ``holding_cache_dir``. The default rate is rendered at process start; other
  rates on first use, in the background. The greeting and the goodbye can be cached the same
  way (:func:`cache_texts`) and played with :meth:`HoldingPhraseProcessor.say`.
* :class:`HoldingPhraseProcessor` sits between the TTS and ``transport.output()``. When the
  caller's turn ends (``UserStoppedSpeakingFrame``) it arms a timer; if the real answer's audio
  has not reached it when the timer fires, it pushes a cached phrase as ordinary bot audio
  (``TTSStartedFrame`` / ``TTSAudioRawFrame`` chunks / ``TTSStoppedFrame``), so interruption,
  bot-speaking state and marks treat it like speech. The phrase never reaches the LLM context
  (``append_to_context=False`` and no text frames) and the answer queues behind it, never on
  top of it.

Modes (``holding_mode``): ``off``; ``always`` (a phrase at once on every turn: the seed's
behaviour); ``adaptive`` (default: only after ``holding_delay_secs`` and only if the LLM is
working on an answer whose audio is not on its way yet). A second, different phrase follows if
the answer is still missing ``holding_second_delay_secs`` after the turn ended; never more than
``holding_max_per_turn`` per turn, never the same phrase twice in a row.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import json
import os
import tempfile
import time
import wave
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import soxr
from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    FunctionCallCancelFrame,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    FunctionCallsStartedFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMMessagesAppendFrame,
    StartFrame,
    SystemFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from bot.config import Settings
from bot.providers import REGISTRY, ProviderChoice, ProviderContext, SharedResources
from serializers.exotel import chunk_rule, compliant_chunks

HoldingMode = Literal["off", "always", "adaptive"]

DEFAULT_HOLDING_PHRASES: tuple[str, ...] = (
    "One moment, please.",
    "Let me check that for you.",
    "Just a second.",
    "Thanks for waiting, almost there.",
)
# Bump when the rendering pipeline changes in a way that makes old files wrong.
CACHE_FORMAT = 1
INDEX_FILE = "index.json"
PHRASE_CONTEXT_PREFIX = "holding-"
SAY_START_TIMEOUT_SECS = 2.0

TTSFactory = Callable[[int], FrameProcessor]
"""Builds a fresh TTS service for one sample rate (a service must not serve two pipelines)."""


# ---------------------------------------------------------------------------------------------
# What a rendering is and what it depends on
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VoiceId:
    """Everything besides the text and the rate that changes how a phrase sounds."""

    provider: str
    voice: str = ""
    model: str = ""
    language: str = ""

    def key(self, text: str, sample_rate: int) -> str:
        """Stable file key: the same voice, text and rate always map to the same file."""
        ident = [CACHE_FORMAT, self.provider, self.voice, self.model, self.language, text]
        ident.append(sample_rate)
        return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:32]

    def describe(self) -> str:
        return "/".join(part for part in (self.provider, self.voice, self.model) if part)


def voice_of(provider: str, tts: FrameProcessor) -> VoiceId:
    """Read voice, model and language from a Pipecat TTS service's settings."""
    settings = getattr(tts, "_settings", None)

    def text_of(name: str) -> str:
        value = getattr(settings, name, None)
        return value if isinstance(value, str) else ""

    return VoiceId(provider, text_of("voice"), text_of("model"), text_of("language"))


@dataclass(frozen=True)
class RenderedPhrase:
    """One phrase at one rate, cut into chunks the output transport sends unchanged."""

    text: str
    sample_rate: int
    chunks: tuple[bytes, ...]
    voice: VoiceId

    @classmethod
    def from_pcm(cls, text: str, pcm: bytes, sample_rate: int, voice: VoiceId) -> RenderedPhrase:
        """Cut 16-bit mono PCM at the call rate into minimum-size compliant chunks.

        One chunk per frame of exactly the transport's chunk size means the output's
        MediaSender re-cuts nothing, and the zero-padded tail means its flush adds nothing.
        """
        rule = chunk_rule(sample_rate)
        chunks = tuple(compliant_chunks(pcm, rule, rule.min_bytes)) if pcm else ()
        return cls(text, sample_rate, chunks, voice)

    @property
    def duration_secs(self) -> float:
        return sum(len(c) for c in self.chunks) / (2 * self.sample_rate)


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


# ---------------------------------------------------------------------------------------------
# Disk store
# ---------------------------------------------------------------------------------------------


class PhraseStore:
    """Rendered phrases on disk: ``<key>.wav`` (the truth) plus ``index.json`` (for people).

    Files are written to a temporary name and renamed, so a crash or a second process never
    leaves a half-written WAV under a real key. All methods block: call them in a thread.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).expanduser()
        self._writable = True

    def path_for(self, key: str) -> Path:
        return self.directory / f"{key}.wav"

    def load(self, key: str, sample_rate: int) -> bytes | None:
        """The PCM stored under ``key``, or None if absent or unusable (then it is re-rendered)."""
        path = self.path_for(key)
        try:
            with wave.open(str(path), "rb") as wav:
                shape = (wav.getnchannels(), wav.getsampwidth(), wav.getframerate())
                pcm = wav.readframes(wav.getnframes())
        except FileNotFoundError:
            return None
        except (OSError, EOFError, wave.Error) as e:
            logger.warning(f"holding phrase file {path} is unreadable ({e}); rendering it again")
            return None
        if shape != (1, 2, sample_rate) or not pcm:
            logger.warning(f"holding phrase file {path} is {shape}, not mono 16-bit {sample_rate}")
            return None
        return pcm

    def save(self, key: str, pcm: bytes, sample_rate: int, meta: dict[str, Any]) -> None:
        """Persist one phrase; a read-only or full disk only costs a warning."""
        if not self._writable:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._atomic_write(self.path_for(key), _wav_bytes(pcm, sample_rate))
            self._update_index(key, meta)
        except OSError as e:
            self._writable = False
            logger.warning(f"cannot write holding phrases to {self.directory} ({e}); memory only")

    def _update_index(self, key: str, meta: dict[str, Any]) -> None:
        index_path = self.directory / INDEX_FILE
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
            if not isinstance(index, dict):
                index = {}
        except (OSError, ValueError):
            index = {}
        index[key] = meta
        self._atomic_write(index_path, json.dumps(index, indent=1, sort_keys=True).encode())

    def _atomic_write(self, path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=path.suffix)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; other workers may read it
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Rendering with any Pipecat TTS service
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------

FallbackFactory = Callable[[], Awaitable["TTSRenderer | None"]]


@dataclass
class WarmReport:
    """What one :meth:`PhraseCache.warm` did, for logs, tests and the start-up line."""

    sample_rate: int
    from_memory: int = 0
    from_disk: int = 0
    rendered: int = 0
    missing: list[str] = field(default_factory=list)
    voices: set[str] = field(default_factory=set)
    fell_back: bool = False
    secs: float = 0.0


class PhraseCache:
    """Phrase audio per (text, rate), rendered once, kept in memory and on disk.

    ``get`` never blocks and never renders: the processor calls it when its timer fires.
    ``warm`` loads what the disk has for the configured voice and renders the rest, with the
    fallback renderer (the offline voice) if the configured one fails.
    """

    def __init__(
        self,
        texts: Iterable[str],
        *,
        renderer: TTSRenderer | None = None,
        fallback: FallbackFactory | None = None,
        store: PhraseStore | None = None,
    ) -> None:
        self.texts: list[str] = _unique(texts)
        self._renderer = renderer
        self._fallback = fallback
        self._fallback_renderer: TTSRenderer | None = None
        self._store = store
        self._phrases: dict[tuple[str, int], RenderedPhrase] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._pending: dict[int, asyncio.Task[WarmReport]] = {}
        self.rendered = 0  # phrases synthesized by any TTS since this cache was made
        self.loaded_from_disk = 0

    # -- reading (on the event loop, at fire time) ----------------------------------------

    def get(self, text: str, sample_rate: int) -> RenderedPhrase | None:
        return self._phrases.get((text, sample_rate))

    def ready(self, sample_rate: int) -> bool:
        return all((t, sample_rate) in self._phrases for t in self.texts)

    def put(self, phrase: RenderedPhrase) -> None:
        """Add a phrase rendered elsewhere (tests, or audio recorded by a person)."""
        self._phrases[(phrase.text, phrase.sample_rate)] = phrase
        if phrase.text not in self.texts:
            self.texts.append(phrase.text)

    def request(self, sample_rate: int) -> asyncio.Task[WarmReport] | None:
        """Make sure ``sample_rate`` gets rendered, in the background; first use of a rate."""
        if self.ready(sample_rate):
            return None
        task = self._pending.get(sample_rate)
        if task is None or task.done():
            logger.info(f"holding phrases: rendering {sample_rate} Hz in the background")
            task = asyncio.create_task(self.warm(sample_rate), name=f"holding-warm-{sample_rate}")
            self._pending[sample_rate] = task
        return task

    # -- rendering ----------------------------------------------------------------------

    async def warm(self, sample_rate: int) -> WarmReport:
        """Have every text at ``sample_rate``: memory, then disk, then the TTS, then fallback."""
        lock = self._locks.setdefault(sample_rate, asyncio.Lock())
        async with lock:
            started = time.monotonic()
            report = WarmReport(sample_rate)
            missing = [t for t in self.texts if (t, sample_rate) not in self._phrases]
            report.from_memory = len(self.texts) - len(missing)
            renderer = self._renderer
            while missing and renderer is not None:
                missing = await self._fill(renderer, missing, sample_rate, report)
                if missing:
                    renderer = await self._next_renderer(renderer, report)
            report.missing = missing
            report.secs = time.monotonic() - started
            self._log(report)
            return report

    async def _fill(
        self, renderer: TTSRenderer, texts: list[str], rate: int, report: WarmReport
    ) -> list[str]:
        """Load ``texts`` for this renderer's voice from disk, render the rest; what's left."""
        voice = renderer.voice
        if self._store is not None:
            found = await asyncio.to_thread(self._load_all, voice, texts, rate)
            for text, pcm in found.items():
                self._remember(text, pcm, rate, voice)
            report.from_disk += len(found)
            self.loaded_from_disk += len(found)
            texts = [t for t in texts if t not in found]
        if len(texts) < len(self.texts):
            report.voices.add(voice.describe())
        if not texts:
            return []
        try:
            rendered = await renderer.render(texts, rate)
        except RenderError as e:
            logger.warning(f"holding phrases: {voice.describe()} could not render: {e}")
            rendered = e.partial
        except Exception as e:  # a provider's constructor or client can fail in many ways
            logger.warning(f"holding phrases: {voice.describe()} failed: {e!r}")
            rendered = {}
        for text, pcm in rendered.items():
            self._remember(text, pcm, rate, voice)
            if self._store is not None:
                await asyncio.to_thread(self._save, voice, text, pcm, rate)
        report.rendered += len(rendered)
        self.rendered += len(rendered)
        if rendered:
            report.voices.add(voice.describe())
        return [t for t in texts if t not in rendered]

    async def _next_renderer(self, failed: TTSRenderer, report: WarmReport) -> TTSRenderer | None:
        """The fallback voice, once, and only if it is another provider than the one that failed."""
        if failed is not self._renderer or self._fallback is None:
            return None
        if self._fallback_renderer is None:
            self._fallback_renderer = await self._fallback()
        fallback = self._fallback_renderer
        if fallback is None or fallback.voice.provider == failed.voice.provider:
            return None
        logger.warning(
            f"holding phrases: falling back to the offline voice {fallback.voice.describe()} "
            f"for what {failed.voice.describe()} could not render"
        )
        report.fell_back = True
        return fallback

    def _remember(self, text: str, pcm: bytes, rate: int, voice: VoiceId) -> None:
        self._phrases[(text, rate)] = RenderedPhrase.from_pcm(text, pcm, rate, voice)

    def _load_all(self, voice: VoiceId, texts: list[str], rate: int) -> dict[str, bytes]:
        assert self._store is not None
        found = {}
        for text in texts:
            pcm = self._store.load(voice.key(text, rate), rate)
            if pcm is not None:
                found[text] = pcm
        return found

    def _save(self, voice: VoiceId, text: str, pcm: bytes, rate: int) -> None:
        assert self._store is not None
        meta = {
            "provider": voice.provider,
            "voice": voice.voice,
            "model": voice.model,
            "language": voice.language,
            "text": text,
            "sample_rate": rate,
            "bytes": len(pcm),
            "duration_secs": round(len(pcm) / (2 * rate), 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self._store.save(voice.key(text, rate), pcm, rate, meta)

    def _log(self, report: WarmReport) -> None:
        line = (
            f"holding phrases at {report.sample_rate} Hz: {report.from_disk} from disk, "
            f"{report.rendered} rendered, {report.from_memory} in memory "
            f"({', '.join(sorted(report.voices)) or 'no voice'}) in {report.secs:.2f} s"
        )
        if report.missing:
            logger.error(f"{line}; MISSING {report.missing}: those phrases will not be played")
        else:
            logger.info(line)


def _unique(texts: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))


def cache_texts(settings: Settings, *, greeting_and_goodbye: bool = True) -> list[str]:
    """The texts worth pre-rendering: the holding phrases (unless off) and what the call
    controller says on its own: greeting, goodbye, idle prompt and the provider-fault apology
    (which must play even when the TTS is the provider that failed)."""
    texts: list[str] = []
    if settings.holding_mode != "off":
        texts += settings.holding_phrases or DEFAULT_HOLDING_PHRASES
    if greeting_and_goodbye:
        texts += [settings.bot_greeting, settings.goodbye, settings.idle_prompt, settings.apology]
    return _unique(texts)


def provider_renderer(
    provider_name: str, settings: Settings, shared: SharedResources, *, probe_rate: int
) -> TTSRenderer:
    """A renderer for a registered TTS provider, built by its registry factory per rate."""
    provider = REGISTRY[("tts", provider_name)]

    def make(rate: int) -> FrameProcessor:
        return provider.factory(
            ProviderContext(settings=settings, in_rate=rate, out_rate=rate, shared=shared)
        )

    voice = voice_of(provider_name, make(probe_rate))
    return TTSRenderer(voice, make, timeout_secs=settings.provider_timeout_secs)


def offline_fallback(
    settings: Settings, shared: SharedResources, probe_rate: int
) -> FallbackFactory:
    """A factory for the Piper renderer, loading the offline voice only if it is needed."""

    async def build() -> TTSRenderer | None:
        try:
            if shared.offline_models is None:
                from bot.providers.offline import load_offline_models

                shared.offline_models = await load_offline_models()
            return provider_renderer("piper", settings, shared, probe_rate=probe_rate)
        except Exception as e:  # ImportError without the extra, or a model that won't load
            logger.error(f"holding phrases: the offline voice is not available either ({e})")
            return None

    return build


async def start_phrase_cache(
    settings: Settings,
    choice: ProviderChoice,
    shared: SharedResources,
    *,
    texts: Iterable[str] | None = None,
) -> PhraseCache:
    """Build the process's cache and render the default rate (call at process start)."""
    rate = settings.bot_sample_rate
    try:
        renderer: TTSRenderer | None = provider_renderer(
            choice.tts.name, settings, shared, probe_rate=rate
        )
    except Exception as e:
        logger.warning(f"holding phrases: cannot build the {choice.tts.name} TTS ({e!r})")
        renderer = None
    fallback = offline_fallback(settings, shared, rate)
    if renderer is None:
        renderer = await fallback()
    cache = PhraseCache(
        cache_texts(settings) if texts is None else texts,
        renderer=renderer,
        fallback=fallback,
        store=PhraseStore(settings.holding_cache_dir),
    )
    await cache.warm(rate)
    return cache


# ---------------------------------------------------------------------------------------------
# The processor
# ---------------------------------------------------------------------------------------------


class PhraseSource(Protocol):
    """What the processor needs from a cache: a non-blocking look-up and a warm-up request."""

    def get(self, text: str, sample_rate: int) -> RenderedPhrase | None: ...

    def request(self, sample_rate: int) -> Any: ...


@dataclass(frozen=True)
class HoldingEvent:
    """A holding phrase was played. Times are ``time.monotonic()`` seconds.

    ``turn`` counts the caller's turns in this call (1 = first), ``slot`` the phrases within
    the turn (1 = first). ``pushed_at`` is when the phrase's last frame was handed to the output
    transport, which sends the first chunk at once when nothing else is playing.
    """

    turn: int
    slot: int
    text: str
    turn_ended_at: float
    fired_at: float
    pushed_at: float
    duration_secs: float

    @property
    def latency_secs(self) -> float:
        """Turn end to phrase handed to the output (the ``holding_latency`` metric)."""
        return self.pushed_at - self.turn_ended_at


@dataclass
class _Turn:
    """One caller turn, from its end until the answer's audio (or the next turn)."""

    number: int
    ended_at: float
    answer_started_at: float | None = None  # the real TTS began synthesizing the answer
    answer_audio: bool = False  # the real answer's audio has reached us
    phrase_ends_at: float = 0.0  # when the last phrase finishes playing, by our estimate


@dataclass
class _AnswerTracker:
    """Whether the LLM is working on an answer for the current turn.

    An empty turn (no transcript) does not run the LLM, and an LLM reply can be empty: a phrase
    then would promise an answer that never comes.
    """

    response_open: bool = False
    calls_running: set[str] = field(default_factory=set)
    response_due: bool = False  # a function result asked the LLM to run again

    @property
    def expected(self) -> bool:
        return self.response_open or bool(self.calls_running) or self.response_due

    def track(self, frame: Frame) -> bool:
        """Update from a frame; True if an answer is expected after it."""
        if isinstance(frame, LLMFullResponseStartFrame):
            self.response_open, self.response_due = True, False
        elif isinstance(frame, LLMFullResponseEndFrame):
            self.response_open = False
        elif isinstance(frame, FunctionCallsStartedFrame):
            self.calls_running.update(call.tool_call_id for call in frame.function_calls)
        elif isinstance(frame, FunctionCallInProgressFrame):
            self.calls_running.add(frame.tool_call_id)
        elif isinstance(frame, FunctionCallResultFrame):
            self.calls_running.discard(frame.tool_call_id)
            self.response_due = self.response_due or _runs_llm(frame)
        elif isinstance(frame, FunctionCallCancelFrame):
            self.calls_running.discard(frame.tool_call_id)
        return self.expected


def _runs_llm(frame: FunctionCallResultFrame) -> bool:
    if frame.run_llm is not None:
        return frame.run_llm
    props = frame.properties
    return props.run_llm if props is not None and props.run_llm is not None else True


class HoldingPhraseProcessor(FrameProcessor):
    """Plays a cached holding phrase when the caller's answer is slow. Place before the output.

    Events: ``on_holding_phrase(processor, event: HoldingEvent)``, called after the phrase has
    been pushed (in a task, so a slow handler never delays audio).
    """

    def __init__(
        self,
        phrases: PhraseSource,
        texts: Sequence[str] = DEFAULT_HOLDING_PHRASES,
        *,
        mode: HoldingMode = "adaptive",
        delay_secs: float = 0.7,
        second_delay_secs: float = 3.0,
        max_per_turn: int = 2,
        **kwargs: Any,
    ) -> None:
        """Args:
        phrases: the cache (``get`` is called when a timer fires; it must not block).
        texts: the holding phrases, in rotation order.
        mode: ``off``, ``always`` (first phrase at once) or ``adaptive``.
        delay_secs: adaptive mode: turn end to first phrase. Also the minimum quiet after a
            phrase before the next, and the grace given to a TTS that started but is silent.
        second_delay_secs: turn end to the second phrase (if the answer is still missing).
        max_per_turn: phrases per turn at most.
        """
        # Direct mode: every frame of the answer's audio passes through here, and queueing
        # it cost two event-loop steps per frame (6.7 % of the loop's CPU at 50 calls). The
        # processor never holds a frame long: the only wait is the push lock, held while a
        # phrase's frames are queued at the output.
        kwargs.setdefault("enable_direct_mode", True)
        super().__init__(**kwargs)
        self._phrases = phrases
        self._texts = _unique(texts)
        self.mode: HoldingMode = mode
        self._delay = delay_secs
        self._second_delay = second_delay_secs
        self._max_per_turn = max_per_turn
        self._rate = 0
        self._started = asyncio.Event()
        self._turns = itertools.count(1)
        self._turn: _Turn | None = None
        self._answer = _AnswerTracker()
        self._answer_expected = asyncio.Event()
        self._timer: asyncio.Task | None = None
        self._pushing = False
        self._push_lock = asyncio.Lock()
        self._rotation = 0
        self._last_text: str | None = None
        self._contexts = itertools.count(1)
        self.events: list[HoldingEvent] = []
        self._register_event_handler("on_holding_phrase")

    @classmethod
    def from_settings(
        cls, settings: Settings, phrases: PhraseSource, **overrides: Any
    ) -> HoldingPhraseProcessor:
        """The processor as configured (``holding_*`` settings); keyword overrides win."""
        params: dict[str, Any] = {
            "mode": settings.holding_mode,
            "delay_secs": settings.holding_delay_secs,
            "second_delay_secs": settings.holding_second_delay_secs,
            "max_per_turn": settings.holding_max_per_turn,
        }
        params.update(overrides)
        return cls(phrases, settings.holding_phrases or DEFAULT_HOLDING_PHRASES, **params)

    @property
    def waiting_for_answer(self) -> bool:
        """The caller's turn ended and an answer is being prepared, none of it heard yet.

        The end of a holding phrase makes Pipecat's user-idle timer start (the bot "stopped
        speaking"); while this is True the caller is not idle, the bot is.
        """
        return self._turn is not None and not self._turn.answer_audio and self._answer.expected

    # -- frames ---------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            self._rate = self.processor_setup.audio_out_sample_rate  # the call's rate
            self._phrases.request(self._rate)
            self._started.set()
        elif isinstance(frame, EndFrame | CancelFrame):
            await self._stop_timer(force=True)
        elif direction == FrameDirection.DOWNSTREAM:
            await self._observe(frame)
        await self._forward(frame, direction)

    async def _observe(self, frame: Frame) -> None:
        if isinstance(frame, UserStoppedSpeakingFrame):
            await self._turn_ended()
        elif isinstance(frame, UserStartedSpeakingFrame | InterruptionFrame):
            # Before the interruption goes on: nothing of ours may follow it downstream.
            await self._turn_started()
        elif isinstance(frame, TTSStartedFrame):
            if self._turn and self._turn.answer_started_at is None:
                self._turn.answer_started_at = time.monotonic()
        elif isinstance(frame, TTSAudioRawFrame):
            if self._turn and not self._turn.answer_audio:
                self._turn.answer_audio = True
                await self._stop_timer(force=False)
        elif self._answer.track(frame):
            self._answer_expected.set()
        elif not self._answer.expected:
            self._answer_expected.clear()

    async def _forward(self, frame: Frame, direction: FrameDirection) -> None:
        """Pass a frame on; the answer's frames wait while a phrase is being pushed."""
        if direction == FrameDirection.DOWNSTREAM and not isinstance(frame, SystemFrame):
            async with self._push_lock:
                await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    # -- turns ----------------------------------------------------------------------------

    async def _turn_ended(self) -> None:
        await self._stop_timer(force=True)
        self._turn = _Turn(next(self._turns), time.monotonic())
        if self.mode != "off" and self._max_per_turn > 0 and self._texts:
            self._timer = self.create_task(self._hold(self._turn), name="holding_timer")

    async def _turn_started(self) -> None:
        await self._stop_timer(force=True)
        self._turn = None
        self._answer = _AnswerTracker()
        self._answer_expected.clear()

    async def _stop_timer(self, *, force: bool) -> None:
        """Cancel the timer; unless forced, let a phrase that is being pushed finish."""
        timer, self._timer = self._timer, None
        if timer is None or timer.done():
            return
        if self._pushing and not force:
            self._timer = timer  # it sees answer_audio and ends after this phrase
            return
        await self.cancel_task(timer)

    async def _hold(self, turn: _Turn) -> None:
        """The turn's timer: up to ``max_per_turn`` phrases while the answer is missing."""
        for slot in range(1, self._max_per_turn + 1):
            fired_at = await self._sleep_until_due(turn, slot)
            if turn.answer_audio:
                return
            if (self.mode == "adaptive" or slot > 1) and not self._answer.expected:
                # Nothing is working on an answer (yet): an empty turn, an empty reply, or an
                # LLM request still queued. Promise nothing until something is.
                while not self._answer.expected:
                    await self._answer_expected.wait()
                fired_at = time.monotonic()
                if turn.answer_audio:
                    return
            if not await self._play(turn, slot, fired_at):
                return

    async def _sleep_until_due(self, turn: _Turn, slot: int) -> float:
        """Sleep until the slot is due; the due time can move later while we sleep."""
        while True:
            wait = self._due(turn, slot) - time.monotonic()
            if wait <= 0:
                return time.monotonic()
            await asyncio.sleep(wait)

    def _due(self, turn: _Turn, slot: int) -> float:
        if slot == 1:
            due = turn.ended_at + (0.0 if self.mode == "always" else self._delay)
        else:
            due = max(turn.ended_at + self._second_delay, turn.phrase_ends_at + self._delay)
        if turn.answer_started_at is not None:
            # The TTS is on the answer; give it the same grace before covering its silence.
            due = max(due, turn.answer_started_at + self._delay)
        return due

    # -- playing --------------------------------------------------------------------------

    def _pick(self) -> RenderedPhrase | None:
        """Next phrase in rotation that is ready and is not the one played last."""
        n = len(self._texts)
        for step in range(n):
            text = self._texts[(self._rotation + step) % n]
            if text == self._last_text and n > 1:
                continue
            phrase = self._phrases.get(text, self._rate)
            if phrase is not None and phrase.chunks:
                self._rotation = (self._rotation + step + 1) % n
                return phrase
        return None

    async def _play(self, turn: _Turn, slot: int, fired_at: float) -> bool:
        """Push one phrase for the turn; False when there is nothing (else) to play."""
        phrase = self._pick()
        if phrase is None or (slot > 1 and phrase.text == self._last_text):
            logger.debug(f"holding phrase for turn {turn.number} skipped: none ready")
            return False
        self._pushing = True
        try:
            async with self._push_lock:
                await self._push_phrase(phrase)
                pushed_at = time.monotonic()
        finally:
            self._pushing = False
        self._last_text = phrase.text
        turn.phrase_ends_at = pushed_at + phrase.duration_secs
        event = HoldingEvent(
            turn.number, slot, phrase.text, turn.ended_at, fired_at, pushed_at, phrase.duration_secs
        )
        self.events.append(event)
        logger.info(
            f"holding phrase {slot} of turn {turn.number}: {phrase.text!r} "
            f"{event.latency_secs * 1000:.0f} ms after the turn ended "
            f"(timer +{(pushed_at - fired_at) * 1000:.1f} ms)"
        )
        await self._call_event_handler("on_holding_phrase", event)
        return not turn.answer_audio

    async def _push_phrase(self, phrase: RenderedPhrase, *, append: bool = False) -> None:
        """Push a phrase as ordinary TTS output: started, one frame per chunk, stopped."""
        context_id = f"{PHRASE_CONTEXT_PREFIX}{next(self._contexts)}"
        frames: list[Frame] = [TTSStartedFrame(context_id=context_id, append_to_context=False)]
        frames += [
            TTSAudioRawFrame(chunk, phrase.sample_rate, 1, context_id=context_id)
            for chunk in phrase.chunks
        ]
        frames.append(TTSStoppedFrame(context_id=context_id))
        if append:
            message = {"role": "assistant", "content": phrase.text}
            frames.append(LLMMessagesAppendFrame(messages=[message], run_llm=False))
        for frame in frames:
            await self.push_frame(frame)

    async def say(self, text: str, *, append_to_context: bool = True) -> bool:
        """Play a cached utterance (the greeting, the goodbye) now; False if it is not cached.

        With ``append_to_context`` the text is added to the LLM context as the assistant's,
        after the audio (an interruption drops it with the audio). On False, speak it with a
        ``TTSSpeakFrame`` instead.
        """
        try:  # the call may ask before the StartFrame has reached us
            await asyncio.wait_for(self._started.wait(), SAY_START_TIMEOUT_SECS)
        except TimeoutError:
            return False
        phrase = self._phrases.get(text.strip(), self._rate)
        if phrase is None or not phrase.chunks:
            return False
        async with self._push_lock:
            await self._push_phrase(phrase, append=append_to_context)
        return True


def holding_processor_for_call(
    settings: Settings, phrases: PhraseSource | None
) -> HoldingPhraseProcessor | None:
    """The call's holding-phrase processor, or None without a cache.

    With ``holding_mode=off`` it still exists (no timers), so the call can ``say`` the cached
    greeting and goodbye.
    """
    if phrases is None:
        return None
    return HoldingPhraseProcessor.from_settings(settings, phrases)


def session_factory_with_holding(session_cls: type) -> Callable[..., Any]:
    """Until ``bot.telephony.call.CallSession`` builds the processor itself: a drop-in factory for
    ``bot.server.runtime.CallSession`` that adds it (tests and the benchmark patch it in).

    Once ``CallSession`` declares a ``holding`` attribute it is integrated, and this returns
    the class unchanged so nothing is inserted twice.
    """
    if hasattr(session_cls, "holding"):
        return session_cls

    def build(websocket, info, settings, choice, shared, **kwargs: Any) -> Any:
        holding = holding_processor_for_call(settings, getattr(shared, "phrases", None))
        extra = [*(kwargs.pop("extra_processors", None) or []), *([holding] if holding else [])]
        session = session_cls(
            websocket, info, settings, choice, shared, extra_processors=extra, **kwargs
        )
        session.holding = holding
        return session

    return build
