"""Local fake Deepgram, OpenAI and Cartesia servers that speak the providers' real wire protocols.

Why this exists: the bot uses Pipecat's real service classes (``DeepgramSTTService``,
``OpenAILLMService``, ``CartesiaTTSService``). Pointing their base-URL overrides at these fakes
exercises the real client code (SDK handshakes, SSE parsing, base64 audio, word timestamps,
reconnect logic) with no network, no keys, and deterministic output. Tests, load benchmarks
(50-100 concurrent calls) and fault-injection tests all use them.

Every fake:

* binds 127.0.0.1 only (port 0 picks a free port), ``await fake.start()`` returns the fake;
* exposes ``.base_url`` (Deepgram, OpenAI) or ``.url`` (Cartesia): exactly what the Pipecat
  service expects;
* checks the API key the way the real provider does and rejects a wrong one with HTTP 401;
* records what it saw, for assertions;
* supports runtime fault injection: ``fake.fault = "refuse" | "error_midstream" | "hang" | None``,
  or ``fake.set_fault(mode, after=N, times=K)`` for "fail K times, then recover";
* speaks ``wss``/``https`` instead when given a certificate (``fake.tls``, ``--tls-cert``), so
  a benchmark can see what TLS costs the bot.

Run ``python -m bot.fakes --port-base 18800`` to serve all three on fixed ports for manual runs
and benchmarks in another process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import inspect
import itertools
import json
import re
import signal
import socket
import ssl
import sys
import time
import uuid
import zlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal, Self, TypeVar, get_args
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from loguru import logger
from starlette.requests import ClientDisconnect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse

from bot.testing.localserver import QuietServer

LOCALHOST = "127.0.0.1"
"""The only address the fakes bind: they must never be reachable from outside the machine."""

DEFAULT_DEEPGRAM_KEY = "fake-deepgram-key"
DEFAULT_OPENAI_KEY = "fake-openai-key"
DEFAULT_CARTESIA_KEY = "fake-cartesia-key"
CARTESIA_API_VERSION = "2026-03-01"
"""The ``Cartesia-Version`` Pipecat 1.14 pins (``services/cartesia/tts.py``)."""

FaultMode = Literal["refuse", "error_midstream", "hang"]
FAULT_MODES: tuple[str, ...] = get_args(FaultMode)

_T = TypeVar("_T")


# --------------------------------------------------------------------------------------------
# Shared plumbing
# --------------------------------------------------------------------------------------------


class FaultSwitch:
    """Runtime-settable fault injection shared by the three fakes.

    A fault *fires* at its trigger point: ``refuse`` at a handshake or request, ``hang`` when a
    connection or request starts, ``error_midstream`` once ``after`` units (messages, deltas,
    chunks: see each fake) have passed. ``times`` bounds how often it fires before it clears
    itself, so a test can check that the bot recovers after "fail once, then work".
    """

    def __init__(self) -> None:
        self.mode: FaultMode | None = None
        self.after: int = 2
        self.remaining: int | None = None
        self.fired: int = 0

    def set(self, mode: FaultMode | None, *, after: int = 2, times: int | None = None) -> None:
        """Arm ``mode`` (``None`` clears); ``times=None`` keeps it armed until cleared."""
        if mode is not None and mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; expected one of {FAULT_MODES}")
        if after < 0 or (times is not None and times < 1):
            raise ValueError("after must be >= 0 and times >= 1")
        self.mode, self.after, self.remaining = mode, after, times

    def armed(self, mode: FaultMode) -> bool:
        """Whether ``mode`` is set, without consuming a firing."""
        return self.mode == mode

    def fire(self, mode: FaultMode) -> bool:
        """Consume one firing of ``mode``; True means "inject the fault now"."""
        if self.mode != mode:
            return False
        self.fired += 1
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                self.mode = None
        logger.debug(f"fake: injecting fault {mode!r} (fired {self.fired}x)")
        return True


async def _maybe_await(value: _T | Awaitable[_T]) -> _T:
    """Let user callables (transcriber, responder) be plain functions or coroutines."""
    if inspect.isawaitable(value):
        return await value
    return value


def _split_target(target: str) -> tuple[str, dict[str, str]]:
    """Split a request target into path and query (last value wins for repeated keys)."""
    parts = urlsplit(target)
    return parts.path, dict(parse_qsl(parts.query, keep_blank_values=True))


@dataclass(frozen=True)
class ServerTLS:
    """A certificate and its key (PEM files): the fakes then speak TLS like the real APIs,
    so a benchmark can measure what TLS costs the bot (trust the cert via SSL_CERT_FILE)."""

    certfile: str
    keyfile: str

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.certfile, self.keyfile)
        return ctx


def _scheme(plain: str, tls: ServerTLS | None) -> str:
    return plain + "s" if tls else plain


class _FakeServer:
    """Lifecycle shared by the fakes: start on 127.0.0.1, stop, async context manager."""

    def __init__(self, *, api_key: str | None, port: int) -> None:
        self.api_key = api_key
        self._requested_port = port
        self._port: int | None = None
        self.tls: ServerTLS | None = None
        """Serve ``wss``/``https`` with this certificate (set before ``start()``)."""
        self._faults = FaultSwitch()
        self.rejected: int = 0
        """Handshakes/requests turned away for a missing or wrong API key."""

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> Self:
        """Bind 127.0.0.1 (port 0 = any free port) and serve in the running event loop."""
        if self._port is None:
            self._port = await self._serve(self._requested_port)
            logger.debug(f"{type(self).__name__} listening on {LOCALHOST}:{self._port}")
        return self

    async def stop(self) -> None:
        """Stop serving and drop open connections; safe to call twice."""
        if self._port is not None:
            await self._shutdown()
            self._port = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The bound port; only valid after ``start()``."""
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._port

    async def _serve(self, port: int) -> int:
        raise NotImplementedError

    async def _shutdown(self) -> None:
        raise NotImplementedError

    # -- faults and auth ---------------------------------------------------------------------

    @property
    def fault(self) -> FaultMode | None:
        """The armed fault mode; assign to arm (always, until cleared) or ``None`` to clear."""
        return self._faults.mode

    @fault.setter
    def fault(self, mode: FaultMode | None) -> None:
        self._faults.set(mode, after=self._faults.after)

    def set_fault(
        self, mode: FaultMode | None, *, after: int = 2, times: int | None = None
    ) -> None:
        """Arm a fault: ``after`` units pass before ``error_midstream``; ``times`` firings max."""
        self._faults.set(mode, after=after, times=times)

    @property
    def faults_fired(self) -> int:
        """How many times an injected fault actually fired."""
        return self._faults.fired

    def _key_ok(self, presented: str | None) -> bool:
        """``api_key=None`` accepts any non-empty key (handy for benchmarks)."""
        if not presented:
            return False
        return self.api_key is None or presented == self.api_key


