"""[agent] and [[tools]] from TOML and the environment."""

from __future__ import annotations

import pytest

from bot.agent.builtin import builtin_schemas
from bot.agent.config import AgentConfig, load_agent_config, parse_agent_config
from bot.config import ConfigError


def test_defaults():
    config = parse_agent_config(None, None, environ={})
    assert config == AgentConfig()
    assert [s.name for s in builtin_schemas(config)] == ["end_call"]


def test_full_file(tmp_path):
    path = tmp_path / "bot.toml"
    path.write_text(
        """
[agent]
context_url = "https://crm.example/context"
context_timeout_secs = 2
builtin_tools = ["end_call", "transfer_call", "collect_digits"]
transfer_message = "One moment, connecting you."

[agent.departments]
support = ["+918011112222"]
default = ["+918033334444"]

[agent.digits]
first_digit_timeout_secs = 10
to_model = true

[[tools]]
name = "lookup_order"
description = "Look up an order"
url = "https://api.example.com/orders/{{order_id}}"
method = "GET"
[tools.parameters]
type = "object"
properties = { order_id = { type = "string" } }
required = ["order_id"]
""",
        encoding="utf-8",
    )
    config = load_agent_config(path, environ={"AGENT_CONTEXT_TIMEOUT_SECS": "1"})
    assert config.context_url == "https://crm.example/context"
    assert config.context_timeout_secs == 1.0  # the environment wins
    assert config.digits.first_digit_timeout_secs == 10 and config.digits.to_model
    assert config.digits.inter_digit_timeout_secs == 3.0
    assert [t.name for t in config.tools] == ["lookup_order"]
    schemas = {s.name: s for s in builtin_schemas(config)}
    assert list(schemas) == ["end_call", "transfer_call", "collect_digits"]
    assert schemas["transfer_call"].properties["department"]["enum"] == ["support"]


def test_env_context_url():
    config = parse_agent_config({}, None, environ={"AGENT_CONTEXT_URL": "http://127.0.0.1:9/c"})
    assert config.context_url == "http://127.0.0.1:9/c"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"context_ur": "x"}, r"\[agent\]: unknown key context_ur; did you mean context_url"),
        ({"context_url": "ftp://x"}, r"context_url: 'ftp://x' is not an http"),
        ({"context_timeout_secs": 0}, r"context_timeout_secs: 0"),
        ({"builtin_tools": ["hang_up"]}, r"builtin_tools"),
        ({"builtin_tools": ["transfer_call"]}, r"\[agent.departments\] is empty"),
        ({"digits": {"to_model": "yes"}}, r"to_model must be true or false"),
        ({"digits": {"timeout": 3}}, r"\[agent.digits\]: unknown key timeout"),
        ({"transfer_message": " "}, r"transfer_message is empty"),
    ],
)
def test_bad_agent_config(table, message):
    with pytest.raises(ConfigError, match=message):
        parse_agent_config(table, None, environ={})


def test_tool_named_like_a_builtin():
    tool = {"name": "end_call", "description": "d", "url": "https://x"}
    with pytest.raises(ConfigError, match="built-in"):
        parse_agent_config({}, [tool], environ={})
