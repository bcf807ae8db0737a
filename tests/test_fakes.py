"""The fake providers, driven by Pipecat's real service classes over loopback.

These tests pin two things: that the fakes speak each provider's protocol well enough for the
real client code (Deepgram SDK, OpenAI SDK, Cartesia websocket handling in Pipecat), and that
each injected fault surfaces in Pipecat the way a real outage would. They assert on frames,
errors and what the fakes recorded, not on timings.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Self, TypeVar

import numpy as np
import pytest
import websockets
from openai import AsyncOpenAI, AuthenticationError
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.cartesia.tts import CartesiaTTSService
from pipecat.services.deepgram import stt as deepgram_stt
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.llm_service import FunctionCallParams
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.workers.runner import WorkerRunner

from bot.providers import deepgram_service_class, openai_service_class
from bot.testing import (
    CARTESIA_API_VERSION,
    DEFAULT_CARTESIA_KEY,
    DEFAULT_DEEPGRAM_KEY,
    DEFAULT_OPENAI_KEY,
    FakeCartesia,
    FakeDeepgram,
    FakeOpenAI,
    FakeProviders,
    FaultSwitch,
    ToolCall,
    synthesize_speech,
)

SR = 8000
FrameT = TypeVar("FrameT", bound=Frame)


# --------------------------------------------------------------------------------------------
# A tiny harness: one real service in a real pipeline, frames recorded both ways
# --------------------------------------------------------------------------------------------


class FrameLog(FrameProcessor):
    """Records frames travelling in one direction and passes everything on."""

    def __init__(self, direction: FrameDirection) -> None:
        super().__init__(enable_direct_mode=True)
        self.direction = direction
        self.frames: list[Frame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == self.direction:
            self.frames.append(frame)
        await self.push_frame(frame, direction)


class Harness:
    """``async with Harness(service) as h``: pipeline [up-log, service, down-log] is running."""

    def __init__(self, service: FrameProcessor) -> None:
        self.service = service
        self.up = FrameLog(FrameDirection.UPSTREAM)
        self.down = FrameLog(FrameDirection.DOWNSTREAM)
        self.errors: list[ErrorFrame] = []

        # Errors raised while connecting in setup() happen before any frame can flow, so the
        # service's own on_error event is the reliable way to see every one of them.
        @service.event_handler("on_error")
        async def _on_error(_processor: FrameProcessor, error: ErrorFrame) -> None:
            self.errors.append(error)

        self.worker = PipelineWorker(
            Pipeline([self.up, service, self.down]),
            params=PipelineParams(audio_in_sample_rate=SR, audio_out_sample_rate=SR),
            enable_rtvi=False,
            idle_timeout_secs=None,
            cancel_on_idle_timeout=False,
        )
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        started = asyncio.Event()

        @self.worker.event_handler("on_pipeline_started")
        async def _on_started(_worker: PipelineWorker, _frame: Frame) -> None:
            started.set()

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(self.worker)
        self._task = asyncio.create_task(runner.run())
        await asyncio.wait_for(started.wait(), timeout=10)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.worker.cancel()
        assert self._task is not None
        await asyncio.wait_for(self._task, timeout=10)

    async def send(self, *frames: Frame) -> None:
        for frame in frames:
            await self.worker.queue_frame(frame)

    def of(self, kind: type[FrameT]) -> list[FrameT]:
        """Downstream frames of one type, in order."""
        return [f for f in self.down.frames if isinstance(f, kind)]

    async def until(self, condition: Callable[[], Any], timeout: float = 8.0) -> None:
        """Wait until ``condition()`` is truthy; the timeout only guards against a hang."""
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)


def speech_frames(seconds: float, frame_ms: int = 20) -> Iterator[InputAudioRawFrame]:
    """A loud tone cut into transport-sized input frames."""
    n = int(SR * frame_ms / 1000)
    total = int(SR * seconds)
    tone = (np.sin(2 * np.pi * 300 * np.arange(total) / SR) * 8000).astype(np.int16).tobytes()
    for start in range(0, len(tone), n * 2):
        yield InputAudioRawFrame(audio=tone[start : start + n * 2], sample_rate=SR, num_channels=1)


async def say(h: Harness, seconds: float) -> None:
    """What the transport and VAD produce for one utterance: audio, then VAD stop."""
    await h.send(VADUserStartedSpeakingFrame(), *speech_frames(seconds))
    await h.send(VADUserStoppedSpeakingFrame(stop_secs=0.2))


def deepgram(
    fake: FakeDeepgram, stt_class: str, api_key: str = DEFAULT_DEEPGRAM_KEY
) -> DeepgramSTTService:
    service = DeepgramSTTService if stt_class == "pipecat" else deepgram_service_class()
    return service(api_key=api_key, base_url=fake.base_url)


# Every Deepgram test runs on Pipecat's own service and on ours (caller audio sent from the
# pushing task while the service is idle): the two must behave the same.
DEEPGRAM_SERVICES = pytest.mark.parametrize("stt_class", ["pipecat", "ours"])


# Every OpenAI test runs on Pipecat's own service and on ours (its own stream reading,
# bot/openai_stream.py): the two must behave the same against the same server.
OPENAI_SERVICES = pytest.mark.parametrize("llm_class", ["pipecat", "ours"])


def openai_llm(
    fake: FakeOpenAI, llm_class: str, api_key: str = DEFAULT_OPENAI_KEY
) -> OpenAILLMService:
    service = OpenAILLMService if llm_class == "pipecat" else openai_service_class()
    settings = OpenAILLMService.Settings(model="gpt-4.1-mini")
    return service(api_key=api_key, base_url=fake.base_url, settings=settings)


def cartesia(
    fake: FakeCartesia, api_key: str = DEFAULT_CARTESIA_KEY, **kwargs: Any
) -> CartesiaTTSService:
    settings = CartesiaTTSService.Settings(voice="v")
    return CartesiaTTSService(api_key=api_key, url=fake.url, settings=settings, **kwargs)


def user_context(text: str, tools: ToolsSchema | None = None) -> LLMContext:
    messages: list[Any] = [{"role": "user", "content": text}]
    return LLMContext(messages, tools=tools) if tools else LLMContext(messages)


def llm_reply(*tokens: str) -> list[Frame]:
    """What an LLM pushes into TTS for one response."""
    return [
        LLMFullResponseStartFrame(),
        *(LLMTextFrame(t) for t in tokens),
        LLMFullResponseEndFrame(),
    ]


@pytest.fixture
def fast_deepgram_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pipecat waits 4-10 s between Deepgram reconnects; the behaviour, not the wait, is tested."""
    monkeypatch.setattr(deepgram_stt, "exponential_backoff_time", lambda *_a, **_k: 0.05)


