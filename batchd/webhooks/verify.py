"""Checking a batchd webhook on the receiving side: signature, timestamp, then the envelope.

Receivers call `verify_webhook(body, headers, secret)` with the raw body bytes; during a secret
rotation they may pass both secrets.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from batchd.errors import WebhookVerificationError
from batchd.webhooks.signing import parse_secret, signature


def verify_webhook(
    body: bytes,
    headers: Mapping[str, str],
    secret: str | list[str],
    *,
    tolerance: float = 300,
    now: float | None = None,
) -> dict[str, Any]:
    """The parsed result envelope of a genuine webhook; WebhookVerificationError otherwise.

    `body` must be the raw request body, before any JSON parsing. Any `v1,` signature in the
    header made with any of the secrets passes; the timestamp must be within `tolerance`
    seconds of `now`, which stops an old delivery from being replayed. A secret that is not
    `whsec_<base64>` raises ValueError: that is the receiver's configuration, not the request.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    webhook_id = lowered.get("webhook-id")
    timestamp_text = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not webhook_id or not timestamp_text or not signatures:
        raise WebhookVerificationError(
            "missing webhook-id, webhook-timestamp or webhook-signature header"
        )
    try:
        timestamp = int(timestamp_text)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError(
            f"webhook-timestamp is more than {tolerance:g}s away from now"
        )

    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets:
        raise ValueError("at least one webhook secret is needed")
    expected = [
        base64.b64decode(signature(parse_secret(s), webhook_id, timestamp, body)[3:])
        for s in secrets
    ]
    matched = False
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        for want in expected:
            # Compare against every secret, without stopping early, so timing says nothing.
            matched |= hmac.compare_digest(want, given)
    if not matched:
        raise WebhookVerificationError("no valid signature")

    try:
        envelope = json.loads(body)
    except ValueError:
        raise WebhookVerificationError("the body is not JSON") from None
    if not isinstance(envelope, dict):
        raise WebhookVerificationError("the body is not a JSON object")
    return envelope
