"""The phrase cache: audio per (text, rate), rendered once, kept in memory and on disk."""

from __future__ import annotations

import asyncio
import io
import json
import os
import tempfile
import time
import wave
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from bot.config import Settings
from bot.conversation.holding.phrase import (
    DEFAULT_HOLDING_PHRASES,
    RenderedPhrase,
    VoiceId,
    unique_texts,
)
from bot.conversation.holding.renderer import (
    FallbackFactory,
    RenderError,
    TTSRenderer,
    offline_fallback,
    provider_renderer,
)
from bot.providers import ProviderChoice, SharedResources

INDEX_FILE = "index.json"


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
        self.texts: list[str] = unique_texts(texts)
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


def cache_texts(settings: Settings, *, greeting_and_goodbye: bool = True) -> list[str]:
    """The texts worth pre-rendering: the holding phrases (unless off) and what the call
    controller says on its own: greeting, goodbye, idle prompt and the provider-fault apology
    (which must play even when the TTS is the provider that failed)."""
    texts: list[str] = []
    if settings.holding_mode != "off":
        texts += settings.holding_phrases or DEFAULT_HOLDING_PHRASES
    if greeting_and_goodbye:
        texts += [settings.bot_greeting, settings.goodbye, settings.idle_prompt, settings.apology]
    return unique_texts(texts)


def language_texts(settings: Settings, phrases: Any) -> list[str]:
    """What to pre-render for one language (a ``bot.languages.Phrases``): its holding phrases
    (unless off) and everything the call says on its own in it."""
    texts = list(phrases.holding) if settings.holding_mode != "off" else []
    texts += [phrases.greeting, phrases.goodbye, phrases.idle_prompt, phrases.apology]
    texts += [phrases.transfer, phrases.collect_digits]
    return unique_texts(texts)


async def start_language_caches(
    settings: Settings,
    choice: ProviderChoice,
    shared: SharedResources,
    phrases: dict[str, Any],
) -> dict[str, PhraseCache]:
    """One cache per language other than the default (``{"hi-IN": Phrases}``): its texts in
    its own voice. The voice (and the language) are part of every file key, so a Hindi phrase
    is never played in the English voice, and each language renders once per voice."""
    caches = {}
    for language, table in phrases.items():
        caches[language] = await start_phrase_cache(
            settings, choice, shared, texts=language_texts(settings, table), language=language
        )
    return caches


async def start_phrase_cache(
    settings: Settings,
    choice: ProviderChoice,
    shared: SharedResources,
    *,
    texts: Iterable[str] | None = None,
    language: str | None = None,
) -> PhraseCache:
    """Build the process's cache and render the default rate (call at process start);
    ``language``: in that language's voice (None: the configured one, as before)."""
    rate = settings.bot_sample_rate
    try:
        renderer: TTSRenderer | None = provider_renderer(
            choice.tts.name, settings, shared, probe_rate=rate, language=language
        )
    except Exception as e:
        logger.warning(f"holding phrases: cannot build the {choice.tts.name} TTS ({e!r})")
        renderer = None
    fallback = offline_fallback(settings, shared, rate, language)
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
