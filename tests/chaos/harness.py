"""One chaos run from start to verdict: the cluster, the load, the nemesis, the drain, the checks.

`run(ChaosConfig(...))` returns a Report whose `table()` is what `make chaos` prints; the
reduced, seeded run in the test suite calls the same function with a smaller config.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from batchd import Client
from batchd.errors import RequestNotFoundError
from batchd.store import counters as counter_store
from tests.chaos.checker import Checker, Verdict
from tests.chaos.cluster import SECRETS, Cluster
from tests.chaos.nemesis import CLUSTER_KINDS, KINDS, Nemesis
from tests.chaos.producers import Load, Readers, Shares, Webhooks
from tests.chaos.sharded import ShardedCluster


@dataclass
class ChaosConfig:
    """The size and pace of a run; the defaults are `make chaos`'s."""

    seed: int = 1
    requests: int = 20_000
    replicas: int = 3
    rate: float = 120.0
    producers: int = 4
    waiters: int = 4
    gap: tuple[float, float] = (2.0, 5.0)
    pace: float = 1.0
    lease: float = 4.0
    max_requests: int = 300
    drain_timeout: float = 600.0
    shares: Shares = field(default_factory=Shares)
    directory: Path | None = None
    keep: bool = False
    #: Data on a Redis Cluster (3 masters, a replica each) with its own faults (`CLUSTER_KINDS`).
    cluster: bool = False

    @property
    def kinds(self) -> dict[str, str]:
        return CLUSTER_KINDS if self.cluster else KINDS

    @classmethod
    def reduced(
        cls, seed: int = 7, directory: Path | None = None, cluster: bool = False
    ) -> ChaosConfig:
        """The version `make test` runs: every fault kind once or more, in about half a minute."""
        return cls(
            seed=seed,
            requests=1000,
            replicas=2,
            rate=50.0,
            producers=2,
            waiters=2,
            gap=(0.6, 1.2),
            pace=0.5,
            lease=3.0,
            max_requests=150,
            drain_timeout=120.0,
            directory=directory,
            cluster=cluster,
        )


@dataclass
class Report:
    config: ChaosConfig
    verdict: Verdict
    faults: Counter[str]
    wall: float
    load_seconds: float
    drain_seconds: float
    submit_retries: int
    api_retries: int
    batchd_retries: int
    webhook_failures: int
    processing_left: int
    nemesis_errors: list[str]
    leaks: list[str]
    replica_starts: int
    tracebacks: list[str]
    lost_takes: int = 0
    restarted: int = 0

    @property
    def ok(self) -> bool:
        return self.verdict.ok and not self.leaks and self.processing_left == 0

    def table(self) -> str:
        v = self.verdict
        c = self.config
        rows: list[tuple[str, Any]] = [
            ("seed", c.seed),
            ("replicas (started in all)", f"{c.replicas} ({self.replica_starts})"),
            ("  restarted after exiting on their own", self.restarted),
            ("requests acknowledged", v.acknowledged),
            (
                "  via reply queue / wait / webhook",
                f"{v.by_channel['reply']} / {v.by_channel['wait']} / {v.by_channel['webhook']}",
            ),
            ("  ended", ", ".join(f"{k} {n}" for k, n in sorted(v.statuses.items()))),
            ("faults injected", sum(self.faults.values())),
        ]
        rows += [(f"  {kind}", self.faults.get(kind, 0)) for kind in c.kinds]
        rows += [
            ("retries", ""),
            ("  requests sent again (emulator)", v.requests_sent - v.distinct_sent),
            ("  requests sent again (batchd's counter)", self.batchd_retries),
            ("  API calls retried (replica logs)", self.api_retries),
            ("  submits retried by producers", self.submit_retries),
            ("  webhook attempts refused on purpose", self.webhook_failures),
            ("  webhook attempts repeated (same webhook-id)", v.webhook_repeats),
            ("  replies redelivered after a lost ack", v.redelivered),
            ("  replies whose take a failover undid", self.lost_takes),
            ("batches created (emulator)", v.batches_created),
            ("duplicates", len(v.duplicates)),
            ("lost", len(v.lost)),
            ("double-submitted", v.double_submitted),
            ("double-billed", v.double_billed),
            ("billed on both routes (batch and real time)", len(v.billed_both_routes)),
            ("errored by a transient 404", len(v.errored_by_404)),
            ("billed twice in real time", len(v.realtime_double_billed)),
            ("deadlines: given / met / missed",
             f"{v.with_deadline} / {v.deadlines_met} / {sum(v.deadlines_missed.values())}"),
            ("  missed, by reason",
             ", ".join(f"{k} {n}" for k, n in sorted(v.deadlines_missed.items())) or "-"),
            ("  not met and not reported missed", len(v.deadlines_unreported)),
            ("succeeded by route (batch / real time)",
             f"{v.by_mode['batch']} / {v.by_mode['realtime']}"),
            ("billed at the batch price",
             f"{v.billed} of {v.billed + v.realtime_billed} ({100 * v.batch_price_share:.1f}%)"),
            ("unexpected results", len(v.unexpected)),
            ("inconsistent statuses", len(v.inconsistent)),
            ("requests still processing at the end", self.processing_left),
            ("secrets found in logs or Redis", len(self.leaks)),
            ("load / drain / wall time (s)",
             f"{self.load_seconds:.1f} / {self.drain_seconds:.1f} / {self.wall:.1f}"),
        ]  # fmt: skip
        width = max(len(k) for k, _ in rows)
        lines = [f"{k.ljust(width)}  {val}" for k, val in rows]
        lines.append(f"{'verdict'.ljust(width)}  {'PASS' if self.ok else 'FAIL'}")
        bar = "-" * max(len(line) for line in lines)
        return "\n".join([bar, *lines, bar])

    def problems(self) -> list[str]:
        """Up to a few examples of each violation, for a failing run's output."""
        v = self.verdict
        out: list[str] = []
        for name, items in (
            ("lost", v.lost),
            ("duplicate", v.duplicates),
            ("unexpected", v.unexpected),
            ("inconsistent", v.inconsistent),
            ("deadline unreported", v.deadlines_unreported),
            ("billed on both routes", v.billed_both_routes),
            ("billed twice in real time", v.realtime_double_billed),
            ("leak", self.leaks),
            ("nemesis error", self.nemesis_errors),
            ("traceback", self.tracebacks),
        ):
            out += [f"{name}: {item}" for item in items[:5]]
        return out


