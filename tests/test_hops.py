"""Per-hop timeout plans: the worst-case maths, the pure check, and plans run on the shop."""

from __future__ import annotations

import asyncio

import matplotlib
import pytest

import faultline as fl
from faultline import hops
from faultline.errors import UpstreamError
from faultline.hops import Attempt, Hop, check_plan, simulate_plan, worst_case
from faultline.messages import Request, Response
from faultline.timeouts import DEADLINE_HEADER

matplotlib.use("Agg")

BOOKINFO = {"gateway->orders": (0.3, 2), "orders->payments": (1.0, 1)}  # 3 s × 2 vs 10 s, /10
ORDERED = {"gateway->orders": (1.2, 1), "orders->payments": (1.0, 1)}
RULES = {"deadline": 2.0, "margin": 0.1, "backoff": 0.05}


def slow_payments(shop: fl.Shop) -> None:
    shop.faults.inject("payments", fl.Latency(0.7))  # Bookinfo's 7 s delay on ratings, /10


# --- the maths


@pytest.mark.parametrize(("timeout", "attempts", "backoff", "expected"), [
    (0.5, 1, 0.0, 0.5),
    (0.5, 1, 0.3, 0.5),  # no sleep after the last try
    (0.25, 4, 0.0, 1.0),
    (0.25, 4, 0.125, 1.375),
    (3, 2, 0, 6),  # Bookinfo's productpage: 3 s + 1 retry
])
def test_worst_case_is_every_try_timing_out_plus_the_sleeps_between(timeout, attempts, backoff,
                                                                     expected):
    assert worst_case(timeout, attempts, backoff) == expected
    assert Hop(timeout, attempts, backoff).worst_case == expected


@pytest.mark.parametrize(("args", "error", "match"), [
    ((0, 1), ValueError, "timeout"),
    ((-1, 1), ValueError, "timeout"),
    ((float("nan"), 1), ValueError, "timeout"),
    ((float("inf"), 1), ValueError, "timeout"),
    (("1", 1), TypeError, "timeout"),
    ((1, 0), ValueError, "attempts"),
    ((1, 1.0), TypeError, "attempts"),
    ((1, True), TypeError, "attempts"),
    ((1, 2, -0.1), ValueError, "backoff"),
    ((1, 2, None), TypeError, "backoff"),
])
def test_a_hop_refuses_bad_values_naming_them(args, error, match):
    with pytest.raises(error, match=match):
        Hop(*args)


def test_hop_names_follow_the_chain():
    assert hops.hop_names(("gateway", "orders", "payments")) == [
        "gateway->orders", "orders->payments"]
    with pytest.raises(ValueError, match="chain"):
        hops.hop_names(("gateway",))


def test_parse_plan_gives_pairs_the_common_backoff_and_keeps_hops():
    parsed = hops.parse_plan({"gateway->orders": Hop(1.0, 1, 0.2), "orders->payments": [0.2, 3]},
                             backoff=0.05)
    assert list(parsed) == ["gateway->orders", "orders->payments"]
    assert parsed["gateway->orders"] == Hop(1.0, 1, 0.2)
    assert parsed["orders->payments"] == Hop(0.2, 3, 0.05)


@pytest.mark.parametrize(("plan", "error", "match"), [
    ([("gateway->orders", (1, 1))], TypeError, "dict"),
    ({"gateway->orders": (1, 1)}, ValueError, "missing"),
    ({**ORDERED, "orders->email": (1, 1)}, ValueError, "unknown"),
    ({**ORDERED, "orders->payments": 1.0}, TypeError, "orders->payments"),
    ({**ORDERED, "orders->payments": (1.0, 1, 0.1)}, TypeError, "pair"),
    ({**ORDERED, "orders->payments": (1.0, 0)}, ValueError, "orders->payments: attempts"),
])
def test_parse_plan_names_the_hop_that_is_wrong(plan, error, match):
    with pytest.raises(error, match=match):
        hops.parse_plan(plan)


# --- the pure check


def test_a_plan_that_keeps_the_ordering_and_fits_the_deadline_has_no_problems():
    assert check_plan(ORDERED, **RULES) == []
    assert check_plan({"gateway->orders": (1.5, 1), "orders->payments": (0.3, 3)}, **RULES) == []


def test_bookinfo_breaks_the_ordering_and_the_problem_says_by_how_much():
    (problem,) = check_plan(BOOKINFO, **RULES)
    assert problem.startswith("gateway->orders gives up on a try after 0.3 s")
    assert "orders->payments may take 1 s" in problem and "= 1.1 s" in problem


def test_the_first_hop_with_its_margin_must_fit_the_deadline():
    plan = {"gateway->orders": (1.0, 2), "orders->payments": (0.3, 2)}  # 2.05 + 0.1 > 2
    (problem,) = check_plan(plan, **RULES)
    assert "more than the 2 s deadline" in problem
    assert check_plan(plan, deadline=2.15, margin=0.1, backoff=0.05) == []


