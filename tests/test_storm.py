"""The retry-storm lab: Flaky, Brooker's OCC experiment, amplification, the retried checkout."""

from __future__ import annotations

import asyncio
import math
import random

import pytest

from faultline.retry import JITTERS, RetryBudget, RetryPolicy
from faultline.storm import (
    STRATEGIES,
    Conflict,
    Flaky,
    RetryImmediately,
    amplification_series,
    budgets,
    chain_amplification,
    occ_experiment,
    occ_table,
    occ_trial,
    ranking,
    retried_checkout,
    sample_delays,
)

# --- Flaky --------------------------------------------------------------------------------


async def test_flaky_fails_the_given_number_of_times_then_answers():
    flaky = Flaky(2, error=TimeoutError, result=42, duration=0.5)
    for expected in ("failure 1", "failure 2"):
        with pytest.raises(TimeoutError, match=expected):
            await flaky()
    assert await flaky() == 42
    assert flaky.tries == [0.0, 0.5, 1.0]
    assert [str(e) for e in flaky.errors] == ["failure 1", "failure 2"]


async def test_flaky_stops_a_runaway_retry_loop():
    flaky = Flaky(math.inf, limit=3)
    for _ in range(3):
        with pytest.raises(ConnectionError):
            await flaky()
    assert await flaky() == Flaky.RUNAWAY


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"failures": -1}, ValueError), ({"error": "boom"}, TypeError), ({"duration": -1}, ValueError),
])
def test_flaky_refuses_bad_arguments(kwargs, error):
    with pytest.raises(error):
        Flaky(**kwargs)


# --- sampled delays -----------------------------------------------------------------------


def test_sample_delays_chains_previous_like_a_policy():
    delays = sample_delays("decorrelated", attempts=(0, 2), samples=500, base=0.1, cap=10,
                           rng=random.Random(1))
    assert set(delays) == {0, 2} and all(len(d) == 500 for d in delays.values())
    assert max(delays[0]) <= 0.3 + 1e-12 < max(delays[2])  # later sleeps can grow further
    exact = sample_delays("none", attempts=range(4), samples=3, base=0.1, cap=0.5)
    assert exact == {0: [0.1] * 3, 1: [0.2] * 3, 2: [0.4] * 3, 3: [0.5] * 3}
    with pytest.raises(ValueError, match="jitter"):
        sample_delays("random")
    with pytest.raises(ValueError, match="attempts"):
        sample_delays("full", attempts=[])


# --- Brooker's OCC experiment ----------------------------------------------------------------


async def test_a_lone_client_writes_once_in_four_network_hops():
    calls, completion = await occ_trial(1, "full jitter", rng=random.Random(0),
                                        network=(0.010, 0.0))
    assert calls == 1
    assert completion == pytest.approx(0.040)


async def test_two_clients_without_backoff_conflict_once():
    # Both read version 0 at 10 ms and write at 30 ms: the first wins, the second learns
    # of its conflict at 40 ms, reads again at 50 ms, writes at 70 ms, and hears at 80 ms.
    calls, completion = await occ_trial(2, "no backoff", rng=random.Random(0),
                                        network=(0.010, 0.0))
    assert calls == 3
    assert completion == pytest.approx(0.080)


async def test_a_conflicting_client_backs_off_before_reading_again():
    calls, completion = await occ_trial(2, "exponential", rng=random.Random(0), base=0.005,
                                        network=(0.010, 0.0))
    assert calls == 3
    assert completion == pytest.approx(0.085)  # 5 ms of backoff after the conflict


async def test_retry_immediately_retries_only_its_errors():
    flaky = Flaky(3, error=Conflict)
    retrier = RetryImmediately(Conflict)
    assert await retrier.call(flaky) == "ok" and retrier.attempts == 4
    with pytest.raises(ValueError):
        await retrier.call(Flaky(1, error=ValueError))
    assert asyncio.get_running_loop().time() == 0


def test_the_experiment_is_seeded_and_backoff_with_jitter_does_less_work():
    points = occ_experiment(clients=(1, 25), trials=2, seed=7)
    assert points == occ_experiment(clients=(1, 25), trials=2, seed=7)
    assert len(points) == 2 * len(STRATEGIES)
    lone = [p for p in points if p.clients == 1]
    assert all(p.calls == 1 for p in lone)
    at_25 = {p.strategy: p for p in points if p.clients == 25}
    for jittered in ("full jitter", "equal jitter", "decorrelated jitter"):
        assert at_25[jittered].calls < 0.8 * at_25["no backoff"].calls
        assert at_25[jittered].completion < at_25["exponential"].completion / 3
    assert ranking(points, 25, "completion")[-1] == "exponential"
    assert ranking(points, 25)[-1] == "no backoff"


def test_the_experiment_runs_your_own_policy_class():
    built = []

    class Counting(RetryPolicy):
        def __init__(self, **kwargs):
            built.append(kwargs)
            super().__init__(**kwargs)

    occ_experiment(clients=(3,), strategies=("full jitter",), trials=1, policy=Counting)
    assert len(built) == 3
    assert built[0]["jitter"] == "full" and built[0]["retry_on"] is Conflict
    assert (built[0]["base"], built[0]["cap"]) == (0.005, 2.0)


def test_occ_table_and_ranking_describe_the_points():
    points = occ_experiment(clients=(1, 5), strategies=("no backoff", "full jitter"), trials=1)
    table = occ_table(points, clients=(5,))
    assert "N=5" in table and "no backoff" in table and "full jitter" in table
    assert "N=1" not in table
    with pytest.raises(ValueError, match="measure"):
        ranking(points, 5, "speed")
    with pytest.raises(ValueError, match="clients"):
        ranking(points, 7)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"trials": 0}, "trials"), ({"strategies": ("linear",)}, "strategy"),
])
def test_occ_experiment_refuses_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        occ_experiment(**kwargs)


