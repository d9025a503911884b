"""A sidecar proxy: the resilience patterns moved out of the service, into the infrastructure.

A service mesh puts a small proxy beside every service (Linkerd, Istio's Envoy) and sends
all traffic through it, so timeouts, retries, breakers and mutual TLS are configured once
(a ``SidecarPolicy``) instead of written into every service's code. This is that proxy,
small, in aiohttp, reading the same policy as ``faultline.envoy``'s real Envoy.

Theory of operation. ``SidecarCore`` makes every decision and does no I/O (STYLE.md): it
is fed the time and the outcome of each attempt and answers

    admit(now)          -> Admitted | Refused("breaker" | "overflow")
    attempts(method)    -> Attempts:  begin() before each try, after(result) ->
                                      RetryAfter(delay) | Finish(reason)
    finish(now, admitted, failed=...)   the request's outcome, for the breaker

The breaker is the reference ``BreakerMachine`` with a window of N and threshold 1.0
(N failures in a row, like Envoy's ``consecutive_5xx``); retries use ``RetryState`` with
full-jitter backoff and one ``RetryBudget`` shared by every request through the sidecar.
``make_sidecar`` is the asyncio shell: it reads the clock, forwards the request with
aiohttp, sleeps the backoff and applies the overall and per-try timeouts.

    caller ──► sidecar: breaker? ─► in flight < max? ─► [try ─► retry? ─► backoff] ─► upstream
                     503 open       503 overloaded      overall timeout: 504
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import random
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from faultline.breaker import Admit, BreakerConfig, BreakerMachine, Reject
from faultline.policy import SidecarPolicy
from faultline.retry import GiveUp, RetryAfter, RetryBudget, RetryConfig, RetryState
from faultline.tracing import TRACEPARENT, Span, SpanCollector, TraceContext, parse_traceparent

__all__ = [
    "ATTEMPT_COUNT_HEADER",
    "BREAKER_HEADER",
    "HOP_BY_HOP",
    "OVERLOADED_HEADER",
    "REQUEST_ID_HEADER",
    "Admitted",
    "AttemptResult",
    "Attempts",
    "Finish",
    "Refused",
    "RunningSidecar",
    "SidecarCore",
    "SidecarMetrics",
    "make_sidecar",
    "sidecar_core",
    "sidecar_metrics",
    "start_sidecar",
]

REQUEST_ID_HEADER = "x-request-id"
ATTEMPT_COUNT_HEADER = "x-sidecar-attempt-count"  # Envoy: x-envoy-attempt-count
OVERLOADED_HEADER = "x-sidecar-overloaded"  # Envoy: x-envoy-overloaded
BREAKER_HEADER = "x-sidecar-breaker"
ADMIN_PREFIX = "/_sidecar/"

#: Headers that describe one connection, not the message (RFC 9110 section 7.6.1): a proxy
#: must not forward them, nor any header the ``Connection`` header names.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer",
                        "upgrade", "proxy-authorization", "proxy-authenticate"})

_CONNECTION_ERRORS = ("connect", "reset")


# --- the sans-I/O core --------------------------------------------------------------------

@dataclass
class SidecarMetrics:
    """What a sidecar counted; every field only grows.

    requests: requests received for the upstream (the ``/_sidecar/`` ones are not counted);
    attempts: tries sent upstream; retries: tries after a request's first;
    retries_budget_exhausted: retries the budget refused; timeouts: requests the sidecar
    answered 504 itself; breaker_rejections / overflow: requests refused with 503 without
    calling upstream; connect_errors: tries that failed to connect or were reset;
    responses: requests answered, by status.
    """

    requests: int = 0
    attempts: int = 0
    retries: int = 0
    retries_budget_exhausted: int = 0
    timeouts: int = 0
    breaker_rejections: int = 0
    overflow: int = 0
    connect_errors: int = 0
    responses: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The counters as a plain dict (a copy; ``responses`` keyed by int status)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Admitted:
    """The request may go upstream; ``breaker`` is the breaker's ticket (None: no breaker)."""

    breaker: Admit | None


