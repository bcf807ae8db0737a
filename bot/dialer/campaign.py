"""The campaign engine: dial a call list within the rules, survive restarts, never dial twice.

One :class:`Campaign` runs one call list. Its whole state is in the store
(:mod:`bot.dialer.campaign_state`), so running it again, from this process or another, continues
where it stopped. Every attempt is claimed (``store.claim``) before it is dialled; a claimed
attempt is never dialled again, and the contact is claimed anew only when Exotel certainly did
not place the call (or a retry rule asks for one more attempt).

A call is *live* from the API's answer until both its stream has ended and its terminal status
callback has arrived, or ``grace_secs`` (2 min) after the first of the two when the other never
comes, or ``time_out + time_limit + grace`` after dialling when neither does. ``concurrency``
bounds live calls. Status callbacks and stream ends arrive either through the store
(:func:`bot.dialer.status.publish_status` / ``publish_stream_end`` from the serving process,
pumped here) or directly (:meth:`Campaign.on_status`, :meth:`Campaign.on_stream_end`).

Dialling is sequential (one API request at a time): Exotel's answer takes a second or two and
the rate limit (at most 200 a minute) is the real bound. One runner per campaign at a time is the
intended use; a second one cannot double-dial (the claims), it only competes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TextIO

from loguru import logger

from bot.dialer.campaign_state import (
    SKIPPED_OUTCOMES,
    AttemptRecord,
    CampaignStore,
    ContactState,
    queue_name,
)
from bot.dialer.contacts import Contact
from bot.dialer.exotel_api import (
    ExotelApiError,
    ExotelAuthError,
    ExotelClient,
    ExotelRateLimited,
    PlacedCall,
)
from bot.dialer.rules import DEFAULT_HOURS, CallingWindow, Rate, RateLimiter, RetryPolicy
from bot.dialer.status import StatusEvent, StreamEndEvent, event_from_payload, events_queue
from bot.dialer.variables import call_record, index_call_sid, store_call_variables
from bot.state.base import QueuedItem, StateStore

MACHINE_OUTCOMES = frozenset({"unreachable", "busy", "voicemail", "ivr"})
RATE_LIMITED_BACKOFF_SECS = 60.0


class Clock(Protocol):
    """Unix time and sleeping; tests pass a fake one."""

    def now(self) -> float: ...

    async def sleep(self, secs: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, secs: float) -> None:
        await asyncio.sleep(max(0.0, secs))


@dataclass(frozen=True)
class CampaignSettings:
    """How a campaign dials. Exactly one of ``app_id`` (flow) and ``stream_url`` (Connect
    Voice AI, no transfer possible). ``window=None``: no calling hours (transactional)."""

    caller_id: str
    app_id: str | None = None
    stream_url: str | None = None
    status_callback: str | None = None
    concurrency: int = 5
    rate: Rate = field(default_factory=lambda: Rate(60, 60.0))
    window: CallingWindow | None = field(default_factory=lambda: CallingWindow.parse(DEFAULT_HOURS))
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    dnd: frozenset[str] = frozenset()
    time_limit: int = 900
    time_out: int = 30
    grace_secs: float = 120.0
    poll_secs: float = 0.5
    """Real seconds between looks at the store's event queue while calls are live."""

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("--concurrency must be at least 1")
        if (self.app_id is None) == (self.stream_url is None):
            raise ValueError("set EXOTEL_APP_ID (flow mode) or a stream URL (Connect Voice AI)")

    @property
    def live_timeout_secs(self) -> float:
        return self.time_out + self.time_limit + self.grace_secs


@dataclass(frozen=True)
class Progress:
    """Counts for the progress bar; ``eta_secs`` is None until something has finished."""

    total: int
    dialled: int
    answered: int
    completed: int
    failed: int
    skipped: int
    live: int
    remaining: int
    eta_secs: float | None = None


@dataclass(frozen=True)
class RunResult:
    """Why ``run`` returned: ``finished``, ``paused`` or ``outside_window`` (then
    ``next_window_start`` says when to come back)."""

    reason: str
    progress: Progress
    next_window_start: datetime | None = None


