"""Fault injection: what can go wrong on a call, decided without doing any I/O.

Each fault kind is a frozen dataclass that, asked ``decide(rng)`` once per request, says
what happens to that request (a ``Decision``). The transports carry decisions out: real
sleeps and socket resets over HTTP, virtual sleeps in memory. A ``FaultInjector`` holds the
faults of every service (server side) and every call edge (caller → callee, client side),
switched at runtime from Python or through a service's admin endpoint (JSON via
``to_dict``/``fault_from_dict``). Each kind names the fallacy of distributed computing
(Deutsch, 1994) that it demonstrates.
"""

from __future__ import annotations

import dataclasses
import math
import random
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

__all__ = [
    "FAULT_KINDS",
    "Blackhole",
    "ConnectionReset",
    "Decision",
    "ErrorRate",
    "Fault",
    "FaultInjector",
    "Hang",
    "Latency",
    "LatencySpikes",
    "Outcome",
    "RandomLatency",
    "Script",
    "Slow",
    "fault_from_dict",
]


class Outcome(str, Enum):
    """How a request ends after its delay."""

    PASS = "pass"  # on to the service as usual
    ERROR = "error"  # answered at once with an error status
    HANG = "hang"  # the service took it and never answers
    DROP = "drop"  # lost on the way: it never reaches the service
    RESET = "reset"  # the connection is reset


@dataclass(frozen=True)
class Decision:
    """What happens to one request: wait ``delay``, then ``outcome``; maybe a slow answer."""

    delay: float = 0.0
    outcome: Outcome = Outcome.PASS
    status: int | None = None
    bytes_per_second: float | None = None

    def then(self, other: Decision) -> Decision:
        """Combine two decisions: delays add, the first non-PASS outcome wins, slowest link wins."""
        outcome, status = self.outcome, self.status
        if outcome is Outcome.PASS:
            outcome, status = other.outcome, other.status
        rates = [r for r in (self.bytes_per_second, other.bytes_per_second) if r is not None]
        return Decision(self.delay + other.delay, outcome, status, min(rates) if rates else None)


PASS = Decision()


