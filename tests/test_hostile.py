"""The hostile-submission catalogue: faultline-grade against submissions that hang, crash,
flood, escape, cheat or tamper, all graded in one parallel batch between honest students.

Each case is the module 01 reference answers plus one attack (and, where the attack would
hide wrong code, a wrong answer that an honest grader must catch). Each case states the
grade cells it must lose, a word of the reason, and whether it must be flagged for review;
then the batch as a whole must complete, the honest students around it keep full marks, the
gradebook stays intact and no process of the batch survives it.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from autograder.grade.autograde import StudentGrade, autograde
from autograder.grade.course import Course
from autograder.grade.democourse import make_course, submit
from autograder.grade.samples import answered, with_answer
from autograder.grade.sandbox import Limits, isolation_mode, sandbox_uids

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning"),
]

A = "01-availability"
FULL = 19.0
SECRET = "faultline-env-secret-7f3a"
LIMITS = Limits(cell_timeout=3.0, interrupt_grace=1.0, notebook_timeout=120.0, canary_timeout=0.5,
                memory_bytes=1 << 30, disk_bytes=32 << 20, file_bytes=8 << 20,
                processes=64, output_bytes=32 << 10, notebook_output_bytes=256 << 10)


@dataclass
class Case:
    """One hostile submission and what it must get."""

    make: object  # (base notebook, context) -> notebook dict, str or bytes
    lost: set[str] = field(default_factory=set)  # grade cells that must score 0
    reason: str = ""  # a word that the reason of a lost cell (or the notebook) contains
    flagged: bool = False
    broken: str = ""  # for unreadable files: a word of the reason
    outcome: str = "prevented"  # or "flagged": how the catalogue table describes it
    needs: str = ""  # "namespaces" or "root" when only that isolation can prevent it


def cells_of(nb: dict, gid: str) -> list[dict]:
    return [c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == gid]


def extra_after(nb: dict, gid: str, source: str) -> dict:
    """A copy of ``nb`` with a student's own code cell after cell ``gid``."""
    nb = json.loads(json.dumps(nb))
    at = nb["cells"].index(cells_of(nb, gid)[0]) + 1
    nb["cells"].insert(at, {"cell_type": "code", "id": f"extra-{at}", "metadata": {},
                            "execution_count": None, "outputs": [], "source": source})
    return nb


def answer(gid: str, source: str):
    return lambda nb, ctx: with_answer(nb, gid, source)


def extra(gid: str, source: str, then: tuple[str, str] | None = None):
    def make(nb: dict, ctx: dict) -> dict:
        nb = extra_after(nb, gid, source.format(**ctx))
        return with_answer(nb, *then) if then else nb
    return make


def checksum(cell: dict) -> str:
    from nbformat import from_dict
    from nbgrader.utils import compute_checksum

    cell = dict(cell, source="".join(cell["source"]) if isinstance(cell["source"], list)
                else cell["source"])
    return compute_checksum(from_dict(cell))


# Wrong answers that an honest grader catches (each breaks the tests named by the case).
SERIAL_SUM = ("serial_availability", "def serial_availability(avails):\n"
              "    avails = list(avails)\n    if not avails:\n"
              "        raise ValueError('avails')\n    for a in avails:\n"
              "        if not 0 <= a <= 1:\n            raise ValueError('avails')\n"
              "    return sum(avails)\n")
SERIAL_UNCHECKED = ("serial_availability", "def serial_availability(avails):\n"
                    "    return math.prod(avails)\n")
PARALLEL_MAX = ("parallel_availability", "def parallel_availability(avails):\n"
                "    if not avails:\n        raise ValueError('avails')\n"
                "    for a in avails:\n        if not 0 <= a <= 1:\n"
                "            raise ValueError('avails')\n    return max(avails)\n")
PARALLEL_UNCHECKED = ("parallel_availability", "def parallel_availability(avails):\n"
                      "    return 1 - math.prod(1 - a for a in avails)\n")
