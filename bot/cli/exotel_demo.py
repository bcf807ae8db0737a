"""``python -m bot.cli.exotel_demo``: a whole campaign with no phone and no account.

Starts, in this process on 127.0.0.1, the fake providers, the real bot server and the fake
Exotel Calls API whose calls are played by :class:`~bot.testing.exotel_callee.SimulatedCallee`
(a person, a carrier announcement in English and Hindi, voicemail, an IVR, silence, an
opt-out, a busy line retried), writes a call list, then runs ``python -m bot campaign run`` on
it: the progress bar, then the summary and the results CSV.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import numpy as np
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams

from bot.cli.campaign import campaign_command
from bot.cli.main import build_parser
from bot.config import Settings
from bot.observability.logs import setup_logging
from bot.providers import SharedResources, choose_providers
from bot.server.app import create_app
from bot.server.runtime import Runtime
from bot.state.memory import MemoryStore
from bot.testing.exotel_api import DEFAULT_KEY, DEFAULT_SID, DEFAULT_TOKEN, FakeExotelApi
from bot.testing.exotel_callee import PERSONAS, SimulatedCallee, ToneTranscriber
from bot.testing.fakes import FakeDeepgram, FakeProviders
from bot.testing.localserver import serving


class EnergyVAD(VADAnalyzer):
    """Speech = RMS above a threshold: Silero does not take the callee's tones for speech."""

    def __init__(self, sample_rate: int | None = None) -> None:
        super().__init__(
            sample_rate=sample_rate, params=VADParams(start_secs=0.1, stop_secs=0.2, confidence=0.5)
        )

    def num_frames_required(self) -> int:
        return int(self.sample_rate * 0.02) if self.sample_rate else 160

    def voice_confidence(self, buffer: bytes) -> float:
        samples = np.frombuffer(buffer, np.int16).astype(np.float32)
        return float(samples.size > 0 and np.sqrt(np.mean(samples * samples)) > 1000.0)


def _contacts(folder: Path, count: int) -> tuple[Path, Path, dict[str, str], str]:
    phones = [f"+9198765200{i:02d}" for i in range(count)]
    personas = {phone: PERSONAS[i % len(PERSONAS)] for i, phone in enumerate(phones)}
    busy, dnd = phones[-2], phones[-1]
    lines = ["phone,name,amount", *(f"{p},Person {i},{100 * i}" for i, p in enumerate(phones))]
    lines.insert(2, "12345,Broken row,0")
    csv_path, dnd_path = folder / "contacts.csv", folder / "dnd.txt"
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dnd_path.write_text(f"{dnd}\n", encoding="utf-8")
    return csv_path, dnd_path, personas, busy


async def run_demo(count: int, concurrency: int) -> int:
    with tempfile.TemporaryDirectory(prefix="exotel-demo-") as tmp:
        csv_path, dnd_path, personas, busy = _contacts(Path(tmp), count)
        fakes = FakeProviders(deepgram=FakeDeepgram(transcriber=ToneTranscriber()))
        async with fakes, FakeExotelApi(scripts={busy: ["busy", "completed"]}) as exotel:
            env = {k.lower(): v for k, v in fakes.env().items()}
            base_settings = dict(
                env, bot_stt="deepgram", bot_llm="openai", bot_tts="cartesia", holding_mode="off"
            )
            s = Settings(**base_settings, bot_greeting="Hello, this is the bank calling.")
            store = MemoryStore()
            runtime = Runtime(
                settings=s,
                choice=choose_providers(s),
                shared=SharedResources(),
                vad_factory=EnergyVAD,
                store=store,
            )
            async with serving(create_app(s, runtime=runtime)) as base:
                dialer = {
                    "exotel_account_sid": DEFAULT_SID,
                    "exotel_api_key": DEFAULT_KEY,
                    "exotel_api_token": DEFAULT_TOKEN,
                    "exotel_api_url": exotel.base_url,
                    "exotel_caller_id": "08047491899",
                    "exotel_app_id": "123456",
                    "public_url": base,
                }
                runtime.settings = Settings(**{**s.model_dump(), **dialer})
                exotel.on_call = SimulatedCallee(base.replace("http", "ws", 1) + "/exotel/ws")
                exotel.on_call.personas = personas
                argv = ["campaign", "run", str(csv_path), "--name", "demo", "--type"]
                argv += ["transactional", "--concurrency", str(concurrency), "--rate", "200/min"]
                argv += ["--dnd", str(dnd_path), "--retry", "busy:1:2s"]
                code = await campaign_command(
                    build_parser().parse_args(argv), runtime.settings, store
                )
                export = build_parser().parse_args(["campaign", "export", "demo"])
                await campaign_command(export, runtime.settings, store)
                await exotel.wait_idle(30.0)
        return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.cli.exotel_demo", description=__doc__)
    parser.add_argument("--contacts", type=int, default=10, help="call-list size (default 10)")
    parser.add_argument("--concurrency", type=int, default=3)
    args = parser.parse_args(argv)
    setup_logging("WARNING")
    return asyncio.run(run_demo(max(3, args.contacts), args.concurrency))


if __name__ == "__main__":
    sys.exit(main())