# --------------------------------------------------------------------------------------------
# Deepgram
# --------------------------------------------------------------------------------------------


@DEEPGRAM_SERVICES
async def test_deepgram_finalize_returns_scripted_then_fallback_transcript(stt_class: str) -> None:
    async with FakeDeepgram(transcripts=["what are your opening hours"]) as fake:
        async with Harness(deepgram(fake, stt_class)) as h:
            await say(h, 0.5)
            await h.until(lambda: h.of(TranscriptionFrame))
            await say(h, 1.0)
            await h.until(lambda: len(h.of(TranscriptionFrame)) == 2)

    texts = [f.text for f in h.of(TranscriptionFrame)]
    assert texts == ["what are your opening hours", "caller said 1.0 seconds"]
    (conn,) = fake.connections
    assert conn.path == "/v1/listen"
    assert conn.authorization == f"Token {DEFAULT_DEEPGRAM_KEY}"
    assert conn.query["sample_rate"] == "8000" and conn.query["encoding"] == "linear16"
    assert conn.bytes_received == int(1.5 * SR) * 2
    assert conn.finalizes == 2
    assert conn.close_streams == 1  # Pipecat says goodbye on cancel
    assert conn.results[0]["from_finalize"] and conn.results[0]["metadata"]["model_info"]


@DEEPGRAM_SERVICES
async def test_deepgram_custom_transcriber_and_interims(stt_class: str) -> None:
    seen: list[tuple[int, int]] = []

    def transcriber(audio: bytes, sample_rate: int) -> str:
        seen.append((len(audio), sample_rate))
        return "one two three four"

    async with FakeDeepgram(transcriber=transcriber, interim_interval=0.1) as fake:
        async with Harness(deepgram(fake, stt_class)) as h:
            await say(h, 0.4)
            await h.until(lambda: h.of(TranscriptionFrame))

    assert h.of(TranscriptionFrame)[0].text == "one two three four"
    interims = [f.text for f in h.of(InterimTranscriptionFrame)]
    assert interims[:2] == ["one", "one two"]
    assert seen[-1] == (int(0.4 * SR) * 2, SR)  # the final saw the whole segment


