"""The Exotel serializer: every event in both spellings, and bad input that must not raise."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace

import pytest
from loguru import logger
from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import (
    CancelWorkerFrame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
)

from serializers.exotel import (
    ExotelFrameSerializer,
    ExotelMarkEchoFrame,
    ExotelMarkFrame,
    ExotelProtocolError,
    chunk_rule,
    parse_start,
)


async def make_serializer(call_rate: int = 8000, pipeline_rate: int | None = None):
    serializer = ExotelFrameSerializer("S1", "C1", sample_rate=call_rate)
    await serializer.setup(SimpleNamespace(audio_in_sample_rate=pipeline_rate or call_rate))
    return serializer


def media(payload: bytes | str, **extra) -> str:
    if isinstance(payload, bytes):
        payload = base64.b64encode(payload).decode()
    message = {"event": "media", "stream_sid": "S1", "media": {"payload": payload}, **extra}
    return json.dumps(message)


@pytest.fixture
def warnings():
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="WARNING")
    yield lines
    logger.remove(sink)


def test_chunk_rule_per_rate():
    assert (chunk_rule(8000).min_bytes, chunk_rule(8000).unit) == (3200, 320)
    assert (chunk_rule(16000).min_bytes, chunk_rule(16000).unit) == (3200, 640)
    assert (chunk_rule(24000).min_bytes, chunk_rule(24000).unit) == (3840, 960)
    for rate in (8000, 16000, 24000):
        rule = chunk_rule(rate)
        assert rule.max_bytes <= 100_000 and rule.max_bytes % rule.unit == 0
        assert rule.is_compliant(rule.min_bytes) and not rule.is_compliant(rule.min_bytes - 320)
    assert not chunk_rule(8000).is_compliant(640)
    assert not chunk_rule(24000).is_compliant(3200)  # 66.7 ms: not whole 20 ms frames


def test_parse_start_snake_case_with_string_numbers():
    start = parse_start(
        {
            "event": "start",
            "sequence_number": "1",
            "stream_sid": "top",
            "start": {
                "stream_sid": "S1",
                "call_sid": "C1",
                "account_sid": "A1",
                "from": "+919876543210",
                "to": "+918047491899",
                "custom_parameters": {"lang": "hi", "n": 3},
                "media_format": {"encoding": "audio/x-raw", "sample_rate": "16000"},
            },
        }
    )
    assert (start.stream_sid, start.call_sid, start.account_sid) == ("S1", "C1", "A1")
    assert (start.from_number, start.to_number) == ("+919876543210", "+918047491899")
    assert start.custom_parameters == {"lang": "hi", "n": "3"}
    assert start.media_sample_rate == 16000


def test_parse_start_camel_case_and_top_level_fallback():
    start = parse_start(
        {
            "event": "start",
            "sequence_number": 1,
            "streamSid": "S2",
            "start": {"callSid": "C2", "accountSid": "A2", "mediaFormat": {"sampleRate": 8000}},
        }
    )
    assert (start.stream_sid, start.call_sid, start.account_sid) == ("S2", "C2", "A2")
    assert start.media_sample_rate == 8000 and start.custom_parameters == {}


def test_parse_start_without_stream_sid_is_an_error():
    with pytest.raises(ExotelProtocolError):
        parse_start({"event": "start", "start": {"call_sid": "C"}})


async def test_media_becomes_input_audio_at_call_rate():
    s = await make_serializer()
    pcm = bytes(range(256)) * 6 + b"\x01\x02"
    frame = await s.deserialize(media(pcm, sequence_number="3"))
    assert isinstance(frame, InputAudioRawFrame)
    assert frame.audio == pcm and frame.sample_rate == 8000 and frame.num_channels == 1


async def test_24k_call_is_resampled_to_16k_pipeline():
    s = await make_serializer(24000, 16000)
    total = 0
    for _ in range(10):  # 10 x 100 ms
        frame = await s.deserialize(media(bytes(4800)))
        if frame:
            assert frame.sample_rate == 16000
            total += len(frame.audio)
    assert 10 * 3200 - 1600 <= total <= 10 * 3200  # ~1 s at 16 kHz, less the filter delay


async def test_dtmf_mark_stop_connected():
    s = await make_serializer()
    dtmf = await s.deserialize(json.dumps({"event": "dtmf", "dtmf": {"digit": "5"}}))
    assert isinstance(dtmf, InputDTMFFrame) and dtmf.button == KeypadEntry.FIVE
    hash_key = await s.deserialize(json.dumps({"event": "dtmf", "dtmf": {"digit": "#"}}))
    assert hash_key.button == KeypadEntry.POUND
    mark = await s.deserialize(json.dumps({"event": "mark", "mark": {"name": "utt-1"}}))
    assert isinstance(mark, ExotelMarkEchoFrame) and mark.mark_name == "utt-1"
    assert await s.deserialize(json.dumps({"event": "connected"})) is None
    stop = await s.deserialize(
        json.dumps({"event": "stop", "stop": {"call_sid": "C1", "reason": "callended"}})
    )
    assert isinstance(stop, CancelWorkerFrame) and s.stop_reason == "callended"


async def test_serialize_media_mark_clear_exact_wire_shapes():
    s = await make_serializer()
    audio = OutputAudioRawFrame(audio=bytes(3200), sample_rate=8000, num_channels=1)
    assert json.loads(await s.serialize(audio)) == {
        "event": "media",
        "stream_sid": "S1",
        "media": {"payload": base64.b64encode(bytes(3200)).decode()},
    }
    assert json.loads(await s.serialize(ExotelMarkFrame(message="utt-1"))) == {
        "event": "mark",
        "stream_sid": "S1",
        "mark": {"name": "utt-1"},
    }
    assert json.loads(await s.serialize(InterruptionFrame())) == {
        "event": "clear",
        "stream_sid": "S1",
    }
    assert await s.serialize(OutputTransportMessageFrame(message={"x": 1})) is None


async def test_outbound_audio_is_never_resampled():
    s = await make_serializer(8000)
    wrong = OutputAudioRawFrame(audio=bytes(3200), sample_rate=16000, num_channels=1)
    assert await s.serialize(wrong) is None


BAD_INPUT = {
    "not json": "hello",
    "binary frame": b"\x00\x01\x02",
    "json list": "[1, 2]",
    "json string": '"media"',
    "no event": json.dumps({"media": {"payload": "AAAA"}}),
    "event not a string": json.dumps({"event": 5}),
    "unknown event": json.dumps({"event": "silence"}),
    "media without payload": json.dumps({"event": "media", "media": {}}),
    "media not an object": json.dumps({"event": "media", "media": "AAAA"}),
    "payload not a string": json.dumps({"event": "media", "media": {"payload": 5}}),
    "invalid base64": media("@@not-base64@@"),
    "empty payload": media(""),
    "1 MB payload": media(bytes(750_000)),
    "dtmf bad digit": json.dumps({"event": "dtmf", "dtmf": {"digit": "x"}}),
    "dtmf missing": json.dumps({"event": "dtmf"}),
    "mark without name": json.dumps({"event": "mark", "mark": {}}),
    "second start": json.dumps({"event": "start", "start": {"stream_sid": "S9"}}),
    "deep nesting": "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("name", list(BAD_INPUT))
async def test_bad_input_is_dropped_with_a_log_line(name, warnings):
    s = await make_serializer()
    assert await s.deserialize(BAD_INPUT[name]) is None
    if name != "empty payload":  # an empty payload is legal, just nothing to hear
        assert len(warnings) == 1, warnings
    # The call goes on: the next good message still works.
    assert isinstance(await s.deserialize(media(bytes(320))), InputAudioRawFrame)


async def test_odd_length_payload_keeps_the_audio(warnings):
    s = await make_serializer()
    frame = await s.deserialize(media(bytes(321)))
    assert isinstance(frame, InputAudioRawFrame) and len(frame.audio) == 320
    assert "odd" in warnings[0]


async def test_repeated_bad_input_is_rate_limited(warnings):
    s = await make_serializer()
    for _ in range(50):
        assert await s.deserialize("garbage") is None
    assert len(warnings) == 1
    assert s.counters["rejected:malformed"] == 50


async def test_sequence_gap_is_logged_but_message_kept(warnings):
    s = await make_serializer()
    assert await s.deserialize(media(bytes(320), sequence_number="3"))
    assert await s.deserialize(media(bytes(320), sequence_number=7))
    assert any("jumped from 3 to 7" in w for w in warnings)
