"""Distributed tracing: W3C trace context, spans, and finding the slow hop.

A request that crosses five services leaves a log line in each, and nothing ties them
together. A *trace* does: the first service gives the request a trace id, every hop
records a *span* (who, what, from when to when, and which span caused it) and passes
``traceparent`` on to the next (W3C Trace Context, https://www.w3.org/TR/trace-context/).
From the spans of one trace, ``bottleneck`` says which service spent the time itself,
as opposed to waiting on a service further down.

The core (``TraceContext``, ``parse_traceparent``, ``self_times``, ``bottleneck``) does no
I/O; the shells read the running loop's clock (so virtual time works): an aiohttp
middleware (``tracing_middleware``), and ``trace_shop`` for the toy shop on either
transport, which records a server span per request and a client span per attempt.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from faultline.messages import Request, Response

__all__ = [
    "TRACEPARENT",
    "Span",
    "SpanCollector",
    "TraceContext",
    "TracedRun",
    "Tracer",
    "bottleneck",
    "current_trace",
    "format_trace",
    "log_lines",
    "parse_traceparent",
    "propagate_trace",
    "run_chain",
    "self_times",
    "simulate_traced",
    "span_self_time",
    "trace_shop",
    "trace_tree",
    "tracing_middleware",
]

TRACEPARENT = "traceparent"

# The trace context of the request being served, set by the server middleware; the
# kit's client reads it to put ``traceparent`` on outgoing calls.
current_trace: ContextVar[Any] = ContextVar("current_trace", default=None)

_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
# version-traceid-parentid-flags, then (future versions only) "-" and anything.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?",
                          re.DOTALL)


def _random_hex(rng: random.Random, digits: int) -> str:
    """``digits`` lower-case hex digits from ``rng``, never all zero (an invalid id)."""
    while True:
        value = rng.getrandbits(digits * 4)
        if value:
            return f"{value:0{digits}x}"


@dataclass(frozen=True)
class TraceContext:
    """Where a request is in its trace: the trace id, the current span's id, sampled or not."""

    trace_id: str
    span_id: str
    sampled: bool = True

    def __post_init__(self) -> None:
        for name, pattern, digits in (("trace_id", _TRACE_ID, 32), ("span_id", _SPAN_ID, 16)):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a str, got {value!r}")
            if not pattern.fullmatch(value) or not value.strip("0"):
                raise ValueError(f"{name} must be {digits} lower-case hex digits, not all "
                                 f"zero, got {value!r}")
        if not isinstance(self.sampled, bool):
            raise TypeError(f"sampled must be a bool, got {self.sampled!r}")

    @classmethod
    def new_root(cls, rng: random.Random, sampled: bool = True) -> TraceContext:
        """The context of a new trace: fresh random trace and span ids."""
        return cls(_random_hex(rng, 32), _random_hex(rng, 16), sampled)

    def child(self, rng: random.Random) -> TraceContext:
        """The context of a span caused by this one: same trace and sampling, new span id."""
        while True:
            span_id = _random_hex(rng, 16)
            if span_id != self.span_id:
                return TraceContext(self.trace_id, span_id, self.sampled)

    def to_traceparent(self) -> str:
        """The ``traceparent`` header value (version 00): ``00-<trace>-<span>-01`` or ``-00``."""
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


def parse_traceparent(text: object) -> TraceContext | None:
    """A ``traceparent`` header as a ``TraceContext``, or ``None`` if it is not valid.

    W3C Trace Context level 1, section 3.2 and 4.3: spaces and tabs around the value are
    ignored; every field is lower-case hex; version ``ff`` is invalid; version ``00`` has
    exactly four fields; a higher version is read from its first four fields and may
    carry more after a ``-``; all-zero ids are invalid; sampled is bit 0 of the flags.
    """
    if not isinstance(text, str):
        return None
    match = _TRACEPARENT.fullmatch(text.strip(" \t"))
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if not trace_id.strip("0") or not span_id.strip("0"):
        return None
    return TraceContext(trace_id, span_id, bool(int(flags, 16) & 1))


@dataclass(frozen=True)
class Span:
    """One timed operation of a trace: a server handling a request, or a client's attempt.

    Times are seconds on the event loop's clock; ``parent_id`` is ``None`` at the root.
    ``kind`` is ``"server"`` or ``"client"``; ``status`` the HTTP status answered (or
    ``None``), ``error`` the exception that ended it, if any.
    """

    trace_id: str
    span_id: str
    parent_id: str | None
    service: str
    name: str
    start: float
    end: float
    kind: str = "server"
    status: int | None = None
    error: str | None = None

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def failed(self) -> bool:
        return self.error is not None or (self.status is not None and self.status >= 500)


