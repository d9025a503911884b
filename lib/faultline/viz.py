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


# --- retries (module 03): backoff delays, the retry-storm lab, load amplification -----------

__all__ += ["amplification_bars", "delay_histograms", "storm_curves"]


def delay_histograms(
    samples: Mapping[str, Mapping[int, Sequence[float]]],
    title: str | None = None,
    *,
    bins: int = 40,
) -> Figure:
    """Histograms of the sleeps before a retry: one row per jitter, one column per attempt.

    ``samples`` maps a label (a jitter) to ``{attempt: [delay in seconds, ...]}``, e.g.
    from ``faultline.storm.sample_delays``; attempt ``n`` is the sleep after try ``n + 1``.
    A column shares its x axis, so the rows compare the jitters at the same attempt.
    """
    series = {str(label): dict(by_attempt) for label, by_attempt in samples.items()}
    if not series:
        raise ValueError("samples must not be empty")
    for label, by_attempt in series.items():
        if not by_attempt or not all(len(v) for v in by_attempt.values()):
            raise ValueError(f"the samples for {label!r} must not be empty")
    attempts = sorted({a for by_attempt in series.values() for a in by_attempt})
    # Laid out by hand: constrained layout costs about a second on a grid this size.
    fig, axes = plt.subplots(len(series), len(attempts), squeeze=False, sharex="col",
                             figsize=(3.6 * len(attempts) + 1.2, 1.75 * len(series) + 1.0),
                             FigureClass=_NotebookFigure)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.08, top=0.9, wspace=0.25, hspace=0.3)
    for col, attempt in enumerate(attempts):
        top = max((max(by[attempt]) for by in series.values() if attempt in by), default=1.0)
        edges = np.linspace(0.0, top * 1.04 if top > 0 else 1.0, bins + 1)
        for row, (label, by_attempt) in enumerate(series.items()):
            ax = axes[row][col]
            _tidy(ax)
            delays = by_attempt.get(attempt)
            if delays:
                colour = SERIES_COLOURS[(0, 1, 2, 4, 3, 5, 6)[row % 7]]
                counts, _ = np.histogram(delays, bins=edges)
                share = counts / len(delays)
                ax.stairs(share, edges, fill=True, color=colour, alpha=0.45, linewidth=0)
                ax.stairs(share, edges, color=colour, linewidth=1.4)
            ax.set_xlim(left=0)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.tick_params(labelsize=8)
            if col == 0:
                ax.set_ylabel(label, color=INK, fontsize=10, fontweight="bold")
            if row == 0:
                ax.set_title(f"sleep after try {attempt + 1}", loc="left", fontsize=10,
                             color=INK)
            if row == len(series) - 1:
                ax.set_xlabel("seconds", color=INK, fontsize=9)
    fig.suptitle(title or "How long a client sleeps before retrying (share of sleeps per bin)",
                 x=0.01, y=0.98, ha="left", fontsize=12, fontweight="bold", color=INK)
    return fig


def storm_curves(points: Sequence[Any], title: str | None = None, *,
                 log_calls: bool = False) -> Figure:
    """Calls and completion time against the number of clients, one line per strategy.

    ``points`` have ``strategy``, ``clients``, ``calls`` and ``completion`` (seconds), as
    ``faultline.storm.occ_experiment`` returns them. Completion time is drawn on a log
    axis (it spans three orders of magnitude); calls too with ``log_calls=True``.
    """
    points = list(points)
    if not points:
        raise ValueError("points must not be empty")
    strategies = list(dict.fromkeys(p.strategy for p in points))
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.6), layout="constrained",
                                      FigureClass=_NotebookFigure)
    styles = ("o-", "s-", "^-", "D-", "v-", "P-", "X-")
    for i, strategy in enumerate(strategies):
        mine = sorted((p for p in points if p.strategy == strategy), key=lambda p: p.clients)
        xs = [p.clients for p in mine]
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        style = styles[i % len(styles)]
        left.plot(xs, [p.calls for p in mine], style, color=colour, markersize=4,
                  linewidth=1.8, label=strategy)
        right.plot(xs, [p.completion for p in mine], style, color=colour, markersize=4,
                   linewidth=1.8, label=strategy)
    for ax, what, log in ((left, "calls (conditional writes)", log_calls),
                          (right, "completion time (s)", True)):
        _tidy(ax)
        if log:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(_plain_number))
        else:
            ax.set_ylim(bottom=0)
        ax.set_xlabel("clients contending for one row (N)", color=INK)
        ax.set_ylabel(what + (", log" if log else ""), color=INK)
    left.set_title("Work: calls the database served", loc="left", fontsize=11,
                   fontweight="bold", color=INK)
    right.set_title("Time until the last client was done", loc="left", fontsize=11,
                    fontweight="bold", color=INK)
    left.legend(loc="upper left", frameon=False, fontsize=9)
    trials = {getattr(p, "trials", None) for p in points} - {None}
    suffix = f" (mean of {trials.pop()} runs per point)" if len(trials) == 1 else ""
    fig.suptitle((title or "Optimistic concurrency under contention") + suffix, x=0.01,
                 ha="left", fontsize=12, fontweight="bold", color=INK)
    return fig


