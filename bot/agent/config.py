"""``[agent]`` (with ``[agent.departments]`` and ``[agent.digits]``) and ``[[tools]]``.

Read from the same TOML file as the other settings, checked at start: a bad key stops the
server with a message naming the key and the fix. ``AGENT_CONTEXT_URL`` and
``AGENT_CONTEXT_TIMEOUT_SECS`` in the environment win over the file, as for every setting.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bot.agent.digits import DigitSettings
from bot.agent.tools import HttpToolConfig, parse_tools
from bot.agent.transfer import DEFAULT_CONNECT_PLAYBACK, parse_departments
from bot.config import ConfigError

BUILTIN_TOOLS = ("end_call", "transfer_call", "collect_digits")
DEFAULT_TRANSFER_MESSAGE = "Please hold while I connect you to a colleague."
_AGENT_KEYS = {
    # read by bot.languages (LanguagePolicy)
    "language",
    "languages",
    "context_url",
    "context_timeout_secs",
    "builtin_tools",
    "transfer_message",
    "connect_playback",
    "departments",
    "digits",
}
_DIGIT_KEYS = {"first_digit_timeout_secs", "inter_digit_timeout_secs", "to_model"}


@dataclass(frozen=True)
class AgentConfig:
    """The agent's settings; the defaults make a bot that only ends calls, as before."""

    context_url: str | None = None
    context_timeout_secs: float = 1.5
    builtin_tools: tuple[str, ...] = ("end_call",)
    transfer_message: str = DEFAULT_TRANSFER_MESSAGE
    connect_playback: str = DEFAULT_CONNECT_PLAYBACK
    departments: dict[str, list[str]] = field(default_factory=dict)
    digits: DigitSettings = field(default_factory=DigitSettings)
    tools: tuple[HttpToolConfig, ...] = ()

    def enabled(self, builtin: str) -> bool:
        return builtin in self.builtin_tools


def parse_agent_config(
    raw: Mapping[str, Any] | None,
    tools: list[dict[str, Any]] | None = None,
    environ: Mapping[str, str] | None = None,
) -> AgentConfig:
    """``raw`` is the ``[agent]`` table, ``tools`` the ``[[tools]]`` list, both as TOML gives."""
    env = os.environ if environ is None else environ
    table = dict(raw or {})
    _refuse_unknown("[agent]", table, _AGENT_KEYS)
    url = env.get("AGENT_CONTEXT_URL") or table.get("context_url") or None
    if url is not None and (not isinstance(url, str) or urlparse(url).scheme not in _HTTP):
        raise ConfigError(
            f"AGENT_CONTEXT_URL / [agent] context_url: {url!r} is not an http(s):// URL"
        )
    timeout = _seconds(
        "AGENT_CONTEXT_TIMEOUT_SECS / [agent] context_timeout_secs",
        env.get("AGENT_CONTEXT_TIMEOUT_SECS", table.get("context_timeout_secs", 1.5)),
        maximum=10.0,
    )
    builtins = table.get("builtin_tools", ["end_call"])
    if not isinstance(builtins, list) or any(b not in BUILTIN_TOOLS for b in builtins):
        raise ConfigError(
            f"[agent] builtin_tools: {builtins!r}; give a list drawn from {list(BUILTIN_TOOLS)}"
        )
    departments = parse_departments(table.get("departments"))
    if "transfer_call" in builtins and not departments:
        raise ConfigError(
            '[agent] builtin_tools has "transfer_call" but [agent.departments] is empty; add '
            'default = ["+91…"] (the numbers the Connect applet dials)'
        )
    texts = {}
    for key, default in (
        ("transfer_message", DEFAULT_TRANSFER_MESSAGE),
        ("connect_playback", DEFAULT_CONNECT_PLAYBACK),
    ):
        value = table.get(key, default)
        if not isinstance(value, str):
            raise ConfigError(f"[agent] {key} must be a string")
        texts[key] = value.strip()
    if not texts["transfer_message"]:
        raise ConfigError("[agent] transfer_message is empty; the caller must hear something")
    parsed_tools = parse_tools(tools, environ=env)
    clash = {t.name for t in parsed_tools} & set(BUILTIN_TOOLS)
    if clash:
        raise ConfigError(f'[[tools]] "{clash.pop()}": name: that is a built-in tool\'s name')
    return AgentConfig(
        context_url=url,
        context_timeout_secs=timeout,
        builtin_tools=tuple(dict.fromkeys(builtins)),
        departments=departments,
        digits=_parse_digits(table.get("digits")),
        tools=tuple(parsed_tools),
        **texts,
    )


def load_agent_config(
    path: str | Path | None, environ: Mapping[str, str] | None = None
) -> AgentConfig:
    """The agent config from the TOML file (None: from the environment only)."""
    if path is None:
        return parse_agent_config(None, None, environ)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (--config or BOT_CONFIG)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    tools = data.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise ConfigError("tools must be written as [[tools]] tables, one per tool")
    return parse_agent_config(data.get("agent"), tools, environ)


_HTTP = ("http", "https")


def _parse_digits(raw: Any) -> DigitSettings:
    if raw is None:
        return DigitSettings()
    if not isinstance(raw, dict):
        raise ConfigError("[agent.digits] must be a table")
    _refuse_unknown("[agent.digits]", raw, _DIGIT_KEYS)
    to_model = raw.get("to_model", False)
    if not isinstance(to_model, bool):
        raise ConfigError("[agent.digits] to_model must be true or false (without quotes)")
    return DigitSettings(
        first_digit_timeout_secs=_seconds(
            "[agent.digits] first_digit_timeout_secs", raw.get("first_digit_timeout_secs", 8.0)
        ),
        inter_digit_timeout_secs=_seconds(
            "[agent.digits] inter_digit_timeout_secs", raw.get("inter_digit_timeout_secs", 3.0)
        ),
        to_model=to_model,
    )


def _seconds(key: str, value: Any, maximum: float = 60.0) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if isinstance(value, bool) or not 0 < seconds <= maximum:
        raise ConfigError(f"{key}: {value!r}; give seconds in (0, {maximum:g}]")
    return seconds


def _refuse_unknown(section: str, table: Mapping[str, Any], known: set[str]) -> None:
    for key in table:
        if key not in known:
            hint = difflib.get_close_matches(str(key), known, n=1)
            fix = f"; did you mean {hint[0]}?" if hint else f" (known: {', '.join(sorted(known))})"
            raise ConfigError(f"{section}: unknown key {key}{fix}")
