"""Run every benchmark in turn and write their figures to docs/benchmarks.md.

    .venv/bin/python bench/run_all.py [--only a,b] [--skip a,b] [--quick] [--out PATH]

``make bench`` runs this after installing the peer libraries. Each bench script runs in a
fresh interpreter from the repository root; its output (figures and the versions it ran)
goes into one section of the report with what it measures, the command that reproduces
it and how long it took, under a header naming the machine (CPU, cores, Python, load
average at the start) and the date. Lines a bench prints starting with ``target:`` are
gathered into a summary at the top. ``--quick`` passes each bench smaller sizes, for a
smoke run; its report says so. A bench that fails is reported with the end of its stderr
and the others still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import ast
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


@dataclass(frozen=True)
class Bench:
    """One bench script: its file name (no ``.py``), a title, and its arguments."""

    name: str
    title: str
    args: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()  # the arguments of a --quick run
    timeout: float = 3600.0


@dataclass
class Outcome:
    bench: Bench
    command: str
    seconds: float
    status: int
    stdout: str
    stderr: str
    targets: list[str] = field(default_factory=list)


BENCHES = (
    Bench("virtual_time", "Virtual time: a 10-minute shop run", quick=("--minutes", "2")),
    Bench("peers_breaker", "Circuit breaker against peer libraries",
          quick=("--number", "3000", "--repeat", "3")),
    Bench("peers_retry", "Retry against peer libraries",
          quick=("--number", "3000", "--repeat", "3")),
    Bench("notebook_times", "Notebook execution times", quick=("--only", "00-start")),
    Bench("autograde_speed", "Autograding: faultline-grade against stock nbgrader",
          quick=("--students", "3", "01-availability")),
    Bench("retry_storm", "The retry-storm lab at full size",
          quick=("--trials", "3", "--requests", "1000")),
    Bench("bulkheads", "Bulkheads: login while email hangs"),
    Bench("mesh_compare", "Service mesh: our sidecar against Envoy",
          quick=("--gets", "40", "--posts", "10", "--hang-requests", "5")),
)


def summary_of(path: Path) -> str:
    """The first paragraph of a script's docstring, on one line."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return " ".join(doc.split("\n\n")[0].split())


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines() -> list[str]:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    python = Path(sys.executable)
    shown = python.relative_to(ROOT) if python.is_relative_to(ROOT) else python
    return [
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} "
        f"{platform.release()} ({platform.machine()})",
        f"- Python: {platform.python_version()} ({platform.python_implementation()}), `{shown}`",
        f"- Load average at the start (1, 5, 15 min): {load}",
    ]


def run(bench: Bench, *, quick: bool) -> Outcome:
    args = bench.quick if quick else bench.args
    script = BENCH / f"{bench.name}.py"
    command = " ".join(["python", f"bench/{bench.name}.py", *args])
    print(f"== {command}", flush=True)
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, str(script), *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=bench.timeout,
                              check=False)
        status, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        status = -1
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        stderr = f"timed out after {bench.timeout:g} s"
    seconds = time.perf_counter() - started
    print(stdout, end="" if stdout.endswith("\n") else "\n", flush=True)
    if status:
        print(f"   FAILED (exit {status}):\n{tail(stderr)}", flush=True)
    targets = [line.strip() for line in stdout.splitlines() if line.startswith("target:")]
    return Outcome(bench, command, seconds, status, stdout, stderr, targets)


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def report(outcomes: list[Outcome], *, quick: bool, started: datetime,
           machine: list[str]) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python bench/run_all.py` (`make bench` installs the peer libraries, "
        "then runs it). Benchmarks are not tests: they print figures. Every section names "
        "the command that reproduces it; each script prints the versions it ran.",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC",
        *machine,
    ]
    if quick:
        lines.append("- **Quick run** (`--quick`: smaller sizes): a smoke test, not the "
                     "reference figures.")
    lines += ["", "Timings on a busy machine are noisy: the peer comparisons time every library "
              "in the same process, interleaved, best of N, so their ratios hold up better than "
              "their absolute figures; rerun on a quiet machine for the reference numbers.", ""]
    targets = [(o.bench.title, t) for o in outcomes for t in o.targets]
    failed = [o for o in outcomes if o.status]
    if targets or failed:
        lines += ["## Targets", ""]
        lines += [f"- {title}: {text.removeprefix('target:').strip()}" for title, text in targets]
        lines += [f"- {o.bench.title}: **failed** (exit {o.status})" for o in failed]
        lines.append("")
    for o in outcomes:
        script = BENCH / f"{o.bench.name}.py"
        lines += [
            f"## {o.bench.title}",
            "",
            summary_of(script),
            "",
            f"Command: `{o.command}` ({o.seconds:.0f} s)",
            "",
            "```text",
            o.stdout.rstrip() or "(no output)",
            "```",
            "",
        ]
        if o.status:
            lines += [f"**Failed** (exit {o.status}); the end of its stderr:", "", "```text",
                      tail(o.stderr) or "(nothing)", "```", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated bench names to run")
    parser.add_argument("--skip", default="", help="comma-separated bench names to leave out")
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    only = {n for n in args.only.split(",") if n}
    skip = {n for n in args.skip.split(",") if n}
    known = {b.name for b in BENCHES}
    unknown = (only | skip) - known
    if unknown:
        parser.error(f"unknown bench(es) {sorted(unknown)}; known: {', '.join(sorted(known))}")
    benches = [b for b in BENCHES if (not only or b.name in only) and b.name not in skip
               and (BENCH / f"{b.name}.py").exists()]
    started = datetime.now(UTC)
    machine = machine_lines()  # the load average before the benches add to it
    outcomes = [run(bench, quick=args.quick) for bench in benches]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(outcomes, quick=args.quick, started=started, machine=machine))
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 1 if any(o.status for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