BURN_INVERTED = ("burn_rate", "def burn_rate(slo, error_rate):\n"
                 "    if not 0 < slo < 1 or not 0 <= error_rate <= 1:\n"
                 "        raise ValueError('slo or error_rate')\n"
                 "    return (1 - slo) / error_rate if error_rate else 0.0\n")
BURN_UNCHECKED = ("burn_rate", "def burn_rate(slo, error_rate):\n"
                  "    return error_rate / (1 - slo)\n")
PERCENTILE_OFF = ("percentile", "def percentile(values, q):\n"
                  "    if not 0 <= q <= 100:\n        raise ValueError('q')\n"
                  "    ordered = sorted(values)\n    if not ordered:\n"
                  "        raise ValueError('values')\n"
                  "    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)))]\n")
PERCENTILE_UNCHECKED = ("percentile", "def percentile(values, q):\n"
                        "    ordered = sorted(values)\n"
                        "    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]\n")
BUDGET_FLOORED = ("budget_remaining", "def budget_remaining(slo, total_requests, failed):\n"
                  "    if not 0 < slo < 1 or total_requests <= 0 or not 0 <= failed <= "
                  "total_requests:\n        raise ValueError('arguments')\n"
                  "    return 1 - failed / math.floor((1 - slo) * total_requests)\n")
ERROR_BUDGET_UNFLOORED = ("error_budget", "def error_budget(slo, total_requests):\n"
                          "    if not 0 < slo < 1 or total_requests <= 0:\n"
                          "        raise ValueError('arguments')\n"
                          "    return (1 - slo) * total_requests\n")

VALIDATE = ("    avails = list(avails)\n    if not avails:\n        raise ValueError('avails')\n"
            "    for a in avails:\n        if not 0 <= a <= 1:\n"
            "            raise ValueError('avails')\n")


def _edit_test_cell(gid: str, source: str | None, *, rename: str | None = None,
                    strip: bool = False, points: float | None = None, delete: bool = False,
                    wrong: tuple[str, str] | None = None):
    def make(nb: dict, ctx: dict) -> dict:
        nb = json.loads(json.dumps(nb))
        cell = cells_of(nb, gid)[0]
        if delete:
            nb["cells"].remove(cell)
        else:
            if source is not None:
                cell["source"] = source
            meta = cell["metadata"]["nbgrader"]
            if rename:
                meta["grade_id"] = rename
            if points is not None:
                meta["points"] = points
            meta["checksum"] = checksum(cell)  # a cheat recomputes the checksum
            if strip:
                del cell["metadata"]["nbgrader"]
        return with_answer(nb, *wrong) if wrong else nb
    return make


def _answer_to_grade_cell(nb: dict, ctx: dict) -> dict:
    nb = json.loads(json.dumps(nb))
    cell = cells_of(nb, "budget_remaining")[0]
    cell["metadata"]["nbgrader"].update(grade=True, points=50, locked=True)
    cell["metadata"]["nbgrader"]["checksum"] = checksum(cell)
    return nb


