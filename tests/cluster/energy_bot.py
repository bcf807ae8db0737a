"""One cluster instance for the tests: ``python -m bot serve`` with the tests' energy VAD.

Silero does not fire on the synthetic tones the tests speak (tests/conftest.py), so the
instances decide turns by energy instead; everything else is the real server, started the way
``bot.cli.main`` starts it (settings from the environment, logging, the draining uvicorn).
Run as ``python -m tests.cluster.energy_bot --host H --port P`` from the repository root.
"""

from __future__ import annotations

import argparse

from bot.config import load_settings
from bot.observability.logs import setup_logging
from bot.server.app import run_server
from tests.conftest import energy_vad_factory


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    settings = load_settings()
    setup_logging(settings.log_level, settings.log_format)
    run_server(settings, args.host, args.port, vad_factory=energy_vad_factory)


if __name__ == "__main__":
    main()