class _WebSocketFake(_FakeServer):
    """A fake whose protocol is one WebSocket endpoint (Deepgram, Cartesia)."""

    path: str = "/"

    def __init__(self, *, api_key: str | None, port: int) -> None:
        super().__init__(api_key=api_key, port=port)
        self._server: Server | None = None

    async def _serve(self, port: int) -> int:
        # No compression and no size cap: audio does not compress and benchmarks push a lot.
        self._server = await serve(
            self._handle,
            LOCALHOST,
            port,
            process_request=self._process_request,
            compression=None,
            max_size=None,
            ssl=self.tls.context() if self.tls else None,
        )
        return self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()  # also closes open connections, which ends every handler
            await self._server.wait_closed()
            self._server = None

    def _process_request(
        self, connection: ServerConnection, request: WsRequest
    ) -> WsResponse | None:
        """Answer the opening handshake the way the provider does before any message flows."""
        path, query = _split_target(request.path)
        if path != self.path:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        if self._faults.fire("refuse"):
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "Service Unavailable\n")
        problem = self._handshake_problem(request.headers, query)
        if problem is not None:
            self.rejected += 1
            status, text = problem
            return connection.respond(status, text)
        return None

    def _handshake_problem(
        self, headers: Headers, query: Mapping[str, str]
    ) -> tuple[HTTPStatus, str] | None:
        """Return (status, body) to reject the handshake, or None to accept it."""
        raise NotImplementedError

    async def _handle(self, ws: ServerConnection) -> None:
        raise NotImplementedError

    async def _run_session(self, ws: ServerConnection, session: Any, record: Any) -> None:
        """Run one connection's session (or, in ``hang`` mode, only record what arrives)."""
        try:
            if self._faults.fire("hang"):
                await _drain(ws, session.record_only)
            else:
                await session.run()
        finally:
            await session.close()
            record.closed_at = time.monotonic()


