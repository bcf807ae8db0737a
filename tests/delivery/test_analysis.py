"""Summary and extraction against a local fake of /v1/chat/completions (non-streaming)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from bot.delivery.analysis import (
    AnalysisConfig,
    LLMEndpoint,
    analyze,
    extraction_from_captures,
    transcript_text,
)
from bot.delivery.events import Turn

pytestmark = pytest.mark.timeout(10)

SCHEMA = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "pattern": "^[0-9]{4,}$"},
        "callback_time": {"type": "string"},
        "satisfied": {"type": "boolean"},
        "rating": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["order_id"],
}
TRANSCRIPT = [
    Turn("bot", "Namaste! How can I help?"),
    {"role": "caller", "text": "My order 12345 has not come. Call me at 6 pm."},
    {"role": "bot", "text": "I will arrange a callback at 6 pm."},
]


@dataclass
class FakeChat:
    """Answers each completion with the next ``contents`` item (or an HTTP status)."""

    contents: list[Any] = field(default_factory=list)
    delay_secs: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    base_url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"body": body, "auth": request.headers.get("authorization")})
        await asyncio.sleep(self.delay_secs)
        answer = self.contents[min(len(self.requests), len(self.contents)) - 1]
        if isinstance(answer, int):
            return web.json_response({"error": {"message": "boom"}}, status=answer)
        message = {"role": "assistant", "content": answer}
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
            }
        )


@pytest.fixture
async def chat() -> AsyncIterator[FakeChat]:
    fake = FakeChat()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    yield fake
    await runner.cleanup()


def endpoint(chat: FakeChat) -> LLMEndpoint:
    return LLMEndpoint(base_url=chat.base_url, api_key="sk-test-123", model="gpt-test")


CONFIG = AnalysisConfig(summary=True, extract=SCHEMA, timeout_secs=2.0)


async def test_summary_and_extraction_validated(chat):
    answer = {
        "summary": "The caller's order 12345 is late; a callback was arranged for 6 pm.",
        "extraction": {"order_id": "12345", "callback_time": "18:00", "colour": "red"},
    }
    chat.contents = [json.dumps(answer)]
    result = await analyze(CONFIG, TRANSCRIPT, endpoint(chat))
    assert result.error is None
    assert result.summary == answer["summary"]
    assert result.extraction == {"order_id": "12345", "callback_time": "18:00"}
    [request] = chat.requests
    assert request["auth"] == "Bearer sk-test-123"
    assert request["body"]["response_format"] == {"type": "json_object"}
    assert request["body"]["model"] == "gpt-test"
    system, user = request["body"]["messages"]
    assert '"order_id"' in system["content"] and "summary" in system["content"]
    assert user["content"].splitlines()[1] == (
        "Caller: My order 12345 has not come. Call me at 6 pm."
    )


async def test_fields_that_do_not_match_are_dropped_and_named(chat):
    answer = {"summary": "ok", "extraction": {"order_id": "12a", "satisfied": True, "rating": 9}}
    chat.contents = [json.dumps(answer)]
    result = await analyze(CONFIG, TRANSCRIPT, endpoint(chat))
    assert result.summary == "ok"
    assert result.extraction == {"satisfied": True}
    assert "'order_id'" in result.error and "'rating'" in result.error
    assert "required" in result.error


async def test_json_schema_mode_sends_the_schema(chat):
    chat.contents = [json.dumps({"extraction": {"order_id": "9999"}})]
    config = AnalysisConfig(extract=SCHEMA, response_format="json_schema", timeout_secs=2.0)
    result = await analyze(config, TRANSCRIPT, endpoint(chat))
    assert (result.summary, result.extraction, result.error) == (None, {"order_id": "9999"}, None)
    sent = chat.requests[0]["body"]["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["schema"]["properties"]["extraction"] == SCHEMA


@pytest.mark.parametrize(
    ("contents", "expected"),
    [
        (["not json at all"], "not JSON"),
        (["[1, 2]"], "not a JSON object"),
        ([json.dumps({"summary": ""})], "no summary"),
        ([500], "analysis failed: InternalServerError"),
    ],
)
async def test_failures_are_recorded_not_raised(chat, contents, expected):
    chat.contents = contents
    result = await analyze(CONFIG, TRANSCRIPT, endpoint(chat))
    assert expected in result.error
    assert "sk-test-123" not in result.error


async def test_a_slow_endpoint_times_out(chat):
    chat.contents = [json.dumps({"summary": "late"})]
    chat.delay_secs = 3.0
    config = AnalysisConfig(summary=True, timeout_secs=0.3)
    result = await analyze(config, TRANSCRIPT, endpoint(chat))
    assert result.summary is None and "time" in result.error.lower()


async def test_a_refused_endpoint_is_an_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = LLMEndpoint(f"http://127.0.0.1:{port}/v1", "sk-x", "m")
    result = await analyze(AnalysisConfig(summary=True, timeout_secs=1.0), TRANSCRIPT, down)
    assert result.summary is None and result.error.startswith("analysis failed")


async def test_nothing_configured_asks_nothing(chat):
    result = await analyze(AnalysisConfig(), TRANSCRIPT, endpoint(chat))
    assert (result.summary, result.extraction, result.error) == (None, None, None)
    assert chat.requests == []


def test_captures_keep_what_the_schema_accepts():
    captured = {
        "order_id": "12345",
        "satisfied": "yes",
        "rating": "4",
        "callback_time": "6 pm",
        "mood": "fine",
    }
    assert extraction_from_captures(SCHEMA, captured) == {
        "order_id": "12345",
        "satisfied": True,
        "rating": 4,
        "callback_time": "6 pm",
    }
    bad = {"order_id": "12", "satisfied": "maybe", "rating": "11"}
    assert extraction_from_captures(SCHEMA, bad) == {}


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"\[analysis.extract\] is not a valid JSON Schema"):
        AnalysisConfig.from_mapping({"extract": {"type": "object", "properties": 3}})
    with pytest.raises(ValueError, match=r"\[analysis.extract\] needs type"):
        AnalysisConfig.from_mapping({"extract": {"type": "string"}})
    with pytest.raises(ValueError, match="no key"):
        AnalysisConfig.from_mapping({"sumary": True})
    with pytest.raises(ValueError, match="summary must be"):
        AnalysisConfig.from_mapping({"summary": "yes"})
    config = AnalysisConfig.from_mapping({"summary": True, "extract": SCHEMA})
    assert config.enabled and config.extract == SCHEMA


def test_transcript_text_bounds_the_request():
    long = [{"role": "caller", "text": "x" * 1000}] * 40
    assert len(transcript_text(long)) == 24_000
    assert transcript_text([]) == "(nobody spoke)"
