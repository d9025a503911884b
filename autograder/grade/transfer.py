"""Submissions in, grades out.

``import_submissions`` takes a folder (``<student>/<notebook>.ipynb``, ``<student>/<a>/...``
or flat files named after students) or a Canvas "Download Submissions" zip
(``<name>[_LATE]_<canvas user id>_<submission id>_<original file name>``), matches each
file to a roster student, and places it where nbgrader expects it:
``autograder/submitted/<student>/<assignment>/<notebook>.ipynb``. Nothing in the zip is
extracted as given: names are matched, never used as paths.

``export_grades`` writes a CSV that Canvas's gradebook import accepts: the columns
``Student, ID, SIS User ID, SIS Login ID, Section``, a "Points Possible" row, and one
column per assignment.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from autograder.grade.course import Course, Student
from autograder.grade.notebook import MAX_NOTEBOOK_BYTES

CANVAS_NAME = re.compile(
    r"^(?P<name>[^_]+?)(?:_LATE)?_(?P<canvas>\d+)_(?P<submission>\d+)_(?P<file>.+)$")
CANVAS_RENAMED = re.compile(r"-\d+(?=\.ipynb$)")  # Canvas renames re-uploads: nb-1.ipynb


@dataclass
class ImportReport:
    imported: dict[str, list[str]] = field(default_factory=dict)  # student -> files
    unmatched: list[str] = field(default_factory=list)  # (file, why)
    missing: list[str] = field(default_factory=list)  # roster students without a submission


def _match(key: str, roster: list[Student]) -> Student | None:
    key = key.strip().lower()
    for s in roster:
        names = {s.id.lower(), s.lms_user_id.lower(), s.sis_user_id.lower(),
                 s.sis_login_id.lower(), s.email.lower(),
                 (s.last_name + s.first_name).replace(" ", "").lower()}
        if key in names - {""}:
            return s
    return None


def _notebook_name(filename: str, notebooks: list[str]) -> str | None:
    base = CANVAS_RENAMED.sub("", Path(filename).name)
    stem = Path(base).stem
    if stem in notebooks:
        return stem
    if len(notebooks) == 1 and base.endswith(".ipynb"):
        return notebooks[0]
    return None


def import_submissions(course: Course, assignment: str, source: Path,
                       roster: list[Student] | None = None) -> ImportReport:
    """Copy submissions from a folder or a Canvas zip into nbgrader's layout."""
    roster = roster if roster is not None else course.roster()
    if not roster:
        raise ValueError(f"no roster: write {course.roster_file} (columns id, first_name, "
                         "last_name, lms_user_id, ...) or pass --roster")
    course.add_students(roster)
    notebooks = [m.name for m in course.masters(assignment)]
    report = ImportReport()
    for key, filename, read in _entries(Path(source)):
        student = _match(key, roster)
        name = _notebook_name(filename, notebooks)
        if student is None:
            report.unmatched.append(f"{filename}: no roster student matches {key!r}")
            continue
        if name is None:
            report.unmatched.append(f"{filename}: not one of the notebooks {notebooks}")
            continue
        data = read()
        if data is None:
            report.unmatched.append(f"{filename}: larger than {MAX_NOTEBOOK_BYTES} bytes")
            continue
        folder = course.submitted / student.id / assignment
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.ipynb").write_bytes(data)
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f UTC")
        (folder / "timestamp.txt").write_text(stamp)
        report.imported.setdefault(student.id, []).append(f"{name}.ipynb")
    report.missing = sorted(s.id for s in roster if s.id not in report.imported
                            and not (course.submitted / s.id / assignment).is_dir())
    return report


def _entries(source: Path):
    """(student key, file name, reader) for each notebook in a folder or a zip."""
    if source.is_file() and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            for info in zf.infolist():
                if info.is_dir() or not info.filename.endswith(".ipynb"):
                    continue
                base = Path(info.filename).name
                m = CANVAS_NAME.match(base)
                key, filename = (m["canvas"], m["file"]) if m else (Path(base).stem, base)
                yield key, filename, _zip_reader(source, info)
        return
    if not source.is_dir():
        raise ValueError(f"{source}: neither a folder nor a zip file")
    for path in sorted(source.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts or path.is_symlink():
            continue
        rel = path.relative_to(source)
        m = CANVAS_NAME.match(path.name)
        if m:
            key, filename = m["canvas"], m["file"]
        elif len(rel.parts) > 1:
            key, filename = rel.parts[0], path.name
        else:
            key, filename = path.stem, path.name
        yield key, filename, _file_reader(path)


def _zip_reader(source: Path, info: zipfile.ZipInfo):
    def read() -> bytes | None:
        if info.file_size > MAX_NOTEBOOK_BYTES:
            return None
        with zipfile.ZipFile(source) as zf, zf.open(info) as f:
            data = f.read(MAX_NOTEBOOK_BYTES + 1)
        return None if len(data) > MAX_NOTEBOOK_BYTES else data
    return read


def _file_reader(path: Path):
    def read() -> bytes | None:
        if path.stat().st_size > MAX_NOTEBOOK_BYTES:
            return None
        return path.read_bytes()
    return read


# -- grades out ------------------------------------------------------------------------------
CANVAS_COLUMNS = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]


def grades_table(course: Course, assignments: list[str] | None = None
                 ) -> tuple[list[str], dict[str, float], list[dict]]:
    """(assignment names, points possible, one row per student) from the gradebook."""
    from nbgrader.api import MissingEntry

    roster = {s.id: s for s in course.roster()}
    rows = []
    with course.gradebook() as gb:
        names = assignments or sorted(a.name for a in gb.assignments)
        possible = {a: gb.find_assignment(a).max_score for a in names}
        for student in sorted(gb.students, key=lambda s: s.id):
            r = roster.get(student.id, Student(student.id, student.first_name or "",
                                               student.last_name or "",
                                               lms_user_id=student.lms_user_id or ""))
            row = {"Student": f"{r.last_name}, {r.first_name}".strip(", ") or r.id,
                   "ID": r.lms_user_id, "SIS User ID": r.sis_user_id or r.id,
                   "SIS Login ID": r.sis_login_id, "Section": r.section, "_id": r.id}
            for a in names:
                try:
                    row[a] = gb.find_submission(a, student.id).score
                except MissingEntry:
                    row[a] = None
            rows.append(row)
    return names, possible, rows


def export_grades(course: Course, out: Path, assignments: list[str] | None = None) -> Path:
    """Write the Canvas gradebook CSV; a missing submission is an empty cell."""
    names, possible, rows = grades_table(course, assignments)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*CANVAS_COLUMNS, *names])
    writer.writerow(["    Points Possible", "", "", "", "", *(f"{possible[a]:g}" for a in names)])
    for row in rows:
        writer.writerow([*(row[c] for c in CANVAS_COLUMNS),
                         *("" if row[a] is None else f"{row[a]:g}" for a in names)])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(buffer.getvalue(), encoding="utf-8")
    return out


def read_grades_csv(path: Path) -> dict[str, dict[str, float | None]]:
    """Read an exported CSV back: {SIS User ID: {assignment: score}} (round trip check)."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for row in rows:
        if row["Student"].strip() == "Points Possible":
            continue
        out[row["SIS User ID"]] = {k: (float(v) if v else None) for k, v in row.items()
                                   if k not in CANVAS_COLUMNS}
    return out
