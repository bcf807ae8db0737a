"""The dialer: outbound calls and campaigns through Exotel's Calls API.

Owns: the Exotel REST client (:mod:`exotel_api`), per-call variables behind a token
(:mod:`variables`), status callbacks and stream-end reports (:mod:`status`), call lists and the
DND file (:mod:`contacts`), India's calling rules and pacing (:mod:`rules`), the campaign engine
and its store layout (:mod:`campaign`, :mod:`campaign_state`), and who-answered detection
(:mod:`answered`).

Must not touch: calls, pipelines, the HTTP server or the CLI. It imports only ``bot.state`` and
libraries; the server calls :func:`handle_status_callback`, :func:`publish_stream_end` and
:func:`variables_for_stream`, the CLI builds a :class:`Campaign`.
"""

from bot.dialer.answered import AnswerDecision, AnswerDetector, classify_answer, is_opt_out
from bot.dialer.campaign import Campaign, CampaignSettings, Progress, RunResult, SystemClock
from bot.dialer.contacts import (
    Contact,
    ContactList,
    InvalidNumber,
    load_contacts,
    load_dnd,
    normalise_phone,
)
from bot.dialer.exotel_api import (
    ExotelApiError,
    ExotelAuthError,
    ExotelClient,
    ExotelRateLimited,
    PlacedCall,
)
from bot.dialer.rules import CallingWindow, Rate, RetryPolicy, RuleError, window_for
from bot.dialer.status import (
    StatusEvent,
    StreamEndEvent,
    callback_token,
    check_callback_token,
    handle_status_callback,
    publish_status,
    publish_stream_end,
    shared_callback_token,
    status_callback_url,
)
from bot.dialer.variables import store_call_variables, variables_for_stream

__all__ = [
    "AnswerDecision",
    "AnswerDetector",
    "CallingWindow",
    "Campaign",
    "CampaignSettings",
    "Contact",
    "ContactList",
    "ExotelApiError",
    "ExotelAuthError",
    "ExotelClient",
    "ExotelRateLimited",
    "InvalidNumber",
    "PlacedCall",
    "Progress",
    "Rate",
    "RetryPolicy",
    "RuleError",
    "RunResult",
    "StatusEvent",
    "StreamEndEvent",
    "SystemClock",
    "callback_token",
    "check_callback_token",
    "classify_answer",
    "handle_status_callback",
    "is_opt_out",
    "load_contacts",
    "load_dnd",
    "normalise_phone",
    "publish_status",
    "publish_stream_end",
    "shared_callback_token",
    "status_callback_url",
    "store_call_variables",
    "variables_for_stream",
    "window_for",
]
