"""An Exotel stand-in: places a simulated Voicebot call against a bot server and checks it.

Why this exists: there is no phone on a laptop or in CI, and Exotel's own behaviour is only
partly documented. This client plays Exotel's part of the bidirectional Voicebot protocol
(docs/exotel-protocol.md §4-§8, readings of §12) exactly: `connected`, `start`, a never-ending
real-time stream of 100 ms caller `media` frames, `dtmf`, `stop`; and it models Exotel's player
(sequential playout, underruns, `clear`, `mark` echoes) to record what a caller would really hear.

It is also our compliance checker, so it deliberately encodes the protocol rules itself and
imports nothing from `serializers/` or the bot's transport: a bug there cannot hide itself here.

Typical use::

    rec = await simulate_call(
        CallConfig(url="ws://127.0.0.1:8080/exotel/ws?sample-rate=8000"),
        [Say("hello.wav", label="greeting reply"), BargeIn("stop.wav", after_bot_start=0.8),
         Dtmf("5"), WaitForBot(), Hangup()],
    )
    assert not rec.violations
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import secrets
import time
import wave
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import numpy as np
import soxr
from loguru import logger
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

# --------------------------------------------------------------------------------------------
# Protocol rules (docs/exotel-protocol.md §3, §5, §6.3). Encoded here on purpose, see module doc.
# --------------------------------------------------------------------------------------------

SUPPORTED_RATES = (8000, 16000, 24000)
PACKET_BYTES = 320  # Exotel's player slices chunks into 320-byte packets (§6.1)
MIN_CHUNK_BYTES = 3200  # documented minimum (§6.1)
MAX_CHUNK_BYTES = 100_000  # documented maximum (§6.1)
BOT_EVENTS = frozenset({"media", "mark", "clear"})  # all a bot may send (§5)
HANDSHAKE_LIMIT_SECS = 10.0  # Exotel fails a stream whose handshake takes longer (§2.5)
EPOCH_MS_FLOOR = 10**11  # a media.timestamp above this is epoch ms, not ms since start (§13.11)
EPSILON = 1e-6  # float slack when comparing times on the call timeline

AudioSource = bytes | str | Path | np.ndarray
ClosedBy = Literal["bot", "caller", "caller_abrupt", "timeout", "not_connected"]
Cut = Literal["clear", "close"]


def frame_bytes(rate: int) -> int:
    """Bytes in one 20 ms frame of 16-bit mono PCM at `rate`."""
    return rate // 50 * 2


def chunk_step_bytes(rate: int) -> int:
    """Size step that is both a multiple of 320 B and a whole 20 ms frame (§6.3 (a)+(b))."""
    return math.lcm(PACKET_BYTES, frame_bytes(rate))


def min_chunk_bytes(rate: int) -> int:
    """Smallest legal chunk: 3200 B at 8/16 kHz, 3840 B at 24 kHz (3200 B is 66.7 ms there)."""
    step = chunk_step_bytes(rate)
    return -(-MIN_CHUNK_BYTES // step) * step


def new_sid() -> str:
    """A random id shaped like the 32-hex-char sids Exotel really sends (§4)."""
    return secrets.token_hex(16)


# --------------------------------------------------------------------------------------------
# Caller script
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Say:
    """The caller says `audio`.

    Timing, first match wins: at absolute call time `at`; else, with `after_bot`, once the bot
    has finished its current (or next) utterance and stayed quiet for `gap` seconds; else at once.
    `audio` is PCM16LE bytes / int16 array at the call rate, or a mono 16-bit WAV path (resampled
    when its rate differs). `label`/`text` only feed reports.
    """

    audio: AudioSource
    after_bot: bool = True
    gap: float = 0.5
    at: float | None = None
    label: str = ""
    text: str | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class BargeIn:
    """The caller talks over the bot, `after_bot_start` seconds after its utterance starts."""

    audio: AudioSource
    after_bot_start: float = 0.8
    label: str = ""
    text: str | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class Dtmf:
    """The caller presses a key; Exotel sends a `dtmf` event (§4.4)."""

    digit: str
    duration_ms: int = 100

    def __post_init__(self) -> None:
        if len(self.digit) != 1 or self.digit not in "0123456789*#":
            raise ValueError(f"DTMF digit must be one of 0-9 * #, got {self.digit!r}")


@dataclass(frozen=True)
class Wait:
    """Do nothing for `seconds` (the caller's line keeps streaming silence)."""

    seconds: float


@dataclass(frozen=True)
class WaitForBot:
    """Wait until the bot has finished its current (or next) utterance, plus `gap` of quiet."""

    gap: float = 0.0
    timeout: float | None = None


@dataclass(frozen=True)
class SendRaw:
    """Send an arbitrary frame as-is (str/bytes) or JSON-encoded (mapping), for bad-input tests."""

    data: str | bytes | Mapping[str, Any]


@dataclass(frozen=True)
class Hangup:
    """End the call: `stop` then a clean close; with `stop=False`, drop TCP at once (a 1006)."""

    stop: bool = True
    reason: str = "callended"


@dataclass(frozen=True)
class WaitForBotHangup:
    """Expect the bot to close the socket (bot-initiated end) within `timeout` seconds."""

    timeout: float = 10.0


Action = Say | BargeIn | Dtmf | Wait | WaitForBot | SendRaw | Hangup | WaitForBotHangup


@dataclass
class CallConfig:
    """Everything about one simulated call that is not the script.

    `sample_rate=None` takes the URL's `sample-rate` (Exotel's default 8000 when absent); a
    given rate missing from the URL is appended to it, a contradicting one is an error.
    """

    url: str
    sample_rate: int | None = None
    auth: tuple[str, str] | None = None
    stream_sid: str = field(default_factory=new_sid)
    call_sid: str = field(default_factory=new_sid)
    account_sid: str = field(default_factory=new_sid)
    from_number: str = "+919876543210"
    to_number: str = "+918047491899"
    custom_parameters: dict[str, str] = field(default_factory=dict)
    media_format: dict[str, str] | None = None  # overrides start.media_format (mismatch tests)
    chunk_secs: float = 0.1  # Exotel streams ~100 ms frames (§3)
    noise_rms: float = 0.0  # > 0: low-level line noise instead of digital zeros
    noise_seed: int = 0
    speech_rms_threshold: float = 300.0  # 10 ms windows above this RMS count as speech
    marks_after_clear: Literal["echo", "drop"] = "echo"  # §12.10: Twilio echoes, Exotel unknown
    utterance_idle_secs: float = 1.0  # a drained queue this long ends a bot utterance
    underrun_tolerance_secs: float = 0.01  # smaller gaps are scheduling noise, not underruns
    connect_timeout: float = HANDSHAKE_LIMIT_SECS
    wait_timeout: float = 30.0  # default bound for every script wait
    close_timeout: float = 3.0
    overall_timeout: float = 300.0

    def resolved_url_and_rate(self) -> tuple[str, int]:
        """The URL to dial and the call rate, after reconciling `sample_rate` with the URL."""
        parts = urlsplit(self.url)
        query = parse_qs(parts.query)
        in_url = query.get("sample-rate") or query.get("sample_rate")
        url_rate = int(in_url[0]) if in_url else None
        rate = self.sample_rate or url_rate or 8000
        if rate not in SUPPORTED_RATES:
            raise ValueError(f"sample rate must be one of {SUPPORTED_RATES}, got {rate}")
        if url_rate is not None and url_rate != rate:
            raise ValueError(f"sample_rate={rate} contradicts the URL's sample-rate={url_rate}")
        if url_rate is None and self.sample_rate is not None:
            sep = "&" if parts.query else ""
            parts = parts._replace(query=parts.query + sep + urlencode({"sample-rate": rate}))
        return urlunsplit(parts), rate


# --------------------------------------------------------------------------------------------
# What gets recorded
# --------------------------------------------------------------------------------------------


@dataclass
class MessageRecord:
    """One WebSocket frame either way; `t` is seconds since call start (monotonic)."""

    t: float
    direction: Literal["to_bot", "from_bot"]
    event: str
    size: int
    binary: bool = False


@dataclass
class ChunkPlayout:
    """One bot media chunk in Exotel's player: planned [start, end), heard until played_end."""

    index: int
    utterance: int
    arrived: float
    start: float
    end: float
    played_end: float
    nbytes: int
    cut: Cut | None = None  # "clear": dropped unplayed; "close": lost when the socket closed

    @property
    def played_secs(self) -> float:
        return max(0.0, self.played_end - self.start)


@dataclass
class BotUtterance:
    """A run of bot audio the caller heard without a boundary (mark at drain, idle, clear)."""

    index: int
    start: float
    end: float
    chunks: int = 0
    mark_names: list[str] = field(default_factory=list)
    closed_by: Literal["mark", "idle", "clear", "close"] | None = None
    closed_at: float | None = None

    @property
    def played_secs(self) -> float:
        return max(0.0, self.end - self.start)


MarkOutcome = Literal["pending", "echoed", "echoed_on_clear", "dropped_on_clear", "lost_on_close"]


@dataclass
class MarkRecord:
    """A bot `mark`: when it arrived, when its audio was due to finish, when we echoed it."""

    name: str
    received_at: float
    due_at: float
    echoed_at: float | None = None
    outcome: MarkOutcome = "pending"


@dataclass
class Underrun:
    """The bot let Exotel's buffer run dry mid-utterance: the caller heard `gap_secs` of nothing."""

    at: float
    gap_secs: float
    chunk_index: int


@dataclass
class DtmfRecord:
    t: float
    digit: str
    duration_ms: int


@dataclass
class SpeechInterval:
    """Caller speech as measured from the audio (10 ms RMS windows), on the call timeline."""

    start: float
    end: float
    label: str


@dataclass
class Turn:
    """One caller utterance and what the bot did about it.

    latency_secs: caller end of speech -> start of the first bot utterance that began after the
    caller's onset (negative = the bot started while the caller was still talking).
    interrupted: a `clear` arrived while bot audio was playing, between this onset and the next.
    bot_audio_after_onset_secs: bot audio the caller heard over themselves (talk-over).
    """

    index: int
    kind: Literal["say", "barge_in"]
    label: str
    text: str | None
    audio_start: float
    audio_end: float
    speech_start: float | None
    speech_end: float | None
    bot_speaking_at_onset: bool = False
    first_bot_audio: float | None = None
    latency_secs: float | None = None
    interrupted: bool = False
    clear_at: float | None = None
    clear_latency_secs: float | None = None
    bot_audio_after_onset_secs: float = 0.0


@dataclass
class CallRecording:
    """Everything observed on one simulated call. Times are seconds since call start.

    `caller_audio` and `bot_audio` are int16 tracks at `sample_rate` on the same timeline; the
    bot track holds what was really played (cleared or lost audio is absent).
    """

    url: str
    sample_rate: int
    stream_sid: str
    call_sid: str
    account_sid: str
    started_at: float  # wall clock (epoch seconds), for humans only
    duration_secs: float
    handshake_secs: float | None
    connect_error: str | None
    closed_by: ClosedBy
    close_code: int | None
    close_reason: str | None
    messages: list[MessageRecord]
    chunks: list[ChunkPlayout]
    utterances: list[BotUtterance]
    marks: list[MarkRecord]
    clears: list[float]
    dtmf: list[DtmfRecord]
    turns: list[Turn]
    underruns: list[Underrun]
    leads: list[tuple[float, float]]  # (arrival time, seconds queued ahead incl. the chunk)
    media_sizes: list[int]  # decoded payload bytes of every decodable bot media message
    violations: list[str]
    script_warnings: list[str]
    caller_audio: np.ndarray
    bot_audio: np.ndarray

    @property
    def max_lead_secs(self) -> float:
        return max((lead for _, lead in self.leads), default=0.0)

    @property
    def caller_speech(self) -> list[SpeechInterval]:
        return [
            SpeechInterval(t.speech_start, t.speech_end, t.label)
            for t in self.turns
            if t.speech_start is not None and t.speech_end is not None
        ]

    @property
    def bot_audio_played_secs(self) -> float:
        return sum(c.played_secs for c in self.chunks)

    @property
    def bot_audio_received_secs(self) -> float:
        return sum(c.nbytes for c in self.chunks) / (2 * self.sample_rate)

    def event_counts(self, direction: Literal["to_bot", "from_bot"]) -> Counter[str]:
        return Counter(m.event for m in self.messages if m.direction == direction)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no audio tracks), for saving next to the WAV/PNG."""
        data = {
            f.name: _plain(getattr(self, f.name))
            for f in fields(self)
            if f.name not in ("caller_audio", "bot_audio")
        }
        data["max_lead_secs"] = self.max_lead_secs
        return data


def _plain(value: Any) -> Any:
    """Dataclasses (and lists of them) as dicts; asdict on the whole recording would deep-copy
    the audio tracks only to throw them away."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return asdict(value) if is_dataclass(value) and not isinstance(value, type) else value


