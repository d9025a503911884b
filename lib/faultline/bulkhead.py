"""Bulkheads: a bounded number of concurrent calls per dependency, so one can't take all.

A ship's hull is split into watertight compartments so that one breach floods one
compartment, not the ship. A service that calls several dependencies from one pool of
workers has no compartments: when one dependency hangs, every worker ends up waiting on
it and the calls to the healthy dependencies have no worker left. A bulkhead caps the
calls in flight to one dependency (``max_concurrent``); a call beyond the cap waits at
most ``max_wait`` seconds for a slot, first come first served, and is otherwise refused
at once with ``BulkheadFullError`` (the semaphore bulkhead of resilience4j).

Theory of operation. ``Slots`` is the sans-I/O core: it counts the slots held and keeps
the FIFO queue of waiting tickets; it never awaits or reads a clock. A freed slot is
handed straight to the first waiter (never put back for a newcomer to grab), so the
queue is served in order and no call jumps it::

    request(may_wait)  ── slot free, nobody queued ──►  Admit        (in_flight += 1)
           │ full      ── may_wait ──►  Wait(ticket)   (queued)
           │           ── otherwise ─►  Reject         (rejected += 1)
    release()          ── a ticket queued ──►  that ticket now holds the slot
                       ── queue empty ─────►  in_flight -= 1
    stop_waiting(t)    ── t was handed a slot ──►  True: t holds it (run, or release it)
                       ── t still queued ──────►  False: removed (a timeout counts as rejected)

``Bulkhead`` is the asyncio shell: it waits for its ticket on a future under
``asyncio.timeout(max_wait)`` and releases the slot in ``finally``, so a slot comes back
on success, on error and on cancellation, and a waiter that gives up holds none.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from faultline.errors import BulkheadFullError

__all__ = [
    "Admit",
    "Bulkhead",
    "BulkheadConfig",
    "Reject",
    "Slots",
    "Ticket",
    "Wait",
    "erlang_b",
    "little_pool_size",
    "pool_size_for_slo",
]

T = TypeVar("T")


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return value


def _seconds(name: str, value: object, *, allow_inf: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not value >= 0 or (math.isinf(value) and not allow_inf):  # also rejects NaN
        bound = ">= 0 (math.inf allowed)" if allow_inf else "a finite number >= 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class BulkheadConfig:
    """How many calls may run at once, and how long a call may wait for a slot (seconds)."""

    max_concurrent: int
    max_wait: float = 0.0

    def __post_init__(self) -> None:
        _count("max_concurrent", self.max_concurrent)
        object.__setattr__(self, "max_wait",
                           _seconds("max_wait", self.max_wait, allow_inf=True))


class Ticket:
    """A place in the queue of waiters; compared by identity."""

    __slots__ = ("number",)

    def __init__(self, number: int) -> None:
        self.number = number

    def __repr__(self) -> str:
        return f"Ticket({self.number})"


@dataclass(frozen=True)
class Admit:
    """Decision: a slot is yours, run now."""


@dataclass(frozen=True)
class Wait:
    """Decision: no slot free; wait in the queue with ``ticket``."""

    ticket: Ticket


@dataclass(frozen=True)
class Reject:
    """Decision: no slot free and no waiting allowed; refuse the call."""


Decision = Admit | Wait | Reject


class Slots:
    """The sans-I/O core: slots held, the FIFO queue of waiters, rejections.

    ``in_flight`` counts held slots: running calls, plus (for no longer than it takes the
    event loop to wake it) a waiter that has just been handed one. Waiters never count.
    """

    def __init__(self, max_concurrent: int) -> None:
        self.max_concurrent = _count("max_concurrent", max_concurrent)
        self.in_flight = 0
        self.rejected = 0
        self._queue: OrderedDict[Ticket, None] = OrderedDict()
        self._granted: set[Ticket] = set()  # handed a slot, not yet collected by the waiter
        self._numbers = itertools.count(1)

    @property
    def waiting(self) -> int:
        """Calls queued for a slot."""
        return len(self._queue)

    def request(self, *, may_wait: bool) -> Decision:
        """A call arrives: admit it, queue it, or reject it."""
        if self.in_flight < self.max_concurrent and not self._queue:
            self.in_flight += 1
            return Admit()
        if may_wait:
            ticket = Ticket(next(self._numbers))
            self._queue[ticket] = None
            return Wait(ticket)
        self.rejected += 1
        return Reject()

    def release(self) -> Ticket | None:
        """A call holding a slot is done; return the waiter the slot passes to, if any."""
        if self.in_flight <= 0:
            raise RuntimeError("release() without a slot held")
        if self._queue:
            ticket, _ = self._queue.popitem(last=False)
            self._granted.add(ticket)
            return ticket  # the slot changes hands: in_flight stays the same
        self.in_flight -= 1
        return None

    def stop_waiting(self, ticket: Ticket, *, timed_out: bool = False) -> bool:
        """The waiter with ``ticket`` stops waiting (woken, timed out or cancelled).

        True: it had been handed a slot and now holds it (run, or ``release()`` it).
        False: it held none and is out of the queue; ``timed_out`` counts a rejection.
        """
        if ticket in self._granted:
            self._granted.discard(ticket)
            return True
        self._queue.pop(ticket, None)
        if timed_out:
            self.rejected += 1
        return False


class Bulkhead:
    """At most ``max_concurrent`` calls at once; others wait up to ``max_wait`` s, in order.

    ``await bulkhead.call(fn, *args, **kwargs)`` awaits ``fn(*args, **kwargs)`` in a slot,
    or raises ``BulkheadFullError`` without calling ``fn`` when no slot is free within
    ``max_wait`` (``0``: refuse at once; ``math.inf``: wait as long as it takes).
    ``.in_flight`` counts running calls, ``.waiting`` queued ones, ``.rejected`` refusals.
    """

    def __init__(self, max_concurrent: int, max_wait: float = 0.0) -> None:
        self.config = BulkheadConfig(max_concurrent, max_wait)
        self._slots = Slots(self.config.max_concurrent)
        self._wakeups: dict[Ticket, asyncio.Future[None]] = {}

    @property
    def max_concurrent(self) -> int:
        return self.config.max_concurrent

    @property
    def max_wait(self) -> float:
        return self.config.max_wait

    @property
    def in_flight(self) -> int:
        """Calls running now (waiters not included)."""
        return self._slots.in_flight

    @property
    def waiting(self) -> int:
        """Calls waiting for a slot now."""
        return self._slots.waiting

    @property
    def rejected(self) -> int:
        """Calls refused so far with ``BulkheadFullError``."""
        return self._slots.rejected

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` in a slot; the slot is given back however it ends."""
        if not callable(fn):
            raise TypeError(f"fn must be an async function, got {fn!r}")
        await self._acquire()
        try:
            return await fn(*args, **kwargs)
        finally:
            self._release()

    async def _acquire(self) -> None:
        decision = self._slots.request(may_wait=self.config.max_wait > 0)
        if isinstance(decision, Admit):
            return
        if isinstance(decision, Reject):
            raise BulkheadFullError(f"bulkhead full: {self.max_concurrent} calls in flight")
        ticket = decision.ticket
        wakeup = asyncio.get_running_loop().create_future()
        self._wakeups[ticket] = wakeup
        wait = None if math.isinf(self.config.max_wait) else self.config.max_wait
        try:
            async with asyncio.timeout(wait):
                await wakeup
        except TimeoutError:
            if not self._slots.stop_waiting(ticket, timed_out=True):
                raise BulkheadFullError(
                    f"bulkhead full: no slot free within {self.config.max_wait:g} s") from None
            # handed a slot at the very moment max_wait ran out: keep it and run
        except BaseException:  # cancelled while waiting
            if self._slots.stop_waiting(ticket):
                self._release()  # it was handed a slot just before: pass it on
            raise
        else:
            self._slots.stop_waiting(ticket)  # True: the slot is ours
        finally:
            del self._wakeups[ticket]

    def _release(self) -> None:
        while (ticket := self._slots.release()) is not None:
            wakeup = self._wakeups[ticket]
            if not wakeup.done():
                wakeup.set_result(None)
                return
            # That waiter is leaving (its wait was cancelled a moment ago): it takes no
            # slot, so take this one back from it and offer it to the next in line.
            self._slots.stop_waiting(ticket)

    def __repr__(self) -> str:
        return (f"Bulkhead(max_concurrent={self.max_concurrent}, max_wait={self.max_wait:g}, "
                f"in_flight={self.in_flight}, waiting={self.waiting}, "
                f"rejected={self.rejected})")


