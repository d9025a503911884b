"""The test-cell helper: every failure says what was expected, what happened, and a hint."""

from __future__ import annotations

import pytest

from faultline.checks import CheckFailed, check, check_close, check_raises, check_that


def test_check_passes_on_equal_values_and_mixes_int_and_float():
    check(3, 3.0, what="three")
    check([1, 2], [1, 2], what="a list")


def test_a_failed_check_explains_itself():
    with pytest.raises(CheckFailed) as caught:
        check(1.98, 0.9801, what="serial_availability([0.99, 0.99])", hint="multiply them")
    assert str(caught.value).splitlines() == [
        "Check failed: serial_availability([0.99, 0.99])",
        "  expected: 0.9801",
        "  got:      1.98",
        "  hint:     multiply them",
    ]


def test_check_refuses_a_value_of_the_wrong_type_even_if_it_claims_equality():
    class EqualToEverything:
        def __eq__(self, other):
            return True

    with pytest.raises(CheckFailed):
        check(EqualToEverything(), 0.5, what="x")
    with pytest.raises(CheckFailed):
        check(True, 1, what="bool is not a number here")


def test_check_close_accepts_float_noise_and_rejects_non_numbers():
    check_close(0.1 + 0.2, 0.3, what="sum")
    with pytest.raises(CheckFailed, match=r"a number close to 0\.3"):
        check_close("0.3", 0.3, what="sum")
    with pytest.raises(CheckFailed, match=r"expected: 0\.3"):
        check_close(0.31, 0.3, what="sum")


def test_check_raises_reports_a_missing_or_wrong_exception():
    check_raises(ValueError, int, "x", what="int('x')")
    with pytest.raises(CheckFailed, match="it returned 3"):
        check_raises(ValueError, int, "3", what="int('3')")
    with pytest.raises(CheckFailed, match="got:      ZeroDivisionError"):
        check_raises(ValueError, lambda: 1 / 0, what="divide")


def test_check_that_uses_the_given_descriptions():
    with pytest.raises(CheckFailed, match="expected: at most 3 calls"):
        check_that(False, what="calls", expected="at most 3 calls", got=5, hint="stop earlier")


def test_lying_numbers_and_containers_of_liars_are_refused():
    class LyingInt(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    class Anything:
        def __eq__(self, other):
            return True

    with pytest.raises(CheckFailed):
        check(LyingInt(5), 7, what="an int subclass")
    with pytest.raises(CheckFailed):
        check_close(LyingInt(5), 7.0, what="an int subclass")
    with pytest.raises(CheckFailed):
        check([1, Anything()], [1, 2], what="a list holding a liar")
    with pytest.raises(CheckFailed):
        check({"a": Anything()}, {"a": 1}, what="a dict holding a liar")
    check({"a": [1, 2.0]}, {"a": [1.0, 2]}, what="numbers mix inside containers")
    check("text", "text", what="strings")
def test_big_ints_compare_exactly():
    with pytest.raises(CheckFailed):
        check(10**20 + 1, 10**20, what="big ints")
