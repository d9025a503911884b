"""Autograding 01-availability: the solution scores full marks, the blank exercise 0, and
each wrong implementation loses exactly the points of the grade cells it breaks.

One temporary nbgrader course (the repository's config, rooted in tmp) is generated and
every submission autograded in this one process through ``NbGraderAPI``.
"""

from __future__ import annotations

from tests.grading import (
    GRADING_MARKS,
    Graded,
    GradingChecks,
    Mutant,
    assert_loses_exactly,
    submission_with,
)

pytestmark = GRADING_MARKS

ASSIGNMENT = "01-availability"
NOTEBOOK = "01-availability"
GRADE_CELLS = {
    "serial_availability_values": 2,
    "serial_availability_validation": 1,
    "parallel_availability_values": 2,
    "parallel_availability_validation": 1,
    "error_budget_values": 2,
    "error_budget_validation": 1,
    "budget_remaining_values": 2,
    "budget_remaining_validation": 1,
    "burn_rate_values": 2,
    "burn_rate_validation": 1,
    "percentile_values": 2,
    "percentile_validation": 1,
    "answers_are_your_own": 1,
}

# A mutant: (answer cell to replace, its new source, the grade cells it must fail).
MUTANTS: dict[str, Mutant] = {
    "serial_as_sum": ("serial_availability", '''
def serial_availability(avails):
    avails = list(avails)
    if not avails:
        raise ValueError("avails must not be empty")
    for a in avails:
        if not 0 <= a <= 1:
            raise ValueError("each availability must be in [0, 1]")
    return sum(avails)
''', {"serial_availability_values"}),
    "serial_unchecked": ("serial_availability", '''
def serial_availability(avails):
    return math.prod(avails)
''', {"serial_availability_validation"}),
    "parallel_as_max": ("parallel_availability", '''
def parallel_availability(avails):
    avails = list(avails)
    if not avails:
        raise ValueError("avails must not be empty")
    for a in avails:
        if not 0 <= a <= 1:
            raise ValueError("each availability must be in [0, 1]")
    return max(avails)
''', {"parallel_availability_values"}),
    "parallel_unchecked": ("parallel_availability", '''
def parallel_availability(avails):
    return 1 - math.prod(1 - a for a in avails)
''', {"parallel_availability_validation"}),
    "error_budget_rounded": ("error_budget", '''
def error_budget(slo, total_requests):
    if not 0 < slo < 1:
        raise ValueError("slo must lie strictly between 0 and 1")
    if total_requests <= 0:
        raise ValueError("total_requests must be > 0")
    return round((1 - slo) * total_requests)
''', {"error_budget_values"}),
    "error_budget_unchecked": ("error_budget", '''
def error_budget(slo, total_requests):
    return math.floor(round((1 - slo) * total_requests, 9))
''', {"error_budget_validation"}),
    "budget_remaining_floored": ("budget_remaining", '''
def budget_remaining(slo, total_requests, failed_requests):
    if not 0 < slo < 1:
        raise ValueError("slo must lie strictly between 0 and 1")
    if total_requests <= 0:
        raise ValueError("total_requests must be > 0")
    if not 0 <= failed_requests <= total_requests:
        raise ValueError("failed_requests must be between 0 and total_requests")
    return 1 - failed_requests / math.floor((1 - slo) * total_requests)
''', {"budget_remaining_values"}),
    "budget_remaining_unchecked": ("budget_remaining", '''
def budget_remaining(slo, total_requests, failed_requests):
    return 1 - failed_requests / ((1 - slo) * total_requests)
''', {"budget_remaining_validation"}),
    "burn_rate_inverted": ("burn_rate", '''
def burn_rate(slo, error_rate):
    if not 0 < slo < 1:
        raise ValueError("slo must lie strictly between 0 and 1")
    if not 0 <= error_rate <= 1:
        raise ValueError("error_rate must be in [0, 1]")
    return (1 - slo) / error_rate
''', {"burn_rate_values"}),
    "burn_rate_unchecked": ("burn_rate", '''
def burn_rate(slo, error_rate):
    return error_rate / (1 - slo)
''', {"burn_rate_validation"}),
    "percentile_interpolated": ("percentile", '''
def percentile(values, q):
    if not 0 <= q <= 100:
        raise ValueError("q must be in [0, 100]")
    ordered = sorted(values)
    if not ordered:
        raise ValueError("values must not be empty")
    position = q / 100 * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
''', {"percentile_values"}),
    "percentile_off_by_one": ("percentile", '''
def percentile(values, q):
    if not 0 <= q <= 100:
        raise ValueError("q must be in [0, 100]")
    ordered = sorted(values)
    if not ordered:
        raise ValueError("values must not be empty")
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)))]
''', {"percentile_values"}),
    "percentile_unchecked": ("percentile", '''
def percentile(values, q):
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]
''', {"percentile_validation"}),
    "reference_imported": ("serial_availability", '''
from faultline.slo import serial_availability
''', {"answers_are_your_own"}),
}


def tampered(solution: dict) -> dict:
    """Answers without validation, one test cell deleted and another emptied."""
    nb = submission_with(solution, *MUTANTS["serial_unchecked"][:2])
    nb = submission_with(nb, *MUTANTS["parallel_unchecked"][:2])
    ids = [c["metadata"].get("nbgrader", {}).get("grade_id") for c in nb["cells"]]
    nb["cells"][ids.index("parallel_availability_validation")]["source"] = "pass"
    del nb["cells"][ids.index("serial_availability_validation")]
    return nb


class TestGrading(GradingChecks):
    ASSIGNMENT = ASSIGNMENT
    NOTEBOOK = NOTEBOOK
    GRADE_CELLS = GRADE_CELLS
    MUTANTS = MUTANTS

    @classmethod
    def extra_submissions(cls, solution: dict) -> dict[str, dict]:
        return {"tampered": tampered(solution)}

    def test_deleted_and_edited_test_cells_are_restored(self, graded: dict[str, Graded]) -> None:
        assert_loses_exactly(self.entry(graded, "tampered"), "tampered",
                             {"serial_availability_validation", "parallel_availability_validation"})
