"""JupyterLab in a real browser for the tests: a private Lab server and Debian's Chromium.

`LabServer` starts JupyterLab as a subprocess on 127.0.0.1 (a free port, a token, private
config and runtime folders, autosave off so a test never writes a notebook back) and stops it
by PID. `LabPage` drives one Lab tab through `window.jupyterapp`: open a notebook, Run All,
wait for every cell to finish, and read back what each cell showed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_MISSING = (
    f"Chromium not found at {CHROMIUM}: install it with `apt-get install -y chromium` "
    "(.ci/run does this)"
)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_TIMEOUT = 60.0  # seconds for JupyterLab to answer /api/status
SERVER_STOP_TIMEOUT = 15.0

# User settings written to the server's private config folder.
LAB_SETTINGS: dict[str, dict[str, Any]] = {
    # Never write a notebook back: the tests run the course's own files.
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    # Every cell in the DOM (no virtual scrolling), so rendered outputs can be counted.
    # Closing a notebook shuts its kernel down (and the live shop in it).
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none", "kernelShutdown": True},
    # No news or update toasts over the screenshots; no network.
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                    "checkForUpdates": False},
}


def _wait_for(predicate: Callable[[], Any], timeout: float, what: str, poll: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


class LabServer:
    """A JupyterLab server of our own, rooted at ``root``, for one test session."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.token = secrets.token_hex(16)
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._home = tempfile.TemporaryDirectory(prefix="faultline-lab-")
        self.log_path = Path(self._home.name) / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def lab_url(self, path: str = "") -> str:
        """The Lab page (optionally opening ``path``), logged in with the token."""
        where = f"/lab/tree/{path}" if path else "/lab"
        return f"{self.url}{where}?token={self.token}&reset"

    def start(self) -> LabServer:
        home = Path(self._home.name)
        env = dict(os.environ)
        env.update(
            JUPYTER_CONFIG_DIR=str(home / "config"),
            JUPYTER_RUNTIME_DIR=str(home / "runtime"),
            JUPYTERLAB_SETTINGS_DIR=str(home / "config" / "lab" / "user-settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(home / "config" / "lab" / "workspaces"),
            IPYTHONDIR=str(home / "ipython"),
            # nbgrader (Validate) runs `alembic` from the venv's bin/.
            PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        )
        for name, values in LAB_SETTINGS.items():
            target = Path(env["JUPYTERLAB_SETTINGS_DIR"]) / f"{name}.jupyterlab-settings"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(values))
        command = [
            sys.executable, "-m", "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port=0",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=",
            # Lab makes a checkpoint of each notebook it opens: keep them out of the checkout.
            f"--FileCheckpoints.checkpoint_dir={home / 'checkpoints'}",
        ]
        if os.getuid() == 0:
            command.append("--allow-root")
        log = self.log_path.open("wb")
        # Started from its private folder: nbgrader's server extensions read the config in
        # the working directory, and must not open the course's gradebook.
        self.process = subprocess.Popen(command, cwd=home, env=env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        try:
            self.port = _wait_for(self._port_from_runtime_file, SERVER_START_TIMEOUT,
                                  "JupyterLab's runtime file")
            _wait_for(self._ready, SERVER_START_TIMEOUT, f"{self.url}/api/status")
        except BaseException:
            self.stop()
            raise
        return self

    def _port_from_runtime_file(self) -> int | None:
        self._check_alive()
        runtime = Path(self._home.name) / "runtime" / f"jpserver-{self.process.pid}.json"
        try:
            return int(json.loads(runtime.read_text())["port"])
        except (OSError, ValueError, KeyError):
            return None

    def _ready(self) -> bool:
        self._check_alive()
        request = urllib.request.Request(f"{self.url}/api/status",
                                         headers={"Authorization": f"token {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return response.status == 200 and "started" in json.load(response)
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {self.process.returncode}:\n"
                               f"{self.log()}")

    def log(self) -> str:
        """The server's output so far (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def saves(self) -> list[str]:
        """Paths the server has saved files to (Jupyter logs each save)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return re.findall(r"Saving file at /(\S+)", text)

    def stop(self) -> None:
        """SIGTERM by PID (Jupyter shuts its kernels down), then SIGKILL the group if stuck."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(SERVER_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(SERVER_STOP_TIMEOUT)
        self._home.cleanup()

    def __enter__(self) -> LabServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class CellReport:
    """What one code cell showed after a run, read from Lab's notebook model and DOM."""

    index: int
    id: str
    source: str
    execution_count: int | None
    errors: list[str] = field(default_factory=list)  # "ename: evalue\ntraceback"
    stderr: str = ""
    images: int = 0  # rendered <img> outputs
    widgets: int = 0  # rendered ipywidgets views
    widget_failures: list[str] = field(default_factory=list)


# JavaScript run in the page. `nb` is the current notebook panel.
_JS_CURRENT = "const nb = window.jupyterapp.shell.currentWidget;"
_JS_REPORT = _JS_CURRENT + """
const strip = (s) => s.replace(/\\x1b\\[[0-9;]*m/g, '');
const views = nb.content.widgets;
return nb.content.model.sharedModel.cells.map((cell, index) => {
  const json = cell.toJSON();
  if (json.cell_type !== 'code') return null;
  const node = views[index].node;
  const errors = [], stderr = [];
  for (const out of json.outputs) {
    if (out.output_type === 'error')
      errors.push(`${out.ename}: ${out.evalue}\\n${strip((out.traceback || []).join('\\n'))}`);
    if (out.output_type === 'stream' && out.name === 'stderr')
      stderr.push(Array.isArray(out.text) ? out.text.join('') : out.text);
  }
  const outputs = node.querySelectorAll('.jp-OutputArea-output');
  const failures = [...outputs].map((o) => o.innerText)
    .filter((t) => /Error displaying widget|Error rendering output/.test(t));
  return {
    index, id: json.id || '',
    source: Array.isArray(json.source) ? json.source.join('') : json.source,
    execution_count: json.execution_count,
    errors, stderr: stderr.join(''),
    images: node.querySelectorAll('.jp-OutputArea-output img').length,
    widgets: node.querySelectorAll('.jp-OutputArea-output .jupyter-widgets').length,
    widget_failures: failures,
  };
}).filter((c) => c !== null);
"""


class LabPage:
    """One JupyterLab tab in Chromium, driven through the app's own commands."""

    def __init__(self, page: Any, server: LabServer) -> None:
        self.page = page
        self.server = server

    def load(self, timeout: float = 90.0) -> None:
        """Open Lab and wait until the app has started and restored its layout."""
        self.page.goto(self.server.lab_url(), timeout=timeout * 1000)
        self.page.wait_for_function("() => window.jupyterapp !== undefined",
                                    timeout=timeout * 1000)
        self.page.evaluate("async () => { await window.jupyterapp.started;"
                           " await window.jupyterapp.restored;"  # then close the Launcher
                           " await window.jupyterapp.commands.execute('application:close-all');"
                           " }")

    def open(self, path: str, timeout: float = 60.0, kernel: str = "python3") -> None:
        """Open a notebook (path relative to the server root) on a new ``kernel``; wait
        until it is idle."""
        self.page.evaluate(
            "async ([path, name]) => { const nb = await window.jupyterapp.commands.execute("
            "'docmanager:open', {path, factory: 'Notebook', kernel: {name}});"
            " await nb.context.ready;"
            " await nb.sessionContext.ready; nb.faultlineStatuses = [];"
            " nb.sessionContext.statusChanged.connect((_, status) =>"
            " nb.faultlineStatuses.push(status)); }", [path, kernel])
        self.page.wait_for_function(
            "(path) => { const nb = window.jupyterapp.shell.currentWidget;"
            " return nb && nb.context && nb.context.path === path"
            " && nb.sessionContext.session && nb.sessionContext.session.kernel"
            " && nb.sessionContext.session.kernel.status === 'idle'"
            " && nb.sessionContext.kernelDisplayStatus === 'idle'; }",
            arg=path, timeout=timeout * 1000)
        # The toolbar's kernel indicator says Idle too (clicking earlier ran nothing).
        self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) "
                          ".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(
            timeout=timeout * 1000)

    def max_execution_count(self) -> int:
        return self.page.evaluate(
            "() => {" + _JS_CURRENT + " return Math.max(0, ...nb.content.model.sharedModel"
            ".cells.map((c) => c.toJSON().execution_count || 0)); }")

    def cell(self, index: int) -> Any:
        """The Playwright locator of cell ``index`` of the current notebook."""
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook "
                                 ".jp-Cell").nth(index)

    def run_cell(self, index: int) -> None:
        """Select cell ``index`` and run it (the command behind Ctrl+Enter)."""
        self.page.evaluate(
            "async (index) => {" + _JS_CURRENT + " nb.content.activeCellIndex = index;"
            " nb.content.deselectAll();"
            " await window.jupyterapp.commands.execute('notebook:run-cell'); }", index)

    def hide_sidebars(self) -> None:
        """Collapse the left and right side bars (for screenshots)."""
        self.page.evaluate(
            "() => { const shell = window.jupyterapp.shell;"
            " if (!shell.leftCollapsed) shell.collapseLeft();"
            " if (!shell.rightCollapsed) shell.collapseRight(); }")

    def scroll_to(self, index: int, block: str = "start") -> None:
        """Hide the side bars and scroll cell ``index`` into view (for screenshots)."""
        self.hide_sidebars()
        self.page.evaluate(
            "([index, block]) => {" + _JS_CURRENT +
            " nb.content.widgets[index].node.scrollIntoView({block}); }", [index, block])

    def run_all(self) -> None:
        """Run → Run All Cells, through the main menu as a learner would."""
        self.page.locator("#jp-MainMenu").get_by_text("Run", exact=True).click()
        self.page.locator(".lm-Menu-content .lm-Menu-itemLabel").get_by_text(
            "Run All Cells", exact=True).click()

    def wait_until_run(self, after: int, timeout: float, only: list[int] | None = None) -> str:
        """Wait until every code cell (or those ``only``) ran after count ``after``, or one
        failed, and the kernel is idle. Run All stops at the first error: that ends it too.

        Returns "done", "failed", or "the kernel died" (it restarted since the notebook opened).
        """
        return self.page.wait_for_function(
            "([after, only]) => {" + _JS_CURRENT + """
            const died = ['dead', 'autorestarting', 'restarting'];
            if (nb.faultlineStatuses.some((status) => died.includes(status)))
              return 'the kernel died';
            const kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
            if (!kernel || kernel.status !== 'idle') return false;
            const cells = nb.content.model.sharedModel.cells.map((c) => c.toJSON())
              .filter((c, i) => c.cell_type === 'code' && (only === null || only.includes(i)));
            const failed = cells.some((c) => c.outputs.some((o) => o.output_type === 'error')
              && (c.execution_count || 0) > after);
            const done = cells.every((c) => (c.execution_count || 0) > after);
            const busy = nb.content.widgets.some((w) => w.model.executionState === 'running');
            if (busy) return false;
            return failed ? 'failed' : done ? 'done' : false;
            }""", arg=[after, only], timeout=timeout * 1000, polling=250).json_value()

    def report(self) -> list[CellReport]:
        return [CellReport(**cell) for cell in self.page.evaluate("() => {" + _JS_REPORT + "}")]

    def stderr_nodes(self) -> int:
        """Rendered stderr/error outputs in the current notebook (Lab shows both this way)."""
        return self.page.locator(
            ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output"
            "[data-mime-type='application/vnd.jupyter.stderr']").count()

    def close(self) -> None:
        """Close the notebook without saving; its kernel shuts down."""
        dialogs = self.page.locator(".jp-Dialog")
        while dialogs.count():  # e.g. "kernel restarting" after a failure
            self.page.keyboard.press("Escape")
        self.page.evaluate(
            "async () => {" + _JS_CURRENT + " await nb.sessionContext.shutdown();"
            " nb.context.model.dirty = false; nb.dispose(); }")
