"""Holding phrases: the cache (render once, disk, fallback) and the processor (when to play).

Processor tests run it in a real Pipecat pipeline between a frame source and a recording sink,
with short delays so they stay fast; the end-to-end tests go through the real server, the
Exotel simulator and the fake Deepgram/OpenAI/Cartesia servers and measure on the socket.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    FunctionCallFromLLM,
    FunctionCallResultFrame,
    FunctionCallsStartedFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.text.base_text_aggregator import TextType
from pipecat.workers.runner import WorkerRunner

from bot.conversation.holding import (
    HoldingEvent,
    HoldingPhraseProcessor,
    PhraseCache,
    PhraseStore,
    RenderedPhrase,
    TTSRenderer,
    VoiceId,
    resample_pcm,
)
from serializers.exotel import chunk_rule

SR = 8000
PHRASES = ("One moment, please.", "Let me check that for you.", "Just a second.")
VOICE = VoiceId("test", "tone")


def tone(secs: float, rate: int = SR, freq: float = 440.0, amp: float = 3000.0) -> bytes:
    t = np.arange(round(secs * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16).tobytes()


def wav_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.wav"))


def static_cache(texts=PHRASES, secs: float = 0.5, rate: int = SR) -> PhraseCache:
    """A cache with every phrase already in memory: each a tone of its own pitch."""
    cache = PhraseCache(texts)
    for i, text in enumerate(texts):
        pcm = tone(secs, rate, freq=300.0 + 100 * i)
        cache.put(RenderedPhrase.from_pcm(text, pcm, rate, VOICE))
    return cache


# --------------------------------------------------------------------------------------------
# Harness: source -> processor -> sink, in a real pipeline
# --------------------------------------------------------------------------------------------


@dataclass
class Seen:
    t: float
    frame: Frame


class Sink(FrameProcessor):
    """Records every downstream frame with its arrival time."""

    def __init__(self) -> None:
        super().__init__(name="Sink")
        self.seen: list[Seen] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            self.seen.append(Seen(time.monotonic(), frame))
        await self.push_frame(frame, direction)

    def frames(self, *types: type) -> list[Frame]:
        return [s.frame for s in self.seen if isinstance(s.frame, types)]

    def phrase_frames(self) -> list[Frame]:
        return [
            s.frame
            for s in self.seen
            if str(getattr(s.frame, "context_id", "") or "").startswith("holding-")
        ]


class Harness:
    def __init__(self, *processors: FrameProcessor) -> None:
        self.sink = Sink()
        self.worker = PipelineWorker(
            Pipeline([*processors, self.sink]),
            params=PipelineParams(audio_in_sample_rate=SR, audio_out_sample_rate=SR),
            enable_rtvi=False,
            idle_timeout_secs=None,
        )
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Harness:
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(self.worker)
        started = asyncio.Event()

        @self.worker.event_handler("on_pipeline_started")
        async def _started(*_: Any) -> None:
            started.set()

        self._task = asyncio.create_task(runner.run())
        await asyncio.wait_for(started.wait(), 5)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.worker.queue_frame(EndFrame())
        assert self._task is not None
        await asyncio.wait_for(self._task, 10)

    async def send(self, *frames: Frame) -> None:
        for frame in frames:
            await self.worker.queue_frame(frame)

    async def turn_end(self, *, llm: bool = True) -> float:
        """The caller's turn ends and (optionally) the LLM starts on an answer."""
        await self.send(UserStartedSpeakingFrame(), InterruptionFrame())
        await asyncio.sleep(0.02)
        ended = time.monotonic()
        await self.send(UserStoppedSpeakingFrame())
        if llm:
            await self.send(LLMFullResponseStartFrame())
        return ended

    async def answer(self, text: str = "Here is the answer.", chunks: int = 3) -> None:
        """The real TTS's answer: started, text, audio, stopped, end of the LLM response."""
        await self.send(
            TTSStartedFrame(context_id="answer"),
            TTSTextFrame(text, text_type=TextType.SENTENCE, context_id="answer"),
        )
        for _ in range(chunks):
            await self.send(TTSAudioRawFrame(tone(0.2, freq=900), SR, 1, context_id="answer"))
        await self.send(TTSStoppedFrame(context_id="answer"), LLMFullResponseEndFrame())


