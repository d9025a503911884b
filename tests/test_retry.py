"""Reference retries: backoff maths, the sans-I/O core, the asyncio policy, the budget."""

from __future__ import annotations

import asyncio
import itertools
import math
import random

import pytest

from faultline.errors import UpstreamError
from faultline.faults import Script
from faultline.retry import (
    JITTERS,
    GiveUp,
    RetryAfter,
    RetryBudget,
    RetryConfig,
    RetryPolicy,
    RetryState,
    backoff_delay,
)
from faultline.sim import SimShop
from faultline.storm import Flaky

# --- backoff_delay -----------------------------------------------------------------------


def test_no_jitter_doubles_from_base_up_to_the_cap():
    delays = [backoff_delay(n, base=0.1, cap=2.0, jitter="none", rng=None) for n in range(8)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]


@pytest.mark.parametrize("attempt", [1023, 1024, 2000, 10**6, 10**18])
def test_huge_attempts_give_the_cap_without_overflow(attempt):
    for jitter in ("none", "full", "equal"):
        delay = backoff_delay(attempt, base=0.5, cap=30.0, jitter=jitter, rng=random.Random(1))
        assert 0 <= delay <= 30.0
    assert backoff_delay(attempt, base=0.5, cap=30.0, jitter="none", rng=None) == 30.0


def test_full_and_equal_jitter_draw_once_from_the_rng():
    rng, twin = random.Random(7), random.Random(7)
    for n in range(6):
        t = min(5.0, 0.1 * 2**n)
        assert backoff_delay(n, base=0.1, cap=5.0, jitter="full", rng=rng) == twin.uniform(0, t)
        assert backoff_delay(n, base=0.1, cap=5.0, jitter="equal", rng=rng) == (
            t / 2 + twin.uniform(0, t / 2))


def test_decorrelated_jitter_grows_from_the_previous_delay_and_ignores_attempt():
    rng, twin = random.Random(3), random.Random(3)
    assert backoff_delay(0, base=0.1, cap=5.0, jitter="decorrelated", rng=rng) == (
        twin.uniform(0.1, 3 * 0.1))
    assert backoff_delay(9, base=0.1, cap=5.0, jitter="decorrelated", rng=rng,
                         previous=0.7) == twin.uniform(0.1, 3 * 0.7)
    # capped: base == cap leaves nothing to draw
    assert backoff_delay(4, base=2.0, cap=2.0, jitter="decorrelated", rng=rng,
                         previous=2.0) == 2.0


def test_every_jitter_stays_in_its_envelope():
    rng = random.Random(11)
    base, cap = 0.05, 100.0
    for n in range(7):
        t = base * 2**n
        full = [backoff_delay(n, base=base, cap=cap, jitter="full", rng=rng) for _ in range(2000)]
        equal = [backoff_delay(n, base=base, cap=cap, jitter="equal", rng=rng)
                 for _ in range(2000)]
        assert 0 <= min(full) < 0.02 * t and 0.98 * t < max(full) <= t
        assert t / 2 <= min(equal) < 0.52 * t and 0.98 * t < max(equal) <= t
    for previous in (None, 0.05, 1.0, 20.0):
        top = min(cap, 3 * (previous or base))
        draws = [backoff_delay(0, base=base, cap=cap, jitter="decorrelated", rng=rng,
                               previous=previous) for _ in range(2000)]
        assert base <= min(draws) and max(draws) <= top and max(draws) > 0.97 * top


