"""Reports from a call recording: the text table, the stereo WAV and the timeline PNG."""

from __future__ import annotations

import base64
import json
import socket
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve

from bot.simulator import (
    CallRecording,
    ExotelPlayer,
    Hangup,
    MessageRecord,
    Say,
    Turn,
    compute_turns,
    simulate_call,
)
from bot.simulator.report import (
    TurnNotes,
    format_report,
    save_report,
    write_stereo_wav,
    write_timeline_png,
)

RATE = 8000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tone(secs: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(secs * RATE)) / RATE
    return (3000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def make_recording() -> CallRecording:
    """A hand-built 4.6 s call: greeting, an answered turn, a barge-in, a bad chunk, 7 violations.

    Turn 1 ends speech at 2.3 s, the answer starts at 2.7 s (400 ms). The caller barges in at
    3.2 s, `clear` at 3.25 s lets the chunk playing (3.1-3.3 s) finish, the next answer starts
    at 4.0 s, 400 ms after the barge-in speech ends at 3.6 s. The caller hangs up at 4.6 s,
    0.24 s of bot audio before it has been heard.
    """
    player = ExotelPlayer(RATE)
    for _ in range(5):
        player.add_chunk(0.0, 3200)
    player.fire_mark(1.0, player.add_mark(0.0, "greet"))
    for _ in range(5):
        player.add_chunk(2.7, 3200)
    player.clear(3.25)
    for _ in range(4):
        player.add_chunk(4.0, 3200)
    player.add_chunk(4.8, 640)
    player.close(4.6)
    turns = [
        Turn(0, "say", "book a table", "I want to book a table", 1.5, 2.3, 1.5, 2.3),
        Turn(1, "barge_in", "wait", None, 3.2, 3.6, 3.2, 3.6),
    ]
    caller = np.zeros(round(4.6 * RATE), np.int16)
    caller[int(1.5 * RATE) : int(2.3 * RATE)] = tone(0.8)
    caller[int(3.2 * RATE) : int(3.6 * RATE)] = tone(0.4)
    bot = np.zeros(round(4.6 * RATE), np.int16)
    for chunk in player.chunks:
        a, b = round(chunk.start * RATE), round(chunk.played_end * RATE)
        bot[a:b] = tone((b - a) / RATE, 220)
    messages = [MessageRecord(0.1 * i, "to_bot", "media", 2200) for i in range(46)]
    messages += [MessageRecord(c.arrived, "from_bot", "media", 4400) for c in player.chunks]
    return CallRecording(
        url="ws://127.0.0.1:1/exotel/ws",
        sample_rate=RATE,
        stream_sid="s" * 32,
        call_sid="c" * 32,
        account_sid="a" * 32,
        started_at=time.time(),
        duration_secs=4.6,
        handshake_secs=0.01,
        connect_error=None,
        closed_by="caller",
        close_code=1000,
        close_reason="",
        messages=messages,
        chunks=player.chunks,
        utterances=player.utterances,
        marks=player.marks,
        clears=player.clears,
        dtmf=[],
        turns=compute_turns(turns, player.utterances, player.chunks, player.clears),
        underruns=player.underruns,
        leads=player.leads,
        media_sizes=[c.nbytes for c in player.chunks],
        violations=[f"[  4.80 s] violation number {i}" for i in range(7)],
        script_warnings=[],
        caller_audio=caller,
        bot_audio=bot,
    )


def test_turn_metrics_of_the_hand_built_call() -> None:
    one, two = make_recording().turns
    assert one.latency_secs == pytest.approx(0.4) and not one.interrupted
    assert two.interrupted and two.clear_latency_secs == pytest.approx(0.05)
    assert two.bot_audio_after_onset_secs == pytest.approx(0.1)
    assert two.latency_secs == pytest.approx(0.4)


def test_format_report_table_and_compliance_summary() -> None:
    transcript = {
        0: TurnNotes(heard="I want to book a table", answered="For how many?", holding_phrase=True),
        1: {"heard": "wait", "answered": "Sure", "holding_phrase": False},
    }
    text = format_report(make_recording(), transcript)
    lines = text.splitlines()
    row1 = next(line for line in lines if line.startswith("1 "))
    row2 = next(line for line in lines if line.startswith("2 "))
    assert "I want to book a table" in row1 and "For how many?" in row1
    assert "400 ms" in row1 and "yes" in row1
    assert "[barge-in] wait" in row2 and "yes: clear +50 ms, 100 ms bot audio after onset" in row2
    assert "Latency: 2 answered of 2; median 400 ms" in text
    assert "3200 B x14 (200 ms), 640 B x1 (40 ms) !" in text
    assert "messages to bot    media 46" in text
    assert "2.84 s received, 2.20 s played (0.40 s dropped by clear, 0.24 s lost at close)" in text
    assert "violations         7" in text
    assert "violation number 4" in text and "violation number 5" not in text
    assert "… and 2 more" in text
    assert all(line == line.rstrip() for line in lines)


def test_format_report_without_or_with_listed_transcript() -> None:
    rec = make_recording()
    bare = format_report(rec)
    assert "I want to book a table  -" in bare  # caller text shown, nothing heard
    listed = format_report(rec, [TurnNotes(heard="hello"), TurnNotes(answered="bye")])
    assert "hello" in listed and "bye" in listed


def test_stereo_wav_has_caller_left_and_bot_right(tmp_path: Path) -> None:
    rec = make_recording()
    path = write_stereo_wav(rec, tmp_path / "call.wav")
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, RATE)
        frames = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)
    assert len(frames) == max(len(rec.caller_audio), len(rec.bot_audio))
    assert np.array_equal(frames[:, 0], rec.caller_audio)
    assert np.array_equal(frames[:, 1], rec.bot_audio)


