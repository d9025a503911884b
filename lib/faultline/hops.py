"""Per-hop timeouts and retries that fit an end-to-end deadline, and the bug when they don't.

A *hop* is one caller → callee edge with a per-try timeout, a number of attempts and a
fixed backoff sleep between tries. The longest it can keep its caller waiting is

    worst_case = attempts × timeout + (attempts − 1) × backoff

A *plan* gives every hop of a call chain (gateway → orders → payments) its hop. It fits
when each caller waits, per try, at least as long as everything its callee may take plus
a margin for the callee's own work and the network, and the outermost hop (plus the
margin) fits the user's deadline. Istio's Bookinfo sample broke the first rule on purpose:
productpage gave reviews 3 s a try for 2 tries, reviews gave ratings 10 s, so a 7 s delay
on ratings, which reviews would have survived, failed the page (Istio docs, "Fault
Injection"). ``check_plan`` is the pure check; ``apply_plan`` installs a plan on a shop's
clients (each try carries ``X-Attempt``, as Envoy's ``x-envoy-attempt-count``);
``simulate_plan`` runs one user request through it in virtual time and logs every try of
every hop; ``first_try_hangs`` is a fault that only a retry at the right hop gets past.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from faultline.client import Send, Wrapper
from faultline.clock import run_virtual
from faultline.errors import DeadlineExceeded, UpstreamError
from faultline.load import Record, send_and_record
from faultline.messages import Request, Response
from faultline.services import Shop
from faultline.sim import SimShop
from faultline.timeouts import with_timeout

__all__ = [
    "ATTEMPT_HEADER",
    "CHECKOUT_CHAIN",
    "TOLERANCE",
    "Attempt",
    "Hop",
    "PlanRun",
    "apply_plan",
    "check_plan",
    "describe_plan",
    "first_try_hangs",
    "hop_names",
    "hop_wrapper",
    "parse_plan",
    "simulate_plan",
    "worst_case",
]

CHECKOUT_CHAIN = ("gateway", "orders", "payments")
ATTEMPT_HEADER = "X-Attempt"  # which try of its call a request is: 1, 2, ...
# Plans are compared to the microsecond, so 0.3 × 3 + 0.1 ≥ 1.0 holds however floats round.
TOLERANCE = 1e-6

PlanLike = Mapping[str, Any]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def worst_case(timeout: float, attempts: int, backoff: float = 0.0) -> float:
    """The longest a hop can take: ``attempts × timeout + (attempts − 1) × backoff``."""
    return Hop(timeout, attempts, backoff).worst_case


@dataclass(frozen=True)
class Hop:
    """One caller → callee edge: ``attempts`` tries of at most ``timeout`` s, ``backoff`` apart."""

    timeout: float
    attempts: int = 1
    backoff: float = 0.0

    def __post_init__(self) -> None:
        if not _is_number(self.timeout):
            raise TypeError(f"timeout must be a number of seconds, got {self.timeout!r}")
        if not 0 < self.timeout < math.inf:
            raise ValueError(f"timeout must be a finite number of seconds > 0, got "
                             f"{self.timeout!r}")
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise TypeError(f"attempts must be an int, got {self.attempts!r}")
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts!r}")
        if not _is_number(self.backoff):
            raise TypeError(f"backoff must be a number of seconds, got {self.backoff!r}")
        if not 0 <= self.backoff < math.inf:
            raise ValueError(f"backoff must be a finite number of seconds >= 0, got "
                             f"{self.backoff!r}")

    @property
    def worst_case(self) -> float:
        """The longest this hop can keep its caller waiting, every try timing out."""
        return self.attempts * self.timeout + (self.attempts - 1) * self.backoff


def hop_names(chain: Sequence[str]) -> list[str]:
    """The hops of a call chain: ``("gateway", "orders", "payments")`` →
    ``["gateway->orders", "orders->payments"]``."""
    if len(chain) < 2:
        raise ValueError(f"chain must name at least two services, got {tuple(chain)!r}")
    return [f"{a}->{b}" for a, b in itertools.pairwise(chain)]


def _hop(name: str, value: object, backoff: float) -> Hop:
    if isinstance(value, Hop):
        return value
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise TypeError(f"{name} must be a pair (timeout, attempts), got {value!r}")
    timeout, attempts = value
    try:
        return Hop(timeout, attempts, backoff)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{name}: {exc}") from None


def parse_plan(plan: PlanLike, chain: Sequence[str] = CHECKOUT_CHAIN, *,
               backoff: float = 0.0) -> dict[str, Hop]:
    """The plan's hops in chain order, outermost first; a pair gets the common ``backoff``.

    A missing or unknown hop is a ``ValueError``, a value that is not a ``(timeout,
    attempts)`` pair (or a ``Hop``) a ``TypeError``; each message names the hop.
    """
    if not isinstance(plan, Mapping):
        raise TypeError(f"plan must be a dict of hops, got {type(plan).__name__}")
    names = hop_names(chain)
    missing = [n for n in names if n not in plan]
    unknown = sorted(str(k) for k in plan if k not in names)
    if missing or unknown:
        raise ValueError(f"plan must have exactly the hops {names}; missing {missing}, "
                         f"unknown {unknown}")
    return {name: _hop(name, plan[name], backoff) for name in names}


def check_plan(
    plan: PlanLike,
    *,
    deadline: float,
    chain: Sequence[str] = CHECKOUT_CHAIN,
    margin: float = 0.0,
    backoff: float = 0.0,
    min_timeout: float = 0.0,
) -> list[str]:
    """Every way ``plan`` breaks the rules, in plain words; an empty list means it fits.

    Rules: each hop is ``(timeout, attempts)`` with ``timeout ≥ min_timeout``; each
    caller's per-try timeout ≥ its callee hop's worst case + ``margin`` (Bookinfo broke
    this one); the first hop's worst case + ``margin`` ≤ ``deadline``. Compared to the
    microsecond (``TOLERANCE``).
    """
    for name, value in (("deadline", deadline), ("margin", margin), ("backoff", backoff),
                        ("min_timeout", min_timeout)):
        if not _is_number(value):
            raise TypeError(f"{name} must be a number of seconds, got {value!r}")
        if not 0 <= value < math.inf or (name == "deadline" and value == 0):
            raise ValueError(f"{name} must be a finite number of seconds "
                             f"{'> 0' if name == 'deadline' else '>= 0'}, got {value!r}")
    try:
        hops = parse_plan(plan, chain, backoff=backoff)
    except (TypeError, ValueError) as exc:
        return [str(exc)]
    problems = []
    for name, hop in hops.items():
        if hop.timeout < min_timeout - TOLERANCE:
            problems.append(f"{name}: a per-try timeout of {hop.timeout:g} s is below "
                            f"{min_timeout:g} s, so healthy calls would time out")
    ordered = list(hops.items())
    for (outer, caller), (inner, callee) in itertools.pairwise(ordered):
        needed = callee.worst_case + margin
        if caller.timeout < needed - TOLERANCE:
            problems.append(
                f"{outer} gives up on a try after {caller.timeout:g} s, but {inner} may take "
                f"{callee.worst_case:g} s ({callee.attempts} × {callee.timeout:g} s + "
                f"{callee.attempts - 1} × {callee.backoff:g} s backoff) plus a "
                f"{margin:g} s margin = {needed:g} s")
    first_name, first = ordered[0]
    if first.worst_case + margin > deadline + TOLERANCE:
        problems.append(
            f"{first_name} may take {first.worst_case:g} s, plus a {margin:g} s margin is "
            f"{first.worst_case + margin:g} s: more than the {deadline:g} s deadline")
    return problems


def describe_plan(plan: PlanLike, chain: Sequence[str] = CHECKOUT_CHAIN, *,
                  backoff: float = 0.0) -> str:
    """A small table: each hop's per-try timeout, attempts and worst case."""
    hops = parse_plan(plan, chain, backoff=backoff)
    width = max(len(name) for name in hops)
    lines = [f"{'hop':{width}}  per try  attempts  backoff  worst case"]
    for name, hop in hops.items():
        lines.append(f"{name:{width}}  {hop.timeout:5.3g} s  {hop.attempts:8d}  "
                     f"{hop.backoff:5.3g} s  {hop.worst_case:8.3g} s")
    return "\n".join(lines)


