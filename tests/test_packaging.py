"""The install story: one dependency list in two files, two commands in the README."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pip_lines_of_environment_yml() -> list[str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    deps = []
    for line in lines[start + 1:]:
        match = re.match(r"^\s+- (\S.*)$", line)
        if not match:
            break
        deps.append(match.group(1).strip())
    return deps


def test_environment_yml_lists_exactly_the_packages_of_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert sorted(pip_lines_of_environment_yml()) == sorted(project["dependencies"]), (
        "environment.yml (Binder) and pyproject.toml list different packages: "
        "keep the pins identical")


def test_the_clients_packages_are_all_there():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[=<>~ ]", dep)[0].lower() for dep in project["dependencies"]}
    assert {"jupyterlab", "nbgrader", "ipywidgets", "aiohttp", "matplotlib", "pytest"} <= names


def test_environment_yml_pins_the_python_the_kit_supports():
    assert re.search(r"^\s+- python=3\.11\s*$", (ROOT / "environment.yml").read_text(), re.M)


def test_postbuild_installs_faultline_from_the_repo():
    post_build = ROOT / "postBuild"
    assert post_build.stat().st_mode & 0o111, "postBuild must be executable"
    assert "pip install" in post_build.read_text() and " -e ." in post_build.read_text()


def test_readme_opens_with_exactly_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["make lab", "make test"]
    assert readme.index("```bash") < readme.index("##")  # before any section
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_the_package_imports_from_lib():
    import faultline

    assert Path(faultline.__file__).resolve().is_relative_to(ROOT / "lib")
    assert sys.version_info >= (3, 11)


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
