"""How the scripted responder reads words: what the caller said and every pattern are
normalized the same way (bot.providers.scripted, "Matching", says it in plain words)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

__all__ = ["contains", "normalize", "pattern_words"]

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SYMBOLS = {"₹": " rupees ", "%": " percent ", "&": " and ", "@": " at ", "+": " plus "}
_APOSTROPHES = re.compile(r"['\u2019\u02bc`]")
_DIGIT_GROUPING = re.compile(r"(?<=\d),(?=\d{3}\b)")
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")
_DIGIT_LETTER = re.compile(r"(?<=\d)(?=[^\W\d_])|(?<=[^\W\d_])(?=\d)")
# Devanagari vowel signs and virama are not word characters to ``re``; without them a Hindi
# word would fall apart at each matra ("मेरा" -> "म", "र").
_WORD_CHAR = r"(?:[^\W_]|[\u0900-\u0963\u0966-\u097F])"
_TEXT_TOKEN = re.compile(rf"{_WORD_CHAR}+")
_PATTERN_TOKEN = re.compile(rf"{_WORD_CHAR}+\*?")


def _number_words(digits: str) -> list[str]:
    """Spell a digit string: 0-999 as a number ("twenty four"), anything else digit by digit.

    Why: Whisper writes "24", "twenty-four" or "twenty four" for the same words, and long
    numbers (phone, order ids) are read out digit by digit by callers anyway.
    """
    if len(digits) > 3 or (len(digits) > 1 and digits.startswith("0")):
        return [_ONES[int(d)] for d in digits]
    n = int(digits)
    words: list[str] = []
    if n >= 100:
        words += [_ONES[n // 100], "hundred"]
        n %= 100
        if n == 0:
            return words
    if n < 20:
        return words + [_ONES[n]]
    words.append(_TENS[n // 10])
    if n % 10:
        words.append(_ONES[n % 10])
    return words


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = _APOSTROPHES.sub("", text)
    for symbol, word in _SYMBOLS.items():
        text = text.replace(symbol, word)
    text = _DIGIT_GROUPING.sub("", text)
    text = _DECIMAL_POINT.sub(" point ", text)
    return _DIGIT_LETTER.sub(" ", text)


def _tokens(text: str, token_re: re.Pattern[str]) -> list[str]:
    words: list[str] = []
    for token in token_re.findall(_clean(text)):
        if token.isdigit() and token.isascii():
            words += _number_words(token)
        else:
            words.append(token)
    return words


def normalize(text: str) -> list[str]:
    """The words of ``text`` as the matcher sees them (see the module docstring)."""
    return _tokens(text, _TEXT_TOKEN)


def pattern_words(pattern: str) -> tuple[str, ...]:
    """Like :func:`normalize`, but keeps a trailing ``*`` (prefix match) on a word."""
    return tuple(_tokens(pattern, _PATTERN_TOKEN))


def _word_matches(pattern_word: str, word: str) -> bool:
    if pattern_word.endswith("*"):
        return word.startswith(pattern_word[:-1])
    return word == pattern_word


def contains(words: Sequence[str], phrase: tuple[str, ...]) -> bool:
    n = len(phrase)
    return any(
        all(_word_matches(p, w) for p, w in zip(phrase, words[i : i + n], strict=True))
        for i in range(len(words) - n + 1)
    )
