"""Our sidecar and a real Envoy, side by side: one policy, one fault scenario, two sets of counters.

``compare_proxies(policy)`` puts each proxy in turn in front of the shop's inventory
service, sends the same traffic through it (GETs and POSTs while 30 % of requests fail
with 503, then a phase where the service hangs) and returns one row per behaviour: our
sidecar's metric beside the Envoy stat that counts the same thing, and what the service
itself saw. ``retry_multiplication`` measures what happens when an application that
retries calls through a proxy that retries too; ``overload_burst`` what each proxy does
with more requests than it lets in flight; ``envoy_fault_injection`` Envoy's own faults.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from faultline.envoy import EnvoyProxy
from faultline.errors import UpstreamError
from faultline.faults import ErrorRate, Fault, Hang, Latency, Script
from faultline.live import LiveShop
from faultline.messages import Request, Response
from faultline.policy import SidecarPolicy
from faultline.retry import RetryPolicy
from faultline.sidecar import ATTEMPT_COUNT_HEADER, start_sidecar

__all__ = [
    "PROXIES",
    "SCENARIO_POLICY",
    "Burst",
    "Comparison",
    "InjectedFaults",
    "ProxyRun",
    "Row",
    "Scenario",
    "TourStep",
    "compare_proxies",
    "envoy_fault_injection",
    "fault_tour",
    "overload_burst",
    "retry_multiplication",
    "running_proxy",
]

PROXIES = ("sidecar", "envoy")
SERVICE = "inventory"
ENVOY_ATTEMPT_HEADER = "x-envoy-attempt-count"
ROUTES = {"GET": "/products", "POST": "/reserve"}

#: The policy of the comparison: quick to show a timeout and an open breaker.
SCENARIO_POLICY = SidecarPolicy(timeout=0.5, max_retries=2, backoff_base=0.01, backoff_cap=0.05,
                                breaker_consecutive_failures=10, breaker_open_seconds=1.0)


@dataclass(frozen=True)
class Scenario:
    """The traffic: ``gets`` + ``posts`` (shuffled) while ``error_rate`` of requests get 503,
    then ``hang_requests`` GETs while the service hangs; ``concurrency`` requests at once."""

    gets: int = 200
    posts: int = 50
    error_rate: float = 0.3
    hang_requests: int = 20
    concurrency: int = 10
    hang_concurrency: int = 5
    seed: int = 7

    def __post_init__(self) -> None:
        for name in ("gets", "posts", "hang_requests"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        for name in ("concurrency", "hang_concurrency"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not 0 <= self.error_rate <= 1:
            raise ValueError(f"error_rate must be in [0, 1], got {self.error_rate!r}")


@dataclass(frozen=True)
class Row:
    """One behaviour counted by both proxies: our metric and Envoy's stat, with their values."""

    what: str
    sidecar_metric: str
    sidecar: int
    envoy_stat: str
    envoy: int


@dataclass
class ProxyRun:
    """What one proxy did in the scenario, as counted by the caller and by the service."""

    proxy: str
    statuses: Counter[int] = field(default_factory=Counter)  # what the caller was answered
    upstream: Counter[str] = field(default_factory=Counter)  # requests the service got, by method
    max_attempt: Counter[str] = field(default_factory=Counter)  # highest attempt number seen
    counters: dict[str, int] = field(default_factory=dict)  # the proxy's own counters


