"""call.status from Passthru, 410 Gone, a dead event listed and re-sent by ``webhooks``."""

from __future__ import annotations

import asyncio
import contextlib
import io
from pathlib import Path

import pytest

from bot.cli.main import main
from bot.delivery import list_events
from bot.state import MemoryStore, SQLiteStore
from bot.testing.fakes import FakeProviders
from tests.delivery.conftest import SECRET, Receiver, spec_verifies
from tests.delivery.wiring import until, wired_bot

PASSTHRU = {"CallSid": "CA-77", "Stream[Status]": "completed", "Stream[Duration]": "3"}


async def test_410_gone_stops_the_attempts(receiver: Receiver) -> None:
    receiver.statuses = [410]
    store = MemoryStore()
    async with FakeProviders() as fakes, wired_bot(fakes, store, webhook_url=receiver.url) as bot:
        async with bot.client() as client:
            assert (await client.post("/exotel/passthru", data=PASSTHRU)).status_code == 200
        await until(lambda: len(receiver.requests) == 1, 5, "the first attempt")
        await asyncio.sleep(0.5)  # ten retry periods: none may come
        events = await list_events(store)
    assert len(receiver.requests) == 1
    assert spec_verifies(SECRET, receiver.requests[0].headers, receiver.requests[0].body)
    assert [(e.type, e.state) for e in events] == [("call.status", "gone")]


def cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["webhooks", *args])
    return code, out.getvalue()


async def test_a_dead_event_is_listed_and_sent_again(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver.statuses = [500]
    monkeypatch.setenv("BOT_DATA_DIR", str(tmp_path))  # the CLI opens the server's SQLite file
    monkeypatch.delenv("BOT_STATE_URL", raising=False)
    store = SQLiteStore(tmp_path / "state.sqlite3")
    events: list = []

    async def watch() -> None:
        while True:
            events[:] = await list_events(store)
            await asyncio.sleep(0.05)

    async with FakeProviders() as fakes:
        async with wired_bot(
            fakes, store, webhook_url=receiver.url, webhook_give_up_secs=0.1
        ) as bot:
            async with bot.client() as client:
                await client.post("/exotel/passthru", data=PASSTHRU)
            watcher = asyncio.create_task(watch())
            await until(lambda: any(e.state == "dead" for e in events), 5, "dead")
            watcher.cancel()
            code, listed = await asyncio.to_thread(cli, "list", "--state", "dead")
            event_id = listed.split()[0]
            assert code == 0 and event_id.startswith("evt_") and "dead" in listed
            tried = len(receiver.requests)
            await asyncio.sleep(0.3)
            assert len(receiver.requests) == tried >= 2  # dead: no more attempts on its own
            receiver.statuses = [500] * tried + [200]
            code, said = await asyncio.to_thread(cli, "retry", event_id)
            assert code == 0 and "queued again" in said
            await until(lambda: len(receiver.requests) == tried + 1, 5, "the re-sent event")
            await asyncio.sleep(0.1)
            code, delivered = await asyncio.to_thread(cli, "list", "--state", "delivered")
    ids = {r.headers["webhook-id"] for r in receiver.requests}
    assert ids == {event_id}
    assert event_id in delivered
    assert (await asyncio.to_thread(cli, "retry", "evt_nothing"))[0] == 1


def test_secret_prints_a_usable_secret() -> None:
    from bot.delivery.signing import secret_key

    code, out = cli("secret")
    assert code == 0 and out.startswith("whsec_")
    assert len(secret_key(out.strip())) == 32
