"""Faultline: toy microservices that fail on command, and the patterns that survive them.

``import faultline as fl`` gives the shop (live over HTTP, or simulated in virtual time),
fault injection, load generators, SLO maths and time, the sidecar and its policy;
``fl.viz``, ``fl.widgets``, ``fl.mesh``, ``fl.mtls`` and ``fl.envoy`` load their heavier
dependencies (matplotlib, ipywidgets, cryptography, the Envoy binary) on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from faultline.breaker import CircuitBreaker
from faultline.bulkhead import Bulkhead, little_pool_size
from faultline.clock import FakeClock, VirtualTimeLoop, run_virtual
from faultline.errors import (
    BulkheadFullError,
    CircuitOpenError,
    DeadlineExceeded,
    UpstreamError,
    VirtualTimeDeadlock,
)
from faultline.faults import (
    Blackhole,
    ConnectionReset,
    ErrorRate,
    FaultInjector,
    Hang,
    Latency,
    LatencySpikes,
    RandomLatency,
    Script,
    Slow,
    fault_from_dict,
)
from faultline.live import LiveShop, compare_local_and_network, start_shop, stop_shop
from faultline.load import Record, closed_loop, open_loop
from faultline.messages import Request, Response
from faultline.policy import SidecarPolicy
from faultline.retry import RetryBudget, RetryPolicy, backoff_delay
from faultline.services import ROUTES, SERVICES, Shop, Work
from faultline.sidecar import make_sidecar, sidecar_metrics, start_sidecar
from faultline.sim import SimShop, simulate
from faultline.slo import (
    budget_remaining,
    burn_rate,
    error_budget,
    parallel_availability,
    percentile,
    serial_availability,
    summarize,
)
from faultline.timeouts import DEADLINE_HEADER, Deadline, with_timeout

__version__ = "0.1.0"

__all__ = [
    "DEADLINE_HEADER",
    "ROUTES",
    "SERVICES",
    "Blackhole",
    "Bulkhead",
    "BulkheadFullError",
    "CircuitBreaker",
    "CircuitOpenError",
    "ConnectionReset",
    "Deadline",
    "DeadlineExceeded",
    "ErrorRate",
    "FakeClock",
    "FaultInjector",
    "Hang",
    "Latency",
    "LatencySpikes",
    "LiveShop",
    "RandomLatency",
    "Record",
    "Request",
    "Response",
    "RetryBudget",
    "RetryPolicy",
    "Script",
    "Shop",
    "SidecarPolicy",
    "SimShop",
    "Slow",
    "UpstreamError",
    "VirtualTimeDeadlock",
    "VirtualTimeLoop",
    "Work",
    "backoff_delay",
    "budget_remaining",
    "burn_rate",
    "closed_loop",
    "compare_local_and_network",
    "error_budget",
    "fault_from_dict",
    "little_pool_size",
    "make_sidecar",
    "open_loop",
    "parallel_availability",
    "percentile",
    "run_virtual",
    "serial_availability",
    "sidecar_metrics",
    "simulate",
    "start_shop",
    "start_sidecar",
    "stop_shop",
    "summarize",
    "with_timeout",
]

_LAZY = {"viz", "widgets", "checks", "breaker_widget", "tracing", "chaos",
         "mesh", "mtls", "envoy", "meshlab"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f"faultline.{name}")
    raise AttributeError(f"module 'faultline' has no attribute {name!r}")
