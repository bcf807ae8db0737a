"""Exotel Voicebot (bidirectional AgentStream) wire protocol <-> Pipecat frames.

This module is the one place that knows Exotel's JSON events. Everything here follows
`exotel-protocol.md` (§4-§8): snake_case keys out, both spellings in, sequence numbers as
strings or integers, ids never validated for format. Two rules shape the code:

* ``deserialize`` never raises. One bad message must not end a call (Pipecat's receive loop
  dies on the first exception), so anything unusable becomes ``None`` plus a rate-limited log
  line that names what was wrong.
* Outbound audio is never resampled here. The pipeline runs at the call's rate and the output
  transport cuts compliant chunks; resampling in the serializer produced misaligned sizes and
  lost audio (pipecat-notes §1.8).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import (
    CancelWorkerFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    SystemFrame,
)
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.serializers.base_serializer import FrameSerializer

SUPPORTED_SAMPLE_RATES = (8000, 16000, 24000)
DEFAULT_SAMPLE_RATE = 8000
# Exotel's player slices chunks into 320-byte packets; its documented window is 3.2 KB-100 KB.
PACKET_BYTES = 320
MIN_CHUNK_BYTES = 3200
MAX_CHUNK_BYTES = 100_000
# Exotel sends ~100 ms per media event (4.8 KB at 24 kHz, 6.4 KB as base64). Anything far
# larger is not a phone stream; refuse it before decoding so a hostile peer cannot make us
# allocate and resample megabytes.
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024


@dataclass(frozen=True)
class ChunkRule:
    """Sizes a media payload may have at one sample rate.

    ``unit`` is the least common multiple of Exotel's 320-byte packet and one 20 ms frame, so a
    payload made of whole units satisfies both readings of Exotel's docs (§6.3).
    """

    sample_rate: int
    unit: int
    min_bytes: int
    max_bytes: int

    @property
    def min_secs(self) -> float:
        return self.min_bytes / (2 * self.sample_rate)

    def is_compliant(self, size: int) -> bool:
        return self.min_bytes <= size <= self.max_bytes and size % self.unit == 0


def chunk_rule(sample_rate: int) -> ChunkRule:
    """The chunk rule for a call rate: 3200 B at 8 and 16 kHz, 3840 B at 24 kHz."""
    frame_20ms = sample_rate // 50 * 2
    unit = math.lcm(PACKET_BYTES, frame_20ms)
    return ChunkRule(
        sample_rate=sample_rate,
        unit=unit,
        min_bytes=math.ceil(MIN_CHUNK_BYTES / unit) * unit,
        max_bytes=MAX_CHUNK_BYTES // unit * unit,
    )


def compliant_chunks(audio: bytes, rule: ChunkRule, chunk_bytes: int) -> Iterator[bytes]:
    """Split ``audio`` into pieces of ``chunk_bytes``; zero-pad the last one to a legal size."""
    for start in range(0, len(audio), chunk_bytes):
        piece = audio[start : start + chunk_bytes]
        size = max(rule.min_bytes, -(-len(piece) // rule.unit) * rule.unit)
        yield piece + bytes(size - len(piece))


# ---------------------------------------------------------------------------------------------
# Frames the rest of the bot uses to speak Exotel without knowing its JSON.
# ---------------------------------------------------------------------------------------------


@dataclass
class ExotelMarkFrame(OutputTransportMessageFrame):
    """Ask Exotel to echo ``message`` (the mark name) once the audio queued before it has played.

    A data frame, so it travels through the output queue behind the audio it labels.
    """

    @property
    def mark_name(self) -> str:  # not `name`: every Pipecat frame already has one
        return str(self.message)


@dataclass
class ExotelMarkEchoFrame(SystemFrame):
    """Exotel's echo of a mark: everything sent before that mark has finished playing."""

    mark_name: str = ""


@dataclass
class ExotelStart:
    """What Exotel's ``start`` event tells us about the call."""

    stream_sid: str
    call_sid: str
    account_sid: str = ""
    from_number: str = ""
    to_number: str = ""
    custom_parameters: dict[str, str] = field(default_factory=dict)
    media_sample_rate: int | None = None


class ExotelProtocolError(ValueError):
    """A message that cannot be used; the text says why, for the log line.

    ``kind`` groups the rate-limited log lines and the rejected-message counter.
    """

    def __init__(self, text: str, kind: str = "malformed") -> None:
        super().__init__(text)
        self.kind = kind


# ---------------------------------------------------------------------------------------------
# Parsing helpers (pure functions; also used by the server's handshake).
# ---------------------------------------------------------------------------------------------


