"""Autograding 08-capstone: the solution scores full automatic marks, the blank exercise 0,
each wrong hardening loses exactly the points of the SLOs it breaks, and the written
answer is a manually graded cell with its points, left for the instructor.

The manually graded cell has no automatic score, so the shared checks are applied to the
auto-graded cells only and the written answer is checked on its own.
"""

from __future__ import annotations

from tests.grading import (
    GRADING_MARKS,
    Graded,
    GradingChecks,
    Mutant,
    answer_source,
    assert_full_marks,
    assert_loses_exactly,
    assert_zero,
    edited,
    load_notebook,
)

pytestmark = GRADING_MARKS

ASSIGNMENT = "08-capstone"
NOTEBOOK = "08-capstone"
MANUAL_CELL = "written_answer"
MANUAL_POINTS = 4
AUTO_CELLS = {
    "capstone_checkout_availability": 3,
    "capstone_checkout_latency": 2,
    "capstone_login_unaffected": 2,
    "capstone_no_retry_storm": 2,
    "concept_q1": 1,
    "concept_q2": 1,
    "concept_q3": 1,
}
GRADE_CELLS = {**AUTO_CELLS, MANUAL_CELL: MANUAL_POINTS}


TIMEOUTS_ONLY = '''
def harden(shop):
    async def bounded(send, request, seconds):
        return await fl.with_timeout(send(request), seconds)

    orders = shop.client("orders")
    orders.use("payments", lambda send, request: bounded(send, request, 0.2))
    orders.use("inventory", lambda send, request: bounded(send, request, 0.05))
    orders.use("email", lambda send, request: bounded(send, request, 0.05))
    shop.client("gateway").use("orders", lambda send, request: bounded(send, request, 1.0))
'''

RETRIES_EVERYWHERE = '''
def harden(shop):
    rng = random.Random(8)

    def retrying(per_try):
        policy = fl.RetryPolicy(max_attempts=3, base=0.01, cap=0.05, jitter="full",
                                retry_on=(UpstreamError, TimeoutError, ConnectionError), rng=rng)

        async def wrapper(send, request):
            return await policy.call(lambda: fl.with_timeout(send(request), per_try))

        return wrapper

    orders = shop.client("orders")
    orders.use("payments", retrying(0.2))
    orders.use("inventory", retrying(0.05))
    orders.use("email", retrying(0.05))
    shop.client("gateway").use("orders", retrying(1.0))
    shop.client("gateway").use("login", retrying(1.0))
'''


def mutants(solution: dict) -> dict[str, Mutant]:
    """Wrong hardenings and wrong answers, and the grade cells each must fail."""
    right = answer_source(solution, "harden")
    concepts = answer_source(solution, "concepts")
    return {
        "no_hardening": ("harden", "def harden(shop):\n    pass", {
            "capstone_checkout_availability", "capstone_checkout_latency",
            "capstone_login_unaffected"}),
        "timeouts_only": ("harden", TIMEOUTS_ONLY, {"capstone_checkout_availability"}),
        "retries_everywhere_no_budget": ("harden", RETRIES_EVERYWHERE, {
            "capstone_checkout_availability", "capstone_checkout_latency",
            "capstone_no_retry_storm"}),
        "breaker_without_fallback": ("harden", edited(
            right, ('return Response(202, {"queued": "later"})', "raise"),
        ), {"capstone_checkout_availability"}),
        "wrong_q1": ("concepts", edited(concepts, ('"q1": "b"', '"q1": "a"')), {"concept_q1"}),
        "wrong_q2": ("concepts", edited(concepts, ('"q2": "d"', '"q2": "c"')), {"concept_q2"}),
        "wrong_q3": ("concepts", edited(concepts, ('"q3": "c"', '"q3": "a"')), {"concept_q3"}),
        "concepts_not_a_dict": ("concepts", 'CONCEPTS = "b d c"',
                                {"concept_q1", "concept_q2", "concept_q3"}),
    }


SOLUTION = load_notebook("solutions", ASSIGNMENT, NOTEBOOK)
MUTANTS = mutants(SOLUTION)


def automatic(entry: Graded) -> Graded:
    """The same submission with the manually graded cell left out."""
    return Graded(entry.result, entry.notebook,
                  {k: v for k, v in entry.grades.items() if k != MANUAL_CELL})


class TestGrading(GradingChecks):
    ASSIGNMENT = ASSIGNMENT
    NOTEBOOK = NOTEBOOK
    GRADE_CELLS = GRADE_CELLS
    MUTANTS = MUTANTS

    def test_solution_scores_full_marks(self, graded: dict[str, Graded]) -> None:
        assert_full_marks(automatic(self.entry(graded, "solution")))

    def test_blank_exercise_scores_zero(self, graded: dict[str, Graded]) -> None:
        assert_zero(self.entry(graded, "blank"))

    def test_mutant_loses_exactly_the_points_it_breaks(self, graded: dict[str, Graded],
                                                       mutant: str) -> None:
        assert_loses_exactly(automatic(self.entry(graded, mutant)), mutant,
                             self.MUTANTS[mutant][2])

    def test_written_answer_is_left_for_manual_grading(self, graded: dict[str, Graded]) -> None:
        """The solution's written answer has its points, no automatic score, and needs a
        human; the untouched stub scores 0 automatically."""
        from nbgrader.api import Gradebook

        _, auto, max_score = self.entry(graded, "solution").grades[MANUAL_CELL]
        assert max_score == MANUAL_POINTS
        assert auto is None
        def gradebook(student: str) -> Gradebook:
            """The gradebook of the grading worker that graded ``student``."""
            course = graded[student].notebook.parents[4]
            return Gradebook(f"sqlite:///{course / 'gradebook.db'}")

        with gradebook("solution") as gb:
            grade = gb.find_grade(MANUAL_CELL, NOTEBOOK, ASSIGNMENT, "solution")
            assert grade.needs_manual_grade
        with gradebook("blank") as gb:
            blank = gb.find_grade(MANUAL_CELL, NOTEBOOK, ASSIGNMENT, "blank")
            assert blank.auto_score == 0
            assert not blank.needs_manual_grade

    def test_rubric_is_not_released(self) -> None:
        exercise = load_notebook("exercises", ASSIGNMENT, NOTEBOOK)
        text = "".join("".join(c["source"]) for c in exercise["cells"])
        assert "Rubric" not in text and "Model answer" not in text
        solution = "".join("".join(c["source"]) for c in SOLUTION["cells"])
        assert "Rubric" in solution