@pytest.mark.parametrize(("kwargs", "error", "name"), [
    ({"attempt": -1}, ValueError, "attempt"),
    ({"attempt": 1.0}, TypeError, "attempt"),
    ({"attempt": True}, TypeError, "attempt"),
    ({"base": 0}, ValueError, "base"),
    ({"base": float("nan")}, ValueError, "base"),
    ({"cap": float("inf")}, ValueError, "cap"),
    ({"base": 2.0, "cap": 1.0}, ValueError, "cap"),
    ({"jitter": "half"}, ValueError, "jitter"),
    ({"jitter": "decorrelated", "previous": -1.0}, ValueError, "previous"),
])
def test_backoff_delay_refuses_bad_arguments(kwargs, error, name):
    args = {"attempt": 0, "base": 0.1, "cap": 1.0, "jitter": "full", "rng": random.Random(0),
            **kwargs}
    attempt = args.pop("attempt")
    with pytest.raises(error, match=name):
        backoff_delay(attempt, **args)


# --- the sans-I/O core -----------------------------------------------------------------------


class RecordingBudget:
    """A budget that grants ``grants`` retries and logs how it is used."""

    def __init__(self, grants: int) -> None:
        self.grants = grants
        self.log: list[str] = []

    def record_request(self) -> None:
        self.log.append("record_request")

    def try_acquire(self) -> bool:
        self.log.append("try_acquire")
        if self.grants > 0:
            self.grants -= 1
            return True
        return False


def test_the_core_decides_delays_then_gives_up_when_attempts_run_out():
    state = RetryState(RetryConfig(max_attempts=3, base=1.0, jitter="none"), random.Random(0))
    decisions = []
    for _ in range(3):
        state.start_attempt()
        decisions.append(state.on_failure(ConnectionError()))
    assert decisions == [RetryAfter(1.0), RetryAfter(2.0), GiveUp("attempts exhausted")]
    assert state.attempts == 3 and state.delays == [1.0, 2.0]


def test_the_core_gives_up_at_once_on_errors_it_may_not_retry():
    config = RetryConfig(retry_on=BaseException)
    state = RetryState(config, random.Random(0))
    state.start_attempt()
    assert state.on_failure(ValueError()) == RetryAfter(state.delays[0])
    assert state.on_failure(asyncio.CancelledError()) == GiveUp("not retryable")
    assert state.on_failure(KeyboardInterrupt()) == GiveUp("not retryable")
    strict = RetryState(RetryConfig(), random.Random(0))
    strict.start_attempt()
    assert strict.on_failure(KeyError()) == GiveUp("not retryable")


def test_the_core_asks_the_budget_before_each_retry_and_records_each_call():
    budget = RecordingBudget(grants=1)
    state = RetryState(RetryConfig(max_attempts=5, jitter="none"), random.Random(0), budget)
    assert budget.log == ["record_request"]
    state.start_attempt()
    assert isinstance(state.on_failure(TimeoutError()), RetryAfter)
    state.start_attempt()
    assert state.on_failure(TimeoutError()) == GiveUp("budget exhausted")
    assert budget.log == ["record_request", "try_acquire", "try_acquire"]


@pytest.mark.parametrize(("kwargs", "error", "name"), [
    ({"max_attempts": 0}, ValueError, "max_attempts"),
    ({"max_attempts": 2.5}, TypeError, "max_attempts"),
    ({"base": -1}, ValueError, "base"),
    ({"cap": 0.01}, ValueError, "cap"),
    ({"jitter": "gaussian"}, ValueError, "jitter"),
    ({"retry_on": "ConnectionError"}, TypeError, "retry_on"),
    ({"retry_on": (ConnectionError, 42)}, TypeError, "retry_on"),
    ({"rng": 42}, TypeError, "rng"),
    ({"budget": object()}, TypeError, "budget"),
])
def test_retry_policy_refuses_bad_arguments(kwargs, error, name):
    with pytest.raises(error, match=name):
        RetryPolicy(**kwargs)


# --- the asyncio policy ------------------------------------------------------------------------


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 9) for a, b in itertools.pairwise(times)]


async def test_retries_until_the_call_succeeds_sleeping_the_backoff_between_tries():
    flaky = Flaky(2, result="paid")
    policy = RetryPolicy(max_attempts=5, base=0.1, jitter="none")
    assert await policy.call(flaky) == "paid"
    assert policy.attempts == 3
    assert gaps(flaky.tries) == [0.1, 0.2]


