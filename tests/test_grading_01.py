"""Autograding 01-availability: the solution scores full marks, the blank exercise 0, and
each wrong implementation loses exactly the points of the grade cells it breaks.

One temporary nbgrader course (the repository's config, rooted in tmp) is generated and
every submission autograded in this one process through ``NbGraderAPI``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # plain `pytest` (not `python -m pytest`) leaves it out
    sys.path.insert(0, str(ROOT))

from autograder.generate import load_config  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    # nbgrader's own gradebook code warns about its session handling; not ours to fix
    pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning"),
    # ...and the test cells it puts back (add_missing_cells) have no cell id
    pytest.mark.filterwarnings("ignore::nbformat.warnings.MissingIDFieldWarning"),
]

ASSIGNMENT = "01-availability"
NOTEBOOK = "01-availability"
GRADE_CELLS = {
    "serial_availability_values": 2,
    "serial_availability_validation": 1,
    "parallel_availability_values": 2,
    "parallel_availability_validation": 1,
    "error_budget_values": 2,
    "error_budget_validation": 1,
    "budget_remaining_values": 2,
    "budget_remaining_validation": 1,
    "burn_rate_values": 2,
    "burn_rate_validation": 1,
    "percentile_values": 2,
    "percentile_validation": 1,
    "answers_are_your_own": 1,
}

# A mutant: (answer cell to replace, its new source, the grade cells it must fail).
MUTANTS: dict[str, tuple[str, str, set[str]]] = {
    "serial_as_sum": ("serial_availability", '''
def serial_availability(avails):
    avails = list(avails)
    if not avails:
        raise ValueError("avails must not be empty")
    for a in avails:
        if not 0 <= a <= 1:
            raise ValueError("each availability must be in [0, 1]")
    return sum(avails)
''', {"serial_availability_values"}),
    "serial_unchecked": ("serial_availability", '''
def serial_availability(avails):
    return math.prod(avails)
''', {"serial_availability_validation"}),
    "parallel_as_max": ("parallel_availability", '''
def parallel_availability(avails):
    avails = list(avails)
    if not avails:
        raise ValueError("avails must not be empty")
    for a in avails:
        if not 0 <= a <= 1:
            raise ValueError("each availability must be in [0, 1]")
    return max(avails)
''', {"parallel_availability_values"}),
    "parallel_unchecked": ("parallel_availability", '''
def parallel_availability(avails):
    return 1 - math.prod(1 - a for a in avails)
''', {"parallel_availability_validation"}),
    "error_budget_rounded": ("error_budget", '''
def error_budget(slo, total_requests):
    if not 0 < slo < 1:
        raise ValueError("slo must lie strictly between 0 and 1")
    if total_requests <= 0:
        raise ValueError("total_requests must be > 0")
    return round((1 - slo) * total_requests)
''', {"error_budget_values"}),
    "error_budget_unchecked": ("error_budget", '''
def error_budget(slo, total_requests):
    return math.floor(round((1 - slo) * total_requests, 9))
''', {"error_budget_validation"}),
    "budget_remaining_floored": ("budget_remaining", '''
def budget_remaining(slo, total_requests, failed_requests):
    if not 0 < slo < 1:
        raise ValueError("slo must lie strictly between 0 and 1")
    if total_requests <= 0:
        raise ValueError("total_requests must be > 0")
    if not 0 <= failed_requests <= total_requests:
        raise ValueError("failed_requests must be between 0 and total_requests")
    return 1 - failed_requests / math.floor((1 - slo) * total_requests)
''', {"budget_remaining_values"}),
    "budget_remaining_unchecked": ("budget_remaining", '''
def budget_remaining(slo, total_requests, failed_requests):
    return 1 - failed_requests / ((1 - slo) * total_requests)
''', {"budget_remaining_validation"}),
    "burn_rate_inverted": ("burn_rate", '''
def burn_rate(slo, error_rate):
    if not 0 < slo < 1:
        raise ValueError("slo must lie strictly between 0 and 1")
    if not 0 <= error_rate <= 1:
        raise ValueError("error_rate must be in [0, 1]")
    return (1 - slo) / error_rate
''', {"burn_rate_values"}),
    "burn_rate_unchecked": ("burn_rate", '''
def burn_rate(slo, error_rate):
    return error_rate / (1 - slo)
''', {"burn_rate_validation"}),
    "percentile_interpolated": ("percentile", '''
def percentile(values, q):
    if not 0 <= q <= 100:
        raise ValueError("q must be in [0, 100]")
    ordered = sorted(values)
    if not ordered:
        raise ValueError("values must not be empty")
    position = q / 100 * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
''', {"percentile_values"}),
    "percentile_off_by_one": ("percentile", '''
def percentile(values, q):
    if not 0 <= q <= 100:
        raise ValueError("q must be in [0, 100]")
    ordered = sorted(values)
    if not ordered:
        raise ValueError("values must not be empty")
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)))]
''', {"percentile_values"}),
    "percentile_unchecked": ("percentile", '''
def percentile(values, q):
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]
''', {"percentile_validation"}),
    "reference_imported": ("serial_availability", '''
from faultline.slo import serial_availability
''', {"answers_are_your_own"}),
}


def submission_with(solution: dict, cell_id: str, source: str) -> dict:
    """A copy of the solution notebook whose answer cell ``cell_id`` holds ``source``."""
    nb = json.loads(json.dumps(solution))
    cells = [c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == cell_id]
    assert len(cells) == 1, f"no single answer cell {cell_id!r} in the solution notebook"
    cells[0]["source"] = source.strip("\n")
    return nb


def tampered(solution: dict) -> dict:
    """Answers without validation, one test cell deleted and another emptied."""
    nb = submission_with(solution, *MUTANTS["serial_unchecked"][:2])
    nb = submission_with(nb, *MUTANTS["parallel_unchecked"][:2])
    ids = [c["metadata"].get("nbgrader", {}).get("grade_id") for c in nb["cells"]]
    nb["cells"][ids.index("parallel_availability_validation")]["source"] = "pass"
    del nb["cells"][ids.index("serial_availability_validation")]
    return nb


def error_in(notebook: Path, grade_id: str) -> str:
    """The error a grade cell raised in an autograded notebook (for failure messages)."""
    if not notebook.exists():
        return "(no autograded notebook)"
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id") == grade_id:
            errors = [o for o in cell.get("outputs", []) if o["output_type"] == "error"]
            return "; ".join(f"{o['ename']}: {o['evalue']}" for o in errors) or "(no error)"
    return "(cell not found)"


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Autograde every submission once: {student: {"result", "grades", "notebook"}}."""
    from nbgrader.api import Gradebook
    from nbgrader.apps import NbGraderAPI

    bindir = str(Path(sys.executable).parent)  # nbgrader runs alembic from PATH
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PATH", bindir, prepend=os.pathsep)
        root = tmp_path_factory.mktemp("course")
        shutil.copytree(ROOT / "solutions" / ASSIGNMENT, root / "solutions" / ASSIGNMENT)
        (root / "exchange").mkdir()
        db_url = f"sqlite:///{root / 'gradebook.db'}"
        config = load_config(root=str(root), db_url=db_url)
        config.Exchange.root = str(root / "exchange")
        config.NbGraderAPI.log_level = "WARN"
        api = NbGraderAPI(config=config)
        generated = api.generate_assignment(ASSIGNMENT)
        assert generated["success"], generated.get("log", "") + generated.get("error", "")

        name = f"{NOTEBOOK}.ipynb"
        solution = json.loads((root / "solutions" / ASSIGNMENT / name).read_text())
        submissions = {
            "solution": solution,
            "blank": json.loads((root / "exercises" / ASSIGNMENT / name).read_text()),
        }
        for student, (cell_id, source, _) in MUTANTS.items():
            submissions[student] = submission_with(solution, cell_id, source)
        submissions["tampered"] = tampered(solution)

        report = {}
        for student, nb in submissions.items():
            folder = root / "autograder" / "submitted" / student / ASSIGNMENT
            folder.mkdir(parents=True)
            (folder / name).write_text(json.dumps(nb, indent=1))
            result = api.autograde(ASSIGNMENT, student)
            autograded = root / "autograder" / "autograded" / student / ASSIGNMENT / name
            report[student] = {"result": result, "notebook": autograded, "grades": {}}

        with Gradebook(db_url, config.CourseDirectory.course_id) as gb:
            for student, entry in report.items():
                if entry["result"]["success"]:
                    submitted = gb.find_submission_notebook(NOTEBOOK, ASSIGNMENT, student)
                    entry["grades"] = {
                        g.name: (g.score, g.auto_score, g.max_score) for g in submitted.grades
                    }
    return report