@dataclass
class _Live:
    index: int
    attempt: int
    call_sid: str
    placed_at: float
    answered: bool = False
    stream: StreamEndEvent | None = None
    stream_at: float | None = None
    terminal: StatusEvent | None = None
    terminal_at: float | None = None


class Campaign:
    """One named call list over a state store; see the module docstring."""

    def __init__(
        self,
        name: str,
        store: StateStore,
        client: ExotelClient | None,
        contacts: list[Contact] | None,
        settings: CampaignSettings | None,
        *,
        clock: Clock | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.name = name
        self.store = store
        self.client = client
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.on_progress = on_progress
        self.db = CampaignStore(store, name)
        self._contacts_in = contacts
        self._states: dict[int, ContactState] = {}
        self._phones: dict[int, str] = {}
        self._live: dict[str, _Live] = {}
        self._changed = asyncio.Event()
        self._limiter = RateLimiter(settings.rate) if settings else None
        self._started_at = self.clock.now()
        self._finished_here = 0
        self.max_live_seen = 0
        """The most calls live at once during this object's life (tests assert on it)."""

    # -- setup and reporting -------------------------------------------------------------------

    async def prepare(self) -> int:
        """Store the contacts the first time (queueing each); load the state. Returns the count."""
        count = await self.db.count()
        if count is None:
            if self._contacts_in is None:
                raise LookupError(f"no campaign named {self.name!r} in the state store")
            now = self.clock.now()
            await self.db.save_contacts(self._contacts_in, now)
            count = len(self._contacts_in)
        elif self._contacts_in is not None and len(self._contacts_in) != count:
            logger.warning(
                f"campaign {self.name}: the store holds {count} contacts, the file has "
                f"{len(self._contacts_in)}; continuing with the stored list (use a new --name "
                "for a new list)"
            )
        for index in range(count):
            state = await self.db.state(index)
            self._states[index] = state
            self._phones[index] = (await self.db.contact(index)).phone
            if state.status == "pending" and state.attempts == 0:
                await self.store.enqueue(self._queue, str(index), "", self.clock.now())
        return count

    async def progress(self) -> Progress:
        if not self._states:
            await self.prepare()
        states = list(self._states.values())
        done = [s for s in states if s.status == "done"]
        skipped = sum(1 for s in done if s.outcome in SKIPPED_OUTCOMES)
        completed = sum(1 for s in done if s.outcome == "completed")
        remaining = len(states) - len(done)
        elapsed = self.clock.now() - self._started_at
        eta = remaining * elapsed / self._finished_here if self._finished_here else None
        return Progress(
            total=len(states),
            dialled=sum(s.attempts for s in states),
            answered=sum(1 for s in states if s.answered),
            completed=completed,
            failed=len(done) - completed - skipped,
            skipped=skipped,
            live=len(self._live),
            remaining=remaining,
            eta_secs=eta,
        )

    async def pause(self) -> None:
        """Stop dialling new calls (live ones finish); seen by a runner in any process."""
        await self.db.set_paused(True)

    async def resume(self) -> None:
        await self.db.set_paused(False)

    async def export_csv(self, out: TextIO) -> int:
        """The results CSV (see :data:`bot.dialer.campaign_state.EXPORT_COLUMNS`)."""
        return await self.db.export_csv(out)

    @property
    def _queue(self) -> str:
        return queue_name(self.name)

    async def _report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(await self.progress())

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, *, wait_for_window: bool = False) -> RunResult:
        """Dial until every contact is done, the campaign is paused, or the window closes."""
        if self.client is None or self.settings is None or self._limiter is None:
            raise RuntimeError("a campaign needs an ExotelClient and settings to run")
        await self.prepare()
        await self._restore_live()
        while True:
            await self._pump()
            await self._expire()
            await self._report()
            if await self.db.paused():
                if not self._live:
                    return RunResult("paused", await self.progress())
                await self._wait_live()
                continue
            now = self.clock.now()
            window = self.settings.window
            if window is not None and not window.contains(now):
                if self._live:
                    await self._wait_live()
                    continue
                opening = window.next_window_start(now)
                if not wait_for_window:
                    return RunResult("outside_window", await self.progress(), opening)
                await self.clock.sleep(opening.timestamp() - now)
                continue
            if len(self._live) >= self.settings.concurrency:
                await self._wait_live()
                continue
            items = await self.store.take_due(self._queue, now, self._lease_secs, limit=1)
            if items:
                await self._process(items[0])
                continue
            pending = await self.store.items(self._queue)
            if not pending and not self._live:
                await self._report()
                return RunResult("finished", await self.progress())
            next_due = min(item.due_at for item in pending) if pending else None
            if self._live:
                await self._wait_live(None if next_due is None else next_due - now)
            elif next_due is not None:
                await self.clock.sleep(next_due - now)

    @property
    def _lease_secs(self) -> float:
        assert self.settings is not None
        return self.settings.live_timeout_secs

    async def _wait_live(self, timeout: float | None = None) -> None:
        """Wait (real time, bounded by ``poll_secs``) for an event while calls are live."""
        assert self.settings is not None
        bound = (
            self.settings.poll_secs if timeout is None else min(timeout, self.settings.poll_secs)
        )
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), max(0.0, bound))
        except TimeoutError:
            pass

    async def _process(self, item: QueuedItem) -> None:
        index = int(item.item_id)
        state = self._states[index]
        if state.status == "done":
            await self.store.remove(self._queue, item.item_id)
            return
        phone = self._phones[index]
        assert self.settings is not None
        if phone in self.settings.dnd:
            await self._close_contact(index, "dnd_skipped")
            return
        if await self.db.opted_out(phone):
            await self._close_contact(index, "opted_out")
            return
        attempt = state.next_attempt
        record = AttemptRecord(attempt, self.clock.now())
        if not await self.db.claim_attempt(index, record):
            await self._recover_claimed(index, attempt)
            return
        await self._dial(index, record)

    async def _dial(self, index: int, record: AttemptRecord) -> None:
        """Place attempt ``record`` for contact ``index`` (already claimed)."""
        assert self.client is not None and self.settings is not None and self._limiter
        contact = await self.db.contact(index)
        meta = {
            "campaign": self.name,
            "contact": index,
            "attempt": record.attempt,
            "phone": contact.phone,  # the call records an opt-out under it
        }
        record.token = await store_call_variables(self.store, contact.variables, meta=meta)
        await self.db.save_attempt(index, record)
        state = self._states[index]
        state.status = "live"
        await self.db.save_state(index, state)
        await self.clock.sleep(self._limiter.wait_secs(self.clock.now()))
        self._limiter.consume(self.clock.now())
        try:
            placed = await self._connect(contact.phone, record.token)
        except ExotelApiError as exc:
            await self._dial_failed(index, record, exc)
            return
        record.call_sid = placed.call_sid
        await self.db.save_attempt(index, record)
        await index_call_sid(self.store, record.token, placed.call_sid)
        state.attempts += 1
        state.call_sid = placed.call_sid
        state.answered = False
        await self.db.save_state(index, state)
        self._add_live(_Live(index, record.attempt, placed.call_sid, self.clock.now()))
        # Not due again while live; if this process dies, recovery takes it after the lease.
        await self.store.reschedule(self._queue, str(index), self.clock.now() + self._lease_secs)

    async def _connect(self, phone: str, token: str) -> PlacedCall:
        assert self.client is not None and self.settings is not None
        s = self.settings
        return await self.client.connect_call(
            phone,
            s.caller_id,
            app_id=s.app_id,
            stream_url=s.stream_url,
            custom_field=token,
            status_callback=s.status_callback,
            time_limit=s.time_limit,
            time_out=s.time_out,
        )

    async def _dial_failed(self, index: int, record: AttemptRecord, exc: ExotelApiError) -> None:
        state = self._states[index]
        if exc.placed is False and isinstance(exc, ExotelAuthError | ExotelRateLimited):
            # Known not placed: the next claim may dial it. Auth errors stop the run.
            record.result = "not_placed"
            state.status, state.next_attempt = "retry", record.attempt + 1
            await self.db.save_state(index, state)
            await self.db.save_attempt(index, record)
            delay = 0.0 if isinstance(exc, ExotelAuthError) else RATE_LIMITED_BACKOFF_SECS
            await self.store.reschedule(self._queue, str(index), self.clock.now() + delay)
            if isinstance(exc, ExotelAuthError):
                raise exc
            logger.warning(f"campaign {self.name}: {exc}; contact {index} again in {delay:g} s")
            return
        outcome = "api_error" if exc.placed is False else "unknown"
        logger.warning(f"campaign {self.name}: contact {index} attempt {record.attempt}: {exc}")
        if outcome == "api_error":
            state.attempts += 1  # Exotel saw and refused it: it counts as an attempt
        await self._settle(index, record, outcome, {})

    # -- events --------------------------------------------------------------------------------

    async def on_status(self, event: StatusEvent) -> bool:
        """Apply a status callback; False when it is not about a live call of this campaign."""
        live = self._live.get(event.call_sid)
        if live is None:
            return False
        if event.event_type == "answered":
            live.answered = True
            self._states[live.index].answered = True
        elif live.terminal is None:
            live.terminal, live.terminal_at = event, self.clock.now()
        self._changed.set()
        await self._maybe_finish(live)
        return True

    async def on_stream_end(self, event: StreamEndEvent) -> bool:
        """Apply a stream end; False when it is not about a live call of this campaign."""
        live = self._live.get(event.call_sid)
        if live is None or live.stream is not None:
            return False
        live.stream, live.stream_at = event, self.clock.now()
        live.answered = True
        self._states[live.index].answered = True
        self._changed.set()
        await self._maybe_finish(live)
        return True

    async def _pump(self) -> None:
        """Apply the events the serving process routed to this campaign through the store."""
        queue = events_queue(self.name)
        while True:
            items = await self.store.take_due(queue, self.clock.now() + 1e9, 60.0, limit=50)
            if not items:
                return
            for item in items:
                event = event_from_payload(item.payload)
                if event.call_sid not in self._live:
                    await self._adopt(event)
                if isinstance(event, StatusEvent):
                    await self.on_status(event)
                else:
                    await self.on_stream_end(event)
                await self.store.remove(queue, item.item_id)

    async def _adopt(self, event: StatusEvent | StreamEndEvent) -> None:
        """An event for a call this object did not place: a previous run's, still in flight."""
        found = await call_record(self.store, event.custom_field, event.call_sid)
        meta = (found or {}).get("meta", {})
        if meta.get("campaign") != self.name:
            return
        index, attempt = int(meta["contact"]), int(meta["attempt"])
        record = await self.db.attempt(index, attempt)
        if record is None or record.result is not None:
            logger.info(f"campaign {self.name}: late {type(event).__name__} for {event.call_sid}")
            return
        if record.call_sid is None:
            record.call_sid = event.call_sid
            await self.db.save_attempt(index, record)
            state = self._states[index]
            state.attempts += 1
            state.call_sid = event.call_sid
        self._add_live(_Live(index, attempt, event.call_sid, record.claimed_at))

    def _add_live(self, live: _Live) -> None:
        self._live[live.call_sid] = live
        self.max_live_seen = max(self.max_live_seen, len(self._live))

    async def _restore_live(self) -> None:
        for index, record in await self.db.in_flight():
            if record.call_sid and record.call_sid not in self._live:
                self._add_live(_Live(index, record.attempt, record.call_sid, record.claimed_at))

    async def _recover_claimed(self, index: int, attempt: int) -> None:
        """The attempt was claimed before (a run that stopped): never dial it again."""
        assert self.settings is not None
        record = await self.db.attempt(index, attempt)
        state = self._states[index]
        if record is None:
            return
        if record.result == "not_placed":
            state.next_attempt = attempt + 1
            await self.db.save_state(index, state)
            await self.store.reschedule(self._queue, str(index), self.clock.now())
        elif record.result is not None or record.call_sid is not None:
            return  # settled, or in flight and tracked as live (its item is leased)
        elif self.clock.now() - record.claimed_at < self.settings.live_timeout_secs:
            # Stopped between claim and Exotel's answer: the call may be ringing. Its events
            # (routed by the token) will adopt it; otherwise it settles as unknown later.
            due = record.claimed_at + self.settings.live_timeout_secs
            await self.store.reschedule(self._queue, str(index), due)
        else:
            await self._settle(index, record, "unknown", {})

    async def _expire(self) -> None:
        assert self.settings is not None
        now, grace = self.clock.now(), self.settings.grace_secs
        for live in list(self._live.values()):
            late = (live.stream_at is not None and now - live.stream_at >= grace) or (
                live.terminal_at is not None and now - live.terminal_at >= grace
            )
            if late or now - live.placed_at >= self.settings.live_timeout_secs:
                await self._finish(live)

    async def _maybe_finish(self, live: _Live) -> None:
        never_answered = (
            live.terminal is not None and live.terminal.status != "completed" and not live.answered
        )
        if (live.stream is not None and live.terminal is not None) or never_answered:
            await self._finish(live)

    async def _finish(self, live: _Live) -> None:
        if self._live.pop(live.call_sid, None) is None:
            return
        stream, terminal = live.stream, live.terminal
        if stream is not None and stream.outcome in MACHINE_OUTCOMES:
            outcome = stream.outcome
        elif terminal is not None and terminal.status:
            outcome = terminal.status
        else:
            outcome = stream.outcome if stream is not None else "unknown"
        duration = terminal.conversation_duration if terminal else None
        if duration is None and stream is not None:
            duration = stream.duration_secs
        details = {
            "duration_secs": duration,
            "transferred": bool(stream and stream.transferred),
            "opt_out": bool(stream and stream.opt_out),
            "extraction": dict(stream.extraction) if stream else {},
        }
        record = await self.db.attempt(live.index, live.attempt)
        record = record or AttemptRecord(live.attempt, live.placed_at, call_sid=live.call_sid)
        await self._settle(live.index, record, outcome, details)
        self._changed.set()

    async def _settle(
        self, index: int, record: AttemptRecord, outcome: str, details: dict[str, object]
    ) -> None:
        """Record an attempt's outcome; schedule the retry its rule allows, or close the contact."""
        assert self.settings is not None
        state = self._states[index]
        state.outcome = outcome
        state.duration_secs = details.get("duration_secs")  # type: ignore[assignment]
        state.transferred = bool(details.get("transferred"))
        state.opt_out = state.opt_out or bool(details.get("opt_out"))
        state.extraction = dict(details.get("extraction") or {})  # type: ignore[call-overload]
        if state.opt_out:
            await self.db.record_opt_out(self._phones[index], record.call_sid)
        delay = None if state.opt_out else self.settings.retry.delay_for(outcome, state.retries)
        if delay is None:
            state.status = "done"
            self._finished_here += 1
            await self.db.save_state(index, state)
            await self.store.remove(self._queue, str(index))
        else:
            rule = self.settings.retry.rule_for(outcome)
            assert rule is not None
            state.retries[rule.key] = state.retries.get(rule.key, 0) + 1
            state.status, state.next_attempt = "retry", record.attempt + 1
            await self.db.save_state(index, state)
            await self.store.reschedule(self._queue, str(index), self.clock.now() + delay)
        record.result = outcome
        await self.db.save_attempt(index, record)
        logger.info(f"campaign {self.name}: contact {index} attempt {record.attempt}: {outcome}")

    async def _close_contact(self, index: int, outcome: str) -> None:
        state = self._states[index]
        state.status, state.outcome = "done", outcome
        self._finished_here += 1
        await self.db.save_state(index, state)
        await self.store.remove(self._queue, str(index))