CASES: dict[str, Case] = {
    # A kernel slowed once past the tamper check's short limit (as on a busy machine) is
    # checked again with the cell's limit and loses nothing; redefining check is flagged.
    # (The pause hits the second tamper check, the one after the next test cell.)
    "slow_kernel_once": Case(extra("serial_availability",
                                   "import time\n_canaries = []\n_check = check\n\n"
                                   "def check(*args, **kwargs):\n"
                                   "    if kwargs.get('what') == 'canary':\n"
                                   "        _canaries.append(1)\n"
                                   "        if len(_canaries) == 2:\n"
                                   "            time.sleep(0.8)\n"
                                   "    return _check(*args, **kwargs)\n"),
                             flagged=True, outcome="flagged"),
    "infinite_loop": Case(answer("serial_availability", "def serial_availability(avails):\n"
                                 + VALIDATE + "    while len(avails) > 1:\n        pass\n"
                                 "    return avails[0]\n"),
                          {"serial_availability_values"}, "hung"),
    "loop_ignoring_sigint": Case(answer(
        "parallel_availability", "import signal\n\ndef parallel_availability(avails):\n"
        + VALIDATE.replace("avails = list(avails)", "avails = list(avails)") +
        "    signal.signal(signal.SIGINT, signal.SIG_IGN)\n    while len(avails) > 1:\n"
        "        pass\n    return avails[0]\n"),
        {"parallel_availability_values"}, "killed", flagged=True),
    "async_hang": Case(extra("burn_rate", "import asyncio\nawait asyncio.sleep(10**6)"),
                       set(), "killed"),
    "os_exit": Case(answer("error_budget", "import os\n\ndef error_budget(slo, total):\n"
                           "    if total == 1290:\n        os._exit(1)\n"
                           "    if not 0 < slo < 1 or total <= 0:\n"
                           "        raise ValueError('arguments')\n"
                           "    return math.floor(round((1 - slo) * total, 9))\n"),
                    {"error_budget_values"}, "died", flagged=True),
    "system_exit": Case(answer("budget_remaining",
                               "def budget_remaining(slo, total, failed):\n"
                               "    if failed == 20:\n        raise SystemExit(0)\n"
                               "    if not 0 < slo < 1 or total <= 0 or not 0 <= failed <= "
                               "total:\n        raise ValueError('arguments')\n"
                               "    return 1 - failed / ((1 - slo) * total)\n"),
                        {"budget_remaining_values"}, "SystemExit"),
    "kills_itself": Case(answer("burn_rate", "import os, signal\n\n"
                                "def burn_rate(slo, error_rate):\n"
                                "    if error_rate == 0.0144:\n"
                                "        os.kill(os.getpid(), signal.SIGKILL)\n"
                                "    if not 0 < slo < 1 or not 0 <= error_rate <= 1:\n"
                                "        raise ValueError('slo or error_rate')\n"
                                "    return error_rate / (1 - slo)\n"),
                         {"burn_rate_values"}, "died", flagged=True),
    "memory_bomb": Case(answer("percentile", "def percentile(values, q):\n"
                               "    if q == 90:\n        hog = bytearray(8 * 1024**3)\n"
                               "    if not 0 <= q <= 100:\n        raise ValueError('q')\n"
                               "    ordered = sorted(values)\n    if not ordered:\n"
                               "        raise ValueError('values')\n"
                               "    return ordered[max(1, math.ceil(q / 100 * "
                               "len(ordered))) - 1]\n"),
                        {"percentile_values"}, "MemoryError"),
    "output_flood_one_line": Case(extra("percentile", "print('x' * 20_000_000)"), set()),
    "output_flood_many_lines": Case(extra("percentile",
                                          "for i in range(100_000):\n    print(i)"), set()),
    "disk_fill": Case(extra("percentile", (
        "import os\nwritten = 0\nfor where in ('.', '/tmp', '/dev/shm'):\n"
        "    for n in range(100):\n        try:\n"
        "            with open(os.path.join(where, f'fill{{n}}'), 'wb') as f:\n"
        "                for _ in range(64):\n"
        "                    f.write(b'0' * (1 << 20)); written += 1 << 20\n"
        "        except OSError:\n            break\n"
        "print('DISK', written)")), set(), needs="namespaces"),
    "fork_bomb_and_leaked_children": Case(extra("percentile", (
        "import subprocess\nstarted = []\nfor _ in range(300):\n    try:\n"
        "        started.append(subprocess.Popen(['sleep', '600']))\n"
        "    except OSError:\n        break\nprint('FORKED', len(started))")),
        set(), flagged=True, needs="root"),
    "daemon_tampers_later": Case(extra("percentile", (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        for _ in range(200):\n            for path in ({gradebook!r}, {marker!r}):\n"
        "                try:\n                    with open(path, 'ab') as f:\n"
        "                        f.write(b'tampered')\n"
        "                except OSError:\n                    pass\n"
        "            time.sleep(0.05)\n    os._exit(0)\nprint('daemon started')")),
        set(), flagged=True, needs="namespaces"),
    "network": Case(extra("percentile", (
        "import socket\ntry:\n    s = socket.create_connection(('127.0.0.1', {port}), "
        "timeout=1)\n    s.sendall(b'stolen answers')\n    print('NETWORK OPEN')\n"
        "except OSError as e:\n    print('NETWORK BLOCKED', e)")), set(), flagged=True,
        needs="namespaces"),
    "reads_environment": Case(extra("percentile",
                                    "import os\nprint(sorted(os.environ.items()))"),
                              set(), flagged=True),
    "equal_to_anything": Case(answer("percentile", (
        "class Anything:\n    def __eq__(self, other):\n        return True\n\n"
        "def percentile(values, q):\n    if not 0 <= q <= 100:\n        raise ValueError('q')\n"
        "    if not list(values):\n        raise ValueError('values')\n"
        "    return Anything()\n")), {"percentile_values"}, "CheckFailed", flagged=True,
        outcome="prevented (strict type check) and flagged"),
    "int_equal_to_anything": Case(answer("error_budget", (
        "class Sly(int):\n    def __eq__(self, other):\n        return True\n"
        "    __hash__ = int.__hash__\n\n"
        "def error_budget(slo, total):\n    if not 0 < slo < 1 or total <= 0:\n"
        "        raise ValueError('arguments')\n    return Sly(0)\n")),
        {"error_budget_values"}, "CheckFailed", flagged=True,
        outcome="prevented (hidden `type(x) is int` check) and flagged"),
    "ast_transformer_strips_checks": Case(extra("serial_availability", (
        "import ast\n\nclass Strip(ast.NodeTransformer):\n"
        "    def visit_Expr(self, node):\n"
        "        call = node.value\n"
        "        if isinstance(call, ast.Call) and getattr(call.func, 'id', '').startswith("
        "'check'):\n            return ast.Pass()\n        return node\n"
        "    def visit_Assert(self, node):\n        return ast.Pass()\n\n"
        "get_ipython().ast_transformers.append(Strip())"), then=BURN_INVERTED),
        {"burn_rate_values"}, "", flagged=True, outcome="detected (canary), cell quarantined"),
    "input_transformer_strips_checks": Case(extra("serial_availability", (
        "def strip(lines):\n    return [l for l in lines if 'check' not in l]\n\n"
        "get_ipython().input_transformers_post.append(strip)"), then=SERIAL_SUM),
        {"serial_availability_values"}, "", flagged=True,
        outcome="detected (canary), cell quarantined"),
    "custom_exception_handler": Case(extra("serial_availability", (
        "def quiet(self, etype, value, tb, tb_offset=None):\n    return None\n\n"
        "get_ipython().set_custom_exc((BaseException,), quiet)"), then=PARALLEL_MAX),
        {"parallel_availability_values"}, "", flagged=True,
        outcome="prevented (the error still counts) and flagged"),
    "rebinds_test_helper": Case(extra("serial_availability",
                                      "def check(*args, **kwargs):\n    pass",
                                      then=PERCENTILE_OFF),
        {"percentile_values"}, "", flagged=True, outcome="detected (canary), cell quarantined"),
    "patches_test_helper_code": Case(extra("serial_availability", (
        "import faultline.checks\n"
        "faultline.checks.check.__code__ = (lambda actual, expected, *, what, hint='': "
        "None).__code__"), then=PERCENTILE_OFF),
        {"percentile_values"}, "", flagged=True, outcome="detected (canary), cell quarantined"),
    "patches_math_isclose": Case(extra("parallel_availability", (
        "import math\nmath.isclose = lambda *args, **kwargs: True"), then=SERIAL_SUM),
        {"serial_availability_values"}, "", flagged=True,
        outcome="detected (canary), cell quarantined"),
    "patches_builtins": Case(extra("parallel_availability", (
        "import builtins\n"
        "builtins.AssertionError = type('AssertionError', (Exception,), {{}})"),
        then=BUDGET_FLOORED),
        {"budget_remaining_values"}, "", flagged=True,
        outcome="prevented (no effect on checks) and flagged"),
    "edits_course_files_on_disk": Case(extra("percentile", (
        "for path in {targets!r}:\n    try:\n        with open(path, 'a') as f:\n"
        "            f.write('assert False')\n        print('WROTE', path)\n"
        "    except OSError as e:\n        print('BLOCKED', type(e).__name__)")),
        set(), needs="namespaces"),
    "reads_solutions_and_other_students": Case(extra("percentile", (
        "import os\nfor path in {secrets!r}:\n    try:\n"
        "        print('READ', open(path).read()[:20000])\n"
        "    except OSError as e:\n        print('BLOCKED', type(e).__name__)")),
        set(), needs="namespaces"),
    "symlinks_in_runtime_dir_then_crash": Case(extra("percentile", (
        "import os\nd = os.environ['JUPYTER_RUNTIME_DIR']\n"
        "for name in ('kernel.json', 'kernel.log', 'k-1', 'k-2'):\n    try:\n"
        "        os.remove(os.path.join(d, name))\n    except OSError:\n        pass\n"
        "    os.symlink({victim!r}, os.path.join(d, name))\nos._exit(1)")),
        set(), "died", flagged=True),
    "deleted_test_cell": Case(_edit_test_cell("serial_availability_validation", None,
                                              delete=True, wrong=SERIAL_UNCHECKED),
                              {"serial_availability_validation"}),
    "edited_test_cell_with_checksum": Case(_edit_test_cell(
        "parallel_availability_validation", "pass", wrong=PARALLEL_UNCHECKED),
        {"parallel_availability_validation"}),
    "changed_points": Case(_edit_test_cell("error_budget_values", None, points=100)),
    "renamed_grade_id": Case(_edit_test_cell("burn_rate_validation", "pass",
                                             rename="burn_rate_validation_2",
                                             wrong=BURN_UNCHECKED),
                             {"burn_rate_validation"}),
    "stripped_nbgrader_metadata": Case(_edit_test_cell("percentile_validation", "pass",
                                                       strip=True, wrong=PERCENTILE_UNCHECKED),
                                       {"percentile_validation"}),
    "answer_turned_into_grade_cell": Case(_answer_to_grade_cell),
    "edited_setup_cell": Case(lambda nb, ctx: with_answer(with_answer(
        nb, "setup", "import math\n\ndef check(*a, **k):\n    pass\n\n"
        "check_close = check_raises = check_that = check\n"), *SERIAL_SUM),
        {"serial_availability_values"}),
    "invalid_json": Case(lambda nb, ctx: json.dumps(nb)[:5000], broken="invalid JSON"),
    "json_not_a_notebook": Case(lambda nb, ctx: "[1, 2, 3]", broken="not a notebook"),
    "wrong_nbformat": Case(lambda nb, ctx: {"nbformat": 3, "nbformat_minor": 0,
                                            "worksheets": [{"cells": []}], "cells": [],
                                            "metadata": {}}, broken="nbformat"),
}
HONEST = ["aaa-honest-first", "zzz-honest-last"]
MODE = isolation_mode()
# Only what this machine's isolation can prevent is in the batch: namespaces mode (Linux,
# as root) covers every case; plain mode leaves the host's files, network and (as an
# ordinary user) process count to the operating system's own permissions.
ACTIVE = {name: case for name, case in CASES.items()
          if case.needs == "" or (case.needs == "namespaces" and MODE == "namespaces")
          or (case.needs == "root" and os.geteuid() == 0)}


