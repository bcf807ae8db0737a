"""The built-in tools (``end_call``, ``transfer_call``, ``collect_digits``) and the handlers
that plug every agent tool into Pipecat's function calling (``register_function``).

The handlers only decide and report; what a call does (speak, wait for the mark echo, close,
record the transfer) is given to them as hooks by the call controller, so this room never
touches a call or a pipeline. Registration options matter:

* ``end_call`` and ``transfer_call`` are synchronous (``cancel_on_interruption=True``): a
  barge-in cancels them while they wait for their turn to be heard (bot.agent.guard).
* ``collect_digits`` and the HTTP tools survive a barge-in (``cancel_on_interruption=False``):
  speech does not end a keypad entry, and a barge-in during a request cancels what the bot
  was going to say, not the request.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.frames.frames import FunctionCallResultProperties
from pipecat.services.llm_service import FunctionCallParams

from bot.agent.config import AgentConfig
from bot.agent.digits import DigitCollector, DigitStatus
from bot.agent.guard import TurnGuard
from bot.agent.tools import HttpToolConfig, HttpToolRunner
from bot.agent.variables import CallVariables

MAX_DIGITS = 32
_PURPOSE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_NO_LLM = FunctionCallResultProperties(run_llm=False)

END_CALL_SCHEMA = FunctionSchema(
    name="end_call",
    description=(
        "End the phone call. Call it after saying a short goodbye, when the caller says "
        "goodbye or has nothing else to ask."
    ),
    properties={},
    required=[],
)

COLLECT_DIGITS_SCHEMA = FunctionSchema(
    name="collect_digits",
    description=(
        "Ask the caller to type digits on the phone keypad (a PIN, an order number, a menu "
        "choice). The prompt is spoken, then the keys are collected: # ends, * starts over. "
        "The result says whether it worked and how many digits came; the digits themselves "
        "reach tools as {{digits.<purpose>}} in their arguments."
    ),
    properties={
        "purpose": {
            "type": "string",
            "description": "a short lower-case name for what is collected, e.g. pin",
        },
        "prompt": {"type": "string", "description": "what to say to the caller first"},
        "min_digits": {"type": "integer", "minimum": 1, "maximum": MAX_DIGITS},
        "max_digits": {"type": "integer", "minimum": 1, "maximum": MAX_DIGITS},
    },
    required=["purpose", "prompt", "min_digits", "max_digits"],
)


def transfer_call_schema(departments: Mapping[str, list[str]]) -> FunctionSchema:
    """``transfer_call {reason, department?}``; the department is one of the configured ones."""
    names = [name for name in departments if name != "default"]
    department: dict[str, Any] = {"type": "string", "description": "who should take the call"}
    if names:
        department["enum"] = names
    return FunctionSchema(
        name="transfer_call",
        description=(
            "Hand the call to a human colleague: when the caller asks for a person, is upset, "
            "or needs what you cannot do. The caller hears a short hold message."
        ),
        properties={
            "reason": {"type": "string", "description": "why, in a few words, for the agent"},
            "department": department,
        },
        required=["reason"],
    )


def builtin_schemas(config: AgentConfig) -> list[FunctionSchema]:
    """The FunctionSchemas of the built-ins ``[agent] builtin_tools`` enables."""
    schemas = {
        "end_call": END_CALL_SCHEMA,
        "transfer_call": transfer_call_schema(config.departments),
        "collect_digits": COLLECT_DIGITS_SCHEMA,
    }
    return [schemas[name] for name in config.builtin_tools]


@dataclass(frozen=True)
class TransferRequest:
    """What the model asked for; the call says the message, records it, and closes."""

    reason: str
    department: str | None


Handler = Callable[[FunctionCallParams], Awaitable[None]]
EndCallHook = Callable[[str], Awaitable[None]]
TransferHook = Callable[[TransferRequest], Awaitable[None]]
SayHook = Callable[[str], Awaitable[float]]  # queues the words; returns their length in s


@dataclass(frozen=True)
class ToolRegistration:
    """One ``llm.register_function(name, handler, cancel_on_interruption=...)`` call."""

    name: str
    handler: Handler
    cancel_on_interruption: bool
    timeout_secs: float | None = None


def register_tools(llm: Any, registrations: list[ToolRegistration]) -> None:
    """Register every handler with Pipecat's LLM service."""
    for item in registrations:
        llm.register_function(
            item.name,
            item.handler,
            cancel_on_interruption=item.cancel_on_interruption,
            timeout_secs=item.timeout_secs,
        )


