"""India's calling rules and the dialer's pacing: the calling window, retries, the API rate.

Each rule is parsed from the string a user types on the command line (``--hours 09:00-21:00``,
``--retry busy,no-answer:2:30m``, ``--rate 60/min``) and a bad string raises
:class:`RuleError` naming the option, what was wrong and an example that works.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

IST = ZoneInfo("Asia/Kolkata")
DEFAULT_HOURS = "09:00-21:00"
"""The TRAI window for promotional calls (TCCCPR: none between 21:00 and 09:00 IST)."""

EXOTEL_MAX_PER_MINUTE = 200
"""Exotel rate-limits every Voice API to 200 requests a minute per account (HTTP 429 above)."""

CALL_TYPES = ("promotional", "transactional")

RETRYABLE_OUTCOMES = frozenset(
    {"busy", "no-answer", "failed", "unreachable", "voicemail", "ivr", "api_error"}
)
"""Outcomes a ``--retry`` rule may name. ``completed``, ``dnd_skipped``, ``opted_out`` and
``unknown`` (we cannot tell whether the call was placed) are never retried."""


class RuleError(ValueError):
    """A calling rule the user wrote cannot be used; the message says how to fix it."""


# -- calling window --------------------------------------------------------------------------

_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True)
class CallingWindow:
    """Hours of the day (IST) when dialling is allowed: ``start`` inclusive, ``end`` exclusive."""

    start: time
    end: time

    @classmethod
    def parse(cls, spec: str) -> CallingWindow:
        """``HH:MM-HH:MM`` within one day, e.g. ``09:30-20:45``."""
        match = _HOURS.match(spec)
        if not match:
            raise RuleError(f"--hours {spec!r}: write HH:MM-HH:MM in IST, e.g. {DEFAULT_HOURS}")
        h1, m1, h2, m2 = (int(part) for part in match.groups())
        try:
            start, end = time(h1, m1), time(h2, m2)
        except ValueError as exc:
            raise RuleError(f"--hours {spec!r}: {exc}; e.g. {DEFAULT_HOURS}") from None
        if start >= end:
            raise RuleError(
                f"--hours {spec!r}: the window must start before it ends within one day "
                f"(no overnight windows), e.g. {DEFAULT_HOURS}"
            )
        return cls(start, end)

    def contains(self, now: datetime | float) -> bool:
        """Whether ``now`` (an aware datetime or unix seconds) is inside the window in IST."""
        local = _ist(now).time()
        return self.start <= local < self.end

    def next_window_start(self, now: datetime | float) -> datetime:
        """``now`` (in IST) when inside the window, else the next opening, as an IST datetime."""
        local = _ist(now)
        if self.contains(local):
            return local
        opening = datetime.combine(local.date(), self.start, tzinfo=IST)
        if local >= opening:
            opening = datetime.combine(local.date() + timedelta(days=1), self.start, tzinfo=IST)
        return opening

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def window_for(call_type: str, hours: str | None) -> CallingWindow | None:
    """The window a campaign of ``call_type`` keeps; None means no restriction.

    Promotional calls keep ``hours`` or the TRAI default. Transactional (service) calls are not
    time-restricted, so the default window is lifted; an explicit ``hours`` still applies. The DND
    list applies to both: this function is about time only.
    """
    if call_type not in CALL_TYPES:
        raise RuleError(f"--type {call_type!r}: use one of {', '.join(CALL_TYPES)}")
    if call_type == "transactional" and hours is None:
        return None
    return CallingWindow.parse(hours or DEFAULT_HOURS)


def _ist(now: datetime | float) -> datetime:
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise ValueError("a naive datetime has no time zone; pass an aware one")
        return now.astimezone(IST)
    return datetime.fromtimestamp(now, IST)


# -- retries ---------------------------------------------------------------------------------

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smh])$")


def parse_duration(text: str, option: str = "--retry") -> float:
    """``90s``, ``30m``, ``2h`` -> seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise RuleError(f"{option}: delay {text!r} needs a number and a unit s, m or h (e.g. 30m)")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class RetryRule:
    """Retry a contact whose call ended with one of ``outcomes``, up to ``max_retries`` times."""

    outcomes: frozenset[str]
    max_retries: int
    delay_secs: float

    @property
    def key(self) -> str:
        """A stable name for this rule, used to count its retries in the store."""
        return ",".join(sorted(self.outcomes))

    @classmethod
    def parse(cls, spec: str) -> RetryRule:
        """``outcome[,outcome]:max_retries:delay``, e.g. ``busy,no-answer:2:30m``."""
        example = "e.g. busy,no-answer:2:30m"
        parts = spec.strip().split(":")
        if len(parts) != 3:
            raise RuleError(
                f"--retry {spec!r}: write outcome[,outcome]:max_retries:delay, {example}"
            )
        names, count, delay = parts
        outcomes = frozenset(name.strip() for name in names.split(",") if name.strip())
        unknown = sorted(outcomes - RETRYABLE_OUTCOMES)
        if not outcomes or unknown:
            raise RuleError(
                f"--retry {spec!r}: cannot retry {', '.join(unknown) or 'nothing'}; "
                f"retryable outcomes are {', '.join(sorted(RETRYABLE_OUTCOMES))}"
            )
        if not count.strip().isdigit():
            raise RuleError(f"--retry {spec!r}: max_retries {count!r} must be a whole number")
        return cls(outcomes, int(count), parse_duration(delay))


