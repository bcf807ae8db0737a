"""The built-in handlers through Pipecat's FunctionCallParams, the turn guard (pipecat
issue 4997) and the early-cancel fix of the assistant aggregator (issues 3661, 5779)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    FunctionCallCancelFrame,
    FunctionCallFromLLM,
    FunctionCallInProgressFrame,
    FunctionCallsStartedFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    UserStartedSpeakingFrame,
)
from pipecat.observers.base_observer import FramePushed
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMAssistantAggregator
from pipecat.services.llm_service import FunctionCallParams

from bot.agent.builtin import (
    collect_digits_handler,
    end_call_handler,
    http_tool_handler,
    register_tools,
    transfer_call_handler,
)
from bot.agent.digits import DigitCollector, DigitSettings
from bot.agent.guard import CancelSafeAssistantAggregator, TurnGuard
from bot.agent.tools import HttpToolConfig, HttpToolRunner
from bot.agent.variables import CallVariables


class Results:
    def __init__(self) -> None:
        self.items: list[tuple[Any, Any]] = []

    async def __call__(self, result: Any, *, properties: Any = None) -> None:
        self.items.append((result, properties))


def params(name: str, arguments: dict, results: Results) -> FunctionCallParams:
    return FunctionCallParams(
        function_name=name,
        tool_call_id="call_1",
        arguments=arguments,
        llm=None,  # type: ignore[arg-type]
        pipeline_worker=None,  # type: ignore[arg-type]
        context=None,  # type: ignore[arg-type]
        result_callback=results,
    )


def goodbye_turn(guard: TurnGuard) -> None:
    for frame in (LLMFullResponseStartFrame(), LLMTextFrame("Goodbye!"), LLMFullResponseEndFrame()):
        guard.note(frame)


async def test_end_call_waits_for_the_goodbye_to_be_heard():
    guard, ended, results = TurnGuard(), [], Results()
    reg = end_call_handler(guard, lambda reason: _append(ended, reason))
    goodbye_turn(guard)
    task = asyncio.create_task(reg.handler(params("end_call", {}, results)))
    await asyncio.sleep(0.01)
    assert not task.done() and ended == []  # still speaking
    guard.note(BotStartedSpeakingFrame())
    guard.note(BotStoppedSpeakingFrame())
    await asyncio.wait_for(task, 1)
    assert ended == ["llm called end_call"]
    assert results.items[0][0] == {"status": "ending the call"}
    assert results.items[0][1].run_llm is False
    assert reg.cancel_on_interruption is True


async def test_end_call_of_an_interrupted_turn_does_not_run():
    guard, ended, results = TurnGuard(), [], Results()
    reg = end_call_handler(guard, lambda reason: _append(ended, reason))
    goodbye_turn(guard)
    guard.note(BotStartedSpeakingFrame())
    task = asyncio.create_task(reg.handler(params("end_call", {}, results)))
    await asyncio.sleep(0.01)
    guard.note(UserStartedSpeakingFrame())  # the caller talks over the goodbye
    await asyncio.wait_for(task, 1)
    assert ended == [] and "not done" in results.items[0][0]["status"]


async def test_interrupted_before_the_handler_ran_and_cancelled_by_pipecat():
    guard, ended, results = TurnGuard(), [], Results()
    reg = end_call_handler(guard, lambda reason: _append(ended, reason))
    guard.note(LLMFullResponseStartFrame())
    guard.note(UserStartedSpeakingFrame())
    guard.note(LLMFullResponseEndFrame())
    await asyncio.wait_for(reg.handler(params("end_call", {}, results)), 1)
    assert ended == []
    # Pipecat cancels a synchronous handler on interruption: the ending never happens.
    goodbye_turn(guard)
    task = asyncio.create_task(reg.handler(params("end_call", {}, results)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ended == []


async def test_tool_only_turn_is_heard_at_once_and_observer_dedupes():
    guard = TurnGuard()
    for frame in (LLMFullResponseStartFrame(), LLMFullResponseEndFrame()):
        await guard.on_push_frame(FramePushed(None, None, frame, None, 0, True))  # type: ignore
    # A frame passed along by the next processor is not counted again.
    again = FramePushed(None, None, UserStartedSpeakingFrame(), None, 0, False)  # type: ignore
    assert not guard.wants(again)
    assert guard.heard and not guard.interrupted
    assert await asyncio.wait_for(guard.until_heard(), 1) is True


async def test_transfer_handler_passes_reason_and_known_department():
    guard, asked, results = TurnGuard(), [], Results()
    reg = transfer_call_handler(guard, lambda req: _append(asked, req), {"support": ["+91"]})
    goodbye_turn(guard)
    guard.note(BotStartedSpeakingFrame())
    guard.note(BotStoppedSpeakingFrame())
    args = {"reason": "wants a person", "department": "sales"}
    await asyncio.wait_for(reg.handler(params("transfer_call", args, results)), 1)
    assert asked[0].reason == "wants a person" and asked[0].department is None  # unknown
    assert results.items[0][0] == {"status": "transferring"}


async def test_collect_digits_keeps_the_pin_off_the_model():
    variables = CallVariables({"call_sid": "CA1"})
    collector = DigitCollector(DigitSettings(first_digit_timeout_secs=2))
    said, results = [], Results()

    async def say(text: str) -> float:
        said.append(text)
        return 0.0

    reg = collect_digits_handler(collector, variables, say)
    args = {"purpose": "pin", "prompt": "Type your PIN", "min_digits": 4, "max_digits": 4}
    task = asyncio.create_task(reg.handler(params("collect_digits", args, results)))
    await asyncio.sleep(0.01)
    for key in "1234":
        collector.push(key)
    await asyncio.wait_for(task, 2)
    assert said == ["Type your PIN"]
    assert results.items == [({"status": "ok", "length": 4}, None)]
    assert variables.get("digits.pin") == "1234"
    assert reg.cancel_on_interruption is False


async def test_collect_digits_to_model_and_bad_arguments():
    variables = CallVariables()
    collector = DigitCollector(DigitSettings(to_model=True))
    results = Results()
    reg = collect_digits_handler(collector, variables, _no_say)
    bad = {"purpose": "pin", "prompt": "x", "min_digits": 5, "max_digits": 2}
    await reg.handler(params("collect_digits", bad, results))
    assert "min_digits" in results.items[0][0]["error"] and not collector.active
    args = {"purpose": "menu", "prompt": "", "min_digits": 1, "max_digits": 2}
    task = asyncio.create_task(reg.handler(params("collect_digits", args, results)))
    await asyncio.sleep(0.01)
    collector.push("2")
    collector.push("#")
    await asyncio.wait_for(task, 2)
    assert results.items[1][0] == {"status": "ok", "length": 1, "digits": "2"}


async def test_http_tool_handler_and_registration(server):
    tool = HttpToolConfig(name="lookup", description="d", url=server.base + "/text")
    runner = HttpToolRunner()
    results = Results()
    reg = http_tool_handler(runner, tool, CallVariables({"call_sid": "CA9"}))
    try:
        await reg.handler(params("lookup", {}, results))
    finally:
        await runner.close()
    assert results.items[0][0] == "Order 42 ships tomorrow."
    registered: list[tuple] = []

    class FakeLLM:
        def register_function(self, name, handler, **kw):
            registered.append((name, kw))

    register_tools(FakeLLM(), [reg])
    assert registered == [("lookup", {"cancel_on_interruption": False, "timeout_secs": 7.0})]


def _early_cancel(aggregator: LLMAssistantAggregator) -> asyncio.Future:
    async def run() -> None:
        call = FunctionCallFromLLM("lookup", "call_9", {"q": "x"}, None)
        await aggregator._handle_function_calls_started(FunctionCallsStartedFrame([call]))
        await aggregator._handle_function_call_cancel(FunctionCallCancelFrame("lookup", "call_9"))
        await aggregator._handle_function_call_in_progress(
            FunctionCallInProgressFrame("lookup", "call_9", {"q": "x"})
        )

    return asyncio.ensure_future(run())


async def test_stock_aggregator_keeps_an_early_cancelled_call_in_progress():
    aggregator = LLMAssistantAggregator(LLMContext())
    await _early_cancel(aggregator)
    assert aggregator.has_function_calls_in_progress  # the trap this room guards against


async def test_cancel_safe_aggregator_settles_an_early_cancelled_call():
    context = LLMContext()
    aggregator = CancelSafeAssistantAggregator(context)
    await _early_cancel(aggregator)
    assert not aggregator.has_function_calls_in_progress
    messages = context.get_messages()
    assert messages[-2]["tool_calls"][0]["id"] == "call_9"
    assert messages[-1] == {"role": "tool", "content": "CANCELLED", "tool_call_id": "call_9"}


async def _append(items: list, value: Any) -> None:
    items.append(value)


async def _no_say(text: str) -> float:
    return 0.0
