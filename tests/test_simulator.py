"""The Exotel stand-in: its own rules and player model, then whole calls against small fake bots.

The fake bots are written here, directly on `websockets`, so the simulator is tested against
exactly the behaviour each test needs (compliant, sloppy, clearing, starving, hanging up).
"""

from __future__ import annotations

import asyncio
import base64
import json
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from bot.simulator import (
    BargeIn,
    CallConfig,
    Dtmf,
    ExotelPlayer,
    Hangup,
    Say,
    SendRaw,
    Wait,
    WaitForBot,
    WaitForBotHangup,
    check_bot_message,
    chunk_size_problems,
    load_audio,
    min_chunk_bytes,
    simulate_call,
    speech_bounds,
)

Handler = Callable[[ServerConnection], Awaitable[None]]


# --------------------------------------------------------------------------------------------
# Helpers: audio and a tiny fake bot toolkit
# --------------------------------------------------------------------------------------------


def tone(secs: float, rate: int = 8000, freq: float = 440.0, amp: float = 3000.0) -> np.ndarray:
    t = np.arange(round(secs * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def media_json(sid: str, pcm: bytes) -> str:
    payload = base64.b64encode(pcm).decode()
    return json.dumps({"event": "media", "stream_sid": sid, "media": {"payload": payload}})


def mark_json(sid: str, name: str) -> str:
    return json.dumps({"event": "mark", "stream_sid": sid, "mark": {"name": name}})


def rms(payload_b64: str) -> float:
    pcm = np.frombuffer(base64.b64decode(payload_b64), np.int16).astype(np.float64)
    return float(np.sqrt((pcm**2).mean())) if pcm.size else 0.0


@asynccontextmanager
async def fake_bot(handler: Handler, **kwargs: Any) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0, **kwargs) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/exotel/ws"


async def read_start(ws: ServerConnection) -> tuple[dict[str, Any], dict[str, Any]]:
    """The bot side of the handshake: `connected`, then `start`."""
    connected = json.loads(await ws.recv())
    start = json.loads(await ws.recv())
    return connected, start


async def speak(
    ws: ServerConnection,
    sid: str,
    secs: float,
    *,
    rate: int = 8000,
    mark: str | None = None,
    lead: float = 0.2,
) -> None:
    """Send `secs` of tone in legal chunks, paced at real time with `lead` seconds ahead."""
    size = min_chunk_bytes(rate)
    pcm = tone(secs, rate, freq=220.0).tobytes()
    pcm += b"\0" * (-len(pcm) % size)
    loop = asyncio.get_running_loop()
    began = loop.time()
    for i in range(0, len(pcm), size):
        await asyncio.sleep(max(0.0, began + i / (2 * rate) - lead - loop.time()))
        await ws.send(media_json(sid, pcm[i : i + size]))
    if mark:
        await ws.send(mark_json(sid, mark))


async def drain(ws: ServerConnection, sink: list[dict[str, Any]] | None = None) -> int | None:
    """Read until the caller goes away; returns the close code the bot saw."""
    try:
        async for frame in ws:
            if sink is not None:
                sink.append(json.loads(frame) if isinstance(frame, str) else {"binary": frame})
    except ConnectionClosed:
        pass
    return ws.close_code


# --------------------------------------------------------------------------------------------
# Pure rules
# --------------------------------------------------------------------------------------------


def test_minimum_chunk_is_whole_20ms_and_320_multiple() -> None:
    assert [min_chunk_bytes(r) for r in (8000, 16000, 24000)] == [3200, 3200, 3840]


@pytest.mark.parametrize(
    ("nbytes", "rate", "expected"),
    [
        (3200, 8000, []),
        (3200, 16000, []),
        (3840, 24000, []),
        (99_840, 8000, []),
        (640, 8000, ["below"]),
        (
            4096,
            8000,
            [
                "multiple of 320",
                "20 ms",
            ],
        ),
        (3200, 24000, ["20 ms", "below"]),
        (100_160, 8000, ["above"]),
    ],
)
def test_chunk_size_problems(nbytes: int, rate: int, expected: list[str]) -> None:
    problems = chunk_size_problems(nbytes, rate)
    assert len(problems) == len(expected)
    for problem, words in zip(problems, expected, strict=True):
        assert words in problem


def test_check_bot_message_accepts_documented_shapes() -> None:
    ok = check_bot_message(media_json("S", b"\0" * 3200), 8000, "S")
    assert (ok.event, len(ok.pcm or b""), ok.problems) == ("media", 3200, [])
    mark = check_bot_message(mark_json("S", "m1"), 8000, "S")
    assert (mark.event, mark.mark_name, mark.problems) == ("mark", "m1", [])
    clear = check_bot_message('{"event": "clear"}', 8000, "S")
    assert (clear.event, clear.problems) == ("clear", [])


@pytest.mark.parametrize(
    ("frame", "words"),
    [
        (b"\x00\x01", "binary frame"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"event": "hangup"}', "unknown event"),
        ('{"event": "clear", "streamSid": "S"}', "camelCase"),
        ('{"event": "clear", "stream_sid": "OTHER"}', "not ours"),
        ('{"event": "media", "media": {"payload": "!!!"}}', "not valid base64"),
        ('{"event": "media", "media": {}}', "media.payload"),
        ('{"event": "mark", "mark": {}}', "mark.name"),
    ],
)
def test_check_bot_message_flags_bad_frames(frame: str | bytes, words: str) -> None:
    problems = check_bot_message(frame, 8000, "S").problems
    assert len(problems) == 1 and words in problems[0], problems


def test_epoch_timestamp_is_flagged() -> None:
    msg = json.dumps(
        {
            "event": "media",
            "media": {"payload": base64.b64encode(b"\0" * 3200).decode(), "timestamp": 1.7e12},
        }
    )
    assert "epoch" in check_bot_message(msg, 8000, "S").problems[0]


def test_url_and_rate_are_reconciled() -> None:
    url, rate = CallConfig(url="ws://h/ws", sample_rate=16000).resolved_url_and_rate()
    assert (url, rate) == ("ws://h/ws?sample-rate=16000", 16000)
    assert CallConfig(url="ws://h/ws?a=1&sample-rate=24000").resolved_url_and_rate()[1] == 24000
    assert CallConfig(url="ws://h/ws").resolved_url_and_rate() == ("ws://h/ws", 8000)
    with pytest.raises(ValueError, match="contradicts"):
        CallConfig(url="ws://h/ws?sample-rate=8000", sample_rate=16000).resolved_url_and_rate()
    with pytest.raises(ValueError):
        CallConfig(url="ws://h/ws?sample-rate=44100").resolved_url_and_rate()
    with pytest.raises(ValueError):
        Dtmf("A")


def test_speech_bounds_use_10ms_rms_windows() -> None:
    audio = np.concatenate([np.zeros(800, np.int16), tone(0.5), np.zeros(1600, np.int16)])
    start, end = speech_bounds(audio, 8000, 300.0) or (None, None)
    assert start == pytest.approx(0.1) and end == pytest.approx(0.6)
    assert speech_bounds(np.zeros(8000, np.int16), 8000, 300.0) is None


def test_wav_input_is_resampled(tmp_path: Path) -> None:
    path = tmp_path / "caller.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(tone(0.5, 16000).tobytes())
    samples = load_audio(path, 8000)
    assert samples.dtype == np.int16 and len(samples) == 4000
    with pytest.raises(ValueError):
        load_audio(b"\0\0\0", 8000)


# --------------------------------------------------------------------------------------------
# The player model, with explicit times
# --------------------------------------------------------------------------------------------


def test_player_counts_underrun_only_mid_utterance() -> None:
    player = ExotelPlayer(8000)
    player.add_chunk(0.0, 3200)  # plays 0.0-0.2
    player.add_chunk(0.5, 3200)  # dry for 0.3 s mid-utterance
    mark = player.add_mark(0.5, "end")
    assert mark.due_at == pytest.approx(0.7)
    assert player.fire_mark(0.7, mark) and player.open is None
    player.add_chunk(1.0, 3200)  # first chunk after a mark: a new utterance, not an underrun
    assert [round(u.gap_secs, 3) for u in player.underruns] == [0.3]
    assert len(player.utterances) == 2
    assert player.leads[0] == (0.0, pytest.approx(0.2))


@pytest.mark.parametrize("policy", ["echo", "drop"])
def test_player_clear_lets_current_chunk_finish(policy: str) -> None:
    player = ExotelPlayer(8000, marks_after_clear=policy)  # type: ignore[arg-type]
    for _ in range(5):
        player.add_chunk(0.0, 3200)  # 1 s queued at once
    early = player.add_mark(0.0, "never-cleared")  # due at 1.0, behind all five chunks
    to_echo = player.clear(0.3)  # chunk 1 (0.2-0.4) is playing
    assert [c.cut for c in player.chunks] == [None, None, "clear", "clear", "clear"]
    assert player.queue_end == pytest.approx(0.4)
    assert sum(c.played_secs for c in player.chunks) == pytest.approx(0.4)
    assert early.outcome == ("echoed_on_clear" if policy == "echo" else "dropped_on_clear")
    assert to_echo == ([early] if policy == "echo" else [])
    assert not player.fire_mark(1.0, early)  # its timer must not echo it a second time
    nxt = player.add_chunk(0.35, 3200)  # queued behind the residual chunk, a new utterance
    assert nxt.start == pytest.approx(0.4) and not player.underruns


def test_player_idle_and_close() -> None:
    player = ExotelPlayer(8000, idle_secs=1.0)
    player.add_chunk(0.0, 3200)
    assert not player.check_idle(0.9) and player.check_idle(1.2)
    assert player.utterances[0].closed_by == "idle"
    player.add_chunk(2.0, 16000)  # 1 s, plays 2.0-3.0
    pending = player.add_mark(2.0, "m")
    assert player.close(2.25) == pytest.approx(0.75)
    assert pending.outcome == "lost_on_close"
    assert player.chunks[-1].played_end == pytest.approx(2.25)


# --------------------------------------------------------------------------------------------
# Whole calls
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 24000])
async def test_conversation_latency_pacing_and_shapes(rate: int) -> None:
    """A compliant bot: greeting, then an answer 3 quiet frames after each caller turn."""
    inbound: list[dict[str, Any]] = []

    async def bot(ws: ServerConnection) -> None:
        connected, start = await read_start(ws)
        inbound.extend([connected, start])
        sid = start["stream_sid"]
        tasks = [asyncio.create_task(speak(ws, sid, 0.6, rate=rate, mark="greet"))]
        loud, quiet = False, 0
        async for frame in ws:
            msg = json.loads(frame)
            inbound.append(msg)
            if msg["event"] != "media":
                continue
            if rms(msg["media"]["payload"]) > 300:
                loud, quiet = True, 0
            elif loud and (quiet := quiet + 1) == 3:
                loud = False
                tasks.append(asyncio.create_task(speak(ws, sid, 0.6, rate=rate, mark="answer")))

    script = [
        Say(tone(0.5, rate).tobytes(), label="one"),
        Say(tone(0.5, rate).tobytes(), label="two", gap=0.3),
        WaitForBot(),
        Hangup(),
    ]
    async with fake_bot(bot) as url:
        rec = await simulate_call(CallConfig(url=url, sample_rate=rate), script)

    assert rec.violations == [] and rec.script_warnings == []
    assert rec.closed_by == "caller" and rec.close_code == 1000
    assert len(rec.utterances) == 3 and all(m.outcome == "echoed" for m in rec.marks)
    one, two = rec.turns
    assert one.speech_start == pytest.approx(rec.utterances[0].end + 0.5, abs=0.02)
    assert two.speech_start == pytest.approx(rec.utterances[1].end + 0.3, abs=0.02)
    for turn in rec.turns:
        assert 0.25 < (turn.latency_secs or 0) < 0.5, turn
        assert not turn.interrupted and turn.bot_audio_after_onset_secs == 0
    assert set(rec.media_sizes) == {min_chunk_bytes(rate)}
    assert 0.15 < rec.max_lead_secs < 0.45

    connected, start = inbound[0], inbound[1]
    assert connected == {"event": "connected"}
    assert start["sequence_number"] == "1" and start["stream_sid"] == rec.stream_sid
    assert set(start["start"]) == {
        "stream_sid",
        "call_sid",
        "account_sid",
        "from",
        "to",
        "custom_parameters",
        "media_format",
    }
    assert start["start"]["media_format"]["sample_rate"] == str(rate)
    assert len(rec.call_sid) == 32 and int(rec.call_sid, 16) >= 0
    seqs = [int(m["sequence_number"]) for m in inbound[1:]]
    assert seqs == list(range(1, len(seqs) + 1))
    media = [m["media"] for m in inbound if m["event"] == "media"]
    assert [m["chunk"] for m in media[:3]] == ["1", "2", "3"]
    assert [m["timestamp"] for m in media[:3]] == ["100", "200", "300"]
    assert {len(base64.b64decode(m["payload"])) for m in media} == {rate // 10 * 2}
    assert len(media) == pytest.approx(rec.duration_secs * 10, abs=2)
    assert inbound[-1]["event"] == "stop" and inbound[-1]["stop"]["reason"] == "callended"
    assert len(rec.caller_audio) == len(media) * rate // 10
    assert len(rec.bot_audio) >= round(rec.duration_secs * rate) - rate // 10


async def test_bot_without_marks_is_finished_when_its_audio_drains() -> None:
    """Like stock Pipecat: no marks. The caller still answers `gap` after the audio ends."""

    async def bot(ws: ServerConnection) -> None:
        _, start = await read_start(ws)
        await speak(ws, start["stream_sid"], 0.4, lead=0.0)
        await asyncio.sleep(0.35)  # the queue runs dry 0.15 s: an underrun, not the end
        await speak(ws, start["stream_sid"], 0.4, lead=0.0)
        await drain(ws)

    async with fake_bot(bot) as url:
        rec = await simulate_call(url, [Say(tone(0.3).tobytes(), gap=0.3), Hangup()])
    (utterance,) = rec.utterances
    assert utterance.end == pytest.approx(0.95, abs=0.05)
    (underrun,) = rec.underruns
    assert underrun.gap_secs == pytest.approx(0.15, abs=0.03)
    assert rec.turns[0].speech_start == pytest.approx(utterance.end + 0.3, abs=0.02)
    assert rec.marks == [] and rec.violations == []


async def test_sloppy_bot_violations_are_recorded() -> None:
    async def bot(ws: ServerConnection) -> None:
        _, start = await read_start(ws)
        await ws.send(media_json(start["stream_sid"], b"\0" * 640))
        await ws.send(b"\x00" * 3200)
        await ws.send(json.dumps({"event": "media", "streamSid": "x", "media": {"payload": ""}}))
        await drain(ws)

    async with fake_bot(bot) as url:
        rec = await simulate_call(url, [Wait(0.5)])
    text = "\n".join(rec.violations)
    assert "640 B" in text and "below the 3200 B minimum" in text
    assert "binary frame" in text and "camelCase" in text
    assert rec.media_sizes == [640, 0]
    assert rec.event_counts("from_bot") == {"media": 2, "binary": 1}
    assert len(rec.chunks) == 1  # an empty payload plays nothing


@pytest.mark.parametrize("policy", ["echo", "drop"])
async def test_clear_cuts_playout_and_settles_marks(policy: str) -> None:
    echoes: list[tuple[str, float]] = []

    async def bot(ws: ServerConnection) -> None:
        _, start = await read_start(ws)
        sid, loop = start["stream_sid"], asyncio.get_running_loop()
        began = loop.time()
        for _ in range(10):  # 2 s at once: a bot that does not pace
            await ws.send(media_json(sid, tone(0.2, freq=220).tobytes()))
        await ws.send(mark_json(sid, "long"))
        await asyncio.sleep(0.5)
        await ws.send(json.dumps({"event": "clear", "stream_sid": sid}))
        await speak(ws, sid, 0.4, mark="after")
        async for frame in ws:
            msg = json.loads(frame)
            if msg["event"] == "mark":
                echoes.append((msg["mark"]["name"], loop.time() - began))

    async with fake_bot(bot) as url:
        config = CallConfig(url=url, marks_after_clear=policy)  # type: ignore[arg-type]
        rec = await simulate_call(config, [Wait(1.5)])

    assert rec.violations == []
    assert len(rec.clears) == 1 and rec.clears[0] == pytest.approx(0.5, abs=0.05)
    assert [c.cut for c in rec.chunks[:10]].count("clear") == 7
    first = rec.utterances[0]
    assert first.closed_by == "clear" and first.end == pytest.approx(0.6, abs=0.03)
    assert rec.max_lead_secs == pytest.approx(2.0, abs=0.05)
    assert not rec.underruns and len(rec.utterances) == 2
    assert rec.utterances[1].start == pytest.approx(first.end, abs=0.01)
    names = [name for name, _ in echoes]
    if policy == "echo":
        assert names == ["long", "after"] and echoes[0][1] == pytest.approx(0.5, abs=0.05)
    else:
        assert names == ["after"]
    cut = round(first.end * rec.sample_rate)
    assert np.abs(rec.bot_audio[cut - 400 : cut - 10]).max() > 1000  # heard up to the cut
    assert np.abs(rec.bot_audio[cut + 10 : cut + 400]).max() > 1000  # then the new utterance
    assert rec.bot_audio_played_secs == pytest.approx(1.0, abs=0.01)


async def test_starved_buffer_counts_an_underrun() -> None:
    async def bot(ws: ServerConnection) -> None:
        _, start = await read_start(ws)
        sid = start["stream_sid"]
        chunk = tone(0.2, freq=220).tobytes()
        await ws.send(media_json(sid, chunk))
        await asyncio.sleep(0.5)  # 0.3 s of nothing after the first chunk
        await ws.send(media_json(sid, chunk))
        await ws.send(mark_json(sid, "end"))
        await asyncio.sleep(0.6)
        await ws.send(media_json(sid, chunk))  # after a mark: a new utterance, no underrun
        await drain(ws)

    async with fake_bot(bot) as url:
        rec = await simulate_call(url, [Wait(1.5)])
    assert len(rec.underruns) == 1
    assert rec.underruns[0].gap_secs == pytest.approx(0.3, abs=0.05)
    assert [u.closed_by for u in rec.utterances] == ["mark", "close"]


async def test_barge_in_is_measured() -> None:
    async def bot(ws: ServerConnection) -> None:
        _, start = await read_start(ws)
        sid = start["stream_sid"]
        talking = asyncio.create_task(speak(ws, sid, 3.0, mark="greet"))
        async for frame in ws:
            msg = json.loads(frame)
            if (
                msg["event"] == "media"
                and rms(msg["media"]["payload"]) > 300
                and not talking.done()
            ):
                talking.cancel()
                await ws.send(json.dumps({"event": "clear", "stream_sid": sid}))

    script = [BargeIn(tone(0.6).tobytes(), after_bot_start=0.7, label="stop"), Hangup()]
    async with fake_bot(bot) as url:
        rec = await simulate_call(url, script)
    (turn,) = rec.turns
    assert turn.kind == "barge_in" and turn.bot_speaking_at_onset and turn.interrupted
    assert turn.speech_start == pytest.approx(rec.utterances[0].start + 0.7, abs=0.02)
    assert 0.0 < (turn.clear_latency_secs or 0) < 0.2
    assert 0.0 < turn.bot_audio_after_onset_secs < 0.45
    assert rec.utterances[0].closed_by == "clear"
    assert rec.marks == []  # the bot cancelled before it could send its mark


async def test_hangup_with_stop_is_clean() -> None:
    seen: list[dict[str, Any]] = []
    codes: list[int | None] = []

    async def bot(ws: ServerConnection) -> None:
        await read_start(ws)
        codes.append(await drain(ws, seen))

    async with fake_bot(bot) as url:
        config = CallConfig(url=url, call_sid="c" * 32, account_sid="a" * 32)
        script = [Say(tone(0.2).tobytes(), at=0.35), Dtmf("5"), SendRaw(b"\x01"), Hangup()]
        rec = await simulate_call(config, script)
        await asyncio.sleep(0.1)
    assert rec.closed_by == "caller" and rec.close_code == 1000 and codes == [1000]
    dtmf = next(m for m in seen if m.get("event") == "dtmf")
    assert dtmf["dtmf"] == {"digit": "5", "duration": "100"}
    assert {"binary": b"\x01"} in seen
    stop = seen[-1]
    assert stop["stream_sid"] == rec.stream_sid
    assert stop["stop"] == {"call_sid": "c" * 32, "account_sid": "a" * 32, "reason": "callended"}
    assert [d.digit for d in rec.dtmf] == ["5"]
    assert rec.turns[0].speech_start == pytest.approx(0.35, abs=1e-3)  # sample-exact placement
    at = round(0.35 * 8000)
    assert not rec.caller_audio[at - 80 : at].any() and np.abs(rec.caller_audio[at : at + 80]).max()


async def test_abrupt_hangup_sends_no_stop() -> None:
    seen: list[dict[str, Any]] = []
    codes: list[int | None] = []

    async def bot(ws: ServerConnection) -> None:
        await read_start(ws)
        codes.append(await drain(ws, seen))

    async with fake_bot(bot) as url:
        rec = await simulate_call(url, [Wait(0.3), Hangup(stop=False)])
        await asyncio.sleep(0.2)
    assert rec.closed_by == "caller_abrupt" and rec.close_code == 1006
    assert codes == [1006]
    assert all(m.get("event") == "media" for m in seen)


async def test_bot_hangs_up_after_its_mark_echo() -> None:
    async def bot(ws: ServerConnection) -> None:
        _, start = await read_start(ws)
        await speak(ws, start["stream_sid"], 0.6, mark="bye")
        async for frame in ws:
            if json.loads(frame)["event"] == "mark":
                await ws.close()

    async with fake_bot(bot) as url:
        rec = await simulate_call(url, [WaitForBotHangup(timeout=5.0), Say(tone(0.2).tobytes())])
    assert rec.closed_by == "bot" and rec.close_code == 1000
    assert rec.violations == [] and rec.marks[0].outcome == "echoed"
    assert rec.duration_secs == pytest.approx(0.6, abs=0.1)
    assert "not performed" in rec.script_warnings[0]


async def test_bot_closing_with_audio_queued_is_a_violation() -> None:
    async def bot(ws: ServerConnection) -> None:
        _, start = await read_start(ws)
        for _ in range(5):
            await ws.send(media_json(start["stream_sid"], tone(0.2).tobytes()))
        await ws.close()

    async with fake_bot(bot) as url:
        rec = await simulate_call(url, [WaitForBotHangup(timeout=5.0)])
    assert rec.closed_by == "bot"
    assert len(rec.violations) == 1 and "unplayed" in rec.violations[0]
    assert rec.bot_audio_played_secs < 0.1


async def test_silent_bot_waits_time_out_and_never_hang() -> None:
    async def bot(ws: ServerConnection) -> None:
        await drain(ws)

    script = [
        WaitForBotHangup(timeout=0.3),
        WaitForBot(timeout=0.3),
        BargeIn(tone(0.1).tobytes(), timeout=0.3),
    ]
    async with fake_bot(bot) as url:
        rec = await simulate_call(url, script)
        timed = await simulate_call(CallConfig(url=url, overall_timeout=0.5), [Wait(5.0)])
    assert rec.closed_by == "caller" and len(rec.script_warnings) == 3
    assert rec.turns[0].latency_secs is None
    assert timed.closed_by == "timeout" and timed.duration_secs < 1.0


async def test_basic_auth_header() -> None:
    expected = "Basic " + base64.b64encode(b"key:token").decode()

    def check(connection: ServerConnection, request: Any) -> Any:
        if request.headers.get("Authorization") != expected:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "bad credentials\n")
        return None

    async with fake_bot(drain, process_request=check) as url:
        good = await simulate_call(CallConfig(url=url, auth=("key", "token")), [Wait(0.1)])
        bad = await simulate_call(url, [Say(tone(0.1).tobytes())])
    assert good.closed_by == "caller" and good.connect_error is None
    assert bad.closed_by == "not_connected" and bad.connect_error == "HTTP 401"
    assert bad.turns == [] and bad.messages == []
