"""Lesson 05's scenario: Login while Email hangs, with one shared gateway pool and with bulkheads.

    .venv/bin/python bench/bulkheads.py [--seed 5] [--seeds 5]

Runs ``faultline.isolation.run_email_outage`` in virtual time (the lesson's defaults: 16
gateway workers, 20 checkouts, 40 logins and 20 product listings a second, email hangs
from 40 s to the end at 70 s) and prints, per route, availability and p99 latency before
and during the outage. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import platform
import time

import faultline as fl
from faultline.isolation import (
    DURATION,
    EXAMPLE_BULKHEADS,
    GATEWAY_WORKERS,
    HANG_AT,
    RATES,
    SLO,
    run_email_outage,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=5, help="first seed")
    parser.add_argument("--seeds", type=int, default=1, help="how many seeds, from --seed")
    args = parser.parse_args()
    print(f"python {platform.python_version()}, faultline {fl.__version__}")
    print(f"gateway workers {GATEWAY_WORKERS}; rates {RATES} per s; email hangs at "
          f"{HANG_AT:g} s of {DURATION:g} s; login SLO while it hangs: "
          f"{SLO['availability']:.0%} succeed, p99 <= {SLO['p99'] * 1000:.0f} ms")
    setups = {"one shared pool": None, f"bulkheads {EXAMPLE_BULKHEADS}": EXAMPLE_BULKHEADS}
    for seed in range(args.seed, args.seed + args.seeds):
        print(f"\nseed {seed}")
        for label, bulkheads in setups.items():
            started = time.perf_counter()
            run = run_email_outage(bulkheads, seed=seed)
            wall = time.perf_counter() - started
            print(f"  {label}  ({len(run.records)} requests, {wall:.2f} s wall)")
            for route in RATES:
                before, during = run.summary(route, "before"), run.summary(route, "outage")
                print(f"    {route:9} before: {before.availability:8.2%} ok, p99 "
                      f"{before.p99 * 1000:6.0f} ms   while email hangs: "
                      f"{during.availability:8.2%} ok, p99 {during.p99 * 1000:6.0f} ms")
            verdict = "met" if run.meets_slo("login") else "MISSED"
            print(f"    login SLO while email hangs: {verdict}")


if __name__ == "__main__":
    main()
