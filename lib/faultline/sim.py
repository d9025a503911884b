"""The toy shop in memory and in virtual time: fast, seeded experiments with many requests.

The same handlers as over HTTP; the transport hands the request to the service in a task
of its own (a server does not stop working when its caller gives up, just as aiohttp does
not cancel a handler when the client disconnects) and adds a fixed network delay each way.

    records = simulate(duration=600, rates={"checkout": 15, "login": 5}, seed=7,
                       setup=lambda shop: shop.faults.inject("payments", ErrorRate(0.3)))
"""

from __future__ import annotations

import asyncio
import contextvars
import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from faultline.clock import run_virtual
from faultline.load import Record, open_loop
from faultline.messages import Request, Response
from faultline.progress import progress_reporter
from faultline.services import Shop, Work

__all__ = ["MemoryTransport", "SimShop", "simulate"]


class MemoryTransport:
    """Delivers requests to in-process services after ``network_delay`` seconds each way."""

    def __init__(self, network_delay: float = 0.0005) -> None:
        if not network_delay >= 0:
            raise ValueError(f"network_delay must be >= 0, got {network_delay!r}")
        self.network_delay = network_delay
        self.shop: Shop | None = None
        self.in_flight: set[asyncio.Task[Response]] = set()  # strong refs: hung work stays alive

    async def send(self, target: str, request: Request) -> Response:
        if self.shop is None:
            raise RuntimeError("MemoryTransport is not attached to a shop")
        service = self.shop.service(target)
        if self.network_delay:
            await asyncio.sleep(self.network_delay)
        # The server works in its own task: cancelling the caller leaves it running.
        # A fresh context, as across a real network: nothing of the caller's leaks in.
        task = asyncio.get_running_loop().create_task(service.handle(request),
                                                      context=contextvars.Context())
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)
        response = await asyncio.shield(task)
        delay = self.network_delay
        if response.bytes_per_second:
            delay += len(response.body()) / response.bytes_per_second
        if delay:
            await asyncio.sleep(delay)
        return response


class SimShop(Shop):
    """The shop wired to an in-memory transport; run it inside virtual time (``run_virtual``)."""

    def __init__(self, *, seed: int | str | None = 0, network_delay: float = 0.0005,
                 work: Mapping[str, Work] | None = None,
                 workers: Mapping[str, int | None] | None = None) -> None:
        transport = MemoryTransport(network_delay)
        super().__init__(transport, seed=seed, work=work, workers=workers)
        transport.shop = self


Event = tuple[float, Callable[[Shop], Any]]


def simulate(
    *,
    duration: float = 600.0,
    rates: Mapping[str, float] | None = None,
    seed: int = 0,
    setup: Callable[[Shop], Any] | None = None,
    events: Iterable[Event] = (),
    timeout: float | None = 5.0,
    shop_options: Mapping[str, Any] | None = None,
    progress: bool | Callable[[float], None] = False,
) -> list[Record]:
    """Run the shop under open-loop load in virtual time and return every request's record.

    ``rates`` maps route names to requests per second (default 20 checkouts/s). ``setup``
    configures the fresh shop (faults, patterns); ``events`` are ``(at_seconds, action)``
    pairs applied during the run, e.g. a chaos schedule. Same seed, same records.
    ``progress=True`` shows how far the simulated clock has got (a bar in a notebook).
    """
    rates = dict(rates or {"checkout": 20.0})
    report = progress_reporter(f"simulating {duration:g} s") if progress is True else progress

    async def main() -> list[Record]:
        shop = SimShop(seed=seed, **dict(shop_options or {}))
        if setup is not None:
            setup(shop)

        async def apply_in_order() -> None:
            # One task, in schedule order: events due at the same moment keep their order
            # (separate timers for one instant would fire in no guaranteed order).
            loop = asyncio.get_running_loop()
            origin = loop.time()
            for at, action in sorted(events, key=lambda event: event[0]):
                await asyncio.sleep(max(0.0, origin + at - loop.time()))
                action(shop)

        schedule = [asyncio.ensure_future(apply_in_order())]
        if report:
            schedule.append(asyncio.ensure_future(_tick(report, duration)))
        runs = [
            open_loop(shop.route(route), rate=rate, duration=duration,
                      rng=random.Random(f"{seed}/arrivals/{route}"), timeout=timeout,
                      route=route)
            for route, rate in rates.items()
        ]
        try:
            results = await asyncio.gather(*runs)
        finally:
            for task in schedule:
                task.cancel()
        if report:
            report(1.0)
        return sorted((r for rs in results for r in rs), key=lambda r: (r.start, r.route))

    return run_virtual(main)


async def _tick(report: Callable[[float], None], duration: float, steps: int = 50) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    for step in range(1, steps):
        await asyncio.sleep(start + duration * step / steps - loop.time())
        report(step / steps)
