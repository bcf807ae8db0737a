"""Turn a simulated call (`bot.simulator.model.CallRecording`) into things a person can check
quickly.

Why: a recording is thousands of numbers; what a reviewer needs is "did each turn get a fast
answer, did barge-in work, was every message Exotel-legal" (a text report), "what did it sound
like" (a stereo WAV: caller left, bot right, exactly as played), and "what happened when" (a
timeline PNG). Transcripts and holding-phrase spans are optional inputs because only the server
knows them (e.g. from its call record); the simulator only hears audio.
"""

from __future__ import annotations

import json
import statistics
import wave
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bot.simulator.model import CallRecording, Turn
from bot.simulator.protocol import chunk_size_problems

MAX_VIOLATIONS_SHOWN = 5
CELL = 26  # width of the free-text table columns


@dataclass(frozen=True)
class TurnNotes:
    """What the server knows about a caller turn: its transcript and its answer."""

    heard: str | None = None
    answered: str | None = None
    holding_phrase: bool | None = None


NotesLike = TurnNotes | Mapping[str, Any]
Transcript = Mapping[int, NotesLike] | Sequence[NotesLike]
Annotation = tuple[float, float, str]  # (start, end, label) on the call timeline


# --------------------------------------------------------------------------------------------
# Text report
# --------------------------------------------------------------------------------------------


def format_report(recording: CallRecording, transcript: Transcript | None = None) -> str:
    """A per-turn table plus an Exotel compliance summary, as plain text.

    `transcript` maps a turn index (0-based, as in `recording.turns`) to a `TurnNotes` or a
    dict with the same keys; a sequence is taken in turn order.
    """
    notes = _notes_by_turn(transcript)
    parts = [_header(recording), "", _turn_table(recording.turns, notes)]
    latency = _latency_summary(recording.turns)
    if latency:
        parts += ["", latency]
    parts += ["", _compliance(recording)]
    return "\n".join(parts) + "\n"


def _notes_by_turn(transcript: Transcript | None) -> dict[int, TurnNotes]:
    if transcript is None:
        return {}
    items = transcript.items() if isinstance(transcript, Mapping) else enumerate(transcript)
    out = {}
    for index, value in items:
        if isinstance(value, TurnNotes):
            out[int(index)] = value
        else:
            keys = ("heard", "answered", "holding_phrase")
            out[int(index)] = TurnNotes(**{k: value.get(k) for k in keys})
    return out


def _header(rec: CallRecording) -> str:
    code = f", code {rec.close_code}" if rec.close_code is not None else ""
    reason = f" {rec.close_reason!r}" if rec.close_reason else ""
    line = (
        f"Call {rec.call_sid} (stream {rec.stream_sid}) @ {rec.sample_rate} Hz, "
        f"{rec.duration_secs:.1f} s, closed by {rec.closed_by}{code}{reason}"
    )
    if rec.connect_error:
        line += f"\nConnection failed: {rec.connect_error}"
    return line


def _turn_table(turns: Sequence[Turn], notes: Mapping[int, TurnNotes]) -> str:
    head = ("#", "caller said", "bot heard", "bot answered", "latency", "hold", "interrupted")
    rows = [head]
    for turn in turns:
        note = notes.get(turn.index, TurnNotes())
        said = turn.text or turn.label
        if turn.kind == "barge_in":
            said = f"[barge-in] {said}"
        rows.append(
            (
                str(turn.index + 1),
                _cell(said),
                _cell(note.heard),
                _cell(note.answered),
                _latency_cell(turn),
                _yes_no(note.holding_phrase),
                _interrupted_cell(turn),
            )
        )
    if len(rows) == 1:
        return "Turns: none (the caller said nothing)"
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "Turns (latency = caller end of speech -> first bot audio played)\n" + "\n".join(lines)


def _cell(text: str | None, width: int = CELL) -> str:
    """One line of at most `width` characters; '-' for nothing."""
    if not text:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def _latency_cell(turn: Turn) -> str:
    if turn.latency_secs is None:
        return "no answer"
    ms = round(turn.latency_secs * 1000)
    return f"{ms} ms" + (" (early)" if ms < 0 else "")