# --------------------------------------------------------------------------------------------
# Pure helpers: message checks, message builders, audio
# --------------------------------------------------------------------------------------------


@dataclass
class BotMessage:
    """What one frame from the bot meant, and every rule it broke."""

    event: str | None = None
    pcm: bytes | None = None
    mark_name: str | None = None
    problems: list[str] = field(default_factory=list)


def check_bot_message(frame: str | bytes, rate: int, stream_sid: str) -> BotMessage:
    """Parse and check one frame the bot sent against §5/§6.3 (never raises)."""
    out = BotMessage()
    if isinstance(frame, bytes):
        out.problems.append(f"binary frame of {len(frame)} B (Exotel takes JSON text frames only)")
        return out
    try:
        msg = json.loads(frame)
    except ValueError:
        out.problems.append(f"not valid JSON: {frame[:60]!r}")
        return out
    if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
        out.problems.append(f"not a JSON object with a string 'event': {frame[:60]!r}")
        return out
    out.event = msg["event"]
    if out.event not in BOT_EVENTS:
        out.problems.append(f"unknown event {out.event!r} (a bot may send media, mark, clear)")
        return out
    _check_stream_sid(msg, stream_sid, out)
    if out.event == "media":
        _check_media(msg, rate, out)
    elif out.event == "mark":
        mark = msg.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        if isinstance(name, str):
            out.mark_name = name
        else:
            out.problems.append("mark without a string mark.name")
    return out


