"""Input hardening: no message from Exotel (or from anyone) can crash the serializer or a call.

Two layers:

* Property-based (Hypothesis): ``ExotelFrameSerializer.deserialize`` on thousands of generated
  messages (valid events with wrong types, missing keys, odd/huge/invalid base64, random
  unicode, truncated JSON, binary frames) never raises and returns None or a Frame; the
  handshake's ``parse_start`` only ever raises ``ExotelProtocolError``. The profile is
  derandomized and database-free, so CI runs the same examples every time.
* Live: a real call through the server takes a stream of junk, messages over the serializer's
  size limit and a frame over the WebSocket limit, and a connection that never sends ``start``
  is closed after ``handshake_timeout_secs``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipecat.frames.frames import Frame, InputAudioRawFrame
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bot.simulator import CallConfig, Hangup, Say, SendRaw, Wait, WaitForBot
from bot.testing import FakeCartesia, FakeDeepgram, FakeOpenAI, FakeProviders
from serializers.exotel import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ExotelFrameSerializer,
    ExotelProtocolError,
    parse_start,
)
from tests.callkit import (
    BotUnderTest,
    CallerSim,
    bot_under_test,
    captured_logs,
    errors,
    settled_usage,
    usage,
)
from tests.helpers import tone

CI = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --------------------------------------------------------------------------------------------
# Strategies: Exotel's events, then broken in every way we can think of
# --------------------------------------------------------------------------------------------

EVENTS = ["connected", "start", "media", "dtmf", "mark", "stop", "clear", "Media", "", "x" * 40]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=24),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
ids = st.one_of(st.text(max_size=40), st.integers(), json_values)
numbers_as_anything = st.one_of(st.integers(0, 10**6), st.integers(0, 10**6).map(str), scalars)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


payloads = st.one_of(
    st.binary(max_size=4000).map(_b64),  # valid, odd and even byte counts
    st.binary(max_size=300).map(_b64).map(lambda p: p[:-1]),  # bad padding
    st.text(alphabet="ABCDEFabc0123+/=-_ \n\x00!é", max_size=200),  # invalid characters
    st.sampled_from(["", "=", "==", "A", "AA", "AAA=", "////"]),
    st.integers(0, 400_000).map(lambda n: "A" * n),  # up to past the size limit
    json_values,
)


def _event(name: str, body: dict[str, Any], seq: Any, sid: Any) -> dict[str, Any]:
    return {"event": name, "sequence_number": seq, "stream_sid": sid, **body}


media = st.builds(
    lambda p, seq, sid, chunk, ts: _event(
        "media", {"media": {"chunk": chunk, "timestamp": ts, "payload": p}}, seq, sid
    ),
    payloads,
    numbers_as_anything,
    ids,
    numbers_as_anything,
    numbers_as_anything,
)
dtmf = st.builds(
    lambda d, dur, seq: _event("dtmf", {"dtmf": {"digit": d, "duration": dur}}, seq, "S"),
    st.one_of(st.sampled_from(list("0123456789*#")), st.text(max_size=3), json_values),
    numbers_as_anything,
    numbers_as_anything,
)
mark = st.builds(
    lambda name, seq: _event("mark", {"mark": {"name": name}}, seq, "S"),
    st.one_of(st.text(max_size=30), json_values),
    numbers_as_anything,
)
stop = st.builds(
    lambda reason, seq: _event("stop", {"stop": {"reason": reason}}, seq, "S"),
    st.one_of(st.sampled_from(["callended", "stopped"]), json_values),
    numbers_as_anything,
)
start = st.builds(
    lambda sid, call, rate, custom, seq: _event(
        "start",
        {
            "start": {
                "stream_sid": sid,
                "call_sid": call,
                "account_sid": call,
                "from": sid,
                "custom_parameters": custom,
                "media_format": {"encoding": "audio/x-raw", "sample_rate": rate},
            }
        },
        seq,
        sid,
    ),
    ids,
    ids,
    numbers_as_anything,
    json_values,
    numbers_as_anything,
)
other = st.builds(
    lambda name, body: {"event": name, **body},
    st.one_of(st.sampled_from(EVENTS), json_values),
    st.dictionaries(st.text(max_size=10), json_values, max_size=4),
)
well_formed = st.one_of(media, dtmf, mark, stop, start, other)


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every (container path, key) in a JSON object, so a mutation can hit any depth."""
    found = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            found.append((*prefix, key))
            found.extend(_paths(value, (*prefix, key)))
    return found


