"""Tool intents of the scripted responder: the offline bot calls the agent's tools too.

An ``[[intent]]`` with ``tool = "name"`` asks for a tool instead of (or before) answering:
the built-ins ``end_call``, ``transfer_call`` and ``collect_digits``, or a configured HTTP
tool (``[[tools]]``). The arguments come from what the caller said, by regular expression
(``arguments``), plus fixed values (``fixed``). The call goes through Pipecat's function
calling exactly as a cloud LLM's does: the responder hands a ``FunctionCallFromLLM`` to the
LLM service base's ``run_function_calls``, which runs the handler the call registered
(``register_function``, bot.agent) with ``FunctionCallParams``; the assistant aggregator puts
the call and its result in the context and asks the responder again, which then speaks the
intent's ``answer`` with the result filled in (``{{result.status}}``).

Why by regex: the scripted responder must stay exact (its module docstring says why), and an
order number or a department is a fact taken from the caller's words, not guessed.

Which tools an intent may name is decided per call by what is registered on the service: an
intent whose tool is not enabled in the config is off, so the stock knowledge file can carry
tool intents that a bot without ``[agent]``/``[[tools]]`` never uses. ``replaces = "agent"``
lets an enabled tool intent take another intent's place (and its rank on ties).
"""

from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    FunctionCallCancelFrame,
    FunctionCallFromLLM,
    FunctionCallResultFrame,
)

__all__ = [
    "TOOL_KEYS",
    "ToolPlan",
    "ToolTurns",
    "ToolUse",
    "active_intents",
    "bad_replaces",
    "prepare_heard",
    "render_answer",
    "tool_use",
]

TOOL_KEYS = {"tool", "arguments", "fixed", "error_answer", "missing_answer", "replaces"}
# These never come back to the conversation: their answer is said before they run.
SAID_BEFORE = frozenset({"end_call", "transfer_call"})
DEFAULT_ERROR_ANSWER = "Sorry, I could not get that done just now. Please try again later."
DEFAULT_MISSING_ANSWER = "Sorry, I did not catch the details. Could you say that again?"
_KEYPAD_FAILURES = {"no_input", "too_short", "too_long"}
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TEMPLATE = re.compile(r"\{\{\s*([A-Za-z_][\w.\-]*)\s*(?:\|([^}]*))?\}\}")
_DIGIT_WORDS = "zero one two three four five six seven eight nine".split()
_SPOKEN_DIGITS = re.compile(
    r"\b(?:" + "|".join(_DIGIT_WORDS) + r")(?:[\s,-]+(?:" + "|".join(_DIGIT_WORDS) + r"))+\b",
    re.IGNORECASE,
)
_DIGIT_GROUPING = re.compile(r"(?<=\d),(?=\d{3}\b)")
_DIGIT_GAPS = re.compile(r"(?<=\d)[ \t-]+(?=\d)")


@dataclass(frozen=True)
class ToolUse:
    """What a tool intent asks for (its ``tool``, ``arguments``, ``fixed``... keys)."""

    name: str
    arguments: Mapping[str, re.Pattern[str]] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    error_answer: str = DEFAULT_ERROR_ANSWER
    missing_answer: str = DEFAULT_MISSING_ANSWER
    replaces: str | None = None

    @property
    def said_before(self) -> bool:
        """The intent's answer is said before the tool runs (end_call, transfer_call)."""
        return self.name in SAID_BEFORE


def tool_use(table: Mapping[str, Any], label: str, problems: list[str]) -> ToolUse | None:
    """The tool keys of one ``[[intent]]`` (None without ``tool``); problems name the key."""
    if "tool" not in table:
        stray = sorted(k for k in TOOL_KEYS - {"tool"} if k in table)
        if stray:
            problems.append(f"{label}: {', '.join(stray)} need(s) 'tool = \"...\"' too")
        return None
    name = table["tool"]
    if not isinstance(name, str) or not _TOOL_NAME.match(name):
        problems.append(f"{label}: 'tool' must be a tool's name, like \"lookup_order\"")
        return None
    if table.get("end_call"):
        problems.append(f'{label}: use either end_call = true or tool = "end_call", not both')
    arguments = _regexes(table.get("arguments", {}), label, problems)
    fixed = table.get("fixed", {})
    if not isinstance(fixed, dict):
        problems.append(f"{label}: 'fixed' must be a table, like {{ department = \"support\" }}")
        fixed = {}
    texts = {}
    for key, default in (
        ("error_answer", DEFAULT_ERROR_ANSWER),
        ("missing_answer", DEFAULT_MISSING_ANSWER),
    ):
        value = table.get(key, default)
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{label}: '{key}' must be a non-empty text in quotes")
            value = default
        texts[key] = " ".join(value.split())
    replaces = table.get("replaces")
    if replaces is not None and (not isinstance(replaces, str) or not replaces.strip()):
        problems.append(f"{label}: 'replaces' must be the name of another intent")
        replaces = None
    # 'answer' is checked by the caller: required unless the tool is said-before.
    return ToolUse(name, arguments, dict(fixed), replaces=replaces, **texts)


