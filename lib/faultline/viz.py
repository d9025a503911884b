"""Plots of load runs: latency CDFs and histograms, timelines, availability bars.

Every function takes the ``Record`` list that ``faultline.load`` returns, or a dict
``{label: records}`` to compare runs side by side; draws on ``ax`` when given (else on a
new figure) and returns the Axes, or the Figure for the multi-panel timeline. Nothing here
calls ``plt.show()``: in a notebook the figure appears under the cell.

Colours are Okabe & Ito's colour-blind-safe palette; green is success, vermilion failure.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt  # only to create figures; drawing goes through Axes
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter, PercentFormatter

from faultline.load import Record
from faultline.slo import percentile

__all__ = ["availability_bars", "latency_cdf", "latency_histogram", "timeline"]

Records = Sequence[Record]
RecordsOrDict = Records | Mapping[str, Records]

# Okabe & Ito (2008), "Color Universal Design": distinguishable with any colour vision.
SERIES_COLOURS = ("#0072B2", "#E69F00", "#CC79A7", "#56B4E9", "#009E73", "#D55E00", "#000000")
OK_COLOUR = "#009E73"
FAIL_COLOUR = "#D55E00"
P50_COLOUR = "#0072B2"
P99_COLOUR = "#E69F00"
INK = "#333333"
GRID = "#e6e6e6"

# Log axes cannot show 0 ms (instant answers in virtual time): draw them at 1 µs.
_LOG_FLOOR_MS = 1e-3


class _NotebookFigure(Figure):
    """A pyplot figure that shows once in a notebook, also when it is a cell's value.

    The inline backend draws every open pyplot figure at the end of the cell, and IPython
    would draw a returned Figure a second time; displaying it hands it over from pyplot.
    """

    def _ipython_display_(self) -> None:
        from IPython.display import display

        plt.close(self)  # the backend's end-of-cell drawing skips closed figures
        data = {"image/png": _png_base64(self), "text/plain": repr(self)}
        display(data, raw=True)


def _png_base64(fig: Figure, dpi: int = 100) -> str:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _new_axes(figsize: tuple[float, float] = (7.5, 4.2)) -> Axes:
    _fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _tidy(ax: Axes) -> None:
    """Quiet frame: no top/right spines, a light grid behind the data."""
    ax.spines[["top", "right"]].set_visible(False)
    ax.spines[["left", "bottom"]].set_color("#999999")
    ax.tick_params(colors=INK, labelsize=9)
    ax.grid(True, color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)


def _title(ax: Axes, text: str, subtitle: str = "") -> None:
    ax.set_title(text, loc="left", fontsize=12, fontweight="bold", color=INK,
                 pad=18 if subtitle else 8)
    if subtitle:
        ax.text(0, 1.02, subtitle, transform=ax.transAxes, fontsize=9, color="#666666",
                va="bottom")


def _as_records(items: Iterable[Record | float]) -> list[Record]:
    """Records as they are; plain numbers are latencies in seconds (successful requests)."""
    return [item if isinstance(item, Record) else Record(0.0, float(item), 200, None)
            for item in items]


def _as_series(data: RecordsOrDict) -> dict[str, list[Record]]:
    """Normalise records (or latencies in seconds) or ``{label: ...}`` to non-empty lists."""
    if isinstance(data, Mapping):
        series = {str(label): _as_records(records) for label, records in data.items()}
        if not series:
            raise ValueError("records_or_dict is an empty dict: give at least one series")
    else:
        series = {"": _as_records(data)}
    for label, records in series.items():
        if not records:
            name = f"the records for {label!r}" if label else "records"
            raise ValueError(f"{name} must not be empty")
    return series


def _latencies_ms(records: Records) -> list[float]:
    return sorted(r.latency * 1000.0 for r in records)


def _plain_number(value: float, _pos: object = None) -> str:
    return f"{value:g}"


def _log_latency_axis(ax: Axes, axis: str = "x") -> None:
    """Log scale labelled 1, 10, 100 ms rather than 10⁰, 10¹, 10²."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    target.set_major_formatter(FuncFormatter(_plain_number))
    target.set_minor_formatter(NullFormatter())


def _ms(value: float) -> str:
    """A latency in ms with sensible precision: 0.42 ms, 4.2 ms, 42 ms, 4200 ms."""
    if value >= 10:
        return f"{value:.0f} ms"
    if value >= 1:
        return f"{value:.1f} ms"
    return f"{value:.2g} ms"


