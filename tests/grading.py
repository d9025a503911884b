"""Autograding harness shared by the tests/test_grading_*.py files.

Each of those declares its assignment's grade cells and its wrong implementations
(mutants), and gets the same checks: the solution scores full marks, the untouched
exercise 0 automatic points without crashing, and each mutant loses exactly the points of
the grade cells whose behaviour it breaks. The submissions of one assignment are shared
among ``GRADING_JOBS`` worker processes (one per core), each grading its share in a
temporary nbgrader course of its own with ``NbGraderAPI``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from autograder.generate import load_config

ROOT = Path(__file__).resolve().parents[1]
# Grading is CPU-bound (a kernel per submission): one worker per core, at most 2 here.
GRADING_JOBS = max(1, min(2, os.cpu_count() or 1))

# Every grading test module: pytestmark = GRADING_MARKS
GRADING_MARKS = [
    pytest.mark.slow,
    # nbgrader's own gradebook code warns about its session handling; not ours to fix
    pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning"),
    # ...and the test cells it puts back (add_missing_cells) have no cell id
    pytest.mark.filterwarnings("ignore::nbformat.warnings.MissingIDFieldWarning"),
]

# Mutant: (answer cell grade_id to replace, its new source, the grade cells it must fail).
Mutant = tuple[str, str, set[str]]


@dataclass
class Graded:
    """One autograded submission."""

    result: dict
    notebook: Path
    grades: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # score, auto, max


def load_notebook(folder: str, assignment: str, notebook: str) -> dict:
    return json.loads((ROOT / folder / assignment / f"{notebook}.ipynb").read_text())


def answer_source(solution: dict, cell_id: str) -> str:
    """The solution's answer cell, without the nbgrader markers: what a student would write."""
    for cell in solution["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id") == cell_id:
            lines = "".join(cell["source"]).splitlines()
            return "\n".join(line for line in lines if "### BEGIN" not in line
                             and "### END" not in line)
    raise AssertionError(f"no answer cell {cell_id!r}")


def edited(source: str, *edits: tuple[str, str]) -> str:
    """``source`` with each (old, new) edit made; each ``old`` must occur exactly once."""
    for old, new in edits:
        assert source.count(old) == 1, f"the mutant's edit no longer applies: {old!r}"
        source = source.replace(old, new)
    return source


def mutant_of(assignment: str, notebook: str, cell_id: str, *edits: tuple[str, str],
              breaks: set[str]) -> Mutant:
    """A mutant: the solution's answer cell ``cell_id`` with each (old, new) edit made, so
    the mutant follows the solution when it changes."""
    solution = load_notebook("solutions", assignment, notebook)
    return cell_id, edited(answer_source(solution, cell_id), *edits), breaks


def submission_with(base: dict, cell_id: str, source: str) -> dict:
    """A copy of ``base`` whose answer cell ``cell_id`` holds ``source``."""
    nb = json.loads(json.dumps(base))
    cells = [c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == cell_id]
    assert len(cells) == 1, f"no single answer cell {cell_id!r} in the notebook"
    cells[0]["source"] = source.strip("\n")
    return nb


def autograde_all(root: Path, assignment: str, notebook: str,
                  submissions: dict[str, dict], jobs: int = GRADING_JOBS) -> dict[str, Graded]:
    """Autograde every submission of ``assignment``, in ``jobs`` worker processes.

    Worker k grades every jobs-th submission in a course of its own under ``root/k``; the
    reports are merged. With one job the grading runs in this process.
    """
    students = list(submissions)
    shares = [students[k::jobs] for k in range(jobs) if students[k::jobs]]
    if len(shares) <= 1:
        return grade_share(root / "0", assignment, notebook, submissions)
    workers = []
    with contextlib.ExitStack() as logs:
        for k, share in enumerate(shares):
            job = root / f"job{k}.json"
            job.write_text(json.dumps({"root": str(root / str(k)), "assignment": assignment,
                                       "notebook": notebook,
                                       "submissions": {s: submissions[s] for s in share}}))
            log = logs.enter_context(job.with_suffix(".log").open("wb"))
            workers.append((job, subprocess.Popen(
                [sys.executable, "-m", "tests.grading", str(job)], cwd=ROOT, stdout=log,
                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})))
        statuses = [process.wait() for _, process in workers]
    report: dict[str, Graded] = {}
    for (job, _), status in zip(workers, statuses, strict=True):
        answer = job.with_suffix(".out.json")
        output = job.with_suffix(".log").read_text(errors="replace")[-4000:]
        assert status == 0 and answer.exists(), (
            f"the grading worker for {job.name} failed (exit status {status}):\n{output}")
        for student, entry in json.loads(answer.read_text()).items():
            report[student] = Graded(entry["result"], Path(entry["notebook"]),
                                     {n: tuple(g) for n, g in entry["grades"].items()})
    return {student: report[student] for student in students}


