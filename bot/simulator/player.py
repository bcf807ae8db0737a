"""What the caller heard: Exotel's playout buffer, and the turn metrics measured against it.

Both are pure (explicit call times, no I/O), so the live simulator, the report of a saved call
record and the tests all replay bot audio the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from bot.simulator.model import (
    EPSILON,
    BotUtterance,
    ChunkPlayout,
    MarkRecord,
    Turn,
    Underrun,
)


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