@DEEPGRAM_SERVICES
async def test_deepgram_wrong_key_is_rejected_and_service_gives_up(stt_class: str) -> None:
    async with FakeDeepgram() as fake:
        stt = deepgram(fake, stt_class, api_key="wrong")
        async with Harness(stt) as h:
            await h.until(lambda: h.errors)

    assert fake.rejected == 1 and not fake.connections
    assert "401" in h.errors[0].error
    assert not stt.is_usable  # a 4xx is permanent: Pipecat stops retrying at once


@pytest.mark.usefixtures("fast_deepgram_retry")
@DEEPGRAM_SERVICES
async def test_deepgram_error_midstream_drops_socket_and_pipecat_reconnects(stt_class: str) -> None:
    async with FakeDeepgram(transcripts=["after the reconnect"]) as fake:
        async with Harness(deepgram(fake, stt_class)) as h:
            fake.set_fault("error_midstream", after=5, times=1)
            await h.send(*speech_frames(0.2))
            await h.until(
                lambda: len(fake.connections) == 2 and fake.connections[1].closed_at is None
            )
            await say(h, 0.3)
            await h.until(lambda: h.of(TranscriptionFrame))

    assert fake.faults_fired == 1
    assert any("1011" in e.error for e in h.errors)
    assert h.of(TranscriptionFrame)[0].text == "after the reconnect"


@pytest.mark.usefixtures("fast_deepgram_retry")
@DEEPGRAM_SERVICES
async def test_deepgram_refuse_once_then_connects(stt_class: str) -> None:
    async with FakeDeepgram(transcripts=["hello"]) as fake:
        fake.set_fault("refuse", times=1)
        async with Harness(
            deepgram(fake, stt_class)
        ) as h:  # setup() blocks until the retry connects
            await say(h, 0.3)
            await h.until(lambda: h.of(TranscriptionFrame))

    assert "503" in h.errors[0].error
    assert fake.faults_fired == 1 and len(fake.connections) == 1


@DEEPGRAM_SERVICES
async def test_deepgram_hang_accepts_audio_but_never_answers(stt_class: str) -> None:
    async with FakeDeepgram(transcripts=["never sent"]) as fake:
        fake.fault = "hang"
        async with Harness(deepgram(fake, stt_class)) as h:
            await say(h, 0.3)
            await h.until(lambda: fake.connections[0].bytes_received == int(0.3 * SR) * 2)
            await asyncio.sleep(0.3)  # well past finalize_latency
    assert not h.of(TranscriptionFrame)
    assert list(fake.transcripts) == ["never sent"]


async def test_our_deepgram_sends_audio_at_once_when_idle_and_in_order_when_not(
    monkeypatch,
) -> None:
    async with FakeDeepgram(transcripts=["hello"]) as fake:
        stt = deepgram(fake, "ours")
        async with Harness(stt) as h:
            queued: list[Frame] = []
            input_queue = stt._FrameProcessor__input_queue
            put = input_queue.put
            monkeypatch.setattr(
                input_queue, "put", lambda item: queued.append(item[0]) or put(item)
            )
            audio = list(speech_frames(0.2))
            for frame in audio:  # as the transport's receive loop pushes them
                await stt.queue_frame(frame)
            assert queued == []  # none waited for the input task
            await h.until(lambda: fake.connections[0].bytes_received == int(0.2 * SR) * 2)

            # A frame in hand (its input task busy): audio waits behind it, in order.
            release = asyncio.Event()

            @stt.event_handler("on_before_process_frame")
            async def _hold(_stt: FrameProcessor, frame: Frame) -> None:
                if isinstance(frame, VADUserStartedSpeakingFrame):
                    await release.wait()

            more = list(speech_frames(0.1))
            await stt.queue_frame(VADUserStartedSpeakingFrame())
            await asyncio.sleep(0.05)
            for frame in more:
                await stt.queue_frame(frame)
            assert queued[1:] == more
            release.set()
            await h.until(lambda: fake.connections[0].bytes_received == int(0.3 * SR) * 2)
            await h.until(lambda: len(h.of(InputAudioRawFrame)) == len(audio) + len(more))
            assert h.of(InputAudioRawFrame) == audio + more


# --------------------------------------------------------------------------------------------
# OpenAI
# --------------------------------------------------------------------------------------------


