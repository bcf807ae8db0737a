"""The keypad collector: key sequences, timers, what the model sees, masking."""

from __future__ import annotations

import asyncio

import pytest
from loguru import logger

from bot.agent.digits import DigitCollector, DigitSettings, DigitStatus, mask_digits


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def collector(**kw) -> tuple[DigitCollector, Clock]:
    clock = Clock()
    return DigitCollector(DigitSettings(**kw), clock=clock), clock


def feed(c: DigitCollector, keys: str):
    result = None
    for key in keys:
        result = c.feed(key)
        if result is not None:
            return result
    return result


@pytest.mark.parametrize(
    ("keys", "status", "digits"),
    [
        ("1234#", DigitStatus.OK, "1234"),
        ("12*34#", DigitStatus.OK, "34"),
        ("#", DigitStatus.NO_INPUT, ""),
        ("1#", DigitStatus.TOO_SHORT, ""),
        ("1234567", DigitStatus.TOO_LONG, ""),
        ("12x3#", DigitStatus.OK, "123"),
    ],
)
def test_sequences(keys, status, digits):
    c, _ = collector()
    c.start("pin", 2, 6)
    result = feed(c, keys)
    assert result is not None and result.status == status and result.digits == digits
    assert not c.active


def test_fixed_length_ends_without_terminator():
    c, _ = collector()
    c.start("pin", 4, 4)
    assert feed(c, "123") is None
    result = c.feed("4")
    assert result is not None and result.status == DigitStatus.OK and result.length == 4


def test_timers():
    c, clock = collector()
    c.start("pin", 4, 6)
    clock.now += 7.9
    assert c.check() is None
    clock.now += 0.2
    assert c.check().status == DigitStatus.NO_INPUT

    c.start("pin", 4, 6)
    feed(c, "1234")
    clock.now += 2.9
    assert c.check() is None
    clock.now += 0.2
    result = c.check()
    assert result.status == DigitStatus.OK and result.digits == "1234"

    c.start("pin", 4, 6)
    feed(c, "12")
    clock.now += 3.1
    assert c.check().status == DigitStatus.TOO_SHORT


def test_clear_restarts_first_digit_timer():
    c, clock = collector()
    c.start("pin", 2, 6)
    feed(c, "12")
    clock.now += 2.0
    feed(c, "*")
    clock.now += 3.5  # past the inter-digit timer, within the first-digit one
    assert c.check() is None and c.active


def test_what_the_model_gets():
    c, _ = collector()
    c.start("pin", 4, 4)
    result = feed(c, "1234")
    assert result.for_model(False) == {"status": "ok", "length": 4}
    assert result.for_model(True) == {"status": "ok", "length": 4, "digits": "1234"}
    assert "1234" not in repr(result) and "1234" not in str(result.for_record())


def test_mask_digits():
    assert mask_digits("pin 1234#") == "pin \u2022\u2022\u2022\u2022#"


async def test_collect_async_and_logs_hold_no_digits():
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG", format="{message}")
    try:
        c = DigitCollector(DigitSettings(first_digit_timeout_secs=2, inter_digit_timeout_secs=2))
        c.push("9")  # before any entry: dropped
        task = asyncio.create_task(c.collect("pin", 4, 6))
        await asyncio.sleep(0)
        for key in "1234#":
            c.push(key)
        result = await asyncio.wait_for(task, 2)
    finally:
        logger.remove(sink)
    assert result.status == DigitStatus.OK and result.digits == "1234"
    assert not any("1234" in line or "9" in line for line in lines)


async def test_collect_times_out_and_cancels_cleanly():
    c = DigitCollector(DigitSettings(first_digit_timeout_secs=0.05, inter_digit_timeout_secs=0.05))
    result = await asyncio.wait_for(c.collect("pin", 1, 4), 2)
    assert result.status == DigitStatus.NO_INPUT
    task = asyncio.create_task(c.collect("pin", 1, 4, first_wait_extra=10))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not c.active


def test_bad_bounds():
    c, _ = collector()
    with pytest.raises(ValueError):
        c.start("pin", 5, 4)
