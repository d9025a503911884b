"""The nbgrader course the command works on: folders, gradebook, roster, assignments.

The layout is nbgrader's own (``autograder/nbgrader_config.py``): submissions in
``autograder/submitted/<student>/<assignment>/``, results in ``autograder/autograded/``,
feedback in ``autograder/feedback/``, the gradebook in ``autograder/gradebook.db``. Only the
trusted grading process writes the gradebook.
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from autograder.generate import ROOT, load_config
from autograder.grade.notebook import Master, load_master

ROSTER_FIELDS = ("id", "first_name", "last_name", "email", "lms_user_id", "sis_user_id",
                 "sis_login_id", "section")


@dataclass(frozen=True)
class Student:
    """A roster row. ``id`` is nbgrader's student id (a folder name); the LMS ids let a
    Canvas export match the student."""

    id: str
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    lms_user_id: str = ""
    sis_user_id: str = ""
    sis_login_id: str = ""
    section: str = ""

    @property
    def name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p) or self.id


def read_roster(path: Path) -> list[Student]:
    """A roster CSV with at least an ``id`` column (other columns: ROSTER_FIELDS)."""
    with Path(path).open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if rows and "id" not in rows[0]:
        raise ValueError(f"roster {path}: needs an 'id' column, has {sorted(rows[0])}")
    students = []
    for number, row in enumerate(rows, start=2):
        sid = (row.get("id") or "").strip()
        if not _valid_id(sid):
            raise ValueError(f"roster {path}, line {number}: bad student id {sid!r} "
                             "(letters, digits, '-', '_' and '.' only)")
        students.append(Student(**{k: (row.get(k) or "").strip() for k in ROSTER_FIELDS}))
    return students


def _valid_id(sid: str) -> bool:
    return bool(sid) and sid not in (".", "..") and all(
        ch.isalnum() or ch in "-_." for ch in sid)


def ensure_alembic_on_path() -> None:
    """nbgrader runs ``alembic`` as a subprocess: put this interpreter's bin/ on PATH."""
    bindir = str(Path(sys.executable).parent)
    if shutil.which("alembic") is None and (Path(bindir) / "alembic").exists():
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


class Course:
    """Paths and gradebook access for one nbgrader course root."""

    def __init__(self, root: Path = ROOT, db_url: str | None = None) -> None:
        ensure_alembic_on_path()
        self.root = Path(root).resolve()
        settings = {"root": str(self.root)}
        if db_url:
            settings["db_url"] = db_url
        elif self.root != ROOT:
            settings["db_url"] = f"sqlite:///{self.root / 'autograder' / 'gradebook.db'}"
        self.config = load_config(**settings)
        cd = self.config.CourseDirectory
        self.course_id = cd.course_id
        self.db_url = cd.db_url
        self.submitted = self.root / cd.submitted_directory
        self.autograded = self.root / cd.autograded_directory
        self.feedback = self.root / cd.feedback_directory
        self.release = self.root / cd.release_directory
        self.source = self.root / cd.source_directory
        self.roster_file = self.root / "autograder" / "roster.csv"

    def gradebook(self):
        from nbgrader.api import Gradebook

        return Gradebook(self.db_url, self.course_id)

    def masters(self, assignment: str) -> list[Master]:
        """The assignment's notebooks, checked against the gradebook."""
        from nbgrader.api import MissingEntry

        with self.gradebook() as gb:
            try:
                entry = gb.find_assignment(assignment)
            except MissingEntry:
                raise ValueError(f"assignment {assignment!r} is not in the gradebook: run "
                                 f"`python -m autograder.generate {assignment}`") from None
            masters = []
            for notebook in entry.notebooks:
                path = self.release / assignment / f"{notebook.name}.ipynb"
                if not path.exists():
                    raise ValueError(f"{path} is missing: run `make exercises`")
                masters.append(load_master(path, notebook))
        return sorted(masters, key=lambda m: m.name)

    def submitted_students(self, assignment: str) -> list[str]:
        if not self.submitted.is_dir():
            return []
        return sorted(p.name for p in self.submitted.iterdir()
                      if (p / assignment).is_dir() and _valid_id(p.name))

    def add_students(self, students: list[Student]) -> None:
        """Create or update the roster's students in the gradebook (one transaction)."""
        from nbgrader.api import Student as Row

        with self.gradebook() as gb:
            for s in students:
                row = gb.db.get(Row, s.id) or Row(id=s.id)
                row.first_name = s.first_name or row.first_name
                row.last_name = s.last_name or row.last_name
                row.email = s.email or row.email
                row.lms_user_id = s.lms_user_id or row.lms_user_id
                gb.db.add(row)
            gb.db.commit()

    def roster(self) -> list[Student]:
        return read_roster(self.roster_file) if self.roster_file.exists() else []