@OPENAI_SERVICES
async def test_openai_streams_scripted_reply_with_usage(llm_class: str) -> None:
    reply = "We are open from nine to five. Anything else?"
    async with FakeOpenAI(replies=[reply], first_token_latency=0.01, inter_token_delay=0) as fake:
        async with Harness(openai_llm(fake, llm_class)) as h:
            await h.send(LLMContextFrame(user_context("when are you open?")))
            await h.until(lambda: h.of(LLMFullResponseEndFrame))

    assert "".join(f.text for f in h.of(LLMTextFrame)) == reply
    assert len(h.of(LLMTextFrame)) == len(reply.split())  # streamed token by token
    (body,) = fake.requests
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["model"] == "gpt-4.1-mini"
    assert fake.last_messages[-1] == {"role": "user", "content": "when are you open?"}
    assert not h.errors


@OPENAI_SERVICES
async def test_openai_tool_call_reply_invokes_registered_function(llm_class: str) -> None:
    calls: list[FunctionCallParams] = []

    async def end_call(params: FunctionCallParams) -> None:
        calls.append(params)
        await params.result_callback({"ok": True})

    schema = FunctionSchema(
        name="end_call",
        description="Hang up",
        properties={"reason": {"type": "string"}},
        required=["reason"],
    )
    reply = ToolCall("end_call", {"reason": "caller said goodbye"})
    async with FakeOpenAI(replies=[reply], first_token_latency=0.01) as fake:
        llm = openai_llm(fake, llm_class)
        llm.register_function("end_call", end_call)
        async with Harness(llm) as h:
            await h.send(LLMContextFrame(user_context("bye", ToolsSchema([schema]))))
            await h.until(lambda: calls)

    assert calls[0].function_name == "end_call"
    assert calls[0].arguments == {"reason": "caller said goodbye"}
    assert calls[0].tool_call_id.startswith("call_")
    assert fake.requests[0]["tools"][0]["function"]["name"] == "end_call"
    assert not h.of(LLMTextFrame)


@OPENAI_SERVICES
async def test_openai_wrong_key_and_models_endpoint(llm_class: str) -> None:
    async with FakeOpenAI(first_token_latency=0) as fake:
        client = AsyncOpenAI(api_key=DEFAULT_OPENAI_KEY, base_url=fake.base_url)
        models = [m.id async for m in client.models.list()]
        with pytest.raises(AuthenticationError):
            await AsyncOpenAI(api_key="wrong", base_url=fake.base_url).models.list()

        llm = openai_llm(fake, llm_class, api_key="wrong")
        async with Harness(llm) as h:
            await h.send(LLMContextFrame(user_context("hi")))
            await h.until(lambda: h.errors)

    assert "gpt-4.1-mini" in models
    assert fake.rejected == 2 and not fake.requests
    assert "401" in h.errors[0].error and not llm.is_usable


@OPENAI_SERVICES
async def test_openai_refuse_once_is_retried_by_the_sdk(llm_class: str) -> None:
    async with FakeOpenAI(replies=["recovered"], first_token_latency=0) as fake:
        fake.set_fault("refuse", times=1)
        async with Harness(openai_llm(fake, llm_class)) as h:
            await h.send(LLMContextFrame(user_context("hi")))
            await h.until(lambda: h.of(LLMFullResponseEndFrame))

    assert [f.text for f in h.of(LLMTextFrame)] == ["recovered"]
    assert len(fake.requests) == 2 and not h.errors  # the 503 never reached Pipecat


@OPENAI_SERVICES
async def test_openai_error_midstream_reports_after_partial_text(llm_class: str) -> None:
    async with FakeOpenAI(replies=["one two three four five"], first_token_latency=0) as fake:
        fake.set_fault("error_midstream", after=2)
        async with Harness(openai_llm(fake, llm_class)) as h:
            await h.send(LLMContextFrame(user_context("count")))
            await h.until(lambda: h.of(LLMFullResponseEndFrame))

    assert "".join(f.text for f in h.of(LLMTextFrame)) == "one two"
    assert "Error during completion" in h.errors[0].error
    assert h.service.is_usable  # a server error is transient