def holder(mode: str = "adaptive", **kwargs: Any) -> HoldingPhraseProcessor:
    kwargs.setdefault("delay_secs", 0.2)
    kwargs.setdefault("second_delay_secs", 0.8)
    kwargs.setdefault("max_per_turn", 2)
    return HoldingPhraseProcessor(kwargs.pop("cache", None) or static_cache(), mode=mode, **kwargs)


# --------------------------------------------------------------------------------------------
# Processor: modes and timing
# --------------------------------------------------------------------------------------------


async def test_adaptive_slow_answer_gets_a_phrase_on_time_and_answer_follows() -> None:
    proc = holder(max_per_turn=1)
    async with Harness(proc) as h:
        ended = await h.turn_end()
        await asyncio.sleep(0.5)
        await h.answer()
        await asyncio.sleep(0.1)
    [event] = proc.events
    assert event.turn == 1 and event.slot == 1 and event.text == PHRASES[0]
    # The timer fires on time and the phrase is handed over at once (everything pre-rendered).
    assert abs(event.fired_at - (ended + 0.2)) < 0.05
    assert event.pushed_at - event.fired_at < 0.01
    # Ordinary bot audio: started (not for the context), compliant chunks, stopped.
    frames = h.sink.phrase_frames()
    assert isinstance(frames[0], TTSStartedFrame) and frames[0].append_to_context is False
    assert isinstance(frames[-1], TTSStoppedFrame)
    audio = [f for f in frames if isinstance(f, TTSAudioRawFrame)]
    rule = chunk_rule(SR)
    assert audio and all(len(f.audio) == rule.min_bytes and f.sample_rate == SR for f in audio)
    # The answer comes after the whole phrase.
    kinds = [getattr(s.frame, "context_id", None) for s in h.sink.seen]
    last_phrase = max(i for i, k in enumerate(kinds) if k and k.startswith("holding-"))
    first_answer = kinds.index("answer")
    assert first_answer > last_phrase
    # Phrase sink arrival within a few ms of the timer.
    first_audio_at = next(s.t for s in h.sink.seen if s.frame is audio[0])
    assert first_audio_at - event.fired_at < 0.05


async def test_adaptive_fast_answer_plays_no_phrase() -> None:
    proc = holder()
    async with Harness(proc) as h:
        await h.turn_end()
        await asyncio.sleep(0.1)
        await h.answer()
        await asyncio.sleep(1.0)  # past both timers
    assert proc.events == []
    assert h.sink.phrase_frames() == []


async def test_tts_started_but_silent_gets_grace_then_a_phrase() -> None:
    """A TTS that has started but sends no audio (cold provider) is covered after a grace."""
    proc = holder(max_per_turn=1)
    async with Harness(proc) as h:
        ended = await h.turn_end()
        await asyncio.sleep(0.15)
        started = time.monotonic()
        await h.send(TTSStartedFrame(context_id="answer"))
        await asyncio.sleep(0.5)
    [event] = proc.events
    assert event.fired_at >= started + 0.2 - 0.01  # not at ended + 0.2: the TTS got its grace
    assert event.fired_at > ended + 0.3


async def test_adaptive_no_phrase_when_nothing_is_answering() -> None:
    """An empty turn does not run the LLM: a phrase would promise an answer that never comes."""
    proc = holder()
    async with Harness(proc) as h:
        await h.turn_end(llm=False)
        await asyncio.sleep(1.2)  # past both timers
    assert proc.events == []


async def test_adaptive_no_phrase_after_an_empty_reply() -> None:
    """An LLM reply that ended without speech leaves nothing to wait for."""
    proc = holder()
    async with Harness(proc) as h:
        await h.turn_end()
        await asyncio.sleep(0.05)
        await h.send(LLMFullResponseEndFrame())
        await asyncio.sleep(1.2)
    assert proc.events == []