def _sandbox_processes() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid in sandbox_uids(2):
                    pids.append(int(entry.name))
            except FileNotFoundError:
                continue
    return pids


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Listener:
    """A TCP server on the host's loopback that records whether anyone connected."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


@dataclass
class Batch:
    course: Course
    grades: dict[str, StudentGrade]
    seconds: float
    ctx: dict
    digests_before: dict[str, str]
    listener_connections: int
    leftover_processes: list[int]
    gradebook_totals: dict[str, float]


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Batch:
    course = make_course(tmp_path_factory.mktemp("hostile"), [A])
    base = answered(json.loads((course.release / A / f"{A}.ipynb").read_text()),
                    json.loads((course.source / A / f"{A}.ipynb").read_text()))
    other = submit(course, HONEST[0], A, A, base)
    listener = Listener()
    marker = tmp_path_factory.mktemp("daemon") / "daemon-was-here"
    gradebook = course.root / "autograder" / "gradebook.db"
    victim = tmp_path_factory.mktemp("victim") / "instructor-file.txt"
    victim.write_text("precious")
    protected = [gradebook, course.source / A / f"{A}.ipynb", course.release / A / f"{A}.ipynb",
                 other, victim]
    # (the release notebook's path is the student's own folder inside the sandbox: writing
    # there is allowed and changes only the sandbox's copy; the digests below show that)
    ctx = {"port": listener.port, "marker": str(marker), "gradebook": str(gradebook),
           "victim": str(victim),
           "targets": [str(p) for p in protected if p.parent != course.release / A],
           "secrets": [str(course.source / A / f"{A}.ipynb"), str(other),
                       f"../../{HONEST[0]}/{A}/{A}.ipynb", str(gradebook)]}
    for name, case in ACTIVE.items():
        submit(course, name, A, A, case.make(base, ctx))
    submit(course, HONEST[1], A, A, base)
    before = {str(p): _digest(p) for p in protected if p != gradebook}
    os.environ["FAULTLINE_TEST_SECRET"] = SECRET
    started = time.monotonic()
    try:
        grades = autograde(course, A, jobs=2, limits=LIMITS, progress=False)
    finally:
        os.environ.pop("FAULTLINE_TEST_SECRET", None)
    seconds = time.monotonic() - started
    time.sleep(1.0)  # a surviving daemon would write its marker now
    listener.close()
    with course.gradebook() as gb:
        totals = {s.student.id: s.score for s in gb.find_assignment(A).submissions}
    return Batch(course, {g.student: g for g in grades}, seconds, ctx, before,
                 listener.connections, _sandbox_processes(), totals)


def _outputs(batch: Batch, student: str) -> str:
    """Everything the student's cells printed, as recorded in the autograded notebook."""
    path = batch.course.autograded / student / A / f"{A}.ipynb"
    if not path.exists():
        return ""
    return "".join(o.get("text", "") for c in json.loads(path.read_text())["cells"]
                   for o in c.get("outputs", []) if o["output_type"] == "stream")


