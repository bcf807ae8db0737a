"""The Exotel output path: compliant chunks, real-time pacing, marks, clear.

This module knows time and chunk sizes; the JSON lives in ``serializers.exotel``.

Pipecat's MediaSender already cuts TTS audio into ``audio_out_10ms_chunks`` pieces and pads
the tail of each utterance (pipecat-notes §1.2). What it does not do, and what this subclass
adds (§1.8 c):

* every write, from any path (TTS, DTMF tones, end silence, anything pushed later), is split
  and zero-padded into chunks Exotel accepts (``serializers.exotel.chunk_rule``);
* pacing follows the real duration of what was sent, keeping ``lead_secs`` of audio queued
  at Exotel as a jitter margin, instead of a fixed interval that under-paces large writes;
* a ``mark`` follows each bot utterance, and the echo tells us the caller heard it;
* ``clear`` goes out on interruption only when sent audio may still be playing, and stale
  marks are forgotten (Exotel may never echo marks whose audio was cleared, §7);
* on EndFrame the socket closes only after the far end has had time to play what it holds;
* ``pause()`` at the first sound of the caller's voice clears what Exotel has queued beyond
  the chunk it is playing, and keeps it: the interruption that follows throws it away, and
  ``resume()`` (it was not speech) sends it again, so a cough costs a pause, not words;
* a partial chunk held mid-utterance (a short first sentence, the next one still in the TTS)
  is sent padded just before Exotel would run dry: a pause between sentences, not a gap
  inside the audio stream.

The input side is Pipecat's, except that caller audio goes on from the receive loop
(``ExotelInputTransport``).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass

from fastapi import WebSocket
from loguru import logger
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    StartFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessorSetup
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketInputTransport,
    FastAPIWebsocketOutputTransport,
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.utils.utils import obj_id

from serializers.exotel import (
    ChunkRule,
    ExotelFrameSerializer,
    ExotelMarkEchoFrame,
    ExotelMarkFrame,
    chunk_rule,
    compliant_chunks,
)

# How much longer than the expected playout we wait for Exotel before giving up on it.
PLAYOUT_MARGIN_SECS = 1.0
# How long before Exotel runs dry a held partial chunk is sent: loop lag plus the network.
DRY_GUARD_SECS = 0.08
# Pipecat broadcasts a BotSpeakingFrame up and down the whole pipeline every 0.2 s of bot
# audio. Nothing in a call reads it (the worker's idle cancel is off), yet it was a tenth of
# a call's frame hops; a slower tick keeps it for anyone who adds a processor that does.
BOT_SPEAKING_TICK_SECS = 1.0
# A pause ends with an interruption or a resume within the VAD's start_secs; if neither comes
# (interruptions turned off), what the pause took back is sent after this long.
PAUSE_MAX_SECS = 1.0


@dataclass(slots=True)
class OnAir:
    """Sent to Exotel and perhaps not played yet: a chunk, or a mark at the end of the audio
    before it (then ``start == end``)."""

    start: float  # when Exotel starts playing it, by our clock
    end: float
    audio: bytes = b""
    mark: str | None = None
    interruptible: bool = True


class ExotelParams(FastAPIWebsocketParams):
    """FastAPI websocket parameters plus Exotel's pacing knob.

    Parameters:
        audio_out_lead_secs: audio left queued at Exotel when the next chunk is sent. It is
            the jitter margin, and what ``clear`` has to undo on a barge-in.
    """

    audio_out_lead_secs: float = 0.2


def exotel_params(sample_rate: int, *, lead_secs: float = 0.2, **overrides) -> ExotelParams:
    """Transport parameters for an Exotel call at ``sample_rate`` (both directions)."""
    rule = chunk_rule(sample_rate)
    ten_ms = sample_rate // 100 * 2
    values: dict = dict(
        audio_in_enabled=True,
        audio_out_enabled=True,
        audio_in_sample_rate=sample_rate,
        audio_out_sample_rate=sample_rate,
        # The MediaSender cuts TTS audio at exactly the smallest compliant chunk.
        audio_out_10ms_chunks=rule.min_bytes // ten_ms,
        # We wait for playout before closing instead of padding with silence (see stop()).
        audio_out_end_silence_secs=0,
        add_wav_header=False,
        audio_out_lead_secs=lead_secs,
    )
    values.update(overrides)
    return ExotelParams(**values)


class ExotelOutputTransport(FastAPIWebsocketOutputTransport):
    """FastAPI websocket output that only ever sends what Exotel accepts, at real time."""

    def __init__(self, transport, client, params: ExotelParams, **kwargs) -> None:
        super().__init__(transport, client, params, **kwargs)
        self._lead_secs = params.audio_out_lead_secs
        self._rule: ChunkRule | None = None
        self._play_until = 0.0  # when the far end finishes playing what we have sent
        self._utterance_has_audio = False
        self._mark_ids = itertools.count(1)
        self._pending_marks: dict[str, float] = {}
        # Frames older than the last interruption (frame ids grow) are not sent: one the
        # media sender took from its queue just before, or the rest of a long write.
        self._interrupted_at_id = 0
        self._sent_since_clear = False  # a second clear would have nothing to drop
        # Urgent DTMF is written from outside the audio task; one writer at a time keeps
        # the pacing clock (and so the lead at Exotel) right.
        self._write_lock = asyncio.Lock()
        self._dry_timer: asyncio.TimerHandle | None = None
        self._on_air: deque[OnAir] = deque()  # sent, not yet played out
        self._taken_back: deque[OnAir] = deque()  # cleared by a pause, sent again on resume
        self._unpaused = asyncio.Event()  # cleared while paused; writers wait on it
        self._unpaused.set()
        self._pause_timer: asyncio.TimerHandle | None = None
        self.sent_chunks: list[int] = []  # sizes, for metrics and tests
        self.dry_flushes = 0  # partial chunks sent padded so Exotel would not run dry
        self.last_audio_at = 0.0  # when bot audio last reached this transport
        self.last_echo_at = 0.0  # when Exotel last echoed one of our marks
        self._register_event_handler("on_mark_sent")
        self._register_event_handler("on_mark_echoed")
        self._register_event_handler("on_clear_sent")
        self._register_event_handler("on_resumed")

    async def setup(self, setup: FrameProcessorSetup) -> None:
        await super().setup(setup)
        self._rule = chunk_rule(self.sample_rate)
        if not self._rule.is_compliant(self.audio_chunk_size):
            raise ValueError(
                f"audio_out_10ms_chunks gives {self.audio_chunk_size}-byte chunks at "
                f"{self.sample_rate} Hz; Exotel needs multiples of {self._rule.unit} "
                f"from {self._rule.min_bytes} to {self._rule.max_bytes}"
            )

    # -- state the call can ask about -------------------------------------------------------

    @property
    def playout_remaining_secs(self) -> float:
        """Audio already sent that Exotel has not finished playing, by our clock."""
        return max(0.0, self._play_until - time.monotonic())

    @property
    def pending_marks(self) -> list[str]:
        return list(self._pending_marks)

    def chunk_rule_ok(self, size: int) -> bool:
        return self._rule is not None and self._rule.is_compliant(size)

    @property
    def busy(self) -> bool:
        """The bot is mid-utterance, or the caller has not heard all of it yet."""
        return (
            self._utterance_has_audio
            or bool(self._pending_marks)
            or self.playout_remaining_secs > 0
            or self._paused
            or bool(self._taken_back)
        )

    # -- frames ----------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, InterruptionFrame):
            # Skip FastAPIWebsocketOutputTransport's version, which always sends `clear`.
            await BaseOutputTransport.process_frame(self, frame, direction)
            await self._interrupt()
            return
        await super().process_frame(frame, direction)
        if direction != FrameDirection.DOWNSTREAM:
            return
        if isinstance(frame, OutputAudioRawFrame):
            self._utterance_has_audio = True
            self.last_audio_at = time.monotonic()
        elif isinstance(frame, TTSStoppedFrame) and self._utterance_has_audio:
            # Queued behind the utterance's flushed tail, so it is sent after the last chunk.
            self._utterance_has_audio = False
            await self._handle_frame(ExotelMarkFrame(message=f"utt-{next(self._mark_ids)}"))
        elif isinstance(frame, ExotelMarkEchoFrame):
            await self._mark_echoed(frame.mark_name)

    async def send_message(self, frame) -> None:
        await super().send_message(frame)
        if isinstance(frame, ExotelMarkFrame):
            now = time.monotonic()
            self._pending_marks[frame.mark_name] = now
            at = max(self._play_until, now)
            self._on_air.append(OnAir(at, at, mark=frame.mark_name))
            await self._call_event_handler("on_mark_sent", frame.mark_name)

    async def send_mark(self, name: str) -> None:
        """Queue a mark behind the audio queued so far (e.g. after a goodbye)."""
        await self._handle_frame(ExotelMarkFrame(message=name))

    async def _mark_echoed(self, name: str) -> None:
        sent_at = self._pending_marks.pop(name, None)
        self.last_echo_at = time.monotonic()
        if sent_at is None:
            logger.debug(f"echo of mark {name!r} that is no longer pending (cleared or unknown)")
        await self._call_event_handler("on_mark_echoed", name)

    async def _interrupt(self) -> None:
        self._interrupted_at_id = obj_id()
        self._cancel_dry_timer()
        self._utterance_has_audio = False
        self._taken_back.clear()  # a pause was right: the caller is speaking
        self._end_pause()
        if self._pending_marks:
            logger.debug(f"interruption: forgetting marks {list(self._pending_marks)}")
            self._pending_marks.clear()
        now = time.monotonic()
        if self._sent_since_clear and self._play_until > now:
            await self._clear(now)

    async def _clear(self, now: float) -> list[OnAir]:
        """Send ``clear``; returns what Exotel dropped, oldest first."""
        self._sent_since_clear = False
        await self._write_frame(InterruptionFrame())
        # Exotel finishes the chunk it is playing (at most one); the rest is dropped.
        dropped: deque[OnAir] = deque()
        while self._on_air and self._on_air[-1].start > now:
            dropped.appendleft(self._on_air.pop())
        playing = max((s.end for s in self._on_air), default=now + self._chunk_secs)
        self._play_until = min(self._play_until, playing)
        await self._call_event_handler("on_clear_sent")
        return list(dropped)

    # -- pause at the caller's first sound -------------------------------------------------

    async def pause(self) -> None:
        """The caller may have started to speak: Exotel plays out the chunk it is playing and
        nothing more until ``resume()`` or an interruption.

        The VAD reports speech only after ``start_secs`` (0.2 s by default), and the caller
        would hear that much more of the bot over their own voice. Clearing at the first
        voiced window and keeping what was cleared makes the early guess cost nothing when it
        is wrong.
        """
        now = time.monotonic()
        if self._paused or self._play_until <= now or not self._sent_since_clear:
            return  # nothing is playing: nothing to stop
        queued = [s for s in self._on_air if s.start > now]
        if not all(s.interruptible for s in queued):
            return  # audio that must not be interrupted plays on
        self._unpaused.clear()
        self._cancel_dry_timer()  # a padded partial chunk now would be a gap on resume
        self._pause_timer = asyncio.get_running_loop().call_later(PAUSE_MAX_SECS, self.resume)
        if queued:
            dropped = await self._clear(now)
            for item in dropped:
                if item.mark is not None:
                    self._pending_marks.pop(item.mark, None)  # re-sent under a new name
            # Ahead of anything an earlier pause took back that is not yet sent again.
            self._taken_back.extendleft(reversed(dropped))

    def resume(self) -> None:
        """It was not speech: send again what ``pause()`` took back, then carry on."""
        if not self._paused:
            return
        self._end_pause()
        if self._taken_back:
            self.create_task(self._resend_when_free(), "resend")
        else:
            self._arm_dry_timer()  # the pause cancelled it; a held partial chunk may need it

    @property
    def _paused(self) -> bool:
        return not self._unpaused.is_set()

    def _end_pause(self) -> None:
        self._unpaused.set()
        if self._pause_timer is not None:
            self._pause_timer.cancel()
            self._pause_timer = None

    async def _resend_when_free(self) -> None:
        async with self._write_lock:
            await self._resend_taken_back()
            await self._call_event_handler("on_resumed")

    async def _resend_taken_back(self) -> None:
        while self._taken_back and not self._paused:
            item = self._taken_back.popleft()
            if item.mark is not None:
                await self.send_message(ExotelMarkFrame(message=f"utt-{next(self._mark_ids)}"))
                continue
            out = OutputAudioRawFrame(
                audio=item.audio, sample_rate=self.sample_rate, num_channels=1
            )
            if not await self._send_chunk(out, item.interruptible):
                self._taken_back.clear()
                return
            await self.push_frame(out)  # observers see every chunk that went out

    async def _wait_while_paused(self) -> None:
        """Writers wait out a pause, and send what it took back before anything newer."""
        while self._paused or self._taken_back:
            if self._paused:
                await self._unpaused.wait()
            else:
                await self._resend_taken_back()

    async def _write_frame(self, frame: Frame) -> bool:
        # Once Exotel has said `stop` the stream is over: nothing more may be sent, even if
        # the close has not reached the socket state yet (a send would fail and log).
        serializer = self._params.serializer
        if isinstance(serializer, ExotelFrameSerializer) and serializer.stop_reason:
            return False
        return await super()._write_frame(frame)

    # -- audio -----------------------------------------------------------------------------

    @property
    def _chunk_secs(self) -> float:
        return self.audio_chunk_size / (2 * self.sample_rate)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        async with self._write_lock:
            return await self._write_audio(frame)

    async def _write_audio(self, frame: OutputAudioRawFrame) -> bool:
        if self._client.is_closing or not self._client.is_connected or self._rule is None:
            return False
        sent = False
        for chunk in compliant_chunks(bytes(frame.audio), self._rule, self.audio_chunk_size):
            await self._wait_while_paused()
            if frame.interruptible and frame.id < self._interrupted_at_id:
                # Interrupted: drop the rest. A frame none of which went out is not pushed
                # on as if it had.
                return sent
            out = OutputAudioRawFrame(audio=chunk, sample_rate=self.sample_rate, num_channels=1)
            if not await self._send_chunk(out, frame.interruptible):
                return False
            sent = True
        return True

    async def _send_chunk(self, out: OutputAudioRawFrame, interruptible: bool) -> bool:
        """Send one compliant chunk, then sleep until Exotel runs low.

        The chunk goes on the playout clock before the write: a pause that comes while the
        write is under way then takes it back with the rest instead of losing it.
        """
        now = time.monotonic()
        while self._on_air and self._on_air[0].end <= now:
            self._on_air.popleft()  # played out
        start = max(self._play_until, now)
        secs = len(out.audio) / (2 * self.sample_rate)
        self._on_air.append(OnAir(start, start + secs, out.audio, interruptible=interruptible))
        self._play_until = start + secs
        self._sent_since_clear = True
        if not await self._write_frame(out):
            return False
        self.sent_chunks.append(len(out.audio))
        await self._sleep_until_low()
        return True

    async def _sleep_until_low(self) -> None:
        """Sleep until Exotel has ``lead_secs`` left to play; arm the dry-flush timer."""
        self._arm_dry_timer()
        await asyncio.sleep(max(0.0, self._play_until - self._lead_secs - time.monotonic()))

    def _arm_dry_timer(self) -> None:
        self._cancel_dry_timer()
        self._dry_timer = asyncio.get_running_loop().call_later(
            max(0.0, self._play_until - DRY_GUARD_SECS - time.monotonic()), self._flush_before_dry
        )

    def _flush_before_dry(self) -> None:
        """Exotel is about to run dry mid-utterance: send the held partial chunk, padded.

        Pipecat's MediaSender keeps audio short of a full chunk until more comes or the TTS
        stops; with 200 ms chunks at 8 kHz that tail can outlast what Exotel has queued.
        """
        self._dry_timer = None
        sender = self._media_senders.get(None)
        if (
            self._paused
            or sender is None
            or not self._utterance_has_audio
            or not sender._audio_runs
        ):
            return
        if sender._audio_queue.has_frame(OutputAudioRawFrame):
            return  # the next chunk is already on its way
        # What MediaSender._enqueue_audio_chunk does, but without its await: from this
        # callback an awaited put could land behind audio the TTS delivers meanwhile.
        audio, uninterruptible = sender._take_audio_chunk()
        frame = sender._audio_buffer_cls(
            audio + bytes(self.audio_chunk_size - len(audio)),
            sample_rate=self.sample_rate,
            num_channels=1,
        )
        frame.transport_destination = sender._destination
        frame.interruptible = not uninterruptible
        sender._audio_queue.put_nowait(frame)
        self.dry_flushes += 1

    def _cancel_dry_timer(self) -> None:
        if self._dry_timer is not None:
            self._dry_timer.cancel()
            self._dry_timer = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)  # creates the media senders
        self._play_until = 0.0
        for sender in self._media_senders.values():
            sender._bot_speaking_frame_period = BOT_SPEAKING_TICK_SECS

    async def cleanup(self) -> None:
        self._cancel_dry_timer()
        self._end_pause()
        await super().cleanup()

    async def stop(self, frame: EndFrame) -> None:
        # A pause does not outlast the call: writers go on, and what it took back goes out
        # with the rest (below, if no writer sent it first).
        self._end_pause()
        # Let the queue drain (the base class), then give Exotel time to play what it holds
        # before the socket closes: nothing documents it playing audio after a close (§12.18).
        await BaseOutputTransport.stop(self, frame)
        async with self._write_lock:
            await self._resend_taken_back()
        self._cancel_dry_timer()
        remaining = self.playout_remaining_secs
        if remaining > 0 and self._client.is_connected and not self._client.is_closing:
            await asyncio.sleep(remaining + PLAYOUT_MARGIN_SECS / 10)
        await self._write_frame(frame)
        await self._client.disconnect()


class ExotelInputTransport(FastAPIWebsocketInputTransport):
    """Pipecat's websocket input, except that caller audio goes on from the receive loop.

    Pipecat queues each audio frame for a task whose only work here is to push it on (there
    is no audio filter), and on Python 3.11 that task's ``wait_for`` with a timeout starts a
    task of its own per frame: four loop steps per 100 ms of caller audio, a tenth of a
    call's. Pushing from the receive loop puts the frame in the next processor's queue as
    that task did (our Deepgram service, when idle, sends it on at once: bot.providers.registry), so
    the receive loop never waits on the VAD. With an audio filter set, Pipecat's task runs
    as before.
    """

    def _create_audio_task(self) -> None:
        if self._params.audio_in_filter:
            super()._create_audio_task()

    async def push_audio_frame(self, frame: InputAudioRawFrame) -> None:
        if self._params.audio_in_filter:
            await super().push_audio_frame(frame)
        elif (
            self._params.audio_in_enabled
            and self._params.audio_in_passthrough
            and not self._paused
            and frame.audio
        ):
            await self.push_frame(frame)


class ExotelTransport(FastAPIWebsocketTransport):
    """FastAPIWebsocketTransport with the Exotel input and output halves plugged in."""

    def __init__(
        self,
        websocket: WebSocket,
        serializer: ExotelFrameSerializer,
        params: ExotelParams | None = None,
        **kwargs,
    ) -> None:
        params = params or exotel_params(serializer.sample_rate)
        params.serializer = serializer
        super().__init__(websocket, params, **kwargs)
        # The transport has no factory hooks for its halves; swap them before anyone uses them.
        self._input = ExotelInputTransport(self, self._client, self._params, name=self._input_name)
        self._output = ExotelOutputTransport(
            self, self._client, self._params, name=self._output_name
        )
        self._client.send = self._send_or_drop  # type: ignore[method-assign]
        self._client._on_close_done = self._log_close_outcome  # type: ignore[method-assign]
        self._websocket = websocket

    async def _send_or_drop(self, data: str | bytes) -> None:
        """Send, or drop quietly if the caller has just hung up.

        A send can race the caller's close (the receive loop has not seen it yet). Pipecat
        logs that as a WARNING; for a phone call it is an ordinary hang-up, so DEBUG.
        """
        if not self._client._can_send():  # the same check Pipecat's send makes
            return
        try:
            if isinstance(data, bytes):
                await self._websocket.send_bytes(data)
            else:
                await self._websocket.send_text(data)
        except Exception as e:
            logger.debug(f"send dropped, the caller hung up: {e.__class__.__name__}")

    def _log_close_outcome(self, task: asyncio.Task) -> None:
        """How our close of the socket ended (the done callback of Pipecat's close task).

        Pipecat logs any failure as an ERROR. The usual one is the caller hanging up while
        our close was under way (uvicorn's ``ClientDisconnected``, an OSError with no text):
        an ordinary end of call, so DEBUG. Anything else stays an ERROR, with its class.
        """
        e = None if task.cancelled() else task.exception()
        if e is None:
            return
        if isinstance(e, OSError):
            logger.debug(f"socket closed by the caller as we closed it: {e.__class__.__name__}")
        else:
            logger.error(f"closing the call's socket failed: {e.__class__.__name__}: {e}")

    def input(self) -> ExotelInputTransport:
        return self._input

    def output(self) -> ExotelOutputTransport:
        return self._output
