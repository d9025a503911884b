"""The reference SLO maths (module 01's contract) and the record summary."""

from __future__ import annotations

import math

import pytest

from faultline.load import Record
from faultline.slo import (
    budget_remaining,
    burn_rate,
    burn_rate_series,
    error_budget,
    parallel_availability,
    percentile,
    serial_availability,
    summarize,
)


def test_serial_is_the_product_and_parallel_the_complement_of_the_downtimes():
    assert serial_availability([0.99, 0.99, 0.99]) == pytest.approx(0.970299)
    assert parallel_availability([0.9, 0.9]) == pytest.approx(0.99)
    assert serial_availability([1.0]) == 1.0 and parallel_availability([0.0, 0.0]) == 0.0


@pytest.mark.parametrize("fn", [serial_availability, parallel_availability])
@pytest.mark.parametrize("bad", [[], [1.2], [-0.1], [float("nan")]])
def test_availabilities_must_be_fractions(fn, bad):
    with pytest.raises(ValueError, match="avail"):
        fn(bad)


def test_error_budget_floors_and_survives_float_noise():
    assert error_budget(0.99, 1050) == 10
    assert error_budget(0.999, 1000) == 1  # (1 - 0.999) * 1000 is 0.9999999999999998
    with pytest.raises(ValueError, match="slo"):
        error_budget(1.0, 100)
    with pytest.raises(ValueError, match="total_requests"):
        error_budget(0.9, 0)


def test_budget_remaining_is_exact_and_goes_negative():
    assert budget_remaining(0.99, 1000, 5) == pytest.approx(0.5)
    assert budget_remaining(0.99, 1000, 30) == pytest.approx(-2.0)
    with pytest.raises(ValueError, match="failed_requests"):
        budget_remaining(0.99, 10, 11)


def test_burn_rate_is_error_rate_over_the_allowance():
    assert burn_rate(0.999, 0.0144) == pytest.approx(14.4)
    with pytest.raises(ValueError, match="error_rate"):
        burn_rate(0.99, 1.5)


def test_percentile_is_nearest_rank():
    values = [15, 20, 35, 40, 50]
    assert [percentile(values, q) for q in (0, 5, 30, 40, 50, 100)] == [15, 15, 20, 20, 35, 50]
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(ValueError, match="q must be"):
        percentile([1], 101)


def test_summarize_reports_availability_latency_and_budget():
    records = [Record(0, 0.010 * (i + 1), 200, None) for i in range(99)]
    records.append(Record(0, 5.0, None, "timeout"))
    report = summarize(records, slo=0.99)
    assert (report.requests, report.failed, report.availability) == (100, 1, 0.99)
    assert report.p50 == pytest.approx(0.5) and report.p99 == pytest.approx(0.99)
    assert report.error_budget == 1 and math.isclose(report.budget_remaining, 0.0, abs_tol=1e-9)
    assert report.met and "availability 99.0000%" in str(report)


def test_burn_rate_series_uses_trailing_windows_of_request_starts():
    records = [Record(t, t + 0.01, 200 if not 10 <= t < 15 else 503, None) for t in range(30)]
    series = burn_rate_series(records, slo=0.9, window=5, step=5)
    assert [t for t, _ in series] == [5, 10, 15, 20, 25, 30]
    assert [round(b, 9) for _, b in series] == [0, 0, 10, 0, 0, 0]  # all 5 failed in [10, 15)
    assert burn_rate_series(records, slo=0.9, window=10, step=10)[1] == (20, pytest.approx(5.0))
    with pytest.raises(ValueError, match="window"):
        burn_rate_series(records, slo=0.9, window=0)
