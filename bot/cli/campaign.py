"""``python -m bot campaign run|status|pause|resume|export``: call lists within India's rules.

``run contacts.csv`` stores the list once under ``--name`` (default: the file's name) in the
state store and dials it; running it again, or ``resume NAME``, continues where it stopped
(the rules given to ``run`` are kept with the campaign, so ``resume`` dials the same way).
A running ``serve`` on the same store takes the streams and the status callbacks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bot.cli.dial import add_mode_argument
from bot.config import Settings, load_settings
from bot.dialer.campaign import Campaign, CampaignSettings, Progress, RunResult
from bot.dialer.contacts import (
    ContactFileError,
    DndFileError,
    describe_bad_rows,
    load_contacts,
    load_dnd,
)
from bot.dialer.exotel_api import ExotelAuthError
from bot.dialer.rules import CALL_TYPES, Rate, RetryPolicy, RuleError, window_for
from bot.dialer.setup import (
    DialerConfigError,
    call_options,
    check_dialer_settings,
    exotel_client,
)
from bot.state import StateStore, open_store

RULE_KEYS = ("concurrency", "rate", "hours", "type", "retry", "dnd", "mode")
DEFAULTS: dict[str, Any] = {
    "concurrency": 5,
    "rate": "60/min",
    "hours": None,
    "type": "promotional",
    "retry": [],
    "dnd": None,
    "mode": "flow",
}


def add_campaign_parser(sub: argparse._SubParsersAction) -> None:
    campaign = sub.add_parser("campaign", help="dial a call list (run, status, pause, resume)")
    actions = campaign.add_subparsers(dest="action", required=True)
    run = actions.add_parser("run", help="dial a CSV call list (a phone column + variables)")
    run.add_argument("csv", type=Path, help="the call list: a 'phone' column, then variables")
    run.add_argument("--name", help="the campaign's name (default: the file name)")
    _add_rules(run)
    resume = actions.add_parser("resume", help="un-pause and continue a campaign")
    resume.add_argument("name")
    _add_rules(resume)
    for action, text in (("status", "counts so far"), ("pause", "stop dialling new calls")):
        parser = actions.add_parser(action, help=text)
        parser.add_argument("name")
        parser.add_argument("--config", help="TOML config file (default: $BOT_CONFIG)")
    export = actions.add_parser("export", help="the results CSV (stdout without --out)")
    export.add_argument("name")
    export.add_argument("--out", type=Path, help="write the CSV here")
    export.add_argument("--config", help="TOML config file (default: $BOT_CONFIG)")
    campaign.set_defaults(run=campaign_main)


def _add_rules(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--concurrency", type=int, help="live calls at most (default 5)")
    parser.add_argument("--rate", help="API calls at most, e.g. 60/min (Exotel: <= 200/min)")
    parser.add_argument("--hours", help="calling window in IST, HH:MM-HH:MM (default 09:00-21:00)")
    parser.add_argument("--type", choices=CALL_TYPES, help="transactional lifts the window only")
    parser.add_argument(
        "--retry", action="append", help="outcome[,outcome]:max_retries:delay, e.g. busy:2:30m"
    )
    parser.add_argument("--dnd", type=Path, help="do-not-call numbers, one a line")
    parser.add_argument("--wait", action="store_true", help="outside the window: wait for it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_mode_argument(parser)
    parser.set_defaults(mode=None)
    parser.add_argument("--config", help="TOML config file (default: $BOT_CONFIG)")


def campaign_main(args: argparse.Namespace) -> int:
    return asyncio.run(campaign_command(args, load_settings(args.config)))


async def campaign_command(
    args: argparse.Namespace, settings: Settings, store: StateStore | None = None
) -> int:
    """The command's body; ``store`` lets a test share the server's store."""
    if args.action in ("run", "resume"):
        try:  # before the store is opened: nothing to dial with, nothing to create
            check_dialer_settings(settings, args.mode or "voice-ai")
        except DialerConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    own = store is None
    store = store or open_store(settings.bot_state_url, settings.bot_data_dir)
    try:
        if args.action in ("run", "resume"):
            return await _run(args, settings, store)
        campaign = Campaign(args.name, store, None, None, None)
        if await campaign.db.count() is None:
            print(f"error: no campaign named {args.name!r} in the state store", file=sys.stderr)
            return 2
        if args.action == "status":
            _print_summary(args.name, await campaign.progress(), await outcome_counts(campaign))
        elif args.action == "pause":
            await campaign.pause()
            print(f"campaign {args.name}: paused (live calls finish; `resume` continues)")
        else:
            await _export(campaign, args.out)
        return 0
    finally:
        if own:
            await store.close()


async def _export(campaign: Campaign, out: Path | None) -> None:
    if out is None:
        await campaign.export_csv(sys.stdout)
        return
    with out.open("w", encoding="utf-8", newline="") as handle:
        rows = await campaign.export_csv(handle)
    print(f"campaign {campaign.name}: {rows} rows written to {out}")


async def _rules(args: argparse.Namespace, store: StateStore, name: str) -> dict[str, Any]:
    """This run's rules: the command line over the ones stored by the last run, then defaults."""
    key = f"campaign:{name}:options"
    raw = await store.get(key)
    rules = {**DEFAULTS, **(json.loads(raw) if raw else {})}
    for rule in RULE_KEYS:
        value = getattr(args, rule, None)
        if value is not None:
            rules[rule] = str(value) if isinstance(value, Path) else value
    await store.set(key, json.dumps(rules))
    return rules