def run(config: ChaosConfig, progress: Any = None) -> Report:
    """Run the whole experiment; every process it starts is stopped before it returns."""
    say = progress or (lambda message: None)
    own_dir = config.directory is None
    directory = Path(tempfile.mkdtemp(prefix="batchd-chaos-")) if own_dir else config.directory
    assert directory is not None
    started = time.monotonic()
    options: dict[str, Any] = {
        "seed": config.seed,
        "replicas": config.replicas,
        "lease": config.lease,
        "max_requests": config.max_requests,
    }
    cluster = (
        ShardedCluster(directory, queues=config.shares.queues, **options)
        if config.cluster
        else Cluster(directory, **options)
    )
    checker = Checker()
    readers: Readers | None = None
    nemesis: Nemesis | None = None
    try:
        cluster.start()
        redis = "a Redis Cluster of 3 masters" if config.cluster else "redis"
        say(f"cluster up in {directory}: {redis}, emulator, {config.replicas} replicas")
        hooks = Webhooks(cluster.receiver, checker, config.seed)
        readers = Readers(cluster.settings(), checker, config.shares.queues, config.waiters)
        readers.start()
        load = Load(
            cluster.settings(),
            checker,
            config.seed,
            config.requests,
            config.rate,
            config.producers,
            config.shares,
            hooks.url,
            readers.pending.put,
        )
        nemesis = Nemesis(
            cluster, config.seed, gap=config.gap, pace=config.pace, kinds=tuple(config.kinds)
        )
        load.start()
        nemesis.start()
        watched = nemesis
        _watch(say, load, lambda: f"{load.submitted}/{config.requests} submitted, "
               f"{checker.seen_count()} seen, {sum(watched.counts().values())} faults",
               cluster)  # fmt: skip
        load.join()
        load_seconds = time.monotonic() - started
        nemesis.load_done()
        nemesis.join(timeout=600)
        nemesis.stop_and_heal()
        say(f"load done in {load_seconds:.1f} s; faults healed: {dict(nemesis.counts())}")
        drain_start = time.monotonic()
        deadline = drain_start + config.drain_timeout
        while not checker.wait_all_seen(timeout=10):
            left = len(checker.outstanding())
            say(f"draining: {left} results outstanding")
            if time.monotonic() > deadline:
                say(f"drain timed out; batchd's own view: {_diagnose(cluster)}")
                break
            cluster.ensure_replicas()
        # A moment for any late duplicate to show itself.
        time.sleep(2.0)
        drain_seconds = time.monotonic() - drain_start
        readers.close()
        # What was done when, beside the processes' own logs (kept with --dir).
        (directory / "faults.log").write_text(
            "".join(f"{i.at:8.2f}s {i.kind}: {i.detail}\n" for i in nemesis.log)
        )
        verdict = _verdict(cluster, checker)
        processing = _processing_left(cluster)
        logs = cluster.logs()
        report = Report(
            config=config,
            verdict=verdict,
            faults=nemesis.counts(),
            wall=time.monotonic() - started,
            load_seconds=load_seconds,
            drain_seconds=drain_seconds,
            submit_retries=load.submit_retries,
            api_retries=sum(text.count('"api call failed, retrying"') for _, text in logs),
            batchd_retries=_counter(cluster, "retries"),
            webhook_failures=hooks.failed,
            processing_left=processing,
            nemesis_errors=nemesis.errors + load.errors + readers.errors,
            leaks=scan_for_secrets(cluster, logs),
            replica_starts=len(logs),
            tracebacks=_tracebacks(logs),
            lost_takes=readers.lost_takes,
            restarted=cluster.restarted if isinstance(cluster, ShardedCluster) else 0,
        )
        return report
    finally:
        if nemesis is not None:
            nemesis.stop_and_heal()
        if readers is not None:
            readers.close()
        cluster.close()
        if own_dir and not config.keep:
            shutil.rmtree(directory, ignore_errors=True)