async def _send_json(ws: ServerConnection, payload: Mapping[str, Any]) -> bool:
    """Send one JSON text message; False if the peer is gone (a normal end, not an error)."""
    try:
        await ws.send(json.dumps(payload))
        return True
    except ConnectionClosed:
        return False


async def _drain(ws: ServerConnection, record: Callable[[str | bytes], None]) -> None:
    """Read and record everything, answer nothing: the ``hang`` fault."""
    with suppress(ConnectionClosed):
        async for message in ws:
            record(message)


# --------------------------------------------------------------------------------------------
# Deterministic "speech"
# --------------------------------------------------------------------------------------------

_VOICED_FRACTION = 0.8  # the rest of each word's slot is silence, like a gap between words
_AMPLITUDE = 9000.0


@functools.lru_cache(maxsize=4096)
def _word_pcm(word: str, sample_rate: int, n_samples: int) -> bytes:
    """One word of buzz: harmonics of a word-specific pitch under a smooth envelope.

    Deterministic (pitch from the word's CRC) so runs reproduce, voice-like enough for an
    energy VAD, and cached because benchmarks say the same sentences thousands of times.
    """
    voiced = max(1, int(n_samples * _VOICED_FRACTION))
    f0 = 100.0 + zlib.crc32(word.encode()) % 80
    t = np.arange(voiced) / sample_rate
    wave = np.zeros(voiced)
    for k in range(1, 6):
        if f0 * k < sample_rate / 2:
            wave += np.sin(2 * np.pi * f0 * k * t) / k
    envelope = np.sqrt(np.sin(np.pi * (np.arange(voiced) + 0.5) / voiced))
    wave *= envelope * (_AMPLITUDE / max(1e-9, float(np.abs(wave).max())))
    pcm = np.zeros(n_samples, dtype=np.int16)
    pcm[:voiced] = wave.astype(np.int16)
    return pcm.tobytes()


@dataclass(frozen=True)
class SynthesizedSpeech:
    """PCM (s16le mono) for a transcript plus where each word sits in it."""

    pcm: bytes
    words: list[str]
    word_bytes: int
    """Bytes per word slot; every word gets the same slot so durations are exact."""
    seconds_per_word: float


def synthesize_speech(text: str, sample_rate: int, seconds_per_word: float) -> SynthesizedSpeech:
    """Deterministic audio whose duration is exactly ``len(words) * slot``."""
    words = text.split()
    n_samples = max(1, round(seconds_per_word * sample_rate))
    pcm = b"".join(_word_pcm(word, sample_rate, n_samples) for word in words)
    return SynthesizedSpeech(pcm, words, n_samples * 2, n_samples / sample_rate)


# --------------------------------------------------------------------------------------------
# Deepgram
# --------------------------------------------------------------------------------------------

Transcriber = Callable[[bytes, int], str | Awaitable[str]]
"""(audio of the current segment, sample_rate) -> transcript."""

_BYTES_PER_SAMPLE = {"linear16": 2, "mulaw": 1, "alaw": 1}


