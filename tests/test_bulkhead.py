"""The reference bulkhead: its sans-I/O core, its asyncio shell (in virtual time), pool sizing."""

from __future__ import annotations

import asyncio
import math

import pytest

from faultline.bulkhead import (
    Admit,
    Bulkhead,
    BulkheadConfig,
    Reject,
    Slots,
    Wait,
    erlang_b,
    little_pool_size,
    pool_size_for_slo,
)
from faultline.errors import BulkheadFullError

# --- the core ---------------------------------------------------------------------------


def test_core_admits_up_to_the_limit_then_queues_or_rejects():
    slots = Slots(2)
    assert slots.request(may_wait=False) == Admit()
    assert slots.request(may_wait=True) == Admit()
    assert slots.request(may_wait=False) == Reject()
    waiting = slots.request(may_wait=True)
    assert isinstance(waiting, Wait)
    assert (slots.in_flight, slots.waiting, slots.rejected) == (2, 1, 1)


def test_core_hands_a_freed_slot_to_the_first_waiter_in_line():
    slots = Slots(1)
    slots.request(may_wait=False)
    first = slots.request(may_wait=True).ticket
    second = slots.request(may_wait=True).ticket
    assert slots.release() is first
    assert (slots.in_flight, slots.waiting) == (1, 1)  # the slot changed hands
    assert slots.stop_waiting(first) is True  # first now holds it
    assert slots.release() is second
    assert slots.stop_waiting(second) is True
    assert slots.release() is None
    assert (slots.in_flight, slots.waiting) == (0, 0)


def test_core_does_not_let_a_newcomer_jump_the_queue():
    slots = Slots(1)
    slots.request(may_wait=False)
    first = slots.request(may_wait=True).ticket
    assert slots.release() is first  # handed over, not freed
    assert slots.request(may_wait=False) == Reject()


def test_core_a_waiter_that_gives_up_holds_nothing_and_a_timeout_counts_as_rejected():
    slots = Slots(1)
    slots.request(may_wait=False)
    cancelled = slots.request(may_wait=True).ticket
    timed_out = slots.request(may_wait=True).ticket
    assert slots.stop_waiting(cancelled) is False
    assert slots.rejected == 0
    assert slots.stop_waiting(timed_out, timed_out=True) is False
    assert (slots.rejected, slots.waiting) == (1, 0)
    assert slots.release() is None
    assert slots.in_flight == 0


def test_core_refuses_a_release_without_a_slot():
    with pytest.raises(RuntimeError, match="release"):
        Slots(1).release()


@pytest.mark.parametrize(("kwargs", "error", "name"), [
    ({"max_concurrent": 0}, ValueError, "max_concurrent"),
    ({"max_concurrent": -3}, ValueError, "max_concurrent"),
    ({"max_concurrent": 2.5}, TypeError, "max_concurrent"),
    ({"max_concurrent": "3"}, TypeError, "max_concurrent"),
    ({"max_concurrent": True}, TypeError, "max_concurrent"),
    ({"max_concurrent": 2, "max_wait": -0.1}, ValueError, "max_wait"),
    ({"max_concurrent": 2, "max_wait": math.nan}, ValueError, "max_wait"),
    ({"max_concurrent": 2, "max_wait": "1"}, TypeError, "max_wait"),
])
def test_bad_arguments_name_the_argument(kwargs, error, name):
    with pytest.raises(error, match=name):
        Bulkhead(**kwargs)
    with pytest.raises(error, match=name):
        BulkheadConfig(**kwargs)


def test_max_wait_may_be_infinite_and_is_kept_as_a_float():
    assert Bulkhead(3, math.inf).max_wait == math.inf
    assert Bulkhead(3, 1).max_wait == 1.0 and isinstance(Bulkhead(3, 1).max_wait, float)
    assert Bulkhead(3).max_wait == 0.0


# --- the shell, in virtual time ------------------------------------------------------------


async def sleep_then(seconds: float, value: object = None) -> object:
    await asyncio.sleep(seconds)
    return value


