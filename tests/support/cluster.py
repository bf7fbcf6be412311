"""A real Redis Cluster for tests: masters and replicas on free ports, formed by hand in 2 s.

Masters can be killed and failed over, replicas stalled, slots migrated live; a session shares one.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio.cluster
import redis.cluster
from redis._parsers import CommandsParser
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from tests.support.redis import RedisServer, free_port, redis_server_binary

HOST = "127.0.0.1"
#: CLUSTER ADDSLOTSRANGE, CLUSTER SHARDS, cluster-port and script flags all arrived in 7.0.
MIN_VERSION = (7, 0, 0)
#: How long a master may be unreachable before its replica takes over; bounds failover time.
NODE_TIMEOUT_MS = 1000
#: How long to wait for the cluster to agree after a start, restart, failover or migration.
CONVERGE_TIMEOUT = 20.0
#: Between two looks at the cluster while waiting for it.
POLL = 0.02


# -- version -------------------------------------------------------------------------------
class RedisTooOld(RuntimeError):
    """redis-server is missing or older than a fixture needs."""


def redis_version(binary: str | None = None) -> tuple[int, int, int]:
    """The version of `binary` (by default the one fixtures run), from `redis-server --version`."""
    out = subprocess.run(
        [binary or redis_server_binary(), "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    found = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    if found is None:
        raise RedisTooOld(f"cannot read a version from {out.strip()!r}")
    return int(found[1]), int(found[2]), int(found[3])


def _dotted(version: Sequence[int]) -> str:
    return ".".join(map(str, version))


def in_ci() -> bool:
    """True under a CI runner (each major one sets CI), where a skip would hide a gap."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def check_redis(minimum: tuple[int, int, int] = MIN_VERSION) -> str:
    """The redis-server binary if it is at least `minimum`, else RedisTooOld with what was found."""
    try:
        binary = redis_server_binary()
        found = redis_version(binary)
    except (RuntimeError, OSError, ImportError, subprocess.SubprocessError) as exc:
        raise RedisTooOld(f"needs redis-server >= {_dotted(minimum)}; none usable: {exc}") from exc
    if found < minimum:
        raise RedisTooOld(
            f"needs redis-server >= {_dotted(minimum)}; {binary} is {_dotted(found)}"
            " (install a newer one, e.g. apt-get install redis-server on Debian 12)"
        )
    return binary


def require_redis(minimum: tuple[int, int, int] = MIN_VERSION) -> str:
    """check_redis for a test: a missing or old server skips it, except in CI where it fails."""
    try:
        return check_redis(minimum)
    except RedisTooOld as exc:
        if in_ci():
            raise
        pytest.skip(str(exc))


