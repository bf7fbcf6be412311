"""How many of one host's deliveries the sender keeps queued: a fast host is kept busy."""

from __future__ import annotations

from batchd.webhooks.outbox import Lease
from batchd.webhooks.sender import HOST_QUEUE_MAX, WebhookSender
from tests.webhooks.support import make_settings


def sender(per_host: int = 2) -> WebhookSender:
    return WebhookSender(make_settings("redis://127.0.0.1:1/0", per_host=per_host), "unused")


def leases(host: str, n: int) -> list[Lease]:
    url = f"http://{host}/hook"
    return [Lease("default", f"t{i}", url, f"msg_t{i}", f"default.t{i}", 0, "c") for i in range(n)]


def test_unknown_host_queues_twice_its_connections() -> None:
    """A host with no attempts yet gets two deliveries per connection; the rest go back."""
    start, backlog = sender()._admit(leases("new.example", 10))
    assert (len(start), len(backlog)) == (4, 6)


def test_fast_host_queues_what_it_takes_within_the_backoff() -> None:
    """A host answering in 5 ms over 2 connections takes 400 a second: 400 stay queued here."""
    s = sender()
    s._note_latency("fast.example", 0.005)
    start, backlog = s._admit(leases("fast.example", 500))
    assert (len(start), len(backlog)) == (400, 100)


def test_slow_host_stays_at_twice_its_connections() -> None:
    """A host answering in 2 s keeps the floor of two deliveries per connection."""
    s = sender()
    for _ in range(20):
        s._note_latency("slow.example", 2.0)
    start, _ = s._admit(leases("slow.example", 10))
    assert len(start) == 4


def test_host_queue_has_a_ceiling() -> None:
    """However fast a host answers, no more than HOST_QUEUE_MAX of its deliveries wait here."""
    s = sender(per_host=64)
    s._note_latency("instant.example", 0.0001)
    start, _ = s._admit(leases("instant.example", HOST_QUEUE_MAX + 10))
    assert len(start) == HOST_QUEUE_MAX