def amplification_bars(
    series: Mapping[str, Mapping[int, float]],
    title: str | None = None,
    ax: Axes | None = None,
    *,
    xlabel: str = "services in the chain that retry (k)",
) -> Axes:
    """Grouped bars on a log axis: load on the bottom service per request, per chain length.

    ``series`` maps a label ("no budget", "retry budget", ...) to ``{k: amplification}``;
    each value is printed above its bar.
    """
    series = {str(label): dict(values) for label, values in series.items()}
    if not series:
        raise ValueError("series must not be empty")
    for label, values in series.items():
        for k, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{label!r} at {k!r}: amplification must be > 0, got {value!r}")
    ax = ax if ax is not None else _new_axes((9, 4.4))
    _tidy(ax)
    ax.grid(False, axis="x")
    ks = sorted({k for values in series.values() for k in values})
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j, k in enumerate(ks) if k in values]
        ys = [values[k] for k in ks if k in values]
        ax.bar(xs, ys, width=width * 0.92, color=SERIES_COLOURS[i % len(SERIES_COLOURS)],
               label=label)
        for x, y in zip(xs, ys, strict=True):
            ax.annotate(f"{y:.3g}×", (x, y), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=8, color=INK)
    ax.set_yscale("log")
    highest = max(v for values in series.values() for v in values.values())
    ticks = [m * 10**e for e in range(0, 7) for m in (1, 2, 5) if m * 10**e <= highest * 1.2]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(bottom=min(1.0, min(v for vs in series.values() for v in vs.values())) / 1.1,
                top=highest * 1.6)
    ax.set_xticks(range(len(ks)), [str(k) for k in ks])
    ax.set_xlabel(xlabel, color=INK)
    ax.set_ylabel("tries on the bottom service per request, log", color=INK)
    ax.legend(loc="upper left", frameon=False, fontsize=9)
    _title(ax, title or "Load amplification when the bottom service is down")
    return ax


# --- circuit breakers: the state timeline, the state diagram, requests in flight -----------

STATE_COLOURS = {"closed": OK_COLOUR, "half_open": "#E69F00", "open": FAIL_COLOUR}
_STATE_ROWS = ("closed", "half_open", "open")


def _breaker_state_name(state: Any) -> str:
    """``State.HALF_OPEN`` or ``"half_open"`` → ``"half_open"`` (anything str-valued)."""
    return str(getattr(state, "value", state))


def _breaker_transitions(transitions: Iterable[Any]) -> list[tuple[str, str, float]]:
    """Transition events, or ``(old, new, at)`` tuples, as plain ``(old, new, at)``."""
    result = []
    for item in transitions:
        try:
            old, new, at = ((item.old, item.new, item.at) if hasattr(item, "new")
                            else tuple(item))
            result.append((_breaker_state_name(old), _breaker_state_name(new), float(at)))
        except (TypeError, ValueError):
            raise ValueError(f"each transition must be a Transition or (old, new, at), "
                             f"got {item!r}") from None
    return result


def _breaker_marks(axes: Sequence[Axes], marks: Sequence[tuple[float, str]]) -> None:
    for at, label in marks:
        for ax in axes:
            ax.axvline(at, color=INK, linestyle="--", linewidth=1, zorder=1)
        axes[0].annotate(label, (at, 1.0), xycoords=("data", "axes fraction"), xytext=(4, -2),
                         textcoords="offset points", va="top", fontsize=9, color=INK,
                         bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "none",
                               "alpha": 0.85})


def state_timeline(
    transitions: Iterable[Any],
    *,
    end: float,
    start: float = 0.0,
    initial: str = "closed",
    ax: Axes | None = None,
    title: str | None = None,
    events: Sequence[tuple[float, str]] | None = None,
) -> Axes:
    """A breaker's state over time, drawn from its ``on_transition`` events.

    ``transitions`` are ``Transition`` events (``TransitionLog().events``) or ``(old, new,
    at)`` tuples, in time order; the breaker is ``initial`` at ``start``. One coloured row
    per state (closed, half-open, open) and a line that steps between them, so a visit
    that lasts no time at all still shows.
    """
    moves = _breaker_transitions(transitions)
    if not end > start:
        raise ValueError(f"end must be after start ({start!r}), got {end!r}")
    initial = _breaker_state_name(initial)
    rows = list(_STATE_ROWS) + sorted({s for m in moves for s in m[:2]} - set(_STATE_ROWS))
    if initial not in rows:
        raise ValueError(f"initial must be one of {rows}, got {initial!r}")
    marks = _check_events(events)
    ax = ax if ax is not None else _new_axes((10, 2.6))
    _tidy(ax)
    ax.grid(False, axis="y")

    segments: list[tuple[str, float, float]] = []  # (state, from, to)
    state, since = initial, start
    for _old, new, at in moves:
        at = min(max(at, start), end)
        segments.append((state, since, at))
        state, since = new, at
    segments.append((state, since, end))

    level = {name: i for i, name in enumerate(rows)}
    for name, x0, x1 in segments:
        if x1 > x0:
            colour = STATE_COLOURS.get(name, SERIES_COLOURS[level[name] % len(SERIES_COLOURS)])
            ax.broken_barh([(x0, x1 - x0)], (level[name] - 0.3, 0.6), facecolors=colour,
                           alpha=0.85, linewidth=0)
    xs = [start, *[at for _name, at, _ in segments[1:]], end]
    ys = [level[name] for name, _, _ in segments]
    ax.step(xs, [*ys, ys[-1]], where="post", color=INK, linewidth=1, zorder=3)
    for _old, new, at in moves:
        if start <= at <= end:
            ax.plot([at], [level[new]], marker="o", markersize=3.5, color=INK, zorder=4)

    ax.set_yticks(range(len(rows)), [name.replace("_", "-") for name in rows], fontsize=10)
    ax.set_ylim(-0.6, len(rows) - (0.4 if not marks else -0.1))  # room for the event labels
    ax.set_xlim(start, end)
    ax.set_xlabel("time (s)", color=INK)
    opened = sum(1 for m in moves if m[1] == "open")
    open_time = sum(x1 - x0 for name, x0, x1 in segments if name == "open")
    _title(ax, title or "Breaker state over time",
           f"opened {opened} time{'s' if opened != 1 else ''}; open {open_time:.3g} s of "
           f"{end - start:.3g} s; {len(moves)} transitions")
    _breaker_marks([ax], marks)
    return ax


