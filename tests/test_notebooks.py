"""Every source notebook (solutions/) runs top to bottom without error or stderr.

Each notebook runs in a fresh kernel with its own folder as the working directory, as
JupyterLab would run it. Notebooks added later are picked up by the glob. The lessons
(course/) are run where learners run them, in JupyterLab in a real browser, twice in one
kernel with the same checks: tests/test_browser.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(
    path
    for path in (ROOT / "solutions").rglob("*.ipynb")
    if ".ipynb_checkpoints" not in path.parts
)
CELL_TIMEOUT = 120  # seconds; the slowest live demo should stay far below this
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def first_error(nb) -> tuple[int, str] | None:
    """Index and text of the first error output in an executed notebook."""
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                trace = ANSI.sub("", "\n".join(output.get("traceback", [])))
                return index, trace or f"{output['ename']}: {output['evalue']}"
    return None


def stderr_text(nb) -> str:
    """Everything the notebook wrote to stderr (warnings, leaked-task reports...)."""
    return "".join(
        "".join(output.get("text", ""))
        for cell in nb.cells
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream" and output.get("name") == "stderr"
    )


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_runs_without_error(path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    try:
        client.execute()
    except CellExecutionError as error:
        failure = str(error)  # reported below, outside the handler, without the chain
    else:
        noise = stderr_text(nb)
        assert not noise, f"{path.relative_to(ROOT)} wrote to stderr:\n{noise}"
        return
    found = first_error(nb)
    if found is None:
        pytest.fail(f"{path.relative_to(ROOT)}: {ANSI.sub('', failure)}", pytrace=False)
    index, text = found
    cell = nb.cells[index]
    pytest.fail(
        f"{path.relative_to(ROOT)}: cell {index} (id {cell.get('id', '?')}) raised:\n"
        f"{cell.source}\n---\n{text}",
        pytrace=False,
    )