# --- amplification through a chain -------------------------------------------------------------


@pytest.mark.parametrize(("layers", "attempts"), [(1, 3), (2, 3), (3, 3), (3, 2), (2, 5)])
def test_retries_at_every_layer_multiply_to_r_to_the_k(layers, attempts):
    result = chain_amplification(layers, attempts, requests=20)
    assert result.bottom_tries == 20 * attempts**layers
    assert result.amplification == attempts**layers
    assert result.successes == 0 and not result.budget


def test_a_budget_per_caller_bounds_amplification_to_about_one_plus_ratio_per_layer():
    for layers in (1, 2, 3, 4):
        result = chain_amplification(layers, 3, requests=2000, budget=RetryBudget)
        assert result.budget
        assert result.amplification <= (1.2 + 10 / 2000) ** layers + 1e-9
        assert result.amplification >= 1.2**layers - 0.01


def test_retrying_at_one_layer_only_costs_r():
    for layer in (0, 2):
        result = chain_amplification(3, 3, requests=50, retry_layers=[layer])
        assert result.amplification == 3
        assert result.retry_layers == (layer,)


def test_a_healthy_chain_is_not_amplified_and_transient_faults_are_ridden_out():
    assert chain_amplification(3, 3, requests=100, failure_rate=0.0).amplification == 1
    plain = chain_amplification(3, 1, requests=1000, failure_rate=0.3, seed=1)
    retried = chain_amplification(3, 3, requests=1000, failure_rate=0.3, seed=1,
                                  retry_layers=[2])
    assert plain.success_rate < 0.75 < 0.95 < retried.success_rate


def test_amplification_series_compares_three_ways_of_retrying():
    series = amplification_series((1, 3), requests=100)
    every, budgeted, top = series.values()
    assert every == {1: 3.0, 3: 27.0} and top == {1: 3.0, 3: 3.0}
    assert 1 < budgeted[1] < budgeted[3] < 3
    assert list(series) == ["3 tries at every layer", "3 tries at every layer, budget per caller",
                            "3 tries at the top layer only"]


def test_budgets_makes_fresh_budgets_with_checked_arguments():
    make = budgets(ratio=0.1, min_tokens=1)
    first, second = make(), make()
    assert first is not second and first.ratio == 0.1 and first.balance == 1
    with pytest.raises(ValueError, match="ratio"):
        budgets(ratio=-1)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"layers": 0}, "layers"), ({"attempts": 0}, "attempts"), ({"requests": 0}, "requests"),
    ({"failure_rate": 1.5}, "failure_rate"), ({"retry_layers": [3]}, "retry_layers"),
])
def test_chain_amplification_refuses_bad_arguments(kwargs, name):
    args = {"layers": 2, **kwargs}
    with pytest.raises(ValueError, match=name):
        chain_amplification(**args)


# --- the retried checkout ------------------------------------------------------------------------


def test_a_retried_checkout_without_a_key_places_and_charges_twice():
    outcome = retried_checkout()
    assert outcome.status == 201 and outcome.tries == 2
    assert outcome.orders == 2 and outcome.charges == 2 and outcome.order_ids == (1, 2)
    assert not outcome.replayed


def test_an_idempotency_key_makes_the_retry_replay_the_first_order():
    outcome = retried_checkout("checkout-7f3a")
    assert outcome.status == 200 and outcome.tries == 2
    assert outcome.orders == 1 and outcome.charges == 1 and outcome.replayed


def test_without_a_lost_answer_there_is_nothing_to_duplicate():
    outcome = retried_checkout(slow_first=0.0)
    assert (outcome.status, outcome.tries, outcome.orders, outcome.charges) == (201, 1, 1, 1)


def test_every_jitter_name_is_a_strategy():
    assert set(JITTERS) == {j for j in STRATEGIES.values() if j is not None}


# --- the lab's plots (faultline.viz) ---------------------------------------------------------


@pytest.fixture
def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    yield pyplot
    pyplot.close("all")


def test_delay_histograms_draw_a_row_per_jitter_and_a_column_per_attempt(plt):
    from faultline import viz

    samples = {j: sample_delays(j, attempts=(0, 2), samples=200, rng=random.Random(2))
               for j in JITTERS}
    fig = viz.delay_histograms(samples)
    axes = fig.axes
    assert len(axes) == 4 * 2
    assert [ax.get_ylabel() for ax in axes[::2]] == list(JITTERS)
    assert [ax.get_title(loc="left") for ax in axes[:2]] == ["sleep after try 1",
                                                             "sleep after try 3"]
    with pytest.raises(ValueError, match="empty"):
        viz.delay_histograms({"full": {0: []}})


def test_storm_curves_draw_calls_and_completion_per_strategy(plt):
    from faultline import viz

    points = occ_experiment(clients=(1, 4), strategies=("no backoff", "full jitter"), trials=1)
    fig = viz.storm_curves(points)
    left, right = fig.axes
    assert [line.get_label() for line in left.get_lines()] == ["no backoff", "full jitter"]
    assert right.get_yscale() == "log" and left.get_yscale() == "linear"
    assert list(left.get_lines()[0].get_xdata()) == [1, 4]
    assert viz.storm_curves(points, log_calls=True).axes[0].get_yscale() == "log"


def test_amplification_bars_print_each_value(plt):
    from faultline import viz

    ax = viz.amplification_bars({"no budget": {1: 3, 2: 9}, "budget": {1: 1.21, 2: 1.46}})
    assert [t.get_text() for t in ax.texts] == ["3×", "9×", "1.21×", "1.46×"]
    assert ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="amplification"):
        viz.amplification_bars({"x": {1: 0}})