def decode_message(data: str | bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> dict:
    """Parse one WebSocket message into an event object, or raise ExotelProtocolError."""
    if isinstance(data, (bytes, bytearray)):
        raise ExotelProtocolError(
            f"binary frame of {len(data)} bytes (Exotel sends JSON text)", kind="binary"
        )
    if len(data) > max_bytes:
        raise ExotelProtocolError(
            f"message of {len(data)} bytes exceeds the {max_bytes} limit", kind="oversized"
        )
    try:
        message = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise ExotelProtocolError(f"not JSON ({e.__class__.__name__}): {data[:60]!r}") from None
    if not isinstance(message, dict):
        raise ExotelProtocolError(f"JSON {type(message).__name__}, not an object")
    event = message.get("event")
    if not isinstance(event, str) or not event:
        raise ExotelProtocolError(f"no 'event' string (keys: {sorted(message)[:8]})")
    return message


def _pick(obj: Any, *keys: str) -> Any:
    """First present value among spellings (Exotel's docs use snake_case, some paths camelCase)."""
    if not isinstance(obj, dict):
        return None
    for key in keys:
        if obj.get(key) not in (None, ""):
            return obj[key]
    return None


def _as_text(value: Any) -> str:
    return "" if value is None or isinstance(value, (dict, list)) else str(value)


def _as_int(value: Any) -> int | None:
    """Exotel sends numbers as strings on some pages and integers on others."""
    if isinstance(value, bool):
        return None
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def parse_start(message: dict) -> ExotelStart:
    """Read a ``start`` event: ids from ``start`` (falling back to top level), both spellings."""
    start = message.get("start")
    start = start if isinstance(start, dict) else {}
    stream_sid = _as_text(
        _pick(start, "stream_sid", "streamSid") or _pick(message, "stream_sid", "streamSid")
    )
    call_sid = _pick(start, "call_sid", "callSid") or _pick(message, "call_sid", "callSid")
    if not stream_sid:
        raise ExotelProtocolError("start event without a stream_sid string")
    custom = _pick(start, "custom_parameters", "customParameters")
    media_format = _pick(start, "media_format", "mediaFormat")
    return ExotelStart(
        stream_sid=stream_sid,
        call_sid=_as_text(call_sid),
        account_sid=_as_text(_pick(start, "account_sid", "accountSid")),
        from_number=_as_text(_pick(start, "from", "from_number", "From")),
        to_number=_as_text(_pick(start, "to", "to_number", "To")),
        custom_parameters=(
            {str(k): _as_text(v) for k, v in custom.items()} if isinstance(custom, dict) else {}
        ),
        media_sample_rate=_as_int(_pick(media_format, "sample_rate", "sampleRate")),
    )


def sequence_number(message: dict) -> int | None:
    return _as_int(_pick(message, "sequence_number", "sequenceNumber"))


# ---------------------------------------------------------------------------------------------
# The serializer.
# ---------------------------------------------------------------------------------------------


class RateLimitedLog:
    """One log line per problem kind per interval, with a count of what was suppressed.

    A broken peer can send hundreds of bad messages a second; the log should say so once.
    """

    def __init__(self, interval_secs: float = 5.0) -> None:
        self._interval = interval_secs
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, text: str) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        suppressed = self._suppressed.pop(kind, 0)
        self._last[kind] = now
        more = f" ({suppressed} more like it suppressed)" if suppressed else ""
        logger.warning(f"{text}{more}")


