"""Reading a streamed chat completion: SSE framing, lenient chunks, errors mid-stream.

The whole path against the fake server runs in tests/test_fakes.py, on Pipecat's service and
ours side by side; these are the cases a well-behaved server never sends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace

import httpx2
import pytest
from openai import APIError

from bot.providers import openai_stream
from bot.providers.openai_stream import ChunkStream, _chunk, _sse_data, messages_as_given

CHUNK = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}],
}
RESPONSE = SimpleNamespace(http_request=httpx2.Request("POST", "http://127.0.0.1/v1"))


async def lines(*items: str) -> AsyncIterator[str]:
    for item in items:
        yield item


async def events(*items: str) -> list[str]:
    return [data async for data in _sse_data(lines(*items))]


async def test_each_event_is_its_data_lines_joined() -> None:
    got = await events(
        ": keep-alive comment",
        "event: message",
        'data: {"a":',
        "data:1}",
        "",
        "",
        "data: [DONE]",
    )
    assert got == ['{"a":\n1}', "[DONE]"]  # the last event ends with the stream


def test_a_chunk_that_fits_the_schema_is_validated() -> None:
    chunk = _chunk(json.dumps(CHUNK), RESPONSE)
    assert chunk.choices[0].delta.content == "Hi"
    assert chunk.usage is None


def test_a_chunk_off_the_schema_is_still_read_as_the_sdk_reads_it() -> None:
    odd = {**CHUNK, "choices": [{"delta": {"content": "Hi"}, "finish_reason": "eos"}]}
    odd["x_provider"] = {"latency": 3}
    chunk = _chunk(json.dumps(odd), RESPONSE)
    assert chunk.choices[0].delta.content == "Hi"
    assert chunk.choices[0].finish_reason == "eos"
    assert chunk.x_provider == {"latency": 3}


def test_an_error_event_raises_the_sdks_api_error() -> None:
    with pytest.raises(APIError, match="overloaded"):
        _chunk(json.dumps({"error": {"message": "overloaded", "type": "server_error"}}), RESPONSE)
    with pytest.raises(APIError, match="An error occurred during streaming"):
        _chunk(json.dumps({"error": "yes"}), RESPONSE)


def test_data_that_is_not_json_raises() -> None:
    with pytest.raises(json.JSONDecodeError):
        _chunk("{not json", RESPONSE)


def test_messages_travel_in_extra_body_and_a_callers_own_still_wins() -> None:
    history = [{"role": "user", "content": "hi"}]
    params = {"model": "m", "messages": history, "stream": True}
    sent = messages_as_given(params)
    assert sent == {
        "model": "m",
        "messages": [],
        "stream": True,
        "extra_body": {"messages": history},
    }
    assert params["messages"] is history  # the caller's dict is left alone

    theirs = {**params, "extra_body": {"messages": ["theirs"], "top_k": 5}}
    assert messages_as_given(theirs)["extra_body"] == {"messages": ["theirs"], "top_k": 5}


class LinesResponse:
    """An AsyncAPIResponse stand-in: its body as lines, then ``tail`` after the [DONE]."""

    def __init__(self, tail) -> None:
        self.http_request = RESPONSE.http_request
        self.read_after_done: list[str] = []
        self.closed = False
        self._tail = tail

    async def iter_lines(self) -> AsyncIterator[str]:
        for line in (f"data: {json.dumps(CHUNK)}", "", "data: [DONE]", ""):
            yield line
        async for line in self._tail():
            self.read_after_done.append(line)
            yield line

    async def close(self) -> None:
        self.closed = True


async def test_the_body_is_read_to_its_end_after_done_so_the_connection_is_kept() -> None:
    async def end_of_body() -> AsyncIterator[str]:
        yield ""

    response = LinesResponse(end_of_body)
    chunks = [c async for c in ChunkStream(response)]  # type: ignore[arg-type]
    assert [c.choices[0].delta.content for c in chunks] == ["Hi"]
    assert response.read_after_done == [""] and response.closed


async def test_a_body_that_never_ends_after_done_is_closed_after_a_short_wait(monkeypatch) -> None:
    monkeypatch.setattr(openai_stream, "DRAIN_SECS", 0.05)

    async def hangs() -> AsyncIterator[str]:
        await asyncio.Event().wait()
        yield ""

    response = LinesResponse(hangs)
    chunks = await asyncio.wait_for(_collect(ChunkStream(response)), 5)  # type: ignore[arg-type]
    assert len(chunks) == 1 and response.closed


async def _collect(stream: ChunkStream) -> list:
    return [c async for c in stream]
