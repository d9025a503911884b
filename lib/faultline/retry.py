"""Retries: try a failed call again, later, a bounded number of times, within a budget.

A transient fault (a dropped connection, a 503 from a replica that is restarting) often
goes away if you ask again; a retry turns it into a success. Asked again *at once and by
everybody*, it turns a blip into a retry storm. So a retry policy waits between tries,
exponentially longer each time and randomised (jitter), gives up after ``max_attempts``,
retries only the errors that may go away, and spends at most a budget of retries.

Theory of operation. ``RetryState`` is the sans-I/O core of one call: the shell reports
each failure and the core answers ``RetryAfter(delay)`` or ``GiveUp(reason)``; it never
sleeps, reads a clock or touches the network. ``RetryPolicy`` is the asyncio shell: it
awaits the function, feeds failures to a fresh core and sleeps through ``asyncio.sleep``
(so virtual time makes tests exact). Only ``Exception`` is caught, never
``BaseException``: a cancelled task is never retried.

    after try n (from 0) fails:  retryable?  ──no──►  GiveUp("not retryable")
                                     │yes
                                 n + 1 < max_attempts? ──no──►  GiveUp("attempts exhausted")
                                     │yes
                                 budget.try_acquire()? ──no──►  GiveUp("budget exhausted")
                                     │yes
                                 RetryAfter(backoff_delay(n, ..., previous=last delay))
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

__all__ = [
    "JITTERS",
    "GiveUp",
    "RetryAfter",
    "RetryBudget",
    "RetryConfig",
    "RetryPolicy",
    "RetryState",
    "SupportsRetryBudget",
    "backoff_delay",
]

T = TypeVar("T")

JITTERS = ("none", "full", "equal", "decorrelated")

# 2.0 ** 1024 overflows a float; any base * 2**attempt at that size is far above any cap.
_MAX_EXPONENT = 1023
_DEFAULT_RNG = random.Random()


def _number(name: str, value: object, *, positive: bool = False) -> float:
    """``value`` as a finite float (> 0 if ``positive``, else >= 0), or the error naming it."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    bad = not value > 0 if positive else not value >= 0
    if bad or math.isinf(value):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def _check_backoff(base: object, cap: object, jitter: object) -> tuple[float, float]:
    base_ = _number("base", base, positive=True)
    cap_ = _number("cap", cap, positive=True)
    if cap_ < base_:
        raise ValueError(f"cap must be >= base, got cap={cap!r} < base={base!r}")
    if jitter not in JITTERS:
        raise ValueError(f"jitter must be one of {', '.join(JITTERS)}; got {jitter!r}")
    return base_, cap_


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    jitter: str,
    rng: random.Random | None,
    previous: float | None = None,
) -> float:
    """Seconds to wait after failed try ``attempt`` (from 0): capped exponential backoff.

    Brooker, *Exponential Backoff and Jitter* (AWS Architecture Blog, 2015), with
    ``t = min(cap, base * 2**attempt)``: ``"none"`` t; ``"full"`` uniform(0, t);
    ``"equal"`` t/2 + uniform(0, t/2); ``"decorrelated"`` min(cap, uniform(base,
    3 * previous)), ``previous`` being the last delay (``base`` at first). One draw from
    ``rng`` per jittered call; any ``attempt`` works (large ones give the cap).
    """
    if isinstance(attempt, bool) or not isinstance(attempt, int):
        raise TypeError(f"attempt must be an int, got {type(attempt).__name__}")
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt!r}")
    base, cap = _check_backoff(base, cap, jitter)
    rng = _DEFAULT_RNG if rng is None else rng
    if jitter == "decorrelated":
        last = base if previous is None else _number("previous", previous, positive=True)
        return min(cap, rng.uniform(base, 3 * last))
    t = cap if attempt > _MAX_EXPONENT else min(cap, base * 2.0 ** attempt)
    if jitter == "none":
        return t
    if jitter == "full":
        return rng.uniform(0, t)
    return t / 2 + rng.uniform(0, t / 2)  # "equal"


def _exception_classes(retry_on: object) -> tuple[type[BaseException], ...]:
    classes = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise TypeError(f"retry_on must be an exception class or a tuple of them, "
                            f"got {retry_on!r}")
    return classes


@dataclass(frozen=True)
class RetryConfig:
    """How to retry: tries in all, the backoff (see ``backoff_delay``), what is retryable."""

    max_attempts: int = 3
    base: float = 0.1
    cap: float = 10.0
    jitter: str = "full"
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (ConnectionError,
                                                                        TimeoutError)

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(f"max_attempts must be an int, got {type(self.max_attempts).__name__}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts!r}")
        base, cap = _check_backoff(self.base, self.cap, self.jitter)
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "cap", cap)
        object.__setattr__(self, "retry_on", _exception_classes(self.retry_on))

    def retryable(self, error: BaseException) -> bool:
        """True for an ``Exception`` listed in ``retry_on``; never for a cancellation."""
        return isinstance(error, Exception) and isinstance(error, self.retry_on)


@runtime_checkable
class SupportsRetryBudget(Protocol):
    """What a retry policy needs from a budget (``RetryBudget``, or your own)."""

    def record_request(self) -> None: ...

    def try_acquire(self) -> bool: ...


@dataclass(frozen=True)
class RetryAfter:
    """Decision: sleep ``delay`` seconds, then try again."""

    delay: float


@dataclass(frozen=True)
class GiveUp:
    """Decision: stop and raise the last error; ``reason`` says why."""

    reason: str  # "not retryable", "attempts exhausted" or "budget exhausted"


Decision = RetryAfter | GiveUp


