"""Which language the bot answers in, turn by turn, for a call in ``auto``.

The rule (issue 23, DESIGN decision 14): the caller's first utterance that says anything about
its language decides among the allowed languages. Later the call switches only when the caller
asks ("Hindi mein baat karo", "can we speak English") or speaks two whole turns in a row in
another allowed language; one odd turn never switches. A decision is made when a user turn
has finished and holds for the next bot reply, so STT, voice, phrases and the prompt's
language line change together, between turns, never inside an utterance.

A turn's language is read from its text: the script (Devanagari, Tamil, ...) and, for Latin
script, common Hindi function words, because Deepgram's ``multi`` writes Hinglish in Latin
("mera order kab aayega"). A language the STT detected (Whisper, Sarvam, Deepgram) wins when
it comes with enough confidence. Hinglish is Hindi: it sets ``hinglish`` on the turn so the
prompt can ask for the caller's mix.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

from loguru import logger

from bot.languages.tags import LanguageError, normalise_language

# An STT's own detection is trusted from this probability up (indian-languages.md §6.4).
STT_CONFIDENCE = 0.7
# A turn counts as evidence for a language when at least this share of its clues agree...
DECISIVE_SHARE = 0.7
# ...and there are at least this many clues (words of the script, or keyword hits).
DECISIVE_CLUES = 2

# Script blocks of the target languages. Marathi shares Devanagari with Hindi; see below.
_SCRIPTS = {
    "devanagari": (0x0900, 0x097F),
    "bengali": (0x0980, 0x09FF),
    "tamil": (0x0B80, 0x0BFF),
    "telugu": (0x0C00, 0x0C7F),
    "kannada": (0x0C80, 0x0CFF),
}
_SCRIPT_LANGUAGE = {"bengali": "bn-IN", "tamil": "ta-IN", "telugu": "te-IN", "kannada": "kn-IN"}

# Hindi words in Latin script that are not also English words ("to", "me", "main", "the",
# "hi", "par" and "ho" are left out for that reason). Spelling varies, so the common ones are
# listed in their usual variants.
HINGLISH_WORDS = frozenset(
    """mera meri mere mujhe mujhko hamara hamari humein hume aap aapka aapki aapke aapko apna
    apni apne tum tumhara tumhe kya kyaa kyu kyun kyon kyunki kyonki kab kitna kitni kitne
    kahan kaha kaun kaunsa kaisa kaise kaisi hai hain hu hoon hun tha thi nahi nahin nhi
    mat kuch bahut bohot accha achha acha theek thik haan haa ji karo karna karein kariye
    kijiye karke kiya raha rahi rahe gaya gayi hoga hogi abhi bhi aur lekin magar ya mein
    ke ka ko se ki wala wali wale chahiye chahta chahti batao bataiye bolo boliye bol
    samajh sakta sakti sakte liye diya mila yeh ye woh wo yahan wahan isko usko aaj kal baat
    paisa paise rupaye jaldi dijiye milega aayega""".split()
)
# English words a Hindi speaker rarely puts in a Latin-script Hindi sentence.
ENGLISH_WORDS = frozenset(
    """the a an is are am was were i you he she we they my your our their what when where why
    how which can could would should will please to of for with and in on it this that do
    does did want need have has not no yes there here speak talk tell me""".split()
)
# Devanagari words that are Marathi, not Hindi (Hindi: है, नहीं, मुझे, क्या, आप).
MARATHI_WORDS = frozenset("आहे आहेत नाही मला काय तुम्ही आम्ही मी आणि पण होते".split())

_LATIN_WORD = re.compile(r"[a-z']+")
_INDIC_WORD = re.compile(r"[\u0900-\u0963\u0966-\u0DFF]+")


@dataclass(frozen=True)
class TurnLanguage:
    """What one finished user turn was spoken in, as far as its text (or the STT) tells."""

    language: str | None  # the full tag, or None when nothing in the turn says
    confidence: float  # the share of clues that agree (or the STT's probability)
    decisive: bool  # enough evidence to decide or switch on
    hinglish: bool = False  # Hindi with Latin-script Hindi words or English words mixed in
    source: str = "text"  # "stt", "script", "keywords" or "none"


def _indic_words(text: str) -> dict[str, list[str]]:
    """Words per Indic script; a word's script is that of its first letter."""
    words: dict[str, list[str]] = {script: [] for script in _SCRIPTS}
    for word in _INDIC_WORD.findall(text):
        code = ord(word[0])
        for script, (low, high) in _SCRIPTS.items():
            if low <= code <= high:
                words[script].append(word)
                break
    return words