def _watch(say: Any, load: Load, line: Any, cluster: Cluster) -> None:
    """Report progress every few seconds until the load's threads are done; on a Redis
    Cluster, restart replicas that exited on their own, as a supervisor would."""
    last = 0.0
    while load.running():
        if time.monotonic() - last >= 10:
            say(f"load: {line()}")
            last = time.monotonic()
        if isinstance(cluster, ShardedCluster):
            cluster.restart_exited()
        time.sleep(0.2)


def _client(cluster: Cluster) -> Client:
    return Client(settings=cluster.settings())


def _counter(cluster: Cluster, name: str) -> int:
    with _client(cluster) as client:
        per = client.store.read(counter_store.read(client.keys, list(client.settings.accounts)))
        return counter_store.total(per).get(name, 0)


def _verdict(cluster: Cluster, checker: Checker) -> Verdict:
    with _client(cluster) as client:
        leftovers: dict[str, list[str]] = {}
        # Reply queues and consumers' in-flight lists (a queue's cursor and consumer registry
        # are hashes under the same prefix).
        for key in client.redis.scan_iter(match=f"{client.keys.prefix}:reply:*", _type="list"):
            ids = [orjson.loads(raw)["id"] for raw in client.redis.lrange(key, 0, -1)]
            if ids:
                leftovers[key.decode()] = ids
        states: dict[str, str] = {}
        for rid in list(checker.expected):
            try:
                states[rid] = client.get(rid).state
            except RequestNotFoundError:
                states[rid] = "missing"
    audit = cluster.emulator.audit()[cluster.emulator.api_key]
    return checker.verdict(leftovers, states, audit)


def _diagnose(cluster: Cluster) -> dict[str, Any]:
    """What batchd's own records say, to point at where a stuck request sits."""
    from batchd.commands import gather_status

    status = gather_status(cluster.settings())
    states = Counter(a["state"] for a in status["assemblies"])
    return {"lanes": status["lanes"], "assemblies": dict(states), "counters": status["counters"]}


def _processing_left(cluster: Cluster) -> int:
    """Requests the emulator still processes; a live batch nobody follows would show here."""
    deadline = time.monotonic() + 10
    while True:
        audit = cluster.emulator.audit()[cluster.emulator.api_key]
        left = int(audit.get("processing", 0))
        if left == 0 or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def scan_for_secrets(cluster: Cluster, logs: list[tuple[str, str]]) -> list[str]:
    """Where the API key or the webhook secret appears: replica logs, or any Redis value."""
    found: list[str] = []
    for name, text in logs:
        for secret in SECRETS:
            if secret in text:
                found.append(f"{name}/daemon.log holds {secret[:8]}...")
    with _client(cluster) as client:
        from tests.security.scan import redis_values

        for key, value in redis_values(client.redis):
            for secret in SECRETS:
                if secret.encode() in value or secret.encode() in key:
                    found.append(f"redis key {key[:80]!r} holds {secret[:8]}...")
    return found


_TRACEBACK = re.compile(r"Traceback \(most recent call last\)")


def _tracebacks(logs: list[tuple[str, str]]) -> list[str]:
    """Replicas whose logs hold a Python traceback (logged exceptions included)."""
    return [f"{name}: {len(_TRACEBACK.findall(text))}" for name, text in logs
            if _TRACEBACK.search(text)]  # fmt: skip
