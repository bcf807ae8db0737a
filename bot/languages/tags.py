"""Language tags, the configured language policy, and the per-call choice.

Languages are BCP-47 tags for India (``en-IN``, ``hi-IN``, ...). Config and callers may write
the bare code (``en``, today's default, and ``hi``), any case, with ``_`` or ``-``; everything
past this module sees only the full tag, so a provider table never has to ask "hi or hi-IN?".
``auto`` is not a language but a per-call mode: the caller's first words decide (see
``bot.languages.policy``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loguru import logger

from bot.config import ConfigError

AUTO = "auto"
DEFAULT_LANGUAGE = "en-IN"
# The languages the bot knows how to name, in the order the docs list them.
SUPPORTED_LANGUAGES = ("en-IN", "hi-IN", "ta-IN", "te-IN", "bn-IN", "mr-IN", "kn-IN")
_BY_CODE = {tag.split("-")[0]: tag for tag in SUPPORTED_LANGUAGES}


class LanguageError(ConfigError):
    """A language setting or value that cannot be used, worded for whoever set it."""


def normalise_language(value: Any, *, key: str = "language", allow_auto: bool = True) -> str:
    """The full tag for ``value`` ("en" -> "en-IN", "HI_in" -> "hi-IN"), or ``"auto"``.

    ``key`` names the setting in the error, so the person who wrote it can find it.
    """
    if not isinstance(value, str) or not value.strip():
        raise LanguageError(f"{key}: a language is required, e.g. {_choices(allow_auto)}")
    text = value.strip().replace("_", "-")
    lowered = text.lower()
    if lowered == AUTO:
        if allow_auto:
            return AUTO
        raise LanguageError(f"{key}: 'auto' is not allowed here; use one of {_choices(False)}")
    code, _, region = lowered.partition("-")
    tag = _BY_CODE.get(code)
    if tag is None or (region and region != "in"):
        raise LanguageError(f"{key}: unknown language {value!r}; use one of {_choices(allow_auto)}")
    return tag


def _choices(allow_auto: bool) -> str:
    names = list(SUPPORTED_LANGUAGES) + ([AUTO] if allow_auto else [])
    return ", ".join(names)


def parse_language_list(value: Any, *, key: str) -> tuple[str, ...]:
    """``"en-IN, hi"`` or ``["en-IN", "hi"]`` -> ``("en-IN", "hi-IN")``: in order, no repeats."""
    if isinstance(value, str):
        items = [part for part in value.split(",") if part.strip()]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise LanguageError(f"{key}: must be a comma-separated list of languages, e.g. en-IN,hi-IN")
    if not items:
        raise LanguageError(f"{key}: the list is empty; name at least one language")
    tags: list[str] = []
    for item in items:
        tag = normalise_language(item, key=key, allow_auto=False)
        if tag not in tags:
            tags.append(tag)
    return tuple(tags)


@dataclass(frozen=True)
class CallLanguage:
    """What one call starts in: the language of the greeting, and whether ``auto`` is on."""

    language: str  # the full tag the call starts in (greeting, first STT settings)
    auto: bool  # the caller's words may change it (bot.languages.policy)
    source: str  # where it came from: "lang parameter", "stream query", "context", "config"
    allowed: tuple[str, ...]  # the languages auto may pick from


@dataclass(frozen=True)
class LanguagePolicy:
    """The configured default and the allowed set.

    ``language`` is a tag or ``"auto"``; ``languages`` is the allowed set, in order. With
    ``auto`` the first allowed language is the one the call starts (and greets) in.
    """

    language: str = DEFAULT_LANGUAGE
    languages: tuple[str, ...] = (DEFAULT_LANGUAGE,)

    def __post_init__(self) -> None:
        if self.language != AUTO and self.language not in self.languages:
            raise LanguageError(
                f"AGENT_LANGUAGE ([agent] language) is {self.language} but AGENT_LANGUAGES "
                f"([agent] languages) allows only {', '.join(self.languages)}; add it to the list"
            )

    @property
    def starting_language(self) -> str:
        return self.languages[0] if self.language == AUTO else self.language

    @classmethod
    def from_values(
        cls,
        language: Any = None,
        languages: Any = None,
        *,
        language_key: str = "AGENT_LANGUAGE ([agent] language)",
    ) -> LanguagePolicy:
        """The policy from already-read values (None: not set)."""
        lang = normalise_language(language or DEFAULT_LANGUAGE, key=language_key)
        key = "AGENT_LANGUAGES ([agent] languages)"
        if languages is None or (isinstance(languages, str) and not languages.strip()):
            if lang == AUTO:
                raise LanguageError(
                    f"{language_key} is auto: set {key} to the languages to choose from, "
                    "e.g. en-IN,hi-IN"
                )
            allowed: tuple[str, ...] = (lang,)
        else:
            allowed = parse_language_list(languages, key=key)
        return cls(language=lang, languages=allowed)

    @classmethod
    def from_sources(
        cls, env: Mapping[str, str] | None = None, toml: Mapping[str, Any] | None = None
    ) -> LanguagePolicy:
        """The policy from the environment and the raw TOML dict; the environment wins.

        ``AGENT_LANGUAGE`` / ``[agent] language`` are the names; today's ``BOT_LANGUAGE`` /
        ``[bot] language`` still work as aliases, below the new name of the same source.
        """
        env = os.environ if env is None else env
        toml = toml or {}
        agent = toml.get("agent") or {}
        bot = toml.get("bot") or {}
        candidates = [
            (env.get("AGENT_LANGUAGE"), "AGENT_LANGUAGE"),
            (env.get("BOT_LANGUAGE"), "BOT_LANGUAGE"),
            (agent.get("language"), "[agent] language"),
            (bot.get("language"), "[bot] language"),
        ]
        language, key = next(((v, k) for v, k in candidates if v), (None, "AGENT_LANGUAGE"))
        languages = env.get("AGENT_LANGUAGES") or agent.get("languages")
        return cls.from_values(language, languages, language_key=key)

    @classmethod
    def from_settings(cls, settings: Any) -> LanguagePolicy:
        """The policy from a ``bot.config.Settings``: ``agent_language`` / ``agent_languages``
        when it has them, else today's ``bot_language``."""
        language = getattr(settings, "agent_language", None) or getattr(
            settings, "bot_language", None
        )
        return cls.from_values(language, getattr(settings, "agent_languages", None))

    def choose(
        self,
        *,
        custom_parameters: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
        context_language: Any = None,
        call_id: str = "",
    ) -> CallLanguage:
        """The call's language: the ``lang`` custom parameter, else the stream URL's ``lang``
        query, else the context webhook's ``language``, else the configured default.

        A value that is not a language, or not in the allowed set, is skipped with a log line
        (the call still has to be answered), and the next source decides.
        """
        sources = [
            ("lang parameter", (custom_parameters or {}).get("lang")),
            ("stream query", (query or {}).get("lang")),
            ("context", context_language),
        ]
        for source, value in sources:
            if value is None or value == "":
                continue
            try:
                tag = normalise_language(value, key=source)
            except LanguageError as e:
                logger.warning(f"call {call_id}: {e}; falling back")
                continue
            if tag != AUTO and tag not in self.languages:
                logger.warning(
                    f"call {call_id}: {source} asks for {tag}, which AGENT_LANGUAGES does not "
                    f"allow ({', '.join(self.languages)}); falling back"
                )
                continue
            return self._call_language(tag, source)
        return self._call_language(self.language, "config")

    def _call_language(self, tag: str, source: str) -> CallLanguage:
        if tag == AUTO:
            # One allowed language leaves nothing to detect: the call is simply in it.
            auto = len(self.languages) > 1
            return CallLanguage(self.starting_language, auto, source, self.languages)
        return CallLanguage(tag, False, source, self.languages)