def _interrupted_cell(turn: Turn) -> str:
    if not turn.interrupted:
        return "no" if turn.bot_speaking_at_onset or turn.kind == "barge_in" else "-"
    clear_ms = round((turn.clear_latency_secs or 0.0) * 1000)
    heard_ms = round(turn.bot_audio_after_onset_secs * 1000)
    return f"yes: clear +{clear_ms} ms, {heard_ms} ms bot audio after onset"


def _latency_summary(turns: Sequence[Turn]) -> str:
    values = [t.latency_secs * 1000 for t in turns if t.latency_secs is not None]
    cuts = [t.clear_latency_secs * 1000 for t in turns if t.clear_latency_secs is not None]
    lines = []
    if values:
        lines.append(
            f"Latency: {len(values)} answered of {len(turns)}; "
            f"median {statistics.median(values):.0f} ms, max {max(values):.0f} ms"
        )
    if cuts:
        lines.append(
            f"Barge-in: {len(cuts)} cut; onset -> clear median {statistics.median(cuts):.0f} ms, "
            f"max {max(cuts):.0f} ms"
        )
    return "\n".join(lines)


def _compliance(rec: CallRecording) -> str:
    played = rec.bot_audio_played_secs
    cleared = sum(c.end - c.played_end for c in rec.chunks if c.cut == "clear")
    lost = sum(c.end - c.played_end for c in rec.chunks if c.cut == "close")
    rows = [
        ("messages to bot", _counts(rec.event_counts("to_bot"))),
        ("messages from bot", _counts(rec.event_counts("from_bot"))),
        ("media sizes", _size_histogram(rec.media_sizes, rec.sample_rate)),
        (
            "bot audio",
            f"{rec.bot_audio_received_secs:.2f} s received, {played:.2f} s played "
            f"({cleared:.2f} s dropped by clear, {lost:.2f} s lost at close)",
        ),
        ("max lead", f"{rec.max_lead_secs:.2f} s queued ahead of playout"),
        ("underruns", _underruns(rec)),
        ("marks", _marks(rec)),
        ("clears", f"{len(rec.clears)}"),
        ("dtmf sent", " ".join(d.digit for d in rec.dtmf) or "-"),
        ("violations", str(len(rec.violations))),
    ]
    width = max(len(name) for name, _ in rows)
    lines = ["Exotel compliance"] + [f"  {name.ljust(width)}  {value}" for name, value in rows]
    lines += [f"    {v}" for v in rec.violations[:MAX_VIOLATIONS_SHOWN]]
    if len(rec.violations) > MAX_VIOLATIONS_SHOWN:
        lines.append(f"    … and {len(rec.violations) - MAX_VIOLATIONS_SHOWN} more")
    if rec.script_warnings:
        lines.append(f"  script warnings ({len(rec.script_warnings)})")
        lines += [f"    {w}" for w in rec.script_warnings]
    return "\n".join(lines)


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{event} {n}" for event, n in counter.most_common()) or "-"


def _size_histogram(sizes: Sequence[int], rate: int) -> str:
    """'3200 B x38 (200 ms)' per distinct size; '!' marks sizes that break a chunk rule."""
    if not sizes:
        return "-"
    parts = []
    for size, n in sorted(Counter(sizes).items(), key=lambda kv: (-kv[1], kv[0])):
        flag = " !" if chunk_size_problems(size, rate) else ""
        parts.append(f"{size} B x{n} ({size / (2 * rate) * 1000:.0f} ms){flag}")
    return ", ".join(parts)


def _underruns(rec: CallRecording) -> str:
    if not rec.underruns:
        return "0"
    gaps = [u.gap_secs for u in rec.underruns]
    return f"{len(gaps)} (total {sum(gaps):.2f} s, longest {max(gaps):.2f} s)"


