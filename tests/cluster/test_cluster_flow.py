"""batchd on a Redis Cluster: accounts and reply queues on different masters, the CLI and
/metrics, and the refusal to start without a Redis for rq."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.cluster.conftest import (
    ACCOUNTS,
    QUEUE,
    ClusterStack,
    Producer,
    assert_exactly_once,
    replicated,
)
from tests.observe.conftest import ops_port, scrape, total
from tests.support.daemon import wait_for


def test_two_accounts_and_a_reply_queue_on_three_masters(stack: ClusterStack) -> None:
    """Requests of two accounts on two masters reach a reply queue on a third, each once."""
    keys = stack.client.keys
    owners = {
        stack.cluster.node_for_key(keys.counters(ACCOUNTS[0])).port,
        stack.cluster.node_for_key(keys.counters(ACCOUNTS[1])).port,
        stack.cluster.node_for_key(keys.reply_queue(QUEUE)).port,
    }
    assert len(owners) == 3
    stack.daemon(BATCHD_BATCH__MAX_REQUESTS="100")
    ids = {account: stack.submit(150, account=account) for account in ACCOUNTS}
    stack.wait_ended(300)
    replies = stack.reply_ids()
    assert sorted(replies) == sorted(ids[ACCOUNTS[0]] + ids[ACCOUNTS[1]])
    for account in ACCOUNTS:
        assert_exactly_once(stack, ids[account], account)


def test_live_migration_of_an_accounts_slot_loses_nothing(own_stack: ClusterStack) -> None:
    """The account's slot moved live mid-run, a producer submitting: each request ends once."""
    stack = own_stack
    stack.daemon(BATCHD_BATCH__MAX_REQUESTS="100")
    ids = stack.submit(300)
    wait_for(lambda: stack.counters().get("batches_created", 0) >= 1, 30, "a first batch")
    slot = stack.slot("default")
    source = stack.cluster.owner(slot)
    target = next(m for m in stack.cluster.masters() if m is not source)
    in_flight = stack.ended() < len(ids)
    # Slowly, so the daemon's steps and the producer's submits meet the slot split between two
    # masters (the cluster answers TRYAGAIN to a script whose keys are on both sides).
    with Producer(stack, batches=20, size=10) as producer:
        migration = stack.cluster.migrate_slot(
            slot, target, batch=20, between_batches=lambda moved: time.sleep(0.05)
        )
    assert in_flight
    assert migration.batches > 5
    assert stack.cluster.owner(slot) is target
    ids += producer.ids
    stack.wait_ended(len(ids))
    assert_exactly_once(stack, ids)


def test_master_killed_mid_run_loses_nothing_and_pays_nothing_twice(
    own_stack: ClusterStack,
) -> None:
    """The account's master killed -9 mid-run, its replica promoted: nothing lost or paid twice."""
    stack = own_stack
    stack.emulator.set_profile({"processing_time": [0.5, 0.5]})
    stack.daemon(BATCHD_BATCH__MAX_REQUESTS="100")
    ids = stack.submit(600)
    # Acknowledged submits are on the replica before the kill (WAIT covers every earlier write).
    assert replicated(stack.cluster, stack.slot("default"))
    wait_for(lambda: stack.counters().get("batches_created", 0) >= 2, 30, "batches in flight")
    assert stack.ended() < len(ids)
    killed = stack.cluster.kill_master(slot=stack.slot("default"))
    stack.cluster.wait_failover()
    assert stack.cluster.owner(stack.slot("default")) is not killed
    stack.wait_ended(len(ids), timeout=120)
    assert_exactly_once(stack, ids)


def test_status_json_and_metrics_read_the_whole_cluster(stack: ClusterStack) -> None:
    """`status --json` and /metrics count both accounts' work, kept on different masters."""
    daemon = stack.daemon(BATCHD_BATCH__MAX_REQUESTS="50")
    for account in ACCOUNTS:
        stack.submit(20, account=account)
    stack.wait_ended(40)
    proc = subprocess.run(
        [sys.executable, "-m", "batchd", "status", "--json"],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["counters"]["submitted"] == 40
    assert status["counters"]["ended:succeeded"] == 40
    assert status["workers"]["stage_workers"] >= 1
    assert status["processes"] == 1
    samples = scrape(ops_port(daemon))
    assert total(samples, "batchd_requests_submitted_total") == 40
    assert {a: total(samples, "batchd_requests_submitted_total", account=a) for a in ACCOUNTS} == {
        a: 20 for a in ACCOUNTS
    }


def test_run_on_a_cluster_without_a_redis_for_rq_exits_2_naming_the_fix(
    stack: ClusterStack,
) -> None:
    """`batchd run` on a cluster without a Redis for rq exits 2 naming BATCHD_REDIS__RQ_URL."""
    env = stack.env()
    del env["BATCHD_REDIS__RQ_URL"]
    del env["BATCHD_REDIS_URL"]
    proc = subprocess.run(
        [sys.executable, "-m", "batchd", "run", "--redis-url", stack.cluster.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "BATCHD_REDIS__RQ_URL" in proc.stderr
    assert "Traceback" not in proc.stderr