@dataclass
class Comparison:
    """The rows of ``compare_proxies`` and the two runs they were read from."""

    policy: SidecarPolicy
    scenario: Scenario
    rows: list[Row]
    runs: dict[str, ProxyRun]

    def row(self, what: str) -> Row:
        for row in self.rows:
            if row.what == what:
                return row
        raise KeyError(f"no row {what!r}; rows are {[r.what for r in self.rows]}")

    def counts(self, *whats: str) -> dict[str, dict[str, int]]:
        """``{what: {"our sidecar": n, "Envoy": n}}`` for the rows named (all rows if none)."""
        rows = [self.row(w) for w in whats] if whats else self.rows
        return {r.what: {"our sidecar": r.sidecar, "Envoy": r.envoy} for r in rows}

    def markdown(self) -> str:
        """The rows as a markdown table."""
        lines = ["| what | sidecar metric | sidecar | Envoy stat | Envoy |",
                 "|---|---|---:|---|---:|"]
        lines += [f"| {r.what} | `{r.sidecar_metric}` | {r.sidecar} | `{r.envoy_stat}` | "
                  f"{r.envoy} |" for r in self.rows]
        return "\n".join(lines)


class _Running:
    """A started proxy: its URL and a way to read its counters."""

    def __init__(self, url: str, counters: Callable[[], Awaitable[dict[str, int]]]) -> None:
        self.url = url
        self.counters = counters


def _flatten(metrics: Mapping[str, Any]) -> dict[str, int]:
    out = {k: int(v) for k, v in metrics.items() if k != "responses"}
    responses = metrics.get("responses", {})
    out.update({f"responses[{status}]": n for status, n in responses.items()})
    out["responses[5xx]"] = sum(n for s, n in responses.items() if 500 <= s < 600)
    out["responses[2xx]"] = sum(n for s, n in responses.items() if 200 <= s < 300)
    return out


@asynccontextmanager
async def running_proxy(proxy: str, upstream_url: str, policy: SidecarPolicy, *,
                        seed: int = 0) -> AsyncIterator[_Running]:
    """Our sidecar (``"sidecar"``) or Envoy (``"envoy"``) in front of ``upstream_url``."""
    if proxy == "sidecar":
        sidecar = await start_sidecar(upstream_url, policy, rng=random.Random(seed))

        async def metrics() -> dict[str, int]:
            return _flatten(sidecar.metrics.as_dict())

        try:
            yield _Running(sidecar.url, metrics)
        finally:
            await sidecar.stop()
    elif proxy == "envoy":
        async with EnvoyProxy(policy, upstream_url) as envoy:
            yield _Running(envoy.url, envoy.stats)
    else:
        raise ValueError(f"proxy must be one of {PROXIES}, got {proxy!r}")


def _recorder(run: ProxyRun) -> Callable[..., Awaitable[Response]]:
    """A service middleware counting requests per method and the attempt number on each."""

    async def record(request: Request, call_next: Callable[[Request], Awaitable[Response]]
                     ) -> Response:
        method = request.method.upper()
        run.upstream[method] += 1
        attempt = request.header(ATTEMPT_COUNT_HEADER) or request.header(ENVOY_ATTEMPT_HEADER)
        if attempt is not None and attempt.isdigit():
            run.max_attempt[method] = max(run.max_attempt[method], int(attempt))
        return await call_next(request)

    return record


async def _send_all(session: aiohttp.ClientSession, url: str, methods: list[str],
                    concurrency: int, statuses: Counter[int]) -> None:
    queue = list(reversed(methods))

    async def worker() -> None:
        while queue:
            method = queue.pop()
            body = {"quantity": 1} if method == "POST" else None
            async with session.request(method, url + ROUTES[method], json=body) as answer:
                await answer.read()
                statuses[answer.status] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _run_one(proxy: str, shop: LiveShop, policy: SidecarPolicy, scenario: Scenario
                   ) -> ProxyRun:
    run = ProxyRun(proxy)
    service = shop.service(SERVICE)
    methods = ["GET"] * scenario.gets + ["POST"] * scenario.posts
    random.Random(scenario.seed).shuffle(methods)
    recorder = _recorder(run)
    service.middlewares.append(recorder)
    timeout = aiohttp.ClientTimeout(total=policy.timeout + 5)
    try:
        async with running_proxy(proxy, shop.url(SERVICE), policy, seed=scenario.seed) as running, \
                aiohttp.ClientSession(timeout=timeout) as session:
            # Re-injecting restarts the fault's random stream: both proxies meet the same one.
            shop.faults.inject(SERVICE, ErrorRate(scenario.error_rate, 503))
            await _send_all(session, running.url, methods, scenario.concurrency, run.statuses)
            shop.faults.inject(SERVICE, Hang())
            await _send_all(session, running.url, ["GET"] * scenario.hang_requests,
                            scenario.hang_concurrency, run.statuses)
            run.counters = await running.counters()
    finally:
        shop.faults.clear(SERVICE)
        service.middlewares.remove(recorder)
    return run


