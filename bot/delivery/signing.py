"""Standard Webhooks signatures for what the bot sends (the ``webhook-*`` headers).

The spec (https://www.standardwebhooks.com) signs ``"{webhook-id}.{webhook-timestamp}.{body}"``
with HMAC-SHA256 and sends ``webhook-signature: v1,<base64>``. The maintained
``standardwebhooks`` package computes it, so a receiver using that package (or any of the
spec's libraries) verifies our requests with the same secret string.

Secrets:

* ``whsec_<base64>`` (the spec's form; 24-64 random bytes; :func:`generate_secret` makes one):
  the key is the base64-decoded bytes, exactly as the spec's libraries take it.
* anything else is a *raw* secret: the key is its UTF-8 bytes. A receiver then verifies with
  ``Webhook(secret.encode())`` (bytes), because the libraries base64-decode a ``str``. The
  ``whsec_`` form is recommended; the raw form exists for receivers that only have a password.

A receiver (any framework; the body must be the raw bytes, not re-serialised JSON)::

    from standardwebhooks import Webhook, WebhookVerificationError

    def handle(raw_body: bytes, headers: dict[str, str]) -> int:
        try:
            event = Webhook(WEBHOOK_SECRET).verify(raw_body, headers)  # +-5 min tolerance
        except (WebhookVerificationError, ValueError):
            return 401
        if seen_before(headers["webhook-id"]):  # retries repeat the id: de-duplicate on it
            return 200
        store(event["type"], event["data"])
        return 200
"""

from __future__ import annotations

import base64
import binascii
import secrets
from datetime import UTC, datetime

from loguru import logger
from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24  # the spec: "24-64 random bytes"


class SecretError(ValueError):
    """The configured secret cannot be used; the message names the setting and the fix."""


def secret_key(secret: str, setting: str = "WEBHOOK_SECRET") -> bytes:
    """The HMAC key for ``secret`` (see the module docstring for the two accepted forms)."""
    if not secret:
        raise SecretError(f"{setting} is empty: set it to a whsec_<base64> secret")
    if not secret.startswith(SECRET_PREFIX):
        key = secret.encode()
    else:
        encoded = secret[len(SECRET_PREFIX) :]
        try:
            # validate=True: a typo must not silently become a different key
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise SecretError(
                f"{setting} starts with {SECRET_PREFIX} but the rest is not base64: "
                f"generate one with `python -c 'from bot.delivery import generate_secret; "
                f"print(generate_secret())'`"
            ) from None
        if not key:
            raise SecretError(f"{setting} is {SECRET_PREFIX} with no key after it")
    if len(key) < MIN_SECRET_BYTES:
        # Allowed (receivers may have chosen it), but the spec asks for at least 24 bytes.
        logger.warning(f"{setting} is {len(key)} bytes; the spec asks for {MIN_SECRET_BYTES}-64")
    return key


def generate_secret(num_bytes: int = 32) -> str:
    """A new ``whsec_`` secret of ``num_bytes`` random bytes (24-64 per the spec)."""
    if not MIN_SECRET_BYTES <= num_bytes <= 64:
        raise ValueError("a Standard Webhooks secret has 24 to 64 bytes")
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(num_bytes)).decode()


class Signer:
    """Signs request bodies with one secret; one instance per configured endpoint."""

    def __init__(self, secret: str, setting: str = "WEBHOOK_SECRET") -> None:
        # Webhook(bytes) uses the bytes as the key as they are, for both accepted forms.
        self._webhook = Webhook(secret_key(secret, setting))

    def __repr__(self) -> str:
        return "Signer(<secret>)"  # never print the key

    def sign(self, msg_id: str, timestamp: int, body: bytes | str) -> str:
        """``v1,<base64>`` for this id, unix-seconds timestamp and exact body bytes."""
        if "." in msg_id:
            raise ValueError("a webhook-id must not contain '.' (it separates the signed parts)")
        return self._webhook.sign(msg_id, datetime.fromtimestamp(timestamp, tz=UTC), body)

    def headers(self, msg_id: str, timestamp: int, body: bytes | str) -> dict[str, str]:
        """The three Standard Webhooks headers for one attempt."""
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(timestamp)),
            "webhook-signature": self.sign(msg_id, int(timestamp), body),
        }
