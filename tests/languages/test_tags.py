"""Language tags, the configured policy and the per-call choice."""

import pytest

from bot.config import ConfigError
from bot.languages.tags import LanguageError, LanguagePolicy, normalise_language


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ("en", "en-IN"),
        ("hi", "hi-IN"),
        ("en-IN", "en-IN"),
        ("HI_in", "hi-IN"),
        (" ta-IN ", "ta-IN"),
        ("te", "te-IN"),
        ("bn-IN", "bn-IN"),
        ("mr", "mr-IN"),
        ("kn-IN", "kn-IN"),
        ("AUTO", "auto"),
    ],
)
def test_normalise(value, tag):
    assert normalise_language(value) == tag


@pytest.mark.parametrize("value", ["fr", "en-US", "", None, 3, "hindi"])
def test_unknown_languages_name_the_key(value):
    with pytest.raises(LanguageError, match=r"^\[agent\] language: ") as e:
        normalise_language(value, key="[agent] language")
    assert isinstance(e.value, ConfigError)


def test_auto_refused_where_a_language_is_needed():
    with pytest.raises(LanguageError, match="'auto' is not allowed"):
        normalise_language("auto", key="x", allow_auto=False)


def test_defaults():
    policy = LanguagePolicy.from_sources(env={}, toml={})
    assert (policy.language, policy.languages) == ("en-IN", ("en-IN",))


def test_env_wins_and_the_old_names_still_work():
    assert LanguagePolicy.from_sources(env={"BOT_LANGUAGE": "en"}).language == "en-IN"
    toml = {"bot": {"language": "hi"}}
    assert LanguagePolicy.from_sources(env={}, toml=toml).language == "hi-IN"
    toml = {"agent": {"language": "hi-IN", "languages": ["hi", "en"]}, "bot": {"language": "en"}}
    policy = LanguagePolicy.from_sources(env={}, toml=toml)
    assert (policy.language, policy.languages) == ("hi-IN", ("hi-IN", "en-IN"))
    env = {"AGENT_LANGUAGE": "en-IN", "BOT_LANGUAGE": "hi", "AGENT_LANGUAGES": "en-IN, hi-IN,en"}
    policy = LanguagePolicy.from_sources(env=env, toml=toml)
    assert (policy.language, policy.languages) == ("en-IN", ("en-IN", "hi-IN"))


def test_bad_values_name_their_setting():
    with pytest.raises(LanguageError, match=r"^BOT_LANGUAGE: unknown language 'xx'"):
        LanguagePolicy.from_sources(env={"BOT_LANGUAGE": "xx"})
    with pytest.raises(LanguageError, match=r"AGENT_LANGUAGES \(\[agent\] languages\)"):
        LanguagePolicy.from_sources(env={"AGENT_LANGUAGES": "en,klingon"})
    with pytest.raises(LanguageError, match="add it to the list"):
        LanguagePolicy.from_sources(env={"AGENT_LANGUAGE": "hi", "AGENT_LANGUAGES": "en"})
    with pytest.raises(LanguageError, match="set AGENT_LANGUAGES"):
        LanguagePolicy.from_sources(env={"AGENT_LANGUAGE": "auto"})


def test_auto_starts_in_the_first_allowed_language():
    policy = LanguagePolicy.from_values("auto", "hi-IN,en-IN")
    call = policy.choose()
    assert (call.language, call.auto, call.source) == ("hi-IN", True, "config")


def test_from_settings_reads_todays_field():
    class Old:
        bot_language = "en"

    class New:
        bot_language = "en"
        agent_language = "hi"
        agent_languages = "hi,en"

    assert LanguagePolicy.from_settings(Old()).language == "en-IN"
    assert LanguagePolicy.from_settings(New()).languages == ("hi-IN", "en-IN")


POLICY = LanguagePolicy.from_values("en-IN", "en-IN,hi-IN")


def test_choice_order():
    assert POLICY.choose().language == "en-IN"
    assert POLICY.choose(context_language="hi").source == "context"
    call = POLICY.choose(query={"lang": "hi-IN"}, context_language="en")
    assert (call.language, call.source) == ("hi-IN", "stream query")
    call = POLICY.choose(custom_parameters={"lang": "auto"}, query={"lang": "hi"})
    assert (call.language, call.auto, call.source) == ("en-IN", True, "lang parameter")


def test_bad_or_disallowed_choices_fall_back_with_a_log(caplog_loguru):
    call = POLICY.choose(custom_parameters={"lang": "ta"}, query={"lang": "nonsense"}, call_id="C1")
    assert (call.language, call.source) == ("en-IN", "config")
    assert any("does not allow" in m and "C1" in m for m in caplog_loguru)
    assert any("unknown language 'nonsense'" in m for m in caplog_loguru)


def test_auto_with_one_language_is_that_language():
    call = LanguagePolicy().choose(custom_parameters={"lang": "auto"})
    assert (call.language, call.auto) == ("en-IN", False)
