"""The shop as a mesh: every call through a sidecar, mutual TLS between them."""

from __future__ import annotations

import ssl

import aiohttp
import pytest

from faultline.faults import Script
from faultline.mesh import LiveMesh, start_mesh, stop_mesh
from faultline.meshcheck import fetch
from faultline.mtls import CertificateAuthority, client_ssl_context
from faultline.policy import SidecarPolicy
from faultline.services import SERVICES
from faultline.sidecar import SidecarMetrics
from faultline.tracing import SpanCollector

pytestmark = pytest.mark.realtime


async def test_checkout_login_and_products_go_through_every_sidecar_over_mtls():
    mesh = await start_mesh(seed=1)
    try:
        assert mesh.url().startswith("https://") and mesh.url() == mesh.url("gateway")
        assert mesh.shop.url("payments") == mesh.url("payments")  # callers see sidecars
        checkout = await mesh.route("checkout")()
        login = await mesh.request("POST", "/login", json={"user": "ada"})
        products = await mesh.request("GET", "/products")
        assert (checkout.status, login.status, products.status) == (201, 200, 200)
        assert checkout.path == ("gateway", "orders", "inventory", "payments", "email")
        requests = {name: mesh.metrics(name).requests for name in SERVICES}
        assert requests == {"gateway": 3, "orders": 1, "payments": 1, "inventory": 2,
                            "email": 1, "login": 1}
        assert {name: mesh.shop.service(name).received for name in SERVICES} == requests
    finally:
        await stop_mesh()


async def test_start_mesh_stops_the_mesh_it_started_before():
    first = await start_mesh(seed=2)
    try:
        entry = first.url()
        second = await start_mesh(seed=2)
        assert not first.running and second.running
        with pytest.raises(aiohttp.ClientError):  # the first mesh's gateway is gone
            await fetch(entry + "/products", ssl_context=second.client_ssl_context())
        assert (await second.request("GET", "/products")).status == 200
    finally:
        await stop_mesh()
    assert not second.running
    await stop_mesh()  # nothing left to stop: no error


async def test_plain_http_and_certificateless_clients_are_refused():
    async with LiveMesh(seed=3) as mesh:
        sidecar = mesh.url("payments")
        assert sidecar.startswith("https://")
        with pytest.raises(aiohttp.ClientError):
            await fetch("http://" + sidecar.removeprefix("https://") + "/ping")
        assert mesh.ca is not None
        no_certificate = ssl.create_default_context(cafile=str(mesh.ca.cafile))
        with pytest.raises(aiohttp.ClientError):
            await fetch(sidecar + "/ping", ssl_context=no_certificate)
        stranger_ca = CertificateAuthority("stranger")
        try:
            stranger = stranger_ca.issue("orders")
            foreign = client_ssl_context(stranger.certfile, stranger.keyfile, mesh.ca.cafile)
            with pytest.raises(aiohttp.ClientError):
                await fetch(sidecar + "/ping", ssl_context=foreign)
        finally:
            stranger_ca.cleanup()
        assert mesh.shop.service("payments").received == 0
        member = await fetch(sidecar + "/ping", ssl_context=mesh.client_ssl_context("orders"))
        assert member.status == 200
        assert mesh.shop.service("payments").received == 1


async def test_sidecar_retries_a_flaky_dependency_for_its_callers():
    policy = SidecarPolicy(backoff_base=0.001, backoff_cap=0.004)
    async with LiveMesh(seed=4, policy={"inventory": policy}) as mesh:
        mesh.shop.faults.inject("inventory", Script((503, 503, 200)))
        answer = await mesh.request("GET", "/products")
        assert answer.status == 200
        assert mesh.metrics("inventory") == SidecarMetrics(requests=1, attempts=3, retries=2,
                                                           responses={200: 1})
        assert mesh.shop.service("inventory").received == 3
        assert mesh.metrics("gateway").retries == 0
        assert mesh.policies["inventory"] is policy
        assert mesh.policies["gateway"] == SidecarPolicy()


async def test_plain_mesh_every_sidecar_records_a_span():
    collector = SpanCollector()
    async with LiveMesh(seed=5, mtls=False, collector=collector) as mesh:
        assert mesh.url().startswith("http://") and mesh.client_ssl_context() is None
        assert (await mesh.route("checkout")()).status == 201
    # The shop's client does not send traceparent: the gateway's sidecar starts the trace,
    # and each sidecar behind it starts its own (services don't propagate it on their own).
    assert sorted(span.service for span in collector.spans) == sorted(
        f"{name}-sidecar" for name in ("gateway", "orders", "inventory", "payments", "email"))


@pytest.mark.parametrize(("policy", "error"), [
    ({"nowhere": SidecarPolicy()}, ValueError),
    ({"orders": {"timeout": 1}}, TypeError),
    (1.0, TypeError),
])
async def test_bad_policies_are_refused_naming_the_argument(policy, error):
    with pytest.raises(error, match="policy"):
        LiveMesh(policy=policy)


async def test_a_stopped_mesh_says_so():
    mesh = LiveMesh(seed=0)
    with pytest.raises(RuntimeError, match="not running"):
        mesh.url()
    with pytest.raises(ValueError, match="unknown service"):
        mesh.sidecar("billing")
    assert repr(mesh) == "<LiveMesh stopped>"
