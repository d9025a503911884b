"""Build the bundled sample submissions: ``python -m autograder.grade.samples``.

Four students of ``01-availability`` — ``correct`` (the reference answers), ``partial``
(two functions wrong), ``blank`` (the exercise as released) and ``broken`` (a download cut
short: invalid JSON) — as a Canvas "Download Submissions" zip
(``autograder/samples/01-availability-canvas.zip``, what ``make grade`` imports), the three
readable ones also as ``autograder/samples/01-availability/<student>/01-availability.ipynb``
(the broken file cannot be committed as a notebook: ruff lints every ``.ipynb``), and the
roster ``autograder/samples/roster.csv``. They are made from ``exercises/`` and
``solutions/`` so they follow the notebook when it changes (a test checks they are current).
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import zipfile
from pathlib import Path

from autograder.generate import ROOT

SAMPLES = ROOT / "autograder" / "samples"
ASSIGNMENT = "01-availability"
MARKER = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", re.MULTILINE)

PARTIAL = {  # answer cell -> a wrong version (each loses its own tests' points)
    "serial_availability": '''def serial_availability(avails):
    """Availability of a chain: the product (but bad input is not checked)."""
    result = 1.0
    for a in avails:
        result *= a
    return result''',
    "percentile": '''def percentile(values, q):
    """Percentile by linear interpolation (not the nearest rank the rules ask for)."""
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q!r}")
    ordered = sorted(values)
    if not ordered:
        raise ValueError("values must not be empty")
    position = q / 100 * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)''',
}

ROSTER = [
    {"id": "correct", "first_name": "Ada", "last_name": "Correct", "lms_user_id": "1001",
     "sis_user_id": "S1001", "sis_login_id": "ada", "section": "A"},
    {"id": "partial", "first_name": "Piet", "last_name": "Partial", "lms_user_id": "1002",
     "sis_user_id": "S1002", "sis_login_id": "piet", "section": "A"},
    {"id": "blank", "first_name": "Bea", "last_name": "Blank", "lms_user_id": "1003",
     "sis_user_id": "S1003", "sis_login_id": "bea", "section": "B"},
    {"id": "broken", "first_name": "Bo", "last_name": "Broken", "lms_user_id": "1004",
     "sis_user_id": "S1004", "sis_login_id": "bo", "section": "B"},
]


def _text(source) -> str:
    return "".join(source) if isinstance(source, list) else source


def answered(exercise: dict, solution: dict) -> dict:
    """The released notebook with every answer cell filled in from the solution."""
    answers = {}
    for cell in solution["cells"]:
        meta = cell["metadata"].get("nbgrader", {})
        if meta.get("solution"):
            answers[meta["grade_id"]] = MARKER.sub("", _text(cell["source"]))
    nb = json.loads(json.dumps(exercise))
    for cell in nb["cells"]:
        gid = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if gid in answers:
            cell["source"] = answers[gid]
    return nb


def with_answer(nb: dict, grade_id: str, source: str) -> dict:
    """A copy of ``nb`` whose cell ``grade_id`` holds ``source``."""
    nb = json.loads(json.dumps(nb))
    cells = [c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id")
             == grade_id]
    if len(cells) != 1:
        raise ValueError(f"grade_id {grade_id!r}: expected one cell, found {len(cells)}")
    cells[0]["source"] = source
    return nb


def load(folder: str, assignment: str = ASSIGNMENT, root: Path = ROOT) -> dict:
    return json.loads((root / folder / assignment / f"{assignment}.ipynb").read_text())


def build(out: Path = SAMPLES) -> list[Path]:
    """Write the sample submissions and roster; return the files written."""
    exercise, solution = load("exercises"), load("solutions")
    correct = answered(exercise, solution)
    partial = correct
    for gid, source in PARTIAL.items():
        partial = with_answer(partial, gid, source)
    text = json.dumps(correct, indent=1, ensure_ascii=False) + "\n"
    files = {
        "correct": text,
        "partial": json.dumps(partial, indent=1, ensure_ascii=False) + "\n",
        "blank": json.dumps(exercise, indent=1, ensure_ascii=False) + "\n",
        "broken": text[: len(text) // 2],  # a download cut short: invalid JSON
    }
    written = []
    for student, content in files.items():
        if student == "broken":
            continue
        path = out / ASSIGNMENT / student / f"{ASSIGNMENT}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        written.append(path)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for number, row in enumerate(ROSTER):
            name = (row["last_name"] + row["first_name"]).lower()
            late = "_LATE" if row["id"] == "partial" else ""
            info = zipfile.ZipInfo(f"{name}{late}_{row['lms_user_id']}_{70001 + number}_"
                                   f"{ASSIGNMENT}.ipynb", date_time=(2026, 11, 1, 12, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, files[row["id"]])
    zpath = out / f"{ASSIGNMENT}-canvas.zip"
    zpath.write_bytes(archive.getvalue())
    written.append(zpath)
    roster = out / "roster.csv"
    with roster.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(ROSTER[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(ROSTER)
    written.append(roster)
    return written


if __name__ == "__main__":
    for p in build():
        print(p.relative_to(ROOT))
    sys.exit(0)