# -- what one node says about the cluster ---------------------------------------------------
@dataclass(frozen=True)
class NodeInfo:
    """One line of CLUSTER NODES: a node as some node of the cluster sees it."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[tuple[int, int], ...]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        return bool({"fail", "fail?"} & self.flags)


def parse_cluster_nodes(text: str) -> dict[str, NodeInfo]:
    """CLUSTER NODES by node id; importing/migrating markers (`[slot->-id]`) are left out."""
    nodes: dict[str, NodeInfo] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split()
        node_id, address, flags, master = fields[0], fields[1], fields[2], fields[3]
        port = int(address.split("@", 1)[0].rsplit(":", 1)[1] or 0)
        slots: list[tuple[int, int]] = []
        for item in fields[8:]:
            if item.startswith("["):
                continue
            lo, _, hi = item.partition("-")
            slots.append((int(lo), int(hi or lo)))
        nodes[node_id] = NodeInfo(
            node_id=node_id,
            port=port,
            flags=frozenset(flags.split(",")),
            master_id=None if master == "-" else master,
            slots=tuple(slots),
        )
    return nodes


def slot_of(key: str | bytes) -> int:
    """The hash slot of a key, hash tags included."""
    return key_slot(key.encode() if isinstance(key, str) else key)


def tag_for_slot(slot: int) -> str:
    """A hash tag whose keys all land in `slot`: `{<tag>}:anything`."""
    for i in range(1_000_000):
        tag = f"s{i}"
        if key_slot(tag.encode()) == slot:
            return tag
    raise AssertionError(f"no tag found for slot {slot}")  # pragma: no cover - crc16 covers all


# -- one process of the cluster -------------------------------------------------------------
class Node:
    """One redis-server of the cluster. `shard` is the master it was made for and never changes."""

    def __init__(self, index: int, shard: int, server: RedisServer, bus_port: int) -> None:
        self.index = index
        self.shard = shard
        self.server = server
        self.bus_port = bus_port
        self.node_id = ""
        self.stalled = False
        self._admin: redis.Redis | None = None

    def __repr__(self) -> str:
        return f"Node({self.index}, shard={self.shard}, port={self.port})"

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def pid(self) -> int:
        assert self.server.proc is not None, "node never started"
        return self.server.proc.pid

    def alive(self) -> bool:
        return self.server.proc is not None and self.server.proc.poll() is None

    def admin(self) -> redis.Redis:
        """A connection for cluster commands; short timeouts, so a stalled node cannot hang us."""
        if self._admin is None:
            self._admin = redis.Redis(
                host=HOST, port=self.port, socket_timeout=5, socket_connect_timeout=2
            )
        return self._admin

    def call(self, *args: Any) -> Any:
        """One raw command: name and subcommand as separate words, so no reply parser applies."""
        return self.admin().execute_command(*args)  # type: ignore[no-untyped-call]

    def text(self, *args: Any) -> str:
        reply = self.call(*args)
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    def client(self, **options: Any) -> redis.Redis:
        """A plain (not cluster-aware) client of this node alone; the caller closes it."""
        return redis.Redis(host=HOST, port=self.port, **options)

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None


@dataclass(frozen=True)
class Migration:
    """What one migrate_slot did and how long it took, until every node agreed on the new owner."""

    slot: int
    source: int
    target: int
    keys: int
    batches: int
    seconds: float


# -- the cluster ----------------------------------------------------------------------------
class RedisCluster:
    """`masters` masters with `replicas` replicas each; slots split evenly, AOF on every node."""

    def __init__(
        self,
        directory: Path,
        *,
        masters: int = 3,
        replicas: int = 1,
        appendfsync: str = "always",
        node_timeout_ms: int = NODE_TIMEOUT_MS,
        extra: Sequence[str] = (),
    ) -> None:
        if masters < 1 or replicas < 0:
            raise ValueError("a cluster needs at least one master and no negative replica count")
        self.directory = directory
        self.shards = masters
        self.replicas = replicas
        self.nodes: list[Node] = []
        #: Seconds from the first process start until the cluster was ready.
        self.ready_seconds: float | None = None
        #: Seconds from the last kill_master until wait_failover saw the cluster whole again.
        self.last_failover_seconds: float | None = None
        self.last_migration: Migration | None = None
        #: A node was killed, restarted or a slot moved: a shared cluster is rebuilt, not reused.
        self.disturbed = False
        self._down: tuple[Node, float] | None = None
        self._clients: list[redis.cluster.RedisCluster] = []
        used: set[int] = set()
        shard_of = list(range(masters)) + [s for s in range(masters) for _ in range(replicas)]
        for index, shard in enumerate(shard_of):
            bus = self._port(used)
            server = RedisServer(
                directory / f"node{index}",
                appendfsync=appendfsync,
                extra=[
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(node_timeout_ms),
                    "--cluster-port", str(bus),
                    # A replica however long cut off may still take over: tests stall them.
                    "--cluster-replica-validity-factor", "0",
                    # Replicas stay with the master they were made for.
                    "--cluster-allow-replica-migration", "no",
                    # A (re)joining replica syncs at once instead of after the 5 s default.
                    "--repl-diskless-sync-delay", "0",
                    *extra,
                ],
            )  # fmt: skip
            while server.port in used:
                server.port = free_port()
            used.add(server.port)
            self.nodes.append(Node(index, shard, server, bus))

    @staticmethod
    def _port(used: set[int]) -> int:
        port = free_port()
        while port in used:
            port = free_port()
        used.add(port)
        return port

    # -- life ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start every node and form the cluster: epochs, slots, MEET, REPLICATE, then agreement."""
        check_redis()
        began = time.monotonic()
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: node.server.start(), self.nodes))
        for epoch, node in enumerate(self.nodes, 1):
            node.node_id = node.text("CLUSTER", "MYID")
            # Distinct epochs from the start: no collision rounds, and failover votes work at once.
            node.call("CLUSTER", "SET-CONFIG-EPOCH", epoch)
        for shard, (lo, hi) in enumerate(self.slot_ranges()):
            self.nodes[shard].call("CLUSTER", "ADDSLOTSRANGE", lo, hi)
        for i, a in enumerate(self.nodes):
            for b in self.nodes[i + 1 :]:
                a.call("CLUSTER", "MEET", HOST, b.port, b.bus_port)
        self._wait("every node to know every other", self._acquainted)
        for node in self.nodes[self.shards :]:
            node.call("CLUSTER", "REPLICATE", self.nodes[node.shard].node_id)
        self.wait_converged()
        self.ready_seconds = time.monotonic() - began

    def kill(self) -> None:
        """SIGKILL every node (stalled ones too) and close every client handed out."""
        self.close_clients()
        for node in self.nodes:
            node.close()
            node.server.kill()
            node.stalled = False

    def close_clients(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()

    def reset(self) -> bool:
        """Make a shared cluster clean for the next test: False if it must be rebuilt instead."""
        self.close_clients()
        for node in self.nodes:
            if node.stalled:
                self._resume(node)
        if self.disturbed or not all(node.alive() for node in self.nodes):
            return False
        try:
            self.wait_converged(timeout=5)
            for master in self.masters():
                master.call("FLUSHALL")
                master.call("SCRIPT", "FLUSH")
                master.call("FUNCTION", "FLUSH")
                if self.replicas:
                    # Replicas empty too before the next test reads them.
                    if int(master.call("WAIT", self.replicas, 5000)) < self.replicas:
                        return False
        except (redis.RedisError, TimeoutError):
            return False
        return True

    # -- where things are ------------------------------------------------------------------
    def slot_ranges(self) -> list[tuple[int, int]]:
        """The slot range each shard was given at the start, by shard."""
        n = self.shards
        return [
            (s * REDIS_CLUSTER_HASH_SLOTS // n, (s + 1) * REDIS_CLUSTER_HASH_SLOTS // n - 1)
            for s in range(n)
        ]

    def view(self) -> dict[str, NodeInfo]:
        """CLUSTER NODES from the first node that answers."""
        errors: list[str] = []
        for node in self.nodes:
            if node.alive() and not node.stalled:
                try:
                    return parse_cluster_nodes(node.text("CLUSTER", "NODES"))
                except redis.RedisError as exc:
                    errors.append(f"{node}: {exc}")
        raise RuntimeError(f"no node of the cluster answers: {errors}")

    def _by_id(self) -> dict[str, Node]:
        return {node.node_id: node for node in self.nodes}

    def master(self, shard: int) -> Node:
        """The node now serving shard `shard` (its first master, or the replica that took over)."""
        view, by_id = self.view(), self._by_id()
        candidates = [
            by_id[info.node_id]
            for info in view.values()
            if info.is_master and info.node_id in by_id and by_id[info.node_id].shard == shard
        ]
        if not candidates:
            raise RuntimeError(f"shard {shard} has no master")
        # After a failover the old master stays listed as a failed master without slots.
        candidates.sort(key=lambda n: (view[n.node_id].failed, not view[n.node_id].slots))
        return candidates[0]

    def masters(self) -> list[Node]:
        """The current master of every shard, in shard order."""
        return [self.master(s) for s in range(self.shards)]

    def master_ports(self) -> list[int]:
        return [node.port for node in self.masters()]

    def replicas_of(self, shard: int) -> list[Node]:
        """The nodes of a shard that are not its current master."""
        master = self.master(shard)
        return [n for n in self.nodes if n.shard == shard and n is not master]

    def owner(self, slot: int) -> Node:
        """The master that serves `slot` now."""
        by_id = self._by_id()
        for info in self.view().values():
            if info.is_master and any(lo <= slot <= hi for lo, hi in info.slots):
                return by_id[info.node_id]
        raise RuntimeError(f"no master serves slot {slot}")

    def node_for_key(self, key: str | bytes) -> Node:
        """The master that holds `key` now."""
        return self.owner(slot_of(key))

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """(host, port) of every current master."""
        return [(HOST, port) for port in self.master_ports()]

    @property
    def url(self) -> str:
        """`redis+cluster://host:port,host:port,...` naming every current master."""
        return "redis+cluster://" + ",".join(f"{h}:{p}" for h, p in self.startup_nodes)

    def client(self, **options: Any) -> redis.cluster.RedisCluster:
        """A cluster-aware redis-py client; closed by reset() or kill() if the caller does not."""
        client = redis.cluster.RedisCluster(
            startup_nodes=[
                redis.cluster.ClusterNode(h, p)  # type: ignore[no-untyped-call]
                for h, p in self.startup_nodes
            ],
            **options,
        )
        self._clients.append(client)
        return client

    def async_client(self, **options: Any) -> redis.asyncio.cluster.RedisCluster:
        """The asyncio twin of client(); the caller closes it (`await client.aclose()`)."""
        return redis.asyncio.cluster.RedisCluster(
            startup_nodes=[redis.asyncio.cluster.ClusterNode(h, p) for h, p in self.startup_nodes],
            **options,
        )

    # -- waiting for agreement -------------------------------------------------------------
    def _wait(self, what: str, problem: Callable[[], str | None], timeout: float = 0) -> None:
        deadline = time.monotonic() + (timeout or CONVERGE_TIMEOUT)
        while True:
            found = problem()
            if found is None:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout or CONVERGE_TIMEOUT}s for {what}: {found}")
            time.sleep(POLL)

    def _answering(self) -> list[Node]:
        return [node for node in self.nodes if node.alive() and not node.stalled]

    def _acquainted(self) -> str | None:
        for node in self.nodes:
            view = parse_cluster_nodes(node.text("CLUSTER", "NODES"))
            if len(view) != len(self.nodes):
                return f"{node} knows {len(view)} of {len(self.nodes)} nodes"
            for info in view.values():
                if {"handshake", "noaddr"} & info.flags:
                    return f"{node} is still meeting {info.port}"
        return None

    def problem(self) -> str | None:
        """Why the answering nodes do not yet form one healthy cluster, or None if they do.

        Healthy: cluster_state ok everywhere; every answering node sees the same slot owners and
        the same roles; no slot is served by a dead node; no answering node is flagged failed;
        every answering replica's link to its master is up.
        """
        answering = self._answering()
        ids = {node.node_id for node in answering}
        pictures: dict[int, tuple[object, ...]] = {}
        try:
            for node in answering:
                if "cluster_state:ok" not in node.text("CLUSTER", "INFO"):
                    return f"{node} reports cluster_state other than ok"
                view = parse_cluster_nodes(node.text("CLUSTER", "NODES"))
                owners = sorted(
                    (lo, hi, info.node_id)
                    for info in view.values()
                    if info.is_master
                    for lo, hi in info.slots
                )
                for _, _, owner in owners:
                    if owner not in ids:
                        return f"{node} sees slots on a node that is down"
                roles = sorted((i, view[i].master_id or "master") for i in ids if i in view)
                if len(roles) != len(ids):
                    return f"{node} does not know every node"
                flagged = [view[i].port for i in ids if view[i].failed]
                if flagged:
                    return f"{node} flags {flagged} as failing"
                pictures[node.port] = (tuple(owners), tuple(roles))
                if "slave" in view[node.node_id].flags:
                    link = node.admin().info("replication").get("master_link_status")
                    if link != "up":
                        return f"{node}'s replication link is {link}"
        except redis.RedisError as exc:
            return f"a node failed to answer: {exc}"
        if len(set(pictures.values())) > 1:
            return f"nodes disagree on the slot map or roles ({len(set(pictures.values()))} views)"
        return None

    def wait_converged(self, timeout: float = CONVERGE_TIMEOUT) -> None:
        """Until problem() is None: one slot map, one set of roles, every link up."""
        self._wait("the cluster to converge", self.problem, timeout)

    # -- faults ----------------------------------------------------------------------------
    def kill_master(
        self, shard: int | None = None, *, slot: int | None = None, crash: bool = True
    ) -> Node:
        """Stop the master of `shard` (or of `slot`): SIGKILL if `crash`, else a clean SIGTERM."""
        if shard is not None and slot is not None:
            raise ValueError("name a shard or a slot, not both")
        node = self.owner(slot) if slot is not None else self.master(shard or 0)
        self.disturbed = True
        if crash:
            node.server.kill()
        else:
            node.server.stop()
        self._down = (node, time.monotonic())
        return node

    def wait_failover(self, timeout: float = CONVERGE_TIMEOUT) -> float:
        """Until a replica of the killed master serves its slots and the cluster is ok again.

        Returns the seconds since kill_master, also kept in `last_failover_seconds`.
        """
        if self._down is None:
            raise RuntimeError("wait_failover without kill_master")
        down, since = self._down

        def problem() -> str | None:
            if (found := self.problem()) is not None:
                return found
            return "no replica promoted yet" if self.master(down.shard) is down else None

        self._wait(f"a replica of {down} to take over", problem, timeout)
        self._down = None
        self.last_failover_seconds = time.monotonic() - since
        return self.last_failover_seconds

    def restart_node(self, node: Node, *, crash: bool = False, wait: bool = True) -> None:
        """Stop (SIGKILL if `crash`) and start `node` on its port, with its AOF and nodes.conf.

        A killed master comes back as a replica of the node that took over from it.
        """
        self.disturbed = True
        if node.stalled:
            self._resume(node)
        node.close()
        node.server.restart(crash=crash)
        if wait:
            self.wait_converged()

    def stall_replica(self, shard: int = 0) -> Node:
        """SIGSTOP the first replica of `shard`: it keeps its links and acknowledges nothing."""
        candidates = [node for node in self.replicas_of(shard) if node.alive()]
        if not candidates:
            raise RuntimeError(f"shard {shard} has no live replica to stall")
        node = candidates[0]
        os.kill(node.pid, signal.SIGSTOP)
        node.stalled = True
        return node

    def resume_replica(self, shard: int = 0) -> None:
        """SIGCONT every stalled replica of `shard`."""
        for node in self.nodes:
            if node.shard == shard and node.stalled:
                self._resume(node)

    @staticmethod
    def _resume(node: Node) -> None:
        if node.alive():
            os.kill(node.pid, signal.SIGCONT)
        node.stalled = False

    def migrate_slot(
        self,
        slot: int,
        to: int | Node,
        *,
        batch: int = 100,
        between_batches: Callable[[int], None] | None = None,
        timeout_ms: int = 5000,
    ) -> Migration:
        """Move `slot` to shard `to` (or node) live, the way a reshard does.

        IMPORTING on the target, MIGRATING on the source, MIGRATE ... KEYS in batches of `batch`
        (`between_batches(keys moved so far)` after each), then SETSLOT NODE on target, source
        and every other master. Clients keep working throughout through ASK and MOVED.
        """
        source = self.owner(slot)
        target = to if isinstance(to, Node) else self.master(to)
        if target is source:
            raise ValueError(f"slot {slot} is already on {target}")
        self.disturbed = True
        began = time.monotonic()
        target.call("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        source.call("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
        moved = batches = 0
        while keys := source.call("CLUSTER", "GETKEYSINSLOT", slot, batch):
            # No REPLACE: a key on both sides would be a bug worth a loud BUSYKEY.
            source.call("MIGRATE", HOST, target.port, "", 0, timeout_ms, "KEYS", *keys)
            moved += len(keys)
            batches += 1
            if between_batches is not None:
                between_batches(moved)
        others = [m for m in self.masters() if m is not source and m is not target]
        for node in (target, source, *others):
            node.call("CLUSTER", "SETSLOT", slot, "NODE", target.node_id)
        self.wait_converged()
        self.last_migration = Migration(
            slot, source.port, target.port, moved, batches, time.monotonic() - began
        )
        return self.last_migration


# -- test speed ---------------------------------------------------------------------------
@contextlib.contextmanager
def one_command_table() -> Iterator[None]:
    """Every new redis-py cluster client asks a node for the whole COMMAND table and parses it
    (~40 ms in pure Python); the nodes of the test clusters all run one binary, so inside this
    block the first answer serves every client made in this process."""
    original = CommandsParser.initialize
    table: dict[str, Any] = {}

    def initialize(self: CommandsParser, r: Any) -> None:
        if not table:
            original(self, r)  # type: ignore[no-untyped-call]
            table.update(self.commands)
        self.commands = table

    CommandsParser.initialize = initialize  # type: ignore[method-assign]
    try:
        yield
    finally:
        CommandsParser.initialize = original  # type: ignore[method-assign]


# -- pytest fixtures ------------------------------------------------------------------------
class SharedCluster:
    """The session's cluster, handed out clean to each test and rebuilt after one disturbed it."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.current: RedisCluster | None = None
        #: How many clusters the session started: 1 unless tests killed nodes or moved slots.
        self.started = 0

    def checkout(self) -> RedisCluster:
        if self.current is not None and self.current.reset():
            return self.current
        self.close()
        cluster = RedisCluster(self.factory.mktemp("cluster"))
        self.started += 1
        try:
            cluster.start()
        except BaseException:
            cluster.kill()
            raise
        self.current = cluster
        return cluster

    def close(self) -> None:
        if self.current is not None:
            self.current.kill()
            self.current = None


@pytest.fixture
def redis_cluster_factory(tmp_path: Path) -> Iterator[Callable[..., RedisCluster]]:
    """Start clusters with any RedisCluster options; all are killed after the test."""
    made: list[RedisCluster] = []

    def make(**options: Any) -> RedisCluster:
        require_redis()
        cluster = RedisCluster(tmp_path / f"cluster{len(made)}", **options)
        made.append(cluster)
        cluster.start()
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            cluster.kill()


@pytest.fixture
def redis_cluster(redis_cluster_factory: Callable[..., RedisCluster]) -> RedisCluster:
    """A private cluster of 3 masters with a replica each, for tests that kill, stall or reshard."""
    return redis_cluster_factory()


@pytest.fixture(scope="session")
def redis_cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedCluster]:
    shared = SharedCluster(tmp_path_factory)
    try:
        yield shared
    finally:
        shared.close()


@pytest.fixture
def shared_redis_cluster(redis_cluster_session: SharedCluster) -> RedisCluster:
    """The session's cluster, flushed: for tests that only read and write through it."""
    require_redis()
    return redis_cluster_session.checkout()