async def test_adaptive_waits_for_the_llm_then_plays() -> None:
    proc = holder(max_per_turn=1)
    async with Harness(proc) as h:
        await h.turn_end(llm=False)
        await asyncio.sleep(0.4)
        llm_at = time.monotonic()
        await h.send(LLMFullResponseStartFrame())
        await asyncio.sleep(0.2)
    [event] = proc.events
    assert 0 <= event.fired_at - llm_at < 0.05


async def test_function_call_counts_as_work_on_an_answer() -> None:
    proc = holder(max_per_turn=2)
    call = FunctionCallFromLLM("lookup", "call-1", {}, LLMContext())
    async with Harness(proc) as h:
        await h.turn_end()
        await h.send(FunctionCallsStartedFrame(function_calls=[call]), LLMFullResponseEndFrame())
        await asyncio.sleep(0.4)
        await h.send(FunctionCallResultFrame("lookup", "call-1", {}, {"ok": True}))
        await asyncio.sleep(1.2)
    assert [e.slot for e in proc.events] == [1, 2]


async def test_always_plays_at_once_even_before_a_fast_answer() -> None:
    proc = holder("always", max_per_turn=1)
    async with Harness(proc) as h:
        ended = await h.turn_end()
        await asyncio.sleep(0.05)
        await h.answer()
        await asyncio.sleep(0.2)
    [event] = proc.events
    assert event.fired_at - ended < 0.03
    kinds = [getattr(s.frame, "context_id", None) for s in h.sink.seen]
    assert kinds.index("answer") > max(i for i, k in enumerate(kinds) if k and "holding" in k)


async def test_off_plays_nothing() -> None:
    proc = holder("off")
    async with Harness(proc) as h:
        await h.turn_end()
        await asyncio.sleep(1.0)
    assert proc.events == [] and h.sink.phrase_frames() == []


async def test_second_phrase_is_different_and_max_per_turn_holds() -> None:
    proc = holder(max_per_turn=2, second_delay_secs=0.6)
    async with Harness(proc) as h:
        ended = await h.turn_end()
        await asyncio.sleep(2.5)  # the answer never comes
    assert [e.slot for e in proc.events] == [1, 2]
    first, second = proc.events
    assert first.text != second.text
    # Not before the second delay, and not before the first phrase (0.5 s) plus quiet (0.2 s).
    assert second.fired_at >= ended + 0.6 - 0.01
    assert second.fired_at >= first.pushed_at + 0.5 + 0.2 - 0.01


async def test_max_one_per_turn() -> None:
    proc = holder(max_per_turn=1)
    async with Harness(proc) as h:
        await h.turn_end()
        await asyncio.sleep(1.5)
    assert len(proc.events) == 1


async def test_never_the_same_phrase_twice_in_a_row_across_turns() -> None:
    proc = holder(max_per_turn=1)
    async with Harness(proc) as h:
        for _ in range(5):
            await h.turn_end()
            await asyncio.sleep(0.3)
            await h.answer()
            await asyncio.sleep(0.05)
    texts = [e.text for e in proc.events]
    assert len(texts) == 5
    assert all(a != b for a, b in zip(texts, texts[1:], strict=False))
    assert [e.turn for e in proc.events] == [1, 2, 3, 4, 5]


async def test_single_phrase_list_never_repeats_within_a_turn() -> None:
    proc = holder(cache=static_cache(PHRASES[:1]), max_per_turn=2, second_delay_secs=0.4)
    proc._texts = [PHRASES[0]]  # the processor's list is the cache's one phrase
    async with Harness(proc) as h:
        await h.turn_end()
        await asyncio.sleep(1.5)
    assert len(proc.events) == 1


async def test_barge_in_cancels_a_pending_phrase() -> None:
    proc = holder()
    async with Harness(proc) as h:
        await h.turn_end()
        await asyncio.sleep(0.1)
        await h.send(UserStartedSpeakingFrame(), InterruptionFrame())  # caller talks again
        await asyncio.sleep(1.2)
    assert proc.events == [] and h.sink.phrase_frames() == []


