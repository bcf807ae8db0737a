"""The durable outbox: every event is stored before it is sent, and sent until it is settled.

Why: a call's data is what the business wants from it, and a crash, a restart or a receiver
that is down for an hour must not lose it. So :meth:`Outbox.add` only writes the event to the
state store (a fast local write) and a worker task sends it, off the call's path:

* 2xx -> ``delivered``; 410 Gone -> ``gone`` (the receiver asked us to stop; no more attempts);
* anything else, a timeout or a refused connection -> another attempt after an exponential
  backoff with full jitter (about 5 s doubling to a 1 h cap; a 429/503 ``Retry-After`` is
  honoured up to the cap), until ``give_up_secs`` after creation -> ``dead`` (kept; an operator
  can :func:`retry` it).

Every attempt carries the same ``webhook-id`` (the receiver's idempotency key) with a fresh
``webhook-timestamp`` and signature, as the Standard Webhooks spec asks. Delivery is at least
once: a process killed after the receiver answered but before the result was stored sends the
event again, with the same id.

Store layout (any :class:`~bot.state.base.StateStore`):

* queue ``webhooks``: the live events (``pending``, and ``dead`` ones, never due). The worker
  takes due items with a lease, so several processes on one Redis never send one event at
  the same time, and an event whose worker died is due again when its lease runs out;
* key ``webhooks:done:<call_sid>:<event_id>``: a settled (``delivered``/``gone``) event, kept
  for the calls page until :func:`prune` removes it. Kept out of the queue so that the worker's
  and the gauge's scans stay as small as the backlog.

Each payload is JSON: ``id, type, call_sid, body, created_at, give_up_from, state, attempts
[{at, status|error}], finished_at``. ``body`` is the exact text signed and sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from loguru import logger

from bot.delivery.events import Event
from bot.delivery.signing import Signer
from bot.state.base import QueuedItem, StateStore, StateUnavailable

QUEUE = "webhooks"
DONE_PREFIX = "webhooks:done:"
NEVER = 253402300799.0  # 9999-12-31: "not due", a finite number every backend can store
STATES = ("pending", "delivered", "dead", "gone")
FIRST_RETRY_SECS = 5.0
MAX_RETRY_SECS = 3600.0
MAX_ATTEMPTS_KEPT = 100  # a day of hourly retries is ~30; the cap bounds a payload anyway


@dataclass(frozen=True)
class Delivery:
    """One event as the operator and the calls page see it."""

    id: str
    type: str
    call_sid: str
    state: str
    created_at: float
    attempts: list[dict[str, Any]]
    next_attempt_at: float | None
    finished_at: float | None
    body: str

    @classmethod
    def from_payload(cls, payload: dict[str, Any], due_at: float | None = None) -> Delivery:
        pending = payload["state"] == "pending" and due_at is not None and due_at < NEVER
        return cls(
            id=payload["id"],
            type=payload["type"],
            call_sid=payload["call_sid"],
            state=payload["state"],
            created_at=payload["created_at"],
            attempts=list(payload["attempts"]),
            next_attempt_at=due_at if pending else None,
            finished_at=payload.get("finished_at"),
            body=payload["body"],
        )

    def to_json(self, include_body: bool = False) -> dict[str, Any]:
        data = {
            "id": self.id,
            "type": self.type,
            "call_sid": self.call_sid,
            "state": self.state,
            "created_at": self.created_at,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at,
            "finished_at": self.finished_at,
        }
        if include_body:
            data["body"] = self.body
        return data


def done_key(call_sid: str, event_id: str) -> str:
    # quote: a ':' in a call sid must not make one call's prefix match another's keys
    return f"{DONE_PREFIX}{quote(call_sid, safe='')}:{event_id}"


def retry_delay(failures: int, rng: random.Random, first: float = FIRST_RETRY_SECS) -> float:
    """Full jitter over ``first * 2**(failures-1)`` (5 s by default) capped at 1 h; at least
    1 s (or ``first`` when that is shorter: tests drive the outbox in milliseconds).

    Full jitter spreads the retries of many events failing together (a receiver outage) over
    the whole window instead of sending them back in step; the 1 s floor keeps a failing
    receiver from being hit again at once.
    """
    ceiling = min(MAX_RETRY_SECS, first * 2 ** max(0, failures - 1))
    return max(min(1.0, first), rng.uniform(0.0, ceiling))


class Outbox:
    """Stores events and sends them to one endpoint, signed, from a background task.

    on_event(state) is called for ``delivered``, ``retried``, ``dead`` and ``gone`` (the
    server counts them in ``exotel_webhook_events_total``); :meth:`pending` is the last known
    backlog (``exotel_webhook_pending``). Neither may raise or block.
    """

    def __init__(
        self,
        store: StateStore,
        url: str,
        secret: str,
        *,
        give_up_secs: float = 86400.0,
        timeout_secs: float = 10.0,
        clock: Callable[[], float] = time.time,
        session_factory: Callable[[], aiohttp.ClientSession] | None = None,
        on_event: Callable[[str], None] | None = None,
        retention_secs: float | None = 30 * 86400.0,
        poll_secs: float = 1.0,
        batch: int = 10,
        rng: random.Random | None = None,
        first_retry_secs: float = FIRST_RETRY_SECS,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"WEBHOOK_URL must be an http(s) URL with a host, not {url!r}")
        if give_up_secs <= 0 or timeout_secs <= 0:
            raise ValueError("WEBHOOK_GIVE_UP_SECS and the webhook timeout must be positive")
        self.store = store
        self._url = url
        # what logs show: no query (it may carry a token) and no user:password
        self._safe_url = (
            f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"
        )
        self._safe_url += parts.path
        self._signer = Signer(secret)
        self._give_up = give_up_secs
        self._timeout = timeout_secs
        self._lease = timeout_secs + 30.0  # longer than any attempt, so a live worker keeps it
        self._clock = clock
        self._session_factory = session_factory or _default_session
        self._session: aiohttp.ClientSession | None = None
        self._on_event = on_event
        self._retention = retention_secs
        self._poll = poll_secs
        self._batch = batch
        self._rng = rng or random.Random()
        self._first_retry = first_retry_secs
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._pending = 0
        self._pending_at = -1e18
        self._pruned_at = -1e18

    # -- producing ---------------------------------------------------------------------------

    async def add(self, event: Event) -> bool:
        """Store ``event`` for delivery; False when this id is already stored (idempotent).

        Only store writes happen here, never HTTP, so ending a call never waits on the
        receiver. Raises :class:`StateUnavailable` when the store cannot take it: the caller
        logs that loudly, since the event is then lost.
        """
        if await self.store.get(done_key(event.call_sid, event.id)) is not None:
            return False
        now = self._clock()
        payload = {
            "id": event.id,
            "type": event.type,
            "call_sid": event.call_sid,
            "body": event.body(),
            "created_at": now,
            "give_up_from": now,
            "state": "pending",
            "attempts": [],
            "finished_at": None,
        }
        added = await self.store.enqueue(QUEUE, event.id, json.dumps(payload), now)
        if added:
            self._pending += 1
            self._wake.set()
            logger.debug(f"webhook {event.type} {event.id} queued for {self._safe_url}")
        return added

    def pending(self) -> int:
        """Events waiting for delivery, as of the worker's last count (every ~10 s)."""
        return self._pending

    # -- the worker --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background worker in the running event loop (once)."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="webhook-outbox")

    async def stop(self) -> None:
        """Stop the worker and close its HTTP session; unsent events stay in the store.

        An attempt in flight is given its timeout to finish; if cancelled, its lease runs out
        and the next worker (this process after a restart, or another) sends it again.
        """
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            task, self._task = self._task, None
            _, running = await asyncio.wait({task}, timeout=self._timeout + 1.0)
            if running:
                task.cancel()
                await asyncio.wait({task})
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def _run(self) -> None:
        while not self._stopping:
            taken = 0
            self._wake.clear()  # before the pass: an add() during it wakes the next wait
            try:
                taken = await self.run_once()
                await self._housekeeping()
            except StateUnavailable as e:
                logger.warning(f"webhook outbox: state store unavailable, retrying: {e}")
            except Exception:
                logger.exception("webhook outbox pass failed")
            if taken < self._batch and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll)

    async def run_once(self) -> int:
        """One pass: lease the due events and attempt each once, concurrently; how many."""
        items = await self.store.take_due(QUEUE, self._clock(), self._lease, self._batch)
        results = await asyncio.gather(
            *(self._attempt(item) for item in items), return_exceptions=True
        )
        for item, result in zip(items, results, strict=True):
            if isinstance(result, Exception):  # its lease runs out and it is attempted again
                logger.warning(f"webhook {item.item_id}: attempt not recorded: {result!r}")
        return len(items)

    async def _housekeeping(self) -> None:
        now = self._clock()
        if now - self._pending_at >= 10.0:
            self._pending_at = now
            self._pending = await _count_pending(self.store)
        if self._retention is not None and now - self._pruned_at >= 3600.0:
            self._pruned_at = now
            await prune(self.store, self._retention, now=now)

    async def _attempt(self, item: QueuedItem) -> None:
        try:
            payload = json.loads(item.payload)
        except ValueError:
            logger.error(f"webhook outbox: unreadable item {item.item_id}; parked as dead")
            await self.store.reschedule(QUEUE, item.item_id, NEVER)
            return
        if payload["state"] != "pending":  # a dead item is never due; be safe if one is
            await self.store.reschedule(QUEUE, item.item_id, NEVER)
            return
        key = done_key(payload["call_sid"], payload["id"])
        if await self.store.get(key) is not None:  # settled, but the removal was lost (crash)
            await self.store.remove(QUEUE, item.item_id)
            return
        result, retry_after = await self._post(payload)
        now = self._clock()
        payload["attempts"] = [*payload["attempts"], {"at": now, **result}][-MAX_ATTEMPTS_KEPT:]
        status = result.get("status")
        if isinstance(status, int) and 200 <= status < 300:
            await self._settle(payload, "delivered", now)
        elif status == 410:
            await self._settle(payload, "gone", now)
        elif now - payload["give_up_from"] >= self._give_up:
            payload["state"] = "dead"
            await self.store.reschedule(QUEUE, item.item_id, NEVER, json.dumps(payload))
            logger.error(
                f"webhook {payload['type']} {payload['id']} dead after "
                f"{len(payload['attempts'])} attempts to {self._safe_url}: {_describe(result)}"
            )
            self._emit("dead")
        else:
            await self._schedule_retry(payload, now, retry_after, result)

    async def _schedule_retry(
        self, payload: dict[str, Any], now: float, retry_after: float | None, result: dict
    ) -> None:
        failures = sum(1 for a in payload["attempts"] if a["at"] >= payload["give_up_from"])
        delay = retry_delay(failures, self._rng, self._first_retry)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_SECS))
        # the last attempt happens at the give-up time, so "dead" is declared on time
        due = min(now + delay, payload["give_up_from"] + self._give_up)
        await self.store.reschedule(QUEUE, payload["id"], due, json.dumps(payload))
        logger.warning(
            f"webhook {payload['type']} {payload['id']} attempt {len(payload['attempts'])} "
            f"failed ({_describe(result)}); next in {due - now:.0f} s"
        )
        self._emit("retried")

    async def _settle(self, payload: dict[str, Any], state: str, now: float) -> None:
        """Record the final state, then take the event out of the queue (that order: a crash
        in between leaves it queued, and the next attempt sees the record and drops it)."""
        payload["state"] = state
        payload["finished_at"] = now
        await self.store.set(done_key(payload["call_sid"], payload["id"]), json.dumps(payload))
        await self.store.remove(QUEUE, payload["id"])
        self._pending = max(0, self._pending - 1)
        if state == "gone":
            logger.warning(f"webhook {payload['id']}: {self._safe_url} answered 410 Gone")
        else:
            logger.info(f"webhook {payload['type']} {payload['id']} delivered")
        self._emit(state)

    async def _post(self, payload: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
        """One POST; ({"status": n} or {"error": why}, Retry-After seconds or None)."""
        body = payload["body"].encode()
        headers = {
            "content-type": "application/json",
            **self._signer.headers(payload["id"], int(self._clock()), body),
        }
        if self._session is None or self._session.closed:
            self._session = self._session_factory()
        try:
            async with self._session.post(
                self._url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                allow_redirects=False,  # only a 2xx is success; a redirect is a failure
            ) as response:
                retry_after = _retry_after(response) if response.status in (429, 503) else None
                return {"status": response.status}, retry_after
        except TimeoutError:
            return {"error": f"timeout after {self._timeout:g} s"}, None
        except (aiohttp.ClientError, OSError) as e:
            message = str(e).replace(self._url, self._safe_url)
            return {"error": f"{e.__class__.__name__}: {message}"[:300]}, None

    def _emit(self, state: str) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(state)
        except Exception:  # a metrics bug must not stop deliveries
            logger.exception("webhook on_event callback failed")


def _default_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(headers={"user-agent": "exotel-voicebot-webhooks"})


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None  # the HTTP-date form is rare for webhooks; the backoff applies


def _describe(result: dict[str, Any]) -> str:
    return f"HTTP {result['status']}" if "status" in result else str(result.get("error"))


# --------------------------------------------------------------------------------------------
# Operators (python -m bot webhooks ...) and the calls page
# --------------------------------------------------------------------------------------------


async def _live(store: StateStore) -> list[tuple[QueuedItem, dict[str, Any]]]:
    found = []
    for item in await store.items(QUEUE):
        try:
            found.append((item, json.loads(item.payload)))
        except ValueError:
            logger.error(f"webhook outbox: unreadable item {item.item_id} skipped")
    return found


async def _settled(store: StateStore, prefix: str = DONE_PREFIX) -> list[tuple[str, dict]]:
    found = []
    for key in await store.keys(prefix):
        value = await store.get(key)
        if value is not None:
            found.append((key, json.loads(value)))
    return found


async def _count_pending(store: StateStore) -> int:
    return sum(1 for _, payload in await _live(store) if payload["state"] == "pending")


async def list_events(store: StateStore, state: str | None = None) -> list[Delivery]:
    """Every stored event (or those in ``state``), oldest first."""
    if state is not None and state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}, not {state!r}")
    found = [Delivery.from_payload(p, item.due_at) for item, p in await _live(store)]
    found += [Delivery.from_payload(p) for _, p in await _settled(store)]
    chosen = (d for d in found if state in (None, d.state))
    return sorted(chosen, key=lambda d: (d.created_at, d.id))


