"""Module 05's scenario: a hung email service, and the gateway's workers with or without bulkheads.

The gateway serves every route from one bounded pool of workers. A checkout holds its
gateway worker while orders works, and orders waits on email; so when email accepts
requests and never answers, each checkout pins one gateway worker for good. After a
second or so all of them are pinned and logins, which never touch email, queue until
their users give up: one shared pool, one shared fate.

With a bulkhead per dependency at the gateway's client, the checkouts beyond the orders
bulkhead are refused at once (503) and give their worker back, so the workers outside
that compartment keep serving logins and products: only the email path degrades.

``run_email_outage`` runs that story on the simulated shop in virtual time and returns an
``OutageRun``: every user request, plus every call the gateway made to each dependency
(for Little's law). The lesson, the graded exercise and ``bench/bulkheads.py`` call it;
``email_outage_live`` plays a short version on the live shop.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from faultline.bulkhead import Bulkhead
from faultline.client import Send
from faultline.faults import Hang
from faultline.load import Record, open_loop
from faultline.messages import Request, Response
from faultline.services import DEPENDENCIES, Shop, Work
from faultline.sim import simulate
from faultline.slo import SloReport, summarize

__all__ = [
    "DEPENDENCIES_OF_GATEWAY",
    "DURATION",
    "EXAMPLE_BULKHEADS",
    "GATEWAY_WORKERS",
    "HANG_AT",
    "RATES",
    "ROUTE_OF",
    "SEED",
    "SLO",
    "TIMEOUT",
    "WORK",
    "Call",
    "OutageRun",
    "cached_email_outage",
    "check_bulkheads",
    "email_outage_live",
    "refusal_rates",
    "run_email_outage",
]

DEPENDENCIES_OF_GATEWAY: tuple[str, ...] = DEPENDENCIES["gateway"]  # orders, login, inventory
ROUTE_OF = {"orders": "checkout", "login": "login", "inventory": "products"}

GATEWAY_WORKERS = 16  # the gateway's one pool of workers
RATES: dict[str, float] = {"checkout": 20.0, "login": 40.0, "products": 20.0}  # requests/s
# Login hashes the password (bcrypt, argon2): ~50 ms of work by design, so it needs slots.
WORK: dict[str, Work] = {"login": Work(0.050, 0.25)}
HANG_AT = 40.0  # seconds: email starts hanging
DURATION = 70.0  # seconds of traffic in all
TIMEOUT = 2.0  # seconds a user waits before giving up
SEED = 5
SLO = {"availability": 0.99, "p99": 0.200}  # for login while email hangs
# For the lesson's rates: Erlang B's sizes for 99 % (4, 7, 2) plus a spare slot each = 16.
EXAMPLE_BULKHEADS: dict[str, int] = {"orders": 5, "login": 8, "inventory": 3}

Window = str  # "all", "before" (started before email hung) or "outage" (after)


@dataclass(frozen=True)
class Call:
    """One call from the gateway to a dependency, inside its bulkhead slot if it had one.

    Times in seconds since the run started; ``end`` is ``None`` for a call still waiting
    when the run ended (one that hung).
    """

    dependency: str
    start: float
    end: float | None

    @property
    def latency(self) -> float | None:
        return None if self.end is None else self.end - self.start


@dataclass
class OutageRun:
    """What ``run_email_outage`` saw: user requests per route, gateway calls per dependency."""

    records: list[Record]
    calls: dict[str, list[Call]]
    pools: dict[str, Any]  # the bulkhead objects used, by dependency (empty: shared pool)
    bulkheads: dict[str, int] | None
    workers: int
    rates: dict[str, float]
    hang_at: float | None
    duration: float
    max_wait: float = 0.0

    def requests(self, route: str, window: Window = "all") -> list[Record]:
        """The records of ``route`` that started in ``window``."""
        if route not in self.rates:
            raise ValueError(f"route {route!r} had no traffic; routes: {sorted(self.rates)}")
        low, high = self._window(window)
        return [r for r in self.records if r.route == route and low <= r.start < high]

    def summary(self, route: str, window: Window = "outage", slo: float = 0.99) -> SloReport:
        """Availability, latency percentiles and error budget of ``route`` in ``window``."""
        return summarize(self.requests(route, window), slo=slo)

    def meets_slo(self, route: str = "login", window: Window = "outage",
                  availability: float = SLO["availability"], p99: float = SLO["p99"]) -> bool:
        """True when ``route`` kept ``availability`` and ``p99`` (seconds) in ``window``."""
        report = self.summary(route, window)
        return report.availability >= availability and report.p99 <= p99

    def concurrency(self, dependency: str) -> tuple[list[float], list[int]]:
        """Calls in flight to ``dependency`` over time: a step function ``(times, counts)``.

        ``counts[i]`` holds from ``times[i]`` until ``times[i + 1]`` (the last until the run
        ends); it starts at ``(0.0, 0)``.
        """
        steps: dict[float, int] = {}
        for call in self._calls(dependency):
            steps[call.start] = steps.get(call.start, 0) + 1
            if call.end is not None:
                steps[call.end] = steps.get(call.end, 0) - 1
        times, counts, level = [0.0], [0], 0
        for at in sorted(steps):
            level += steps[at]
            if at == times[-1]:
                counts[-1] = level
            else:
                times.append(at)
                counts.append(level)
        return times, counts

    def mean_concurrency(self, dependency: str, window: Window = "before") -> float:
        """Time-average of the calls in flight to ``dependency`` over ``window``."""
        return sum(level * share for level, share in self.occupancy(dependency, window).items())

    def occupancy(self, dependency: str, window: Window = "before") -> dict[int, float]:
        """Share of ``window``'s time with k calls in flight to ``dependency``, per k."""
        low, high = self._window(window)
        high = min(high, self.duration)
        times, counts = self.concurrency(dependency)
        shares: dict[int, float] = {}
        for i, level in enumerate(counts):
            start = max(times[i], low)
            end = min(times[i + 1] if i + 1 < len(times) else high, high)
            if end > start:
                shares[level] = shares.get(level, 0.0) + (end - start) / (high - low)
        return dict(sorted(shares.items()))

    def call_rate(self, dependency: str, window: Window = "before") -> float:
        """Calls per second that got into ``dependency`` (past its bulkhead) in ``window``."""
        low, high = self._window(window)
        high = min(high, self.duration)
        return sum(1 for c in self._calls(dependency) if low <= c.start < high) / (high - low)

    def call_latency(self, dependency: str, window: Window = "before") -> float:
        """Mean seconds a call to ``dependency`` that started in ``window`` took to answer."""
        low, high = self._window(window)
        done = [c.latency for c in self._calls(dependency)
                if low <= c.start < high and c.latency is not None]
        if not done:
            raise ValueError(f"no call to {dependency!r} finished in window {window!r}")
        return sum(done) / len(done)

    def _calls(self, dependency: str) -> list[Call]:
        if dependency not in self.calls:
            raise ValueError(f"unknown dependency {dependency!r}; the gateway calls "
                             f"{', '.join(DEPENDENCIES_OF_GATEWAY)}")
        return self.calls[dependency]

    def _window(self, window: Window) -> tuple[float, float]:
        if window == "all":
            return 0.0, math.inf
        if window not in ("before", "outage"):
            raise ValueError(f"window must be 'all', 'before' or 'outage', got {window!r}")
        if self.hang_at is None:
            if window == "outage":
                raise ValueError("this run had no outage (hang_at=None): use window='all'")
            return 0.0, math.inf
        return (0.0, self.hang_at) if window == "before" else (self.hang_at, math.inf)


