"""Call records: the per-call observer, its histograms, the record files, the report, redaction.

Unit tests drive ``CallObserver.on_push_frame`` with synthetic ``FramePushed`` hops (times are
exact: a stub pipeline clock starts at 0 and the observer's clock is fake), one test runs the
observer in a real Pipecat pipeline, and an end-to-end test places a simulated Exotel call
against the real server with the fake cloud providers, then checks /metrics, the record file
and every log line against what the simulator saw.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import urllib.request
import wave
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from loguru import logger
from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    LLMTextFrame,
    MetricsFrame,
    OutputAudioRawFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import ProcessingMetricsData, TTFBMetricsData
from pipecat.observers.base_observer import FramePushed
from pipecat.processors.filters.identity_filter import IdentityFilter
from pipecat.processors.frame_processor import FrameDirection
from pipecat.tests.utils import SleepFrame, run_test
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from bot.config import Settings
from bot.conversation.holding import HoldingEvent, HoldingPhraseProcessor
from bot.observability.metrics import Metrics
from bot.observability.records import (
    REDACTED,
    CallObserver,
    Redactor,
    build_stereo,
    configured_secrets,
    provider_label,
    record_path,
    summary_line,
    watch_call,
    write_record,
)
from bot.providers import SharedResources, choose_providers
from bot.server.app import create_app
from bot.server.runtime import Runtime
from bot.simulator import BargeIn, CallConfig, Hangup, Say, WaitForBot, simulate_call
from bot.simulator.from_record import report_main
from bot.testing import FakeProviders
from bot.testing.localserver import serving
from tests.conftest import energy_vad_factory
from tests.helpers import cloud_settings, tone

DOWN, UP = FrameDirection.DOWNSTREAM, FrameDirection.UPSTREAM
RATE = 8000
CHUNK = 3200  # 200 ms at 8 kHz


# --------------------------------------------------------------------------------------------
# Harness: stub processors on a clock that starts at 0, a fake output transport
# --------------------------------------------------------------------------------------------


class StubClock:
    """Pipecat's SystemClock keeps its monotonic origin in ``_time`` (ns); 1 ns ~ t=0."""

    _time = 1


class StubProcessor:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_clock(self) -> StubClock:
        return StubClock()


class FakeOutput(StubProcessor):
    """Stands in for ExotelOutputTransport: its events and its sent-chunk sizes."""

    def __init__(self) -> None:
        super().__init__("ExotelOutputTransport#0")
        self.handlers: dict[str, list[Any]] = {}
        self.sent_chunks: list[int] = []

    def add_event_handler(self, name: str, handler: Any) -> None:
        self.handlers.setdefault(name, []).append(handler)

    async def fire(self, name: str, *args: Any) -> None:
        for handler in self.handlers.get(name, []):
            await handler(self, *args)


INPUT = StubProcessor("ExotelInputTransport#0")
STT = StubProcessor("DeepgramSTTService#3")
USER = StubProcessor("LLMUserAggregator#0")
LLM = StubProcessor("OpenAILLMService#0")
TTS = StubProcessor("CartesiaTTSService#0")
HOLD = StubProcessor("HoldingPhrase#0")
ASSISTANT = StubProcessor("LLMAssistantAggregator#0")