async def test_gives_up_after_max_attempts_with_the_last_error_and_no_final_sleep():
    loop = asyncio.get_running_loop()
    flaky = Flaky(math.inf, duration=0.5)
    policy = RetryPolicy(max_attempts=4, base=0.1, jitter="none")
    with pytest.raises(ConnectionError) as raised:
        await policy.call(flaky)
    assert raised.value is flaky.errors[-1]
    assert flaky.calls == policy.attempts == 4
    assert gaps(flaky.tries) == [0.6, 0.7, 0.9]  # 0.5 s of work plus 0.1, 0.2, 0.4
    assert loop.time() == pytest.approx(flaky.tries[-1] + 0.5)  # raised as the last try failed


async def test_one_try_means_no_retry():
    flaky = Flaky(1)
    with pytest.raises(ConnectionError):
        await RetryPolicy(max_attempts=1).call(flaky)
    assert flaky.calls == 1


async def test_errors_outside_retry_on_are_raised_at_once():
    flaky = Flaky(math.inf, error=ValueError)
    policy = RetryPolicy(max_attempts=5)
    with pytest.raises(ValueError):
        await policy.call(flaky)
    assert flaky.calls == policy.attempts == 1
    assert asyncio.get_running_loop().time() == 0


async def test_subclasses_of_retry_on_are_retried_and_a_single_class_is_accepted():
    assert await RetryPolicy(retry_on=ConnectionError).call(Flaky(2, error=ConnectionResetError))
    assert await RetryPolicy(retry_on=OSError).call(Flaky(2, error=ConnectionRefusedError))
    with pytest.raises(TimeoutError):
        await RetryPolicy(retry_on=ConnectionError).call(Flaky(1, error=TimeoutError))


async def test_arguments_are_passed_to_every_try():
    seen = []

    async def charge(amount, *, currency):
        seen.append((amount, currency))
        if len(seen) < 2:
            raise ConnectionError("reset")
        return "ok"

    assert await RetryPolicy(jitter="none").call(charge, 25, currency="EUR") == "ok"
    assert seen == [(25, "EUR"), (25, "EUR")]


async def test_seeded_jittered_sleeps_follow_backoff_delay_chaining_previous():
    for jitter in JITTERS:
        flaky = Flaky(4)
        policy = RetryPolicy(max_attempts=5, base=0.1, cap=1.0, jitter=jitter,
                             rng=random.Random(42))
        await policy.call(flaky)
        twin, previous, expected = random.Random(42), None, []
        for n in range(4):
            previous = backoff_delay(n, base=0.1, cap=1.0, jitter=jitter, rng=twin,
                                     previous=previous)
            expected.append(previous)
        assert gaps(flaky.tries) == pytest.approx(expected, abs=1e-8), jitter
        assert policy.last_state.delays == expected


@pytest.mark.parametrize("during", ["a try", "the backoff sleep"])
async def test_cancellation_is_never_retried_even_with_retry_on_base_exception(during):
    flaky = Flaky(math.inf, duration=1.0 if during == "a try" else 0.0)
    policy = RetryPolicy(max_attempts=5, base=1.0, jitter="none", retry_on=BaseException)
    task = asyncio.ensure_future(policy.call(flaky))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(10)
    assert flaky.calls == 1


async def test_a_budget_is_charged_per_call_and_per_retry_and_its_no_is_final():
    loop = asyncio.get_running_loop()
    budget = RecordingBudget(grants=2)
    flaky = Flaky(math.inf)
    policy = RetryPolicy(max_attempts=10, base=0.1, jitter="none", budget=budget)
    with pytest.raises(ConnectionError) as raised:
        await policy.call(flaky)
    assert raised.value is flaky.errors[-1]
    assert flaky.calls == policy.attempts == 3
    assert budget.log == ["record_request", "try_acquire", "try_acquire", "try_acquire"]
    assert loop.time() == pytest.approx(flaky.tries[-1])  # no sleep after the refusal
    await policy.call(Flaky(0))
    assert budget.log[-1] == "record_request"


