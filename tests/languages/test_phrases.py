"""Per-language phrases, their TOML overrides, and the prompt's language line."""

import tomllib

import pytest

from bot.languages.phrases import (
    DEFAULT_PHRASES,
    PHRASE_KEYS,
    LanguageError,
    PhraseBook,
    language_instruction,
)


def test_english_is_todays_texts():
    from bot.config import Settings

    defaults = Settings.model_fields
    en = DEFAULT_PHRASES["en-IN"]
    assert en.greeting == defaults["bot_greeting"].default
    assert list(en.holding) == defaults["holding_phrases"].default
    assert en.idle_prompt == defaults["idle_prompt"].default
    assert en.goodbye == defaults["goodbye"].default
    assert en.apology == defaults["apology"].default


def test_hindi_is_devanagari_and_complete():
    hi = DEFAULT_PHRASES["hi-IN"]
    assert len(hi.holding) == 4
    texts = [hi.greeting, *hi.holding, hi.idle_prompt, hi.apology, hi.goodbye, hi.transfer]
    texts.append(hi.collect_digits)
    for text in texts:
        assert not any("a" <= c.lower() <= "z" for c in text), text
        assert any("\u0900" <= c <= "\u097f" for c in text), text
    assert "सकती हूँ" in hi.greeting  # the agent is a woman


def test_toml_overrides_one_language():
    raw = tomllib.loads(
        '[phrases.hi-IN]\ngreeting = "नमस्कार!"\nholding = ["जी", "एक पल"]\n'
        '[phrases.en]\ngoodbye = "Bye!"\n'
    )["phrases"]
    book = PhraseBook(raw)
    assert book.for_language("hi-IN").greeting == "नमस्कार!"
    assert book.for_language("hi-IN").holding == ("जी", "एक पल")
    assert book.for_language("hi-IN").goodbye == DEFAULT_PHRASES["hi-IN"].goodbye
    assert book.for_language("en-IN").goodbye == "Bye!"
    assert DEFAULT_PHRASES["en-IN"].goodbye != "Bye!"  # the defaults are untouched


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"hi-IN": {"greting": "x"}}, r"\[phrases.hi-IN\] greting: unknown phrase"),
        ({"hi-IN": {"greeting": ""}}, r"\[phrases.hi-IN\] greeting: must be a non-empty text"),
        ({"hi-IN": {"holding": "x"}}, r"\[phrases.hi-IN\] holding: must be a list"),
        ({"hi-IN": {"holding": []}}, r"\[phrases.hi-IN\] holding: must be a list"),
        ({"fr": {"greeting": "x"}}, r"\[phrases.fr\]: unknown language"),
        ({"hi-IN": "x"}, r"\[phrases.hi-IN\]: must be a table"),
    ],
)
def test_bad_overrides_name_the_key(raw, message):
    with pytest.raises(LanguageError, match=message):
        PhraseBook(raw)


def test_a_language_without_builtin_texts_needs_all_of_them():
    book = PhraseBook({"ta-IN": {"greeting": "வணக்கம்"}})
    with pytest.raises(LanguageError, match=r"\[phrases.ta-IN\]: .*add holding, idle_prompt"):
        book.check(["en-IN", "ta-IN"])
    full = {key: "வணக்கம்" for key in PHRASE_KEYS} | {"holding": ["ஒரு நிமிடம்"]}
    assert PhraseBook({"ta-IN": full}).for_language("ta").holding == ("ஒரு நிமிடம்",)


def test_language_lines():
    assert "Indian English" in language_instruction("en-IN")
    hindi = language_instruction("hi-IN")
    assert "Reply in Hindi, written in Devanagari" in hindi
    assert "feminine" in hindi and "as digits" in hindi
    mix = language_instruction("hi", hinglish=True, agent="male")
    assert "Hindi words written in Devanagari" in mix and "masculine" in mix
    assert "feminine" not in language_instruction("ta-IN")
    assert "Tamil script" in language_instruction("ta-IN")
