"""The retry-storm lab: experiments in virtual time that show what retries do to load.

* ``occ_experiment``: Brooker's optimistic-concurrency experiment (*Exponential Backoff
  and Jitter*, AWS Architecture Blog, 2015). N clients each update one row once: read
  its version, write it back conditionally, and on a conflict back off and start over.
  Every message crosses a network hop of ~N(10 ms, 2 ms). It measures the calls (writes)
  made and the time until the last client is done, per backoff strategy.
* ``chain_amplification``: a chain of services, each calling the next through its own
  retry policy. When the bottom one is down, every try above multiplies: ``r**k`` tries
  reach it for each request. A retry budget per caller bounds that to about
  ``(1 + ratio)**k``; retrying at one layer only, to ``r``.
* ``retried_checkout``: the shop's gateway retries a checkout whose first answer was lost
  (a per-try timeout): without an idempotency key the order is placed, and paid, twice.

``Flaky`` is the dependency the demos and tests retry against: it fails a given number of
times, then works, and records when it was tried.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from faultline.clock import run_virtual
from faultline.faults import Latency, Script
from faultline.retry import JITTERS, RetryBudget, RetryPolicy, backoff_delay
from faultline.services import ROUTES
from faultline.sim import SimShop
from faultline.timeouts import with_timeout

__all__ = [
    "STRATEGIES",
    "ChainResult",
    "CheckoutOutcome",
    "Conflict",
    "Flaky",
    "OccPoint",
    "RetryImmediately",
    "amplification_series",
    "budgets",
    "chain_amplification",
    "occ_experiment",
    "occ_table",
    "occ_trial",
    "ranking",
    "retried_checkout",
    "sample_delays",
]


# --- a dependency that fails for a while ---------------------------------------------------

class Flaky:
    """An async callable that fails ``failures`` times (``math.inf``: always), then returns.

    Each failure raises a fresh ``error("failure n")`` (any exception class), after
    ``duration`` seconds of work. ``tries`` holds the loop time at which each try started
    and ``errors`` the exceptions raised. After ``limit`` tries it returns ``Flaky.RUNAWAY``
    instead, so a retry loop that never stops cannot hang a test.
    """

    RUNAWAY = "runaway: too many tries"

    def __init__(self, failures: float = 1, *, error: type[BaseException] = ConnectionError,
                 result: Any = "ok", duration: float = 0.0, limit: int = 10_000) -> None:
        if isinstance(failures, bool) or not isinstance(failures, int | float) or failures < 0:
            raise ValueError(f"failures must be a number >= 0 (math.inf: always), "
                             f"got {failures!r}")
        if not (isinstance(error, type) and issubclass(error, BaseException)):
            raise TypeError(f"error must be an exception class, got {error!r}")
        if not duration >= 0:
            raise ValueError(f"duration must be >= 0, got {duration!r}")
        self.failures = failures
        self.error = error
        self.result = result
        self.duration = duration
        self.limit = limit
        self.tries: list[float] = []
        self.errors: list[BaseException] = []

    @property
    def calls(self) -> int:
        """How many times it was tried."""
        return len(self.tries)

    async def __call__(self) -> Any:
        loop = asyncio.get_running_loop()
        self.tries.append(loop.time())
        if len(self.tries) > self.limit:
            return self.RUNAWAY
        if self.duration:
            await asyncio.sleep(self.duration)
        if len(self.errors) < self.failures:
            error = self.error(f"failure {len(self.errors) + 1}")
            self.errors.append(error)
            raise error
        return self.result

    def __repr__(self) -> str:
        return f"Flaky(failures={self.failures}, tries={len(self.tries)})"


def sample_delays(jitter: str, *, attempts: Iterable[int] = range(6), samples: int = 2000,
                  base: float = 0.1, cap: float = 10.0, rng: random.Random | None = None
                  ) -> dict[int, list[float]]:
    """The sleeps of ``samples`` independent retry sequences: ``{attempt: [delay, ...]}``.

    Attempt ``n`` (from 0) is the sleep after try ``n + 1`` failed. Each sequence chains
    ``previous`` as a retry policy does, so decorrelated jitter is sampled as it is used.
    """
    if jitter not in JITTERS:
        raise ValueError(f"jitter must be one of {', '.join(JITTERS)}; got {jitter!r}")
    wanted = sorted(set(attempts))
    if not wanted or wanted[0] < 0:
        raise ValueError(f"attempts must be ints >= 0, at least one; got {wanted!r}")
    rng = rng if rng is not None else random.Random()
    delays: dict[int, list[float]] = {n: [] for n in wanted}
    for _ in range(samples):
        previous = None
        for n in range(wanted[-1] + 1):
            previous = backoff_delay(n, base=base, cap=cap, jitter=jitter, rng=rng,
                                     previous=previous)
            if n in delays:
                delays[n].append(previous)
    return delays


# --- Brooker's optimistic-concurrency experiment ---------------------------------------------

class Conflict(Exception):
    """The row changed between our read and our conditional write: read again and retry."""


class RetryImmediately:
    """The "no backoff" strategy: retry ``retry_on`` failures at once, forever."""

    def __init__(self, retry_on: type[BaseException] = Conflict) -> None:
        self.retry_on = retry_on
        self.attempts = 0

    async def call(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        self.attempts = 0
        while True:
            self.attempts += 1
            try:
                return await fn()
            except Exception as error:
                if not isinstance(error, self.retry_on):
                    raise


class _Retrier(Protocol):
    async def call(self, fn: Callable[[], Awaitable[Any]]) -> Any: ...


# Strategy name -> jitter for backoff_delay (None: no backoff at all).
STRATEGIES: dict[str, str | None] = {
    "no backoff": None,
    "exponential": "none",
    "full jitter": "full",
    "equal jitter": "equal",
    "decorrelated jitter": "decorrelated",
}

# Enough tries that a client never gives up: the experiment runs until all have written.
_UNBOUNDED = 10**9


@dataclass(frozen=True)
class OccPoint:
    """One strategy at one number of clients, averaged over ``trials`` runs."""

    strategy: str
    clients: int
    calls: float  # conditional writes per run, the work the database does
    completion: float  # seconds until the last client has written, per run
    trials: int


async def occ_trial(clients: int, strategy: str, *, rng: random.Random, base: float = 0.005,
                    cap: float = 2.0, network: tuple[float, float] = (0.010, 0.002),
                    policy: Callable[..., _Retrier] = RetryPolicy) -> tuple[int, float]:
    """One run of the experiment in the running (virtual-time) loop: (calls, completion).

    Each try is a read and a conditional write, four network hops of
    ``abs(gauss(*network))`` seconds; the row is read and written when a request arrives.
    ``policy`` builds each client's retry policy: ``RetryPolicy`` or your own class with
    the same interface.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    if isinstance(clients, bool) or not isinstance(clients, int) or clients < 1:
        raise ValueError(f"clients must be an int >= 1, got {clients!r}")
    mean, sd = network
    loop = asyncio.get_running_loop()
    start = loop.time()
    version = 0
    calls = 0

    def hop() -> float:
        return abs(rng.gauss(mean, sd))

    async def update() -> None:
        nonlocal version, calls
        await asyncio.sleep(hop())  # the read travels to the database
        seen = version
        await asyncio.sleep(hop() + hop())  # its answer comes back, the write goes out
        calls += 1
        written = version == seen
        if written:
            version += 1
        await asyncio.sleep(hop())  # the write's answer comes back
        if not written:
            raise Conflict(f"version is {version}, not {seen}")

    jitter = STRATEGIES[strategy]
    retriers: list[_Retrier] = [
        RetryImmediately(Conflict) if jitter is None else
        policy(max_attempts=_UNBOUNDED, base=base, cap=cap, jitter=jitter, retry_on=Conflict,
               rng=rng)
        for _ in range(clients)
    ]
    await asyncio.gather(*(retrier.call(update) for retrier in retriers))
    return calls, loop.time() - start


