"""How fast the simulated shop runs: a 10-minute run in virtual time, timed in wall time.

    .venv/bin/python bench/virtual_time.py [--minutes 10] [--rate 20] [--seed 1]

Prints the number of requests, the wall time, the speedup over real time, and whether a
second run with the same seed gave identical records. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import platform
import time

import aiohttp

import faultline as fl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    duration = args.minutes * 60
    rates = {"checkout": args.rate * 0.75, "login": args.rate * 0.25}

    def chaos(shop: fl.Shop) -> None:
        shop.faults.inject("payments", fl.ErrorRate(0.05))
        shop.faults.inject("inventory", fl.LatencySpikes(0.4, 0.02))

    runs = []
    for _ in range(2):
        started = time.perf_counter()
        records = fl.simulate(duration=duration, rates=rates, seed=args.seed, setup=chaos)
        runs.append((time.perf_counter() - started, records))
    (wall, records), (wall2, again) = runs
    hops = sum(len(r.path) for r in records)
    print(f"python {platform.python_version()}, aiohttp {aiohttp.__version__}, "
          f"faultline {fl.__version__}")
    print(f"simulated {duration:.0f} s of the whole shop at {args.rate:g} req/s "
          f"(75 % checkout, 25 % login; 5 % payment errors, inventory latency spikes)")
    print(f"requests: {len(records)}   service visits: {hops}")
    print(f"wall time: {wall:.2f} s and {wall2:.2f} s   speedup over real time: "
          f"{duration / wall:.0f}x   requests per wall second: {len(records) / wall:.0f}")
    print(f"same seed, identical records: {records == again}")
    print(fl.summarize(records, slo=0.99))


if __name__ == "__main__":
    main()
