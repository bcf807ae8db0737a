"""The delivery room at work in a server: after each call, and when Exotel reports on one.

:class:`PostCall` is what the server holds (``runtime.post_call``). At a call's end the server
hands it the record (:meth:`PostCall.spawn`) and goes on at once; a task of its own then
builds ``call.ended`` (:mod:`bot.delivery.from_record`), adds the summary and extraction when
``[analysis]`` asks (bounded by its timeout; a failure is written into the event), keeps the
call for the calls page (:mod:`bot.delivery.calls`) and stores the event in the outbox, which
sends it from its own worker. Nothing here runs on a call's path or blocks the event loop.

:meth:`PostCall.call_status` does the same for Exotel's status reports (Passthru now, the
dialer's status callbacks later). A periodic task prunes what is older than the retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from loguru import logger

from bot.config import ConfigError, Settings
from bot.delivery.analysis import AnalysisConfig, LLMEndpoint, analyze, extraction_from_captures
from bot.delivery.calls import save_call, save_status
from bot.delivery.events import CallEndedData, Event, call_ended_event, call_status_event
from bot.delivery.from_record import CallContext, call_ended_data
from bot.delivery.outbox import Outbox, prune
from bot.delivery.signing import SecretError, secret_key
from bot.observability.records.retention import prune_record_files
from bot.state.base import StateStore, StateUnavailable

DEFAULT_OPENAI_URL = "https://api.openai.com/v1"
PRUNE_EVERY_SECS = 3600.0
STOP_WAIT_SECS = 25.0  # in-flight post-call tasks (an analysis is bounded by ~20 s)
# Looks up the agent's transfer of a call ({"reason", "department"}) or None.
TransferLookup = Callable[[str], Awaitable[Mapping[str, Any] | None]]


def check_webhook_settings(settings: Settings) -> None:
    """A webhook URL needs a usable secret; raise ConfigError naming the key and the fix."""
    if not settings.webhook_url:
        return
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
    if not secret:
        raise ConfigError(
            "WEBHOOK_URL ([webhooks] url) is set but WEBHOOK_SECRET ([webhooks] secret) is not: "
            "every webhook is signed. Generate one with `python -m bot webhooks secret` and "
            "give the same value to the receiver"
        )
    try:
        secret_key(secret)
    except SecretError as e:
        raise ConfigError(f"{e} (`python -m bot webhooks secret` makes a new one)") from None


def llm_endpoint(settings: Settings, llm_name: str) -> LLMEndpoint | None:
    """The OpenAI-compatible endpoint the calls use, or None (the scripted responder)."""
    if llm_name != "openai" or settings.openai_api_key is None:
        return None
    return LLMEndpoint(
        base_url=settings.openai_base_url or DEFAULT_OPENAI_URL,
        api_key=settings.openai_api_key.get_secret_value(),
        model=settings.openai_model,
    )


class PostCall:
    """After-call work of one server process; see the module docstring."""

    def __init__(
        self,
        store: StateStore,
        *,
        context: CallContext,
        analysis: AnalysisConfig | None = None,
        endpoint: LLMEndpoint | None = None,
        outbox: Outbox | None = None,
        retention_secs: float = 30 * 86400.0,
        records_dir: Path | None = None,
        transfer_lookup: TransferLookup | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self._context = context
        self._analysis = analysis or AnalysisConfig()
        self._endpoint = endpoint
        self._retention = retention_secs
        self._records_dir = records_dir
        self._transfer_lookup = transfer_lookup
        self._clock = clock
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pruner: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: StateStore,
        *,
        context: CallContext,
        analysis: AnalysisConfig | None,
        llm_name: str,
        on_event: Callable[[str], None] | None = None,
        transfer_lookup: TransferLookup | None = None,
    ) -> PostCall:
        """The server's PostCall: an outbox when WEBHOOK_URL is set (checked first)."""
        check_webhook_settings(settings)
        retention = settings.call_records_retention_days * 86400.0
        outbox = None
        if settings.webhook_url:
            outbox = Outbox(
                store,
                settings.webhook_url,
                settings.webhook_secret.get_secret_value(),  # type: ignore[union-attr]
                give_up_secs=settings.webhook_give_up_secs,
                timeout_secs=settings.webhook_timeout_secs,
                on_event=on_event,
                retention_secs=retention,
                first_retry_secs=settings.webhook_first_retry_secs,
                # look for due retries at least as often as the shortest backoff
                poll_secs=min(1.0, settings.webhook_first_retry_secs),
            )
        return cls(
            store,
            context=context,
            analysis=analysis,
            endpoint=llm_endpoint(settings, llm_name),
            outbox=outbox,
            retention_secs=retention,
            records_dir=settings.call_records_dir,
            transfer_lookup=transfer_lookup,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the outbox's worker and the retention task (in the running loop)."""
        if self.outbox is not None:
            self.outbox.start()
        if self._pruner is None:
            self._pruner = asyncio.create_task(self._prune_periodically(), name="retention")

    async def stop(self) -> None:
        """Let in-flight post-call tasks store their events, then stop the outbox.

        Events not sent yet stay in the store; the next start sends them.
        """
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=STOP_WAIT_SECS)
            for task in late:
                logger.warning("post-call work still running at shutdown; cancelled")
                task.cancel()
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
            self._pruner = None
        if self.outbox is not None:
            await self.outbox.stop()

    async def idle(self) -> None:
        """Wait for the post-call tasks running now (tests, and stop)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    # -- after a call ------------------------------------------------------------------------

    def spawn(self, record: Mapping[str, Any], captures: Mapping[str, Any] | None = None) -> None:
        """Hand over a finished call's record; returns at once (the work runs in a task)."""
        if not record or not record.get("call_sid"):
            return
        task = asyncio.create_task(self.call_ended(record, captures), name="post-call")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def call_ended(
        self, record: Mapping[str, Any], captures: Mapping[str, Any] | None = None
    ) -> Event | None:
        """Build, analyse, keep and queue one call's ``call.ended``; never raises."""
        try:
            transfer = await self._transfer(str(record["call_sid"]))
            data = call_ended_data(record, replace(self._context, transfer=transfer))
            data = await self._analysed(data, captures or record.get("captures"))
            event = call_ended_event(data)
            await self._keep(event, record)
            return event
        except Exception:
            logger.exception("call.ended not built or not stored; this call's event is lost")
            return None

    async def _transfer(self, call_sid: str) -> Mapping[str, Any] | None:
        if self._transfer_lookup is None:
            return None
        try:
            return await self._transfer_lookup(call_sid)
        except (StateUnavailable, OSError) as e:
            logger.warning(f"transfer state unreadable for call.ended: {e}")
            return None

    async def _analysed(
        self, data: CallEndedData, captures: Mapping[str, Any] | None
    ) -> CallEndedData:
        config = self._analysis
        if not config.enabled:
            return data
        if self._endpoint is not None:
            result = await analyze(config, data.turns, self._endpoint)
            return replace(
                data,
                summary=result.summary,
                extraction=result.extraction,
                analysis_error=result.error,
            )
        # No LLM (the scripted responder): the fields its intents captured, no summary.
        error = "no LLM in use: no summary" if config.summary else None
        extraction = None
        if config.extract is not None:
            extraction = extraction_from_captures(config.extract, captures or {})
        return replace(data, extraction=extraction, analysis_error=error)

    async def _keep(self, event: Event, record: Mapping[str, Any]) -> None:
        """The calls page's copy, then the outbox (each failure logged, neither blocks)."""
        try:
            await save_call(self.store, event.data, record, self._retention)
        except StateUnavailable as e:
            logger.warning(f"call not kept for the calls page (state store: {e})")
        if self.outbox is not None:
            try:
                await self.outbox.add(event)
            except StateUnavailable as e:
                logger.error(f"webhook {event.type} {event.id} LOST: state store unavailable: {e}")

    # -- Exotel's status reports -------------------------------------------------------------

    def publish_status(self, fields: Mapping[str, Any]) -> None:
        """Hand over a status report (Passthru's fields, a status callback's); returns at once."""
        task = asyncio.create_task(self.call_status(dict(fields)), name="call-status")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def call_status(self, fields: Mapping[str, Any]) -> Event | None:
        """``call.status`` from Passthru / a status callback: kept for the page, queued."""
        try:
            event = call_status_event(fields, now=self._clock())
        except ValueError as e:
            logger.warning(f"call.status not sent: {e}")
            return None
        try:
            await save_status(self.store, event.call_sid, event.data, self._retention)
            if self.outbox is not None:
                await self.outbox.add(event)
        except StateUnavailable as e:
            logger.error(f"call.status {event.id} not stored: state store unavailable: {e}")
        return event

    # -- retention ---------------------------------------------------------------------------

    async def prune_once(self) -> int:
        """Delivered events and record files older than the retention; how many removed.

        Calls kept for the page expire by themselves (their keys have the retention as TTL).
        """
        removed = await prune(self.store, self._retention, now=self._clock())
        if self._records_dir is not None:
            removed += await asyncio.to_thread(
                prune_record_files, self._records_dir, self._retention, self._clock()
            )
        return removed

    async def _prune_periodically(self) -> None:
        while True:
            try:
                removed = await self.prune_once()
                if removed:
                    logger.info(f"retention: removed {removed} old events and records")
            except Exception:
                logger.exception("retention pass failed")
            await asyncio.sleep(PRUNE_EVERY_SECS)
