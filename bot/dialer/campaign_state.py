"""How a campaign lives in the state store, so that it survives a restart.

Keys (``{c}`` = ``campaign:{name}``):

* ``{c}:meta``: the contact count and when the campaign was created (contacts are stored
  once: a second ``run`` of the same name uses the stored list, not the file);
* ``{c}:contact:{i}``: phone, file line and variables of contact ``i``;
* ``{c}:contact:{i}:state``: :class:`ContactState` (attempts, outcome, retries used, ...);
* ``{c}:contact:{i}:attempt:{n}``: :class:`AttemptRecord`, set with ``store.claim`` before
  attempt ``n`` is dialled; whoever claims it dials, nobody else ever does;
* ``{c}:paused``: present while the campaign is paused;
* queue ``{c}``: one item per unfinished contact, due when it should next be dialled;
* ``dialer:optout:{phone}``: a callee asked not to be called (every campaign honours it).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from bot.dialer.contacts import Contact
from bot.state.base import StateStore

EXPORT_COLUMNS = (
    "phone",
    "attempts",
    "status",
    "outcome",
    "duration_secs",
    "transferred",
    "opt_out",
)
SKIPPED_OUTCOMES = frozenset({"dnd_skipped", "opted_out"})


def prefix(name: str) -> str:
    return f"campaign:{name}"


def queue_name(name: str) -> str:
    return prefix(name)


def attempt_key(name: str, index: int, attempt: int) -> str:
    return f"{prefix(name)}:contact:{index}:attempt:{attempt}"


def optout_key(phone: str) -> str:
    return f"dialer:optout:{phone}"


@dataclass
class ContactState:
    """Where one contact stands. ``status``: pending | live | retry | done."""

    status: str = "pending"
    attempts: int = 0
    next_attempt: int = 1
    outcome: str | None = None
    duration_secs: float | None = None
    transferred: bool = False
    opt_out: bool = False
    answered: bool = False
    call_sid: str | None = None
    retries: dict[str, int] = field(default_factory=dict)
    extraction: dict[str, Any] = field(default_factory=dict)


@dataclass
class AttemptRecord:
    """One claimed attempt. ``result``: None while in flight, ``not_placed`` when Exotel
    certainly did not place it (the only case that lets the contact be claimed again), else
    the attempt's outcome."""

    attempt: int
    claimed_at: float
    token: str | None = None
    call_sid: str | None = None
    result: str | None = None


class CampaignStore:
    """Typed reads and writes of one campaign's keys."""

    def __init__(self, store: StateStore, name: str) -> None:
        self.store = store
        self.name = name
        self._p = prefix(name)

    async def count(self) -> int | None:
        raw = await self.store.get(f"{self._p}:meta")
        return None if raw is None else int(json.loads(raw)["count"])

    async def save_contacts(self, contacts: list[Contact], now: float) -> None:
        """Store the list once; the meta key is written last, so a half-stored list is redone."""
        for contact in contacts:
            record = {"phone": contact.phone, "line": contact.line, "variables": contact.variables}
            await self.store.set(f"{self._p}:contact:{contact.index}", json.dumps(record))
        meta = {"count": len(contacts), "created_at": now}
        await self.store.set(f"{self._p}:meta", json.dumps(meta))

    async def contact(self, index: int) -> Contact:
        raw = await self.store.get(f"{self._p}:contact:{index}")
        if raw is None:
            raise RuntimeError(f"campaign {self.name}: contact {index} is missing from the store")
        data = json.loads(raw)
        return Contact(index, int(data["line"]), data["phone"], dict(data["variables"]))

    async def state(self, index: int) -> ContactState:
        raw = await self.store.get(f"{self._p}:contact:{index}:state")
        return ContactState() if raw is None else ContactState(**json.loads(raw))

    async def save_state(self, index: int, state: ContactState) -> None:
        await self.store.set(f"{self._p}:contact:{index}:state", json.dumps(asdict(state)))

    async def claim_attempt(self, index: int, record: AttemptRecord) -> bool:
        return await self.store.claim(
            attempt_key(self.name, index, record.attempt), json.dumps(asdict(record))
        )

    async def attempt(self, index: int, attempt: int) -> AttemptRecord | None:
        raw = await self.store.get(attempt_key(self.name, index, attempt))
        return None if raw is None else AttemptRecord(**json.loads(raw))

    async def save_attempt(self, index: int, record: AttemptRecord) -> None:
        key = attempt_key(self.name, index, record.attempt)
        await self.store.set(key, json.dumps(asdict(record)))

    async def in_flight(self) -> list[tuple[int, AttemptRecord]]:
        """Attempts placed (with a CallSid) whose outcome is not known yet."""
        found = []
        for key in await self.store.keys(f"{self._p}:contact:"):
            parts = key.split(":")
            if len(parts) == 6 and parts[4] == "attempt":
                record = await self.attempt(int(parts[3]), int(parts[5]))
                if record and record.result is None and record.call_sid:
                    found.append((int(parts[3]), record))
        return found

    async def paused(self) -> bool:
        return await self.store.get(f"{self._p}:paused") is not None

    async def set_paused(self, paused: bool) -> None:
        if paused:
            await self.store.set(f"{self._p}:paused", "1")
        else:
            await self.store.delete(f"{self._p}:paused")

    async def opted_out(self, phone: str) -> bool:
        return await self.store.get(optout_key(phone)) is not None

    async def record_opt_out(self, phone: str, call_sid: str | None) -> None:
        await self.store.set(
            optout_key(phone), json.dumps({"campaign": self.name, "call": call_sid})
        )

    async def export_csv(self, out: TextIO) -> int:
        """Write the results CSV; returns the number of rows."""
        count = await self.count() or 0
        rows: list[tuple[Contact, ContactState]] = []
        extra: dict[str, None] = {}
        for index in range(count):
            state = await self.state(index)
            rows.append((await self.contact(index), state))
            extra.update(dict.fromkeys(state.extraction))
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([*EXPORT_COLUMNS, *extra])
        for contact, state in rows:
            writer.writerow(
                [
                    contact.phone,
                    state.attempts,
                    state.status,
                    state.outcome or "",
                    "" if state.duration_secs is None else f"{state.duration_secs:g}",
                    str(state.transferred).lower(),
                    str(state.opt_out).lower(),
                    *(_cell(state.extraction.get(key)) for key in extra),
                ]
            )
        return len(rows)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
