"""Delivery: what leaves the bot after a call, signed, and never lost.

Owns: the post-call events and their envelope (:mod:`bot.delivery.events`: ``call.ended``,
``call.status``), Standard Webhooks signing (:mod:`bot.delivery.signing`), the durable outbox
that stores each event before its first attempt and retries it across restarts
(:mod:`bot.delivery.outbox`, with the operator functions behind ``python -m bot webhooks``),
and the optional summary/extraction of a call (:mod:`bot.delivery.analysis`).

Must not touch: calls, pipelines, the HTTP server, metrics or logs configuration. It imports
only ``bot.state`` and libraries; the server wires it in (metrics through ``on_event`` and
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
from bot.delivery.outbox import (
    Delivery,
    Outbox,
    deliveries_for_call,
    list_events,
    prune,
    retry,
    retry_dead,
)
from bot.delivery.signing import Signer, generate_secret

__all__ = [
    "AnalysisConfig",
    "AnalysisResult",
    "CallEndedData",
    "Delivery",
    "Event",
    "LLMEndpoint",
    "Outbox",
    "Signer",
    "Turn",
    "analyze",
    "call_ended_event",
    "call_status_event",
    "deliveries_for_call",
    "extraction_from_captures",
    "generate_secret",
    "list_events",
    "prune",
    "retry",
    "retry_dead",
]
