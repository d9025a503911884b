"""Circuit breakers: stop calling a dependency that keeps failing, and try it again later.

Theory of operation. A breaker sits between a caller and one dependency and is in one of
three states (resilience4j's model; Nygard, *Release It!*):

    CLOSED ──(failure rate ≥ threshold)──► OPEN ──(open_timeout passed)──► HALF_OPEN
      ▲                                      ▲                                 │
      └──(half_open_max_calls successes)─────┼─────────────────────────────────┤
                                             └──────────(a trial failed)───────┘

* **Closed**: calls go through; each outcome goes into a count-based window of the last
  ``window_size`` calls. Once the window holds at least ``minimum_calls`` outcomes and the
  share of failures is at least ``failure_rate_threshold``, the breaker opens.
* **Open**: calls are refused at once (``CircuitOpenError``), so callers stop spending
  workers, connections and their users' patience on a dependency that is down. There is
  no timer: the first request (or read of ``.state``) after ``open_timeout`` finds it
  half-open, so everything runs on an injected clock.
* **Half-open**: at most ``half_open_max_calls`` trial calls are let through. That many
  successes close it with an empty window; any failure opens it again for a full
  ``open_timeout``.

``BreakerMachine`` is that logic with no clock and no I/O (h11's style): it is fed the time
and the outcomes, answers ``Admit``/``Reject``, and every change of state goes through one
``_transition`` that checks ``TRANSITIONS`` and emits a frozen ``Transition`` event.
``CircuitBreaker`` is the asyncio shell with the course's contract: it reads the clock,
wraps ``await fn()``, and passes each event to ``on_transition(old, new, at)``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Any, TypeVar

from faultline.errors import CircuitOpenError

__all__ = [
    "TRANSITIONS",
    "Admit",
    "BreakerConfig",
    "BreakerMachine",
    "CircuitBreaker",
    "InvalidTransitionError",
    "Reject",
    "State",
    "Transition",
    "TransitionLog",
]

T = TypeVar("T")
Clock = Callable[[], float]
OnTransition = Callable[[Any, Any, float], object]


class State(str, Enum):
    """The breaker's state; each compares equal to its plain string, e.g. ``"half_open"``."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    def __str__(self) -> str:
        return self.value


# Every change of state the breaker may make, and why it makes it. The lesson's state
# diagram is drawn from this table, so the picture and the code cannot disagree.
TRANSITIONS: Mapping[tuple[State, State], str] = MappingProxyType({
    (State.CLOSED, State.OPEN): "failure rate ≥ threshold\n(window ≥ minimum_calls)",
    (State.OPEN, State.HALF_OPEN): "open_timeout has passed\n(seen on the next request)",
    (State.HALF_OPEN, State.CLOSED): "half_open_max_calls\ntrials succeeded",
    (State.HALF_OPEN, State.OPEN): "a trial failed",
})


# The states as plain names for the per-call paths: reading ``State.CLOSED`` goes through
# the Enum class and costs as much as the rest of a closed-state ``acquire``.
_CLOSED, _OPEN, _HALF_OPEN = State.CLOSED, State.OPEN, State.HALF_OPEN


class InvalidTransitionError(RuntimeError):
    """A change of state that ``TRANSITIONS`` does not allow (a bug in the caller)."""


@dataclass(frozen=True)
class Transition:
    """One change of state: from ``old`` to ``new`` at clock time ``at`` (seconds)."""

    old: State
    new: State
    at: float


@dataclass(frozen=True)
class Admit:
    """The call may go ahead. ``ticket`` identifies the state it was admitted in, so an
    outcome that arrives after the breaker has moved on is not counted against the new one."""

    ticket: int
    trial: bool = False


