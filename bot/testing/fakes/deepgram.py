"""Fake Deepgram live transcription (``/v1/listen``), as ``DeepgramSTTService`` speaks it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from loguru import logger
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed

from bot.testing.fakes.base import (
    LOCALHOST,
    WebSocketFake,
    maybe_await,
    send_json,
    split_target,
    url_scheme,
)

DEFAULT_DEEPGRAM_KEY = "fake-deepgram-key"


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


class FakeDeepgram(WebSocketFake):
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
        return f"{url_scheme('ws', self.tls)}://{LOCALHOST}:{self.port}"

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
        path, query = split_target(ws.request.path)
        record = DeepgramConnection(path, query, ws.request.headers.get("Authorization"))
        self.connections.append(record)
        logger.debug(f"FakeDeepgram: connection {len(self.connections)} {query}")
        await self._run_session(ws, _DeepgramSession(self, ws, record), record)

    async def _next_transcript(
        self, segment: bytes, record: DeepgramConnection, *, final: bool
    ) -> str:
        """Final: pop the script. Interim: peek it. Either: defer to a custom transcriber."""
        if self.transcriber is not None:
            return await maybe_await(self.transcriber(segment, record.sample_rate))
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
        await send_json(self.ws, message)

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
        await send_json(self.ws, message)

    async def _close_stream(self) -> None:
        """CloseStream: Deepgram flushes pending results, sends ``Metadata``, closes normally."""
        await asyncio.gather(*self.pending, return_exceptions=True)
        total = self.record.bytes_received / self.record.bytes_per_second
        await send_json(
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
