"""The webhook outbox: a delivery record per request with a `callback_url`, the account's due
set (scored by when each is due), its dead set, and the endpoints that answered 410.

A delivery's states: pending -> delivered | dead | gone; a retry puts dead, gone or delivered
back to pending. Every change is one script (see the `wh_*.lua` headers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from batchd.store.keys import Keys, request_id, split_request_id, webhook_id
from batchd.store.runner import Read
from batchd.store.scripts import Call, call, text

Outcome = Literal["delivered", "retry", "dead", "gone"]


@dataclass(frozen=True)
class Lease:
    """A claimed delivery, body not loaded yet: the sender may still hand it back untried."""

    account: str
    token: str
    url: str
    webhook_id: str
    request_id: str
    attempts: int
    claim_id: str


@dataclass(frozen=True)
class Delivery(Lease):
    """A claimed delivery with its body, ready to send."""

    body: bytes = b""


@dataclass(frozen=True)
class Stopped:
    """A delivery the claim ended without sending, because its URL answered 410 before."""

    account: str
    token: str
    request_id: str
    url: str


@dataclass(frozen=True)
class Claimed:
    """What one claim took, what it stopped, when the next is due, and Redis's clock then."""

    leases: list[Lease]
    stopped: list[Stopped]
    next_due_ms: int | None
    now_ms: int


@dataclass(frozen=True)
class Settle:
    """How one attempt ended, to be written back: `delay_ms` is set only for a retry."""

    delivery: Delivery
    outcome: Outcome
    status: int | None = None
    error: str = ""
    delay_ms: int | None = None


@dataclass(frozen=True)
class DeliveryRecord:
    """A delivery as stored, for operators: `webhooks dead` prints these."""

    account: str
    token: str
    request_id: str
    webhook_id: str
    url: str
    state: str
    attempts: int
    last_status: int | None
    last_error: str
    created_ms: int | None
    last_ms: int | None
    ended_ms: int | None
    next_ms: int | None

    @classmethod
    def from_hash(cls, account: str, token: str, raw: dict[Any, Any]) -> DeliveryRecord:
        values = {text(k): v for k, v in raw.items()}

        def field(name: str) -> str:
            v = values.get(name)
            return v.decode("utf-8", "replace") if isinstance(v, bytes) else text(v)

        def number(name: str) -> int | None:
            value = field(name)
            try:
                return int(float(value)) if value else None
            except ValueError:
                return None

        return cls(
            account=account,
            token=token,
            request_id=field("rid") or request_id(account, token),
            webhook_id=field("wid") or webhook_id(token),
            url=field("url"),
            state=field("state"),
            attempts=number("attempts") or 0,
            last_status=number("last_status"),
            last_error=field("last_error"),
            created_ms=number("created"),
            last_ms=number("last_at"),
            ended_ms=number("ended"),
            next_ms=number("next"),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "webhook_id": self.webhook_id,
            "url": self.url,
            "state": self.state,
            "attempts": self.attempts,
            "last_status": self.last_status,
            "last_error": self.last_error or None,
            "created_ms": self.created_ms,
            "last_attempt_ms": self.last_ms,
            "ended_ms": self.ended_ms,
        }


def _mapping(raw: Any) -> dict[Any, Any]:
    if isinstance(raw, Exception) or not raw:
        return {}
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=True))


def enqueue(keys: Keys, account: str, token: str, url: str, body: bytes, now_ms: int) -> Read[None]:
    """Put a delivery in the outbox, due now: exactly what the pipeline's fan-out writes."""
    return Read(
        [
            (
                "HSET",
                keys.delivery(account, token),
                "url",
                url,
                "body",
                body,
                "wid",
                webhook_id(token),
                "rid",
                request_id(account, token),
                "attempts",
                0,
                "state",
                "pending",
                "created",
                now_ms,
            ),
            ("ZADD", keys.deliveries_due(account), now_ms, token),
        ],
        lambda out: None,
    )


def due_head(keys: Keys, account: str, now_ms: int, n: int) -> Read[list[str]]:
    """Up to `n` tokens due by `now_ms`, earliest first (CLAIM checks each again)."""
    return Read(
        [("ZRANGEBYSCORE", keys.deliveries_due(account), "-inf", now_ms, "LIMIT", 0, n)],
        lambda out: [text(t) for t in out[0]],
    )


def next_due(keys: Keys, account: str) -> Read[int | None]:
    def parse(out: list[Any]) -> int | None:
        raw = out[0]
        if not raw:
            return None
        score = raw[0][1] if isinstance(raw[0], list | tuple) else raw[1]
        return int(float(score))

    return Read([("ZRANGE", keys.deliveries_due(account), 0, 0, "WITHSCORES")], parse)


def claim(
    keys: Keys, account: str, tokens: Sequence[str], lease_ms: int, claim_id: str, retention_ms: int
) -> Call[Claimed]:
    """WH_CLAIM: lease these due deliveries (each checked again against Redis's clock)."""

    def parse(reply: Any) -> Claimed:
        claimed, gone, next_due, now = reply
        leases = [
            Lease(
                account=account,
                token=text(claimed[i]),
                url=text(claimed[i + 1]),
                webhook_id=text(claimed[i + 2]),
                request_id=text(claimed[i + 3]) or request_id(account, text(claimed[i])),
                attempts=int(claimed[i + 4]),
                claim_id=claim_id,
            )
            for i in range(0, len(claimed), 5)
        ]
        stopped = [
            Stopped(account, text(gone[i]), text(gone[i + 1]), text(gone[i + 2]))
            for i in range(0, len(gone), 3)
        ]
        return Claimed(leases, stopped, int(float(next_due)) if next_due else None, int(now))

    return call(
        "wh_claim",
        [
            keys.deliveries_due(account),
            keys.endpoints_gone(account),
            keys.deliveries_dead(account),
            *[keys.delivery(account, t) for t in tokens],
        ],
        [lease_ms, claim_id, retention_ms, *tokens],
        parse,
    )