@dataclass(frozen=True)
class Refused:
    """The request is answered 503 at once. ``reason`` is ``"breaker"`` or ``"overflow"``;
    ``retry_after`` the seconds until the breaker admits a trial (``None`` for overflow)."""

    reason: str
    retry_after: float | None = None


@dataclass(frozen=True)
class AttemptResult:
    """How one try ended: an upstream ``status``, or an ``error`` of ``"connect"`` (refused),
    ``"reset"`` (the connection broke before a whole answer) or ``"timeout"`` (per-try)."""

    status: int | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if (self.status is None) == (self.error is None):
            raise ValueError("give exactly one of status and error")
        if self.error is not None and self.error not in (*_CONNECTION_ERRORS, "timeout"):
            raise ValueError(f"error must be 'connect', 'reset' or 'timeout', got {self.error!r}")

    @property
    def failed(self) -> bool:
        """What the breaker counts as a failure: no answer, or a 5xx."""
        return self.error is not None or (self.status is not None and self.status >= 500)


@dataclass(frozen=True)
class Finish:
    """Decision: stop trying and answer with the last result; ``reason`` says why."""

    reason: str  # "answered", "not idempotent", "attempts exhausted", "budget exhausted"


class _RetryableAttempt(Exception):
    """How an attempt that may be retried is reported to the reference ``RetryState``."""


class Attempts:
    """The tries of one request: count them, and after each one decide retry or finish."""

    def __init__(self, core: SidecarCore, method: str) -> None:
        self._core = core
        self.method = method.upper()
        self.may_retry = core.policy.may_retry(self.method)
        # RetryState deposits this request in the budget; a request that may not be
        # retried deposits too, since the budget is a share of all requests.
        self._state = RetryState(core.retry_config, core.rng, core.budget)
        self.count = 0

    def begin(self) -> int:
        """Count one more try; return its number (1 for the first)."""
        self.count = self._state.start_attempt()
        self._core.metrics.attempts += 1
        if self.count > 1:
            self._core.metrics.retries += 1
        return self.count

    def after(self, result: AttemptResult) -> RetryAfter | Finish:
        """The decision once the current try ended with ``result``."""
        metrics = self._core.metrics
        if result.error in _CONNECTION_ERRORS:
            metrics.connect_errors += 1
        if result.error is None and result.status not in self._core.policy.retry_on_statuses:
            return Finish("answered")
        if not self.may_retry:
            return Finish("not idempotent")
        decision = self._state.on_failure(_RetryableAttempt(result))
        if isinstance(decision, GiveUp):
            if decision.reason == "budget exhausted":
                metrics.retries_budget_exhausted += 1
            return Finish(decision.reason)
        return decision


