"""SLO maths: availability of serial and redundant systems, error budgets, burn rates, percentiles.

These are the reference answers to module 01 (same names and contracts as the graded
exercise) plus ``summarize`` for the request records that the load generators produce.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "SloReport",
    "budget_remaining",
    "burn_rate",
    "burn_rate_series",
    "error_budget",
    "parallel_availability",
    "percentile",
    "serial_availability",
    "summarize",
]


def _fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be a fraction in [0, 1], got {value!r}")
    return float(value)


def _slo(slo: float) -> float:
    if isinstance(slo, bool) or not isinstance(slo, int | float):
        raise TypeError(f"slo must be a number, got {type(slo).__name__}")
    if not 0.0 < slo < 1.0:
        raise ValueError(f"slo must lie strictly between 0 and 1, got {slo!r}")
    return float(slo)


def _availabilities(avails: Iterable[float]) -> list[float]:
    values = [_fraction("each availability", a) for a in avails]
    if not values:
        raise ValueError("avails must not be empty")
    return values


def serial_availability(avails: Iterable[float]) -> float:
    """Availability of a chain where every part must be up: the product of the parts."""
    return math.prod(_availabilities(avails))


def parallel_availability(avails: Iterable[float]) -> float:
    """Availability of redundant replicas where any one up suffices: 1 - product of downtimes."""
    return 1.0 - math.prod(1.0 - a for a in _availabilities(avails))


def _total(total_requests: int) -> int:
    if isinstance(total_requests, bool) or not isinstance(total_requests, int):
        raise TypeError(f"total_requests must be an int, got {type(total_requests).__name__}")
    if total_requests <= 0:
        raise ValueError(f"total_requests must be > 0, got {total_requests}")
    return total_requests


def error_budget(slo: float, total_requests: int) -> int:
    """Failed requests the SLO allows in the window: ``floor((1 - slo) * total_requests)``."""
    slo, total = _slo(slo), _total(total_requests)
    # Round away float noise first: (1 - 0.999) * 1000 is 0.99999..., which must count as 1.
    return math.floor(round((1.0 - slo) * total, 9))


def budget_remaining(slo: float, total_requests: int, failed_requests: int) -> float:
    """Share of the error budget left, ``1 - failed / ((1 - slo) * total)``; < 0 once overspent."""
    slo, total = _slo(slo), _total(total_requests)
    if isinstance(failed_requests, bool) or not isinstance(failed_requests, int):
        raise TypeError(f"failed_requests must be an int, got {type(failed_requests).__name__}")
    if not 0 <= failed_requests <= total:
        raise ValueError(
            f"failed_requests must be between 0 and total_requests ({total}), got {failed_requests}"
        )
    return 1.0 - failed_requests / ((1.0 - slo) * total)


def burn_rate(slo: float, error_rate: float) -> float:
    """How fast the budget burns, ``error_rate / (1 - slo)``; 1.0 spends it exactly on time."""
    slo = _slo(slo)
    return _fraction("error_rate", error_rate) / (1.0 - slo)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: sort, take the element of rank ``max(1, ceil(q / 100 * n))``."""
    if isinstance(q, bool) or not isinstance(q, int | float):
        raise TypeError(f"q must be a number, got {type(q).__name__}")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q!r}")
    ordered = sorted(values)
    if not ordered:
        raise ValueError("values must not be empty")
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class SloReport:
    """What a run of requests says about an SLO."""

    requests: int
    failed: int
    availability: float
    p50: float
    p90: float
    p99: float
    slo: float
    error_budget: int
    budget_remaining: float
    burn_rate: float

    @property
    def met(self) -> bool:
        return self.availability >= self.slo

    def __str__(self) -> str:
        verdict = "met" if self.met else "MISSED"
        return (
            f"{self.requests} requests, {self.failed} failed: availability "
            f"{self.availability:.4%} (SLO {self.slo:.2%} {verdict}); latency p50 "
            f"{self.p50 * 1000:.1f} ms, p90 {self.p90 * 1000:.1f} ms, "
            f"p99 {self.p99 * 1000:.1f} ms; "
            f"error budget {self.error_budget} requests, {self.budget_remaining:.0%} left, "
            f"burn rate {self.burn_rate:.2f}"
        )


def summarize(records: Sequence, slo: float = 0.99) -> SloReport:
    """Availability, latency percentiles and error budget for a list of load ``Record``s."""
    if not records:
        raise ValueError("records must not be empty")
    failed = sum(1 for r in records if not r.ok)
    latencies = [r.latency for r in records]
    n = len(records)
    return SloReport(
        requests=n,
        failed=failed,
        availability=(n - failed) / n,
        p50=percentile(latencies, 50),
        p90=percentile(latencies, 90),
        p99=percentile(latencies, 99),
        slo=slo,
        error_budget=error_budget(slo, n),
        budget_remaining=budget_remaining(slo, n, failed),
        burn_rate=burn_rate(slo, failed / n),
    )


def burn_rate_series(
    records: Sequence, slo: float, window: float, *, step: float | None = None,
) -> list[tuple[float, float]]:
    """Burn rate over a trailing ``window`` of seconds, every ``step`` seconds (default: window).

    Each point is ``(t, burn_rate)`` for the requests that started in ``[t - window, t)``,
    from ``t = window`` to the last start; a window without requests burns nothing. Two
    such series (say 1 h and 5 min) make the multi-window alert of the SRE Workbook.
    """
    if not window > 0:
        raise ValueError(f"window must be > 0 seconds, got {window!r}")
    step = window if step is None else step
    if not step > 0:
        raise ValueError(f"step must be > 0 seconds, got {step!r}")
    _slo(slo)
    ordered = sorted(records, key=lambda r: r.start)
    if not ordered:
        raise ValueError("records must not be empty")
    starts = [r.start for r in ordered]
    failed_before = [0]
    for r in ordered:
        failed_before.append(failed_before[-1] + (not r.ok))
    points = []
    t = window
    while t <= starts[-1] + step:
        lo, hi = bisect.bisect_left(starts, t - window), bisect.bisect_left(starts, t)
        n = hi - lo
        failed = failed_before[hi] - failed_before[lo]
        points.append((t, burn_rate(slo, failed / n) if n else 0.0))
        t += step
    return points