def check_bulkheads(bulkheads: Mapping[str, int], workers: int) -> dict[str, int]:
    """Validate pool sizes for the gateway's dependencies: ints >= 1 within ``workers``.

    Returns them as a plain dict; raises ``TypeError``/``ValueError`` naming the problem.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    if not isinstance(bulkheads, Mapping):
        raise TypeError(f"bulkheads must be a dict of pool sizes, got {type(bulkheads).__name__}")
    unknown = set(bulkheads) - set(DEPENDENCIES_OF_GATEWAY)
    if unknown:
        raise ValueError(f"bulkheads has unknown dependencies {sorted(map(str, unknown))}; "
                         f"the gateway calls {', '.join(DEPENDENCIES_OF_GATEWAY)}")
    sizes = {}
    for name, size in bulkheads.items():
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"bulkheads[{name!r}] must be an int, got {type(size).__name__}")
        if size < 1:
            raise ValueError(f"bulkheads[{name!r}] must be >= 1, got {size}")
        sizes[name] = size
    if sum(sizes.values()) > workers:
        raise ValueError(f"bulkheads hold {sum(sizes.values())} slots in all, more than the "
                         f"gateway's {workers} workers")
    return sizes


def _recorder(dependency: str, calls: list[Call], clock: Callable[[], float],
              open_calls: dict[object, float]) -> Callable[[Send, Request], Any]:
    """A wrapper that records each call's start and end; a cancelled call never answered."""

    async def record(send: Send, request: Request) -> Response:
        start = clock()
        token = object()
        open_calls[token] = start
        end = None
        try:
            response = await send(request)
            end = clock()
            return response
        except Exception:
            end = clock()
            raise
        finally:
            if open_calls.pop(token, None) is not None:  # else already reported as open
                calls.append(Call(dependency, start, end))

    return record