def little_pool_size(arrival_rate: float, latency: float) -> int:
    """Slots needed on average by Little's law, L = λW: ``ceil(arrival_rate * latency)``, ≥ 1.

    Little (1961): the mean number of calls in flight is the arrival rate (per second)
    times the mean time each spends (seconds). It is the least a pool needs to keep up;
    bursts need headroom above it. Float noise is rounded away first (0.1 * 30 is 3).
    """
    rate = _seconds("arrival_rate", arrival_rate, allow_inf=False)
    seconds = _seconds("latency", latency, allow_inf=False)
    return max(1, math.ceil(round(rate * seconds, 9)))


def erlang_b(pool_size: int, offered_load: float) -> float:
    """Share of calls a full pool refuses when nobody waits: Erlang's B formula (1917).

    ``offered_load`` is Little's L = arrival rate x mean latency (in "erlangs"); calls
    arrive at random (Poisson) and are refused when all ``pool_size`` slots are busy
    (``max_wait=0``). The answer does not depend on how latencies are spread. Computed by
    the stable recursion B(0) = 1, B(k) = A B(k-1) / (k + A B(k-1)).
    """
    size = _count("pool_size", pool_size)
    load = _seconds("offered_load", offered_load, allow_inf=False)
    blocked = 1.0
    for k in range(1, size + 1):
        blocked = load * blocked / (k + load * blocked)
    return blocked


def pool_size_for_slo(arrival_rate: float, latency: float, slo: float) -> int:
    """The smallest pool that refuses at most ``1 - slo`` of calls (``max_wait=0``).

    Starts from Little's law (``little_pool_size``) and adds slots until Erlang B says the
    pool refuses few enough calls: the headroom that random bursts need above the mean.
    """
    if isinstance(slo, bool) or not isinstance(slo, int | float):
        raise TypeError(f"slo must be a number, got {type(slo).__name__}")
    if not 0 < slo < 1:
        raise ValueError(f"slo must lie strictly between 0 and 1, got {slo!r}")
    size = little_pool_size(arrival_rate, latency)
    load = arrival_rate * latency
    while erlang_b(size, load) > 1 - slo:
        size += 1
    return size