def _breaker_circle_layout(names: Sequence[str]) -> dict[str, tuple[float, float]]:
    """States evenly spaced on a circle, the first at the upper left, going clockwise."""
    n = len(names)
    if n == 1:
        return {names[0]: (0.0, 0.0)}
    first = math.pi * (0.5 + 1.0 / n)
    return {name: (math.cos(first - 2 * math.pi * i / n), math.sin(first - 2 * math.pi * i / n))
            for i, name in enumerate(names)}


def state_diagram(
    table: Mapping[tuple[Any, Any], str],
    *,
    ax: Axes | None = None,
    title: str | None = None,
    highlight: Any = None,
) -> Axes:
    """A state machine drawn from its table of transitions ``{(old, new): "why"}``.

    Every state in the table is a circle, every allowed move an arrow labelled with its
    reason; ``highlight`` rings one state (the current one, say). Pass the breaker's
    ``faultline.breaker.TRANSITIONS`` so the picture always matches the code.
    """
    from matplotlib.patches import Circle, FancyArrowPatch

    edges = {(_breaker_state_name(a), _breaker_state_name(b)): str(why)
             for (a, b), why in dict(table).items()}
    if not edges:
        raise ValueError("table must list at least one transition")
    loops = [a for a, b in edges if a == b]
    if loops:
        raise ValueError(f"state_diagram draws no self-transitions, got one on {loops[0]!r}")
    names = list(dict.fromkeys(s for pair in edges for s in pair))
    where = _breaker_circle_layout(names)
    ax = ax if ax is not None else _new_axes((8, 5.4))
    ax.set_aspect("equal")
    ax.set_axis_off()
    radius = 0.27
    circles = {}
    for i, name in enumerate(names):
        colour = STATE_COLOURS.get(name, SERIES_COLOURS[i % len(SERIES_COLOURS)])
        ring = _breaker_state_name(highlight) == name if highlight is not None else False
        circles[name] = Circle(where[name], radius, facecolor=colour, alpha=0.9,
                               edgecolor=INK if ring else "white", linewidth=4 if ring else 1,
                               zorder=2)
        ax.add_patch(circles[name])
        ax.text(*where[name], name.replace("_", "-"), ha="center", va="center", fontsize=12,
                fontweight="bold", color="white", zorder=3)
    cx = sum(x for x, _ in where.values()) / len(where)
    cy = sum(y for _, y in where.values()) / len(where)
    for (a, b), why in edges.items():
        (x1, y1), (x2, y2) = where[a], where[b]
        dx, dy = x2 - x1, y2 - y1
        norm = math.hypot(dx, dy) or 1.0
        # arc3 bends towards (dy, -dx) for rad > 0: bend away from the middle of the
        # drawing, except the second of a pair of opposite moves, which bends inwards.
        outwards = ((x1 + x2) / 2 - cx) * dy - ((y1 + y2) / 2 - cy) * dx >= 0
        inner = (b, a) in edges and list(edges).index((b, a)) < list(edges).index((a, b))
        rad = (0.22 if (b, a) in edges else 0.15) * (1 if outwards != inner else -1)
        ax.add_patch(FancyArrowPatch(
            (x1, y1), (x2, y2), connectionstyle=f"arc3,rad={rad}", patchA=circles[a],
            patchB=circles[b], shrinkA=2, shrinkB=5, color=INK, linewidth=1.4, zorder=1,
            arrowstyle="-|>,head_length=8,head_width=4"))
        # the label sits just beyond the middle of the curve, on the side it bends to
        ux, uy = math.copysign(1, rad) * dy / norm, -math.copysign(1, rad) * dx / norm
        mx, my = (x1 + x2) / 2 + rad / 2 * dy, (y1 + y2) / 2 - rad / 2 * dx
        ha = "left" if ux > 0.35 else "right" if ux < -0.35 else "center"
        va = "bottom" if uy > 0.35 else "top" if uy < -0.35 else "center"
        ax.text(mx + 0.05 * ux, my + 0.05 * uy, why, ha=ha, va=va, fontsize=9, color=INK,
                zorder=4, linespacing=1.3, multialignment="center",
                bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": GRID, "alpha": 0.95})
    xs = [x for x, _ in where.values()]
    ys = [y for _, y in where.values()]
    ax.set_xlim(min(xs) - 0.95, max(xs) + 0.95)
    ax.set_ylim(min(ys) - 0.45, max(ys) + 0.55)
    ax.set_title(title or "States and transitions", loc="left", fontsize=12,
                 fontweight="bold", color=INK)
    return ax


def in_flight(
    records_or_dict: RecordsOrDict,
    ax: Axes | None = None,
    *,
    bucket: float | None = None,
    title: str | None = None,
    events: Sequence[tuple[float, str]] | None = None,
) -> Axes:
    """How many requests were waiting for an answer over time, one line per series.

    Each request counts from its ``start`` to its ``end``. By Little's law this is arrival
    rate × latency: callers that wait for a timeout pile up here long before they fail.
    With ``bucket`` (seconds) each point is the average number in flight over that bucket,
    which is easier to read than the exact count; the legend gives the exact peak.
    """
    if isinstance(records_or_dict, Mapping):
        series = {str(k): list(v) for k, v in records_or_dict.items()}
        if not series:
            raise ValueError("records_or_dict is an empty dict: give at least one series")
    else:
        series = {"": list(records_or_dict)}
    for label, records in series.items():
        if not records:
            raise ValueError(f"the records{f' for {label!r}' if label else ''} must not be empty")
    if bucket is not None and (isinstance(bucket, bool) or not isinstance(bucket, int | float)
                               or not bucket > 0 or math.isinf(bucket)):
        raise ValueError(f"bucket must be a finite number of seconds > 0, got {bucket!r}")
    marks = _check_events(events)
    ax = ax if ax is not None else _new_axes((10, 3.8))
    _tidy(ax)
    tops = []
    for i, (label, records) in enumerate(series.items()):
        changes = sorted([(r.start, 1) for r in records] + [(r.end, -1) for r in records],
                         key=lambda c: (c[0], c[1]))  # an end before a start at the same time
        times, counts, level = [changes[0][0]], [0], 0
        for at, step in changes:
            level += step
            times.append(at)
            counts.append(level)
        peak = max(counts)
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        name = f"{label or 'requests'} (peak {peak} at once)"
        if bucket is None:
            tops.append(peak)
            ax.step(times, counts, where="post", color=colour, linewidth=1.5, label=name)
            continue
        first = math.floor(times[0] / bucket)
        busy = [0.0] * (math.floor(times[-1] / bucket) - first + 1)
        for r in records:  # the time each request spent in each bucket
            k = math.floor(r.start / bucket)
            while k * bucket < r.end:
                busy[k - first] += min(r.end, (k + 1) * bucket) - max(r.start, k * bucket)
                k += 1
        mids = [(first + k + 0.5) * bucket for k in range(len(busy))]
        # a bucket at either end is only partly observed: average over the observed part
        spans = [min(times[-1], (first + k + 1) * bucket) - max(times[0], (first + k) * bucket)
                 for k in range(len(busy))]
        means = [b / span if span > 0 else 0.0 for b, span in zip(busy, spans, strict=True)]
        tops.append(max(means))
        ax.plot(mids, means, color=colour, linewidth=2, marker="o", markersize=2.5, label=name)
    ax.set_ylim(bottom=0, top=max(1, max(tops)) * 1.15)
    ax.set_xlabel("time since start (s)", color=INK)
    ax.set_ylabel("requests in flight" + (f" (mean per {bucket:g} s)" if bucket else ""),
                  color=INK)
    _title(ax, title or "Requests in flight",
           "each request counts from when it was sent until its answer (or error) came back")
    ax.legend(loc="best", frameon=False, fontsize=9)
    _breaker_marks([ax], marks)
    return ax


__all__ += ["in_flight", "state_diagram", "state_timeline"]


# --- module 02: worker pools over time, and the tries of each hop -----------------------

__all__ += ["attempts_chart", "pool_timeline"]

_ATTEMPT_COLOURS = {"ok": OK_COLOUR, "timeout": FAIL_COLOUR, "deadline": "#CC79A7",
                    "cancelled": "#999999"}
_OTHER_ATTEMPT_COLOUR = "#E69F00"  # an error status, a reset...


def pool_timeline(
    records: Records,
    pool: Sequence[Any],
    *,
    workers: int | None = None,
    service: str = "gateway",
    title: str | None = None,
    events: Sequence[tuple[float, str]] | None = None,
) -> Figure:
    """Each route's requests (latency by start time) above the worker pool of ``service``.

    One panel per route, in name order: a dot per request that succeeded, a cross per
    failure. ``pool`` holds samples with ``t``, ``busy`` and ``inside``
    (``faultline.probes.PoolSample``): the bottom panel fills the busy workers (left axis,
    up to ``workers``) and draws the requests waiting for one (right axis).
    """
    from matplotlib.ticker import LogLocator, MaxNLocator

    records = list(records)
    if not records:
        raise ValueError("records must not be empty")
    samples = list(pool)
    if not samples:
        raise ValueError("pool must hold at least one sample")
    marks = _check_events(events)
    routes = sorted({r.route or "requests" for r in records})
    fig, axes = plt.subplots(
        len(routes) + 1, 1, sharex=True, figsize=(10, 2.1 * len(routes) + 2.6),
        layout="constrained", height_ratios=[1] * len(routes) + [1.1],
        FigureClass=_NotebookFigure)
    for ax in axes:
        _tidy(ax)
    for i, (route, ax) in enumerate(zip(routes, axes, strict=False)):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        mine = [r for r in records if (r.route or "requests") == route]
        good = [r for r in mine if r.ok]
        bad = [r for r in mine if not r.ok]
        if good:
            ax.scatter([r.start for r in good],
                       [max(r.latency * 1000.0, _LOG_FLOOR_MS) for r in good],
                       s=12, marker="o", color=colour, alpha=0.8, linewidths=0,
                       label="succeeded")
        if bad:
            ax.scatter([r.start for r in bad],
                       [max(r.latency * 1000.0, _LOG_FLOOR_MS) for r in bad],
                       s=22, marker="x", color=FAIL_COLOUR, linewidths=1.2, label="failed")
        _log_latency_axis(ax, "y")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        shown = [max(r.latency * 1000.0, _LOG_FLOOR_MS) for r in mine]
        ax.set_ylim(min(shown) / 1.6, max(shown) * 1.6)
        ax.set_ylabel("latency (ms)", color=INK)
        ax.set_title(f"{route}: {len(good)} of {len(mine)} succeeded", loc="left",
                     fontsize=10, color=colour, fontweight="bold")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=9)
    ok_share = sum(r.ok for r in records) / len(records)
    fig.suptitle(title or "Requests and the worker pool", x=0.0, ha="left",
                 fontsize=12, fontweight="bold", color=INK)

    pool_ax = axes[-1]
    ts = [s.t for s in samples]
    busy = [s.busy for s in samples]
    waiting = [max(0, s.inside - s.busy) for s in samples]
    pool_ax.fill_between(ts, busy, step="post", color=P50_COLOUR, alpha=0.35, linewidth=0)
    pool_ax.step(ts, busy, where="post", color=P50_COLOUR, linewidth=1.6,
                 label="workers busy (left axis)")
    top = max([*busy, workers or 0, 1])
    if workers is not None:
        pool_ax.axhline(workers, color=P50_COLOUR, linestyle="--", linewidth=1,
                        label=f"pool size: {workers} workers")
    pool_ax.set_ylim(0, top * 1.25)
    pool_ax.set_ylabel("workers busy", color=P50_COLOUR)
    queue_ax = pool_ax.twinx()
    queue_ax.spines[["top", "left"]].set_visible(False)
    queue_ax.spines["right"].set_color("#999999")
    queue_ax.tick_params(colors=INK, labelsize=9)
    queue_ax.step(ts, waiting, where="post", color=FAIL_COLOUR, linewidth=1.8,
                  label="requests waiting for a worker (right axis)")
    queue_ax.set_ylim(0, max(max(waiting), 1) * 1.15)
    queue_ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    pool_ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    queue_ax.set_ylabel("waiting", color=FAIL_COLOUR)
    handles = pool_ax.get_legend_handles_labels()
    more = queue_ax.get_legend_handles_labels()
    pool_ax.legend(handles[0] + more[0], handles[1] + more[1], loc="upper left",
                   bbox_to_anchor=(1.09, 1.0), frameon=False, fontsize=9)
    pool_ax.set_title(f"the {service}'s worker pool ({_percent(ok_share, 1)} of all "
                      f"requests succeeded)", loc="left", fontsize=10, color=INK)
    pool_ax.set_xlabel("time since start (s); each request is drawn at the time it started",
                       color=INK)
    pool_ax.set_xlim(0, max(max(r.end for r in records), ts[-1]))
    for at, label in marks:
        for ax in axes:
            ax.axvline(at, color=INK, linestyle="--", linewidth=1)
        axes[0].annotate(label, (at, 1.0), xycoords=("data", "axes fraction"),
                         xytext=(4, -2), textcoords="offset points", va="top", fontsize=9,
                         color=INK, bbox={"boxstyle": "round,pad=0.25", "fc": "white",
                                          "ec": "none", "alpha": 0.85})
    return fig