@dataclass
class DeepgramConnection:
    """What one Deepgram streaming connection saw."""

    path: str
    query: dict[str, str]
    authorization: str | None
    opened_at: float = field(default_factory=time.monotonic)
    closed_at: float | None = None
    bytes_received: int = 0
    audio_messages: int = 0
    keepalives: int = 0
    finalizes: int = 0
    close_streams: int = 0
    other_messages: list[str] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    """Every ``Results`` message sent, interim and final."""

    @property
    def sample_rate(self) -> int:
        return int(self.query.get("sample_rate", "16000"))

    @property
    def bytes_per_second(self) -> int:
        per_sample = _BYTES_PER_SAMPLE.get(self.query.get("encoding", "linear16"), 2)
        return self.sample_rate * int(self.query.get("channels", "1")) * per_sample

    @property
    def finals(self) -> list[str]:
        """Final transcripts sent on this connection."""
        return [
            r["channel"]["alternatives"][0]["transcript"] for r in self.results if r["is_final"]
        ]


def deepgram_results(
    transcript: str,
    *,
    start: float,
    duration: float,
    is_final: bool,
    from_finalize: bool,
    request_id: str,
) -> dict[str, Any]:
    """A ``Results`` message in the shape the Deepgram SDK (``ListenV1Results``) parses."""
    words = transcript.split()
    step = duration / len(words) if words else 0.0
    return {
        "type": "Results",
        "channel_index": [0, 1],
        "duration": round(duration, 3),
        "start": round(start, 3),
        "is_final": is_final,
        "speech_final": is_final,
        "from_finalize": from_finalize,
        "channel": {
            "alternatives": [
                {
                    "transcript": transcript,
                    "confidence": 0.99,
                    "words": [
                        {
                            "word": w.strip(".,?!").lower(),
                            "start": round(start + i * step, 3),
                            "end": round(start + (i + 1) * step, 3),
                            "confidence": 0.99,
                            "punctuated_word": w,
                        }
                        for i, w in enumerate(words)
                    ],
                }
            ]
        },
        "metadata": {
            "request_id": request_id,
            "model_info": {"name": "general-nova-3", "version": "fake", "arch": "nova-3"},
            "model_uuid": "00000000-0000-0000-0000-000000000003",
        },
    }


class FakeDeepgram(_WebSocketFake):
    """Deepgram live transcription (``/v1/listen``) as ``DeepgramSTTService`` speaks it.

    Binary messages are PCM; text messages are ``KeepAlive`` / ``Finalize`` / ``CloseStream``.
    Each ``Finalize`` is answered, after ``finalize_latency``, with a final ``Results``
    (``is_final``, ``speech_final``, ``from_finalize`` all true) for the audio received since
    the previous one. The transcript comes from ``transcriber`` if given, otherwise from the
    ``transcripts`` queue (one per Finalize), otherwise ``"caller said N.N seconds"``.

    Fault units: ``error_midstream`` closes the socket with code 1011 after ``after`` client
    messages; ``hang`` reads everything and never replies; ``refuse`` answers the handshake 503.
    """

    path = "/v1/listen"

    def __init__(
        self,
        *,
        api_key: str | None = DEFAULT_DEEPGRAM_KEY,
        port: int = 0,
        transcripts: Iterable[str] = (),
        transcriber: Transcriber | None = None,
        finalize_latency: float = 0.05,
        interim_interval: float | None = None,
    ) -> None:
        """Create the fake (not yet listening).

        Args:
            api_key: Expected key (``Authorization: Token <key>``); None accepts any key.
            port: 0 for any free port.
            transcripts: Scripted finals, consumed one per Finalize.
            transcriber: Overrides the script: (segment audio, sample_rate) -> transcript.
            finalize_latency: Seconds between a Finalize and its final Results.
            interim_interval: Send an interim Results every this many seconds of audio
                (only if the client asked for ``interim_results=true``); None = never.
        """
        super().__init__(api_key=api_key, port=port)
        self.transcripts: deque[str] = deque(transcripts)
        self.transcriber = transcriber
        self.finalize_latency = finalize_latency
        self.interim_interval = interim_interval
        self.connections: list[DeepgramConnection] = []

    @property
    def base_url(self) -> str:
        """Pass as ``DeepgramSTTService(base_url=...)``; the SDK appends ``/v1/listen``."""
        return f"{_scheme('ws', self.tls)}://{LOCALHOST}:{self.port}"

    def add_transcripts(self, *texts: str) -> None:
        """Queue final transcripts, one per future Finalize."""
        self.transcripts.extend(texts)

    @property
    def finalizes(self) -> int:
        """Finalize messages received across all connections."""
        return sum(c.finalizes for c in self.connections)

    @property
    def bytes_received(self) -> int:
        """Audio bytes received across all connections."""
        return sum(c.bytes_received for c in self.connections)

    def _handshake_problem(
        self, headers: Headers, query: Mapping[str, str]
    ) -> tuple[HTTPStatus, str] | None:
        scheme, _, key = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "token" or not self._key_ok(key.strip()):
            return HTTPStatus.UNAUTHORIZED, json.dumps(
                {"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials.", "request_id": ""}
            )
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        path, query = _split_target(ws.request.path)
        record = DeepgramConnection(path, query, ws.request.headers.get("Authorization"))
        self.connections.append(record)
        logger.debug(f"FakeDeepgram: connection {len(self.connections)} {query}")
        await self._run_session(ws, _DeepgramSession(self, ws, record), record)

    async def _next_transcript(
        self, segment: bytes, record: DeepgramConnection, *, final: bool
    ) -> str:
        """Final: pop the script. Interim: peek it. Either: defer to a custom transcriber."""
        if self.transcriber is not None:
            return await _maybe_await(self.transcriber(segment, record.sample_rate))
        if self.transcripts:
            return self.transcripts.popleft() if final else self.transcripts[0]
        return f"caller said {len(segment) / record.bytes_per_second:.1f} seconds"


