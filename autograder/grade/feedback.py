"""HTML feedback that never shows hidden tests.

nbgrader's own feedback renders the autograded notebook, hidden tests and the tracebacks of
failing hidden asserts included (NOTES.md). This page is written from the trusted side
instead: the student's answers, each test cell as the student received it (hidden block
removed), its score, and for a failing test only what the visible part says — a failure
inside the hidden block is reported as "a hidden test failed" with the check's hint.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from autograder.grade.course import Course

HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS\n?", re.DOTALL)
_LINE = re.compile(r"line (\d+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; color: #222; }
pre { background: #f6f8fa; padding: .6rem; overflow-x: auto; white-space: pre-wrap; }
.cell { border-left: 4px solid #ccc; margin: 1rem 0; padding-left: .8rem; }
.pass { border-color: #2e7d32; } .fail { border-color: #c62828; } .manual { border-color: #f9a825; }
.score { font-weight: bold; } .why { color: #c62828; } .md { background: none; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: .2rem .5rem; }
"""


def visible(source: str) -> str:
    """A test cell's source without its hidden block."""
    return HIDDEN.sub("", source)


def _hidden_lines(source: str) -> set[int]:
    """1-based line numbers that lie in a hidden block."""
    lines: set[int] = set()
    inside = False
    for number, line in enumerate(source.splitlines(), start=1):
        if "### BEGIN HIDDEN TESTS" in line:
            inside = True
        if inside:
            lines.add(number)
        if "### END HIDDEN TESTS" in line:
            inside = False
    return lines


def _failure(cell: dict, source: str) -> str:
    """What the student may see of a failing test: the visible check's message, or a hint."""
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    if not errors:
        return ""
    error = errors[-1]
    trace = _ANSI.sub("", "\n".join(error.get("traceback", [])))
    hidden = _hidden_lines(source)
    in_cell = [int(n) for n in _LINE.findall(trace)]  # the first frame is the cell
    failing_line = in_cell[0] if in_cell else None
    message = _ANSI.sub("", str(error.get("evalue", "")))
    if failing_line is None or failing_line in hidden:
        # not even the check's message: it quotes the hidden inputs and hint
        return (f"A hidden test failed ({error.get('ename')}). Re-read the rules above this "
                "cell: the hidden tests check exactly those.")
    return f"{error.get('ename')}: {message}"


def render(course: Course, student: str, assignment: str) -> list[Path]:
    """Write ``feedback/<student>/<assignment>/<notebook>.html``; return the paths."""
    folder = course.autograded / student / assignment
    report_path = folder / "faultline-report.json"
    if not report_path.exists():
        raise FileNotFoundError(f"{student} has no autograded {assignment}: autograde first")
    report = json.loads(report_path.read_text())
    masters = {m.name: m for m in course.masters(assignment)}
    out_dir = course.feedback / student / assignment
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for ng in report["notebooks"]:
        master = masters.get(ng["notebook"])
        if master is None:
            continue
        grades = {c["grade_id"]: c for c in ng["cells"]}
        score = sum(c["score"] or 0 for c in ng["cells"])
        total = sum(c["max_score"] for c in ng["cells"])
        parts = [f"<h1>{html.escape(assignment)} · {html.escape(ng['notebook'])}</h1>",
                 f"<p>Student: <b>{html.escape(student)}</b> — score "
                 f"<span class=score>{score:g} / {total:g}</span></p>"]
        if ng["broken"]:
            parts.append(f"<p class=why>Your notebook could not be graded: "
                         f"{html.escape(ng['broken'])}</p>")
        parts.append(_summary(ng, master))
        nb_path = folder / f"{ng['notebook']}.ipynb"
        secret = hidden_lines(master)
        if nb_path.exists():
            nb = json.loads(nb_path.read_text())
            for cell in nb["cells"]:
                parts.append(_cell(cell, grades, secret))
        page = (f"<!doctype html><html><head><meta charset=utf-8><title>Feedback "
                f"{html.escape(assignment)}</title><style>{STYLE}</style></head><body>"
                + "\n".join(parts) + "</body></html>")
        path = out_dir / f"{ng['notebook']}.html"
        path.write_text(page, encoding="utf-8")
        written.append(path)
    return written


def _summary(ng: dict, master) -> str:
    rows = []
    for c in ng["cells"]:
        score = "manual" if c["score"] is None else f"{c['score']:g}"
        reason = c["reason"]
        if c["status"] in ("error",):
            reason = "a test failed: see below"
        rows.append(f"<tr><td>{html.escape(c['grade_id'])}</td><td>{score} / "
                    f"{c['max_score']:g}</td><td>{html.escape(reason)}</td></tr>")
    notes = [*ng.get("findings", []), *ng.get("events", [])]
    extra = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return ("<table><tr><th>test</th><th>points</th><th>note</th></tr>" + "".join(rows)
            + "</table>" + (f"<ul>{extra}</ul>" if extra else ""))


def hidden_lines(master) -> set[str]:
    """Every line of the master's hidden tests (stripped), to censor student outputs: a
    student's cell can print what earlier cells ran (IPython keeps their source)."""
    lines = set()
    for cell in master.cells:
        for block in re.findall(r"### BEGIN HIDDEN TESTS(.*?)### END HIDDEN TESTS", cell.source,
                                re.DOTALL):
            lines |= {line.strip() for line in block.splitlines() if len(line.strip()) > 3}
    return lines


def censor(text: str, secret: set[str]) -> str:
    """``text`` with any line that contains a hidden test line replaced."""
    if not secret:
        return text
    out = []
    for line in text.splitlines(keepends=True):
        if any(s in line for s in secret):
            out.append("[hidden test text removed]\n")
        else:
            out.append(line)
    return "".join(out)


def _cell(cell: dict, grades: dict, secret: set[str]) -> str:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    gid = meta.get("grade_id")
    source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    if cell["cell_type"] == "markdown":
        return f"<div class='cell md'><pre class=md>{html.escape(source)}</pre></div>"
    if gid in grades and meta.get("grade") and not meta.get("solution"):
        g = grades[gid]
        ok = g["score"] == g["max_score"]
        body = f"<pre>{html.escape(visible(source))}</pre>"
        status = f"<p class=score>{(g['score'] or 0):g} / {g['max_score']:g}</p>"
        if not ok:
            why = _failure(cell, source) or g["reason"]
            status += f"<p class=why>{html.escape(why)}</p>"
        return f"<div class='cell {'pass' if ok else 'fail'}'>{status}{body}</div>"
    if meta.get("locked"):
        return f"<div class=cell><pre>{html.escape(visible(source))}</pre></div>"
    outs = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            outs.append(html.escape(censor(o.get("text", "")[:5000], secret)))
        elif o.get("output_type") == "error":
            outs.append(html.escape(censor(f"{o.get('ename')}: {o.get('evalue')}"[:2000],
                                           secret)))
    shown = f"<pre>{''.join(outs)}</pre>" if outs else ""
    return f"<div class=cell><pre>{html.escape(source)}</pre>{shown}</div>"
