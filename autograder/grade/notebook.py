"""The trusted side's view of notebooks: the master copy of an assignment notebook, a
submission's file checked without executing anything, and the notebook that is actually
run — built from the master, with only the student's answers (and their own extra cells)
taken from the submission.

Locked cells (test cells, the setup cell, prompts) always come from the gradebook's master
copies: an edited, deleted, re-checksummed or re-labelled locked cell cannot change what
runs, and every difference is reported. Points and grade ids come from the gradebook too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

MAX_NOTEBOOK_BYTES = 20 << 20
HELPERS = ("check", "check_close", "check_raises", "check_that")


class BrokenNotebook(ValueError):
    """The submitted file is not a gradable notebook; the message says why."""


@dataclass
class MasterCell:
    """One cell of the master notebook."""

    cell_type: str
    source: str
    grade_id: str | None = None
    locked: bool = False
    solution: bool = False
    grade: bool = False
    points: float = 0.0
    checksum: str | None = None
    cell_id: str | None = None
    released: str | None = None  # the source students got (hidden tests removed)

    @property
    def nbgrader(self) -> dict | None:
        if self.grade_id is None:
            return None
        meta = {"grade": self.grade, "grade_id": self.grade_id, "locked": self.locked,
                "schema_version": 3, "solution": self.solution, "task": False}
        if self.grade:
            meta["points"] = self.points
        if self.checksum:
            meta["checksum"] = self.checksum
        return meta


@dataclass
class Master:
    """An assignment notebook as the instructor released it, checked against the gradebook."""

    assignment: str
    name: str
    cells: list[MasterCell]
    metadata: dict

    @property
    def by_id(self) -> dict[str, MasterCell]:
        return {c.grade_id: c for c in self.cells if c.grade_id}

    @property
    def grade_cells(self) -> dict[str, float]:
        return {c.grade_id: c.points for c in self.cells if c.grade}

    @property
    def helpers(self) -> tuple[str, ...]:
        """The faultline.checks helpers that the locked setup cells import."""
        text = "\n".join(c.source for c in self.cells if c.locked and not c.grade)
        return tuple(h for h in HELPERS if re.search(rf"\b{h}\b", text))


def source_text(source: object) -> str:
    if isinstance(source, list):
        return "".join(str(s) for s in source)
    return str(source)


def load_master(release_notebook: Path, gradebook_notebook) -> Master:
    """The released notebook with locked sources, checksums and points from the gradebook
    (``gradebook_notebook`` is nbgrader's ``Notebook`` row)."""
    nb = json.loads(release_notebook.read_text())
    sources = {c.name: c for c in gradebook_notebook.source_cells}
    grades = {c.name: c for c in gradebook_notebook.grade_cells}
    solutions = {c.name for c in gradebook_notebook.solution_cells}
    cells = []
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader")
        text = source_text(cell.get("source", ""))
        if not meta or "grade_id" not in meta:
            cells.append(MasterCell(cell["cell_type"], text, cell_id=cell.get("id")))
            continue
        gid = meta["grade_id"]
        stored = sources.get(gid)
        locked = bool(stored.locked) if stored else bool(meta.get("locked"))
        released = text
        if stored is not None and locked:
            text = stored.source
        cells.append(MasterCell(
            cell["cell_type"], text, gid, locked=locked, solution=gid in solutions,
            grade=gid in grades, points=float(grades[gid].max_score) if gid in grades else 0.0,
            checksum=stored.checksum if stored else meta.get("checksum"),
            cell_id=cell.get("id"), released=released))
    missing = set(grades) - {c.grade_id for c in cells if c.grade}
    if missing:
        raise ValueError(f"{release_notebook}: grade cells {sorted(missing)} are in the "
                         "gradebook but not in the released notebook: regenerate it")
    return Master(nb_name(release_notebook), release_notebook.stem, cells, nb.get("metadata", {}))


def nb_name(path: Path) -> str:
    return path.parent.name


def parse_submission(raw: bytes) -> dict:
    """Check a submitted file's structure (never executing it); raise BrokenNotebook."""
    if len(raw) > MAX_NOTEBOOK_BYTES:
        raise BrokenNotebook(f"the file is {len(raw)} bytes, over the "
                             f"{MAX_NOTEBOOK_BYTES >> 20} MB limit")
    try:
        nb = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise BrokenNotebook(f"the file is not UTF-8 text ({error.reason})") from None
    except json.JSONDecodeError as error:
        raise BrokenNotebook(f"invalid JSON: {error.msg} at line {error.lineno}, column "
                             f"{error.colno}") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise BrokenNotebook("valid JSON but not a notebook (no list of cells)")
    if nb.get("nbformat") != 4:
        raise BrokenNotebook(f"wrong notebook format: nbformat {nb.get('nbformat')!r}, "
                             "expected 4")
    for index, cell in enumerate(nb["cells"]):
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            raise BrokenNotebook(f"cell {index} is not a notebook cell")
        src = cell.get("source", "")
        if not (isinstance(src, str) or (isinstance(src, list)
                                         and all(isinstance(s, str) for s in src))):
            raise BrokenNotebook(f"cell {index}: its source is not text")
        if not isinstance(cell.get("metadata", {}), dict):
            raise BrokenNotebook(f"cell {index}: its metadata is not an object")
    return nb


@dataclass
class Cell:
    """A cell of the notebook that is run: where it comes from, and what it is."""

    cell_type: str
    source: str
    master: MasterCell | None  # the master cell (for locked cells and answers), or None
    origin: str  # "master" (locked, restored), "answer" (student's answer), "extra"

    @property
    def is_test(self) -> bool:
        return bool(self.master and self.master.grade and not self.master.solution)

    @property
    def locked(self) -> bool:
        return bool(self.master and self.master.locked)


@dataclass
class Built:
    cells: list[Cell]
    findings: list[str] = field(default_factory=list)  # what was restored or ignored, and why


def _nbgrader_meta(cell: dict) -> dict | None:
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta if isinstance(meta, dict) else None


def build(master: Master, submitted: dict) -> Built:
    """The notebook to run: the student's order and answers, the master's locked cells."""
    by_id = master.by_id
    out: list[Cell] = []
    findings: list[str] = []
    seen: set[str] = set()
    for cell in submitted["cells"]:
        text = source_text(cell.get("source", ""))
        ctype = cell["cell_type"]
        meta = _nbgrader_meta(cell)
        gid = meta.get("grade_id") if meta else None
        gid = gid if isinstance(gid, str) else None
        ref = by_id.get(gid) if gid else None
        if ref is None:
            if gid:
                findings.append(f"a cell claims grade_id {gid!r}, which the assignment does "
                                "not have: it runs as an ordinary cell and earns nothing")
            out.append(Cell(ctype, text, None, "extra"))
            continue
        if gid in seen:
            findings.append(f"cell {gid!r} appears twice: the copy was ignored")
            continue
        seen.add(gid)
        if ref.locked:
            if text.strip() not in (ref.source.strip(), (ref.released or "").strip()) \
                    or ctype != ref.cell_type:
                findings.append(f"locked cell {gid!r} was edited: restored from the gradebook")
            elif meta != ref.nbgrader and _meta_differs(meta, ref):
                findings.append(f"the nbgrader metadata of {gid!r} was changed: restored")
            out.append(Cell(ref.cell_type, ref.source, ref, "master"))
        else:
            if _meta_differs(meta, ref):
                findings.append(f"the nbgrader metadata of answer {gid!r} was changed "
                                "(e.g. turned into a test cell or given points): restored")
            out.append(Cell(ref.cell_type, text if ctype == ref.cell_type else ref.source,
                            ref, "answer"))
    # put back deleted locked cells after the cell that precedes them in the master
    for position, ref in enumerate(master.cells):
        if not ref.grade_id or ref.grade_id in seen:
            continue
        if not ref.locked:
            findings.append(f"answer cell {ref.grade_id!r} is missing (deleted, renamed or "
                            "stripped of its nbgrader metadata)")
            continue
        findings.append(f"locked cell {ref.grade_id!r} was deleted or stripped of its nbgrader "
                        "metadata: restored from the gradebook")
        before = {c.grade_id for c in master.cells[:position] if c.grade_id}
        at = 0
        for i, cell in enumerate(out):
            if cell.master is not None and cell.master.grade_id in before:
                at = i + 1
        out.insert(at, Cell(ref.cell_type, ref.source, ref, "master"))
        seen.add(ref.grade_id)
    return Built(out, findings)


def _meta_differs(meta: dict | None, ref: MasterCell) -> bool:
    if meta is None:
        return True
    want = {"grade": ref.grade, "solution": ref.solution, "locked": ref.locked}
    got = {k: bool(meta.get(k)) for k in want}
    if got != want:
        return True
    if ref.grade:
        try:
            return float(meta.get("points", -1)) != ref.points
        except (TypeError, ValueError):
            return True
    return False


def to_notebook(built: Built, master: Master, outputs: dict[int, list[dict]]) -> dict:
    """The autograded notebook (nbformat 4 JSON) with the given outputs per cell index."""
    cells = []
    for index, cell in enumerate(built.cells):
        entry = {"cell_type": cell.cell_type, "metadata": {}, "source": cell.source,
                 "id": (cell.master.cell_id if cell.master and cell.master.cell_id
                        else f"cell-{index}")}
        if cell.master is not None and cell.master.nbgrader:
            entry["metadata"]["nbgrader"] = cell.master.nbgrader
        if cell.cell_type == "code":
            entry["outputs"] = outputs.get(index, [])
            entry["execution_count"] = None
        cells.append(entry)
    ids = set()
    for entry in cells:  # cell ids must be unique
        while entry["id"] in ids:
            entry["id"] += "-x"
        ids.add(entry["id"])
    return {"cells": cells, "metadata": master.metadata, "nbformat": 4, "nbformat_minor": 5}
