"""Matching a caller's words by how they sound, whatever the script (the Hindi knowledge).

Why: the offline Whisper base writes Hindi speech in Devanagari, in Urdu script or in Latin
letters, with the words half-heard ("रिफ़ंड" comes back as "ریفنز", "rifan", "रिफ़ंद"), and
Deepgram ``multi`` writes Hinglish in Latin. Spelling the keywords in every script and every
misspelling cannot keep up, so both sides are reduced to a *consonant skeleton*:

* any script is romanised (``anyascii``: Devanagari, Urdu, Latin, ...), lowercased;
* the sounds Hindi speakers and Whisper mix up are merged: aspirates with their plain
  consonant (kh/k, bh/b, ph/f/p), sh/s, w/v, z/j, q/k; an anusvara before a consonant is n;
* vowels, h and y are dropped (Urdu and Whisper's Hindi rarely agree on them), and doubled
  letters are written once: "रिफ़ंड", "refund" and "ریفنڈ" are all ``rpnd``.

Only words in a script other than Latin are read by sound (Devanagari, Urdu, ...): there
Whisper's spelling is a guess, while Latin text is Hinglish or English whose spellings the
knowledge lists, and English words differing only in vowels ("think", "thank") would match.
A keyword is heard when a word has the same skeleton (or running words, for a keyword of
several words, since Whisper splits and joins words), or, for a one-word skeleton of 5 letters
or more, one letter different (with 4, "पार्सल" ``prsl`` was heard in garbled off-topic
lines). Skeletons under 3 letters ("पता" -> ``pt``) would be found in almost any garbled
sentence ("पैसे", money, is ``ps`` like "ऑफ़िस"), so those keywords are only matched by their
exact words (bot.providers.scripted).
This is a *fallback*: it is used only when no keyword matched exactly, and a tie between two
intents is no match (weak evidence on both sides).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from anyascii import anyascii

# Shorter skeletons are never matched by sound; from FUZZY_LETTERS up, one letter may differ.
MIN_LETTERS = 3
FUZZY_LETTERS = 5
_WORD = re.compile(r"(?:[^\W_]|[\u0900-\u0963\u0966-\u097F\u064B-\u065F\u0670])+")
_ANUSVARA = re.compile("[\u0902]")  # ं: a nasal, n before most consonants ("रिफंड")
_CANDRABINDU = re.compile("[\u0901]")  # ँ: a nasal vowel, dropped ("कहाँ" ~ "kaha")
_DIGRAPHS = (("chh", "c"), ("kh", "k"), ("gh", "g"), ("ch", "c"), ("jh", "j"), ("th", "t"))
_DIGRAPHS += (("dh", "d"), ("ph", "p"), ("bh", "b"), ("sh", "s"), ("ck", "k"))
_MERGE = str.maketrans({"w": "v", "z": "j", "q": "k", "f": "p", "x": "k"})
_WEAK = re.compile(r"[aeiouhy]")
_REPEATS = re.compile(r"(.)\1+")


class _HasPatterns(Protocol):
    patterns: tuple[str, ...]


def _is_arabic(word: str) -> bool:
    return any("\u0600" <= ch <= "\u06ff" for ch in word)


def skeleton(word: str) -> str:
    """The consonant skeleton of one word, in any script (see the module docstring)."""
    latin = word.isascii()
    arabic = _is_arabic(word)
    word = _CANDRABINDU.sub("", _ANUSVARA.sub("न्", unicodedata.normalize("NFC", word)))
    text = re.sub(r"[^a-z]", "", anyascii(word).lower())
    if latin:  # English spelling: "cancel", "price", "track"
        text = re.sub(r"c(?=[eiy])", "s", text)
        text = re.sub(r"c(?!h)", "k", text)
    for pair, merged in _DIGRAPHS:
        text = text.replace(pair, merged)
    if arabic and len(text) > 1:  # و and ی inside a word are mostly long vowels (ū, ō, ī, ē)
        text = text[0] + re.sub(r"[wy]", "", text[1:])
    text = text.translate(_MERGE)
    return _REPEATS.sub(r"\1", _WEAK.sub("", text))


def words_of(text: str) -> list[str]:
    """The words of ``text`` in any script (Devanagari signs and Urdu vowel marks kept)."""
    return _WORD.findall(unicodedata.normalize("NFC", text or ""))


@dataclass(frozen=True)
class SoundKey:
    """One keyword as a skeleton: ``prefix`` for a pattern ending in ``*`` ("refund*")."""

    letters: str
    words: int
    prefix: bool = False

    @classmethod
    def of(cls, pattern: str) -> SoundKey | None:
        """The key of a pattern, or None when it is too short to be matched by sound."""
        words = words_of(pattern.rstrip("*"))
        letters = "".join(skeleton(w) for w in words)
        if len(letters) < MIN_LETTERS:
            return None
        return cls(letters, len(words), pattern.endswith("*"))

    def heard_at(self, skeletons: Sequence[str]) -> int | None:
        """Where running words of an utterance (as skeletons; "" for a word not to be read
        by sound) sound like this keyword: the index of the first of them, or None.

        A one-word keyword is looked for in single words, and may have one letter different
        (from ``FUZZY_LETTERS`` up, not a prefix keyword: "refund*" has its slack already).
        A keyword of n words is matched exactly, in n-1 to n+1 running words (Whisper joins
        and splits words): a letter of slack across short words finds it anywhere.
        """
        fuzzy = self.words == 1 and not self.prefix and len(self.letters) >= FUZZY_LETTERS
        spans = (1,) if self.words == 1 else (self.words, self.words - 1, self.words + 1)
        for start in range(len(skeletons)):
            for count in spans:
                pieces = skeletons[start : start + count]
                if len(pieces) < count or not all(pieces):
                    continue
                heard = "".join(pieces)
                if self.prefix:
                    heard = heard[: len(self.letters)]
                if heard == self.letters or (fuzzy and _one_apart(heard, self.letters)):
                    return start
        return None


def _one_apart(a: str, b: str) -> bool:
    """Levenshtein distance exactly 1 (one letter replaced, added or left out)."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    short, long = sorted((a, b), key=len)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