def attempts_chart(
    run: Any,
    ax: Axes | None = None,
    *,
    title: str | None = None,
) -> Axes:
    """Every try of every hop of one request as a bar (a ``faultline.hops.PlanRun``).

    One row per call through a hop (a retried caller calls its callee again: a new row),
    bars coloured by outcome; the user's deadline and answer are marked, and work that
    went on after the user had its answer is hatched: the Bookinfo bug is a callee's try
    succeeding there.
    """
    attempts = list(run.attempts)
    if not attempts:
        raise ValueError("the run has no attempts to draw")
    record, deadline = run.record, run.deadline
    rows = list(dict.fromkeys((a.hop, a.call) for a in attempts))
    ax = ax if ax is not None else _new_axes((10, 0.55 * len(rows) + 2.0))
    _tidy(ax)
    ax.grid(False, axis="y")
    y_of = {row: len(rows) - 1 - i for i, row in enumerate(rows)}
    answered = record.end
    seen: dict[str, Any] = {}
    for a in attempts:
        y = y_of[(a.hop, a.call)]
        kind = a.outcome.split()[0]
        colour = _ATTEMPT_COLOURS.get(kind, _OTHER_ATTEMPT_COLOUR)
        width = max(a.end - a.start, 1e-4)
        useful = max(0.0, min(a.end, answered) - a.start)
        if useful > 0:
            seen.setdefault(a.outcome if kind != "error" else kind,
                            ax.barh(y, useful, left=a.start, height=0.55, color=colour))
        if a.end > answered:
            left = max(a.start, answered)
            seen.setdefault("after the user's answer: work for nobody",
                            ax.barh(y, a.end - left, left=left, height=0.55, color=colour,
                                    alpha=0.35, hatch="///", edgecolor="white"))
        inside = width > 0.1 * max(deadline, answered)
        ax.annotate(f"try {a.number}: {a.outcome}", (a.start + width / 2, y), ha="center",
                    va="center" if inside else "bottom", fontsize=8,
                    color=INK if not inside else "black",
                    xytext=(0, 0 if inside else 9), textcoords="offset points")
    labels = [f"{hop.replace('->', ' → ')}\ncall {call}" for hop, call in rows]
    ax.set_yticks([y_of[row] for row in rows], labels, fontsize=9)
    ax.axvline(deadline, color=INK, linestyle="--", linewidth=1.2)
    ax.annotate(f"user's deadline {deadline:g} s", (deadline, 0.0),
                xycoords=("data", "axes fraction"), xytext=(-4, 4), textcoords="offset points",
                ha="right", va="bottom", rotation=90, fontsize=9, color=INK)
    answer = f"HTTP {record.status}" if record.status is not None else "no answer"
    colour = OK_COLOUR if run.ok else FAIL_COLOUR
    ax.axvline(answered, color=colour, linewidth=2)
    ax.annotate(f"user gets {answer} at {answered:.2f} s", (answered, 1.0),
                xycoords=("data", "axes fraction"), xytext=(4, 2), textcoords="offset points",
                ha="left", va="bottom", fontsize=9, color=colour, fontweight="bold")
    ax.set_xlim(0, max(deadline, max(a.end for a in attempts)) * 1.04)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("time since the user sent the request (s)", color=INK)
    ax.legend(list(seen.values()), list(seen), loc="upper left", bbox_to_anchor=(1.0, 1.0),
              frameon=False, fontsize=9)
    ax.set_title(title or "Every try of every hop", loc="left", fontsize=12,
                 fontweight="bold", color=INK, pad=18)
    return ax