def _regexes(raw: Any, label: str, problems: list[str]) -> dict[str, re.Pattern[str]]:
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        problems.append(
            f"{label}: 'arguments' must be a table of regular expressions, like "
            '{ order_id = "order\\\\D*(\\\\d+)" }'
        )
        return {}
    compiled = {}
    for name, pattern in raw.items():
        try:
            compiled[str(name)] = re.compile(pattern, re.IGNORECASE)
        except re.error as e:
            problems.append(f"{label}: argument '{name}': not a valid regular expression ({e})")
    return compiled


def bad_replaces(intents: Sequence[Any]) -> list[str]:
    """``replaces`` must name another intent of the file."""
    names = {intent.name for intent in intents}
    return [
        f"intent '{intent.name}': replaces '{intent.tool.replaces}', which is not an intent"
        for intent in intents
        if intent.tool and intent.tool.replaces and intent.tool.replaces not in names
    ]


def tool_names(intents: Sequence[Any]) -> frozenset[str]:
    """Every tool the intents name."""
    return frozenset(intent.tool.name for intent in intents if intent.tool is not None)


def active_intents(intents: Sequence[Any], available: Callable[[str], bool]) -> tuple[Any, ...]:
    """The intents in force when the tools ``available`` says yes to are registered.

    A tool intent whose tool is not available is dropped; an available one that ``replaces``
    another takes that intent's place in the order (so it wins the same ties).
    """
    active = [i for i in intents if i.tool is None or available(i.tool.name)]
    names = {i.name for i in active}
    replacing = {i.tool.replaces: i for i in active if i.tool and i.tool.replaces in names}
    out = []
    for intent in active:
        if intent.name in replacing:
            out.append(replacing[intent.name])
        elif not (intent.tool and intent.tool.replaces in replacing):
            out.append(intent)
    return tuple(out)


def prepare_heard(text: str) -> str:
    """What the caller said, as the ``arguments`` regexes see it.

    Numbers become plain digits however the speech-to-text wrote them: spoken digits are
    joined ("four five six seven" -> "4567"), as are digits split by spaces or hyphens
    ("4 5 6-7" -> "4567"), and thousands commas are dropped ("4,567" -> "4567").
    """
    text = unicodedata.normalize("NFKC", text)

    def digits(match: re.Match[str]) -> str:
        words = re.findall(r"[a-z]+", match.group(0).lower())
        return "".join(str(_DIGIT_WORDS.index(w)) for w in words)

    text = _SPOKEN_DIGITS.sub(digits, text)
    text = _DIGIT_GROUPING.sub("", text)
    return _DIGIT_GAPS.sub("", text)


def _spoken(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list):
        return ", ".join(_spoken(v) for v in value)
    return json.dumps(value, ensure_ascii=False)


def _lookup(path: str, values: Mapping[str, Any]) -> Any:
    head, _, rest = path.partition(".")
    value: Any = values.get(head)
    for key in rest.split(".") if rest else ():
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def render_answer(template: str, values: Mapping[str, Any]) -> str:
    """``{{result.status}}``, ``{{order_id}}``, ``{{name|default}}`` filled from ``values``.

    A name with nothing behind it renders its default, or nothing (logged), never braces.
    """

    def fill(match: re.Match[str]) -> str:
        value = _lookup(match.group(1), values)
        if value is None or value == "":
            if match.group(2) is None:
                logger.warning(f"scripted answer: {{{{{match.group(1)}}}}} has no value")
            return (match.group(2) or "").strip()
        return _spoken(value)

    return " ".join(_TEMPLATE.sub(fill, template).split())


@dataclass(frozen=True)
class ToolPlan:
    """What a tool intent does this turn: words to say, and the call to run (if any)."""

    say: str
    call: FunctionCallFromLLM | None = None


@dataclass
class _Pending:
    answer: str
    use: ToolUse
    values: dict[str, Any]


