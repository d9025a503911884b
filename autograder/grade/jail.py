"""The sandbox launcher: ``python -m autograder.grade.jail SPEC.json -- CMD ...``.

Started by the trusted grader (as root or as the instructor) before any student code
exists, it builds the submission's world and then runs ``CMD`` (a Jupyter kernel) in it:

* **namespaces** mode (Linux, run as root): new mount, PID, network, IPC and UTS
  namespaces made with ``unshare(2)`` through ctypes (no bubblewrap or other tool needed).
  The course root, ``/root`` and ``/home`` are hidden behind empty tmpfs mounts and only
  the library, the virtual environment and the interpreter are bound back read-only;
  the working folder, ``/tmp``, ``/var/tmp`` and ``/dev/shm`` are small private tmpfs
  mounts (so a disk fill stops at their size); the network namespace has only its own
  loopback (the toy shop works, nothing else is reachable); the launcher's first child
  is PID 1 of the new PID namespace, so when the grader kills the launcher's process
  group, every process the submission started (daemons included) dies with it.
* **plain** mode (anywhere else): the working folder is a private copy; the same resource
  limits, scrubbed environment and unprivileged uid apply, but the file system and the
  network are the host's. The grader reports which mode ran.

In both modes the kernel runs as an unprivileged uid (when started as root) with limits
on CPU time, address space, file size, open files and processes. Nothing here imports
nbformat or jupyter: the launcher starts in milliseconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import json
import os
import resource
import shutil
import signal
import socket
import struct
import sys
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def unshare(flags: int) -> None:
    """``unshare(2)``: move this process into new namespaces."""
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    """``mount(2)``."""
    def enc(text: str | None) -> bytes | None:
        return text.encode() if text is not None else None

    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags),
                       enc(data)), f"mount {target}")


def namespaces_available() -> bool:
    """Whether this process may create mount, PID and network namespaces (tried in a fork).

    Only as root for now: an unprivileged instructor would also need a user namespace with
    uid maps, which this launcher does not set up yet, so it gets plain mode."""
    if os.geteuid() != 0:
        return False
    pid = os.fork()
    if pid == 0:
        try:
            flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
            unshare(flags)
            mount(None, "/", None, MS_REC | MS_PRIVATE)
            mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m")
        except OSError:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _loopback_up() -> None:
    """Bring up ``lo`` in the new network namespace (it starts down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14s", b"lo", 0, b"\0" * 14)
        flags = struct.unpack("16sH14s", fcntl.ioctl(s, SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | IFF_UP, b"\0" * 14))


def _bind(source_fd: int, target: str, *, readonly: bool) -> None:
    os.makedirs(target, exist_ok=True)
    mount(f"/proc/self/fd/{source_fd}", target, None, MS_BIND | MS_REC)
    if readonly:
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _tmpfs(target: str, size: int, mode: str = "1777") -> None:
    os.makedirs(target, exist_ok=True)
    mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode={mode}")


def build_world(spec: dict) -> None:
    """In fresh namespaces: hide the course, bind back what the kernel needs, private tmp."""
    keep = {path: os.open(path, os.O_PATH) for path in spec["readonly"]}
    conn_fd = os.open(spec["conn_dir"], os.O_PATH)
    work_src = os.open(spec["work_src"], os.O_PATH)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    size = spec["limits"]["disk_bytes"]
    for hidden in spec["hide"]:
        if os.path.isdir(hidden):
            _tmpfs(hidden, 1 << 20, "755")
    for extra in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(extra):
            _tmpfs(extra, size)
    for path, fd in keep.items():
        _bind(fd, path, readonly=True)
    _bind(conn_fd, spec["conn_dir"], readonly=False)
    work = spec["work"]
    _tmpfs(work, size, "755")
    shutil.copytree(f"/proc/self/fd/{work_src}", work, dirs_exist_ok=True)
    for path in [work, *(str(p) for p in Path(work).rglob("*"))]:
        os.chown(path, spec["uid"], spec["gid"], follow_symlinks=False)
    for fd in [*keep.values(), conn_fd, work_src]:
        os.close(fd)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _loopback_up()
    socket.sethostname("sandbox")


def copy_work_plain(spec: dict) -> None:
    """Plain mode: the working copy already is a private folder; hand it to the kernel uid."""
    work = Path(spec["work_src"])
    for path in [work, *work.rglob("*")]:  # never follow a link the submission planted
        os.chown(path, spec["uid"], spec["gid"], follow_symlinks=False)


def apply_limits(limits: dict) -> None:
    """rlimits for the kernel and everything it starts (inherited across fork/exec)."""
    def set_limit(kind: int, value: int) -> None:
        resource.setrlimit(kind, (value, value))

    set_limit(resource.RLIMIT_CPU, int(limits["cpu_seconds"]))
    set_limit(resource.RLIMIT_AS, int(limits["memory_bytes"]))
    set_limit(resource.RLIMIT_FSIZE, int(limits["file_bytes"]))
    set_limit(resource.RLIMIT_NOFILE, int(limits["open_files"]))
    set_limit(resource.RLIMIT_CORE, 0)
    if limits.get("own_uid"):  # a uid of its own: the count is the sandbox's alone
        set_limit(resource.RLIMIT_NPROC, int(limits["processes"]))


def drop_privileges(uid: int, gid: int) -> None:
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)


def run_kernel(spec: dict, cmd: list[str]) -> int:
    """Fork the kernel as the unprivileged uid with limits; reap children until it exits."""
    pid = os.fork()
    if pid == 0:
        try:
            drop_privileges(spec["uid"], spec["gid"])
            apply_limits({**spec["limits"], "own_uid": spec["own_uid"]})
            os.chdir(spec["work"] if spec["mode"] == "namespaces" else spec["work_src"])
            os.umask(0o077)
            devnull = os.open(os.devnull, os.O_RDWR)
            log = os.open(os.path.join(spec["conn_dir"], "kernel.log"),
                          os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            os.dup2(devnull, 0)
            os.dup2(devnull, 1)
            os.dup2(log, 2)
            os.execve(cmd[0], cmd, spec["env"])
        except BaseException as error:
            print(f"jail: cannot start the kernel: {error!r}", file=sys.stderr, flush=True)
            os._exit(127)
    # Forward interrupts to the kernel, reap orphans (we are PID 1 in namespaces mode).
    signal.signal(signal.SIGINT, lambda *_: _kill(pid, signal.SIGINT))
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
    while True:
        try:
            done, status = os.wait()
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue
        if done == pid:
            return os.waitstatus_to_exitcode(status) & 0xFF


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def main(argv: list[str]) -> int:
    spec_path, cmd = argv[0], argv[argv.index("--") + 1:]
    spec = json.loads(Path(spec_path).read_text())
    if spec["mode"] == "plain":
        copy_work_plain(spec)
        return run_kernel(spec, cmd)
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    unshare(flags)
    init = os.fork()  # the first child is PID 1 of the new PID namespace
    if init == 0:
        try:
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            build_world(spec)
            code = run_kernel(spec, cmd)
        except BaseException as error:  # report why the world could not be built
            print(f"jail: {error}", file=sys.stderr, flush=True)
            code = 126
        os._exit(code)
    signal.signal(signal.SIGINT, lambda *_: _kill(init, signal.SIGINT))
    signal.signal(signal.SIGTERM, lambda *_: _kill(init, signal.SIGKILL))
    while True:
        try:
            _, status = os.waitpid(init, 0)
            return os.waitstatus_to_exitcode(status) & 0xFF
        except InterruptedError:
            continue
        except ChildProcessError:
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
