"""The operator's look-ups and repairs: `batchd requests ...` and `batchd batches ...`.

Requests: show one, find one by idempotency key, list a batch's, and list, requeue or purge the
dead. Batches: list, show (batchd's view and the API's), cancel, and write their results.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, Any

from batchd.client import Client
from batchd.commands import _size
from batchd.errors import (
    EXIT_FAILURE,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    APIConnectionError,
    BatchdError,
    ConfigError,
    RequestNotFoundError,
)
from batchd.options import _need_redis, load_settings
from batchd.results import RequestState
from batchd.store import AssemblyRecord, AssemblyState
from batchd.store import assemblies as asm_store
from batchd.store import lanes as lane_store
from batchd.store import requests as req_store
from batchd.store.records import LaneId
from batchd.store.requests import DeadLetter

#: What each assembly state means, as `batches show` says it.
STATE_MEANING = {
    AssemblyState.ASSEMBLING: "requests are being claimed into it",
    AssemblyState.SEALED: "its body is fixed; its batch is due to be created",
    AssemblyState.SUBMITTING: "being created at the API",
    AssemblyState.SUBMITTED: "processing at the API",
    AssemblyState.ENDED: "ended at the API; its results are being applied",
    AssemblyState.DONE: "every request has ended or gone round again",
}
#: Characters of an error message `requests dead` shows in its table (`--json` has them all).
MESSAGE_WIDTH = 60
#: Request states read per round trip by `requests list`.
STATE_CHUNK = 500


def iso(ms: int | None) -> str | None:
    """Epoch milliseconds as `2026-01-31T12:00:00.123Z`."""
    if not ms:
        return None
    stamp = datetime.fromtimestamp(ms / 1000, UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@contextmanager
def _client(args: argparse.Namespace) -> Iterator[Client]:
    with Client(settings=_need_redis(load_settings(args))) as client:
        yield client


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell; the last one left as it is."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())


def _state_json(state: RequestState) -> dict[str, Any]:
    return {"id": state.id, "state": state.state, "attempts": state.attempts,
            "batch_id": state.batch_id,
            "result": state.result.to_dict() if state.result else None}  # fmt: skip


# -- requests ------------------------------------------------------------------------------------


def cmd_show(args: argparse.Namespace) -> int:
    with _client(args) as client:
        try:
            state = client.get(args.request_id)
        except RequestNotFoundError as exc:
            print(f"batchd: {exc}", file=sys.stderr)
            return EXIT_NOT_FOUND
        print(json.dumps(_state_json(state), indent=2))
    return 0


def cmd_find(args: argparse.Namespace) -> int:
    with _client(args) as client:
        try:
            state = client.find(args.key, account=args.account)
        except RequestNotFoundError as exc:
            print(f"batchd: {exc}", file=sys.stderr)
            return EXIT_NOT_FOUND
        print(json.dumps(_state_json(state), indent=2))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        batch = client.batch(args.batch)
        if batch is None:
            print(f"batchd: no batch {args.batch} known to batchd", file=sys.stderr)
            return EXIT_NOT_FOUND
        ids = client.batch_requests(batch)
        if not ids and batch.state is AssemblyState.DONE:
            ids = _ids_from_results(client, batch)
        rows: list[dict[str, Any]] = []
        for i in range(0, len(ids), STATE_CHUNK):
            part = ids[i : i + STATE_CHUNK]
            records = client.store.read(req_store.read_many(client.keys, part))
            for rid, record in zip(part, records, strict=True):
                rows.append({"id": rid, "state": str(record.status) if record else "unknown",
                             "attempts": record.attempts if record else None})  # fmt: skip
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"{len(rows)} requests in batch {batch.batch_id or _batchd_id(batch)}")
    _print_table(
        ("ID", "STATE", "ATTEMPTS"),
        [(r["id"], r["state"], str(r["attempts"] if r["attempts"] is not None else "-"))
         for r in rows],
    )  # fmt: skip
    return 0


def _ids_from_results(client: Client, batch: AssemblyRecord) -> list[str]:
    """A closed batch keeps no list of its requests: its results at the API name them."""
    if batch.batch_id is None:
        return []
    api = _api(client, batch.account, "list the requests of a closed batch")
    stream = api.results(batch.batch_id, results_url=batch.results_url,
                         betas=_betas(client, batch) or None, recover=True)  # fmt: skip
    try:
        return [f"{batch.account}.{line.custom_id}" for line in stream]
    finally:
        stream.close()


def _letter_json(x: DeadLetter) -> dict[str, Any]:
    etype, message = x.error
    return {"id": x.id, "account": x.account, "died_at": iso(x.died_ms), "attempts": x.attempts,
            "error": {"type": etype, "message": message}, "lane": x.lane,
            "requeueable": x.requeueable}  # fmt: skip


def cmd_dead(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _check_account(client, args.account)
        letters = client.dead(account=args.account, limit=args.limit, error_type=args.error_type)
    if args.json:
        for x in letters:
            print(json.dumps(_letter_json(x)))
        return 0
    if not letters:
        print("no dead requests")
        return 0
    rows = []
    for x in letters:
        etype, message = x.error
        short = message if len(message) <= MESSAGE_WIDTH else message[: MESSAGE_WIDTH - 1] + "…"
        rows.append((x.id, iso(x.died_ms) or "-", str(x.attempts),
                     "yes" if x.requeueable else "no (params gone)", etype, short))  # fmt: skip
    _print_table(("ID", "DIED AT", "ATTEMPTS", "REQUEUEABLE", "ERROR", "MESSAGE"), rows)
    return 0


def _selection(args: argparse.Namespace) -> dict[str, Any] | None:
    """`requests requeue|purge`'s choice as `requeue_dead`'s arguments; None when unclear."""
    filters = args.account is not None or args.error_type is not None
    if args.ids:
        if args.all or filters:
            return None
        return {"requests": args.ids}
    if not (args.all or filters):
        return None
    return {"account": args.account, "error_type": args.error_type, "every": args.all}


def cmd_requeue(args: argparse.Namespace) -> int:
    chosen = _selection(args)
    if chosen is None:
        print("batchd: name request ids, or select dead requests with --all, --account or "
              "--error-type (ids and a selection do not mix)", file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    with _client(args) as client:
        _check_account(client, args.account)
        outcomes = client.requeue_dead(**chosen)
    for rid, what in outcomes.items():
        print(f"{rid}: {what}")
    requeued = sum(1 for w in outcomes.values() if w == "requeued")
    print(f"requeued {requeued} of {len(outcomes)}")
    missed = any(w != "requeued" for w in outcomes.values())
    return EXIT_NOT_FOUND if args.ids and missed else 0


def cmd_purge(args: argparse.Namespace) -> int:
    chosen = _selection(args)
    if chosen is None:
        print("batchd: name request ids, or select dead requests with --all, --account or "
              "--error-type (ids and a selection do not mix)", file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    with _client(args) as client:
        _check_account(client, args.account)
        n = client.purge_dead(**chosen)
    print(f"purged {n} dead letters (their results stay readable until retention ends)")
    return EXIT_NOT_FOUND if args.ids and n < len(args.ids) else 0


def _check_account(client: Client, account: str | None) -> None:
    if account is not None and account not in client.settings.accounts:
        raise ConfigError(f"unknown account {account!r}", [f"account: {account}"])


# -- batches -------------------------------------------------------------------------------------


def _batchd_id(a: AssemblyRecord) -> str:
    return f"{a.account}.{a.id}"


def _api(client: Client, account: str, purpose: str) -> Any:
    """The account's API client; a ConfigError naming the setting when it has no key."""
    from batchd.api import BatchesClient

    if not client.settings.api_key(account):
        raise ConfigError(
            f"to {purpose}, batchd needs account {account!r}'s API key: set {_key_hint(account)}",
            [f"accounts.{account}.api_key: missing"],
        )
    return BatchesClient.from_settings(client.settings, account)