# (what, sidecar metric, Envoy stat): the pairs that count the same behaviour.
PAIRS = (
    ("requests received", "requests", "http.sidecar.downstream_rq_total"),
    ("tries sent upstream", "attempts", "cluster.upstream.upstream_rq_total"),
    ("retries", "retries", "cluster.upstream.upstream_rq_retry"),
    ("retries refused by the budget", "retries_budget_exhausted",
     "cluster.upstream.upstream_rq_retry_overflow"),
    ("timeouts answered 504", "timeouts", "cluster.upstream.upstream_rq_timeout"),
    ("refused: breaker open / host ejected", "breaker_rejections",
     "cluster.upstream.upstream_cx_none_healthy"),
    ("refused: too many in flight", "overflow", "cluster.upstream.upstream_rq_pending_overflow"),
    ("answered 2xx", "responses[2xx]", "http.sidecar.downstream_rq_2xx"),
    ("answered 5xx", "responses[5xx]", "http.sidecar.downstream_rq_5xx"),
)


def _rows(runs: Mapping[str, ProxyRun]) -> list[Row]:
    side, envoy = runs["sidecar"], runs["envoy"]
    rows = [Row(what, metric, side.counters.get(metric, 0), stat, envoy.counters.get(stat, 0))
            for what, metric, stat in PAIRS]
    service = "inventory.received (counted by the service)"
    for method in ("GET", "POST"):
        rows.append(Row(f"{method} tries the service got", service + f" [{method}]",
                        side.upstream[method], service + f" [{method}]", envoy.upstream[method]))
    rows.append(Row("highest attempt number on a POST", ATTEMPT_COUNT_HEADER,
                    side.max_attempt["POST"], ENVOY_ATTEMPT_HEADER, envoy.max_attempt["POST"]))
    rows.append(Row("highest attempt number on a GET", ATTEMPT_COUNT_HEADER,
                    side.max_attempt["GET"], ENVOY_ATTEMPT_HEADER, envoy.max_attempt["GET"]))
    return rows


async def compare_proxies(policy: SidecarPolicy = SCENARIO_POLICY,
                          scenario: Scenario | None = None, *,
                          shop: LiveShop | None = None) -> Comparison:
    """Run ``scenario`` through our sidecar, then through Envoy, in front of the same service.

    Uses ``shop``'s inventory (faults on it are replaced, then cleared), or a shop of its own.
    """
    scenario = scenario if scenario is not None else Scenario()
    own = shop is None
    shop = shop if shop is not None else await LiveShop(seed=scenario.seed).start()
    try:
        runs = {proxy: await _run_one(proxy, shop, policy, scenario) for proxy in PROXIES}
    finally:
        if own:
            await shop.stop()
    return Comparison(policy, scenario, _rows(runs), runs)


@dataclass(frozen=True)
class RetryMultiplication:
    """An app retrying ``app_attempts`` times through a proxy retrying ``mesh_retries``."""

    proxy: str
    app_attempts: int
    mesh_retries: int
    upstream_hits: int  # requests the failing service received for one app call

    @property
    def expected(self) -> int:
        return self.app_attempts * (self.mesh_retries + 1)


