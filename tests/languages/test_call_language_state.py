"""The per-call language state: where the language comes from, and what English keeps."""

from __future__ import annotations

from bot.config import Settings
from bot.conversation.language import english_phrases, start_call_language
from bot.languages import DEFAULT_PHRASES, LanguagePolicy, PhraseBook

POLICY = LanguagePolicy.from_values("en-IN", "en-IN,hi-IN")


def test_the_sources_in_order_and_a_bad_value_skipped():
    s = Settings()
    by_param = start_call_language(s, POLICY, None, custom_parameters={"lang": "hi"})
    assert by_param.language == "hi-IN" and by_param.choice.source == "lang parameter"
    by_query = start_call_language(s, POLICY, None, query={"lang": "hi-IN"})
    assert by_query.choice.source == "stream query"
    by_context = start_call_language(
        s, POLICY, None, custom_parameters={"lang": "fr"}, context_language="hi-IN"
    )
    assert by_context.language == "hi-IN" and by_context.choice.source == "context"
    default = start_call_language(s, POLICY, None)
    assert default.language == "en-IN" and not default.auto
    auto = start_call_language(s, POLICY, None, custom_parameters={"lang": "auto"})
    assert auto.auto and auto.language == "en-IN"
    assert auto.prompt_language == "en-IN" and default.prompt_language is None


def test_english_keeps_todays_settings_unless_the_phrases_table_replaces_them():
    s = Settings(bot_greeting="Hi from Acme.", goodbye="Bye from Acme.")
    today = english_phrases(s, PhraseBook())
    assert today.greeting == "Hi from Acme." and today.goodbye == "Bye from Acme."
    assert today.holding == tuple(s.holding_phrases)
    replaced = english_phrases(s, PhraseBook({"en-IN": {"goodbye": "See you."}}))
    assert replaced.goodbye == "See you." and replaced.greeting == "Hi from Acme."


def test_a_switch_changes_the_phrases_and_numbers_follow_the_language():
    state = start_call_language(Settings(), POLICY, None, custom_parameters={"lang": "auto"})
    assert state.speakable("no digits here") == "no digits here"
    assert state.speakable("₹1,50,000") == "one lakh fifty thousand rupees"
    for text in ("what time do you open", "मेरा ऑर्डर कब आएगा", "मुझे पैसा वापस चाहिए"):
        state.user_turn(text)
    assert state.language == "hi-IN" and state.phrases == DEFAULT_PHRASES["hi-IN"]
    assert state.speakable("₹1,50,000") == "एक लाख पचास हज़ार रुपये"
    assert state.language_of_turn("मेरा ऑर्डर कब आएगा") == "hi-IN"
    assert state.language_of_turn("what time do you open") == "en-IN"
