"""The one client every service calls its dependencies through, and the transports under it.

Patterns wrap it per dependency: ``client.use("payments", wrapper)`` where a wrapper is
``async def wrapper(send, request) -> Response`` and ``send(request)`` is the next layer
in (the last one is the network). For instance
``client.use("payments", lambda send, req: breaker.call(send, req))``.
The client applies the call edge's injected faults just before the transport, so a retry
meets them again, and by default raises ``UpstreamError`` for a 5xx answer so that
patterns see failures as exceptions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from faultline.errors import DeadlineExceeded, UpstreamError
from faultline.faults import FaultInjector, Outcome
from faultline.messages import Request, Response
from faultline.timeouts import DEADLINE_HEADER, Deadline, current_deadline

__all__ = ["Client", "Send", "Transport", "Wrapper"]

Send = Callable[[Request], Awaitable[Response]]
Wrapper = Callable[[Send, Request], Awaitable[Response]]


class Transport(Protocol):
    """Carries a request to a named service and brings its response back."""

    async def send(self, target: str, request: Request) -> Response: ...


class Client:
    """Calls services by name through a transport, with per-dependency wrappers and edge faults."""

    def __init__(self, transport: Transport, *, source: str | None = None,
                 faults: FaultInjector | None = None) -> None:
        self.transport = transport
        self.source = source
        self.faults = faults
        self._wrappers: dict[str, tuple[Wrapper, ...]] = {}
        # Wrappers around every attempt to every target, inside the patterns (each retry
        # passes through them again): the place for trace propagation and metrics.
        self.interceptors: list[Wrapper] = []
        self.sent: dict[str, int] = {}  # attempts that went out on the wire, per target

    def use(self, target: str, *wrappers: Wrapper) -> None:
        """Wrap every call to ``target`` (``"*"``: to any target); the first is outermost.

        Calling it again replaces the wrappers; with none given it removes them.
        """
        for wrapper in wrappers:
            if not callable(wrapper):
                raise TypeError(f"each wrapper must be callable (send, request), got {wrapper!r}")
        if wrappers:
            self._wrappers[target] = wrappers
        else:
            self._wrappers.pop(target, None)

    async def request(self, target: str, method: str, path: str, *, json: object = None,
                      headers: Mapping[str, str] | None = None,
                      raise_for_status: bool = True,
                      deadline: Deadline | None = None) -> Response:
        """Send one request to ``target`` through its wrappers; raise ``UpstreamError`` on 5xx.

        The deadline (given, or the one of the request being served) goes along as
        ``X-Deadline-Ms`` and bounds the wait: ``DeadlineExceeded`` once it has passed.
        """
        deadline = deadline if deadline is not None else current_deadline.get()
        request = Request(method.upper(), path, json, dict(headers or {}), target=target)
        chain = self._wrappers.get(target) or self._wrappers.get("*", ())
        if chain or self.interceptors:
            send: Send = self._network_send(target, raise_for_status, deadline)
            for wrapper in reversed(chain):
                send = _bind(wrapper, send)
        else:  # nothing wraps this call (the usual case): no closures to build
            send = functools.partial(self._deliver, target=target,
                                     raise_for_status=raise_for_status, deadline=deadline)
        if deadline is None:
            return await send(request)
        if deadline.expired:
            raise DeadlineExceeded(f"{target}: deadline passed before the call")
        try:
            async with asyncio.timeout(deadline.remaining()):
                return await send(request)
        except TimeoutError as exc:
            if deadline.expired and not isinstance(exc, DeadlineExceeded):
                raise DeadlineExceeded(f"{target}: deadline passed during the call") from exc
            raise

    def _network_send(self, target: str, raise_for_status: bool,
                      deadline: Deadline | None) -> Send:
        async def attempt(request: Request) -> Response:
            return await self._send_once(target, request)

        on_the_wire: Send = attempt
        for interceptor in reversed(self.interceptors):
            on_the_wire = _bind(interceptor, on_the_wire)
        return functools.partial(self._deliver, target=target, raise_for_status=raise_for_status,
                                 deadline=deadline, on_the_wire=on_the_wire)

    async def _deliver(self, request: Request, *, target: str, raise_for_status: bool,
                       deadline: Deadline | None, on_the_wire: Send | None = None) -> Response:
        """One attempt, innermost layer: add the deadline header, send it through the
        interceptors (``on_the_wire``; ``None``: there are none), raise for a 5xx."""
        if deadline is not None and request.header(DEADLINE_HEADER) is None:
            if deadline.expired:  # a retry or a slow wrapper used the time up
                raise DeadlineExceeded(f"{target}: deadline passed before the call")
            request = dataclasses.replace(
                request, headers={**request.headers, DEADLINE_HEADER: deadline.to_header()})
        if on_the_wire is None:
            response = await self._send_once(target, request)
        else:
            response = await on_the_wire(request)
        if raise_for_status and response.status >= 500:
            error = UpstreamError(response.status, target,
                                  str((response.json or {}).get("error", ""))
                                  if isinstance(response.json, dict) else "")
            error.path = response.path or (target,)  # type: ignore[attr-defined]
            error.response = response  # type: ignore[attr-defined]
            raise error
        return response

    async def _send_once(self, target: str, request: Request) -> Response:
        self.sent[target] = self.sent.get(target, 0) + 1
        if self.faults is None or self.source is None:
            return await self.transport.send(target, request)
        decision = self.faults.decide(target, caller=self.source)
        if decision.delay > 0:
            await asyncio.sleep(decision.delay)
        if decision.outcome in (Outcome.DROP, Outcome.HANG):
            await asyncio.get_running_loop().create_future()  # lost on the way: wait forever
        if decision.outcome is Outcome.RESET:
            raise ConnectionResetError(f"{self.source} -> {target}: connection reset (injected)")
        if decision.outcome is Outcome.ERROR:
            return Response(decision.status or 500,
                            {"error": f"{self.source} -> {target}: injected fault"}, path=(target,))
        response = await self.transport.send(target, request)
        if decision.bytes_per_second:
            await asyncio.sleep(len(response.body()) / decision.bytes_per_second)
        if response.bytes_per_second is None:
            return response
        return dataclasses.replace(response, bytes_per_second=None)


def _bind(wrapper: Wrapper, inner: Send) -> Send:
    async def send(request: Request) -> Response:
        return await wrapper(inner, request)

    return send
