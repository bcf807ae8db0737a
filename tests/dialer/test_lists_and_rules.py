"""Call lists, the DND file and the calling rules, as tables."""

from __future__ import annotations

import io
from datetime import datetime

import pytest

from bot.dialer.contacts import (
    ContactFileError,
    DndFileError,
    InvalidNumber,
    load_contacts,
    load_dnd,
    normalise_phone,
)
from bot.dialer.rules import (
    IST,
    CallingWindow,
    Rate,
    RateLimiter,
    RetryPolicy,
    RuleError,
    window_for,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+919876543210", "+919876543210"),
        ("9876543210", "+919876543210"),
        ("98765 43210", "+919876543210"),
        ("919876543210", "+919876543210"),
        ("09876543210", "+919876543210"),
        ("0091-98765-43210", "+919876543210"),
        ("+91 (22) 2345-6789", "+912223456789"),
        ("01123456789", "+911123456789"),
        ("6000000000", "+916000000000"),
    ],
)
def test_numbers_normalise(raw, expected):
    assert normalise_phone(raw) == expected


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "no number"),
        ("+14155550100", "not an Indian number"),
        ("987654321", "9 digits"),
        ("98765432101", "11 digits"),
        ("18001234567", "11 digits"),
        ("1800123456", "toll-free"),
        ("1400123456", "telemarketing"),
        ("1600123456", "service-call"),
        ("0012345678", "cannot start with 0"),
        ("98765x3210", "other than digits"),
    ],
)
def test_bad_numbers_say_why(raw, why):
    with pytest.raises(InvalidNumber, match=why):
        normalise_phone(raw)


def test_csv_rows_become_contacts_and_bad_rows_keep_their_lines():
    text = (
        "phone,name,amount\n"  # line 1
        "9876543210,Asha,1500\n"  # 2
        "12345,Bad,1\n"  # 3
        "+919876500001,Ravi,\n"  # 4
        "09876543210,Again,2\n"  # 5: a repeat of line 2
        "+14155550100,Far,3\n"  # 6
    )
    result = load_contacts(io.StringIO(text))
    assert [(c.index, c.line, c.phone) for c in result.contacts] == [
        (0, 2, "+919876543210"),
        (1, 4, "+919876500001"),
    ]
    assert result.contacts[0].variables == {"name": "Asha", "amount": "1500"}
    assert result.contacts[1].variables == {"name": "Ravi", "amount": ""}
    assert [row.line for row in result.bad_rows] == [3, 5, 6]
    assert "repeats line 2" in result.bad_rows[1].reason


def test_csv_without_phone_column_is_refused(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("number,name\n9876543210,A\n")
    with pytest.raises(ContactFileError, match="'phone' column"):
        load_contacts(path)


def test_dnd_file_normalises_and_allows_comments():
    text = "# scrubbed 2026-01-10\n9876543210\n\n+91 98765 00001  # asked on the phone\n"
    assert load_dnd(io.StringIO(text)) == {"+919876543210", "+919876500001"}


def test_dnd_file_with_a_broken_entry_is_refused():
    with pytest.raises(DndFileError, match="line 2"):
        load_dnd(io.StringIO("9876543210\n98765\n"))


def _ist(h: int, m: int = 0, day: int = 15) -> datetime:
    return datetime(2026, 1, day, h, m, tzinfo=IST)


@pytest.mark.parametrize(
    ("at", "inside", "next_start"),
    [
        (_ist(8, 59), False, _ist(9)),
        (_ist(9), True, _ist(9)),
        (_ist(20, 59), True, _ist(20, 59)),
        (_ist(21), False, _ist(9, day=16)),
        (_ist(23, 30), False, _ist(9, day=16)),
    ],
)
def test_calling_window_in_ist(at, inside, next_start):
    window = CallingWindow.parse("09:00-21:00")
    assert window.contains(at) is inside
    assert window.next_window_start(at) == next_start


def test_window_works_from_unix_time_and_other_zones():
    window = CallingWindow.parse("09:00-21:00")
    utc_0400 = datetime.fromisoformat("2026-01-15T04:00:00+00:00")  # 09:30 IST
    assert window.contains(utc_0400) and window.contains(utc_0400.timestamp())


@pytest.mark.parametrize(
    ("spec", "message"),
    [("9-21", "HH:MM-HH:MM"), ("21:00-09:00", "within one day"), ("09:00-25:00", "hour")],
)
def test_bad_hours_are_explained(spec, message):
    with pytest.raises(RuleError, match=message):
        CallingWindow.parse(spec)


def test_transactional_lifts_the_default_window_only():
    assert window_for("transactional", None) is None
    assert str(window_for("transactional", "10:00-18:00")) == "10:00-18:00"
    assert str(window_for("promotional", None)) == "09:00-21:00"
    with pytest.raises(RuleError, match="promotional, transactional"):
        window_for("marketing", None)


def test_retry_rules_parse_and_count():
    policy = RetryPolicy.parse(["busy,no-answer:2:30m", "unreachable:1:2h"])
    assert policy.delay_for("busy", {}) == 1800.0
    assert policy.delay_for("no-answer", {"busy,no-answer": 1}) == 1800.0
    assert policy.delay_for("busy", {"busy,no-answer": 2}) is None
    assert policy.delay_for("unreachable", {}) == 7200.0
    assert policy.delay_for("completed", {}) is None
    assert RetryPolicy.parse("failed:3:90s").delay_for("failed", {}) == 90.0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("busy:2", "outcome\\[,outcome\\]:max_retries:delay"),
        ("completed:2:30m", "cannot retry completed"),
        ("busy:two:30m", "whole number"),
        ("busy:2:30", "unit s, m or h"),
        (["busy:1:1m", "busy,failed:1:1m"], "busy appears in two rules"),
    ],
)
def test_bad_retry_rules_are_explained(spec, message):
    with pytest.raises(RuleError, match=message):
        RetryPolicy.parse(spec)


@pytest.mark.parametrize(
    ("spec", "per_minute"), [("60/min", 60), ("2/s", 120), ("600/h", 10), ("200/min", 200)]
)
def test_rates(spec, per_minute):
    assert Rate.parse(spec).per_minute == per_minute


@pytest.mark.parametrize(
    ("spec", "message"), [("201/min", "at most 200"), ("4/s", "at most 200"), ("fast", "60/min")]
)
def test_bad_rates_are_refused(spec, message):
    with pytest.raises(RuleError, match=message):
        Rate.parse(spec)


def test_rate_limiter_spaces_calls_evenly():
    limiter = RateLimiter(Rate.parse("60/min"))
    assert limiter.wait_secs(100.0) == 0.0
    limiter.consume(100.0)
    assert limiter.wait_secs(100.25) == pytest.approx(0.75)
    limiter.consume(101.0)
    assert limiter.wait_secs(101.0) == pytest.approx(1.0)
    assert limiter.wait_secs(200.0) == 0.0
