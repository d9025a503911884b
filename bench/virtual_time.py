"""How fast the simulated shop runs: a 10-minute run in virtual time, timed in wall time.

    .venv/bin/python bench/virtual_time.py [--minutes 10] [--rate 20] [--seed 1] [--runs 3]

Runs the same seeded simulation ``--runs`` times and prints the number of requests, the
wall and CPU time of each run, the speedup over real time of the fastest run (the CPU
figure is what an idle core would give on a busy machine), whether every run gave
identical records, and a SHA-256 of the records: a change made for speed must leave that
hash as it was. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import time

import aiohttp

import faultline as fl

TARGET = 200  # virtual seconds per wall second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3, help="same-seed runs; the best counts")
    args = parser.parse_args()
    duration = args.minutes * 60
    rates = {"checkout": args.rate * 0.75, "login": args.rate * 0.25}

    def chaos(shop: fl.Shop) -> None:
        shop.faults.inject("payments", fl.ErrorRate(0.05))
        shop.faults.inject("inventory", fl.LatencySpikes(0.4, 0.02))

    runs = []
    for _ in range(max(2, args.runs)):
        started, cpu = time.perf_counter(), time.process_time()
        records = fl.simulate(duration=duration, rates=rates, seed=args.seed, setup=chaos)
        runs.append((time.perf_counter() - started, time.process_time() - cpu, records))
    records = runs[0][2]
    wall, cpu = min(r[0] for r in runs), min(r[1] for r in runs)
    hops = sum(len(r.path) for r in records)
    print(f"python {platform.python_version()}, aiohttp {aiohttp.__version__}, "
          f"faultline {fl.__version__}")
    print(f"simulated {duration:.0f} s of the whole shop at {args.rate:g} req/s "
          f"(75 % checkout, 25 % login; 5 % payment errors, inventory latency spikes)")
    print(f"requests: {len(records)}   service visits: {hops}")
    print("wall time: " + ", ".join(f"{r[0]:.2f}" for r in runs) + " s   CPU time: "
          + ", ".join(f"{r[1]:.2f}" for r in runs) + " s")
    print(f"speedup over real time (best of {len(runs)}): {duration / wall:.0f}x wall, "
          f"{duration / cpu:.0f}x CPU   requests per wall second: {len(records) / wall:.0f}")
    print(f"same seed, identical records: {all(r[2] == records for r in runs)}")
    print(f"records sha256: {hashlib.sha256(repr(records).encode()).hexdigest()}")
    print(fl.summarize(records, slo=0.99))
    verdict = "met" if duration / wall >= TARGET else "MISSED"
    print(f"target: >= {TARGET:g}x real time for a 10-minute run: {duration / wall:.0f}x wall "
          f"({verdict}), {duration / cpu:.0f}x CPU")


if __name__ == "__main__":
    main()