async def test_the_policy_wraps_a_shop_client_and_rides_out_a_transient_503():
    shop = SimShop(seed=1)
    shop.faults.inject("payments", Script((503, 503)))
    policy = RetryPolicy(max_attempts=3, base=0.01, retry_on=UpstreamError,
                         rng=random.Random(1))
    shop.client("orders").use("payments", lambda send, request: policy.call(send, request))
    answer = await shop.request("POST", "/checkout", json={"item": "umbrella", "amount": 5})
    assert answer.status == 201
    assert shop.client("orders").sent["payments"] == 3
    assert shop.service("payments").state["charges"] == [5]


# --- the budget ---------------------------------------------------------------------------------


def acquisitions(budget: RetryBudget) -> int:
    count = 0
    while budget.try_acquire():
        count += 1
        assert count < 10_000
    return count


def test_a_budget_starts_with_min_tokens():
    assert acquisitions(RetryBudget(ratio=0.5, min_tokens=3, max_tokens=10)) == 3
    assert acquisitions(RetryBudget(min_tokens=0)) == 0
    assert RetryBudget().balance == 10


def test_each_request_deposits_ratio_tokens_and_each_retry_takes_a_whole_one():
    budget = RetryBudget(ratio=0.25, min_tokens=0, max_tokens=10)
    for _ in range(3):
        budget.record_request()
    assert not budget.try_acquire()
    budget.record_request()
    assert budget.try_acquire() and not budget.try_acquire()
    assert budget.balance == 0


def test_deposits_that_are_not_exact_in_binary_still_add_up_to_whole_tokens():
    budget = RetryBudget(ratio=0.2, min_tokens=0)
    for _ in range(5):
        budget.record_request()
    assert budget.try_acquire()
    budget = RetryBudget(ratio=0.1, min_tokens=0)
    for _ in range(30):
        budget.record_request()
    assert acquisitions(budget) == 3


def test_the_balance_never_exceeds_max_tokens():
    budget = RetryBudget(ratio=1.0, min_tokens=2, max_tokens=5)
    for _ in range(100):
        budget.record_request()
    assert budget.balance == 5
    assert acquisitions(budget) == 5


def test_over_a_long_run_retries_stay_within_ratio_of_requests_plus_min_tokens():
    rng = random.Random(5)
    budget = RetryBudget(ratio=0.2, min_tokens=10, max_tokens=100)
    retries = requests = 0
    for _ in range(10_000):
        budget.record_request()
        requests += 1
        while rng.random() < 0.7 and budget.try_acquire():  # a dependency failing 70 %
            retries += 1
    assert retries <= 10 + 0.2 * requests
    assert retries >= 0.2 * requests - 1  # ...and the budget does let that many through
    assert budget.granted == retries


async def test_a_budget_bounds_the_load_on_a_dependency_that_is_down():
    async def run(budget):
        policy = RetryPolicy(max_attempts=3, base=0.001, jitter="none", budget=budget)
        dependency = Flaky(math.inf, limit=10**6)
        for _ in range(1000):
            with pytest.raises(ConnectionError):
                await policy.call(dependency)
        return dependency.calls / 1000

    assert await run(None) == 3.0
    assert await run(RetryBudget(ratio=0.25, min_tokens=10, max_tokens=100)) == 1.26


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"ratio": -0.1}, "ratio"),
    ({"ratio": float("nan")}, "ratio"),
    ({"min_tokens": -1}, "min_tokens"),
    ({"max_tokens": 5, "min_tokens": 10}, "max_tokens"),
    ({"max_tokens": float("inf")}, "max_tokens"),
])
def test_retry_budget_refuses_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        RetryBudget(**kwargs)
