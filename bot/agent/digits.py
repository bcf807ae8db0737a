"""Keypad digits: a local collector fed with Exotel ``dtmf`` events, and masking.

The LLM asks for digits through the ``collect_digits`` tool; this collector (not the model)
gathers them, so a PIN reaches a tool through ``{{digits.<purpose>}}`` without ever being in
the model's context. Rules, as callers of IVRs expect them: ``#`` ends the entry, ``*``
clears it and starts over, the first digit may take ``first_digit_timeout_secs`` (8 s) and
each next one ``inter_digit_timeout_secs`` (3 s). Speech does not end it: only keys and
timers do. When ``min_digits == max_digits`` the entry ends by itself at that length (a
4-digit PIN needs no ``#``); otherwise a digit past ``max_digits`` ends it as ``too_long``.

Digits are masked (``•``) in every log line, record and payload, whatever ``to_model`` says.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from loguru import logger

TERMINATOR = "#"
CLEAR = "*"
KEYS = set("0123456789")
MASK = "\u2022"


def mask_digits(text: str) -> str:
    """``text`` with one ``•`` per digit: what logs, records and payloads show."""
    return re.sub(r"[0-9]", MASK, text)


@dataclass(frozen=True)
class DigitSettings:
    """``[agent.digits]``: the collector's timers, and whether the model sees the digits."""

    first_digit_timeout_secs: float = 8.0
    inter_digit_timeout_secs: float = 3.0
    # False: the model gets the status and length only; True: the digits too (menus).
    to_model: bool = False


class DigitStatus(StrEnum):
    OK = "ok"
    NO_INPUT = "no_input"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"


@dataclass(frozen=True)
class DigitResult:
    """How an entry ended. ``repr`` masks the digits, so logging one is safe."""

    purpose: str
    status: DigitStatus
    digits: str = ""  # kept only when the status is ok
    length: int = 0  # how many digits were keyed, whatever the status

    def for_model(self, to_model: bool) -> dict[str, Any]:
        """The tool result the LLM gets: ``{"status", "length"}`` (+ ``digits`` if asked)."""
        result: dict[str, Any] = {"status": str(self.status), "length": self.length}
        if to_model and self.status == DigitStatus.OK:
            result["digits"] = self.digits
        return result

    def for_record(self) -> dict[str, Any]:
        return {"purpose": self.purpose, "status": str(self.status), "digits": self.masked}

    @property
    def masked(self) -> str:
        return mask_digits(self.digits)

    def __repr__(self) -> str:
        return (
            f"DigitResult(purpose={self.purpose!r}, status={self.status}, "
            f"digits={self.masked!r}, length={self.length})"
        )

    __str__ = __repr__


@dataclass
class _Entry:
    purpose: str
    min_digits: int
    max_digits: int
    deadline: float
    digits: str = ""


class DigitCollector:
    """One call's keypad collector: a state machine on a clock, and an async ``collect``.

    ``feed``/``check`` drive the state machine directly (tests, or a caller with its own
    loop); ``push`` hands it a digit from the pipeline and ``collect`` awaits the result.
    Digits pushed while nothing is being collected are dropped (logged masked).
    """

    def __init__(self, settings: DigitSettings, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self._clock = clock
        self._entry: _Entry | None = None
        self._queue: asyncio.Queue[str] = asyncio.Queue()

    @property
    def active(self) -> bool:
        return self._entry is not None

    @property
    def deadline(self) -> float | None:
        return self._entry.deadline if self._entry else None

    def start(
        self, purpose: str, min_digits: int, max_digits: int, *, first_wait_extra: float = 0.0
    ) -> None:
        """Begin an entry; ``first_wait_extra`` adds the prompt's length to the first timer."""
        if not 1 <= min_digits <= max_digits:
            raise ValueError(f"need 1 <= min_digits ({min_digits}) <= max_digits ({max_digits})")
        first = self.settings.first_digit_timeout_secs + max(0.0, first_wait_extra)
        self._entry = _Entry(purpose, min_digits, max_digits, self._clock() + first)

    def feed(self, key: str) -> DigitResult | None:
        """One key; the result when it ends the entry, else None."""
        entry = self._entry
        if entry is None:
            logger.debug(f"keypad {mask_digits(key)} with no entry open; ignored")
            return None
        if key == TERMINATOR:
            return self._finish(self._status_at_end(entry))
        if key == CLEAR:
            entry.digits = ""
            entry.deadline = self._clock() + self.settings.first_digit_timeout_secs
            return None
        if key not in KEYS:
            return None
        entry.digits += key
        if len(entry.digits) > entry.max_digits:
            return self._finish(DigitStatus.TOO_LONG)
        if entry.min_digits == entry.max_digits == len(entry.digits):
            return self._finish(DigitStatus.OK)
        entry.deadline = self._clock() + self.settings.inter_digit_timeout_secs
        return None

    def check(self) -> DigitResult | None:
        """The result if the entry's timer has run out, else None."""
        entry = self._entry
        if entry is None or self._clock() < entry.deadline:
            return None
        return self._finish(self._status_at_end(entry))

    def cancel(self) -> None:
        """Drop the open entry (the call ended, or the tool call was cancelled)."""
        self._entry = None

    def push(self, key: str) -> None:
        """A digit from the pipeline (an ``InputDTMFFrame``), for ``collect`` to take."""
        if self._entry is None:
            logger.debug(f"keypad {mask_digits(key)} with no entry open; ignored")
            return
        self._queue.put_nowait(key)

    async def collect(
        self, purpose: str, min_digits: int, max_digits: int, *, first_wait_extra: float = 0.0
    ) -> DigitResult:
        """Await an entry's end (key or timer). Cancelling it closes the entry."""
        while not self._queue.empty():  # keys from before this entry belong to nothing
            self._queue.get_nowait()
        self.start(purpose, min_digits, max_digits, first_wait_extra=first_wait_extra)
        try:
            while True:
                result = self.check()
                if result is not None:
                    return result
                wait = max(0.0, (self.deadline or 0.0) - self._clock())
                try:
                    key = await asyncio.wait_for(self._queue.get(), wait)
                except TimeoutError:
                    continue
                result = self.feed(key)
                if result is not None:
                    return result
        finally:
            self._entry = None

    def _status_at_end(self, entry: _Entry) -> DigitStatus:
        if not entry.digits:
            return DigitStatus.NO_INPUT
        if len(entry.digits) < entry.min_digits:
            return DigitStatus.TOO_SHORT
        return DigitStatus.OK

    def _finish(self, status: DigitStatus) -> DigitResult:
        entry = self._entry
        assert entry is not None
        self._entry = None
        digits = entry.digits if status == DigitStatus.OK else ""
        result = DigitResult(entry.purpose, status, digits, len(entry.digits))
        logger.info(f"keypad entry for {entry.purpose}: {status} ({len(entry.digits)} digits)")
        return result
