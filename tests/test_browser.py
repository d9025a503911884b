"""The course in a real browser: JupyterLab served from this checkout, driven in Chromium.

Every lesson (course/*.ipynb, picked up by the glob) is opened in JupyterLab and run with
Run → Run All Cells twice in one kernel; both times every code cell must run, with no error
and nothing on stderr, plots must render as images and widgets as live widgets. The Validate
button (nbgrader's Lab extension) must report the visible tests of an exercise. The run saves
screenshots in build/screenshots/ (docs/screenshots/, shown in the README, with
`make screenshots`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

from tests.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    CHROMIUM_MISSING,
    CellReport,
    LabPage,
    LabServer,
)

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted(p for p in (ROOT / "course").glob("*.ipynb"))
# Screenshots go to build/screenshots (ignored by git), so a test run leaves the checkout
# clean; `make screenshots` sets FAULTLINE_SCREENSHOTS=docs/screenshots to refresh the
# README's pictures.
SCREENSHOTS = ROOT / os.environ.get("FAULTLINE_SCREENSHOTS", "build/screenshots")
RUN_ALL_TIMEOUT = 120.0  # seconds for one Run All; a lesson must finish in < 30 s
VIEWPORT = {"width": 1400, "height": 900}

# What the source of a code cell says it will show.
PLOTS = re.compile(r"\bplt\.|\bfl\.viz\.|\bviz\.[a-z_]+\(|\.plot\(")
WIDGETS = re.compile(r"\bfl\.widgets\.|\bbreaker_widget\b|\bipywidgets\b|\bwidgets\.[A-Z]")

# The README's pictures, saved after the second Run All: {notebook: [(cell id, file)]}.
SHOTS = {"course/01-availability.ipynb": [("c01-15", "lesson-plot.png")]}
# A widget panel shown live: the panel cell is run again (its shop and load start), a fault
# is applied with the panel's own controls, and the cell that stops it all is run last.
LIVE_PANEL = {"course/01-availability.ipynb": ("c01-36", "payments", "widget-panel.png")}
CHART_REDRAWS = 4  # the panel redraws its chart every second

pytestmark = [pytest.mark.slow, pytest.mark.realtime]


class Session:
    """Chromium, the session's JupyterLab and its tab, started on first use by a test.

    Started inside the test (not in a fixture's setup) so that a missing Chromium makes
    each test fail with a plain message, rather than error or skip.
    """

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self.stack = stack
        self._browser = None
        self._lab: LabPage | None = None

    def browser(self) -> Any:
        """Debian's Chromium with a fresh profile (a Playwright browser context)."""
        if not CHROMIUM.exists():
            pytest.fail(CHROMIUM_MISSING, pytrace=False)
        if self._browser is None:
            profile = self.stack.enter_context(
                tempfile.TemporaryDirectory(prefix="faultline-chromium-"))
            playwright = self.stack.enter_context(sync_playwright())
            self._browser = playwright.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
                viewport=VIEWPORT)
            self.stack.callback(self._browser.close)
        return self._browser

    def lab(self) -> LabPage:
        """A Lab tab on one JupyterLab for the session, rooted at this checkout."""
        browser = self.browser()
        if self._lab is None:
            server = self.stack.enter_context(LabServer(ROOT))
            page = browser.new_page()
            self.stack.callback(page.close)
            self._lab = LabPage(page, server)
            self._lab.load()
        return self._lab


@pytest.fixture(scope="module")
def session() -> Iterator[Session]:
    # Module scope, not session: Playwright's sync API keeps an asyncio loop running on
    # this thread until it stops, which would break every async test run after this file.
    with contextlib.ExitStack() as stack:
        yield Session(stack)


def _first_line(source: str) -> str:
    return next((line for line in source.splitlines() if line.strip()), "").strip()


def problems_in(cells: list[CellReport], after: int) -> list[str]:
    """Everything wrong with one Run All, cell by cell, in notebook order."""
    problems = []
    for cell in cells:
        where = f"cell {cell.index} ({cell.id}: {_first_line(cell.source)!r})"
        problems += [f"{where} raised:\n{error}" for error in cell.errors]
        if cell.stderr:
            problems.append(f"{where} wrote to stderr:\n{cell.stderr}")
        problems += [f"{where} failed to render: {text}" for text in cell.widget_failures]
        if (cell.execution_count or 0) <= after and not problems:
            problems.append(f"{where} did not run")
        if problems:
            break  # Run All stops at the first failure; later cells say nothing new
    return problems


def expected_views(cells: list[CellReport]) -> list[str]:
    """Plots and widgets the source promises but the page does not show."""
    missing = []
    plotting = [c for c in cells if PLOTS.search(c.source)]
    if plotting and not sum(c.images for c in cells):
        missing.append(f"no plot rendered as an image (cells {[c.index for c in plotting]} plot)")
    showing = [c for c in cells if WIDGETS.search(c.source)]
    if showing and not sum(c.widgets for c in cells):
        missing.append(f"no widget rendered (cells {[c.index for c in showing]} show widgets)")
    return missing


def _index_of(cells: list[CellReport], cell_id: str) -> int:
    index = next((c.index for c in cells if c.id == cell_id), None)
    assert index is not None, f"no cell with id {cell_id!r} (a README screenshot shows it)"
    return index


def save_shot(lab: LabPage, index: int, name: str, block: str = "center") -> None:
    """Scroll cell ``index`` into view and save the window as docs/screenshots/``name``."""
    lab.scroll_to(index, block)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    lab.page.screenshot(path=str(SCREENSHOTS / name))