class SidecarCore:
    """The sidecar's decisions with no clock and no I/O: admission, retries, the breaker.

    One core serves every request through one sidecar, so the breaker, the retry budget
    and the count of requests in flight are shared, as in Envoy's cluster.
    """

    def __init__(self, policy: SidecarPolicy | None = None, *,
                 rng: random.Random | None = None) -> None:
        if policy is not None and not isinstance(policy, SidecarPolicy):
            raise TypeError(f"policy must be a SidecarPolicy or None, got {type(policy).__name__}")
        if rng is not None and not isinstance(rng, random.Random):
            raise TypeError(f"rng must be a random.Random or None, got {type(rng).__name__}")
        self.policy = policy if policy is not None else SidecarPolicy()
        self.rng = rng if rng is not None else random.Random()
        p = self.policy
        self.metrics = SidecarMetrics()
        self.retry_config = RetryConfig(max_attempts=p.max_retries + 1, base=p.backoff_base,
                                        cap=p.backoff_cap, jitter="full",
                                        retry_on=_RetryableAttempt)
        self.budget: RetryBudget | None = None
        if p.retry_budget_ratio is not None:
            self.budget = RetryBudget(p.retry_budget_ratio, p.retry_budget_min,
                                      max(100, p.retry_budget_min))
        self.breaker: BreakerMachine | None = None
        if p.breaker_consecutive_failures is not None:
            n = p.breaker_consecutive_failures
            self.breaker = BreakerMachine(BreakerConfig(
                failure_rate_threshold=1.0, window_size=n, minimum_calls=n,
                open_timeout=p.breaker_open_seconds, half_open_max_calls=1))
        self.in_flight = 0

    # -- identity and tracing

    def request_id(self, incoming: str | None) -> str:
        """The request's ``x-request-id``: the incoming one if any, else a UUID from ``rng``."""
        if incoming is not None and incoming.strip():
            return incoming
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def trace(self, incoming: str | None) -> tuple[TraceContext, str | None]:
        """The sidecar's span context and its parent id (W3C Trace Context).

        A valid incoming ``traceparent`` is continued (same trace id and sampling, the
        sidecar's own span id); an absent or invalid one starts a new trace here.
        """
        parent = parse_traceparent(incoming)
        if parent is not None:
            return parent.child(self.rng), parent.span_id
        return TraceContext.new_root(self.rng), None

    # -- one request's life

    def admit(self, now: float) -> Admitted | Refused:
        """Count a request and decide whether it may go upstream at ``now``."""
        self.metrics.requests += 1
        ticket = None
        if self.breaker is not None:
            decision = self.breaker.acquire(now)
            if isinstance(decision, Reject):
                self.metrics.breaker_rejections += 1
                return Refused("breaker", decision.retry_after)
            ticket = decision
        limit = self.policy.max_concurrent
        if limit is not None and self.in_flight >= limit:
            if ticket is not None:
                self.breaker.release(ticket)  # type: ignore[union-attr]
            self.metrics.overflow += 1
            return Refused("overflow")
        self.in_flight += 1
        return Admitted(ticket)

    def attempts(self, method: str) -> Attempts:
        """The retry state of an admitted request (deposits it in the retry budget)."""
        return Attempts(self, method)

    def finish(self, now: float, admitted: Admitted, *, failed: bool) -> None:
        """An admitted request ended; ``failed`` (5xx, no answer, timeout) feeds the breaker."""
        self.in_flight -= 1
        if self.breaker is not None and admitted.breaker is not None:
            self.breaker.record(now, failed=failed, ticket=admitted.breaker.ticket)

    def abandon(self, admitted: Admitted) -> None:
        """An admitted request was cancelled: no outcome, its half-open trial is given back."""
        self.in_flight -= 1
        if self.breaker is not None and admitted.breaker is not None:
            self.breaker.release(admitted.breaker)

    def answered(self, status: int) -> None:
        """Count the status the caller was answered with."""
        self.metrics.responses[status] = self.metrics.responses.get(status, 0) + 1


# --- the asyncio shell --------------------------------------------------------------------

def _forwardable(headers: Any) -> CIMultiDict[str]:
    """``headers`` (a multidict) without hop-by-hop ones, those ``Connection`` names, and
    framing (Content-Length, Host), which aiohttp sets for the next hop."""
    named = {token.strip().lower() for value in headers.getall("Connection", [])
             for token in value.split(",")}
    drop = HOP_BY_HOP | named | {"content-length", "host"}
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in drop)


def _json(status: int, payload: dict[str, Any], headers: Mapping[str, str]) -> web.Response:
    return web.json_response(payload, status=status, headers=headers)


@dataclass
class _Answer:
    status: int
    headers: CIMultiDict[str]
    body: bytes


