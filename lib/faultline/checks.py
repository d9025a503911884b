"""Helpers for test cells: a failure says what was checked, what was expected, what
happened, and a hint, instead of a bare ``AssertionError``.

    check(serial_availability([0.9, 0.9]), 0.81, what="serial_availability([0.9, 0.9])",
          hint="every service must be up at once: multiply")
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = ["CheckFailed", "check", "check_close", "check_raises", "check_that"]


class CheckFailed(AssertionError):
    """A visible test failed; the message explains what was expected and gives a hint."""


def _fail(what: str, expected: str, got: str, hint: str) -> CheckFailed:
    lines = [f"Check failed: {what}", f"  expected: {expected}", f"  got:      {got}"]
    if hint:
        lines.append(f"  hint:     {hint}")
    return CheckFailed("\n".join(lines))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 300 else text[:297] + "..."


_NUMBERS = (int, float)


def _strictly_equal(expected: Any, actual: Any) -> bool:
    """Equal by the expected value's own rules, with exact types all the way down.

    An answer cannot pass by being an object whose ``__eq__`` says yes to everything, nor
    an ``int`` subclass that lies: only ``int`` and ``float`` compare as numbers, and
    containers are compared element by element the same way.
    """
    if type(expected) in _NUMBERS:
        if type(actual) not in _NUMBERS:
            return False
        if type(expected) is int and type(actual) is int:
            return int.__eq__(expected, actual)  # exact, however large
        return float(expected) == float(actual)
    if type(actual) is not type(expected):
        return False
    if type(expected) in (list, tuple):
        return len(expected) == len(actual) and all(
            _strictly_equal(e, a) for e, a in zip(expected, actual, strict=True))
    if type(expected) is dict:
        return expected.keys() == actual.keys() and all(
            _strictly_equal(expected[k], actual[k]) for k in expected)
    return type(expected).__eq__(expected, actual) is True


def check(actual: Any, expected: Any, *, what: str, hint: str = "") -> None:
    """Fail unless ``actual`` equals ``expected`` with the same types (ints and floats mix)."""
    if not _strictly_equal(expected, actual):
        raise _fail(what, _show(expected), _show(actual), hint)


def check_close(
    actual: Any, expected: float, *, what: str, hint: str = "", rel: float = 1e-9,
    abs: float = 1e-12,
) -> None:
    """Fail unless ``actual`` is a real number within ``rel``/``abs`` of ``expected``."""
    if type(actual) not in _NUMBERS:  # exact types: a subclass could lie about its value
        raise _fail(what, f"a number close to {expected!r}", f"{_show(actual)} "
                    f"(a {type(actual).__name__})", hint)
    if not math.isclose(float(actual), expected, rel_tol=rel, abs_tol=abs):
        raise _fail(what, f"{expected!r} (within {rel:g} relative)", _show(actual), hint)


def check_raises(
    error: type[BaseException] | tuple[type[BaseException], ...],
    fn: Callable[..., Any], *args: Any, what: str, hint: str = "", **kwargs: Any,
) -> None:
    """Fail unless ``fn(*args, **kwargs)`` raises ``error``.

    Returns nothing, so a grade cell ending in a check has no output (nbgrader warns about
    grade cells whose output is a value).
    """
    names = " or ".join(e.__name__ for e in (error if isinstance(error, tuple) else (error,)))
    try:
        result = fn(*args, **kwargs)
    except error:
        return
    except Exception as other:
        raise _fail(what, f"{names} to be raised", f"{type(other).__name__}: {other}",
                    hint) from other
    raise _fail(what, f"{names} to be raised", f"it returned {_show(result)}", hint)


def check_that(condition: bool, *, what: str, expected: str, got: Any, hint: str = "") -> None:
    """Fail unless ``condition`` holds; ``expected`` and ``got`` describe the two sides."""
    if not condition:
        raise _fail(what, expected, got if isinstance(got, str) else _show(got), hint)