class _DeepgramSession:
    """Per-connection state: the current segment of audio and pending replies."""

    def __init__(self, fake: FakeDeepgram, ws: ServerConnection, record: DeepgramConnection):
        self.fake, self.ws, self.record = fake, ws, record
        self.segment = bytearray()
        self.segment_start = 0.0
        self.next_interim_at = fake.interim_interval
        self.interims_sent = 0
        self.messages = 0
        self.pending: set[asyncio.Task[None]] = set()
        self.wants_interims = record.query.get("interim_results") == "true"

    def record_only(self, message: str | bytes) -> None:
        """Account for a message without acting on it (used by ``hang``)."""
        if isinstance(message, bytes):
            self.record.bytes_received += len(message)
            self.record.audio_messages += 1
        else:
            self._count_control(message)

    def _count_control(self, text: str) -> str | None:
        """Record a JSON control message and return its ``type``."""
        try:
            kind = json.loads(text).get("type")
        except (ValueError, AttributeError):
            kind = None
        if kind == "KeepAlive":
            self.record.keepalives += 1
        elif kind == "Finalize":
            self.record.finalizes += 1
        elif kind == "CloseStream":
            self.record.close_streams += 1
        else:
            self.record.other_messages.append(text)
        return kind

    async def run(self) -> None:
        with suppress(ConnectionClosed):
            async for message in self.ws:
                self.messages += 1
                if await self._maybe_fail():
                    return
                if isinstance(message, bytes):
                    await self._on_audio(message)
                elif not await self._on_control(message):
                    return

    async def close(self) -> None:
        for task in self.pending:
            task.cancel()
        await asyncio.gather(*self.pending, return_exceptions=True)

    async def _maybe_fail(self) -> bool:
        """``error_midstream``: drop the socket with 1011, as Deepgram does on internal errors."""
        faults = self.fake._faults
        if faults.armed("error_midstream") and self.messages > faults.after:
            if faults.fire("error_midstream"):
                await self.ws.close(1011, "fake Deepgram: injected internal error")
                return True
        return False

    @property
    def segment_seconds(self) -> float:
        return len(self.segment) / self.record.bytes_per_second

    async def _on_audio(self, data: bytes) -> None:
        self.record.bytes_received += len(data)
        self.record.audio_messages += 1
        self.segment.extend(data)
        if self.wants_interims and self.next_interim_at is not None:
            if self.segment_seconds >= self.next_interim_at:
                await self._send_interim()

    async def _send_interim(self) -> None:
        """A growing prefix of what the final will say, like a live partial transcript."""
        text = await self.fake._next_transcript(bytes(self.segment), self.record, final=False)
        self.interims_sent += 1
        partial = " ".join(text.split()[: self.interims_sent])
        assert self.fake.interim_interval is not None
        self.next_interim_at = self.segment_seconds + self.fake.interim_interval
        await self._send_results(partial, is_final=False, from_finalize=False)

    async def _on_control(self, text: str) -> bool:
        """Handle a JSON control message; False ends the session."""
        kind = self._count_control(text)
        if kind == "Finalize":
            await self._on_finalize()
        elif kind == "CloseStream":
            await self._close_stream()
            return False
        return True

    async def _on_finalize(self) -> None:
        """Bind the transcript to this segment now; send it after the configured latency."""
        segment, start = bytes(self.segment), self.segment_start
        duration = len(segment) / self.record.bytes_per_second
        self.segment.clear()
        self.segment_start += duration
        self.interims_sent = 0
        self.next_interim_at = self.fake.interim_interval
        transcript = ""
        if segment:
            transcript = await self.fake._next_transcript(segment, self.record, final=True)
        message = deepgram_results(
            transcript,
            start=start,
            duration=duration,
            is_final=True,
            from_finalize=True,
            request_id=str(uuid.uuid4()),
        )
        task = asyncio.create_task(self._send_later(message, self.fake.finalize_latency))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _send_later(self, message: dict[str, Any], delay: float) -> None:
        await asyncio.sleep(delay)
        self.record.results.append(message)
        await _send_json(self.ws, message)

    async def _send_results(self, transcript: str, *, is_final: bool, from_finalize: bool) -> None:
        message = deepgram_results(
            transcript,
            start=self.segment_start,
            duration=self.segment_seconds,
            is_final=is_final,
            from_finalize=from_finalize,
            request_id=str(uuid.uuid4()),
        )
        self.record.results.append(message)
        await _send_json(self.ws, message)

    async def _close_stream(self) -> None:
        """CloseStream: Deepgram flushes pending results, sends ``Metadata``, closes normally."""
        await asyncio.gather(*self.pending, return_exceptions=True)
        total = self.record.bytes_received / self.record.bytes_per_second
        await _send_json(
            self.ws,
            {
                "type": "Metadata",
                "transaction_key": "deprecated",
                "request_id": str(uuid.uuid4()),
                "sha256": "0" * 64,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                "duration": round(total, 3),
                "channels": int(self.record.query.get("channels", "1")),
            },
        )
        await self.ws.close(1000)


