"""Per-call variables and ``{{name}}`` templating.

A call's variables come from Exotel (its ids and numbers), from its custom parameters (the
``start`` event's ``custom_parameters`` and the stream URL's query, which the dynamic-URL
endpoint fills from ``CustomField``), from the context webhook, and from the keypad collector
(``digits.<purpose>``). Templates read them as ``{{name}}`` or ``{{name|default}}``.

A missing variable without a default renders empty, never as ``{{name}}`` (which a TTS would
read aloud), and is logged once per call and name so a typo in a prompt shows up in the log
without flooding it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from loguru import logger

from bot.agent.digits import mask_digits
from bot.config import ConfigError

# The ids Exotel gives; neither a custom parameter nor the context webhook may change them.
CALL_IDS = ("call_sid", "stream_sid", "account_sid", "from", "to")
DIGITS_PREFIX = "digits."
# Query keys of the stream URL that are ours, not the caller's.
_NOT_CUSTOM = {"sample-rate", "sample_rate"}

_TEMPLATE = re.compile(r"\{\{\s*([A-Za-z_][\w.\-]*)\s*(?:\|([^}]*))?\}\}")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PAIR_KEY = re.compile(r"^[A-Za-z_][\w.\-]*$")
_PURPOSE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def split_custom_field(raw: str) -> dict[str, str] | None:
    """``k=v&k2=v2`` or ``k=v,k2=v2`` as variables; None when ``raw`` is not of that form."""
    text = raw.strip()
    if not text or "=" not in text:
        return None
    if "&" in text or "," not in text:
        pairs = parse_qsl(text, keep_blank_values=True)
        pieces = text.split("&")
    else:
        pieces = text.split(",")
        pairs = [tuple(p.split("=", 1)) for p in pieces if "=" in p]  # type: ignore[misc]
    if any("=" not in piece for piece in pieces if piece):
        return None  # a piece without "=": free text that happens to hold one
    out = {k.strip(): v.strip() for k, v in pairs}
    return out if all(_PAIR_KEY.match(k) for k in out) else None


class CallVariables:
    """The variables of one call; renders templates and remembers what it warned about."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values: dict[str, str] = dict(values or {})
        self._warned: set[str] = set()

    @classmethod
    def from_call(
        cls,
        *,
        call_sid: str,
        stream_sid: str = "",
        account_sid: str = "",
        from_number: str = "",
        to_number: str = "",
        custom_parameters: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> CallVariables:
        """The variables Exotel gives: ids, numbers, and every custom parameter.

        The stream URL's query comes first and ``start.custom_parameters`` on top (the same
        values when both arrive). A ``CustomField`` is split into variables when it is a list
        of pairs, else kept whole as ``custom_field``.
        """
        ids = dict(
            zip(CALL_IDS, (call_sid, stream_sid, account_sid, from_number, to_number), strict=True)
        )
        variables = cls(ids)
        custom: dict[str, str] = {}
        for source in (query or {}), (custom_parameters or {}):
            custom.update({str(k): _text(v) for k, v in source.items() if k not in _NOT_CUSTOM})
        for key, value in custom.items():
            if key.lower() == "customfield":
                pairs = split_custom_field(value)
                variables.merge(pairs if pairs is not None else {"custom_field": value}, key)
            else:
                variables.merge({key: value}, "custom parameter")
        return variables

    def merge(self, values: Mapping[str, Any], source: str = "context webhook") -> None:
        """Add ``values`` on top; the call's ids and ``digits.*`` are kept (logged)."""
        for key, value in values.items():
            name = str(key)
            if name in CALL_IDS or name.startswith(DIGITS_PREFIX):
                logger.warning(f"{source} tried to set the variable {name}; kept Exotel's value")
                continue
            self._values[name] = _text(value)

    def set_digits(self, purpose: str, digits: str) -> str:
        """Store keypad digits as ``digits.<purpose>``; returns the variable's name."""
        if not _PURPOSE.match(purpose):
            raise ValueError(f"digit purpose {purpose!r} must be a short lower-case word")
        name = DIGITS_PREFIX + purpose
        self._values[name] = digits
        return name

    def get(self, name: str) -> str | None:
        return self._values.get(name)

    def as_dict(self) -> dict[str, str]:
        """Every variable, keypad digits included: for templates only, never for logs."""
        return dict(self._values)

    def masked(self) -> dict[str, str]:
        """Every variable with keypad digits masked: for records, logs and payloads."""
        return {
            k: mask_digits(v) if k.startswith(DIGITS_PREFIX) else v for k, v in self._values.items()
        }

    def secrets(self) -> list[str]:
        """The keypad values, longest first, so a record can mask where they reappear."""
        found = {v for k, v in self._values.items() if k.startswith(DIGITS_PREFIX) and v}
        return sorted(found, key=len, reverse=True)

    def hide_secrets(self, text: str) -> str:
        """``text`` with every keypad value in it masked."""
        for secret in self.secrets():
            text = text.replace(secret, mask_digits(secret))
        return text

    def lookup(self, name: str, extra: Mapping[str, str] | None = None) -> str | None:
        if extra and name in extra:
            return extra[name]
        return self._values.get(name)

    def warn_missing(self, name: str) -> None:
        if name not in self._warned:
            self._warned.add(name)
            logger.warning(f"template variable {{{{{name}}}}} is not set for this call; left empty")


def render(
    template: str,
    variables: CallVariables,
    *,
    extra: Mapping[str, str] | None = None,
    escape: Callable[[str], str] | None = None,
) -> str:
    """``template`` with ``{{name}}`` / ``{{name|default}}`` replaced.

    ``extra`` names are looked up first (a tool's arguments); ``escape`` encodes each value
    (a URL quotes it). A missing name without a default becomes "" and is logged once.
    """

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = variables.lookup(name, extra)
        if value is None:
            if default is None:
                variables.warn_missing(name)
                return ""
            value = default.strip()
        return escape(value) if escape else value

    return _TEMPLATE.sub(substitute, template)


def render_json(tree: Any, variables: CallVariables, **kw: Any) -> Any:
    """A JSON tree with templates rendered inside its string values (keys stay as they are)."""
    if isinstance(tree, str):
        return render(tree, variables, **kw)
    if isinstance(tree, dict):
        return {k: render_json(v, variables, **kw) for k, v in tree.items()}
    if isinstance(tree, list):
        return [render_json(v, variables, **kw) for v in tree]
    return tree


def expand_env(
    value: str, *, tool: str, header: str, environ: Mapping[str, str] | None = None
) -> str:
    """``${NAME}`` replaced from the environment, once at start (a missing one is fatal)."""
    env = os.environ if environ is None else environ

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ConfigError(
                f'[[tools]] "{tool}": headers.{header} uses ${{{name}}}, which is not set in '
                f"the environment; export {name} or remove the header"
            )
        return env[name]

    return _ENV.sub(substitute, value)


def _text(value: Any) -> str:
    """A variable's value as text: JSON for true/false, lists and tables."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool | dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
