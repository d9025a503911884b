"""Load generators: arrivals, concurrency and records, measured in virtual time."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest

from faultline.load import Record, closed_loop, open_loop, send_and_record
from faultline.messages import Response


def constant_service(latency: float, status: int = 200):
    in_flight = [0, 0]  # now, peak

    async def send() -> Response:
        in_flight[0] += 1
        in_flight[1] = max(in_flight)
        try:
            await asyncio.sleep(latency)
            return Response(status, path=("svc",))
        finally:
            in_flight[0] -= 1

    return send, in_flight


async def test_open_loop_arrivals_are_poisson_at_the_rate():
    send, _ = constant_service(0.01)
    records = await open_loop(send, rate=50, duration=200, rng=random.Random(1))
    n = len(records)
    assert abs(n - 10_000) < 4 * 10_000**0.5
    gaps = [b.start - a.start for a, b in itertools.pairwise(records)]
    mean = sum(gaps) / len(gaps)
    var = sum((g - mean) ** 2 for g in gaps) / len(gaps)
    assert mean == pytest.approx(0.02, rel=0.05)
    assert var**0.5 == pytest.approx(mean, rel=0.1)  # exponential: sd equals mean


async def test_open_loop_keeps_sending_when_the_service_slows_down():
    send, in_flight = constant_service(5.0)
    records = await open_loop(send, rate=10, duration=10, rng=random.Random(2), timeout=None)
    assert in_flight[1] > 30  # arrivals pile up: nobody waits for the last answer
    assert all(r.latency == pytest.approx(5.0) and r.ok for r in records)


async def test_closed_loop_never_exceeds_its_clients_and_counts_requests_exactly():
    send, in_flight = constant_service(0.1)
    records = await closed_loop(send, clients=4, requests=10)
    assert len(records) == 10 and in_flight[1] == 4
    assert [round(r.start, 6) for r in records] == [0, 0, 0, 0, 0.1, 0.1, 0.1, 0.1, 0.2, 0.2]


async def test_closed_loop_stops_starting_requests_after_the_duration():
    send, _ = constant_service(0.3)
    records = await closed_loop(send, clients=2, duration=1.0)
    assert len(records) == 8 and max(r.start for r in records) < 1.0


async def test_a_timeout_and_an_exception_become_records_not_crashes():
    async def hang():
        await asyncio.sleep(10**6)

    async def reset():
        raise ConnectionResetError("boom")

    timed_out = await send_and_record(hang, timeout=0.5, route="x")
    failed = await send_and_record(reset)
    assert (timed_out.error, timed_out.latency, timed_out.ok, timed_out.route) == (
        "timeout", 0.5, False, "x")
    assert failed.error == "ConnectionResetError" and not failed.ok


def test_record_ok_means_an_answer_below_500():
    assert Record(0, 1, 404, None).ok
    assert not Record(0, 1, 503, None).ok
    assert not Record(0, 1, None, "timeout").ok


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 0, "duration": 1}, "rate must be a number > 0"),
        ({"rate": 1, "duration": -1}, "duration"),
        ({"rate": 1, "duration": 1, "timeout": 0}, "timeout"),
    ],
)
async def test_open_loop_refuses_bad_arguments(kwargs, message):
    send, _ = constant_service(0.1)
    with pytest.raises(ValueError, match=message):
        await open_loop(send, **kwargs)


async def test_closed_loop_needs_an_end():
    send, _ = constant_service(0.1)
    with pytest.raises(ValueError, match="duration or requests"):
        await closed_loop(send, clients=1)
    with pytest.raises(ValueError, match="clients"):
        await closed_loop(send, clients=0, requests=1)
