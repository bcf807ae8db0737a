"""The per-call language state machine for auto, and language identification of a turn."""

import pytest

from bot.languages.policy import LanguageTracker, identify_language, requested_language

BOTH = ("en-IN", "hi-IN")


@pytest.mark.parametrize(
    ("text", "language", "hinglish"),
    [
        ("mera order kab aayega", "hi-IN", True),
        ("mujhe refund chahiye", "hi-IN", True),
        ("मेरा बकाया कितना है", "hi-IN", False),
        ("मेरा phone number है 9840950950", "hi-IN", True),
        ("my order has not arrived yet", "en-IN", False),
        ("what are your opening hours", "en-IN", False),
    ],
)
def test_decisive_turns(text, language, hinglish):
    turn = identify_language(text, BOTH)
    assert (turn.language, turn.decisive, turn.hinglish) == (language, True, hinglish)


@pytest.mark.parametrize("text", ["ok", "hello", "1234", "", "order refund", "kya?"])
def test_turns_that_say_little_decide_nothing(text):
    assert not identify_language(text, BOTH).decisive


def test_a_language_outside_the_allowed_set_is_not_picked():
    assert identify_language("मेरा बकाया कितना है", ("en-IN",)).language is None
    assert identify_language("mera order kab aayega", ("en-IN", "ta-IN")).language is None


def test_other_scripts_and_marathi():
    allowed = ("en-IN", "hi-IN", "ta-IN", "mr-IN")
    assert identify_language("என் ஆர்டர் எங்கே இருக்கிறது", allowed).language == "ta-IN"
    assert identify_language("मला माझे पैसे परत हवे आहेत", allowed).language == "mr-IN"
    assert identify_language("मुझे मेरे पैसे वापस चाहिए", allowed).language == "hi-IN"


def test_stt_detection_wins_only_with_confidence():
    text = "my order has not arrived yet"
    sure = identify_language(text, BOTH, stt_language="hi", stt_confidence=0.92)
    assert (sure.language, sure.source) == ("hi-IN", "stt")
    unsure = identify_language(text, BOTH, stt_language="hi", stt_confidence=0.4)
    assert unsure.language == "en-IN"
    foreign = identify_language(text, BOTH, stt_language="ur", stt_confidence=0.99)
    assert foreign.language == "en-IN"


@pytest.mark.parametrize(
    ("text", "asked"),
    [
        ("Hindi mein baat karo", "hi-IN"),
        ("hindi me bolo please", "hi-IN"),
        ("हिंदी में बात करो", "hi-IN"),
        ("हिन्दी में बोलिए", "hi-IN"),
        ("can we speak English", "en-IN"),
        ("English please", "en-IN"),
        ("इंग्लिश में बात कीजिए", "en-IN"),
        ("angrezi mein baat kijiye", "en-IN"),
        ("No, Hindi please", "hi-IN"),
        ("I don't speak Hindi, can we speak English", "en-IN"),
        ("Hindi nahi aati, English mein bolo", "en-IN"),
        ("my English is not good", None),
        ("I want to cancel my order", None),
        ("Tamil please", None),  # not allowed
    ],
)
def test_requests(text, asked):
    assert requested_language(text, BOTH) == asked


def _tracker(**kw):
    return LanguageTracker(language="en-IN", allowed=BOTH, auto=True, call_id="C1", **kw)


def test_first_decisive_utterance_decides():
    t = _tracker()
    d = t.user_turn("hello")
    assert (d.language, d.switched, d.reason) == ("en-IN", False, "undecided")
    d = t.user_turn("mera order kab aayega")
    assert (d.language, d.switched, d.previous, d.reason) == (
        "hi-IN",
        True,
        "en-IN",
        "first utterance",
    )
    assert d.hinglish


def test_first_utterance_in_the_starting_language_keeps_it():
    d = _tracker().user_turn("where is my order")
    assert (d.language, d.switched, d.reason) == ("en-IN", False, "first utterance")


def test_one_odd_turn_never_switches_two_in_a_row_do():
    t = _tracker()
    t.user_turn("मेरा बकाया कितना है")
    d = t.user_turn("what is my balance")
    assert (d.language, d.switched) == ("hi-IN", False)
    d = t.user_turn("मुझे रिफंड चाहिए")  # back in Hindi: the run is broken
    assert (d.language, d.switched) == ("hi-IN", False)
    d = t.user_turn("what is my balance")
    assert not d.switched
    d = t.user_turn("ok")  # says nothing: neither counts nor breaks the run
    assert not d.switched
    d = t.user_turn("and when is it due")
    assert (d.language, d.switched, d.reason) == ("en-IN", True, "two turns")
    assert not d.hinglish


def test_asking_switches_at_once():
    t = _tracker()
    t.user_turn("where is my order")
    d = t.user_turn("Hindi mein baat karo")
    assert (d.language, d.switched, d.reason) == ("hi-IN", True, "asked")
    d = t.user_turn("can we speak English")
    assert (d.language, d.switched, d.reason) == ("en-IN", True, "asked")


def test_asking_for_the_current_language_is_not_a_switch():
    t = _tracker()
    t.user_turn("where is my order")
    assert not t.user_turn("English please").switched


def test_fixed_language_never_switches_but_records():
    t = LanguageTracker(language="hi", allowed=BOTH, auto=False)
    decisions = [t.user_turn(x) for x in ("can we speak English", "what is my balance", "ok")]
    assert {(d.language, d.switched, d.reason) for d in decisions} == {("hi-IN", False, "fixed")}
    assert t.turn_languages() == ["en-IN", "en-IN", "hi-IN"]


def test_every_turn_is_recorded():
    t = _tracker()
    for text in ("hello", "मेरा बकाया कितना है", "ok", "thanks a lot, that is all"):
        t.user_turn(text)
    assert t.turn_languages() == ["en-IN", "hi-IN", "hi-IN", "en-IN"]
    assert [r.detected for r in t.turns] == [None, "hi-IN", None, "en-IN"]
    assert [r.reply_language for r in t.turns] == ["en-IN", "hi-IN", "hi-IN", "hi-IN"]
    assert [r.index for r in t.turns] == [0, 1, 2, 3]


def test_the_switch_is_logged(caplog_loguru):
    _tracker().user_turn("मेरा बकाया कितना है")
    assert any("C1" in m and "en-IN -> hi-IN" in m for m in caplog_loguru)