class Reject:
    """The call is refused; a trial will be admitted in ``retry_after`` seconds (0: unknown,
    the trials in flight may free a place at any moment).

    A plain class with slots rather than a frozen dataclass: an open breaker makes one per
    call, and this is three times cheaper to create.
    """

    __slots__ = ("retry_after",)

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after

    def __eq__(self, other: object) -> bool:
        if type(other) is not Reject:
            return NotImplemented
        return self.retry_after == other.retry_after

    def __hash__(self) -> int:
        return hash((Reject, self.retry_after))

    def __repr__(self) -> str:
        return f"Reject(retry_after={self.retry_after!r})"


def _int_at_least(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not value > 0 or math.isinf(value):  # also refuses NaN
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class BreakerConfig:
    """A breaker's settings, checked once: a bad value raises naming the field.

    ``slow_call_duration`` (seconds, ``None`` = off) goes beyond the course contract: a call
    through ``CircuitBreaker.call`` that succeeds but takes at least that long counts as a
    failure, as resilience4j's slow-call threshold does (a dependency that answers in 10 s
    is as good as down for a caller that cannot wait 10 s).
    """

    failure_rate_threshold: float = 0.5
    window_size: int = 10
    minimum_calls: int = 5
    open_timeout: float = 30.0
    half_open_max_calls: int = 1
    slow_call_duration: float | None = None

    def __post_init__(self) -> None:
        rate = self.failure_rate_threshold
        if isinstance(rate, bool) or not isinstance(rate, int | float):
            raise TypeError(f"failure_rate_threshold must be a number, got {type(rate).__name__}")
        if not 0 < rate <= 1:  # also refuses NaN
            raise ValueError(f"failure_rate_threshold must be in (0, 1], got {rate!r}")
        _int_at_least("window_size", self.window_size, 1)
        _int_at_least("minimum_calls", self.minimum_calls, 1)
        if self.minimum_calls > self.window_size:
            raise ValueError(f"minimum_calls must be <= window_size ({self.window_size}), "
                             f"got {self.minimum_calls}")
        _seconds("open_timeout", self.open_timeout)
        _int_at_least("half_open_max_calls", self.half_open_max_calls, 1)
        if self.slow_call_duration is not None:
            _seconds("slow_call_duration", self.slow_call_duration)


class BreakerMachine:
    """The breaker's rules with no clock and no I/O: fed ``now`` and outcomes, it decides.

    ``acquire(now)`` answers ``Admit`` or ``Reject``; ``record(now, failed=...)`` takes an
    outcome; ``release(admit)`` gives back the place of a call that was cancelled.
    Changes of state are queued as ``Transition`` events: read them with ``take_events()``.
    """

    def __init__(self, config: BreakerConfig | None = None) -> None:
        self.config = config if config is not None else BreakerConfig()
        self._state = _CLOSED
        self._window_size = self.config.window_size
        self._window: deque[bool] = deque(maxlen=self._window_size)  # True: a failure
        self._failures = 0  # failures in the window
        self._opened_at = 0.0
        self._trials = 0  # half-open trials admitted (and not given back)
        self._successes = 0  # half-open trials that succeeded
        self._ticket = 0  # changes with every transition
        self._admit = Admit(0)  # the answer while closed, made once per ticket
        self._events: list[Transition] = []

    # -- reading

    @property
    def state(self) -> State:
        """The state as last changed; ``poll(now)`` first to apply a due half-open."""
        return self._state

    @property
    def failure_rate(self) -> float | None:
        """Failures / outcomes in the closed-state window; ``None`` while it is empty."""
        return self._failures / len(self._window) if self._window else None

    @property
    def window(self) -> tuple[bool, ...]:
        """The outcomes in the window, oldest first (``True`` for a failure)."""
        return tuple(self._window)

    def retry_after(self, now: float) -> float:
        """Seconds until a trial may be admitted: the rest of the open time, else 0."""
        if self._state is _OPEN:
            return max(0.0, self._opened_at + self.config.open_timeout - now)
        return 0.0

    def take_events(self) -> list[Transition]:
        """The transitions made since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    # -- feeding

    def poll(self, now: float) -> State:
        """Apply the lazy change open → half-open if ``open_timeout`` has passed; the state."""
        if self._state is _OPEN and now - self._opened_at >= self.config.open_timeout:
            self._transition(_HALF_OPEN, now)
        return self._state

    def acquire(self, now: float) -> Admit | Reject:
        """May a call go ahead at ``now``? Half-open admits ``half_open_max_calls`` trials."""
        state = self._state
        if state is _CLOSED:  # the common case, and nothing to poll for
            return self._admit
        if state is _OPEN and now - self._opened_at < self.config.open_timeout:
            return Reject(max(0.0, self._opened_at + self.config.open_timeout - now))  # still open
        state = self.poll(now)
        if state is _HALF_OPEN and self._trials < self.config.half_open_max_calls:
            self._trials += 1
            return Admit(self._ticket, trial=True)
        return Reject(self.retry_after(now))

    def record(self, now: float, *, failed: bool, ticket: int | None = None) -> None:
        """Count one outcome at ``now``. Ignored while open, and when ``ticket`` (from the
        ``Admit`` of this call) belongs to a state the breaker has since left."""
        if ticket is not None and ticket != self._ticket:
            return
        if self._state is _CLOSED:
            window = self._window
            if len(window) == self._window_size and window[0]:
                self._failures -= 1  # the oldest outcome slides out
            window.append(failed)
            self._failures += failed
            if (self._failures  # no failure in the window: the rate is 0, below any threshold
                    and len(window) >= self.config.minimum_calls
                    and self._failures / len(window) >= self.config.failure_rate_threshold):
                self._transition(_OPEN, now)
        elif self._state is _HALF_OPEN:
            if failed:
                self._transition(_OPEN, now)
            else:
                self._successes += 1
                if self._successes >= self.config.half_open_max_calls:
                    self._transition(_CLOSED, now)

    def release(self, admit: Admit) -> None:
        """A call admitted by ``admit`` ended without an outcome: give back its trial."""
        if admit.trial and admit.ticket == self._ticket and self._state is _HALF_OPEN:
            self._trials -= 1

    # -- the one way to change state

    def _transition(self, new: State, at: float) -> None:
        """Move to ``new`` if ``TRANSITIONS`` allows it, reset what the new state starts
        from, and queue the event. A forbidden move raises and changes nothing."""
        old = self._state
        if (old, new) not in TRANSITIONS:
            raise InvalidTransitionError(f"the breaker cannot go from {old} to {new}")
        self._state = new
        self._ticket += 1
        self._admit = Admit(self._ticket)
        if new is State.OPEN:
            self._opened_at = at
        if new is State.HALF_OPEN:
            self._trials = self._successes = 0
        if new is not State.HALF_OPEN:  # closed starts with a fresh window; open keeps none
            self._window.clear()
            self._failures = 0
        self._events.append(Transition(old, new, at))


class CircuitBreaker:
    """A circuit breaker for async calls (the course's contract; see the module docstring).

    ``allow_request()`` / ``record_success()`` / ``record_failure()`` drive it by hand;
    ``await breaker.call(fn, *args)`` does all three around ``await fn(*args)``: any
    ``Exception`` is a failure (and propagates), a cancelled call counts nothing and gives
    back its half-open trial. ``on_transition(old, new, at)`` hears every change of state.
    """

    def __init__(
        self,
        *,
        failure_rate_threshold: float = 0.5,
        window_size: int = 10,
        minimum_calls: int = 5,
        open_timeout: float = 30.0,
        half_open_max_calls: int = 1,
        clock: Clock = time.monotonic,
        on_transition: OnTransition | None = None,
        slow_call_duration: float | None = None,
    ) -> None:
        if not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, got {clock!r}")
        if on_transition is not None and not callable(on_transition):
            raise TypeError(f"on_transition must be callable or None, got {on_transition!r}")
        self.config = BreakerConfig(failure_rate_threshold, window_size, minimum_calls,
                                    open_timeout, half_open_max_calls, slow_call_duration)
        self._slow = self.config.slow_call_duration  # read on every call
        self._clock = clock
        self._on_transition = on_transition
        self._machine = BreakerMachine(self.config)

    @property
    def state(self) -> State:
        """The current state; reading it applies a due change from open to half-open."""
        self._machine.poll(self._clock())
        self._emit()
        return self._machine.state

    @property
    def failure_rate(self) -> float | None:
        """The share of failures in the closed-state window (``None`` while empty)."""
        return self._machine.failure_rate

    def retry_after(self) -> float:
        """Seconds until the breaker will admit a trial (0 when closed or half-open)."""
        return self._machine.retry_after(self._clock())

    def allow_request(self) -> bool:
        """True if a call may go ahead now; in half-open each True uses up one trial."""
        decision = self._machine.acquire(self._clock())
        self._emit()
        return isinstance(decision, Admit)

    def record_success(self) -> None:
        """Count a successful call (ignored while open)."""
        self._machine.record(self._clock(), failed=False)
        self._emit()

    def record_failure(self) -> None:
        """Count a failed call (ignored while open)."""
        self._machine.record(self._clock(), failed=True)
        self._emit()

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """``await fn(*args, **kwargs)`` if the breaker allows it, else ``CircuitOpenError``."""
        machine = self._machine
        started = self._clock()
        decision = machine.acquire(started)
        if machine._events:
            self._emit()
        if isinstance(decision, Reject):
            raise CircuitOpenError(decision.retry_after)
        try:
            result = await fn(*args, **kwargs)
        except Exception:
            machine.record(self._clock(), failed=True, ticket=decision.ticket)
            self._emit()
            raise
        except BaseException:  # cancelled (or interrupted): no outcome, give the trial back
            machine.release(decision)
            raise
        ended = self._clock()
        slow = self._slow
        machine.record(ended, failed=slow is not None and ended - started >= slow,
                       ticket=decision.ticket)
        if machine._events:
            self._emit()
        return result

    def _emit(self) -> None:
        """Pass the machine's new transitions to ``on_transition`` (``call`` skips this
        when there are none, as on almost every call)."""
        for event in self._machine.take_events():
            if self._on_transition is not None:
                self._on_transition(event.old, event.new, event.at)

    def __repr__(self) -> str:
        machine, config = self._machine, self.config
        if machine.state is State.CLOSED:
            window = machine.window
            detail = (f"{sum(window)} of the last {len(window)} calls failed; opens at "
                      f"{config.failure_rate_threshold:.0%} of at least {config.minimum_calls}")
        elif machine.state is State.OPEN:
            detail = f"a trial in {machine.retry_after(self._clock()):.3g} s"
        else:
            detail = f"up to {config.half_open_max_calls} trial call(s)"
        return f"<CircuitBreaker {machine.state}: {detail}>"


class TransitionLog:
    """An ``on_transition`` callback that keeps every ``Transition``, for plots and tests.

        log = TransitionLog()
        breaker = CircuitBreaker(on_transition=log)
        ...
        fl.viz.state_timeline(log.events, end=60)
    """

    def __init__(self) -> None:
        self.events: list[Transition] = []

    def __call__(self, old: Any, new: Any, at: float) -> None:
        self.events.append(Transition(State(old), State(new), float(at)))

    def states(self) -> list[str]:
        """The states entered, in order, as plain strings (``["open", "half_open", ...]``)."""
        return [event.new.value for event in self.events]

    def clear(self) -> None:
        self.events.clear()

    def __iter__(self) -> Iterator[Transition]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def __repr__(self) -> str:
        steps = ", ".join(f"{e.new.value} at {e.at:g}" for e in self.events)
        return f"TransitionLog([{steps}])"