@dataclass(frozen=True)
class RetryPolicy:
    """The retry rules of a campaign; an outcome belongs to at most one rule."""

    rules: tuple[RetryRule, ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, specs: str | Iterable[str] | None) -> RetryPolicy:
        """One spec or several (``--retry`` may be repeated); none means never retry."""
        if specs is None:
            return cls()
        items = [specs] if isinstance(specs, str) else list(specs)
        rules = tuple(RetryRule.parse(item) for item in items)
        seen: set[str] = set()
        for rule in rules:
            twice = seen & rule.outcomes
            if twice:
                raise RuleError(f"--retry: {', '.join(sorted(twice))} appears in two rules")
            seen |= rule.outcomes
        return cls(rules)

    def rule_for(self, outcome: str) -> RetryRule | None:
        """The rule that covers ``outcome``, if any."""
        return next((rule for rule in self.rules if outcome in rule.outcomes), None)

    def delay_for(self, outcome: str, retries_used: dict[str, int]) -> float | None:
        """Seconds until the retry, or None when ``outcome`` is final (no rule, or rule used up)."""
        rule = self.rule_for(outcome)
        if rule is None or retries_used.get(rule.key, 0) >= rule.max_retries:
            return None
        return rule.delay_secs


# -- rate ------------------------------------------------------------------------------------

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|m|min|h|hr|hour)\s*$")
_PER = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hr": 3600.0, "hour": 3600.0}


@dataclass(frozen=True)
class Rate:
    """At most ``calls`` API calls every ``per_secs`` seconds."""

    calls: int
    per_secs: float

    @classmethod
    def parse(cls, spec: str) -> Rate:
        """``60/min``, ``2/s``, ``1000/h``; refuses more than Exotel's 200 a minute."""
        match = _RATE.match(spec)
        if not match or int(match.group(1)) == 0:
            raise RuleError(f"--rate {spec!r}: write a positive count per s, min or h, e.g. 60/min")
        rate = cls(int(match.group(1)), _PER[match.group(2)])
        if rate.per_minute > EXOTEL_MAX_PER_MINUTE:
            raise RuleError(
                f"--rate {spec!r} is {rate.per_minute:g} calls a minute; Exotel allows at most "
                f"{EXOTEL_MAX_PER_MINUTE} a minute per account (use e.g. 200/min or less)"
            )
        return rate

    @property
    def per_minute(self) -> float:
        return self.calls * 60.0 / self.per_secs

    @property
    def interval_secs(self) -> float:
        """The even spacing between two calls."""
        return self.per_secs / self.calls


class RateLimiter:
    """Even spacing between API calls: a token bucket holding one token.

    A burst would let a restarted campaign fire a minute's worth of calls at once, which is
    exactly what makes Exotel answer 429; spacing keeps every window of ``per_secs`` under the
    limit too.
    """

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self._next_at: float | None = None

    def wait_secs(self, now: float) -> float:
        """How long to wait before the next call may go."""
        return 0.0 if self._next_at is None else max(0.0, self._next_at - now)

    def consume(self, now: float) -> None:
        """Record a call made at ``now``."""
        start = now if self._next_at is None else max(now, self._next_at)
        self._next_at = start + self.rate.interval_secs
