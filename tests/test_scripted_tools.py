"""The scripted responder's tool intents, without a call: parsing, arguments, answers."""

from __future__ import annotations

import pytest

from bot.providers.scripted import KnowledgeError, load_knowledge, parse_knowledge
from bot.providers.scripted_tools import (
    ToolTurns,
    active_intents,
    prepare_heard,
    render_answer,
)

HEAD = 'greeting = "Hi."\nfallback = "Sorry?"\n'


def test_spoken_and_split_numbers_become_digits():
    assert prepare_heard("order four five six seven") == "order 4567"
    assert prepare_heard("order 4 5 6-7, thanks") == "order 4567, thanks"
    assert prepare_heard("order 4,567") == "order 4567"
    assert prepare_heard("one order please") == "one order please"  # a lone word stays


def test_answers_fill_fields_defaults_and_never_braces():
    values = {"order_id": "42", "result": {"status": "shipped", "eta": {"day": "Monday"}}}
    text = "Order {{order_id}} is {{result.status}}, by {{result.eta.day}}. {{result.note|}}"
    assert render_answer(text, values) == "Order 42 is shipped, by Monday."
    assert render_answer("It is {{result.gone|on its way}}.", values) == "It is on its way."
    assert render_answer("{{missing}} done", {}) == "done"
    assert render_answer("{{result}}", {"result": ["a", "b"]}) == "a, b"


def test_a_tool_intent_is_off_until_its_tool_is_registered_and_takes_the_replaced_place():
    knowledge = load_knowledge()
    off = [i.name for i in active_intents(knowledge.intents, lambda _name: False)]
    on = [i.name for i in active_intents(knowledge.intents, lambda _name: True)]
    assert "order_status" in off and "order_lookup" not in off and "agent" in off
    assert on.index("order_lookup") == off.index("order_status")
    assert on.index("transfer_to_person") == off.index("agent")
    assert "order_status" not in on and "agent" not in on


@pytest.mark.parametrize(
    ("intent", "problem"),
    [
        ('tool = "t"\npatterns = ["x"]', "'answer' is missing"),
        ('tool = "t"\npatterns = ["x"]\nanswer = "a"\narguments = { n = "(" }', "argument 'n'"),
        ('patterns = ["x"]\nanswer = "a"\narguments = { n = "x" }', "arguments need"),
        ('tool = "end_call"\nend_call = true\npatterns = ["x"]', "not both"),
        ('tool = "transfer_call"\npatterns = ["x"]\nreplaces = "nobody"', "not an intent"),
    ],
)
def test_bad_tool_intents_are_named(intent, problem):
    with pytest.raises(KnowledgeError, match=problem):
        parse_knowledge(HEAD + f'[[intent]]\nname = "i"\n{intent}\n')


def test_plan_takes_arguments_keeps_captures_and_waits_for_the_result():
    knowledge = parse_knowledge(
        HEAD
        + '[[intent]]\nname = "o"\ntool = "lookup"\npatterns = ["order"]\n'
        + 'arguments = { id = "order\\\\D*(\\\\d+)" }\nfixed = { kind = "retail" }\n'
        + 'answer = "It is {{result.status}}."\n'
    )
    captures: dict = {}
    turns = ToolTurns(knowledge, captures)
    match = turns.active(lambda _n: True).match("where is order 77")
    plan = turns.plan(match, "where is order seven seven", None)
    assert plan.say == "" and plan.call is not None
    assert plan.call.function_name == "lookup"
    assert plan.call.arguments == {"kind": "retail", "id": "77"}
    assert captures == {"id": "77"}
    assert turns.plan(match, "where is my order", None).call is None  # no number: asks again
