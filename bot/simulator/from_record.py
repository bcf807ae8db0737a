"""A server's call record drawn like a simulated call, and ``python -m bot report``.

Why here and not in observability: the record is turned into a ``CallRecording`` and its bot
audio replayed through the simulator's model of Exotel's player, so the table and the timeline
picture mean the same thing for a real call as for a simulated one. The simulator may import
observability (``load_record``); observability never imports the simulator.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from bot.observability.records import load_record
from bot.simulator.model import CallRecording, ChunkPlayout, DtmfRecord, MessageRecord, Turn
from bot.simulator.player import ExotelPlayer
from bot.simulator.protocol import chunk_size_problems
from bot.simulator.report import format_report, write_timeline_png


def record_to_recording(record: Mapping[str, Any]) -> CallRecording:
    """The record as a ``bot.simulator.model.CallRecording``, so ``bot.simulator.report`` draws it.

    Bot audio is replayed through the simulator's model of Exotel's player (chunks back to
    back, ``clear`` drops what has not started, marks echo when their audio has played), so
    the picture means the same thing for both. Audio tracks are left empty.
    """
    rate = int(record["sample_rate"])
    duration = float(record["duration_secs"] or 0.0)
    player = _replay_player(ExotelPlayer(rate), record, duration)
    sizes = [n for _, n in record.get("bot_audio_chunks", [])]
    violations = [
        f"media of {size} B: {problem}"
        for size in sorted(set(sizes))
        for problem in chunk_size_problems(size, rate)
    ]
    events = record.get("events", [])
    turns = [_sim_turn(turn) for turn in record.get("turns", [])]
    _add_talk_over(turns, player.chunks)
    values = {
        "url": f"call record {record['call_sid']}",
        "sample_rate": rate,
        "stream_sid": record["stream_sid"],
        "call_sid": record["call_sid"],
        "account_sid": record.get("account_sid", ""),
        "started_at": datetime.fromisoformat(record["started_at"]).timestamp(),
        "duration_secs": duration,
        "handshake_secs": None,
        "connect_error": None,
        "closed_by": record.get("hung_up_by") or "timeout",
        "close_code": None,
        "close_reason": record.get("end_reason"),
        "messages": _messages(record),
        "chunks": player.chunks,
        "utterances": player.utterances,
        "marks": player.marks,
        "clears": list(player.clears),
        "dtmf": [DtmfRecord(e["t"], e["digit"], 0) for e in events if e["type"] == "dtmf"],
        "turns": turns,
        "underruns": player.underruns,
        "leads": player.leads,
        "media_sizes": sizes,
        "violations": violations,
        "script_warnings": [],
        "caller_audio": np.zeros(0, np.int16),
        "bot_audio": np.zeros(0, np.int16),
    }
    # Only the fields this version of the simulator has (its recording is still growing).
    names = {f.name for f in dataclasses.fields(CallRecording)}
    return CallRecording(**{k: v for k, v in values.items() if k in names})


def _replay_player(
    player: ExotelPlayer, record: Mapping[str, Any], duration: float
) -> ExotelPlayer:
    """Feed chunk arrivals, marks, echoes and clears to the player in time order."""
    timeline: list[tuple[float, int, str, Any]] = []
    for t, size in record.get("bot_audio_chunks", []):
        timeline.append((t, 0, "chunk", size))
    for e in record.get("events", []):
        if e["type"] in ("mark_sent", "mark_echoed"):
            timeline.append((e["t"], 1, e["type"], e.get("name", "")))
    for t in record.get("clears", []):
        timeline.append((t, 2, "clear", None))
    marks: dict[str, Any] = {}
    for t, _, kind, value in sorted(timeline, key=lambda item: item[:2]):
        player.check_idle(t)
        if kind == "chunk":
            player.add_chunk(t, value)
        elif kind == "mark_sent":
            marks[value] = player.add_mark(t, value)
        elif kind == "mark_echoed" and value in marks:
            player.fire_mark(t, marks[value])
        elif kind == "clear":
            player.clear(t)
    player.close(duration)  # audio still queued when the call ended was never heard
    return player


def _messages(record: Mapping[str, Any]) -> list[MessageRecord]:
    """Per-event message counts as the simulator keeps them (times unknown: 0)."""
    out = [
        MessageRecord(0.0, "to_bot", event, 0)
        for event, n in record.get("inbound_events", {}).items()
        if not event.startswith("rejected:")
        for _ in range(n)
    ]
    sent = {
        "media": len(record.get("bot_audio_chunks", [])),
        "mark": sum(1 for e in record.get("events", []) if e["type"] == "mark_sent"),
        "clear": len(record.get("clears", [])),
    }
    out += [MessageRecord(0.0, "from_bot", event, 0) for event, n in sent.items() for _ in range(n)]
    return out


def _sim_turn(turn: Mapping[str, Any]) -> Turn:
    start = turn.get("speech_start")
    end = turn.get("speech_end")
    return Turn(
        index=turn["index"],
        kind="barge_in" if turn.get("bot_speaking_at_onset") else "say",
        label=turn.get("heard") or f"turn {turn['index'] + 1}",
        text=turn.get("heard") or None,
        audio_start=start or 0.0,
        audio_end=end or start or 0.0,
        speech_start=start,
        speech_end=end,
        bot_speaking_at_onset=bool(turn.get("bot_speaking_at_onset")),
        first_bot_audio=turn.get("first_bot_audio"),
        latency_secs=turn.get("response_latency"),
        interrupted=bool(turn.get("interrupted")),
        clear_at=turn.get("clear_at"),
        clear_latency_secs=turn.get("clear_latency"),
    )


def _add_talk_over(turns: Sequence[Turn], chunks: Sequence[ChunkPlayout]) -> None:
    """Bot audio the caller heard over themselves: from their onset to the bot's answer (or
    the next turn), as the simulator defines it."""
    for i, turn in enumerate(turns):
        if turn.speech_start is None:
            continue
        following = turns[i + 1].speech_start if i + 1 < len(turns) else None
        until = turn.first_bot_audio or following or float("inf")
        turn.bot_audio_after_onset_secs = sum(
            max(0.0, min(c.played_end, until) - max(c.start, turn.speech_start)) for c in chunks
        )


def record_transcript(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What ``bot.simulator.report.format_report`` takes as ``transcript``: heard / answered /
    hold."""
    return [
        {
            "heard": t.get("heard") or None,
            "answered": t.get("answered") or t.get("spoken") or None,
            "holding_phrase": bool(t.get("holding_phrase")),
        }
        for t in record.get("turns", [])
    ]


