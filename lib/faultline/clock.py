"""Time for the kit: a fake clock for sans-I/O cores, virtual time for asyncio code.

``FakeClock`` is a zero-argument callable you advance by hand, for pattern cores that take
``clock=``. ``VirtualTimeLoop`` is an asyncio event loop whose clock jumps straight to the
next timer whenever every task is waiting (like trio's autojump ``MockClock``), so code
full of ``asyncio.sleep`` and timeouts runs deterministically in milliseconds.
``run_virtual`` runs a coroutine on one, also from inside a notebook's running loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import selectors
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from faultline.errors import VirtualTimeDeadlock

__all__ = ["FakeClock", "VirtualTimeLoop", "run_virtual"]

T = TypeVar("T")


class FakeClock:
    """A clock that only moves when told to: ``clock()`` reads it, ``advance()`` moves it."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    @property
    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (never backwards) and return the new time."""
        if not seconds >= 0 or math.isinf(seconds):
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        self._now += seconds
        return self._now

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r})"


class _AutojumpSelector(selectors.BaseSelector):
    """A selector that never blocks: if no real I/O is ready it moves virtual time forward."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._loop = loop
        self._real = selectors.DefaultSelector()  # still serves the loop's self-pipe

    def register(self, fileobj, events, data=None):
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj):
        return self._real.unregister(fileobj)

    def modify(self, fileobj, events, data=None):
        return self._real.modify(fileobj, events, data)

    def get_map(self):
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None):
        if timeout == 0:
            return []  # callbacks are ready: run them; real I/O is polled when they are done
        ready = self._real.select(0)
        if ready:
            return ready
        if timeout is None:
            raise VirtualTimeDeadlock(
                "virtual time: every task is waiting and no timer is set, so this would "
                "hang forever in real time (a hang with no timeout around it?)"
            )
        self._loop._advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: when nothing is runnable, time jumps to the next timer.

    Everything that waits through the loop's timers (``asyncio.sleep``, ``asyncio.timeout``,
    ``wait_for``, aiohttp's client timeouts) runs instantly and in a deterministic order.
    Real sockets and threads don't mix with it: their waits would not move the clock.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._virtual_now = float(start)
        super().__init__(selector=_AutojumpSelector(self))

    def time(self) -> float:
        return self._virtual_now

    def _advance(self, seconds: float) -> None:
        if seconds > 0:
            self._virtual_now += seconds


def _run_on_virtual_loop(main: Coroutine[Any, Any, T], start: float) -> T:
    loop = VirtualTimeLoop(start)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        except VirtualTimeDeadlock:
            pass  # a task that ignores cancellation: nothing more to wait for
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def run_virtual(
    main: Coroutine[Any, Any, T] | Callable[[], Awaitable[T]], *, start: float = 0.0
) -> T:
    """Run ``main`` (a coroutine, or a function returning one) in virtual time; return its result.

    Inside a running event loop (a notebook cell) it runs on a worker thread and blocks
    until done, so it can be called the same way everywhere.
    """
    coro = main() if callable(main) else main
    if not asyncio.iscoroutine(coro):
        raise TypeError(f"main must be a coroutine or return one, got {type(coro).__name__}")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_on_virtual_loop(coro, start)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="virtual-time") as pool:
        return pool.submit(_run_on_virtual_loop, coro, start).result()
