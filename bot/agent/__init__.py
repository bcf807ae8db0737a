"""The per-call agent: variables and templating, the context webhook, HTTP tools, the
built-in tools (end_call, transfer_call, collect_digits) and the keypad collector.

Owns: what a call knows (``CallVariables``), what it may do (tool configs, runners and the
handlers registered with Pipecat's LLM service), the transfer outcome under the CallSid and
Exotel's Passthru/Connect answers derived from it, and guards against Pipecat's tool-call
traps (bot.agent.guard). ``CallAgent`` (bot.agent.session) gathers one call's pieces for the
call controller.

Must not touch: calls, pipelines, transports or the server. It imports only ``bot.config``,
``bot.state``, Pipecat and libraries; the call controller wires it in, handing the handlers
hooks (end the call, transfer, say) instead of this room reaching into a call.
"""

from bot.agent.builtin import (
    ToolRegistration,
    TransferRequest,
    builtin_schemas,
    collect_digits_handler,
    end_call_handler,
    http_tool_handler,
    register_tools,
    transfer_call_handler,
)
from bot.agent.config import AgentConfig, load_agent_config, parse_agent_config
from bot.agent.context import (
    ContextAnswer,
    ContextResult,
    context_payload,
    fetch_context,
    recall_context,
    remember_context,
)
from bot.agent.digits import DigitCollector, DigitResult, DigitSettings, mask_digits
from bot.agent.guard import CancelSafeAssistantAggregator, TurnGuard
from bot.agent.session import AgentObserver, CallAgent
from bot.agent.tools import HttpToolConfig, HttpToolRunner, ToolCallLog, parse_tools, tools_schema
from bot.agent.transfer import connect_answer, passthru_answer, record_transfer, transfer_for
from bot.agent.variables import CallVariables, render, render_json

__all__ = [
    "AgentConfig",
    "AgentObserver",
    "CallAgent",
    "CallVariables",
    "CancelSafeAssistantAggregator",
    "ContextAnswer",
    "ContextResult",
    "DigitCollector",
    "DigitResult",
    "DigitSettings",
    "HttpToolConfig",
    "HttpToolRunner",
    "ToolCallLog",
    "ToolRegistration",
    "TransferRequest",
    "TurnGuard",
    "builtin_schemas",
    "collect_digits_handler",
    "connect_answer",
    "context_payload",
    "end_call_handler",
    "fetch_context",
    "http_tool_handler",
    "load_agent_config",
    "mask_digits",
    "parse_agent_config",
    "parse_tools",
    "passthru_answer",
    "recall_context",
    "record_transfer",
    "register_tools",
    "remember_context",
    "render",
    "render_json",
    "tools_schema",
    "transfer_call_handler",
    "transfer_for",
]