class Call:
    """One observed call with a hand-driven clock."""

    def __init__(self, tmp_path: Path | None = None, **kwargs: Any) -> None:
        self.metrics = Metrics()
        self.clock = 0.0
        self.output = FakeOutput()
        self.serializer = SimpleNamespace(counters={"media": 10, "rejected:malformed": 1})
        self.info = SimpleNamespace(
            call_sid="CA123",
            stream_sid="ST456",
            account_sid="AC789",
            from_number="+919800000001",
            to_number="+918000000002",
            custom_parameters={"lang": "hi"},
            sample_rate=RATE,
        )
        self.obs = CallObserver(
            self.info,
            metrics=self.metrics,
            records_dir=tmp_path,
            started_at=0.0,
            clock=lambda: self.clock,
            **kwargs,
        )
        self.obs.attach(self.output, self.serializer)

    async def push(
        self,
        frame: Frame,
        t: float,
        source: StubProcessor,
        direction: FrameDirection = DOWN,
    ) -> None:
        """A first push of ``frame`` by ``source`` at call time ``t``."""
        self.clock = max(self.clock, t)
        dest = StubProcessor("next")
        await self.obs.on_push_frame(FramePushed(source, dest, frame, direction, round(t * 1e9)))

    async def broadcast(self, cls: type, t: float, source: StubProcessor, **kw: Any) -> None:
        """A SystemFrame broadcast both ways: two frames, as Pipecat does it."""
        await self.push(cls(**kw), t, source, DOWN)
        await self.push(cls(**kw), t, source, UP)

    async def event(self, name: str, t: float, *args: Any) -> None:
        self.clock = t
        await self.output.fire(name, *args)

    async def caller_says(self, start: float, end: float, text: str, turn_end: float) -> None:
        """VAD (start_secs 0.2, stop_secs 0.2), a final transcript, then the turn end."""
        await self.broadcast(VADUserStartedSpeakingFrame, start + 0.2, USER, start_secs=0.2)
        await self.broadcast(UserStartedSpeakingFrame, start + 0.2, USER)
        await self.broadcast(VADUserStoppedSpeakingFrame, end + 0.2, USER, stop_secs=0.2)
        await self.push(TranscriptionFrame(text, "caller", "now", finalized=True), end + 0.25, STT)
        await self.broadcast(UserStoppedSpeakingFrame, turn_end, USER)

    async def bot_says(self, start: float, chunks: int, words: str = "") -> float:
        """Output transport: BotStarted, paced chunks (pushed after their pacing), BotStopped."""
        await self.broadcast(BotStartedSpeakingFrame, start, self.output)
        for word in words.split():
            await self.push(TTSTextFrame(word, "word"), start, TTS)
        for i in range(chunks):
            # The TTS's own audio (first pushed by the TTS) must not count as sent.
            await self.push(TTSAudioRawFrame(b"\1\0" * 800, RATE, 1), start + i * 0.2, TTS)
            pcm = (np.full(CHUNK // 2, 1000 + i, "<i2")).tobytes()
            await self.push(OutputAudioRawFrame(pcm, RATE, 1), start + i * 0.2, self.output)
            self.output.sent_chunks.append(CHUNK)
        end = start + chunks * 0.2
        await self.broadcast(BotStoppedSpeakingFrame, end, self.output)
        return end


def only_record(root: Path) -> Path:
    (path,) = root.glob("*/CA123.json")
    return path


def hidden_files(folder: Path) -> list[Path]:
    return list(folder.glob(".*"))


def inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def histogram(metrics: Metrics, name: str, **labels: str) -> tuple[float, float]:
    """(count, sum) of a histogram in the app's registry."""
    registry: CollectorRegistry = metrics.registry
    count = registry.get_sample_value(f"{name}_count", labels) or 0.0
    total = registry.get_sample_value(f"{name}_sum", labels) or 0.0
    return count, total


# --------------------------------------------------------------------------------------------
# The observer
# --------------------------------------------------------------------------------------------


async def test_turn_is_recorded_with_times_texts_and_latency() -> None:
    call = Call()
    await call.bot_says(0.1, 3, "Namaste! How can I help?")  # greeting: before any turn
    await call.caller_says(2.0, 3.0, "what are your hours", turn_end=3.5)
    for token in ("We are open ", "nine to five."):
        await call.push(LLMTextFrame(token), 3.6, LLM)
    await call.bot_says(3.9, 4, "We are open nine to five.")

    record = call.obs.build_record("caller hung up (stop: callended)", "caller")
    (turn,) = record["turns"]
    assert turn["speech_start"] == pytest.approx(2.0)
    assert turn["speech_end"] == pytest.approx(3.0)
    assert turn["turn_end"] == pytest.approx(3.5)
    assert turn["heard"] == "what are your hours"
    assert turn["answered"] == "We are open nine to five."
    assert turn["spoken"] == "We are open nine to five."
    assert turn["first_bot_audio"] == pytest.approx(3.9)
    assert turn["response_latency"] == pytest.approx(0.9)
    assert not turn["interrupted"] and not turn["holding_phrase"]
    assert not turn["bot_speaking_at_onset"]
    # Only the output transport's downstream frames count: 7 chunks sent, 2 bot runs.
    assert len(record["bot_audio_chunks"]) == 7
    assert record["bot_speech"] == [[0.1, pytest.approx(0.7)], [3.9, pytest.approx(4.7)]]
    assert record["outbound_chunk_sizes"] == {"3200": 7}
    assert record["inbound_events"] == {"media": 10, "rejected:malformed": 1}
    assert histogram(call.metrics, "exotel_response_latency_seconds") == (
        1,
        pytest.approx(0.9),
    )


async def test_first_chunk_arrival_is_its_run_start_and_later_ones_one_chunk_earlier() -> None:
    """Chunks are pushed after the transport's pacing sleep: arrival ~ push - duration."""
    call = Call()
    await call.broadcast(BotStartedSpeakingFrame, 1.0, call.output)
    for push_t in (1.0, 1.2, 1.4, 1.6):
        await call.push(OutputAudioRawFrame(bytes(CHUNK), RATE, 1), push_t, call.output)
    arrivals = [t for t, _ in call.obs.bot_chunks]
    assert arrivals == pytest.approx([1.0, 1.0, 1.2, 1.4])


async def test_barge_in_marks_the_turn_interrupted_and_times_the_clear() -> None:
    call = Call()
    await call.caller_says(1.0, 2.0, "tell me a story", turn_end=2.4)
    await call.bot_says(2.8, 10)  # 2.8 .. 4.8
    await call.event("on_mark_sent", 4.8, "utt-1")
    # The caller talks over the bot at 3.5; VAD decides at 3.7 and the clear goes at 3.71.
    await call.broadcast(VADUserStartedSpeakingFrame, 3.7, USER, start_secs=0.2)
    await call.event("on_clear_sent", 3.71)
    await call.broadcast(VADUserStoppedSpeakingFrame, 4.4, USER, stop_secs=0.2)

    record = call.obs.build_record("caller hung up", "caller")
    first, second = record["turns"]
    assert not first["interrupted"]
    assert second["interrupted"] and second["bot_speaking_at_onset"]
    assert second["speech_start"] == pytest.approx(3.5)
    assert second["clear_latency"] == pytest.approx(0.21)
    assert record["summary"]["interruptions"] == 1
    assert [e["type"] for e in record["events"]] == ["clear", "mark_sent"]
    assert histogram(call.metrics, "exotel_barge_in_clear_latency_seconds") == (
        1,
        pytest.approx(0.21),
    )


async def test_clear_seen_before_its_vad_frame_goes_to_the_new_turn() -> None:
    """Transport events skip the observer queue, so a clear can overtake its turn's frame."""
    call = Call()
    await call.caller_says(1.0, 2.0, "hello", turn_end=2.4)
    await call.bot_says(2.6, 10)
    await call.event("on_clear_sent", 3.21)  # the previous turn ended: this waits
    assert not call.obs.turns[0].interrupted
    await call.broadcast(VADUserStartedSpeakingFrame, 3.2, USER, start_secs=0.2)
    assert call.obs.turns[1].interrupted
    assert call.obs.turns[1].clear_latency == pytest.approx(0.21)
    assert not call.obs.turns[0].interrupted


async def test_pause_clear_just_before_the_onset_estimate_is_that_turns() -> None:
    """The bot pauses at the first voiced window; VAD start minus start_secs can put the
    onset a little after that clear. A pause that was not speech is an event and a count."""
    call = Call()
    await call.caller_says(1.0, 2.0, "hello", turn_end=2.4)
    await call.bot_says(2.6, 20)
    await call.event("on_clear_sent", 3.0)  # a cough: paused, then resumed
    await call.event("on_resumed", 3.1)
    await call.event("on_clear_sent", 3.95)  # the caller's first word
    await call.broadcast(VADUserStartedSpeakingFrame, 4.2, USER, start_secs=0.2)
    assert [t.interrupted for t in call.obs.turns] == [False, True]
    assert call.obs.turns[1].clear_latency == 0.0
    record = call.obs.build_record("caller hung up", "caller")
    assert [e["type"] for e in record["events"]] == ["clear", "resumed", "clear"]
    assert call.metrics.registry.get_sample_value("exotel_barge_in_resumes_total") == 1


async def test_pause_inside_a_turn_is_one_turn_with_two_speech_segments() -> None:
    call = Call()
    await call.broadcast(VADUserStartedSpeakingFrame, 1.2, USER, start_secs=0.2)
    await call.broadcast(VADUserStoppedSpeakingFrame, 2.2, USER, stop_secs=0.2)
    await call.broadcast(VADUserStartedSpeakingFrame, 2.6, USER, start_secs=0.2)
    # Bot audio while the caller is mid-utterance is not the response.
    await call.broadcast(BotStartedSpeakingFrame, 2.7, call.output)
    await call.broadcast(BotStoppedSpeakingFrame, 2.8, call.output)
    await call.broadcast(VADUserStoppedSpeakingFrame, 3.7, USER, stop_secs=0.2)
    await call.broadcast(UserStoppedSpeakingFrame, 4.0, USER)
    await call.broadcast(BotStartedSpeakingFrame, 4.3, call.output)
    (turn,) = call.obs.build_record(None, None)["turns"]
    assert turn["speech"] == [[1.0, 2.0], [2.4, 3.5]]
    assert turn["response_latency"] == pytest.approx(0.8)


async def test_holding_phrase_noted_before_its_turn_end_frame_is_matched() -> None:
    call = Call()
    await call.broadcast(VADUserStartedSpeakingFrame, 1.2, USER, start_secs=0.2)
    await call.broadcast(VADUserStoppedSpeakingFrame, 2.2, USER, stop_secs=0.2)
    # The holding processor reacts to UserStoppedSpeakingFrame (t=2.5) at 2.52, before the
    # frame has come out of this observer's queue.
    call.obs.note_holding_phrase("One moment, please.", t=2.52, secs=1.1)
    assert call.obs.turns[0].holding == []
    await call.broadcast(UserStoppedSpeakingFrame, 2.5, USER)
    await call.bot_says(2.53, 6)
    call.obs.note_holding_phrase("Thanks for waiting, almost there.", t=5.5, secs=1.6)

    record = call.obs.build_record("bot ended", "bot")
    (turn,) = record["turns"]
    assert turn["holding_phrase"] and len(turn["holding"]) == 2
    assert turn["holding_latency"] == pytest.approx(0.02)
    assert turn["response_latency"] == pytest.approx(0.53)  # the phrase is what was heard
    assert record["summary"]["holding_phrases"] == 2
    # Only the first phrase of a turn measures responsiveness.
    assert histogram(call.metrics, "exotel_holding_phrase_latency_seconds") == (
        1,
        pytest.approx(0.02),
    )


async def test_provider_ttfb_is_labelled_by_service_not_instance() -> None:
    call = Call()
    frame = MetricsFrame(
        data=[
            TTFBMetricsData(processor="DeepgramSTTService#3", value=0.12),
            ProcessingMetricsData(processor="DeepgramSTTService#3", value=0.5),
        ]
    )
    await call.push(frame, 1.0, STT)
    await call.push(
        MetricsFrame(data=[TTFBMetricsData(processor="OpenAILLMService#9", value=0.3)]), 2.0, LLM
    )
    await call.push(
        MetricsFrame(data=[TTFBMetricsData(processor="OpenAILLMService#9", value=0.5)]), 3.0, LLM
    )
    m = call.metrics
    assert histogram(m, "exotel_provider_ttfb_seconds", provider="DeepgramSTTService") == (
        1,
        pytest.approx(0.12),
    )
    assert histogram(m, "exotel_provider_ttfb_seconds", provider="OpenAILLMService") == (
        2,
        pytest.approx(0.8),
    )
    summary = call.obs.build_record(None, None)["summary"]
    assert summary["provider_ttfb"]["OpenAILLMService"] == {"p50_ms": 400, "max_ms": 500, "n": 2}
    assert provider_label("CartesiaTTSService#120") == "CartesiaTTSService"


async def test_events_dtmf_marks_and_errors() -> None:
    call = Call()
    await call.push(InputDTMFFrame(button=KeypadEntry.FIVE), 1.0, INPUT)
    await call.event("on_mark_sent", 1.5, "utt-1")
    await call.event("on_mark_echoed", 1.9, "utt-1")
    await call.push(ErrorFrame(error="TTS connection lost"), 2.0, TTS, UP)
    events = call.obs.build_record(None, None)["events"]
    assert [(e["t"], e["type"]) for e in events] == [
        (1.0, "dtmf"),
        (1.5, "mark_sent"),
        (1.9, "mark_echoed"),
        (2.0, "error"),
    ]
    assert events[0]["digit"] == "\u2022"  # a keypad digit may be a PIN: masked (issue 20)
    assert events[3]["processor"] == "CartesiaTTSService#0"


async def test_frames_it_does_not_need_are_resolved_once_to_nothing() -> None:
    call = Call()
    audio = InputAudioRawFrame(bytes(1600), RATE, 1)
    for i in range(3):
        await call.push(audio, 0.1 * i, INPUT)
    assert call.obs._dispatch[InputAudioRawFrame] is None  # no recording: not even looked at
    assert call.obs.build_record(None, None)["turns"] == []


def test_it_wants_only_the_pushes_it_reads(tmp_path: Path) -> None:
    """The call's observer hub asks before queueing a push (bot.conversation.pipeline)."""
    call = Call()

    def push(frame: Frame, source: StubProcessor) -> FramePushed:
        return FramePushed(source, StubProcessor("next"), frame, DOWN, 0)

    caller = InputAudioRawFrame(bytes(1600), RATE, 1)
    assert not call.obs.wants(push(caller, INPUT))  # no recording: caller audio unread
    assert not call.obs.wants(push(TTSAudioRawFrame(bytes(CHUNK), RATE, 1), TTS))
    assert call.obs.wants(push(OutputAudioRawFrame(bytes(CHUNK), RATE, 1), call.output))
    assert call.obs.wants(push(TranscriptionFrame("hi", "caller", "now"), STT))
    assert Call(tmp_path, record_audio=True).obs.wants(push(caller, INPUT))  # recorded


async def test_observer_in_a_real_pipeline_uses_push_times() -> None:
    """Through Pipecat's worker: first pushes only, times from the pipeline clock."""
    info = Call().info
    obs = CallObserver(info, metrics=Metrics())
    frames = [
        SleepFrame(0.3),
        VADUserStartedSpeakingFrame(start_secs=0.2),
        SleepFrame(0.3),
        VADUserStoppedSpeakingFrame(stop_secs=0.2),
        TranscriptionFrame("hi there", "caller", "now", finalized=True),
        UserStoppedSpeakingFrame(),
        LLMTextFrame("Hello!"),
    ]
    await run_test(IdentityFilter(), frames_to_send=frames, observers=[obs])
    (turn,) = obs.build_record(None, None)["turns"]
    assert turn["heard"] == "hi there" and turn["answered"] == "Hello!"
    assert 0.0 < turn["speech_start"] < turn["speech_end"] < turn["turn_end"] < 5.0
    # VAD start at ~0.3 s, stop at ~0.6 s: speech = [~0.1, ~0.4], i.e. ~0.3 s long.
    assert turn["speech_start"] == pytest.approx(0.1, abs=0.08)
    assert turn["speech_end"] - turn["speech_start"] == pytest.approx(0.3, abs=0.08)


# --------------------------------------------------------------------------------------------
# Files: record, recording, summary, report
# --------------------------------------------------------------------------------------------


async def test_finish_writes_record_and_stereo_recording(tmp_path: Path) -> None:
    call = Call(tmp_path, record_audio=True)
    for i in range(30):  # 3 s of caller audio, loud from 1.0 to 2.0 s
        level = 2000 if 10 <= i < 20 else 0
        pcm = np.full(800, level, "<i2").tobytes()
        await call.push(InputAudioRawFrame(pcm, RATE, 1), 0.1 * (i + 1), INPUT)
    await call.caller_says(1.0, 2.0, "hello", turn_end=2.3)
    await call.bot_says(2.5, 3)
    call.clock = 3.5
    with logger.contextualize(call_sid="CA123", stream_sid="ST456"):
        record = await call.obs.finish("caller hung up", "caller")

    day = datetime.now(UTC).strftime("%Y-%m-%d")
    path = tmp_path / day / "CA123.json"
    saved = json.loads(path.read_text())
    assert saved["turns"] == record["turns"]
    assert saved["audio_file"] == "CA123.wav"
    assert hidden_files(tmp_path / day) == []  # no temp files left behind
    with wave.open(str(path.with_suffix(".wav"))) as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (2, RATE)
        stereo = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)
    caller, bot = stereo[:, 0], stereo[:, 1]
    loud = np.flatnonzero(caller == 2000)
    assert loud[0] / RATE == pytest.approx(1.0, abs=0.01)
    assert loud[-1] / RATE == pytest.approx(2.0, abs=0.01)
    heard = np.flatnonzero(bot)
    assert heard[0] / RATE == pytest.approx(2.5, abs=0.01)
    assert len(heard) == 3 * CHUNK // 2


def frame_at(k: int) -> bytes:
    """100 ms of caller audio whose every sample says which frame it is."""
    return np.full(800, k + 1, "<i2").tobytes()


def placed_at(track: np.ndarray, k: int) -> float:
    return float(np.flatnonzero(track == k + 1)[0] / RATE)


def test_caller_track_follows_the_stream_clock_not_a_stalled_loop() -> None:
    # Frames 10-19 are read in one burst at 2.05 s (the loop stalled for a second).
    frames = [(0.1 * (k + 1) if not 10 <= k < 20 else 2.05, frame_at(k), RATE) for k in range(30)]
    caller = build_stereo(frames, [], [], rate=RATE).caller
    assert len(caller) == 30 * 800
    assert [placed_at(caller, k) for k in (0, 10, 19, 29)] == pytest.approx([0, 1.0, 1.9, 2.9])


def test_caller_track_moves_after_a_real_gap_in_the_stream() -> None:
    # One second without frames after frame 9; then frames come at real time, 1 s late.
    frames = [(0.1 * (k + 1) + (1.0 if k >= 10 else 0.0), frame_at(k), RATE) for k in range(50)]
    caller = build_stereo(frames, [], [], rate=RATE).caller
    assert placed_at(caller, 9) == pytest.approx(0.9)
    assert placed_at(caller, 10) == pytest.approx(2.0)
    assert placed_at(caller, 49) == pytest.approx(5.9)
    assert not caller[8000:16000].any()  # the gap is silence


def test_caller_frames_buffered_before_the_pipeline_read_them_keep_their_place() -> None:
    # The pipeline started late: frames 0-14 were read together at 1.55 s.
    frames = [(max(1.55, 0.1 * (k + 1)), frame_at(k), RATE) for k in range(30)]
    caller = build_stereo(frames, [], [], rate=RATE).caller
    assert [placed_at(caller, k) for k in (0, 14, 29)] == pytest.approx([0.0, 1.4, 2.9])


async def test_record_path_is_dated_safe_and_never_overwrites(tmp_path: Path) -> None:
    record = {
        "started_at": "2026-03-04T05:06:07.000+00:00",
        "call_sid": "../../etc/x y",
        "stream_sid": "S1",
    }
    first = write_record({**record, "turns": []}, tmp_path)
    assert first == tmp_path / "2026-03-04" / "_.._etc_x_y.json"
    assert record_path(tmp_path, record).name == "_.._etc_x_y.S1.json"
    assert inside(first, tmp_path)


def test_summary_line_has_the_facts() -> None:
    record = {
        "duration_secs": 12.34,
        "end_reason": "caller hung up (stop: callended)",
        "hung_up_by": "caller",
        "summary": {
            "turns": 3,
            "answered": 3,
            "interruptions": 1,
            "holding_phrases": 1,
            "response_latency": {"p50_ms": 640, "max_ms": 910},
            "holding_latency": None,
            "clear_latency": {"p50_ms": 210, "max_ms": 230},
            "provider_ttfb": {"OpenAILLMService": {"p50_ms": 300, "max_ms": 320, "n": 3}},
            "errors": 0,
        },
    }
    line = summary_line(record, Path("/r/CA1.json"))
    assert line == (
        "call summary: duration=12.3s turns=3 answered=3 interruptions=1 holding_phrases=1 "
        "response_p50=640ms response_max=910ms clear_p50=210ms clear_max=230ms "
        'ttfb[OpenAILLMService]_p50=300ms end_reason="caller hung up (stop: callended)" '
        "hung_up_by=caller record=/r/CA1.json"
    )


async def test_report_renders_a_record(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    call = Call(tmp_path)
    await call.caller_says(1.0, 2.0, "what are your hours", turn_end=2.3)
    await call.push(LLMTextFrame("Nine to five."), 2.4, LLM)
    await call.bot_says(2.6, 5)
    await call.event("on_mark_sent", 3.6, "utt-1")
    await call.event("on_mark_echoed", 3.8, "utt-1")
    await call.caller_says(4.0, 4.5, "thanks bye", turn_end=4.8)
    call.clock = 5.0
    await call.obs.finish("llm called end_call", "bot")
    path = only_record(tmp_path)

    png = tmp_path / "timeline.png"
    assert report_main([str(path), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "what are your hours" in out and "Nine to five." in out
    assert re.search(r"\b600 ms\b", out)  # 2.0 s end of speech -> 2.6 s first bot audio
    assert "3200 B x5" in out
    assert report_main([str(path)]) == 0 and path.with_suffix(".png").exists()
    (tmp_path / "bad.json").write_text("[]")
    assert report_main([str(tmp_path / "bad.json")]) == 2


# --------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------


def test_configured_secrets_cover_every_form_of_basic_auth() -> None:
    settings = Settings(
        deepgram_api_key="dg-secret-123",
        openai_api_key="sk-openai-456",
        exotel_basic_auth="exo:p@ss word!",
    )
    found = set(configured_secrets(settings))
    assert {"dg-secret-123", "sk-openai-456", "exo:p@ss word!", "p@ss word!"} <= found
    assert base64.b64encode(b"exo:p@ss word!").decode() in found
    assert "p%40ss%20word%21" in found
    redactor = Redactor(found)
    assert redactor.text("key=dg-secret-123;") == f"key={REDACTED};"
    assert redactor.tree({"a": ["x p@ss word! y"], "p@ss word!": 1}) == {
        "a": [f"x {REDACTED} y"],
        REDACTED: 1,
    }


def test_redactor_as_a_loguru_patcher() -> None:
    """What bot/logs.py can install so that no sink ever formats a configured secret."""
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}")
    try:
        logger.patch(Redactor(["sk-live-abcdef"]).patch_log_record).info("key sk-live-abcdef!")
    finally:
        logger.remove(sink)
    assert lines == [f"key {REDACTED}!\n"]


async def test_record_and_summary_never_contain_a_secret(tmp_path: Path) -> None:
    secret = "sk-live-abcdef"
    call = Call(tmp_path, secrets=[secret])
    call.info.custom_parameters = {"token": secret}
    await call.caller_says(1.0, 2.0, f"my key is {secret}", turn_end=2.3)
    await call.push(ErrorFrame(error=f"auth failed for {secret}"), 2.4, LLM, UP)
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}")
    try:
        await call.obs.finish("caller hung up", "caller")
    finally:
        logger.remove(sink)
    path = only_record(tmp_path)
    assert secret not in path.read_text()
    assert REDACTED in path.read_text()
    assert lines and not any(secret in line for line in lines)


# --------------------------------------------------------------------------------------------
# End to end: real server, fake providers, simulated Exotel call
# --------------------------------------------------------------------------------------------


def scrape(text: str) -> dict[tuple[str, frozenset], float]:
    """Prometheus text -> {(sample name, labels): value}."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def wait_for_file(folder: Path, pattern: str, timeout: float = 15.0) -> Path:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        found = await asyncio.to_thread(lambda: list(folder.glob(pattern)))
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {pattern} in {folder} after {timeout} s")


async def http_get(url: str) -> str:
    def get() -> str:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()

    return await asyncio.to_thread(get)


async def test_end_to_end_metrics_record_and_logs_match_the_simulated_call(
    tmp_path: Path,
) -> None:
    password = "pw-Secret-9876"
    lines: list[dict[str, Any]] = []
    sink = logger.add(lambda m: lines.append(m.record), level="TRACE")
    try:
        async with FakeProviders() as fakes:
            fakes.deepgram.add_transcripts("what are your hours", "stop please")
            fakes.openai.add_replies(
                "Our hours are nine in the morning to five in the evening, Monday to Saturday, "
                "except on public holidays.",
                "Sure.",
            )
            settings = cloud_settings(
                fakes,
                call_records_dir=tmp_path,
                call_records_audio=True,
                exotel_basic_auth=f"exo:{password}",
            )
            runtime = Runtime(
                settings=settings,
                choice=choose_providers(settings),
                shared=SharedResources(),
                vad_factory=energy_vad_factory,
            )
            async with serving(create_app(settings, runtime=runtime)) as base:
                config = CallConfig(
                    url=base.replace("http://", "ws://") + "/exotel/ws?sample-rate=8000",
                    auth=("exo", password),
                    custom_parameters={"lang": "en", "tier": "gold"},
                )
                rec = await simulate_call(
                    config,
                    [
                        WaitForBot(gap=0.3),
                        Say(tone(1.0), label="hours"),
                        BargeIn(tone(0.6), after_bot_start=0.8, label="stop"),
                        WaitForBot(gap=0.5),
                        Hangup(),
                    ],
                )
                path = await wait_for_file(tmp_path, f"*/{rec.call_sid}.json")
                metrics = scrape(await http_get(base + "/metrics"))
    finally:
        logger.remove(sink)

    # The call went as scripted.
    assert not rec.violations, rec.violations
    assert len(rec.turns) == 2 and rec.turns[1].interrupted and len(rec.clears) == 1

    # /metrics agrees with what the simulator saw.
    assert sample(metrics, "exotel_active_calls") == 0
    assert sample(metrics, "exotel_calls_total", reason="caller hung up", by="caller") == 1
    sizes = Counter(rec.media_sizes)
    for size, n in sizes.items():
        assert sample(metrics, "exotel_outbound_chunks_total", bytes=str(size)) == n
    assert sample(metrics, "exotel_outbound_chunk_violations_total") == len(rec.violations)
    sent = rec.event_counts("to_bot")
    assert sample(metrics, "exotel_inbound_events_total", event="media") == sent["media"]
    assert sample(metrics, "exotel_inbound_events_total", event="mark") == sent["mark"]
    assert not [k for k in metrics if k[0] == "exotel_inbound_rejected_total"]
    answered = [t for t in rec.turns if t.latency_secs is not None]
    assert sample(metrics, "exotel_response_latency_seconds_count") == len(answered) == 2
    assert sample(metrics, "exotel_barge_in_clear_latency_seconds_count") == len(rec.clears)
    assert sample(metrics, "exotel_holding_phrase_latency_seconds_count") == 0

    # The record tells the same story, turn by turn.
    record = json.loads(path.read_text())
    assert (record["call_sid"], record["stream_sid"]) == (rec.call_sid, rec.stream_sid)
    assert record["custom_parameters"] == {"lang": "en", "tier": "gold"}
    assert record["hung_up_by"] == "caller"
    assert [t["heard"] for t in record["turns"]] == ["what are your hours", "stop please"]
    assert record["turns"][0]["answered"].startswith("Our hours are nine")
    assert [t["interrupted"] for t in record["turns"]] == [False, True]
    for ours, theirs in zip(record["turns"], rec.turns, strict=True):
        # Two clocks measuring one gap: the record's send time can be a chunk (0.2 s) early
        # and the observer queue lags under a busy CI machine, hence the tolerance.
        assert ours["response_latency"] == pytest.approx(theirs.latency_secs, abs=0.7)
    assert len(record["bot_audio_chunks"]) == len(rec.media_sizes)
    marks = [e for e in record["events"] if e["type"] == "mark_sent"]
    assert len(marks) == len(rec.marks)
    for provider in ("DeepgramSTTService", "OpenAILLMService", "CartesiaTTSService"):
        values = record["provider_ttfb"][provider]
        assert values
        count = sample(metrics, "exotel_provider_ttfb_seconds_count", provider=provider)
        assert count == len(values)
    with wave.open(str(path.with_suffix(".wav"))) as wav:
        assert wav.getnchannels() == 2
        assert wav.getnframes() / wav.getframerate() == pytest.approx(
            record["duration_secs"], abs=1.0
        )

    # Every bot log line of the call carries its ids (the simulator and the fake providers
    # share this process but are the other ends of the wire, not the bot).
    start = next(i for i, r in enumerate(lines) if r["message"].startswith("call started"))
    end = next(i for i, r in enumerate(lines) if r["message"].startswith("call summary"))
    bot_lines = [r for r in lines[start : end + 1] if not r["name"].startswith(OTHER_ENDS)]
    assert len(bot_lines) > 50
    missing = [r["message"] for r in bot_lines if r["extra"].get("call_sid") != rec.call_sid]
    assert not missing, missing[:5]
    assert all(r["extra"].get("stream_sid") == rec.stream_sid for r in bot_lines)
    summary = lines[end]
    assert summary["level"].name == "INFO" and "turns=2" in summary["message"]
    assert "interruptions=1" in summary["message"]
    assert not [r for r in lines if r["level"].name == "ERROR"]  # a hang-up is no error

    # No configured secret anywhere: API keys, the Basic-auth password in all its forms.
    secrets = configured_secrets(settings)
    assert password in secrets and fakes.openai.api_key in secrets
    text = "\n".join(str(r["message"]) for r in lines) + path.read_text()
    assert not [s for s in secrets if s in text]


OTHER_ENDS = ("bot.simulator", "bot.testing")


async def test_holding_processor_events_reach_the_record() -> None:
    """The real HoldingPhraseProcessor's event, as wired by attach_holding."""
    call = Call()
    holding = HoldingPhraseProcessor(SimpleNamespace(get=lambda *a: None, request=lambda r: None))
    call.obs.attach_holding(holding)
    await call.caller_says(1.0, 2.0, "hello", turn_end=2.3)
    event = HoldingEvent(1, 1, "Just a second.", 2.3, 3.0, 3.01, 0.9)
    await holding._call_event_handler("on_holding_phrase", event)
    await asyncio.sleep(0.01)  # event handlers run as tasks
    (turn,) = call.obs.build_record(None, None)["turns"]
    assert turn["holding"] == [{"t": 3.01, "text": "Just a second.", "secs": 0.9}]
    assert turn["holding_latency"] == pytest.approx(0.71)


def test_watch_call_wires_a_session() -> None:
    template = Call()
    added: list[Any] = []
    output, holding = FakeOutput(), FakeOutput()
    session = SimpleNamespace(
        info=template.info,
        started_at=12.5,
        serializer=template.serializer,
        worker=SimpleNamespace(add_observer=added.append),
        transport=SimpleNamespace(output=lambda: output),
        holding=holding,
    )
    settings = Settings(openai_api_key="sk-test-123456", call_records_dir=None)
    obs = watch_call(session, settings, template.metrics)
    assert added == [obs] and obs.t0 == 12.5 and obs.records_dir is None
    assert set(output.handlers) == {"on_mark_sent", "on_mark_echoed", "on_clear_sent", "on_resumed"}
    assert set(holding.handlers) == {"on_holding_phrase"}
    assert "sk-test-123456" in obs.redactor.secrets
