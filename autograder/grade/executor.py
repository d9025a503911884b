"""Run a notebook's code cells in a sandboxed kernel, from the trusted side.

Each cell gets ``Limits.cell_timeout`` seconds; then it is interrupted, and if it does not
stop within ``interrupt_grace`` (a loop that ignores SIGINT, an async hang the interrupt
cannot reach) the kernel is killed. A killed or dead kernel (``os._exit``, a signal, the
CPU limit) is restarted and the cells before the culprit are replayed without it, so a
hang or a crash costs only the points of what hung or crashed. Outputs are capped.

After every cell a *canary* runs: statements that must fail (a false ``assert``, a raised
error, the test helpers called with wrong values). If one of them passes, the test
environment has been tampered with (an IPython input/AST transformer that strips asserts,
a custom exception handler, replaced test helpers). When the cell just run is a student's,
it is quarantined: the kernel is restarted and the notebook replayed without it. When it is
a test cell (the tampering came from something running in the background), that test
scores 0 and the submission is flagged for review.
"""

from __future__ import annotations

import queue
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from autograder.grade.sandbox import Kernel, KernelStartError, Limits

OK, ERROR, TIMEOUT, KILLED, DIED, TAMPERED, QUARANTINED, NOT_RUN = (
    "ok", "error", "timeout", "killed", "died", "tampered", "quarantined", "not run")


@dataclass
class CellResult:
    """What happened to one code cell."""

    status: str
    outputs: list[dict] = field(default_factory=list)
    reason: str = ""
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status != OK or any(
            o["output_type"] == "error"
            or (o["output_type"] == "stream" and o.get("name") == "stderr")
            for o in self.outputs
        )


@dataclass
class RunCell:
    """A code cell to execute: its source, and whether it is a test (grade) cell."""

    source: str
    is_test: bool
    locked: bool


@dataclass
class NotebookRun:
    results: dict[int, CellResult]
    restarts: int = 0
    events: list[str] = field(default_factory=list)
    tampering: list[str] = field(default_factory=list)


class _Dead(Exception):
    """The kernel died or was killed during a cell."""


class OutputCap:
    """Keeps at most ``cell`` bytes of output per cell and ``total`` per notebook."""

    def __init__(self, cell: int, total: int) -> None:
        self.cell_limit, self.left_total = cell, total

    def start_cell(self) -> None:
        self.left = min(self.cell_limit, self.left_total)
        self.dropped = 0

    def take(self, text: str) -> str:
        size = len(text.encode("utf-8", errors="replace"))
        if size <= self.left:
            self.left -= size
            self.left_total -= size
            return text
        kept = text.encode("utf-8", errors="replace")[: max(0, self.left)].decode(
            "utf-8", errors="ignore")
        self.left_total -= len(kept.encode())
        self.dropped += size - len(kept.encode())
        self.left = 0
        return kept


def _canary(rng: random.Random, helpers: tuple[str, ...]) -> tuple[str, str]:
    """(code, token): a chain of statements that must each raise ``AssertionError`` for the
    next to run; the last raises one carrying ``token``. An honest kernel reports exactly
    that error; a stripped assert, a neutralised helper or a swallowed error breaks the
    chain. Fresh numbers every run, one execution per check (tracebacks are slow)."""
    a = rng.randrange(10**6, 10**7)
    b = a + rng.randrange(1, 1000)
    token = f"faultline-canary-{rng.randrange(10**9)}"
    links = [
        f"assert {a} == {b}, 'canary'",
        f"if {a} != {b}:\n    raise AssertionError({b})",
    ]
    calls = {
        "check": f"check({a}, {b}, what='canary')",
        "check_close": f"check_close({a}.5, {b}.25, what='canary')",
        "check_raises": f"check_raises(ValueError, int, '{a}', what='canary')",
        "check_that": f"check_that({a} == {b}, what='canary', expected='x', got='y')",
    }
    links += [calls[name] for name in helpers if name in calls]
    code = f"raise AssertionError({token!r}) from None"
    for link in reversed(links):
        body = "\n".join("    " + line for line in link.splitlines())
        inner = "\n".join("    " + line for line in code.splitlines())
        code = f"try:\n{body}\nexcept AssertionError:\n{inner}"
    return code, token