def _key_hint(account: str) -> str:
    return f"accounts.{account}.api_key, or BATCHD_ACCOUNTS__{account.upper()}__API_KEY"


def _betas(client: Client, a: AssemblyRecord) -> tuple[str, ...]:
    parsed = LaneId.parse(a.lane)
    if parsed is None or not parsed.beta_id:
        return ()
    return client.store.read(lane_store.betas_of(client.keys, a.account, parsed.beta_id))


def _find(client: Client, ref: str) -> AssemblyRecord | None:
    found = client.batch(ref)
    if found is None:
        print(f"batchd: no batch {ref} known to batchd (an API batch id, or batchd's "
              "<account>.<id> as `batchd status` and `batches list` show it)",
              file=sys.stderr)  # fmt: skip
    return found


def batch_view(a: AssemblyRecord) -> dict[str, Any]:
    """batchd's view of a batch, with names, states and ISO times (`batches show --json`)."""
    return {
        "id": _batchd_id(a),
        "batch_id": a.batch_id,
        "account": a.account,
        "lane": a.lane,
        "state": a.state.value if a.state is not None else "unknown",
        "requests": a.count,
        "bytes": a.content_length or a.bytes,
        "request_counts": a.counts,
        "polls": a.polls,
        "operator_canceled": a.operator_canceled,
        "created_at": iso(a.created_ms),
        "sealed_at": iso(a.sealed_ms),
        "submitted_at": iso(a.submitted_ms),
        "ended_at": iso(a.ended_ms),
        "closed_at": iso(a.closed_ms),
        "results_url": a.results_url,
    }


