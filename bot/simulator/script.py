"""The caller's side of a simulated call: the script steps, the call's settings, its audio.

A script is a list of steps (``Say``, ``BargeIn``, ``Dtmf``, ``Wait``, ``WaitForBot``,
``SendRaw``, ``Hangup``, ``WaitForBotHangup``) that ``bot.simulator.client.ExotelSimulator``
performs in order; ``CallConfig`` is everything about the call that is not the script.
"""

from __future__ import annotations

import wave
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import numpy as np
import soxr

from bot.simulator.protocol import HANDSHAKE_LIMIT_SECS, SUPPORTED_RATES, new_sid

AudioSource = bytes | str | Path | np.ndarray


@dataclass(frozen=True)
class Say:
    """The caller says `audio`.

    Timing, first match wins: at absolute call time `at`; else, with `after_bot`, once the bot
    has finished its current (or next) utterance and stayed quiet for `gap` seconds; else at once.
    `audio` is PCM16LE bytes / int16 array at the call rate, or a mono 16-bit WAV path (resampled
    when its rate differs). `label`/`text` only feed reports.
    """

    audio: AudioSource
    after_bot: bool = True
    gap: float = 0.5
    at: float | None = None
    label: str = ""
    text: str | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class BargeIn:
    """The caller talks over the bot, `after_bot_start` seconds after its utterance starts."""

    audio: AudioSource
    after_bot_start: float = 0.8
    label: str = ""
    text: str | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class Dtmf:
    """The caller presses a key; Exotel sends a `dtmf` event (§4.4)."""

    digit: str
    duration_ms: int = 100

    def __post_init__(self) -> None:
        if len(self.digit) != 1 or self.digit not in "0123456789*#":
            raise ValueError(f"DTMF digit must be one of 0-9 * #, got {self.digit!r}")


@dataclass(frozen=True)
class Wait:
    """Do nothing for `seconds` (the caller's line keeps streaming silence)."""

    seconds: float


@dataclass(frozen=True)
class WaitForBot:
    """Wait until the bot has finished its current (or next) utterance, plus `gap` of quiet."""

    gap: float = 0.0
    timeout: float | None = None


@dataclass(frozen=True)
class SendRaw:
    """Send an arbitrary frame as-is (str/bytes) or JSON-encoded (mapping), for bad-input tests."""

    data: str | bytes | Mapping[str, Any]


@dataclass(frozen=True)
class Hangup:
    """End the call: `stop` then a clean close; with `stop=False`, drop TCP at once (a 1006)."""

    stop: bool = True
    reason: str = "callended"


@dataclass(frozen=True)
class WaitForBotHangup:
    """Expect the bot to close the socket (bot-initiated end) within `timeout` seconds."""

    timeout: float = 10.0


Action = Say | BargeIn | Dtmf | Wait | WaitForBot | SendRaw | Hangup | WaitForBotHangup


@dataclass
class CallConfig:
    """Everything about one simulated call that is not the script.

    `sample_rate=None` takes the URL's `sample-rate` (Exotel's default 8000 when absent); a
    given rate missing from the URL is appended to it, a contradicting one is an error.
    """

    url: str
    sample_rate: int | None = None
    auth: tuple[str, str] | None = None
    stream_sid: str = field(default_factory=new_sid)
    call_sid: str = field(default_factory=new_sid)
    account_sid: str = field(default_factory=new_sid)
    from_number: str = "+919876543210"
    to_number: str = "+918047491899"
    custom_parameters: dict[str, str] = field(default_factory=dict)
    media_format: dict[str, str] | None = None  # overrides start.media_format (mismatch tests)
    chunk_secs: float = 0.1  # Exotel streams ~100 ms frames (§3)
    noise_rms: float = 0.0  # > 0: low-level line noise instead of digital zeros
    noise_seed: int = 0
    speech_rms_threshold: float = 300.0  # 10 ms windows above this RMS count as speech
    marks_after_clear: Literal["echo", "drop"] = "echo"  # §12.10: Twilio echoes, Exotel unknown
    utterance_idle_secs: float = 1.0  # a drained queue this long ends a bot utterance
    underrun_tolerance_secs: float = 0.01  # smaller gaps are scheduling noise, not underruns
    connect_timeout: float = HANDSHAKE_LIMIT_SECS
    wait_timeout: float = 30.0  # default bound for every script wait
    close_timeout: float = 3.0
    overall_timeout: float = 300.0

    def resolved_url_and_rate(self) -> tuple[str, int]:
        """The URL to dial and the call rate, after reconciling `sample_rate` with the URL."""
        parts = urlsplit(self.url)
        query = parse_qs(parts.query)
        in_url = query.get("sample-rate") or query.get("sample_rate")
        url_rate = int(in_url[0]) if in_url else None
        rate = self.sample_rate or url_rate or 8000
        if rate not in SUPPORTED_RATES:
            raise ValueError(f"sample rate must be one of {SUPPORTED_RATES}, got {rate}")
        if url_rate is not None and url_rate != rate:
            raise ValueError(f"sample_rate={rate} contradicts the URL's sample-rate={url_rate}")
        if url_rate is None and self.sample_rate is not None:
            sep = "&" if parts.query else ""
            parts = parts._replace(query=parts.query + sep + urlencode({"sample-rate": rate}))
        return urlunsplit(parts), rate


def start_message(config: CallConfig, rate: int, seq: str) -> dict[str, Any]:
    """Exotel's `start` event (§4.2), ids from `config`."""
    media_format = config.media_format or {
        "encoding": "audio/x-raw",
        "sample_rate": str(rate),
        "bit_rate": "16",
    }
    return {
        "event": "start",
        "sequence_number": seq,
        "stream_sid": config.stream_sid,
        "start": {
            "stream_sid": config.stream_sid,
            "call_sid": config.call_sid,
            "account_sid": config.account_sid,
            "from": config.from_number,
            "to": config.to_number,
            "custom_parameters": dict(config.custom_parameters),
            "media_format": media_format,
        },
    }


def load_audio(source: AudioSource, rate: int) -> np.ndarray:
    """Caller audio as int16 at the call rate (WAV files are resampled with soxr)."""
    if isinstance(source, np.ndarray):
        return source.astype(np.int16, copy=False)
    if isinstance(source, bytes | bytearray):
        if len(source) % 2:
            raise ValueError("PCM16 audio must have an even number of bytes")
        return np.frombuffer(bytes(source), dtype="<i2").astype(np.int16)
    with wave.open(str(source), "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
            raise ValueError(f"{source}: need mono 16-bit PCM WAV")
        src_rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16)
    if src_rate != rate:
        samples = soxr.resample(samples, src_rate, rate)
    return samples


def speech_bounds(samples: np.ndarray, rate: int, threshold: float) -> tuple[float, float] | None:
    """(onset, end) in seconds within `samples`: first/last 10 ms window with RMS > threshold."""
    win = rate // 100
    n = len(samples) // win
    if n == 0:
        return None
    frames = samples[: n * win].astype(np.float64).reshape(n, win)
    loud = np.flatnonzero(np.sqrt((frames**2).mean(axis=1)) > threshold)
    if loud.size == 0:
        return None
    return float(loud[0] * win / rate), float((loud[-1] + 1) * win / rate)
