"""Instruments for watching the shop from inside: worker pools, one hop's latency, deadlines.

``observe`` runs open-loop load on a shop (live or simulated) and samples, every few
milliseconds, how many of a service's workers are busy and how many requests wait for one:
what pool exhaustion looks like. ``LatencyRecorder`` is a client wrapper that times every
call on one edge (to pick a timeout from its percentiles). ``DeadlineTrace`` notes the
``X-Deadline-Ms`` that each hop sent, to watch a deadline shrink on its way down.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from faultline.client import Send
from faultline.load import Record, open_loop
from faultline.messages import Request, Response
from faultline.services import Shop
from faultline.timeouts import DEADLINE_HEADER

__all__ = [
    "DeadlineTrace",
    "LatencyRecorder",
    "Observation",
    "PoolSample",
    "SentDeadline",
    "observe",
]


@dataclass(frozen=True)
class PoolSample:
    """A service's pool at one moment: ``busy`` workers, ``inside`` requests (busy + waiting)."""

    t: float
    busy: int
    inside: int

    @property
    def waiting(self) -> int:
        """Requests that arrived and wait for a free worker."""
        return max(0, self.inside - self.busy)


@dataclass
class Observation:
    """What ``observe`` saw: every request's record and each watched service's pool."""

    records: list[Record]
    pools: dict[str, list[PoolSample]]
    workers: dict[str, int | None] = field(default_factory=dict)

    def route(self, name: str) -> list[Record]:
        """The records of one route, e.g. ``"login"``."""
        return [r for r in self.records if r.route == name]

    def peak(self, service: str) -> PoolSample:
        """The sample with the most requests inside ``service``."""
        return max(self.pools[service], key=lambda s: (s.inside, s.busy))


Event = tuple[float, Callable[[Shop], Any]]


async def observe(
    shop: Shop,
    rates: Mapping[str, float],
    *,
    duration: float,
    timeout: float | None = 5.0,
    seed: int = 0,
    events: Iterable[Event] = (),
    services: Sequence[str] = ("gateway",),
    every: float = 0.05,
    deadline: float | None = None,
) -> Observation:
    """Open-loop load on ``shop`` for ``duration`` s while sampling the pools of ``services``.

    ``rates`` maps routes to requests per second (Poisson arrivals seeded by ``seed``); users
    give up after ``timeout`` s; with ``deadline`` each request carries ``X-Deadline-Ms``.
    ``events`` are ``(at_seconds, action(shop))`` pairs. Await it on a live shop, or run it
    in virtual time on a ``SimShop`` (``fl.run_virtual(observe(...))``).
    """
    if not rates:
        raise ValueError("rates must name at least one route, e.g. {'login': 20}")
    if not every > 0:
        raise ValueError(f"every must be > 0 seconds, got {every!r}")
    loop = asyncio.get_running_loop()
    watched = {name: shop.service(name) for name in services}
    pools: dict[str, list[PoolSample]] = {name: [] for name in services}
    origin = loop.time()

    async def sample() -> None:
        while True:
            t = loop.time() - origin
            for name, service in watched.items():
                pools[name].append(PoolSample(t, service.busy, service.busy + service.waiting))
            await asyncio.sleep(every)

    async def apply(at: float, action: Callable[[Shop], Any]) -> None:
        await asyncio.sleep(max(0.0, origin + at - loop.time()))
        action(shop)

    background = [asyncio.ensure_future(sample())]
    background += [asyncio.ensure_future(apply(at, action)) for at, action in events]
    runs = [open_loop(shop.route(route, deadline=deadline), rate=rate, duration=duration,
                      rng=random.Random(f"{seed}/arrivals/{route}"), timeout=timeout,
                      route=route)
            for route, rate in rates.items()]
    try:
        results = await asyncio.gather(*runs)
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
    records = sorted((r for rs in results for r in rs), key=lambda r: (r.start, r.route))
    return Observation(records, pools,
                       {name: shop.service(name).workers for name in services})


class LatencyRecorder:
    """A client wrapper that times every call through it: ``shop.client("orders").use(
    "email", recorder)``; ``latencies`` are seconds, failed calls included."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.failures = 0

    async def __call__(self, send: Send, request: Request) -> Response:
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            return await send(request)
        except Exception:
            self.failures += 1
            raise
        finally:
            self.latencies.append(loop.time() - start)


@dataclass(frozen=True)
class SentDeadline:
    """One request on the wire: when it left (s), for which service, and its deadline (ms)."""

    t: float
    target: str
    path: str
    deadline_ms: int | None


class DeadlineTrace:
    """Notes every request the shop's services send (and the user's), with its deadline.

    ``with DeadlineTrace(shop) as trace: ...``; then ``trace.sent`` lists them in order.
    """

    def __init__(self, shop: Shop) -> None:
        self.shop = shop
        self.sent: list[SentDeadline] = []
        self._origin: float | None = None
        self._previous: Any = None

    def __enter__(self) -> DeadlineTrace:
        transport = self.shop.transport
        self._previous = transport.__dict__.get("send")  # another probe, if any
        deliver = transport.send

        async def send(target: str, request: Request) -> Response:
            now = asyncio.get_running_loop().time()
            if self._origin is None:
                self._origin = now
            header = request.header(DEADLINE_HEADER)
            self.sent.append(SentDeadline(now - self._origin, target, request.path,
                                          int(header) if header is not None else None))
            return await deliver(target, request)

        transport.send = send  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._previous is None:
            self.shop.transport.__dict__.pop("send", None)
        else:
            self.shop.transport.send = self._previous  # type: ignore[method-assign]

    def table(self) -> str:
        """One line per request: when it was sent, where to, and the milliseconds left."""
        lines = [f"{'sent at':>9}  {'to':26}  X-Deadline-Ms"]
        for s in self.sent:
            left = "-" if s.deadline_ms is None else f"{s.deadline_ms:d}"
            lines.append(f"{s.t * 1000:6.1f} ms  {s.target + ' ' + s.path:26}  {left:>13}")
        return "\n".join(lines)
