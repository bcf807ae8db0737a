"""Fake Cartesia TTS websocket (``/tts/websocket``), as ``CartesiaTTSService`` speaks it."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from loguru import logger
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed

from bot.testing.fakes.base import LOCALHOST, WebSocketFake, send_json, split_target, url_scheme
from bot.testing.fakes.speech import VOICED_FRACTION, SynthesizedSpeech, synthesize_speech

DEFAULT_CARTESIA_KEY = "fake-cartesia-key"
CARTESIA_API_VERSION = "2026-03-01"
"""The ``Cartesia-Version`` Pipecat 1.14 pins (``services/cartesia/tts.py``)."""


_CARTESIA_RATES = frozenset({8000, 16000, 22050, 24000, 44100, 48000})


@dataclass
class CartesiaConnection:
    """What one Cartesia TTS websocket saw."""

    query: dict[str, str]
    api_key: str | None
    version: str | None
    opened_at: float = field(default_factory=time.monotonic)
    closed_at: float | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    """Every parsed client message (generation requests and cancels)."""
    cancelled: list[str] = field(default_factory=list)
    audio_bytes_sent: int = 0


class _ContextFailed(Exception):
    """Raised inside a context worker once an injected error has been sent for it."""


@dataclass
class _CartesiaContext:
    """One ``context_id``: requests are spoken strictly in order, timestamps keep counting."""

    context_id: str
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    offset: float = 0.0
    chunks_sent: int = 0
    started: bool = False


class FakeCartesia(WebSocketFake):
    """Cartesia TTS websocket (``/tts/websocket``) as ``CartesiaTTSService`` speaks it.

    Each generation request is synthesized (deterministic, ``seconds_per_word`` per word, at the
    requested ``output_format.sample_rate``, pcm_s16le) and streamed as ``chunk`` messages cut
    into sizes that are deliberately not multiples of 320 bytes, interleaved with ``timestamps``
    whose starts keep increasing across the whole context, then ``done`` once a request with
    ``continue: false`` has been spoken. ``{"cancel": true}`` stops a context silently.

    Fault units: ``error_midstream`` sends an ``error`` message for the context after ``after``
    audio chunks of it; ``hang`` reads everything and never replies; ``refuse`` answers the
    handshake 503.
    """

    path = "/tts/websocket"

    def __init__(
        self,
        *,
        api_key: str | None = DEFAULT_CARTESIA_KEY,
        port: int = 0,
        cartesia_version: str | None = None,
        first_audio_latency: float = 0.1,
        seconds_per_word: float = 0.3,
        chunk_sizes: Sequence[int] = (1234, 2002, 766),
        chunk_interval: float = 0.0,
    ) -> None:
        """Create the fake (not yet listening).

        Args:
            api_key: Expected ``X-API-Key`` (or ``?api_key=``); None accepts any key.
            port: 0 for any free port.
            cartesia_version: If set, ``Cartesia-Version`` must equal it (it must always be
                present, as with the real API).
            first_audio_latency: Seconds from a request to its first chunk when the context
                was idle (requests queued behind speech continue without a new delay).
            seconds_per_word: Audio duration per whitespace-separated word.
            chunk_sizes: Chunk byte sizes, cycled; must be even (whole 16-bit samples).
            chunk_interval: Pause between chunks; 0 streams faster than real time, like Cartesia.
        """
        super().__init__(api_key=api_key, port=port)
        if not chunk_sizes or any(size <= 0 or size % 2 for size in chunk_sizes):
            raise ValueError("chunk_sizes must be positive, even byte counts")
        self.cartesia_version = cartesia_version
        self.first_audio_latency = first_audio_latency
        self.seconds_per_word = seconds_per_word
        self.chunk_sizes = tuple(chunk_sizes)
        self.chunk_interval = chunk_interval
        self.connections: list[CartesiaConnection] = []
        self.voices: list[dict[str, Any]] = [dict(v) for v in DEFAULT_VOICES]
        self.voice_requests: list[dict[str, str]] = []  # the query of every GET /voices

    @property
    def http_base_url(self) -> str:
        """The REST API's base URL (``Cartesia(base_url=...)``): ``GET /voices`` is served."""
        return f"{url_scheme('http', self.tls)}://{LOCALHOST}:{self.port}"

    def _process_request(self, connection: ServerConnection, request: Any) -> Any:
        path, query = split_target(request.path)
        if path != "/voices":
            return super()._process_request(connection, request)
        bearer = (request.headers.get("Authorization") or "").removeprefix("Bearer ")
        if not self._key_ok(bearer) or not request.headers.get("Cartesia-Version"):
            self.rejected += 1
            return _json_response(HTTPStatus.UNAUTHORIZED, {"error": "Invalid API key"})
        self.voice_requests.append(query)
        return _json_response(HTTPStatus.OK, voices_page(self.voices, query))

    @property
    def url(self) -> str:
        """Pass as ``CartesiaTTSService(url=...)`` (used verbatim)."""
        return f"{url_scheme('ws', self.tls)}://{LOCALHOST}:{self.port}{self.path}"

    @property
    def transcripts(self) -> list[str]:
        """Every non-empty transcript requested, across connections, in arrival order."""
        return [
            m["transcript"]
            for c in self.connections
            for m in c.messages
            if isinstance(m.get("transcript"), str) and m["transcript"].strip()
        ]

    @property
    def cancels(self) -> list[str]:
        """Context ids cancelled by the client."""
        return [cid for c in self.connections for cid in c.cancelled]

    def _handshake_problem(
        self, headers: Headers, query: Mapping[str, str]
    ) -> tuple[HTTPStatus, str] | None:
        key = headers.get("X-API-Key") or query.get("api_key")
        if not self._key_ok(key):
            return HTTPStatus.UNAUTHORIZED, "Invalid API key\n"
        version = headers.get("Cartesia-Version") or query.get("cartesia_version")
        if not version or (self.cartesia_version and version != self.cartesia_version):
            return HTTPStatus.BAD_REQUEST, f"Unsupported or missing Cartesia-Version: {version}\n"
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        _, query = split_target(ws.request.path)
        headers = ws.request.headers
        record = CartesiaConnection(
            query,
            headers.get("X-API-Key") or query.get("api_key"),
            headers.get("Cartesia-Version") or query.get("cartesia_version"),
        )
        self.connections.append(record)
        logger.debug(f"FakeCartesia: connection {len(self.connections)}")
        await self._run_session(ws, _CartesiaSession(self, ws, record), record)