def test_boundaries_hold_however_the_floats_round():
    # 0.3 × 3 + 2 × 0.05 + 0.1 is 1.0999999999999999 in floats; 1.1 must be enough.
    plan = {"gateway->orders": (1.1, 1), "orders->payments": (0.3, 3)}
    assert check_plan(plan, deadline=1.2, margin=0.1, backoff=0.05) == []
    assert check_plan(plan, deadline=1.1999, margin=0.1, backoff=0.05) != []


def test_timeouts_below_the_minimum_are_reported_per_hop():
    plan = {"gateway->orders": (1.0, 1), "orders->payments": (0.05, 3)}
    problems = check_plan(plan, deadline=2.0, margin=0.1, min_timeout=0.1)
    assert problems == ["orders->payments: a per-try timeout of 0.05 s is below 0.1 s, so "
                        "healthy calls would time out"]


def test_a_malformed_plan_is_a_problem_not_an_exception():
    assert check_plan({"gateway->orders": (1, 1)}, deadline=2.0)[0].startswith(
        "plan must have exactly the hops")


@pytest.mark.parametrize(("rules", "error"), [
    ({"deadline": 0}, ValueError), ({"deadline": "2"}, TypeError),
    ({"deadline": 2, "margin": -1}, ValueError), ({"deadline": 2, "backoff": float("nan")},
                                                  ValueError),
])
def test_check_plan_refuses_bad_rules(rules, error):
    with pytest.raises(error):
        check_plan(ORDERED, **rules)


def test_describe_plan_is_a_table_with_worst_cases():
    text = hops.describe_plan({"gateway->orders": (1.5, 1), "orders->payments": (0.3, 3)},
                              backoff=0.05)
    assert text.splitlines()[0].split() == ["hop", "per", "try", "attempts", "backoff",
                                            "worst", "case"]
    assert text.splitlines()[2].split()[-2:] == ["1", "s"]  # 3 × 0.3 + 2 × 0.05


# --- the wrapper


async def test_hop_wrapper_retries_timeouts_after_the_backoff_and_logs_every_try():
    loop = asyncio.get_running_loop()
    log: list[Attempt] = []
    answers = iter([None, None, Response(200)])

    async def send(request: Request) -> Response:
        answer = next(answers)
        if answer is None:
            await asyncio.sleep(10)
        return answer

    wrapper = hops.hop_wrapper(Hop(0.5, 3, 0.25), name="a->b", log=log)
    response = await wrapper(send, Request("GET", "/"))
    assert response.status == 200 and loop.time() == 1.5
    assert [(a.number, a.start, a.end, a.outcome) for a in log] == [
        (1, 0.0, 0.5, "timeout"), (2, 0.75, 1.25, "timeout"), (3, 1.5, 1.5, "ok")]
    assert {a.hop for a in log} == {"a->b"} and {a.call for a in log} == {1}


async def test_hop_wrapper_raises_the_last_error_and_does_not_retry_client_errors():
    calls = []

    async def unavailable(request: Request) -> Response:
        calls.append(request)
        raise UpstreamError(503, "b")

    wrapper = hops.hop_wrapper(Hop(1.0, 3), name="a->b")
    with pytest.raises(UpstreamError):
        await wrapper(unavailable, Request("GET", "/"))
    assert len(calls) == 3

    async def broken(request: Request) -> Response:
        calls.append(request)
        raise UpstreamError(500, "b")

    calls.clear()
    with pytest.raises(UpstreamError):
        await wrapper(broken, Request("GET", "/"))
    assert len(calls) == 1


async def test_hop_wrapper_never_retries_a_passed_deadline():
    calls = []

    async def late(request: Request) -> Response:
        calls.append(request)
        raise fl.DeadlineExceeded("too late")

    log: list[Attempt] = []
    with pytest.raises(fl.DeadlineExceeded):
        await hops.hop_wrapper(Hop(1.0, 3), log=log)(late, Request("GET", "/"))
    assert len(calls) == 1 and log[0].outcome == "deadline"


