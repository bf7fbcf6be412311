"""Redis Sentinel for tests: a master, its replica and three sentinels that fail over in seconds.

The master can be killed and the replica stalled, so a test sees what a failover does to its writes.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.sentinel

from tests.support.redis import RedisServer, free_port, redis_server_binary

HOST = "127.0.0.1"
#: How long a master may be silent before a sentinel calls it down (ms); bounds failover time.
DOWN_AFTER_MS = 1000
#: How long one failover attempt may take before it is retried (ms).
FAILOVER_TIMEOUT_MS = 3000
#: How long to wait for the sentinels to agree after a start, failover or restart.
AGREE_TIMEOUT = 20.0
POLL = 0.02


#: Flags of a master that is down or still being replaced.
_UNSETTLED = {"s_down", "o_down", "failover_in_progress", "promoted"}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(reply: Any) -> dict[str, str]:
    """A SENTINEL reply as a dict of str: a map in RESP3, alternating field and value in RESP2."""
    if isinstance(reply, dict):
        return {_text(k): _text(v) for k, v in reply.items()}
    items = [_text(x) for x in reply]
    return dict(zip(items[::2], items[1::2], strict=True))


class SentinelProcess:
    """One `redis-server --sentinel` with its own config file, which it rewrites as it learns."""

    def __init__(self, directory: Path, port: int, myid: str) -> None:
        self.directory = directory
        self.port = port
        self.myid = myid
        self.proc: subprocess.Popen[bytes] | None = None
        self._admin: redis.Redis | None = None

    def start(self, config: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "sentinel.conf"
        conf.write_text(config)
        self.proc = subprocess.Popen(
            [redis_server_binary(), str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def call(self, *args: Any) -> Any:
        if self._admin is None:
            self._admin = redis.Redis(
                host=HOST, port=self.port, socket_timeout=5, socket_connect_timeout=2
            )
        return self._admin.execute_command(*args)  # type: ignore[no-untyped-call, unused-ignore]

    def kill(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class RedisSentinel:
    """`replicas` replicas of one master, watched as `service` by `sentinels` sentinels.

    Every data node runs with AOF and the same `min-replicas-to-write`, so whichever is promoted
    enforces it too.
    """

    def __init__(
        self,
        directory: Path,
        *,
        sentinels: int = 3,
        replicas: int = 1,
        service: str = "primary",
        down_after_ms: int = DOWN_AFTER_MS,
        failover_timeout_ms: int = FAILOVER_TIMEOUT_MS,
        min_replicas_to_write: int = 0,
        min_replicas_max_lag: int = 10,
        appendfsync: str = "always",
        extra: Sequence[str] = (),
    ) -> None:
        if sentinels < 1 or replicas < 1:
            raise ValueError("a failover needs at least one sentinel and one replica")
        self.directory = directory
        self.service = service
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.quorum = sentinels // 2 + 1
        self.ready_seconds: float | None = None
        #: Seconds from kill_master until every sentinel named the promoted replica.
        self.last_failover_seconds: float | None = None
        self.stalled: set[int] = set()
        self._down: tuple[RedisServer, float] | None = None
        self._clients: list[redis.Redis] = []
        self.servers = [
            RedisServer(
                directory / f"node{i}",
                appendfsync=appendfsync,
                extra=[
                    "--min-replicas-to-write",
                    str(min_replicas_to_write),
                    "--min-replicas-max-lag",
                    str(min_replicas_max_lag),
                    "--repl-diskless-sync-delay",
                    "0",
                    *extra,
                ],
            )
            for i in range(replicas + 1)
        ]
        used: set[int] = set()
        for server in self.servers:
            while server.port in used:
                server.port = free_port()
            used.add(server.port)
        self.sentinels: list[SentinelProcess] = []
        for i in range(sentinels):
            port = free_port()
            while port in used:
                port = free_port()
            used.add(port)
            self.sentinels.append(
                SentinelProcess(directory / f"sentinel{i}", port, secrets.token_hex(20))
            )

    # -- life ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the data nodes, replicate, then start sentinels that already know each other."""
        began = time.monotonic()
        master, *replicas = self.servers
        for server in self.servers:
            server.start()
        for server in replicas:
            self._replicate(server, master)
        self._wait("replicas to sync", lambda: self._links_down(master, replicas))
        for sentinel in self.sentinels:
            sentinel.start(self._config(sentinel, master, replicas))
        self.wait_agreed()
        self.ready_seconds = time.monotonic() - began

    def _config(
        self, sentinel: SentinelProcess, master: RedisServer, replicas: list[RedisServer]
    ) -> str:
        # Known replicas and sentinels up front: no 2 s hello rounds before a failover can work.
        lines = [
            f"port {sentinel.port}",
            f"bind {HOST}",
            f"dir {sentinel.directory}",
            f"logfile {sentinel.directory / 'sentinel.log'}",
            f"sentinel myid {sentinel.myid}",
            f"sentinel monitor {self.service} {HOST} {master.port} {self.quorum}",
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
            f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {self.service} 1",
            *(f"sentinel known-replica {self.service} {HOST} {r.port}" for r in replicas),
            *(
                f"sentinel known-sentinel {self.service} {HOST} {other.port} {other.myid}"
                for other in self.sentinels
                if other is not sentinel
            ),
        ]
        return "\n".join(lines) + "\n"

    def kill(self) -> None:
        """SIGKILL every sentinel and data node, stalled ones too; close every client handed out."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        for sentinel in self.sentinels:
            sentinel.kill()
        for server in self.servers:
            server.kill()
        self.stalled.clear()

    # -- where things are ------------------------------------------------------------------
    @property
    def url(self) -> str:
        """`redis+sentinel://host:port,host:port,.../<service>`, every sentinel named."""
        nodes = ",".join(f"{HOST}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{nodes}/{self.service}"

    def master_port(self) -> int:
        """The master's port as the first answering sentinel names it."""
        for sentinel in self.sentinels:
            if sentinel.alive():
                try:
                    reply = sentinel.call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
                except redis.RedisError:
                    continue
                return int(reply[1])
        raise RuntimeError("no sentinel answers")

    def master(self) -> RedisServer:
        port = self.master_port()
        return next(s for s in self.servers if s.port == port)

    def replicas(self) -> list[RedisServer]:
        port = self.master_port()
        return [s for s in self.servers if s.port != port]

    def client(self, **options: Any) -> redis.Redis:
        """A client of the master found through the sentinels; closed by kill() at the latest."""
        nodes = [(HOST, s.port) for s in self.sentinels]
        finder = redis.sentinel.Sentinel(nodes, socket_timeout=2)  # type: ignore[no-untyped-call, unused-ignore]
        client: redis.Redis = finder.master_for(  # type: ignore[no-untyped-call, unused-ignore]
            self.service, **options
        )
        self._clients.append(client)
        return client

    # -- waiting ---------------------------------------------------------------------------
    def _wait(self, what: str, problem: Callable[[], str | None], timeout: float = 0) -> None:
        deadline = time.monotonic() + (timeout or AGREE_TIMEOUT)
        while True:
            found = problem()
            if found is None:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout or AGREE_TIMEOUT}s for {what}: {found}")
            time.sleep(POLL)

    @staticmethod
    def _links_down(master: RedisServer, replicas: list[RedisServer]) -> str | None:
        for server in replicas:
            with redis.Redis(host=HOST, port=server.port, socket_timeout=5) as probe:
                info = probe.info("replication")
            if info.get("master_port") != master.port or info.get("master_link_status") != "up":
                return f"replica {server.port} is not yet synced with {master.port}"
        return None

    def problem(self) -> str | None:
        """Why the sentinels do not yet agree on a healthy master with synced replicas, or None."""
        live = [
            server
            for i, server in enumerate(self.servers)
            if server.proc is not None and server.proc.poll() is None and i not in self.stalled
        ]
        ports: set[int] = set()
        try:
            for sentinel in self.sentinels:
                master = _pairs(sentinel.call("SENTINEL", "MASTER", self.service))
                if _UNSETTLED & set(master["flags"].split(",")):
                    return f"sentinel {sentinel.port} flags the master {master['flags']}"
                ports.add(int(master["port"]))
                others = len(self.sentinels) - 1
                if int(master["num-other-sentinels"]) != others:
                    return f"sentinel {sentinel.port} knows {master['num-other-sentinels']} peers"
                expected = {s.port for s in live} - {int(master["port"])}
                # Flags only: a sentinel reads a replica's INFO every 10 s, and failover reads it
                # every second; the link itself is checked on the replica below.
                seen = {
                    int(r["port"])
                    for r in map(_pairs, sentinel.call("SENTINEL", "REPLICAS", self.service))
                    if r["flags"] == "slave"
                }
                if not expected <= seen:
                    return f"sentinel {sentinel.port} sees replicas {seen}, not {expected}"
        except redis.RedisError as exc:
            return f"a sentinel failed to answer: {exc}"
        if len(ports) != 1:
            return f"sentinels name different masters: {ports}"
        (port,) = ports
        master_server = next((s for s in live if s.port == port), None)
        if master_server is None:
            return f"the sentinels' master {port} is down"
        return self._links_down(master_server, [s for s in live if s is not master_server])

    def wait_agreed(self, timeout: float = AGREE_TIMEOUT) -> None:
        """Until every sentinel names the same master and sees every live replica synced."""
        self._wait("the sentinels to agree", self.problem, timeout)

    # -- faults ----------------------------------------------------------------------------
    def kill_master(self, *, crash: bool = True) -> RedisServer:
        """Stop the master: SIGKILL if `crash`, else a clean SIGTERM."""
        server = self.master()
        if crash:
            server.kill()
        else:
            server.stop()
        self._down = (server, time.monotonic())
        return server

    def wait_failover(self, timeout: float = AGREE_TIMEOUT) -> float:
        """Until every sentinel names a new master that reports role:master.

        Returns the seconds since kill_master, also kept in `last_failover_seconds`.
        """
        if self._down is None:
            raise RuntimeError("wait_failover without kill_master")
        down, since = self._down

        def problem() -> str | None:
            named: set[int] = set()
            for sentinel in self.sentinels:
                try:
                    master = _pairs(sentinel.call("SENTINEL", "MASTER", self.service))
                except redis.RedisError as exc:
                    return f"sentinel {sentinel.port}: {exc}"
                # The promoted replica is named while the failover is still in progress.
                if _UNSETTLED & set(master["flags"].split(",")):
                    return f"sentinel {sentinel.port} flags the master {master['flags']}"
                named.add(int(master["port"]))
            if len(named) != 1 or down.port in named:
                return f"sentinels name {sorted(named)}; {down.port} was killed"
            (port,) = named
            with redis.Redis(host=HOST, port=port, socket_timeout=5) as probe:
                if probe.info("replication").get("role") != "master":
                    return f"{port} is not yet master"
            return None

        self._wait(f"a failover from {down.port}", problem, timeout)
        self._down = None
        self.last_failover_seconds = time.monotonic() - since
        return self.last_failover_seconds

    def restart(self, server: RedisServer, *, crash: bool = False, wait: bool = True) -> None:
        """Stop and start a data node; unless it is the master it rejoins as a replica of it.

        REPLICAOF is sent here, as the sentinels would after several seconds of their own.
        """
        index = self.servers.index(server)
        if index in self.stalled:
            self._resume(index)
        server.restart(crash=crash)
        master = self.master_port()
        if server.port != master:
            with redis.Redis(host=HOST, port=server.port, socket_timeout=5) as node:
                node.execute_command("REPLICAOF", HOST, master)
        if wait:
            self.wait_agreed()

    @staticmethod
    def _replicate(server: RedisServer, master: RedisServer) -> None:
        with redis.Redis(host=HOST, port=server.port, socket_timeout=5) as node:
            node.execute_command("REPLICAOF", HOST, master.port)

    def stall_replica(self, index: int = 0) -> RedisServer:
        """SIGSTOP the `index`th replica: it keeps its link and acknowledges nothing."""
        server = self.replicas()[index]
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)
        self.stalled.add(self.servers.index(server))
        return server

    def resume_replica(self) -> None:
        """SIGCONT every stalled replica."""
        for index in list(self.stalled):
            self._resume(index)

    def _resume(self, index: int) -> None:
        proc = self.servers[index].proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
        self.stalled.discard(index)


@pytest.fixture
def redis_sentinel_factory(tmp_path: Path) -> Iterator[Callable[..., RedisSentinel]]:
    """Start Sentinel setups with any RedisSentinel options; all are killed after the test."""
    made: list[RedisSentinel] = []

    def make(**options: Any) -> RedisSentinel:
        setup = RedisSentinel(tmp_path / f"sentinel{len(made)}", **options)
        made.append(setup)
        setup.start()
        return setup

    try:
        yield make
    finally:
        for setup in made:
            setup.kill()


@pytest.fixture
def redis_sentinel(redis_sentinel_factory: Callable[..., RedisSentinel]) -> RedisSentinel:
    """A master, one replica and three sentinels, failing over about two seconds after a kill."""
    return redis_sentinel_factory()
