"""``make student-bundle``: the kit as learners get it, without anything instructor-only.

Writes ``build/faultline-student.zip`` from the committed files (``git ls-files``, or the
working tree when there is no git), leaving out ``solutions/``, the grading command and its
samples, the grading tests and benchmarks, and nbgrader's state; then checks that no file
left in the bundle contains a solution or hidden-test region.
"""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import zipfile
from pathlib import Path

from autograder.generate import ROOT

EXCLUDE = [
    "solutions/*",  # solutions and hidden tests
    "autograder/grade/*",  # the instructor's grading command
    "autograder/samples/*",
    "autograder/generate.py",
    "autograder/gradebook.db", "autograder/submitted/*", "autograder/autograded/*",
    "autograder/feedback/*", "autograder/roster.csv", "autograder/grades.csv",
    "tests/grading.py", "tests/test_grading_*.py", "tests/test_hostile.py",
    "tests/test_grade_cli.py", "tests/test_nbgrader_pipeline.py",
    "tests/test_jupyterhub.py",  # moves solutions/01 through a hub
    "tests/test_browser.py",  # validates solutions/01 in the browser
    "bench/autograde_speed.py",
    ".ci/*", ".nbgrader.log",
]
FORBIDDEN = ("### BEGIN SOLUTION", "### BEGIN HIDDEN TESTS")


def files(root: Path = ROOT) -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=root, check=True,
                             capture_output=True).stdout.decode()
        names = [n for n in out.split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "build"}
        names = [str(p.relative_to(root)) for p in root.rglob("*")
                 if p.is_file() and not skip & set(p.relative_to(root).parts)]
    return sorted(n for n in names if (root / n).is_file()
                  and not any(fnmatch.fnmatch(n, pat) for pat in EXCLUDE))


def build(out: Path | None = None, root: Path = ROOT) -> Path:
    out = out or root / "build" / "faultline-student.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    leaks = []
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in files(root):
            data = (root / name).read_bytes()
            if any(marker.encode() in data for marker in FORBIDDEN) and name != \
                    "autograder/grade/bundle.py":
                leaks.append(name)
            zf.writestr(f"faultline/{name}", data)
    if leaks:
        out.unlink()
        raise SystemExit("solution or hidden-test text in: " + ", ".join(leaks))
    return out


if __name__ == "__main__":
    path = build()
    with zipfile.ZipFile(path) as zf:
        count = len(zf.namelist())
    print(f"{path}: {count} files (no solutions/, hidden tests or grading command)")
    sys.exit(0)