class Executor:
    """Executes one notebook's cells in a sandboxed kernel (see the module docstring)."""

    def __init__(self, kernel: Kernel, limits: Limits, *, helpers: tuple[str, ...] = (),
                 seed: int | None = None) -> None:
        self.kernel, self.limits, self.helpers = kernel, limits, helpers
        self.rng = random.Random(seed)
        self.cap = OutputCap(limits.output_bytes, limits.notebook_output_bytes)

    # -- one execution ----------------------------------------------------------------
    def _execute(self, code: str, timeout: float, *, silent: bool = False,
                 keep: bool = True, hide: bool = False) -> CellResult:
        kc = self.kernel.client
        if kc is None or not self.kernel.alive():
            raise _Dead("the kernel is not running")
        started = time.monotonic()
        msg_id = kc.execute(code, silent=silent, store_history=not (silent or hide),
                            allow_stdin=False, stop_on_error=False)
        outputs: list[dict] = []
        self.cap.start_cell()
        deadline = started + timeout
        interrupted_at: float | None = None
        idle = False
        while not idle:
            now = time.monotonic()
            if interrupted_at is None and now >= deadline:
                self.kernel.interrupt()
                interrupted_at = now
            if interrupted_at is not None and now >= interrupted_at + self.limits.interrupt_grace:
                self.kernel.kill()
                raise _Dead(f"killed: still running {timeout:g} s after it started and "
                            f"{self.limits.interrupt_grace:g} s after an interrupt")
            try:
                msg = kc.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                if not self.kernel.alive():
                    raise _Dead("the kernel died (exit, signal or resource limit)") from None
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status":
                idle = content.get("execution_state") == "idle"
            elif keep:
                self._collect(outputs, kind, content)
        if keep and self.cap.dropped:
            outputs.append({"output_type": "stream", "name": "stdout",
                            "text": f"\n[output truncated: {self.cap.dropped} bytes dropped]\n"})
        status = self._reply_status(msg_id)
        elapsed = time.monotonic() - started
        if interrupted_at is not None:
            return CellResult(TIMEOUT, outputs, f"interrupted after {timeout:g} s", elapsed)
        has_error = any(o["output_type"] == "error" for o in outputs)
        if status == "error" or has_error:
            return CellResult(ERROR, outputs, _error_summary(outputs), elapsed)
        return CellResult(OK, outputs, "", elapsed)

    def _reply_status(self, msg_id: str) -> str:
        end = time.monotonic() + 5
        while time.monotonic() < end:
            try:
                reply = self.kernel.client.get_shell_msg(timeout=0.5)
            except queue.Empty:
                if not self.kernel.alive():
                    raise _Dead("the kernel died") from None
                continue
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply["content"].get("status", "error")
        return "error"

    def _collect(self, outputs: list[dict], kind: str, content: dict) -> None:
        take = self.cap.take
        if kind == "stream":
            name = "stderr" if content.get("name") == "stderr" else "stdout"
            text = take(str(content.get("text", "")))
            if outputs and outputs[-1]["output_type"] == "stream" and outputs[-1]["name"] == name:
                outputs[-1]["text"] += text
            else:
                outputs.append({"output_type": "stream", "name": name, "text": text})
        elif kind == "error":
            tb = [take(str(line)) for line in list(content.get("traceback", []))[:200]]
            outputs.append({"output_type": "error", "ename": take(str(content.get("ename"))),
                            "evalue": take(str(content.get("evalue"))), "traceback": tb})
        elif kind in ("execute_result", "display_data"):
            data = {}
            for mime, value in dict(content.get("data", {})).items():
                if mime in ("text/plain", "text/html", "image/png", "text/markdown"):
                    data[str(mime)] = take(value if isinstance(value, str) else str(value))
            out = {"output_type": kind, "data": data, "metadata": {}}
            if kind == "execute_result":
                out["execution_count"] = None
            outputs.append(out)
        elif kind == "clear_output":
            outputs.clear()

    # -- tamper check -------------------------------------------------------------------
    def _tampered(self) -> str | None:
        """Run the canary; a reason when the test environment no longer fails as it must."""
        code, token = _canary(self.rng, self.helpers)
        try:
            result = self._execute(code, min(self.limits.canary_timeout, self.limits.cell_timeout),
                                   silent=True)
            if result.status == TIMEOUT:
                # A busy machine can slow a kernel past the short limit: only a canary that
                # hangs again for a whole cell's time limit counts as tampering.
                result = self._execute(code, self.limits.cell_timeout, silent=True)
        except _Dead as dead:
            return f"the kernel died during a tamper check ({dead})"
        errors = [o for o in result.outputs if o["output_type"] == "error"]
        if result.status == ERROR and errors and token in str(errors[-1].get("evalue")):
            return None
        if result.status == TIMEOUT:
            return "a tamper check hung"
        return ("statements that must fail did not (asserts, errors or the test helpers "
                "check, check_close, check_raises, check_that no longer fail)")

    # -- the notebook ---------------------------------------------------------------------
    def run(self, cells: list[RunCell],
            on_cell: Callable[[int], None] | None = None) -> NotebookRun:
        """Execute ``cells`` in order and return one result per cell index."""
        run = NotebookRun({})
        excluded: set[int] = set()
        deadline = time.monotonic() + self.limits.notebook_timeout
        canary_ready = False
        index = 0
        self.kernel.start()  # KernelStartError: the grader's problem, not the student's
        while index < len(cells):
            cell = cells[index]
            if time.monotonic() >= deadline:
                run.results[index] = CellResult(
                    NOT_RUN, reason=f"the notebook time limit ({self.limits.notebook_timeout:g}"
                    " s) was reached")
                index += 1
                continue
            try:
                result = self._execute(cell.source, self.limits.cell_timeout, hide=cell.is_test)
                if cell.locked and not cell.is_test and result.status == OK:
                    canary_ready = True  # the setup cell has imported the test helpers
                problem = self._tampered() if canary_ready else None
            except _Dead as dead:
                run.results[index] = CellResult(
                    KILLED if str(dead).startswith("killed") else DIED, reason=str(dead))
                excluded.add(index)
                run.events.append(f"cell {index}: {dead}; kernel restarted")
                if not self._restart(run, cells, index, excluded, deadline):
                    break
                index += 1
                continue
            if problem is not None:
                run.tampering.append(f"cell {index}: {problem}")
                if cell.is_test:
                    result = CellResult(TAMPERED, result.outputs,
                                        f"test environment tampered with while this test "
                                        f"ran: {problem}", result.seconds)
                else:
                    result = CellResult(QUARANTINED, result.outputs,
                                        f"this cell tampered with the tests ({problem}); "
                                        "it was removed and the notebook replayed without it",
                                        result.seconds)
                    excluded.add(index)
                run.results[index] = result
                if not self._restart(run, cells, index, excluded, deadline):
                    break
            else:
                run.results[index] = result
            if on_cell:
                on_cell(index)
            index += 1
        for i in range(len(cells)):
            run.results.setdefault(i, CellResult(NOT_RUN, reason="not run: too many kernel "
                                                 "restarts" if run.restarts else "not run"))
        self.kernel.kill()
        return run

    def _restart(self, run: NotebookRun, cells: list[RunCell], upto: int,
                 excluded: set[int], deadline: float) -> bool:
        """Fresh kernel; replay the non-test cells before ``upto`` that are not excluded."""
        while run.restarts < self.limits.max_restarts:
            run.restarts += 1
            self.kernel.kill()
            current = None
            try:
                self.kernel.start()
                for i in range(upto):
                    if i in excluded or cells[i].is_test:
                        continue
                    if time.monotonic() >= deadline:
                        return False
                    current = i
                    replay = self._execute(cells[i].source, self.limits.cell_timeout,
                                           keep=False)
                    if replay.status == TIMEOUT:
                        excluded.add(i)
                return True
            except _Dead as dead:  # the replay died too: leave that cell out next time
                run.events.append(f"replay of cell {current}: {dead}")
                if current is None:
                    return False
                excluded.add(current)
            except KernelStartError as error:
                run.events.append(str(error))
                return False
        return False


def _error_summary(outputs: list[dict]) -> str:
    for out in outputs:
        if out["output_type"] == "error":
            value = str(out.get("evalue", "")).strip().splitlines()
            return f"{out.get('ename')}: {value[0] if value else ''}"[:300]
    return "the cell reported an error"
