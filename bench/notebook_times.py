"""How long each notebook takes: every lesson (course/) and source notebook (solutions/)
executed with nbclient, one at a time, each in a fresh kernel, against the 30 s target.

    .venv/bin/python bench/notebook_times.py [--only 04] [--target 30]

Each notebook runs as tests/test_notebooks.py runs it (kernel ``python3``, its own folder
as the working directory). Prints the wall time of the whole run (kernel start to shut
down) and the time its cells took (from nbclient's per-cell timestamps). A failing
notebook is reported with the cell that failed, and the others still run. Not a test.
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import datetime
from pathlib import Path

import nbclient
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
CELL_TIMEOUT = 120  # seconds, as in tests/test_notebooks.py


def notebooks(only: str | None = None) -> list[Path]:
    """The notebooks of course/ and solutions/, sorted; ``only``: names containing it."""
    found = sorted(path for folder in ("course", "solutions")
                   for path in (ROOT / folder).rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in path.parts)
    return [p for p in found if only is None or only in str(p.relative_to(ROOT))]


def _stamp(cell: nbformat.NotebookNode, key: str) -> datetime | None:
    value = cell.get("metadata", {}).get("execution", {}).get(key)
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def cells_seconds(nb: nbformat.NotebookNode) -> float | None:
    """Seconds from the first code cell starting to the last one answering."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    starts = [s for c in code if (s := _stamp(c, "iopub.execute_input")) is not None]
    ends = [e for c in code if (e := _stamp(c, "shell.execute_reply")) is not None]
    if not starts or not ends:
        return None
    return (max(ends) - min(starts)).total_seconds()


def run(path: Path) -> tuple[float, float | None, str | None]:
    """Execute ``path`` in a fresh kernel: (wall seconds, cell seconds, error or None)."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    started = time.perf_counter()
    error = None
    try:
        client.execute()
    except CellExecutionError as exc:
        error = str(exc).strip().splitlines()[-1][:120] if str(exc).strip() else "failed"
    except Exception as exc:  # a kernel that died or timed out: report it, go on
        error = f"{type(exc).__name__}: {exc}"[:120]
    return time.perf_counter() - started, cells_seconds(nb), error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run only notebooks whose path contains this")
    parser.add_argument("--target", type=float, default=30.0, help="seconds per notebook")
    args = parser.parse_args()
    paths = notebooks(args.only)
    print(f"python {platform.python_version()}, nbclient {nbclient.__version__}, "
          f"nbformat {nbformat.__version__}; {len(paths)} notebooks, target <= "
          f"{args.target:g} s each (wall: kernel start to shut down)")
    width = max((len(str(p.relative_to(ROOT))) for p in paths), default=10)
    print(f"  {'notebook':{width}}  {'wall s':>7}  {'cells s':>7}  verdict")
    slowest, failed, over = 0.0, 0, 0
    for path in paths:
        wall, cells, error = run(path)
        slowest = max(slowest, wall)
        verdict = "ok" if wall <= args.target else "OVER TARGET"
        over += wall > args.target
        if error:
            failed += 1
            verdict = f"FAILED: {error}"
        cells_text = f"{cells:7.1f}" if cells is not None else f"{'-':>7}"
        print(f"  {path.relative_to(ROOT)!s:{width}}  {wall:7.1f}  {cells_text}  {verdict}",
              flush=True)
    print(f"slowest {slowest:.1f} s; {len(paths) - over - failed} of {len(paths)} within "
          f"{args.target:g} s and without error; {over} over, {failed} failed")
    verdict = "met" if not over and not failed else "MISSED"
    print(f"target: every notebook <= {args.target:g} s: slowest {slowest:.1f} s ({verdict})")


if __name__ == "__main__":
    main()
