"""The campaign engine against the fake Exotel, with callbacks through the real receiver."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import datetime

import pytest

from bot.dialer.campaign import Campaign, CampaignSettings, Progress
from bot.dialer.contacts import load_contacts
from bot.dialer.exotel_api import ExotelAuthError, ExotelClient
from bot.dialer.rules import IST, Rate, RetryPolicy
from bot.dialer.status import StreamEndEvent, publish_stream_end
from bot.dialer.variables import variables_for_stream
from bot.testing.exotel_api import DEFAULT_KEY, DEFAULT_SID, DEFAULT_TOKEN, FakeExotelApi

from .conftest import FakeClock

PHONES = [f"+9198765000{i:02d}" for i in range(20)]
BUSY_THEN_OK = PHONES[3]
ALWAYS_NO_ANSWER = PHONES[5]
UNREACHABLE = PHONES[7]
OPTS_OUT = PHONES[9]
DND = PHONES[11]


def _csv() -> str:
    lines = ["phone,name,amount"]
    for i, phone in enumerate(PHONES):
        lines.append(f"{phone},Person {i},{100 * i}")
        if i == 4:
            lines.append("12345,Broken,0")  # file line 7
    lines.append("+4420794600000,Abroad,1")  # file line 23
    return "\n".join(lines) + "\n"


class Callee:
    """Plays the callee side of each answered call and tracks how many are on the phone."""

    def __init__(self, store, fake: FakeExotelApi) -> None:
        self.store = store
        self.fake = fake
        self.max_on_phone = 0
        self.variables_seen: dict[str, dict[str, str]] = {}

    def on_phone(self) -> int:
        return sum(
            1
            for call in self.fake.calls
            if not any(cb["EventType"] == "terminal" for cb in call.callbacks)
        )

    async def __call__(self, placed):
        self.max_on_phone = max(self.max_on_phone, self.on_phone())
        variables = await variables_for_stream(self.store, placed.custom_field, placed.call_sid)
        self.variables_seen[placed.to] = variables
        await asyncio.sleep(0.01)  # the conversation
        outcome = "unreachable" if placed.to == UNREACHABLE else "completed"
        await publish_stream_end(
            self.store,
            StreamEndEvent(
                placed.call_sid,
                placed.custom_field,
                outcome=outcome,
                opt_out=placed.to == OPTS_OUT,
                duration_secs=40.0,
                extraction={"promise_date": f"day-{variables.get('amount')}"},
            ),
        )
        return {"ConversationDuration": 42}


def _settings(receiver, **kw) -> CampaignSettings:
    base = dict(
        caller_id="08047491899",
        app_id="123456",
        status_callback=receiver.url,
        concurrency=3,
        rate=Rate.parse("200/min"),
        retry=RetryPolicy.parse("busy,no-answer:2:30m"),
        dnd=frozenset({DND}),
        poll_secs=0.02,
    )
    base.update(kw)
    return CampaignSettings(**base)


def _fake(store) -> tuple[FakeExotelApi, Callee]:
    fake = FakeExotelApi(
        scripts={BUSY_THEN_OK: ["busy", "completed"], ALWAYS_NO_ANSWER: "no-answer"}
    )
    callee = Callee(store, fake)
    fake.on_call = callee
    return fake, callee


def _client(fake: FakeExotelApi) -> ExotelClient:
    return ExotelClient(DEFAULT_SID, DEFAULT_KEY, DEFAULT_TOKEN, fake.base_url, 5.0)


def _expected_dials() -> dict[str, int]:
    expected = {phone: 1 for phone in PHONES if phone != DND}
    expected[BUSY_THEN_OK] = 2
    expected[ALWAYS_NO_ANSWER] = 3
    return expected


def _counts(numbers: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for number in numbers:
        counts[number] = counts.get(number, 0) + 1
    return counts


async def _export(campaign: Campaign) -> list[dict[str, str]]:
    out = io.StringIO()
    await campaign.export_csv(out)
    return list(csv.DictReader(io.StringIO(out.getvalue())))


async def test_twenty_contacts_concurrency_three(store, clock, receiver):
    contacts = load_contacts(io.StringIO(_csv()))
    assert [row.line for row in contacts.bad_rows] == [7, 23]
    reports: list[Progress] = []
    fake, callee = _fake(store)
    async with fake, _client(fake) as client:
        campaign = Campaign(
            "c20",
            store,
            client,
            contacts.contacts,
            _settings(receiver),
            clock=clock,
            on_progress=reports.append,
        )
        result = await campaign.run()
        await fake.wait_idle()
    assert result.reason == "finished"
    assert _counts(fake.dialled()) == _expected_dials()
    assert campaign.max_live_seen == 3 and callee.max_on_phone <= 3
    assert "12345" not in fake.dialled()
    assert callee.variables_seen[PHONES[2]] == {"name": "Person 2", "amount": "200"}
    assert all(len(call.custom_field or "") < 128 for call in fake.calls)
    # The retries waited for their rule's 30 minutes of (fake) time.
    assert clock.now() - datetime(2026, 1, 15, 10, 0, tzinfo=IST).timestamp() >= 2 * 1800
    assert receiver.answers and set(receiver.answers) == {200}

    rows = {row["phone"]: row for row in await _export(campaign)}
    assert list(next(iter(rows.values())))[:8] == [
        "phone",
        "attempts",
        "status",
        "outcome",
        "duration_secs",
        "transferred",
        "opt_out",
        "promise_date",
    ]
    assert rows[PHONES[0]] == {
        "phone": PHONES[0],
        "attempts": "1",
        "status": "done",
        "outcome": "completed",
        "duration_secs": "42",
        "transferred": "false",
        "opt_out": "false",
        "promise_date": "day-0",
    }
    assert (rows[BUSY_THEN_OK]["attempts"], rows[BUSY_THEN_OK]["outcome"]) == ("2", "completed")
    assert (rows[ALWAYS_NO_ANSWER]["attempts"], rows[ALWAYS_NO_ANSWER]["outcome"]) == (
        "3",
        "no-answer",
    )
    assert rows[UNREACHABLE]["outcome"] == "unreachable"
    assert (rows[DND]["attempts"], rows[DND]["outcome"]) == ("0", "dnd_skipped")
    assert rows[OPTS_OUT]["opt_out"] == "true"
    final = reports[-1]
    assert (final.total, final.remaining, final.live, final.skipped) == (20, 0, 0, 1)
    assert final.dialled == 22 and final.completed == 17 and final.failed == 2
    assert final.answered == 18


async def test_restart_in_the_middle_dials_nobody_twice(store, clock, receiver):
    contacts = load_contacts(io.StringIO(_csv())).contacts
    fake, _ = _fake(store)
    async with fake, _client(fake) as client:
        first = Campaign("cr", store, client, contacts, _settings(receiver), clock=clock)
        task = asyncio.create_task(first.run())
        while len(fake.calls) < 8:
            await asyncio.sleep(0.005)
        task.cancel()  # the process dies mid-campaign
        await asyncio.gather(task, return_exceptions=True)
        await fake.wait_idle()
        assert len(fake.calls) < 22
        second = Campaign("cr", store, client, None, _settings(receiver), clock=clock)
        result = await second.run()
        await fake.wait_idle()
    assert result.reason == "finished"
    assert _counts(fake.dialled()) == _expected_dials()
    rows = await _export(second)
    assert len(rows) == 20 and {row["status"] for row in rows} == {"done"}


async def test_outside_the_window_nothing_is_dialled(store, receiver):
    late = FakeClock(datetime(2026, 1, 15, 21, 30, tzinfo=IST).timestamp())
    contacts = load_contacts(io.StringIO(_csv())).contacts
    fake, _ = _fake(store)
    async with fake, _client(fake) as client:
        result = await Campaign(
            "cw", store, client, contacts, _settings(receiver), clock=late
        ).run()
    assert result.reason == "outside_window"
    assert result.next_window_start == datetime(2026, 1, 16, 9, 0, tzinfo=IST)
    assert fake.requests == [] and result.progress.remaining == 20


async def test_transactional_campaign_ignores_the_window_but_not_dnd(store, receiver):
    late = FakeClock(datetime(2026, 1, 15, 23, 0, tzinfo=IST).timestamp())
    contacts = load_contacts(io.StringIO(f"phone\n{PHONES[0]}\n{DND}\n")).contacts
    fake, _ = _fake(store)
    async with fake, _client(fake) as client:
        settings = _settings(receiver, window=None)
        result = await Campaign("ct", store, client, contacts, settings, clock=late).run()
        await fake.wait_idle()
    assert result.reason == "finished" and fake.dialled() == [PHONES[0]]


async def test_opt_out_is_honoured_by_later_campaigns(store, clock, receiver):
    fake, _ = _fake(store)
    async with fake, _client(fake) as client:
        one = load_contacts(io.StringIO(f"phone\n{OPTS_OUT}\n")).contacts
        await Campaign("o1", store, client, one, _settings(receiver), clock=clock).run()
        await fake.wait_idle()
        again = load_contacts(io.StringIO(f"phone\n{OPTS_OUT}\n{PHONES[0]}\n")).contacts
        second = Campaign("o2", store, client, again, _settings(receiver), clock=clock)
        await second.run()
        await fake.wait_idle()
    assert fake.dialled() == [OPTS_OUT, PHONES[0]]
    rows = await _export(second)
    assert rows[0]["outcome"] == "opted_out" and rows[0]["attempts"] == "0"


async def test_pause_stops_dialling_and_resume_continues(store, clock, receiver):
    contacts = load_contacts(io.StringIO(_csv())).contacts
    fake, _ = _fake(store)
    async with fake, _client(fake) as client:
        campaign = Campaign("cp", store, client, contacts, _settings(receiver), clock=clock)
        await campaign.prepare()
        await campaign.pause()
        paused = await campaign.run()
        assert paused.reason == "paused" and fake.requests == []
        await campaign.resume()
        done = await campaign.run()
        await fake.wait_idle()
    assert done.reason == "finished" and _counts(fake.dialled()) == _expected_dials()


async def test_rate_limit_spaces_the_dials(store, clock, receiver):
    contacts = load_contacts(io.StringIO("phone\n" + "\n".join(PHONES[12:16]) + "\n")).contacts
    fake, _ = _fake(store)
    async with fake, _client(fake) as client:
        settings = _settings(receiver, rate=Rate.parse("10/min"), concurrency=4)
        await Campaign("cs", store, client, contacts, settings, clock=clock).run()
        await fake.wait_idle()
    assert len(fake.calls) == 4
    assert [round(s, 6) for s in clock.slept if s > 0] == [6.0, 6.0, 6.0]


async def test_rate_limited_dials_are_not_placed_and_come_back(store, clock, receiver):
    contacts = load_contacts(io.StringIO("phone\n" + "\n".join(PHONES[12:15]) + "\n")).contacts
    fake, _ = _fake(store)
    async with fake:
        fake.rate_limit_first = 2
        client = ExotelClient(
            DEFAULT_SID, DEFAULT_KEY, DEFAULT_TOKEN, fake.base_url, 5.0, max_attempts=1
        )
        async with client:
            campaign = Campaign("c429", store, client, contacts, _settings(receiver), clock=clock)
            result = await campaign.run()
        await fake.wait_idle()
    assert result.reason == "finished"
    assert [r.status for r in fake.requests].count(429) == 2
    assert sorted(fake.dialled()) == PHONES[12:15]
    rows = await _export(campaign)
    assert [row["attempts"] for row in rows] == ["1", "1", "1"]


async def test_bad_credentials_stop_the_run_and_lose_nobody(store, clock, receiver):
    contacts = load_contacts(io.StringIO(f"phone\n{PHONES[12]}\n{PHONES[13]}\n")).contacts
    fake, _ = _fake(store)
    async with fake:
        async with ExotelClient(DEFAULT_SID, "wrong", DEFAULT_TOKEN, fake.base_url, 5.0) as bad:
            with pytest.raises(ExotelAuthError, match="EXOTEL_API_KEY"):
                await Campaign("ca", store, bad, contacts, _settings(receiver), clock=clock).run()
        async with _client(fake) as good:
            result = await Campaign("ca", store, good, None, _settings(receiver), clock=clock).run()
        await fake.wait_idle()
    assert result.reason == "finished" and sorted(fake.dialled()) == PHONES[12:14]


async def test_a_call_whose_terminal_callback_never_comes_frees_its_slot(store, clock):
    contacts = load_contacts(io.StringIO(f"phone\n{PHONES[12]}\n")).contacts
    fake, _ = _fake(store)
    async with fake, _client(fake) as client:
        # No StatusCallback: only the stream end arrives, so the call is live until the grace.
        settings = CampaignSettings(caller_id="0804", app_id="1", poll_secs=0.02, grace_secs=120)
        campaign = Campaign("cg", store, client, contacts, settings, clock=clock)
        task = asyncio.create_task(campaign.run())
        while not fake.calls:
            await asyncio.sleep(0.005)
        sid = fake.calls[0].call_sid
        await publish_stream_end(store, StreamEndEvent(sid, fake.calls[0].custom_field))
        await asyncio.sleep(0.1)
        assert not task.done()  # stream over, no terminal yet: still live
        clock.t += 121
        result = await asyncio.wait_for(task, 5)
    assert result.reason == "finished"
    rows = await _export(campaign)
    assert (rows[0]["outcome"], rows[0]["status"]) == ("completed", "done")