# --- module 05: routes side by side, and sizing a pool ----------------------------------

__all__ += ["pool_sizing", "route_timelines"]


def route_timelines(
    runs: Mapping[str, Records],
    routes: Sequence[str] | None = None,
    *,
    bucket: float = 1.0,
    events: Sequence[tuple[float, str]] | None = None,
    title: str | None = None,
) -> Figure:
    """Requests per ``bucket`` seconds, succeeded and failed, in a grid: a row per run, a
    column per route, so one glance says which route shares another's fate.

    ``runs`` maps a label (e.g. "one shared pool") to its records; ``routes`` defaults to
    every route seen, in name order. Rows share the y axis of their column.
    """
    series = {str(label): list(records) for label, records in runs.items()}
    if not series or any(not records for records in series.values()):
        raise ValueError("runs must map each label to a non-empty list of records")
    if isinstance(bucket, bool) or not isinstance(bucket, int | float) or not bucket > 0 \
            or math.isinf(bucket):
        raise ValueError(f"bucket must be a finite number of seconds > 0, got {bucket!r}")
    marks = _check_events(events)
    names = list(routes) if routes is not None else sorted(
        {r.route for records in series.values() for r in records})
    if not names:
        raise ValueError("routes must name at least one route")
    end = max(r.start for records in series.values() for r in records)
    count = math.floor(end / bucket) + 1
    lefts = [k * bucket for k in range(count)]
    fig, axes = plt.subplots(len(series), len(names), sharex=True, sharey="col", squeeze=False,
                             figsize=(4.6 * len(names) + 1.0, 2.5 * len(series) + 0.9),
                             layout="constrained", FigureClass=_NotebookFigure)
    for row, (label, records) in enumerate(series.items()):
        for col, route in enumerate(names):
            ax = axes[row][col]
            _tidy(ax)
            mine = [r for r in records if r.route == route]
            ok, failed = [0] * count, [0] * count
            for r in mine:
                k = min(count - 1, math.floor(r.start / bucket))
                (ok if r.ok else failed)[k] += 1
            ax.bar(lefts, ok, width=bucket, align="edge", color=OK_COLOUR, linewidth=0,
                   label="succeeded")
            ax.bar(lefts, failed, width=bucket, align="edge", bottom=ok, color=FAIL_COLOUR,
                   linewidth=0, label="failed")
            share = sum(ok) / len(mine) if mine else math.nan
            shown = _percent(share, 2) if mine else "no requests"
            ax.set_title(f"{route}: {shown} succeeded", loc="left", fontsize=10,
                         color=INK, fontweight="bold")
            if col == 0:
                ax.set_ylabel(f"{label}\nrequests per {bucket:g} s", color=INK)
            if row == len(series) - 1:
                ax.set_xlabel("time since start (s)", color=INK)
            for at, text in marks:
                ax.axvline(at, color=INK, linestyle="--", linewidth=1)
                if row == 0:
                    ax.annotate(text, (at, 1.0), xycoords=("data", "axes fraction"),
                                xytext=(4, -2), textcoords="offset points", va="top",
                                fontsize=9, color=INK,
                                bbox={"boxstyle": "round,pad=0.25", "fc": "white",
                                      "ec": "none", "alpha": 0.85})
            ax.set_xlim(0, count * bucket)
    axes[0][-1].legend(loc="lower right", bbox_to_anchor=(1.0, 1.12), frameon=False,
                       fontsize=9, ncols=2)
    fig.suptitle(title or "Requests per route over time", x=0.0, ha="left", fontsize=12,
                 fontweight="bold", color=INK)
    return fig


