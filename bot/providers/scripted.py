"""The ``scripted`` offline LLM: answers from a small TOML knowledge file, streamed like an LLM.

Why not a local LLM: the packaged small models invent facts (offline-models §1, §6), and a
phone line's facts (hours, refunds, addresses) must be exact. So intents are matched by words
and the answers are written by people, in ``bot/data/knowledge.toml``.

Why an ``LLMService`` subclass: the universal ``LLMContextAggregatorPair`` sends an
``LLMContextFrame`` per user turn and expects an LLM to answer with
``LLMFullResponseStartFrame``, ``LLMTextFrame``... and ``LLMFullResponseEndFrame``. The base
class also gives us what a real LLM does around that: the metadata broadcast at start, the
speculation gate (eager end-of-turn), ``skip_tts``, settings frames and TTFB metrics. The TTS
and the assistant aggregator can't tell this from a real LLM.

Matching, in words a non-programmer can check:

* What the caller said and every pattern are *normalized* the same way: lowercased,
  apostrophes dropped ("that's" -> "thats"), other punctuation becomes a space, numbers are
  spelled out ("24" and "twenty-four" both become "twenty four"; longer numbers digit by digit),
  and ``₹ % & @ +`` become words.
* A pattern is found when its words appear next to each other, as whole words ("open" does not
  match "opened"). A word ending in ``*`` matches any word starting with it ("refund*" matches
  "refunds", "refunded").
* Each pattern found scores its number of words. The intent with the highest total wins; a tie
  goes to the intent listed first in the file. If nothing is found, the fallback answer is used
  (``match_by_sound = true``: first by sound, any script, bot.providers.scripted_sounds).
"""

from __future__ import annotations

import asyncio
import difflib
import time
import tomllib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    LLMUpdateSettingsFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext, standard_message_text
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import LLMSettings

from bot.config import DATA_DIR
from bot.providers.scripted_sounds import intent_by_sound
from bot.providers.scripted_tools import TOOL_KEYS, ToolTurns, ToolUse, bad_replaces, tool_use
from bot.providers.scripted_words import contains, normalize, pattern_words

__all__ = [
    "DEFAULT_KNOWLEDGE_PATH",
    "EndCallHook",
    "Intent",
    "Knowledge",
    "KnowledgeError",
    "Match",
    "ScriptedLLM",
    "ScriptedResponder",
    "load_knowledge",
    "load_language_knowledge",
    "normalize",
]

DEFAULT_KNOWLEDGE_PATH = DATA_DIR / "knowledge.toml"

EndCallHook = Callable[[str], Awaitable[None]]
"""Called with a reason once the goodbye has been streamed; it ends the call after playback."""


class KnowledgeError(ValueError):
    """The knowledge file is missing or invalid; the message names the file and each problem."""


