"""The agent in whole calls: simulator -> server -> fake Deepgram/OpenAI/Cartesia, with a local
tool and context server (tests/agent/conftest.py)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from bot.observability.logs import setup_logging
from bot.simulator import (
    BargeIn,
    CallConfig,
    Dtmf,
    ExotelSimulator,
    Hangup,
    Say,
    Wait,
    WaitForBot,
    WaitForBotHangup,
)
from bot.testing.fakes import FakeCartesia, FakeDeepgram, FakeOpenAI, FakeProviders, ToolCall
from tests.agent.kit import order_tool, record_of, use_agent
from tests.callkit import captured_logs
from tests.helpers import bot_on_fakes, tone


@pytest.fixture
async def fakes():
    providers = FakeProviders(
        deepgram=FakeDeepgram(finalize_latency=0.05),
        openai=FakeOpenAI(first_token_latency=0.05),
        cartesia=FakeCartesia(first_audio_latency=0.05, seconds_per_word=0.1),
    )
    async with providers:
        yield providers


def tool_text(messages: list[dict]) -> str:
    """Every tool result and developer note the model was given, as one text."""
    return " ".join(
        str(m.get("content")) for m in messages if m.get("role") in ("tool", "developer")
    )


def asked(messages: list[dict], name: str) -> bool:
    return any(
        call["function"]["name"] == name
        for m in messages
        if m.get("role") == "assistant"
        for call in m.get("tool_calls") or []
    )


async def test_order_lookup_reaches_the_tool_and_its_answer_is_spoken(fakes, server, tmp_path):
    fakes.deepgram.add_transcripts("where is my order 42")

    def respond(messages, _tools):
        if "/orders/42" in tool_text(messages):
            return "Your order at /orders/42 ships tomorrow."
        if not asked(messages, "lookup_order"):
            return ToolCall("lookup_order", {"order_id": "42"})
        return "Let me check."

    fakes.openai.responder = respond
    tool = order_tool(server.base)
    async with bot_on_fakes(fakes, call_records_dir=tmp_path) as (url, runtime):
        use_agent(runtime, tools=[tool])
        config = CallConfig(url=url, wait_timeout=10)
        rec = await ExotelSimulator(config).run(
            [WaitForBot(gap=0.3), Say(tone(0.8)), Wait(2.5), Hangup()]
        )
    assert rec.violations == []
    (seen,) = [s for s in server.seen if s.path.startswith("/echo/orders")]
    assert seen.method == "GET" and seen.path == "/echo/orders/42"
    assert seen.headers["X-Call-Sid"] == config.call_sid
    # The tool's answer is spoken, its number read aloud (bot.languages.numbers).
    assert any("/orders/forty-two ships tomorrow" in t for t in fakes.cartesia.transcripts)
    record = record_of(tmp_path)
    (call,) = record["agent"]["tool_calls"]
    assert call["name"] == "lookup_order" and call["status"] == "ok"
    assert json.loads(call["arguments"]) == {"order_id": "42"} and call["result_bytes"] > 0
    assert record["outcome"] == "caller_hung_up"
    assert record["agent"]["variables"]["call_sid"] == config.call_sid


async def test_a_tool_that_times_out_gets_an_apology_and_the_call_goes_on(fakes, server, tmp_path):
    fakes.deepgram.add_transcripts("where is my order 42", "thanks")

    def respond(messages, _tools):
        last = messages[-1]
        if last.get("role") == "user" and last.get("content") == "thanks":
            return "You are welcome."
        if "timed out" in tool_text(messages):
            return "Sorry, I could not look that up right now."
        if not asked(messages, "lookup_order"):
            return ToolCall("lookup_order", {"order_id": "42"})
        return "One moment."

    fakes.openai.responder = respond
    tool = {**order_tool(server.base), "url": f"{server.base}/slow", "timeout_secs": 0.5}
    async with bot_on_fakes(fakes, call_records_dir=tmp_path) as (url, runtime):
        use_agent(runtime, tools=[tool])
        rec = await ExotelSimulator(CallConfig(url=url, wait_timeout=10)).run(
            [WaitForBot(gap=0.3), Say(tone(0.8)), Wait(2.0), Say(tone(0.6)), Wait(1.0), Hangup()]
        )
    assert rec.closed_by != "bot"
    spoken = fakes.cartesia.transcripts
    assert any("could not look that up" in t for t in spoken)
    assert spoken[-1].strip() == "You are welcome."  # the call went on
    (call,) = record_of(tmp_path)["agent"]["tool_calls"]
    assert call["status"] == "timeout"


async def test_the_greeting_renders_a_custom_parameter(fakes):
    async with bot_on_fakes(fakes, bot_greeting="Hello {{name|there}}, how can I help?") as (
        url,
        _runtime,
    ):
        config = CallConfig(url=url, wait_timeout=10, custom_parameters={"name": "Asha"})
        await ExotelSimulator(config).run([WaitForBot(gap=0.2), Hangup()])
        await ExotelSimulator(CallConfig(url=url, wait_timeout=10)).run(
            [WaitForBot(gap=0.2), Hangup()]
        )
    assert fakes.cartesia.transcripts[:2] == [
        "Hello Asha, how can I help?",
        "Hello there, how can I help?",
    ]


async def test_the_context_answer_overrides_the_greeting(fakes, server, tmp_path):
    async with bot_on_fakes(fakes, call_records_dir=tmp_path) as (url, runtime):
        use_agent(runtime, {"context_url": f"{server.base}/context"})
        config = CallConfig(url=url, wait_timeout=10, custom_parameters={"lead": "7"})
        await ExotelSimulator(config).run([WaitForBot(gap=0.2), Hangup()])
    assert fakes.cartesia.transcripts[0] == "Hi Asha"
    (seen,) = server.seen
    assert seen.body["call_sid"] == config.call_sid
    assert seen.body["stream_sid"] == config.stream_sid
    assert seen.body["custom_parameters"] == {"lead": "7"}
    record = record_of(tmp_path)
    assert record["agent"]["context"]["ok"] is True
    assert record["agent"]["variables"]["customer_name"] == "Asha"


async def test_a_slow_context_webhook_does_not_hold_the_greeting(fakes, server, tmp_path):
    # The webhook answers after 2 s; its timeout is 0.5 s: the greeting goes out with the
    # defaults well before the answer would have come.
    async with bot_on_fakes(fakes, call_records_dir=tmp_path) as (url, runtime):
        use_agent(runtime, {"context_url": f"{server.base}/slow", "context_timeout_secs": 0.5})
        rec = await ExotelSimulator(CallConfig(url=url, wait_timeout=10)).run(
            [WaitForBot(gap=0.2), Hangup()]
        )
    first_audio = rec.chunks[0].arrived
    assert first_audio < 0.5 + 0.5 + 0.5, first_audio  # timeout + 0.5 s, + the TTS's start
    assert fakes.cartesia.transcripts[0] == "Hello, how can I help?"
    context = record_of(tmp_path)["agent"]["context"]
    assert context["ok"] is False and "timed out" in context["error"]


async def test_transfer_closes_after_the_mark_and_passthru_answers_302(fakes):
    fakes.deepgram.add_transcripts("let me talk to a person")
    transfer = ToolCall("transfer_call", {"reason": "asked", "department": "sales"})
    # Every ask of the turn gets the call: the bot may ask early (bot.conversation.turns).
    fakes.openai.responder = lambda _messages, _tools: transfer
    agent = {
        "builtin_tools": ["end_call", "transfer_call"],
        "transfer_message": "Connecting you to {{team|our team}} now.",
        "departments": {"default": ["+918000000001"], "sales": ["+918000000002"]},
    }
    async with bot_on_fakes(fakes) as (url, runtime):
        use_agent(runtime, agent)
        config = CallConfig(url=url, wait_timeout=10)
        rec = await ExotelSimulator(config).run(
            [WaitForBot(gap=0.3), Say(tone(0.8)), WaitForBotHangup(timeout=10)]
        )
        base = url.replace("ws://", "http://").replace("/exotel/ws", "")
        async with httpx.AsyncClient(base_url=base) as client:
            flat = {"CallSid": config.call_sid, "Stream[Status]": "completed"}
            blob = {"CallSid": config.call_sid, "Stream": json.dumps({"Status": "completed"})}
            answers = [
                (await client.get("/exotel/passthru", params=flat)).status_code,
                (await client.get("/exotel/passthru", params=blob)).status_code,
                (await client.post("/exotel/passthru", data=flat)).status_code,
                (await client.get("/exotel/passthru", params={"CallSid": "other"})).status_code,
            ]
            connect = (await client.get("/exotel/connect", params=flat)).json()
            nobody = (await client.get("/exotel/connect", params={"CallSid": "other"})).json()
        async with asyncio.timeout(5):
            while runtime.active_calls or not runtime.finished_calls:
                await asyncio.sleep(0.02)
        session = runtime.finished_calls[-1]
    assert rec.closed_by == "bot"
    assert fakes.cartesia.transcripts[-1] == "Connecting you to our team now."
    last_mark = rec.marks[-1]
    assert last_mark.echoed_at is not None and last_mark.echoed_at <= rec.duration_secs
    assert session.end_reason == "transferred to a human"
    assert session.agent.outcome(session.end_reason, session.hung_up_by) == "transferred"
    assert answers == [302, 302, 302, 200]
    assert connect["destination"] == {"numbers": ["+918000000002"]}
    assert connect["fetch_after_attempt"] is False and connect["max_ringing_duration"] == 45
    assert nobody["destination"] == {"numbers": []}


def _pin_responder(verified: list[str]):
    def respond(messages, _tools):
        text = tool_text(messages)
        if "ships tomorrow" in text:  # what /text answers
            verified.append(text)
            return "Your PIN is verified."
        if '"length": 4' in text or '\\"length\\": 4' in text:
            if not asked(messages, "verify_pin"):
                return ToolCall("verify_pin", {})
        if not asked(messages, "collect_digits"):
            return ToolCall(
                "collect_digits",
                {"purpose": "pin", "prompt": "Type your PIN.", "min_digits": 4, "max_digits": 8},
            )
        return ""

    return respond


PIN_TOOL = {
    "name": "verify_pin",
    "description": "Check the PIN the caller typed",
    "url": "{base}/text",
    "headers": {"X-Pin": "{{{{digits.pin}}}}"},
}


@pytest.mark.parametrize("to_model", [False, True])
async def test_keyed_digits_reach_the_tool_and_stay_off_the_model(
    fakes, server, tmp_path, to_model
):
    fakes.deepgram.add_transcripts("check my pin")
    verified: list[str] = []
    fakes.openai.responder = _pin_responder(verified)
    tool = {**PIN_TOOL, "url": PIN_TOOL["url"].format(base=server.base)}
    tool["headers"] = {"X-Pin": "{{digits.pin}}"}
    agent = {"builtin_tools": ["collect_digits"], "digits": {"to_model": to_model}}
    keys = [Dtmf(d) for d in "1234#"]
    setup_logging("DEBUG")  # the server's log patcher (masks a call's keypad entries)
    with captured_logs("DEBUG") as lines:
        async with bot_on_fakes(fakes, call_records_dir=tmp_path) as (url, runtime):
            use_agent(runtime, agent, [tool])
            rec = await ExotelSimulator(CallConfig(url=url, wait_timeout=10)).run(
                [WaitForBot(gap=0.3), Say(tone(0.8)), WaitForBot(gap=0.2), *keys, Wait(2.0)]
                + [Hangup()]
            )
    assert rec.violations == []
    (pin,) = [s for s in server.seen if s.path == "/text"]
    assert pin.headers["X-Pin"] == "1234"
    sent = json.dumps(fakes.openai.requests)
    assert ("1234" in sent) is to_model
    assert "Your PIN is verified." in fakes.cartesia.transcripts
    record_text = json.dumps(record_of(tmp_path), ensure_ascii=False)
    assert "1234" not in record_text and "\u2022\u2022\u2022\u2022" in record_text
    leaked = [str(line) for line in lines if "1234" in line.message]
    assert leaked == []


async def test_end_call_of_an_interrupted_turn_does_not_run(fakes):
    fakes.deepgram.add_transcripts("thats all", "wait one more thing")
    goodbye = "Thank you for calling, have a really lovely and wonderful day, goodbye."
    replies = {
        "thats all": [goodbye, ToolCall("end_call", {})],
        "wait one more thing": "Sure, what is it?",
    }
    fakes.openai.responder = lambda messages, _tools: replies[messages[-1]["content"]]
    async with bot_on_fakes(fakes) as (url, runtime):
        rec = await ExotelSimulator(CallConfig(url=url, wait_timeout=10)).run(
            [
                WaitForBot(gap=0.3),
                Say(tone(0.8)),
                BargeIn(tone(0.6), after_bot_start=0.4),
                WaitForBot(gap=1.0),
                Hangup(),
            ]
        )
        async with asyncio.timeout(5):
            while runtime.active_calls or not runtime.finished_calls:
                await asyncio.sleep(0.02)
        session = runtime.finished_calls[-1]
    assert rec.closed_by != "bot"
    assert session.hung_up_by == "caller"
    assert fakes.cartesia.transcripts[-1] == "Sure, what is it?"


async def test_the_dynamic_url_fetches_the_context_once_for_the_stream(fakes, server):
    async with bot_on_fakes(fakes) as (url, runtime):
        use_agent(runtime, {"context_url": f"{server.base}/context"})
        base = url.replace("ws://", "http://").replace("/exotel/ws", "")
        config = CallConfig(url=url, wait_timeout=10)
        async with httpx.AsyncClient(base_url=base) as client:
            query = {"CallSid": config.call_sid, "CallFrom": "+919800000000", "lead": "7"}
            answer = (await client.get("/exotel/url", params=query)).json()
        assert "lead=7" in answer["url"]
        await ExotelSimulator(config).run([WaitForBot(gap=0.2), Hangup()])
    (seen,) = server.seen  # fetched at the dynamic URL only; start used the kept answer
    assert seen.body["call_sid"] == config.call_sid and seen.body["stream_sid"] is None
    assert seen.body["from"] == "+919800000000"
    assert seen.body["custom_parameters"] == {"lead": "7"}
    assert fakes.cartesia.transcripts[0] == "Hi Asha"


async def test_the_context_answer_language_makes_the_call_hindi(fakes, server, monkeypatch):
    """The context webhook's ``language`` is known before the call is built (the runtime
    preloads the answer), so the call listens, greets and speaks in it."""
    from bot.languages import DEFAULT_PHRASES

    hindi = DEFAULT_PHRASES["hi-IN"]
    monkeypatch.setenv("CARTESIA_VOICE_ID_HI_IN", "hindi-voice-0001")
    monkeypatch.setenv("AGENT_LANGUAGES", "en-IN,hi-IN")
    async with bot_on_fakes(fakes) as (url, runtime):
        use_agent(runtime, {"context_url": f"{server.base}/hindi-context"})
        await ExotelSimulator(CallConfig(url=url, wait_timeout=10)).run(
            [WaitForBot(gap=0.3), Hangup()]
        )
    assert len(server.seen) == 1  # fetched once: the call's own agent recalls the answer
    assert fakes.deepgram.connections[0].query["language"] == "hi"
    assert fakes.cartesia.transcripts[0] == hindi.greeting
