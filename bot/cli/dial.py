"""``python -m bot dial +919876543210 --var name=Asha --var amount=1500``: one outbound call.

Prints the CallSid. The variables are kept in the state store behind a token (Exotel's
``CustomField`` holds 128 characters); a running ``serve`` on the same store
(``BOT_STATE_URL`` / ``BOT_DATA_DIR``) takes the stream and the status callbacks.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from bot.config import Settings, load_settings
from bot.dialer.contacts import InvalidNumber
from bot.dialer.exotel_api import ExotelApiError
from bot.dialer.setup import (
    MODES,
    DialerConfigError,
    call_options,
    check_dialer_settings,
    exotel_client,
    place_call,
)
from bot.state import StateStore, open_store


def add_dial_parser(sub: argparse._SubParsersAction) -> None:
    dial = sub.add_parser("dial", help="place one outbound call through Exotel; prints the CallSid")
    dial.add_argument("to", help="the number to call: +91XXXXXXXXXX or 10 digits")
    dial.add_argument(
        "--var", action="append", default=[], metavar="NAME=VALUE", help="a call variable; repeat"
    )
    add_mode_argument(dial)
    dial.add_argument("--config", help="TOML config file (default: $BOT_CONFIG)")
    dial.set_defaults(run=dial_main)


def add_mode_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="flow",
        help="flow: through EXOTEL_APP_ID's flow (a transfer can follow); voice-ai: Connect "
        "Voice AI straight to PUBLIC_URL's WebSocket (no transfer possible)",
    )


def parse_vars(pairs: list[str]) -> dict[str, str]:
    """``NAME=VALUE`` pairs; raises ValueError naming a bad one."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--var {pair!r}: write NAME=VALUE, e.g. --var name=Asha")
        out[name.strip()] = value
    return out


def dial_main(args: argparse.Namespace) -> int:
    return asyncio.run(dial(args, load_settings(args.config)))


async def dial(
    args: argparse.Namespace, settings: Settings, store: StateStore | None = None
) -> int:
    """The command's body; ``store`` lets a test share the server's store."""
    try:
        variables = parse_vars(args.var)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        check_dialer_settings(settings, args.mode)
    except DialerConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    own = store is None
    store = store or open_store(settings.bot_state_url, settings.bot_data_dir)
    try:
        options = await call_options(settings, store, args.mode)
        async with exotel_client(settings) as client:
            placed = await place_call(store, client, options, args.to, variables)
    except DialerConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except InvalidNumber as e:
        print(f"error: cannot dial {args.to}: {e}", file=sys.stderr)
        return 2
    except ExotelApiError as e:
        print(f"error: Exotel did not place the call: {e}", file=sys.stderr)
        return 1
    finally:
        if own:
            await store.close()
    print(placed.call_sid)
    return 0
