"""Timing helpers shared by the peer benchmarks: timeit-style best of N, cases interleaved.

Each round times ``number`` calls of every case, in a rotating order, with the garbage
collector off (as ``timeit`` does); a case's figure is its best round. Interleaving makes
noise from other processes hit every case alike, so ratios measured in one run hold up
on a busy machine better than the absolute figures do.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version


@dataclass
class Case:
    """One thing to time: ``call()`` (sync, or returning an awaitable when ``is_async``);
    exceptions of the ``expected`` classes are part of the case (a rejection) and caught."""

    name: str
    call: Callable[[], object]
    expected: tuple[type[BaseException], ...] = ()
    note: str = ""
    best: float = field(default=float("inf"))  # seconds per call


def versions(*dists: str) -> str:
    """``"pybreaker 1.4.1, tenacity 9.2.1"``: the installed version of each distribution."""
    found = []
    for dist in dists:
        try:
            found.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            found.append(f"{dist} (not installed)")
    return ", ".join(found)


def timing_arguments(doc: str | None) -> argparse.Namespace:
    """The command line every peer comparison takes: calls per round and rounds."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000, help="calls per round")
    parser.add_argument("--repeat", type=int, default=7, help="rounds; the best one counts")
    return parser.parse_args()


def machine() -> str:
    """The interpreter and the machine the figures come from."""
    return (f"Python {platform.python_version()} ({platform.python_implementation()}), "
            f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores")


def _rounds(cases: Sequence[Case], repeat: int) -> list[list[Case]]:
    """``repeat`` rounds over the cases, each starting one case later than the last."""
    n = len(cases)
    return [[cases[(start + i) % n] for i in range(n)] for start in range(repeat)]


def time_sync(cases: Sequence[Case], *, number: int, repeat: int) -> None:
    """Time synchronous cases; sets each case's ``best`` (seconds per call)."""
    for round_ in _rounds(cases, repeat):
        for case in round_:
            call, expected = case.call, case.expected
            enabled = gc.isenabled()
            gc.disable()
            try:
                started = time.perf_counter()
                for _ in range(number):
                    try:  # noqa: SIM105 (contextlib.suppress would add its own cost)
                        call()
                    except expected:
                        pass
                elapsed = time.perf_counter() - started
            finally:
                if enabled:
                    gc.enable()
            case.best = min(case.best, elapsed / number)


async def time_async(cases: Sequence[Case], *, number: int, repeat: int) -> None:
    """Time async cases (``await case.call()``) on the running loop; sets each ``best``."""
    for round_ in _rounds(cases, repeat):
        for case in round_:
            call: Callable[[], Awaitable[object]] = case.call  # type: ignore[assignment]
            expected = case.expected
            enabled = gc.isenabled()
            gc.disable()
            try:
                started = time.perf_counter()
                for _ in range(number):
                    try:  # noqa: SIM105 (contextlib.suppress would add its own cost)
                        await call()
                    except expected:
                        pass
                elapsed = time.perf_counter() - started
            finally:
                if enabled:
                    gc.enable()
            case.best = min(case.best, elapsed / number)


def table(title: str, cases: Sequence[Case], *, reference: str) -> str:
    """The cases as a text table: µs per call and the ratio to the ``reference`` case."""
    ref = next(c for c in cases if c.name == reference).best
    width = max(len(c.name) for c in cases)
    lines = [title, f"  {'':{width}}  {'µs/call':>8}  {'× ' + reference:>18}"]
    for case in cases:
        note = f"  {case.note}" if case.note else ""
        lines.append(f"  {case.name:{width}}  {case.best * 1e6:8.3f}  {case.best / ref:18.2f}"
                     f"{note}")
    return "\n".join(lines)
