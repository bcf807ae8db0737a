"""HTTP tools: config checks, the Pipecat schema, and requests against a local server."""

from __future__ import annotations

import json

import pytest

from bot.agent.tools import (
    MAX_RESULT_BYTES,
    HttpToolConfig,
    HttpToolRunner,
    parse_tools,
    to_function_schema,
    tools_schema,
)
from bot.agent.variables import CallVariables
from bot.config import ConfigError

ORDER_SCHEMA = {
    "type": "object",
    "properties": {"order_id": {"type": "string", "description": "the order number"}},
    "required": ["order_id"],
}


def entry(**kw):
    base = {"name": "lookup_order", "description": "Look up an order", "url": "https://x/o"}
    base.update(kw)
    return base


def test_parse_a_full_tool():
    [tool] = parse_tools(
        [
            entry(
                method="get",
                timeout_secs=3,
                headers={"Authorization": "Bearer ${ORDERS_TOKEN}"},
                say_while_running="Let me check.",
                parameters=ORDER_SCHEMA,
            )
        ],
        environ={"ORDERS_TOKEN": "t0k"},
    )
    assert tool.method == "GET" and tool.timeout_secs == 3.0
    assert tool.headers == {"Authorization": "Bearer t0k"}
    schema = to_function_schema(tool).to_default_dict()
    assert schema["parameters"]["required"] == ["order_id"]
    assert [t.name for t in tools_schema([tool]).standard_tools] == ["lookup_order"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([entry(methd="GET")], r'"lookup_order": unknown key .methd.; did you mean "method"'),
        ([{"description": "d", "url": "https://x"}], r"entry 1: name is missing"),
        ([entry(description="")], r'"lookup_order": description is missing'),
        ([entry(url=None)], r'"lookup_order": url is missing'),
        ([entry(method="FETCH")], r'"lookup_order": method .FETCH.'),
        ([entry(parameters={"type": "string"})], r'"lookup_order": parameters must be'),
        ([entry(parameters={"type": "object", "required": "x"})], r"not a valid JSON Schema"),
        ([entry(), entry()], r'"lookup_order": name: two tools'),
        ([entry(headers={"A": "${MISSING_ENV}"})], r"headers.A uses \$\{MISSING_ENV\}"),
        ([entry(timeout_secs=0)], r"timeout_secs"),
    ],
)
def test_bad_tools_name_the_tool_and_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_tools(raw, environ={})


def variables() -> CallVariables:
    v = CallVariables.from_call(
        call_sid="CA77", stream_sid="ST77", from_number="+911", to_number="+912"
    )
    v.merge({"customer": "Asha"})
    return v


def tool(server, path="/echo/orders/{{order_id}}", **kw) -> HttpToolConfig:
    kw.setdefault("parameters", ORDER_SCHEMA)
    return HttpToolConfig(name="lookup_order", description="d", url=server.base + path, **kw)


async def test_post_body_header_and_json_result(server):
    runner = HttpToolRunner()
    try:
        result = await runner.run(tool(server), {"order_id": "4 2"}, variables())
    finally:
        await runner.close()
    [seen] = server.seen
    assert seen.method == "POST" and seen.path == "/echo/orders/4 2"
    assert seen.headers["X-Call-Sid"] == "CA77"
    assert seen.body["tool"] == "lookup_order"
    assert seen.body["arguments"] == {"order_id": "4 2"}
    assert seen.body["call"]["call_sid"] == "CA77" and seen.body["call"]["stream_sid"] == "ST77"
    assert seen.body["call"]["variables"]["customer"] == "Asha"
    assert result["path"] == "/echo/orders/4 2"
    [record] = runner.log
    assert record.status == "ok" and record.result_bytes > 0


async def test_get_sends_query_parameters(server):
    runner = HttpToolRunner()
    try:
        t = tool(server, path="/echo/orders", method="GET")
        result = await runner.run(t, {"order_id": "42"}, variables())
    finally:
        await runner.close()
    [seen] = server.seen
    assert seen.method == "GET" and seen.query == {"order_id": "42"} and seen.body is None
    assert seen.headers["X-Call-Sid"] == "CA77"
    assert result["query"] == {"order_id": "42"}


async def test_digits_reach_the_tool_not_the_model(server):
    pin_schema = {"type": "object", "properties": {"pin": {"type": "string"}}, "required": []}
    v = variables()
    v.set_digits("pin", "1234")
    t = HttpToolConfig(
        name="verify_pin",
        description="d",
        url=server.base + "/echo/verify/{{digits.pin}}",
        headers={"X-Customer": "{{customer}}"},
        parameters=pin_schema,
    )
    runner = HttpToolRunner()
    try:
        # The model passes the template; it never saw the digits.
        result = await runner.run(t, {"pin": "{{digits.pin}}"}, v)
    finally:
        await runner.close()
    [seen] = server.seen
    assert seen.path == "/echo/verify/1234"
    assert seen.body["arguments"] == {"pin": "1234"}
    assert seen.headers["X-Customer"] == "Asha"
    assert seen.body["call"]["variables"]["digits.pin"] == "\u2022" * 4
    assert "1234" not in json.dumps(runner.log.as_dicts())
    assert isinstance(result, dict)


async def test_invalid_arguments_are_answered_not_sent(server):
    runner = HttpToolRunner()
    try:
        result = await runner.run(tool(server), {"order": 42}, variables())
    finally:
        await runner.close()
    assert server.seen == []
    assert "error" in result and "order_id" in result["error"]
    assert runner.log[0].status == "invalid"


@pytest.mark.parametrize(
    ("path", "status", "needle"),
    [("/slow", "timeout", "timed out"), ("/fail", "error", "HTTP 503")],
)
async def test_failures_become_errors_for_the_model(server, path, status, needle):
    runner = HttpToolRunner()
    try:
        result = await runner.run(
            tool(server, path=path, timeout_secs=0.3), {"order_id": "1"}, variables()
        )
    finally:
        await runner.close()
    assert set(result) == {"error"} and needle in result["error"]
    assert runner.log[0].status == status and runner.log[0].result_bytes == 0


async def test_refused_connection(refused_url):
    runner = HttpToolRunner()
    t = HttpToolConfig(name="t", description="d", url=refused_url, timeout_secs=1)
    try:
        result = await runner.run(t, {}, variables())
    finally:
        await runner.close()
    assert "could not be reached" in result["error"] and runner.log[0].status == "error"


async def test_text_and_large_answers(server):
    runner = HttpToolRunner()
    try:
        text = await runner.run(tool(server, path="/text"), {"order_id": "1"}, variables())
        big = await runner.run(tool(server, path="/big"), {"order_id": "1"}, variables())
        odd = await runner.run(tool(server, path="/notjson"), {"order_id": "1"}, variables())
    finally:
        await runner.close()
    assert text == "Order 42 ships tomorrow."
    assert isinstance(big, str) and len(big) == MAX_RESULT_BYTES
    assert runner.log[1].result_bytes == MAX_RESULT_BYTES
    assert odd == "<html>oops</html>"