def graded_ok(graded: dict, student: str) -> dict:
    entry = graded[student]
    result = entry["result"]
    assert result["success"], f"autograding {student} failed:\n{result.get('log', '')}" + (
        result.get("error", "")
    )
    assert set(entry["grades"]) == set(GRADE_CELLS), "the grade cells changed: update GRADE_CELLS"
    return entry


def test_points_per_grade_cell(graded: dict) -> None:
    grades = graded_ok(graded, "solution")["grades"]
    assert {name: g[2] for name, g in grades.items()} == GRADE_CELLS


def test_solution_scores_full_marks(graded: dict) -> None:
    entry = graded_ok(graded, "solution")
    lost = {
        name: error_in(entry["notebook"], name)
        for name, (score, _, max_score) in entry["grades"].items()
        if score != max_score
    }
    assert not lost, f"the solution notebook loses points in: {lost}"


def test_blank_exercise_scores_zero(graded: dict) -> None:
    entry = graded_ok(graded, "blank")
    scored = {name: auto for name, (_, auto, _) in entry["grades"].items() if auto}
    assert not scored, f"the untouched exercise earns automatic points in: {scored}"


def test_deleted_and_edited_test_cells_are_restored(graded: dict) -> None:
    entry = graded_ok(graded, "tampered")
    broken = {"serial_availability_validation", "parallel_availability_validation"}
    scores = {name: score for name, (score, _, _) in entry["grades"].items()}
    assert scores == {name: 0 if name in broken else p for name, p in GRADE_CELLS.items()}


@pytest.mark.parametrize("student", sorted(MUTANTS))
def test_mutant_loses_exactly_the_points_it_breaks(graded: dict, student: str) -> None:
    entry = graded_ok(graded, student)
    broken = MUTANTS[student][2]
    wrong = []
    for name, (score, _, max_score) in sorted(entry["grades"].items()):
        expected = 0 if name in broken else max_score
        if score != expected:
            wrong.append(
                f"{name}: scored {score} of {max_score}, expected {expected} "
                f"({error_in(entry['notebook'], name)})"
            )
    assert not wrong, f"{student}:\n" + "\n".join(wrong)
