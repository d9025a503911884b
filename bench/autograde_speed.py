"""How long grading a class takes: faultline-grade (parallel, sandboxed) versus stock
sequential ``nbgrader autograde``, on the same synthetic submissions, on this machine.

    python bench/autograde_speed.py [--students 20] [--jobs N] [assignment ...]

For every assignment in ``solutions/`` (or those named), ``--students`` synthetic students
are made from the reference answers: student i leaves a seeded random subset of the answer
cells as released (blank), so scores vary. Two throwaway courses get identical copies; one
is graded with ``python -m autograder.grade autograde`` (in process), the other with the
``nbgrader autograde`` command line using the kit's nbgrader configuration. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autograder.generate import find_assignments  # noqa: E402
from autograder.grade.autograde import autograde  # noqa: E402
from autograder.grade.democourse import make_course, submit  # noqa: E402
from autograder.grade.samples import answered  # noqa: E402

STOCK_CONFIG = """c = get_config()
load_subconfig({config!r})
c.CourseDirectory.root = {root!r}
c.CourseDirectory.db_url = {db!r}
c.Exchange.root = {exchange!r}
"""


def synthetic(release: dict, solution: dict, count: int, seed: int) -> list[dict]:
    """``count`` submissions: the reference answers with a random subset left blank."""
    full = answered(release, solution)
    answers = [i for i, c in enumerate(full["cells"])
               if c["metadata"].get("nbgrader", {}).get("solution")]
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        nb = json.loads(json.dumps(full))
        for i in rng.sample(answers, rng.randrange(0, len(answers) + 1)):
            nb["cells"][i]["source"] = release["cells"][i]["source"]
        out.append(nb)
    return out


def populate(course, assignments: list[str], students: int) -> int:
    notebooks = 0
    for a in assignments:
        for path in sorted((course.release / a).glob("*.ipynb")):
            release = json.loads(path.read_text())
            solution = json.loads((course.source / a / path.name).read_text())
            for n, nb in enumerate(synthetic(release, solution, students, seed=len(a))):
                submit(course, f"student{n:02d}", a, path.stem, nb)
                notebooks += 1
    return notebooks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignments", nargs="*")
    parser.add_argument("--students", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    args = parser.parse_args()
    assignments = args.assignments or find_assignments()
    bindir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")

    with tempfile.TemporaryDirectory() as tmp:
        ours = make_course(Path(tmp) / "faultline", assignments)
        stock = make_course(Path(tmp) / "stock", assignments)
        notebooks = populate(ours, assignments, args.students)
        populate(stock, assignments, args.students)
        (stock.root / "exchange").mkdir()
        (stock.root / "nbgrader_config.py").write_text(STOCK_CONFIG.format(
            config=str(ROOT / "autograder" / "nbgrader_config.py"), root=str(stock.root),
            db=stock.db_url, exchange=str(stock.root / "exchange")))

        print(f"python {platform.python_version()}, nbgrader {version('nbgrader')}, "
              f"nbclient {version('nbclient')}, ipykernel {version('ipykernel')}")
        print(f"{args.students} students x {len(assignments)} assignment(s) "
              f"({', '.join(assignments)}) = {notebooks} notebooks; {os.cpu_count()} cores")
        started = time.perf_counter()
        total_ours = {}
        for a in assignments:
            for g in autograde(ours, a, jobs=args.jobs, progress=False):
                total_ours[(g.student, a)] = g.score
        ours_s = time.perf_counter() - started
        mode = g.mode if total_ours else "-"
        print(f"faultline-grade autograde (parallel, {args.jobs} jobs, isolation {mode}): "
              f"{ours_s:.1f} s")

        started = time.perf_counter()
        for a in assignments:
            subprocess.run(["nbgrader", "autograde", a, "--force"], cwd=stock.root,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        stock_s = time.perf_counter() - started
        print(f"stock nbgrader autograde (sequential, command line): {stock_s:.1f} s")

        with stock.gradebook() as gb:
            stock_scores = {(s.student.id, a): s.score for a in assignments
                            for s in gb.find_assignment(a).submissions}
        same = sum(stock_scores.get(k) == v for k, v in total_ours.items())
        for key, score in sorted(total_ours.items()):
            if stock_scores.get(key) != score:
                print(f"  differs: {key[0]} {key[1]}: faultline-grade {score}, "
                      f"stock {stock_scores.get(key)}")
        print(f"speed-up {stock_s / ours_s:.1f}x; same score for {same} of {len(total_ours)} "
              "submissions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