async def test_nothing_of_the_phrase_follows_an_interruption() -> None:
    """Slow pushes (a yield per frame) and a barge-in mid-push: no phrase frame after it."""
    proc = holder(max_per_turn=1, cache=static_cache(secs=4.0))

    @proc.event_handler("on_before_push_frame")
    async def _slow(_proc: FrameProcessor, frame: Frame) -> None:
        if isinstance(frame, TTSAudioRawFrame):
            await asyncio.sleep(0.01)

    async with Harness(proc) as h:
        await h.turn_end()
        await asyncio.sleep(0.25)  # the phrase (20 chunks, 10 ms each) is being pushed
        await h.send(UserStartedSpeakingFrame(), InterruptionFrame())
        await asyncio.sleep(0.4)
    seen = [s.frame for s in h.sink.seen]
    cut = max(i for i, f in enumerate(seen) if isinstance(f, InterruptionFrame))
    assert not any(
        str(getattr(f, "context_id", "") or "").startswith("holding-") for f in seen[cut:]
    )
    phrase_audio = [f for f in seen[:cut] if isinstance(f, TTSAudioRawFrame)]
    assert 0 < len(phrase_audio) < 20  # it really was cut mid-push


async def test_answer_arriving_mid_push_queues_behind_the_phrase() -> None:
    """The answer's frames never interleave with a phrase being pushed."""
    proc = holder(max_per_turn=1, cache=static_cache(secs=3.0))

    @proc.event_handler("on_before_push_frame")
    async def _slow(_proc: FrameProcessor, frame: Frame) -> None:
        if isinstance(frame, TTSAudioRawFrame) and frame.context_id != "answer":
            await asyncio.sleep(0.01)

    async with Harness(proc) as h:
        await h.turn_end()
        await asyncio.sleep(0.25)  # mid-push (15 chunks x 10 ms from 0.2 s)
        await h.answer()
        await asyncio.sleep(0.5)
    kinds = [
        "p" if str(getattr(s.frame, "context_id", "")).startswith("holding-") else "a"
        for s in h.sink.seen
        if isinstance(s.frame, TTSStartedFrame | TTSAudioRawFrame | TTSStoppedFrame)
    ]
    assert kinds == ["p"] * (2 + 15) + ["a"] * (2 + 3)


async def test_phrase_is_not_added_to_the_llm_context() -> None:
    """Pipecat 1.14's assistant aggregator opens a turn on TTSStartedFrame only when
    ``append_to_context`` is set, and only text frames add words: the phrase adds nothing."""
    context = LLMContext([{"role": "user", "content": "where is my order"}])
    pair = LLMContextAggregatorPair(context)
    turns: list[str] = []

    @pair.assistant().event_handler("on_assistant_turn_started")
    async def _started(*_: Any) -> None:
        turns.append("started")

    proc = holder(max_per_turn=2, second_delay_secs=0.5)
    async with Harness(proc, pair.assistant()) as h:
        await h.turn_end(llm=False)
        await h.send(LLMFullResponseStartFrame())
        await asyncio.sleep(1.3)  # two phrases play
        assert len(proc.events) == 2
        assert turns == ["started"]  # the LLM response's own turn, not the phrases'
        await h.send(
            TTSStartedFrame(context_id="answer"),
            TTSTextFrame("Your order ships today.", text_type=TextType.SENTENCE, context_id="a"),
            TTSAudioRawFrame(tone(0.2), SR, 1, context_id="answer"),
            TTSStoppedFrame(context_id="answer"),
            LLMFullResponseEndFrame(),
        )
        await asyncio.sleep(0.2)
    assistant = [m for m in context.get_messages() if m.get("role") == "assistant"]
    assert assistant == [{"role": "assistant", "content": "Your order ships today."}]
    assert not any(p in json.dumps(context.get_messages()) for p in PHRASES)