def grade_share(root: Path, assignment: str, notebook: str,
                submissions: dict[str, dict]) -> dict[str, Graded]:
    """Generate ``assignment`` in a course at ``root`` and autograde these submissions."""
    from nbgrader.api import Gradebook
    from nbgrader.apps import NbGraderAPI

    bindir = str(Path(sys.executable).parent)  # nbgrader runs alembic from PATH
    root.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PATH", bindir, prepend=os.pathsep)
        shutil.copytree(ROOT / "solutions" / assignment, root / "solutions" / assignment)
        (root / "exchange").mkdir()
        db_url = f"sqlite:///{root / 'gradebook.db'}"
        config = load_config(root=str(root), db_url=db_url)
        config.Exchange.root = str(root / "exchange")
        config.NbGraderAPI.log_level = "WARN"
        api = NbGraderAPI(config=config)
        generated = api.generate_assignment(assignment)
        assert generated["success"], generated.get("log", "") + generated.get("error", "")

        name = f"{notebook}.ipynb"
        report: dict[str, Graded] = {}
        for student, nb in submissions.items():
            folder = root / "autograder" / "submitted" / student / assignment
            folder.mkdir(parents=True)
            (folder / name).write_text(json.dumps(nb, indent=1))
            result = api.autograde(assignment, student)
            autograded = root / "autograder" / "autograded" / student / assignment / name
            report[student] = Graded(result, autograded)

        with Gradebook(db_url, config.CourseDirectory.course_id) as gb:
            for student, entry in report.items():
                if entry.result["success"]:
                    submitted = gb.find_submission_notebook(notebook, assignment, student)
                    entry.grades = {g.name: (g.score, g.auto_score, g.max_score)
                                    for g in submitted.grades}
    return report


def _worker(job_file: str) -> None:
    """Grade the share of submissions described in ``job_file``; write ``*.out.json``."""
    job = Path(job_file)
    spec = json.loads(job.read_text())
    report = grade_share(Path(spec["root"]), spec["assignment"], spec["notebook"],
                         spec["submissions"])
    job.with_suffix(".out.json").write_text(json.dumps({
        student: {"result": {k: v for k, v in entry.result.items()
                             if isinstance(v, str | int | float | bool | None)},
                  "notebook": str(entry.notebook), "grades": entry.grades}
        for student, entry in report.items()}))


def error_in(notebook: Path, grade_id: str) -> str:
    """The error a grade cell raised in an autograded notebook (for failure messages)."""
    if not notebook.exists():
        return "(no autograded notebook)"
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id") == grade_id:
            errors = [o for o in cell.get("outputs", []) if o["output_type"] == "error"]
            return "; ".join(f"{o['ename']}: {o['evalue']}" for o in errors) or "(no error)"
    return "(cell not found)"


def graded_ok(entry: Graded, student: str, grade_cells: dict[str, float]) -> Graded:
    result = entry.result
    assert result["success"], (f"autograding {student} failed:\n{result.get('log', '')}"
                               + str(result.get("error", "")))
    assert set(entry.grades) == set(grade_cells), "the grade cells changed: update GRADE_CELLS"
    return entry


def assert_points(entry: Graded, grade_cells: dict[str, float]) -> None:
    assert {name: g[2] for name, g in entry.grades.items()} == grade_cells


def assert_full_marks(entry: Graded) -> None:
    lost = {name: error_in(entry.notebook, name)
            for name, (score, _, max_score) in entry.grades.items() if score != max_score}
    assert not lost, f"the solution notebook loses points in: {lost}"


def assert_zero(entry: Graded) -> None:
    scored = {name: auto for name, (_, auto, _) in entry.grades.items() if auto}
    assert not scored, f"the untouched exercise earns automatic points in: {scored}"


def assert_loses_exactly(entry: Graded, student: str, broken: set[str]) -> None:
    wrong = []
    for name, (score, _, max_score) in sorted(entry.grades.items()):
        expected = 0 if name in broken else max_score
        if score != expected:
            wrong.append(f"{name}: scored {score} of {max_score}, expected {expected} "
                         f"({error_in(entry.notebook, name)})")
    assert not wrong, f"{student}:\n" + "\n".join(wrong)


class GradingChecks:
    """The checks every graded assignment gets. A test module subclasses it as
    ``class TestGrading(GradingChecks)`` and sets the four class attributes; mutants are
    parametrized by ``tests/conftest.py``. ``extra_submissions`` adds students of its own."""

    ASSIGNMENT: ClassVar[str]
    NOTEBOOK: ClassVar[str]
    GRADE_CELLS: ClassVar[dict[str, float]]
    MUTANTS: ClassVar[dict[str, Mutant]]

    @classmethod
    def extra_submissions(cls, solution: dict) -> dict[str, dict]:
        return {}

    @pytest.fixture(scope="class")
    @classmethod
    def graded(cls, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Graded]:
        """Autograde every submission once."""
        solution = load_notebook("solutions", cls.ASSIGNMENT, cls.NOTEBOOK)
        submissions = {
            "solution": solution,
            "blank": load_notebook("exercises", cls.ASSIGNMENT, cls.NOTEBOOK),
            **cls.extra_submissions(solution),
        }
        for student, (cell_id, source, _) in cls.MUTANTS.items():
            submissions[student] = submission_with(solution, cell_id, source)
        return autograde_all(tmp_path_factory.mktemp("course"), cls.ASSIGNMENT, cls.NOTEBOOK,
                             submissions)

    def entry(self, graded: dict[str, Graded], student: str) -> Graded:
        return graded_ok(graded[student], student, self.GRADE_CELLS)

    def test_points_per_grade_cell(self, graded: dict[str, Graded]) -> None:
        assert_points(self.entry(graded, "solution"), self.GRADE_CELLS)

    def test_solution_scores_full_marks(self, graded: dict[str, Graded]) -> None:
        assert_full_marks(self.entry(graded, "solution"))

    def test_blank_exercise_scores_zero(self, graded: dict[str, Graded]) -> None:
        assert_zero(self.entry(graded, "blank"))

    def test_mutant_loses_exactly_the_points_it_breaks(self, graded: dict[str, Graded],
                                                       mutant: str) -> None:
        assert_loses_exactly(self.entry(graded, mutant), mutant, self.MUTANTS[mutant][2])


if __name__ == "__main__":
    _worker(sys.argv[1])