def _voice(voice_id: str, name: str, language: str, gender: str) -> dict[str, Any]:
    """One voice in ``GET /voices``' shape (the fields the SDK's ``Voice`` model requires)."""
    return {
        "id": voice_id,
        "name": name,
        "description": f"{name}, for tests",
        "tagline": "",
        "language": language,
        "locales": [{"locale": f"{language}-IN", "is_native": True}],
        "gender": gender,
        "access": "public",
        "visibility": "all",
        "is_owner": False,
        "created_at": "2026-01-01T00:00:00Z",
    }


DEFAULT_VOICES = (
    _voice("f786b574-daa5-4673-aa0c-cbe3e8534c02", "Test English Woman", "en", "feminine"),
    _voice("95d51f79-c397-46f9-b49a-23763d3eaa2d", "Test Hindi Woman", "hi", "feminine"),
    _voice("4877b818-c7fe-4c89-b1cf-eadf8e23da72", "Test Hindi Man", "hi", "masculine"),
)


def voices_page(voices: Sequence[Mapping[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
    """A page of ``GET /voices``: ``limit`` voices after ``starting_after``, and ``has_more``."""
    limit = max(1, min(100, int(query.get("limit") or 10)))
    ids = [v["id"] for v in voices]
    after = query.get("starting_after")
    start = ids.index(after) + 1 if after in ids else 0
    page = list(voices[start : start + limit])
    return {"data": page, "has_more": start + limit < len(voices)}


def _json_response(status: HTTPStatus, body: Mapping[str, Any]) -> Any:
    from websockets.http11 import Response

    data = json.dumps(body).encode()
    headers = Headers({"Content-Type": "application/json", "Content-Length": str(len(data))})
    return Response(status.value, status.phrase, headers, data)


def _validate_generation(msg: Mapping[str, Any]) -> str | None:
    """Reject requests the real API would reject, so bot misconfiguration shows up in tests."""
    output = msg.get("output_format")
    if not isinstance(output, Mapping):
        return "output_format is required"
    if output.get("container") != "raw" or output.get("encoding") != "pcm_s16le":
        return f"fake Cartesia only serves raw pcm_s16le, got {dict(output)}"
    if output.get("sample_rate") not in _CARTESIA_RATES:
        return f"unsupported sample_rate {output.get('sample_rate')}"
    if not isinstance(msg.get("transcript"), str) or "continue" not in msg:
        return "transcript (string) and continue are required"
    voice = msg.get("voice")
    if not isinstance(voice, Mapping) or not voice.get("id") or not msg.get("model_id"):
        return "voice.id and model_id are required"
    return None


class _CartesiaSession:
    """Per-connection state: one worker per live context, so contexts never block each other."""

    def __init__(self, fake: FakeCartesia, ws: ServerConnection, record: CartesiaConnection):
        self.fake, self.ws, self.record = fake, ws, record
        self.contexts: dict[str, _CartesiaContext] = {}
        self.finished: set[str] = set()
        """Cancelled or failed contexts: further messages for them are ignored."""

    def record_only(self, message: str | bytes) -> None:
        """Account for a message without acting on it (used by ``hang``)."""
        with suppress(ValueError, TypeError):
            parsed = json.loads(message)
            if isinstance(parsed, dict):
                self.record.messages.append(parsed)

    async def run(self) -> None:
        with suppress(ConnectionClosed):
            async for message in self.ws:
                await self._on_message(message)

    async def close(self) -> None:
        tasks = [ctx.task for ctx in self.contexts.values() if ctx.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _on_message(self, message: str | bytes) -> None:
        try:
            msg = json.loads(message)
        except (ValueError, TypeError):
            msg = None
        if not isinstance(msg, dict):
            await self._error("", "messages must be JSON objects")
            return
        self.record.messages.append(msg)
        context_id = msg.get("context_id")
        if not isinstance(context_id, str) or not context_id:
            await self._error("", "context_id is required")
        elif msg.get("cancel"):
            self._cancel(context_id)
        elif context_id in self.finished:
            return
        elif problem := _validate_generation(msg):
            await self._error(context_id, problem)
        else:
            self._enqueue(context_id, msg)

    def _enqueue(self, context_id: str, msg: dict[str, Any]) -> None:
        ctx = self.contexts.get(context_id)
        if ctx is None:
            ctx = self.contexts[context_id] = _CartesiaContext(context_id)
            ctx.task = asyncio.create_task(self._speak_context(ctx))
        ctx.queue.put_nowait(msg)

    def _cancel(self, context_id: str) -> None:
        self.record.cancelled.append(context_id)
        self.finished.add(context_id)
        ctx = self.contexts.pop(context_id, None)
        if ctx and ctx.task:
            ctx.task.cancel()

    async def _speak_context(self, ctx: _CartesiaContext) -> None:
        """Speak requests in order until one says ``continue: false``, then send ``done``."""
        try:
            while True:
                idle = ctx.queue.empty() or not ctx.started
                msg = await ctx.queue.get()
                if msg["transcript"].strip():
                    await self._speak(ctx, msg, delay=self.fake.first_audio_latency if idle else 0)
                ctx.started = True
                if not msg["continue"]:
                    await self._send(ctx.context_id, {"type": "done", "done": True})
                    return
        except _ContextFailed:
            self.finished.add(ctx.context_id)
        finally:
            if self.contexts.get(ctx.context_id) is ctx:
                del self.contexts[ctx.context_id]

    async def _speak(self, ctx: _CartesiaContext, msg: Mapping[str, Any], delay: float) -> None:
        """Stream one request's audio, with timestamps for each word once its audio is out."""
        await asyncio.sleep(delay)
        rate = int(msg["output_format"]["sample_rate"])
        speech = synthesize_speech(msg["transcript"], rate, self.fake.seconds_per_word)
        timestamps = msg.get("add_timestamps", False)
        words_out = 0
        sent = 0
        for size in itertools.cycle(self.fake.chunk_sizes):
            if sent >= len(speech.pcm):
                break
            await self._maybe_fail(ctx)
            piece = speech.pcm[sent : sent + size]
            sent += len(piece)
            await self._send_chunk(ctx, piece)
            if timestamps:
                words_out = await self._send_timestamps(
                    ctx, speech, words_out, sent // speech.word_bytes
                )
            await asyncio.sleep(self.fake.chunk_interval)
        ctx.offset += len(speech.words) * speech.seconds_per_word

    async def _maybe_fail(self, ctx: _CartesiaContext) -> None:
        faults = self.fake._faults
        if faults.armed("error_midstream") and ctx.chunks_sent >= faults.after:
            if faults.fire("error_midstream"):
                await self._error(ctx.context_id, "fake Cartesia: injected generation failure", 500)
                raise _ContextFailed

    async def _send_chunk(self, ctx: _CartesiaContext, piece: bytes) -> None:
        ctx.chunks_sent += 1
        self.record.audio_bytes_sent += len(piece)
        data = base64.b64encode(piece).decode()
        await self._send(
            ctx.context_id, {"type": "chunk", "data": data, "done": False, "step_time": 1.0}
        )

    async def _send_timestamps(
        self, ctx: _CartesiaContext, speech: SynthesizedSpeech, first: int, upto: int
    ) -> int:
        """Timestamps for words [first, upto); starts are offset by everything said before."""
        upto = min(upto, len(speech.words))
        if upto <= first:
            return first
        slot = speech.seconds_per_word
        starts = [ctx.offset + i * slot for i in range(first, upto)]
        await self._send(
            ctx.context_id,
            {
                "type": "timestamps",
                "done": False,
                "word_timestamps": {
                    "words": speech.words[first:upto],
                    "start": [round(s, 4) for s in starts],
                    "end": [round(s + slot * VOICED_FRACTION, 4) for s in starts],
                },
            },
        )
        return upto

    async def _error(self, context_id: str, message: str, status: int = 400) -> None:
        """Cartesia reports request problems in-band; ``context_id`` must always be present."""
        payload = {
            "type": "error",
            "done": True,
            "status_code": status,
            "title": "Generation failed" if status >= 500 else "Invalid request",
            "message": message,
            "error": message,
        }
        await self._send(context_id, payload)

    async def _send(self, context_id: str, payload: dict[str, Any]) -> None:
        payload.setdefault("status_code", 206)
        payload["context_id"] = context_id
        await send_json(self.ws, payload)