def _wire(shop: Shop, sizes: Mapping[str, int] | None, max_wait: float,
          bulkhead_class: Callable[..., Any], clock: Callable[[], float],
          ) -> tuple[dict[str, list[Call]], dict[str, Any], dict[str, dict[object, float]]]:
    """Per dependency of the gateway: a bulkhead (if sized) outside a call recorder."""
    calls: dict[str, list[Call]] = {d: [] for d in DEPENDENCIES_OF_GATEWAY}
    open_calls: dict[str, dict[object, float]] = {d: {} for d in DEPENDENCIES_OF_GATEWAY}
    pools: dict[str, Any] = {}
    client = shop.client("gateway")
    for dependency in DEPENDENCIES_OF_GATEWAY:
        record = _recorder(dependency, calls[dependency], clock, open_calls[dependency])
        if sizes is not None and dependency in sizes:
            pool = bulkhead_class(sizes[dependency], max_wait=max_wait)
            pools[dependency] = pool
            client.use(dependency, lambda send, req, pool=pool: pool.call(send, req), record)
        else:
            client.use(dependency, record)
    return calls, pools, open_calls


def _still_open(calls: dict[str, list[Call]], open_calls: dict[str, dict[object, float]]) -> None:
    """Report the calls that have not answered yet as hung (``end=None``), once."""
    for dependency, started in open_calls.items():
        calls[dependency].extend(Call(dependency, at, None) for at in started.values())
        started.clear()
        calls[dependency].sort(key=lambda c: c.start)


def _checked_rates(rates: Mapping[str, float] | None) -> dict[str, float]:
    rates = dict(RATES if rates is None else rates)
    unknown = set(rates) - set(ROUTE_OF.values())
    if unknown or not rates:
        raise ValueError(f"rates must map routes ({', '.join(ROUTE_OF.values())}) to "
                         f"requests per second, got {rates!r}")
    return rates


def run_email_outage(
    bulkheads: Mapping[str, int] | None = None,
    *,
    workers: int = GATEWAY_WORKERS,
    rates: Mapping[str, float] | None = None,
    hang_at: float | None = HANG_AT,
    duration: float = DURATION,
    max_wait: float = 0.0,
    timeout: float = TIMEOUT,
    seed: int = SEED,
    work: Mapping[str, Work] | None = None,
    bulkhead_class: Callable[..., Any] = Bulkhead,
    progress: bool = False,
) -> OutageRun:
    """Run the shop in virtual time; email hangs from ``hang_at`` (``None``: never).

    The gateway has ``workers`` workers. ``bulkheads`` maps some of its dependencies
    (orders, login, inventory) to pool sizes, built as ``bulkhead_class(size,
    max_wait=max_wait)`` around the gateway's calls; ``None`` is one shared pool. Open-loop
    traffic at ``rates`` (default ``RATES``); users give up after ``timeout`` seconds.
    Same arguments, same run.
    """
    sizes = None if bulkheads is None else check_bulkheads(bulkheads, workers)
    rates = _checked_rates(rates)
    if hang_at is not None and not 0 <= hang_at < duration:
        raise ValueError(f"hang_at must be in [0, duration) or None, got {hang_at!r}")
    wired: dict[str, Any] = {}

    def setup(shop: Shop) -> None:
        clock = asyncio.get_running_loop().time
        wired["calls"], wired["pools"], wired["open"] = _wire(
            shop, sizes, max_wait, bulkhead_class, clock)
        wired["shop"] = shop

    def email_hangs(shop: Shop) -> None:
        shop.faults.inject("email", Hang())

    events = [] if hang_at is None else [(hang_at, email_hangs)]
    options = {"workers": {"gateway": workers}, "work": {**WORK, **dict(work or {})}}
    records = simulate(duration=duration, rates=rates, seed=seed, setup=setup, events=events,
                       timeout=timeout, shop_options=options, progress=progress)
    _still_open(wired["calls"], wired["open"])
    return OutageRun(records=records, calls=wired["calls"], pools=wired["pools"],
                     bulkheads=sizes, workers=workers, rates=rates, hang_at=hang_at,
                     duration=duration, max_wait=max_wait)