def pool_sizing(
    occupancy: Mapping[int, float],
    offered_load: float,
    refused: Mapping[int, float],
    *,
    slo: float | None = None,
    title: str | None = None,
) -> Figure:
    """Two panels for sizing a pool by Little's law and Erlang B.

    Left: the share of time with k calls in flight (``occupancy``, measured without a
    limit), Little's mean ``offered_load`` marked, and the Poisson distribution that
    random arrivals predict. Right: the share of calls refused by a pool of each size
    (``refused``, measured) against Erlang B, with the refusals an availability ``slo``
    allows. Both y axes are log scale where small shares matter.
    """
    from faultline.bulkhead import erlang_b

    if not occupancy or not refused:
        raise ValueError("occupancy and refused must not be empty")
    if isinstance(offered_load, bool) or not isinstance(offered_load, int | float) \
            or not offered_load >= 0 or math.isinf(offered_load):
        raise ValueError(f"offered_load must be a finite number >= 0, got {offered_load!r}")
    if slo is not None and not 0 < slo < 1:
        raise ValueError(f"slo must lie strictly between 0 and 1, got {slo!r}")
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.4), layout="constrained",
                                      FigureClass=_NotebookFigure)
    for ax in (left, right):
        _tidy(ax)

    levels = sorted(occupancy)
    top = max(max(levels), math.ceil(offered_load * 3) + 2)
    left.bar(levels, [occupancy[k] for k in levels], width=0.7, color=SERIES_COLOURS[0],
             alpha=0.8, label="measured: share of time")
    ks = list(range(0, top + 1))
    poisson = [math.exp(-offered_load + k * math.log(offered_load) - math.lgamma(k + 1))
               if offered_load > 0 else float(k == 0) for k in ks]
    left.plot(ks, poisson, "o", color=SERIES_COLOURS[1], markersize=5,
              label=f"Poisson with mean {offered_load:.2f}")
    left.axvline(offered_load, color=INK, linestyle="--", linewidth=1.2)
    left.annotate(f"Little's law: L = λW = {offered_load:.2f}", (offered_load, 1.0),
                  xycoords=("data", "axes fraction"), xytext=(4, -2),
                  textcoords="offset points", va="top", fontsize=9, color=INK)
    left.set_xlim(-0.6, top + 0.6)
    left.set_ylim(0, max([*occupancy.values(), *poisson]) * 1.18)
    left.set_xlabel("calls in flight at once", color=INK)
    left.set_ylabel("share of time", color=INK)
    left.yaxis.set_major_formatter(FuncFormatter(_share_label))
    left.legend(loc="center right", frameon=False, fontsize=9)
    _title(left, "How many slots are busy", "with no limit: the mean, and the bursts above it")

    sizes = sorted(refused)
    curve = list(range(1, max(sizes) + 1))
    right.plot(curve, [erlang_b(c, offered_load) for c in curve], color=SERIES_COLOURS[1],
               linewidth=2, label=f"Erlang B, offered load {offered_load:.2f}")
    floor = 1e-4
    right.plot(sizes, [max(refused[c], floor) for c in sizes], "o", color=SERIES_COLOURS[0],
               markersize=7, label="measured in the simulation")
    if slo is not None:
        right.axhline(1 - slo, color=FAIL_COLOUR, linestyle="--", linewidth=1.2,
                      label=f"allowed by an SLO of {_percent(slo)}")
    little = max(1, math.ceil(round(offered_load, 9)))
    marks = [(little, "Little's law: ⌈L⌉")]
    if slo is not None:
        enough = next(c for c in range(1, 10_000) if erlang_b(c, offered_load) <= 1 - slo)
        marks.append((enough, "Erlang B: enough for the SLO"))
    for size, text in marks:
        right.axvline(size, color="#999999", linestyle=":", linewidth=1.2)
        right.annotate(f"{text} = {size}", (size, 1.0), xycoords=("data", "axes fraction"),
                       xytext=(4, -2), textcoords="offset points", va="top", fontsize=9,
                       color=INK, bbox={"boxstyle": "round,pad=0.2", "fc": "white",
                                        "ec": "none", "alpha": 0.85})
    right.set_yscale("log")
    right.set_ylim(floor / 1.5, 3.0)
    right.yaxis.set_major_formatter(FuncFormatter(_share_label))
    right.yaxis.set_minor_formatter(NullFormatter())
    right.set_xticks(curve)
    right.set_xlabel("pool size (max_concurrent), max_wait = 0", color=INK)
    right.set_ylabel("share of calls refused (log)", color=INK)
    right.legend(loc="lower left", frameon=False, fontsize=9)
    _title(right, "What each pool size refuses", "refusals measured at 0 are drawn at 0.01 %")
    fig.suptitle(title or "Sizing a pool", x=0.0, ha="left", fontsize=12, fontweight="bold",
                 color=INK)
    return fig