def end_call_handler(guard: TurnGuard, end_call: EndCallHook) -> ToolRegistration:
    """``end_call``: once the asking turn has been heard out and not interrupted."""

    async def handle(params: FunctionCallParams) -> None:
        if not await _turn_heard(guard, "end_call"):
            await params.result_callback(_REFUSED, properties=_NO_LLM)
            return
        await params.result_callback({"status": "ending the call"}, properties=_NO_LLM)
        await end_call("llm called end_call")

    return ToolRegistration("end_call", handle, cancel_on_interruption=True)


def transfer_call_handler(
    guard: TurnGuard, transfer: TransferHook, departments: Mapping[str, list[str]]
) -> ToolRegistration:
    """``transfer_call``: like end_call, then the call's transfer (message, record, close)."""

    async def handle(params: FunctionCallParams) -> None:
        reason = str(params.arguments.get("reason") or "").strip()[:200] or "not given"
        department = params.arguments.get("department")
        if department is not None and department not in departments:
            logger.warning(f"transfer_call asked for department {department!r}; using default")
            department = None
        if not await _turn_heard(guard, "transfer_call"):
            await params.result_callback(_REFUSED, properties=_NO_LLM)
            return
        await params.result_callback({"status": "transferring"}, properties=_NO_LLM)
        await transfer(TransferRequest(reason, department))

    return ToolRegistration("transfer_call", handle, cancel_on_interruption=True)


def collect_digits_handler(
    collector: DigitCollector, variables: CallVariables, say: SayHook
) -> ToolRegistration:
    """``collect_digits``: say the prompt, collect keys locally, keep the digits off the model.

    The digits become ``digits.<purpose>``; the model gets ``{"status", "length"}`` (and the
    digits with ``[agent.digits] to_model = true``).
    """

    async def handle(params: FunctionCallParams) -> None:
        args = params.arguments
        problem = collect_arguments_problem(args)
        if problem:
            await params.result_callback({"error": problem})
            return
        purpose, prompt = str(args["purpose"]), str(args["prompt"])
        prompt_secs = await say(prompt) if prompt.strip() else 0.0
        result = await collector.collect(
            purpose, int(args["min_digits"]), int(args["max_digits"]), first_wait_extra=prompt_secs
        )
        if result.status == DigitStatus.OK:
            variables.set_digits(purpose, result.digits)
        await params.result_callback(result.for_model(collector.settings.to_model))

    return ToolRegistration("collect_digits", handle, cancel_on_interruption=False)


def collect_arguments_problem(args: Mapping[str, Any]) -> str | None:
    """What is wrong with ``collect_digits`` arguments, for the model to fix; None if fine."""
    purpose = args.get("purpose")
    if not isinstance(purpose, str) or not _PURPOSE.match(purpose):
        return "purpose must be a short lower-case word such as pin"
    bounds = [args.get("min_digits"), args.get("max_digits")]
    if not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds):
        return "min_digits and max_digits must be whole numbers"
    low, high = bounds
    if not 1 <= low <= high <= MAX_DIGITS:
        return f"need 1 <= min_digits <= max_digits <= {MAX_DIGITS}"
    if not isinstance(args.get("prompt"), str):
        return "prompt must be the words to say"
    return None


def http_tool_handler(
    runner: HttpToolRunner, tool: HttpToolConfig, variables: CallVariables
) -> ToolRegistration:
    """A configured HTTP tool; its answer (or ``{"error"}``) is the tool result."""

    async def handle(params: FunctionCallParams) -> None:
        await params.result_callback(await runner.run(tool, params.arguments, variables))

    # Pipecat's own deadline is a backstop: the request has its timeout inside the runner.
    return ToolRegistration(
        tool.name, handle, cancel_on_interruption=False, timeout_secs=tool.timeout_secs + 2.0
    )


_REFUSED = {"status": "not done: the caller spoke after you asked; answer them instead"}


async def _turn_heard(guard: TurnGuard, name: str) -> bool:
    if await guard.until_heard():
        return True
    logger.info(f"{name} dropped: the caller spoke after the turn that asked for it began")
    return False
