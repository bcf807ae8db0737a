"""The record on disk: the stereo recording's tracks, the WAV, the JSON, and reading it back.

Files are written atomically (temp file + rename), the recording before its JSON, so a record
on disk is always complete; ids from the network never reach a path unsanitised.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import wave
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bot.observability.records.model import EPSILON

# Caller audio that stays later than the stream's own clock by more than CALLER_GAP_SECS for
# CALLER_RESYNC_SECS of audio means the stream really paused (a burst after a stall drains).
CALLER_GAP_SECS = 0.5
CALLER_RESYNC_SECS = 2.0
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass
class StereoAudio:
    """Caller (left) and bot (right) int16 tracks at ``rate`` on the call's timeline."""

    caller: np.ndarray
    bot: np.ndarray
    rate: int


def _place_caller(frames: Sequence[tuple[float, bytes, int]], rate: int) -> np.ndarray:
    """Caller audio on the stream's own clock, anchored as late as its arrivals allow.

    Exotel streams continuously (silence included), so within the stream sample count is the
    truth and arrival times only bound it: audio cannot arrive before it was spoken. Frames
    read late (buffered while the pipeline started, or in a burst after a stalled event loop)
    are therefore placed by the earliest-arriving ones: anchor = min(arrival - audio so far).
    A real gap in the stream shows as lateness that rises and stays up for CALLER_RESYNC_SECS
    (a burst drains); the track restarts there with a new anchor. 24 kHz calls are heard at
    16 kHz; the track is resampled once, at the end.
    """
    if not frames:
        return np.zeros(0, "<i2")
    in_rate = frames[0][2]
    chunks = [np.frombuffer(pcm, "<i2") for _, pcm, _ in frames]
    secs = np.array([len(c) / in_rate for c in chunks])
    ends = np.cumsum(secs)
    slack = np.array([t for t, _, _ in frames]) - ends  # the stream's start, by each frame
    anchors = np.empty_like(slack)
    for a, b in _continuous_runs(slack, float(np.median(secs)) or 0.1):
        anchors[a:b] = slack[a:b].min()
    starts = np.round((anchors + ends - secs) * in_rate).astype(int)
    track = _assemble(list(zip(starts.tolist(), chunks, strict=True)))
    if in_rate != rate:
        import soxr

        track = soxr.resample(track, in_rate, rate).astype("<i2")
    return track


def _continuous_runs(slack: np.ndarray, frame_secs: float) -> list[tuple[int, int]]:
    """Index ranges of the stream between real gaps (see ``_place_caller``)."""
    window = max(1, round(CALLER_RESYNC_SECS / frame_secs))
    padded = np.concatenate([slack, np.full(window - 1, np.inf)])
    future_min = np.lib.stride_tricks.sliding_window_view(padded, window).min(axis=1)
    runs, first, past_min = [], 0, slack[0]
    for i in range(1, len(slack)):
        if future_min[i] > past_min + CALLER_GAP_SECS:
            runs.append((first, i))
            first, past_min = i, slack[i]
        else:
            past_min = min(past_min, slack[i])
    runs.append((first, len(slack)))
    return runs


def _place_bot(
    chunks: Sequence[tuple[tuple[float, int], bytes]], clears: Sequence[float], rate: int
) -> np.ndarray:
    """Bot chunks played back to back from their arrival, as Exotel's player does; a clear
    drops every chunk that had not started playing by then."""
    pieces: list[tuple[int, np.ndarray]] = []
    queue_end = 0.0
    pending = sorted(clears)
    for (arrival, _size), pcm in chunks:
        while pending and pending[0] <= arrival:
            pending.pop(0)  # cut chunks never moved queue_end: it is the last played chunk's
        start = max(arrival, queue_end)
        if pending and start > pending[0] + EPSILON:
            continue  # cleared before it started playing
        samples = np.frombuffer(pcm, "<i2")
        pieces.append((round(start * rate), samples))
        queue_end = start + len(samples) / rate
    return _assemble(pieces)


def _assemble(pieces: Sequence[tuple[int, np.ndarray]]) -> np.ndarray:
    """One track from (start sample, samples) pieces; anything before the call start is cut."""
    end = max((at + len(s) for at, s in pieces), default=0)
    track = np.zeros(max(0, end), "<i2")
    for at, samples in pieces:
        if at < 0:
            samples, at = samples[-at:], 0
        track[at : at + len(samples)] = samples
    return track


def build_stereo(
    caller_frames: Sequence[tuple[float, bytes, int]],
    bot_chunks: Sequence[tuple[tuple[float, int], bytes]],
    clears: Sequence[float],
    *,
    rate: int,
) -> StereoAudio:
    """Both sides of the call on one timeline at the call's rate (the bot's rate)."""
    caller = _place_caller(caller_frames, rate)
    bot = _place_bot(bot_chunks, clears, rate)
    return StereoAudio(caller=caller, bot=bot, rate=rate)


def record_path(records_dir: Path, record: Mapping[str, Any]) -> Path:
    """``<dir>/<UTC date>/<call_sid>.json``; ``<call_sid>.<stream_sid>.json`` if taken.

    One folder per day keeps listings short on a busy line and makes retention a matter of
    deleting old folders; the call_sid is what the operator searches by. One call can run
    several streams (two Voicebot applets in a flow), hence the stream fallback. Ids come
    from the network, so anything outside [A-Za-z0-9_.-] is replaced (no path traversal).
    """
    day = str(record["started_at"])[:10]
    call = _safe_name(record["call_sid"]) or "unknown-call"
    folder = records_dir / day
    path = folder / f"{call}.json"
    if path.exists():
        path = folder / f"{call}.{_safe_name(record['stream_sid']) or 'stream'}.json"
    return path


def _safe_name(value: Any) -> str:
    return _UNSAFE_FILENAME.sub("_", str(value or ""))[:128].lstrip(".")


def write_record(
    record: dict[str, Any], records_dir: Path, audio: StereoAudio | None = None
) -> Path:
    """Write the recording (if any), then the JSON, each atomically (temp file + rename).

    The JSON goes last, so a record on disk always has its complete recording beside it.
    """
    path = record_path(Path(records_dir), record)
    path.parent.mkdir(parents=True, exist_ok=True)
    if audio is not None:
        wav_path = path.with_suffix(".wav")
        _atomic_write(wav_path, lambda f: _write_wav(f, audio))
        record = {**record, "audio_file": wav_path.name}
    text = json.dumps(record, indent=1, ensure_ascii=False)
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path


def _atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_wav(f: Any, audio: StereoAudio) -> None:
    n = max(len(audio.caller), len(audio.bot))
    stereo = np.zeros((n, 2), "<i2")
    stereo[: len(audio.caller), 0] = audio.caller
    stereo[: len(audio.bot), 1] = audio.bot
    with wave.open(f, "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(audio.rate)
        wav.writeframes(stereo.tobytes())


def load_record(path: Path | str) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "call_sid" not in data or "turns" not in data:
        raise ValueError(f"{path} is not a call record (no call_sid / turns)")
    return data
