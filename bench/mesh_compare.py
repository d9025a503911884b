"""Our Python sidecar beside a real Envoy: one policy, one fault scenario, two sets of counters.

    .venv/bin/python bench/mesh_compare.py [--gets 200] [--posts 50] [--error-rate 0.3]
                                           [--hang-requests 20] [--seed 7]

Puts each proxy in turn in front of the live shop's inventory service and sends the same
traffic (GETs and POSTs, shuffled, 10 at a time, while ``--error-rate`` of requests get a
503; then GETs 5 at a time while the service hangs). Prints the policy, then one markdown
row per behaviour: the sidecar's metric and the Envoy stat that counts the same thing,
and what the service itself received; then the retry multiplication (an app retrying 3
times through a proxy retrying twice, against a service that always answers 503).
Real sockets and a real Envoy process: numbers vary a little from run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import time

import aiohttp

import faultline as fl
from faultline.envoy import envoy_version
from faultline.meshlab import (
    PROXIES,
    SCENARIO_POLICY,
    Scenario,
    compare_proxies,
    retry_multiplication,
)


async def run(scenario: Scenario) -> None:
    started = time.perf_counter()
    result = await compare_proxies(SCENARIO_POLICY, scenario)
    took = time.perf_counter() - started
    print(f"policy: {SCENARIO_POLICY}")
    print(f"scenario: {scenario}\n")
    print(result.markdown())
    print(f"\n(both runs: {took:.1f} s)\n")
    print("| proxy | app attempts | proxy retries | service hits | expected |")
    print("|---|---:|---:|---:|---:|")
    for proxy in PROXIES:
        for mesh_retries in (2, 0):
            m = await retry_multiplication(proxy, app_attempts=3, mesh_retries=mesh_retries)
            print(f"| {proxy} | {m.app_attempts} | {m.mesh_retries} | {m.upstream_hits} | "
                  f"{m.expected} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gets", type=int, default=200)
    parser.add_argument("--posts", type=int, default=50)
    parser.add_argument("--error-rate", type=float, default=0.3)
    parser.add_argument("--hang-requests", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(f"python {platform.python_version()}, faultline {fl.__version__}, "
          f"aiohttp {aiohttp.__version__}, envoy {envoy_version()}")
    asyncio.run(run(Scenario(gets=args.gets, posts=args.posts, error_rate=args.error_rate,
                             hang_requests=args.hang_requests, seed=args.seed)))


if __name__ == "__main__":
    main()