def _share_label(value: float, _pos: object = None) -> str:
    """A share of 1 as a percentage without float noise: 0.01 %, 2.5 %, 100 %."""
    return f"{value * 100:.4g} %"


# --- tracing: one trace as a waterfall (module 06) ---------------------------------------

_SHOP_ORDER = ("gateway", "orders", "inventory", "payments", "email", "login")


def _service_colours(services: Iterable[str]) -> dict[str, str]:
    """A fixed colour per shop service (the same in every plot), then the others by name."""
    names = sorted(set(services), key=lambda s: (s not in _SHOP_ORDER,
                                                 _SHOP_ORDER.index(s) if s in _SHOP_ORDER
                                                 else 0, s))
    known = [s for s in _SHOP_ORDER if s in names]
    others = [s for s in names if s not in _SHOP_ORDER]
    palette = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
    colours = {s: palette[_SHOP_ORDER.index(s) % len(palette)] for s in known}
    for i, s in enumerate(others):
        colours[s] = palette[(len(_SHOP_ORDER) + i) % len(palette)]
    return colours


def _uncovered(start: float, end: float, covers: Iterable[tuple[float, float]]
               ) -> list[tuple[float, float]]:
    """The parts of [start, end] that no interval in ``covers`` overlaps."""
    gaps, cursor = [], start
    for a, b in sorted((max(a, start), min(b, end)) for a, b in covers):
        if b <= a:
            continue
        if a > cursor:
            gaps.append((cursor, a))
        cursor = max(cursor, b)
    if cursor < end:
        gaps.append((cursor, end))
    return gaps