def occ_experiment(
    clients: Iterable[int] = (1, 2, 5, 10, 25, 50, 75, 100),
    strategies: Iterable[str] = tuple(STRATEGIES),
    *,
    trials: int = 3,
    seed: int | str = 0,
    policy: Callable[..., _Retrier] = RetryPolicy,
    **options: Any,
) -> list[OccPoint]:
    """Run ``occ_trial`` ``trials`` times per strategy and number of clients, in virtual time.

    Seeded per (strategy, clients): the same seed gives the same points. ``options`` go to
    ``occ_trial`` (``base``, ``cap``, ``network``).
    """
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be an int >= 1, got {trials!r}")
    clients, strategies = list(clients), list(strategies)
    for name in strategies:
        if name not in STRATEGIES:
            raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {name!r}")

    async def main() -> list[OccPoint]:
        points = []
        for strategy in strategies:
            for n in clients:
                rng = random.Random(f"{seed}/occ/{strategy}/{n}")
                runs = [await occ_trial(n, strategy, rng=rng, policy=policy, **options)
                        for _ in range(trials)]
                points.append(OccPoint(strategy, n, sum(c for c, _ in runs) / trials,
                                       sum(t for _, t in runs) / trials, trials))
        return points

    return run_virtual(main)


def occ_table(points: Sequence[OccPoint], clients: Iterable[int] | None = None) -> str:
    """The points as a text table: calls and completion time per strategy and N."""
    wanted = sorted({p.clients for p in points} if clients is None else set(clients))
    strategies = list(dict.fromkeys(p.strategy for p in points))
    by_key = {(p.strategy, p.clients): p for p in points}
    width = max(len(s) for s in strategies)
    header = f"{'':{width}}  " + "  ".join(f"{'N=' + str(n):>16}" for n in wanted)
    lines = [header, f"{'':{width}}  " + "  ".join(f"{'calls   time':>16}" for _ in wanted)]
    for strategy in strategies:
        cells = []
        for n in wanted:
            p = by_key.get((strategy, n))
            cells.append(f"{p.calls:7.0f} {p.completion:7.2f}s" if p else f"{'-':>16}")
        lines.append(f"{strategy:{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def ranking(points: Sequence[OccPoint], clients: int, measure: str = "calls") -> list[str]:
    """Strategies at ``clients`` from best (fewest calls, or shortest completion) to worst."""
    if measure not in ("calls", "completion"):
        raise ValueError(f"measure must be 'calls' or 'completion', got {measure!r}")
    chosen = [p for p in points if p.clients == clients]
    if not chosen:
        raise ValueError(f"no points for clients={clients!r}")
    return [p.strategy for p in sorted(chosen, key=lambda p: getattr(p, measure))]


# --- load amplification through a chain of services ------------------------------------------

@dataclass(frozen=True)
class ChainResult:
    """What the bottom of the chain saw for ``requests`` user requests."""

    layers: int  # services that call the next one (the bottom one is not counted)
    attempts: int  # tries each retrying layer allows
    requests: int
    bottom_tries: int  # tries that reached the bottom service
    successes: int  # user requests that succeeded
    retry_layers: tuple[int, ...]  # which layers retried (0 is the top)
    budget: bool

    @property
    def amplification(self) -> float:
        """Tries on the bottom service per user request: its load is multiplied by this."""
        return self.bottom_tries / self.requests

    @property
    def success_rate(self) -> float:
        return self.successes / self.requests


async def _chain(layers: int, attempts: int, requests: int, *, failure_rate: float,
                 budget: Callable[[], Any] | None, retry_layers: tuple[int, ...],
                 rng: random.Random, policy: Callable[..., Any]) -> ChainResult:
    bottom_tries = 0

    async def bottom() -> str:
        nonlocal bottom_tries
        bottom_tries += 1
        if failure_rate >= 1 or rng.random() < failure_rate:
            raise ConnectionError("the bottom service is down")
        return "ok"

    call: Callable[[], Awaitable[Any]] = bottom
    for layer in reversed(range(layers)):  # build from the bottom up
        tries = attempts if layer in retry_layers else 1
        retrier = policy(max_attempts=tries, base=0.001, cap=0.1, jitter="full",
                         retry_on=ConnectionError, rng=rng,
                         budget=budget() if budget is not None and tries > 1 else None)
        call = _through(retrier, call)
    successes = 0
    for _ in range(requests):
        try:
            await call()
            successes += 1
        except ConnectionError:
            pass
    return ChainResult(layers, attempts, requests, bottom_tries, successes, retry_layers,
                       budget is not None)


def _through(retrier: Any, inner: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
    async def call() -> Any:
        return await retrier.call(inner)

    return call


def chain_amplification(
    layers: int,
    attempts: int = 3,
    *,
    requests: int = 1000,
    failure_rate: float = 1.0,
    budget: Callable[[], Any] | None = None,
    retry_layers: Iterable[int] | None = None,
    seed: int | str = 0,
    policy: Callable[..., Any] = RetryPolicy,
) -> ChainResult:
    """Send ``requests`` one after another down a chain of ``layers`` retrying services.

    Each layer calls the next through its own ``policy(max_attempts=attempts, ...)``; the
    bottom service fails each try with probability ``failure_rate`` (1.0: it is down).
    ``budget`` makes one budget per retrying layer (e.g. ``RetryBudget``, or a lambda
    building one); ``retry_layers`` picks which layers retry (default: all; 0 is the top).
    Runs in virtual time; the same seed gives the same result.
    """
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise ValueError(f"layers must be an int >= 1, got {layers!r}")
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ValueError(f"attempts must be an int >= 1, got {attempts!r}")
    if isinstance(requests, bool) or not isinstance(requests, int) or requests < 1:
        raise ValueError(f"requests must be an int >= 1, got {requests!r}")
    if not 0 <= failure_rate <= 1:
        raise ValueError(f"failure_rate must be in [0, 1], got {failure_rate!r}")
    chosen = tuple(range(layers)) if retry_layers is None else tuple(sorted(set(retry_layers)))
    if any(not 0 <= layer < layers for layer in chosen):
        raise ValueError(f"retry_layers must be between 0 and {layers - 1}, got {chosen!r}")
    rng = random.Random(f"{seed}/chain")
    return run_virtual(_chain(layers, attempts, requests, failure_rate=failure_rate,
                              budget=budget, retry_layers=chosen, rng=rng, policy=policy))


def amplification_series(
    layers: Iterable[int] = (1, 2, 3, 4),
    attempts: int = 3,
    *,
    requests: int = 1000,
    budget: Callable[[], Any] = RetryBudget,
    seed: int | str = 0,
    policy: Callable[..., Any] = RetryPolicy,
) -> dict[str, dict[int, float]]:
    """Amplification on a dead bottom service per chain length, three ways, for a bar chart.

    ``{"every layer": {k: ...}, "every layer, with budgets": {...}, "top layer only": {...}}``.
    Without a budget every try fails the same way, so the count per request does not depend
    on how many are sent: those two series send ``min(requests, 100)``.
    """
    every = f"{attempts} tries at every layer"
    series: dict[str, dict[int, float]] = {every: {}, f"{every}, budget per caller": {},
                                           f"{attempts} tries at the top layer only": {}}
    few = min(requests, 100)
    for k in layers:
        runs = (chain_amplification(k, attempts, requests=few, seed=seed, policy=policy),
                chain_amplification(k, attempts, requests=requests, seed=seed, policy=policy,
                                    budget=budget),
                chain_amplification(k, attempts, requests=few, seed=seed, policy=policy,
                                    retry_layers=[0]))
        for label, run in zip(series, runs, strict=True):
            series[label][k] = run.amplification
    return series


# --- a retried checkout in the shop: idempotency -----------------------------------------------

@dataclass(frozen=True)
class CheckoutOutcome:
    """One user checkout that the gateway retried: what the user saw, what the shop did."""

    status: int  # the answer the user got
    tries: int  # POST /orders sent by the gateway
    orders: int  # orders the order service placed
    charges: int  # payments taken
    replayed: bool  # the answer was a replay of an earlier order (idempotency key)
    order_ids: tuple[int, ...] = field(default=())


def retried_checkout(
    idempotency_key: str | None = None,
    *,
    seed: int = 0,
    slow_first: float = 0.25,
    per_try_timeout: float = 0.1,
    policy: Any = None,
) -> CheckoutOutcome:
    """One checkout through a gateway that retries orders with a per-try timeout.

    The first ``POST /orders`` is slowed by ``slow_first`` seconds, more than the gateway's
    ``per_try_timeout``: the gateway gives up on it and retries, but orders keeps working
    (a server does not stop when its caller does) and places the order. Without an
    ``Idempotency-Key`` the retry places a second order and charges again.
    """
    policy = policy if policy is not None else RetryPolicy(
        max_attempts=3, base=0.2, jitter="none", retry_on=(TimeoutError, ConnectionError))

    async def main() -> CheckoutOutcome:
        shop = SimShop(seed=seed)
        shop.faults.inject("orders", Script((Latency(slow_first),)))
        shop.client("gateway").use(
            "orders",
            lambda send, request: policy.call(lambda: with_timeout(send(request),
                                                                   per_try_timeout)))
        method, path, body = ROUTES["checkout"]
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        answer = await shop.request(method, path, json=body, headers=headers)
        await asyncio.sleep(max(1.0, slow_first * 2))  # let abandoned work finish
        placed = shop.service("orders").state.get("orders", {})
        charges = shop.service("payments").state.get("charges", [])
        return CheckoutOutcome(
            status=answer.status, tries=shop.client("gateway").sent.get("orders", 0),
            orders=len(placed), charges=len(charges),  # type: ignore[arg-type]
            replayed=bool(isinstance(answer.json, dict) and answer.json.get("replayed")),
            order_ids=tuple(sorted(o["order_id"] for o in placed.values())))  # type: ignore[union-attr]

    return run_virtual(main)


def budgets(ratio: float = 0.2, min_tokens: float = 10, max_tokens: float = 100
            ) -> Callable[[], RetryBudget]:
    """A factory of fresh ``RetryBudget``s (one per caller), for ``chain_amplification``."""
    RetryBudget(ratio, min_tokens, max_tokens)  # check the arguments now

    def make() -> RetryBudget:
        return RetryBudget(ratio, min_tokens, max_tokens)

    return make