@OPENAI_SERVICES
async def test_openai_hang_never_answers_and_stop_does_not_hang(llm_class: str) -> None:
    fake = await FakeOpenAI().start()
    fake.fault = "hang"
    async with Harness(openai_llm(fake, llm_class)) as h:
        await h.send(LLMContextFrame(user_context("hello?")))
        await h.until(lambda: fake.requests)
        await asyncio.sleep(0.3)
        assert not h.of(LLMTextFrame) and not h.of(LLMFullResponseEndFrame)
        await asyncio.wait_for(fake.stop(), timeout=5)


# --------------------------------------------------------------------------------------------
# Cartesia
# --------------------------------------------------------------------------------------------


async def test_cartesia_speaks_8k_audio_with_word_timestamps() -> None:
    sentences = ["Hello there. ", "We are open from nine to five."]
    words = " ".join(sentences).split()
    async with FakeCartesia(first_audio_latency=0.01, seconds_per_word=0.1) as fake:
        async with Harness(cartesia(fake)) as h:
            await h.send(*llm_reply(*sentences))
            await h.until(lambda: h.of(TTSStoppedFrame) and len(h.of(TTSTextFrame)) == len(words))

    audio = h.of(TTSAudioRawFrame)
    assert {f.sample_rate for f in audio} == {SR}
    assert sum(len(f.audio) for f in audio) == len(words) * int(0.1 * SR) * 2
    assert any(len(f.audio) % 320 for f in audio)  # the bot must re-chunk
    assert [f.text for f in h.of(TTSTextFrame)] == words  # starts kept increasing
    (conn,) = fake.connections
    assert conn.api_key == DEFAULT_CARTESIA_KEY and conn.version == CARTESIA_API_VERSION
    first = conn.messages[0]
    assert first["output_format"] == {
        "container": "raw",
        "encoding": "pcm_s16le",
        "sample_rate": SR,
    }
    assert [m["continue"] for m in conn.messages] == [True, True, False]
    assert len({m["context_id"] for m in conn.messages}) == 1


async def test_cartesia_interruption_sends_cancel() -> None:
    async with FakeCartesia(first_audio_latency=0, chunk_interval=0.05) as fake:
        async with Harness(cartesia(fake)) as h:
            await h.send(*llm_reply("A long sentence that takes a while to stream out."))
            await h.until(lambda: h.of(TTSAudioRawFrame))
            await h.send(InterruptionFrame())
            await h.until(lambda: fake.cancels)
            sent = fake.connections[0].audio_bytes_sent
            await asyncio.sleep(0.2)

    assert fake.cancels == [fake.connections[0].messages[0]["context_id"]]
    assert fake.connections[0].audio_bytes_sent == sent  # the fake stopped streaming


async def test_cartesia_wrong_key_is_rejected() -> None:
    async with FakeCartesia() as fake:
        tts = cartesia(fake, api_key="wrong")
        async with Harness(tts) as h:
            await h.until(lambda: h.errors)
    assert fake.rejected == 1 and "401" in h.errors[0].error
    assert not tts.is_usable  # classified as an authentication error, which is permanent


async def test_cartesia_error_midstream_fails_one_utterance_then_recovers() -> None:
    async with FakeCartesia(first_audio_latency=0, seconds_per_word=0.2) as fake:
        fake.set_fault("error_midstream", after=1, times=1)
        # Pipecat keeps a failed context open until stop_frame_timeout_s (3 s by default) and
        # queues the next reply behind it; shortening it keeps the test quick.
        async with Harness(cartesia(fake, stop_frame_timeout_s=0.3)) as h:
            await h.send(*llm_reply("This sentence fails after one chunk of audio."))
            await h.until(lambda: h.errors)
            await h.send(*llm_reply("This one works."))
            await h.until(lambda: len(h.of(TTSStoppedFrame)) == 2)

    assert h.errors[0].error.startswith("Error: ") and "injected" in h.errors[0].error
    assert fake.faults_fired == 1
    failed, ok = dict.fromkeys(m["context_id"] for m in fake.connections[0].messages)
    assert sum(len(f.audio) for f in h.of(TTSAudioRawFrame) if f.context_id == failed) == 1234
    spoken = sum(len(f.audio) for f in h.of(TTSAudioRawFrame) if f.context_id == ok)
    assert spoken == 3 * int(0.2 * SR) * 2


async def test_cartesia_refuse_and_hang() -> None:
    async with FakeCartesia() as fake:
        fake.fault = "refuse"
        async with Harness(cartesia(fake)) as h:
            await h.until(lambda: h.errors)
        assert "503" in h.errors[0].error and not fake.connections

        fake.fault = "hang"
        async with Harness(cartesia(fake)) as h:
            await h.send(*llm_reply("Nobody will say this."))
            await h.until(lambda: fake.transcripts)
            await asyncio.sleep(0.3)
        assert not h.of(TTSAudioRawFrame)


