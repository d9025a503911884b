"""The retry-storm lab at full size: Brooker's experiment and load amplification, in numbers.

    .venv/bin/python bench/retry_storm.py [--trials 30] [--requests 10000] [--seed 2026]

Prints (1) calls and completion time per backoff strategy for N = 5, 10, 25, 50, 100
clients updating one row under optimistic concurrency (network hop ~N(10 ms, 2 ms), base
5 ms, cap 2 s, mean of ``--trials`` runs), with the strategies ranked at N = 100; (2) the
tries that reach a dead bottom service per request through a chain of k services that
each try 3 times, with and without a retry budget per caller (ratio 0.2, min 10 tokens)
and with retries at the top layer only; (3) the same chain under 30 % transient faults.
Everything runs in virtual time. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import platform
import time

import faultline as fl
from faultline.retry import RetryBudget
from faultline.storm import (
    amplification_series,
    chain_amplification,
    occ_experiment,
    occ_table,
    ranking,
)

CLIENTS = (5, 10, 25, 50, 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30, help="runs per strategy and N")
    parser.add_argument("--requests", type=int, default=10_000,
                        help="user requests per chain run")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    print(f"python {platform.python_version()}, faultline {fl.__version__}; seed {args.seed}")

    started = time.perf_counter()
    points = occ_experiment(CLIENTS, trials=args.trials, seed=args.seed)
    wall = time.perf_counter() - started
    print(f"\n(1) Brooker's OCC experiment: mean of {args.trials} runs per cell "
          f"({wall:.1f} s of wall time)")
    print(occ_table(points))
    for measure in ("calls", "completion"):
        print(f"    fewest {measure} at N = 100: " + " < ".join(ranking(points, 100, measure)))

    started = time.perf_counter()
    series = amplification_series((1, 2, 3, 4, 5), attempts=3, requests=args.requests,
                                  seed=args.seed)
    wall = time.perf_counter() - started
    print(f"\n(2) tries on a dead bottom service per user request, chain of k services "
          f"each trying 3 times ({args.requests} requests with a budget; {wall:.1f} s)")
    ks = sorted(next(iter(series.values())))
    print(f"    {'':44}" + "".join(f"{'k=' + str(k):>9}" for k in ks))
    for label, values in series.items():
        print(f"    {label:44}" + "".join(f"{values[k]:9.3f}" for k in ks))
    print(f"    {'bound with budgets, (1.2 + 10/requests)^k':44}"
          + "".join(f"{(1.2 + 10 / args.requests) ** k:9.3f}" for k in ks))

    print(f"\n(3) a chain of 3 services, {args.requests} requests: success under 30 % "
          f"transient faults, and load when the bottom is down")
    designs = {
        "no retries": {"attempts": 1},
        "3 tries at every layer": {},
        "3 tries at every layer, budget per caller": {"budget": RetryBudget},
        "3 tries at the top layer only": {"retry_layers": [0]},
        "3 tries just above the bottom only": {"retry_layers": [2]},
    }
    for label, options in designs.items():
        transient = chain_amplification(3, requests=args.requests, failure_rate=0.3,
                                        seed=args.seed, **options)
        # Without a budget a dead service fails every try alike: 1000 requests suffice.
        requests = args.requests if "budget" in options else min(args.requests, 1000)
        down = chain_amplification(3, requests=requests, failure_rate=1.0, seed=args.seed,
                                   **options)
        print(f"    {label:44} {transient.success_rate:7.2%} ok at "
              f"{transient.amplification:5.3f}x load; down: {down.amplification:6.3f}x load")


if __name__ == "__main__":
    main()
