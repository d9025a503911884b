"""The capstone's chaos runner: schedule as data, measurements, SLO report, determinism."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

import faultline as fl
from faultline.chaos import (
    CHAOS_SCHEDULE,
    SLOS,
    ChaosEvent,
    cached_chaos,
    run_chaos,
    schedule_table,
)
from faultline.errors import UpstreamError
from faultline.faults import Blackhole, ErrorRate, Hang
from faultline.messages import Response
from faultline.sim import SimShop

ROOT = Path(__file__).resolve().parents[1]


def reference_solution():
    """``harden`` as the solution notebook defines it (setup cell + answer cell)."""
    cells = json.loads((ROOT / "solutions/08-capstone/08-capstone.ipynb").read_text())["cells"]
    source = {c["id"]: "".join(c["source"]) for c in cells}
    namespace: dict = {}
    exec(source["setup"], namespace)
    exec(source["harden"], namespace)
    return namespace["harden"]


def hardened(shop):
    """A shorter hardening: timeouts, budgeted retries, a fallback (no breaker)."""
    rng = random.Random(8)
    budget = fl.RetryBudget(ratio=0.5)

    def retrying(per_try):
        policy = fl.RetryPolicy(max_attempts=3, base=0.01, cap=0.05, rng=rng, budget=budget,
                                retry_on=(UpstreamError, TimeoutError, ConnectionError))
        return lambda send, req: policy.call(lambda: fl.with_timeout(send(req), per_try))

    async def email(send, request):
        try:
            return await fl.with_timeout(send(request), 0.05)
        except Exception:
            return Response(202, {"queued": "later"})

    orders = shop.client("orders")
    orders.use("payments", retrying(0.2))
    orders.use("inventory", retrying(0.05))
    orders.use("email", email)
    shop.client("gateway").use("orders", lambda send, req: fl.with_timeout(send(req), 1.0))


def storm(shop):
    """Retries at two layers, no budget: over-resilience."""
    def retrying(per_try):
        policy = fl.RetryPolicy(max_attempts=3, base=0.01, cap=0.05, rng=random.Random(1),
                                retry_on=(UpstreamError, TimeoutError, ConnectionError))
        return lambda send, req: policy.call(lambda: fl.with_timeout(send(req), per_try))

    for target, seconds in (("payments", 0.2), ("inventory", 0.05), ("email", 0.05)):
        shop.client("orders").use(target, retrying(seconds))
    shop.client("gateway").use("orders", retrying(1.0))


def test_event_validation_names_the_argument():
    with pytest.raises(ValueError, match="at"):
        ChaosEvent(-1.0, "email", Hang())
    with pytest.raises(ValueError, match="at"):
        ChaosEvent(True, "email", Hang())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target"):
        ChaosEvent(1.0, "mailer", Hang())
    with pytest.raises(ValueError, match="edge"):
        ChaosEvent(1.0, "email", Hang(), edge="nobody")
    with pytest.raises(TypeError, match="fault"):
        ChaosEvent(1.0, "email", "hang")


def test_events_inject_clear_and_cut_links():
    async def main():
        shop = SimShop(seed=0)
        ChaosEvent(0, "payments", ErrorRate(0.3)).apply(shop)
        assert shop.faults.faults("payments") == (ErrorRate(0.3),)
        ChaosEvent(0, "payments", None).apply(shop)
        assert shop.faults.faults("payments") == ()
        ChaosEvent(0, "email", Hang(), edge="orders").apply(shop)
        assert shop.faults.faults("email", caller="orders") == (Hang(),)

    fl.run_virtual(main)


def test_schedule_table_lists_events_in_time_order():
    rows = schedule_table()
    assert [r["at"] for r in rows] == ["10 s", "20 s", "30 s", "40 s", "40 s"]
    assert rows[-1]["where"] == "orders -> email (link)"
    assert rows[-2]["what"] == "heals"


def test_run_checks_its_arguments():
    with pytest.raises(ValueError, match="schedule"):
        run_chaos(None, schedule=())
    with pytest.raises(ValueError, match="duration"):
        run_chaos(None, duration=5.0)
    with pytest.raises(TypeError, match="harden"):
        run_chaos(42)  # type: ignore[arg-type]


def test_without_faults_nothing_is_amplified():
    quiet = (ChaosEvent(1.0, "email", None),)
    run = run_chaos(None, schedule=quiet, duration=6.0)
    assert run.availability("checkout") == 1.0
    assert run.availability("login") == 1.0
    assert run.failing == ()
    assert run.amplification("payments") == pytest.approx(1.0, abs=0.02)
    assert run.passed()


def test_the_unprotected_shop_fails_its_slos():
    run = run_chaos(None, seed=1)
    failed = {c.name for c in run.grade_report() if not c.passed}
    assert {"checkout_availability", "checkout_p99", "login_availability"} <= failed
    assert run.failing == ("payments", "email", "inventory")


@pytest.mark.parametrize("seed", range(5))
def test_the_solution_meets_every_slo_with_margin(seed):
    run = run_chaos(reference_solution(), seed=seed)
    assert run.passed(), [str(c) for c in run.grade_report()]
    assert run.availability("checkout") >= SLOS["checkout_availability"] + 0.02
    assert run.p99("checkout") <= SLOS["checkout_p99"] - 0.1
    assert max(run.amplification(s) for s in run.failing) <= SLOS["amplification"] - 0.4


def test_a_simpler_hardening_passes_too():
    assert run_chaos(hardened, seed=0).passed()


def test_retries_at_every_layer_without_a_budget_are_a_storm():
    run = run_chaos(storm, seed=1)
    assert run.amplification("email") > 3.0
    assert not next(c for c in run.grade_report() if c.name == "amplification[email]").passed


def test_same_arguments_same_run_and_the_cache_reuses_it():
    first = run_chaos(None, seed=2, duration=15.0)
    second = run_chaos(None, seed=2, duration=15.0)
    assert first.records == second.records and first.attempts == second.attempts
    assert cached_chaos(None, seed=2, duration=15.0) is cached_chaos(None, seed=2, duration=15.0)


def test_harden_is_called_inside_the_loop_before_traffic():
    seen = []

    def harden(shop):
        seen.append((asyncio.get_running_loop().time(), shop.client("gateway").sent.copy()))

    run_chaos(harden, schedule=CHAOS_SCHEDULE[:1], duration=11.0)
    assert seen == [(0.0, {})]


def test_report_lines_say_pass_or_fail_with_numbers():
    run = run_chaos(None, seed=1)
    lines = [str(c) for c in run.grade_report()]
    assert lines[0].startswith("FAIL  checkout_availability")
    assert "(at least 0.93)" in lines[0]


def test_events_at_the_same_time_apply_in_schedule_order():
    """Healing email and cutting the link into it at once leaves the link cut."""
    seen = []

    def harden(shop):
        async def spy(send, request):
            seen.append(shop.faults.faults("email", caller="orders"))
            return await fl.with_timeout(send(request), 0.05)

        shop.client("orders").use("email", spy)

    schedule = (ChaosEvent(1.0, "email", Hang()), ChaosEvent(2.0, "email", None),
                ChaosEvent(2.0, "email", Blackhole(), edge="orders"))
    run = run_chaos(harden, schedule=schedule, duration=4.0)
    assert seen[-1] == (Blackhole(),)
    assert run.shop.faults.faults("email") == ()