def waterfall(spans: Iterable[Any], title: str | None = None, *, ax: Axes | None = None,
              show_bottleneck: bool = True) -> Axes:
    """One trace as a waterfall: a bar per span, children under their parent, indented.

    The solid part of a bar is the span's own work (self time); the pale part is time spent
    waiting on its children, so a glance tells "slow here" from "slow further down". Bars
    are coloured by service; client spans (a call on its way) are thinner; a failed span is
    outlined in vermilion with its status.
    """
    from faultline.tracing import bottleneck, self_times, span_self_time, trace_tree

    spans = list(spans)
    if not spans:
        raise ValueError("spans must not be empty: give the spans of one trace")
    ordered = trace_tree(spans)
    origin = min(s.start for s in spans)
    end = max(s.end for s in spans)
    children: dict[str, list[Any]] = {}
    for s in spans:
        if s.parent_id is not None:
            children.setdefault(s.parent_id, []).append(s)
    colours = _service_colours(s.service for s in spans)
    if ax is None:
        ax = _new_axes((9.0, 0.9 + 0.34 * len(ordered)))
    _tidy(ax)
    ax.grid(True, axis="x", color=GRID, linewidth=0.8)
    ax.grid(False, axis="y")
    span_ms = max((end - origin) * 1000.0, 1e-9)
    for row, (_depth, s) in enumerate(ordered):
        colour = colours[s.service]
        height = 0.42 if s.kind == "client" else 0.72
        left = (s.start - origin) * 1000.0
        width = s.duration * 1000.0
        ax.barh(row, width, left=left, height=height, color=colour, alpha=0.28, linewidth=0)
        mine = children.get(s.span_id, [])
        for a, b in _uncovered(s.start, s.end, [(c.start, c.end) for c in mine]):
            ax.barh(row, (b - a) * 1000.0, left=(a - origin) * 1000.0, height=height,
                    color=colour, linewidth=0)
        if s.failed:
            ax.barh(row, width, left=left, height=height, fill=False,
                    edgecolor=FAIL_COLOUR, linewidth=1.6)
        own = span_self_time(s, mine) * 1000.0
        note = f"{_ms(width)}" + (f" (self {_ms(own)})" if mine else "")
        if s.failed:
            note += f"  ✗ {s.status if s.status is not None else s.error}"
        ax.text(left + width + span_ms * 0.01, row, note, va="center", fontsize=8,
                color=FAIL_COLOUR if s.failed else INK)
    ax.set_yticks(range(len(ordered)))
    names = [f"{'  ' * d}{s.name if s.kind == 'client' else f'{s.service}  {s.name}'}"
             for d, s in ordered]
    ax.set_yticklabels(names, fontsize=9, fontfamily="monospace", color=INK)
    # left-aligned, so the indentation shows the tree (monospace: ~0.6 em per character)
    ax.tick_params(axis="y", length=0, pad=8 + 0.66 * 9 * max(len(n) for n in names))
    for label in ax.get_yticklabels():
        label.set_horizontalalignment("left")
    ax.set_ylim(len(ordered) - 0.5, -0.5)
    ax.set_xlim(0, span_ms * 1.3)
    ax.set_xlabel("time since the trace started (ms)", color=INK)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[n]) for n in colours]
    labels = list(colours)
    handles += [plt.Rectangle((0, 0), 1, 1, color="#777777"),
                plt.Rectangle((0, 0), 1, 1, color="#777777", alpha=0.28)]
    labels += ["own work (self time)", "waiting on its calls"]
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.5 / len(ordered)
                                                                    - 0.08),
              frameon=False, fontsize=8, ncols=min(4, len(labels)))
    subtitle = ""
    if show_bottleneck and len({s.trace_id for s in spans}) == 1:
        name = bottleneck(spans)
        subtitle = (f"{_ms(span_ms)} end to end; most self time: {name} "
                    f"({_ms(self_times(spans)[name] * 1000.0)})")
    _title(ax, title or "One trace as a waterfall", subtitle)
    return ax


# --- service mesh: two proxies, one scenario -------------------------------------------------

def proxy_bars(counts: Mapping[str, Mapping[str, int | float]], title: str | None = None,
               ax: Axes | None = None, *, subtitle: str = "") -> Axes:
    """Grouped horizontal bars: one group per behaviour, one bar per proxy, counts printed.

    ``counts`` maps a behaviour ("retries", "timeouts answered 504", ...) to
    ``{proxy: count}``, e.g. from ``faultline.meshlab.Comparison.counts``.
    """
    counts = {str(what): dict(values) for what, values in counts.items()}
    if not counts:
        raise ValueError("counts must not be empty")
    proxies = list(dict.fromkeys(p for values in counts.values() for p in values))
    for what, values in counts.items():
        for proxy, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{what!r} / {proxy!r}: count must be >= 0, got {value!r}")
    whats = list(counts)
    ax = ax if ax is not None else _new_axes((8.5, 0.3 * len(whats) * len(proxies) + 1.3))
    _tidy(ax)
    ax.grid(False, axis="y")
    height = 0.8 / len(proxies)
    highest = max([v for values in counts.values() for v in values.values()] + [1])
    for i, proxy in enumerate(proxies):
        ys = [j + (i - (len(proxies) - 1) / 2) * height for j in range(len(whats))]
        xs = [counts[w].get(proxy, 0) for w in whats]
        ax.barh(ys, xs, height=height * 0.9, color=SERIES_COLOURS[i % len(SERIES_COLOURS)],
                label=proxy)
        for x, y in zip(xs, ys, strict=True):
            ax.annotate(f"{x:g}", (x, y), xytext=(3, 0), textcoords="offset points",
                        ha="left", va="center", fontsize=8, color=INK)
    ax.set_yticks(range(len(whats)), whats)
    ax.invert_yaxis()
    ax.set_xlim(0, highest * 1.12)
    ax.set_xlabel("count", color=INK)
    ax.legend(loc="lower right", frameon=False, fontsize=9)
    _title(ax, title or "Two proxies, one policy, one fault scenario", subtitle)
    return ax