def _check_stream_sid(msg: dict[str, Any], stream_sid: str, out: BotMessage) -> None:
    if "streamSid" in msg:
        out.problems.append(f"{out.event}: camelCase 'streamSid' (Exotel documents 'stream_sid')")
    if "stream_sid" in msg and msg["stream_sid"] != stream_sid:
        out.problems.append(f"{out.event}: stream_sid {msg['stream_sid']!r} is not ours")


def _check_media(msg: dict[str, Any], rate: int, out: BotMessage) -> None:
    media = msg.get("media")
    payload = media.get("payload") if isinstance(media, dict) else None
    if not isinstance(payload, str):
        out.problems.append("media without a string media.payload")
        return
    try:
        pcm = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        out.problems.append("media.payload is not valid base64")
        return
    out.problems.extend(chunk_size_problems(len(pcm), rate))
    timestamp = media.get("timestamp")
    try:
        if timestamp is not None and float(timestamp) > EPOCH_MS_FLOOR:
            out.problems.append("media.timestamp looks like epoch ms, not ms since stream start")
    except (TypeError, ValueError):
        out.problems.append(f"media.timestamp {timestamp!r} is not a number")
    out.pcm = pcm[: len(pcm) // 2 * 2]


def chunk_size_problems(nbytes: int, rate: int) -> list[str]:
    """Every §6.3 size rule a decoded media payload of `nbytes` breaks at call rate `rate`."""
    ms = nbytes / (2 * rate) * 1000
    where = f"media payload {nbytes} B ({ms:.1f} ms @{rate} Hz)"
    problems = []
    if nbytes % PACKET_BYTES:
        problems.append(f"{where} is not a multiple of {PACKET_BYTES} B")
    if nbytes % frame_bytes(rate):
        problems.append(f"{where} is not a whole number of 20 ms frames")
    if nbytes < min_chunk_bytes(rate):
        problems.append(f"{where} is below the {min_chunk_bytes(rate)} B minimum")
    if nbytes > MAX_CHUNK_BYTES:
        problems.append(f"{where} is above the {MAX_CHUNK_BYTES} B maximum")
    return problems


def start_message(config: CallConfig, rate: int, seq: str) -> dict[str, Any]:
    """Exotel's `start` event (§4.2), ids from `config`."""
    media_format = config.media_format or {
        "encoding": "audio/x-raw",
        "sample_rate": str(rate),
        "bit_rate": "16",
    }
    return {
        "event": "start",
        "sequence_number": seq,
        "stream_sid": config.stream_sid,
        "start": {
            "stream_sid": config.stream_sid,
            "call_sid": config.call_sid,
            "account_sid": config.account_sid,
            "from": config.from_number,
            "to": config.to_number,
            "custom_parameters": dict(config.custom_parameters),
            "media_format": media_format,
        },
    }


def load_audio(source: AudioSource, rate: int) -> np.ndarray:
    """Caller audio as int16 at the call rate (WAV files are resampled with soxr)."""
    if isinstance(source, np.ndarray):
        return source.astype(np.int16, copy=False)
    if isinstance(source, bytes | bytearray):
        if len(source) % 2:
            raise ValueError("PCM16 audio must have an even number of bytes")
        return np.frombuffer(bytes(source), dtype="<i2").astype(np.int16)
    with wave.open(str(source), "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
            raise ValueError(f"{source}: need mono 16-bit PCM WAV")
        src_rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16)
    if src_rate != rate:
        samples = soxr.resample(samples, src_rate, rate)
    return samples


def speech_bounds(samples: np.ndarray, rate: int, threshold: float) -> tuple[float, float] | None:
    """(onset, end) in seconds within `samples`: first/last 10 ms window with RMS > threshold."""
    win = rate // 100
    n = len(samples) // win
    if n == 0:
        return None
    frames = samples[: n * win].astype(np.float64).reshape(n, win)
    loud = np.flatnonzero(np.sqrt((frames**2).mean(axis=1)) > threshold)
    if loud.size == 0:
        return None
    return float(loud[0] * win / rate), float((loud[-1] + 1) * win / rate)


# --------------------------------------------------------------------------------------------
# Exotel's player
# --------------------------------------------------------------------------------------------


class ExotelPlayer:
    """Model of Exotel's playout buffer (§6-§8), driven by explicit call times (no I/O).

    Chunks play back to back at real time. A chunk that finds the queue dry while an utterance
    is open is an underrun. An utterance ends (a boundary) when a mark is echoed with nothing
    queued behind it, when the queue stays dry for `idle_secs`, at a `clear`, or at close.
    `clear` drops every chunk that has not started; the one playing finishes.
    """

    def __init__(
        self,
        rate: int,
        *,
        idle_secs: float = 1.0,
        underrun_tolerance: float = 0.01,
        marks_after_clear: Literal["echo", "drop"] = "echo",
    ) -> None:
        self.rate = rate
        self.idle_secs = idle_secs
        self.underrun_tolerance = underrun_tolerance
        self.marks_after_clear = marks_after_clear
        self.chunks: list[ChunkPlayout] = []
        self.utterances: list[BotUtterance] = []
        self.marks: list[MarkRecord] = []
        self.underruns: list[Underrun] = []
        self.leads: list[tuple[float, float]] = []
        self.clears: list[float] = []
        self.queue_end = 0.0  # when everything accepted so far will have played
        self.open: BotUtterance | None = None

    def closed_count(self) -> int:
        return len(self.utterances) - (0 if self.open is None else 1)

    def add_chunk(self, t: float, nbytes: int) -> ChunkPlayout:
        """Queue a chunk that arrived at `t`; returns its place in the playout."""
        dry_for = t - self.queue_end
        if self.open is None:
            self.open = BotUtterance(len(self.utterances), max(t, self.queue_end), 0.0)
            self.utterances.append(self.open)
        elif dry_for > self.underrun_tolerance:
            self.underruns.append(Underrun(t, dry_for, len(self.chunks)))
        start = max(t, self.queue_end)
        end = start + nbytes / (2 * self.rate)
        chunk = ChunkPlayout(len(self.chunks), self.open.index, t, start, end, end, nbytes)
        self.chunks.append(chunk)
        self.queue_end = end
        self.open.end = end
        self.open.chunks += 1
        self.leads.append((t, end - t))
        return chunk

    def add_mark(self, t: float, name: str) -> MarkRecord:
        """A mark is due when all audio received before it has played."""
        mark = MarkRecord(name, t, max(t, self.queue_end))
        if self.open is not None:
            self.open.mark_names.append(name)
        self.marks.append(mark)
        return mark

    def fire_mark(self, t: float, mark: MarkRecord) -> bool:
        """The mark's audio has played: echo it (True) unless a clear or close settled it."""
        if mark.outcome != "pending":
            return False
        mark.outcome, mark.echoed_at = "echoed", t
        if self.open is not None and self.queue_end <= mark.due_at + EPSILON:
            self._close_open("mark", t)
        return True

    def check_idle(self, t: float) -> bool:
        """Close the utterance if the queue has been dry for `idle_secs`; True if it did."""
        if self.open is None or t + EPSILON < self.queue_end + self.idle_secs:
            return False
        self._close_open("idle", t)
        return True

    def clear(self, t: float) -> list[MarkRecord]:
        """Apply a `clear` at `t`; returns the marks to echo now (policy "echo")."""
        self.clears.append(t)
        for chunk in self.chunks:
            if chunk.cut is None and chunk.start > t + EPSILON:
                chunk.cut, chunk.played_end = "clear", chunk.start
        self.queue_end = max((c.end for c in self.chunks if c.cut is None), default=t)
        settled = [
            m for m in self.marks if m.outcome == "pending" and m.due_at > self.queue_end + EPSILON
        ]
        for mark in settled:
            if self.marks_after_clear == "echo":
                mark.outcome, mark.echoed_at = "echoed_on_clear", t
            else:
                mark.outcome = "dropped_on_clear"
        if self.open is not None:
            self._close_open("clear", t)
        return settled if self.marks_after_clear == "echo" else []

    def close(self, t: float) -> float:
        """The socket closed at `t`: nothing more plays. Returns seconds of audio lost."""
        lost = 0.0
        for chunk in self.chunks:
            if chunk.cut is None and chunk.played_end > t + EPSILON:
                cut_at = max(chunk.start, t)
                lost += chunk.played_end - cut_at
                chunk.cut, chunk.played_end = "close", cut_at
        for mark in self.marks:
            if mark.outcome == "pending":
                mark.outcome = "lost_on_close"
        self.queue_end = min(self.queue_end, t)
        if self.open is not None:
            self._close_open("close", t)
        return lost

    def _close_open(self, how: Literal["mark", "idle", "clear", "close"], t: float) -> None:
        assert self.open is not None
        utt = self.open
        utt.closed_by, utt.closed_at = how, t
        played = [c for c in self.chunks if c.utterance == utt.index and c.played_secs > 0]
        utt.start = played[0].start if played else utt.start
        utt.end = max((c.played_end for c in played), default=utt.start)
        self.open = None


# --------------------------------------------------------------------------------------------
# Turn metrics (pure, after the call)
# --------------------------------------------------------------------------------------------


def compute_turns(
    turns: Sequence[Turn],
    utterances: Sequence[BotUtterance],
    chunks: Sequence[ChunkPlayout],
    clears: Sequence[float],
) -> list[Turn]:
    """Fill the bot-side fields of each caller turn (see `Turn` for the definitions)."""
    heard = [u for u in utterances if u.played_secs > 0]
    for i, turn in enumerate(turns):
        onset = turn.speech_start if turn.speech_start is not None else turn.audio_start
        eos = turn.speech_end if turn.speech_end is not None else turn.audio_end
        nxt = turns[i + 1] if i + 1 < len(turns) else None
        window_end = math.inf
        if nxt is not None:
            window_end = nxt.speech_start if nxt.speech_start is not None else nxt.audio_start
        at_onset = next((u for u in heard if u.start <= onset < u.end), None)
        turn.bot_speaking_at_onset = at_onset is not None
        turn.clear_at = next(
            (c for c in clears if onset <= c < window_end and _playing(heard, c)), None
        )
        turn.interrupted = turn.clear_at is not None
        if turn.clear_at is not None:
            turn.clear_latency_secs = turn.clear_at - onset
        response = next(
            (
                u
                for u in heard
                if onset < u.start < window_end
                and u is not at_onset
                and not (u.closed_by == "clear" and (u.closed_at or 0.0) <= eos)
            ),
            None,
        )
        if response is not None:
            turn.first_bot_audio = response.start
            turn.latency_secs = response.start - eos
        talk_over_end = response.start if response else window_end
        turn.bot_audio_after_onset_secs = sum(
            max(0.0, min(c.played_end, talk_over_end) - max(c.start, onset)) for c in chunks
        )
    return list(turns)


def _playing(utterances: Sequence[BotUtterance], t: float) -> bool:
    return any(u.start <= t < u.end for u in utterances)


# --------------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------------


@dataclass
class _Segment:
    """Caller audio placed on the timeline, waiting to be streamed."""

    start: int  # sample index
    samples: np.ndarray
    done: bool = False

    @property
    def end(self) -> int:
        return self.start + len(self.samples)


class ExotelSimulator:
    """One simulated Exotel call. Single use: `rec = await ExotelSimulator(config).run(script)`."""

    def __init__(self, config: CallConfig) -> None:
        self.config = config
        self.url, self.rate = config.resolved_url_and_rate()
        self.player = ExotelPlayer(
            self.rate,
            idle_secs=config.utterance_idle_secs,
            underrun_tolerance=config.underrun_tolerance_secs,
            marks_after_clear=config.marks_after_clear,
        )
        self._ws: ClientConnection | None = None
        self._loop: asyncio.AbstractEventLoop  # set by run(): the simulator lives on one loop
        self._t0 = 0.0
        self._seq = 0
        self._send_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._closed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pacer: asyncio.Task[None] | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._rng = np.random.default_rng(config.noise_seed)
        self._segments: list[_Segment] = []
        self._caller_chunks: list[np.ndarray] = []
        self._next_sample = 0
        self._last_speech_end = 0.0
        self._bot_pcm: dict[int, bytes] = {}
        self._hangup: ClosedBy | None = None
        self._hangup_at: float | None = None
        self._closed_at: float | None = None
        self._handshake_secs: float | None = None
        self._connect_error: str | None = None
        self._started_at = time.time()
        self.messages: list[MessageRecord] = []
        self.dtmf: list[DtmfRecord] = []
        self.media_sizes: list[int] = []
        self.turns: list[Turn] = []
        self.violations: list[str] = []
        self.warnings: list[str] = []

    # ---- public --------------------------------------------------------------------------

    def now(self) -> float:
        """Seconds since call start on the loop's monotonic clock."""
        return self._loop.time() - self._t0

    async def run(self, script: Sequence[Action]) -> CallRecording:
        """Place the call, play `script`, hang up if nobody did, and return what happened."""
        clips = {id(a): load_audio(a.audio, self.rate) for a in script if _speaks(a)}
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()
        try:
            async with asyncio.timeout(self.config.overall_timeout):
                if await self._connect():
                    await self._converse(script, clips)
        except TimeoutError:
            self._warn(f"overall timeout of {self.config.overall_timeout:g} s; call aborted")
            self._drop_line("timeout")
        finally:
            await self._cleanup()
        return self._build_recording()

    # ---- connection ----------------------------------------------------------------------

    async def _connect(self) -> bool:
        headers = {}
        if self.config.auth is not None:
            token = base64.b64encode(":".join(self.config.auth).encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        began = self._loop.time()
        try:
            self._ws = await connect(
                self.url,
                additional_headers=headers,
                open_timeout=self.config.connect_timeout,
                close_timeout=self.config.close_timeout,
                ping_interval=None,
                compression=None,
                max_size=2**24,
            )
        except InvalidStatus as exc:
            self._connect_error = f"HTTP {exc.response.status_code}"
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            self._connect_error = f"{type(exc).__name__}: {exc}"
        self._handshake_secs = self._loop.time() - began
        self._t0 = self._loop.time()
        if self._ws is None:
            logger.info("simulator: connection to {} failed: {}", self.url, self._connect_error)
            self._hangup = "not_connected"
            self._closed.set()
            return False
        if self._handshake_secs > HANDSHAKE_LIMIT_SECS:
            self._violation(f"handshake took {self._handshake_secs:.1f} s (Exotel allows 10 s)")
        logger.info("simulator: call {} connected to {}", self.config.call_sid, self.url)
        return True

    async def _converse(self, script: Sequence[Action], clips: dict[int, np.ndarray]) -> None:
        await self._send({"event": "connected"}, "connected")
        await self._send(start_message(self.config, self.rate, self._next_seq()), "start")
        self._receiver = asyncio.create_task(self._receive())
        self._pacer = asyncio.create_task(self._pace_media())
        await self._run_script(script, clips)
        if not self._closed.is_set():
            await self._end_call(Hangup())

    async def _cleanup(self) -> None:
        """Stop everything we started; bounded, so a stuck bot cannot hang the caller."""
        if not self._closed.is_set():
            self._drop_line(self._hangup or "timeout")
        pending = [t for t in (self._pacer, self._receiver, *self._tasks) if t and not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=self.config.close_timeout)

    def _drop_line(self, why: ClosedBy) -> None:
        """Drop TCP without a close frame (what the bot sees as 1006)."""
        if self._hangup is None:
            self._hangup, self._hangup_at = why, self.now()
        if self._ws is not None and self._ws.transport is not None:
            self._ws.transport.abort()
        self._on_closed()

    # ---- outbound ------------------------------------------------------------------------

    def _next_seq(self) -> str:
        self._seq += 1
        return str(self._seq)

    async def _send_event(self, event: str, body: dict[str, Any]) -> bool:
        """Send an Exotel event with the next sequence number (a string, as DEV-WSP shows)."""
        async with self._send_lock:
            msg = {"event": event, "sequence_number": self._next_seq(), **body}
            return await self._send_locked(json.dumps(msg), event)

    async def _send(self, msg: Mapping[str, Any] | str | bytes, event: str) -> bool:
        async with self._send_lock:
            data = msg if isinstance(msg, str | bytes) else json.dumps(dict(msg))
            return await self._send_locked(data, event)

    async def _send_locked(self, data: str | bytes, event: str) -> bool:
        if self._ws is None or self._closed.is_set():
            return False
        try:
            await self._ws.send(data)
        except ConnectionClosed:
            return False
        size = len(data) if isinstance(data, bytes) else len(data.encode())
        self.messages.append(
            MessageRecord(self.now(), "to_bot", event, size, isinstance(data, bytes))
        )
        return True

    async def _pace_media(self) -> None:
        """Stream caller audio on an absolute 100 ms schedule, forever, like a phone line.

        Chunk n covers [(n-1)*T, n*T) and is sent at n*T with timestamp n*T ms (it exists
        only once it has been spoken), so catching up after a stall never drifts.
        """
        step = self.config.chunk_secs
        per_chunk = round(self.rate * step)
        n = 0
        while not self._closed.is_set():
            n += 1
            await asyncio.sleep(max(0.0, self._t0 + n * step - self._loop.time()))
            pcm = self._render_caller(per_chunk)
            media = {
                "chunk": str(n),
                "timestamp": str(round(n * step * 1000)),
                "payload": base64.b64encode(pcm.astype("<i2").tobytes()).decode(),
            }
            if not await self._send_event(
                "media", {"stream_sid": self.config.stream_sid, "media": media}
            ):
                return

    def _render_caller(self, count: int) -> np.ndarray:
        """The next `count` samples of the line: noise or zeros plus any caller speech."""
        a, b = self._next_sample, self._next_sample + count
        if self.config.noise_rms > 0:
            buf = self._rng.normal(0.0, self.config.noise_rms, count)
        else:
            buf = np.zeros(count)
        for seg in self._segments:
            lo, hi = max(a, seg.start), min(b, seg.end)
            if lo < hi:
                buf[lo - a : hi - a] += seg.samples[lo - seg.start : hi - seg.start]
        pcm = np.clip(np.round(buf), -32768, 32767).astype(np.int16)
        self._caller_chunks.append(pcm)
        self._next_sample = b
        finished = [s for s in self._segments if s.end <= b]
        for seg in finished:
            seg.done = True
            self._segments.remove(seg)
        if finished:
            self._notify()
        return pcm

    # ---- inbound -------------------------------------------------------------------------

    async def _receive(self) -> None:
        assert self._ws is not None
        try:
            async for frame in self._ws:
                self._on_frame(frame)
        except ConnectionClosed:
            pass
        finally:
            self._on_closed()

    def _on_frame(self, frame: str | bytes) -> None:
        t = self.now()
        checked = check_bot_message(frame, self.rate, self.config.stream_sid)
        size = len(frame) if isinstance(frame, bytes) else len(frame.encode())
        event = checked.event or ("binary" if isinstance(frame, bytes) else "invalid")
        self.messages.append(MessageRecord(t, "from_bot", event, size, isinstance(frame, bytes)))
        for problem in checked.problems:
            self._violation(problem, t)
        if self._hangup is not None:
            return  # the line is gone; nothing the bot sends now is played
        if checked.pcm is not None:
            self.media_sizes.append(len(checked.pcm))
            if checked.pcm:
                self._on_media(t, checked.pcm)
        elif checked.mark_name is not None:
            mark = self.player.add_mark(t, checked.mark_name)
            self._loop.call_at(self._t0 + mark.due_at, self._fire_mark, mark)
        elif checked.event == "clear":
            for mark in self.player.clear(t):
                self._spawn(self._echo_mark(mark.name))
            self._notify()

    def _on_media(self, t: float, pcm: bytes) -> None:
        chunk = self.player.add_chunk(t, len(pcm))
        self._bot_pcm[chunk.index] = pcm
        self._loop.call_at(self._t0 + chunk.end, self._notify)  # may be the drain waiters want
        self._loop.call_at(self._t0 + chunk.end + self.player.idle_secs, self._check_idle)
        self._notify()

    def _fire_mark(self, mark: MarkRecord) -> None:
        if self._hangup is None and self.player.fire_mark(self.now(), mark):
            self._spawn(self._echo_mark(mark.name))
            self._notify()

    def _check_idle(self) -> None:
        if self._hangup is None and self.player.check_idle(self.now()):
            self._notify()

    async def _echo_mark(self, name: str) -> None:
        body = {"stream_sid": self.config.stream_sid, "mark": {"name": name}}
        await self._send_event("mark", body)

    def _on_closed(self) -> None:
        """Runs once, whoever closed: settle the player and record who ended the call."""
        if self._closed.is_set():
            return
        t = self.now()
        self._closed_at = t
        lost = self.player.close(self._hangup_at if self._hangup_at is not None else t)
        if self._hangup is None:
            self._hangup = "bot"
            if lost > 0.02:
                self._violation(
                    f"bot closed the socket with {lost:.2f} s of its audio unplayed "
                    "(send a mark and wait for its echo before closing, §7)",
                    t,
                )
        self._closed.set()
        self._notify()
        logger.info("simulator: call ended by {} at {:.2f} s", self._hangup, t)

    # ---- the script ----------------------------------------------------------------------

    async def _run_script(self, script: Sequence[Action], clips: dict[int, np.ndarray]) -> None:
        for i, action in enumerate(script):
            if self._closed.is_set():
                self._warn_skipped(script[i:])
                return
            await self._perform(action, clips.get(id(action)))

    def _warn_skipped(self, rest: Sequence[Action]) -> None:
        skipped = [
            type(a).__name__ for a in rest if not isinstance(a, Hangup | WaitForBotHangup | Wait)
        ]
        if skipped:
            self._warn(f"call already closed by {self._hangup}; not performed: {skipped}")

    async def _perform(self, action: Action, clip: np.ndarray | None) -> None:
        match action:
            case Say() | BargeIn():
                assert clip is not None
                await self._speak(action, clip)
            case Dtmf(digit=digit, duration_ms=ms):
                body = {
                    "stream_sid": self.config.stream_sid,
                    "dtmf": {"digit": digit, "duration": str(ms)},
                }
                if await self._send_event("dtmf", body):
                    self.dtmf.append(DtmfRecord(self.now(), digit, ms))
            case Wait(seconds=seconds):
                await self._wait_until(self._closed.is_set, seconds)
            case WaitForBot(gap=gap, timeout=timeout):
                await self._bot_done_time(gap, self._timeout(timeout), "WaitForBot")
            case SendRaw(data=data):
                await self._send(data, _raw_event_name(data))
            case Hangup():
                await self._end_call(action)
            case WaitForBotHangup(timeout=timeout):
                if not await self._wait_until(self._closed.is_set, timeout):
                    self._warn(f"bot did not hang up within {timeout:g} s")

    def _timeout(self, timeout: float | None) -> float:
        return self.config.wait_timeout if timeout is None else timeout

    async def _speak(self, action: Say | BargeIn, clip: np.ndarray) -> None:
        timeout = self._timeout(action.timeout)
        what = f"{type(action).__name__} {action.label!r}"
        if isinstance(action, BargeIn):
            target = await self._barge_in_time(action.after_bot_start, timeout, what)
        elif action.at is not None:
            target = action.at
        elif action.after_bot:
            target = await self._bot_done_time(action.gap, timeout, what)
        else:
            target = self.now()
        seg = self._place(clip, target, action)
        remaining = seg.end / self.rate - self.now() + 2.0
        await self._wait_until(lambda: seg.done, remaining)

    def _place(self, clip: np.ndarray, target: float, action: Say | BargeIn) -> _Segment:
        """Put `clip` on the caller timeline at `target` (or the next unsent sample)."""
        seg = _Segment(max(self._next_sample, round(target * self.rate)), clip)
        self._segments.append(seg)
        start, end = seg.start / self.rate, seg.end / self.rate
        bounds = speech_bounds(clip, self.rate, self.config.speech_rms_threshold)
        if bounds is None:
            self._warn(f"{action.label or 'caller audio'!r} has no speech above the RMS threshold")
        speech = (start + bounds[0], start + bounds[1]) if bounds else (None, None)
        kind: Literal["say", "barge_in"] = "barge_in" if isinstance(action, BargeIn) else "say"
        label = action.label or action.text or f"turn {len(self.turns) + 1}"
        self.turns.append(Turn(len(self.turns), kind, label, action.text, start, end, *speech))
        self._last_speech_end = speech[1] if speech[1] is not None else end
        logger.debug("simulator: caller {} {!r} at {:.2f}-{:.2f} s", kind, label, start, end)
        return seg

    async def _bot_done_time(self, gap: float, timeout: float, what: str) -> float:
        """When the bot's current (or next) utterance finished playing + `gap` of quiet.

        Finished = Exotel's queue drained (a mark at the end is echoed at that very moment), so
        bots without marks work too. If more audio arrives within the gap, keep waiting.
        """
        deadline = self._loop.time() + timeout
        first = self.player.closed_count()  # the utterance playing now, or the next one
        while True:
            done = await self._wait_until(
                lambda: self._bot_finished(first), deadline - self._loop.time()
            )
            if not done:
                if not self._closed.is_set():
                    self._warn(f"{what}: bot still not finished after {timeout:g} s")
                return self.now()
            heard = len(self.player.chunks)
            target = self.player.queue_end + gap
            more = lambda n=heard: len(self.player.chunks) > n  # noqa: E731
            await self._wait_until(more, target - self.now())
            if len(self.player.chunks) == heard:
                return max(target, self.now())

    def _bot_finished(self, first: int) -> bool:
        """Queue drained after an utterance that was playing when we began waiting, came later,
        or answered the caller's last speech."""
        if not self.player.utterances or self.player.queue_end > self.now() + EPSILON:
            return False
        last = self.player.utterances[-1]
        return last.index >= first or last.start >= self._last_speech_end

    def _bot_speaking(self) -> bool:
        return self.player.open is not None and self.player.queue_end > self.now()

    async def _barge_in_time(self, after: float, timeout: float, what: str) -> float:
        """`after` seconds into the utterance playing now (or the next one to start)."""
        if not await self._wait_until(self._bot_speaking, timeout):
            if not self._closed.is_set():
                self._warn(f"{what}: bot did not start speaking within {timeout:g} s")
            return self.now()
        assert self.player.open is not None
        return self.player.open.start + after

    async def _end_call(self, action: Hangup) -> None:
        """Caller hangs up: `stop` + clean close, or drop TCP (no stop, no close frame)."""
        if self._closed.is_set():
            return
        self._hangup, self._hangup_at = ("caller" if action.stop else "caller_abrupt"), self.now()
        if self._pacer is not None:
            self._pacer.cancel()
        if not action.stop:
            self._drop_line("caller_abrupt")
            return
        stop = {
            "call_sid": self.config.call_sid,
            "account_sid": self.config.account_sid,
            "reason": action.reason,
        }
        await self._send_event("stop", {"stream_sid": self.config.stream_sid, "stop": stop})
        assert self._ws is not None
        await self._ws.close()
        await self._wait_until(self._closed.is_set, self.config.close_timeout)

    # ---- plumbing ------------------------------------------------------------------------

    def _notify(self) -> None:
        """Wake every waiter so it re-checks its condition."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until `predicate()` holds; False on timeout or when the call closes first."""
        deadline = self._loop.time() + max(0.0, timeout)
        while not predicate():
            remaining = deadline - self._loop.time()
            if remaining <= 0 or self._closed.is_set():
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return predicate()
        return True

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _violation(self, problem: str, t: float | None = None) -> None:
        text = f"[{self.now() if t is None else t:6.2f} s] {problem}"
        self.violations.append(text)
        logger.warning("simulator: violation {}", text)

    def _warn(self, text: str) -> None:
        self.warnings.append(f"[{self.now():6.2f} s] {text}")
        logger.warning("simulator: {}", text)

    # ---- result --------------------------------------------------------------------------

    def _build_recording(self) -> CallRecording:
        end = self._closed_at if self._closed_at is not None else self.now()
        caller = (
            np.concatenate(self._caller_chunks) if self._caller_chunks else np.zeros(0, np.int16)
        )
        ws = self._ws
        return CallRecording(
            url=self.url,
            sample_rate=self.rate,
            stream_sid=self.config.stream_sid,
            call_sid=self.config.call_sid,
            account_sid=self.config.account_sid,
            started_at=self._started_at,
            duration_secs=end,
            handshake_secs=self._handshake_secs,
            connect_error=self._connect_error,
            closed_by=self._hangup or "timeout",
            close_code=ws.close_code if ws is not None else None,
            close_reason=ws.close_reason if ws is not None else None,
            messages=self.messages,
            chunks=self.player.chunks,
            utterances=self.player.utterances,
            marks=self.player.marks,
            clears=self.player.clears,
            dtmf=self.dtmf,
            turns=compute_turns(
                self.turns, self.player.utterances, self.player.chunks, self.player.clears
            ),
            underruns=self.player.underruns,
            leads=self.player.leads,
            media_sizes=self.media_sizes,
            violations=self.violations,
            script_warnings=self.warnings,
            caller_audio=caller,
            bot_audio=self._bot_track(max(end, len(caller) / self.rate)),
        )

    def _bot_track(self, duration: float) -> np.ndarray:
        """The bot's audio as the caller heard it, placed on the call timeline."""
        last = max((c.played_end for c in self.player.chunks), default=0.0)
        track = np.zeros(round(max(duration, last) * self.rate), np.int16)
        for chunk in self.player.chunks:
            n = round(chunk.played_secs * self.rate)
            if n <= 0:
                continue
            at = min(round(chunk.start * self.rate), len(track))
            samples = np.frombuffer(self._bot_pcm[chunk.index], dtype="<i2")[:n]
            track[at : at + len(samples)] = samples[: len(track) - at]
        return track


def _speaks(action: Action) -> bool:
    return isinstance(action, Say | BargeIn)


def _raw_event_name(data: str | bytes | Mapping[str, Any]) -> str:
    if isinstance(data, Mapping):
        return f"raw:{data.get('event', '?')}"
    return "raw:binary" if isinstance(data, bytes) else "raw:text"


async def simulate_call(config: CallConfig | str, script: Sequence[Action]) -> CallRecording:
    """Convenience: place one call (`config` may be just the URL) and return its recording."""
    if isinstance(config, str):
        config = CallConfig(url=config)
    return await ExotelSimulator(config).run(script)
