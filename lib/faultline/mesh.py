"""The shop deployed as a service mesh: a sidecar in front of every service, mutual TLS between.

``await start_mesh(seed=...)`` starts the live shop (``faultline.live``), puts one inbound
sidecar (``faultline.sidecar``) in front of each service and points every caller at the
sidecars, so no call reaches a service except through its sidecar and its policy. With
``mtls=True`` (the default) the sidecars serve HTTPS and accept only clients with a
certificate from the mesh's own CA (``faultline.mtls``, a fresh one per mesh); each
service calls out with its own identity, and the user (``mesh.request``, ``shop.route``)
with the identity ``"user"``.

    user ──mTLS──► gateway-sidecar ──► gateway ──mTLS──► orders-sidecar ──► orders ──► ...

The services themselves still listen on plain HTTP on 127.0.0.1 (in a real mesh they
would listen on the pod's loopback only); ``mesh.service_url(name)`` is for the lesson's
"what if a caller bypassed the sidecar" demonstration, nothing else uses it.
Like ``start_shop``, ``start_mesh`` first stops the mesh it started before, so a notebook
cell can run twice in one kernel.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from faultline.live import HttpTransport, LiveShop
from faultline.messages import Response
from faultline.mtls import CertificateAuthority, Identity, client_ssl_context, server_ssl_context
from faultline.policy import SidecarPolicy
from faultline.services import SERVICES
from faultline.sidecar import RunningSidecar, SidecarMetrics, start_sidecar
from faultline.tracing import SpanCollector

__all__ = ["USER_IDENTITY", "LiveMesh", "start_mesh", "stop_mesh"]

#: The identity the mesh issues for callers from outside (the notebook, load generators).
USER_IDENTITY = "user"

PolicyArgument = SidecarPolicy | Mapping[str, SidecarPolicy] | None


def _policies(policy: PolicyArgument) -> dict[str, SidecarPolicy]:
    """One policy per service: the same for all, or a dict (missing services get defaults)."""
    if policy is None or isinstance(policy, SidecarPolicy):
        chosen = policy if policy is not None else SidecarPolicy()
        return dict.fromkeys(SERVICES, chosen)
    if not isinstance(policy, Mapping):
        raise TypeError("policy must be a SidecarPolicy, a dict of them by service, or None; "
                        f"got {type(policy).__name__}")
    unknown = set(policy) - set(SERVICES)
    if unknown:
        raise ValueError(f"policy names unknown service(s) {sorted(unknown)}; "
                         f"the shop has {SERVICES}")
    for name, value in policy.items():
        if not isinstance(value, SidecarPolicy):
            raise TypeError(f"policy[{name!r}] must be a SidecarPolicy, "
                            f"got {type(value).__name__}")
    return {name: policy.get(name, SidecarPolicy()) for name in SERVICES}


def _session(ssl_context: ssl.SSLContext | None) -> aiohttp.ClientSession:
    """A client session like ``HttpTransport``'s (no limits, no timeout) with a TLS identity."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ssl=ssl_context if ssl_context else True),
        timeout=aiohttp.ClientTimeout(total=None))


class _IdentityTransport(HttpTransport):
    """``HttpTransport`` that calls out with one service's certificate, over the mesh's URLs."""

    def __init__(self, urls: dict[str, str], ssl_context: ssl.SSLContext) -> None:
        super().__init__()
        self.urls = urls  # shared with the shop: every caller sees the sidecars' URLs
        self.ssl_context = ssl_context

    async def open(self) -> None:
        self.session = _session(self.ssl_context)