# --------------------------------------------------------------------------------------------
# OpenAI
# --------------------------------------------------------------------------------------------


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


class FakeOpenAI(_FakeServer):
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
        return f"{_scheme('http', self.tls)}://{LOCALHOST}:{self.port}/v1"

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
            return await _maybe_await(self.responder(messages, tools))
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


# --------------------------------------------------------------------------------------------
# Cartesia
# --------------------------------------------------------------------------------------------

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


class FakeCartesia(_WebSocketFake):
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

    @property
    def url(self) -> str:
        """Pass as ``CartesiaTTSService(url=...)`` (used verbatim)."""
        return f"{_scheme('ws', self.tls)}://{LOCALHOST}:{self.port}{self.path}"

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
        _, query = _split_target(ws.request.path)
        headers = ws.request.headers
        record = CartesiaConnection(
            query,
            headers.get("X-API-Key") or query.get("api_key"),
            headers.get("Cartesia-Version") or query.get("cartesia_version"),
        )
        self.connections.append(record)
        logger.debug(f"FakeCartesia: connection {len(self.connections)}")
        await self._run_session(ws, _CartesiaSession(self, ws, record), record)


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
                    "end": [round(s + slot * _VOICED_FRACTION, 4) for s in starts],
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
        await _send_json(self.ws, payload)


# --------------------------------------------------------------------------------------------
# Bundle and CLI
# --------------------------------------------------------------------------------------------


