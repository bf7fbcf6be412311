"""Rate limits by usage tier, with explicit overrides, and results_url a client must follow."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import anthropic
import httpx
import orjson

from batchd.emulator.command import config_from_args
from tests.emulator.test_command import parse
from tests.support.emulator import EmulatorProcess, OpenAPISchemas, batch_requests

BATCHES = "/v1/messages/batches"


def test_tier_one_allows_fifty_requests_a_minute(
    http: httpx.Client, emu: EmulatorProcess, schemas: OpenAPISchemas
) -> None:
    """At tier 1 the 51st batch call in a minute is 429 rate_limit_error with retry-after."""
    emu.set_profile({"tier": 1})
    answers = [http.get(BATCHES) for _ in range(51)]
    assert [a.status_code for a in answers] == [200] * 50 + [429]
    refused = answers[-1]
    schemas.validate("ErrorResponse", refused.json())
    assert "50 requests per minute" in refused.json()["error"]["message"]
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["anthropic-ratelimit-requests-limit"] == "50"
    assert refused.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert answers[0].headers["anthropic-ratelimit-requests-remaining"] == "49"


def test_rate_limits_are_per_workspace(http: httpx.Client, emu: EmulatorProcess) -> None:
    """Another workspace keeps its own requests per minute."""
    emu.set_profile({"requests_per_minute": 2})
    assert [http.get(BATCHES).status_code for _ in range(3)] == [200, 200, 429]
    other = {"x-api-key": emu.api_keys[1], "anthropic-version": "2023-06-01"}
    assert httpx.get(emu.url + BATCHES, headers=other).status_code == 200


def test_explicit_rpm_overrides_the_tier(http: httpx.Client, emu: EmulatorProcess) -> None:
    """requests_per_minute given with a tier replaces the tier's number."""
    emu.set_profile({"tier": 4, "requests_per_minute": 3})
    response = http.get(BATCHES)
    assert response.headers["anthropic-ratelimit-requests-limit"] == "3"


def test_tier_caps_the_processing_queue(http: httpx.Client, emu: EmulatorProcess) -> None:
    """At tier 1, 100,000 batch requests may wait; a create past that is 429, until they end."""
    emu.set_profile({"tier": 1})
    body = orjson.dumps({"requests": batch_requests(60_000, "a")})
    headers = {"content-type": "application/json"}
    assert http.post(BATCHES, content=body, headers=headers).status_code == 200
    more = orjson.dumps({"requests": batch_requests(40_001, "b")})
    refused = http.post(BATCHES, content=more, headers=headers)
    assert refused.status_code == 429
    assert "100,000 batch requests in the processing queue" in refused.json()["error"]["message"]
    assert "retry-after" in refused.headers
    emu.advance(1)
    assert http.post(BATCHES, content=more, headers=headers).status_code == 200


def test_no_tier_means_no_limit(http: httpx.Client) -> None:
    """By default nothing is limited; the headers report a nominal limit."""
    answers = [http.get(BATCHES) for _ in range(60)]
    assert {a.status_code for a in answers} == {200}


def test_realtime_tier_limits_are_apart_from_batches(
    sdk: anthropic.Anthropic, http: httpx.Client, emu: EmulatorProcess
) -> None:
    """At tier 1, with the batch calls used up, a real-time call still has its own limits."""
    emu.set_profile({"tier": 1})
    assert [http.get(BATCHES).status_code for _ in range(51)][-1] == 429
    raw = sdk.messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["anthropic-ratelimit-requests-limit"] == "50"
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "49"
    assert raw.headers["anthropic-ratelimit-input-tokens-limit"] == "30000"
    assert raw.headers["anthropic-ratelimit-output-tokens-limit"] == "8000"


def test_tier_flag_and_profile_key(tmp_path: Path) -> None:
    """--tier sets the profile's tier; a profile file may name it too."""
    assert config_from_args(parse("--tier", "3")).profile.tier == 3
    profile = tmp_path / "p.toml"
    profile.write_text("tier = 2\nrequests_per_minute = 10\n")
    loaded = config_from_args(parse("--profile", str(profile))).profile
    assert (loaded.tier, loaded.requests_per_minute) == (2, 10)


def test_results_url_is_null_until_the_end(http: httpx.Client, emu: EmulatorProcess) -> None:
    """results_url is null while the batch runs and names the documented path once ended."""
    batch = http.post(BATCHES, json={"requests": batch_requests(1)}).json()
    assert batch["results_url"] is None
    emu.advance(1)
    ended = http.get(f"{BATCHES}/{batch['id']}").json()
    assert urlsplit(ended["results_url"]).path == f"{BATCHES}/{batch['id']}/results"


def test_opaque_results_url_is_followed_by_the_sdk(
    sdk: anthropic.Anthropic, http: httpx.Client, emu: EmulatorProcess
) -> None:
    """With opaque_results_url the SDK downloads from results_url, and the audit shows it."""
    emu.set_profile({"opaque_results_url": True})
    batch = sdk.messages.batches.create(requests=batch_requests(3))  # type: ignore[arg-type]
    emu.advance(1)
    url = sdk.messages.batches.retrieve(batch.id).results_url
    assert url is not None and "/results" not in url and batch.id not in url
    assert len(list(sdk.messages.batches.results(batch.id))) == 3
    downloads = emu.audit()[emu.api_key]["results_downloads"]
    assert downloads == {"/v1/batch-results/{token}": 1}
    assert http.get(f"{BATCHES}/{batch.id}/results").status_code == 200
    downloads = emu.audit()[emu.api_key]["results_downloads"]
    assert downloads["/v1/messages/batches/{batch_id}/results"] == 1


def test_opaque_path_needs_the_workspace_key(emu: EmulatorProcess, http: httpx.Client) -> None:
    """The opaque download path is the workspace's own: another key gets 404."""
    emu.set_profile({"opaque_results_url": True})
    batch = http.post(BATCHES, json={"requests": batch_requests(1)}).json()
    emu.advance(1)
    url = http.get(f"{BATCHES}/{batch['id']}").json()["results_url"]
    assert http.get(url).status_code == 200
    other = {"x-api-key": emu.api_keys[1], "anthropic-version": "2023-06-01"}
    assert httpx.get(url, headers=other).status_code == 404