def _lost(grade: StudentGrade) -> dict[str, str]:
    return {c.grade_id: c.reason for n in grade.notebooks for c in n.cells
            if c.score != c.max_score}


@pytest.mark.parametrize("name", sorted(ACTIVE))
def test_hostile_submission_gets_what_its_honest_cells_deserve(batch: Batch, name: str) -> None:
    case, grade = ACTIVE[name], batch.grades[name]
    assert not grade.error, grade.error
    (notebook,) = grade.notebooks
    assert notebook.max_score == FULL, "points come from the gradebook, not the submission"
    if case.broken:
        assert case.broken in notebook.broken
        assert grade.score == 0
        return
    assert not notebook.broken
    lost = _lost(grade)
    assert set(lost) == case.lost, (f"{name}: lost {lost}; events {notebook.events}; "
                                    f"flags {notebook.flags}")
    assert grade.score == FULL - sum(c.max_score for c in notebook.cells
                                     if c.grade_id in case.lost)
    if case.reason:
        text = " ".join([*lost.values(), *notebook.events])
        assert case.reason in text, f"{name}: {case.reason!r} not in {text!r}"
    assert bool(notebook.flags) == case.flagged, f"{name}: flags {notebook.flags}"


def test_honest_students_around_them_keep_full_marks(batch: Batch) -> None:
    for student in HONEST:
        assert batch.grades[student].score == FULL, _lost(batch.grades[student])
        assert not batch.grades[student].flagged


