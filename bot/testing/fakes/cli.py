"""``python -m bot.fakes`` (and ``python -m bot.testing.fakes``): serve the three fakes on fixed
ports P, P+1, P+2 for manual runs and for benchmarks that run the bot in another process."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from loguru import logger

from bot.testing.fakes.base import ServerTLS
from bot.testing.fakes.cartesia import DEFAULT_CARTESIA_KEY, FakeCartesia
from bot.testing.fakes.deepgram import DEFAULT_DEEPGRAM_KEY, FakeDeepgram
from bot.testing.fakes.openai import DEFAULT_OPENAI_KEY, FakeOpenAI
from bot.testing.fakes.providers import FakeProviders


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