@dataclass(frozen=True)
class Attempt:
    """One try on one hop: when it started and ended, and how (``ok``, ``timeout``, ...)."""

    hop: str
    call: int  # the n-th call through this hop (from 1): one per request of the caller
    number: int  # the try within that call (from 1)
    start: float
    end: float
    outcome: str

    @property
    def duration(self) -> float:
        return self.end - self.start


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, DeadlineExceeded):
        return False  # the caller's deadline passed: nobody is waiting for another try
    if isinstance(exc, UpstreamError):
        return exc.retryable
    return isinstance(exc, TimeoutError | ConnectionError)


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, DeadlineExceeded):
        return "deadline"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, UpstreamError):
        return f"error {exc.status}"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return type(exc).__name__


def hop_wrapper(hop: Hop, *, name: str = "", log: list[Attempt] | None = None) -> Wrapper:
    """A client wrapper that makes up to ``hop.attempts`` tries of ``hop.timeout`` each.

    Timeouts, connection errors and 502/503/504 are retried after ``hop.backoff``; other
    errors, and a passed deadline, are raised at once. A timed-out try is cancelled on the
    caller's side (``with_timeout``); whatever the callee was doing goes on. Each try
    carries ``X-Attempt: n`` and is appended to ``log`` as an ``Attempt`` (loop times).
    """
    if not isinstance(hop, Hop):
        raise TypeError(f"hop must be a Hop, got {hop!r}")

    calls = itertools.count(1)

    async def wrapper(send: Send, request: Request) -> Response:
        loop = asyncio.get_running_loop()
        call = next(calls)
        for number in range(1, hop.attempts + 1):
            start = loop.time()
            outcome = "cancelled"
            tagged = dataclasses.replace(
                request, headers={**request.headers, ATTEMPT_HEADER: str(number)})
            try:
                response = await with_timeout(send(tagged), hop.timeout)
                outcome = "ok" if response.status < 500 else f"status {response.status}"
                return response
            except Exception as exc:
                outcome = _outcome(exc)
                if number == hop.attempts or not _retryable(exc):
                    raise
            finally:
                if log is not None:
                    log.append(Attempt(name, call, number, start, loop.time(), outcome))
            if hop.backoff:
                await asyncio.sleep(hop.backoff)
        raise AssertionError("unreachable")  # pragma: no cover

    return wrapper