# --------------------------------------------------------------------------------------------
# Knowledge
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Intent:
    """One thing callers ask about: the phrases that signal it and the answer to give."""

    name: str
    patterns: tuple[str, ...]
    answer: str
    end_call: bool = False
    tool: ToolUse | None = None  # a tool intent (bot.providers.scripted_tools)
    phrases: tuple[tuple[str, ...], ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.phrases:
            object.__setattr__(self, "phrases", tuple(pattern_words(p) for p in self.patterns))

    def score(self, words: Sequence[str]) -> tuple[int, tuple[str, ...]]:
        """Total words of the patterns found in ``words``, and those patterns."""
        found = [
            (pattern, len(phrase))
            for pattern, phrase in zip(self.patterns, self.phrases, strict=True)
            if phrase and contains(words, phrase)
        ]
        return sum(n for _, n in found), tuple(p for p, _ in found)


@dataclass(frozen=True)
class Match:
    """The outcome of matching one utterance: which intent (None: fallback), and why."""

    intent: Intent | None
    answer: str
    score: int = 0
    matched: tuple[str, ...] = ()
    special: str = "fallback"  # the name when no intent matched: "fallback" or "greeting"

    @property
    def end_call(self) -> bool:
        """Whether the call should end once this answer has been heard."""
        return self.intent is not None and self.intent.end_call

    @property
    def name(self) -> str:
        """The intent's name, or "fallback" / "greeting"."""
        return self.intent.name if self.intent else self.special


@dataclass(frozen=True)
class Knowledge:
    """A validated knowledge file: a greeting, a fallback and the intents in file order."""

    greeting: str
    fallback: str
    intents: tuple[Intent, ...]
    source: str = "<memory>"
    by_sound: bool = False  # ``match_by_sound``: no exact pattern found? try them by sound

    def match(self, text: str) -> Match:
        """Pick the answer for one utterance (highest score; ties go to the earlier intent)."""
        words = normalize(text)
        best: Match | None = None
        for intent in self.intents:
            score, matched = intent.score(words)
            if score > 0 and (best is None or score > best.score):
                best = Match(intent, intent.answer, score, matched)
        if best is None and self.by_sound and (heard := intent_by_sound(self.intents, text)):
            best = Match(heard[0], heard[0].answer, heard[1], tuple(f"~{p}" for p in heard[2]))
        return best or Match(None, self.fallback)


_TOP_KEYS = {"greeting", "fallback", "intent", "match_by_sound"}
_INTENT_KEYS = {"name", "patterns", "answer", "end_call"} | TOOL_KEYS


def load_knowledge(path: Path | str = DEFAULT_KNOWLEDGE_PATH) -> Knowledge:
    """Read and validate a knowledge file.

    Raises:
        KnowledgeError: naming the file and every problem found (all at once, so a person
            editing the file can fix them in one go).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise KnowledgeError(f"{path}: knowledge file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise KnowledgeError(f"{path}: cannot read the knowledge file ({exc})") from exc
    return parse_knowledge(text, source=str(path))


def load_language_knowledge(path: Path | str = DEFAULT_KNOWLEDGE_PATH) -> dict[str, Knowledge]:
    """The other languages' knowledge: ``knowledge.hi-IN.toml`` beside ``path`` (any
    ``<stem>.<tag>.toml``), else the bundled Hindi file, keyed by the tag."""
    path = Path(path)
    found = {
        p.name[len(path.stem) + 1 : -len(".toml")]: p
        for p in path.parent.glob(f"{path.stem}.*-IN.toml")
    }
    bundled = DATA_DIR / "knowledge.hi-IN.toml"
    if "hi-IN" not in found and bundled.is_file():
        found["hi-IN"] = bundled
    return {tag: load_knowledge(file) for tag, file in sorted(found.items())}


def parse_knowledge(text: str, source: str = "<memory>") -> Knowledge:
    """Validate knowledge given as TOML text (see :func:`load_knowledge`)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The message carries the position, e.g. "... (at line 7, column 12)".
        raise KnowledgeError(f"{source}: not valid TOML: {exc}") from exc

    problems: list[str] = []
    problems += _unknown_keys(data, _TOP_KEYS, "at the top level")
    greeting = _required_text(data, "greeting", "at the top level", problems)
    fallback = _required_text(data, "fallback", "at the top level", problems)
    intents = _intents(data.get("intent"), problems)
    problems += bad_replaces(intents)
    if not isinstance(by_sound := data.get("match_by_sound", False), bool):
        problems.append("'match_by_sound' must be true or false (without quotes)")
    if problems:
        raise KnowledgeError(
            f"{source}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems)
        )
    _warn_shared_patterns(intents, source)
    return Knowledge(greeting, fallback, tuple(intents), source, by_sound)


def _unknown_keys(table: dict[str, Any], allowed: set[str], where: str) -> list[str]:
    problems = []
    for key in table:
        if key not in allowed:
            hint = difflib.get_close_matches(key, sorted(allowed), n=1)
            maybe = f" (did you mean '{hint[0]}'?)" if hint else ""
            problems.append(
                f"unknown key '{key}' {where}{maybe}; allowed: {', '.join(sorted(allowed))}"
            )
    return problems


def _required_text(table: dict[str, Any], key: str, where: str, problems: list[str]) -> str:
    value = table.get(key)
    if value is None:
        problems.append(f"'{key}' is missing {where}")
    elif not isinstance(value, str) or not value.strip():
        problems.append(f"'{key}' {where} must be a non-empty text in quotes")
    else:
        return " ".join(value.split())
    return ""


def _intents(raw: Any, problems: list[str]) -> list[Intent]:
    if raw is None:
        problems.append("no intents: add at least one [[intent]] section")
        return []
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        problems.append("'intent' must be written as [[intent]] sections")
        return []
    intents: list[Intent] = []
    seen: dict[str, int] = {}
    for number, table in enumerate(raw, start=1):
        intent = _intent(table, number, problems)
        if intent is None:
            continue
        key = intent.name.lower()
        if key in seen:
            problems.append(
                f"intent #{number}: duplicate name '{intent.name}' (also intent #{seen[key]})"
            )
        seen.setdefault(key, number)
        intents.append(intent)
    return intents


def _intent(table: dict[str, Any], number: int, problems: list[str]) -> Intent | None:
    name = table.get("name")
    label = f"intent #{number}" + (f" '{name}'" if isinstance(name, str) and name else "")
    before = len(problems)
    problems += _unknown_keys(table, _INTENT_KEYS, f"in {label}")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{label}: 'name' is missing or empty")
    tool = tool_use(table, label, problems)
    answer = ""  # may be left out for end_call / transfer_call (the call has its own words)
    if tool is None or "answer" in table or not tool.said_before:
        answer = _required_text(table, "answer", f"in {label}", problems)
    patterns = _patterns(table.get("patterns"), label, problems)
    end_call = table.get("end_call", False)
    if not isinstance(end_call, bool):
        problems.append(f"{label}: 'end_call' must be true or false (without quotes)")
    if len(problems) > before:
        return None
    return Intent(str(name).strip(), patterns, answer, end_call, tool)


