"""The fake clock and the virtual-time event loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from faultline.clock import FakeClock, run_virtual
from faultline.errors import VirtualTimeDeadlock


def test_fake_clock_moves_only_when_advanced():
    clock = FakeClock(5.0)
    assert clock() == 5.0
    assert clock.advance(2.5) == 7.5
    assert clock() == 7.5


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_fake_clock_refuses_to_go_backwards_or_to_infinity(bad):
    clock = FakeClock()
    with pytest.raises(ValueError, match="seconds"):
        clock.advance(bad)
    assert clock() == 0.0


def test_an_hour_of_sleeping_takes_milliseconds():
    async def main():
        loop = asyncio.get_running_loop()
        await asyncio.sleep(3600)
        return loop.time()

    started = time.perf_counter()
    assert run_virtual(main) == 3600.0
    assert time.perf_counter() - started < 1.0


def test_timers_fire_in_order_at_exact_virtual_times():
    async def main():
        loop = asyncio.get_running_loop()
        seen = []

        async def at(delay, label):
            await asyncio.sleep(delay)
            seen.append((label, loop.time()))

        await asyncio.gather(at(3, "c"), at(1, "a"), at(2, "b"))
        return seen

    assert run_virtual(main) == [("a", 1.0), ("b", 2.0), ("c", 3.0)]


def test_a_timeout_fires_exactly_on_time_and_cancels_the_work():
    async def main():
        loop = asyncio.get_running_loop()
        cancelled = asyncio.Event()

        async def forever():
            try:
                await asyncio.sleep(10**6)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        with pytest.raises(TimeoutError):
            await asyncio.wait_for(forever(), timeout=2.5)
        return loop.time(), cancelled.is_set()

    assert run_virtual(main) == (2.5, True)


def test_a_hang_with_nothing_to_end_it_is_reported_not_waited_for():
    async def main():
        await asyncio.get_running_loop().create_future()

    with pytest.raises(VirtualTimeDeadlock, match="hang forever"):
        run_virtual(main)


def test_run_virtual_works_inside_a_running_loop_like_a_notebook_cell():
    async def inner():
        await asyncio.sleep(42)
        return asyncio.get_running_loop().time()

    async def cell():
        return run_virtual(inner, start=100.0)

    assert asyncio.run(cell()) == 142.0


def test_run_virtual_rejects_a_plain_value():
    with pytest.raises(TypeError, match="coroutine"):
        run_virtual(lambda: 3)


def test_same_program_same_interleaving():
    async def main():
        order = []

        async def worker(i):
            for step in range(3):
                await asyncio.sleep(0.1 * ((i * 7 + step) % 3))
                order.append((i, step))

        await asyncio.gather(*(worker(i) for i in range(5)))
        return order

    assert run_virtual(main) == run_virtual(main)


async def test_async_tests_run_in_virtual_time_by_default():
    await asyncio.sleep(86400)
    assert asyncio.get_running_loop().time() >= 86400
