"""``python -m bot webhooks list [--state S] | retry ID | retry --dead | secret``.

The operator's view of the post-call outbox. It opens the same state store as a running
``serve`` (``BOT_STATE_URL``, else the SQLite file under ``BOT_DATA_DIR``), so a ``retry``
here is picked up by the server's worker within its poll interval (about a second).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime

from bot.config import load_settings
from bot.delivery import generate_secret, list_events, retry, retry_dead
from bot.delivery.outbox import STATES, Delivery
from bot.state import StateStore, open_store


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``webhooks`` and its subcommands on the main parser."""
    webhooks = sub.add_parser("webhooks", help="post-call webhooks: list, retry, new secret")
    webhooks.add_argument("--config", help="TOML config file (default: $BOT_CONFIG)")
    actions = webhooks.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="the stored events and their delivery state")
    listing.add_argument("--state", choices=STATES, help="only events in this state")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    again = actions.add_parser("retry", help="send an event again now (or every dead one)")
    again.add_argument("event_id", nargs="?", help="the event's id (evt_...)")
    again.add_argument("--dead", action="store_true", help="every dead event")
    actions.add_parser("secret", help="print a new WEBHOOK_SECRET (whsec_...)")
    webhooks.set_defaults(run=webhooks_main)


def webhooks_main(args: argparse.Namespace) -> int:
    if args.action == "secret":
        print(generate_secret())
        return 0
    if args.action == "retry" and bool(args.event_id) == bool(args.dead):
        print("give either an event id or --dead")
        return 2
    settings = load_settings(args.config)
    store = open_store(settings.bot_state_url, settings.bot_data_dir)
    return asyncio.run(_run(args, store))


async def _run(args: argparse.Namespace, store: StateStore) -> int:
    try:
        if args.action == "list":
            events = await list_events(store, args.state)
            for delivery in events:
                print(json.dumps(delivery.to_json()) if args.json else _line(delivery))
            if not events and not args.json:
                print("no events" + (f" in state {args.state}" if args.state else ""))
            return 0
        if args.dead:
            count = await retry_dead(store)
            print(f"{count} dead event(s) queued again")
            return 0
        if await retry(store, args.event_id):
            print(f"{args.event_id} queued again; a running server sends it within seconds")
            return 0
        print(f"no event {args.event_id} in the store (see `python -m bot webhooks list`)")
        return 1
    finally:
        await store.close()


def _line(d: Delivery) -> str:
    last = d.attempts[-1] if d.attempts else {}
    result = f"HTTP {last['status']}" if "status" in last else last.get("error", "-")
    when = datetime.fromtimestamp(d.created_at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    return (
        f"{d.id}  {d.state:<9} {d.type:<11} call={d.call_sid}  created={when}Z  "
        f"attempts={len(d.attempts)}  last={result}"
    )