def _render(view: dict[str, Any], a: AssemblyRecord, api: dict[str, Any] | None,
            api_note: str | None) -> list[str]:  # fmt: skip
    meaning = STATE_MEANING.get(a.state) if a.state is not None else None
    lane = LaneId.parse(a.lane)
    lane_text = a.lane + (f" (priority {lane.priority})" if lane is not None else "")
    counts = ", ".join(f"{k} {v}" for k, v in a.counts.items()) or "not polled yet"
    rows = [
        ("batch", a.batch_id or "(not created at the API yet)"),
        ("batchd id", view["id"]),
        ("account", a.account),
        ("lane", lane_text),
        ("state", view["state"] + (f": {meaning}" if meaning else "")),
        ("requests", f"{a.count} ({_size(view['bytes'])})"),
        ("API counts", counts),
        ("polls", str(a.polls)),
        ("created", view["created_at"] or "-"),
        ("sent", view["submitted_at"] or "-"),
        ("ended", view["ended_at"] or "-"),
        ("closed", view["closed_at"] or "-"),
    ]
    if a.operator_canceled:
        rows.append(("canceled", "by an operator (`batches cancel`)"))
    lines = [f"{name:<12} {value}" for name, value in rows]
    lines.append("")
    if api is None:
        lines.append(f"the API's view: {api_note}")
        return lines
    lines.append("the API's view (retrieved now):")
    rc = api.get("request_counts") or {}
    for name, value in (
        ("status", api.get("processing_status")),
        ("counts", ", ".join(f"{k} {v}" for k, v in rc.items())),
        ("created at", api.get("created_at")),
        ("ended at", api.get("ended_at")),
        ("expires at", api.get("expires_at")),
        ("cancel at", api.get("cancel_initiated_at")),
        ("archived at", api.get("archived_at")),
        ("results", api.get("results_url")),
    ):
        if value:
            lines.append(f"  {name:<12} {value}")
    return lines


def cmd_batches_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        for account in client.settings.accounts:
            asms = client.store.read(asm_store.recent_batches(client.keys, account))
            pairs = [(account, x) for x in asms]
            for a in client.store.read(asm_store.read_many(client.keys, pairs)) if pairs else []:
                row = {"batch_id": a.batch_id, "id": _batchd_id(a), "account": account,
                       "assembly": a.id, "state": a.state.value if a.state else "unknown",
                       "requests": a.count}  # fmt: skip
                print(json.dumps(row))
    return 0


def cmd_batches_show(args: argparse.Namespace) -> int:
    with _client(args) as client:
        a = _find(client, args.batch_id)
        if a is None:
            return EXIT_NOT_FOUND
        view = batch_view(a)
        api: dict[str, Any] | None = None
        note: str | None = None
        if a.batch_id is None:
            note = "none yet: the batch has not been created at the API"
        elif not client.settings.api_key(a.account):
            note = f"not shown: it needs account {a.account!r}'s API key ({_key_hint(a.account)})"
        else:
            try:
                api = (
                    _api(client, a.account, "show it").retrieve(a.batch_id).model_dump(mode="json")
                )
            except BatchdError as exc:
                note = f"unavailable: {exc}"
    if args.json:
        print(json.dumps(view | ({"api": api} if api else {"api_error": note}), indent=2))
        return 0
    print("\n".join(_render(view, a, api, note)))
    return 0


def cmd_batches_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        a = _find(client, args.batch_id)
        if a is None:
            return EXIT_NOT_FOUND
        if a.batch_id is None:
            print(f"batchd: batch {_batchd_id(a)} has not been created at the API yet; there is "
                  "nothing to cancel there", file=sys.stderr)  # fmt: skip
            return EXIT_FAILURE
        api = _api(client, a.account, "cancel a batch")  # no key: refused before anything is set
        # Set before the call, so a fan-out racing the cancel ends its canceled lines canceled
        # rather than sending them again; unset when the cancel was refused.
        client.store.read(asm_store.operator_cancel(client.keys, a.account, a.id, True))
        try:
            batch = api.cancel(a.batch_id)
        except APIConnectionError:
            # No answer: the cancel may have been made. The API knows.
            try:
                batch = api.retrieve(a.batch_id)
            except BatchdError:
                print(f"batchd: the cancel of {a.batch_id} got no answer and the batch cannot be "
                      "read now; it stays marked canceled: check with `batchd batches show`",
                      file=sys.stderr)  # fmt: skip
                raise
            if batch.cancel_initiated_at is None:
                client.store.read(asm_store.operator_cancel(client.keys, a.account, a.id, False))
                raise
        except BaseException:
            client.store.read(asm_store.operator_cancel(client.keys, a.account, a.id, False))
            raise
    print(json.dumps(batch.model_dump(mode="json"), indent=2))
    return 0


