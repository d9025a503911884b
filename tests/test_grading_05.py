"""Autograding 05-bulkheads: the solution scores full marks, the blank exercise 0, and each
wrong implementation loses exactly the points of the grade cells it breaks.

Most mutants are the solution's own answer with one behaviour broken (a targeted edit
that must apply), so they stay in step with the solution notebook.
"""

from __future__ import annotations

from tests.grading import (
    GRADING_MARKS,
    GradingChecks,
    Mutant,
    answer_source,
    edited,
    load_notebook,
)

pytestmark = GRADING_MARKS

ASSIGNMENT = "05-bulkheads"
NOTEBOOK = "05-bulkheads"
GRADE_CELLS = {
    "bulkhead_limits_concurrency": 2,
    "bulkhead_rejects_when_full": 2,
    "bulkhead_honours_max_wait": 2,
    "bulkhead_serves_waiters_in_order": 2,
    "bulkhead_releases_on_error": 1,
    "bulkhead_releases_on_cancellation": 2,
    "bulkhead_counters": 1,
    "bulkhead_validation": 1,
    "little_pool_size_values": 2,
    "little_pool_size_validation": 1,
    "bulkheads_sizes": 1,
    "bulkheads_keep_login_up": 3,
    "bulkheads_keep_the_shop_working": 2,
    "answers_are_your_own": 1,
}
SCENARIO_CELLS = {"bulkheads_sizes", "bulkheads_keep_login_up", "bulkheads_keep_the_shop_working"}


TIMEOUT_LINE = "async with asyncio.timeout(limit):"
FINALLY_RELEASE = """        try:
            return await fn(*args, **kwargs)
        finally:
            self._release()"""


def bulkhead_mutants(solution: dict) -> dict[str, Mutant]:
    """Wrong Bulkheads, each with one behaviour broken, and the cells that must catch it."""
    right = answer_source(solution, "bulkhead")
    return {
        "waits_forever": ("bulkhead", edited(
            right,
            ("elif self.max_wait == 0:", "elif False:  # never refuses"),
            (TIMEOUT_LINE, "async with asyncio.timeout(None):"),
        ), {"bulkhead_rejects_when_full", "bulkhead_honours_max_wait", "bulkhead_counters"}),
        "ignores_finite_max_wait": ("bulkhead", edited(
            right, (TIMEOUT_LINE, "async with asyncio.timeout(None):"),
        ), {"bulkhead_honours_max_wait"}),
        "lifo_waiters": ("bulkhead", edited(
            right, ("waiter = self._waiters.popleft()", "waiter = self._waiters.pop()"),
        ), {"bulkhead_serves_waiters_in_order"}),
        "leaks_slot_on_error": ("bulkhead", edited(right, (FINALLY_RELEASE, """\
        try:
            result = await fn(*args, **kwargs)
        except asyncio.CancelledError:
            self._release()
            raise
        self._release()
        return result""")), {"bulkhead_releases_on_error"}),
        "leaks_slot_on_cancellation": ("bulkhead", edited(right, (FINALLY_RELEASE, """\
        try:
            result = await fn(*args, **kwargs)
        except Exception:
            self._release()
            raise
        self._release()
        return result""")), {"bulkhead_releases_on_cancellation"}),
        "counts_waiters_in_flight": ("bulkhead", edited(
            right.replace("self.in_flight", "self._running"),
            ('    def _release(self):', '''\
    @property
    def in_flight(self):
        return self._running + len(self._waiters)

    def _release(self):'''),
        ), {"bulkhead_counters"}),
        "unchecked_arguments": ("bulkhead", edited(
            right,
            ("        if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):\n"
             "            raise TypeError(", "        if False:\n            raise TypeError("),
            ("        if max_concurrent < 1:\n", "        if False:\n"),
            ("        if isinstance(max_wait, bool) or not isinstance(max_wait, (int, float)):\n",
             "        if False:\n"),
            ("        if not max_wait >= 0:  # also true for NaN\n", "        if False:\n"),
        ), {"bulkhead_validation"}),
        "reference_imported": ("bulkhead", """
from faultline.bulkhead import Bulkhead
""", {"answers_are_your_own"}),
        "reference_subclassed": ("bulkhead", """
import faultline.bulkhead


class Bulkhead(faultline.bulkhead.Bulkhead):
    \"\"\"Mine, really.\"\"\"
""", {"answers_are_your_own"}),
    }


def little_mutants(solution: dict) -> dict[str, Mutant]:
    right = answer_source(solution, "little_pool_size")
    return {
        "little_floored": ("little_pool_size", edited(
            right, ("math.ceil(round(", "math.floor(round("),
        ), {"little_pool_size_values"}),
        "little_without_minimum": ("little_pool_size", edited(
            right, ("return max(1, math.ceil(round(arrival_rate * latency, 9)))",
                    "return math.ceil(round(arrival_rate * latency, 9))"),
        ), {"little_pool_size_values"}),
        "little_unchecked": ("little_pool_size", """
def little_pool_size(arrival_rate, latency):
    return max(1, math.ceil(round(arrival_rate * latency, 9)))
""", {"little_pool_size_validation"}),
    }


SIZING_MUTANTS: dict[str, Mutant] = {
    # An even-handed split: login's compartment is half what its bursts need.
    "starves_login": ("BULKHEADS", 'BULKHEADS = {"orders": 7, "login": 7, "inventory": 6}',
                      {"bulkheads_keep_login_up"}),
    # Login gets everything; checkouts are refused on a normal day.
    "starves_orders": ("BULKHEADS", 'BULKHEADS = {"orders": 3, "login": 14, "inventory": 3}',
                       {"bulkheads_keep_the_shop_working"}),
    # More slots than the gateway has workers: no run at all.
    "more_slots_than_workers": (
        "BULKHEADS", 'BULKHEADS = {"orders": 8, "login": 12, "inventory": 4}', SCENARIO_CELLS),
    "a_float_size": ("BULKHEADS", 'BULKHEADS = {"orders": 6, "login": 11.0, "inventory": 3}',
                     SCENARIO_CELLS),
}


SOLUTION = load_notebook("solutions", ASSIGNMENT, NOTEBOOK)
MUTANTS = {**bulkhead_mutants(SOLUTION), **little_mutants(SOLUTION), **SIZING_MUTANTS}


class TestGrading(GradingChecks):
    ASSIGNMENT = ASSIGNMENT
    NOTEBOOK = NOTEBOOK
    GRADE_CELLS = GRADE_CELLS
    MUTANTS = MUTANTS
