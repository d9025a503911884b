"""One traced checkout as a waterfall: the figure in docs/traced-checkout.png.

    .venv/bin/python bench/trace_waterfall.py [--seed 6] [--out docs/traced-checkout.png]

Runs 20 s of checkouts (20/s) on the simulated shop, traced, with inventory's latency
spiking (5 % of requests take 300 ms more) and payments failing 20 % of the time while
orders retries it (3 tries, 20 ms backoff). Picks the slowest checkout that succeeded
after a retry, prints it as a text tree with its bottleneck, and saves its waterfall.
Everything runs in virtual time: the same seed gives the same figure.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import faultline as fl
from faultline.errors import UpstreamError
from faultline.tracing import bottleneck, format_trace, self_times, simulate_traced
from faultline.viz import waterfall

ROOT = Path(__file__).resolve().parents[1]


def setup(shop: fl.Shop) -> None:
    shop.faults.inject("inventory", fl.LatencySpikes(0.3, 0.05))
    shop.faults.inject("payments", fl.ErrorRate(0.2))
    policy = fl.RetryPolicy(max_attempts=3, base=0.02, jitter="none", retry_on=UpstreamError)
    shop.client("orders").use("payments", lambda send, req: policy.call(send, req))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "traced-checkout.png")
    args = parser.parse_args()
    run = simulate_traced(duration=20, rate=20, seed=args.seed, setup=setup)
    retried = [t for t in run.traces() if not run.root(t).failed
               and any(s.kind == "client" and s.failed for s in t)]
    trace = max(retried or run.traces(), key=lambda t: run.root(t).duration)
    print(f"{len(run.records)} checkouts, {len(run.traces())} traces, "
          f"{len(run.failed())} failed, {len(retried)} succeeded after a retry")
    print(f"trace {trace[0].trace_id}, {run.root(trace).duration * 1000:.1f} ms:")
    print(format_trace(trace))
    times = self_times(trace)
    print("self time per service: " + ", ".join(
        f"{name} {seconds * 1000:.1f} ms" for name, seconds in
        sorted(times.items(), key=lambda kv: -kv[1])))
    print(f"bottleneck: {bottleneck(trace)}")
    ax = waterfall(trace, title="One traced checkout: a latency spike and a retry")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    ax.figure.savefig(args.out, dpi=110, bbox_inches="tight")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
