"""Breaker plots: the state timeline from transition events, the state diagram from the
transition table, and requests in flight from load records."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
from matplotlib.patches import Circle, FancyArrowPatch

from faultline import viz
from faultline.breaker import TRANSITIONS, State, Transition
from faultline.load import Record

CLOSED, OPEN, HALF_OPEN = State.CLOSED, State.OPEN, State.HALF_OPEN
FLOW = [Transition(CLOSED, OPEN, 10.0), Transition(OPEN, HALF_OPEN, 40.0),
        Transition(HALF_OPEN, OPEN, 41.0), Transition(OPEN, HALF_OPEN, 71.0),
        Transition(HALF_OPEN, CLOSED, 71.0)]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def bars(ax):
    """(state row, start, width) of every coloured span, in drawing order."""
    spans = []
    for collection in ax.collections:
        for path in collection.get_paths():
            xs, ys = path.vertices[:, 0], path.vertices[:, 1]
            spans.append((round(float(ys.min() + 0.3)), float(xs.min()),
                          float(xs.max() - xs.min())))
    return spans


# --- state_timeline


def test_timeline_colours_each_state_for_as_long_as_it_lasted():
    ax = viz.state_timeline(FLOW, end=100)
    # rows: 0 closed, 1 half-open, 2 open; the half-open visit at 71 s lasted no time
    assert bars(ax) == [(0, 0.0, 10.0), (2, 10.0, 30.0), (1, 40.0, 1.0), (2, 41.0, 30.0),
                        (0, 71.0, 29.0)]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["closed", "half-open", "open"]
    assert ax.get_xlim() == (0.0, 100.0)


def test_timeline_step_line_visits_every_state_even_for_no_time():
    ax = viz.state_timeline(FLOW, end=100)
    step = ax.get_lines()[0]
    assert list(step.get_xdata()) == [0, 10, 40, 41, 71, 71, 100]
    assert list(step.get_ydata()) == [0, 2, 1, 2, 1, 0, 0]


def test_timeline_subtitle_counts_openings_and_open_time():
    ax = viz.state_timeline(FLOW, end=100, title="Payments breaker")
    assert ax.get_title(loc="left") == "Payments breaker"
    assert "opened 2 times; open 60 s of 100 s; 5 transitions" in [t.get_text() for t in ax.texts]


def test_timeline_takes_plain_tuples_strings_and_a_start():
    ax = viz.state_timeline([("closed", "open", 3), ("open", "half_open", 8)], start=2, end=10)
    assert bars(ax) == [(0, 2.0, 1.0), (2, 3.0, 5.0), (1, 8.0, 2.0)]


def test_timeline_marks_events():
    ax = viz.state_timeline(FLOW, end=100, events=[(5, "payments hangs")])
    assert "payments hangs" in [t.get_text() for t in ax.texts]


def test_timeline_draws_on_a_given_axes():
    _fig, ax = plt.subplots()
    assert viz.state_timeline([], end=5, ax=ax) is ax
    assert bars(ax) == [(0, 0.0, 5.0)]


@pytest.mark.parametrize(("transitions", "options", "message"), [
    ([("closed", "open")], {"end": 5}, "each transition"),
    ([], {"end": 0}, "end must be after start"),
    ([], {"end": 5, "initial": "ajar"}, "initial"),
])
def test_timeline_refuses_bad_input(transitions, options, message):
    with pytest.raises(ValueError, match=message):
        viz.state_timeline(transitions, **options)


# --- state_diagram


def test_diagram_draws_one_circle_per_state_and_one_arrow_per_transition():
    ax = viz.state_diagram(TRANSITIONS)
    circles = [p for p in ax.patches if isinstance(p, Circle)]
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(circles) == 3 and len(arrows) == len(TRANSITIONS) == 4
    labels = [t.get_text() for t in ax.texts]
    assert {"closed", "open", "half-open"} <= set(labels)
    assert all(reason in labels for reason in TRANSITIONS.values())


def test_diagram_follows_the_table_it_is_given():
    ax = viz.state_diagram({("closed", "open"): "trip", ("open", "closed"): "reset"})
    assert len([p for p in ax.patches if isinstance(p, FancyArrowPatch)]) == 2
    assert {"trip", "reset", "closed", "open"} == {t.get_text() for t in ax.texts}


def test_diagram_rings_the_highlighted_state():
    ax = viz.state_diagram(TRANSITIONS, highlight=State.OPEN)
    circles = [p for p in ax.patches if isinstance(p, Circle)]
    widths = [c.get_linewidth() for c in circles]
    assert sorted(widths) == [1, 1, 4]


@pytest.mark.parametrize(("table", "message"), [
    ({}, "at least one"), ({("open", "open"): "again"}, "self-transitions"),
])
def test_diagram_refuses_bad_tables(table, message):
    with pytest.raises(ValueError, match=message):
        viz.state_diagram(table)


# --- in_flight


def rec(start: float, end: float) -> Record:
    return Record(start, end, 200, None)


def test_in_flight_counts_requests_between_start_and_end():
    ax = viz.in_flight([rec(0, 4), rec(1, 2), rec(2, 3), rec(3, 5)])
    (line,) = ax.get_lines()
    assert list(line.get_xdata()) == [0, 0, 1, 2, 2, 3, 3, 4, 5]
    # at 2 one ends and one starts: the end is counted first, so the peak is 2, not 3
    assert list(line.get_ydata()) == [0, 1, 2, 1, 2, 1, 2, 1, 0]
    assert line.get_label() == "requests (peak 2 at once)"


def test_in_flight_draws_one_line_per_series_with_a_legend():
    ax = viz.in_flight({"no breaker": [rec(0, 5)] * 3, "breaker": [rec(0, 0.1)]},
                       events=[(1, "payments hangs")], title="Checkouts waiting")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "no breaker (peak 3 at once)", "breaker (peak 1 at once)"]
    assert ax.get_title(loc="left") == "Checkouts waiting"
    assert "payments hangs" in [t.get_text() for t in ax.texts]


def test_in_flight_averages_over_buckets_when_asked():
    ax = viz.in_flight([rec(0, 4), rec(1, 2), rec(2.5, 3), rec(3.5, 5)], bucket=2)
    (line,) = ax.get_lines()
    # (0, 2]: 2 + 1 request-seconds; (2, 4]: 2 + 0.5 + 0.5; (4, 5]: 1 in the 1 s observed
    assert list(line.get_xdata()) == [1, 3, 5]
    assert list(line.get_ydata()) == [1.5, 1.5, 1.0]
    assert "mean per 2 s" in ax.get_ylabel() and "peak 2 at once" in line.get_label()


@pytest.mark.parametrize("bucket", [0, -1, float("inf"), True])
def test_in_flight_refuses_a_bad_bucket(bucket):
    with pytest.raises(ValueError, match="bucket"):
        viz.in_flight([rec(0, 1)], bucket=bucket)


@pytest.mark.parametrize("data", [[], {}, {"a": []}])
def test_in_flight_refuses_empty_input(data):
    with pytest.raises(ValueError, match="empty"):
        viz.in_flight(data)