def _at(obj: Any, path: tuple) -> Any:
    for key in path:
        obj = obj[key]
    return obj


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed event with a few keys deleted, retyped or replaced, at any depth."""
    message = json.loads(json.dumps(draw(well_formed), default=str))
    for _ in range(draw(st.integers(0, 3))):
        paths = _paths(message)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = _at(message, path[:-1]), path[-1]
        op = draw(st.sampled_from(["delete", "replace", "stringify", "wrap"]))
        if op == "delete":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(json_values)
        elif op == "stringify":
            parent[key] = json.dumps(parent[key])
        else:
            parent[key] = [parent[key]]
    return message


def _dump(message: Any) -> str:
    return json.dumps(message, allow_nan=True)


@st.composite
def damaged_text(draw: st.DrawFn) -> str:
    """Valid JSON text cut short or with bytes spliced in."""
    text = _dump(draw(well_formed))
    cut = draw(st.integers(0, len(text)))
    splice = draw(st.text(max_size=5))
    return text[:cut] + splice + text[cut + len(splice) :]


messages = st.one_of(
    well_formed.map(_dump),
    mutated().map(_dump),
    damaged_text(),
    st.text(max_size=200),  # random unicode
    st.binary(max_size=200),  # a binary frame
    json_values.map(_dump),  # JSON that is not an event
    st.sampled_from(["[" * 5000, '{"event":' * 3000, "null", "1e999999", '"\\ud800"']),
)


async def _serializer(rate: int) -> ExotelFrameSerializer:
    serializer = ExotelFrameSerializer("S", "C", sample_rate=rate)
    await serializer.setup(SimpleNamespace(audio_in_sample_rate=16000 if rate == 24000 else rate))
    return serializer


@pytest.fixture(scope="module")
def loop() -> Any:
    """One event loop for the property tests: a new one per example would be most of the cost."""
    running = asyncio.new_event_loop()
    yield running
    running.close()


COUNT = {"messages": 0}


@settings(CI, max_examples=2000)
@given(message=messages, rate=st.sampled_from([8000, 16000, 24000]))
def _one_message(loop: Any, message: str | bytes, rate: int) -> None:
    serializer = loop.run_until_complete(_serializer(rate))
    result = loop.run_until_complete(serializer.deserialize(message))
    COUNT["messages"] += 1
    assert result is None or isinstance(result, Frame)


@settings(CI, max_examples=300)
@given(batch=st.lists(messages, min_size=1, max_size=12), rate=st.sampled_from([8000, 24000]))
def _a_stream_of_messages(loop: Any, batch: list, rate: int) -> None:
    """State carried between messages (sequence numbers, the input resampler) stays sane."""
    serializer = loop.run_until_complete(_serializer(rate))
    for message in batch:
        result = loop.run_until_complete(serializer.deserialize(message))
        COUNT["messages"] += 1
        assert result is None or isinstance(result, Frame)
    # 100 ms, as Exotel sends: enough for the 24 kHz call's stream resampler to emit audio.
    good = {"event": "media", "media": {"payload": _b64(bytes(rate // 10 * 2))}}
    assert isinstance(loop.run_until_complete(serializer.deserialize(json.dumps(good))), Frame)


def test_deserialize_never_raises_on_thousands_of_messages(loop: Any) -> None:
    """Single messages, then streams of them into one serializer: a few thousand in all."""
    COUNT["messages"] = 0
    _one_message(loop=loop)
    _a_stream_of_messages(loop=loop)
    assert COUNT["messages"] >= 3000, COUNT


def test_an_oversized_message_is_logged_even_after_other_bad_input(loop: Any) -> None:
    serializer = loop.run_until_complete(_serializer(8000))
    oversized = json.dumps({"event": "media", "media": {"payload": "A" * (300 * 1024)}})
    with captured_logs() as lines:
        loop.run_until_complete(serializer.deserialize("not json"))
        assert loop.run_until_complete(serializer.deserialize(oversized)) is None
    assert any("exceeds the" in line.message for line in lines), [str(x) for x in lines]


@settings(CI, max_examples=500)
@given(data=st.binary(min_size=0, max_size=2000).filter(lambda b: len(b) % 2 == 0))
def test_valid_media_is_always_audio(loop: Any, data: bytes) -> None:
    serializer = loop.run_until_complete(_serializer(8000))
    message = json.dumps({"event": "media", "media": {"payload": _b64(data)}})
    frame = loop.run_until_complete(serializer.deserialize(message))
    if data:
        assert isinstance(frame, InputAudioRawFrame) and frame.audio == data
    else:
        assert frame is None


@settings(CI, max_examples=800)
@given(message=st.one_of(start, mutated()))
def test_parse_start_only_raises_protocol_errors(message: dict[str, Any]) -> None:
    """The handshake catches ExotelProtocolError only: anything else would kill the call."""
    try:
        parsed = parse_start(message)
    except ExotelProtocolError:
        return
    assert isinstance(parsed.stream_sid, str) and isinstance(parsed.call_sid, str)
    assert isinstance(parsed.custom_parameters, dict)


@pytest.mark.parametrize("sid", [[None], {"a": 1}, ["x"]])
def test_start_with_a_stream_sid_that_is_not_text_is_refused(sid: Any) -> None:
    message = {"event": "start", "start": {"stream_sid": sid, "call_sid": "C"}}
    with pytest.raises(ExotelProtocolError):
        parse_start(message)


# --------------------------------------------------------------------------------------------
# Live: the real server
# --------------------------------------------------------------------------------------------

QUESTION = tone(0.8)


@pytest.fixture
async def bot() -> AsyncIterator[BotUnderTest]:
    fakes = FakeProviders(
        deepgram=FakeDeepgram(finalize_latency=0.05),
        openai=FakeOpenAI(first_token_latency=0.05, responder=lambda *_: "Yes."),
        cartesia=FakeCartesia(first_audio_latency=0.05, seconds_per_word=0.2),
    )
    async with fakes, bot_under_test(fakes, bot_greeting="Hi.") as b:
        yield b


def junk(rng: random.Random, n: int, *, starts: bool = True) -> list[str | bytes]:
    """Broken and unexpected messages for a live call; none is a ``stop`` (that ends it).

    ``starts``: include a well-formed second ``start`` (before the real one it would *be* the
    start, so the pre-start test leaves it out)."""
    quiet = np.zeros(0, np.int16)
    out: list[str | bytes] = []
    makers = [
        lambda: rng.randbytes(rng.randint(0, 300)),
        lambda: "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(0, 80))),
        lambda: '{"event":"media","media":{"payload":"' + "!" * rng.randint(0, 50) + '"}}',
        lambda: json.dumps({"event": "media", "media": {"payload": _b64(rng.randbytes(3))}}),
        lambda: json.dumps({"event": "media", "media": {"payload": _b64(quiet.tobytes())}}),
        lambda: json.dumps({"event": "media", "media": None, "sequence_number": rng.random()}),
        lambda: json.dumps({"event": "dtmf", "dtmf": {"digit": rng.choice(["5", "x", "", "##"])}}),
        lambda: json.dumps({"event": "mark", "mark": {"name": rng.random()}}),
        lambda: json.dumps({"event": rng.choice(["clear", "interrupt", "silence", 7, None])}),
        lambda: json.dumps([1, 2, {"event": "media"}]),
        lambda: '{"event": "media", "media": {"payload": "AAAA"',
        lambda: "[" * rng.randint(1, 3000),
    ]
    if starts:
        makers.append(lambda: json.dumps({"event": "start", "start": {"stream_sid": "other"}}))
    for _ in range(n):
        out.append(rng.choice(makers)())
    return out


async def test_live_call_survives_junk_and_oversized_messages(bot: BotUnderTest) -> None:
    rng = random.Random(5)
    oversized = json.dumps({"event": "media", "media": {"payload": "A" * (300 * 1024)}})
    assert len(oversized) > DEFAULT_MAX_MESSAGE_BYTES
    script = [
        WaitForBot(gap=0.2, timeout=10),
        SendRaw(oversized),  # first: the log line for it is rate-limited with the junk's
        *(SendRaw(m) for m in junk(rng, 400)),
        Wait(0.3),
        Say(QUESTION, label="after the junk"),
        WaitForBot(gap=0.3, timeout=10),
        Hangup(),
    ]
    with captured_logs() as lines:
        rec = await CallerSim(CallConfig(url=bot.url)).run(script)
        await bot.idle()
    assert rec.closed_by == "caller"
    [turn] = rec.turns
    assert turn.latency_secs is not None, "the call stopped answering after the junk"
    dropped = [line for line in lines if "Exotel input dropped" in line.message]
    assert dropped, "bad input was not logged"
    assert any("exceeds the" in line.message for line in lines), "the oversized one was not"
    assert errors(lines) == [], [str(line) for line in errors(lines)]
    session = bot.runtime.finished_calls[-1]
    rejected = {k: v for k, v in session.serializer.counters.items() if k.startswith("rejected")}
    assert sum(rejected.values()) >= 100, rejected


async def test_a_frame_over_the_websocket_limit_closes_the_call_cleanly(bot: BotUnderTest) -> None:
    """20 MB in one frame: uvicorn's WebSocket limit (16 MiB) closes the connection with 1009
    before anything is parsed; the call is torn down like any hang-up, nothing at ERROR."""
    huge = "A" * (20 * 1024 * 1024)
    await CallerSim(CallConfig(url=bot.url)).run([WaitForBot(gap=0.1, timeout=10)])  # warm
    await bot.idle()
    baseline = usage((bot.fakes.openai.port,))
    with captured_logs() as lines:
        sim = CallerSim(CallConfig(url=bot.url))
        rec = await sim.run([WaitForBot(gap=0.1, timeout=10), SendRaw(huge), Wait(5)])
        await bot.idle()
        after = await settled_usage(baseline, (bot.fakes.openai.port,))
    assert rec.closed_by == "bot" and rec.close_code == 1009, (rec.closed_by, rec.close_code)
    assert rec.duration_secs < 4.0
    assert bot.runtime.finished_calls[-1].hung_up_by == "caller"  # the peer broke the stream
    assert errors(lines) == [], [str(line) for line in errors(lines)]
    assert after.within(baseline), (baseline, after)


async def test_a_connection_that_never_starts_is_closed(bot: BotUnderTest) -> None:
    bot.configure(handshake_timeout_secs=1.0)
    for first in (None, json.dumps({"event": "connected"}), "garbage"):
        began = time.monotonic()
        async with connect(bot.url) as ws:
            if first is not None:
                await ws.send(first)
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(5):
                    while True:
                        await ws.recv()
            closed_after = time.monotonic() - began
        assert 0.9 <= closed_after < 2.5, closed_after
    assert bot.runtime.active_calls == 0 and not bot.runtime.finished_calls


async def test_junk_before_start_does_not_stop_the_call(bot: BotUnderTest) -> None:
    """Media, garbage and binary before ``start`` are dropped; the call then works."""
    async with connect(bot.url) as ws:
        for message in junk(random.Random(9), 50, starts=False):
            await ws.send(message)
        await ws.send(json.dumps({"event": "connected"}))
        start = {"event": "start", "start": {"stream_sid": "S1", "call_sid": "C1"}}
        await ws.send(json.dumps(start))
        async with asyncio.timeout(10):
            while json.loads(await ws.recv()).get("event") != "media":
                pass  # the greeting arrives
        await ws.send(json.dumps({"event": "stop", "stop": {"reason": "callended"}}))
    await bot.idle()
    assert bot.runtime.finished_calls[-1].info.stream_sid == "S1"
