"""Module 08's capstone: the shop under a chaos schedule written as data, graded by SLOs.

A schedule is a tuple of ``ChaosEvent(at, target, fault, edge=None)``: from ``at`` seconds
on, ``target`` (or the call edge ``edge -> target``) suffers ``fault``; ``fault=None``
heals it. ``run_chaos(harden)`` builds a simulated shop, lets the learner's
``harden(shop)`` install patterns (``shop.client(caller).use(target, *wrappers)``), plays
the schedule in virtual time under open-loop load and returns a ``ChaosResult``: per
route availability and p99, and per failing service its load amplification, the attempts
that went to it divided by the user requests that needed it. ``grade_report(slos)`` says
which SLOs hold, with the numbers. A run takes a couple of seconds of wall time.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from faultline.errors import UpstreamError
from faultline.faults import Blackhole, ErrorRate, Fault, Hang, LatencySpikes
from faultline.load import Record
from faultline.retry import RetryPolicy
from faultline.services import SERVICES, Shop
from faultline.sim import simulate
from faultline.slo import SloReport, summarize
from faultline.timeouts import with_timeout

__all__ = [
    "CHAOS_SCHEDULE",
    "DURATION",
    "GATEWAY_WORKERS",
    "NEEDED_BY",
    "RATES",
    "SLOS",
    "USER_TIMEOUT",
    "ChaosEvent",
    "ChaosResult",
    "SloCheck",
    "cached_chaos",
    "harden_retries_everywhere",
    "harden_timeouts_only",
    "run_chaos",
    "schedule_table",
]


@dataclass(frozen=True)
class ChaosEvent:
    """From ``at`` seconds on, ``target`` suffers ``fault`` (``None``: it heals).

    With ``edge`` (a caller's name) only the calls from ``edge`` to ``target`` are hit:
    a network partition between two services rather than a sick service.
    """

    at: float
    target: str
    fault: Fault | None
    edge: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.at, bool) or not isinstance(self.at, int | float) \
                or not (math.isfinite(self.at) and self.at >= 0):
            raise ValueError(f"at must be a finite number of seconds >= 0, got {self.at!r}")
        if self.target not in SERVICES:
            raise ValueError(f"target must be one of {SERVICES}, got {self.target!r}")
        if self.edge is not None and self.edge not in SERVICES:
            raise ValueError(f"edge must be a caller among {SERVICES} or None, got {self.edge!r}")
        if self.fault is not None and not isinstance(self.fault, Fault):
            raise TypeError(f"fault must be a faultline Fault or None, got {self.fault!r}")

    def apply(self, shop: Shop) -> None:
        """Make this event happen on ``shop``."""
        faults = () if self.fault is None else (self.fault,)
        if self.edge is None:  # healing a service leaves the links into it as they are
            shop.faults.inject(self.target, *faults)
        else:
            shop.faults.inject_edge(self.edge, self.target, *faults)

    def describe(self) -> str:
        where = self.target if self.edge is None else f"{self.edge} -> {self.target}"
        what = "heals" if self.fault is None else self.fault.describe()
        return f"{where}: {what}"


# The story, ten seconds a "minute": payments flakes, email hangs, inventory grows a fat
# tail, then email comes back but the link to it from orders is cut.
CHAOS_SCHEDULE: tuple[ChaosEvent, ...] = (
    ChaosEvent(10.0, "payments", ErrorRate(0.3)),
    ChaosEvent(20.0, "email", Hang()),
    ChaosEvent(30.0, "inventory", LatencySpikes(0.4, 0.2)),
    ChaosEvent(40.0, "email", None),
    ChaosEvent(40.0, "email", Blackhole(), edge="orders"),
)
DURATION = 60.0  # seconds of traffic
RATES: dict[str, float] = {"checkout": 20.0, "login": 20.0}  # user requests per second
GATEWAY_WORKERS = 16
USER_TIMEOUT = 2.0  # seconds a user waits before giving up
# Which user routes need each service: the denominator of amplification.
NEEDED_BY: dict[str, tuple[str, ...]] = {
    "orders": ("checkout",), "payments": ("checkout",), "email": ("checkout",),
    "inventory": ("checkout", "products"), "login": ("login",), "gateway": (),
}
# The capstone's targets, measured over the requests that start once chaos has begun.
SLOS: dict[str, float] = {
    "checkout_availability": 0.93,
    "checkout_p99": 0.300,  # seconds
    "login_availability": 0.99,
    "amplification": 2.0,  # attempts per user request that needed the service, at most
}


@dataclass(frozen=True)
class SloCheck:
    """One line of a grade report: a measured value against its bound."""

    name: str
    value: float
    bound: float
    passed: bool
    kind: str  # "at least" or "at most"

    def __str__(self) -> str:
        mark = "PASS" if self.passed else "FAIL"
        return f"{mark}  {self.name:28} {self.value:8.3f}  ({self.kind} {self.bound:g})"


@dataclass
class ChaosResult:
    """What a chaos run measured; ``start`` is when the first event struck."""

    records: list[Record]
    attempts: dict[str, int]  # attempts sent to each service from ``start`` on
    schedule: tuple[ChaosEvent, ...]
    start: float
    duration: float
    shop: Shop | None = field(default=None, repr=False)

    def requests(self, route: str) -> list[Record]:
        """User requests of ``route`` that started once chaos had begun."""
        return [r for r in self.records if r.route == route and r.start >= self.start]

    def summary(self, route: str) -> SloReport:
        return summarize(self.requests(route))

    def availability(self, route: str) -> float:
        return self.summary(route).availability

    def p99(self, route: str) -> float:
        return self.summary(route).p99

    @property
    def failing(self) -> tuple[str, ...]:
        """The services the schedule hurts, in the order it first hurts them."""
        names: list[str] = []
        for event in self.schedule:
            if event.fault is not None and event.target not in names:
                names.append(event.target)
        return tuple(names)

    def needed(self, service: str) -> int:
        """User requests under chaos whose route needs ``service``."""
        routes = NEEDED_BY.get(service, ())
        return sum(1 for r in self.records if r.route in routes and r.start >= self.start)

    def amplification(self, service: str) -> float:
        """Attempts sent to ``service`` per user request that needed it (1.0: no extra load)."""
        needed = self.needed(service)
        return self.attempts.get(service, 0) / needed if needed else 0.0

    def grade_report(self, slos: Mapping[str, float] | None = None) -> list[SloCheck]:
        """Every SLO of the capstone, measured; amplification once per failing service."""
        slos = {**SLOS, **dict(slos or {})}
        checks = []
        for route in ("checkout", "login"):
            key = f"{route}_availability"
            if key in slos and self.requests(route):
                value = self.availability(route)
                checks.append(SloCheck(key, value, slos[key], value >= slos[key], "at least"))
        if "checkout_p99" in slos and self.requests("checkout"):
            value = self.p99("checkout")
            bound = slos["checkout_p99"]
            checks.append(SloCheck("checkout_p99", value, bound, value <= bound, "at most"))
        if "amplification" in slos:
            for service in self.failing:
                value = self.amplification(service)
                bound = slos["amplification"]
                checks.append(SloCheck(f"amplification[{service}]", value, bound,
                                       value <= bound, "at most"))
        return checks

    def passed(self, slos: Mapping[str, float] | None = None) -> bool:
        return all(check.passed for check in self.grade_report(slos))

    def print_report(self, slos: Mapping[str, float] | None = None) -> None:
        for check in self.grade_report(slos):
            print(check)


def _total_sent(shop: Shop) -> dict[str, int]:
    totals: dict[str, int] = {}
    clients = [shop.user, *(shop.service(name).client for name in shop.services)]
    for client in clients:
        for target, count in client.sent.items():
            totals[target] = totals.get(target, 0) + count
    return totals


def run_chaos(
    harden: Callable[[Shop], Any] | None,
    *,
    schedule: Iterable[ChaosEvent] = CHAOS_SCHEDULE,
    seed: int = 0,
    duration: float = DURATION,
    rates: Mapping[str, float] | None = None,
    workers: int = GATEWAY_WORKERS,
    timeout: float = USER_TIMEOUT,
) -> ChaosResult:
    """Run the shop hardened by ``harden(shop)`` (``None``: unprotected) under ``schedule``.

    Virtual time, open-loop load at ``rates`` (default ``RATES``), a gateway with
    ``workers`` workers, users who give up after ``timeout`` seconds. Same arguments,
    same result.
    """
    events = tuple(sorted(schedule, key=lambda e: e.at))
    if not events:
        raise ValueError("schedule must hold at least one ChaosEvent")
    for event in events:
        if not isinstance(event, ChaosEvent):
            raise TypeError(f"schedule must hold ChaosEvents, got {event!r}")
    if not duration > events[0].at:
        raise ValueError(f"duration must be longer than the first event's time, got {duration!r}")
    if harden is not None and not callable(harden):
        raise TypeError(f"harden must be a function of the shop or None, got {harden!r}")
    start = events[0].at
    seen: dict[str, Any] = {}

    def setup(shop: Shop) -> None:
        seen["shop"] = shop
        if harden is not None:
            harden(shop)

    def snapshot(shop: Shop) -> None:
        seen["before"] = _total_sent(shop)

    def at_once(batch: tuple[ChaosEvent, ...]) -> Callable[[Shop], None]:
        def apply(shop: Shop) -> None:
            for event in batch:  # in schedule order: equal timers may fire in any order
                event.apply(shop)
        return apply

    times = sorted({e.at for e in events})
    timeline = [(start, snapshot),
                *((t, at_once(tuple(e for e in events if e.at == t))) for t in times)]
    records = simulate(duration=duration, rates=dict(RATES if rates is None else rates),
                       seed=seed, setup=setup, events=timeline, timeout=timeout,
                       shop_options={"workers": {"gateway": workers}})
    shop = seen["shop"]
    before = seen.get("before", {})
    attempts = {t: n - before.get(t, 0) for t, n in _total_sent(shop).items()}
    return ChaosResult(records=records, attempts=attempts, schedule=events, start=start,
                       duration=duration, shop=shop)


_runs: dict[object, ChaosResult] = {}
_KEEP = 4


def cached_chaos(harden: Callable[[Shop], Any] | None, **options: Any) -> ChaosResult:
    """``run_chaos(harden, **options)``, remembered for the same ``harden`` and options.

    The last few runs are kept, so grade cells that check different SLOs of one run pay
    for it once.
    """
    key = (id(harden), harden, repr(sorted(options.items())))
    if key in _runs:
        return _runs[key]
    result = run_chaos(harden, **options)
    while len(_runs) >= _KEEP:
        del _runs[next(iter(_runs))]
    _runs[key] = result
    return result


def schedule_table(schedule: Iterable[ChaosEvent] = CHAOS_SCHEDULE) -> list[dict[str, str]]:
    """The schedule as rows (time, where, what): for a table in the lesson."""
    return [{"at": f"{e.at:g} s",
             "where": e.target if e.edge is None else f"{e.edge} -> {e.target} (link)",
             "what": "heals" if e.fault is None else e.fault.describe()}
            for e in sorted(schedule, key=lambda e: e.at)]


# Two partial hardenings for the lesson: neither meets the SLOs, each for a reason.

_TIMEOUTS = {"payments": 0.2, "inventory": 0.05, "email": 0.05}  # orders' calls, seconds


def harden_timeouts_only(shop: Shop) -> None:
    """A timeout on every call and nothing else: the shop stops hanging, but still fails."""
    def bounded(seconds: float) -> Callable[..., Any]:
        return lambda send, request: with_timeout(send(request), seconds)

    for target, seconds in _TIMEOUTS.items():
        shop.client("orders").use(target, bounded(seconds))
    shop.client("gateway").use("orders", bounded(1.0))


def harden_retries_everywhere(shop: Shop) -> None:
    """Over-resilience: timeouts plus 3 attempts at both layers, no budget, no fallback."""
    rng = random.Random(8)

    def retrying(seconds: float) -> Callable[..., Any]:
        policy = RetryPolicy(max_attempts=3, base=0.01, cap=0.05, rng=rng,
                             retry_on=(UpstreamError, TimeoutError, ConnectionError))
        return lambda send, request: policy.call(lambda: with_timeout(send(request), seconds))

    for target, seconds in _TIMEOUTS.items():
        shop.client("orders").use(target, retrying(seconds))
    shop.client("gateway").use("orders", retrying(1.0))
