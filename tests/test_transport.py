"""The output path on its own: every write compliant, paced at real time, closed after playout.

A minimal pipeline (transport in -> transport out) lets each test push exactly the frames it
wants: a 10 s utterance in odd-sized TTS frames, a DTMF tone, raw audio pushed later.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi import FastAPI, WebSocket
from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import (
    BotSpeakingFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputDTMFUrgentFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner
from uvicorn.protocols.utils import ClientDisconnected

from bot.simulator import CallConfig, ExotelSimulator, WaitForBotHangup
from bot.telephony.call import read_handshake
from bot.telephony.transport import ExotelTransport, exotel_params
from bot.testing.localserver import serving
from serializers.exotel import ExotelFrameSerializer, chunk_rule, compliant_chunks
from tests.callkit import captured_logs
from tests.helpers import tone


def utterance(secs: float, rate: int, piece: int = 1234) -> list:
    audio = tone(secs, rate, amp=6000).tobytes()
    frames = [TTSStartedFrame(context_id="u")]
    for i in range(0, len(audio), piece):
        frames.append(TTSAudioRawFrame(audio[i : i + piece], rate, 1, context_id="u"))
    return [*frames, TTSStoppedFrame(context_id="u")]


class Tally(FrameProcessor):
    """Counts the frames that come out of the output transport, by type."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[type] = Counter()
        self.caller_audio = bytearray()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        self.counts[type(frame)] += 1
        if isinstance(frame, InputAudioRawFrame):
            self.caller_audio += frame.audio
        await self.push_frame(frame, direction)


def bot_app(script, results: dict) -> FastAPI:
    """A bot that plays `script(rate)` then ends the call: frames, floats (a wait) and
    callables (a call on the output transport)."""
    app = FastAPI()

    @app.websocket("/exotel/ws")
    async def stream(websocket: WebSocket) -> None:
        rate = int(websocket.query_params.get("sample-rate", 8000))
        await websocket.accept()
        info = await read_handshake(websocket, rate, 5)
        serializer = ExotelFrameSerializer(info.stream_sid, sample_rate=rate)
        transport = ExotelTransport(websocket, serializer)
        tally = Tally()
        worker = PipelineWorker(
            Pipeline([transport.input(), transport.output(), tally]),
            params=PipelineParams(audio_in_sample_rate=rate, audio_out_sample_rate=rate),
            enable_rtvi=False,
            idle_timeout_secs=None,
        )

        @transport.event_handler("on_client_connected")
        async def play(_t, _ws) -> None:
            async def run() -> None:
                for item in script(rate):
                    if isinstance(item, float):
                        await asyncio.sleep(item)
                    elif callable(item):  # a call on the output, e.g. pause()
                        result = item(transport.output())
                        if inspect.isawaitable(result):
                            await result
                    else:
                        await worker.queue_frame(item)
                await worker.queue_frame(EndFrame())

            asyncio.create_task(run())

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await runner.run()
        results["output"] = transport.output()
        results["after_output"] = tally.counts
        results["caller_audio"] = bytes(tally.caller_audio)
        results["audio_task"] = transport.input()._audio_task

    return app


async def call_bot(script, rate: int, results: dict | None = None, **config):
    results = {} if results is None else results
    async with serving(bot_app(script, results)) as base:
        url = base.replace("http", "ws") + f"/exotel/ws?sample-rate={rate}"
        sim = ExotelSimulator(CallConfig(url=url, **config))
        rec = await sim.run([WaitForBotHangup(timeout=30)])
    return rec, results["output"], results["after_output"]


async def test_caller_audio_goes_on_from_the_receive_loop_whole_and_in_order():
    """No audio queue and task of Pipecat's between the socket and the next processor, and
    the caller's line noise arrives sample for sample."""
    results: dict = {}
    rec, _output, _after = await call_bot(lambda r: [1.5], 8000, results, noise_rms=300.0)
    heard = np.frombuffer(results["caller_audio"], np.int16)
    assert results["audio_task"] is None
    assert len(heard) >= 1.2 * 8000
    assert np.array_equal(heard, rec.caller_audio[: len(heard)])


