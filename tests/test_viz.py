"""Plots: each function draws what it says, with labelled axes, and hands back its Axes."""

import base64

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from faultline import viz
from faultline.load import Record

OK, FAIL = matplotlib.colors.to_rgba(viz.OK_COLOUR), matplotlib.colors.to_rgba(viz.FAIL_COLOUR)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def rec(latency_ms: float, *, start: float = 0.0, ok: bool = True, route: str = "") -> Record:
    end = start + latency_ms / 1000
    return Record(start, end, 200 if ok else 503, None, ("gateway",), route)


ONE_TO_HUNDRED = [rec(ms) for ms in range(1, 101)]  # p50 = 50 ms, p99 = 99 ms (nearest rank)


def legend_labels(ax: Axes) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def texts(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.texts]


# --- latency_cdf


def test_cdf_draws_one_line_per_series_on_a_log_ms_axis():
    ax = viz.latency_cdf({"a": ONE_TO_HUNDRED, "b": ONE_TO_HUNDRED[:50], "c": [rec(5)]})
    series_lines = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert len(series_lines) == 3
    assert [label.split()[0] for label in legend_labels(ax)] == ["a", "b", "c"]
    assert "ms" in ax.get_xlabel()
    assert ax.get_xscale() == "log"
    assert ax.get_title(loc="left") == "Latency CDF"


def test_cdf_rises_from_zero_to_one_over_the_sorted_latencies():
    ax = viz.latency_cdf(list(reversed(ONE_TO_HUNDRED)), log=False)
    (line,) = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
    xs, ys = line.get_data()
    assert list(xs) == pytest.approx([1.0, *range(1, 101)])
    assert ys[0] == 0.0 and ys[-1] == 1.0
    assert ax.get_xscale() == "linear"


def test_cdf_marks_p50_and_p99_at_their_nearest_rank_values():
    ax = viz.latency_cdf(ONE_TO_HUNDRED)
    points = [tuple(c.get_offsets()[0]) for c in ax.collections]
    assert points == [pytest.approx((50.0, 0.5)), pytest.approx((99.0, 0.99))]
    assert "p50 = 50 ms" in texts(ax) and "p99 = 99 ms" in texts(ax)


def test_cdf_puts_percentiles_in_the_legend_when_comparing():
    ax = viz.latency_cdf({"before": ONE_TO_HUNDRED, "after": [rec(200)]}, mark=(99,))
    assert legend_labels(ax) == ["before  (p99 99 ms)", "after  (p99 200 ms)"]


def test_cdf_on_a_log_axis_survives_zero_latency():
    ax = viz.latency_cdf([rec(0.0), rec(0.0), rec(3.0)])
    (line,) = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert min(line.get_xdata()) > 0


def test_cdf_draws_on_the_axes_it_is_given():
    _fig, ax = plt.subplots()
    assert viz.latency_cdf(ONE_TO_HUNDRED, ax=ax) is ax


@pytest.mark.parametrize("bad", [[], {}, {"a": ONE_TO_HUNDRED, "empty": []}])
def test_cdf_refuses_empty_input(bad):
    with pytest.raises(ValueError, match="empty"):
        viz.latency_cdf(bad)


# --- latency_histogram


