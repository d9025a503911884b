"""The reference circuit breaker against pybreaker, aiobreaker, circuitbreaker and purgatory.

    .venv/bin/python bench/peers_breaker.py [--number 20000] [--repeat 7]

Times two paths, all libraries side by side in one process (timeit-style: best of
``--repeat`` rounds of ``--number`` calls, rounds interleaved, garbage collector off):

(a) success: a call through a closed breaker around ``async def fn(): return 1``;
(b) rejection: a call while the breaker is open (the error raised and caught).

Async against async: faultline's ``CircuitBreaker.call``, circuitbreaker's decorator on an
``async def``, aiobreaker's ``call_async``, purgatory's ``AsyncCircuitBreakerFactory`` and
pybreaker's ``call_async`` (pybreaker's only async path, a Tornado coroutine; its plain
``call`` would only create the coroutine). A second table times the synchronous paths:
faultline's sans-I/O ``BreakerMachine`` (``acquire``/``record`` around a plain call; it
answers ``Reject`` rather than raising) against each peer's sync API. Figures are µs per
call and ratios to circuitbreaker, the leanest peer. Not a test: it prints figures.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from datetime import timedelta

import aiobreaker
import circuitbreaker
import purgatory
import pybreaker
from _timing import Case, machine, table, time_async, time_sync, timing_arguments, versions
from purgatory.domain.model import OpenedState

import faultline as fl
from faultline.breaker import BreakerMachine, CircuitBreaker, Reject
from faultline.errors import CircuitOpenError

PEERS = ("pybreaker", "aiobreaker", "circuitbreaker", "purgatory")
OPEN_FOR = 3600.0  # seconds: long enough that an opened breaker stays open for the run
TORNADO = importlib.util.find_spec("tornado") is not None  # pybreaker's async path needs it


class Boom(Exception):
    """The failure used to trip the breakers open."""


async def fn() -> int:
    return 1


async def fail() -> None:
    raise Boom


def sync_fn() -> int:
    return 1


def sync_fail() -> None:
    raise Boom


async def trip(call: object, *errors: type[BaseException]) -> None:
    """Make failing calls until the breaker refuses one (at most 20)."""
    for _ in range(20):
        try:
            await call()  # type: ignore[operator]
        except Boom:
            continue
        except errors:
            return
    raise RuntimeError("the breaker did not open")


def trip_sync(call: object, *errors: type[BaseException]) -> None:
    for _ in range(20):
        try:
            call()  # type: ignore[operator]
        except Boom:
            continue
        except errors:
            return
    raise RuntimeError("the breaker did not open")


async def async_cases() -> tuple[list[Case], list[Case]]:
    """Fresh breakers of every library: closed ones for (a), open ones for (b)."""
    # faultline: opens at 100 % failures of at least 1 call, as the peers' fail_max=1 does.
    ours, ours_open = CircuitBreaker(), CircuitBreaker(minimum_calls=1, open_timeout=OPEN_FOR)
    cb = circuitbreaker.CircuitBreaker(failure_threshold=5, recovery_timeout=30)
    cb_open = circuitbreaker.CircuitBreaker(failure_threshold=1, recovery_timeout=OPEN_FOR)
    cb_fn, cb_open_fn, cb_fail = cb(fn), cb_open(fn), cb_open(fail)
    aio = aiobreaker.CircuitBreaker(fail_max=5, timeout_duration=timedelta(seconds=30))
    aio_open = aiobreaker.CircuitBreaker(fail_max=1, timeout_duration=timedelta(seconds=OPEN_FOR))
    pyb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)
    pyb_open = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=OPEN_FOR)
    factory = purgatory.AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)
    factory_open = purgatory.AsyncCircuitBreakerFactory(default_threshold=1, default_ttl=OPEN_FOR)
    held = await factory.get_breaker("held")
    held_open = await factory_open.get_breaker("held")
    decorated, decorated_open = factory("decorated")(fn), factory_open("decorated")(fn)

    async def purgatory_held() -> int:
        async with held:
            return await fn()

    async def purgatory_held_open() -> int:
        async with held_open:
            return await fn()

    async def purgatory_held_fail() -> None:
        async with held_open:
            await fail()

    await trip(lambda: ours_open.call(fail), CircuitOpenError)
    await trip(cb_fail, circuitbreaker.CircuitBreakerError)
    await trip(lambda: aio_open.call_async(fail), aiobreaker.CircuitBreakerError)
    if TORNADO:
        await trip(lambda: pyb_open.call_async(fail), pybreaker.CircuitBreakerError)
    await trip(purgatory_held_fail, OpenedState)
    await trip(factory_open("decorated")(fail), OpenedState)

    tornado = "Tornado coroutine: pybreaker's only async path"
    success = [
        Case("await fn() (no breaker)", fn, note="the floor"),
        Case("faultline CircuitBreaker", lambda: ours.call(fn)),
        Case("circuitbreaker", cb_fn, note="@circuit on an async def"),
        Case("aiobreaker", lambda: aio.call_async(fn)),
        *([Case("pybreaker", lambda: pyb.call_async(fn), note=tornado)] if TORNADO else []),
        Case("purgatory (held breaker)", purgatory_held, note="async with breaker"),
        Case("purgatory (decorator)", decorated, note="looks the breaker up per call"),
    ]
    rejection = [
        Case("faultline CircuitBreaker", lambda: ours_open.call(fn), (CircuitOpenError,)),
        Case("circuitbreaker", cb_open_fn, (circuitbreaker.CircuitBreakerError,)),
        Case("aiobreaker", lambda: aio_open.call_async(fn), (aiobreaker.CircuitBreakerError,)),
        *([Case("pybreaker", lambda: pyb_open.call_async(fn), (pybreaker.CircuitBreakerError,),
                note=tornado)] if TORNADO else []),
        Case("purgatory (held breaker)", purgatory_held_open, (OpenedState,)),
        Case("purgatory (decorator)", decorated_open, (OpenedState,)),
    ]
    return success, rejection


def sync_cases() -> tuple[list[Case], list[Case]]:
    """The synchronous paths: faultline's sans-I/O core and each peer's sync API."""
    clock = time.monotonic
    machine_, machine_open = BreakerMachine(), BreakerMachine()
    for _ in range(5):
        machine_open.record(clock(), failed=True)
    assert machine_open.acquire(clock()).__class__ is Reject

    def machine_call() -> int:
        decision = machine_.acquire(clock())
        result = sync_fn()
        machine_.record(clock(), failed=False, ticket=decision.ticket)
        return result

    def machine_reject() -> object:
        return machine_open.acquire(clock())

    cb = circuitbreaker.CircuitBreaker(failure_threshold=5, recovery_timeout=30)
    cb_open = circuitbreaker.CircuitBreaker(failure_threshold=1, recovery_timeout=OPEN_FOR)
    cb_fn, cb_open_fn = cb(sync_fn), cb_open(sync_fn)
    trip_sync(cb_open(sync_fail), circuitbreaker.CircuitBreakerError)
    pyb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)
    pyb_open = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=OPEN_FOR)
    trip_sync(lambda: pyb_open.call(sync_fail), pybreaker.CircuitBreakerError)
    aio = aiobreaker.CircuitBreaker(fail_max=5, timeout_duration=timedelta(seconds=30))
    aio_open = aiobreaker.CircuitBreaker(fail_max=1, timeout_duration=timedelta(seconds=OPEN_FOR))
    trip_sync(lambda: aio_open.call(sync_fail), aiobreaker.CircuitBreakerError)
    factory = purgatory.SyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)
    factory_open = purgatory.SyncCircuitBreakerFactory(default_threshold=1, default_ttl=OPEN_FOR)
    held, held_open = factory.get_breaker("held"), factory_open.get_breaker("held")

    def purgatory_held() -> int:
        with held:
            return sync_fn()

    def purgatory_held_open() -> int:
        with held_open:
            return sync_fn()

    def purgatory_held_fail() -> None:
        with held_open:
            sync_fail()

    trip_sync(purgatory_held_fail, OpenedState)
    success = [
        Case("fn() (no breaker)", sync_fn, note="the floor"),
        Case("faultline BreakerMachine", machine_call, note="acquire + call + record"),
        Case("circuitbreaker", cb_fn, note="@circuit on a def"),
        Case("aiobreaker", lambda: aio.call(sync_fn)),
        Case("pybreaker", lambda: pyb.call(sync_fn), note="takes a lock per call"),
        Case("purgatory (held breaker)", purgatory_held),
    ]
    rejection = [
        Case("faultline BreakerMachine", machine_reject, note="returns Reject, raises nothing"),
        Case("circuitbreaker", cb_open_fn, (circuitbreaker.CircuitBreakerError,)),
        Case("aiobreaker", lambda: aio_open.call(sync_fn), (aiobreaker.CircuitBreakerError,)),
        Case("pybreaker", lambda: pyb_open.call(sync_fn), (pybreaker.CircuitBreakerError,)),
        Case("purgatory (held breaker)", purgatory_held_open, (OpenedState,)),
    ]
    return success, rejection


def main() -> None:
    args = timing_arguments(__doc__)
    print(f"{machine()}; faultline {fl.__version__}, {versions(*PEERS)}")
    print(f"best of {args.repeat} rounds of {args.number} calls, rounds interleaved")
    if not TORNADO:
        print("tornado is not installed: pybreaker's async path (a Tornado coroutine) is left out")
    print()

    async def run() -> tuple[list[Case], list[Case]]:
        success, rejection = await async_cases()
        await time_async(success, number=args.number, repeat=args.repeat)
        await time_async(rejection, number=args.number, repeat=args.repeat)
        return success, rejection

    success, rejection = asyncio.run(run())
    print(table("(a) async success path: await a call through a closed breaker", success,
                reference="circuitbreaker"))
    print()
    print(table("(b) async rejection while open: the call refused, its error caught", rejection,
                reference="circuitbreaker"))
    sync_success, sync_rejection = sync_cases()
    time_sync(sync_success, number=args.number, repeat=args.repeat)
    time_sync(sync_rejection, number=args.number, repeat=args.repeat)
    print()
    print(table("(a') sync success path: the sans-I/O core against the peers' sync calls",
                sync_success, reference="circuitbreaker"))
    print()
    print(table("(b') sync rejection while open", sync_rejection, reference="circuitbreaker"))
    ours = {"success": next(c for c in success if c.name.startswith("faultline")),
            "rejection": next(c for c in rejection if c.name.startswith("faultline"))}
    ref = {"success": next(c for c in success if c.name == "circuitbreaker"),
           "rejection": next(c for c in rejection if c.name == "circuitbreaker")}
    verdicts = ", ".join(
        f"{path} {ours[path].best / ref[path].best:.2f}x "
        f"({'met' if ours[path].best <= ref[path].best else 'MISSED'})" for path in ours)
    print(f"\ntarget: faultline CircuitBreaker <= 1.0x circuitbreaker (async): {verdicts}")


if __name__ == "__main__":
    main()
