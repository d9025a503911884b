"""Mutual TLS: certificates made at run time, and real handshakes on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from faultline.meshcheck import fetch, serve
from faultline.mtls import (
    CertificateAuthority,
    Identity,
    client_ssl_context,
    describe_certificate,
    server_ssl_context,
)


def hello_app() -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    return app


@pytest.fixture(scope="module")
def mesh_ca():
    ca = CertificateAuthority()
    yield ca
    ca.cleanup()


@pytest.fixture(scope="module")
def other_ca():
    ca = CertificateAuthority("someone-else-ca")
    yield ca
    ca.cleanup()


def server_ctx(identity: Identity) -> ssl.SSLContext:
    return server_ssl_context(identity.certfile, identity.keyfile, identity.cafile)


def client_ctx(identity: Identity) -> ssl.SSLContext:
    return client_ssl_context(identity.certfile, identity.keyfile, identity.cafile)


def test_issued_certificate_names_hosts_and_issuer(mesh_ca: CertificateAuthority) -> None:
    identity = mesh_ca.issue("orders", hosts=("127.0.0.1", "orders.mesh"))
    info = describe_certificate(identity.certfile)
    assert (info["subject"], info["issuer"]) == ("orders", "faultline-mesh-ca")
    assert sorted(info["sans"]) == ["127.0.0.1", "orders.mesh"]
    now = dt.datetime.now(dt.UTC)
    assert info["not_before"] < now - dt.timedelta(minutes=59)
    assert now + dt.timedelta(hours=23) < info["not_after"] <= now + dt.timedelta(days=1)
    assert identity.cafile == mesh_ca.cafile
    assert describe_certificate(mesh_ca.cafile)["subject"] == "faultline-mesh-ca"


def test_temporary_directory_is_removed_by_cleanup() -> None:
    ca = CertificateAuthority()
    identity = ca.issue("login")
    assert identity.keyfile.exists() and (identity.keyfile.stat().st_mode & 0o077) == 0
    ca.cleanup()
    assert not ca.directory.exists()


def test_given_directory_is_kept(tmp_path: Path) -> None:
    ca = CertificateAuthority(directory=tmp_path / "pki")
    ca.issue("email")
    ca.cleanup()
    assert sorted(p.name for p in (tmp_path / "pki").iterdir()) == [
        "ca.pem", "email.key", "email.pem"]


def test_missing_file_is_named(mesh_ca: CertificateAuthority, tmp_path: Path) -> None:
    identity = mesh_ca.issue("payments")
    missing = tmp_path / "nope.pem"
    for factory in (server_ssl_context, client_ssl_context):
        with pytest.raises(FileNotFoundError, match=r"certfile.*nope\.pem"):
            factory(missing, identity.keyfile, identity.cafile)
        with pytest.raises(FileNotFoundError, match=r"cafile.*nope\.pem"):
            factory(identity.certfile, identity.keyfile, missing)
    with pytest.raises(TypeError, match="keyfile"):
        server_ssl_context(identity.certfile, None, identity.cafile)
    with pytest.raises(FileNotFoundError, match="path"):
        describe_certificate(missing)


def test_mismatched_key_is_a_clear_error(mesh_ca: CertificateAuthority) -> None:
    one, two = mesh_ca.issue("one"), mesh_ca.issue("two")
    with pytest.raises(ValueError, match=r"certfile.*keyfile"):
        client_ssl_context(one.certfile, two.keyfile, one.cafile)


@pytest.mark.parametrize("bad", ["", "a/b", ".hidden"])
def test_bad_names_are_refused(mesh_ca: CertificateAuthority, bad: str) -> None:
    with pytest.raises(ValueError, match="name"):
        mesh_ca.issue(bad)


def test_contexts_require_tls12_and_certificates(mesh_ca: CertificateAuthority) -> None:
    identity = mesh_ca.issue("gateway")
    server, client = server_ctx(identity), client_ctx(identity)
    assert server.verify_mode is ssl.CERT_REQUIRED
    assert client.verify_mode is ssl.CERT_REQUIRED and client.check_hostname
    assert server.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert client.minimum_version >= ssl.TLSVersion.TLSv1_2


@pytest.mark.realtime
async def test_mutual_tls_handshake_works(mesh_ca: CertificateAuthority) -> None:
    server, client = mesh_ca.issue("inventory"), mesh_ca.issue("orders")
    async with serve(hello_app(), ssl_context=server_ctx(server)) as url:
        assert url.startswith("https://127.0.0.1:")
        answer = await fetch(url + "/", ssl_context=client_ctx(client))
        # localhost is in the certificate as well as 127.0.0.1
        by_name = await fetch(url.replace("127.0.0.1", "localhost") + "/",
                              ssl_context=client_ctx(client))
    assert (answer.status, answer.body, by_name.status) == (200, b"hello", 200)


@pytest.mark.realtime
async def test_client_without_certificate_is_refused(mesh_ca: CertificateAuthority) -> None:
    server = mesh_ca.issue("inventory")
    anonymous = ssl.create_default_context(cafile=str(mesh_ca.cafile))  # trusts, no cert
    async with serve(hello_app(), ssl_context=server_ctx(server)) as url:
        with pytest.raises(aiohttp.ClientError):
            await fetch(url + "/", ssl_context=anonymous)


@pytest.mark.realtime
async def test_client_from_another_ca_is_refused(mesh_ca: CertificateAuthority,
                                                  other_ca: CertificateAuthority) -> None:
    server, stranger = mesh_ca.issue("inventory"), other_ca.issue("orders")
    # The stranger trusts our CA, so only the server's check of its certificate can fail.
    context = client_ssl_context(stranger.certfile, stranger.keyfile, mesh_ca.cafile)
    async with serve(hello_app(), ssl_context=server_ctx(server)) as url:
        with pytest.raises(aiohttp.ClientError):
            await fetch(url + "/", ssl_context=context)


@pytest.mark.realtime
async def test_client_refuses_a_server_from_another_ca(mesh_ca: CertificateAuthority,
                                                       other_ca: CertificateAuthority) -> None:
    impostor, client = other_ca.issue("inventory"), mesh_ca.issue("orders")
    lenient = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # asks for no client certificate
    lenient.load_cert_chain(impostor.certfile, impostor.keyfile)
    async with serve(hello_app(), ssl_context=lenient) as url:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await fetch(url + "/", ssl_context=client_ctx(client))


@pytest.mark.realtime
async def test_client_checks_the_host_name(mesh_ca: CertificateAuthority) -> None:
    elsewhere, client = mesh_ca.issue("inventory", hosts=("inventory.mesh",)), mesh_ca.issue("a")
    async with serve(hello_app(), ssl_context=server_ctx(elsewhere)) as url:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await fetch(url + "/", ssl_context=client_ctx(client))


@pytest.mark.realtime
async def test_plain_http_to_the_tls_port_fails(mesh_ca: CertificateAuthority) -> None:
    server = mesh_ca.issue("inventory")
    async with serve(hello_app(), ssl_context=server_ctx(server)) as url:
        with pytest.raises(aiohttp.ClientError):
            await fetch(url.replace("https://", "http://") + "/")
