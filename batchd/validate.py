"""What can be known about a request at submit time, checked before anything is stored.

`prepare` turns a producer's submit into the exact bytes batchd keeps, or raises a clear
`InvalidRequestError` / `RequestTooLargeError` naming the field.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from batchd.errors import InvalidRequestError, RequestTooLargeError
from batchd.pricing import SHORT_NAMES
from batchd.settings import ACCOUNT_NAME, Settings
from batchd.store.records import Lane
from batchd.store.requests import NewRequest
from batchd.webhooks.urls import check_callback_url

#: Bytes a request adds to a batch body besides its params: `{"custom_id":"<26>","params":}`.
FRAMING = len('{"custom_id":"","params":}') + 26
#: Bytes of the body's own envelope: `{"requests":[` and `]}`.
BODY_ENVELOPE = len('{"requests":[]}')

_REPLY_TO = re.compile(r"^[A-Za-z0-9_.:/@-]+$")
_TAG = re.compile(r"^[A-Za-z0-9_.:/@-]{1,64}$")
_BETA = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


#: Floats in this range are written alike by orjson and json (shortest round trip, no
#: exponent); outside it the two spell exponents differently (`1e-07` against `1e-7`).
_PLAIN_FLOATS = (1e-4, 1e16)
#: Values `_plain` looks at before it leaves the rest to json.dumps (which also finds a value
#: that holds itself, where a walk without a bound would never end).
_PLAIN_NODES = 100_000


def _plain(value: Any) -> bool:
    """Whether `value` holds only JSON's own types, exactly (no subclasses), and floats in
    `_PLAIN_FLOATS` (so no NaN or Infinity): what orjson writes byte for byte as `json.dumps`
    does. orjson itself refuses the rest of what json would treat otherwise (a key that is not a
    string, an integer beyond 64 bits, a lone surrogate, nesting past 254 levels)."""
    low, high = _PLAIN_FLOATS
    stack = [value]
    pop, extend = stack.pop, stack.extend
    for _ in range(_PLAIN_NODES):
        if not stack:
            return True
        v = pop()
        t = type(v)
        if t is str or t is int or t is bool or v is None:
            continue
        if t is dict:
            extend(v.values())
        elif t is list or t is tuple:
            extend(v)
        elif t is float:
            if not (v == 0.0 or low <= abs(v) < high):
                return False
        else:
            return False
    return False


def encode_json(value: Any, field: str) -> bytes:
    """Compact UTF-8 JSON, refusing what JSON cannot carry (NaN, lone surrogates, objects).

    orjson writes it where its bytes are json's (a tenth of the time for a request's params);
    anything else goes through `json.dumps`, which decides, and words the refusal."""
    if _plain(value):
        try:
            return orjson.dumps(value)
        except orjson.JSONEncodeError:
            pass  # json.dumps says what is wrong, or writes what orjson will not
    try:
        text = json.dumps(
            value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_mapping
        )
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(
            f"{field}: contains text that is not valid Unicode (a lone surrogate?)", field=field
        ) from exc
    except ValueError as exc:
        raise InvalidRequestError(
            f"{field}: {exc} (NaN and Infinity are not JSON)", field=field
        ) from exc
    except TypeError as exc:
        raise InvalidRequestError(f"{field}: not JSON-serialisable: {exc}", field=field) from exc
    except RecursionError as exc:
        raise InvalidRequestError(f"{field}: nested too deeply", field=field) from exc


def _mapping(value: Any) -> Any:
    """json.dumps encodes only dicts; any other read-only Mapping is encoded as one."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _short(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:8]


#: What each part of a body digest stands for, to name what differs when a key is reused.
DIGEST_PARTS = {
    "p": "params",
    "r": "reply_to",
    "c": "callback_url",
    "m": "metadata",
    "o": "priority",
    "t": "tag",
    "b": "betas",
    "d": "deadline",
}


def body_digest(
    params: bytes,
    reply_to: str,
    callback_url: str,
    metadata: str,
    priority: int,
    tag: str,
    betas: Sequence[str],
    deadline_ms: int | None,
) -> str:
    """A digest of everything a request carries, part by part (`p:1a2b3c4d,r:...`), so a
    repeated idempotency key with another body is refused naming what differs."""
    parts = [f"p:{_short(params)}"]
    for name, value in (
        ("r", reply_to),
        ("c", callback_url),
        ("m", metadata),
        ("o", str(priority) if priority else ""),
        ("t", tag),
        ("b", ",".join(sorted(set(betas)))),
        ("d", "" if deadline_ms is None else str(deadline_ms)),
    ):
        if value:
            parts.append(f"{name}:{_short(value.encode())}")
    return ",".join(parts)


