"""``faultline-grade`` (``python -m autograder.grade``): the instructor's grading command.

    python -m autograder.grade import 01-availability downloads.zip --roster roster.csv
    python -m autograder.grade autograde 01-availability [STUDENT ...] [--jobs 4]
    python -m autograder.grade feedback 01-availability
    python -m autograder.grade export --to grades.csv

Run it from anywhere; ``--course`` defaults to this repository. See the package modules
for how each step treats untrusted submissions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autograder.grade.sandbox import Limits


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="faultline-grade", description=__doc__.split("\n\n")[0])
    p.add_argument("--course", type=Path, default=None,
                   help="nbgrader course root (default: this repository)")
    sub = p.add_subparsers(dest="command", required=True)

    imp = sub.add_parser("import", help="copy submissions (folder or Canvas zip) into "
                         "autograder/submitted/ matched to the roster")
    imp.add_argument("assignment")
    imp.add_argument("source", type=Path, help="a folder or an LMS zip download")
    imp.add_argument("--roster", type=Path, help="roster CSV (default autograder/roster.csv)")

    ag = sub.add_parser("autograde", help="grade submissions in parallel sandboxes")
    ag.add_argument("assignment")
    ag.add_argument("students", nargs="*", help="default: everyone who submitted")
    ag.add_argument("--jobs", "-j", type=int, default=None, help="kernels at once (default: "
                    "the number of cores)")
    d = Limits()
    ag.add_argument("--cell-timeout", type=float, default=d.cell_timeout)
    ag.add_argument("--notebook-timeout", type=float, default=d.notebook_timeout)
    ag.add_argument("--cpu", type=int, default=d.cpu_seconds, help="CPU seconds per kernel")
    ag.add_argument("--memory-mb", type=int, default=d.memory_bytes >> 20)
    ag.add_argument("--output-kb", type=int, default=d.output_bytes >> 10,
                    help="output kept per cell")
    ag.add_argument("--isolation", choices=("auto", "namespaces", "plain"), default="auto")
    ag.add_argument("--quiet", action="store_true", help="no progress bar")

    fb = sub.add_parser("feedback", help="HTML feedback without hidden tests")
    fb.add_argument("assignment")
    fb.add_argument("students", nargs="*")

    ex = sub.add_parser("export", help="grades CSV for the Canvas gradebook import")
    ex.add_argument("assignments", nargs="*", help="default: all")
    ex.add_argument("--to", type=Path, default=Path("grades.csv"))
    ex.add_argument("--roster", type=Path, help="roster CSV (default autograder/roster.csv)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from autograder.grade.course import Course, read_roster

    course = Course(args.course) if args.course else Course()
    try:
        if args.command == "import":
            from autograder.grade.transfer import import_submissions

            roster = read_roster(args.roster) if args.roster else None
            report = import_submissions(course, args.assignment, args.source, roster)
            for student, files in sorted(report.imported.items()):
                print(f"imported {student}: {', '.join(files)}")
            for line in report.unmatched:
                print(f"skipped {line}")
            if report.missing:
                print(f"no submission from: {', '.join(report.missing)}")
            return 0
        if args.command == "autograde":
            return _autograde(course, args)
        if args.command == "feedback":
            from autograder.grade.feedback import render

            names = args.students or sorted(
                p.parent.parent.name for p in
                course.autograded.glob(f"*/{args.assignment}/faultline-report.json"))
            for student in names:
                for path in render(course, student, args.assignment):
                    print(f"feedback {student}: {path}")
            return 0
        if args.command == "export":
            from autograder.grade.transfer import export_grades

            if args.roster:
                course.roster_file = args.roster
            path = export_grades(course, args.to, args.assignments or None)
            print(f"grades written to {path}")
            return 0
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"faultline-grade: {error}", file=sys.stderr)
        return 2
    return 2


def _autograde(course, args) -> int:
    from autograder.grade.autograde import autograde

    d = Limits()
    limits = Limits(cell_timeout=args.cell_timeout, notebook_timeout=args.notebook_timeout,
                    cpu_seconds=args.cpu, memory_bytes=args.memory_mb << 20,
                    output_bytes=args.output_kb << 10,
                    notebook_output_bytes=max(d.notebook_output_bytes, args.output_kb << 10))
    results = autograde(course, args.assignment, args.students or None, jobs=args.jobs,
                        limits=limits, isolation=args.isolation, progress=not args.quiet)
    print(f"\n{'student':<20} {'score':>9}  notes")
    for g in results:
        notes = []
        if g.error:
            notes.append(f"GRADER ERROR: {g.error}")
        for n in g.notebooks:
            if n.broken:
                notes.append(f"{n.notebook}: not gradable: {n.broken}")
            if not n.broken:
                failed = [c.grade_id for c in n.cells if c.status == "error"]
                notes += [f"failed {', '.join(failed)}"] if 0 < len(failed) < len(n.cells) else []
                notes += [f"{c.grade_id}: {c.reason}" for c in n.cells
                          if c.status not in ("ok", "error", "manual")][:3]
            notes += [f"restored: {f}" for f in n.findings[:2]]
            notes += [f"REVIEW: {f}" for f in n.flags[:3]]
        print(f"{g.student:<20} {g.score:>4g}/{g.max_score:<4g}  {'; '.join(notes)}")
    mode = results[0].mode if results else "-"
    flagged = sum(g.flagged for g in results)
    print(f"\n{len(results)} graded (isolation: {mode}); {flagged} flagged for review; "
          f"reports in {course.autograded}/<student>/{args.assignment}/faultline-report.json")
    return 1 if any(g.error for g in results) else 0
