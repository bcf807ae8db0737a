"""Fake Sarvam AI speech: streaming STT (``/speech-to-text/ws``, saaras) and streaming TTS
(``/text-to-speech/ws``, bulbul), as Pipecat's ``SarvamSTTService`` (through the sarvamai
0.1.28 SDK) and ``SarvamTTSService`` speak them (indian-languages.md §1.3.2, §2.2).

STT: the client sends ``{"audio": {"data": <b64 PCM16LE>, "sample_rate": 8000, "encoding":
"audio/wav"}}`` per frame and ``{"type": "flush"}`` when its VAD hears the caller stop; the
fake answers each flush that follows audio with one ``{"type": "data", "data": {...}}``
transcript carrying every field the SDK's model requires (``request_id``, ``transcript``,
``metrics``), plus ``language_code`` and ``language_probability``.

TTS: ``{"type": "config", "data": {...}}`` on every (re)connect, ``{"type": "text"}`` per
sentence, ``{"type": "flush"}`` at the end of a reply, ``{"type": "ping"}`` as keep-alive. The
fake answers a flush with ``{"type": "audio"}`` chunks (raw PCM16LE at the configured rate, in
base64) and ``{"type": "event", "data": {"event_type": "final"}}``. There is no cancel
message: Pipecat closes and reopens the socket on every barge-in, so each connection is
independent and a repeated ``config`` is normal.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed

from bot.testing.fakes.base import LOCALHOST, WebSocketFake, send_json, split_target, url_scheme
from bot.testing.fakes.speech import synthesize_speech

DEFAULT_SARVAM_KEY = "fake-sarvam-key"
STT_PATH = "/speech-to-text/ws"
TTS_PATH = "/text-to-speech/ws"
CHUNK_BYTES = 1600  # 100 ms at 8 kHz per audio message


@dataclass
class SarvamConnection:
    """What one Sarvam socket (STT or TTS) saw."""

    path: str
    query: dict[str, str]
    api_key: str | None
    opened_at: float = field(default_factory=time.monotonic)
    closed_at: float | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)  # every parsed text message
    audio_bytes: int = 0  # STT: caller audio received; TTS: audio sent
    sent: list[dict[str, Any]] = field(default_factory=list)  # STT transcripts sent

    @property
    def configs(self) -> list[dict[str, Any]]:
        return [m["data"] for m in self.messages if m.get("type") == "config"]

    @property
    def texts(self) -> list[str]:
        return [m["data"]["text"] for m in self.messages if m.get("type") == "text"]


class FakeSarvam(WebSocketFake):
    """Sarvam's streaming STT and TTS on one port (``environment.production`` of the SDK)."""

    def __init__(
        self,
        *,
        api_key: str | None = DEFAULT_SARVAM_KEY,
        port: int = 0,
        transcripts: Iterable[str] = (),
        language_code: str = "hi-IN",
        seconds_per_word: float = 0.1,
    ) -> None:
        super().__init__(api_key=api_key, port=port)
        self.transcripts: deque[str] = deque(transcripts)
        self.language_code = language_code
        self.seconds_per_word = seconds_per_word
        self.connections: list[SarvamConnection] = []

    @property
    def ws_base(self) -> str:
        """``SARVAM_STT_URL`` base (the SDK appends the path) and the TTS URL's scheme+host."""
        return f"{url_scheme('ws', self.tls)}://{LOCALHOST}:{self.port}"

    @property
    def tts_url(self) -> str:
        """Pass as ``SarvamTTSService(url=...)`` (``SARVAM_TTS_URL``)."""
        return self.ws_base + TTS_PATH

    def of(self, path: str) -> list[SarvamConnection]:
        return [c for c in self.connections if c.path == path]

    def add_transcripts(self, *texts: str) -> None:
        self.transcripts.extend(texts)

    @property
    def paths(self) -> tuple[str, ...]:
        return (STT_PATH, TTS_PATH)  # two endpoints on one port

    def _handshake_problem(
        self, headers: Headers, query: Mapping[str, str]
    ) -> tuple[HTTPStatus, str] | None:
        if not self._key_ok(headers.get("api-subscription-key")):
            return HTTPStatus.FORBIDDEN, '{"error": {"message": "Invalid API key"}}'
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        path, query = split_target(ws.request.path)
        record = SarvamConnection(path, query, ws.request.headers.get("api-subscription-key"))
        self.connections.append(record)
        session = (
            _SttSession(self, ws, record) if path == STT_PATH else _TtsSession(self, ws, record)
        )
        await self._run_session(ws, session, record)


