"""Regenerate the student notebooks: ``python -m autograder.generate [assignment ...]``.

Runs nbgrader's generate_assignment in this one process (importing nbformat costs
seconds, so one process for all assignments) from ``solutions/<a>/`` into
``exercises/<a>/`` and records the grade cells in the gradebook that autograding
reads. With no arguments every assignment under ``solutions/`` is regenerated and
exercise folders whose solutions are gone are removed. The output depends only on the
source notebooks, so the committed exercises can be compared with a fresh run
(tests/test_nbgrader_pipeline.py does).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG_FILE = HERE / "nbgrader_config.py"
SOURCE = "solutions"
RELEASE = "exercises"


class GenerateError(RuntimeError):
    """nbgrader could not generate an assignment; the message carries its log."""


def find_assignments(course_root: Path = ROOT) -> list[str]:
    """Names of the assignment folders under ``solutions/`` that hold a notebook."""
    source = course_root / SOURCE
    return sorted(p.name for p in source.iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


def _alembic_on_path() -> None:
    """nbgrader runs ``alembic`` as a subprocess: make this interpreter's bin/ findable."""
    bindir = str(Path(sys.executable).parent)
    if shutil.which("alembic") is None and (Path(bindir) / "alembic").exists():
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def load_config(**course: str):
    """The course's nbgrader config, with ``CourseDirectory`` settings overridden."""
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader(CONFIG_FILE.name, path=str(HERE)).load_config()
    for key, value in course.items():
        setattr(config.CourseDirectory, key, value)
    return config


def generate(
    assignments: Iterable[str] | None = None,
    release_root: Path | None = None,
    course_root: Path = ROOT,
    *,
    db_url: str | None = None,
    quiet: bool = False,
) -> dict[str, list[Path]]:
    """Generate ``<release_root>/<a>/`` from ``<course_root>/solutions/<a>/`` for each ``a``.

    ``release_root`` defaults to the course's ``exercises/``, written together with the
    course gradebook. Any other ``release_root`` (e.g. a temporary folder) is generated
    without touching a gradebook, unless ``db_url`` names one. Returns the files written
    per assignment; raises ``GenerateError`` with nbgrader's log if one fails.
    """
    from nbgrader.apps import NbGraderAPI

    _alembic_on_path()
    course_root = Path(course_root).resolve()
    names = sorted(assignments) if assignments is not None else find_assignments(course_root)
    release = Path(release_root).resolve() if release_root else course_root / RELEASE
    settings = {
        "root": str(course_root),
        "source_directory": SOURCE,
        "release_directory": str(release),
    }
    if db_url:
        settings["db_url"] = db_url
    config = load_config(**settings)
    if release != course_root / RELEASE and not db_url:
        config.GenerateAssignment.no_database = True
        config.SaveCells.enabled = False
    config.NbGraderAPI.log_level = "WARN"

    api = NbGraderAPI(config=config)
    written: dict[str, list[Path]] = {}
    for name in names:
        if not (course_root / SOURCE / name).is_dir():
            raise GenerateError(f"no such assignment: {SOURCE}/{name}")
        result = api.generate_assignment(name, force=True, create=True)
        if not result["success"]:
            raise GenerateError(
                f"nbgrader could not generate {name}:\n{result.get('log', '')}{result['error']}"
            )
        files = sorted(p for p in (release / name).rglob("*") if p.is_file())
        written[name] = files
        if not quiet:
            notebooks = [p for p in files if p.suffix == ".ipynb"]
            print(
                f"{name}: {len(notebooks)} notebook(s), {len(files) - len(notebooks)} other "
                f"file(s) -> {_show(release / name)}"
            )
    return written


def _show(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def remove_orphans(course_root: Path = ROOT, *, quiet: bool = False) -> list[str]:
    """Delete ``exercises/<a>/`` folders that have no ``solutions/<a>/`` any more."""
    sources = set(find_assignments(course_root))
    release = course_root / RELEASE
    orphans = sorted(p.name for p in release.iterdir() if p.is_dir() and p.name not in sources)
    for name in orphans:
        shutil.rmtree(release / name)
        if not quiet:
            print(f"{name}: removed {RELEASE}/{name} (no {SOURCE}/{name})")
    return orphans


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m autograder.generate",
        description="Regenerate exercises/<assignment>/ from solutions/<assignment>/.",
    )
    parser.add_argument("assignments", nargs="*", help="default: every folder in solutions/")
    args = parser.parse_args(argv)
    try:
        generate(args.assignments or None)
    except GenerateError as error:
        print(error, file=sys.stderr)
        return 1
    if not args.assignments:
        remove_orphans()
    return 0


if __name__ == "__main__":
    sys.exit(main())