async def test_a_cancelled_call_is_logged_as_cancelled_and_not_retried():
    log: list[Attempt] = []

    async def hang(request: Request) -> Response:
        await asyncio.sleep(100)
        raise AssertionError("not reached")

    call = asyncio.ensure_future(hops.hop_wrapper(Hop(5.0, 3), log=log)(hang, Request("GET", "/")))
    await asyncio.sleep(1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert [(a.number, a.outcome, a.end) for a in log] == [(1, "cancelled", 1.0)]


def test_hop_wrapper_wants_a_hop():
    with pytest.raises(TypeError, match="Hop"):
        hops.hop_wrapper((1.0, 2))


# --- plans on the shop


def test_bookinfo_fails_the_user_although_payments_answers_in_time():
    run = simulate_plan(BOOKINFO, deadline=2.0, backoff=0.05, setup=slow_payments)
    assert not run.ok and run.record.status == 504
    assert run.record.latency == pytest.approx(0.65, abs=0.005)  # 0.3 + 0.05 + 0.3
    assert [a.outcome for a in run.attempts_on("gateway->orders")] == ["timeout", "timeout"]
    # orders' calls to payments both succeed, after the gateway gave up on them...
    payments = run.attempts_on("orders->payments")
    assert [(a.call, a.outcome) for a in payments] == [(1, "ok"), (2, "ok")]
    assert all(a.end > run.record.end for a in payments)
    assert run.charges == 2  # ...so payments charged twice for a checkout that failed
    assert run.received == {"gateway": 1, "orders": 2, "payments": 2}


def test_ordered_timeouts_let_the_slow_answer_through():
    run = simulate_plan(ORDERED, deadline=2.0, backoff=0.05, setup=slow_payments)
    assert run.ok and run.record.status == 201
    assert 0.7 < run.record.latency < 0.75
    assert run.charges == 1


def test_inner_retries_need_an_outer_timeout_that_waits_for_them():
    sick = hops.first_try_hangs("payments")
    impatient = {"gateway->orders": (0.3, 2), "orders->payments": (0.5, 2)}
    patient = {"gateway->orders": (1.2, 1), "orders->payments": (0.5, 2)}
    bad = simulate_plan(impatient, deadline=2.0, backoff=0.05, setup=sick)
    good = simulate_plan(patient, deadline=2.0, backoff=0.05, setup=sick)
    assert not bad.ok and bad.record.latency == pytest.approx(0.65, abs=0.005)
    # each of the gateway's tries is a new call to orders, whose first try hangs again
    assert [(a.call, a.number, a.outcome) for a in bad.attempts_on("orders->payments")] == [
        (1, 1, "timeout"), (2, 1, "timeout"), (1, 2, "ok"), (2, 2, "ok")]
    assert good.ok and good.record.latency == pytest.approx(0.58, abs=0.01)
    assert [a.outcome for a in good.attempts_on("orders->payments")] == ["timeout", "ok"]
    assert (good.charges, good.received["payments"]) == (1, 2)


def test_without_a_plan_the_first_try_hangs_forever():
    run = simulate_plan({"gateway->orders": (1.0, 1), "orders->payments": (0.5, 1)},
                        deadline=2.0, setup=hops.first_try_hangs("payments"))
    assert run.record.status == 504 and run.received["payments"] == 1


async def test_every_try_carries_its_number():
    seen = []

    async def send(request: Request) -> Response:
        seen.append(request.header(hops.ATTEMPT_HEADER))
        raise ConnectionResetError("reset")

    with pytest.raises(ConnectionResetError):
        await hops.hop_wrapper(Hop(1.0, 3))(send, Request("GET", "/", headers={"A": "b"}))
    assert seen == ["1", "2", "3"]


def test_a_plan_that_fits_the_deadline_answers_the_user_before_it():
    down = simulate_plan({"gateway->orders": (1.5, 1), "orders->payments": (0.3, 3)},
                         deadline=2.0, backoff=0.05,
                         setup=lambda shop: shop.faults.inject("payments", fl.Hang()))
    assert down.record.status == 504 and down.record.latency < 1.1
    assert down.charges == 0


def test_runs_are_deterministic():
    first = simulate_plan(BOOKINFO, deadline=2.0, setup=slow_payments, seed=3)
    again = simulate_plan(BOOKINFO, deadline=2.0, setup=slow_payments, seed=3)
    assert first == again


def test_with_propagation_the_callees_see_the_users_deadline():
    seen = []

    def spy(shop: fl.Shop) -> None:
        deliver = shop.transport.send

        async def send(target, request):
            seen.append((target, request.header(DEADLINE_HEADER)))
            return await deliver(target, request)

        shop.transport.send = send

    run = simulate_plan(ORDERED, deadline=2.0, setup=spy, propagate=True)
    assert run.ok
    assert seen[0] == ("gateway", "2000") and all(h is not None for _, h in seen)


def test_the_run_reads_as_a_log():
    text = str(simulate_plan(BOOKINFO, deadline=2.0, backoff=0.05, setup=slow_payments))
    assert text.splitlines()[0].startswith("user: HTTP 504 after 0.65")
    assert "FAILED" in text and "charged 2 time(s)" in text
    assert "orders->payments   call 2 try 1: ok" in text


def test_simulate_plan_checks_its_arguments():
    with pytest.raises(ValueError, match="deadline"):
        simulate_plan(ORDERED, deadline=0)
    with pytest.raises(ValueError, match="missing"):
        simulate_plan({"gateway->orders": (1, 1)}, deadline=1)


def test_the_attempts_chart_draws_a_row_per_call_and_hatches_work_for_nobody():
    from faultline import viz

    run = simulate_plan(BOOKINFO, deadline=2.0, backoff=0.05, setup=slow_payments)
    ax = viz.attempts_chart(run, title="Bookinfo")
    rows = {t.get_position()[1]: t.get_text() for t in ax.get_yticklabels()}
    assert [rows[y] for y in sorted(rows, reverse=True)] == [
        "gateway → orders\ncall 1", "orders → payments\ncall 1", "orders → payments\ncall 2"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "after the user's answer: work for nobody" in legend
    assert any("user gets HTTP 504" in t.get_text() for t in ax.texts)
    matplotlib.pyplot.close("all")