def cmd_batches_results(args: argparse.Namespace) -> int:
    with _client(args) as client:
        a = _find(client, args.batch_id)
        if a is None:
            return EXIT_NOT_FOUND
        if a.batch_id is None:
            print(f"batchd: batch {_batchd_id(a)} has not been created at the API yet",
                  file=sys.stderr)  # fmt: skip
            return EXIT_FAILURE
        api = _api(client, a.account, "read a batch's results")
        stream = api.results(a.batch_id, results_url=a.results_url,
                             betas=_betas(client, a) or None, recover=True)  # fmt: skip
        out: IO[bytes] = open(args.out, "wb") if args.out else sys.stdout.buffer  # noqa: SIM115
        n = 0
        try:
            for line in stream:
                out.write(line.raw + b"\n")
                n += 1
            out.flush()
        finally:
            stream.close()
            if args.out:
                out.close()
    where = args.out or "stdout"
    print(f"{n} results of {a.batch_id} written to {where} (custom_id is the token of batchd's "
          f"request id {a.account}.<custom_id>)", file=sys.stderr)  # fmt: skip
    return 0


# -- the command line ----------------------------------------------------------------------------


def register(sub: Any) -> None:
    p = sub.add_parser("requests", help="look requests up; list, requeue and purge dead ones")
    rsub = p.add_subparsers(dest="action", required=True)
    rp = rsub.add_parser("show", help="one request's state, and its result once it has ended")
    rp.add_argument("request_id")
    rp.set_defaults(func=cmd_show)

    rp = rsub.add_parser("find", help="the request submitted under an idempotency key")
    rp.add_argument("--key", required=True)
    rp.add_argument("--account", help="the key's account (default: the default account)")
    rp.set_defaults(func=cmd_find)

    rp = rsub.add_parser("list", help="the requests of a batch")
    rp.add_argument("--batch", required=True, metavar="BATCH_ID",
                    help="the API's batch id, or batchd's <account>.<id>")  # fmt: skip
    rp.add_argument("--json", action="store_true", help="one JSON object per line")
    rp.set_defaults(func=cmd_list)

    rp = rsub.add_parser("dead", help="requests that ended dead (retries exhausted), newest first")
    rp.add_argument("--account")
    rp.add_argument("--error-type", help="only those whose last error has this type")
    rp.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    rp.add_argument("--json", action="store_true", help="one JSON object per line")
    rp.set_defaults(func=cmd_dead)

    for name, func, text in (
        ("requeue", cmd_requeue, "send dead requests round again from their first attempt"),
        ("purge", cmd_purge, "forget dead letters (their results stay until retention ends)"),
    ):
        rp = rsub.add_parser(name, help=text)
        rp.add_argument("ids", nargs="*", metavar="ID", help="request ids")
        rp.add_argument("--all", action="store_true", help="every dead request")
        rp.add_argument("--account", help="every dead request of this account")
        rp.add_argument("--error-type", help="every dead request whose last error has this type")
        rp.set_defaults(func=func)

    p = sub.add_parser("batches", help="batches batchd created: list, show, cancel, results")
    bsub = p.add_subparsers(dest="action", required=True)
    bsub.add_parser("list", help="one JSON object per batch").set_defaults(func=cmd_batches_list)
    bp = bsub.add_parser("show", help="batchd's view of a batch, and the API's (needs its key)")
    bp.add_argument("batch_id", help="the API's batch id, or batchd's <account>.<id>")
    bp.add_argument("--json", action="store_true")
    bp.set_defaults(func=cmd_batches_show)
    bp = bsub.add_parser("cancel", help="cancel a batch at the API; its unprocessed requests "
                         "end canceled")  # fmt: skip
    bp.add_argument("batch_id")
    bp.set_defaults(func=cmd_batches_cancel)
    bp = bsub.add_parser("results", help="the batch's results from the API, as JSONL")
    bp.add_argument("batch_id")
    bp.add_argument("--out", help="write here (default stdout)")
    bp.set_defaults(func=cmd_batches_results)
