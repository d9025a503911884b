"""Binder: the course runs from exactly what environment.yml and postBuild install.

Binder (repo2docker) builds environment.yml, runs postBuild, and opens JupyterLab. The slow
test does the same on this machine without conda: a fresh virtual environment gets exactly
the packages environment.yml lists under ``pip:``, postBuild runs in it on a copy of the
checkout (the editable install writes ``faultline.egg-info`` there, not here), and lesson
00 runs in a kernel of that environment. The main ``.venv`` is not touched.
tests/test_packaging.py checks that environment.yml pins Python 3.11 and lists the same
packages as pyproject.toml; here we only check that a real YAML parser reads it the same.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.test_packaging import pip_lines_of_environment_yml

ROOT = Path(__file__).resolve().parent.parent
LESSON = Path("course") / "00-start-here.ipynb"
# Binder builds once and caches; a first build here takes about 40 s with a warm pip cache.
INSTALL_TIMEOUT = 600  # seconds: a safety net against a hung pip, not a budget

# Runs inside the Binder-like environment: executes the lesson with that environment's
# nbclient and ipykernel, plus one extra cell that reports which Python the kernel is.
RUN_LESSON = """
import json, sys
import nbformat
from nbclient import NotebookClient

path, workdir, out = sys.argv[1:]
nb = nbformat.read(path, as_version=4)
nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.prefix)", id="which-python"))
NotebookClient(nb, timeout=120, kernel_name="python3",
               resources={"metadata": {"path": workdir}}).execute()
nbformat.write(nb, out)
"""


def environment_yml() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def pip_section(env: dict) -> list[str]:
    """The ``- pip:`` list of a parsed environment.yml."""
    lists = [dep["pip"] for dep in env["dependencies"] if isinstance(dep, dict) and "pip" in dep]
    assert len(lists) == 1, "environment.yml needs exactly one `- pip:` list"
    return [str(item) for item in lists[0]]


def test_yaml_parser_reads_environment_yml_as_test_packaging_does():
    env = environment_yml()
    assert "python=3.11" in env["dependencies"]
    assert "pip" in env["dependencies"]
    assert pip_section(env) == pip_lines_of_environment_yml()


def test_readme_badge_opens_lesson_00_on_binder():
    readme = (ROOT / "README.md").read_text()
    badge = re.search(r"\[!\[Binder\]\(https://mybinder\.org/badge_logo\.svg\)\]\((\S+)\)", readme)
    assert badge, "README.md has no Binder badge"
    url = re.fullmatch(r"https://mybinder\.org/v2/gh/([\w.-]+)/([\w.-]+)/HEAD"
                       r"\?urlpath=lab/tree/(\S+)", badge.group(1))
    assert url, f"not a Binder launch link for the default branch: {badge.group(1)}"
    assert url.group(3) == LESSON.as_posix() and (ROOT / url.group(3)).exists()


def checkout_files() -> list[Path]:
    """What Binder would get from the repository: tracked and not-ignored files."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    return [Path(name) for name in listed if name and (ROOT / name).is_file()]


def run(cmd: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=INSTALL_TIMEOUT)
    noise = "\n".join(line for line in (result.stdout + result.stderr).splitlines()
                      if "is ignored: it is neither a file nor a directory" not in line)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{noise[-4000:]}"
    return result


@dataclass(frozen=True)
class BinderEnv:
    base: Path  # scratch folder
    repo: Path  # the copy of the checkout postBuild ran in
    venv: Path
    python: Path
    env: dict[str, str]  # the environment of every command run "inside Binder"


@pytest.fixture(scope="module")
def binder(tmp_path_factory: pytest.TempPathFactory) -> BinderEnv:
    """A venv built from environment.yml's pip list, with postBuild run on a copy."""
    base = tmp_path_factory.mktemp("binder")
    repo, venv, home = base / "repo", base / "venv", base / "home"
    for name in checkout_files():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, repo / name)
    home.mkdir()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # Only the new venv on PATH ahead of the system; nothing of the main .venv leaks in.
    env = {key: value for key, value in os.environ.items()
           if key not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "JUPYTER_PATH",
                          "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "MPLCONFIGDIR"}}
    path = [p for p in env.get("PATH", "").split(os.pathsep)
            if p and Path(p).resolve() != (ROOT / ".venv" / "bin").resolve()]
    env.update(PATH=os.pathsep.join([str(venv / "bin"), *path]), VIRTUAL_ENV=str(venv),
               HOME=str(home), PIP_DISABLE_PIP_VERSION_CHECK="1")
    python = str(venv / "bin" / "python")
    # --no-compile only saves time: Binder compiles, but that changes nothing we check.
    run([python, "-m", "pip", "install", "--no-compile", *pip_section(environment_yml())],
        cwd=base, env=env)
    run(["bash", str(repo / "postBuild")], cwd=repo, env=env)
    return BinderEnv(base=base, repo=repo, venv=venv, python=Path(python), env=env)


@pytest.mark.slow
def test_postbuild_installs_faultline_from_the_copy_into_the_new_environment(binder):
    result = run([str(binder.python), "-c", "import faultline, sys; "
                  "print(faultline.__file__); print(sys.prefix)"],
                 cwd=binder.base, env=binder.env)
    module, prefix = result.stdout.split()
    assert Path(module) == binder.repo / "lib" / "faultline" / "__init__.py"
    assert Path(prefix) == binder.venv
    assert (binder.repo / "faultline.egg-info").is_dir()  # written in the copy


@pytest.mark.slow
def test_the_environment_has_exactly_the_pinned_versions(binder):
    result = run([str(binder.python), "-m", "pip", "list", "--format=json"],
                 cwd=binder.base, env=binder.env)
    installed = {item["name"].lower(): item["version"] for item in json.loads(result.stdout)}
    for pin in pip_section(environment_yml()):
        name, version = pin.split("==")
        assert installed.get(name.lower()) == version, pin


@pytest.mark.slow
def test_lesson_00_runs_in_a_kernel_of_the_binder_environment(binder):
    script, out = binder.base / "run_lesson.py", binder.base / "executed.ipynb"
    script.write_text(RUN_LESSON)
    lesson = binder.repo / LESSON
    run([str(binder.python), str(script), str(lesson), str(lesson.parent), str(out)],
        cwd=binder.base, env=binder.env)
    cells = json.loads(out.read_text())["cells"]
    outputs = [(cell["id"], output) for cell in cells for output in cell.get("outputs", [])]
    errors = [(cell, output) for cell, output in outputs if output["output_type"] == "error"]
    stderr = [(cell, output) for cell, output in outputs if output.get("name") == "stderr"]
    assert not errors, errors
    assert not stderr, stderr
    which = cells[-1]["outputs"][0]["text"]
    assert Path("".join(which).strip()) == binder.venv, "the kernel ran another Python"