class _Sidecar:
    """The shell: one per app, holding the core, the client session and handlers in flight."""

    def __init__(self, upstream_url: str, core: SidecarCore, *, client_ssl: ssl.SSLContext | None,
                 collector: SpanCollector | None, name: str,
                 clock: Callable[[], float] | None) -> None:
        self.upstream = upstream_url.rstrip("/")
        self.core = core
        self.client_ssl = client_ssl
        self.collector = collector
        self.name = name
        self.clock = clock
        self.session: aiohttp.ClientSession | None = None
        self.handlers: set[asyncio.Task[Any]] = set()

    async def session_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: the upstream client lives exactly as long as the app."""
        connector = aiohttp.TCPConnector(
            limit=0, ssl=self.client_ssl if self.client_ssl is not None else True)
        # No redirects followed, no cookies kept, bodies passed through still encoded:
        # the sidecar must be invisible to both ends.
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"))
        # aiohttp quietly resends an idempotent request once when a connection breaks;
        # retrying is the policy's job, and its metrics must see every reset (aiohttp's
        # own TestClient turns this off the same way).
        self.session._retry_connection = False
        try:
            yield
        finally:
            await self.session.close()
            self.session = None

    def _now(self) -> float:
        return self.clock() if self.clock is not None else asyncio.get_running_loop().time()

    async def metrics(self, request: web.Request) -> web.Response:
        return web.json_response(self.core.metrics.as_dict())

    async def admin_unknown(self, request: web.Request) -> web.Response:
        return web.json_response({"error": f"{self.name}: no {request.method} {request.path}"},
                                 status=404)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self.handlers.add(task)
        try:
            return await self._handle(request)
        finally:
            self.handlers.discard(task)  # type: ignore[arg-type]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        core, loop = self.core, asyncio.get_running_loop()
        start = loop.time()
        request_id = core.request_id(request.headers.get(REQUEST_ID_HEADER))
        context, parent_id = core.trace(request.headers.get(TRACEPARENT))
        status, error = 503, None
        try:
            admission = core.admit(self._now())
            if isinstance(admission, Refused):
                response = self._refusal(admission)
            else:
                try:
                    response = await self._forward(request, admission, request_id, context)
                except BaseException:
                    core.abandon(admission)
                    raise
            response.headers[REQUEST_ID_HEADER] = request_id
            status = response.status
            core.answered(status)
            return response
        except BaseException as exc:
            error = type(exc).__name__
            raise
        finally:
            if self.collector is not None and context.sampled:
                self.collector.record(Span(context.trace_id, context.span_id, parent_id,
                                           self.name, f"{request.method} {request.path}",
                                           start, loop.time(), kind="server",
                                           status=None if error else status, error=error))

    def _refusal(self, refused: Refused) -> web.Response:
        if refused.reason == "breaker":
            wait = refused.retry_after or 0.0
            return _json(503, {"error": f"{self.name}: circuit breaker open, upstream not "
                                        "called", "retry_after": wait},
                         {BREAKER_HEADER: "open",
                          "retry-after": str(max(1, math.ceil(wait)))})
        return _json(503, {"error": f"{self.name}: too many requests in flight (max_concurrent="
                                    f"{self.core.policy.max_concurrent}), upstream not called"},
                     {OVERLOADED_HEADER: "true"})

    async def _forward(self, request: web.Request, admission: Admitted, request_id: str,
                       context: TraceContext) -> web.Response:
        core, policy = self.core, self.core.policy
        body = await request.read()
        headers = _forwardable(request.headers)
        headers[REQUEST_ID_HEADER] = request_id
        headers[TRACEPARENT] = context.to_traceparent()
        url = URL(self.upstream + request.raw_path, encoded=True)
        attempts = core.attempts(request.method)
        result: AttemptResult | None = None
        answer: _Answer | str = ""
        try:
            async with asyncio.timeout(policy.timeout):
                while True:
                    headers[ATTEMPT_COUNT_HEADER] = str(attempts.begin())
                    result, answer = await self._attempt(request.method, url, headers, body)
                    decision = attempts.after(result)
                    if isinstance(decision, Finish):
                        break
                    await asyncio.sleep(decision.delay)
        except TimeoutError:
            result, answer = AttemptResult(error="timeout"), ""
            detail = f"no answer from upstream within the policy's timeout ({policy.timeout:g} s)"
        else:
            detail = (f"no answer from upstream within the policy's per_try_timeout "
                      f"({policy.per_try_timeout} s) on the last try")
        assert result is not None
        core.finish(self._now(), admission, failed=result.failed)
        if isinstance(answer, _Answer):
            return web.Response(status=answer.status, body=answer.body, headers=answer.headers)
        if result.error == "timeout":
            core.metrics.timeouts += 1
            return _json(504, {"error": f"{self.name} timeout: {detail}",
                               "attempts": attempts.count}, {})
        what = "failed" if result.error == "connect" else "broke"
        return _json(502, {"error": f"{self.name}: the connection to upstream {what}: {answer}",
                           "attempts": attempts.count}, {})

    async def _attempt(self, method: str, url: URL, headers: CIMultiDict[str], body: bytes
                       ) -> tuple[AttemptResult, _Answer | str]:
        """One try: its result and the answer, or what went wrong (connection failures and
        the per-try timeout are results, not exceptions)."""
        if self.session is None:
            raise RuntimeError(f"{self.name} is not running (its app has not started)")
        per_try = self.core.policy.per_try_timeout
        limit = asyncio.timeout(per_try) if per_try is not None else contextlib.nullcontext()
        try:
            async with limit, self.session.request(method, url, headers=headers,
                                                   data=body or None,
                                                   allow_redirects=False) as answer:
                raw = await answer.read()
                kept = _forwardable(answer.headers)
                return AttemptResult(status=answer.status), _Answer(answer.status, kept, raw)
        except TimeoutError:
            if isinstance(limit, asyncio.Timeout) and limit.expired():
                return AttemptResult(error="timeout"), f"per-try timeout ({per_try} s)"
            return AttemptResult(error="reset"), "read timeout"  # aiohttp's own: no answer
        except aiohttp.ClientConnectorError as exc:  # refused, unreachable, TLS refused
            return AttemptResult(error="connect"), f"{type(exc).__name__}: {exc}"
        except aiohttp.ClientError as exc:  # disconnected, reset, a broken answer
            return AttemptResult(error="reset"), f"{type(exc).__name__}: {exc}"


SIDECAR_KEY = web.AppKey("sidecar", _Sidecar)


def make_sidecar(upstream_url: str, policy: SidecarPolicy | None = None, *,
                 client_ssl: ssl.SSLContext | None = None, rng: random.Random | None = None,
                 collector: SpanCollector | None = None, name: str = "sidecar",
                 clock: Callable[[], float] | None = None) -> web.Application:
    """An aiohttp app that forwards every request to ``upstream_url`` under ``policy``.

    Method, path, query, headers (minus hop-by-hop ones) and body go upstream; the
    upstream's status, headers and body come back. ``GET /_sidecar/metrics`` serves the
    counters as JSON (``responses`` keyed by status as a string); that prefix is never
    forwarded. ``client_ssl`` is used for an https
    upstream; ``rng`` makes request and span ids deterministic; ``collector`` receives one
    span per request; ``clock`` (default: the event loop's) is what the breaker reads.
    """
    if not isinstance(upstream_url, str):
        raise TypeError(f"upstream_url must be a str, got {type(upstream_url).__name__}")
    parsed = URL(upstream_url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"upstream_url must be an http(s) URL with a host, got {upstream_url!r}")
    if parsed.query_string or parsed.fragment:
        raise ValueError(f"upstream_url must not carry a query or fragment, got {upstream_url!r}")
    if client_ssl is not None and not isinstance(client_ssl, ssl.SSLContext):
        raise TypeError(f"client_ssl must be an ssl.SSLContext or None, got {client_ssl!r}")
    if collector is not None and not isinstance(collector, SpanCollector):
        raise TypeError(f"collector must be a SpanCollector or None, got {collector!r}")
    if clock is not None and not callable(clock):
        raise TypeError(f"clock must be a callable returning seconds, got {clock!r}")
    core = SidecarCore(policy, rng=rng)
    sidecar = _Sidecar(upstream_url, core, client_ssl=client_ssl, collector=collector,
                       name=name, clock=clock)
    app = web.Application(client_max_size=16 * 2**20)
    app[SIDECAR_KEY] = sidecar
    app.cleanup_ctx.append(sidecar.session_ctx)
    app.router.add_get(ADMIN_PREFIX + "metrics", sidecar.metrics)
    app.router.add_route("*", ADMIN_PREFIX + "{tail:.*}", sidecar.admin_unknown)
    app.router.add_route("*", "/{tail:.*}", sidecar.handle)
    return app


def sidecar_core(app: web.Application) -> SidecarCore:
    """The core of a sidecar app (its policy, breaker, budget and metrics)."""
    try:
        return app[SIDECAR_KEY].core
    except KeyError:
        raise ValueError("app must be an application made by make_sidecar") from None


def sidecar_metrics(app: web.Application) -> SidecarMetrics:
    """The live counters of a sidecar app made by ``make_sidecar``."""
    return sidecar_core(app).metrics


class RunningSidecar:
    """A sidecar serving on 127.0.0.1 (see ``start_sidecar``); ``await stop()`` ends it."""

    def __init__(self, app: web.Application, runner: web.AppRunner, url: str) -> None:
        self.app = app
        self.url = url
        self._runner: web.AppRunner | None = runner

    @property
    def upstream_url(self) -> str:
        """Where this sidecar forwards to."""
        return self.app[SIDECAR_KEY].upstream

    @property
    def metrics(self) -> SidecarMetrics:
        return sidecar_metrics(self.app)

    @property
    def core(self) -> SidecarCore:
        return sidecar_core(self.app)

    @property
    def breaker_state(self) -> str | None:
        """``"closed"``, ``"open"`` or ``"half_open"`` as last changed (None: no breaker)."""
        breaker = self.core.breaker
        return None if breaker is None else breaker.state.value

    async def stop(self) -> None:
        """Cancel requests in flight and close the server and its client; safe twice."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        hung = list(self.app[SIDECAR_KEY].handlers)
        for task in hung:
            task.cancel()
        await asyncio.gather(*hung, return_exceptions=True)
        await runner.cleanup()

    async def __aenter__(self) -> RunningSidecar:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def __repr__(self) -> str:
        where = self.url if self._runner is not None else "stopped"
        return f"<RunningSidecar {self.app[SIDECAR_KEY].name} {where} -> " \
               f"{self.app[SIDECAR_KEY].upstream}>"


async def start_sidecar(upstream_url: str, policy: SidecarPolicy | None = None, *,
                        server_ssl: ssl.SSLContext | None = None,
                        client_ssl: ssl.SSLContext | None = None,
                        rng: random.Random | None = None,
                        collector: SpanCollector | None = None, name: str = "sidecar",
                        clock: Callable[[], float] | None = None) -> RunningSidecar:
    """Serve ``make_sidecar(...)`` on 127.0.0.1, port chosen by the OS (https with
    ``server_ssl``); use as ``async with await start_sidecar(...) as sidecar:``."""
    if server_ssl is not None and not isinstance(server_ssl, ssl.SSLContext):
        raise TypeError(f"server_ssl must be an ssl.SSLContext or None, got {server_ssl!r}")
    app = make_sidecar(upstream_url, policy, client_ssl=client_ssl, rng=rng,
                       collector=collector, name=name, clock=clock)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl).start()
    except BaseException:
        await runner.cleanup()
        raise
    scheme = "https" if server_ssl is not None else "http"
    return RunningSidecar(app, runner, f"{scheme}://127.0.0.1:{runner.addresses[0][1]}")

