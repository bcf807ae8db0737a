"""``watch_call``: one CallObserver attached to a built call session."""

from __future__ import annotations

from typing import Any

from bot.config import Settings
from bot.observability.metrics import Metrics
from bot.observability.records.observer import CallObserver
from bot.observability.records.redaction import configured_secrets


def watch_call(session: Any, settings: Settings, metrics: Metrics | None) -> CallObserver:
    """Attach a CallObserver to a built (not yet running) ``bot.telephony.call.CallSession``.

    Also records holding phrases if the session keeps its ``HoldingPhraseProcessor`` as
    ``session.holding``.
    """
    observer = CallObserver(
        session.info,
        metrics=metrics,
        records_dir=settings.call_records_dir,
        record_audio=settings.call_records_audio,
        secrets=configured_secrets(settings),
        started_at=session.started_at,
    )
    session.worker.add_observer(observer)
    observer.attach(session.transport.output(), session.serializer)
    holding = getattr(session, "holding", None)
    if holding is not None:
        observer.attach_holding(holding)
    language = getattr(session, "language", None)  # bot.conversation.language state
    observer.turn_language = getattr(language, "language_of_turn", None)
    return observer
