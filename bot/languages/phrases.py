"""Everything the bot says on its own, per language, and the prompt's language line.

English texts are today's (bot/config.py). Hindi is written in Devanagari in the register
of a polite call-centre agent, not translated word for word; the voice is a woman's, so the
agent speaks of herself in feminine forms ("देखती हूँ", "सकती हूँ"). English words callers
use themselves (कॉल, ट्रांसफ़र, हैश) stay English, in Devanagari, so a Hindi voice can read them.

Each text can be replaced per language in the TOML file::

    [phrases.hi-IN]
    greeting = "नमस्ते! ..."
    holding = ["एक सेकंड...", "..."]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from bot.languages.tags import LanguageError, normalise_language


@dataclass(frozen=True)
class Phrases:
    """The fixed texts of one language."""

    greeting: str
    holding: tuple[str, ...]  # said while the answer is on its way (pre-rendered audio)
    idle_prompt: str  # when the caller has been silent a while
    apology: str  # when a provider failed and nothing else could be said
    goodbye: str
    transfer: str  # before the call is handed to a person
    collect_digits: str  # asking for keypad input


PHRASE_KEYS = tuple(f.name for f in fields(Phrases))

DEFAULT_PHRASES: dict[str, Phrases] = {
    "en-IN": Phrases(
        greeting="Namaste! Thank you for calling. How can I help you today?",
        holding=(
            "One moment, please.",
            "Let me check that for you.",
            "Just a second.",
            "Give me a moment.",
        ),
        idle_prompt="Are you still there?",
        apology="Sorry, I am having trouble right now. Please bear with me.",
        goodbye="Thank you for calling. Goodbye!",
        transfer="Let me connect you to a colleague. Please stay on the line.",
        collect_digits="Please type the number on your phone's keypad, and press hash when done.",
    ),
    "hi-IN": Phrases(
        greeting="नमस्ते! कॉल करने के लिए धन्यवाद। मैं आपकी क्या मदद कर सकती हूँ?",
        holding=(
            "एक सेकंड, मैं देखती हूँ।",
            "जी, बस एक पल।",
            "रुकिए, मैं अभी चेक करती हूँ।",
            "जी, देख रही हूँ।",
        ),
        idle_prompt="हेलो, क्या आप लाइन पर हैं?",
        apology="माफ़ कीजिए, अभी थोड़ी दिक्कत आ रही है। बस एक पल रुकिए।",
        goodbye="कॉल करने के लिए धन्यवाद। आपका दिन शुभ हो!",
        transfer="मैं आपकी कॉल हमारे सहयोगी को ट्रांसफ़र कर रही हूँ। कृपया लाइन पर बने रहिए।",
        collect_digits="कृपया अपने फ़ोन के कीपैड पर नंबर डालिए, और आख़िर में हैश दबाइए।",
    ),
}

_NAMES = {
    "en-IN": "English",
    "hi-IN": "Hindi",
    "ta-IN": "Tamil",
    "te-IN": "Telugu",
    "bn-IN": "Bengali",
    "mr-IN": "Marathi",
    "kn-IN": "Kannada",
}
_SCRIPT_NAMES = {
    "hi-IN": "Devanagari",
    "mr-IN": "Devanagari",
    "ta-IN": "Tamil script",
    "te-IN": "Telugu script",
    "bn-IN": "Bengali script",
    "kn-IN": "Kannada script",
}
# Amounts, dates and phone numbers are read aloud by bot.languages.numbers, which needs them
# as digits (indian-languages.md §6.4 item 5).
_DIGITS = "Write amounts, dates, times and phone numbers as digits, not words."


class PhraseBook:
    """The phrases of every language: the defaults with the TOML's replacements applied."""

    def __init__(self, overrides: Mapping[str, Any] | None = None) -> None:
        """``overrides`` is the raw ``[phrases]`` table of the TOML file (``{"hi-IN": {...}}``)."""
        self._phrases: dict[str, Phrases] = dict(DEFAULT_PHRASES)
        self._partial: dict[str, dict[str, Any]] = {}
        for raw_language, table in (overrides or {}).items():
            section = f"[phrases.{raw_language}]"
            language = normalise_language(raw_language, key=section, allow_auto=False)
            values = _check_table(section, table)
            if language in self._phrases:
                self._phrases[language] = replace(self._phrases[language], **values)
            else:
                self._partial[language] = values

    def for_language(self, language: str) -> Phrases:
        """The phrases of ``language`` (a full tag); an error names what the TOML lacks."""
        language = normalise_language(language, key="phrase language", allow_auto=False)
        if language in self._phrases:
            return self._phrases[language]
        values = self._partial.get(language, {})
        missing = [key for key in PHRASE_KEYS if key not in values]
        if missing:
            raise LanguageError(
                f"[phrases.{language}]: the bot has no built-in {_NAMES[language]} texts; "
                f"add {', '.join(missing)} to that section of the config file"
            )
        phrases = Phrases(**values)
        self._phrases[language] = phrases
        return phrases

    def check(self, languages: tuple[str, ...] | list[str]) -> None:
        """Fail at start-up, not mid-call, when an allowed language has no phrases."""
        for language in languages:
            self.for_language(language)


