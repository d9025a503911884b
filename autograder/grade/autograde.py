"""Autograde submissions: each in its own sandboxed kernel, several at once, results
checked against the gradebook's master copies and written in one transaction per student.

The grading process only reads submitted files (as data) and talks to kernels; every line
of student code runs in a sandbox (``autograder.grade.sandbox``). A broken notebook, a
hang, a crash or a tampering attempt costs that student the points of what it affects,
with a reason, and never stops the batch.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

from autograder.grade import executor as ex
from autograder.grade.course import Course
from autograder.grade.notebook import (
    MAX_NOTEBOOK_BYTES,
    BrokenNotebook,
    Built,
    Master,
    build,
    parse_submission,
    to_notebook,
)
from autograder.grade.sandbox import MAX_SLOTS, Kernel, Limits, isolation_mode
from autograder.grade.scan import scan_source

MAX_WORK_FILE_BYTES = 8 << 20


@dataclass
class CellGrade:
    """The grade of one grade cell, and why."""

    grade_id: str
    score: float | None  # None: needs manual grading
    max_score: float
    status: str
    reason: str = ""


@dataclass
class NotebookGrade:
    notebook: str
    cells: list[CellGrade] = field(default_factory=list)
    broken: str = ""  # why the file could not be graded at all
    findings: list[str] = field(default_factory=list)  # restored / ignored tampering
    flags: list[str] = field(default_factory=list)  # for the instructor to review
    events: list[str] = field(default_factory=list)  # hangs, crashes, restarts
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return sum(c.score or 0.0 for c in self.cells)

    @property
    def max_score(self) -> float:
        return sum(c.max_score for c in self.cells)


@dataclass
class StudentGrade:
    student: str
    assignment: str
    notebooks: list[NotebookGrade]
    mode: str
    error: str = ""  # the grader's own failure for this student (the batch goes on)

    @property
    def score(self) -> float:
        return sum(n.score for n in self.notebooks)

    @property
    def max_score(self) -> float:
        return sum(n.max_score for n in self.notebooks)

    @property
    def flagged(self) -> bool:
        return any(n.flags for n in self.notebooks)


def _work_files(course: Course, student: str, assignment: str) -> dict[str, bytes]:
    """What the student may see in the sandbox: the assignment's released files and their own
    submitted files (notebooks are sent cell by cell instead)."""
    files: dict[str, bytes] = {}
    for base in (course.release / assignment, course.submitted / student / assignment):
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            rel = path.relative_to(base)
            if (path.is_symlink() or not path.is_file() or path.suffix == ".ipynb"
                    or ".ipynb_checkpoints" in rel.parts or path.name == "timestamp.txt"
                    or path.stat().st_size > MAX_WORK_FILE_BYTES):
                continue
            files[str(rel)] = path.read_bytes()
    return files


def _read_capped(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(MAX_NOTEBOOK_BYTES + 1)


def grade_notebook(course: Course, master: Master, student: str, *, limits: Limits, mode: str,
                   slot: int) -> tuple[NotebookGrade, dict | None]:
    """Grade one submitted notebook; returns the grade and the autograded notebook."""
    started = time.monotonic()
    result = NotebookGrade(master.name)
    path = course.submitted / student / master.assignment / f"{master.name}.ipynb"
    built: Built | None = None
    try:
        if path.is_symlink() or not path.is_file():
            raise BrokenNotebook(f"no {master.name}.ipynb was submitted")
        built = build(master, parse_submission(_read_capped(path)))
    except BrokenNotebook as error:
        result.broken = str(error)
    if built is None:
        result.cells = [CellGrade(gid, 0.0, pts, "broken", f"not graded: {result.broken}")
                        for gid, pts in master.grade_cells.items()]
        result.seconds = time.monotonic() - started
        return result, None
    result.findings = built.findings
    for index, cell in enumerate(built.cells):
        if cell.origin != "master" and cell.cell_type == "code":
            result.flags += [f"cell {index}: {why}" for why in scan_source(cell.source)]
    code = [(i, c) for i, c in enumerate(built.cells) if c.cell_type == "code"]
    kernel = Kernel(course_root=course.root, assignment=master.assignment,
                    work_files=_work_files(course, student, master.assignment),
                    limits=limits, mode=mode, slot=slot)
    try:
        run = ex.Executor(kernel, limits, helpers=master.helpers).run(
            [ex.RunCell(c.source, c.is_test, c.locked) for _, c in code])
    finally:
        kernel.close()
    results = {i: run.results[k] for k, (i, _) in enumerate(code)}
    result.events = [_renumber(e, code) for e in run.events]
    result.flags += [_renumber(t, code) for t in run.tampering]
    for index, cell in enumerate(built.cells):
        if cell.master is None or not cell.master.grade:
            continue
        result.cells.append(_grade(cell, results.get(index)))
    graded = {c.grade_id for c in result.cells}
    for gid, pts in master.grade_cells.items():  # cannot happen: build() restores them
        if gid not in graded:
            result.cells.append(CellGrade(gid, 0.0, pts, "missing", "test cell missing"))
    outputs = {i: r.outputs for i, r in results.items()}
    result.seconds = time.monotonic() - started
    return result, to_notebook(built, master, outputs)


def _renumber(text: str, code: list) -> str:
    """Executor messages count code cells; say notebook cell numbers instead."""
    if text.startswith("cell "):
        head, _, rest = text[5:].partition(":")
        if head.isdigit() and int(head) < len(code):
            index = code[int(head)][0]
            cell = code[int(head)][1]
            label = f" ({cell.master.grade_id})" if cell.master else ""
            return f"cell {index}{label}:{rest}"
    return text


def _grade(cell, run: ex.CellResult | None) -> CellGrade:
    ref = cell.master
    if ref.solution:  # a hand-graded answer: 0 if untouched, else for manual grading
        if cell.source.strip() == ref.source.strip():
            return CellGrade(ref.grade_id, 0.0, ref.points, "blank", "no answer given")
        return CellGrade(ref.grade_id, None, ref.points, "manual", "needs manual grading")
    if run is None:
        return CellGrade(ref.grade_id, 0.0, ref.points, ex.NOT_RUN, "not run")
    if run.status == ex.OK and not run.failed:
        for out in run.outputs:
            if out["output_type"] == "execute_result":
                score = _partial(out, ref.points)
                return CellGrade(ref.grade_id, score, ref.points, "partial" if score <
                                 ref.points else ex.OK)
        return CellGrade(ref.grade_id, ref.points, ref.points, ex.OK)
    reason = run.reason
    if run.status == ex.OK:
        reason = "the test wrote to stderr"
    elif run.status == ex.ERROR:
        reason = f"test failed: {run.reason}"
    elif run.status == ex.TIMEOUT:
        reason = f"test hung: {run.reason}"
    elif run.status in (ex.KILLED, ex.DIED):
        reason = f"test hung or crashed the kernel: {run.reason}"
    return CellGrade(ref.grade_id, 0.0, ref.points, run.status, reason)


def _partial(output: dict, points: float) -> float:
    text = str(output.get("data", {}).get("text/plain", "")).strip()
    try:
        value = float(text)
    except ValueError:
        return points
    return max(0.0, min(points, value)) if value == value else 0.0


# -- the gradebook ---------------------------------------------------------------------------
def record(course: Course, gb, grade: StudentGrade) -> None:
    """Replace the student's submission in the gradebook in one transaction."""
    from nbgrader.api import (
        Assignment,
        Comment,
        Grade,
        SubmittedAssignment,
        SubmittedNotebook,
    )
    from nbgrader.api import Student as Row

    db = gb.db
    try:
        student = db.get(Row, grade.student) or Row(id=grade.student)
        db.add(student)
        assignment = db.query(Assignment).filter_by(name=grade.assignment).one()
        for old in db.query(SubmittedAssignment).filter_by(
                assignment_id=assignment.id, student_id=grade.student).all():
            for nb in old.notebooks:
                for row in [*nb.grades, *nb.comments]:
                    db.delete(row)
                db.delete(nb)
            db.delete(old)
        db.flush()
        stamp = _timestamp(course.submitted / grade.student / grade.assignment)
        sub = SubmittedAssignment(assignment=assignment, student=student, timestamp=stamp)
        db.add(sub)
        by_name = {n.notebook: n for n in grade.notebooks}
        with db.no_autoflush:
            for notebook in assignment.notebooks:
                ng = by_name.get(notebook.name)
                snb = SubmittedNotebook(notebook=notebook, assignment=sub,
                                        flagged=bool(ng and (ng.flags or ng.broken)))
                db.add(snb)
                scores = {c.grade_id: c for c in ng.cells} if ng else {}
                for cell in notebook.grade_cells:
                    cg = scores.get(cell.name)
                    db.add(Grade(cell_id=cell.id, notebook=snb,
                                 auto_score=cg.score if cg else 0.0,
                                 needs_manual_grade=bool(cg and cg.score is None)))
                for cell in [*notebook.solution_cells, *notebook.task_cells]:
                    cg = scores.get(cell.name)
                    db.add(Comment(cell_id=cell.id, notebook=snb,
                                   auto_comment=cg.reason if cg and cg.score == 0 else None))
        db.commit()
    except Exception:
        db.rollback()
        raise