def _marks(rec: CallRecording) -> str:
    outcomes = Counter(m.outcome for m in rec.marks)
    if not rec.marks:
        return "0"
    detail = ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in outcomes.most_common())
    return f"{len(rec.marks)} from bot: {detail}"


# --------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------


def write_stereo_wav(recording: CallRecording, path: str | Path) -> Path:
    """Caller on the left, bot (as played) on the right, 16-bit at the call rate."""
    caller, bot = recording.caller_audio, recording.bot_audio
    n = max(len(caller), len(bot))
    stereo = np.zeros((n, 2), dtype="<i2")
    stereo[: len(caller), 0] = caller
    stereo[: len(bot), 1] = bot
    path = Path(path)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(recording.sample_rate)
        wav.writeframes(stereo.tobytes())
    return path


# --------------------------------------------------------------------------------------------
# Timeline
# --------------------------------------------------------------------------------------------

LANE_CALLER, LANE_BOT, LANE_HOLD, LANE_EVENTS = 3.0, 2.0, 1.0, 0.0
BAR = 0.6
COLORS = {
    "caller": "tab:blue",
    "bot": "tab:green",
    "dropped": "lightgray",
    "hold": "tab:orange",
    "clear": "tab:red",
    "underrun": "crimson",
    "mark_sent": "dimgray",
    "mark_echo": "tab:green",
    "dtmf": "tab:purple",
}