def bodies(keys: Keys, leases: Sequence[Lease]) -> Read[list[Delivery]]:
    """The bodies of claimed deliveries (a pending record never expires, so it is there)."""
    return Read(
        [("HGET", keys.delivery(lease.account, lease.token), "body") for lease in leases],
        lambda out: [
            Delivery(**vars(lease), body=body if isinstance(body, bytes) else b"")
            for lease, body in zip(leases, out, strict=True)
        ],
    )


def settle(keys: Keys, r: Settle, retention_ms: int) -> Call[int]:
    """WH_SUCCEED or WH_FAIL for one attempt's outcome."""
    d = r.delivery
    record = keys.delivery(d.account, d.token)
    due = keys.deliveries_due(d.account)
    status = "" if r.status is None else str(r.status)
    if r.outcome == "delivered":
        return call("wh_succeed", [record, due], [d.token, retention_ms, status], int)
    return call(
        "wh_fail",
        [record, due, keys.deliveries_dead(d.account), keys.endpoints_gone(d.account)],
        [
            d.token,
            d.claim_id,
            "" if r.delay_ms is None else r.delay_ms,
            "gone" if r.outcome == "gone" else "dead",
            status,
            r.error,
            retention_ms,
            d.url,
        ],
        int,
    )


def release(keys: Keys, lease: Lease, delay_ms: int) -> Call[int]:
    """WH_RELEASE: hand a claimed delivery back untried, due after `delay_ms`."""
    return call(
        "wh_release",
        [keys.delivery(lease.account, lease.token), keys.deliveries_due(lease.account)],
        [lease.token, lease.claim_id, delay_ms],
        int,
    )


def retry(keys: Keys, account: str, token: str) -> Call[str]:
    """WH_RETRY: send a delivery again from its first attempt; the state it had before."""
    return call(
        "wh_retry",
        [
            keys.delivery(account, token),
            keys.deliveries_due(account),
            keys.deliveries_dead(account),
            keys.endpoints_gone(account),
        ],
        [token],
        text,
    )


# -- operators' reads --------------------------------------------------------------------------


def read_delivery(keys: Keys, account: str, token: str) -> Read[DeliveryRecord | None]:
    def parse(out: list[Any]) -> DeliveryRecord | None:
        raw = _mapping(out[0])
        return DeliveryRecord.from_hash(account, token, raw) if raw else None

    return Read([("HGETALL", keys.delivery(account, token))], parse)


def dead_tokens(
    keys: Keys, account: str, limit: int | None = None
) -> Read[list[tuple[str, float]]]:
    end = -1 if limit is None else limit - 1

    def parse(out: list[Any]) -> list[tuple[str, float]]:
        raw = out[0]
        if raw and not isinstance(raw[0], list | tuple):
            raw = list(zip(raw[::2], raw[1::2], strict=True))
        return [(text(t), float(s)) for t, s in raw]

    return Read([("ZREVRANGE", keys.deliveries_dead(account), 0, end, "WITHSCORES")], parse)


def read_deliveries(
    keys: Keys, account: str, tokens: Sequence[str]
) -> Read[list[DeliveryRecord | None]]:
    return Read(
        [("HGETALL", keys.delivery(account, t)) for t in tokens],
        lambda out: [
            DeliveryRecord.from_hash(account, t, _mapping(raw)) if _mapping(raw) else None
            for t, raw in zip(tokens, out, strict=True)
        ],
    )


def gone_endpoints(keys: Keys, account: str) -> Read[list[tuple[str, int]]]:
    return Read(
        [("HGETALL", keys.endpoints_gone(account))],
        lambda out: [
            (k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k), int(v))
            for k, v in _mapping(out[0]).items()
        ],
    )


def forget_gone(keys: Keys, account: str) -> Read[None]:
    return Read([("DEL", keys.endpoints_gone(account))], lambda out: None)


def exists(keys: Keys, account: str, token: str) -> Read[bool]:
    return Read([("EXISTS", keys.delivery(account, token))], lambda out: bool(out[0]))


def counts(keys: Keys, accounts: Sequence[str]) -> Read[dict[str, tuple[int, int]]]:
    """(queued, dead) deliveries per account."""
    names = list(accounts)
    commands: list[tuple[Any, ...]] = []
    for a in names:
        commands += [("ZCARD", keys.deliveries_due(a)), ("ZCARD", keys.deliveries_dead(a))]
    return Read(
        commands,
        lambda out: {a: (int(out[2 * i]), int(out[2 * i + 1])) for i, a in enumerate(names)},
    )


def parse_ident(ident: str) -> tuple[str | None, str] | None:
    """(account or None, token) of a delivery named by request id or `msg_<token>`."""
    if ident.startswith("msg_"):
        return None, ident[len("msg_") :]
    try:
        return split_request_id(ident)
    except ValueError:
        return None