class ExotelFrameSerializer(FrameSerializer):
    """Serializer for the whole Exotel Voicebot protocol.

    Inbound: ``media`` -> InputAudioRawFrame (resampled only if the pipeline's input rate
    differs, e.g. 24 kHz calls into a 16 kHz pipeline), ``dtmf`` -> InputDTMFFrame, ``mark``
    -> ExotelMarkEchoFrame, ``stop`` -> CancelWorkerFrame (the stream is over: the caller hung
    up or the flow moved on; it is not an end-of-turn). ``connected``, a repeated ``start``
    and unknown events -> None.

    Outbound: audio -> ``media`` (at the call rate, as given), ExotelMarkFrame -> ``mark``,
    InterruptionFrame -> ``clear``. Nothing else reaches Exotel.
    """

    def __init__(
        self,
        stream_sid: str,
        call_sid: str | None = None,
        *,
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        params: FrameSerializer.InputParams | None = None,
    ) -> None:
        super().__init__(params or FrameSerializer.InputParams())
        if sample_rate not in SUPPORTED_SAMPLE_RATES:
            raise ValueError(f"Exotel sample rate must be one of {SUPPORTED_SAMPLE_RATES}")
        self._stream_sid = stream_sid
        self._call_sid = call_sid or ""
        self._exotel_rate = sample_rate
        self._pipeline_rate = sample_rate
        self._max_message_bytes = max_message_bytes
        self._input_resampler = create_stream_resampler(clear_after_secs=None)
        self._log = RateLimitedLog()
        self._last_sequence: int | None = None
        self.stop_reason: str | None = None
        self.counters: dict[str, int] = {}

    @property
    def sample_rate(self) -> int:
        return self._exotel_rate

    async def setup(self, setup: FrameProcessorSetup) -> None:
        self._pipeline_rate = setup.audio_in_sample_rate or self._exotel_rate

    # -- outbound --------------------------------------------------------------------------

    async def serialize(self, frame: Frame) -> str | None:
        if isinstance(frame, InterruptionFrame):
            return self._dump({"event": "clear", "stream_sid": self._stream_sid})
        if isinstance(frame, OutputAudioRawFrame):
            return self._serialize_audio(frame)
        if isinstance(frame, ExotelMarkFrame):
            mark = {
                "event": "mark",
                "stream_sid": self._stream_sid,
                "mark": {"name": frame.mark_name},
            }
            return self._dump(mark)
        if isinstance(frame, (OutputTransportMessageFrame, OutputTransportMessageUrgentFrame)):
            if not self.should_ignore_frame(frame):
                logger.debug(f"not sent to Exotel (no such event): {str(frame.message)[:80]}")
        return None

    def _serialize_audio(self, frame: OutputAudioRawFrame) -> str | None:
        if frame.sample_rate != self._exotel_rate or frame.num_channels != 1:
            # The output transport guarantees the call rate; resampling here would break the
            # chunk sizes it cut, so refuse loudly instead.
            logger.error(
                f"outbound audio at {frame.sample_rate} Hz x{frame.num_channels} on a "
                f"{self._exotel_rate} Hz mono call: not sent"
            )
            return None
        if not frame.audio:
            return None
        payload = base64.b64encode(frame.audio).decode("ascii")
        return self._dump(
            {"event": "media", "stream_sid": self._stream_sid, "media": {"payload": payload}}
        )

    @staticmethod
    def _dump(message: dict) -> str:
        return json.dumps(message, separators=(",", ":"))

    # -- inbound ---------------------------------------------------------------------------

    async def deserialize(self, data: str | bytes) -> Frame | None:
        try:
            message = decode_message(data, self._max_message_bytes)
            self._check_sequence(message)
            return await self._frame_for(message)
        except ExotelProtocolError as e:
            self._drop(e.kind, str(e))
        except Exception as e:  # never let one message end the call
            self._drop("unexpected", f"{e.__class__.__name__}: {e}")
        return None

    async def _frame_for(self, message: dict) -> Frame | None:
        event = message["event"]
        self.counters[event] = self.counters.get(event, 0) + 1
        if event == "media":
            return await self._media_frame(message)
        if event == "dtmf":
            return self._dtmf_frame(message)
        if event == "mark":
            name = _pick(message.get("mark"), "name")
            if name is None:
                raise ExotelProtocolError("mark event without mark.name")
            return ExotelMarkEchoFrame(mark_name=_as_text(name))
        if event == "stop":
            return self._stop_frame(message)
        if event == "connected":
            return None
        if event == "start":
            self._drop("start", "a second start event on a running stream (ignored)")
            return None
        self._drop(f"event:{event[:32]}", f"unknown event {event[:32]!r}")
        return None

    async def _media_frame(self, message: dict) -> InputAudioRawFrame | None:
        payload = _pick(message.get("media"), "payload")
        if not isinstance(payload, str):
            raise ExotelProtocolError("media event without a media.payload string")
        try:
            audio = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ExotelProtocolError("media.payload is not valid base64") from None
        if len(audio) % 2:
            self._drop("odd", f"media payload of {len(audio)} bytes (odd); last byte dropped")
            audio = audio[:-1]
        if not audio:
            return None
        if self._pipeline_rate != self._exotel_rate:
            audio = await self._input_resampler.resample(
                audio, self._exotel_rate, self._pipeline_rate
            )
            if not audio:
                return None
        return InputAudioRawFrame(audio=audio, sample_rate=self._pipeline_rate, num_channels=1)

    def _dtmf_frame(self, message: dict) -> InputDTMFFrame | None:
        digit = _as_text(_pick(message.get("dtmf"), "digit")).strip()
        try:
            return InputDTMFFrame(button=KeypadEntry(digit))
        except ValueError:
            raise ExotelProtocolError(f"dtmf digit {digit[:8]!r} is not one of 0-9 * #") from None

    def _stop_frame(self, message: dict) -> CancelWorkerFrame:
        reason = _as_text(_pick(message.get("stop"), "reason")) or "unspecified"
        self.stop_reason = reason
        logger.info(f"Exotel stop received (reason: {reason}); ending the call")
        return CancelWorkerFrame(reason=f"exotel stop: {reason}")

    def _check_sequence(self, message: dict) -> None:
        seq = sequence_number(message)
        if seq is None:
            return
        last = self._last_sequence
        if last is not None and seq != last + 1:
            # Informational: the message is still used; a gap means Exotel lost or reordered.
            self._log.warning("sequence", f"Exotel sequence_number jumped from {last} to {seq}")
        self._last_sequence = seq

    def _drop(self, kind: str, text: str) -> None:
        counter = "rejected:" + kind.split(":")[0]
        self.counters[counter] = self.counters.get(counter, 0) + 1
        self._log.warning(kind, f"Exotel input dropped: {text}")
