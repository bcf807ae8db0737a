"""One dialled call end to end: API -> fake Exotel -> stream to the real bot -> callbacks."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from bot.dialer.campaign_state import optout_key
from bot.testing.exotel_callee import bot_hung_up

from .e2e_kit import API_TOKEN, Outbound, outbound_bot

pytestmark = pytest.mark.timeout(40)

HUMAN, SWITCHED_OFF, OPTS_OUT = "+919876500001", "+919876500002", "+919876500003"


async def _dial(bot: Outbound, to: str, **variables: str) -> str:
    async with httpx.AsyncClient(base_url=bot.base, timeout=10) as http:
        answer = await http.post(
            "/api/calls",
            json={"to": to, "variables": variables},
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        )
    assert answer.status_code == 200, answer.text
    return answer.json()["call_sid"]


async def _stream_result(bot: Outbound, call_sid: str) -> dict:
    """The stream-end report (published once the bot's side of the call has wound down)."""
    async with asyncio.timeout(5.0):
        while (raw := await bot.store.get(f"dialer:result:{call_sid}:stream")) is None:
            await asyncio.sleep(0.05)
    return json.loads(raw)["event"]


async def test_human_call_gets_variables_and_greeting_after_hello():
    async with outbound_bot({HUMAN: "human"}) as bot:
        sid = await _dial(bot, HUMAN, name="Asha", amount="1500")
        await bot.exotel.wait_idle(20.0)
        rec = bot.callee.recordings[sid]
        result = await _stream_result(bot, sid)
        session = next(s for s in bot.runtime.finished_calls if s.info.call_sid == sid)
    assert result["outcome"] == "completed" and not result["opt_out"]
    assert session.info.custom_parameters["name"] == "Asha"
    assert session.info.custom_parameters["amount"] == "1500"
    hello_end = rec.turns[0].speech_end if rec.turns else None
    first_bot = min(c.start for c in rec.chunks if c.played_secs > 0)
    assert hello_end is not None and hello_end <= first_bot <= hello_end + 1.0
    # The "hello" went to the greeting, not to the LLM; the callee's reply did.
    sent = [m for r in bot.fakes.openai.requests for m in r.get("messages", [])]
    users = [m["content"] for m in sent if m.get("role") == "user"]
    assert users and all("Hello?" not in u for u in users)
    assert [cb["EventType"] for cb in bot.exotel.calls[0].callbacks] == ["answered", "terminal"]
    assert all(cb["_http"] == 200 for cb in bot.exotel.calls[0].callbacks)


async def test_carrier_announcement_ends_as_unreachable_within_8_s():
    async with outbound_bot({SWITCHED_OFF: "switched_off"}) as bot:
        sid = await _dial(bot, SWITCHED_OFF)
        await bot.exotel.wait_idle(20.0)
        rec = bot.callee.recordings[sid]
        result = await _stream_result(bot, sid)
    assert result["outcome"] == "unreachable"
    assert bot_hung_up(rec) and rec.duration_secs < 8.0
    assert not any(c.played_secs > 0 for c in rec.chunks), "the bot spoke to a machine"


async def test_opt_out_is_recorded_and_call_ends_politely():
    async with outbound_bot({OPTS_OUT: "opt_out"}) as bot:
        sid = await _dial(bot, OPTS_OUT)
        await bot.exotel.wait_idle(20.0)
        rec = bot.callee.recordings[sid]
        result = await _stream_result(bot, sid)
        stored = await bot.store.get(optout_key(OPTS_OUT))
    assert result["opt_out"] is True
    assert stored is not None and json.loads(stored)["call"] == sid
    assert bot_hung_up(rec)
