"""Test plumbing for sidecars on real sockets: serve an app, a recording upstream, one call.

The grade cells of ``07-service-mesh`` and the sidecar tests put a sidecar between a
client and an ``Upstream`` whose answers follow faultline's faults (``Script``, ``Hang``,
``ConnectionReset``, ``Latency``), and count what reached it::

    upstream = Upstream(fl.Script((503, 503, 200)))
    async with through_sidecar(make_sidecar, policy, upstream) as mesh:
        answer = await mesh.send("GET", "/products")
    answer.status, upstream.hits   # 200, 3

Everything binds 127.0.0.1 port 0 and is stopped on the way out, hung handlers included.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from faultline.faults import Fault, FaultInjector, Outcome
from faultline.live import HOST, _reset_connection

__all__ = [
    "Answer",
    "Mesh",
    "Received",
    "Upstream",
    "closed_url",
    "fetch",
    "serve",
    "through_sidecar",
    "tls_outcome",
]

_NAME = "upstream"


@asynccontextmanager
async def serve(app: web.Application, *,
                ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1, port chosen by the OS; yields its base URL.

    On the way out, handlers still running (a hung upstream, a sidecar without a timeout)
    are cancelled, then the server is closed: aiohttp alone would leave them pending.
    """
    if not isinstance(app, web.Application):
        raise TypeError(f"app must be an aiohttp.web.Application, got {type(app).__name__}")
    running: set[asyncio.Task[Any]] = set()

    @web.middleware
    async def track(request: web.Request, handler: Any) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        running.add(task)
        try:
            return await handler(request)
        finally:
            running.discard(task)

    if not app.frozen:  # an app served before keeps its middlewares as they are
        app.middlewares.insert(0, track)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    try:
        await web.TCPSite(runner, HOST, 0, ssl_context=ssl_context).start()
        scheme = "https" if ssl_context is not None else "http"
        yield f"{scheme}://{HOST}:{runner.addresses[0][1]}"
    finally:
        hung = list(running)
        for task in hung:
            task.cancel()
        await asyncio.gather(*hung, return_exceptions=True)
        await runner.cleanup()


def closed_url() -> str:
    """A base URL on 127.0.0.1 where nothing listens: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
    return f"http://{HOST}:{port}"


@dataclass(frozen=True)
class Received:
    """One request as the upstream saw it."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    headers: CIMultiDictProxy[str]
    body: bytes


class Upstream:
    """A one-route-for-all aiohttp service that records every request and misbehaves on cue.

    Each request is decided by ``faults`` (as a shop service would be): a ``Script`` of
    statuses and faults, ``Hang``, ``ConnectionReset`` (the answer starts, then the
    connection is reset), ``Latency``... A request that passes is answered with
    ``status``, ``body`` and ``headers``.
    """

    def __init__(self, *faults: Fault, status: int = 200, body: bytes = b'{"ok": true}',
                 headers: Mapping[str, str] | None = None, seed: int = 0) -> None:
        self.faults = FaultInjector(seed)
        self.faults.inject(_NAME, *faults)
        self.status = status
        self.body = body
        self.headers = dict(headers or {"Content-Type": "application/json"})
        self.received: list[Received] = []

    @property
    def hits(self) -> int:
        """How many requests reached this upstream."""
        return len(self.received)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(Received(request.method, request.path,
                                      tuple(request.query.items()),
                                      CIMultiDictProxy(CIMultiDict(request.headers)), body))
        decision = self.faults.decide(_NAME)
        if decision.delay:
            await asyncio.sleep(decision.delay)
        if decision.outcome in (Outcome.HANG, Outcome.DROP):
            await asyncio.Event().wait()  # cancelled when the server stops
        if decision.outcome is Outcome.RESET:
            # Reset halfway through the answer. A reset before the status line would be
            # retried once by aiohttp's client itself (for idempotent methods), hiding
            # what the sidecar does; this one reaches it as ClientPayloadError.
            answer = web.StreamResponse(status=self.status, headers=self.headers)
            answer.content_length = len(self.body) + 64
            await answer.prepare(request)
            await answer.write(self.body)
            _reset_connection(request)
            raise asyncio.CancelledError()  # nothing more to send on a reset connection
        if decision.outcome is Outcome.ERROR:
            return web.json_response({"error": "injected"}, status=decision.status or 500)
        return web.Response(status=self.status, body=self.body, headers=self.headers)


@dataclass(frozen=True)
class Answer:
    """What a client got back, and how long it took (seconds)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    seconds: float


async def fetch(url: str, method: str = "GET", *, headers: Mapping[str, str] | None = None,
                data: bytes | None = None, ssl_context: ssl.SSLContext | None = None,
                timeout: float = 3.0) -> Answer:
    """One request on a fresh connection; connection failures raise ``aiohttp.ClientError``.

    ``ssl_context`` is used for ``https://`` URLs (``None``: the system's default checks).

    ``timeout`` (seconds, whole request) raises ``TimeoutError``, so a test never waits
    for long on a server that never answers.
    """
    connector = aiohttp.TCPConnector(ssl=ssl_context if ssl_context is not None else True,
                                     force_close=True)
    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        try:
            async with asyncio.timeout(timeout):
                async with session.request(method, url, headers=headers, data=data,
                                           allow_redirects=False) as response:
                    body = await response.read()
        except TimeoutError:
            raise TimeoutError(f"{method} {url}: no answer within {timeout:g} s") from None
    return Answer(response.status, response.headers, body, time.perf_counter() - start)


async def tls_outcome(url: str, ssl_context: ssl.SSLContext | None) -> str:
    """``"answered <status>"`` if a GET over ``ssl_context`` got an answer, else ``"refused"``.

    Refused means the TLS handshake (or the first read after it, in TLS 1.3, where the
    server checks the client's certificate after the client thinks it is done) failed.
    """
    try:
        answer = await fetch(url, ssl_context=ssl_context)
    except (aiohttp.ClientError, ssl.SSLError, ConnectionError):
        return "refused"
    return f"answered {answer.status}"


@dataclass
class Mesh:
    """A client's view of a sidecar in front of an upstream (made by ``through_sidecar``)."""

    url: str
    upstream_url: str
    upstream: Upstream
    sidecar: web.Application

    async def send(self, method: str = "GET", path: str = "/", *,
                   headers: Mapping[str, str] | None = None, data: bytes | None = None,
                   timeout: float = 3.0) -> Answer:
        """Send one request through the sidecar (``path`` may carry a query string)."""
        return await fetch(self.url + path, method, headers=headers, data=data,
                           timeout=timeout)


@asynccontextmanager
async def through_sidecar(make_sidecar: Callable[[str, Any], web.Application], policy: Any,
                          upstream: Upstream | None = None, *,
                          upstream_url: str | None = None) -> AsyncIterator[Mesh]:
    """Serve ``upstream`` and ``make_sidecar(<its url>, policy)`` in front of it.

    ``upstream_url`` instead points the sidecar somewhere else (e.g. ``closed_url()``).
    """
    upstream = upstream if upstream is not None else Upstream()
    async with serve(upstream.app()) as served:
        target = upstream_url if upstream_url is not None else served
        sidecar = make_sidecar(target, policy)
        async with serve(sidecar) as url:
            yield Mesh(url, target, upstream, sidecar)
