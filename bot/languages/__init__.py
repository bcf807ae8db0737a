"""Languages: which language a call is in, what the bot says in it, how it reads numbers.

Owns: BCP-47 tags and the configured policy (``[agent] language`` / ``languages``), the
per-call choice (``lang`` parameter, stream query, context ``language``, ``auto``), the
per-turn ``auto`` state machine, the fixed phrases and the prompt's language line per
language, Indian number reading before TTS, and the per-language "unfinished sentence" words
for turn taking.

Must not touch: calls, pipelines, providers, frames or the network. It is pure: it imports
only ``bot.config`` and libraries, and every other room may import it. Wiring (applying a
switch to STT/TTS settings, caching phrase audio) is done by the conversation and provider
rooms.
"""

from bot.languages.numbers import normalise_for_speech
from bot.languages.phrases import DEFAULT_PHRASES, PhraseBook, Phrases, language_instruction
from bot.languages.policy import (
    LanguageDecision,
    LanguageTracker,
    TurnLanguage,
    identify_language,
    requested_language,
)
from bot.languages.tags import (
    AUTO,
    SUPPORTED_LANGUAGES,
    CallLanguage,
    LanguageError,
    LanguagePolicy,
    normalise_language,
)
from bot.languages.turns import sounds_unfinished, unfinished_rule_enabled

__all__ = [
    "AUTO",
    "DEFAULT_PHRASES",
    "SUPPORTED_LANGUAGES",
    "CallLanguage",
    "LanguageDecision",
    "LanguageError",
    "LanguagePolicy",
    "LanguageTracker",
    "PhraseBook",
    "Phrases",
    "TurnLanguage",
    "identify_language",
    "language_instruction",
    "normalise_for_speech",
    "normalise_language",
    "requested_language",
    "sounds_unfinished",
    "unfinished_rule_enabled",
]
