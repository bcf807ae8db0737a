"""Signatures: the spec's published test vector, and a receiver using the spec's algorithm."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
import standardwebhooks.webhooks as sw
from standardwebhooks import Webhook, WebhookVerificationError

from bot.delivery.signing import SecretError, Signer, generate_secret, secret_key
from tests.delivery.conftest import SECRET, spec_signature, spec_verifies

# standard-webhooks spec/standard-webhooks.md, "Signature scheme" example
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = '{"test": 2432232314}'
VECTOR_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_spec_vector_is_what_we_sign():
    headers = Signer(SECRET).headers(VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    assert headers == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TS),
        "webhook-signature": VECTOR_SIG,
    }
    assert spec_signature(SECRET, VECTOR_ID, str(VECTOR_TS), VECTOR_BODY.encode()) == VECTOR_SIG


def test_the_library_verifies_the_vector(monkeypatch):
    class Then(datetime):  # the library checks the timestamp against now (+-5 min)
        @classmethod
        def now(cls, tz=None):
            return datetime.fromtimestamp(VECTOR_TS + 60, tz=tz)

    monkeypatch.setattr(sw, "datetime", Then)
    headers = Signer(SECRET).headers(VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    assert Webhook(SECRET).verify(VECTOR_BODY, headers) == {"test": 2432232314}
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify('{"test": 2432232315}', headers)


def test_a_receiver_verifies_a_fresh_signature_and_rejects_a_changed_body():
    body = '{"type":"call.ended","timestamp":"2026-01-01T00:00:00.000Z","data":{"ok":"हाँ"}}'
    headers = Signer(SECRET).headers("evt_abc", int(time.time()), body.encode())
    assert spec_verifies(SECRET, headers, body.encode())
    assert Webhook(SECRET).verify(body.encode(), headers)["data"] == {"ok": "हाँ"}
    assert not spec_verifies(SECRET, headers, body.replace("ok", "ko").encode())
    other = {**headers, "webhook-id": "evt_abd"}
    assert not spec_verifies(SECRET, other, body.encode())


def test_a_raw_secret_is_its_utf8_bytes():
    raw = "correct horse battery staple 42"
    headers = Signer(raw).headers("evt_1", int(time.time()), b"{}")
    assert Webhook(raw.encode()).verify(b"{}", headers) == {}
    assert secret_key(raw) == raw.encode()


def test_generated_secrets_round_trip():
    secret = generate_secret()
    assert secret.startswith("whsec_") and len(secret_key(secret)) == 32
    assert generate_secret() != secret
    headers = Signer(secret).headers("evt_2", int(time.time()), b"[]")
    assert spec_verifies(secret, headers, b"[]")
    with pytest.raises(ValueError):
        generate_secret(8)


@pytest.mark.parametrize("bad", ["", "whsec_", "whsec_not*base64!"])
def test_unusable_secrets_name_the_setting(bad):
    with pytest.raises(SecretError, match="WEBHOOK_SECRET"):
        Signer(bad)


def test_ids_with_a_dot_are_refused_and_the_key_never_prints():
    signer = Signer(SECRET)
    with pytest.raises(ValueError, match="'.'"):
        signer.sign("evt.1", VECTOR_TS, b"{}")
    assert "MfKQ" not in repr(signer)