async def _settings_for(
    rules: dict[str, Any], settings: Settings, store: StateStore
) -> CampaignSettings:
    options = await call_options(settings, store, rules["mode"])
    dnd = load_dnd(rules["dnd"]) if rules["dnd"] else frozenset()
    return CampaignSettings(
        caller_id=options.caller_id,
        app_id=options.app_id,
        stream_url=options.stream_url,
        status_callback=options.status_callback,
        concurrency=int(rules["concurrency"]),
        rate=Rate.parse(rules["rate"]),
        window=window_for(rules["type"], rules["hours"]),
        retry=RetryPolicy.parse(rules["retry"]),
        dnd=dnd,
        time_limit=options.time_limit,
        time_out=options.time_out,
    )


async def _run(args: argparse.Namespace, settings: Settings, store: StateStore) -> int:
    contacts = None
    if args.action == "run":
        try:
            listed = load_contacts(args.csv)
        except ContactFileError as e:
            print(f"error: {args.csv}: {e}", file=sys.stderr)
            return 2
        for line in describe_bad_rows(listed.bad_rows):
            print(f"{args.csv}: {line} (not dialled)", file=sys.stderr)
        contacts = listed.contacts
        name = args.name or args.csv.stem
    else:
        name = args.name
    try:
        rules = await _rules(args, store, name)
        campaign_settings = await _settings_for(rules, settings, store)
    except (DialerConfigError, RuleError, DndFileError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    async with exotel_client(settings) as client:
        bar = None if args.no_progress else _bar(name)
        campaign = Campaign(
            name,
            store,
            client,
            contacts,
            campaign_settings,
            on_progress=(lambda p: _update(bar, p)) if bar is not None else None,
        )
        try:
            if args.action == "resume":
                if await campaign.db.count() is None:
                    print(f"error: no campaign named {name!r} in the state store", file=sys.stderr)
                    return 2
                await campaign.resume()
            result = await campaign.run(wait_for_window=args.wait)
        except ExotelAuthError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        finally:
            if bar is not None:
                bar.close()
    return _report(name, result, await outcome_counts(campaign), campaign_settings)


def _bar(name: str) -> tqdm:
    return tqdm(total=0, desc=f"campaign {name}", unit="contact", dynamic_ncols=True)


def _update(bar: tqdm, p: Progress) -> None:
    done = p.total - p.remaining
    if bar.total != p.total:
        bar.total = p.total
    bar.set_postfix(
        dialled=p.dialled,
        answered=p.answered,
        completed=p.completed,
        failed=p.failed,
        skipped=p.skipped,
        live=p.live,
        refresh=False,
    )
    bar.update(done - bar.n)


async def outcome_counts(campaign: Campaign) -> Counter[str]:
    """Finished contacts by outcome (``completed``, ``busy``, ``dnd_skipped``, ...)."""
    counts: Counter[str] = Counter()
    for index in range(await campaign.db.count() or 0):
        state = await campaign.db.state(index)
        counts[state.outcome if state.status == "done" else f"({state.status})"] += 1
    return counts


def _report(name: str, result: RunResult, counts: Counter[str], s: CampaignSettings) -> int:
    if result.reason == "outside_window":
        assert result.next_window_start is not None
        print(
            f"campaign {name}: outside the calling window {s.window} IST; the next one starts "
            f"{result.next_window_start:%Y-%m-%d %H:%M} IST. Run the same command again then, "
            "or add --wait."
        )
    elif result.reason == "paused":
        print(f"campaign {name}: paused; `python -m bot campaign resume {name}` continues")
    _print_summary(name, result.progress, counts)
    return 0


def _print_summary(name: str, p: Progress, counts: Counter[str]) -> None:
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none yet"
    print(
        f"campaign {name}: {p.total} contacts, {p.total - p.remaining} done "
        f"(completed {p.completed}, failed {p.failed}, skipped {p.skipped}), "
        f"{p.dialled} calls dialled, {p.answered} answered, {p.remaining} remaining\n"
        f"  outcomes: {outcomes}"
    )
