"""Exotel's protocol rules as the simulator checks them: sizes, events, and one bot frame.

Why a copy of rules the bot also encodes: the simulator is our compliance checker, so it
deliberately encodes the protocol itself (docs/exotel-protocol.md §3, §5, §6.3) and imports
nothing from ``serializers/`` or the bot's transport: a bug there cannot hide itself here.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import secrets
from dataclasses import dataclass, field
from typing import Any

SUPPORTED_RATES = (8000, 16000, 24000)
PACKET_BYTES = 320  # Exotel's player slices chunks into 320-byte packets (§6.1)
MIN_CHUNK_BYTES = 3200  # documented minimum (§6.1)
MAX_CHUNK_BYTES = 100_000  # documented maximum (§6.1)
BOT_EVENTS = frozenset({"media", "mark", "clear"})  # all a bot may send (§5)
HANDSHAKE_LIMIT_SECS = 10.0  # Exotel fails a stream whose handshake takes longer (§2.5)
EPOCH_MS_FLOOR = 10**11  # a media.timestamp above this is epoch ms, not ms since start (§13.11)


def frame_bytes(rate: int) -> int:
    """Bytes in one 20 ms frame of 16-bit mono PCM at `rate`."""
    return rate // 50 * 2


def chunk_step_bytes(rate: int) -> int:
    """Size step that is both a multiple of 320 B and a whole 20 ms frame (§6.3 (a)+(b))."""
    return math.lcm(PACKET_BYTES, frame_bytes(rate))


def min_chunk_bytes(rate: int) -> int:
    """Smallest legal chunk: 3200 B at 8/16 kHz, 3840 B at 24 kHz (3200 B is 66.7 ms there)."""
    step = chunk_step_bytes(rate)
    return -(-MIN_CHUNK_BYTES // step) * step


def new_sid() -> str:
    """A random id shaped like the 32-hex-char sids Exotel really sends (§4)."""
    return secrets.token_hex(16)


@dataclass
class BotMessage:
    """What one frame from the bot meant, and every rule it broke."""

    event: str | None = None
    pcm: bytes | None = None
    mark_name: str | None = None
    problems: list[str] = field(default_factory=list)


def check_bot_message(frame: str | bytes, rate: int, stream_sid: str) -> BotMessage:
    """Parse and check one frame the bot sent against §5/§6.3 (never raises)."""
    out = BotMessage()
    if isinstance(frame, bytes):
        out.problems.append(f"binary frame of {len(frame)} B (Exotel takes JSON text frames only)")
        return out
    try:
        msg = json.loads(frame)
    except ValueError:
        out.problems.append(f"not valid JSON: {frame[:60]!r}")
        return out
    if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
        out.problems.append(f"not a JSON object with a string 'event': {frame[:60]!r}")
        return out
    out.event = msg["event"]
    if out.event not in BOT_EVENTS:
        out.problems.append(f"unknown event {out.event!r} (a bot may send media, mark, clear)")
        return out
    _check_stream_sid(msg, stream_sid, out)
    if out.event == "media":
        _check_media(msg, rate, out)
    elif out.event == "mark":
        mark = msg.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        if isinstance(name, str):
            out.mark_name = name
        else:
            out.problems.append("mark without a string mark.name")
    return out


def _check_stream_sid(msg: dict[str, Any], stream_sid: str, out: BotMessage) -> None:
    if "streamSid" in msg:
        out.problems.append(f"{out.event}: camelCase 'streamSid' (Exotel documents 'stream_sid')")
    if "stream_sid" in msg and msg["stream_sid"] != stream_sid:
        out.problems.append(f"{out.event}: stream_sid {msg['stream_sid']!r} is not ours")


def _check_media(msg: dict[str, Any], rate: int, out: BotMessage) -> None:
    media = msg.get("media")
    payload = media.get("payload") if isinstance(media, dict) else None
    if not isinstance(payload, str):
        out.problems.append("media without a string media.payload")
        return
    try:
        pcm = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        out.problems.append("media.payload is not valid base64")
        return
    out.problems.extend(chunk_size_problems(len(pcm), rate))
    timestamp = media.get("timestamp")
    try:
        if timestamp is not None and float(timestamp) > EPOCH_MS_FLOOR:
            out.problems.append("media.timestamp looks like epoch ms, not ms since stream start")
    except (TypeError, ValueError):
        out.problems.append(f"media.timestamp {timestamp!r} is not a number")
    out.pcm = pcm[: len(pcm) // 2 * 2]


def chunk_size_problems(nbytes: int, rate: int) -> list[str]:
    """Every §6.3 size rule a decoded media payload of `nbytes` breaks at call rate `rate`."""
    ms = nbytes / (2 * rate) * 1000
    where = f"media payload {nbytes} B ({ms:.1f} ms @{rate} Hz)"
    problems = []
    if nbytes % PACKET_BYTES:
        problems.append(f"{where} is not a multiple of {PACKET_BYTES} B")
    if nbytes % frame_bytes(rate):
        problems.append(f"{where} is not a whole number of 20 ms frames")
    if nbytes < min_chunk_bytes(rate):
        problems.append(f"{where} is below the {min_chunk_bytes(rate)} B minimum")
    if nbytes > MAX_CHUNK_BYTES:
        problems.append(f"{where} is above the {MAX_CHUNK_BYTES} B maximum")
    return problems