_last_run: tuple[str, OutageRun] | None = None


def cached_email_outage(bulkheads: Mapping[str, int] | None = None,
                        **options: Any) -> OutageRun:
    """``run_email_outage(bulkheads, **options)``, remembered: called again with the same
    arguments it returns the same run instead of simulating it again.

    Only the most recent run is kept. Grading uses it so that two test cells that check
    different things about one run pay for it once.
    """
    global _last_run
    try:
        sizes = None if bulkheads is None else dict(sorted(dict(bulkheads).items()))
        key = repr((sizes, sorted(options.items())))
    except Exception:  # something unusual: no memory, run_email_outage will judge it
        return run_email_outage(bulkheads, **options)
    if _last_run is not None and _last_run[0] == key:
        return _last_run[1]
    run = run_email_outage(bulkheads, **options)
    _last_run = (key, run)
    return run


def refusal_rates(dependency: str, sizes: Iterable[int], **scenario: Any) -> dict[int, float]:
    """Share of calls to ``dependency`` that a bulkhead of each size refuses (``max_wait=0``).

    One run of ``run_email_outage`` per size, with a bulkhead on ``dependency`` only;
    ``scenario`` passes on (e.g. ``rates={"login": 40.0}, hang_at=None, duration=30``).
    """
    shares = {}
    for size in sizes:
        run = run_email_outage({dependency: size}, **scenario)
        offered = len(run.requests(ROUTE_OF[dependency]))
        shares[size] = run.pools[dependency].rejected / offered if offered else 0.0
    return shares


async def email_outage_live(
    shop: Shop,
    bulkheads: Mapping[str, int] | None = None,
    *,
    seconds: float = 1.5,
    rates: Mapping[str, float] | None = None,
    timeout: float = 0.5,
    max_wait: float = 0.0,
    seed: int = SEED,
    bulkhead_class: Callable[..., Any] = Bulkhead,
) -> OutageRun:
    """The outage on a running (live) shop: email hangs from the start, load for ``seconds``.

    Wraps the gateway's client as ``run_email_outage`` does, then takes the wrappers and
    the fault off again. The checkouts that hung keep their gateway workers until the shop
    stops, so start a fresh shop for each run.
    """
    workers = shop.service("gateway").workers
    if workers is None:
        raise ValueError("start the shop with a bounded gateway: workers={'gateway': N}")
    sizes = None if bulkheads is None else check_bulkheads(bulkheads, workers)
    rates = _checked_rates(rates)
    loop = asyncio.get_running_loop()
    origin = loop.time()

    def clock() -> float:
        return loop.time() - origin

    calls, pools, open_calls = _wire(shop, sizes, max_wait, bulkhead_class, clock)
    shop.faults.inject("email", Hang())
    try:
        runs = [open_loop(shop.route(route), rate=rate, duration=seconds, timeout=timeout,
                          rng=random.Random(f"{seed}/live/{route}"), route=route)
                for route, rate in rates.items()]
        results = await asyncio.gather(*runs)
    finally:
        shop.faults.clear("email")
        for dependency in DEPENDENCIES_OF_GATEWAY:
            shop.client("gateway").use(dependency)
    _still_open(calls, open_calls)
    records = sorted((r for rs in results for r in rs), key=lambda r: (r.start, r.route))
    return OutageRun(records=records, calls=calls, pools=pools, bulkheads=sizes,
                     workers=workers, rates=rates, hang_at=0.0, duration=seconds,
                     max_wait=max_wait)
