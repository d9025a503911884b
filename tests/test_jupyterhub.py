"""A course on one JupyterHub: hub/jupyterhub_config.py with the real hub, proxy and servers.

The hub (``jupyterhub`` with ``configurable-http-proxy`` on loopback ports, everything it
writes in a temporary folder) spawns an instructor's and a student's server through its
REST API. One assignment then goes the way a class uses it, over HTTP through the proxy
with each user's own token: the instructor's formgrader generates and releases it, the
student's Assignment List handlers fetch it, the student writes the answers (contents API)
and submits, the formgrader collects and autogrades, and the score shows in the gradebook.
Teardown stops the hub, the proxy and both user servers by PID. Fast tests check the
config's other account mode and that the Kubernetes values (hub/z2jh-values.yaml) set up
the same roles and exchange.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

ROOT = Path(__file__).resolve().parent.parent
HUB_CONFIG = ROOT / "hub" / "jupyterhub_config.py"
BIN = Path(sys.executable).parent  # the kit's .venv/bin
COURSE, ASSIGNMENT = "faultline", "01-availability"
INSTRUCTOR, STUDENT = "instructor", "student1"
START_DEADLINE = 90.0  # seconds for the hub to answer, or for a server to become ready
REQUEST_TIMEOUT = 120.0  # seconds; generating an assignment takes ~10 s on a busy machine


def free_port() -> int:
    """A loopback port that was free a moment ago (the hub cannot take port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Hub:
    url: str  # the proxy's public URL
    admin_token: str
    state: Path
    homes: Path
    exchange: Path
    log: Path
    process: subprocess.Popen
    server_pids: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, body: object = None,
                token: str | None = None) -> tuple[int, object]:
        """One HTTP request through the proxy; returns the status and the decoded JSON."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"token {token or self.admin_token}",
            "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT) as answer:
                status, raw = answer.status, answer.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        try:
            return status, json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return status, raw.decode(errors="replace")

    def ok(self, method: str, path: str, body: object = None, token: str | None = None):
        status, answer = self.request(method, path, body, token)
        assert 200 <= status < 300, f"{method} {path}: {status} {answer}\n{self.log_tail()}"
        return answer

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def wait_until_answering(hub: Hub) -> None:
    """Poll the hub API through the proxy until it answers (a real process coming up)."""
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        assert hub.process.poll() is None, f"jupyterhub exited:\n{hub.log_tail()}"
        with contextlib.suppress(OSError):
            if hub.request("GET", "/hub/api/")[0] == 200:
                return
        time.sleep(0.2)
    pytest.fail(f"the hub did not answer within {START_DEADLINE} s:\n{hub.log_tail()}")


def wait_until_ready(hub: Hub, user: str) -> None:
    """Follow the hub's progress event stream of a spawn until it reports ready."""
    req = urllib.request.Request(f"{hub.url}/hub/api/users/{user}/server/progress",
                                 headers={"Authorization": f"token {hub.admin_token}"})
    with urllib.request.urlopen(req, timeout=START_DEADLINE) as stream:
        for line in stream:
            if line.startswith(b"data:"):
                event = json.loads(line[5:])
                assert not event.get("failed"), f"{user}: {event}\n{hub.log_tail()}"
                if event.get("ready"):
                    return
    pytest.fail(f"{user}'s server never became ready:\n{hub.log_tail()}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie (our own child) counts as gone
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z"):
            return False
    return True


def descendants_of_this_hub(exchange: Path) -> dict[int, str]:
    """Live processes (pid: command line) whose environment names this test's exchange."""
    marker = f"FAULTLINE_EXCHANGE={exchange}".encode()
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:  # gone, or not ours to read
            continue
    return {pid: cmd.decode(errors="replace") for pid, cmd in found.items() if alive(pid)}


def stop(pid: int, grace: float = 20.0) -> None:
    """SIGTERM one process the hub started, then SIGKILL it if it outlives the grace period."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory):
    for program in ("jupyterhub", "configurable-http-proxy"):
        assert (BIN / program).exists(), f"{BIN / program} is missing: run `make install`"
    base = tmp_path_factory.mktemp("hub")
    state, homes, exchange = base / "state", base / "home", base / "exchange"
    port, hub_port, proxy_port = free_port(), free_port(), free_port()
    token = secrets.token_hex(32)
    env = {**os.environ,
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
           "FAULTLINE_HUB_ACCOUNTS": "shared",
           "FAULTLINE_INSTRUCTORS": INSTRUCTOR,
           "FAULTLINE_STUDENTS": f"{STUDENT},student2",
           "FAULTLINE_HUB_STATE": str(state),
           "FAULTLINE_HUB_HOMES": str(homes),
           "FAULTLINE_EXCHANGE": str(exchange),
           "FAULTLINE_COURSE_SOURCE": str(ROOT),
           "FAULTLINE_HUB_URL": f"http://127.0.0.1:{port}",
           "FAULTLINE_HUB_API_URL": f"http://127.0.0.1:{hub_port}",
           "FAULTLINE_PROXY_API_URL": f"http://127.0.0.1:{proxy_port}",
           "FAULTLINE_HUB_ADMIN_TOKEN": token}
    log = base / "jupyterhub.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(BIN / "jupyterhub"), "-f", str(HUB_CONFIG)], cwd=base,
                                   env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    hub = Hub(url=f"http://127.0.0.1:{port}", admin_token=token, state=state, homes=homes,
              exchange=exchange, log=log, process=process)
    try:
        wait_until_answering(hub)
        yield hub
    finally:
        proxy_pid_file = state / "jupyterhub-proxy.pid"
        proxy_pid = int(proxy_pid_file.read_text()) if proxy_pid_file.exists() else None
        process.terminate()  # the hub stops its servers and the proxy itself...
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        # ...and whatever it left (every process it started carries our exchange path).
        left = descendants_of_this_hub(exchange)
        for pid in {*left, *hub.server_pids.values(), proxy_pid} - {None}:
            if alive(pid):
                stop(pid)
        assert not left, f"still running after the hub stopped: {left}"


@pytest.fixture(scope="module")
def servers(hub: Hub) -> Hub:
    """The instructor's and the student's servers, spawned through the hub's REST API."""
    # Both at once: the hub holds each POST open for up to 10 s while the server starts.
    with ThreadPoolExecutor(2) as pool:
        spawns = {user: pool.submit(hub.request, "POST", f"/hub/api/users/{user}/server")
                  for user in (INSTRUCTOR, STUDENT)}
    for user, spawn in spawns.items():
        status, answer = spawn.result()
        assert status in (201, 202), f"spawn {user}: {status} {answer}"
    for user in (INSTRUCTOR, STUDENT):
        wait_until_ready(hub, user)
        model = hub.ok("GET", f"/hub/api/users/{user}")
        hub.server_pids[user] = model["servers"][""]["state"]["pid"]
        hub.tokens[user] = hub.ok("POST", f"/hub/api/users/{user}/tokens",
                                  {"note": "test_jupyterhub", "expires_in": 900})["token"]
    return hub


@pytest.mark.slow
@pytest.mark.realtime
def test_the_hub_knows_the_class(hub: Hub):
    users = {user["name"]: user for user in hub.ok("GET", "/hub/api/users")}
    assert set(users) == {INSTRUCTOR, STUDENT, "student2"}
    assert users[INSTRUCTOR]["admin"] and not users[STUDENT]["admin"]
    assert users[INSTRUCTOR]["groups"] == [f"formgrade-{COURSE}"]
    assert users[STUDENT]["groups"] == [f"nbgrader-{COURSE}"]
    assert hub.exchange.is_dir() and hub.exchange.stat().st_mode & 0o777 == 0o777
    assert (hub.state / "jupyterhub.sqlite").exists()


@pytest.mark.slow
@pytest.mark.realtime
def test_each_role_gets_its_own_server(servers: Hub):
    instructor, student = servers.tokens[INSTRUCTOR], servers.tokens[STUDENT]
    # The instructor has the formgrader, on a copy of the course in their home...
    assert servers.ok("GET", f"/user/{INSTRUCTOR}/formgrader/api/status", token=instructor)
    assert (servers.homes / INSTRUCTOR / COURSE / "solutions" / ASSIGNMENT).is_dir()
    # ...the student has not (nor its Lab panels), and has the lessons instead...
    status, _ = servers.request("GET", f"/user/{STUDENT}/formgrader/api/status", token=student)
    assert status == 404
    status, page = servers.request("GET", f"/user/{STUDENT}/lab", token=student)
    assert status == 200
    config = json.loads(re.search(r'id="jupyter-config-data"[^>]*>(.*?)</script>', page,
                                  re.S).group(1))
    assert {"@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:create-assignment"} <= set(
        config["disabledExtensions"])
    assert (servers.homes / STUDENT / "course" / "00-start-here.ipynb").exists()
    # ...and cannot open the instructor's server.
    status, _ = servers.request("GET", f"/user/{INSTRUCTOR}/api/contents", token=student)
    assert status == 403
    assert all(alive(pid) for pid in servers.server_pids.values())


def answered(exercise: dict) -> dict:
    """The exercise notebook with every answer cell replaced by the reference solution."""
    source = json.loads((ROOT / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text())
    solutions = {cell["metadata"]["nbgrader"]["grade_id"]: cell["source"]
                 for cell in source["cells"]
                 if cell["metadata"].get("nbgrader", {}).get("solution")}
    for cell in exercise["cells"]:
        grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if cell["metadata"].get("nbgrader", {}).get("solution") and grade_id in solutions:
            cell["source"] = solutions.pop(grade_id)
    assert not solutions, f"answer cells missing from the exercise: {sorted(solutions)}"
    return exercise


@pytest.mark.slow
@pytest.mark.realtime
def test_an_assignment_goes_from_release_to_gradebook(servers: Hub):
    instructor, student = servers.tokens[INSTRUCTOR], servers.tokens[STUDENT]
    formgrader = f"/user/{INSTRUCTOR}/formgrader/api"
    nbgrader = {"course_id": COURSE, "assignment_id": ASSIGNMENT}

    # Instructor: generate the student version (and the gradebook entry), then release.
    assert servers.ok("POST", f"{formgrader}/assignment/{ASSIGNMENT}/assign",
                      token=instructor)["success"]
    assert servers.ok("POST", f"{formgrader}/assignment/{ASSIGNMENT}/release",
                      token=instructor)["success"]
    assert (servers.exchange / COURSE / "outbound" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").exists()

    # Student: fetch, answer, submit.
    listing = servers.ok("POST", f"/user/{STUDENT}/assignments/fetch", nbgrader, token=student)
    assert [a["status"] for a in listing["value"]] == ["fetched"], listing
    path = f"/user/{STUDENT}/api/contents/{ASSIGNMENT}/{ASSIGNMENT}.ipynb"
    exercise = servers.ok("GET", path + "?content=1", token=student)["content"]
    servers.ok("PUT", path, {"type": "notebook", "format": "json",
                             "content": answered(exercise)}, token=student)
    listing = servers.ok("POST", f"/user/{STUDENT}/assignments/submit", nbgrader, token=student)
    submitted = [a for a in listing["value"] if a["status"] == "submitted"]
    assert [a["student_id"] for a in submitted] == [STUDENT], listing  # the hub user's name

    # Instructor: collect and autograde; the score is in the gradebook.
    collected = servers.ok("POST", f"{formgrader}/assignment/{ASSIGNMENT}/collect",
                           token=instructor)
    assert collected["success"] and f"Collecting submission: {STUDENT}" in collected["log"]
    graded = servers.ok("POST", f"{formgrader}/submission/{ASSIGNMENT}/{STUDENT}/autograde",
                        token=instructor)
    assert graded["success"], graded["log"][-2000:]
    grade = servers.ok("GET", f"{formgrader}/submission/{ASSIGNMENT}/{STUDENT}",
                       token=instructor)
    assert grade["autograded"] and grade["max_score"] > 0
    assert grade["score"] == grade["max_score"], grade
    students = servers.ok("GET", f"{formgrader}/students", token=instructor)
    assert [s["id"] for s in students] == [STUDENT]
    assert (servers.homes / INSTRUCTOR / COURSE / "autograder" / "gradebook.db").exists()


def load_hub_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str):
    """hub/jupyterhub_config.py as JupyterHub loads it, with FAULTLINE_* variables set."""
    monkeypatch.setenv("FAULTLINE_HUB_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("FAULTLINE_EXCHANGE", str(tmp_path / "exchange"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return PyFileConfigLoader(HUB_CONFIG.name, str(HUB_CONFIG.parent)).load_config()


def test_shared_mode_runs_every_server_in_its_own_home(monkeypatch, tmp_path):
    c = load_hub_config(monkeypatch, tmp_path, FAULTLINE_HUB_ACCOUNTS="shared",
                        FAULTLINE_HUB_HOMES=str(tmp_path / "home"))
    assert c.JupyterHub.spawner_class == "simple"
    assert c.JupyterHub.authenticator_class == "shared-password"
    assert c.SimpleLocalProcessSpawner.home_dir_template == str(tmp_path / "home" / "{username}")
    assert ("--allow-root" in c.Spawner.get("args", [])) == (os.geteuid() == 0)
    assert c.ConfigurableHTTPProxy.command[-1].endswith("configurable-http-proxy")


def test_system_mode_gives_each_user_a_unix_account(monkeypatch, tmp_path):
    c = load_hub_config(monkeypatch, tmp_path, FAULTLINE_HUB_ACCOUNTS="system",
                        FAULTLINE_INSTRUCTORS="ada", FAULTLINE_STUDENTS="bob, cy")
    assert c.JupyterHub.spawner_class == "localprocess"
    assert c.JupyterHub.authenticator_class == "pam"
    assert "args" not in c.Spawner  # no --allow-root: servers run as the users
    assert c.Authenticator.admin_users == {"ada"}
    assert c.Authenticator.allowed_users == {"ada", "bob", "cy"}
    assert c.JupyterHub.load_groups == {"formgrade-faultline": {"users": ["ada"]},
                                        "nbgrader-faultline": {"users": ["bob", "cy"]}}
    assert (tmp_path / "exchange").stat().st_mode & 0o777 == 0o777


def test_an_unknown_account_mode_is_refused(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="FAULTLINE_HUB_ACCOUNTS"):
        load_hub_config(monkeypatch, tmp_path, FAULTLINE_HUB_ACCOUNTS="ldap")


def test_kubernetes_values_set_up_the_same_roles_and_exchange(monkeypatch, tmp_path):
    values = yaml.safe_load((ROOT / "hub" / "z2jh-values.yaml").read_text())
    hub_config, singleuser = values["hub"]["config"], values["singleuser"]
    one_machine = load_hub_config(monkeypatch, tmp_path)
    groups = hub_config["JupyterHub"]["load_groups"]
    assert groups.keys() == one_machine.JupyterHub.load_groups.keys()
    instructors = groups["formgrade-faultline"]["users"]
    assert set(hub_config["Authenticator"]["admin_users"]) == set(instructors)
    # The exchange volume is mounted where the role configs look for it.
    exchange = singleuser["extraEnv"]["FAULTLINE_EXCHANGE"]
    assert [m["mountPath"] for m in singleuser["storage"]["extraVolumeMounts"]] == [exchange]
    # The hub's hook points each server at its role's config, as on one machine.
    c = Config()
    exec(values["hub"]["extraConfig"]["faultline-roles"], {"c": c})
    for user, groups, role in [("instructor", ["formgrade-faultline"], "instructor"),
                               ("student1", ["nbgrader-faultline"], "student")]:
        spawner = SimpleNamespace(environment={}, user=SimpleNamespace(
            name=user, groups=[SimpleNamespace(name=g) for g in groups]))
        c.KubeSpawner.pre_spawn_hook(spawner)
        image_path = spawner.environment["JUPYTER_CONFIG_PATH"]
        assert image_path == f"/srv/faultline/hub/roles/{role}"
        assert (ROOT / image_path.removeprefix("/srv/faultline/")).is_dir()
        assert spawner.environment["FAULTLINE_STUDENT_ID"] == user
