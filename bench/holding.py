"""Holding-phrase benchmark: how fast the caller hears something, per mode, fast vs slow LLM.

For each holding mode (off, always, adaptive) and each LLM speed (fake OpenAI first token
after 0.1 s or 2.0 s), simulated Exotel calls go through the real server, the real pipeline
and the fake Deepgram/OpenAI/Cartesia servers, all on loopback in this process. Printed per
configuration (p50 / p95 / max over all turns):

* timer -> first phrase byte: the holding timer fired -> the phrase's first media message
  reached the caller's socket (simulator clock; same monotonic clock as the bot);
* end of speech -> first bot audio: the caller's speech ended (measured from the audio) ->
  the first bot media of the reply (phrase or answer), as the caller hears it. The seed bot,
  which synthesized "One second." on demand, measured 777 ms here.

Usage: ``.venv/bin/python bench/holding.py [--calls 20] [--turns 5]``; writes
``bench/results/holding.json``. Default: 100 turns per configuration in about 2-3 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.conftest (the deterministic energy VAD)

import bot.server.runtime  # noqa: E402
from bot.config import Settings  # noqa: E402
from bot.conversation.holding import (  # noqa: E402
    PhraseCache,
    session_factory_with_holding,
    start_phrase_cache,
)
from bot.providers import choose_providers  # noqa: E402
from bot.server.app import create_app  # noqa: E402
from bot.server.runtime import Runtime  # noqa: E402
from bot.simulator import (  # noqa: E402
    CallConfig,
    CallRecording,
    ExotelSimulator,
    Hangup,
    Say,
    Wait,
)
from bot.testing import FakeCartesia, FakeDeepgram, FakeOpenAI, FakeProviders  # noqa: E402
from bot.testing.localserver import serving  # noqa: E402
from tests.conftest import energy_vad_factory  # noqa: E402

RATE = 8000
SEED_MS = 777  # the seed bot, end of speech -> first bot audio, on-demand "One second."
SPEECH_SECS = 0.5
# Seconds between the starts of a caller's turns: room for turn detection, the LLM, the
# phrase and the answer, so the caller never barges in on the answer.
PERIOD = {"fast": 3.5, "slow": 5.0}
LATENCY = {"fast": 0.1, "slow": 2.0}
REPLY = "Sure, it ships today."


@dataclass
class Config:
    mode: str
    speed: str

    @property
    def name(self) -> str:
        return f"{self.mode}/{self.speed}"


@dataclass
class Result:
    config: Config
    turns: int = 0
    answered: int = 0
    phrases: int = 0
    timer_to_first_byte_ms: list[float] = field(default_factory=list)
    speech_end_to_audio_ms: list[float] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "mode": self.config.mode,
            "llm": self.config.speed,
            "first_token_secs": LATENCY[self.config.speed],
            "turns": self.turns,
            "answered": self.answered,
            "phrases": self.phrases,
            "timer_to_first_phrase_byte_ms": stats(self.timer_to_first_byte_ms),
            "speech_end_to_first_bot_audio_ms": stats(self.speech_end_to_audio_ms),
            "violations": self.violations[:10],
        }


def stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]

    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 1),
        "p95": round(pct(0.95), 1),
        "max": round(ordered[-1], 1),
    }


def speech(secs: float) -> np.ndarray:
    t = np.arange(round(secs * RATE)) / RATE
    return (np.sin(2 * np.pi * 300 * t) * 6000).astype(np.int16)


# ---------------------------------------------------------------------------------------------


async def run_config(
    config: Config, fakes: FakeProviders, cache: PhraseCache, calls: int, turns: int
) -> Result:
    """One server (settings for this mode), ``calls`` concurrent calls of ``turns`` turns."""
    fakes.openai.first_token_latency = LATENCY[config.speed]
    settings = base_settings(fakes, mode=config.mode)
    runtime = Runtime(
        settings=settings,
        choice=choose_providers(settings),
        shared=_shared_with(cache),
        vad_factory=energy_vad_factory,
        keep_finished=calls,
    )
    result = Result(config)
    async with serving(create_app(settings, runtime=runtime)) as base:
        url = base.replace("http://", "ws://") + f"/exotel/ws?sample-rate={RATE}"
        period = PERIOD[config.speed]
        recs = await asyncio.gather(
            *(one_call(url, turns, period, offset=i * period / calls) for i in range(calls))
        )
    sessions = {s.info.call_sid: s for s in runtime.finished_calls}
    for sim, rec in recs:
        collect(result, sim, rec, sessions.get(rec.call_sid))
    return result


def _shared_with(cache: PhraseCache):
    from bot.providers import SharedResources

    shared = SharedResources()
    shared.phrases = cache  # type: ignore[attr-defined]  # until SharedResources declares it
    return shared


async def one_call(
    url: str, turns: int, period: float, offset: float
) -> tuple[ExotelSimulator, CallRecording]:
    sim = ExotelSimulator(CallConfig(url=url, overall_timeout=turns * period + 30))
    clip = speech(SPEECH_SECS)
    script = [Say(clip, at=offset + 0.3 + k * period, label=f"turn {k}") for k in range(turns)]
    rec = await sim.run([*script, Wait(period - 0.3 - SPEECH_SECS), Hangup()])
    return sim, rec


def collect(result: Result, sim: ExotelSimulator, rec: CallRecording, session: Any) -> None:
    result.violations += rec.violations
    spoken = [t for t in rec.turns if t.label.startswith("turn")]
    result.turns += len(spoken)
    for turn in spoken:
        if turn.latency_secs is not None:
            result.answered += 1
            result.speech_end_to_audio_ms.append(turn.latency_secs * 1000)
    holding = getattr(session, "holding", None)
    events = holding.events if holding is not None else []
    result.phrases += len(events)
    t0 = sim._t0  # the simulator's timeline origin on the loop's monotonic clock
    arrivals = [t0 + c.arrived for c in rec.chunks]
    for event in events:
        first = next((t for t in arrivals if t >= event.fired_at - 0.001), None)
        if first is not None:
            result.timer_to_first_byte_ms.append((first - event.fired_at) * 1000)


def base_settings(
    fakes: FakeProviders, *, cache_dir: Path | None = None, mode: str = "adaptive"
) -> Settings:
    """Cloud providers on the fakes; the phrase cache (shared by every run) is built once."""
    env = {k.lower(): v for k, v in fakes.env().items()}
    if cache_dir is not None:
        env["holding_cache_dir"] = cache_dir
    return Settings(
        **env,
        bot_stt="deepgram",
        bot_llm="openai",
        bot_tts="cartesia",
        bot_greeting="",
        holding_mode=mode,
    )


# ---------------------------------------------------------------------------------------------


def fmt(s: dict[str, float] | None) -> str:
    return "-" if s is None else f"{s['p50']:7.1f} {s['p95']:7.1f} {s['max']:7.1f}"


def print_table(results: list[Result], calls: int) -> None:
    print()
    print(f"holding phrases: {calls} concurrent calls, 8 kHz, fake providers on loopback")
    print(
        f"{'mode/llm':<16}{'turns':>6}{'phrases':>8}   "
        f"{'timer -> 1st phrase byte (ms)':^25}   {'end of speech -> 1st bot audio (ms)':^25}"
    )
    print(f"{'':<16}{'':>6}{'':>8}   {'p50     p95     max':>23}   {'p50     p95     max':>23}")
    for r in results:
        s = r.summary()
        print(
            f"{r.config.name:<16}{r.turns:>6}{r.phrases:>8}   "
            f"{fmt(s['timer_to_first_phrase_byte_ms']):>23}   "
            f"{fmt(s['speech_end_to_first_bot_audio_ms']):>23}"
        )
    print(f"{'seed (on-demand)':<16}{'':>6}{'':>8}   {'':>23}   {SEED_MS:>7}")
    bad = sum(len(r.violations) for r in results)
    print(f"protocol violations seen by the simulator: {bad}")


async def main(args: argparse.Namespace) -> None:
    logger.remove()
    logger.add(sys.stderr, level=args.log_level)
    started = time.monotonic()
    fakes = FakeProviders(
        deepgram=FakeDeepgram(),
        openai=FakeOpenAI(responder=lambda *_: REPLY),
        cartesia=FakeCartesia(),
    )
    async with fakes:
        with tempfile.TemporaryDirectory() as tmp:
            settings = base_settings(fakes, cache_dir=Path(tmp))
            runtime = await Runtime.start(settings)  # prewarm imports, executor
            cache = await start_phrase_cache(settings, runtime.choice, runtime.shared)
            bot.server.runtime.CallSession = session_factory_with_holding(
                bot.server.runtime.CallSession
            )
            results = []
            for mode in args.modes:
                for speed in ("fast", "slow"):
                    config = Config(mode, speed)
                    t = time.monotonic()
                    results.append(await run_config(config, fakes, cache, args.calls, args.turns))
                    print(f"  {config.name}: {time.monotonic() - t:.0f} s", file=sys.stderr)
    print_table(results, args.calls)
    payload = {
        "calls": args.calls,
        "turns_per_call": args.turns,
        "seed_speech_end_to_first_bot_audio_ms": SEED_MS,
        "elapsed_secs": round(time.monotonic() - started, 1),
        "results": [r.summary() for r in results],
    }
    write_json(Path(args.out), payload)
    print(f"wrote {args.out} ({payload['elapsed_secs']} s)")


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20, help="concurrent calls per config")
    parser.add_argument("--turns", type=int, default=5, help="caller turns per call")
    parser.add_argument("--modes", nargs="+", default=["off", "always", "adaptive"])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "holding.json"))
    parser.add_argument("--log-level", default="ERROR")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
