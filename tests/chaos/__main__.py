"""`make chaos`: one chaos run at full size, its table printed; exit status 1 if anything broke.

Options change the seed and size; the defaults (20,000 requests, 3 replicas, every fault kind
at least once) are the run the project's promise is judged by.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tests.chaos.harness import ChaosConfig, run


def main(argv: list[str] | None = None) -> int:
    defaults = ChaosConfig()
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--requests", type=int, default=defaults.requests)
    parser.add_argument("--replicas", type=int, default=defaults.replicas)
    parser.add_argument("--rate", type=float, default=defaults.rate, help="submits per second")
    parser.add_argument("--reduced", action="store_true", help="the small run of the test suite")
    parser.add_argument("--dir", type=Path, help="keep every process's data and logs here")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="data on a Redis Cluster (3 masters, a replica each): master kills with failover, "
        "live slot migrations among the faults",
    )
    parser.add_argument(
        "--deadlines",
        type=float,
        default=defaults.shares.deadlines,
        help="share of requests with a deadline, half of them unreachable by batch (0: none)",
    )
    args = parser.parse_args(argv)
    if args.reduced:
        config = ChaosConfig.reduced(seed=args.seed, directory=args.dir, cluster=args.cluster)
    else:
        config = ChaosConfig(
            seed=args.seed,
            requests=args.requests,
            replicas=args.replicas,
            rate=args.rate,
            directory=args.dir,
            cluster=args.cluster,
        )
    config.shares.deadlines = args.deadlines
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

    report = run(config, progress=say)
    print(report.table())
    for line in report.problems():
        print(line)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