async def test_on_holding_phrase_event_reports_turn_and_times() -> None:
    proc = holder(max_per_turn=1)
    got: list[HoldingEvent] = []

    @proc.event_handler("on_holding_phrase")
    async def _record(_proc: HoldingPhraseProcessor, event: HoldingEvent) -> None:
        got.append(event)

    async with Harness(proc) as h:
        await h.turn_end()
        await asyncio.sleep(0.4)
    [event] = got
    assert event.turn == 1 and event.text in PHRASES
    assert 0.2 <= event.latency_secs < 0.3
    assert event.duration_secs == pytest.approx(0.6, abs=0.01)  # 0.5 s padded to 200 ms chunks


async def test_say_plays_a_cached_greeting_into_the_context() -> None:
    greeting = "Namaste! How can I help?"
    cache = static_cache((*PHRASES, greeting))
    context = LLMContext()
    pair = LLMContextAggregatorPair(context)
    proc = HoldingPhraseProcessor(cache, PHRASES)
    async with Harness(proc, pair.assistant()):
        await asyncio.sleep(0.05)
        assert await proc.say(greeting)
        assert not await proc.say("Something never rendered.")
        await asyncio.sleep(0.2)
    assert context.get_messages() == [{"role": "assistant", "content": greeting}]


# --------------------------------------------------------------------------------------------
# Cache: rendering, disk, restart, fallback
# --------------------------------------------------------------------------------------------


class ToneTTS(FrameProcessor):
    """A minimal Pipecat-style TTS: TTSSpeakFrame -> started, audio at its own rate, stopped.

    ``fail`` makes it answer like a provider that is down: an upstream error and no audio.
    """

    calls: list[str] = []

    def __init__(self, rate: int, *, fail: bool = False) -> None:
        super().__init__(name="ToneTTS")
        self._rate = rate
        self._fail = fail

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        from pipecat.frames.frames import TTSSpeakFrame

        await super().process_frame(frame, direction)
        if not isinstance(frame, TTSSpeakFrame):
            await self.push_frame(frame, direction)
            return
        ToneTTS.calls.append(frame.text)
        if self._fail:
            await self.push_error("provider down")
            return
        await self.push_frame(TTSStartedFrame(context_id="c"))
        pcm = tone(0.05 * len(frame.text.split()), self._rate)
        for i in range(0, len(pcm), 1234):
            await self.push_frame(TTSAudioRawFrame(pcm[i : i + 1234], self._rate, 1, "c"))
        await self.push_frame(TTSStoppedFrame(context_id="c"))


def tone_renderer(provider: str = "tone", *, fail: bool = False, tts_rate: int | None = None):
    return TTSRenderer(
        VoiceId(provider, "v1"),
        lambda rate: ToneTTS(tts_rate or rate, fail=fail),
        timeout_secs=2.0,
    )


async def test_restart_renders_nothing(tmp_path: Path) -> None:
    ToneTTS.calls = []
    first = PhraseCache(PHRASES, renderer=tone_renderer(), store=PhraseStore(tmp_path))
    report = await first.warm(SR)
    assert report.rendered == len(PHRASES) and report.from_disk == 0
    assert len(ToneTTS.calls) == len(PHRASES)
    index = json.loads((tmp_path / "index.json").read_text())
    assert sorted(v["text"] for v in index.values()) == sorted(PHRASES)
    assert len(wav_files(tmp_path)) == len(PHRASES)

    ToneTTS.calls = []
    second = PhraseCache(PHRASES, renderer=tone_renderer(), store=PhraseStore(tmp_path))
    report = await second.warm(SR)
    assert report.rendered == 0 and report.from_disk == len(PHRASES)
    assert ToneTTS.calls == [] and second.rendered == 0
    for text in PHRASES:
        assert second.get(text, SR) == first.get(text, SR)


