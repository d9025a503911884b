"""exercises/ is exactly what nbgrader generates from solutions/, and gives nothing away."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # plain `pytest` (not `python -m pytest`) leaves it out
    sys.path.insert(0, str(ROOT))

from autograder.generate import find_assignments, generate  # noqa: E402

SOLUTIONS = ROOT / "solutions"
EXERCISES = ROOT / "exercises"
REGENERATE = "run `make exercises` (python -m autograder.generate) and commit exercises/"
REGION = re.compile(
    r"### BEGIN (SOLUTION|HIDDEN TESTS)\n(?P<body>.*?)### END \1", re.DOTALL
)
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")


def exercise_folders() -> list[str]:
    return sorted(p.name for p in EXERCISES.iterdir() if p.is_dir())


def files_under(folder: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(folder)): p
        for p in folder.rglob("*")
        if p.is_file() and ".ipynb_checkpoints" not in p.parts
    }


def notebook_pairs() -> list[tuple[Path, Path]]:
    """(source, exercise) notebook pairs for every assignment present in both folders."""
    pairs = []
    for name in sorted(set(find_assignments()) & set(exercise_folders())):
        for source in sorted((SOLUTIONS / name).glob("*.ipynb")):
            pairs.append((source, EXERCISES / name / source.name))
    return pairs


def differences(expected: Path, actual: Path) -> str:
    """A short description of how two notebooks differ (first differing cell)."""
    want, got = json.loads(expected.read_text()), json.loads(actual.read_text())
    if len(want["cells"]) != len(got["cells"]):
        return f"{len(got['cells'])} cells instead of {len(want['cells'])}"
    for index, (a, b) in enumerate(zip(want["cells"], got["cells"], strict=True)):
        if a != b:
            return f"cell {index} (id {a.get('id')}) differs"
    return "notebook metadata differs"


@pytest.mark.slow
def test_exercises_are_generated_from_solutions(tmp_path: Path) -> None:
    generate(None, tmp_path, quiet=True)
    problems = []
    for name in find_assignments():
        fresh, committed = files_under(tmp_path / name), files_under(EXERCISES / name)
        for missing in sorted(fresh.keys() - committed.keys()):
            problems.append(f"exercises/{name}/{missing} is missing")
        for extra in sorted(committed.keys() - fresh.keys()):
            problems.append(f"exercises/{name}/{extra} is not generated from solutions/")
        for rel in sorted(fresh.keys() & committed.keys()):
            new, old = fresh[rel], committed[rel]
            if rel.endswith(".ipynb"):
                same = json.loads(new.read_text()) == json.loads(old.read_text())
            else:
                same = new.read_bytes() == old.read_bytes()
            if not same:
                detail = differences(new, old) if rel.endswith(".ipynb") else "contents differ"
                problems.append(f"exercises/{name}/{rel} is out of date: {detail}")
    assert not problems, "\n".join([*problems, REGENERATE])


def test_every_solution_has_an_exercise_and_vice_versa() -> None:
    solutions, exercises = set(find_assignments()), set(exercise_folders())
    problems = [f"solutions/{n} has no exercises/{n}" for n in sorted(solutions - exercises)]
    problems += [
        f"exercises/{n} has no solutions/{n} (make exercises removes it)"
        for n in sorted(exercises - solutions)
    ]
    assert not problems, "\n".join([*problems, REGENERATE])


def test_source_notebooks_are_committed_without_outputs() -> None:
    dirty = []
    for path in sorted(SOLUTIONS.rglob("*.ipynb")):
        nb = json.loads(path.read_text())
        for index, cell in enumerate(nb["cells"]):
            if cell.get("outputs") or cell.get("execution_count") is not None:
                dirty.append(f"{path.relative_to(ROOT)}: cell {index} has outputs")
    assert not dirty, "\n".join([*dirty, "clear the outputs before committing"])


@pytest.mark.parametrize(
    ("source", "exercise"),
    notebook_pairs(),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_exercise_contains_no_solutions_or_hidden_tests(source: Path, exercise: Path) -> None:
    src, ex = json.loads(source.read_text()), json.loads(exercise.read_text())
    ex_cells = {
        c["metadata"]["nbgrader"]["grade_id"]: "".join(c["source"])
        for c in ex["cells"]
        if "nbgrader" in c["metadata"]
    }
    leaks = []
    for cell in ex["cells"]:
        text = "".join(cell["source"])
        leaks += [f"cell {cell.get('id')}: marker {m!r}" for m in MARKERS if m in text]
        if cell.get("outputs"):
            leaks.append(f"cell {cell.get('id')}: has outputs")
    for cell in src["cells"]:
        text = "".join(cell["source"])
        hidden = [m.group("body") for m in REGION.finditer(text)]
        if not hidden:
            continue
        grade_id = cell["metadata"]["nbgrader"]["grade_id"]
        visible = {line.strip() for line in REGION.sub("", text).splitlines()}
        secret = {
            line.strip() for body in hidden for line in body.splitlines()
        } - visible - {""}
        given = {line.strip() for line in ex_cells.get(grade_id, "").splitlines()}
        leaks += [f"{grade_id}: {line!r}" for line in sorted(secret & given)]
    assert not leaks, f"{exercise.relative_to(ROOT)} gives away:\n" + "\n".join(leaks)
