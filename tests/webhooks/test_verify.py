"""The receiver's check, `verify_webhook`, and the signing it mirrors."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from batchd.errors import ConfigError, WebhookVerificationError
from batchd.settings import WebhookSettings
from batchd.webhooks import verify_webhook
from batchd.webhooks.signing import Signer, parse_secret, signature
from tests.webhooks.support import OLD_SECRET, SECRET

BODY = json.dumps({"id": "default.X", "status": "succeeded"}, separators=(",", ":")).encode()


def signed_headers(secret: str, *, at: float | None = None, wid: str = "msg_X") -> dict[str, str]:
    ts = int(time.time() if at is None else at)
    return {
        "webhook-id": wid,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature(parse_secret(secret), wid, ts, BODY),
    }


def test_signature_matches_the_standardwebhooks_package() -> None:
    """batchd's signature of id.timestamp.body equals the reference implementation's."""
    ts = 1_700_000_000
    ours = signature(parse_secret(SECRET), "msg_X", ts, BODY)
    theirs = Webhook(SECRET).sign("msg_X", datetime.fromtimestamp(ts, UTC), BODY.decode())
    assert ours == theirs


def test_valid_webhook_returns_the_envelope() -> None:
    """A correctly signed, fresh delivery verifies and yields the parsed body."""
    assert verify_webhook(BODY, signed_headers(SECRET), SECRET) == json.loads(BODY)


def test_header_names_are_case_insensitive() -> None:
    """Headers as a framework presents them (any case) are accepted."""
    headers = {k.title(): v for k, v in signed_headers(SECRET).items()}
    verify_webhook(BODY, headers, SECRET)


def test_wrong_secret_is_refused() -> None:
    """A signature made with another secret does not verify."""
    with pytest.raises(WebhookVerificationError, match="no valid signature"):
        verify_webhook(BODY, signed_headers(OLD_SECRET), SECRET)


def test_tampered_body_is_refused() -> None:
    """Changing one byte of the body breaks the signature."""
    with pytest.raises(WebhookVerificationError, match="no valid signature"):
        verify_webhook(BODY.replace(b"succeeded", b"errored"), signed_headers(SECRET), SECRET)


def test_any_of_several_signatures_passes() -> None:
    """During rotation the header holds two signatures; either one verifying is enough."""
    headers = signed_headers(OLD_SECRET)
    headers["webhook-signature"] = "v1,bm90LWl0 v2,xyz " + headers["webhook-signature"]
    verify_webhook(BODY, headers, OLD_SECRET)


def test_any_of_several_secrets_passes() -> None:
    """A receiver rotating its own secret may pass both."""
    verify_webhook(BODY, signed_headers(OLD_SECRET), [SECRET, OLD_SECRET])


def test_stale_timestamp_is_refused() -> None:
    """A delivery signed outside the tolerance window is refused, stopping replays."""
    with pytest.raises(WebhookVerificationError, match="away from now"):
        verify_webhook(BODY, signed_headers(SECRET, at=time.time() - 301), SECRET)
    verify_webhook(BODY, signed_headers(SECRET, at=time.time() - 301), SECRET, tolerance=600)


def test_missing_headers_are_refused() -> None:
    """Without the three Standard Webhooks headers nothing verifies."""
    headers = signed_headers(SECRET)
    del headers["webhook-signature"]
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify_webhook(BODY, headers, SECRET)


def test_body_must_be_a_json_object() -> None:
    """A genuine signature over something that is not a JSON object still fails."""
    ts = int(time.time())
    headers = {
        "webhook-id": "msg_X",
        "webhook-timestamp": str(ts),
        "webhook-signature": signature(parse_secret(SECRET), "msg_X", ts, b"[1]"),
    }
    with pytest.raises(WebhookVerificationError, match="not a JSON object"):
        verify_webhook(b"[1]", headers, SECRET)


def test_secret_must_be_base64() -> None:
    """A secret that is not whsec_<base64> is a ValueError, in verify and in settings."""
    with pytest.raises(ValueError, match="base64"):
        parse_secret("whsec_not base64!")
    with pytest.raises(ConfigError, match=r"webhooks\.secret"):
        Signer(WebhookSettings(secret="whsec_%%%"))


def test_rotation_ends_at_previous_until() -> None:
    """The previous secret signs only while the clock is before previous_until."""
    now = [1000.0]
    settings = WebhookSettings(secret=SECRET, previous_secret=OLD_SECRET, previous_until=1500)
    signer = Signer(settings, clock=lambda: now[0])
    assert signer.keys_for("https://x/") == [parse_secret(SECRET), parse_secret(OLD_SECRET)]
    now[0] = 1500.0
    assert signer.keys_for("https://x/") == [parse_secret(SECRET)]