def test_compliant_chunks_pad_and_split():
    rule = chunk_rule(8000)
    assert [len(c) for c in compliant_chunks(bytes(100), rule, 3200)] == [3200]
    assert [len(c) for c in compliant_chunks(bytes(7000), rule, 3200)] == [3200, 3200, 3200]
    rule24 = chunk_rule(24000)
    assert [len(c) for c in compliant_chunks(bytes(4000), rule24, 3840)] == [3840, 3840]
    last = list(compliant_chunks(b"\x01" * 3300, rule, 3200))[-1]
    assert last[:100] == b"\x01" * 100 and last[100:] == bytes(3100)  # zero-padded tail


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_params_cut_tts_at_the_smallest_compliant_chunk(rate):
    params = exotel_params(rate)
    chunk = params.audio_out_10ms_chunks * (rate // 100) * 2
    assert chunk == chunk_rule(rate).min_bytes
    assert params.audio_out_end_silence_secs == 0


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
async def test_ten_second_utterance_then_dtmf_then_late_audio(rate):
    def script(r: int):
        return [
            *utterance(10.0, r),
            0.5,
            OutputDTMFUrgentFrame(button=KeypadEntry.FIVE),
            0.3,
            OutputAudioRawFrame(tone(0.077, r).tobytes(), r, 1),  # 77 ms: not a chunk size
        ]

    rec, output, after_output = await call_bot(script, rate)
    rule = chunk_rule(rate)
    assert rec.violations == []
    assert rec.media_sizes and all(rule.is_compliant(n) for n in rec.media_sizes)
    assert rec.media_sizes == output.sent_chunks
    # 10 s of speech: whole chunks, the tail zero-padded up to one more chunk.
    speech_chunks = -(-int(10.0 * rate) * 2 // rule.min_bytes)
    assert rec.media_sizes[:speech_chunks] == [rule.min_bytes] * speech_chunks
    # Paced at real time: never more than the lead plus one chunk queued at Exotel.
    assert rec.max_lead_secs <= 0.2 + rule.min_secs + 0.05
    assert rec.underruns == []
    # The speaking tick nobody reads comes about once a second, not five times.
    assert 5 <= after_output[BotSpeakingFrame] <= 12
    # One mark after the utterance, echoed once it had played.
    assert len(rec.marks) == 1 and rec.marks[0].echoed_at is not None
    # The socket closed only after the last audio had played at Exotel.
    last_end = max(c.end for c in rec.chunks)
    assert rec.closed_by == "bot"
    close_t = rec.duration_secs
    assert close_t >= last_end - 0.02
    print(
        f"\n{rate} Hz: {len(rec.media_sizes)} media, sizes {sorted(set(rec.media_sizes))}, "
        f"max lead {rec.max_lead_secs:.3f} s, close {close_t - last_end:+.3f} s after playout"
    )


async def test_short_first_sentence_is_flushed_before_exotel_runs_dry():
    """0.3 s of speech fills one 200 ms chunk; the next sentence comes 0.3 s later. The held
    100 ms goes out padded before Exotel runs dry: a pause between sentences, no underrun."""

    def script(r: int):
        first, second = utterance(0.3, r), utterance(1.0, r)
        return [*first[:-1], 0.3, *second[1:]]

    rec, output, _ = await call_bot(script, 8000)
    assert rec.violations == [] and rec.underruns == []
    assert output.dry_flushes == 1
    # 0.3 s = one chunk plus a padded one; 1.0 s = five chunks (no tail).
    assert rec.media_sizes == [3200] * 7
    assert len(rec.marks) == 1


def numbered_utterance(secs: float, rate: int) -> tuple[list, np.ndarray]:
    """An utterance whose samples count up from 1 (never 0, the padding): what the caller
    heard, with the silence taken out, shows every sample lost or played twice."""
    samples = (np.arange(int(secs * rate)) % 30000 + 1).astype(np.int16)
    audio = samples.tobytes()
    frames = [TTSStartedFrame(context_id="n")]
    for i in range(0, len(audio), 1234):
        frames.append(TTSAudioRawFrame(audio[i : i + 1234], rate, 1, context_id="n"))
    return [*frames, TTSStoppedFrame(context_id="n")], samples


def pause(output):
    return output.pause()


def resume(output):
    output.resume()


@pytest.mark.parametrize("paused_secs", [0.05, 0.5])
async def test_pause_then_resume_loses_and_repeats_nothing(paused_secs):
    """A pause clears what Exotel has queued; the resume sends it again. Whether the resume
    comes before the chunk playing ends (no gap) or after (a gap), the caller hears every
    sample once, in order, and the utterance's mark is echoed."""
    frames, samples = numbered_utterance(2.0, 8000)

    def script(_r: int):
        return [*frames, 0.9, pause, paused_secs, resume]

    rec, _output, _ = await call_bot(script, 8000)
    assert rec.violations == []
    assert len(rec.clears) == 1
    heard = rec.bot_audio[rec.bot_audio != 0]
    assert np.array_equal(heard, samples)
    # 2.0 s = ten chunks; the one or two cleared ones went out twice.
    assert len(rec.media_sizes) in (11, 12)
    assert [m.outcome for m in rec.marks] == ["echoed"]


async def test_pause_then_interruption_drops_the_rest_with_one_clear():
    frames, samples = numbered_utterance(2.0, 8000)

    def script(_r: int):
        return [*frames, 0.9, pause, 0.1, InterruptionFrame()]

    rec, _output, _ = await call_bot(script, 8000)
    assert rec.violations == []
    assert len(rec.clears) == 1  # the interruption had nothing more to clear
    heard = rec.bot_audio[rec.bot_audio != 0]
    # The start of the utterance, up to the end of the chunk that was playing at the pause.
    assert 0 < len(heard) < len(samples) and np.array_equal(heard, samples[: len(heard)])
    assert len(heard) % 1600 == 0 and len(heard) <= 1600 * 6
    assert rec.marks == []


async def test_pause_with_nothing_playing_sends_nothing():
    frames, samples = numbered_utterance(0.6, 8000)

    def script(_r: int):
        return [pause, 0.1, *frames, 1.2, pause, 0.1, resume]

    rec, _output, _ = await call_bot(script, 8000)
    assert rec.clears == []
    assert np.array_equal(rec.bot_audio[rec.bot_audio != 0], samples)


async def test_a_hang_up_during_our_close_is_not_an_error():
    """The caller hanging up while our close is under way is logged at DEBUG; any other
    failure to close stays an ERROR."""
    transport = ExotelTransport(SimpleNamespace(), ExotelFrameSerializer("MZ1", sample_rate=8000))

    async def fail(e: Exception) -> None:
        raise e

    with captured_logs("DEBUG") as lines:
        for e in (ClientDisconnected(), RuntimeError("boom")):
            task = asyncio.create_task(fail(e))
            await asyncio.wait({task})
            transport._client._on_close_done(task)
    errors = [line.message for line in lines if line.level == "ERROR"]
    assert errors == ["closing the call's socket failed: RuntimeError: boom"]
    assert any(line.level == "DEBUG" and "ClientDisconnected" in line.message for line in lines)


async def test_the_first_chunk_leaves_as_soon_as_3200_bytes_exist():
    """The answer's first 3200 B go out while the TTS is still speaking: not held for a
    bigger buffer, the rest of the sentence or a pacing tick (issue 25, "the other 100 ms")."""
    seen: list[list[int]] = []

    def script(r: int):
        frames = utterance(1.0, r, piece=1234)
        # 1234 + 1234 + 1234 = 3702 B: one whole chunk and 502 B held; then the TTS pauses.
        head, tail = frames[:4], frames[4:]
        return [*head, 0.3, lambda out: seen.append(list(out.sent_chunks)), *tail]

    rec, output, _ = await call_bot(script, 8000)
    # Out before the rest of the utterance was even written; the only other chunk by then
    # is the held 502 B, padded just before Exotel would have run dry.
    assert seen[0][0] == 3200 and len(seen[0]) == 1 + output.dry_flushes
    assert rec.violations == [] and set(rec.media_sizes) == {3200}