def live_panel(lab: LabPage, rel: str, cell_id: str, service: str, name: str) -> None:
    """Run the panel cell again, break ``service`` from the panel, screenshot, then stop."""
    cells = lab.report()
    index = _index_of(cells, cell_id)
    stop = next((c.index for c in cells if c.index > index and ".stop()" in c.source), None)
    assert stop is not None, f"{rel}: no cell after {cell_id} stops the panel"
    after = lab.max_execution_count()
    cell = lab.cell(index)
    chart = cell.locator(".widget-output img")
    try:
        lab.run_cell(index)
        chart.first.wait_for(timeout=30_000)
        cell.locator("select").first.select_option(service)
        cell.get_by_role("button", name="Apply").click()
        cell.get_by_text(f"applied to {service}").wait_for(timeout=10_000)
        for _ in range(CHART_REDRAWS):  # let the fault show in the chart
            lab.page.wait_for_function(
                "([cell, source]) => { const img = cell.querySelector('.widget-output img');"
                " return img !== null && img.getAttribute('src') !== source; }",
                arg=[cell.element_handle(), chart.first.get_attribute("src")], timeout=10_000)
        save_shot(lab, index, name, block="start")
    finally:
        lab.run_cell(stop)
        lab.wait_until_run(after, RUN_ALL_TIMEOUT, only=[index, stop])
    problems = problems_in([c for c in lab.report() if c.index in (index, stop)], after)
    assert not problems, f"{rel}, the live panel: " + "\n".join(problems)


def run_all_and_check(lab: LabPage, rel: str, run: int) -> tuple[list[CellReport], float]:
    """Run → Run All Cells on the open notebook; fail naming the notebook, cell and error."""
    after = lab.max_execution_count()
    started = time.monotonic()
    lab.run_all()
    try:
        outcome = lab.wait_until_run(after, RUN_ALL_TIMEOUT)
    except PlaywrightTimeout:
        outcome = f"not finished after {RUN_ALL_TIMEOUT:.0f} s"
    if outcome not in ("done", "failed"):
        stuck = [c for c in lab.report() if (c.execution_count or 0) <= after]
        where = (f"cell {stuck[0].index} ({stuck[0].id}: {_first_line(stuck[0].source)!r})"
                 if stuck else "the last cell")
        pytest.fail(f"{rel}, Run All #{run}: {outcome}, at {where}", pytrace=False)
    seconds = time.monotonic() - started
    cells = lab.report()
    problems = problems_in(cells, after) + expected_views(cells)
    if lab.stderr_nodes() and not problems:
        problems.append("an error or stderr output is shown on the page")
    if problems:
        pytest.fail(f"{rel}, Run All #{run}: " + "\n".join(problems), pytrace=False)
    return cells, seconds


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_runs_all_twice_in_jupyterlab(session: Session, path: Path) -> None:
    """Run All twice in one kernel: every cell runs, no error, no stderr, plots and widgets show."""
    lab = session.lab()
    rel = path.relative_to(ROOT).as_posix()
    lab.open(rel)
    try:
        cells, first = run_all_and_check(lab, rel, 1)
        cells, second = run_all_and_check(lab, rel, 2)  # same kernel: nothing left bound
        for cell_id, name in SHOTS.get(rel, []):
            save_shot(lab, _index_of(cells, cell_id), name)
        if rel in LIVE_PANEL:
            live_panel(lab, rel, *LIVE_PANEL[rel])
    finally:
        lab.close()
    print(f"{rel}: Run All {first:.1f} s, again {second:.1f} s")
    assert rel not in lab.server.saves(), f"the test saved {rel}: it must leave it untouched"


EXERCISE = ROOT / "exercises" / "01-availability" / "01-availability.ipynb"
SOLUTION = ROOT / "solutions" / "01-availability" / "01-availability.ipynb"


def grade_cell_openings(path: Path) -> list[str]:
    """The first line of each nbgrader test cell in ``path``."""
    cells = json.loads(path.read_text())["cells"]
    return [_first_line("".join(c["source"])) for c in cells
            if c.get("metadata", {}).get("nbgrader", {}).get("grade")]


def validate(lab: LabPage, path: str) -> tuple[str, str]:
    """Open ``path``, press Validate, and return the result dialog's class and text."""
    lab.open(path)
    lab.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .validate-button").click()
    dialog = lab.page.locator(".jp-Dialog")
    dialog.get_by_text("Validation Results").wait_for(timeout=RUN_ALL_TIMEOUT * 1000)
    message = dialog.locator("#validation-message")
    return message.get_attribute("class") or "", message.inner_text()


def test_validate_reports_the_visible_tests(session: Session, tmp_path: Path) -> None:
    """nbgrader's Validate: the untouched exercise fails, naming a test; the solution passes.

    Validate saves the notebook first, so it runs on copies in a server of its own.
    """
    browser = session.browser()
    for notebook in (EXERCISE, SOLUTION):
        target = tmp_path / notebook.relative_to(ROOT)
        target.parent.mkdir(parents=True)
        shutil.copy(notebook, target)
    with LabServer(tmp_path) as server:
        page = browser.new_page()
        try:
            lab = LabPage(page, server)
            lab.load()
            lab.hide_sidebars()
            kind, text = validate(lab, EXERCISE.relative_to(ROOT).as_posix())
            assert "validation-failed" in kind, text
            assert "The following cell failed:" in text, text
            assert any(line in text for line in grade_cell_openings(EXERCISE)), text
            assert "NotImplementedError" in text, text
            assert EXERCISE.relative_to(ROOT).as_posix() in server.saves()  # hence the copies
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "validate-dialog.png"))
            page.locator(".jp-Dialog").get_by_role("button", name="Ok").click()
            lab.close()

            kind, text = validate(lab, SOLUTION.relative_to(ROOT).as_posix())
            assert "validation-success" in kind, text
            assert "Success! Your notebook passes all the tests." in text, text
        finally:
            page.close()