async def retry_multiplication(proxy: str, *, app_attempts: int = 3, mesh_retries: int = 2,
                               shop: LiveShop | None = None,
                               fault: Fault | None = None) -> RetryMultiplication:
    """One call from an app that retries (``RetryPolicy``) through a retrying proxy to a
    service that always fails (503): count what the service received."""
    policy = SidecarPolicy(timeout=5.0, max_retries=mesh_retries, backoff_base=0.005,
                           backoff_cap=0.02, retry_budget_ratio=None,
                           breaker_consecutive_failures=None)
    app_retry = RetryPolicy(max_attempts=app_attempts, base=0.005, cap=0.02,
                            retry_on=UpstreamError, rng=random.Random(1))
    own = shop is None
    shop = shop if shop is not None else await LiveShop(seed=1).start()
    service = shop.service(SERVICE)
    try:
        shop.faults.inject(SERVICE, fault if fault is not None else ErrorRate(1.0, 503))
        async with running_proxy(proxy, shop.url(SERVICE), policy) as running, \
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:

            async def call() -> int:
                async with session.get(running.url + ROUTES["GET"]) as answer:
                    await answer.read()
                    if answer.status >= 500:
                        raise UpstreamError(answer.status, SERVICE)
                    return answer.status

            before = service.received
            with suppress(UpstreamError):  # it fails in the end: we count the hits
                await app_retry.call(call)
            hits = service.received - before
    finally:
        shop.faults.clear(SERVICE)
        if own:
            await shop.stop()
    return RetryMultiplication(proxy, app_attempts, mesh_retries, hits)


@dataclass(frozen=True)
class TourStep:
    """One experiment of ``fault_tour``: the fault, the requests, what came back."""

    fault: str
    request: str
    statuses: tuple[int, ...]  # what the caller got, one per request
    tries: tuple[int, ...]  # requests the service received for each of them
    seconds: float  # the slowest request's time
    body: str  # the last answer's body, shortened

    def summary(self) -> str:
        """E.g. ``"200 after 3 tries"`` or ``"503 ×5 after 3 tries each, then 503 ×5, 0 tries"``."""
        groups: list[tuple[int, int, int]] = []  # (status, tries, count)
        for status, tries in zip(self.statuses, self.tries, strict=True):
            if groups and groups[-1][:2] == (status, tries):
                groups[-1] = (status, tries, groups[-1][2] + 1)
            else:
                groups.append((status, tries, 1))
        parts = []
        for status, tries, count in groups:
            times = f" ×{count}" if count > 1 else ""
            each = " each" if count > 1 else ""
            parts.append(f"{status}{times} after {tries} tr{'y' if tries == 1 else 'ies'}{each}")
        return ", then ".join(parts)


async def fault_tour(url: str, shop: LiveShop, *, breaker_requests: int = 8
                     ) -> list[TourStep]:
    """The lesson's four faults on the inventory service, each called through ``url``.

    A GET meeting 503, 503, 200; a POST meeting 503, 200; a GET to a hung service; then
    ``breaker_requests`` GETs to a service that always answers 503 (after one healthy call,
    so earlier failures don't count towards the breaker).
    """
    service = shop.service(SERVICE)
    steps: list[TourStep] = []
    plan: list[tuple[str, Fault, str, int]] = [
        ("503, 503, then 200", Script((503, 503, 200)), "GET", 1),
        ("503, then 200", Script((503, 200)), "POST", 1),
        ("hangs", Hang(), "GET", 1),
        ("always 503", ErrorRate(1.0, 503), "GET", breaker_requests),
    ]
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for fault_name, fault, method, count in plan:
            if count > 1:
                shop.faults.clear(SERVICE)
                async with session.get(url + ROUTES["GET"]) as answer:
                    await answer.read()
            shop.faults.inject(SERVICE, fault)
            statuses, tries, slowest, body = [], [], 0.0, ""
            for _ in range(count):
                before, start = service.received, loop.time()
                async with session.request(method, url + ROUTES[method],
                                           json={"quantity": 1} if method == "POST" else None
                                           ) as answer:
                    body = (await answer.text())[:60]
                    statuses.append(answer.status)
                tries.append(service.received - before)
                slowest = max(slowest, loop.time() - start)
            steps.append(TourStep(fault_name, f"{method} {ROUTES[method]}", tuple(statuses),
                                  tuple(tries), slowest, body))
        shop.faults.clear(SERVICE)
    return steps