# --------------------------------------------------------------------------------------------
# Plumbing: raw handshakes, synthesis, fault switch, bundle, CLI
# --------------------------------------------------------------------------------------------


async def test_websocket_handshakes_check_path_and_headers() -> None:
    async with FakeProviders() as fakes:
        dg, ca = fakes.deepgram, fakes.cartesia
        bad = [
            (f"{dg.base_url}/v1/nope", {"Authorization": f"Token {DEFAULT_DEEPGRAM_KEY}"}, 404),
            (f"{dg.base_url}/v1/listen", {"Authorization": f"Bearer {DEFAULT_DEEPGRAM_KEY}"}, 401),
            (ca.url, {"X-API-Key": DEFAULT_CARTESIA_KEY}, 400),  # no Cartesia-Version
        ]
        for url, headers, status in bad:
            with pytest.raises(websockets.InvalidStatus) as info:
                async with websockets.connect(url, additional_headers=headers):
                    pass
            assert info.value.response.status_code == status
        env = fakes.env()
    assert env["OPENAI_BASE_URL"].startswith("http://127.0.0.1:") and env[
        "OPENAI_BASE_URL"
    ].endswith("/v1")
    assert env["DEEPGRAM_BASE_URL"].startswith("ws://127.0.0.1:")
    assert env["CARTESIA_URL"].endswith("/tts/websocket")


async def _raw_deepgram_call(fake: FakeDeepgram, seconds: float) -> str:
    headers = {"Authorization": f"Token {DEFAULT_DEEPGRAM_KEY}"}
    url = f"{fake.base_url}/v1/listen?sample_rate={SR}&encoding=linear16"
    async with websockets.connect(url, additional_headers=headers) as ws:
        for frame in speech_frames(seconds):
            await ws.send(frame.audio)
        await ws.send(json.dumps({"type": "Finalize"}))
        result = json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "CloseStream"}))
        assert json.loads(await ws.recv())["type"] == "Metadata"
    return result["channel"]["alternatives"][0]["transcript"]


async def test_concurrent_sessions_stay_isolated() -> None:
    """Benchmarks run many calls at once: each connection must see only its own audio."""
    lengths = [0.1 * (1 + i % 7) for i in range(40)]
    async with FakeDeepgram(finalize_latency=0.02) as fake:
        texts = await asyncio.gather(*(_raw_deepgram_call(fake, s) for s in lengths))
    assert texts == [f"caller said {s:.1f} seconds" for s in lengths]
    assert len(fake.connections) == 40 and all(c.closed_at for c in fake.connections)


def test_synthesized_speech_is_deterministic_and_exactly_timed() -> None:
    a = synthesize_speech("one two three", 8000, 0.3)
    b = synthesize_speech("one two three", 8000, 0.3)
    assert a.pcm == b.pcm and len(a.pcm) == 3 * 2400 * 2
    samples = np.frombuffer(a.pcm, dtype=np.int16)
    assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 1000  # loud enough for a VAD
    assert len(synthesize_speech("x", 24000, 0.3).pcm) == 7200 * 2


def test_fault_switch_fires_a_bounded_number_of_times() -> None:
    switch = FaultSwitch()
    switch.set("refuse", times=2)
    assert [switch.fire("refuse") for _ in range(3)] == [True, True, False]
    assert switch.mode is None and switch.fired == 2
    with pytest.raises(ValueError):
        switch.set("explode")  # type: ignore[arg-type]


def _free_port_block(size: int = 3) -> int:
    """A port P such that P..P+size-1 were free a moment ago (best effort)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        with ExitStack() as stack:
            try:
                for offset in range(size):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", base + offset))
            except OSError:
                continue
            return base
    raise RuntimeError("no free block of ports")


def test_cli_serves_all_three_until_sigint() -> None:
    base = _free_port_block()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.fakes", "--port-base", str(base)],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(7)]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert f"export DEEPGRAM_BASE_URL=ws://127.0.0.1:{base}" in lines
    assert f"export OPENAI_BASE_URL=http://127.0.0.1:{base + 1}/v1" in lines
    assert f"export CARTESIA_URL=ws://127.0.0.1:{base + 2}/tts/websocket" in lines