_KINDS = {"internal": 1, "server": 2, "client": 3}  # OTLP SpanKind numbers


class SpanCollector:
    """Keeps the spans that middlewares and clients ``record``; exports them as OTLP JSON.

    ``wall_offset`` converts loop time to Unix time for the export (``time.time() -
    loop.time()``); by default it is measured at the first ``record``.
    """

    def __init__(self, *, wall_offset: float | None = None) -> None:
        self.spans: list[Span] = []
        self.wall_offset = wall_offset

    def record(self, span: Span) -> None:
        """Keep one finished span."""
        if self.wall_offset is None:
            try:
                now = asyncio.get_running_loop().time()
            except RuntimeError:
                now = time.monotonic()
            self.wall_offset = time.time() - now
        self.spans.append(span)

    def clear(self) -> None:
        self.spans.clear()

    def __len__(self) -> int:
        return len(self.spans)

    def traces(self) -> dict[str, list[Span]]:
        """The spans grouped by trace id, traces in the order they started."""
        grouped: dict[str, list[Span]] = {}
        for span in sorted(self.spans, key=lambda s: s.start):
            grouped.setdefault(span.trace_id, []).append(span)
        return grouped

    def trace(self, trace_id: str) -> list[Span]:
        """The spans of one trace, earliest first."""
        return sorted((s for s in self.spans if s.trace_id == trace_id), key=lambda s: s.start)

    def otlp(self) -> dict[str, Any]:
        """The spans as an OTLP ``ExportTraceServiceRequest`` in its JSON mapping (a dict)."""
        offset = self.wall_offset or 0.0
        by_service: dict[str, list[Span]] = {}
        for span in self.spans:
            by_service.setdefault(span.service, []).append(span)
        return {"resourceSpans": [
            {"resource": {"attributes": [_attribute("service.name", service)]},
             "scopeSpans": [{"scope": {"name": "faultline.tracing"},
                             "spans": [_otlp_span(s, offset) for s in spans]}]}
            for service, spans in by_service.items()]}

    def to_otlp_json(self) -> str:
        """The spans as OTLP/JSON text, ready to POST to a collector's ``/v1/traces``."""
        return json.dumps(self.otlp())


def _attribute(key: str, value: str | int) -> dict[str, Any]:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}  # int64 is a JSON string
    return {"key": key, "value": {"stringValue": value}}


def _nanos(seconds: float, offset: float) -> str:
    """Loop time plus the wall offset in whole nanoseconds, without float rounding noise."""
    whole = int(offset)
    return str(whole * 1_000_000_000 + round((offset - whole + seconds) * 1e9))


def _otlp_span(span: Span, offset: float) -> dict[str, Any]:
    attributes = [_attribute("faultline.operation", span.name)]
    if span.status is not None:
        attributes.append(_attribute("http.response.status_code", span.status))
    if span.error is not None:
        attributes.append(_attribute("error.type", span.error))
    encoded: dict[str, Any] = {
        "traceId": span.trace_id,  # OTLP/JSON writes ids as hex, not base64
        "spanId": span.span_id,
        "name": span.name,
        "kind": _KINDS.get(span.kind, 1),
        "startTimeUnixNano": _nanos(span.start, offset),
        "endTimeUnixNano": _nanos(span.end, offset),
        "attributes": attributes,
        "status": {"code": 2} if span.failed else {},
    }
    if span.parent_id is not None:
        encoded["parentSpanId"] = span.parent_id
    return encoded


# --- analysis: the tree, self time, the bottleneck -----------------------------------------

def _children(spans: Sequence[Span]) -> dict[str | None, list[Span]]:
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[Span]] = {}
    for span in sorted(spans, key=lambda s: (s.start, s.end)):
        parent = span.parent_id if span.parent_id in ids else None  # orphans become roots
        children.setdefault(parent, []).append(span)
    return children


def trace_tree(spans: Iterable[Span]) -> list[tuple[int, Span]]:
    """The spans in tree order (each followed by its children, earliest first) with depths."""
    spans = list(spans)
    children = _children(spans)
    ordered: list[tuple[int, Span]] = []
    stack = [(0, s) for s in reversed(children.get(None, []))]
    seen: set[int] = set()
    while stack:
        depth, span = stack.pop()
        if id(span) in seen:
            continue
        seen.add(id(span))
        ordered.append((depth, span))
        stack.extend((depth + 1, c) for c in reversed(children.get(span.span_id, [])))
    return ordered


