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
import contextvars
import heapq
import math
import selectors
from asyncio import base_events, events
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


# The lean loop below copies asyncio internals of CPython 3.11-3.13; on any other layout
# (a future asyncio) the loop falls back to asyncio's own code.
_LEAN = (
    set(events.Handle.__slots__) == {"_callback", "_args", "_cancelled", "_loop",
                                     "_source_traceback", "_repr", "__weakref__", "_context"}
    and set(events.TimerHandle.__slots__) == {"_scheduled", "_when"}
    and hasattr(base_events, "_MIN_SCHEDULED_TIMER_HANDLES")
    and hasattr(base_events, "_MIN_CANCELLED_TIMER_HANDLES_FRACTION")
    and hasattr(base_events, "MAXIMUM_SELECT_TIMEOUT")
)


class _Handle(events.Handle):
    """``asyncio.Handle`` without the debug-mode bookkeeping (only made when debug is off)."""

    __slots__ = ()

    def __init__(self, callback, args, loop, context) -> None:
        self._context = contextvars.copy_context() if context is None else context
        self._loop = loop
        self._callback = callback
        self._args = args
        self._cancelled = False
        self._repr = None
        self._source_traceback = None


class _TimerHandle(events.TimerHandle):
    """``asyncio.TimerHandle`` without the debug-mode bookkeeping, compared by time alone.

    The timer heap compares handles on every push and pop: ``__lt__`` is the same test as
    the base class's (``_when < _when``) minus its type check, so the heap and the order
    of timers are exactly what they would be.
    """

    __slots__ = ()

    def __init__(self, when, callback, args, loop, context) -> None:
        self._context = contextvars.copy_context() if context is None else context
        self._loop = loop
        self._callback = callback
        self._args = args
        self._cancelled = False
        self._repr = None
        self._source_traceback = None
        self._when = when
        self._scheduled = False

    def __lt__(self, other):
        return self._when < other._when

    def cancel(self) -> None:
        """``TimerHandle.cancel`` with ``_timer_handle_cancelled`` inlined (debug is off)."""
        if not self._cancelled:
            if self._scheduled:  # the loop's count of dead timers still in the heap
                self._loop._timer_cancelled_count += 1
            self._cancelled = True
            self._callback = self._args = None


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: when nothing is runnable, time jumps to the next timer.

    Everything that waits through the loop's timers (``asyncio.sleep``, ``asyncio.timeout``,
    ``wait_for``, aiohttp's client timeouts) runs instantly and in a deterministic order.
    Real sockets and threads don't mix with it: their waits would not move the clock.

    Simulations spend most of their time in the loop itself, so outside debug mode it
    schedules and runs callbacks through a leaner copy of asyncio's own ``_run_once``,
    ``call_soon`` and ``call_at``: the same operations in the same order (so the same
    seed gives the same run), without the checks and stack captures debug mode needs.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._virtual_now = float(start)
        super().__init__(selector=_AutojumpSelector(self))

    def time(self) -> float:
        return self._virtual_now

    def _advance(self, seconds: float) -> None:
        if seconds > 0:
            self._virtual_now += seconds

    def call_soon(self, callback, *args, context=None):
        if self._debug or self._closed or not _LEAN:  # debug mode checks and keeps more
            return super().call_soon(callback, *args, context=context)
        handle = _Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def call_at(self, when, callback, *args, context=None):
        if self._debug or self._closed or when is None or not _LEAN:
            return super().call_at(when, callback, *args, context=context)
        timer = _TimerHandle(when, callback, args, self, context)
        heapq.heappush(self._scheduled, timer)
        timer._scheduled = True
        return timer

    def call_later(self, delay, callback, *args, context=None):
        if delay is None:
            raise TypeError("delay must not be None")
        return self.call_at(self._virtual_now + delay, callback, *args, context=context)

    def _run_once(self) -> None:
        """One iteration: ``BaseEventLoop._run_once`` step for step, minus debug mode."""
        if self._debug or not _LEAN:
            return super()._run_once()
        scheduled = self._scheduled
        count = len(scheduled)
        if (count > base_events._MIN_SCHEDULED_TIMER_HANDLES and self._timer_cancelled_count
                / count > base_events._MIN_CANCELLED_TIMER_HANDLES_FRACTION):
            kept = []  # many cancelled timers: rebuild the heap without them
            for handle in scheduled:
                if handle._cancelled:
                    handle._scheduled = False
                else:
                    kept.append(handle)
            heapq.heapify(kept)
            self._scheduled = scheduled = kept
            self._timer_cancelled_count = 0
        else:
            while scheduled and scheduled[0]._cancelled:
                self._timer_cancelled_count -= 1
                heapq.heappop(scheduled)._scheduled = False
        ready = self._ready
        # With callbacks ready the selector would return at once with nothing: skip it.
        # Otherwise it serves real I/O, or moves time to the next timer, or reports a hang.
        if not ready and not self._stopping:
            timeout = None
            if scheduled:
                timeout = min(max(0, scheduled[0]._when - self._virtual_now),
                              base_events.MAXIMUM_SELECT_TIMEOUT)
            self._process_events(self._selector.select(timeout))
        end_time = self._virtual_now + self._clock_resolution
        while scheduled and scheduled[0]._when < end_time:
            handle = heapq.heappop(scheduled)
            handle._scheduled = False
            ready.append(handle)
        popleft = ready.popleft
        for _ in range(len(ready)):  # not the callbacks these ones schedule: next time
            handle = popleft()
            if not handle._cancelled:
                handle._run()
        handle = None  # break reference cycles through a raised exception


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
