"""The sidecar test plumbing: serve on port 0, a recording upstream that misbehaves on cue."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

import faultline as fl
from faultline.meshcheck import Upstream, closed_url, fetch, serve, through_sidecar


def passthrough(upstream_url: str, policy: object) -> web.Application:
    """The least a sidecar can be: forward GETs once, nothing else."""
    async def forward(request: web.Request) -> web.Response:
        async with (aiohttp.ClientSession() as session,
                    session.get(upstream_url + request.raw_path,
                                headers={"X-Via": "passthrough"}) as answer):
            return web.Response(status=answer.status, body=await answer.read())

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


@pytest.mark.realtime
async def test_upstream_records_what_it_received() -> None:
    upstream = Upstream(status=201, body=b"made", headers={"X-Upstream": "yes"})
    async with serve(upstream.app()) as url:
        answer = await fetch(url + "/orders/7?a=1&a=2", "PUT", headers={"X-Caller": "ada"},
                             data=b"payload")
    assert (answer.status, answer.body, answer.headers["X-Upstream"]) == (201, b"made", "yes")
    [got] = upstream.received
    assert (got.method, got.path, got.query, got.body) == (
        "PUT", "/orders/7", (("a", "1"), ("a", "2")), b"payload")
    assert got.headers["x-caller"] == "ada" and upstream.hits == 1


@pytest.mark.realtime
async def test_upstream_follows_a_script() -> None:
    upstream = Upstream(fl.Script((503, fl.ConnectionReset(), 200)))
    async with serve(upstream.app()) as url:
        first = await fetch(url + "/")
        with pytest.raises(aiohttp.ClientPayloadError):  # the answer starts, then a reset
            await fetch(url + "/")
        third = await fetch(url + "/")
    assert (first.status, third.status, upstream.hits) == (503, 200, 3)


@pytest.mark.realtime
async def test_a_hung_upstream_is_cancelled_on_the_way_out() -> None:
    upstream = Upstream(fl.Hang())
    async with serve(upstream.app()) as url:
        with pytest.raises(TimeoutError, match=r"no answer within 0\.2 s"):
            await fetch(url + "/", timeout=0.2)
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert upstream.hits == 1 and not leftover


@pytest.mark.realtime
async def test_closed_url_refuses_connections() -> None:
    with pytest.raises(aiohttp.ClientConnectorError):
        await fetch(closed_url() + "/")


@pytest.mark.realtime
async def test_through_sidecar_puts_the_sidecar_in_front() -> None:
    upstream = Upstream(fl.Script((503,)))
    async with through_sidecar(passthrough, None, upstream) as mesh:
        first = await mesh.send("GET", "/products?x=1")
        second = await mesh.send("GET", "/products")
    assert (first.status, second.status, upstream.hits) == (503, 200, 2)
    assert upstream.received[0].headers["X-Via"] == "passthrough"
    assert upstream.received[0].query == (("x", "1"),)


@pytest.mark.realtime
async def test_through_sidecar_can_point_at_a_closed_port() -> None:
    async with through_sidecar(passthrough, None, upstream_url=closed_url()) as mesh:
        answer = await mesh.send("GET", "/")
    assert answer.status == 500  # aiohttp's answer to the unhandled connection error


def test_serve_wants_an_application() -> None:
    async def main() -> None:
        async with serve("not an app"):  # type: ignore[arg-type]
            pass

    with pytest.raises(TypeError, match="app must be"):
        asyncio.run(main())


@pytest.mark.realtime
async def test_an_app_can_be_served_twice() -> None:
    upstream = Upstream()
    app = upstream.app()
    for _ in range(2):
        async with serve(app) as url:
            assert (await fetch(url + "/")).status == 200
    assert upstream.hits == 2
