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


def check(actual: Any, expected: Any, *, what: str, hint: str = "") -> None:
    """Fail unless ``actual == expected`` (and has the same type family for numbers)."""
    same = type(actual) is type(expected) or (
        isinstance(actual, int | float) and isinstance(expected, int | float)
        and not isinstance(actual, bool) and not isinstance(expected, bool)
    )
    if not same or not bool(expected == actual):
        raise _fail(what, _show(expected), _show(actual), hint)


def check_close(
    actual: Any, expected: float, *, what: str, hint: str = "", rel: float = 1e-9,
    abs: float = 1e-12,
) -> None:
    """Fail unless ``actual`` is a real number within ``rel``/``abs`` of ``expected``."""
    if isinstance(actual, bool) or not isinstance(actual, int | float):
        raise _fail(what, f"a number close to {expected!r}", f"{_show(actual)} "
                    f"(a {type(actual).__name__})", hint)
    if not math.isclose(float(actual), expected, rel_tol=rel, abs_tol=abs):
        raise _fail(what, f"{expected!r} (within {rel:g} relative)", _show(actual), hint)


def check_raises(
    error: type[BaseException] | tuple[type[BaseException], ...],
    fn: Callable[..., Any], *args: Any, what: str, hint: str = "", **kwargs: Any,
) -> BaseException:
    """Fail unless ``fn(*args, **kwargs)`` raises ``error``; return the raised exception."""
    names = " or ".join(e.__name__ for e in (error if isinstance(error, tuple) else (error,)))
    try:
        result = fn(*args, **kwargs)
    except error as raised:
        return raised
    except Exception as other:
        raise _fail(what, f"{names} to be raised", f"{type(other).__name__}: {other}",
                    hint) from other
    raise _fail(what, f"{names} to be raised", f"it returned {_show(result)}", hint)


def check_that(condition: bool, *, what: str, expected: str, got: Any, hint: str = "") -> None:
    """Fail unless ``condition`` holds; ``expected`` and ``got`` describe the two sides."""
    if not condition:
        raise _fail(what, expected, got if isinstance(got, str) else _show(got), hint)
