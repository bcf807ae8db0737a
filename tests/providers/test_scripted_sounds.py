"""Hindi intents heard by sound, in any script (bot.providers.scripted_sounds)."""

from __future__ import annotations

import pytest

from bot.providers.scripted import (
    KnowledgeError,
    load_knowledge,
    load_language_knowledge,
    parse_knowledge,
)
from bot.providers.scripted_sounds import SoundKey, intent_by_sound, skeleton


@pytest.fixture(scope="module")
def hindi():
    return load_language_knowledge()["hi-IN"]


@pytest.mark.parametrize(
    ("spellings", "letters"),
    [
        (("रिफ़ंड", "रिफंड", "refund", "ریفنڈ"), "rpnd"),
        (("शिकायत", "shikayat", "شکایت"), "skt"),
        (("वापस", "wapas", "vapas", "واپس"), "vps"),
        (("कैंसल", "cancel"), "knsl"),
        (("डिलीवरी", "डिलिवरी", "delivery"), "dlvr"),
    ],
)
def test_one_word_in_any_script_has_one_skeleton(spellings, letters):
    assert [skeleton(word) for word in spellings] == [letters] * len(spellings)


def test_a_keyword_written_exactly_is_matched_by_its_words(hindi):
    match = hindi.match("मुझे रिफ़ंड चाहिए")
    assert match.name == "refund" and match.matched == ("रिफ़ंड",)


def test_urdu_script_is_matched_by_its_words(hindi):
    """Whisper base decodes a Hindi turn as Urdu: the knowledge lists the Urdu spellings."""
    assert hindi.match("مجھے ریفنڈ چاہیے").matched == ("ریفنڈ",)
    assert hindi.match("آپ کا پلان کتنے کا ہے").name == "pricing"
    assert hindi.match("بہت اچھا بائے").name == "goodbye"


def test_romanised_hindi_is_matched_by_its_words(hindi):
    assert hindi.match("mera order kab aayega").name == "order_status"
    assert hindi.match("aapka office kahan hai").name == "address"


@pytest.mark.parametrize(
    ("heard", "intent"),
    [
        ("مجھے رفینڈ چاہیے", "refund"),  # Urdu script, spelt unlike the listed ریفنڈ / رفنڈ
        ("مجھے شکائت کرنی ہے", "agent"),  # شکائت for the listed شکایت
        ("मुझे शिकायात करनी है", "agent"),  # misspelt Devanagari: an extra vowel sign
        ("मेरी डिलिवरि कब होगी", "order_status"),  # short i for long: not in the patterns
        ("इसे ट्रेक कैसे करूँ", "order_status"),  # ट्रेक for ट्रैक
    ],
)
def test_a_keyword_heard_in_another_script_or_spelling_is_matched_by_sound(hindi, heard, intent):
    match = hindi.match(heard)
    assert match.name == intent
    assert match.matched and all(p.startswith("~") for p in match.matched)


@pytest.mark.parametrize(
    "heard",
    [
        "मेरा भाई दिल्ली में पढ़ाई करता है।",
        "आज मौसम बहुत गरम है",
        "میرا بھائی دہلی میں پڑھائی کرتا ہے",  # the same, in Urdu script
        "I think it will rain tomorrow, so take an umbrella.",  # "think" is not "thank*"
        "Can you recommend a good movie for tonight?",
    ],
)
def test_off_topic_lines_match_no_intent(hindi, heard):
    assert hindi.match(heard).intent is None


def test_short_skeletons_are_not_matched_by_sound():
    assert SoundKey.of("पता") is None  # pt: in nearly any garbled sentence
    assert SoundKey.of("पार्सल") == SoundKey("prsl", 1)
    assert not SoundKey("prsl", 1).heard_at(["prcl"])  # one letter apart: only from 5 letters
    assert SoundKey("dlvr", 1).heard_at(["mr", "dlvr"]) == 1


def test_a_multi_word_keyword_is_heard_across_split_or_joined_words():
    key = SoundKey.of("कितने बजे")
    assert key is not None and key.words == 2
    assert key.heard_at(["ktn", "bj"]) == 0
    assert key.heard_at(["x", "ktnbj"]) == 1
    assert key.heard_at(["ktn", "mn", "bj"]) is None


def test_a_tie_between_two_intents_is_no_match():
    knowledge = parse_knowledge(
        """
match_by_sound = true
greeting = "नमस्ते"
fallback = "माफ़ कीजिए"
[[intent]]
name = "refund"
patterns = ["रिफ़ंड"]
answer = "रिफ़ंड"
[[intent]]
name = "agent"
patterns = ["शिकायत"]
answer = "एजेंट"
"""
    )
    assert intent_by_sound(knowledge.intents, "ریفنڈ") == (knowledge.intents[0], 1, ("रिफ़ंड",))
    assert knowledge.match("ریفنڈ شکایت").intent is None


def test_a_word_that_sounds_like_keywords_of_two_intents_gets_no_answer(hindi):
    # पारसल (for पार्सल, prsl) also starts like "price*" (prs): parcel or price? Neither.
    assert hindi.match("मेरा पारसल नहीं आया").intent is None


def test_only_a_knowledge_file_that_asks_matches_by_sound():
    english = load_knowledge()  # knowledge.toml: no match_by_sound
    assert not english.by_sound
    assert english.match("ریفنڈ").intent is None


def test_match_by_sound_must_be_true_or_false():
    with pytest.raises(KnowledgeError, match="'match_by_sound' must be true or false"):
        parse_knowledge(
            'match_by_sound = "yes"\ngreeting = "a"\nfallback = "b"\n'
            '[[intent]]\nname = "x"\npatterns = ["y"]\nanswer = "z"\n'
        )