class _Session:
    def __init__(self, fake: FakeSarvam, ws: ServerConnection, record: SarvamConnection):
        self.fake, self.ws, self.record = fake, ws, record

    def record_only(self, message: str | bytes) -> None:
        with suppress(ValueError, TypeError):
            self.record.messages.append(json.loads(message))

    async def run(self) -> None:
        with suppress(ConnectionClosed):
            async for message in self.ws:
                try:
                    msg = json.loads(message)
                except (ValueError, TypeError):
                    await self._error("messages must be JSON text")
                    continue
                await self.on_message(msg)

    async def close(self) -> None:
        with suppress(Exception):
            await self.ws.close()

    async def on_message(self, msg: dict[str, Any]) -> None:
        raise NotImplementedError

    async def _error(self, message: str) -> None:
        await send_json(self.ws, {"type": "error", "data": {"message": message, "code": 400}})


class _SttSession(_Session):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.segment = 0

    async def on_message(self, msg: dict[str, Any]) -> None:
        if "audio" in msg:
            data = base64.b64decode(msg["audio"].get("data") or "")
            self.record.audio_bytes += len(data)
            self.segment += len(data)
            return  # audio is not kept in messages: a call sends ten a second
        self.record.messages.append(msg)
        if msg.get("type") == "flush" and self.segment:
            await self._transcript()

    async def _transcript(self) -> None:
        rate = int(self.record.query.get("sample_rate") or 16000)
        seconds = self.segment / (2 * rate)
        self.segment = 0
        text = (
            self.fake.transcripts.popleft()
            if self.fake.transcripts
            else f"caller said {seconds:.1f} seconds"
        )
        language = self.record.query.get("language-code") or "unknown"
        payload = {
            "type": "data",
            "data": {
                "request_id": uuid.uuid4().hex,
                "transcript": text,
                "language_code": self.fake.language_code if language == "unknown" else language,
                "language_probability": 0.95,
                "timestamps": None,
                "diarized_transcript": None,
                "metrics": {"audio_duration": round(seconds, 3), "processing_latency": 0.05},
            },
        }
        self.record.sent.append(payload)
        await send_json(self.ws, payload)


class _TtsSession(_Session):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.pending: list[str] = []
        self.rate = 24000

    async def on_message(self, msg: dict[str, Any]) -> None:
        self.record.messages.append(msg)
        kind = msg.get("type")
        if kind == "config":
            self.rate = int(msg.get("data", {}).get("speech_sample_rate") or 24000)
        elif kind == "text":
            self.pending.append(str(msg.get("data", {}).get("text") or ""))
        elif kind == "flush" and self.pending:
            texts, self.pending = self.pending, []
            await self._speak(" ".join(texts))

    async def _speak(self, text: str) -> None:
        pcm = synthesize_speech(text, self.rate, self.fake.seconds_per_word).pcm
        step = CHUNK_BYTES * self.rate // 8000
        for i in range(0, len(pcm), step):
            piece = pcm[i : i + step]
            self.record.audio_bytes += len(piece)
            audio = {"content_type": "audio/pcm", "audio": base64.b64encode(piece).decode()}
            if not await send_json(
                self.ws, {"type": "audio", "data": {**audio, "request_id": "r"}}
            ):
                return
            await asyncio.sleep(0)
        await send_json(self.ws, {"type": "event", "data": {"event_type": "final"}})
