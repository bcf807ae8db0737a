"""``python -m bot voices`` through Cartesia's SDK, against the fake Cartesia's GET /voices."""

from __future__ import annotations

import asyncio
import io

from bot.cli.main import build_parser
from bot.cli.voices import voices_main
from bot.testing import FakeCartesia


async def _run(fake: FakeCartesia, monkeypatch, *argv: str) -> tuple[int, str]:
    monkeypatch.setenv("CARTESIA_API_KEY", fake.api_key or "k")
    monkeypatch.setenv("CARTESIA_URL", fake.url)
    args = build_parser().parse_args(["voices", *argv])
    out = io.StringIO()
    code = await asyncio.to_thread(voices_main, args, out)
    return code, out.getvalue()


async def test_lists_the_hindi_voices_with_the_config_line(monkeypatch):
    async with FakeCartesia() as fake:
        fake.voices += [
            {**fake.voices[1], "id": f"hi-extra-{i}", "name": f"Extra {i}"} for i in range(120)
        ]
        code, text = await _run(fake, monkeypatch, "--provider", "cartesia", "--language", "hi")
    assert code == 0
    lines = [line for line in text.splitlines() if line.strip()]
    ids = [line.split()[0] for line in lines if "  hi " in line]
    assert ids[:2] == [
        "95d51f79-c397-46f9-b49a-23763d3eaa2d",
        "4877b818-c7fe-4c89-b1cf-eadf8e23da72",
    ]
    assert len(ids) == 122  # every page: the SDK follows starting_after
    # Pages of 100, and the SDK asks once more after the last voice (an empty page ends it).
    assert [q.get("starting_after") for q in fake.voice_requests] == [
        None,
        "hi-extra-96",
        "hi-extra-119",
    ]
    assert "f786b574" not in text  # the English voice is filtered out
    assert '[voices]  hi-IN = "95d51f79-c397-46f9-b49a-23763d3eaa2d"' in text


async def test_a_wrong_key_is_a_clear_failure(monkeypatch, capsys):
    async with FakeCartesia(api_key="right") as fake:
        monkeypatch.setenv("CARTESIA_API_KEY", "wrong")
        monkeypatch.setenv("CARTESIA_URL", fake.url)
        args = build_parser().parse_args(["voices", "--language", "hi"])
        code = await asyncio.to_thread(voices_main, args, io.StringIO())
    assert code == 1 and fake.rejected == 1
    assert "could not list Cartesia voices" in capsys.readouterr().err
