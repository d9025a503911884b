"""Shared fixtures, and the runner for ``async def`` tests.

An ``async def`` test runs in virtual time (``faultline.clock.run_virtual``) unless it is
marked ``@pytest.mark.realtime`` (real sockets), which runs it on a real event loop with a
generous safety timeout so a bug shows as a failure, never as a stuck suite.
"""

from __future__ import annotations

import asyncio
import inspect
import random

import pytest

from faultline.clock import FakeClock, run_virtual

REALTIME_SAFETY_TIMEOUT = 60.0


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rng() -> random.Random:
    return random.Random(20261129)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    if pyfuncitem.get_closest_marker("realtime"):

        async def guarded() -> None:
            async with asyncio.timeout(REALTIME_SAFETY_TIMEOUT):
                await pyfuncitem.obj(**kwargs)

        asyncio.run(guarded())
    else:
        run_virtual(pyfuncitem.obj(**kwargs))
    return True


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``mutant`` from a grading test class's ``MUTANTS`` (tests/grading.py)."""
    mutants = getattr(metafunc.cls, "MUTANTS", None)
    if "mutant" in metafunc.fixturenames and mutants is not None:
        metafunc.parametrize("mutant", sorted(mutants))
