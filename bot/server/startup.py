"""Every room's configuration, parsed and checked once at start.

``bot.config`` validates the flat settings; the tables a room owns (``[agent]``, ``[[tools]]``,
``[phrases.<lang>]``, ``[analysis]``, …) are parsed by that room's own parser here, so a bad key
stops ``serve`` (and ``doctor``) with the key's name before any call arrives.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from bot.agent.config import AgentConfig, parse_agent_config
from bot.config import ConfigError, Settings
from bot.delivery.analysis import AnalysisConfig
from bot.delivery.service import check_webhook_settings
from bot.languages import LanguagePolicy, PhraseBook
from bot.providers import ProviderChoice, choose_providers
from bot.providers.languages import check_provider_languages


@dataclass(frozen=True)
class RoomConfigs:
    """What each room needs from the configuration beyond the flat settings."""

    providers: ProviderChoice
    agent: AgentConfig
    languages: LanguagePolicy
    phrases: PhraseBook
    analysis: AnalysisConfig


def load_room_configs(settings: Settings) -> RoomConfigs:
    """Parse and check every room's tables; a problem raises ``ConfigError`` naming the key."""
    tables = settings.room_tables
    check_webhook_settings(settings)
    agent_table = tables.get("agent") or {}
    languages = LanguagePolicy.from_sources(
        os.environ, {"agent": agent_table, "bot": {"language": settings.bot_language}}
    )
    phrases = PhraseBook(tables.get("phrases"))
    phrases.check(languages.languages)
    try:
        analysis = AnalysisConfig.from_mapping(tables.get("analysis") or {})
    except ValueError as e:
        raise ConfigError(str(e)) from None
    providers = choose_providers(settings)
    check_provider_languages(
        settings,
        providers.stt.name,
        providers.tts.name,
        languages.languages,
        auto=len(languages.languages) > 1,
    )
    return RoomConfigs(
        providers=providers,
        agent=parse_agent_config(agent_table, tables.get("tools"), os.environ),
        languages=languages,
        phrases=phrases,
        analysis=analysis,
    )