def test_histogram_overlays_series_on_shared_bins_with_p99_marked():
    ax = viz.latency_histogram({"fast": ONE_TO_HUNDRED, "slow": [rec(500), rec(700)]}, bins=20)
    assert legend_labels(ax) == ["fast", "slow"]
    assert "ms" in ax.get_xlabel() and ax.get_ylabel() == "requests"
    dashed = [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert dashed == [99.0, 700.0]
    assert "p99 99 ms" in texts(ax)


def test_histogram_of_one_series_needs_no_legend():
    ax = viz.latency_histogram(ONE_TO_HUNDRED, bins=10)
    assert legend_labels(ax) == []
    assert "100 requests, 10 bins; dashed: p99" in texts(ax)


def test_histogram_log_uses_a_log_axis():
    ax = viz.latency_histogram(ONE_TO_HUNDRED, log=True)
    assert ax.get_xscale() == "log"
    assert "log" in ax.get_xlabel()


@pytest.mark.parametrize("bins", [0, -3, 2.5, True])
def test_histogram_refuses_bad_bins(bins):
    with pytest.raises(ValueError, match="bins"):
        viz.latency_histogram(ONE_TO_HUNDRED, bins=bins)


# --- timeline


TIMELINE = [
    rec(10, start=0.1), rec(30, start=0.2),  # second 0: two successes
    rec(2000, start=1.5, ok=False),  # second 1: one failure
    rec(20, start=2.5),  # second 2: one success
]


def test_timeline_stacks_successes_and_failures_per_bucket():
    fig = viz.timeline(TIMELINE, bucket=1.0)
    assert isinstance(fig, Figure)
    top, bottom = fig.axes
    succeeded, failed = top.containers
    assert [bar.get_height() for bar in succeeded] == [2, 0, 1]
    assert [bar.get_height() for bar in failed] == [0, 1, 0]
    assert [bar.get_y() for bar in failed] == [2, 0, 1]  # stacked on the successes
    assert top.get_ylabel() == "requests per 1 s"
    assert "ms" in bottom.get_ylabel() and "s" in bottom.get_xlabel()


def test_timeline_plots_p50_and_p99_per_bucket_in_ms():
    _top, bottom = viz.timeline(TIMELINE, bucket=1.0).axes
    lines = {line.get_label(): list(line.get_ydata()) for line in bottom.get_lines()}
    assert lines["p99"] == pytest.approx([30, 2000, 20])
    assert lines["p50"] == pytest.approx([10, 2000, 20])
    assert list(bottom.get_lines()[0].get_xdata()) == [0.5, 1.5, 2.5]  # bucket middles


def test_timeline_leaves_gaps_for_empty_buckets():
    _top, bottom = viz.timeline([rec(10, start=0.5), rec(10, start=2.5)]).axes
    p99 = next(line for line in bottom.get_lines() if line.get_label() == "p99")
    assert p99.get_ydata()[1] != p99.get_ydata()[1]  # NaN: no line through silence


def test_timeline_marks_events_on_both_panels():
    fig = viz.timeline(TIMELINE, title="Chaos", events=[(1.0, "payments 30 % errors")])
    top, bottom = fig.axes
    for ax in (top, bottom):
        assert [1.0, 1.0] in [list(line.get_xdata()) for line in ax.get_lines()]
    assert "payments 30 % errors" in texts(top)
    assert top.get_title(loc="left") == "Chaos"


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"bucket": 0}, ValueError), ({"bucket": float("inf")}, ValueError),
    ({"events": [(1.0,)]}, ValueError), ({"events": [("soon", "x")]}, ValueError),
])
def test_timeline_refuses_bad_arguments(kwargs, error):
    with pytest.raises(error):
        viz.timeline(TIMELINE, **kwargs)


def test_timeline_takes_one_run_only():
    with pytest.raises(TypeError, match="one list"):
        viz.timeline({"a": TIMELINE})
    with pytest.raises(ValueError, match="empty"):
        viz.timeline([])


def test_timeline_shows_once_in_a_notebook(monkeypatch):
    """Check that displaying the figure takes it from pyplot, so the cell shows it once."""
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda data, raw: shown.append(data))
    fig = viz.timeline(TIMELINE)
    assert plt.fignum_exists(fig.number)
    fig._ipython_display_()
    assert not plt.fignum_exists(fig.number)
    (data,) = shown
    assert base64.b64decode(data["image/png"]).startswith(b"\x89PNG")


# --- availability_bars


def test_availability_bars_colour_each_bar_by_the_slo():
    avails = {"one": 0.99, "serial": 0.970299, "parallel": 0.9999}
    ax = viz.availability_bars(avails, slo=0.99)
    bars = ax.patches
    assert len(bars) == 3
    assert [bar.get_facecolor() for bar in bars] == [OK, FAIL, OK]
    top_down = sorted(ax.get_yticklabels(), key=lambda t: -t.get_position()[1])
    assert [t.get_text() for t in top_down] == ["one", "serial", "parallel"]  # as given
    assert {"99 %", "97.03 %", "99.99 %", "SLO 99 %"} <= set(texts(ax))  # just enough digits
    slo_lines = [line for line in ax.get_lines() if line.get_label() == "SLO 99 %"]
    assert list(slo_lines[0].get_xdata()) == [0.99, 0.99]


def test_availability_axis_zooms_to_a_round_number_below_the_lowest_value():
    ax = viz.availability_bars({"a": 0.97, "b": 0.999})
    assert ax.get_xlim() == pytest.approx((0.95, 1.0))
    assert [bar.get_x() + bar.get_width() for bar in ax.patches] == pytest.approx([0.97, 0.999])
    assert "95 %" in ax.get_xlabel()


@pytest.mark.parametrize(("avails", "slo", "match"), [
    ({}, None, "empty"), ({"a": 1.2}, None, "'a'"), ({"a": -0.1}, None, "'a'"),
    ({"a": 0.9}, 1.0, "slo"), ({"a": 0.9}, 0, "slo"),
])
def test_availability_bars_refuse_bad_values(avails, slo, match):
    with pytest.raises(ValueError, match=match):
        viz.availability_bars(avails, slo=slo)


def test_latency_plots_take_plain_seconds_too():
    ax = viz.latency_cdf({"local": [0.0001, 0.0002], "network": [0.001, 0.003]})
    labels = [line.get_label() for line in ax.get_lines()]
    assert len([label for label in labels if label.startswith(("local", "network"))]) == 2