def _percent(fraction: float, decimals: int = 4) -> str:
    """97.03 %, 99.9 %, 100 %: up to ``decimals`` decimals, no trailing zeros."""
    text = f"{fraction * 100:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text} %"


def latency_cdf(
    records_or_dict: RecordsOrDict,
    ax: Axes | None = None,
    log: bool = True,
    mark: Sequence[float] = (50, 99),
    *,
    title: str | None = None,
) -> Axes:
    """Cumulative latency distribution (ms), one line per series, percentiles in ``mark`` dotted.

    Read it as "this share of requests took at most x ms"; the log axis keeps the tail in view.
    """
    series = _as_series(records_or_dict)
    ax = ax if ax is not None else _new_axes()
    _tidy(ax)
    single = len(series) == 1
    for i, (label, records) in enumerate(series.items()):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        ms = _latencies_ms(records)
        if log:
            ms = [max(v, _LOG_FLOOR_MS) for v in ms]
        n = len(ms)
        fractions = [(k + 1) / n for k in range(n)]
        marks = [(q, percentile(ms, q)) for q in mark]
        legend = label or "all requests"
        if marks:
            legend += "  (" + ", ".join(f"p{q:g} {_ms(v)}" for q, v in marks) + ")"
        ax.step([ms[0], *ms], [0.0, *fractions], where="post", color=colour, linewidth=2,
                label=legend)
        for q, value in marks:
            ax.scatter([value], [q / 100], s=36, color=colour, edgecolor="white", zorder=3)
    for q in mark:
        ax.axhline(q / 100, color="#999999", linewidth=0.8, linestyle=":", zorder=1)
        ax.annotate(f"p{q:g}", (1.0, q / 100), xycoords=("axes fraction", "data"),
                    xytext=(3, 0), textcoords="offset points", va="center", fontsize=8,
                    color="#777777")
    if log:
        _log_latency_axis(ax, "x")
    else:
        ax.set_xlim(left=0)
    ax.set_ylim(0, 1.02)
    if single:  # one series: write the values next to its points (below, where a CDF is empty)
        ms = _latencies_ms(next(iter(series.values())))
        to_axes = ax.transAxes.inverted()
        for q in mark:
            value = max(percentile(ms, q), _LOG_FLOOR_MS) if log else percentile(ms, q)
            at_right = to_axes.transform(ax.transData.transform((value, 0)))[0] > 0.8
            ax.annotate(f"p{q:g} = {_ms(value)}", (value, q / 100),
                        xytext=(-8 if at_right else 8, -6), textcoords="offset points",
                        ha="right" if at_right else "left", va="top", fontsize=9, color=INK)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("latency (ms)" + (", log scale" if log else ""), color=INK)
    ax.set_ylabel("requests at or below this latency", color=INK)
    _title(ax, title or "Latency CDF",
           "" if not single else f"{len(next(iter(series.values())))} requests")
    if not single:  # one series: the annotations say it all; several: legend below the plot
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False, fontsize=9,
                  ncol=1)
    return ax