async def test_cache_key_depends_on_voice_text_and_rate(tmp_path: Path) -> None:
    ToneTTS.calls = []
    await PhraseCache(PHRASES[:1], renderer=tone_renderer(), store=PhraseStore(tmp_path)).warm(SR)
    other_voice = PhraseCache(
        PHRASES[:1], renderer=tone_renderer("other"), store=PhraseStore(tmp_path)
    )
    assert (await other_voice.warm(SR)).rendered == 1
    other_rate = PhraseCache(PHRASES[:1], renderer=tone_renderer(), store=PhraseStore(tmp_path))
    assert (await other_rate.warm(16000)).rendered == 1
    keys = {VoiceId("tone", "v1").key(PHRASES[0], SR), VoiceId("tone", "v1").key(PHRASES[0], 16000)}
    assert len(keys) == 2 and len(wav_files(tmp_path)) == 3


async def test_rendered_phrase_is_at_call_rate_and_compliant() -> None:
    """A TTS that answers at 24 kHz is converted to the call rate, then chunked."""
    cache = PhraseCache(PHRASES, renderer=tone_renderer(tts_rate=24000))
    await cache.warm(SR)
    rule = chunk_rule(SR)
    for text in PHRASES:
        phrase = cache.get(text, SR)
        assert phrase is not None and phrase.sample_rate == SR
        assert all(len(c) == rule.min_bytes for c in phrase.chunks)
        words = len(text.split())
        assert phrase.duration_secs == pytest.approx(0.05 * words, abs=rule.min_secs + 0.01)


async def test_falls_back_to_the_offline_voice_and_logs_it(tmp_path: Path, caplog_loguru) -> None:
    ToneTTS.calls = []

    async def fallback() -> TTSRenderer:
        return tone_renderer("offline")

    cache = PhraseCache(
        PHRASES,
        renderer=tone_renderer("cloud", fail=True),
        fallback=fallback,
        store=PhraseStore(tmp_path),
    )
    report = await cache.warm(SR)
    assert report.fell_back and not report.missing
    assert all(cache.get(t, SR).voice.provider == "offline" for t in PHRASES)
    assert any("falling back to the offline voice" in m for m in caplog_loguru)
    # The next start tries the configured voice again (it may be back), then uses the disk.
    ToneTTS.calls = []
    again = PhraseCache(
        PHRASES,
        renderer=tone_renderer("cloud", fail=True),
        fallback=fallback,
        store=PhraseStore(tmp_path),
    )
    report = await again.warm(SR)
    assert report.from_disk == len(PHRASES) and report.rendered == 0


async def test_other_rates_render_in_the_background_on_first_use() -> None:
    cache = PhraseCache(PHRASES, renderer=tone_renderer())
    await cache.warm(SR)
    assert cache.request(SR) is None  # ready: nothing to do
    task = cache.request(16000)
    assert task is not None and cache.get(PHRASES[0], 16000) is None
    assert cache.request(16000) is task  # one render per rate, however many calls ask
    await task
    assert cache.ready(16000)


def test_store_ignores_a_corrupt_file(tmp_path: Path) -> None:
    store = PhraseStore(tmp_path)
    key = VOICE.key("x", SR)
    store.save(key, tone(0.1), SR, {"text": "x"})
    assert store.load(key, SR) == tone(0.1)
    assert store.load(key, 16000) is None  # wrong rate: render again
    store.path_for(key).write_bytes(b"RIFF garbage")
    assert store.load(key, SR) is None
    assert not list(tmp_path.glob(".tmp-*"))


def test_resample_keeps_duration() -> None:
    pcm = tone(1.0, 24000)
    out = resample_pcm(pcm, 24000, 8000)
    assert len(out) == pytest.approx(len(pcm) / 3, abs=4)


@pytest.fixture
def caplog_loguru():
    from loguru import logger

    messages: list[str] = []
    handler = logger.add(lambda m: messages.append(str(m)), level="WARNING")
    yield messages
    logger.remove(handler)


# --------------------------------------------------------------------------------------------
# End to end: real server + simulator + fake providers
# --------------------------------------------------------------------------------------------


