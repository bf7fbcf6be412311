"""Betas and extra headers: one anthropic-beta spelling per set, on every call, checked early."""

from __future__ import annotations

import httpx
import pytest

from batchd.api import beta_header, normalize_betas
from batchd.api.headers import passed_on, request_headers

BETAS = ["message-batches-2024-09-24", "context-1m-2025-08-07"]
HEADER = "context-1m-2025-08-07,message-batches-2024-09-24"


def test_a_set_of_betas_has_one_spelling() -> None:
    """Order, repeats and surrounding spaces do not change the header: equal sets, equal keys."""
    assert beta_header(BETAS) == HEADER
    assert beta_header([*reversed(BETAS), BETAS[0], f" {BETAS[1]} "]) == HEADER
    assert normalize_betas(HEADER) == tuple(sorted(BETAS))
    assert beta_header([]) is None and beta_header(None) is None


@pytest.mark.parametrize("bad", ["", "a b", "a\r\nx-api-key: stolen", "ß-beta", ",", "a;b"])
def test_a_beta_that_cannot_travel_is_refused(bad: str) -> None:
    """Empty names, spaces, CRLF and non-ASCII are a ValueError before any request."""
    with pytest.raises(ValueError):
        normalize_betas([bad])


@pytest.mark.parametrize(
    "extra",
    [
        {"x-api-key": "other"},
        {"Authorization": "Bearer x"},
        {"content-type": "text/plain"},
        {"content-length": "3"},
        {"bad name": "v"},
        {"batchd-custom-id": "line\nbreak"},
        {"batchd-custom-id": "caf\u00e9"},
    ],
)
def test_extra_headers_cannot_replace_the_clients_own_or_break_the_wire(
    extra: dict[str, str],
) -> None:
    """Auth, framing and content-type belong to the client; bad names and values are refused."""
    with pytest.raises(ValueError):
        request_headers(None, extra)


def test_betas_and_an_anthropic_beta_extra_header_do_not_mix() -> None:
    """Giving betas both ways is ambiguous, so it is refused."""
    with pytest.raises(ValueError):
        request_headers(["a"], {"anthropic-beta": "b"})
    assert request_headers(None, {"Anthropic-Beta": "b"}) == {"anthropic-beta": "b"}


def test_passed_on_keeps_api_headers_and_drops_framing() -> None:
    """A proxy gets request-id, retry hints and anthropic-*; never length or encoding."""
    headers = httpx.Headers(
        {
            "Content-Type": "application/json",
            "Content-Length": "10",
            "Content-Encoding": "gzip",
            "Transfer-Encoding": "chunked",
            "request-id": "req_1",
            "retry-after": "3",
            "x-should-retry": "false",
            "anthropic-organization-id": "org",
            "anthropic-ratelimit-requests-limit": "5",
            "server": "cloudflare",
        }
    )
    assert passed_on(headers) == {
        "content-type": "application/json",
        "request-id": "req_1",
        "retry-after": "3",
        "x-should-retry": "false",
        "anthropic-organization-id": "org",
        "anthropic-ratelimit-requests-limit": "5",
    }