def record_annotations(
    record: Mapping[str, Any], default_secs: float = 1.0
) -> list[tuple[float, float, str]]:
    """Holding phrases as ``(start, end, text)`` spans for the timeline's holding lane."""
    return [
        (h["t"], h["t"] + (h.get("secs") or default_secs), h.get("text", ""))
        for t in record.get("turns", [])
        for h in t.get("holding") or ()
    ]


def run_report(record_file: Path | str, png: Path | str | None = None) -> int:
    """Print the record's table and compliance summary; draw its timeline PNG."""
    try:
        record = load_record(record_file)
    except (OSError, ValueError) as e:
        print(f"cannot read the call record: {e}", file=sys.stderr)
        return 2
    recording = record_to_recording(record)
    print(format_report(recording, record_transcript(record)), end="")
    out = Path(png) if png else Path(record_file).with_suffix(".png")
    write_timeline_png(recording, out, record_annotations(record))
    print(f"timeline: {out}")
    return 0


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("record", type=Path, help="a call record (CALL_RECORDS_DIR/.../*.json)")
    parser.add_argument(
        "--png", type=Path, help="where to draw the timeline (default: next to the record)"
    )


def report_main(argv: Sequence[str] | None = None) -> int:
    """``python -m bot report CALL.json [--png out.png]``."""
    parser = argparse.ArgumentParser(
        prog="python -m bot report", description="Render a call record as a table and timeline."
    )
    add_report_arguments(parser)
    args = parser.parse_args(argv)
    return run_report(args.record, args.png)