def apply_plan(shop: Shop, plan: PlanLike, chain: Sequence[str] = CHECKOUT_CHAIN, *,
               backoff: float = 0.0, log: list[Attempt] | None = None) -> dict[str, Hop]:
    """Install ``plan`` on ``shop``: each caller's client wraps its calls to the callee."""
    hops = parse_plan(plan, chain, backoff=backoff)
    for name, hop in hops.items():
        caller, callee = name.split("->")
        shop.client(caller).use(callee, hop_wrapper(hop, name=name, log=log))
    return hops


def first_try_hangs(service: str = "payments") -> Callable[[Shop], None]:
    """A ``setup`` for ``simulate_plan``: the first try of every call to ``service`` hangs.

    Think of two replicas behind a load balancer, one of them stuck: every request tries
    the stuck one first and a retry (``X-Attempt`` ≥ 2) is sent to the healthy one, as
    Envoy's ``previous_hosts`` retry predicate does. Retrying the caller does not help
    (its new call tries the stuck replica first again); only a retry at this hop does.
    """

    def setup(shop: Shop) -> None:
        target = shop.service(service)
        original = target.handle

        async def handle(request: Request) -> Response:
            if request.header(ATTEMPT_HEADER, "1") == "1":
                target.received += 1
                await asyncio.get_running_loop().create_future()  # never answers
            return await original(request)

        target.handle = handle  # type: ignore[method-assign]

    return setup


@dataclass(frozen=True)
class PlanRun:
    """One user request through a plan: what the user saw, and every try behind it."""

    record: Record
    attempts: tuple[Attempt, ...]
    deadline: float
    received: dict[str, int]  # requests each service of the chain took in, in the end
    charges: int  # payments made, including those for users who had already given up

    @property
    def ok(self) -> bool:
        """The user got a successful answer within the deadline."""
        return self.record.ok and self.record.end <= self.deadline + TOLERANCE

    def attempts_on(self, hop: str) -> list[Attempt]:
        return [a for a in self.attempts if a.hop == hop]

    def __str__(self) -> str:
        r = self.record
        answer = f"HTTP {r.status}" if r.status is not None else f"no answer ({r.error})"
        lines = [f"user: {answer} after {r.latency:.3f} s (deadline {self.deadline:g} s) -> "
                 f"{'OK' if self.ok else 'FAILED'}"]
        for a in self.attempts:
            lines.append(f"  {a.start:6.3f}-{a.end:6.3f} s  {a.hop:18} call {a.call} try "
                         f"{a.number}: {a.outcome}")
        lines.append(f"  payments charged {self.charges} time(s)")
        return "\n".join(lines)


def simulate_plan(
    plan: PlanLike,
    *,
    deadline: float,
    backoff: float = 0.0,
    setup: Callable[[Shop], Any] | None = None,
    chain: Sequence[str] = CHECKOUT_CHAIN,
    route: str = "checkout",
    propagate: bool = False,
    seed: int = 0,
    settle: float = 5.0,
) -> PlanRun:
    """Send one ``route`` request through ``plan`` on a fresh ``SimShop`` in virtual time.

    ``setup(shop)`` injects faults first. The user waits ``deadline`` seconds (and sends it
    as ``X-Deadline-Ms`` when ``propagate``); afterwards the shop runs on for ``settle``
    seconds, so work finished for nobody is counted too.
    """
    if not deadline > 0:
        raise ValueError(f"deadline must be > 0 seconds, got {deadline!r}")
    hops = parse_plan(plan, chain, backoff=backoff)

    async def main() -> PlanRun:
        loop = asyncio.get_running_loop()
        shop = SimShop(seed=seed)
        log: list[Attempt] = []
        apply_plan(shop, hops, chain, log=log)
        if setup is not None:
            setup(shop)
        origin = loop.time()
        send = shop.route(route, deadline=deadline if propagate else None)
        record = await send_and_record(send, origin=origin, timeout=deadline, route=route)
        await asyncio.sleep(settle)
        attempts = sorted(
            (Attempt(a.hop, a.call, a.number, a.start - origin, a.end - origin, a.outcome)
             for a in log), key=lambda a: (a.start, a.hop))
        charges = shop.service("payments").state.get("charges", [])
        return PlanRun(record, tuple(attempts), float(deadline),
                       {name: shop.service(name).received for name in chain},
                       len(charges))  # type: ignore[arg-type]

    return run_virtual(main)