class FakeProviders:
    """All three fakes together, with the environment that points the bot at them."""

    def __init__(
        self,
        *,
        deepgram: FakeDeepgram | None = None,
        openai: FakeOpenAI | None = None,
        cartesia: FakeCartesia | None = None,
        port_base: int = 0,
    ) -> None:
        """Use the given fakes or defaults; ``port_base`` P puts defaults on P, P+1, P+2."""

        def port(offset: int) -> int:
            return port_base + offset if port_base else 0

        self.deepgram = deepgram or FakeDeepgram(port=port(0))
        self.openai = openai or FakeOpenAI(port=port(1))
        self.cartesia = cartesia or FakeCartesia(port=port(2))

    @property
    def fakes(self) -> tuple[FakeDeepgram, FakeOpenAI, FakeCartesia]:
        return self.deepgram, self.openai, self.cartesia

    async def start(self) -> Self:
        """Start all three; if one fails to bind, the others are stopped again."""
        results = await asyncio.gather(*(f.start() for f in self.fakes), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.stop()
            raise failures[0]
        return self

    async def stop(self) -> None:
        await asyncio.gather(*(f.stop() for f in self.fakes))

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def env(self) -> dict[str, str]:
        """Environment variables that point the bot at these fakes."""
        return {
            "DEEPGRAM_BASE_URL": self.deepgram.base_url,
            "DEEPGRAM_API_KEY": self.deepgram.api_key or DEFAULT_DEEPGRAM_KEY,
            "OPENAI_BASE_URL": self.openai.base_url,
            "OPENAI_API_KEY": self.openai.api_key or DEFAULT_OPENAI_KEY,
            "CARTESIA_URL": self.cartesia.url,
            "CARTESIA_API_KEY": self.cartesia.api_key or DEFAULT_CARTESIA_KEY,
        }


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bot.fakes",
        description="Serve fake Deepgram (P), OpenAI (P+1) and Cartesia (P+2) on 127.0.0.1.",
    )
    parser.add_argument("--port-base", type=int, default=18800, help="P (default 18800)")
    parser.add_argument("--finalize-latency", type=float, default=0.05)
    parser.add_argument("--first-token-latency", type=float, default=0.3)
    parser.add_argument("--inter-token-delay", type=float, default=0.02)
    parser.add_argument("--reply", help="the LLM's reply to every request (default: echo)")
    parser.add_argument("--first-audio-latency", type=float, default=0.1)
    parser.add_argument("--seconds-per-word", type=float, default=0.3)
    parser.add_argument("--any-key", action="store_true", help="accept any non-empty API key")
    parser.add_argument("--tls-cert", help="serve wss/https with this PEM certificate")
    parser.add_argument("--tls-key", help="... and this PEM key")
    parser.add_argument(
        "--log-level", default="INFO", help="loguru level (DEBUG shows connections)"
    )
    return parser.parse_args(argv)


async def _serve_forever(args: argparse.Namespace) -> None:
    def key(default: str) -> str | None:
        return None if args.any_key else default

    providers = FakeProviders(
        deepgram=FakeDeepgram(
            api_key=key(DEFAULT_DEEPGRAM_KEY),
            port=args.port_base,
            finalize_latency=args.finalize_latency,
        ),
        openai=FakeOpenAI(
            api_key=key(DEFAULT_OPENAI_KEY),
            port=args.port_base + 1,
            first_token_latency=args.first_token_latency,
            inter_token_delay=args.inter_token_delay,
            responder=(lambda *_: args.reply) if args.reply else None,
        ),
        cartesia=FakeCartesia(
            api_key=key(DEFAULT_CARTESIA_KEY),
            port=args.port_base + 2,
            first_audio_latency=args.first_audio_latency,
            seconds_per_word=args.seconds_per_word,
        ),
    )
    if args.tls_cert:
        for fake in providers.fakes:
            fake.tls = ServerTLS(args.tls_cert, args.tls_key or args.tls_cert)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with providers:
        for name, value in providers.env().items():
            print(f"export {name}={value}", flush=True)
        print("# fakes running; Ctrl-C to stop", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    """CLI entry: run all three fakes on fixed ports until Ctrl-C or SIGTERM."""
    args = _parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level=args.log_level.upper())
    asyncio.run(_serve_forever(args))


if __name__ == "__main__":
    main()
