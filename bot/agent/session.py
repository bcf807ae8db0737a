"""One call's agent: what the call knows, what it may do, and what it did.

:class:`CallAgent` gathers the per-call pieces of this room (variables, the context answer,
the keypad collector, the HTTP tool runner, the turn guard) so the call controller holds one
object and hands it three hooks (end the call, transfer, say). It renders the call's texts
(greeting, system prompt, goodbye, transfer message), builds the Pipecat registrations, runs
the transfer's record-then-close step, and gives the call record a plain ``dict``.

Nothing here runs on a turn without tools: the observer reads a few frame types, and the
context fetch happens once, before the greeting, bounded by its timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from loguru import logger
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import InputDTMFFrame
from pipecat.observers.base_observer import FramePushed
from pipecat.services.llm_service import FunctionCallParams

from bot.agent.builtin import (
    EndCallHook,
    SayHook,
    ToolRegistration,
    TransferHook,
    TransferRequest,
    builtin_schemas,
    collect_digits_handler,
    end_call_handler,
    http_tool_handler,
    transfer_call_handler,
)
from bot.agent.config import AgentConfig
from bot.agent.context import (
    ContextResult,
    context_payload,
    fetch_context,
    recall_context,
    remember_context,
)
from bot.agent.digits import DigitCollector
from bot.agent.guard import TurnGuard
from bot.agent.tools import HttpToolConfig, HttpToolRunner, ToolCallRecord, tools_schema
from bot.agent.transfer import record_transfer
from bot.agent.variables import CallVariables, render
from bot.state.base import StateStore, StateUnavailable

# The greeting waits for the context answer at most its timeout plus this (issue 20: +0.5 s
# after start, and the pipeline's own start takes part of that half second).
CONTEXT_GRACE_SECS = 0.3
OUTCOMES = ("completed", "transferred", "caller_hung_up", "idle", "failed")


class AgentObserver(TurnGuard):
    """The turn guard, plus the keypad: each ``InputDTMFFrame`` goes to the collector.

    One observer for both keeps the per-frame cost to one ``wants`` check. The digits never
    become text (no DTMFAggregator), so they never reach the model's context.
    """

    def __init__(self, collector: DigitCollector, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._collector = collector

    def wants(self, data: FramePushed) -> bool:
        return data.first_push and (isinstance(data.frame, InputDTMFFrame) or super().wants(data))

    @property
    def response_spoke(self) -> bool:
        """The latest LLM response had words to say (an end_call's goodbye, say)."""
        return self._response_spoke

    async def on_push_frame(self, data: FramePushed) -> None:
        if not data.first_push:
            return
        frame = data.frame
        if isinstance(frame, InputDTMFFrame):
            button = frame.button
            self._collector.push(str(getattr(button, "value", button)))
        elif super().wants(data):
            self.note(frame)


class CallAgent:
    """The agent of one call. Build it with :meth:`for_call`; close it when the call ends."""

    def __init__(
        self,
        config: AgentConfig,
        variables: CallVariables,
        *,
        store: StateStore | None = None,
        http: aiohttp.ClientSession | None = None,
        custom_parameters: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.variables = variables
        self.store = store
        self.collector = DigitCollector(config.digits)
        self.observer = AgentObserver(self.collector)
        self.runner = HttpToolRunner(http)
        self.context: ContextResult | None = None
        # Tool arguments the scripted responder took from the caller's words (the record's
        # ``captures``: the post-call extraction without an LLM, bot.delivery).
        self.captures: dict[str, Any] = {}
        self.transferred: TransferRequest | None = None
        self._custom = dict(custom_parameters or {})
        # The call's keypad entries, for the log patcher (bot.observability.logs): the call
        # runs in logger.contextualize(masked=agent.log_masks), and this list is filled in.
        self.log_masks: list[str] = []
        self._context_task: asyncio.Task[ContextResult | None] | None = None

    @classmethod
    def for_call(
        cls,
        config: AgentConfig,
        info: Any,
        *,
        store: StateStore | None = None,
        query: Mapping[str, str] | None = None,
    ) -> CallAgent:
        """From Exotel's ``start`` (``info``: an ``ExotelStart``) and the stream URL's query."""
        variables = CallVariables.from_call(
            call_sid=info.call_sid,
            stream_sid=info.stream_sid,
            account_sid=info.account_sid,
            from_number=info.from_number,
            to_number=info.to_number,
            custom_parameters=info.custom_parameters,
            query=query,
        )
        custom = {**dict(query or {}), **dict(info.custom_parameters)}
        custom.pop("sample-rate", None)
        custom.pop("sample_rate", None)
        return cls(config, variables, store=store, custom_parameters=custom)

    @classmethod
    async def preload_context(
        cls,
        config: AgentConfig,
        info: Any,
        *,
        store: StateStore,
        query: Mapping[str, str] | None = None,
    ) -> ContextResult | None:
        """The context answer before the call's pipeline is built, so its ``language`` can
        choose the call's providers: recalled from the dynamic URL's fetch, else fetched now
        (bounded by its timeout, which the greeting waits for anyway). Kept in the store, so
        the call's own agent recalls it instead of asking again."""
        if not config.context_url:
            return None
        agent = cls.for_call(config, info, store=store, query=query)
        result = await agent._load_context()
        if agent.call_sid:
            await remember_context(store, agent.call_sid, result)
        return result

    @property
    def call_sid(self) -> str:
        return self.variables.get("call_sid") or ""

    # -- the context webhook --

    def start_context(self) -> None:
        """Begin fetching (or recalling) the context answer; the greeting awaits it."""
        if self.config.context_url and self._context_task is None:
            self._context_task = asyncio.create_task(self._load_context(), name="agent-context")

    async def _load_context(self) -> ContextResult | None:
        result = None
        if self.store is not None and self.call_sid:
            result = await recall_context(self.store, self.call_sid)
        if result is None:
            payload = context_payload(
                call_sid=self.call_sid,
                stream_sid=self.variables.get("stream_sid"),
                from_number=self.variables.get("from") or "",
                to_number=self.variables.get("to") or "",
                custom_parameters=self._custom,
            )
            url = str(self.config.context_url)
            result = await fetch_context(url, payload, self.config.context_timeout_secs)
        if result.answer is not None:
            self.variables.merge(result.answer.variables)
        self.context = result
        return result

    async def context_ready(self) -> None:
        """Wait for the context answer, at most its timeout and a margin; never raises."""
        task = self._context_task
        if task is None or task.done():
            return
        wait = self.config.context_timeout_secs + CONTEXT_GRACE_SECS
        try:
            await asyncio.wait_for(asyncio.shield(task), wait)
        except TimeoutError:
            logger.warning(f"context answer not in after {wait:g} s; greeting with the defaults")
        except Exception:
            logger.exception("context fetch failed; the call goes on with the defaults")

    # -- texts --

    def render(self, text: str) -> str:
        """``text`` with the call's ``{{variables}}``."""
        return render(text, self.variables) if "{{" in text else text

    def _override(self, key: str) -> str | None:
        answer = self.context.answer if self.context else None
        return getattr(answer, key) if answer is not None else None

    def greeting(self, default: str) -> str:
        return self.render(self._override("greeting") or default)

    def system_prompt(self, default: str) -> str:
        return self.render(self._override("system_prompt") or default)

    @property
    def language(self) -> str | None:
        """The context answer's language for this call, if it gave one."""
        return self._override("language")

    @property
    def transfer_message(self) -> str:
        return self.render(self.config.transfer_message)

    # -- tools --

    def tools_schema(self) -> ToolsSchema:
        """Every enabled built-in and HTTP tool, for ``LLMContext(tools=...)``."""
        return tools_schema(list(self.config.tools), builtin_schemas(self.config))

    def registrations(
        self, *, end_call: EndCallHook, transfer: TransferHook, say: SayHook
    ) -> list[ToolRegistration]:
        """The handlers to ``register_tools`` on the call's LLM service."""
        items: list[ToolRegistration] = []
        if self.config.enabled("end_call"):
            items.append(self._logged(end_call_handler(self.observer, end_call)))
        if self.config.enabled("transfer_call"):
            handler = transfer_call_handler(self.observer, transfer, self.config.departments)
            items.append(self._logged(handler))
        if self.config.enabled("collect_digits"):
            handler = collect_digits_handler(self.collector, self.variables, say)
            items.append(self._logged(handler))
        items.extend(self._http_tool(tool, say) for tool in self.config.tools)
        return items

    def _http_tool(self, tool: HttpToolConfig, say: SayHook) -> ToolRegistration:
        registration = http_tool_handler(self.runner, tool, self.variables)
        if not tool.say_while_running:
            return registration
        inner = registration.handler

        async def handle(params: FunctionCallParams) -> None:
            await say(self.render(str(tool.say_while_running)))
            await inner(params)

        return dataclasses.replace(registration, handler=handle)

    def _logged(self, registration: ToolRegistration) -> ToolRegistration:
        """A built-in's handler that leaves a record of its call, like the HTTP tools do."""
        inner, log = registration.handler, self.runner.log

        async def handle(params: FunctionCallParams) -> None:
            started, outcome = time.monotonic(), {"status": "cancelled", "bytes": 0}
            callback = params.result_callback

            async def result(value: Any, *, properties: Any = None) -> None:
                outcome.update(status=_status_of(value), bytes=len(json.dumps(value, default=str)))
                self.log_masks[:] = self.variables.secrets()  # before the model's next request
                await callback(value, properties=properties)

            shown = self.variables.hide_secrets(json.dumps(params.arguments, default=str))
            try:
                await inner(dataclasses.replace(params, result_callback=result))
            finally:
                elapsed = time.monotonic() - started
                log.append(
                    ToolCallRecord(
                        params.function_name, shown, outcome["status"], elapsed, outcome["bytes"]
                    )
                )

        return dataclasses.replace(registration, handler=handle)

    # -- transfer --

    async def transfer(
        self,
        request: TransferRequest,
        *,
        speak: Callable[[str], Awaitable[None]],
        heard: Callable[[float], Awaitable[bool]],
        close: Callable[[], Awaitable[None]],
    ) -> bool:
        """Say the message, wait for its echo, record the transfer, then close the stream.

        ``heard(since)`` waits for the echo of what was said after ``since`` (the call bounds
        it at 5 s past the audio's end). True when the call closed as a transfer; False when
        the store could not record it: the call then goes on (Passthru would answer 200 and
        the caller would be cut off), and the model hears that the transfer failed.
        """
        asked_at = time.monotonic()
        await speak(self.transfer_message)
        if not await heard(asked_at):
            logger.warning("transfer message not confirmed by Exotel in time; transferring anyway")
        if not await self._record_transfer(request):
            return False
        self.transferred = request
        await close()
        return True

    async def _record_transfer(self, request: TransferRequest) -> bool:
        if self.store is None or not self.call_sid:
            logger.error("transfer asked for but there is no state store or CallSid; not closing")
            return False
        try:
            await record_transfer(self.store, self.call_sid, request.reason, request.department)
        except StateUnavailable as e:
            logger.error(f"transfer not recorded ({e}); the call goes on instead of closing")
            return False
        return True

    # -- the record --

    def outcome(self, end_reason: str | None, hung_up_by: str | None) -> str:
        """One of :data:`OUTCOMES` for the call record."""
        reason = (end_reason or "").lower()
        if self.transferred is not None:
            return "transferred"
        if hung_up_by == "caller":
            return "caller_hung_up"
        if reason.startswith("caller silent"):
            return "idle"
        if reason.startswith(("provider fault", "internal error")) or "error" in reason:
            return "failed"
        return "completed"

    def record(self, end_reason: str | None, hung_up_by: str | None) -> dict[str, Any]:
        """The agent's part of the call record, keypad digits masked everywhere."""
        context = None
        if self.context is not None:
            context = {
                "ok": self.context.ok,
                "error": self.context.error,
                "duration_secs": round(self.context.duration_secs, 3),
            }
        data = {
            "outcome": self.outcome(end_reason, hung_up_by),
            "tool_calls": self.runner.log.as_dicts(),
            "variables": self.variables.masked(),
            "context": context,
            "transfer": dataclasses.asdict(self.transferred) if self.transferred else None,
            "captures": dict(self.captures),
        }
        # A digit the caller keyed may reappear anywhere (a tool's echo): mask it there too.
        return json.loads(self.variables.hide_secrets(json.dumps(data, ensure_ascii=False)))

    async def close(self) -> None:
        """The call ended: stop what still runs and release the HTTP session."""
        self.collector.cancel()
        if self._context_task is not None and not self._context_task.done():
            self._context_task.cancel()
        await self.runner.close()


_KEPT_STATUSES = {"no_input", "too_short", "too_long"}


def _status_of(result: Any) -> str:
    """A built-in's result as a record status: ok, error, refused, or a keypad status."""
    if not isinstance(result, Mapping):
        return "ok"
    if "error" in result:
        return "error"
    status = str(result.get("status", "ok"))
    if status.startswith("not done"):
        return "refused"
    return status if status in _KEPT_STATUSES else "ok"
