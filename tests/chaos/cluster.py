"""The system under fire: one Redis, one emulator, batchd replicas, proxies and a webhook receiver.

Replicas reach Redis and the API only through the proxies, so the nemesis can cut and slow those
roads; producers and the checker talk to Redis directly, as services next to it would.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

from batchd import Settings
from tests.chaos.proxy import ProxyProcess
from tests.support.daemon import DaemonProcess, daemon_env
from tests.support.emulator import EmulatorProcess
from tests.support.redis import RedisServer
from tests.webhooks.support import SECRET, Receiver

API_KEY = "sk-ant-emulator-chaos-0123456789"
#: The account's key and the webhook secret: nothing of either may leak anywhere.
SECRETS = (API_KEY, SECRET)


def replica_settings(lease: float, max_requests: int) -> dict[str, str]:
    """Environment of every replica: quick timings, short leases, loopback webhooks allowed."""
    return {
        "BATCHD_BATCH__MAX_REQUESTS": str(max_requests),
        "BATCHD_BATCH__MAX_WAIT": "0.5",
        "BATCHD_RUN__LEASE": str(lease),
        "BATCHD_RUN__STALE_AFTER": "3",
        # Longer than a create the emulator finishes after its connection broke can take here.
        "BATCHD_RUN__CREATE_SETTLE": "3",
        "BATCHD_RUN__WORKERS": "2",
        "BATCHD_RETRY__MAX_ATTEMPTS": "8",
        "BATCHD_API__CONNECT_TIMEOUT": "3",
        "BATCHD_API__READ_TIMEOUT": "15",
        "BATCHD_API__MAX_RETRIES": "4",
        "BATCHD_API__RETRY_AFTER_MAX": "2",
        "BATCHD_WEBHOOKS__SECRET": SECRET,
        "BATCHD_WEBHOOKS__ALLOW_NETWORKS": '["127.0.0.1/32"]',
        "BATCHD_WEBHOOKS__SCHEDULE": "[0, 0.2, 0.5, 1, 2, 3, 5, 5, 5, 5, 5, 5]",
        "BATCHD_WEBHOOKS__JITTER": "0",
        "BATCHD_WEBHOOKS__TIMEOUT": "3",
        # The operations endpoint would make every replica fight for one port.
        "BATCHD_HTTP__ENABLED": "false",
        # Deadlines planned from the emulator's quick batches: a batch is taken to need 8 s
        # until five are seen; one still running 4 s before its earliest deadline is canceled.
        "BATCHD_DEADLINES__DEFAULT_DURATION": "8",
        "BATCHD_DEADLINES__MARGIN": "2",
        "BATCHD_DEADLINES__REALTIME_RESERVE": "4",
        "BATCHD_REALTIME__REQUESTS_PER_MINUTE": "0",
        "BATCHD_REALTIME__TIMEOUT": "15",
    }


class Cluster:
    """Starts and stops every process of the run; the nemesis reaches them through it."""

    def __init__(
        self,
        directory: Path,
        *,
        seed: int,
        replicas: int,
        lease: float,
        max_requests: int,
        processing_time: str = "0.3:1.5",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.directory = directory
        self.seed = seed
        self.size = replicas
        self.lease = lease
        self.max_requests = max_requests
        self.extra_env = extra_env or {}
        self.redis = RedisServer(directory / "redis", appendfsync="always")
        self.emulator = EmulatorProcess(
            directory / "emulator",
            api_keys=(API_KEY,),
            args=["--processing-time", processing_time, "--cancel-time", "0.1",
                  "--seed", str(seed), "--realtime-latency", "0.05:0.4",
                  "--realtime-lost-response", "0.02"],
        )  # fmt: skip
        self.receiver = Receiver()
        self.redis_proxy: ProxyProcess | None = None
        self.api_proxy: ProxyProcess | None = None
        self.replicas: list[DaemonProcess] = []
        self.retired: list[DaemonProcess] = []
        self.paused: set[int] = set()
        self._lock = threading.RLock()
        self._spawned = 0

    # -- life -----------------------------------------------------------------------------
    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.redis.start()
        self.emulator.start()
        self.receiver.start()
        self.redis_proxy = ProxyProcess(self.redis.port, "redis")
        self.redis_proxy.start()
        api_port = int(self.emulator.url.rsplit(":", 1)[1])
        self.api_proxy = ProxyProcess(api_port, "api")
        self.api_proxy.start()
        for _ in range(self.size):
            self.replicas.append(self._spawn())

    def close(self) -> None:
        with self._lock:
            for d in self.replicas:
                self._resume(d)
                d.kill()
            for d in self.retired:
                d.kill()
        for proxy in (self.redis_proxy, self.api_proxy):
            if proxy is not None:
                proxy.stop()
        self.receiver.stop()
        self.emulator.stop()
        self.redis.kill()

    @property
    def redis_url(self) -> str:
        """Where producers and the checker reach Redis: directly."""
        return self.redis.url

    def settings(self) -> Settings:
        """The settings of producers, consumers and the checker."""
        return Settings.load(redis_url=self.redis_url)

    def env(self) -> dict[str, str]:
        assert self.redis_proxy is not None and self.api_proxy is not None
        return daemon_env(
            f"redis://127.0.0.1:{self.redis_proxy.port}/0",
            f"http://127.0.0.1:{self.api_proxy.port}",
            API_KEY,
            replica_settings(self.lease, self.max_requests) | self.extra_env,
        )

    def _spawn(self) -> DaemonProcess:
        d = DaemonProcess(self.directory / f"replica{self._spawned}", self.env())
        self._spawned += 1
        d.start()
        return d

    # -- replicas -------------------------------------------------------------------------
    def kill_replica(self, index: int) -> DaemonProcess:
        """kill -9 of one replica (its whole process group), and a fresh one in its place."""
        with self._lock:
            old = self.replicas[index]
            old.kill()
            self.paused.discard(index)
            self.retired.append(old)
            self.replicas[index] = self._spawn()
            return old

    def pause_replica(self, index: int) -> bool:
        """SIGSTOP one replica's process group: it keeps its sockets and wakes as a zombie."""
        with self._lock:
            d = self.replicas[index]
            if index in self.paused or not d.alive() or d.proc is None:
                return False
            os.killpg(d.proc.pid, signal.SIGSTOP)
            self.paused.add(index)
            return True

    def resume_replica(self, index: int) -> None:
        with self._lock:
            if index in self.paused:
                self.paused.discard(index)
                self._resume(self.replicas[index])

    @staticmethod
    def _resume(d: DaemonProcess) -> None:
        if d.proc is not None and d.proc.poll() is None:
            try:
                os.killpg(d.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def ensure_replicas(self) -> int:
        """Resume every paused replica and replace any that died; how many were replaced."""
        replaced = 0
        with self._lock:
            for i in list(self.paused):
                self.resume_replica(i)
            for i, d in enumerate(self.replicas):
                if not d.alive():
                    self.retired.append(d)
                    self.replicas[i] = self._spawn()
                    replaced += 1
        return replaced

    def logs(self) -> list[tuple[str, str]]:
        """(name, text) of every replica's log, the killed ones included."""
        with self._lock:
            every = self.retired + self.replicas
        return [(d.directory.name, d.log_text()) for d in every]

    def emulator_profile(self, profile: dict[str, Any]) -> None:
        self.emulator.set_profile(profile)
