"""Local fake Deepgram, OpenAI and Cartesia servers that speak the providers' real wire protocols.

Why this exists: the bot uses Pipecat's real service classes (``DeepgramSTTService``,
``OpenAILLMService``, ``CartesiaTTSService``). Pointing their base-URL overrides at these fakes
exercises the real client code (SDK handshakes, SSE parsing, base64 audio, word timestamps,
reconnect logic) with no network, no keys, and deterministic output. Tests, load benchmarks
(50-100 concurrent calls) and fault-injection tests all use them. They must not be imported by
the serving path (tests/test_architecture.py checks it): they are part of the kit.

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

Modules: ``base`` (lifecycle, key checks, :class:`FaultSwitch`, :class:`ServerTLS`),
``speech`` (the deterministic audio), ``deepgram``, ``openai``, ``cartesia``, ``sarvam`` (one
fake each; Sarvam's STT and TTS sockets share one port and are not in FakeProviders),
``providers`` (:class:`FakeProviders`, all three plus their environment) and ``cli``.

Run ``python -m bot.fakes --port-base 18800`` to serve all three on fixed ports for manual runs
and benchmarks in another process.
"""

from bot.testing.fakes.base import FAULT_MODES, LOCALHOST, FaultMode, FaultSwitch, ServerTLS
from bot.testing.fakes.cartesia import (
    CARTESIA_API_VERSION,
    DEFAULT_CARTESIA_KEY,
    CartesiaConnection,
    FakeCartesia,
)
from bot.testing.fakes.deepgram import (
    DEFAULT_DEEPGRAM_KEY,
    DeepgramConnection,
    FakeDeepgram,
    Transcriber,
    deepgram_results,
)
from bot.testing.fakes.openai import DEFAULT_OPENAI_KEY, FakeOpenAI, Reply, Responder, ToolCall
from bot.testing.fakes.providers import FakeProviders
from bot.testing.fakes.sarvam import DEFAULT_SARVAM_KEY, FakeSarvam, SarvamConnection
from bot.testing.fakes.speech import SynthesizedSpeech, synthesize_speech

__all__ = [
    "CARTESIA_API_VERSION",
    "DEFAULT_CARTESIA_KEY",
    "DEFAULT_DEEPGRAM_KEY",
    "DEFAULT_OPENAI_KEY",
    "DEFAULT_SARVAM_KEY",
    "FAULT_MODES",
    "LOCALHOST",
    "CartesiaConnection",
    "DeepgramConnection",
    "FakeCartesia",
    "FakeDeepgram",
    "FakeOpenAI",
    "FakeProviders",
    "FakeSarvam",
    "FaultMode",
    "FaultSwitch",
    "Reply",
    "Responder",
    "SarvamConnection",
    "ServerTLS",
    "SynthesizedSpeech",
    "ToolCall",
    "Transcriber",
    "deepgram_results",
    "synthesize_speech",
]
