"""`python -m bench [--quick | --full] [--only NAMES]`: run the benchmarks, write the results.

Writes `bench/results/latest.md` (the table the README shows) and `bench/results/latest.json`
(every row with its samples, the sizes and the machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from batchd.logs import configure
from bench.common import FULL, QUICK, Contention, Context, Row, redis_version

#: Benchmark modules, in the order they run and appear in the table.
BENCHMARKS = (
    "submit",
    "upload",
    "fanout",
    "webhooks",
    "e2e",
    "footprint",
    "redis_latency",
    "cluster",
    "recovery",
    "overhead",
    "detection",
    "delivery",
    "cpu",
)
RESULTS = Path(__file__).resolve().parent / "results"


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return ""
    if unit in ("x",):
        return f"{value:.2f}x"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def table(rows: list[Row]) -> str:
    lines = [
        "| benchmark | measure | batchd | baseline (same run) | ratio | target | met |",
        "|---|---|---:|---|---:|---|:-:|",
    ]
    for r in rows:
        base = f"{fmt(r.baseline, r.unit)} {r.baseline_name}".strip() if r.baseline_name else ""
        met = {True: "yes", False: "**no**", None: ""}[r.met]
        measure = r.measure + (f" ({r.note})" if r.note else "")
        lines.append(
            f"| {r.bench} | {measure} | {fmt(r.value, r.unit)} | {base} | "
            f"{fmt(r.ratio, 'x')} | {r.target} | {met} |"
        )
    return "\n".join(lines)


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True)
        return out.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "redis": redis_version(),
        "kernel": platform.release(),
        "load_at_start": [round(x, 2) for x in load],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", action="store_true", help="small sizes, about 20 minutes (default)"
    )
    mode.add_argument("--full", action="store_true", help="the issue's sizes (100,000 requests)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument(
        "--reps",
        type=int,
        help="repetitions of each measure (default 3; the benchmarks that wait on batchd's own "
        "timings: 1 in quick mode, 3 in full)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for latest.md/json")
    args = parser.parse_args(argv)
    sizes = FULL if args.full else QUICK
    if args.reps:
        sizes = dataclasses.replace(sizes, reps=args.reps, slow_reps=args.reps)
    # batchd in this process (producers, stages run in-process) says only what went wrong.
    configure(level="error", fmt="console")
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(unknown)}")
    meta: dict[str, Any] = {
        "mode": sizes.mode,
        "sizes": dataclasses.asdict(sizes),
        "commit": git_commit(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": machine(),
    }
    rows: list[Row] = []
    failures: list[str] = []
    others: dict[str, float] = {}
    took: dict[str, int] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="batchd-bench-") as tmp:
        for name in names:
            print(f"{name} ...", file=sys.stderr, flush=True)
            module = importlib.import_module(f"bench.{name}")
            t0 = time.monotonic()
            contention = Contention()
            try:
                found = module.run(Context(sizes, Path(tmp) / name))
            except Exception:
                traceback.print_exc()
                failures.append(name)
                continue
            others[name] = round(contention.share(), 3)
            took[name] = round(time.monotonic() - t0)
            rows += found
            print(f"{name}: {took[name]} s", file=sys.stderr, flush=True)
            print(table(found), file=sys.stderr, flush=True)
    meta["seconds"] = round(time.monotonic() - started)
    meta["failed"] = failures
    meta["other_processes_cpu_share"] = others
    meta["seconds_each"] = took
    args.out.mkdir(parents=True, exist_ok=True)
    missed = [r for r in rows if r.met is False]
    judged = [r for r in rows if r.met is not None]
    summary = (
        f"Mode `{sizes.mode}`, {sizes.reps} repetitions ({sizes.slow_reps} of those that wait on "
        f"batchd's own timings; median shown), commit {meta['commit']}, "
        f"{meta['machine']['cpus']} CPUs, Python {meta['machine']['python']}, "
        f"Redis {meta['machine']['redis']} with `appendfsync always`; {meta['seconds']} s in all. "
        f"Targets met: {len(judged) - len(missed)} of {len(judged)}. Share of the machine's CPU "
        "used by processes outside the benchmark while each ran: "
        + ", ".join(f"{k} {v:.0%}" for k, v in others.items())
        + "."
    )
    markdown = table(rows) + "\n\n" + summary + "\n"
    (args.out / "latest.md").write_text(markdown)
    (args.out / "latest.json").write_text(
        json.dumps({"meta": meta, "rows": [r.to_dict() for r in rows]}, indent=2) + "\n"
    )
    print(markdown)
    print(f"written: {args.out / 'latest.md'}, {args.out / 'latest.json'}", file=sys.stderr)
    if failures:
        print(f"benchmarks that failed to run: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 1 if missed and sizes.mode == "full" else 0


if __name__ == "__main__":
    sys.exit(main())