def test_the_batch_completes_and_the_gradebook_is_intact(batch: Batch) -> None:
    assert set(batch.grades) == set(ACTIVE) | set(HONEST)
    assert batch.gradebook_totals == {s: g.score for s, g in batch.grades.items()}
    for path, digest in batch.digests_before.items():
        assert _digest(Path(path)) == digest, f"{path} was changed during grading"
    masters = batch.course.masters(A)  # still loads: master cells unchanged
    assert masters[0].grade_cells["serial_availability_values"] == 2


def test_no_process_of_the_batch_survives(batch: Batch) -> None:
    assert batch.leftover_processes == []
    assert not Path(batch.ctx["marker"]).exists(), "a daemon outlived grading"


def test_output_is_capped(batch: Batch) -> None:
    for name in ("output_flood_one_line", "output_flood_many_lines"):
        path = batch.course.autograded / name / A / f"{A}.ipynb"
        size = path.stat().st_size
        assert size < 400_000, f"{name}: autograded notebook is {size} bytes"
        assert "output truncated" in _outputs(batch, name)


def test_resources_are_bounded(batch: Batch) -> None:
    if "disk_fill" in ACTIVE:  # three private tmpfs mounts, each a few files deep
        text = _outputs(batch, "disk_fill")
        written = int(text.split("DISK ")[1].split("\n")[0])
        assert written <= 3 * LIMITS.disk_bytes + 3 * LIMITS.file_bytes
    if "fork_bomb_and_leaked_children" in ACTIVE:  # RLIMIT_NPROC of the sandbox's own uid
        forked = int(_outputs(batch, "fork_bomb_and_leaked_children").split("FORKED ")[1]
                     .split("\n")[0])
        assert forked < LIMITS.processes
    assert "MemoryError" in " ".join(_lost(batch.grades["memory_bomb"]).values())


