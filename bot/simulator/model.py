"""What a simulated call records: every message, chunk, utterance, mark and caller turn.

``CallRecording`` is the result of one call (``bot.simulator.client.ExotelSimulator.run``);
``bot.simulator.report`` draws it, and ``bot.simulator.from_record`` builds one from a server's
call record. Times are seconds since the call started.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Literal

import numpy as np

EPSILON = 1e-6  # float slack when comparing times on the call timeline

ClosedBy = Literal["bot", "caller", "caller_abrupt", "timeout", "not_connected"]
Cut = Literal["clear", "close"]


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