def identify_language(
    text: str,
    allowed: Iterable[str],
    *,
    stt_language: str | None = None,
    stt_confidence: float | None = None,
) -> TurnLanguage:
    """The language of one turn among ``allowed`` (full tags).

    Order: an STT detection with ``stt_confidence >= STT_CONFIDENCE``; then an Indic script,
    when it has at least as many words as there are English function words (a Latin "phone
    number" inside a Devanagari sentence is still Hindi); then, for Latin script, Hindi
    function words against English ones.
    """
    allowed = tuple(allowed)
    text = unicodedata.normalize("NFC", text or "")
    latin_words = _LATIN_WORD.findall(text.lower())
    hinglish_hits = sum(word in HINGLISH_WORDS for word in latin_words)
    english_hits = sum(word in ENGLISH_WORDS for word in latin_words)
    stt = _from_stt(stt_language, stt_confidence, allowed)
    if stt is not None:
        mixed = stt == "hi-IN" and bool(latin_words)
        return TurnLanguage(stt, float(stt_confidence or 0.0), True, mixed, "stt")
    indic = _indic_words(text)
    script, words = max(indic.items(), key=lambda item: len(item[1]))
    if words and len(words) >= english_hits:
        share = len(words) / (len(words) + english_hits)
        return _by_script(script, words, share, allowed, bool(latin_words))
    return _by_keywords(hinglish_hits, english_hits, allowed)


def _from_stt(language: str | None, confidence: float | None, allowed: tuple) -> str | None:
    if not language or confidence is None or confidence < STT_CONFIDENCE:
        return None
    try:
        tag = normalise_language(language, key="STT language", allow_auto=False)
    except LanguageError:
        return None  # a language we do not serve ("ur", "ne"): let the text decide
    return tag if tag in allowed else None


def _by_script(
    script: str, words: list[str], share: float, allowed: tuple, has_latin: bool
) -> TurnLanguage:
    if script == "devanagari":
        marathi = any(word in MARATHI_WORDS for word in words)
        prefer = ("mr-IN", "hi-IN") if marathi else ("hi-IN", "mr-IN")
        language = next((tag for tag in prefer if tag in allowed), None)
    else:
        language = _SCRIPT_LANGUAGE[script] if _SCRIPT_LANGUAGE[script] in allowed else None
    if language is None:
        return TurnLanguage(None, share, False, source="script")
    decisive = share >= DECISIVE_SHARE and len(words) >= DECISIVE_CLUES
    return TurnLanguage(language, share, decisive, language == "hi-IN" and has_latin, "script")


def _by_keywords(hinglish_hits: int, english_hits: int, allowed: tuple) -> TurnLanguage:
    clues = hinglish_hits + english_hits
    if not clues or hinglish_hits == english_hits:
        return TurnLanguage(None, 0.0 if not clues else 0.5, False, source="keywords")
    language = "hi-IN" if hinglish_hits > english_hits else "en-IN"
    share = max(hinglish_hits, english_hits) / clues
    if language not in allowed:
        return TurnLanguage(None, share, False, source="keywords")
    winner = max(hinglish_hits, english_hits)
    decisive = share >= DECISIVE_SHARE and winner >= DECISIVE_CLUES
    return TurnLanguage(language, share, decisive, language == "hi-IN", "keywords")


# How callers name a language, in Latin script and in their own.
LANGUAGE_NAMES = {
    "en-IN": ("english", "angrezi", "angreji", "इंग्लिश", "अंग्रेज़ी", "अंग्रेजी"),
    "hi-IN": ("hindi", "हिंदी", "हिन्दी"),
    "ta-IN": ("tamil", "तमिल", "தமிழ்"),
    "te-IN": ("telugu", "तेलुगु", "తెలుగు"),
    "bn-IN": ("bengali", "bangla", "बंगाली", "বাংলা"),
    "mr-IN": ("marathi", "मराठी", "मराठीत"),
    "kn-IN": ("kannada", "कन्नड़", "ಕನ್ನಡ"),
}
# Words around a language's name that make it a request to use it ("Hindi mein baat karo",
# "can we speak English", "English please", "हिंदी में बोलिए"): stems match any word they
# start ("bol" in "boliye"), short words only themselves ("can" is not "cancel").
_REQUEST_STEMS = (
    "speak",
    "talk",
    "switch",
    "change",
    "reply",
    "answer",
    "continue",
    "baat",
    "bol",
    "kar",
    "kij",
    "बात",
    "बोल",
    "कीज",
    "करो",
    "करें",
    "करिए",
)
_REQUEST_WORDS = frozenset("please plz pls can could in only mein me main mai में प्लीज़ सकते".split())
# Words that turn it around: before the name ("I don't speak Hindi"; "no" is left out, as
# "no, Hindi please" asks for it) and after it ("Hindi nahi aati", "my English is not good").
_NEGATIONS_BEFORE = frozenset("don't dont not can't cant cannot नहीं".split())
_NEGATIONS_AFTER = frozenset("not nahi nahin nhi mat नहीं नही मत".split())
_ANY_WORD = re.compile(r"[a-z']+|[\u0900-\u0963\u0966-\u0DFF]+")
_CUE_WINDOW = 3  # words either side of the name