def _number(name: str, value: Any, *, low: float = 0.0, high: float = math.inf,
            low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    too_low = value <= low if low_open else value < low
    if math.isnan(value) or too_low or value > high:
        lo = "(" if low_open else "["
        raise ValueError(f"{name} must be in {lo}{low:g}, {high:g}], got {value!r}")
    return float(value)


def _status(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise ValueError(f"status must be an HTTP status code (100-599), got {value!r}")
    return value


class Fault:
    """Base of the fault kinds: ``decide(rng)`` per request, ``to_dict()`` for JSON."""

    kind: ClassVar[str]
    fallacy: ClassVar[str]

    def decide(self, rng: random.Random) -> Decision:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}  # type: ignore[call-overload]

    def describe(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "kind")
        return f"{self.kind}({params})"


def _fires(rng: random.Random, probability: float) -> bool:
    return probability >= 1.0 or (probability > 0.0 and rng.random() < probability)


@dataclass(frozen=True)
class Latency(Fault):
    """Every request waits ``seconds`` longer."""

    seconds: float
    kind: ClassVar[str] = "latency"
    fallacy: ClassVar[str] = "Latency is zero"

    def __post_init__(self) -> None:
        _number("seconds", self.seconds)

    def decide(self, rng: random.Random) -> Decision:
        return Decision(delay=self.seconds)


@dataclass(frozen=True)
class RandomLatency(Fault):
    """Every request waits a uniformly random time between ``low`` and ``high`` seconds."""

    low: float
    high: float
    kind: ClassVar[str] = "random_latency"
    fallacy: ClassVar[str] = "Latency is zero"

    def __post_init__(self) -> None:
        _number("low", self.low)
        _number("high", self.high, low=self.low)

    def decide(self, rng: random.Random) -> Decision:
        return Decision(delay=rng.uniform(self.low, self.high))


@dataclass(frozen=True)
class LatencySpikes(Fault):
    """With ``probability`` a request waits ``seconds`` longer: a fat tail that only p99 shows."""

    seconds: float
    probability: float
    kind: ClassVar[str] = "latency_spikes"
    fallacy: ClassVar[str] = "Latency is zero"

    def __post_init__(self) -> None:
        _number("seconds", self.seconds)
        _number("probability", self.probability, high=1.0)

    def decide(self, rng: random.Random) -> Decision:
        return Decision(delay=self.seconds) if _fires(rng, self.probability) else PASS


@dataclass(frozen=True)
class ErrorRate(Fault):
    """With ``probability`` a request is answered at once with ``status`` (default 503)."""

    probability: float
    status: int = 503
    kind: ClassVar[str] = "error_rate"
    fallacy: ClassVar[str] = "The network is reliable"

    def __post_init__(self) -> None:
        _number("probability", self.probability, high=1.0)
        _status(self.status)

    def decide(self, rng: random.Random) -> Decision:
        if _fires(rng, self.probability):
            return Decision(outcome=Outcome.ERROR, status=self.status)
        return PASS


@dataclass(frozen=True)
class Hang(Fault):
    """With ``probability`` the service takes the request and never answers (holding a worker)."""

    probability: float = 1.0
    kind: ClassVar[str] = "hang"
    fallacy: ClassVar[str] = "The network is reliable (a dependency can stall forever)"

    def __post_init__(self) -> None:
        _number("probability", self.probability, high=1.0)

    def decide(self, rng: random.Random) -> Decision:
        return Decision(outcome=Outcome.HANG) if _fires(rng, self.probability) else PASS


@dataclass(frozen=True)
class ConnectionReset(Fault):
    """With ``probability`` the connection is reset before an answer: the caller gets an error."""

    probability: float = 1.0
    kind: ClassVar[str] = "connection_reset"
    fallacy: ClassVar[str] = "The network is reliable"

    def __post_init__(self) -> None:
        _number("probability", self.probability, high=1.0)

    def decide(self, rng: random.Random) -> Decision:
        return Decision(outcome=Outcome.RESET) if _fires(rng, self.probability) else PASS


@dataclass(frozen=True)
class Blackhole(Fault):
    """With ``probability`` the request is lost on the way (a partition): no answer, no work."""

    probability: float = 1.0
    kind: ClassVar[str] = "blackhole"
    fallacy: ClassVar[str] = "Topology doesn't change (links partition)"

    def __post_init__(self) -> None:
        _number("probability", self.probability, high=1.0)

    def decide(self, rng: random.Random) -> Decision:
        return Decision(outcome=Outcome.DROP) if _fires(rng, self.probability) else PASS


@dataclass(frozen=True)
class Slow(Fault):
    """Answers trickle out at ``bytes_per_second``: big responses take long."""

    bytes_per_second: float
    kind: ClassVar[str] = "slow"
    fallacy: ClassVar[str] = "Bandwidth is infinite"

    def __post_init__(self) -> None:
        _number("bytes_per_second", self.bytes_per_second, low_open=True)

    def decide(self, rng: random.Random) -> Decision:
        return Decision(bytes_per_second=self.bytes_per_second)


@dataclass(frozen=True)
class Script(Fault):
    """Requests follow ``steps`` in order, then ``then`` (``None``: no fault).

    A step is a status code (``200`` passes the request through untouched, any other code
    answers with it) or another fault: ``Script([500, 503, 200])`` fails twice, then works.
    The position is kept by the injector, so re-injecting a script starts it over.
    """

    steps: tuple[int | Fault, ...]
    then: Fault | None = None
    kind: ClassVar[str] = "script"
    fallacy: ClassVar[str] = "The network is reliable (transient faults come and go)"

    def __post_init__(self) -> None:
        steps = tuple(self.steps)
        if not steps:
            raise ValueError("steps must not be empty")
        for step in steps:
            if isinstance(step, Script) or (not isinstance(step, Fault) and _status(step) < 0):
                raise ValueError(f"each step must be a status code or a fault, got {step!r}")
        if self.then is not None and not isinstance(self.then, Fault):
            raise TypeError(f"then must be a fault or None, got {type(self.then).__name__}")
        object.__setattr__(self, "steps", steps)

    def step(self, index: int, rng: random.Random) -> Decision:
        """The decision for the ``index``-th request (from 0) under this script."""
        if index >= len(self.steps):
            return self.then.decide(rng) if self.then is not None else PASS
        step = self.steps[index]
        if isinstance(step, Fault):
            return step.decide(rng)
        return PASS if 200 <= step < 400 else Decision(outcome=Outcome.ERROR, status=step)

    def decide(self, rng: random.Random) -> Decision:
        raise TypeError("a Script keeps a position: let a FaultInjector run it")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "steps": [s.to_dict() if isinstance(s, Fault) else s for s in self.steps],
            "then": self.then.to_dict() if self.then is not None else None,
        }


FAULT_KINDS: dict[str, type[Fault]] = {
    cls.kind: cls
    for cls in (Latency, RandomLatency, LatencySpikes, ErrorRate, Hang, ConnectionReset,
                Blackhole, Slow, Script)
}


