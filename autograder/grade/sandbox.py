"""Start a submission's kernel in its sandbox and talk to it from the trusted grader.

The grader never runs student code itself: it writes a private working copy, launches
``autograder.grade.jail`` (which builds the isolated world and execs ipykernel as an
unprivileged uid under resource limits), and speaks the Jupyter protocol to the kernel over
Unix sockets (``ipc`` transport, so it also works across a network namespace). A kernel
that hangs or misbehaves is killed with its whole process group; in namespaces mode that
kills its PID namespace, and with it every process the submission started.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from autograder.grade import jail

NOBODY = "nobody"
REPO = Path(__file__).resolve().parents[2]  # this kit (its lib/ is bound back read-only)


@dataclass(frozen=True)
class Limits:
    """Per-submission resource limits (the defaults suit the course's notebooks)."""

    cell_timeout: float = 30.0  # wall seconds for one cell before it is interrupted
    interrupt_grace: float = 3.0  # seconds an interrupted cell gets to stop before a kill
    notebook_timeout: float = 300.0  # wall seconds for the whole notebook
    canary_timeout: float = 5.0  # a tamper check taking longer is run again with cell_timeout
    cpu_seconds: int = 120  # CPU time of one kernel (RLIMIT_CPU)
    memory_bytes: int = 2 << 30  # address space of one kernel (RLIMIT_AS)
    file_bytes: int = 16 << 20  # largest file a kernel may write (RLIMIT_FSIZE)
    disk_bytes: int = 64 << 20  # size of each private tmpfs (namespaces mode)
    open_files: int = 256
    processes: int = 64  # tasks (processes and threads) of the sandbox uid (RLIMIT_NPROC)
    output_bytes: int = 64 << 10  # output kept per cell
    notebook_output_bytes: int = 1 << 20  # output kept per notebook
    max_restarts: int = 4  # kernel restarts (after a kill) before the rest is not run

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not value > 0:
                raise ValueError(f"Limits.{name} must be > 0, got {value!r}")


_MODE: str | None = None
_MODE_LOCK = threading.Lock()


def isolation_mode(requested: str = "auto") -> str:
    """``"namespaces"`` when the kernel can get its own mount/PID/network namespaces, else
    ``"plain"`` (private copy, limits, unprivileged uid, but the host's files and network)."""
    global _MODE
    if requested not in ("auto", "namespaces", "plain"):
        raise ValueError(f"isolation must be auto, namespaces or plain, got {requested!r}")
    if requested == "plain":
        return "plain"
    with _MODE_LOCK:
        if _MODE is None:
            _MODE = "namespaces" if sys.platform == "linux" and _probe() else "plain"
    if requested == "namespaces" and _MODE != "namespaces":
        raise RuntimeError("namespaces isolation is not available on this machine")
    return _MODE


def _probe() -> bool:
    try:
        return jail.namespaces_available()
    except OSError:
        return False


def sandbox_ids(slot: int) -> tuple[int, int]:
    """(uid, gid) for a parallel slot when run as root: a distinct unused uid per slot (group
    ``nogroup``), so one submission's processes never count against another's RLIMIT_NPROC
    and leftovers can be killed by uid; as an ordinary user, that user."""
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    if not 0 <= slot < MAX_SLOTS:
        raise ValueError(f"slot must be in [0, {MAX_SLOTS}), got {slot}")
    nobody = pwd.getpwnam(NOBODY)
    uid = UID_BASE + slot
    if _uid_taken(uid):
        raise RuntimeError(f"sandbox uid {uid} belongs to a user: cannot isolate slot {slot}")
    return uid, nobody.pw_gid


MAX_SLOTS = 64
# Distinct per grading process too, so two batches at once never share a uid.
UID_BASE = 200_000 + (os.getpid() % 4096) * MAX_SLOTS


def sandbox_uids(jobs: int) -> set[int]:
    """The uids this process's sandboxes run as (root only): for checks and cleanup."""
    return {UID_BASE + slot for slot in range(min(jobs, MAX_SLOTS))}


def _uid_taken(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


class Kernel:
    """One sandboxed kernel: start, execute, interrupt, kill."""

    def __init__(self, *, course_root: Path, assignment: str, work_files: dict[str, bytes],
                 limits: Limits, mode: str, slot: int) -> None:
        self.limits, self.mode = limits, mode
        self.uid, self.gid = sandbox_ids(slot)
        self.base = Path(tempfile.mkdtemp(prefix="flg-"))
        self.base.chmod(0o711)
        self.generation = 0
        self.conn_dir = self.base / "c0"  # a fresh one per start (see start())
        self.work_src = self.base / "w"
        self.work_src.mkdir()
        for rel, data in work_files.items():
            target = self.work_src / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        self.course_root = course_root.resolve()
        self.work = str(self.course_root / "exercises" / assignment)
        self.proc: subprocess.Popen | None = None
        self.client = None

    def _spec(self) -> dict:
        hide = list(dict.fromkeys([self.course_root, REPO, Path("/root"), Path("/home")]))
        readonly = [str(r / "lib") for r in {self.course_root, REPO} if (r / "lib").is_dir()]
        for prefix in {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}:
            if any(prefix.is_relative_to(h) for h in hide):
                readonly.append(str(prefix))
        home = "/tmp" if self.mode == "namespaces" else str(self.work_src)
        env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": home, "USER": "student", "LOGNAME": "student", "LANG": "C.UTF-8",
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
            "MPLCONFIGDIR": f"{home}/.mpl", "IPYTHONDIR": f"{home}/.ipython",
            "JUPYTER_CONFIG_DIR": f"{home}/.jupyter", "JUPYTER_DATA_DIR": f"{home}/.jdata",
            "JUPYTER_RUNTIME_DIR": str(self.conn_dir), "PYTHONDONTWRITEBYTECODE": "1",
            "JUPYTER_PLATFORM_DIRS": "1",
        }
        return {
            "mode": self.mode, "uid": self.uid, "gid": self.gid, "env": env,
            # RLIMIT_NPROC counts every process of a uid: only set it for a uid of its own
            # (as an ordinary user it would count the instructor's other processes too)
            "own_uid": os.geteuid() == 0,
            "limits": asdict(self.limits), "readonly": readonly,
            "hide": [str(h) for h in hide],
            "conn_dir": str(self.conn_dir), "work_src": str(self.work_src), "work": self.work,
        }

    def start(self, timeout: float = 60.0) -> None:
        """Launch the kernel in its jail and wait until it answers."""
        from jupyter_client.blocking import BlockingKernelClient
        from jupyter_client.connect import write_connection_file

        if self.proc is not None:
            self.kill()
        # A new folder for the connection file, sockets and log on every start: the old
        # one was writable by the submission (a planted symlink must never be followed by
        # this process, which writes and reads here as root).
        self.generation += 1
        self.conn_dir = self.base / f"c{self.generation}"
        self.conn_dir.mkdir(mode=0o755)
        conn = self.conn_dir / "kernel.json"
        key = secrets.token_hex(16)
        write_connection_file(str(conn), ip=str(self.conn_dir / "k"), transport="ipc",
                              key=key.encode(), shell_port=1, iopub_port=2, stdin_port=3,
                              control_port=4, hb_port=5, kernel_name="python3")
        conn.chmod(0o644)
        if os.geteuid() == 0:  # the kernel creates its sockets and log here
            os.chown(self.conn_dir, self.uid, self.gid)
        spec = self.base / "spec.json"
        spec.write_text(json.dumps(self._spec()))
        cmd = [sys.executable, "-m", "autograder.grade.jail", str(spec), "--",
               sys.executable, "-m", "ipykernel_launcher", "-f", str(conn),
               "--HistoryManager.enabled=False", "--IPKernelApp.capture_fd_output=True"]
        root = str(REPO)
        self.proc = subprocess.Popen(
            cmd, cwd=root, start_new_session=True, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": root},
        )
        client = BlockingKernelClient()
        client.load_connection_file(str(conn))
        deadline = time.monotonic() + timeout
        while not all((self.conn_dir / f"k-{n}").exists() for n in (1, 2, 4)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self._log() if \
                    self.proc.poll() is not None else "timed out"
                self.kill()
                raise KernelStartError(f"the kernel did not start: {err.strip()}")
            time.sleep(0.02)
        client.start_channels()
        try:
            client.wait_for_ready(timeout=max(1.0, deadline - time.monotonic()))
        except RuntimeError as error:
            client.stop_channels()
            self.kill()
            raise KernelStartError(f"the kernel did not start: {error}") from error
        self.client = client

    def _log(self) -> str:
        """The jail's and the kernel's own error output (capped), for start failures."""
        text = self.proc.stderr.read(4000).decode(errors="replace") if self.proc else ""
        try:
            fd = os.open(self.conn_dir / "kernel.log", os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return text
        with os.fdopen(fd, "rb") as f:
            return text + f.read(4000).decode(errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def interrupt(self) -> None:
        """SIGINT to the kernel (the jail forwards it)."""
        if self.alive():
            self.proc.send_signal(signal.SIGINT)

    def kill(self) -> None:
        """Kill the kernel's whole process group (and PID namespace) and forget it."""
        if self.client is not None:
            self.client.stop_channels()
            self.client = None
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            if self.proc.stderr:
                self.proc.stderr.close()
            self.proc = None
            if self.mode == "plain":
                _kill_uid_leftovers(self.uid)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.base, ignore_errors=True)


class KernelStartError(RuntimeError):
    """The sandboxed kernel could not be started."""


def _kill_uid_leftovers(uid: int) -> None:
    """Plain mode: processes of this slot's uid that escaped the process group (setsid)."""
    if os.geteuid() != 0 or uid == os.getuid():
        return
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid == uid:
                os.kill(int(entry.name), signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