def _union_length(intervals: Iterable[tuple[float, float]]) -> float:
    total = 0.0
    current_start = current_end = None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start
    return total


def span_self_time(span: Span, children: Iterable[Span]) -> float:
    """The span's duration minus the union of its children's intervals clipped to it."""
    clipped = [(max(c.start, span.start), min(c.end, span.end)) for c in children]
    return span.duration - _union_length((a, b) for a, b in clipped if b > a)


def self_times(spans: Iterable[Span]) -> dict[str, float]:
    """Self time summed per service: the time its spans spent not waiting on a child span."""
    spans = list(spans)
    children: dict[str, list[Span]] = {}
    for span in spans:
        if span.parent_id is not None:
            children.setdefault(span.parent_id, []).append(span)
    totals: dict[str, float] = {}
    for span in spans:
        own = span_self_time(span, children.get(span.span_id, ()))
        totals[span.service] = totals.get(span.service, 0.0) + own
    return totals


def bottleneck(spans: Iterable[Span]) -> str:
    """The service of one trace with the largest self time; a tie goes to the first name."""
    spans = list(spans)
    if not spans:
        raise ValueError("spans must not be empty: there is no trace to look at")
    if len({s.trace_id for s in spans}) > 1:
        raise ValueError("spans must come from one trace; group them with "
                         "SpanCollector.traces() first")
    totals = self_times(spans)
    return min(totals, key=lambda service: (-totals[service], service))


def format_trace(spans: Iterable[Span]) -> str:
    """One trace as an indented text tree: offset, duration and self time of every span."""
    spans = list(spans)
    if not spans:
        return "(no spans)"
    origin = min(s.start for s in spans)
    children: dict[str, list[Span]] = {}
    for span in spans:
        if span.parent_id is not None:
            children.setdefault(span.parent_id, []).append(span)
    lines = []
    for depth, span in trace_tree(spans):
        own = span_self_time(span, children.get(span.span_id, ()))
        label = f"{'  ' * depth}{span.service} {span.name}"
        outcome = span.error or (str(span.status) if span.status is not None else "")
        lines.append(f"{label:<40} {span.kind:<6} +{(span.start - origin) * 1000:7.1f} ms "
                     f"{span.duration * 1000:7.1f} ms  self {own * 1000:6.1f} ms  {outcome}")
    return "\n".join(lines)


# --- the shells: server middleware, client propagation ----------------------------------

class Tracer:
    """What the middlewares share: ids from ``rng``, head sampling at ``sample_rate``."""

    def __init__(self, collector: SpanCollector, *, rng: random.Random | None = None,
                 sample_rate: float = 1.0) -> None:
        if not 0 <= sample_rate <= 1:
            raise ValueError(f"sample_rate must be in [0, 1], got {sample_rate!r}")
        self.collector = collector
        self.rng = rng if rng is not None else random.Random()
        self.sample_rate = sample_rate

    def server_context(self, header: str | None) -> tuple[TraceContext, str | None]:
        """The context for a request's server span and its parent id.

        A valid incoming ``traceparent`` is continued (with its sampling decision); else a
        new trace starts here, sampled with probability ``sample_rate`` (head sampling).
        """
        incoming = parse_traceparent(header)
        if incoming is not None:
            return incoming.child(self.rng), incoming.span_id
        sampled = self.sample_rate >= 1 or self.rng.random() < self.sample_rate
        return TraceContext.new_root(self.rng, sampled=sampled), None

    def finish(self, context: TraceContext, parent_id: str | None, service: str, name: str,
               start: float, end: float, **details: Any) -> None:
        if context.sampled:
            self.collector.record(Span(context.trace_id, context.span_id, parent_id, service,
                                       name, start, end, **details))


def _now() -> float:
    return asyncio.get_running_loop().time()


