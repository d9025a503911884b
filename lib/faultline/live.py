"""The toy shop over real HTTP on 127.0.0.1: aiohttp apps on ephemeral ports.

``make_service_app(service)`` is the app factory for one service: every request goes to
the transport-neutral ``Service.handle``; an injected reset really resets the TCP
connection, a slow answer really trickles out. ``/_admin/faults`` switches the service's
faults at runtime (GET shows, PUT replaces, DELETE clears; ``?caller=orders`` for the
edge from orders). ``LiveShop`` starts all six and stops them cleanly;
``await start_shop()`` in a notebook replaces the shop the kernel started before.
"""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import struct
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web

from faultline.faults import fault_from_dict
from faultline.messages import PATH_HEADER, Request, Response
from faultline.services import Service, Shop, Work

__all__ = [
    "HttpTransport",
    "LiveShop",
    "compare_local_and_network",
    "make_service_app",
    "start_shop",
    "stop_shop",
]

SERVICE_KEY = web.AppKey("service", Service)
# Handlers in progress: a hung one outlives its connection (aiohttp does not cancel a
# handler when the client goes away), so LiveShop.stop() cancels them itself.
HANDLERS_KEY = web.AppKey("handlers", set)
HOST = "127.0.0.1"


def _reset_connection(request: web.BaseRequest) -> None:
    """Close the TCP connection with RST (SO_LINGER 0), as a crashed peer would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _write(request: web.Request, response: Response) -> web.StreamResponse:
    body = response.body()
    headers = {**response.headers, PATH_HEADER: ",".join(response.path)}
    if body:
        headers["Content-Type"] = "application/json"
    rate = response.bytes_per_second
    if not rate:
        return web.Response(status=response.status, body=body, headers=headers)
    stream = web.StreamResponse(status=response.status, headers=headers)
    stream.content_length = len(body)
    await stream.prepare(request)
    chunk = max(1, int(rate / 20))  # about twenty writes a second
    for i in range(0, len(body), chunk):
        piece = body[i:i + chunk]
        await asyncio.sleep(len(piece) / rate)
        await stream.write(piece)
    await stream.write_eof()
    return stream


async def _serve(request: web.Request) -> web.StreamResponse:
    handlers = request.app[HANDLERS_KEY]
    task = asyncio.current_task()
    handlers.add(task)
    try:
        return await _serve_request(request)
    finally:
        handlers.discard(task)


async def _serve_request(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE_KEY]
    raw = await request.read()
    try:
        payload = json.loads(raw) if raw else None
    except ValueError:
        return web.json_response({"error": "the body is not valid JSON"}, status=400)
    shop_request = Request(request.method, request.path, payload, dict(request.headers))
    try:
        response = await service.handle(shop_request)
    except ConnectionResetError:
        _reset_connection(request)
        raise asyncio.CancelledError() from None  # nothing more to send on a reset connection
    return await _write(request, response)


def _caller(request: web.Request) -> str | None:
    return request.query.get("caller") or None


async def _admin_show(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    faults = service.faults.faults(service.name, _caller(request))
    return web.json_response({
        "service": service.name,
        "caller": _caller(request),
        "faults": [f.to_dict() for f in faults],
        "fallacies": sorted({f.fallacy for f in faults}),
        "all": service.faults.snapshot(),
    })


async def _admin_replace(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    try:
        data = await request.json()
        items = data.get("faults", data) if isinstance(data, dict) else data
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            raise ValueError("send a fault object, a list of them, or {\"faults\": [...]}")
        faults = [fault_from_dict(item) for item in items]
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    caller = _caller(request)
    if caller is None:
        service.faults.inject(service.name, *faults)
    else:
        service.faults.inject_edge(caller, service.name, *faults)
    return await _admin_show(request)


async def _admin_clear(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    caller = _caller(request)
    if caller is None:
        service.faults.inject(service.name)
    else:
        service.faults.clear_edge(caller, service.name)
    return await _admin_show(request)


def make_service_app(service: Service) -> web.Application:
    """The aiohttp application serving ``service``, with its admin endpoint for faults."""
    app = web.Application()
    app[SERVICE_KEY] = service
    app[HANDLERS_KEY] = set()
    app.router.add_get("/_admin/faults", _admin_show)
    app.router.add_put("/_admin/faults", _admin_replace)
    app.router.add_delete("/_admin/faults", _admin_clear)
    app.router.add_route("*", "/{tail:.*}", _serve)
    return app


class HttpTransport:
    """Sends requests over HTTP; network failures become the built-in ``ConnectionError``s."""

    def __init__(self) -> None:
        self.urls: dict[str, str] = {}
        self.session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        # No connection limit and no default timeout: those are the patterns' job.
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def send(self, target: str, request: Request) -> Response:
        if self.session is None:
            raise RuntimeError("the shop is not running: start it first")
        try:
            url = self.urls[target] + request.path
        except KeyError:
            raise ValueError(f"no service {target!r} in this shop") from None
        headers = dict(request.headers)
        data = None
        if request.json is not None:
            data = json.dumps(request.json).encode()
            headers["Content-Type"] = "application/json"
        try:
            async with self.session.request(request.method, url, data=data,
                                            headers=headers) as answer:
                raw = await answer.read()
                status, answer_headers = answer.status, dict(answer.headers)
        except aiohttp.ClientConnectorError as exc:
            raise ConnectionRefusedError(f"{target}: cannot connect ({exc.os_error})") from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise ConnectionResetError(f"{target}: connection reset ({exc})") from exc
        except aiohttp.ClientOSError as exc:
            if exc.errno in (errno.ECONNRESET, errno.EPIPE):
                raise ConnectionResetError(f"{target}: connection reset") from exc
            raise ConnectionError(f"{target}: {exc}") from exc
        try:
            payload: Any = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode(errors="replace")
        path = tuple(p for p in answer_headers.pop(PATH_HEADER, "").split(",") if p)
        return Response(status, payload, answer_headers, path=path)


class LiveShop(Shop):
    """The shop's six services as real HTTP servers on 127.0.0.1, ports chosen by the OS."""

    def __init__(self, *, seed: int | str | None = None,
                 work: Mapping[str, Work] | None = None,
                 workers: Mapping[str, int | None] | None = None) -> None:
        self.http = HttpTransport()
        super().__init__(self.http, seed=seed, work=work, workers=workers)
        self._runners: list[web.AppRunner] = []

    @property
    def running(self) -> bool:
        return bool(self._runners)

    def url(self, name: str) -> str:
        """The base URL of service ``name``, e.g. ``http://127.0.0.1:43125``."""
        self.service(name)
        if name not in self.http.urls:
            raise RuntimeError("the shop is not running: start it first")
        return self.http.urls[name]

    async def start(self) -> LiveShop:
        if self._runners:
            return self
        await self.http.open()
        try:
            for name in self.services:
                # Handlers that hang are cancelled 0.2 s into shutdown instead of 60 s.
                runner = web.AppRunner(make_service_app(self.service(name)), access_log=None,
                                       shutdown_timeout=0.2)
                await runner.setup()
                self._runners.append(runner)
                await web.TCPSite(runner, HOST, 0).start()
                port = runner.addresses[0][1]
                self.http.urls[name] = f"http://{HOST}:{port}"
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        """Cancel hung handlers, close every server, then the client; safe to call twice."""
        runners, self._runners = self._runners, []
        hung = [task for runner in runners for task in runner.app[HANDLERS_KEY]]
        for task in hung:
            task.cancel()
        await asyncio.gather(*hung, return_exceptions=True)
        await asyncio.gather(*(runner.cleanup() for runner in runners))
        await self.http.close()
        self.http.urls.clear()

    async def __aenter__(self) -> LiveShop:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def __repr__(self) -> str:
        where = ", ".join(f"{n}={u}" for n, u in self.http.urls.items()) or "stopped"
        return f"<LiveShop {where}>"


_current: LiveShop | None = None


async def start_shop(*, seed: int | str | None = None, **options: Any) -> LiveShop:
    """Start the live shop; a shop started earlier by this function is stopped first.

    That makes a notebook cell safe to run twice. ``options`` are ``work`` and ``workers``.
    """
    global _current
    await stop_shop()
    _current = await LiveShop(seed=seed, **options).start()
    return _current


async def stop_shop() -> None:
    """Stop the shop that ``start_shop`` started, if any."""
    global _current
    shop, _current = _current, None
    if shop is not None:
        await shop.stop()


async def compare_local_and_network(shop: LiveShop, n: int = 200) -> dict[str, list[float]]:
    """Latency of ``n`` in-process calls vs ``n`` HTTP calls on loopback to the same handler.

    Both ask the login service for ``GET /ping`` (no simulated work), so the difference is
    what the network costs: serialisation, the kernel's TCP stack, the event loop.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    login = shop.service("login")
    ping = Request("GET", "/ping")
    local, network = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        await login.handle(ping)
        local.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await shop.http.send("login", ping)
        network.append(time.perf_counter() - t0)
    return {"in-process call": local, "HTTP on loopback": network}
