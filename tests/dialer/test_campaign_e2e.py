"""A campaign through the CLI entry point, against the fake Exotel, with real streams."""

from __future__ import annotations

import csv
import io

import pytest

from bot.cli.campaign import campaign_command
from bot.cli.main import build_parser
from bot.dialer.campaign_state import optout_key

from .e2e_kit import outbound_bot

pytestmark = pytest.mark.timeout(60)

HUMAN, HINDI_OFF, VOICEMAIL, OPTS_OUT, BUSY, DND = (f"+9198765100{i:02d}" for i in range(6))
PERSONAS = {
    HUMAN: "human",
    HINDI_OFF: "switched_off_hi",
    VOICEMAIL: "voicemail",
    OPTS_OUT: "opt_out",
    BUSY: "silence",
}


def _files(tmp_path):
    rows = ["phone,name,amount"] + [f"{p},Person {i},{100 * i}" for i, p in enumerate(PERSONAS)]
    rows.insert(3, "12345,Broken,0")  # file line 4: reported, never dialled
    rows.append(f"{DND},Blocked,1")
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("\n".join(rows) + "\n")
    dnd = tmp_path / "dnd.txt"
    dnd.write_text(f"# scrubbed list\n{DND}\n")
    return contacts, dnd


async def _cli(argv: list[str], bot) -> int:
    args = build_parser().parse_args(argv)
    return await campaign_command(args, bot.settings, store=bot.store)


async def test_campaign_runs_to_its_summary_and_export(tmp_path, capsys):
    contacts, dnd = _files(tmp_path)
    async with outbound_bot(PERSONAS) as bot:
        bot.exotel.scripts[BUSY] = ["busy", "completed"]
        argv = ["campaign", "run", str(contacts), "--name", "june", "--concurrency", "3"]
        argv += ["--rate", "200/min", "--type", "transactional", "--dnd", str(dnd)]
        argv += ["--retry", "busy:1:1s", "--no-progress"]
        assert await _cli(argv, bot) == 0
        first = capsys.readouterr()
        # Run again: it continues where it stopped (finished), dialling nobody.
        dialled = list(bot.exotel.dialled())
        assert await _cli(argv, bot) == 0
        assert bot.exotel.dialled() == dialled
        capsys.readouterr()
        assert await _cli(["campaign", "export", "june"], bot) == 0
        exported = capsys.readouterr().out
        opted = await bot.store.get(optout_key(OPTS_OUT))
    assert "line 4:" in first.err and "not dialled" in first.err
    assert "campaign june: 6 contacts, 6 done" in first.out
    assert sorted(dialled) == sorted([HUMAN, HINDI_OFF, VOICEMAIL, OPTS_OUT, BUSY, BUSY])
    assert DND not in dialled
    rows = {row["phone"]: row for row in csv.DictReader(io.StringIO(exported))}
    assert rows[HUMAN]["outcome"] == "completed"
    assert rows[HINDI_OFF]["outcome"] == "unreachable"
    assert rows[VOICEMAIL]["outcome"] == "voicemail"
    assert rows[OPTS_OUT]["opt_out"] == "true" and opted is not None
    assert (rows[BUSY]["attempts"], rows[BUSY]["outcome"]) == ("2", "completed")
    assert (rows[DND]["attempts"], rows[DND]["outcome"]) == ("0", "dnd_skipped")
