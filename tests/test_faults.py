"""Fault kinds decide without I/O; the injector keeps per-target state and streams."""

from __future__ import annotations

import random

import pytest

from faultline.faults import (
    FAULT_KINDS,
    Blackhole,
    ConnectionReset,
    Decision,
    ErrorRate,
    FaultInjector,
    Hang,
    Latency,
    LatencySpikes,
    Outcome,
    RandomLatency,
    Script,
    Slow,
    fault_from_dict,
)

EXAMPLES = [
    Latency(0.2),
    RandomLatency(0.01, 0.5),
    LatencySpikes(1.0, 0.05),
    ErrorRate(0.3, status=500),
    Hang(0.5),
    ConnectionReset(),
    Blackhole(0.25),
    Slow(2048.0),
    Script((500, 503, Latency(0.1), 200), then=ErrorRate(0.1)),
]


def test_every_kind_names_the_fallacy_it_demonstrates():
    fallacies = ("The network is reliable", "Latency is zero", "Bandwidth is infinite",
                 "Topology doesn't change")
    for kind in FAULT_KINDS.values():
        assert any(kind.fallacy.startswith(f) for f in fallacies), kind


@pytest.mark.parametrize("fault", EXAMPLES, ids=lambda f: f.kind)
def test_json_round_trip(fault):
    assert fault_from_dict(fault.to_dict()) == fault


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "meteor"}, "unknown fault kind 'meteor'; known kinds: latency"),
        ({"seconds": 1}, "unknown fault kind None"),
        ({"kind": "latency", "seconds": 1, "jitter": 2}, "latency has no parameter"),
        ({"kind": "error_rate", "probability": 2}, r"probability must be in \[0, 1\]"),
        ({"kind": "error_rate", "probability": 0.1, "status": 42}, "status must be an HTTP"),
        ({"kind": "script", "steps": "500"}, "script needs 'steps'"),
        ({"kind": "latency"}, "latency: .*seconds"),
    ],
)
def test_bad_json_gets_an_error_that_names_the_problem(data, message):
    with pytest.raises(ValueError, match=message):
        fault_from_dict(data)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Latency(-1), "seconds"),
        (lambda: Latency(float("nan")), "seconds"),
        (lambda: RandomLatency(0.5, 0.1), "high"),
        (lambda: Slow(0), "bytes_per_second"),
        (lambda: Script(()), "steps must not be empty"),
        (lambda: Script((700,)), "status"),
    ],
)
def test_bad_parameters_are_refused_when_the_fault_is_built(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_a_fault_kind_refuses_a_wrong_type():
    with pytest.raises(TypeError, match="probability must be a number"):
        ErrorRate("often")


def test_decisions_combine_delays_and_keep_the_first_failure():
    first = Decision(delay=0.1, outcome=Outcome.ERROR, status=500, bytes_per_second=100.0)
    second = Decision(delay=0.2, outcome=Outcome.HANG, bytes_per_second=50.0)
    assert first.then(second) == Decision(0.1 + 0.2, Outcome.ERROR, 500, 50.0)


def test_a_script_is_followed_exactly_then_falls_back():
    injector = FaultInjector(seed=1)
    injector.inject("payments", Script((500, 503, 200), then=Latency(0.5)))
    seen = [injector.decide("payments") for _ in range(5)]
    assert [(d.outcome, d.status, d.delay) for d in seen] == [
        (Outcome.ERROR, 500, 0.0),
        (Outcome.ERROR, 503, 0.0),
        (Outcome.PASS, None, 0.0),
        (Outcome.PASS, None, 0.5),
        (Outcome.PASS, None, 0.5),
    ]


def test_reinjecting_a_script_starts_it_over():
    injector = FaultInjector(seed=1)
    injector.inject("email", Script((500,)))
    assert injector.decide("email").status == 500
    assert injector.decide("email").outcome is Outcome.PASS
    injector.inject("email", Script((500,)))
    assert injector.decide("email").status == 500


def test_a_script_cannot_be_decided_without_an_injector():
    with pytest.raises(TypeError, match="FaultInjector"):
        Script((500,)).decide(random.Random(1))


def test_error_rate_lands_within_statistical_bounds():
    injector = FaultInjector(seed=7)
    injector.inject("payments", ErrorRate(0.3))
    n = 20_000
    errors = sum(injector.decide("payments").outcome is Outcome.ERROR for _ in range(n))
    sd = (n * 0.3 * 0.7) ** 0.5
    assert abs(errors - 0.3 * n) < 4 * sd


def test_service_faults_and_edge_faults_are_separate_targets():
    injector = FaultInjector(seed=1)
    injector.inject_edge("orders", "payments", Hang())
    assert injector.decide("payments").outcome is Outcome.PASS
    assert injector.decide("payments", caller="orders").outcome is Outcome.HANG
    assert injector.decide("payments", caller="gateway").outcome is Outcome.PASS


def test_clear_removes_a_service_and_the_edges_into_it():
    injector = FaultInjector(seed=1)
    injector.inject("payments", ErrorRate(1.0))
    injector.inject_edge("orders", "payments", Latency(1))
    injector.inject("email", Hang())
    injector.clear("payments")
    assert injector.snapshot() == {"email": [{"kind": "hang", "probability": 1.0}]}
    injector.clear()
    assert injector.snapshot() == {}
    assert injector.describe() == "no faults"


def test_injecting_nothing_clears_and_non_faults_are_refused():
    injector = FaultInjector(seed=1)
    injector.inject("email", Hang())
    injector.inject("email")
    assert injector.faults("email") == ()
    with pytest.raises(TypeError, match="fault objects"):
        injector.inject("email", "hang")


def test_each_target_draws_from_its_own_seeded_stream():
    def draws(extra_target: bool) -> list[Outcome]:
        injector = FaultInjector(seed=3)
        injector.inject("payments", ErrorRate(0.5))
        if extra_target:
            injector.inject("email", ErrorRate(0.5))
        out = []
        for _ in range(50):
            if extra_target:
                injector.decide("email")
            out.append(injector.decide("payments").outcome)
        return out

    assert draws(False) == draws(True)


def test_snapshot_and_describe_name_targets_and_fallacies():
    injector = FaultInjector(seed=1)
    injector.inject("inventory", Slow(1000.0))
    injector.inject_edge("orders", "payments", Latency(0.25))
    assert set(injector.snapshot()) == {"inventory", "orders->payments"}
    text = injector.describe()
    assert "orders -> payments: latency(seconds=0.25) [Latency is zero]" in text
    assert "[Bandwidth is infinite]" in text