def latency_histogram(
    records_or_dict: RecordsOrDict,
    ax: Axes | None = None,
    bins: int = 50,
    log: bool = False,
    *,
    title: str | None = None,
) -> Axes:
    """How many requests took how long (ms), series overlaid on shared bins, p99 dashed.

    ``log=True`` uses log-spaced bins on a log axis, so fast bulk and slow tail both show.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be an int >= 1, got {bins!r}")
    series = _as_series(records_or_dict)
    ax = ax if ax is not None else _new_axes()
    _tidy(ax)
    values = {label: _latencies_ms(records) for label, records in series.items()}
    everything = [v for ms in values.values() for v in ms]
    if log:
        values = {k: [max(v, _LOG_FLOOR_MS) for v in ms] for k, ms in values.items()}
        low = max(min(everything), _LOG_FLOOR_MS)
        high = max(max(everything), low * 1.01)
        edges = np.geomspace(low / 1.05, high * 1.05, bins + 1)
    else:
        edges = np.histogram_bin_edges(everything, bins=bins)
    single = len(series) == 1
    for i, (label, ms) in enumerate(values.items()):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        ax.hist(ms, bins=edges, histtype="stepfilled", color=colour,
                alpha=0.55 if single else 0.25, linewidth=0)
        ax.hist(ms, bins=edges, histtype="step", color=colour, linewidth=1.6,
                label=label or "all requests")
    if log:
        _log_latency_axis(ax, "x")
    else:
        ax.set_xlim(left=0)
    # Percentile markers go in once the x limits are final, so labels can avoid the edge.
    to_axes = ax.transAxes.inverted()
    for i, ms in enumerate(values.values()):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        p99 = percentile(ms, 99)
        ax.axvline(p99, color=colour, linestyle="--", linewidth=1.2)
        x_fraction = to_axes.transform(ax.transData.transform((p99, 0)))[0]
        right_half = x_fraction > 0.6
        ax.annotate(f"p99 {_ms(p99)}", (p99, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(-4 if right_half else 4, -4 - 13 * i), textcoords="offset points",
                    ha="right" if right_half else "left", va="top", fontsize=9, color=colour)
    ax.set_xlabel("latency (ms)" + (", log scale" if log else ""), color=INK)
    ax.set_ylabel("requests", color=INK)
    count = sum(len(ms) for ms in values.values())
    _title(ax, title or "Latency histogram",
           f"{count} requests, {bins} {'log-spaced ' if log else ''}bins; dashed: p99")
    if not single:
        ax.legend(loc="center right", frameon=False, fontsize=9)
    return ax


def _check_events(events: Sequence[tuple[float, str]] | None) -> list[tuple[float, str]]:
    checked = []
    for event in events or ():
        try:
            at, label = event
            at = float(at)
        except (TypeError, ValueError):
            raise ValueError(
                f"each event must be (seconds, label), e.g. (60, 'payments 30 % errors'), "
                f"got {event!r}") from None
        checked.append((at, str(label)))
    return checked


def timeline(
    records: Records,
    bucket: float = 1.0,
    title: str | None = None,
    *,
    events: Sequence[tuple[float, str]] | None = None,
    log: bool = False,
) -> Figure:
    """Requests per ``bucket`` seconds (succeeded / failed, stacked) over p50 and p99 latency.

    Requests are counted in the bucket they started in; ``events=[(60, "payments 30 %
    errors")]`` draws a marker at 60 s on both panels.
    """
    if isinstance(records, Mapping):
        raise TypeError("timeline takes one list of records; draw one timeline per run")
    records = list(records)
    if not records:
        raise ValueError("records must not be empty")
    if isinstance(bucket, bool) or not isinstance(bucket, int | float) or not bucket > 0 \
            or math.isinf(bucket):
        raise ValueError(f"bucket must be a finite number of seconds > 0, got {bucket!r}")
    marks = _check_events(events)

    first = math.floor(min(r.start for r in records) / bucket)
    last = math.floor(max(r.start for r in records) / bucket)
    count = last - first + 1
    ok = [0] * count
    failed = [0] * count
    latencies: list[list[float]] = [[] for _ in range(count)]
    for r in records:
        k = math.floor(r.start / bucket) - first
        (ok if r.ok else failed)[k] += 1
        latencies[k].append(r.latency * 1000.0)
    lefts = [(first + k) * bucket for k in range(count)]
    mids = [x + bucket / 2 for x in lefts]
    p50 = [percentile(v, 50) if v else math.nan for v in latencies]
    p99 = [percentile(v, 99) if v else math.nan for v in latencies]

    fig, (top, bottom) = plt.subplots(
        2, 1, sharex=True, figsize=(10, 6), layout="constrained", height_ratios=(1, 1.1),
        FigureClass=_NotebookFigure)
    for ax in (top, bottom):
        _tidy(ax)

    top.bar(lefts, ok, width=bucket, align="edge", color=OK_COLOUR, linewidth=0,
            label="succeeded")
    top.bar(lefts, failed, width=bucket, align="edge", bottom=ok, color=FAIL_COLOUR,
            linewidth=0, label="failed")
    top.set_ylabel(f"requests per {bucket:g} s", color=INK)
    top.legend(loc="upper right", frameon=False, fontsize=9, ncols=2,
               bbox_to_anchor=(1.0, 1.12))

    all_ms = [r.latency * 1000.0 for r in records]
    n_ok = sum(ok)
    _title(top, title or "Requests over time",
           f"{len(records)} requests, {_percent(n_ok / len(records), 2)} succeeded; latency p50 "
           f"{_ms(percentile(all_ms, 50))}, p99 {_ms(percentile(all_ms, 99))}")

    bottom.plot(mids, p99, color=P99_COLOUR, linewidth=2, marker="o", markersize=3,
                label="p99")
    bottom.plot(mids, p50, color=P50_COLOUR, linewidth=2, marker="o", markersize=3,
                label="p50")
    if log:
        _log_latency_axis(bottom, "y")
    else:
        bottom.set_ylim(bottom=0)
    bottom.set_ylabel("latency (ms)" + (", log" if log else ""), color=INK)
    bottom.set_xlabel("time since start (s)", color=INK)
    bottom.set_xlim(lefts[0], lefts[-1] + bucket)
    bottom.legend(loc="upper right", frameon=False, fontsize=9, ncols=2,
                  bbox_to_anchor=(1.0, 1.12))
    bottom.set_title(f"latency of the requests started in each {bucket:g} s", loc="left",
                     fontsize=9, color="#666666")

    for at, label in marks:
        for ax in (top, bottom):
            ax.axvline(at, color=INK, linestyle="--", linewidth=1)
        top.annotate(label, (at, 1.0), xycoords=("data", "axes fraction"), xytext=(4, -2),
                     textcoords="offset points", va="top", fontsize=9, color=INK,
                     bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "none",
                           "alpha": 0.85})
    return fig


def availability_bars(
    dict_of_label_to_availability: Mapping[str, float],
    slo: float | None = None,
    ax: Axes | None = None,
    *,
    title: str | None = None,
) -> Axes:
    """One bar per availability (a fraction), green when it meets ``slo`` and vermilion if not.

    The axis is zoomed towards 100 % so that 99 % and 99.9 % look different; values are printed.
    """
    avails = dict(dict_of_label_to_availability)
    if not avails:
        raise ValueError("dict_of_label_to_availability must not be empty")
    for label, a in avails.items():
        if isinstance(a, bool) or not isinstance(a, int | float) or not 0 <= a <= 1:
            raise ValueError(f"availability of {label!r} must be a fraction in [0, 1], got {a!r}")
    if slo is not None and (isinstance(slo, bool) or not isinstance(slo, int | float)
                            or not 0 < slo < 1):
        raise ValueError(f"slo must lie strictly between 0 and 1, got {slo!r}")
    ax = ax if ax is not None else _new_axes((7.5, 0.6 * len(avails) + 1.6))
    _tidy(ax)
    ax.grid(False, axis="y")

    lowest = min([*avails.values(), *([slo] if slo is not None else [])])
    left = _nice_left(lowest)
    labels = list(avails)
    ys = list(range(len(labels)))[::-1]  # first label on top
    colours: list[Any] = [
        SERIES_COLOURS[0] if slo is None else (OK_COLOUR if a >= slo else FAIL_COLOUR)
        for a in avails.values()
    ]
    ax.barh(ys, [a - left for a in avails.values()], left=left, height=0.6, color=colours)
    for y, a in zip(ys, avails.values(), strict=True):
        inside = (a - left) / (1.0 - left) > 0.3  # else the bar is too short to hold it
        ax.annotate(_percent(a, _decimals_for(a)), (a, y), xytext=(-6 if inside else 6, 0),
                    textcoords="offset points", ha="right" if inside else "left", va="center",
                    fontsize=10, fontweight="bold", color="white" if inside else INK)
    if slo is not None:
        ax.axvline(slo, color=INK, linestyle="--", linewidth=1.4, label=f"SLO {_percent(slo)}")
        ax.annotate(f"SLO {_percent(slo)}", (slo, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(0, 3), textcoords="offset points", ha="center", va="bottom",
                    fontsize=9, color=INK)
    ax.set_yticks(ys, labels, fontsize=10)
    ax.set_xlim(left, 1.0)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("availability" + (f" (the axis starts at {_percent(left)})" if left else ""),
                  color=INK)
    ax.set_title(title or "Availability", loc="left", fontsize=12, fontweight="bold",
                 color=INK, pad=18 if slo is not None else 8)
    return ax


def _decimals_for(fraction: float) -> int:
    """Enough decimals to tell the value from 100 %: 72.4 %, 97.03 %, 99.9 %, 99.999 %."""
    if fraction >= 1.0:
        return 0
    return min(4, max(1, -math.floor(math.log10(1.0 - fraction))))


def _nice_left(lowest: float) -> float:
    """Where the availability axis starts: a round number below ``lowest``, so the gaps
    to 100 % are visible (97 % → 95 %, 99.9 % → 99.8 %, 50 % → 0 %)."""
    if lowest >= 1.0:
        return 0.9
    raw = lowest - 0.6 * (1.0 - lowest)
    if raw <= 0.5:
        return 0.0
    step = 10.0 ** math.floor(math.log10(1.0 - raw))
    return round(math.floor(round(raw / step, 9)) * step, 12)
