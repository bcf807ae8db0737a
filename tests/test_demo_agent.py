"""``python -m bot demo --scenario agent`` end to end: the real server in a subprocess with the
offline models, a tool call answered by the loopback order desk, then a transfer."""

from __future__ import annotations

import json

import pytest

from bot.cli.demo_agent import run_agent_demo

pytestmark = pytest.mark.models


async def test_agent_demo_shows_a_tool_call_and_a_transfer(tmp_path, capsys):
    assert await run_agent_demo(tmp_path, 8000) == 0
    out = capsys.readouterr().out
    assert 'tool call: lookup_order {"order_id": "4567"} -> ok' in out
    assert "order desk asked for order 4567 (X-Call-Sid " in out
    assert "outcome: transferred" in out and "stream closed by bot" in out
    assert ": 302  (302: Exotel takes the Connect branch)" in out
    connect = json.loads(out.split("/exotel/connect: ", 1)[1].splitlines()[0])
    assert connect["destination"] == {"numbers": ["+918000000001"]}
    (record,) = list((tmp_path / "records").rglob("*.json"))
    data = json.loads(record.read_text())
    assert data["captures"] == {"order_id": "4567"}
    assert any("4567 is out for delivery" in (t.get("answered") or "") for t in data["turns"])
