"""Offline parity: the scripted responder calls the agent's tools through Pipecat's function
calling, in whole calls over the real server (fake Deepgram and Cartesia, a local tool server)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from bot.providers.scripted import load_knowledge, parse_knowledge
from bot.simulator import (
    CallConfig,
    ExotelSimulator,
    Hangup,
    Say,
    Wait,
    WaitForBot,
    WaitForBotHangup,
)
from bot.testing.fakes import FakeCartesia, FakeDeepgram, FakeOpenAI, FakeProviders
from tests.agent.kit import order_tool, record_of, use_agent
from tests.helpers import bot_on_fakes, tone

KNOWLEDGE = """
greeting = "Hello."
fallback = "Sorry?"

[[intent]]
name = "order_lookup"
tool = "lookup_order"
patterns = ["order"]
arguments = { order_id = "(?:order|number)\\\\D*(\\\\d{3,})" }
answer = "Order {{order_id}} is at {{result.path}}."
missing_answer = "Please tell me your order number."
error_answer = "Sorry, the order desk is not answering."
"""


@pytest.fixture
async def fakes():
    providers = FakeProviders(
        deepgram=FakeDeepgram(finalize_latency=0.05),
        openai=FakeOpenAI(first_token_latency=0.05),
        cartesia=FakeCartesia(first_audio_latency=0.05, seconds_per_word=0.05),
    )
    async with providers:
        yield providers


def use(runtime, knowledge, agent: dict | None = None, tools: list | None = None) -> None:
    runtime.shared.knowledge = knowledge
    use_agent(runtime, agent, tools)


async def one_question(fakes, url: str) -> tuple[CallConfig, object]:
    config = CallConfig(url=url, wait_timeout=10)
    rec = await ExotelSimulator(config).run(
        [WaitForBot(gap=0.3), Say(tone(0.8)), WaitForBot(gap=0.5), Wait(0.5), Hangup()]
    )
    return config, rec


async def test_scripted_intent_calls_the_http_tool_and_speaks_its_result(fakes, server, tmp_path):
    fakes.deepgram.add_transcripts("Where is my order? The number is four five six seven.")
    async with bot_on_fakes(fakes, bot_llm="scripted", call_records_dir=tmp_path) as (url, rt):
        use(rt, parse_knowledge(KNOWLEDGE), tools=[order_tool(server.base)])
        config, rec = await one_question(fakes, url)
    assert rec.violations == []
    (seen,) = [s for s in server.seen if s.path.startswith("/echo/orders")]
    assert seen.method == "GET" and seen.path == "/echo/orders/4567"
    assert seen.query == {"order_id": "4567"}
    assert seen.headers["X-Call-Sid"] == config.call_sid
    # Spoken with its numbers read aloud (bot.languages.numbers runs before every TTS).
    assert (
        "Order four thousand five hundred and sixty-seven is at /echo/orders/four thousand five"
        " hundred and sixty-seven." in fakes.cartesia.transcripts
    )
    record = record_of(tmp_path)
    (call,) = record["agent"]["tool_calls"]
    assert call["name"] == "lookup_order" and call["status"] == "ok"
    assert json.loads(call["arguments"]) == {"order_id": "4567"}
    assert record["captures"] == {"order_id": "4567"}


async def test_no_number_heard_asks_for_it_and_calls_nothing(fakes, server):
    fakes.deepgram.add_transcripts("where is my order")
    async with bot_on_fakes(fakes, bot_llm="scripted") as (url, rt):
        use(rt, parse_knowledge(KNOWLEDGE), tools=[order_tool(server.base)])
        _, rec = await one_question(fakes, url)
    assert rec.violations == []
    assert server.seen == []
    assert "Please tell me your order number." in fakes.cartesia.transcripts


async def test_a_tool_that_cannot_be_reached_gets_the_error_answer(fakes, refused_url):
    fakes.deepgram.add_transcripts("order 1234 please")
    tool = {**order_tool(""), "url": refused_url + "/{{order_id}}", "timeout_secs": 1}
    async with bot_on_fakes(fakes, bot_llm="scripted") as (url, rt):
        use(rt, parse_knowledge(KNOWLEDGE), tools=[tool])
        _, rec = await one_question(fakes, url)
    assert rec.violations == []
    assert "Sorry, the order desk is not answering." in fakes.cartesia.transcripts


async def test_without_the_tool_configured_the_stock_intents_answer_as_before(fakes):
    fakes.deepgram.add_transcripts("I want to talk to a person")
    async with bot_on_fakes(fakes, bot_llm="scripted") as (url, rt):
        use(rt, load_knowledge())
        _, rec = await one_question(fakes, url)
        async with asyncio.timeout(5):
            while rt.active_calls or not rt.finished_calls:
                await asyncio.sleep(0.02)
        session = rt.finished_calls[-1]
    assert rec.closed_by == "caller" and session.agent.transferred is None
    assert any("cannot transfer this call" in t for t in fakes.cartesia.transcripts)


async def test_scripted_transfer_closes_the_stream_and_passthru_answers_302(fakes):
    fakes.deepgram.add_transcripts("Can I talk to a person, please?")
    agent = {
        "builtin_tools": ["end_call", "transfer_call"],
        "transfer_message": "Connecting you to a colleague now.",
        "departments": {"default": ["+918000000001"]},
    }
    async with bot_on_fakes(fakes, bot_llm="scripted") as (url, rt):
        use(rt, load_knowledge(), agent)
        config = CallConfig(url=url, wait_timeout=10)
        rec = await ExotelSimulator(config).run(
            [WaitForBot(gap=0.3), Say(tone(0.8)), WaitForBotHangup(timeout=10)]
        )
        base = url.replace("ws://", "http://").replace("/exotel/ws", "")
        async with httpx.AsyncClient(base_url=base) as client:
            ours = {"CallSid": config.call_sid, "Stream[Status]": "completed"}
            passthru = (await client.get("/exotel/passthru", params=ours)).status_code
            other = (await client.get("/exotel/passthru", params={"CallSid": "x"})).status_code
            connect = (await client.get("/exotel/connect", params=ours)).json()
        async with asyncio.timeout(5):
            while rt.active_calls or not rt.finished_calls:
                await asyncio.sleep(0.02)
        session = rt.finished_calls[-1]
    assert rec.closed_by == "bot"
    assert fakes.cartesia.transcripts[-1] == "Connecting you to a colleague now."
    assert rec.marks[-1].echoed_at is not None
    assert session.end_reason == "transferred to a human"
    assert session.agent.transferred.reason == "the caller asked for a person"
    assert (passthru, other) == (302, 200)
    assert connect["destination"] == {"numbers": ["+918000000001"]}