class ToolTurns:
    """One call's tool intents: which are in force, the calls they make, their answers.

    ``note`` sees every frame the service pushes, so it catches the ``FunctionCallResultFrame``
    (and ``FunctionCallCancelFrame``) that the service itself broadcasts for its calls; the
    answer is spoken when the aggregator next asks the responder (``take``), as it asks a
    cloud LLM with the result in the context.
    """

    def __init__(self, knowledge: Any, captures: dict[str, Any] | None = None) -> None:
        self.captures: dict[str, Any] = captures if captures is not None else {}
        self._knowledge = knowledge
        self._names = tool_names(knowledge.intents)
        self._available: frozenset[str] = frozenset()
        self._active = with_active_tools(knowledge, self._available.__contains__)
        self._pending: dict[str, _Pending] = {}
        self._answers: list[str] = []

    def active(self, registered: Callable[[str], bool]) -> Any:
        """The knowledge in force: a tool intent only while its tool is ``registered``."""
        available = frozenset(name for name in self._names if registered(name))
        if available != self._available:
            self._available = available
            self._active = with_active_tools(self._knowledge, available.__contains__)
        return self._active

    def only_results(self, texts: Sequence[str], results: Sequence[str], context: Any) -> bool:
        """Asked again for tool results, with no new words from the caller to answer.

        Also true when the context ends in a tool's result that is not ours to speak (a
        call cancelled or ended): the fallback is for the caller's words only.
        """
        if texts:
            return False
        messages = context.get_messages() if context is not None else []
        last = messages[-1] if messages else None
        role = last.get("role") if isinstance(last, dict) else None
        return bool(results) or role in ("tool", "developer")

    def plan(self, match: Any, heard: str, context: Any) -> ToolPlan:
        """What to say and run for ``match`` (a Match, or None: nothing to say)."""
        intent = match.intent if match is not None else None
        if intent is None or intent.tool is None:
            return ToolPlan(match.answer if match is not None else "")
        use: ToolUse = intent.tool
        text = prepare_heard(heard)
        captured: dict[str, str] = {}
        for name, regex in use.arguments.items():
            found = regex.search(text)
            if found is None:
                logger.info(f"scripted tool {use.name}: no {name} in what the caller said")
                return ToolPlan(use.missing_answer)
            captured[name] = (found.group(1) if regex.groups else found.group(0)).strip()
        self.captures.update(captured)
        arguments = {**use.fixed, **captured}
        call_id = f"scripted_{uuid.uuid4().hex[:12]}"
        call = FunctionCallFromLLM(use.name, call_id, arguments, context)
        logger.info(f"scripted intent '{intent.name}' calls {use.name}")
        if use.said_before:
            return ToolPlan(render_answer(intent.answer, arguments), call)
        self._pending[call_id] = _Pending(intent.answer, use, arguments)
        return ToolPlan("", call)

    def note(self, frame: Frame) -> None:
        """Keep the answer of a settled call of ours (each frame is seen twice: broadcast)."""
        if isinstance(frame, FunctionCallResultFrame):
            if frame.properties is not None and frame.properties.is_final is False:
                return
            pending = self._pending.pop(frame.tool_call_id, None)
            if pending is not None:
                self._answers.append(_answer_for(pending, frame.result))
        elif isinstance(frame, FunctionCallCancelFrame):
            pending = self._pending.pop(frame.tool_call_id, None)
            if pending is not None:
                self._answers.append(pending.use.error_answer)

    def take(self) -> list[str]:
        """The answers of the results that came in since the last turn (and forget them)."""
        answers, self._answers = self._answers, []
        return answers


def _answer_for(pending: _Pending, result: Any) -> str:
    if _failed(pending.use.name, result):
        logger.info(f"scripted tool {pending.use.name} failed: saying the error answer")
        return pending.use.error_answer
    return render_answer(pending.answer, {**pending.values, "result": result})


def _failed(tool: str, result: Any) -> bool:
    """An ``{"error": ...}`` result (timeout, HTTP error, bad arguments), a keypad entry that
    did not work, or a tool that could not run at all (Pipecat's own texts for a handler
    that raised or a function that is not registered)."""
    if isinstance(result, Mapping):
        if "error" in result:
            return True
        return tool == "collect_digits" and result.get("status") in _KEYPAD_FAILURES
    return result is None or (isinstance(result, str) and result.startswith("The function `"))


def with_active_tools(knowledge: Any, available: Callable[[str], bool]) -> Any:
    """``knowledge`` with only the intents in force (see :func:`active_intents`)."""
    return dataclasses.replace(knowledge, intents=active_intents(knowledge.intents, available))
