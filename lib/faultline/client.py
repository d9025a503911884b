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
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from faultline.errors import UpstreamError
from faultline.faults import FaultInjector, Outcome
from faultline.messages import Request, Response

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
                      raise_for_status: bool = True) -> Response:
        """Send one request to ``target`` through its wrappers; raise ``UpstreamError`` on 5xx."""
        request = Request(method.upper(), path, json, dict(headers or {}))
        send: Send = self._network_send(target, raise_for_status)
        chain = self._wrappers.get(target) or self._wrappers.get("*", ())
        for wrapper in reversed(chain):
            send = _bind(wrapper, send)
        return await send(request)

    def _network_send(self, target: str, raise_for_status: bool) -> Send:
        async def send(request: Request) -> Response:
            response = await self._send_once(target, request)
            if raise_for_status and response.status >= 500:
                error = UpstreamError(response.status, target,
                                      str((response.json or {}).get("error", ""))
                                      if isinstance(response.json, dict) else "")
                error.path = response.path or (target,)  # type: ignore[attr-defined]
                error.response = response  # type: ignore[attr-defined]
                raise error
            return response

        return send

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
        return dataclasses.replace(response, bytes_per_second=None)


def _bind(wrapper: Wrapper, inner: Send) -> Send:
    async def send(request: Request) -> Response:
        return await wrapper(inner, request)

    return send
