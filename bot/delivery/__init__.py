"""Delivery: what leaves the bot after a call, signed, and never lost.

Owns: the post-call events and their envelope (:mod:`bot.delivery.events`: ``call.ended``,
``call.status``), Standard Webhooks signing (:mod:`bot.delivery.signing`), the durable outbox
that stores each event before its first attempt and retries it across restarts
(:mod:`bot.delivery.outbox`, with the operator functions behind ``python -m bot webhooks``),
the optional summary/extraction of a call (:mod:`bot.delivery.analysis`), the mapping of a
call record to ``call.ended`` (:mod:`bot.delivery.from_record`), the calls kept for the calls
page (:mod:`bot.delivery.calls`), and :class:`PostCall` (:mod:`bot.delivery.service`), the
after-call work a server runs in tasks of its own.

Must not touch: calls, pipelines, the HTTP server, metrics or logs configuration. It imports
``bot.config``, ``bot.state``, ``bot.observability`` (the record files' retention) and
libraries; the server wires it in (``runtime.post_call``; metrics through ``on_event`` and
``Outbox.pending``), and no call ever waits on a receiver.
"""

from bot.delivery.analysis import (
    AnalysisConfig,
    AnalysisResult,
    LLMEndpoint,
    analyze,
    extraction_from_captures,
)
from bot.delivery.events import (
    CallEndedData,
    Event,
    Turn,
    call_ended_event,
    call_status_event,
)
from bot.delivery.from_record import CallContext, call_ended_data
from bot.delivery.outbox import (
    Delivery,
    Outbox,
    deliveries_for_call,
    list_events,
    prune,
    retry,
    retry_dead,
)
from bot.delivery.service import PostCall, check_webhook_settings
from bot.delivery.signing import Signer, generate_secret

__all__ = [
    "AnalysisConfig",
    "AnalysisResult",
    "CallContext",
    "CallEndedData",
    "Delivery",
    "Event",
    "LLMEndpoint",
    "Outbox",
    "PostCall",
    "Signer",
    "Turn",
    "analyze",
    "call_ended_data",
    "call_ended_event",
    "call_status_event",
    "check_webhook_settings",
    "deliveries_for_call",
    "extraction_from_captures",
    "generate_secret",
    "list_events",
    "prune",
    "retry",
    "retry_dead",
]
