"""Command line: ``python -m bot serve | call | demo | doctor | report | dial | campaign |
webhooks | cluster``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bot.config import ConfigError, load_settings
from bot.observability.logs import setup_logging


def _serve(args: argparse.Namespace) -> int:
    from bot.conversation.memory import limit_malloc_arenas, use_system_malloc

    use_system_malloc()  # may replace this process: before anything else is loaded
    from bot.observability.records import configured_secrets
    from bot.server.app import run_server

    limit_malloc_arenas()
    from bot.server.startup import load_room_configs

    settings = load_settings(args.config)
    load_room_configs(settings)  # every room checks its tables: fail now, not at a call
    setup_logging(settings.log_level, settings.log_format, configured_secrets(settings))
    port = args.port or int(os.environ.get("PORT") or settings.port)
    run_server(settings, args.host or settings.host, port)
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from bot.cli.doctor import doctor_main

    setup_logging("WARNING")
    return doctor_main(args.config, args.public_url)


def _demo(args: argparse.Namespace) -> int:
    from bot.cli.demo import demo_main

    setup_logging("WARNING")
    if args.scenario == "agent":
        from bot.cli.demo_agent import agent_demo_main

        return agent_demo_main(args.out, args.sample_rate)
    return demo_main(args.out, args.sample_rate, args.lang)


def _call(args: argparse.Namespace) -> int:
    from bot.cli.demo import call_main

    setup_logging("WARNING")
    return call_main(args)


def _report(args: argparse.Namespace) -> int:
    from bot.simulator.from_record import run_report

    return run_report(args.record, args.png)


def _voices(args: argparse.Namespace) -> int:
    from bot.cli.voices import voices_main

    setup_logging("WARNING")
    return voices_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the bot server")
    serve.add_argument("--host", help="interface to bind (default: HOST or 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port (default: $PORT, else 8080)")
    serve.add_argument("--config", help="TOML config file (default: $BOT_CONFIG)")
    serve.set_defaults(run=_serve)

    doctor = sub.add_parser("doctor", help="check config, keys and models; print applet settings")
    doctor.add_argument("--config", help="TOML config file (default: $BOT_CONFIG)")
    doctor.add_argument("--public-url", help="where the bot is reachable, e.g. https://bot.app")
    doctor.set_defaults(run=_doctor)

    demo = sub.add_parser("demo", help="start the bot and place a simulated call; report")
    demo.add_argument("--out", default="demo-out", help="folder for the WAV, PNG and logs")
    demo.add_argument("--sample-rate", type=int, default=8000, choices=(8000, 16000, 24000))
    demo.add_argument("--lang", default="en-IN", help="the call's language: en-IN or hi-IN")
    demo.add_argument(
        "--scenario",
        default="default",
        choices=("default", "agent"),
        help="agent: an order lookup by an HTTP tool, then a transfer to a person",
    )
    demo.set_defaults(run=_demo)

    call = sub.add_parser("call", help="place a simulated Exotel call against a running bot")
    call.add_argument("--url", required=True, help="ws(s)://host/exotel/ws")
    call.add_argument("--wav", action="append", help="caller speech (mono 16-bit WAV); repeat")
    call.add_argument("--say", action="append", help="caller text, spoken offline; repeat")
    call.add_argument("--sample-rate", type=int, default=8000, choices=(8000, 16000, 24000))
    call.add_argument("--auth", help="user:password for Basic auth")
    call.add_argument("--out", default="call-out", help="folder for the WAV, PNG and report")
    call.set_defaults(run=_call)

    report = sub.add_parser("report", help="render a call record: turn table and timeline PNG")
    report.add_argument("record", type=Path, help="CALL_RECORDS_DIR/<date>/<call_sid>.json")
    report.add_argument("--png", type=Path, help="timeline picture (default: next to the record)")
    report.set_defaults(run=_report)

    from bot.cli.campaign import add_campaign_parser
    from bot.cli.dial import add_dial_parser

    add_dial_parser(sub)
    add_campaign_parser(sub)

    from bot.cli.webhooks import add_parser as add_webhooks

    add_webhooks(sub)

    from bot.cli.cluster import add_cluster_parser

    add_cluster_parser(sub)

    from bot.cli.voices import add_parser as add_voices

    add_voices(sub, _voices)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return 2