def tracing_middleware(service: str, collector: SpanCollector, *,
                       rng: random.Random | None = None, sample_rate: float = 1.0) -> Any:
    """An aiohttp middleware: continue or start a trace, record one server span per request.

    While the handler runs, ``current_trace`` holds the server span's context, so calls
    made through the kit's client (with ``propagate_trace``) carry ``traceparent``.
    """
    from aiohttp import web

    tracer = Tracer(collector, rng=rng, sample_rate=sample_rate)

    @web.middleware
    async def middleware(request: web.Request, handler: Callable[..., Awaitable[Any]]) -> Any:
        context, parent_id = tracer.server_context(request.headers.get(TRACEPARENT))
        token = current_trace.set(context)
        start = _now()
        status, error = None, None
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except BaseException as exc:
            error = type(exc).__name__
            raise
        finally:
            current_trace.reset(token)
            tracer.finish(context, parent_id, service, f"{request.method} {request.path}",
                          start, _now(), status=status, error=error)

    return middleware


async def propagate_trace(send: Callable[[Request], Awaitable[Response]],
                          request: Request) -> Response:
    """A client interceptor: put the current trace context on the request as ``traceparent``."""
    context = current_trace.get()
    if context is not None:
        request = dataclasses.replace(
            request, headers={**request.headers, TRACEPARENT: context.to_traceparent()})
    return await send(request)


def _server_middleware(tracer: Tracer, service: str) -> Callable[..., Awaitable[Response]]:
    async def traced(request: Request, call_next: Callable[[Request], Awaitable[Response]]
                     ) -> Response:
        context, parent_id = tracer.server_context(request.header(TRACEPARENT))
        token = current_trace.set(context)
        start = _now()
        status, error = None, None
        try:
            response = await call_next(request)
            status = response.status
            return response
        except BaseException as exc:
            error = type(exc).__name__
            raise
        finally:
            current_trace.reset(token)
            tracer.finish(context, parent_id, service, f"{request.method} {request.path}",
                          start, _now(), status=status, error=error)

    traced._faultline_tracing = True  # type: ignore[attr-defined]
    return traced


def _client_interceptor(tracer: Tracer, caller: str) -> Callable[..., Awaitable[Response]]:
    async def traced(send: Callable[[Request], Awaitable[Response]], request: Request
                     ) -> Response:
        parent = current_trace.get()
        if parent is None:
            return await send(request)
        context = parent.child(tracer.rng)
        request = dataclasses.replace(
            request, headers={**request.headers, TRACEPARENT: context.to_traceparent()})
        target = request.target or "?"
        start = _now()
        status, error = None, None
        try:
            response = await send(request)
            status = response.status
            return response
        except BaseException as exc:
            error = type(exc).__name__
            raise
        finally:
            tracer.finish(context, parent.span_id, caller,
                          f"call {target} {request.method} {request.path}", start, _now(),
                          kind="client", status=status, error=error)

    traced._faultline_tracing = True  # type: ignore[attr-defined]
    return traced


def trace_shop(shop: Any, collector: SpanCollector, *, rng: random.Random | None = None,
               sample_rate: float = 1.0) -> Tracer:
    """Trace every service of ``shop`` (sim or live): server spans, client spans per attempt.

    Installing it again replaces the earlier tracing. Traces start at the gateway, sampled
    with probability ``sample_rate``; unsampled requests still carry ``traceparent``.
    """
    tracer = Tracer(collector, rng=rng, sample_rate=sample_rate)
    for name in shop.services:
        service = shop.service(name)
        service.middlewares[:] = [m for m in service.middlewares
                                  if not getattr(m, "_faultline_tracing", False)]
        service.middlewares.insert(0, _server_middleware(tracer, name))
        client = shop.client(name)
        client.interceptors[:] = [w for w in client.interceptors
                                  if not getattr(w, "_faultline_tracing", False)]
        client.interceptors.insert(0, _client_interceptor(tracer, name))
    return tracer


# --- a three-hop chain of real aiohttp apps, for testing a middleware ------------------