def _patterns(raw: Any, label: str, problems: list[str]) -> tuple[str, ...]:
    if raw is None:
        problems.append(f"{label}: 'patterns' is missing")
        return ()
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        problems.append(f'{label}: \'patterns\' must be a list of texts, like ["open", "hours"]')
        return ()
    if not raw:
        problems.append(f"{label}: 'patterns' is empty; add at least one word or phrase")
        return ()
    for pattern in raw:
        if not pattern_words(pattern):
            problems.append(f"{label}: pattern {pattern!r} has no words to match")
    return tuple(dict.fromkeys(p.strip() for p in raw))  # drop exact repeats, keep order


def _warn_shared_patterns(intents: list[Intent], source: str) -> None:
    """Warn about a phrase listed under two intents: the earlier intent wins those ties."""
    owner: dict[tuple[str, ...], str] = {}
    for intent in intents:
        if intent.tool is not None and intent.tool.replaces:
            continue  # takes the place of the intent it shares its patterns with
        for phrase in intent.phrases:
            first = owner.setdefault(phrase, intent.name)
            if first != intent.name:
                logger.warning(
                    f"{source}: pattern '{' '.join(phrase)}' is in both '{first}' and "
                    f"'{intent.name}'; on a tie '{first}' wins"
                )


# --------------------------------------------------------------------------------------------
# The Pipecat service
# --------------------------------------------------------------------------------------------


def _pending_user_texts(context: LLMContext) -> list[str]:
    """The caller's messages since the bot last spoke, oldest first.

    More than one means the bot's answer was cut before any of it was heard (a barge-in),
    so the older messages are questions the caller has moved on from.
    """
    texts: list[str] = []
    for message in reversed(context.get_messages()):
        role = message.get("role") if isinstance(message, dict) else None
        if role == "user":
            text = standard_message_text(message)
            if text.strip():
                texts.append(text)
        elif role == "assistant":
            break
    return list(reversed(texts))


def _has_user_message(context: LLMContext) -> bool:
    return any(isinstance(m, dict) and m.get("role") == "user" for m in context.get_messages())


def _for_another(frame: LLMUpdateSettingsFrame, service: LLMService) -> bool:
    return frame.service is not None and frame.service is not service


def _stream_tokens(answer: str) -> list[str]:
    """Split an answer into word tokens with leading spaces, as LLMs stream them."""
    words = answer.split()
    return words[:1] + [f" {w}" for w in words[1:]]