def _check_table(section: str, table: Any) -> dict[str, Any]:
    if not isinstance(table, Mapping):
        raise LanguageError(f'{section}: must be a table of texts (greeting = "...")')
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in PHRASE_KEYS:
            raise LanguageError(
                f"{section} {key}: unknown phrase; the phrases are {', '.join(PHRASE_KEYS)}"
            )
        if key == "holding":
            if (
                not isinstance(value, list)
                or not value
                or not all(isinstance(v, str) and v.strip() for v in value)
            ):
                raise LanguageError(f"{section} holding: must be a list of non-empty texts")
            values[key] = tuple(v.strip() for v in value)
        elif isinstance(value, str) and value.strip():
            values[key] = value.strip()
        else:
            raise LanguageError(f"{section} {key}: must be a non-empty text in quotes")
    return values


def language_instruction(language: str, *, hinglish: bool = False, agent: str = "female") -> str:
    """The prompt's language line for a reply in ``language``.

    Hindi words are always asked for in Devanagari: Deepgram ``multi`` may hear Hinglish in
    Latin script, but an offline Hindi voice (espeak-ng) cannot read Latin Hindi, and Cartesia
    and Sarvam read Devanagari at least as well (indian-languages.md §2.1, §6.3: never echo a
    script the voice can't read). English terms stay in Latin, which every Hindi voice reads.
    ``agent`` ("female", "male" or "") sets the grammatical gender the agent uses of herself.
    """
    language = normalise_language(language, key="prompt language", allow_auto=False)
    if language == "en-IN":
        return (
            "Reply in clear Indian English, even if the caller uses a few Hindi words. " + _DIGITS
        )
    name, script = _NAMES[language], _SCRIPT_NAMES[language]
    understand = (
        " The caller's words may reach you in Devanagari or in Latin letters (Hinglish); "
        "understand both."
        if script == "Devanagari"
        else ""
    )
    if language == "hi-IN" and hinglish:
        line = (
            "The caller mixes Hindi and English. Reply in the same everyday mix: Hindi words "
            "written in Devanagari, English words (order, refund, OTP, account) in Latin letters."
        )
    else:
        line = (
            f"Reply in {name}, written in {script}, in a polite, natural spoken register. "
            "Keep common English terms (OTP, EMI, order, refund) in Latin letters."
        )
    gender = {
        "female": f" You are a woman: use feminine forms for yourself in {name}.",
        "male": f" You are a man: use masculine forms for yourself in {name}.",
    }.get(agent, "")
    if language not in ("hi-IN", "mr-IN"):
        gender = ""  # first-person verbs there do not mark the speaker's gender
    return line + understand + gender + " " + _DIGITS
