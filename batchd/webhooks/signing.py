"""Standard Webhooks signatures: secrets `whsec_<base64>`, `v1,<base64 HMAC-SHA256>` of id.ts.body.

The sender signs with the secret of the longest matching endpoint prefix (else the default one),
and during a rotation with the previous secret too; receivers check any of the signatures.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from batchd.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import SecretStr

    from batchd.settings import WebhookSettings

SECRET_PREFIX = "whsec_"


def parse_secret(secret: str) -> bytes:
    """The key bytes of a `whsec_<base64>` secret (the prefix is optional); ValueError if bad."""
    text = secret.strip()
    if text.startswith(SECRET_PREFIX):
        text = text[len(SECRET_PREFIX) :]
    try:
        # Unpadded base64 is common in generated secrets; restore the padding first.
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret must be whsec_ followed by base64") from None
    if not key:
        raise ValueError("a webhook secret must not be empty")
    return key


def signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature of `{id}.{timestamp}.{body}` (body as raw bytes)."""
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode(), hashlib.sha256)
    mac.update(body)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


@dataclass(frozen=True)
class _Keys:
    current: bytes
    previous: bytes | None
    previous_until: float | None


class Signer:
    """Picks the secrets for a callback URL and produces the signature header value."""

    def __init__(
        self, settings: WebhookSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._clock = clock
        self._default = _load_keys(
            "webhooks", settings.secret, settings.previous_secret, settings.previous_until
        )
        endpoints: list[tuple[str, _Keys]] = []
        for n, ep in enumerate(settings.endpoints):
            keys = _load_keys(
                f"webhooks.endpoints.{n}", ep.secret, ep.previous_secret, ep.previous_until
            )
            if keys is not None:
                endpoints.append((ep.url_prefix, keys))
        # Longest prefix first, so the most specific endpoint wins.
        endpoints.sort(key=lambda item: len(item[0]), reverse=True)
        self._endpoints = endpoints

    @property
    def has_default(self) -> bool:
        """False when URLs outside every configured endpoint will be sent unsigned."""
        return self._default is not None

    def keys_for(self, url: str) -> list[bytes]:
        """The keys that sign a delivery to `url` now: current first, then previous if live."""
        keys = next((k for prefix, k in self._endpoints if url.startswith(prefix)), self._default)
        if keys is None:
            return []
        out = [keys.current]
        if (
            keys.previous is not None
            and keys.previous_until is not None
            and self._clock() < keys.previous_until
        ):
            out.append(keys.previous)
        return out

    def sign(self, url: str, webhook_id: str, timestamp: int, body: bytes) -> str | None:
        """The `webhook-signature` header value, or None when no secret applies to `url`."""
        keys = self.keys_for(url)
        if not keys:
            return None
        return " ".join(signature(k, webhook_id, timestamp, body) for k in keys)


def _load_keys(
    where: str,
    secret: SecretStr | None,
    previous: SecretStr | None,
    previous_until: float | None,
) -> _Keys | None:
    if secret is None:
        return None
    return _Keys(
        current=_parse_setting(f"{where}.secret", secret),
        previous=_parse_setting(f"{where}.previous_secret", previous) if previous else None,
        previous_until=previous_until,
    )


def _parse_setting(where: str, value: SecretStr) -> bytes:
    try:
        return parse_secret(value.get_secret_value())
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}", [f"{where}: {exc}"]) from None
