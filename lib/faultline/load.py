"""Load generators: open-loop (Poisson arrivals) and closed-loop (N concurrent clients).

Both call ``send`` (an async function returning a response with ``.status`` and ``.path``)
and return one ``Record`` per request, with times in seconds since the run started. They
read time from the running loop, so they work the same on real sockets and in virtual time.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Record", "closed_loop", "open_loop", "send_and_record"]

Send = Callable[[], Awaitable[Any]]


@dataclass(frozen=True)
class Record:
    """One request: when it started and ended, how it ended, and which services it touched."""

    start: float
    end: float
    status: int | None
    error: str | None
    path: tuple[str, ...] = ()
    route: str = ""

    @property
    def latency(self) -> float:
        return self.end - self.start

    @property
    def ok(self) -> bool:
        """Succeeded from the user's point of view: an answer, and not a 5xx."""
        return self.error is None and self.status is not None and self.status < 500


def _check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    bad = value < 0 if allow_zero else value <= 0
    if isinstance(value, bool) or not isinstance(value, int | float) or bad or math.isnan(value):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a number {bound}, got {value!r}")


def _error_name(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    return type(exc).__name__


async def send_and_record(
    send: Send, *, origin: float = 0.0, timeout: float | None = None, route: str = ""
) -> Record:
    """Make one request and describe it as a ``Record``; exceptions become ``error``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    status: int | None = None
    error: str | None = None
    path: tuple[str, ...] = ()
    try:
        async with asyncio.timeout(timeout):
            response = await send()
        status = getattr(response, "status", None)
        path = tuple(getattr(response, "path", ()) or ())
    except Exception as exc:
        error = _error_name(exc)
        path = tuple(getattr(exc, "path", ()) or ())
    return Record(start - origin, loop.time() - origin, status, error, path, route)


async def open_loop(
    send: Send,
    *,
    rate: float,
    duration: float,
    rng: random.Random | None = None,
    timeout: float | None = 5.0,
    route: str = "",
) -> list[Record]:
    """Poisson arrivals at ``rate`` per second for ``duration`` seconds, whatever the latency.

    New requests keep arriving however slow the service gets (like real users), so queues
    build up. Requests still in flight at the end are awaited (bounded by ``timeout``).
    """
    _check_positive("rate", rate)
    _check_positive("duration", duration)
    if timeout is not None:
        _check_positive("timeout", timeout)
    rng = rng or random.Random()
    loop = asyncio.get_running_loop()
    origin = loop.time()
    tasks: list[asyncio.Task[Record]] = []
    at = rng.expovariate(rate)
    try:
        while at < duration:
            delay = origin + at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(loop.create_task(
                send_and_record(send, origin=origin, timeout=timeout, route=route)))
            at += rng.expovariate(rate)
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()


async def closed_loop(
    send: Send,
    *,
    clients: int,
    duration: float | None = None,
    requests: int | None = None,
    think_time: float = 0.0,
    timeout: float | None = 5.0,
    route: str = "",
) -> list[Record]:
    """``clients`` users, each sending its next request when the last one answered.

    Stops after ``duration`` seconds (no new requests start after it) or after ``requests``
    requests in all, whichever is given. Slow answers slow the offered load down.
    """
    if isinstance(clients, bool) or not isinstance(clients, int) or clients < 1:
        raise ValueError(f"clients must be an int >= 1, got {clients!r}")
    if duration is None and requests is None:
        raise ValueError("give duration or requests (or both) so the run ends")
    if duration is not None:
        _check_positive("duration", duration)
    if requests is not None and (not isinstance(requests, int) or requests < 1):
        raise ValueError(f"requests must be an int >= 1, got {requests!r}")
    _check_positive("think_time", think_time, allow_zero=True)
    loop = asyncio.get_running_loop()
    origin = loop.time()
    records: list[Record] = []
    budget = [requests if requests is not None else math.inf]

    async def user() -> None:
        while budget[0] > 0 and (duration is None or loop.time() - origin < duration):
            budget[0] -= 1
            records.append(
                await send_and_record(send, origin=origin, timeout=timeout, route=route))
            if think_time:
                await asyncio.sleep(think_time)

    await asyncio.gather(*(user() for _ in range(clients)))
    records.sort(key=lambda r: (r.start, r.end))
    return records