class RetryState:
    """The sans-I/O core of one call: count tries, decide retry-or-give-up, pick the delay.

    Built at the start of a call (it records the request in the budget). Call
    ``start_attempt()`` before each try and ``on_failure(error)`` after a failed one.
    """

    def __init__(self, config: RetryConfig, rng: random.Random,
                 budget: SupportsRetryBudget | None = None) -> None:
        self.config = config
        self.rng = rng
        self.budget = budget
        self.attempts = 0  # tries started so far
        self.delays: list[float] = []  # sleeps decided so far
        if budget is not None:
            budget.record_request()

    def start_attempt(self) -> int:
        """Count one more try; return how many have started."""
        self.attempts += 1
        return self.attempts

    def on_failure(self, error: BaseException) -> Decision:
        """The decision after the current try failed with ``error``."""
        if not self.config.retryable(error):
            return GiveUp("not retryable")
        if self.attempts >= self.config.max_attempts:
            return GiveUp("attempts exhausted")
        if self.budget is not None and not self.budget.try_acquire():
            return GiveUp("budget exhausted")
        delay = backoff_delay(self.attempts - 1, base=self.config.base, cap=self.config.cap,
                              jitter=self.config.jitter, rng=self.rng,
                              previous=self.delays[-1] if self.delays else None)
        self.delays.append(delay)
        return RetryAfter(delay)


class RetryPolicy:
    """Retry an async call with capped, jittered exponential backoff (``await policy.call(fn)``).

    ``fn()`` is awaited up to ``max_attempts`` times in all; errors outside ``retry_on``
    are raised at once, and after the last try the last error is raised. With a ``budget``
    each call is recorded and each retry must be granted a token. ``.attempts`` is the
    number of tries the most recent call made.
    """

    def __init__(
        self,
        max_attempts: int = 3,
        base: float = 0.1,
        cap: float = 10.0,
        jitter: str = "full",
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (ConnectionError,
                                                                            TimeoutError),
        rng: random.Random | None = None,
        budget: SupportsRetryBudget | None = None,
    ) -> None:
        self.config = RetryConfig(max_attempts, base, cap, jitter, retry_on)
        if rng is not None and not isinstance(rng, random.Random):
            raise TypeError(f"rng must be a random.Random or None, got {type(rng).__name__}")
        if budget is not None and not isinstance(budget, SupportsRetryBudget):
            raise TypeError("budget must have record_request() and try_acquire() methods, "
                            f"got {budget!r}")
        self.rng = rng if rng is not None else random.Random()
        self.budget = budget
        self.attempts = 0
        self.last_state: RetryState | None = None  # the core of the most recent call

    @property
    def max_attempts(self) -> int:
        return self.config.max_attempts

    @property
    def retry_on(self) -> tuple[type[BaseException], ...]:
        return self.config.retry_on  # type: ignore[return-value]

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Await ``fn(*args, **kwargs)``, retrying retryable failures; return its result."""
        state = RetryState(self.config, self.rng, self.budget)
        self.last_state = state
        self.attempts = 0
        while True:
            self.attempts = state.start_attempt()
            try:
                return await fn(*args, **kwargs)
            except Exception as error:  # never BaseException: cancellation passes through
                decision = state.on_failure(error)
                if isinstance(decision, GiveUp):
                    raise
            await asyncio.sleep(decision.delay)

    def __repr__(self) -> str:
        c = self.config
        return (f"RetryPolicy(max_attempts={c.max_attempts}, base={c.base:g}, cap={c.cap:g}, "
                f"jitter={c.jitter!r}, budget={self.budget!r})")


class RetryBudget:
    """A token bucket of retries shared by many calls (Finagle's and Linkerd's retry budget).

    It starts with ``min_tokens``; every request deposits ``ratio`` of a token (the balance
    never exceeds ``max_tokens``) and every retry withdraws a whole one. Over a long run
    retries stay below ``ratio`` of requests plus the starting tokens, however many tries
    each policy allows: a dependency that is down sees about ``1 + ratio`` times the load,
    not ``max_attempts`` times.
    """

    # Deposits such as 0.2 are not exact in binary: five of them sum to 0.999... Count
    # a balance this close to a whole token as the whole token.
    _EPSILON = 1e-9

    def __init__(self, ratio: float = 0.2, min_tokens: float = 10, max_tokens: float = 100
                 ) -> None:
        self.ratio = _number("ratio", ratio)
        self.min_tokens = _number("min_tokens", min_tokens)
        self.max_tokens = _number("max_tokens", max_tokens)
        if self.max_tokens < self.min_tokens:
            raise ValueError(f"max_tokens must be >= min_tokens, got max_tokens={max_tokens!r} "
                             f"< min_tokens={min_tokens!r}")
        self._balance = self.min_tokens
        self.requests = 0  # requests recorded
        self.granted = 0  # retries allowed
        self.refused = 0  # retries refused

    @property
    def balance(self) -> float:
        """Tokens in the bucket now."""
        return self._balance

    def record_request(self) -> None:
        """One request was made: deposit ``ratio`` tokens, up to ``max_tokens``."""
        self.requests += 1
        self._balance = min(self.max_tokens, self._balance + self.ratio)

    def try_acquire(self) -> bool:
        """Withdraw one token for a retry if there is one; say whether the retry may go."""
        if self._balance + self._EPSILON >= 1:
            self._balance = max(0.0, self._balance - 1)
            self.granted += 1
            return True
        self.refused += 1
        return False

    def __repr__(self) -> str:
        return (f"RetryBudget(ratio={self.ratio:g}, min_tokens={self.min_tokens:g}, "
                f"max_tokens={self.max_tokens:g}, balance={self._balance:.2f})")
