"""How the multilingual Whisper base is asked to hear a Hindi or ``auto`` call (no models:
a recording stand-in for faster-whisper's ``WhisperModel``)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("faster_whisper")

from bot.providers.offline_hindi import (  # noqa: E402
    DETECT_MIN_SECS,
    decoding_language,
    hear,
    restricted_language,
)

# Whisper base's probabilities on our fixtures (bench/offline_hindi.py): espeak-ng Hindi with
# English above Hindi, robotic English with most of the rest on Thai.
HINDI_UNDER_ENGLISH = [("th", 0.265), ("en", 0.234), ("hi", 0.074), ("te", 0.042)]
ROBOTIC_ENGLISH = [("th", 0.53), ("en", 0.38), ("km", 0.01), ("hi", 0.001)]


class Whisper:
    """Records what it was asked; answers with fixed language probabilities and text."""

    def __init__(self, probs, text="کتنے کا ہے", no_speech=0.1):
        self.probs, self.text, self.no_speech = probs, text, no_speech
        self.detected = 0
        self.decoded: list[str | None] = []

    def detect_language(self, samples):
        self.detected += 1
        return self.probs[0][0], self.probs[0][1], self.probs

    def transcribe(self, samples, language=None, **options):
        self.decoded.append(language)
        assert options["temperature"] == 0.0 and options["beam_size"] == 1
        segment = SimpleNamespace(text=f" {self.text} ", no_speech_prob=self.no_speech)
        return iter([segment]), None


def speech(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * 16000), np.float32)


def test_hindi_under_english_is_still_hindi_and_robotic_english_still_english():
    language, p = restricted_language(HINDI_UNDER_ENGLISH, ("en", "hi"))
    assert language == "hi" and p >= 0.7  # the plain ratio said English (0.76)
    language, p = restricted_language(ROBOTIC_ENGLISH, ("en", "hi"))
    assert language == "en" and p > 0.9


def test_without_english_the_guess_is_the_plain_ratio():
    probs = [("id", 0.40), ("hi", 0.30), ("ta", 0.10)]
    assert restricted_language(probs, ("hi", "ta")) == ("hi", pytest.approx(0.75))
    assert restricted_language(probs, ("bn",)) == (None, 0.0)


def test_hindi_is_decoded_as_urdu_and_english_as_english():
    assert decoding_language("hi") == "ur"
    assert decoding_language("en") == "en"
    assert decoding_language(None) is None


def test_a_hindi_call_decodes_without_detecting():
    model = Whisper(HINDI_UNDER_ENGLISH)
    heard = hear(model, speech(4.0), language="hi")
    assert (model.detected, model.decoded) == (0, ["ur"])
    assert heard.text == "کتنے کا ہے" and heard.language is None and heard.probability is None


def test_an_auto_call_reports_the_language_of_a_long_utterance_and_decodes_in_it():
    model = Whisper(HINDI_UNDER_ENGLISH)
    heard = hear(model, speech(DETECT_MIN_SECS + 0.5), language=None)
    assert model.decoded == ["ur"]
    assert heard.language == "hi" and heard.probability >= 0.7 and heard.seconds == 3.5
    english = Whisper(ROBOTIC_ENGLISH, text="What time do you open?")
    assert hear(english, speech(4.0), language=None).language == "en"
    assert english.decoded == ["en"]


def test_a_short_utterance_is_not_reported_and_keeps_the_calls_language():
    model = Whisper(ROBOTIC_ENGLISH)
    heard = hear(model, speech(1.5), language=None, short_language="hi")
    assert (model.detected, model.decoded) == (0, ["ur"])
    assert heard.language is None
    undecided = Whisper(HINDI_UNDER_ENGLISH)
    assert hear(undecided, speech(1.5), language=None).language is None  # guessed, unreported
    assert (undecided.detected, undecided.decoded) == (1, ["ur"])


def test_segments_the_model_thinks_are_silence_are_dropped():
    model = Whisper(HINDI_UNDER_ENGLISH, no_speech=0.9)
    assert hear(model, speech(4.0), language="hi", no_speech_prob=0.4).text == ""
