"""faultline-grade end to end on a throwaway course: import (folder and Canvas zip) matched to
a roster, parallel autograde of the bundled samples, feedback without hidden tests, a Canvas
grades CSV that reads back as the gradebook, samples and student bundle up to date."""

from __future__ import annotations

import csv
import json
import re
import zipfile
from pathlib import Path

import pytest

from autograder.grade import bundle, samples
from autograder.grade.cli import main
from autograder.grade.course import Course, read_roster
from autograder.grade.democourse import make_course
from autograder.grade.feedback import HIDDEN
from autograder.grade.transfer import import_submissions, read_grades_csv

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning"),
]

A = "01-availability"
ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "autograder" / "samples"
EXPECTED = {"correct": 19, "partial": 16, "blank": 0, "broken": 0, "leaker": 19}

# A student whose own last cell prints everything IPython remembers of earlier cells (the
# source of the test cells included) to try to get hidden tests into the feedback.
LEAKER_CELL = """import linecache
print(list(linecache.cache))
for name, entry in list(linecache.cache.items()):
    print(''.join(entry[2]))
print(In)"""


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> Course:
    """The four samples imported from the Canvas zip, plus a leaker from a folder; graded."""
    course = make_course(tmp_path_factory.mktemp("cli"), [A])
    course_arg = ["--course", str(course.root)]
    roster = tmp_path_factory.mktemp("roster") / "roster.csv"
    text = (SAMPLES / "roster.csv").read_text()
    roster.write_text(text + "leaker,Lee,Leaker,,1005,S1005,lee,B\n")
    assert main([*course_arg, "import", A, str(SAMPLES / f"{A}-canvas.zip"),
                 "--roster", str(roster)]) == 0
    folder = tmp_path_factory.mktemp("folder")
    leaker = json.loads((SAMPLES / A / "correct" / f"{A}.ipynb").read_text())
    leaker["cells"].append({"cell_type": "code", "id": "leak", "metadata": {}, "outputs": [],
                            "execution_count": None, "source": LEAKER_CELL})
    (folder / "leaker").mkdir()
    (folder / "leaker" / f"{A}.ipynb").write_text(json.dumps(leaker))
    assert main([*course_arg, "import", A, str(folder), "--roster", str(roster)]) == 0
    assert main([*course_arg, "autograde", A, "--jobs", "2", "--cell-timeout", "10"]) == 0
    assert main([*course_arg, "feedback", A]) == 0
    course.roster_file = roster
    return course


def test_import_matches_canvas_names_to_the_roster(tmp_path: Path) -> None:
    course = make_course(tmp_path / "c", [A])
    roster = read_roster(SAMPLES / "roster.csv")
    source = tmp_path / "download.zip"
    with zipfile.ZipFile(source, "w") as zf:
        zf.writestr(f"correctada_1001_5_{A}.ipynb", "{}")
        zf.writestr(f"partialpiet_LATE_1002_6_{A}-1.ipynb", "{}")  # a re-upload
        zf.writestr(f"strangerx_9999_7_{A}.ipynb", "{}")
        zf.writestr("../../evil_1003_8_../../etc.ipynb", "{}")
    report = import_submissions(course, A, source, roster)
    assert sorted(report.imported) == ["correct", "partial"]
    assert any("9999" in line for line in report.unmatched)
    assert report.missing == ["blank", "broken"]
    assert (course.submitted / "partial" / A / f"{A}.ipynb").read_text() == "{}"
    assert not (tmp_path / "etc.ipynb").exists()
    assert sorted(p.name for p in course.submitted.iterdir()) == ["correct", "partial"]


def test_samples_score_as_expected(graded: Course) -> None:
    with graded.gradebook() as gb:
        scores = {s.student.id: s.score for s in gb.find_assignment(A).submissions}
    assert scores == EXPECTED
    report = json.loads((graded.autograded / "broken" / A / "faultline-report.json").read_text())
    assert "invalid JSON" in report["notebooks"][0]["broken"]