@dataclass
class BotUnderTest:
    url: str
    runtime: Any
    fakes: Any
    cache: PhraseCache


@asynccontextmanager
async def holding_bot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, first_token_latency: float, mode: str
) -> AsyncIterator[BotUnderTest]:
    import bot.server.runtime
    from bot.config import Settings
    from bot.conversation.holding import session_factory_with_holding, start_phrase_cache
    from bot.server.app import create_app
    from bot.server.runtime import Runtime
    from bot.testing import FakeOpenAI, FakeProviders
    from bot.testing.localserver import serving
    from tests.conftest import energy_vad_factory

    openai = FakeOpenAI(
        first_token_latency=first_token_latency, responder=lambda *_: "Sure, it ships today."
    )
    async with FakeProviders(openai=openai) as fakes:
        env = {k.lower(): v for k, v in fakes.env().items()}
        settings = Settings(
            **env,
            bot_greeting="",
            holding_mode=mode,
            holding_cache_dir=tmp_path / "phrases",
            holding_max_per_turn=1,
        )
        runtime = await Runtime.start(settings, vad_factory=energy_vad_factory, keep_finished=4)
        cache = await start_phrase_cache(settings, runtime.choice, runtime.shared)
        runtime.shared.phrases = cache
        monkeypatch.setattr(
            bot.server.runtime,
            "CallSession",
            session_factory_with_holding(bot.server.runtime.CallSession),
        )
        async with serving(create_app(settings, runtime=runtime)) as base:
            url = base.replace("http://", "ws://") + f"/exotel/ws?sample-rate={SR}"
            yield BotUnderTest(url, runtime, fakes, cache)


async def place_call(
    url: str, speak_secs: float = 0.8, listen_secs: float = 4.5
) -> tuple[Any, Any]:
    """One caller turn: a tone the energy VAD hears as speech, then listen, then hang up."""
    from bot.simulator import CallConfig, ExotelSimulator, Hangup, Say, Wait

    sim = ExotelSimulator(CallConfig(url=url))
    speech = np.frombuffer(tone(speak_secs), dtype=np.int16)
    rec = await sim.run([Say(speech, after_bot=False), Wait(listen_secs), Hangup()])
    return sim, rec


def session_of(runtime: Any, rec: Any) -> Any:
    [session] = [s for s in runtime.finished_calls if s.info.call_sid == rec.call_sid]
    return session


async def test_e2e_slow_llm_phrase_leaves_the_socket_at_once_and_answer_follows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with holding_bot(tmp_path, monkeypatch, first_token_latency=2.0, mode="adaptive") as b:
        sim, rec = await place_call(b.url)
    assert not rec.violations, rec.violations
    session = session_of(b.runtime, rec)
    [event] = session.holding.events
    phrase = b.cache.get(event.text, SR)
    t0 = sim._t0  # the simulator's call timeline starts here, on the same monotonic clock
    after = [c for c in rec.chunks if t0 + c.arrived >= event.fired_at - 0.001]
    first_media = t0 + after[0].arrived
    # Timer -> first phrase media on the caller's socket (loopback): a few ms; loose bound.
    assert first_media - event.fired_at < 0.15, first_media - event.fired_at
    assert abs(event.fired_at - (event.turn_ended_at + 0.7)) < 0.1
    # The phrase's chunks arrive whole and in order: exactly its audio, nothing interleaved.
    n = len(phrase.chunks)
    track = rec.bot_audio.tobytes()
    for chunk, expected in zip(after[:n], phrase.chunks, strict=True):
        start = round(chunk.start * SR) * 2
        assert track[start : start + len(expected)] == expected
    # The answer follows the phrase, after it has played, with nothing cut.
    answer = after[n:]
    assert answer, "no answer audio"
    assert answer[0].start >= after[n - 1].end - 1e-6
    assert all(c.cut is None for c in after)
    # Like speech, the phrase is followed by its own mark, before the answer's audio.
    assert any(after[n - 1].arrived <= m.received_at <= answer[0].arrived for m in rec.marks)
    # What the caller hears first is the phrase, not silence until the 2 s LLM answers.
    [turn] = rec.turns
    assert turn.first_bot_audio == pytest.approx(after[0].start, abs=0.01)
    assert turn.latency_secs < 2.0