def digest_differences(first: str, second: str) -> list[str]:
    """The names of the fields whose digests differ between two body digests."""

    def split(d: str) -> dict[str, str]:
        return dict(p.split(":", 1) for p in d.split(",") if ":" in p)

    a, b = split(first), split(second)
    return [DIGEST_PARTS.get(k, k) for k in DIGEST_PARTS if a.get(k) != b.get(k)]


#: An epoch time in seconds past this is taken for milliseconds sent by mistake (year 5138).
_EPOCH_SECONDS_MAX = 1e11


def parse_deadline(value: Any) -> int | None:
    """A producer's deadline as epoch milliseconds: a timezone-aware datetime, epoch seconds
    (int or float), or an ISO 8601 time with its offset (`2026-01-02T09:00:00Z`); None for none.
    Raises InvalidRequestError (field `deadline`) for anything else, a time without a zone
    included: which 09:00 is meant cannot be guessed."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise InvalidRequestError(
                    f"deadline: {text[:64]!r} is not an ISO 8601 time (e.g. "
                    "2026-01-02T09:00:00Z) or epoch seconds",
                    field="deadline",
                ) from None
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidRequestError(
                "deadline: the time has no timezone (give one, e.g. 2026-01-02T09:00:00Z or "
                "datetime(..., tzinfo=UTC))",
                field="deadline",
            )
        return int(value.timestamp() * 1000)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequestError(
            "deadline: a datetime, epoch seconds or an ISO 8601 time", field="deadline"
        )
    if not math.isfinite(value) or value <= 0 or value > _EPOCH_SECONDS_MAX:
        raise InvalidRequestError(
            "deadline: epoch seconds must be a positive time (not milliseconds)", field="deadline"
        )
    return int(value * 1000)


def check_params(params: Any) -> None:
    if not isinstance(params, Mapping):
        raise InvalidRequestError(
            f"params: must be a JSON object, got {type(params).__name__}", field="params"
        )
    model = params.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError(
            "params.model: required, a non-empty string", field="params.model"
        )
    max_tokens = params.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidRequestError(
            "params.max_tokens: required, an integer >= 1", field="params.max_tokens"
        )
    messages = params.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError(
            "params.messages: required, a non-empty list", field="params.messages"
        )
    if params.get("stream") is True:
        raise InvalidRequestError(
            "params.stream: streaming is not available in batches; remove `stream`",
            field="params.stream",
        )
    for k in params:
        if not isinstance(k, str):
            raise InvalidRequestError(f"params: keys must be strings, got {k!r}", field="params")


def prepare(
    settings: Settings,
    params: Any,
    *,
    account: str | None = None,
    priority: int = 0,
    key: str | None = None,
    reply_to: str | None = None,
    callback_url: str | None = None,
    metadata: Any = None,
    known_accounts: frozenset[str] | None = None,
    tag: str | None = None,
    betas: Sequence[str] | None = None,
    interactive: bool = False,
    deadline_ms: int | None = None,
) -> NewRequest:
    """Validate one submit and encode it; raises a SubmitError subclass naming the field."""
    sub = settings.submit
    account = settings.default_account if account is None else account
    if not isinstance(account, str) or not ACCOUNT_NAME.fullmatch(account):
        raise InvalidRequestError(
            f"account: must match {ACCOUNT_NAME.pattern}, got {account!r}", field="account"
        )
    if known_accounts and account not in known_accounts:
        raise InvalidRequestError(
            f"account: {account!r} is not configured on the daemon "
            f"(known: {', '.join(sorted(known_accounts))})",
            field="account",
        )
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidRequestError("priority: must be an integer", field="priority")
    if not 0 <= priority < sub.priorities:
        raise InvalidRequestError(
            f"priority: must be between 0 and {sub.priorities - 1}, got {priority}",
            field="priority",
        )
    check_params(params)
    body = encode_json(params, "params")
    size = len(body) + FRAMING
    limit = settings.batch.max_bytes - BODY_ENVELOPE
    if size > limit:
        raise RequestTooLargeError(
            f"params: the encoded request is {size} bytes; a batch holds at most {limit}",
            field="params",
        )
    key_json = ""
    if key is not None:
        if not isinstance(key, str) or not key:
            raise InvalidRequestError("key: must be a non-empty string", field="key")
        if len(key) > sub.max_key_length:
            raise InvalidRequestError(
                f"key: at most {sub.max_key_length} characters, got {len(key)}", field="key"
            )
        key_json = encode_json(key, "key").decode()
    if reply_to is not None:
        if (
            not isinstance(reply_to, str)
            or not reply_to
            or len(reply_to) > sub.max_reply_to_length
            or not _REPLY_TO.fullmatch(reply_to)
        ):
            raise InvalidRequestError(
                f"reply_to: 1 to {sub.max_reply_to_length} characters of "
                "letters, digits and _.:/@-",
                field="reply_to",
            )
    cb = ""
    if callback_url is not None:
        cb = check_callback(callback_url, settings)
    md = ""
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise InvalidRequestError("metadata: must be a JSON object", field="metadata")
        encoded = encode_json(metadata, "metadata")
        if len(encoded) > sub.max_metadata_bytes:
            raise InvalidRequestError(
                f"metadata: at most {sub.max_metadata_bytes} bytes encoded, got {len(encoded)}",
                field="metadata",
            )
        md = encoded.decode()
    if tag is not None and (not isinstance(tag, str) or not _TAG.fullmatch(tag)):
        raise InvalidRequestError(
            "tag: 1 to 64 characters of letters, digits and _.:/@-", field="tag"
        )
    beta_list = check_betas(betas, settings)
    if deadline_ms is not None and (
        isinstance(deadline_ms, bool) or not isinstance(deadline_ms, int) or deadline_ms <= 0
    ):
        raise InvalidRequestError(
            "deadline: must be a time (epoch milliseconds, or an ISO 8601 time)", field="deadline"
        )
    return NewRequest(
        account=account,
        lane=Lane.of(priority, interactive=interactive, betas=beta_list),
        params=body,
        size=size,
        key=key,
        key_json=key_json,
        body_digest=body_digest(
            body, reply_to or "", cb, md, priority, tag or "", beta_list, deadline_ms
        )
        if key is not None
        else "",
        reply_to=reply_to or "",
        callback_url=cb,
        metadata=md,
        tag=tag or "",
        deadline_ms=deadline_ms,
        estimate=estimate_basis(params),
    )


def estimate_basis(params: Mapping[str, Any]) -> str:
    """`<max_tokens>~<short name>` for a built-in priced model, else `<max_tokens> <model>`
    (cut short, the record's separator out, no leading `~`): kept on the record so a spend cap
    can price the request before it is sent without reading its params."""
    model = str(params["model"])
    short = SHORT_NAMES.get(model)
    if short is not None:
        return f"{params['max_tokens']}{short}"
    model = model[:200].replace("\x1f", "_")
    if model.startswith("~"):
        model = "_" + model[1:]
    return f"{params['max_tokens']} {model}"


def check_betas(betas: Sequence[str] | None, settings: Settings) -> tuple[str, ...]:
    """The betas a request's batch must be created with, checked against the known ones."""
    if betas is None:
        return ()
    if isinstance(betas, str):
        betas = [b.strip() for b in betas.split(",") if b.strip()]
    if not isinstance(betas, Sequence) or not all(isinstance(b, str) for b in betas):
        raise InvalidRequestError("betas: must be a list of beta names", field="betas")
    found = tuple(sorted(set(betas)))
    bad = [b for b in found if not _BETA.fullmatch(b)]
    unknown = [b for b in found if b not in settings.api.known_betas]
    if bad or unknown:
        shown = ", ".join(f"`{b}`" for b in (bad or unknown))
        raise InvalidRequestError(
            f"Unexpected value(s) {shown} for the `anthropic-beta` header. Please consult our "
            "documentation at docs.anthropic.com or try again without the header.",
            field="betas",
        )
    return found


def check_callback(url: Any, settings: Settings) -> str:
    """Check a callback URL at submit time (scheme, host, length)."""
    if not isinstance(url, str):
        raise InvalidRequestError("callback_url: must be a string", field="callback_url")
    return check_callback_url(url, settings)
