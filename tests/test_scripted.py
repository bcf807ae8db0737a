"""The scripted offline LLM: matching, knowledge validation, and LLM-like streaming."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipecat.frames.frames import (
    Frame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    LLMUpdateSettingsFrame,
    MetricsFrame,
    TextFrame,
)
from pipecat.metrics.metrics import TTFBMetricsData
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.settings import LLMSettings
from pipecat.tests.utils import SleepFrame, run_test

from bot.providers.scripted import (
    DEFAULT_KNOWLEDGE_PATH,
    Knowledge,
    KnowledgeError,
    ScriptedResponder,
    load_knowledge,
    normalize,
    parse_knowledge,
)

SMALL = """
greeting = "Hello, how can I help?"
fallback = "Sorry, I did not get that."

[[intent]]
name = "hours"
patterns = ["open", "opening hours"]
answer = "We are open from nine to six."

[[intent]]
name = "refund"
patterns = ["refund*", "money back"]
answer = "Refunds take five days."

[[intent]]
name = "goodbye"
end_call = true
patterns = ["bye", "thats all"]
answer = "Thank you for calling. Goodbye!"
"""


@pytest.fixture(scope="module")
def default_knowledge() -> Knowledge:
    return load_knowledge(DEFAULT_KNOWLEDGE_PATH)


def context_with(*user_texts: str) -> LLMContext:
    messages = [{"role": "system", "content": "ignored by the scripted responder"}]
    messages += [{"role": "user", "content": t} for t in user_texts]
    return LLMContext(messages=messages)  # type: ignore[arg-type]


# -- normalization and matching ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("What's your OPENING hours?!", ["whats", "your", "opening", "hours"]),
        ("24/7", ["twenty", "four", "seven"]),
        ("twenty-four", ["twenty", "four"]),
        ("₹1,500 & 10%", ["rupees", "one", "five", "zero", "zero", "and", "ten", "percent"]),
        ("5pm", ["five", "pm"]),
        ("order 004521", ["order", "zero", "zero", "four", "five", "two", "one"]),
        ("  ", []),
    ],
)
def test_normalize(text: str, words: list[str]) -> None:
    assert normalize(text) == words


@pytest.mark.parametrize(
    ("said", "intent"),
    [
        ("What are your opening hours?", "hours"),
        ("What is the timing of your shop?", "hours"),
        ("Where is my order?", "order_status"),
        ("I would like to check the status of my order, please.", "order_status"),
        ("I want a refund for my order.", "refund"),
        ("I want to cancel my order", "refund"),
        ("Can I talk to a person?", "agent"),
        ("Where is your shop located?", "address"),
        ("How much does the premium plan cost?", "pricing"),
        ("Thank you.", "thanks"),
        ("No, thank you.", "goodbye"),
        ("That's all, thanks. Bye!", "goodbye"),
        ("Hi.", "hello"),
        ("Blah blah something.", "fallback"),
        ("", "fallback"),
    ],
)
def test_default_knowledge_routes_typical_questions(
    default_knowledge: Knowledge, said: str, intent: str
) -> None:
    assert default_knowledge.match(said).name == intent


def test_default_knowledge_has_one_end_call_intent(default_knowledge: Knowledge) -> None:
    assert [i.name for i in default_knowledge.intents if i.end_call] == ["goodbye"]
    assert default_knowledge.greeting and default_knowledge.fallback


def test_whole_words_wildcards_numbers_and_explanation() -> None:
    k = parse_knowledge(SMALL)
    assert k.match("It opened yesterday").name == "fallback"  # whole words only
    assert k.match("I was refunded twice").name == "refund"  # refund* prefix
    m = k.match("Opening hours? When do you open?")
    assert (m.name, m.score, m.matched) == ("hours", 3, ("open", "opening hours"))
    numbers = parse_knowledge(SMALL.replace('"open",', '"open 24 hours",'))
    assert numbers.match("are you open twenty-four hours").name == "hours"


def test_ties_go_to_the_intent_listed_first() -> None:
    k = parse_knowledge(SMALL)
    assert k.match("open bye").name == "hours"  # 1 word each: hours is listed first
    assert k.match("open, that's all").name == "goodbye"  # 2 words beat 1


# -- validation -------------------------------------------------------------------------------


def problems_of(text: str) -> str:
    with pytest.raises(KnowledgeError) as info:
        parse_knowledge(text, source="kb.toml")
    return str(info.value)


def test_malformed_toml_names_file_and_line() -> None:
    message = problems_of('greeting = "hi"\nfallback = "x"\n[[intent]]\nname = "a\n')
    assert message.startswith("kb.toml: not valid TOML")
    assert "line 4" in message


def test_missing_answer_and_empty_patterns_name_the_intent() -> None:
    message = problems_of(SMALL.replace('answer = "Refunds take five days."', "patterns2 = []"))
    assert "intent #2 'refund'" in message
    assert "'answer' is missing" in message
    assert "unknown key 'patterns2'" in message and "did you mean 'patterns'" in message
    message = problems_of(SMALL.replace('["refund*", "money back"]', "[]"))
    assert "intent #2 'refund': 'patterns' is empty" in message


def test_duplicate_names_unknown_keys_and_bad_types() -> None:
    message = problems_of(
        SMALL.replace('name = "refund"', 'name = "Hours"')
        .replace("end_call = true", 'end_call = "yes"')
        .replace('greeting = "Hello, how can I help?"', 'greting = "Hello"')
    )
    assert "duplicate name 'Hours' (also intent #1)" in message
    assert "'end_call' must be true or false" in message
    assert "unknown key 'greting' at the top level (did you mean 'greeting'?)" in message
    assert "'greeting' is missing" in message
    assert message.startswith("kb.toml: 4 problem(s):")


def test_no_fallback_no_intents_and_wordless_pattern() -> None:
    assert "'fallback' is missing" in problems_of(SMALL.replace("fallback =", "# fallback ="))
    assert "no intents" in problems_of('greeting = "a"\nfallback = "b"\n')
    assert "pattern '?!' has no words" in problems_of(SMALL.replace('"bye",', '"?!",'))


def test_load_knowledge_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeError, match="knowledge file not found"):
        load_knowledge(tmp_path / "missing.toml")
    bad = tmp_path / "kb.toml"
    bad.write_text(SMALL.replace('answer = "Refunds take five days."', ""), encoding="utf-8")
    with pytest.raises(KnowledgeError, match=f"{bad}: 1 problem"):
        load_knowledge(bad)
    assert isinstance(KnowledgeError("x"), ValueError)


# -- streaming in a pipeline ------------------------------------------------------------------


class Recorder(FrameProcessor):
    """Records frames as they are pushed to it (direct mode: no queue, so order is exact)."""

    def __init__(self, events: list[Frame | str]) -> None:
        super().__init__(enable_direct_mode=True)
        self.events = events

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        self.events.append(frame)
        await self.push_frame(frame, direction)


def llm_frames(frames: list) -> list[Frame]:
    kinds = (LLMFullResponseStartFrame, LLMTextFrame, LLMFullResponseEndFrame, InterruptionFrame)
    return [f for f in frames if isinstance(f, kinds)]


async def test_streams_the_answer_like_an_llm_and_passes_other_frames() -> None:
    llm = ScriptedResponder(parse_knowledge(SMALL))
    down, up = await run_test(
        llm,
        frames_to_send=[
            TextFrame("passes through"),
            LLMContextFrame(context_with("What are your opening hours?")),
        ],
    )
    passed = [f for f in down if type(f) is TextFrame]
    assert [f.text for f in passed] == ["passes through"]
    frames = llm_frames(down)
    assert isinstance(frames[0], LLMFullResponseStartFrame)
    assert isinstance(frames[-1], LLMFullResponseEndFrame)
    tokens = [f.text for f in frames[1:-1]]
    assert tokens == ["We", " are", " open", " from", " nine", " to", " six."]
    assert llm.last_match is not None and llm.last_match.name == "hours"


async def test_greets_when_no_user_message_and_uses_the_latest_turn() -> None:
    llm = ScriptedResponder(parse_knowledge(SMALL))
    bye_then_refund = context_with("bye")
    bye_then_refund.add_message({"role": "assistant", "content": "Goodbye!"})
    bye_then_refund.add_message({"role": "user", "content": "wait, my money back?"})
    down, _ = await run_test(
        llm,
        frames_to_send=[LLMContextFrame(LLMContext()), LLMContextFrame(bye_then_refund)],
    )
    text = "".join(f.text for f in down if isinstance(f, LLMTextFrame))
    assert text == "Hello, how can I help?Refunds take five days."
    assert llm.reply_for(LLMContext()).name == "greeting"
    assert await llm.run_inference(context_with("bye")) == "Thank you for calling. Goodbye!"


async def test_goodbye_calls_the_end_call_hook_after_the_answer() -> None:
    events: list[Frame | str] = []

    async def end_call(reason: str) -> None:
        events.append(f"hook: {reason}")

    llm = ScriptedResponder(parse_knowledge(SMALL), on_end_call=end_call)
    await run_test(
        Pipeline([llm, Recorder(events)]),
        frames_to_send=[LLMContextFrame(context_with("ok that's all, bye"))],
    )
    order = [e if isinstance(e, str) else type(e).__name__ for e in events]
    end = order.index("LLMFullResponseEndFrame")
    assert order[end + 1] == "hook: scripted intent 'goodbye' ends the call"


async def test_no_hook_for_other_intents() -> None:
    calls: list[str] = []

    async def end_call(reason: str) -> None:
        calls.append(reason)

    llm = ScriptedResponder(parse_knowledge(SMALL), on_end_call=end_call)
    await run_test(llm, frames_to_send=[LLMContextFrame(context_with("refund please"))])
    assert calls == []


async def test_interruption_stops_the_stream_and_the_goodbye() -> None:
    long_goodbye = SMALL.replace(
        "Thank you for calling. Goodbye!", " ".join(f"word{i}" for i in range(40))
    )
    calls: list[str] = []

    async def end_call(reason: str) -> None:
        calls.append(reason)

    llm = ScriptedResponder(parse_knowledge(long_goodbye), on_end_call=end_call, token_delay_s=0.01)
    down, _ = await run_test(
        llm,
        frames_to_send=[
            LLMContextFrame(context_with("bye")),
            SleepFrame(sleep=0.1),
            InterruptionFrame(),
            SleepFrame(sleep=0.1),
        ],
    )
    frames = llm_frames(down)
    assert isinstance(frames[0], LLMFullResponseStartFrame)
    assert isinstance(frames[-1], InterruptionFrame)
    spoken = [f for f in frames if isinstance(f, LLMTextFrame)]
    assert 0 < len(spoken) < 40
    assert not any(isinstance(f, LLMFullResponseEndFrame) for f in frames)
    assert calls == []


async def test_settings_frame_for_another_service_is_forwarded_once() -> None:
    llm = ScriptedResponder(parse_knowledge(SMALL))
    other = ScriptedResponder(parse_knowledge(SMALL))
    frame = LLMUpdateSettingsFrame(delta=LLMSettings(temperature=0.5), service=other)
    down, _ = await run_test(llm, frames_to_send=[frame])
    assert [f for f in down if isinstance(f, LLMUpdateSettingsFrame)] == [frame]


async def test_reports_ttfb_like_a_real_llm() -> None:
    llm = ScriptedResponder(parse_knowledge(SMALL))
    down, _ = await run_test(
        llm,
        frames_to_send=[LLMContextFrame(context_with("open?"))],
        pipeline_params=PipelineParams(enable_metrics=True),
    )
    data = [d for f in down if isinstance(f, MetricsFrame) for d in f.data]
    assert any(isinstance(d, TTFBMetricsData) and d.model == "scripted" for d in data)


def test_after_an_unheard_answer_the_newest_question_wins(default_knowledge: Knowledge) -> None:
    # A barge-in cut the refund answer before any of it was heard, so two user messages
    # follow each other; the caller has moved on to the office address.
    llm = ScriptedResponder(default_knowledge)
    context = context_with(
        "I want to return my order. How do refunds work?", "Where's your office?"
    )
    assert llm.reply_for(context).name == "address"
    # A newest message that means nothing alone is read with the one before it.
    context = context_with("I want a refund", "please")
    assert llm.reply_for(context).name == "refund"