def _timestamp(folder: Path):
    from nbgrader.utils import parse_utc

    stamp = folder / "timestamp.txt"
    if stamp.is_file():
        try:
            return parse_utc(stamp.read_text()[:100].strip())
        except (ValueError, TypeError, OverflowError):
            return None
    return None


def write_outputs(course: Course, grade: StudentGrade, notebooks: dict[str, dict]) -> Path:
    """The autograded notebooks and a JSON report in autograder/autograded/<student>/<a>/."""
    folder = course.autograded / grade.student / grade.assignment
    folder.mkdir(parents=True, exist_ok=True)
    for name, nb in notebooks.items():
        tmp = folder / f".{name}.ipynb.tmp"
        tmp.write_text(json.dumps(nb, indent=1))
        os.replace(tmp, folder / f"{name}.ipynb")
    report = folder / "faultline-report.json"
    report.write_text(json.dumps(asdict(grade), indent=1))
    return report


# -- the batch -----------------------------------------------------------------------------
class Progress:
    """A text progress bar on stderr (one line per student when not a terminal)."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total, self.done, self.enabled = total, 0, enabled
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()

    def advance(self, grade: StudentGrade) -> None:
        self.done += 1
        if not self.enabled:
            return
        width = 24
        filled = int(width * self.done / max(1, self.total))
        bar = "#" * filled + "." * (width - filled)
        note = " FLAGGED" if grade.flagged else ""
        note += f" ERROR: {grade.error}" if grade.error else ""
        broken = [n.broken for n in grade.notebooks if n.broken]
        note += f" broken: {broken[0]}" if broken else ""
        line = (f"[{bar}] {self.done}/{self.total} {time.monotonic() - self.started:5.1f}s  "
                f"{grade.student}: {_fmt(grade.score)}/{_fmt(grade.max_score)}{note}")
        end = "\r" if self.tty and self.done < self.total else "\n"
        print(("\x1b[2K" if self.tty else "") + line, end=end, file=sys.stderr, flush=True)


def _fmt(x: float) -> str:
    return f"{x:g}"


def autograde(course: Course, assignment: str, students: list[str] | None = None, *,
              jobs: int | None = None, limits: Limits | None = None,
              isolation: str = "auto", progress: bool = True) -> list[StudentGrade]:
    """Grade ``students`` (default: everyone who submitted) with ``jobs`` kernels at once."""
    limits = limits or Limits()
    mode = isolation_mode(isolation)
    masters = course.masters(assignment)
    names = students if students is not None else course.submitted_students(assignment)
    jobs = min(MAX_SLOTS, max(1, jobs or os.cpu_count() or 1))
    bar = Progress(len(names), progress)
    if progress:
        print(f"autograding {assignment}: {len(names)} student(s), {jobs} at a time, "
              f"isolation: {mode}", file=sys.stderr, flush=True)
    slots = list(range(jobs))
    lock = threading.Lock()

    def one(student: str) -> tuple[StudentGrade, dict]:
        with lock:
            slot = slots.pop()
        try:
            grades, notebooks = [], {}
            for master in masters:
                ng, nb = grade_notebook(course, master, student, limits=limits, mode=mode,
                                        slot=slot)
                grades.append(ng)
                if nb is not None:
                    notebooks[master.name] = nb
            return StudentGrade(student, assignment, grades, mode), notebooks
        finally:
            with lock:
                slots.append(slot)

    results: list[StudentGrade] = []
    with course.gradebook() as gb, ThreadPoolExecutor(jobs) as pool:
        pending = {pool.submit(one, s): s for s in names}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                student = pending.pop(future)
                try:
                    grade, notebooks = future.result()
                    write_outputs(course, grade, notebooks)
                    record(course, gb, grade)
                except Exception as error:  # the grader's own failure: report, go on
                    grade = StudentGrade(student, assignment, [], mode,
                                         error=f"{type(error).__name__}: {error}")
                results.append(grade)
                bar.advance(grade)
    return sorted(results, key=lambda g: g.student)