async def test_e2e_fast_llm_no_phrase_in_adaptive_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with holding_bot(tmp_path, monkeypatch, first_token_latency=0.1, mode="adaptive") as b:
        _sim, rec = await place_call(b.url, listen_secs=3.0)
    assert not rec.violations, rec.violations
    session = session_of(b.runtime, rec)
    assert session.holding.events == []
    [turn] = rec.turns
    assert turn.latency_secs is not None and turn.latency_secs < 1.5
    # What the caller heard is the answer only: Cartesia's rendering of the reply.
    assert b.fakes.cartesia.transcripts[-1].strip().startswith("Sure")


async def test_e2e_barge_in_cuts_the_phrase_like_speech(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.simulator import BargeIn, CallConfig, ExotelSimulator, Hangup, Say, Wait

    async with holding_bot(tmp_path, monkeypatch, first_token_latency=3.0, mode="always") as b:
        sim = ExotelSimulator(CallConfig(url=b.url))
        speech = np.frombuffer(tone(0.8), dtype=np.int16)
        rec = await sim.run(
            [
                Say(speech, after_bot=False),
                BargeIn(np.frombuffer(tone(0.6), dtype=np.int16), after_bot_start=0.3),
                Wait(1.0),
                Hangup(),
            ]
        )
    assert not rec.violations, rec.violations
    session = session_of(b.runtime, rec)
    assert session.holding.events, "no phrase played"
    phrase = b.cache.get(session.holding.events[0].text, SR)
    assert rec.clears, "the barge-in did not clear the phrase"
    first = rec.chunks[0]
    heard = sum(c.played_secs for c in rec.chunks if c.utterance == first.utterance)
    assert heard < phrase.duration_secs - 0.2  # the phrase was cut short


async def test_second_start_makes_no_provider_calls(tmp_path: Path) -> None:
    """Process restart with the real Cartesia service on the fake: all phrases from disk."""
    from bot.config import Settings
    from bot.conversation.holding import start_phrase_cache
    from bot.providers import SharedResources, choose_providers
    from bot.testing import FakeProviders

    async with FakeProviders() as fakes:
        env = {k.lower(): v for k, v in fakes.env().items()}
        settings = Settings(**env, holding_cache_dir=tmp_path, bot_greeting="Hello there.")
        choice = choose_providers(settings)
        first = await start_phrase_cache(settings, choice, SharedResources())
        rendered = list(fakes.cartesia.transcripts)
        assert (
            first.rendered == len(first.texts) == 8
        )  # 4 phrases, greeting, goodbye, idle, apology
        assert len(rendered) == 8 and first.ready(SR)

        second = await start_phrase_cache(settings, choice, SharedResources())
        assert second.rendered == 0 and second.loaded_from_disk == 8 and second.ready(SR)
        assert fakes.cartesia.transcripts == rendered  # not one more request
        assert all(second.get(t, SR).voice.provider == "cartesia" for t in second.texts)


@pytest.mark.models
async def test_start_falls_back_to_the_offline_voice_when_the_tts_is_down(tmp_path: Path) -> None:
    from bot.config import Settings
    from bot.conversation.holding import start_phrase_cache
    from bot.providers import SharedResources, choose_providers
    from bot.testing import FakeProviders

    async with FakeProviders() as fakes:
        fakes.cartesia.fault = "refuse"
        env = {k.lower(): v for k, v in fakes.env().items()}
        settings = Settings(**env, holding_cache_dir=tmp_path, provider_timeout_secs=3.0)
        cache = await start_phrase_cache(settings, choose_providers(settings), SharedResources())
    assert cache.ready(SR)
    assert {cache.get(t, SR).voice.provider for t in cache.texts} == {"piper"}
    assert all(cache.get(t, SR).duration_secs > 0.5 for t in cache.texts)