async def test_never_more_than_max_concurrent_among_a_thousand_tasks():
    bulkhead = Bulkhead(7, max_wait=math.inf)
    running = peak = 0

    async def work(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        assert bulkhead.in_flight <= 7
        await asyncio.sleep(0.001 * (i % 13 + 1))
        running -= 1
        return i

    results = await asyncio.gather(*(bulkhead.call(work, i) for i in range(1000)))
    assert results == list(range(1000))
    assert peak == 7
    assert (bulkhead.in_flight, bulkhead.waiting, bulkhead.rejected) == (0, 0, 0)


async def test_with_no_waiting_a_full_bulkhead_rejects_at_once_without_calling_fn():
    loop = asyncio.get_running_loop()
    bulkhead = Bulkhead(2)
    called = []

    async def hold(name: str) -> str:
        called.append(name)
        await asyncio.sleep(1)
        return name

    holders = [asyncio.ensure_future(bulkhead.call(hold, n)) for n in "ab"]
    await asyncio.sleep(0)
    with pytest.raises(BulkheadFullError):
        await bulkhead.call(hold, "c")
    assert loop.time() == 0.0
    assert called == ["a", "b"]
    assert (bulkhead.in_flight, bulkhead.rejected) == (2, 1)
    assert await asyncio.gather(*holders) == ["a", "b"]
    assert await bulkhead.call(hold, "d") == "d"


@pytest.mark.parametrize(("max_wait", "hold", "expected"), [
    (0.5, 2.0, ("rejected", 0.5)),
    (2.5, 10.0, ("rejected", 2.5)),
    (0.5, 0.25, ("ran", 0.25)),
    (math.inf, 300.0, ("ran", 300.0)),
])
async def test_a_waiter_gets_a_slot_within_max_wait_or_is_rejected_exactly_at_it(
        max_wait, hold, expected):
    loop = asyncio.get_running_loop()
    bulkhead = Bulkhead(1, max_wait=max_wait)
    holder = asyncio.ensure_future(bulkhead.call(sleep_then, hold))
    await asyncio.sleep(0)
    try:
        outcome = ("ran", await bulkhead.call(_now))
    except BulkheadFullError:
        outcome = ("rejected", loop.time())
    assert outcome == expected
    await holder
    assert bulkhead.rejected == (expected[0] == "rejected")
    assert await bulkhead.call(_now) == max(hold, expected[1])  # nothing left holding a slot


async def _now() -> float:
    return asyncio.get_running_loop().time()


async def test_waiters_are_served_first_come_first_served():
    bulkhead = Bulkhead(1, max_wait=math.inf)
    served = []

    async def job(name: str) -> None:
        served.append(name)
        await asyncio.sleep(1)

    tasks = []
    for name in "abcde":
        tasks.append(asyncio.ensure_future(bulkhead.call(job, name)))
        await asyncio.sleep(0.1)
    await asyncio.gather(*tasks)
    assert "".join(served) == "abcde"


async def test_a_call_arriving_as_a_slot_frees_queues_behind_the_waiters():
    bulkhead = Bulkhead(1, max_wait=math.inf)
    served = []
    late: list[asyncio.Future] = []

    async def job(name: str) -> None:
        served.append(name)
        await asyncio.sleep(1)
        if name == "a":  # arrives in the same instant as a's slot is given back
            late.append(asyncio.ensure_future(bulkhead.call(job, "z")))

    tasks = [asyncio.ensure_future(bulkhead.call(job, n)) for n in "axy"]
    await asyncio.gather(*tasks)
    await late[0]
    assert "".join(served) == "axyz"


async def test_the_slot_comes_back_after_an_error_which_propagates_unchanged():
    bulkhead = Bulkhead(1)
    error = KeyError("boom")

    async def broken() -> None:
        await asyncio.sleep(0.1)
        raise error

    for _ in range(3):
        with pytest.raises(KeyError) as raised:
            await bulkhead.call(broken)
        assert raised.value is error
    assert bulkhead.in_flight == 0
    assert await bulkhead.call(sleep_then, 0, "ok") == "ok"


async def test_an_error_before_the_first_await_also_gives_the_slot_back():
    bulkhead = Bulkhead(1)

    async def broken() -> None:
        raise ValueError("at once")

    with pytest.raises(ValueError, match="at once"):
        await bulkhead.call(broken)
    assert bulkhead.in_flight == 0


async def test_a_cancelled_running_call_gives_its_slot_back():
    loop = asyncio.get_running_loop()
    bulkhead = Bulkhead(1, max_wait=math.inf)
    running = asyncio.ensure_future(bulkhead.call(sleep_then, 10))
    waiter = asyncio.ensure_future(bulkhead.call(_now))
    await asyncio.sleep(1)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert await waiter == 1.0
    assert loop.time() == 1.0
    assert bulkhead.in_flight == 0


async def test_a_cancelled_waiter_holds_no_slot():
    bulkhead = Bulkhead(1, max_wait=math.inf)
    holder = asyncio.ensure_future(bulkhead.call(sleep_then, 1.0, "a"))
    await asyncio.sleep(0)
    gives_up = asyncio.ensure_future(bulkhead.call(sleep_then, 5.0, "w"))
    await asyncio.sleep(0.5)
    assert bulkhead.waiting == 1
    gives_up.cancel()
    await asyncio.sleep(0)
    assert (bulkhead.in_flight, bulkhead.waiting, bulkhead.rejected) == (1, 0, 0)
    assert await bulkhead.call(_now) == 1.0  # served as soon as the holder is done
    assert await holder == "a"
    assert bulkhead.in_flight == 0


async def test_a_waiter_cancelled_just_after_it_was_handed_the_slot_passes_it_on():
    loop = asyncio.get_running_loop()
    bulkhead = Bulkhead(1, max_wait=math.inf)
    tasks: dict[str, asyncio.Future] = {}

    async def holder() -> None:
        await asyncio.sleep(1)
        # Runs right after this call returns and hands its slot to "w": too late for w.
        loop.call_soon(tasks["w"].cancel)

    tasks["h"] = asyncio.ensure_future(bulkhead.call(holder))
    await asyncio.sleep(0)
    tasks["w"] = asyncio.ensure_future(bulkhead.call(sleep_then, 5.0, "w"))
    tasks["n"] = asyncio.ensure_future(bulkhead.call(_now))
    await asyncio.sleep(0)
    assert bulkhead.waiting == 2
    assert await tasks["n"] == 1.0
    assert tasks["w"].cancelled()
    assert (bulkhead.in_flight, bulkhead.waiting) == (0, 0)


async def test_a_waiter_whose_slot_arrives_as_max_wait_ends_keeps_it_and_runs():
    loop = asyncio.get_running_loop()
    bulkhead = Bulkhead(1, max_wait=1.0)
    holder = asyncio.ensure_future(bulkhead.call(sleep_then, 1.0))
    await asyncio.sleep(0)
    # The waiter's timeout and the holder's end fall on the same virtual instant.
    waiter = asyncio.ensure_future(bulkhead.call(_now))
    await holder
    try:
        started = await waiter
    except BulkheadFullError:
        started = None
    # Either way the slot is accounted for: nothing leaks and nothing is double-counted.
    assert bulkhead.in_flight == 0
    assert bulkhead.rejected == (started is None)
    assert started in (None, 1.0)
    assert loop.time() == 1.0


async def test_counters_count_running_calls_not_waiters_and_every_rejection():
    bulkhead = Bulkhead(2, max_wait=math.inf)
    tasks = [asyncio.ensure_future(bulkhead.call(sleep_then, 2)) for _ in range(5)]
    await asyncio.sleep(0.5)
    assert (bulkhead.in_flight, bulkhead.waiting, bulkhead.rejected) == (2, 3, 0)
    await asyncio.gather(*tasks)
    assert (bulkhead.in_flight, bulkhead.waiting) == (0, 0)

    strict = Bulkhead(2)
    held = [asyncio.ensure_future(strict.call(sleep_then, 2)) for _ in range(2)]
    await asyncio.sleep(0)
    for _ in range(3):
        with pytest.raises(BulkheadFullError):
            await strict.call(sleep_then, 2)
    assert (strict.in_flight, strict.rejected) == (2, 3)
    await asyncio.gather(*held)
    assert (strict.in_flight, strict.rejected) == (0, 3)
    assert "rejected=3" in repr(strict)


async def test_call_refuses_something_that_is_not_a_function():
    with pytest.raises(TypeError, match="fn"):
        await Bulkhead(1).call(42)


def test_works_with_a_plain_event_loop_too():
    async def main() -> list[int]:
        bulkhead = Bulkhead(2, max_wait=math.inf)
        return await asyncio.gather(*(bulkhead.call(sleep_then, 0.001, i) for i in range(5)))

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]


