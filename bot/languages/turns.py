"""Words a sentence hardly ends on, per language: the turn-taking "unfinished" rule.

When the caller's words stop on such a word ("...the delivery address to", "मेरा ऑर्डर
नंबर है और"), the turn waits ``TURN_UNFINISHED_TIMEOUT_SECS`` instead of the normal speech
timeout. English keeps today's list (bot/turns.py). Hindi is verb-final, so a sentence that
stops on a postposition ("में", "को", "से") or a conjunction ("और", "कि", "लेकिन") is almost
always unfinished; its list holds both scripts, since Deepgram ``multi`` writes Hinglish in
Latin letters. Hindi callers mix English in, so the English list applies too ("mera number
hai, and").

Tamil, Telugu, Kannada, Bengali and Marathi: off. Their case markers and conjunctions are
mostly suffixes glued to the word (Tamil "வீட்டுக்கு", Marathi "घरात"), so a last-word list
cannot see them; a rule would need a morphological analyser or a list reviewed by native
speakers. Off means the normal speech timeout, which is today's behaviour for every turn.
"""

from __future__ import annotations

import re
import unicodedata

# Words a spoken English sentence hardly ever ends on: articles, conjunctions, possessives,
# prepositions that are not also verb particles ("log in", "sign up" end sentences), fillers.
# The same list as bot/turns.py UNFINISHED_LAST_WORDS.
ENGLISH_UNFINISHED = frozenset(
    """a an the and but or nor because my your our their its to of from for with at into
    onto um umm uh uhm erm er""".split()
)
# Postpositions and conjunctions. Left out: "भी" ("मुझे भी" is a whole answer), "क्या" (a
# question may end on it), Latin "me" (English "call me" is finished) and Latin "ya"
# (Indian English "ok ya" is finished).
HINDI_UNFINISHED = frozenset(
    unicodedata.normalize("NFC", word)
    for word in """और कि के में तो का की को से पर लेकिन या क्योंकि जो जब अगर मगर तथा एवं
    वाला वाली वाले जैसे ताकि बल्कि इसलिए मेरा मेरी मेरे आपका आपकी आपके
    aur ki ke ka ko se mein lekin kyunki kyonki magar agar jab jo par taaki
    mera meri mere aapka aapki aapke""".split()
)

UNFINISHED_WORDS: dict[str, frozenset[str] | None] = {
    "en-IN": ENGLISH_UNFINISHED,
    "hi-IN": HINDI_UNFINISHED | ENGLISH_UNFINISHED,
    # Off, see the module docstring.
    "ta-IN": None,
    "te-IN": None,
    "kn-IN": None,
    "bn-IN": None,
    "mr-IN": None,
}

_WORDS = re.compile(r"[a-z']+|[\u0900-\u0963\u0966-\u097F]+")
# A question mark, an exclamation mark or a danda (।, ॥) finishes a sentence.
_FINISHED = ("?", "!", "।", "॥")
_TRAILING = (",", "-", "…", "...")


def unfinished_rule_enabled(language: str) -> bool:
    """Whether ``language`` has a list; without one the normal timeout always applies."""
    return UNFINISHED_WORDS.get(language) is not None


def sounds_unfinished(text: str, language: str) -> bool:
    """The words stop mid-sentence: a trailing comma, dash or ellipsis, or a last word from
    the language's list. A question mark, exclamation mark or danda always finishes."""
    words_list = UNFINISHED_WORDS.get(language)
    if words_list is None:
        return False
    text = unicodedata.normalize("NFC", text).strip().lower()
    if not text or text.endswith(_FINISHED):
        return False
    if text.endswith(_TRAILING):
        return True
    words = _WORDS.findall(text)
    return bool(words) and words[-1] in words_list