OVERLOADED_HEADERS = {"sidecar": "x-sidecar-overloaded", "envoy": "x-envoy-overloaded"}
OVERFLOW_COUNTERS = {"sidecar": "overflow",
                     "envoy": "cluster.upstream.upstream_rq_pending_overflow"}


@dataclass(frozen=True)
class Burst:
    """A burst of simultaneous GETs through a proxy that limits the requests in flight."""

    proxy: str
    statuses: tuple[int, ...]
    overloaded: int  # answered 503 at once, marked as overloaded by the proxy
    served: int  # requests the service received
    counter: str  # the proxy's own count of the requests it turned away
    count: int


async def overload_burst(proxy: str, *, shop: LiveShop, max_concurrent: int = 2,
                         burst: int = 8, work: float = 1.0) -> Burst:
    """Send ``burst`` GETs at once through ``proxy`` with ``max_concurrent``, while every
    request takes the service ``work`` seconds: who is served, who is turned away at once."""
    policy = SidecarPolicy(timeout=4 * work, max_retries=0, retry_budget_ratio=None,
                           breaker_consecutive_failures=None, max_concurrent=max_concurrent)
    service = shop.service(SERVICE)
    shop.faults.inject(SERVICE, Latency(work))
    try:
        async with running_proxy(proxy, shop.url(SERVICE), policy) as running, \
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10 * work)) as session:

            async def one() -> tuple[int, bool]:
                async with session.get(running.url + ROUTES["GET"]) as answer:
                    await answer.read()
                    return answer.status, answer.headers.get(OVERLOADED_HEADERS[proxy]) == "true"

            before = service.received
            answers = await asyncio.gather(*(one() for _ in range(burst)))
            served = service.received - before
            counters = await running.counters()
    finally:
        shop.faults.clear(SERVICE)
    counter = OVERFLOW_COUNTERS[proxy]
    return Burst(proxy, tuple(s for s, _ in answers), sum(o for _, o in answers), served,
                 counter, int(counters.get(counter, 0)))


@dataclass(frozen=True)
class InjectedFaults:
    """What Envoy's fault filter did to ``requests`` GETs, and what the service saw."""

    requests: int
    statuses: dict[int, int]
    aborts_injected: int  # Envoy's stat http.sidecar.fault.aborts_injected
    delays_injected: int  # Envoy's stat http.sidecar.fault.delays_injected
    served: int  # requests the service received
    retries: int  # Envoy's stat cluster.upstream.upstream_rq_retry


async def envoy_fault_injection(*, shop: LiveShop, requests: int = 100,
                                abort_percent: float = 20, delay_percent: float = 20,
                                delay_seconds: float = 0.05) -> InjectedFaults:
    """Break calls in the mesh, not in the service: Envoy's HTTP fault filter aborts
    ``abort_percent`` % of requests with 503 and delays ``delay_percent`` % of them."""
    faults = {"abort_percent": abort_percent, "abort_status": 503,
              "delay_percent": delay_percent, "delay_seconds": delay_seconds}
    service = shop.service(SERVICE)
    async with EnvoyProxy(SidecarPolicy(), shop.url(SERVICE), faults=faults) as envoy, \
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        statuses: Counter[int] = Counter()
        before = service.received
        await _send_all(session, envoy.url, ["GET"] * requests, 10, statuses)
        served = service.received - before
        fault = await envoy.stats("http.sidecar.fault.")
        upstream = await envoy.stats("cluster.upstream.")
    return InjectedFaults(requests, dict(sorted(statuses.items())),
                          fault.get("aborts_injected", 0), fault.get("delays_injected", 0),
                          served, upstream.get("upstream_rq_retry", 0))