async def run_chain(middleware_factory: Callable[[str, Any], Any], collector: Any,
                    hops: int = 3, *, traceparent: str | None = None,
                    work: float = 0.002) -> list[Span]:
    """Serve ``hops`` aiohttp apps on 127.0.0.1 ("a" calls "b" calls "c"...), send one request.

    Each app has the middleware ``middleware_factory(service_name, collector)``; each
    handler works ``work`` seconds, then calls the next app through the kit's client,
    which sends ``traceparent`` from ``current_trace`` (``propagate_trace``). The first
    request carries ``traceparent`` when given. Returns the spans the run recorded.
    Real sockets: run it on a real event loop, not in virtual time.
    """
    from aiohttp import web

    from faultline.client import Client
    from faultline.live import HOST, HttpTransport

    if not isinstance(hops, int) or not 1 <= hops <= 26:
        raise ValueError(f"hops must be an int from 1 to 26, got {hops!r}")
    names = [chr(ord("a") + i) for i in range(hops)]
    transport = HttpTransport()
    client = Client(transport)
    client.interceptors.append(propagate_trace)
    before = len(collector.spans)
    runners: list[web.AppRunner] = []

    def handler_for(index: int) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            await asyncio.sleep(work)
            if index + 1 < hops:
                await client.request(names[index + 1], "GET", "/hop")
            return web.json_response({"service": names[index]})
        return handle

    await transport.open()
    try:
        for index, name in enumerate(names):
            app = web.Application(middlewares=[middleware_factory(name, collector)])
            app.router.add_get("/hop", handler_for(index))
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, HOST, 0).start()
            transport.urls[name] = f"http://{HOST}:{runner.addresses[0][1]}"
        headers = {TRACEPARENT: traceparent} if traceparent is not None else {}
        answer = await transport.send(names[0], Request("GET", "/hop", headers=headers))
    finally:
        await asyncio.gather(*(runner.cleanup() for runner in runners))
        await transport.close()
    if answer.status != 200:
        raise RuntimeError(f"the chain answered {answer.status}: {answer.json!r}")
    return list(collector.spans[before:])


# --- traced runs of the simulated shop, and what logs alone would show --------------------

@dataclass
class TracedRun:
    """A load run of the traced simulated shop: every request's record and every span."""

    records: list[Any]
    collector: SpanCollector

    def traces(self) -> list[list[Span]]:
        """Every trace (its spans, earliest first), in the order the traces started."""
        return list(self.collector.traces().values())

    def root(self, trace: Sequence[Span]) -> Span:
        """The span that started ``trace`` (the gateway's server span)."""
        return next(s for s in trace if s.parent_id is None)

    def slowest(self, n: int = 1) -> list[list[Span]]:
        """The ``n`` traces whose root took longest, slowest first."""
        return sorted(self.traces(), key=lambda t: -self.root(t).duration)[:n]

    def failed(self) -> list[list[Span]]:
        """The traces whose root span failed (an error status or an exception)."""
        return [t for t in self.traces() if self.root(t).failed]

    def failing_service(self, trace: Sequence[Span]) -> str:
        """The deepest service that failed in ``trace``: where the error came from."""
        depth = {s.span_id: d for d, s in trace_tree(trace)}
        failed = [s for s in trace if s.failed and s.kind == "server"]
        if not failed:
            raise ValueError("trace has no failed server span")
        return max(failed, key=lambda s: (depth[s.span_id], -s.start)).service


def simulate_traced(*, duration: float = 10.0, rate: float = 20.0, seed: int = 0,
                    setup: Callable[[Any], Any] | None = None, sample_rate: float = 1.0,
                    timeout: float | None = 5.0,
                    shop_options: dict[str, Any] | None = None) -> TracedRun:
    """Checkouts at ``rate`` per second for ``duration`` seconds on the traced SimShop.

    Runs in virtual time (same seed, same traces); ``setup(shop)`` injects faults or
    patterns; head sampling keeps a ``sample_rate`` share of the traces.
    """
    from faultline.sim import simulate

    collector = SpanCollector(wall_offset=time.time())

    def prepare(shop: Any) -> None:
        trace_shop(shop, collector, rng=random.Random(f"{seed}/tracing"),
                   sample_rate=sample_rate)
        if setup is not None:
            setup(shop)

    records = simulate(duration=duration, rates={"checkout": rate}, seed=seed, setup=prepare,
                       timeout=timeout, shop_options=shop_options)
    return TracedRun(records, collector)


def log_lines(spans: Iterable[Span], *, request_ids: bool = False) -> list[str]:
    """What each service would log per request it served, in the order the lines appear.

    Without ``request_ids`` that is all a log shows: lines of many concurrent requests,
    interleaved; with them each line carries the request's id (here its trace id), which
    ties the lines of one request together: a correlation id.
    """
    lines = []
    for span in sorted((s for s in spans if s.kind == "server"), key=lambda s: s.end):
        outcome = span.status if span.status is not None else span.error
        prefix = f"[{span.trace_id[:8]}] " if request_ids else ""
        lines.append(f"{span.end:9.3f} s  {prefix}{span.service:<9} {span.name:<15} "
                     f"-> {outcome} in {span.duration * 1000:.0f} ms")
    return lines
