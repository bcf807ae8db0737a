"""Secrets redaction: every configured secret, in every form it travels in, kept out of
records and logs.

Why here: the call record and the log lines both carry text from the network and from
providers' error messages, which may echo a key back; one Redactor serves both.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pydantic import SecretStr

if TYPE_CHECKING:
    from bot.config import Settings

# Shorter "secrets" (e.g. a 3-letter password) would redact ordinary words everywhere.
MIN_SECRET_CHARS = 4
REDACTED = "[redacted]"
MASK = "\u2022"  # one per keypad digit, as bot.agent masks them


def configured_secrets(settings: Settings) -> list[str]:
    """Every secret value in ``settings``, plus the forms EXOTEL_BASIC_AUTH travels in.

    The Basic-auth credential appears as ``user:password``, as its base64 (the header), and
    URL-quoted in the stream URL, so each form is listed; so is the password alone.
    """
    found: set[str] = set()
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if not isinstance(value, SecretStr):
            continue
        secret = value.get_secret_value()
        found.add(secret)
        if name == "exotel_basic_auth":
            password = secret.partition(":")[2]
            found |= {
                password,
                quote(password, safe=""),
                base64.b64encode(secret.encode()).decode(),
            }
    return sorted((s for s in found if len(s) >= MIN_SECRET_CHARS), key=len, reverse=True)


class Redactor:
    """Replaces known secret values in text, trees of JSON values, and loguru records.

    Longest secrets first, so a secret that contains another is replaced whole.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len)[::-1]

    def text(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def tree(self, value: Any) -> Any:
        """A copy of a JSON-like value with every string (keys included) redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(k)): self.tree(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.tree(v) for v in value]
        return value

    def patch_log_record(self, record: dict[str, Any]) -> None:
        """A loguru patcher: redacts the message before any sink formats it."""
        if self.secrets:
            record["message"] = self.text(record["message"])


def mask_values(value: Any, values: Iterable[str]) -> Any:
    """A copy of a JSON-like value with each of ``values`` (a call's keypad entries) masked,
    one MASK per character, wherever it appears in a string."""
    found = sorted({v for v in values if v}, key=len, reverse=True)
    if not found:
        return value
    if isinstance(value, str):
        for item in found:
            value = value.replace(item, MASK * len(item))
        return value
    if isinstance(value, Mapping):
        return {k: mask_values(v, found) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_values(v, found) for v in value]
    return value