async def deliveries_for_call(store: StateStore, call_sid: str) -> list[Delivery]:
    """One call's events and their delivery state, oldest first (for ``/calls/{sid}``)."""
    found = [
        Delivery.from_payload(p, item.due_at)
        for item, p in await _live(store)
        if p["call_sid"] == call_sid
    ]
    prefix = f"{DONE_PREFIX}{quote(call_sid, safe='')}:"
    found += [Delivery.from_payload(p) for _, p in await _settled(store, prefix)]
    return sorted(found, key=lambda d: (d.created_at, d.id))


async def retry(store: StateStore, event_id: str, *, now: float | None = None) -> bool:
    """Send ``event_id`` again now, whatever its state, with a fresh give-up clock.

    False when no such event is stored. A delivered event is sent again with the same id:
    receivers de-duplicate on it, so this is safe when one says it lost the event.
    """
    now = time.time() if now is None else now
    for item, payload in await _live(store):
        if item.item_id == event_id:
            await store.reschedule(QUEUE, event_id, now, json.dumps(_revived(payload, now)))
            return True
    for key, payload in await _settled(store):
        if payload["id"] == event_id:
            # enqueue before delete: a crash in between leaves it queued, never lost
            await store.enqueue(QUEUE, event_id, json.dumps(_revived(payload, now)), now)
            await store.delete(key)
            return True
    return False


async def retry_dead(store: StateStore, *, now: float | None = None) -> int:
    """Make every dead event due now with a fresh give-up clock; how many."""
    now = time.time() if now is None else now
    count = 0
    for item, payload in await _live(store):
        if payload["state"] == "dead":
            await store.reschedule(QUEUE, item.item_id, now, json.dumps(_revived(payload, now)))
            count += 1
    return count


def _revived(payload: dict[str, Any], now: float) -> dict[str, Any]:
    return {**payload, "state": "pending", "give_up_from": now, "finished_at": None}


async def prune(store: StateStore, older_than_secs: float, *, now: float | None = None) -> int:
    """Remove delivered and gone events settled more than ``older_than_secs`` ago; how many.

    Pending and dead events are kept whatever their age: they are not delivered yet.
    """
    cutoff = (time.time() if now is None else now) - older_than_secs
    removed = 0
    for key, payload in await _settled(store):
        if (payload.get("finished_at") or 0.0) < cutoff:
            await store.delete(key)
            removed += 1
    return removed
