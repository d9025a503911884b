"""The toy shop's services, written once and served over any transport.

A ``Service`` is a name, a table of handlers and a bounded pool of workers. ``handle`` is
the server side of every transport: it applies the service's injected faults, waits for a
worker, runs the handler (simulated work plus calls to dependencies through one
``Client``) and turns a handler's exception into the status a real service would send.

    gateway ──► orders ──► inventory, payments, email      (POST /checkout)
       ├──────► login                                      (POST /login)
       └──────► inventory                                  (GET /products)
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from faultline.client import Client, Transport
from faultline.errors import BulkheadFullError, CircuitOpenError, UpstreamError
from faultline.faults import Decision, FaultInjector, Outcome
from faultline.messages import Request, Response
from faultline.timeouts import DEADLINE_HEADER, Deadline, current_deadline

__all__ = [
    "DEFAULT_WORK",
    "DEPENDENCIES",
    "ROUTES",
    "SERVICES",
    "Context",
    "Service",
    "Shop",
    "Work",
    "error_response",
]

SERVICES = ("gateway", "orders", "payments", "inventory", "email", "login")
DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "gateway": ("orders", "login", "inventory"),
    "orders": ("inventory", "payments", "email"),
}
# What a user can ask the gateway for: route name -> (method, path, body).
ROUTES: dict[str, tuple[str, str, dict | None]] = {
    "checkout": ("POST", "/checkout", {"item": "umbrella", "quantity": 1, "amount": 25.0}),
    "login": ("POST", "/login", {"user": "ada"}),
    "products": ("GET", "/products", None),
}


@dataclass(frozen=True)
class Work:
    """Simulated work per request: log-normal around ``median`` seconds, spread ``sigma``."""

    median: float
    sigma: float = 0.25

    def __post_init__(self) -> None:
        if not self.median >= 0 or math.isinf(self.median):
            raise ValueError(f"median must be a finite number >= 0, got {self.median!r}")
        if not self.sigma >= 0 or math.isinf(self.sigma):
            raise ValueError(f"sigma must be a finite number >= 0, got {self.sigma!r}")

    def sample(self, rng: random.Random) -> float:
        if self.sigma == 0:
            return self.median
        return self.median * math.exp(self.sigma * rng.gauss(0.0, 1.0))


DEFAULT_WORK: dict[str, Work] = {
    "gateway": Work(0.001),
    "orders": Work(0.004),
    "payments": Work(0.015),
    "inventory": Work(0.003),
    "email": Work(0.008),
    "login": Work(0.005),
}


def error_response(exc: Exception) -> Response:
    """The status a service answers with when a call it depends on failed with ``exc``.

    A dependency's 503 or 504 is passed on as it is (so a caller up the chain can tell
    "overloaded" and "too late" apart, and may retry it); any other failure is a 502.
    """
    if isinstance(exc, TimeoutError):
        status = 504
    elif isinstance(exc, CircuitOpenError | BulkheadFullError):
        status = 503
    elif isinstance(exc, UpstreamError):
        status = exc.status if exc.status in (503, 504) else 502
    elif isinstance(exc, ConnectionError):
        status = 502
    else:
        status = 500
    return Response(status, {"error": f"{type(exc).__name__}: {exc}"})


if tuple(f.name for f in dataclasses.fields(Response)) == (
        "status", "json", "headers", "path", "bytes_per_second"):
    def _with_path(response: Response, path: tuple[str, ...],
                   bytes_per_second: float | None) -> Response:
        """``dataclasses.replace(response, path=..., bytes_per_second=...)``, about twice
        as fast (every hop of every request makes one)."""
        return Response(response.status, response.json, response.headers, path,
                        bytes_per_second)
else:  # Response has changed: the general way
    def _with_path(response: Response, path: tuple[str, ...],
                   bytes_per_second: float | None) -> Response:
        return dataclasses.replace(response, path=path, bytes_per_second=bytes_per_second)


async def wait_forever() -> None:
    """Block until cancelled: how a hung service or a lost packet looks from the inside."""
    await asyncio.get_running_loop().create_future()


class Context:
    """What a handler gets besides its request: simulated work and calls to dependencies."""

    def __init__(self, service: Service, request: Request) -> None:
        self.service = service
        self.request = request
        self.visited: list[str] = []

    async def work(self, seconds: float | None = None) -> None:
        """Spend ``seconds`` (default: a sample of the service's work time) doing the job."""
        delay = self.service.work.sample(self.service.rng) if seconds is None else seconds
        if delay > 0:
            await asyncio.sleep(delay)

    async def call(self, target: str, method: str, path: str, *, json: object = None,
                   headers: Mapping[str, str] | None = None) -> Response:
        """Call a dependency through the service's client; record it in the request's path."""
        try:
            response = await self.service.client.request(target, method, path, json=json,
                                                         headers=headers)
        except Exception as exc:
            self.visited.extend(getattr(exc, "path", ()) or (target,))
            raise
        self.visited.extend(response.path or (target,))
        return response


Handler = Callable[[Context, Request], Awaitable[Response]]
Middleware = Callable[..., Awaitable[Response]]  # (request, call_next) -> Response


class Service:
    """One toy service: its handlers, its worker pool, its faults, its client for dependencies."""

    def __init__(
        self,
        name: str,
        handlers: Mapping[tuple[str, str], Handler],
        *,
        client: Client,
        faults: FaultInjector,
        work: Work,
        rng: random.Random,
        workers: int | None = None,
    ) -> None:
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers must be an int >= 1 or None, got {workers!r}")
        self.name = name
        self.handlers = dict(handlers)
        self.client = client
        self.faults = faults
        self.work = work
        self.rng = rng
        self.workers = workers
        self._pool = asyncio.Semaphore(workers) if workers else None
        self.state: dict[str, object] = {}
        self.middlewares: list[Middleware] = []
        self.busy = 0  # requests holding a worker right now
        self.waiting = 0  # requests queued for a worker right now
        self.received = 0  # requests that reached this service (after network faults)
        self.deadline_exceeded = 0  # requests answered 504 because their deadline passed

    async def handle(self, request: Request) -> Response:
        """Serve one request through the service's middlewares (the first is outermost).

        A middleware is ``async def mw(request, call_next) -> Response``, the transport-neutral
        counterpart of an aiohttp middleware: tracing installs one on every service.
        """
        if not self.middlewares:
            return await self._handle(request)
        call: Callable[[Request], Awaitable[Response]] = self._handle
        for middleware in reversed(self.middlewares):
            call = functools.partial(middleware, call_next=call)
        return await call(request)

    async def _handle(self, request: Request) -> Response:
        """Serve one request: injected faults, a worker, the handler, errors as statuses.

        Raises ``ConnectionResetError`` for an injected reset, which a transport turns into
        a reset connection; never returns for an injected hang or blackhole. A request
        carrying ``X-Deadline-Ms`` is answered 504 at once when its deadline has passed
        (on arrival, or after queueing for a worker), and its work is cut off there.
        """
        decision = self.faults.decide(self.name)
        if decision.outcome is Outcome.DROP:
            await wait_forever()
        self.received += 1
        deadline = None
        header = request.header(DEADLINE_HEADER)
        if header is not None:
            try:
                deadline = Deadline.from_header(header, clock=asyncio.get_running_loop().time)
            except ValueError as exc:
                return Response(400, {"error": str(exc)}, path=(self.name,))
            if deadline.expired:
                return self._deadline_exceeded("on arrival")
        if self._pool is None:  # unbounded: a worker at once
            return await self._with_worker(decision, request, deadline)
        self.waiting += 1
        queued = True
        try:
            async with self._pool:
                self.waiting -= 1
                queued = False
                return await self._with_worker(decision, request, deadline)
        finally:
            if queued:  # gave up (cancelled) while waiting for a worker
                self.waiting -= 1

    async def _with_worker(self, decision: Decision, request: Request,
                           deadline: Deadline | None) -> Response:
        """The part of ``handle`` that holds a worker."""
        if deadline is not None and deadline.expired:
            return self._deadline_exceeded("while queued for a worker")
        self.busy += 1
        token = current_deadline.set(deadline)
        try:
            if deadline is None:
                response, visited = await self._work(decision, request)
            else:
                try:
                    async with asyncio.timeout(deadline.remaining()):
                        response, visited = await self._work(decision, request)
                except TimeoutError:
                    return self._deadline_exceeded("while working")
        finally:
            current_deadline.reset(token)
            self.busy -= 1
        return _with_path(response, (self.name, *visited), decision.bytes_per_second)

    async def _work(self, decision: Decision, request: Request) -> tuple[Response, list[str]]:
        """What the service does with a worker: injected delay and failures, else the handler."""
        if decision.delay > 0:
            await asyncio.sleep(decision.delay)
        if decision.outcome is Outcome.HANG:
            await wait_forever()
        if decision.outcome is Outcome.RESET:
            raise ConnectionResetError(f"{self.name}: connection reset (injected)")
        if decision.outcome is Outcome.ERROR:
            return Response(decision.status or 500, {"error": f"{self.name}: injected fault"}), []
        return await self._run_handler(request)

    def _deadline_exceeded(self, when: str) -> Response:
        self.deadline_exceeded += 1
        return Response(504, {"error": f"{self.name}: deadline exceeded {when}"},
                        path=(self.name,))

    async def _run_handler(self, request: Request) -> tuple[Response, list[str]]:
        handler = self.handlers.get((request.method.upper(), request.path))
        if handler is None:
            return Response(404, {"error": f"{self.name} has no {request.method} "
                                           f"{request.path}"}), []
        ctx = Context(self, request)
        try:
            return await handler(ctx, request), ctx.visited
        except Exception as exc:
            return error_response(exc), ctx.visited


# --- the shop's handlers ------------------------------------------------------------------

async def _gateway_checkout(ctx: Context, request: Request) -> Response:
    await ctx.work()
    key = request.header("Idempotency-Key")
    answer = await ctx.call("orders", "POST", "/orders", json=request.json,
                            headers={"Idempotency-Key": key} if key else None)
    return Response(answer.status, answer.json)


async def _gateway_login(ctx: Context, request: Request) -> Response:
    await ctx.work()
    answer = await ctx.call("login", "POST", "/login", json=request.json)
    return Response(answer.status, answer.json)


async def _gateway_products(ctx: Context, request: Request) -> Response:
    await ctx.work()
    answer = await ctx.call("inventory", "GET", "/products")
    return Response(answer.status, answer.json)


async def _orders_create(ctx: Context, request: Request) -> Response:
    """Reserve stock, charge, send the confirmation: all three must work (a serial chain)."""
    orders: dict[str, dict] = ctx.service.state.setdefault("orders", {})  # type: ignore[assignment]
    in_progress: set[str] = ctx.service.state.setdefault("in_progress", set())  # type: ignore[assignment]
    key = request.header("Idempotency-Key")
    if key is not None and key in orders:
        return Response(200, {**orders[key], "replayed": True})
    if key is not None and key in in_progress:  # a retry overtook the first try
        return Response(409, {"error": f"an order with Idempotency-Key {key!r} is in progress"})
    if key is not None:
        in_progress.add(key)
    try:
        await ctx.work()
        body = request.json or {}
        await ctx.call("inventory", "POST", "/reserve", json=body)
        await ctx.call("payments", "POST", "/charge", json={"amount": body.get("amount", 0)})
        await ctx.call("email", "POST", "/send", json={"template": "order-confirmation"})
        counter = ctx.service.state.setdefault("ids", itertools.count(1))
        order = {"order_id": next(counter), "item": body.get("item"), "status": "placed"}  # type: ignore[call-overload]
        orders[key if key is not None else f"order-{order['order_id']}"] = order
        return Response(201, order)
    finally:
        if key is not None:
            in_progress.discard(key)


async def _payments_charge(ctx: Context, request: Request) -> Response:
    await ctx.work()
    charges = ctx.service.state.setdefault("charges", [])
    charges.append((request.json or {}).get("amount", 0))  # type: ignore[union-attr]
    return Response(200, {"charged": (request.json or {}).get("amount", 0)})


async def _inventory_reserve(ctx: Context, request: Request) -> Response:
    await ctx.work()
    return Response(200, {"reserved": (request.json or {}).get("quantity", 1)})


_CATALOG = [{"sku": f"sku-{i:03d}", "name": f"Umbrella model {i}", "price": 10.0 + i,
             "description": "Keeps you dry when the network doesn't."} for i in range(40)]


async def _inventory_products(ctx: Context, request: Request) -> Response:
    await ctx.work()
    return Response(200, {"products": _CATALOG})


async def _email_send(ctx: Context, request: Request) -> Response:
    await ctx.work()
    return Response(202, {"queued": True})


async def _login_login(ctx: Context, request: Request) -> Response:
    await ctx.work()
    user = (request.json or {}).get("user", "guest")
    return Response(200, {"user": user, "token": f"token-{user}"})


async def _ping(ctx: Context, request: Request) -> Response:
    return Response(200, {"service": ctx.service.name})


HANDLERS: dict[str, dict[tuple[str, str], Handler]] = {
    "gateway": {("POST", "/checkout"): _gateway_checkout, ("POST", "/login"): _gateway_login,
                ("GET", "/products"): _gateway_products},
    "orders": {("POST", "/orders"): _orders_create},
    "payments": {("POST", "/charge"): _payments_charge},
    "inventory": {("POST", "/reserve"): _inventory_reserve,
                  ("GET", "/products"): _inventory_products},
    "email": {("POST", "/send"): _email_send},
    "login": {("POST", "/login"): _login_login},
}
for _routes in HANDLERS.values():
    _routes["GET", "/ping"] = _ping


class Shop:
    """The six services wired to one transport, with one fault injector and seeded randomness.

    ``work`` and ``workers`` override a service's simulated work time and worker pool
    size (``None``: unbounded). ``shop.client("orders")`` is the client orders uses for its
    dependencies: wrap it with patterns via ``.use(target, wrapper)``.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        seed: int | str | None = None,
        work: Mapping[str, Work] | None = None,
        workers: Mapping[str, int | None] | None = None,
    ) -> None:
        unknown = (set(work or ()) | set(workers or ())) - set(SERVICES)
        if unknown:
            raise ValueError(f"unknown service(s) {sorted(unknown)}; the shop has {SERVICES}")
        self.seed = seed
        self.transport = transport
        self.faults = FaultInjector(seed)
        work_times = {**DEFAULT_WORK, **(work or {})}
        self._services: dict[str, Service] = {}
        for name in SERVICES:
            rng = random.Random(f"{seed}/work/{name}") if seed is not None else random.Random()
            self._services[name] = Service(
                name, HANDLERS[name], client=Client(transport, source=name, faults=self.faults),
                faults=self.faults, work=work_times[name], rng=rng,
                workers=(workers or {}).get(name))
        self.user = Client(transport, source=None, faults=self.faults)

    @property
    def services(self) -> tuple[str, ...]:
        """The names of the shop's services."""
        return tuple(self._services)

    def service(self, name: str) -> Service:
        """The service called ``name`` (its state, counters and handlers)."""
        try:
            return self._services[name]
        except KeyError:
            raise ValueError(f"unknown service {name!r}; the shop has {SERVICES}") from None

    def client(self, name: str) -> Client:
        """The client that service ``name`` calls its dependencies with."""
        return self.service(name).client

    def route(self, name: str, *, deadline: float | None = None
              ) -> Callable[[], Awaitable[Response]]:
        """An async function that sends one user request for route ``name`` to the gateway.

        With ``deadline`` (seconds) each request carries a deadline that far in the future,
        which every hop propagates.
        """
        if name not in ROUTES:
            raise ValueError(f"unknown route {name!r}; routes are {sorted(ROUTES)}")
        method, path, body = ROUTES[name]
        if deadline is not None:
            Deadline.after(deadline)  # check the value now, not on every request

        async def send() -> Response:
            limit = None
            if deadline is not None:
                limit = Deadline.after(deadline, clock=asyncio.get_running_loop().time)
            return await self.user.request("gateway", method, path, json=body,
                                           raise_for_status=False, deadline=limit)

        send.__name__ = f"send_{name}"
        return send

    async def request(self, method: str, path: str, *, json: object = None,
                      headers: Mapping[str, str] | None = None) -> Response:
        """Send one request to the gateway as a user would; error statuses are returned."""
        return await self.user.request("gateway", method, path, json=json, headers=headers,
                                       raise_for_status=False)