# --- sizing -------------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "latency", "expected"), [
    (40, 0.0518, 3),  # 2.072 slots busy on average
    (64, 0.125, 8),  # exactly 8
    (0.1, 30, 3),  # 3.0000000000000004 in floats: still 3
    (1000, 0.0031, 4),
    (0.5, 0.1, 1),
    (0, 0.2, 1),  # at least one slot
    (5, 0, 1),
])
def test_little_pool_size_is_the_mean_busy_slots_rounded_up_and_at_least_one(
        rate, latency, expected):
    size = little_pool_size(rate, latency)
    assert size == expected and type(size) is int


@pytest.mark.parametrize(("args", "error", "name"), [
    ((-1, 0.1), ValueError, "arrival_rate"),
    ((10, -0.1), ValueError, "latency"),
    ((math.nan, 0.1), ValueError, "arrival_rate"),
    ((10, math.inf), ValueError, "latency"),
    (("10", 0.1), TypeError, "arrival_rate"),
    ((10, None), TypeError, "latency"),
])
def test_little_pool_size_rejects_bad_arguments(args, error, name):
    with pytest.raises(error, match=name):
        little_pool_size(*args)


def test_erlang_b_matches_known_values():
    assert erlang_b(1, 1.0) == pytest.approx(0.5)
    assert erlang_b(2, 1.0) == pytest.approx(0.2)
    assert erlang_b(10, 5.0) == pytest.approx(0.018384, abs=1e-6)  # standard tables
    assert erlang_b(5, 0.0) == 0.0
    with pytest.raises(ValueError, match="pool_size"):
        erlang_b(0, 1.0)


def test_pool_size_for_slo_adds_headroom_above_littles_law():
    assert little_pool_size(40, 0.0517) == 3
    assert pool_size_for_slo(40, 0.0517, 0.99) == 7
    assert pool_size_for_slo(40, 0.0517, 0.999) == 9
    assert pool_size_for_slo(0, 0.05, 0.99) == 1
    with pytest.raises(ValueError, match="slo"):
        pool_size_for_slo(40, 0.05, 1.0)