def write_timeline_png(
    recording: CallRecording,
    path: str | Path,
    annotations: Sequence[Annotation] | None = None,
) -> Path:
    """One time axis: who spoke when (as heard), holding phrases, clears, marks, DTMF, latency.

    Uses the Agg canvas directly (no pyplot), so it works headless and leaves no global state.
    """
    fig = Figure(figsize=(12, 4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    _draw_caller(ax, recording)
    _draw_bot(ax, recording)
    _draw_holding(ax, annotations or [])
    _draw_events(ax, recording)
    _draw_latencies(ax, recording.turns)
    _style_axes(ax, recording)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def _lane(y: float) -> tuple[float, float]:
    return (y - BAR / 2, BAR)


def _draw_caller(ax: Any, rec: CallRecording) -> None:
    spans = [(s.start, s.end - s.start) for s in rec.caller_speech]
    if spans:
        ax.broken_barh(spans, _lane(LANE_CALLER), color=COLORS["caller"], label="caller speech")
    for speech in rec.caller_speech:
        ax.text(
            (speech.start + speech.end) / 2,
            LANE_CALLER + BAR / 2 + 0.05,
            _cell(speech.label, 22),
            ha="center",
            va="bottom",
            fontsize=7,
            clip_on=True,
        )


def _draw_bot(ax: Any, rec: CallRecording) -> None:
    played = _merge([(c.start, c.played_end) for c in rec.chunks if c.played_secs > 0])
    if played:
        ax.broken_barh(
            [(a, b - a) for a, b in played],
            _lane(LANE_BOT),
            color=COLORS["bot"],
            label="bot audio (played)",
        )
    dropped = _merge([(c.played_end, c.end) for c in rec.chunks if c.cut])
    if dropped:
        ax.broken_barh(
            [(a, b - a) for a, b in dropped],
            _lane(LANE_BOT),
            facecolor=COLORS["dropped"],
            edgecolor="gray",
            hatch="//",
            label="bot audio never played (clear/close)",
        )
    if rec.underruns:
        ax.broken_barh(
            [(u.at - u.gap_secs, u.gap_secs) for u in rec.underruns],
            (LANE_BOT - BAR / 2, BAR / 3),
            color=COLORS["underrun"],
            label="underrun (gap)",
        )


def _merge(spans: Sequence[tuple[float, float]], slack: float = 0.002) -> list[tuple[float, float]]:
    """Join back-to-back chunk spans into continuous stretches."""
    merged: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1] + slack:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _draw_holding(ax: Any, annotations: Sequence[Annotation]) -> None:
    if not annotations:
        return
    ax.broken_barh(
        [(a, b - a) for a, b, _ in annotations],
        _lane(LANE_HOLD),
        color=COLORS["hold"],
        label="holding phrase",
    )
    for a, b, text in annotations:
        ax.text((a + b) / 2, LANE_HOLD, _cell(text, 22), ha="center", va="center", fontsize=7)


def _draw_events(ax: Any, rec: CallRecording) -> None:
    for i, t in enumerate(rec.clears):
        ax.axvline(t, color=COLORS["clear"], ls="--", lw=1, label="clear" if i == 0 else None)
    sent = [m.received_at for m in rec.marks]
    echoed = [m.echoed_at for m in rec.marks if m.echoed_at is not None]
    if sent:
        y = [LANE_EVENTS + 0.15] * len(sent)
        ax.plot(sent, y, "v", color=COLORS["mark_sent"], ls="", label="mark sent by bot")
    if echoed:
        y = [LANE_EVENTS - 0.15] * len(echoed)
        ax.plot(echoed, y, "^", color=COLORS["mark_echo"], ls="", label="mark echoed")
    for i, d in enumerate(rec.dtmf):
        ax.plot([d.t], [LANE_EVENTS], "s", color=COLORS["dtmf"], label="dtmf" if i == 0 else None)
        ax.text(d.t, LANE_EVENTS + 0.3, d.digit, ha="center", fontsize=8, color=COLORS["dtmf"])


def _draw_latencies(ax: Any, turns: Sequence[Turn]) -> None:
    """An arrow from each caller end of speech to the bot's first audio, labelled in ms."""
    y = (LANE_CALLER + LANE_BOT) / 2
    for turn in turns:
        if turn.latency_secs is None or turn.speech_end is None or turn.first_bot_audio is None:
            continue
        ax.annotate(
            "",
            xy=(turn.first_bot_audio, y),
            xytext=(turn.speech_end, y),
            arrowprops={"arrowstyle": "->", "color": "black", "lw": 0.8},
        )
        ax.text(
            (turn.speech_end + turn.first_bot_audio) / 2,
            y + 0.08,
            f"{turn.latency_secs * 1000:.0f} ms",
            ha="center",
            va="bottom",
            fontsize=7,
        )


def _style_axes(ax: Any, rec: CallRecording) -> None:
    ax.set_title(
        f"Call {rec.call_sid} - {rec.sample_rate} Hz - {rec.duration_secs:.1f} s - "
        f"closed by {rec.closed_by} - {len(rec.violations)} violation(s)",
        fontsize=10,
    )
    ax.set_xlabel("seconds since call start")
    ax.set_yticks([LANE_EVENTS, LANE_HOLD, LANE_BOT, LANE_CALLER])
    ax.set_yticklabels(["marks / dtmf", "holding", "bot (heard)", "caller"])
    ax.set_ylim(-0.6, 3.8)
    ax.set_xlim(0, max(rec.duration_secs, 0.1) * 1.02)
    ax.grid(axis="x", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(
            handles,
            labels,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.2),
            ncol=5,
            fontsize=8,
            frameon=False,
        )


# --------------------------------------------------------------------------------------------
# Everything at once
# --------------------------------------------------------------------------------------------


def save_report(
    recording: CallRecording,
    out_dir: str | Path,
    *,
    transcript: Transcript | None = None,
    annotations: Sequence[Annotation] | None = None,
    stem: str = "call",
) -> dict[str, Path]:
    """Write `<stem>.txt`, `.wav`, `.png` and `.json` (the recording without audio) to `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = out / f"{stem}.txt"
    text.write_text(format_report(recording, transcript), encoding="utf-8")
    data = out / f"{stem}.json"
    data.write_text(json.dumps(recording.to_dict(), indent=1, default=str), encoding="utf-8")
    return {
        "report": text,
        "wav": write_stereo_wav(recording, out / f"{stem}.wav"),
        "png": write_timeline_png(recording, out / f"{stem}.png", annotations),
        "json": data,
    }
