"""Who answered an outbound call: a person, a carrier announcement, voicemail or an IVR.

Exotel's answering-machine detection does not cover flow or Voicebot calls, so the bot decides
from the first transcripts (agent-capabilities.md §2.5). Rules are plain phrase patterns in
English, Hindi (Devanagari) and romanised Hindi; machine phrases are checked before human ones
because announcements never say "hello" but people may say "busy".

:class:`AnswerDetector` is the per-call state machine the outbound pipeline drives: it holds
the bot's greeting until the callee says something human or stays silent for a moment, and
gives its verdict within ``decide_within_secs`` (8 s) of the stream's ``start``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

AnswerKind = Literal["human", "unreachable", "busy", "voicemail", "ivr", "unknown"]
MACHINE_KINDS: frozenset[str] = frozenset({"unreachable", "busy", "voicemail", "ivr"})


def _rx(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns))


# Devanagari words are matched as substrings (\b does not treat matras as word characters);
# both spellings of पहुँच (chandrabindu / anusvara) are listed.
_RULES: tuple[tuple[AnswerKind, re.Pattern[str]], ...] = (
    (
        "unreachable",
        _rx(
            r"switched off",
            r"not reachable",
            r"out of (?:the )?coverage",
            r"unreachable",
            r"does not exist",
            r"not in service",
            r"(?:is|are) barred",
            r"temporarily out of service",
            r"बंद है",
            r"बन्द है",
            r"पहुँच से बाहर",
            r"पहुंच से बाहर",
            r"क्षेत्र से बाहर",
            r"\bband hai\b",
            r"pahu(?:n|nch|ch) se bahar",
            r"kshetra se bahar",
        ),
    ),
    (
        "busy",
        _rx(
            r"\bis busy\b",
            r"busy on another call",
            r"on another call",
            r"call after some time",
            r"व्यस्त",
            r"\bvyast\b",
        ),
    ),
    (
        "voicemail",
        _rx(
            r"record your message",
            r"after the (?:tone|beep)",
            r"leave (?:a|your) message",
            r"voice ?mail",
            r"mailbox",
            r"not available to take your call",
            r"\[beep\]",
            r"बीप के बाद",
            r"संदेश रिकॉर्ड",
            r"मैसेज रिकॉर्ड",
        ),
    ),
    (
        "ivr",
        _rx(
            r"\bpress (?:\d|one|two|three|zero|star|hash)\b",
            r"\bdial (?:\d|one|two) for\b",
            r"\bfor \w+,? press\b",
            r"दबाएं",
            r"दबाएँ",
            r"\bdabaye\b",
        ),
    ),
    (
        "human",
        _rx(
            r"\bhel+o\b",
            r"\bhal+o\b",
            r"\bhi\b",
            r"\bhaa?n\b",
            r"\bhaan ?ji\b",
            r"\bji\b",
            r"\bbolo\b",
            r"\bboliye\b",
            r"\byes\b",
            r"\bspeaking\b",
            r"\bnamaste\b",
            r"\bkaun\b",
            r"हेलो",
            r"हैलो",
            r"हलो",
            r"हाँ",
            r"हां",
            r"बोलो",
            r"बोलिए",
            r"नमस्ते",
            r"जी",
            r"कौन",
        ),
    ),
)

_OPT_OUT = _rx(
    r"\bdo ?n[o']?t call\b",
    r"\bdo not call\b",
    r"\bstop calling\b",
    r"\bnever call\b",
    r"\bremove my number\b",
    r"\bunsubscribe\b",
    r"\bdon'?t (?:ever )?call me\b",
    r"दोबारा कॉल मत",
    r"कॉल मत करना",
    r"कॉल मत करो",
    r"फोन मत करना",
    r"फ़ोन मत करना",
    r"\bcall mat kar(?:na|o|ein|en)\b",
    r"\bphone mat kar(?:na|o)\b",
    r"\bdobara call mat\b",
)


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFC", text).lower()
    return re.sub(r"\s+", " ", text.replace("’", "'")).strip()


def classify_answer(transcript: str) -> AnswerKind:
    """The kind of answerer ``transcript`` (the first seconds of the callee side) suggests."""
    text = _normalise(transcript)
    if not text:
        return "unknown"
    for kind, pattern in _RULES:
        if pattern.search(text):
            return kind
    return "unknown"


def is_opt_out(text: str) -> bool:
    """Whether the callee asked not to be called again."""
    return bool(_OPT_OUT.search(_normalise(text)))


@dataclass(frozen=True)
class AnswerDecision:
    """What the bot should do now.

    ``greet``: start speaking (a person said hello, or the line stayed quiet). ``end_call``:
    hang up with ``outcome`` (``unreachable``/``busy``/``voicemail``/``ivr``). ``final``: the
    detector will not change its mind again.
    """

    kind: AnswerKind
    greet: bool
    end_call: bool
    final: bool

    @property
    def outcome(self) -> str:
        return self.kind if self.end_call else "completed"


class AnswerDetector:
    """Per-call decision over the first seconds of an outbound stream.

    Feed it ``on_transcript`` (final STT segments), ``on_speech_start``/``on_speech_stop`` (VAD),
    ``on_beep`` and ``tick`` with times in seconds since the stream's ``start``. It returns a
    decision whenever it changes. Greeting happens once (on a human phrase, or after
    ``silence_secs`` with nobody speaking); machine phrases end the call until
    ``decide_within_secs``, even after a greeting, because announcements may follow a pause.
    """

    def __init__(self, *, decide_within_secs: float = 8.0, silence_secs: float = 1.5) -> None:
        self.decide_within_secs = decide_within_secs
        self.silence_secs = silence_secs
        self.heard: list[str] = []
        self.decision: AnswerDecision | None = None
        self._greeted = False
        self._speaking = False
        self._quiet_since = 0.0

    @property
    def greeted(self) -> bool:
        return self._greeted

    def on_speech_start(self, t: float) -> AnswerDecision | None:
        self._speaking = True
        return self.tick(t)

    def on_speech_stop(self, t: float) -> AnswerDecision | None:
        self._speaking = False
        self._quiet_since = t
        return self.tick(t)

    def on_beep(self, t: float) -> AnswerDecision | None:
        """A voicemail beep (a steady tone) was heard."""
        return self.on_transcript("[beep]", t)

    def on_transcript(self, text: str, t: float) -> AnswerDecision | None:
        if self._is_final or t > self.decide_within_secs:
            return self.tick(t)
        self.heard.append(text)
        kind = classify_answer(" ".join(self.heard))
        if kind in MACHINE_KINDS:
            return self._decide(AnswerDecision(kind, greet=False, end_call=True, final=True))
        if kind == "human" and not self._greeted:
            self._greeted = True
            return self._decide(AnswerDecision("human", greet=True, end_call=False, final=False))
        return self.tick(t)

    def tick(self, t: float) -> AnswerDecision | None:
        """Advance time: greet after a silence, settle the verdict at ``decide_within_secs``."""
        if self._is_final:
            return None
        if t >= self.decide_within_secs:
            kind: AnswerKind = "human" if self._greeted else "unknown"
            greet_now, self._greeted = not self._greeted, True
            return self._decide(AnswerDecision(kind, greet=greet_now, end_call=False, final=True))
        if not self._greeted and not self._speaking and t - self._quiet_since >= self.silence_secs:
            self._greeted = True
            return self._decide(AnswerDecision("unknown", greet=True, end_call=False, final=False))
        return None

    @property
    def _is_final(self) -> bool:
        return self.decision is not None and self.decision.final

    def _decide(self, decision: AnswerDecision) -> AnswerDecision:
        self.decision = decision
        return decision