def test_the_environment_is_scrubbed(batch: Batch) -> None:
    printed = _outputs(batch, "reads_environment")
    assert "HOME" in printed and SECRET not in printed


@pytest.mark.skipif(isolation_mode() != "namespaces",
                    reason="plain mode (not root) shares the host's files and network")
def test_files_and_network_are_out_of_reach(batch: Batch) -> None:
    assert batch.listener_connections == 0
    assert "NETWORK BLOCKED" in _outputs(batch, "network")
    edits = _outputs(batch, "edits_course_files_on_disk")
    assert "WROTE" not in edits and "BLOCKED" in edits
    reads = _outputs(batch, "reads_solutions_and_other_students")
    assert "BEGIN SOLUTION" not in reads and "READ" not in reads


def test_every_lost_point_has_a_reason(batch: Batch, capsys: pytest.CaptureFixture) -> None:
    """...and print the catalogue (case, grade, reason, how) for the closing note."""
    rows = []
    for name, case in ACTIVE.items():
        g = batch.grades[name]
        n = g.notebooks[0]
        assert all(c.reason for c in n.cells if c.score != c.max_score), name
        why = n.broken or "; ".join(sorted(set(_lost(g).values()))) or (
            n.events[0] if n.events else "attack had no effect")
        how = case.outcome if not case.flagged or "flag" in case.outcome or \
            "canary" in case.outcome else "prevented and flagged"
        rows.append(f"| {name} | {g.score:g}/{g.max_score:g} | {why[:110]} | {how} |")
    with capsys.disabled():
        print(f"\nhostile batch: {len(batch.grades)} students in {batch.seconds:.1f} s, "
              f"isolation {batch.grades[HONEST[0]].mode}")
        print("\n".join(rows))
