"""Timeouts and deadlines: never wait on another service without a bound.

``with_timeout`` bounds one wait and cancels the work it gives up on. A ``Deadline`` is an
absolute point in time that travels with a request (``X-Deadline-Ms``: whole milliseconds
left), so every hop knows how long its caller will still wait, and work nobody waits for
is never started (see gRPC deadlines, and trio's "absolute deadlines compose better").
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["DEADLINE_HEADER", "Deadline", "current_deadline", "with_timeout"]

T = TypeVar("T")
Clock = Callable[[], float]

DEADLINE_HEADER = "X-Deadline-Ms"

# The deadline of the request being served in this task, if it came with one; the
# client reads it to pass the deadline on to the next hop.
current_deadline: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "current_deadline", default=None)


def _seconds(name: str, value: object, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if math.isnan(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return float(value)


async def with_timeout(awaitable: Awaitable[T], seconds: float) -> T:
    """The result of ``awaitable``, or ``TimeoutError`` after ``seconds``.

    On a timeout the work is cancelled and has finished cancelling before the error is
    raised, so nothing keeps running behind the caller's back. Errors of the work pass
    through unchanged; cancelling the caller cancels the work too.
    """
    seconds = _seconds("seconds", seconds, allow_zero=False)
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if done:
        return task.result()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # we are being cancelled ourselves: let it through
    except Exception as exc:
        raise TimeoutError(f"timed out after {seconds:g} s") from exc
    raise TimeoutError(f"timed out after {seconds:g} s")


class Deadline:
    """A moment after which nobody waits for the answer; read against an injected clock."""

    __slots__ = ("_clock", "_expires_at")

    def __init__(self, expires_at: float, clock: Clock = time.monotonic) -> None:
        self._expires_at = float(expires_at)
        self._clock = clock

    @classmethod
    def after(cls, seconds: float, clock: Clock = time.monotonic) -> Deadline:
        """The deadline ``seconds`` from now (``seconds >= 0``, finite)."""
        seconds = _seconds("seconds", seconds, allow_zero=True)
        if math.isinf(seconds):
            raise ValueError("seconds must be finite")
        return cls(clock() + seconds, clock)

    @property
    def expires_at(self) -> float:
        return self._expires_at

    def remaining(self) -> float:
        """Seconds left, never below 0."""
        return max(0.0, self._expires_at - self._clock())

    @property
    def expired(self) -> bool:
        return self.remaining() == 0.0

    def to_header(self) -> str:
        """Whole milliseconds left, floored: the value of the ``X-Deadline-Ms`` header."""
        return str(math.floor(self.remaining() * 1000))

    @classmethod
    def from_header(cls, text: str, clock: Clock = time.monotonic) -> Deadline:
        """Adopt a caller's deadline from ``X-Deadline-Ms``: ASCII digits only, spaces around ok."""
        if not isinstance(text, str):
            raise TypeError(f"the header value must be a str, got {type(text).__name__}")
        digits = text.strip()
        if not digits or not digits.isascii() or not digits.isdigit():
            raise ValueError(
                f"{DEADLINE_HEADER} must be whole milliseconds in ASCII digits, got {text!r}")
        return cls.after(int(digits) / 1000, clock)

    def __repr__(self) -> str:
        return f"Deadline(remaining={self.remaining():.3f} s)"