@functools.lru_cache(maxsize=256)
def sound_keys(patterns: tuple[str, ...]) -> tuple[tuple[str, SoundKey], ...]:
    """The patterns of an intent that are long enough to be matched by sound, with their keys."""
    keys = ((pattern, SoundKey.of(pattern)) for pattern in patterns)
    return tuple((pattern, key) for pattern, key in keys if key is not None)


def heard_by_sound(
    patterns: Sequence[tuple[str, ...]], text: str
) -> list[tuple[tuple[str, ...], int]]:
    """Per intent (``patterns[i]``): its patterns that ``text`` sounds like, and at how many
    places in ``text`` (spellings of one word heard at one place count once)."""
    skeletons = ["" if word.isascii() else skeleton(word) for word in words_of(text)]
    result = []
    for intent_patterns in patterns:
        found = [(p, key.heard_at(skeletons)) for p, key in sound_keys(intent_patterns)]
        found = [(p, at) for p, at in found if at is not None]
        result.append((tuple(p for p, _ in found), len({at for _, at in found})))
    return result


def intent_by_sound(
    intents: Sequence[_HasPatterns], text: str
) -> tuple[Any, int, tuple[str, ...]] | None:
    """The intent heard by sound at the most places in ``text``, that count and the patterns
    heard; None when none was heard, or two intents tie (weak evidence both ways)."""
    heard = heard_by_sound([intent.patterns for intent in intents], text)
    ranked = sorted(range(len(heard)), key=lambda i: -heard[i][1])
    if not ranked or not heard[ranked[0]][1]:
        return None
    if len(ranked) > 1 and heard[ranked[1]][1] == heard[ranked[0]][1]:
        return None
    best = ranked[0]
    return intents[best], heard[best][1], heard[best][0]