def requested_language(text: str, allowed: Iterable[str]) -> str | None:
    """The allowed language the caller asks the bot to speak, or None.

    A request is a language's name with a request cue within three words and no negation
    next to it; when several are named ("Hindi nahi, English mein bolo") the last one asked
    for wins.
    """
    words = _ANY_WORD.findall(unicodedata.normalize("NFC", text or "").lower())
    names = {
        unicodedata.normalize("NFC", name): tag
        for tag, spellings in LANGUAGE_NAMES.items()
        if tag in set(allowed)
        for name in spellings
    }
    asked = None
    for i, word in enumerate(words):
        tag = names.get(word)
        if tag is None or _negated(words, i, names):
            continue
        near = words[max(0, i - _CUE_WINDOW) : i] + words[i + 1 : i + 1 + _CUE_WINDOW]
        if len(words) <= 2 or any(_is_cue(w) for w in near):
            asked = tag
    return asked


def _is_cue(word: str) -> bool:
    return word in _REQUEST_WORDS or word.startswith(_REQUEST_STEMS)


def _negated(words: list[str], i: int, names: dict[str, str]) -> bool:
    """A negation within two words after the name, or before it up to another name."""
    if any(w in _NEGATIONS_AFTER for w in words[i + 1 : i + 3]):
        return True
    for w in reversed(words[max(0, i - 2) : i]):
        if w in names:
            return False
        if w in _NEGATIONS_BEFORE:
            return True
    return False


@dataclass(frozen=True)
class LanguageDecision:
    """After one finished user turn: the language of the next bot reply.

    ``switched`` means STT language, TTS voice, phrases and the prompt's language line must
    all change to ``language`` now, before the reply is spoken.
    """

    language: str  # for the next bot reply (and the STT from now on)
    switched: bool
    previous: str
    reason: str  # "fixed", "undecided", "first utterance", "asked", "two turns", "kept"
    turn: TurnLanguage
    hinglish: bool  # the caller mixes Hindi and English: the prompt asks for the same mix


@dataclass
class TurnRecord:
    """One user turn for the call record (``turns[].language``)."""

    index: int
    language: str  # what the caller spoke, or the call's language when the text did not say
    detected: str | None  # what identification found, None when nothing did
    reply_language: str  # the language the bot answered this turn in


@dataclass
class LanguageTracker:
    """The per-call language state machine. One per call; not shared between tasks.

    ``auto=False`` (a fixed language) never switches, but still records each turn.
    """

    language: str
    allowed: tuple[str, ...]
    auto: bool = False
    call_id: str = ""
    decided: bool = False
    hinglish: bool = False
    turns: list[TurnRecord] = field(default_factory=list)
    _streak_language: str | None = None
    _streak: int = 0

    def __post_init__(self) -> None:
        self.language = normalise_language(self.language, key="call language", allow_auto=False)
        self.decided = self.decided or not self.auto

    def user_turn(
        self,
        text: str,
        *,
        stt_language: str | None = None,
        stt_confidence: float | None = None,
    ) -> LanguageDecision:
        """Record a finished user turn and decide the language of the reply to it."""
        turn = identify_language(
            text, self.allowed, stt_language=stt_language, stt_confidence=stt_confidence
        )
        previous = self.language
        reason = self._decide(turn, requested_language(text, self.allowed) if self.auto else None)
        if turn.language == "hi-IN" and turn.decisive:
            self.hinglish = turn.hinglish
        elif turn.language is not None and turn.decisive:
            self.hinglish = False
        self.turns.append(
            TurnRecord(len(self.turns), turn.language or previous, turn.language, self.language)
        )
        switched = self.language != previous
        if switched:
            logger.info(f"call {self.call_id}: language {previous} -> {self.language} ({reason})")
        return LanguageDecision(self.language, switched, previous, reason, turn, self.hinglish)

    def _decide(self, turn: TurnLanguage, asked: str | None) -> str:
        if not self.auto:
            return "fixed"
        if asked is not None:
            self.decided, self._streak_language, self._streak = True, None, 0
            self.language = asked
            return "asked"
        if not turn.decisive or turn.language is None:
            # Says nothing about its language ("ok", "1234"): neither counts nor breaks a run.
            return "kept" if self.decided else "undecided"
        if not self.decided:
            self.decided, self.language = True, turn.language
            return "first utterance"
        if turn.language == self.language:
            self._streak_language, self._streak = None, 0
            return "kept"
        if turn.language == self._streak_language:
            self._streak += 1
        else:
            self._streak_language, self._streak = turn.language, 1
        if self._streak >= 2:
            self.language, self._streak_language, self._streak = turn.language, None, 0
            return "two turns"
        return "kept"

    def turn_languages(self) -> list[str]:
        """The language of every user turn, in order (``data.languages`` of the post-call)."""
        return [record.language for record in self.turns]
