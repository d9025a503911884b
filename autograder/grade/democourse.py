"""A throwaway nbgrader course for tests and benchmarks: the kit's configuration rooted in a
temporary folder, with some of ``solutions/`` generated into it and its own gradebook."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from autograder.generate import ROOT, generate
from autograder.grade.course import Course


def make_course(root: Path, assignments: list[str]) -> Course:
    """Copy ``solutions/<a>`` for each assignment into ``root``, generate the exercises and
    the gradebook there, and return the course."""
    root = Path(root)
    (root / "autograder").mkdir(parents=True, exist_ok=True)
    for name in assignments:
        shutil.copytree(ROOT / "solutions" / name, root / "solutions" / name,
                        dirs_exist_ok=True)
    db_url = f"sqlite:///{root / 'autograder' / 'gradebook.db'}"
    generate(assignments, root / "exercises", root, db_url=db_url, quiet=True)
    return Course(root)


def submit(course: Course, student: str, assignment: str, notebook: str,
           content: dict | str | bytes) -> Path:
    """Place one submitted notebook (a dict is written as JSON) where nbgrader expects it."""
    folder = course.submitted / student / assignment
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{notebook}.ipynb"
    if isinstance(content, dict):
        content = json.dumps(content, indent=1)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path