def test_autograde_of_one_student_replaces_its_rows(graded: Course) -> None:
    assert main(["--course", str(graded.root), "autograde", A, "partial", "--quiet"]) == 0
    with graded.gradebook() as gb:
        subs = [s for s in gb.find_assignment(A).submissions if s.student.id == "partial"]
        assert len(subs) == 1 and subs[0].score == 16
        assert len(subs[0].notebooks) == 1 and len(subs[0].notebooks[0].grades) == 13


def test_export_round_trip_and_canvas_format(graded: Course, tmp_path: Path) -> None:
    out = tmp_path / "grades.csv"
    assert main(["--course", str(graded.root), "export", "--to", str(out),
                 "--roster", str(graded.roster_file)]) == 0
    with out.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", A]
    assert rows[1][0].strip() == "Points Possible" and rows[1][-1] == "19"
    by_login = {r[3]: r for r in rows[2:]}
    assert by_login["ada"][:3] == ["Correct, Ada", "1001", "S1001"]
    back = read_grades_csv(out)
    sis = {s.id: s.sis_user_id for s in read_roster(graded.roster_file)}
    assert back == {sis[s]: {A: float(score)} for s, score in EXPECTED.items()}


def _hidden_text(course: Course) -> list[str]:
    """Every hidden-test line and every string literal in one, as it appears in solutions/,
    that students never see (not in the released notebook, not in the reference answers)."""
    nb = json.loads((course.source / A / f"{A}.ipynb").read_text())
    public = "\n".join("".join(c["source"]) for path in (
        course.release / A / f"{A}.ipynb", SAMPLES / A / "correct" / f"{A}.ipynb")
        for c in json.loads(path.read_text())["cells"])
    pieces = []
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        for block in HIDDEN.findall(source):
            for line in block.splitlines():
                line = line.strip()
                if len(line) > 12 and "HIDDEN TESTS" not in line:
                    pieces.append(line)
                pieces += [s for s in re.findall(r'"([^"]{16,})"', line)]
    return [p for p in pieces if p not in public]


@pytest.mark.parametrize("student", sorted(EXPECTED))
def test_feedback_contains_no_hidden_test_text(graded: Course, student: str) -> None:
    page = (graded.feedback / student / A / f"{A}.html").read_text()
    import html

    text = html.unescape(page)
    secret = _hidden_text(graded)
    assert len(secret) > 20  # the check below has something to look for
    leaks = [p for p in secret if p in text]
    assert not leaks, f"feedback of {student} shows hidden tests: {leaks[:3]}"
    assert "### BEGIN HIDDEN TESTS" not in text


def test_feedback_explains_failures(graded: Course) -> None:
    import html

    text = html.unescape((graded.feedback / "partial" / A / f"{A}.html").read_text())
    assert "16 / 19" in text
    assert "expected: ValueError to be raised" in text  # the visible check's message
    assert "A hidden test failed" in text  # percentile fails only hidden tests
    broken = html.unescape((graded.feedback / "broken" / A / f"{A}.html").read_text())
    assert "could not be graded: invalid JSON" in broken


def test_committed_samples_are_current(tmp_path: Path) -> None:
    written = samples.build(tmp_path)
    for path in written:
        committed = SAMPLES / path.relative_to(tmp_path)
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed} is out of date: run python -m autograder.grade.samples")


def test_student_bundle_has_no_instructor_files(tmp_path: Path) -> None:
    out = bundle.build(tmp_path / "bundle.zip")
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        text = b"".join(zf.read(n) for n in names)
    assert not [n for n in names if n.startswith(("faultline/solutions/",
                                                  "faultline/autograder/grade/",
                                                  "faultline/autograder/samples/"))]
    assert b"### BEGIN HIDDEN TESTS" not in text and b"### BEGIN SOLUTION" not in text
    assert "faultline/exercises/01-availability/01-availability.ipynb" in names
