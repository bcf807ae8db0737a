"""The context webhook (local server) and its cache; transfer outcome, Passthru, Connect."""

from __future__ import annotations

import time

import pytest

from bot.agent.context import (
    ContextAnswer,
    ContextResult,
    context_payload,
    fetch_context,
    recall_context,
    remember_context,
)
from bot.agent.transfer import (
    TRANSFER_TTL_SECS,
    connect_answer,
    parse_departments,
    passthru_answer,
    record_transfer,
    transfer_for,
)
from bot.config import ConfigError
from bot.state.base import StateUnavailable
from bot.state.memory import MemoryStore

PAYLOAD = context_payload(
    call_sid="CA1",
    stream_sid=None,
    from_number="+911",
    to_number="+912",
    custom_parameters={"campaign": "x"},
)


async def test_context_answer(server):
    result = await fetch_context(server.base + "/context", PAYLOAD)
    assert result.ok and result.error is None
    assert result.answer.variables == {"customer_name": "Asha", "tier": 2}
    assert result.answer.greeting == "Hi {{customer_name}}" and result.answer.language is None
    [seen] = server.seen
    assert seen.body == {
        "call_sid": "CA1",
        "stream_sid": None,
        "from": "+911",
        "to": "+912",
        "custom_parameters": {"campaign": "x"},
    }


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/slow", "timed out"),
        ("/fail", "HTTP 503"),
        ("/notjson", "not JSON"),
        ("/badcontext", "variables"),
    ],
)
async def test_context_failures(server, path, needle):
    result = await fetch_context(server.base + path, PAYLOAD, timeout_secs=0.3)
    assert result.answer is None and needle in result.error
    assert result.duration_secs < 1.0  # bounded by the timeout, not by the server


async def test_context_unreachable(refused_url):
    result = await fetch_context(refused_url, PAYLOAD, timeout_secs=0.5)
    assert result.answer is None and "unreachable" in result.error


async def test_context_cache_round_trip():
    store = MemoryStore()
    assert await recall_context(store, "CA1") is None
    answer = ContextAnswer(variables={"a": "1"}, system_prompt="Be kind")
    assert await remember_context(store, "CA1", ContextResult(answer))
    assert (await recall_context(store, "CA1")).answer == answer
    await remember_context(store, "CA2", ContextResult(None, "context webhook timed out"))
    kept = await recall_context(store, "CA2")
    assert kept.answer is None and kept.error == "context webhook timed out"
    ttl = store._values["call:CA1:context"][1] - time.time()
    assert ttl >= 2 * 3600 - 5


class DownStore(MemoryStore):
    async def get(self, key):
        raise StateUnavailable("down")

    async def set(self, key, value, ttl_secs=None):
        raise StateUnavailable("down")


async def test_context_cache_with_the_store_down():
    assert await remember_context(DownStore(), "CA1", ContextResult(ContextAnswer())) is False
    assert await recall_context(DownStore(), "CA1") is None


DEPARTMENTS = {"support": ["+918011112222"], "default": ["+918033334444", "+918055556666"]}


async def test_transfer_passthru_and_connect():
    store = MemoryStore()
    assert await passthru_answer(store, "CA1") == 200
    assert await record_transfer(store, "CA1", "angry caller", "support")
    assert not await record_transfer(store, "CA1", "again", None)  # idempotent: first wins
    record = await transfer_for(store, "CA1")
    assert (record.reason, record.department) == ("angry caller", "support")
    assert await passthru_answer(store, "CA1") == 302
    assert await passthru_answer(store, "CA1") == 302
    assert await passthru_answer(store, "other") == 200
    assert await passthru_answer(store, "") == 200
    answer = await connect_answer(store, "CA1", DEPARTMENTS)
    assert answer == {
        "fetch_after_attempt": False,
        "destination": {"numbers": ["+918011112222"]},
        "record": True,
        "max_ringing_duration": 45,
        "start_call_playback": {
            "playback_to": "both",
            "type": "text",
            "value": "Connecting you to an agent.",
        },
    }
    assert (await connect_answer(store, "nobody", DEPARTMENTS))["destination"] == {"numbers": []}
    expires = store._values["call:CA1:transfer"][1] - time.time()
    assert TRANSFER_TTL_SECS - 5 < expires <= TRANSFER_TTL_SECS


async def test_connect_falls_back_to_default_department():
    store = MemoryStore()
    await record_transfer(store, "CA1", "billing question", "billing")
    answer = await connect_answer(store, "CA1", DEPARTMENTS, playback="")
    assert answer["destination"]["numbers"] == DEPARTMENTS["default"]
    assert "start_call_playback" not in answer


async def test_store_down_answers_200_and_nobody():
    assert await passthru_answer(DownStore(), "CA1") == 200
    assert (await connect_answer(DownStore(), "CA1", DEPARTMENTS))["destination"]["numbers"] == []


def test_parse_departments():
    assert parse_departments({"support": ["+91 80 1111-2222"], "default": "+918033334444"}) == {
        "support": ["+918011112222"],
        "default": ["+918033334444"],
    }
    with pytest.raises(ConfigError, match=r"\[agent.departments\] sales: 'abc'"):
        parse_departments({"sales": ["abc"]})
    with pytest.raises(ConfigError, match="list of phone numbers"):
        parse_departments({"sales": []})