class ScriptedResponder(LLMService):
    """An LLM service that answers each user turn from a :class:`Knowledge` file.

    On an ``LLMContextFrame`` it matches the caller's words this turn (see
    :func:`_pending_user_texts`) and streams the answer word by word between
    ``LLMFullResponseStartFrame`` and ``LLMFullResponseEndFrame``. With no user message yet (a
    ``LLMRunFrame`` at call start) it speaks the greeting. All other frames pass through.

    Interruptions: an ``InterruptionFrame`` cancels the running answer (Pipecat cancels the
    processor's frame task), so no further words or end frame are pushed, and an interrupted
    goodbye does not end the call: the caller is speaking again.

    Ending the call: when the matched intent has ``end_call = true``, ``on_end_call(reason)``
    is awaited right after the goodbye's ``LLMFullResponseEndFrame`` has been pushed, i.e.
    before the goodbye has been synthesized or played. The hook must therefore arrange for the
    call to end *after* playback (e.g. queue an ``EndFrame``, which drains behind the audio)
    and return quickly: an interruption arriving while it runs would cancel it.

    Tools: an intent with ``tool = "..."`` runs a tool the call registered, through Pipecat's
    function calling (bot.providers.scripted_tools). Not supported: LLM turn-completion
    filtering (``FilterIncompleteUserTurnStrategies``), which needs the model's markers.
    """

    def __init__(
        self,
        knowledge: Knowledge,
        *,
        on_end_call: EndCallHook | None = None,
        token_delay_s: float = 0.0,
        by_language: dict[str, Knowledge] | None = None,
        captures: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Create the responder.

        Args:
            knowledge: The validated knowledge (load it once per process with
                :func:`load_knowledge` and share it).
            on_end_call: Awaited with a reason after a goodbye (``end_call = true``) answer.
            token_delay_s: Pause between streamed words. 0 still yields to the event loop
                between words; a small value mimics a real LLM's pacing in demos and tests.
            by_language: Knowledge per language tag (``hi-IN``), for a call that switches.
            captures: The call's dict for the tool arguments taken from the caller's words.
            **kwargs: Passed to ``LLMService``.
        """
        settings = _scripted_settings()
        if (override := kwargs.pop("settings", None)) is not None:
            settings.apply_update(override)
        super().__init__(settings=settings, **kwargs)
        self._knowledge = knowledge
        self._by_language = dict(by_language or {})
        self._on_end_call = on_end_call
        self._token_delay_s = token_delay_s
        self.last_match: Match | None = None
        self._tools = ToolTurns(knowledge, captures)

    @property
    def knowledge(self) -> Knowledge:
        """The knowledge this responder answers from."""
        return self._knowledge

    def set_call_language(self, language: str) -> None:
        """Answer from ``language``'s knowledge from the next turn on (the call switched)."""
        self._knowledge = self._by_language.get(language, self._knowledge)

    def can_generate_metrics(self) -> bool:
        """Report TTFB and processing time like a real LLM."""
        return True

    def reply_for(self, context: LLMContext) -> Match:
        """What to say next for this context: greeting, an intent's answer, or the fallback."""
        texts = _pending_user_texts(context)
        if not texts and not _has_user_message(context):
            return Match(None, self._knowledge.greeting, special="greeting")
        # Answer the newest message; only if it means nothing on its own, read it together
        # with the unanswered ones before it (one request split by a cut-off answer).
        knowledge = self._tools.active(self.has_function)  # tool intents: tool registered
        match = knowledge.match(texts[-1] if texts else "")
        if match.intent is None and len(texts) > 1:
            match = knowledge.match(" ".join(texts))
        return match

    async def run_inference(
        self,
        context: LLMContext,
        max_tokens: int | None = None,
        system_instruction: str | None = None,
        response_schema: dict[str, Any] | None = None,
    ) -> str | None:
        """Answer out of band, as an LLM would (the other arguments don't apply)."""
        return self.reply_for(context).answer

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Answer ``LLMContextFrame``s; pass every other frame through."""
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            await self._respond(frame.context)
        elif isinstance(frame, LLMUpdateSettingsFrame) and _for_another(frame, self):
            pass  # the base class has already forwarded it
        else:
            await self.push_frame(frame, direction)

    async def push_frame(
        self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
    ) -> None:
        """Push as the base does; a result of our own tool call is noted on the way."""
        self._tools.note(frame)
        await super().push_frame(frame, direction)

    async def _respond(self, context: LLMContext) -> None:
        started = time.perf_counter()
        await self.push_frame(LLMFullResponseStartFrame())
        await self.start_processing_metrics()
        await self.start_ttfb_metrics()
        results, texts = self._tools.take(), _pending_user_texts(context)
        match = None  # asked again for a tool's result only: say it (or nothing)
        if not self._tools.only_results(texts, results, context):
            match = self.last_match = self.reply_for(context)
            logger.info(
                f"{self}: {match.name} (score {match.score}, matched {list(match.matched)}) "
                f"in {(time.perf_counter() - started) * 1000:.1f} ms"
            )
        plan = self._tools.plan(match, " ".join(texts), context)
        await self._stream(" ".join(t for t in (plan.say, *results) if t))
        if plan.call is not None:
            await self.run_function_calls([plan.call])
        await self.stop_processing_metrics()
        await self.push_frame(LLMFullResponseEndFrame())
        if match is not None and match.end_call and self._on_end_call is not None:
            await self._end_call(self._on_end_call, match)

    async def _stream(self, answer: str) -> None:
        for index, token in enumerate(_stream_tokens(answer)):
            if index == 0:
                await self.stop_ttfb_metrics()
                await self.stop_ttfat_metrics()
            await self.push_frame(LLMTextFrame(token))
            await asyncio.sleep(self._token_delay_s)  # a point where an interruption can land

    async def _end_call(self, hook: EndCallHook, match: Match) -> None:
        reason = f"scripted intent '{match.name}' ends the call"
        logger.info(f"{self}: {reason}")
        try:
            await hook(reason)
        except Exception:
            logger.exception(f"{self}: on_end_call failed")


ScriptedLLM = ScriptedResponder
"""Alias: the ``scripted`` LLM provider."""


def _scripted_settings() -> LLMSettings:
    """Store-mode settings: every field given (None where it does not apply)."""
    return LLMSettings(
        model="scripted",
        system_instruction=None,
        temperature=None,
        max_tokens=None,
        top_p=None,
        top_k=None,
        frequency_penalty=None,
        presence_penalty=None,
        seed=None,
        filter_incomplete_user_turns=None,
        user_turn_completion_config=None,
    )
