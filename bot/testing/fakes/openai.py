"""Fake OpenAI Chat Completions (streaming SSE) and ``/v1/models``, as ``OpenAILLMService``
uses them; scripted replies may be text, tokens or tool calls."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import ClientDisconnect

from bot.testing.fakes.base import LOCALHOST, FakeServer, maybe_await, url_scheme
from bot.testing.localserver import QuietServer

DEFAULT_OPENAI_KEY = "fake-openai-key"


@dataclass(frozen=True)
class ToolCall:
    """A scripted tool-call reply, streamed as ``delta.tool_calls`` chunks like OpenAI does."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    call_id: str = ""
    """Generated (``call_...``) when empty."""

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(dict(self.arguments))


Reply = str | Sequence[str] | ToolCall | Sequence[ToolCall]
"""A text (split into word tokens), a list of tokens, one tool call, or parallel tool calls."""
Responder = Callable[[list[dict[str, Any]], list[dict[str, Any]] | None], Reply | Awaitable[Reply]]
"""(messages, tools) -> reply."""

_TOKEN_RE = re.compile(r"\s*\S+")
_ARGUMENT_PIECE = 8  # OpenAI streams tool arguments a few characters at a time


def _tokenize(text: str) -> list[str]:
    """Word tokens with their leading space, the way OpenAI's stream chunks look."""
    return _TOKEN_RE.findall(text) or ([text] if text else [])


def _normalize_reply(reply: Reply) -> tuple[list[str], list[ToolCall]]:
    """Split a reply into (text tokens, tool calls); exactly one of them is non-empty."""
    if isinstance(reply, str):
        return _tokenize(reply), []
    if isinstance(reply, ToolCall):
        return [], [reply]
    items = list(reply)
    if items and all(isinstance(item, ToolCall) for item in items):
        return [], items  # type: ignore[return-value]
    if all(isinstance(item, str) for item in items):
        return items, []  # type: ignore[return-value]
    # Words, then tool calls (a goodbye with its end_call), as OpenAI streams them.
    texts = [item for item in items if isinstance(item, str)]
    calls = [item for item in items if isinstance(item, ToolCall)]
    if len(texts) + len(calls) == len(items) and items[: len(texts)] == texts:
        return [t for text in texts for t in _tokenize(text)], calls
    raise TypeError(f"a reply is text, tokens or tool calls (words first), not {reply!r}")


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    return ""