def fault_from_dict(data: Mapping[str, Any]) -> Fault:
    """Build a fault from its JSON form, e.g. ``{"kind": "error_rate", "probability": 0.3}``."""
    if not isinstance(data, Mapping):
        raise TypeError(f"a fault must be a JSON object, got {type(data).__name__}")
    params = dict(data)
    kind = params.pop("kind", None)
    cls = FAULT_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown fault kind {kind!r}; known kinds: {', '.join(FAULT_KINDS)}")
    if cls is Script:
        steps = params.get("steps")
        if not isinstance(steps, list):
            raise ValueError("script needs 'steps': a list of status codes or faults")
        params["steps"] = tuple(fault_from_dict(s) if isinstance(s, Mapping) else s
                                for s in steps)
        if params.get("then") is not None:
            params["then"] = fault_from_dict(params["then"])
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(params) - names
    if unknown:
        raise ValueError(f"{kind} has no parameter(s) {', '.join(sorted(unknown))}; "
                         f"it takes {', '.join(sorted(names)) or 'none'}")
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"{kind}: {exc}") from None


Target = tuple[str | None, str]  # (caller or None for the service itself, service)


@dataclass
class _Active:
    faults: tuple[Fault, ...]
    rng: random.Random
    script_positions: list[int] = field(default_factory=list)


class FaultInjector:
    """The faults in force, per service and per call edge, switchable while requests flow.

    ``inject("payments", ErrorRate(0.3))`` affects every request that payments receives;
    ``inject_edge("orders", "payments", Latency(0.2))`` only calls from orders to payments.
    Each target draws from its own random stream derived from ``seed``, so a seeded run
    makes the same decisions whatever else is injected.
    """

    def __init__(self, seed: int | str | None = None) -> None:
        self._seed = seed
        self._active: dict[Target, _Active] = {}
        self._lock = threading.Lock()  # widgets and admin endpoints may switch concurrently

    def _rng(self, target: Target) -> random.Random:
        if self._seed is None:
            return random.Random()
        caller, service = target
        return random.Random(f"{self._seed}/{caller or ''}->{service}")

    def _set(self, target: Target, faults: Iterable[Fault]) -> None:
        faults = tuple(faults)
        for fault in faults:
            if not isinstance(fault, Fault):
                raise TypeError(f"expected fault objects (e.g. ErrorRate(0.3)), got {fault!r}")
        with self._lock:
            if faults:
                self._active[target] = _Active(faults, self._rng(target), [0] * len(faults))
            else:
                self._active.pop(target, None)

    def inject(self, service: str, *faults: Fault) -> None:
        """Replace the faults of every request ``service`` receives (none given: clear them)."""
        self._set((None, service), faults)

    def inject_edge(self, caller: str, callee: str, *faults: Fault) -> None:
        """Replace the faults of calls from ``caller`` to ``callee`` only."""
        self._set((caller, callee), faults)

    def clear(self, service: str | None = None) -> None:
        """Remove the faults of ``service`` and of every edge into it; ``None``: all faults."""
        with self._lock:
            if service is None:
                self._active.clear()
            else:
                for target in [t for t in self._active if t[1] == service]:
                    del self._active[target]

    def clear_edge(self, caller: str, callee: str) -> None:
        self._set((caller, callee), ())

    def faults(self, service: str, caller: str | None = None) -> tuple[Fault, ...]:
        """The faults on ``service`` (or on the edge from ``caller``)."""
        active = self._active.get((caller, service))
        return active.faults if active else ()

    def decide(self, service: str, caller: str | None = None) -> Decision:
        """Draw the decision for one request to ``service`` (or on the edge from ``caller``)."""
        with self._lock:
            active = self._active.get((caller, service))
            if active is None:
                return PASS
            decision = PASS
            for i, fault in enumerate(active.faults):
                if isinstance(fault, Script):
                    step = fault.step(active.script_positions[i], active.rng)
                    active.script_positions[i] += 1
                else:
                    step = fault.decide(active.rng)
                decision = decision.then(step)
            return decision

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """The active faults as JSON: keys are ``"payments"`` or ``"orders->payments"``."""
        with self._lock:
            return {
                (f"{caller}->{service}" if caller else service): [f.to_dict() for f in a.faults]
                for (caller, service), a in sorted(self._active.items(),
                                                   key=lambda kv: (kv[0][1], kv[0][0] or ""))
            }

    def describe(self) -> str:
        """One line per faulted target, with the fallacy each fault demonstrates."""
        with self._lock:
            items = sorted(self._active.items(), key=lambda kv: (kv[0][1], kv[0][0] or ""))
            lines = [
                f"{(caller + ' -> ') if caller else ''}{service}: "
                + "; ".join(f"{f.describe()} [{f.fallacy}]" for f in a.faults)
                for (caller, service), a in items
            ]
        return "\n".join(lines) or "no faults"