def test_timeline_png_is_written(tmp_path: Path) -> None:
    rec = make_recording()
    path = write_timeline_png(rec, tmp_path / "call.png", [(2.7, 3.2, "one moment")])
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1440, 480)  # 12 x 4 in at 120 dpi


async def test_save_report_from_a_real_call(tmp_path: Path) -> None:
    async def bot(ws: ServerConnection) -> None:
        await ws.recv()
        sid = json.loads(await ws.recv())["stream_sid"]
        payload = base64.b64encode(tone(0.2, 220).tobytes()).decode()
        for _ in range(3):
            await ws.send(
                json.dumps({"event": "media", "stream_sid": sid, "media": {"payload": payload}})
            )
        await ws.send(json.dumps({"event": "mark", "stream_sid": sid, "mark": {"name": "hi"}}))
        async for _ in ws:
            pass

    async with serve(bot, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/exotel/ws"
        rec = await simulate_call(url, [Say(tone(0.3).tobytes(), gap=0.2, label="hello"), Hangup()])
    files = save_report(rec, tmp_path / "out", annotations=[(0.0, 0.6, "greeting")])
    assert sorted(files) == ["json", "png", "report", "wav"]
    assert files["png"].read_bytes().startswith(PNG_MAGIC)
    assert "hello" in files["report"].read_text()
    summary = json.loads(files["json"].read_text())
    assert summary["media_sizes"] == [3200, 3200, 3200] and summary["violations"] == []
    with wave.open(str(files["wav"]), "rb") as wav:
        assert wav.getnframes() / RATE == pytest.approx(rec.duration_secs, abs=0.15)


async def test_reports_survive_a_call_that_never_connected(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    rec = await simulate_call(f"ws://127.0.0.1:{port}/exotel/ws", [Say(tone(0.1).tobytes())])
    assert rec.closed_by == "not_connected" and rec.connect_error
    text = format_report(rec)
    assert "Connection failed" in text and "Turns: none" in text
    files = save_report(rec, tmp_path)
    assert files["png"].stat().st_size > 0 and files["wav"].stat().st_size > 0