def _openai_error(status: HTTPStatus, message: str, kind: str, code: str | None) -> JSONResponse:
    """An error body shaped like OpenAI's, so the SDK raises the matching exception class."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


class FakeOpenAI(FakeServer):
    """OpenAI Chat Completions (streaming SSE) and ``/v1/models`` as ``OpenAILLMService`` uses them.

    Replies come from ``responder(messages, tools)`` if given, otherwise from the ``replies``
    queue (one per completion request), otherwise ``"You said: <last user text>."``. A reply
    may be a ``ToolCall`` (or a list of them), streamed with ``finish_reason="tool_calls"``.

    Fault units: ``error_midstream`` sends ``after`` content/argument deltas and then an SSE
    ``{"error": ...}`` event (the SDK raises ``APIError``); ``hang`` accepts the request and never
    sends a status line; ``refuse`` answers 503 (note the SDK retries 503 twice by default).
    """

    def __init__(
        self,
        *,
        api_key: str | None = DEFAULT_OPENAI_KEY,
        port: int = 0,
        replies: Iterable[Reply] = (),
        responder: Responder | None = None,
        first_token_latency: float = 0.3,
        inter_token_delay: float = 0.02,
        models: Sequence[str] = ("gpt-4.1", "gpt-4.1-mini", "gpt-4o-mini"),
    ) -> None:
        """Create the fake (not yet listening).

        Args:
            api_key: Expected key (``Authorization: Bearer <key>``); None accepts any key.
            port: 0 for any free port.
            replies: Scripted replies, consumed one per completion request.
            responder: Overrides the script: (messages, tools) -> reply.
            first_token_latency: Seconds before the response starts (status line included,
                as with OpenAI, so ``retry_on_timeout`` sees it).
            inter_token_delay: Seconds between streamed deltas.
            models: Ids listed by ``GET /v1/models``.
        """
        super().__init__(api_key=api_key, port=port)
        self.replies: deque[Reply] = deque(replies)
        self.responder = responder
        self.first_token_latency = first_token_latency
        self.inter_token_delay = inter_token_delay
        self.models = list(models)
        self.requests: list[dict[str, Any]] = []
        """Bodies of authorized ``/chat/completions`` requests, refused ones included."""
        self._server: QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.app = self._build_app()

    @property
    def base_url(self) -> str:
        """Pass as ``OpenAILLMService(base_url=...)`` (the SDK appends ``/chat/completions``)."""
        return f"{url_scheme('http', self.tls)}://{LOCALHOST}:{self.port}/v1"

    def add_replies(self, *replies: Reply) -> None:
        """Queue replies, one per future completion request."""
        self.replies.extend(replies)

    @property
    def last_messages(self) -> list[dict[str, Any]]:
        """Messages of the most recent completion request."""
        return self.requests[-1]["messages"] if self.requests else []

    # -- lifecycle ---------------------------------------------------------------------------

    async def _serve(self, port: int) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOCALHOST, port))
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_keep_alive=75,  # Pipecat keeps pooled connections forever; be lenient
            timeout_graceful_shutdown=1,
            backlog=2048,
            ssl_certfile=self.tls.certfile if self.tls else None,
            ssl_keyfile=self.tls.keyfile if self.tls else None,
        )
        self._stopping.clear()
        self._server = QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # re-raise the startup failure
                raise RuntimeError("FakeOpenAI exited during startup")
            await asyncio.sleep(0.005)
        return sock.getsockname()[1]

    async def _shutdown(self) -> None:
        self._stopping.set()  # ends streams and hung requests promptly
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        self._server, self._task = None, None

    # -- HTTP --------------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="fake-openai", docs_url=None, redoc_url=None, openapi_url=None)
        app.add_api_route("/v1/chat/completions", self._chat_completions, methods=["POST"])
        app.add_api_route("/v1/models", self._list_models, methods=["GET"])
        app.add_api_route("/v1/models/{model_id}", self._get_model, methods=["GET"])
        return app

    def _auth_error(self, request: Request) -> JSONResponse | None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self._key_ok(key.strip()):
            return None
        self.rejected += 1
        return _openai_error(
            HTTPStatus.UNAUTHORIZED,
            "Incorrect API key provided. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        )

    def _model_entry(self, model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": 1700000000, "owned_by": "system"}

    async def _list_models(self, request: Request) -> Response:
        if error := self._auth_error(request):
            return error
        return JSONResponse({"object": "list", "data": [self._model_entry(m) for m in self.models]})

    async def _get_model(self, model_id: str, request: Request) -> Response:
        if error := self._auth_error(request):
            return error
        if model_id not in self.models:
            message = f"The model '{model_id}' does not exist or you do not have access to it."
            return _openai_error(
                HTTPStatus.NOT_FOUND, message, "invalid_request_error", "model_not_found"
            )
        return JSONResponse(self._model_entry(model_id))

    async def _chat_completions(self, request: Request) -> Response:
        if error := self._auth_error(request):
            return error
        try:
            body = await request.json()
        except ClientDisconnect:
            # The client gave up while sending (a cancelled request): nobody to answer.
            return Response(status_code=499)
        except ValueError:
            body = None
        if not isinstance(body, dict) or "model" not in body or "messages" not in body:
            message = "Request body must be JSON with 'model' and 'messages'."
            return _openai_error(HTTPStatus.BAD_REQUEST, message, "invalid_request_error", None)
        self.requests.append(body)
        if self._faults.fire("refuse"):
            message = "The server is overloaded or not ready yet."
            return _openai_error(HTTPStatus.SERVICE_UNAVAILABLE, message, "server_error", None)
        if self._faults.fire("hang"):
            return await self._hang(request)
        tokens, calls = _normalize_reply(await self._next_reply(body))
        await asyncio.sleep(self.first_token_latency)
        if not body.get("stream"):
            return JSONResponse(_completion(body, tokens, calls))
        return StreamingResponse(
            self._stream(body, tokens, calls),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-request-id": f"req_{uuid.uuid4().hex}"},
        )

    async def _next_reply(self, body: Mapping[str, Any]) -> Reply:
        messages, tools = body.get("messages") or [], body.get("tools")
        if self.responder is not None:
            return await maybe_await(self.responder(messages, tools))
        if self.replies:
            return self.replies.popleft()
        return f"You said: {_last_user_text(messages) or 'nothing'}."

    async def _hang(self, request: Request) -> Response:
        """Send nothing until the client gives up or the fake stops."""
        waiters = [
            asyncio.create_task(_wait_disconnect(request)),
            asyncio.create_task(self._stopping.wait()),
        ]
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return Response(status_code=HTTPStatus.SERVICE_UNAVAILABLE)

    async def _stream(
        self, body: Mapping[str, Any], tokens: list[str], calls: list[ToolCall]
    ) -> AsyncIterator[bytes]:
        """The SSE body: role delta, content or tool-call deltas, finish, usage, ``[DONE]``."""
        envelope = _ChunkEnvelope(str(body["model"]))
        deltas = [{"content": t} for t in tokens] + _tool_call_deltas(calls)
        first = (
            {"role": "assistant", "content": None}
            if calls and not tokens
            else {"role": "assistant", "content": "", "refusal": None}
        )
        yield _sse(envelope.chunk(first))
        for index, delta in enumerate(deltas):
            if self._stopping.is_set():
                return
            if self._faults.armed("error_midstream") and index >= self._faults.after:
                if self._faults.fire("error_midstream"):
                    yield _sse(_STREAM_ERROR)
                    return
            await asyncio.sleep(self.inter_token_delay)
            yield _sse(envelope.chunk(delta))
        yield _sse(envelope.chunk({}, finish_reason="tool_calls" if calls else "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            yield _sse(envelope.usage(_usage(body, len(deltas))))
        yield b"data: [DONE]\n\n"


_STREAM_ERROR = {
    "error": {
        "message": "The server had an error while processing your request. (fake, injected)",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}


async def _wait_disconnect(request: Request) -> None:
    """Block until uvicorn reports the client went away (the body is already read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _sse(payload: Mapping[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


class _ChunkEnvelope:
    """The fields every ``chat.completion.chunk`` of one response shares."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model

    def chunk(self, delta: Mapping[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish_reason}
            ],
            "usage": None,
        }

    def usage(self, usage: Mapping[str, int]) -> dict[str, Any]:
        """The final chunk under ``stream_options.include_usage``: empty choices, usage set."""
        chunk = self.chunk({})
        chunk["choices"] = []
        chunk["usage"] = dict(usage)
        return chunk


def _call_id(call: ToolCall) -> str:
    return call.call_id or f"call_{uuid.uuid4().hex[:24]}"


def _tool_call_deltas(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """One delta naming each call (with id, empty arguments), then argument fragments."""
    deltas: list[dict[str, Any]] = []
    for index, call in enumerate(calls):
        head = {"index": index, "id": _call_id(call), "type": "function"}
        head["function"] = {"name": call.name, "arguments": ""}
        deltas.append({"tool_calls": [head]})
        arguments = call.arguments_json()
        for start in range(0, len(arguments), _ARGUMENT_PIECE):
            piece = arguments[start : start + _ARGUMENT_PIECE]
            deltas.append({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    return deltas


def _usage(body: Mapping[str, Any], completion_tokens: int) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
    }


def _completion(
    body: Mapping[str, Any], tokens: list[str], calls: list[ToolCall]
) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` (Pipecat's ``run_inference`` uses these)."""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(tokens) if tokens else None}
    if calls:
        message["tool_calls"] = [
            {
                "id": _call_id(c),
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments_json()},
            }
            for c in calls
        ]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if calls else "stop",
            }
        ],
        "usage": _usage(body, len(tokens) + len(calls)),
    }
