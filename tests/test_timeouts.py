"""Reference timeouts and deadlines, and deadline propagation through the shop."""

from __future__ import annotations

import asyncio

import pytest

import faultline as fl
from faultline.errors import DeadlineExceeded
from faultline.load import send_and_record
from faultline.sim import SimShop
from faultline.timeouts import DEADLINE_HEADER, Deadline, with_timeout


async def test_with_timeout_returns_the_result_in_time():
    async def work():
        await asyncio.sleep(1)
        return "done"

    assert await with_timeout(work(), 2) == "done"
    assert asyncio.get_running_loop().time() == 1.0


async def test_with_timeout_cancels_the_work_and_waits_for_it_to_finish_cancelling():
    loop = asyncio.get_running_loop()
    events = []

    async def slow():
        try:
            await asyncio.sleep(100)
        except asyncio.CancelledError:
            await asyncio.sleep(0.5)  # cleanup takes a while
            events.append(("cleaned up", loop.time()))
            raise

    with pytest.raises(TimeoutError):
        await with_timeout(slow(), 3)
    events.append(("timeout raised", loop.time()))
    assert events == [("cleaned up", 3.5), ("timeout raised", 3.5)]


async def test_errors_of_the_work_pass_through_unchanged():
    async def broken():
        await asyncio.sleep(0.1)
        raise KeyError("inner")

    with pytest.raises(KeyError, match="inner"):
        await with_timeout(broken(), 1)


async def test_cancelling_the_caller_cancels_the_work():
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def work():
        started.set()
        try:
            await asyncio.sleep(100)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    caller = asyncio.ensure_future(with_timeout(work(), 50))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert cancelled.is_set()


@pytest.mark.parametrize(("seconds", "error"), [(0, ValueError), (-1, ValueError),
                                                 (float("nan"), ValueError), ("1", TypeError)])
async def test_with_timeout_refuses_bad_seconds(seconds, error):
    coro = asyncio.sleep(0)
    with pytest.raises(error, match="seconds"):
        await with_timeout(coro, seconds)
    coro.close()


def test_deadline_counts_down_and_never_goes_negative(fake_clock):
    deadline = Deadline.after(1.5, clock=fake_clock)
    assert (deadline.remaining(), deadline.expired, deadline.to_header()) == (1.5, False, "1500")
    fake_clock.advance(1.2345)
    assert deadline.to_header() == "265"  # 265.5 ms left, floored
    fake_clock.advance(10)
    assert (deadline.remaining(), deadline.expired, deadline.to_header()) == (0.0, True, "0")


def test_deadline_header_round_trip(fake_clock):
    sent = Deadline.after(0.75, clock=fake_clock)
    received = Deadline.from_header(sent.to_header(), clock=fake_clock)
    assert received.remaining() == 0.75
    assert Deadline.from_header(" 250\t", clock=fake_clock).remaining() == 0.25


@pytest.mark.parametrize("text", ["", " ", "-5", "+5", "1.5", "1e3", "0x10", "٣", "²", "12ms"])
def test_malformed_deadline_headers_are_refused(text, fake_clock):
    with pytest.raises(ValueError, match="X-Deadline-Ms"):
        Deadline.from_header(text, clock=fake_clock)


def test_deadline_after_refuses_negative_or_infinite(fake_clock):
    for bad in (-0.1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="seconds"):
            Deadline.after(bad, clock=fake_clock)


async def test_the_deadline_travels_with_the_request_and_shrinks_at_each_hop():
    shop = SimShop(seed=1, network_delay=0.01)
    seen = {}
    deliver = shop.transport.send

    async def spy(target, request):
        seen[request.path] = int(request.header(DEADLINE_HEADER))
        return await deliver(target, request)

    shop.transport.send = spy
    response = await shop.route("checkout", deadline=2.0)()
    assert response.status == 201
    assert 1900 < seen["/charge"] < seen["/orders"] < seen["/checkout"] == 2000


def deadline_exceeded(record) -> bool:
    """The user saw the deadline pass: its own timeout, or a 504 from a hop whose copy of
    the deadline (floored to whole milliseconds at each hop) ran out a moment earlier."""
    return record.error == "timeout" or record.status == 504


async def test_the_caller_gives_up_at_the_deadline_and_the_work_behind_it_stops():
    shop = SimShop(seed=1, network_delay=0.0)
    shop.faults.inject("payments", fl.Latency(1.0))  # payments sits on the request
    record = await send_and_record(shop.route("checkout", deadline=0.5))
    assert deadline_exceeded(record) and 0.49 < record.latency <= 0.5
    await asyncio.sleep(5)  # long after: payments cut its work off at the deadline
    assert shop.service("payments").deadline_exceeded == 1
    assert shop.service("payments").state.get("charges") is None  # never charged
    assert shop.service("email").received == 0  # orders stopped before the next step


async def test_a_deadline_that_runs_out_in_transit_is_never_worked_on():
    shop = SimShop(seed=1, network_delay=0.0)
    shop.faults.inject_edge("orders", "payments", fl.Latency(1.0))
    record = await send_and_record(shop.route("checkout", deadline=0.5))
    assert deadline_exceeded(record)
    await asyncio.sleep(5)
    assert shop.service("payments").received == 0  # orders' client gave up before sending


async def test_queued_requests_past_their_deadline_are_shed_without_work():
    shop = SimShop(seed=1, network_delay=0.0, workers={"login": 1},
                   work={"login": fl.Work(1.0, sigma=0)})
    records = await asyncio.gather(*(send_and_record(shop.route("login", deadline=1.5))
                                     for _ in range(4)))
    assert sum(r.ok for r in records) == 1
    await asyncio.sleep(5)
    login = shop.service("login")
    assert login.deadline_exceeded == 3  # one cut off while working, two shed from the queue
    assert login.busy == 0


async def test_a_malformed_deadline_header_is_a_400():
    shop = SimShop(seed=1)
    response = await shop.client("gateway").request(
        "login", "POST", "/login", json={}, headers={DEADLINE_HEADER: "soon"},
        raise_for_status=False)
    assert response.status == 400 and "X-Deadline-Ms" in response.json["error"]


async def test_the_client_refuses_to_send_once_the_deadline_passed():
    shop = SimShop(seed=1)
    deadline = Deadline.after(0.0, clock=asyncio.get_running_loop().time)
    with pytest.raises(DeadlineExceeded):
        await shop.client("gateway").request("login", "POST", "/login", deadline=deadline)
    assert shop.service("login").received == 0


@pytest.mark.realtime
async def test_deadline_propagates_over_real_http():
    async with fl.LiveShop(seed=1) as shop:
        shop.faults.inject("payments", fl.Latency(1.0))
        record = await send_and_record(shop.route("checkout", deadline=0.2))
        await asyncio.sleep(0.1)  # let payments notice: its copy of the deadline is later
        assert shop.service("payments").deadline_exceeded == 1
    assert deadline_exceeded(record) and 0.19 <= record.latency < 0.5
