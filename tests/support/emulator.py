"""The Message Batches emulator as a real subprocess for tests, and the fixtures that start it.

`emulator_server` is one process per session; `emulator` hands it to a test freshly reset.
"""

from __future__ import annotations

import copy
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from batchd.emulator.config import workspace_id_for

T = TypeVar("T")
DEFAULT_KEYS = ("sk-ant-emulator-test-a", "sk-ant-emulator-test-b")
OPENAPI_PATH = Path(__file__).resolve().parent.parent / "data" / "anthropic-openapi.json"
_OPENAPI_URI = "urn:anthropic-openapi"
_LISTENING = "batchd emulator listening on "


class OpenAPISchemas:
    """Validators for the schemas of the stored OpenAPI document (JSON Schema 2020-12).

    The whole document is one resource of a referencing Registry, so every
    `$ref: #/components/schemas/...` inside it resolves.
    """

    def __init__(self, path: Path = OPENAPI_PATH) -> None:
        document = json.loads(path.read_text())
        self.names = frozenset(document["components"]["schemas"])
        resource = DRAFT202012.create_resource(document)
        self.registry: Registry[Any] = Registry().with_resource(_OPENAPI_URI, resource)
        self._validators: dict[str, Draft202012Validator] = {}

    def validator(self, name: str) -> Draft202012Validator:
        if name not in self.names:
            raise KeyError(f"no schema {name} in the OpenAPI document")
        if name not in self._validators:
            ref = {"$ref": f"{_OPENAPI_URI}#/components/schemas/{name}"}
            self._validators[name] = Draft202012Validator(ref, registry=self.registry)
        return self._validators[name]

    def schema(self, name: str) -> dict[str, Any]:
        """A copy of one schema, to adapt where the document falls short."""
        contents = self.registry.resolver().lookup(f"{_OPENAPI_URI}#/components/schemas/{name}")
        return copy.deepcopy(dict(contents.contents))

    def validate(self, name: str, instance: Any) -> None:
        """Raise jsonschema.ValidationError unless `instance` is a valid `name`."""
        self.validator(name).validate(instance)


def batch_requests(
    count: int, prefix: str = "req", *, model: str = "claude-sonnet-4-5", **params: Any
) -> list[dict[str, Any]]:
    """`count` valid batch requests with custom_ids `{prefix}-{i}`; params override defaults."""
    return [
        {
            "custom_id": f"{prefix}-{i}",
            "params": {
                "model": model,
                "max_tokens": 64,
                "messages": [{"role": "user", "content": f"Question number {i}?"}],
                **params,
            },
        }
        for i in range(count)
    ]


def wait_until(check: Callable[[], T | None], timeout: float = 10.0, every: float = 0.02) -> T:
    """Call `check` until it returns something truthy, and return that; fail at the deadline.

    For what the emulator does on real time (lags, windows): the event is the answer changing.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(every)


def result_lines(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSONL lines of a results download, parsed."""
    response.raise_for_status()
    return [json.loads(line) for line in response.content.splitlines()]


def validate_lines(
    schemas: OpenAPISchemas, lines: list[dict[str, Any]], beta: bool = False
) -> None:
    """Every results line (and its Message, if succeeded) is valid against the spec."""
    prefix = "Beta" if beta else ""
    for line in lines:
        schemas.validate(f"{prefix}MessageBatchIndividualResponse", line)
        if line["result"]["type"] == "succeeded":
            schemas.validate(f"{prefix}Message", line["result"]["message"])


class EmulatorProcess:
    """`batchd emulator` in a child process on a free port, steered by its admin endpoints."""

    def __init__(
        self,
        directory: Path | None = None,
        *,
        api_keys: Sequence[str] = DEFAULT_KEYS,
        args: Sequence[str] = (),
    ) -> None:
        self.directory = directory
        self.api_keys = tuple(api_keys)
        self.args = list(args)
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self._admin: httpx.Client | None = None

    @property
    def api_key(self) -> str:
        return self.api_keys[0]

    def start(self, timeout: float = 20.0) -> None:
        cmd = [sys.executable, "-m", "batchd", "emulator", "--port", "0"]
        for key in self.api_keys:
            cmd += ["--api-key", key]
        cmd += self.args
        stderr: Any = subprocess.DEVNULL
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            stderr = (self.directory / "emulator.log").open("ab")
        try:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr)
        finally:
            if stderr is not subprocess.DEVNULL:
                stderr.close()
        self.url = self._wait_for_url(timeout)
        self._admin = httpx.Client(base_url=self.url + "/_emulator", timeout=30.0)

    def _wait_for_url(self, timeout: float) -> str:
        # The first stdout line names the bound URL; with --port 0 no port can be taken twice.
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if selector.select(timeout=0.1):
                    line = self.proc.stdout.readline().decode()
                    if line.startswith(_LISTENING):
                        return line[len(_LISTENING) :].strip()
                    if not line:
                        break
                if self.proc.poll() is not None:
                    break
        code = self.proc.poll()
        self.kill()
        raise RuntimeError(f"the emulator did not start (exit code {code}); see its log")

    def admin(self, method: str, path: str, json: Any = None) -> Any:
        """Call an admin endpoint; returns its JSON, raises on an error status."""
        assert self._admin is not None, "emulator not started"
        response = self._admin.request(method, path, json=json)
        response.raise_for_status()
        return response.json()

    def set_profile(self, profile: dict[str, Any]) -> dict[str, Any]:
        """The startup fault profile with these keys changed (keys not given are reset)."""
        result: dict[str, Any] = self.admin("POST", "/profile", profile)
        return result

    def patch_profile(self, changes: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.admin("PATCH", "/profile", changes)
        return result

    def profile(self) -> dict[str, Any]:
        result: dict[str, Any] = self.admin("GET", "/profile")
        return result

    def audit(self) -> dict[str, dict[str, Any]]:
        """The audit of each workspace, keyed by its API key."""
        by_id = {w["workspace_id"]: w for w in self.admin("GET", "/audit")["workspaces"]}
        return {key: by_id[workspace_id_for(key)] for key in self.api_keys}

    def batches(self) -> dict[str, list[dict[str, Any]]]:
        """The batches of each workspace (id, requests, betas created with), keyed by API key."""
        by_id = {w["workspace_id"]: w for w in self.admin("GET", "/batches")["workspaces"]}
        return {key: by_id[workspace_id_for(key)]["batches"] for key in self.api_keys}

    def advance(self, seconds: float) -> None:
        """Jump the emulator clock forward."""
        self.admin("POST", "/advance", {"seconds": seconds})

    def set_clock_scale(self, scale: float) -> None:
        self.admin("POST", "/clock", {"scale": scale})

    def reset(self) -> None:
        """Forget all batches and audit records; startup profile and clock scale again."""
        self.admin("POST", "/reset")

    def _close_pipes(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def stop(self) -> None:
        """SIGTERM, as a supervisor stops it; SIGKILL if it lingers."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_pipes()

    def kill(self) -> None:
        """SIGKILL: what a crash looks like."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._close_pipes()

    def __enter__(self) -> EmulatorProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def emulator_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """One emulator for the session: two workspaces, requests done in 0.1 s, seeded faults."""
    server = EmulatorProcess(
        tmp_path_factory.mktemp("emulator"),
        args=["--processing-time", "0.1", "--cancel-time", "0.1", "--seed", "1"],
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def emulator(emulator_server: EmulatorProcess) -> EmulatorProcess:
    """The session's emulator with no batches, the startup profile and clock scale."""
    emulator_server.reset()
    return emulator_server
