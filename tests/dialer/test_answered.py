"""Who answered: the phrase table and the per-call detector."""

from __future__ import annotations

import pytest

from bot.dialer.answered import AnswerDetector, classify_answer, is_opt_out


@pytest.mark.parametrize(
    ("transcript", "kind"),
    [
        ("The number you are calling is switched off", "unreachable"),
        ("The number you have dialled is currently not reachable", "unreachable"),
        ("आप जिस नंबर पर कॉल कर रहे हैं वह अभी बंद है", "unreachable"),
        ("आप जिस नंबर पर कॉल कर रहे हैं वह पहुँच से बाहर है", "unreachable"),
        ("यह नंबर अभी पहुंच से बाहर है", "unreachable"),
        ("aap jis number par call kar rahe hain woh abhi band hai", "unreachable"),
        ("The number you are calling is busy, please call after some time", "busy"),
        ("आप जिस नंबर पर कॉल कर रहे हैं वह व्यस्त है", "busy"),
        ("Please record your message after the tone", "voicemail"),
        ("Sorry I can't take your call, leave a message", "voicemail"),
        ("[beep]", "voicemail"),
        ("बीप के बाद अपना संदेश रिकॉर्ड करें", "voicemail"),
        ("Welcome to Acme bank. Press 1 for English", "ivr"),
        ("हिंदी के लिए 2 दबाएं", "ivr"),
        ("Hello?", "human"),
        ("haan ji bolo", "human"),
        ("हेलो, कौन?", "human"),
        ("Haan, boliye", "human"),
        ("", "unknown"),
        ("mm", "unknown"),
    ],
)
def test_classify_answer(transcript, kind):
    assert classify_answer(transcript) == kind


@pytest.mark.parametrize(
    ("text", "opt_out"),
    [
        ("Please don't call me again", True),
        ("do not call this number", True),
        ("Stop calling me", True),
        ("मुझे दोबारा कॉल मत करना", True),
        ("bhaiya call mat karna", True),
        ("I don't know, call me tomorrow", False),
        ("haan bolo", False),
        ("call me later please", False),
    ],
)
def test_opt_out(text, opt_out):
    assert is_opt_out(text) is opt_out


def test_hello_greets_at_once():
    detector = AnswerDetector()
    decision = detector.on_transcript("hello?", 0.9)
    assert decision and decision.greet and not decision.end_call and decision.kind == "human"


def test_carrier_announcement_ends_the_call_within_8_s():
    detector = AnswerDetector()
    assert detector.on_speech_start(0.2) is None
    decision = detector.on_transcript("the number you are calling is switched off", 3.1)
    assert decision and decision.end_call and decision.final and decision.outcome == "unreachable"
    assert detector.tick(9.0) is None  # settled: no greeting afterwards


def test_silence_greets_then_a_late_announcement_still_ends_the_call():
    detector = AnswerDetector(silence_secs=1.5)
    assert detector.tick(1.0) is None
    greet = detector.tick(1.6)
    assert greet and greet.greet and not greet.final
    end = detector.on_transcript("please record your message after the tone", 4.0)
    assert end and end.end_call and end.outcome == "voicemail"


def test_beep_means_voicemail():
    decision = AnswerDetector().on_beep(2.0)
    assert decision and decision.outcome == "voicemail"


def test_undecided_speech_settles_at_8_s_and_greets_once():
    detector = AnswerDetector(silence_secs=1.0)
    detector.on_speech_start(0.1)
    assert detector.tick(5.0) is None  # someone talks, nothing recognised: keep holding
    detector.on_transcript("mm hmm", 6.0)
    final = detector.tick(8.0)
    assert final and final.final and final.greet and final.kind == "unknown"
    assert final.outcome == "completed"
    assert detector.tick(9.0) is None
