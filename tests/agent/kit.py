"""What the agent's end-to-end tests share: the order tool, giving a runtime an agent config,
and reading the call's record."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from bot.agent import parse_agent_config


def order_tool(base: str) -> dict:
    """A ``[[tools]]`` entry: GET the tool server's echo route for the order number."""
    return {
        "name": "lookup_order",
        "description": "Look up an order's delivery status by its number",
        "url": base + "/echo/orders/{{order_id}}",
        "method": "GET",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    }


def use_agent(runtime: Any, agent: dict | None = None, tools: list | None = None) -> None:
    """Give the runtime an agent config (sessions read it when they are built)."""
    config = parse_agent_config(agent, tools, environ={})
    runtime.rooms = dataclasses.replace(runtime.rooms, agent=config)


def record_of(records: Path) -> dict:
    """The one call record written under ``records``."""
    (path,) = list(records.rglob("*.json"))
    return json.loads(path.read_text())
