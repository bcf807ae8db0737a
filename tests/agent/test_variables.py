"""Call variables: where they come from, templating, and ${ENV} in tool headers."""

from __future__ import annotations

import pytest
from loguru import logger

from bot.agent.variables import CallVariables, expand_env, render, render_json, split_custom_field
from bot.config import ConfigError


@pytest.fixture
def logs():
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG", format="{message}")
    yield lines
    logger.remove(sink)


def call(**custom) -> CallVariables:
    return CallVariables.from_call(
        call_sid="CA1",
        stream_sid="ST1",
        account_sid="AC1",
        from_number="+919800000001",
        to_number="+912233344455",
        custom_parameters=custom,
        query={"sample-rate": "16000", "lang": "hi"},
    )


def test_ids_custom_parameters_and_query():
    v = call(campaign="diwali")
    assert v.as_dict() == {
        "call_sid": "CA1",
        "stream_sid": "ST1",
        "account_sid": "AC1",
        "from": "+919800000001",
        "to": "+912233344455",
        "lang": "hi",
        "campaign": "diwali",
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("order=42&name=Asha", {"order": "42", "name": "Asha"}),
        ("order=42,name=Asha", {"order": "42", "name": "Asha"}),
        ("name=Asha%20K", {"name": "Asha K"}),
        ("call me back after 5", {"custom_field": "call me back after 5"}),
        ("a=1&free text", {"custom_field": "a=1&free text"}),
    ],
)
def test_custom_field_split_or_kept_whole(raw, expected):
    v = call(CustomField=raw)
    assert {k: v.get(k) for k in expected} == expected
    assert v.get("CustomField") is None


def test_split_custom_field_refuses_free_text():
    assert split_custom_field("") is None
    assert split_custom_field("hello, world") is None


def test_context_variables_on_top_but_ids_and_digits_kept(logs):
    v = call(tier="1")
    v.merge({"tier": 2, "vip": True, "call_sid": "evil", "digits.pin": "0000"})
    assert v.get("tier") == "2" and v.get("vip") == "true"
    assert v.get("call_sid") == "CA1" and v.get("digits.pin") is None
    assert any("call_sid" in line for line in logs)


def test_render_defaults_dotted_names_and_missing_logged_once(logs):
    v = call()
    v.set_digits("pin", "1234")
    text = "Hi {{ name | there }}, pin {{digits.pin}}, {{missing}}{{missing}} from {{from}}"
    assert render(text, v) == "Hi there, pin 1234,  from +919800000001"
    assert render("{{missing}}", v) == ""
    assert sum("missing" in line for line in logs) == 1
    assert render("{{other|}}", v) == ""


def test_render_escape_and_extra_names():
    v = call()
    assert render("/o/{{id}}", v, extra={"id": "a b/c"}, escape=lambda s: s.replace(" ", "+")) == (
        "/o/a+b/c"
    )


def test_render_json_renders_string_values_only():
    v = call()
    v.set_digits("pin", "9876")
    tree = {"pin": "{{digits.pin}}", "n": 3, "list": ["{{to}}", True], "{{key}}": None}
    assert render_json(tree, v) == {
        "pin": "9876",
        "n": 3,
        "list": ["+912233344455", True],
        "{{key}}": None,
    }


def test_masked_view_and_hiding_secrets():
    v = call()
    v.set_digits("pin", "1234")
    assert v.masked()["digits.pin"] == "\u2022" * 4
    assert "1234" not in v.hide_secrets('{"pin": "1234"}')
    with pytest.raises(ValueError):
        v.set_digits("Bad Purpose", "1")


def test_expand_env():
    env = {"TOKEN": "s3cret"}
    assert expand_env("Bearer ${TOKEN}", tool="t", header="Authorization", environ=env) == (
        "Bearer s3cret"
    )
    with pytest.raises(ConfigError, match=r'"lookup".*headers.Authorization.*\$\{NOPE\}'):
        expand_env("Bearer ${NOPE}", tool="lookup", header="Authorization", environ=env)