class LiveMesh:
    """The live shop with a sidecar in front of each service (see the module docstring).

    ``policy`` is one ``SidecarPolicy`` for every sidecar, a dict by service name (others
    get the default policy), or ``None`` (the default for all). ``collector`` receives a
    span from every sidecar; ``shop_options`` go to ``LiveShop`` (``work``, ``workers``).
    """

    def __init__(self, *, seed: int | str | None = None, policy: PolicyArgument = None,
                 mtls: bool = True, collector: SpanCollector | None = None,
                 **shop_options: Any) -> None:
        if not isinstance(mtls, bool):
            raise TypeError(f"mtls must be a bool, got {mtls!r}")
        self.policies = _policies(policy)
        self.mtls = mtls
        self.seed = seed
        self.collector = collector
        self.shop = LiveShop(seed=seed, **shop_options)
        self.ca: CertificateAuthority | None = None
        self.identities: dict[str, Identity] = {}
        self._sidecars: dict[str, RunningSidecar] = {}
        self._service_urls: dict[str, str] = {}
        self._transports: list[HttpTransport] = []

    @property
    def running(self) -> bool:
        return bool(self._sidecars)

    # -- where things are

    def sidecar(self, name: str) -> RunningSidecar:
        """The sidecar in front of service ``name``."""
        self.shop.service(name)  # a ValueError naming the shop's services
        try:
            return self._sidecars[name]
        except KeyError:
            raise RuntimeError("the mesh is not running: start it first") from None

    def metrics(self, name: str) -> SidecarMetrics:
        """The counters of the sidecar in front of service ``name``."""
        return self.sidecar(name).metrics

    def all_metrics(self) -> dict[str, dict[str, Any]]:
        """Every sidecar's counters as plain dicts, by service name."""
        return {name: sidecar.metrics.as_dict() for name, sidecar in self._sidecars.items()}

    def url(self, name: str = "gateway") -> str:
        """The base URL callers use for ``name``: its sidecar's (the gateway's: the entry)."""
        return self.sidecar(name).url

    def service_url(self, name: str) -> str:
        """The service's own URL behind its sidecar (plain HTTP; for demonstrations only)."""
        self.sidecar(name)
        return self._service_urls[name]

    def client_ssl_context(self, identity: str = USER_IDENTITY) -> ssl.SSLContext | None:
        """An SSL context presenting ``identity``'s certificate (``None`` without mTLS)."""
        if not self.mtls:
            return None
        try:
            chosen = self.identities[identity]
        except KeyError:
            raise ValueError(f"identity must be one of {sorted(self.identities)}, "
                             f"got {identity!r}") from None
        return client_ssl_context(chosen.certfile, chosen.keyfile, chosen.cafile)

    # -- using it

    async def request(self, method: str, path: str, *, json: object = None,
                      headers: Mapping[str, str] | None = None) -> Response:
        """Send one request to the gateway (through its sidecar) as a user would."""
        return await self.shop.request(method, path, json=json, headers=headers)

    def route(self, name: str, *, deadline: float | None = None
              ) -> Callable[[], Awaitable[Response]]:
        """``shop.route(name)``: one user request per call, entering through the mesh."""
        return self.shop.route(name, deadline=deadline)

    # -- life cycle

    async def start(self) -> LiveMesh:
        """Start the shop, the CA and identities, and the sidecars; point callers at them."""
        if self._sidecars:
            return self
        try:
            await self.shop.start()
            urls = self.shop.http.urls
            self._service_urls = dict(urls)
            if self.mtls:
                self.ca = CertificateAuthority()
                for name in (*SERVICES, USER_IDENTITY):
                    self.identities[name] = self.ca.issue(name)
            for name in SERVICES:
                server_ssl = None
                if self.mtls:
                    me = self.identities[name]
                    server_ssl = server_ssl_context(me.certfile, me.keyfile, me.cafile)
                rng = (random.Random(f"{self.seed}/sidecar/{name}")
                       if self.seed is not None else None)
                self._sidecars[name] = await start_sidecar(
                    self._service_urls[name], self.policies[name], server_ssl=server_ssl,
                    rng=rng, collector=self.collector, name=f"{name}-sidecar")
            urls.update({name: sidecar.url for name, sidecar in self._sidecars.items()})
            if self.mtls:
                await self._use_identities(urls)
        except BaseException:
            await self.stop()
            raise
        return self

    async def _use_identities(self, urls: dict[str, str]) -> None:
        """Each service calls out with its own certificate; the user with ``"user"``'s."""
        for name in SERVICES:
            transport = _IdentityTransport(urls, self.client_ssl_context(name))  # type: ignore[arg-type]
            await transport.open()
            self._transports.append(transport)
            self.shop.client(name).transport = transport
        # The shop's own transport serves the user's client (shop.request, shop.route).
        await self.shop.http.close()
        self.shop.http.session = _session(self.client_ssl_context(USER_IDENTITY))

    async def stop(self) -> None:
        """Stop the sidecars (cancelling requests in flight), the shop, the CA; safe twice."""
        sidecars, self._sidecars = list(self._sidecars.values()), {}
        await asyncio.gather(*(sidecar.stop() for sidecar in sidecars))
        await self.shop.stop()
        transports, self._transports = self._transports, []
        await asyncio.gather(*(transport.close() for transport in transports))
        for name in SERVICES:  # back to the shop's own transport, for a later start()
            self.shop.client(name).transport = self.shop.http
        if self.ca is not None:
            self.ca.cleanup()
            self.ca = None
        self.identities.clear()

    async def __aenter__(self) -> LiveMesh:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def __repr__(self) -> str:
        if not self._sidecars:
            return "<LiveMesh stopped>"
        scheme = "mTLS" if self.mtls else "plain HTTP"
        return f"<LiveMesh {len(self._sidecars)} sidecars, {scheme}, entry {self.url()}>"


_current: LiveMesh | None = None


async def start_mesh(*, seed: int | str | None = None, policy: PolicyArgument = None,
                     mtls: bool = True, collector: SpanCollector | None = None,
                     **shop_options: Any) -> LiveMesh:
    """Start the shop as a mesh; a mesh started earlier by this function is stopped first.

    ``policy``: one ``SidecarPolicy`` for all sidecars, or a dict by service name.
    ``shop_options`` are ``LiveShop``'s (``work``, ``workers``).
    """
    global _current
    await stop_mesh()
    mesh = LiveMesh(seed=seed, policy=policy, mtls=mtls, collector=collector, **shop_options)
    _current = await mesh.start()
    return mesh


async def stop_mesh() -> None:
    """Stop the mesh that ``start_mesh`` started, if any."""
    global _current
    mesh, _current = _current, None
    if mesh is not None:
        await mesh.stop()
