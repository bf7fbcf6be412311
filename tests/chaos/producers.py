"""The chaos run's producers and result readers, all through batchd's client library.

Producers submit with idempotency keys and retry until a ticket comes back (that is what
"acknowledged" means); readers drain reply queues, wait on requests and receive webhooks.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
from standardwebhooks import Webhook

from batchd import Client, Settings
from batchd.errors import (
    AckError,
    BatchdError,
    RedisUnavailableError,
    RequestNotFoundError,
    StoreError,
    WaitTimeoutError,
)
from tests.chaos.checker import Checker
from tests.webhooks.support import SECRET, Received, Receiver, Reply

#: Errors a producer or reader rides out while Redis restarts or loads its AOF.
#: What a producer or consumer sees while Redis restarts or fails over: it tries again.
TRANSIENT = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    RedisUnavailableError,
    StoreError,
)


def params(n: int, invalid: bool) -> dict[str, Any]:
    p: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 32,
        "messages": [{"role": "user", "content": f"chaos question {n}"}],
    }
    if invalid:
        p["temperature"] = 5  # the API ends it errored, a final error: not sent again
    return p


@dataclass
class Shares:
    """How requests are spread over the ways results come back."""

    wait: float = 0.1
    webhook: float = 0.15
    invalid: float = 0.01
    queues: int = 4
    #: Requests with a deadline, and of those the share no batch can make (due in 1 to 3 s;
    #: the others in 1 to 2 minutes).
    deadlines: float = 0.1
    unreachable: float = 0.5


@dataclass
class Load:
    """Producer threads submitting `total` requests at `rate` per second, all told."""

    settings: Settings
    checker: Checker
    seed: int
    total: int
    rate: float
    threads: int
    shares: Shares
    webhook_url: Callable[[int], str]
    on_wait: Callable[[str], None]
    submit_retries: int = 0
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._threads = [
            threading.Thread(target=self._produce, args=(i,), name=f"producer{i}", daemon=True)
            for i in range(self.threads)
        ]
        self._lock = threading.Lock()
        self.submitted = 0

    def start(self) -> None:
        self.started = time.monotonic()
        for t in self._threads:
            t.start()

    def join(self) -> None:
        for t in self._threads:
            t.join()

    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def _produce(self, index: int) -> None:
        client = Client(settings=self.settings)
        try:
            for n in range(index, self.total, self.threads):
                due = self.started + n / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self._submit(client, n)
        finally:
            client.close()

    def _submit(self, client: Client, n: int) -> None:
        draw = random.Random(f"{self.seed}:{n}")
        roll = draw.random()
        sh = self.shares
        channel = (
            "wait" if roll < sh.wait else "webhook" if roll < sh.wait + sh.webhook else "reply"
        )
        queue_name = f"chaos-{n % sh.queues}" if channel == "reply" else None
        callback = self.webhook_url(n) if channel == "webhook" else None
        body = params(n, invalid=draw.random() < sh.invalid)
        deadline: float | None = None
        if draw.random() < sh.deadlines:
            far = draw.random() >= sh.unreachable
            deadline = time.time() + (draw.uniform(60, 120) if far else draw.uniform(1, 3))
        while True:
            try:
                ticket = client.submit(
                    body,
                    key=f"chaos-{self.seed}-{n}",
                    reply_to=queue_name,
                    callback_url=callback,
                    metadata={"n": n},
                    deadline=deadline,
                )
                break
            except TRANSIENT:
                with self._lock:
                    self.submit_retries += 1
                time.sleep(0.1)
            except BatchdError as exc:
                self.errors.append(f"submit {n}: {exc}")
                return
        self.checker.acknowledge(n, ticket.id, channel, queue_name)
        if deadline is not None:
            self.checker.deadline(ticket.id, deadline)
        if channel == "wait":
            self.on_wait(ticket.id)
        with self._lock:
            self.submitted += 1


class Readers:
    """Reply-queue consumers and waiters, each on its own client, until `stop`."""

    def __init__(self, settings: Settings, checker: Checker, queues: int, waiters: int) -> None:
        self.settings = settings
        self.checker = checker
        self.queue_names = [f"chaos-{i}" for i in range(queues)]
        self.pending: queue.Queue[str] = queue.Queue()
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.lost_takes = 0
        self._threads = [
            threading.Thread(target=self._consume, args=(q,), name=f"reader-{q}", daemon=True)
            for q in self.queue_names
        ] + [
            threading.Thread(target=self._wait, name=f"waiter{i}", daemon=True)
            for i in range(waiters)
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def close(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(60)

    def _client(self) -> Client:
        return Client(settings=self.settings)

    def _consume(self, name: str) -> None:
        client = self._client()
        try:
            while not self.stop.is_set():
                try:
                    for result in client.replies(name, timeout=1.0, consumer="chaos"):
                        self.checker.reply(name, result.id, result.status)
                        self.checker.envelope(result.id, result.to_dict())
                        try:
                            client.ack(result)
                        except AckError:
                            # The take that handed it over was lost with a failed-over master:
                            # the reply is back on its queue and comes again (a redelivery).
                            self.lost_takes += 1
                            continue
                        self.checker.reply_acked(result.id)
                        if self.stop.is_set():
                            break
                except TRANSIENT:
                    time.sleep(0.1)  # an unacknowledged item comes back on the next call
        finally:
            client.close()

    def _wait(self) -> None:
        client = self._client()
        try:
            while not self.stop.is_set():
                try:
                    rid = self.pending.get(timeout=0.2)
                except queue.Empty:
                    continue
                while not self.stop.is_set():
                    try:
                        result = client.wait(rid, timeout=2.0)
                    except WaitTimeoutError:
                        continue
                    except TRANSIENT:
                        time.sleep(0.1)
                        continue
                    except RequestNotFoundError as exc:
                        self.errors.append(str(exc))
                        break
                    self.checker.waited(rid, result.status)
                    self.checker.envelope(rid, result.to_dict())
                    break
        finally:
            client.close()


class Webhooks:
    """Answers the receiver's deliveries: verifies each, fails some first attempts on purpose."""

    def __init__(self, receiver: Receiver, checker: Checker, seed: int, fail_share: float = 0.05):
        self.receiver = receiver
        self.checker = checker
        self.seed = seed
        self.fail_share = fail_share
        self.verifier = Webhook(SECRET)
        self.failed_once: set[str] = set()
        self.failed = 0
        self._lock = threading.Lock()
        receiver.reply = self.answer

    def url(self, n: int) -> str:
        return self.receiver.url(f"/hook/{n}")

    def answer(self, got: Received) -> Reply:
        try:
            self.verifier.verify(got.body, got.headers)
        except Exception:
            self.checker.bad_signature()
            return Reply(status=400)
        doc = orjson.loads(got.body)
        rid = doc["id"]
        with self._lock:
            first = rid not in self.failed_once
            if first and random.Random(f"{self.seed}:{rid}").random() < self.fail_share:
                self.failed_once.add(rid)
                self.failed += 1
                self.checker.webhook_refused(rid, got.headers["webhook-id"])
                return Reply(status=503, headers={"retry-after": "0"})
        self.checker.webhook(rid, got.headers["webhook-id"], got.body, doc["status"])
        self.checker.envelope(rid, doc)
        return Reply(status=200)
