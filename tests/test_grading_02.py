"""Autograding 02-timeouts: the solution scores full marks, the blank exercise 0, and each
wrong implementation loses exactly the points of the grade cells it breaks.

One temporary nbgrader course (the repository's config, rooted in tmp) is generated and
every submission autograded in this one process through ``NbGraderAPI``.
"""

from __future__ import annotations

from tests.grading import (
    GRADING_MARKS,
    Graded,
    GradingChecks,
    Mutant,
    assert_full_marks,
    submission_with,
)

pytestmark = GRADING_MARKS

ASSIGNMENT = "02-timeouts"
NOTEBOOK = "02-timeouts"
GRADE_CELLS = {
    "with_timeout_returns_the_result": 1,
    "with_timeout_times_out": 1,
    "with_timeout_cancels_the_work": 2,
    "with_timeout_passes_errors_through": 1,
    "with_timeout_caller_cancellation": 1,
    "with_timeout_validation": 1,
    "deadline_counts_down": 2,
    "deadline_after_validation": 1,
    "deadline_never_negative": 1,
    "deadline_to_header": 1,
    "deadline_header_round_trip": 1,
    "deadline_malformed_headers": 2,
    "plan_is_well_formed": 1,
    "plan_is_ordered": 1,
    "plan_fits_the_deadline": 1,
    "plan_survives_a_stuck_replica": 2,
    "plan_fails_fast": 1,
    "answers_are_your_own": 1,
}

# A correct Deadline, with one method replaced by each Deadline mutant.
DEADLINE = '''
class Deadline:
    def __init__(self, expires_at, clock=time.monotonic):
        self._expires_at = expires_at
        self._clock = clock

    @classmethod
    def after(cls, seconds, clock=time.monotonic):
        if not seconds >= 0:
            raise ValueError("seconds must be >= 0")
        return cls(clock() + seconds, clock)

    def remaining(self):
        return max(0.0, self._expires_at - self._clock())

    @property
    def expired(self):
        return self.remaining() == 0.0

    def to_header(self):
        return str(math.floor(self.remaining() * 1000))

    @classmethod
    def from_header(cls, text, clock=time.monotonic):
        digits = text.strip()
        if not (digits and digits.isascii() and digits.isdigit()):
            raise ValueError("X-Deadline-Ms must be ASCII digits")
        return cls.after(int(digits) / 1000, clock)
'''


def deadline_with(old: str, new: str) -> str:
    """The correct Deadline above with ``old`` (one exact piece of it) replaced by ``new``."""
    assert DEADLINE.count(old) == 1, old
    return DEADLINE.replace(old, new)


FROM_HEADER_BODY = '''        digits = text.strip()
        if not (digits and digits.isascii() and digits.isdigit()):
            raise ValueError("X-Deadline-Ms must be ASCII digits")
        return cls.after(int(digits) / 1000, clock)
'''

# A mutant: (answer cell to replace, its new source, the grade cells it must fail).
MUTANTS: dict[str, Mutant] = {
    # --- with_timeout
    "wait_without_cancelling": ("with_timeout", '''
async def with_timeout(awaitable, seconds):
    if not seconds > 0:
        raise ValueError("seconds must be > 0")
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        raise TimeoutError()
    return task.result()
''', {"with_timeout_cancels_the_work", "with_timeout_caller_cancellation"}),
    "cancel_without_waiting": ("with_timeout", '''
async def with_timeout(awaitable, seconds):
    if not seconds > 0:
        raise ValueError("seconds must be > 0")
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if done:
        return task.result()
    task.cancel()
    raise TimeoutError()
''', {"with_timeout_cancels_the_work"}),
    "swallows_errors": ("with_timeout", '''
async def with_timeout(awaitable, seconds):
    if not seconds > 0:
        raise ValueError("seconds must be > 0")
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        raise
    except Exception:
        return None
''', {"with_timeout_passes_errors_through"}),
    "errors_become_timeouts": ("with_timeout", '''
async def with_timeout(awaitable, seconds):
    if not seconds > 0:
        raise ValueError("seconds must be > 0")
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except Exception as error:
        raise TimeoutError("failed") from error
''', {"with_timeout_passes_errors_through"}),
    "cancellation_becomes_timeout": ("with_timeout", '''
async def with_timeout(awaitable, seconds):
    if not seconds > 0:
        raise ValueError("seconds must be > 0")
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except asyncio.CancelledError:
        raise TimeoutError("cancelled") from None
''', {"with_timeout_caller_cancellation"}),
    "caller_cancellation_leaves_work_running": ("with_timeout", '''
async def with_timeout(awaitable, seconds):
    if not seconds > 0:
        raise ValueError("seconds must be > 0")
    task = asyncio.ensure_future(awaitable)
    try:
        return await asyncio.wait_for(asyncio.shield(task), seconds)
    except TimeoutError:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        raise
''', {"with_timeout_caller_cancellation"}),
    "seconds_unchecked": ("with_timeout", '''
async def with_timeout(awaitable, seconds):
    async with asyncio.timeout(seconds):
        return await awaitable
''', {"with_timeout_validation"}),
    "reference_with_timeout": ("with_timeout", '''
from faultline.timeouts import with_timeout
''', {"answers_are_your_own"}),
    # --- Deadline
    "remaining_goes_negative": ("Deadline", deadline_with(
        "return max(0.0, self._expires_at - self._clock())",
        "return self._expires_at - self._clock()").replace(
        "return self.remaining() == 0.0", "return self.remaining() <= 0"),
        {"deadline_never_negative"}),
    "to_header_rounds": ("Deadline", deadline_with(
        "return str(math.floor(self.remaining() * 1000))",
        "return str(round(self.remaining() * 1000))"), {"deadline_to_header"}),
    "to_header_as_int": ("Deadline", deadline_with(
        "return str(math.floor(self.remaining() * 1000))",
        "return math.floor(self.remaining() * 1000)"),
        {"deadline_to_header", "deadline_never_negative", "deadline_header_round_trip"}),
    "from_header_with_int": ("Deadline", deadline_with(
        FROM_HEADER_BODY, "        return cls.after(int(text) / 1000, clock)\n"),
        {"deadline_malformed_headers"}),
    "from_header_with_float": ("Deadline", deadline_with(
        FROM_HEADER_BODY, "        return cls.after(float(text) / 1000, clock)\n"),
        {"deadline_malformed_headers"}),
    "from_header_any_digits": ("Deadline", deadline_with(
        "digits and digits.isascii() and digits.isdigit()", "digits.isdigit()"),
        {"deadline_malformed_headers"}),
    "from_header_no_strip": ("Deadline", deadline_with(
        "digits = text.strip()", "digits = text"), {"deadline_header_round_trip"}),
    "after_unchecked": ("Deadline", deadline_with(
        '''        if not seconds >= 0:
            raise ValueError("seconds must be >= 0")
''', ""), {"deadline_after_validation"}),
    "expired_is_a_method": ("Deadline", deadline_with(
        "    @property\n    def expired", "    def expired"),
        {"deadline_counts_down", "deadline_never_negative"}),
    "reads_the_wall_clock": ("Deadline", deadline_with(
        "return max(0.0, self._expires_at - self._clock())",
        "return max(0.0, self._expires_at - time.time())"),
        {"deadline_counts_down", "deadline_to_header", "deadline_header_round_trip"}),
    "reference_deadline": ("Deadline", '''
from faultline.timeouts import Deadline
''', {"answers_are_your_own"}),
    "subclassed_deadline": ("Deadline", '''
import faultline.timeouts


class Deadline(faultline.timeouts.Deadline):
    """Mine, honestly."""
''', {"answers_are_your_own"}),
    # --- PLAN
    "bookinfo_plan": ("PLAN", '''
PLAN = {"gateway->orders": (0.3, 2), "orders->payments": (0.5, 2)}
''', {"plan_is_ordered", "plan_survives_a_stuck_replica"}),
    "no_retry_at_payments": ("PLAN", '''
PLAN = {"gateway->orders": (1.0, 1), "orders->payments": (0.3, 1)}
''', {"plan_survives_a_stuck_replica"}),
    "retry_at_the_gateway_only": ("PLAN", '''
PLAN = {"gateway->orders": (0.5, 3), "orders->payments": (0.4, 1)}
''', {"plan_survives_a_stuck_replica"}),
    "over_the_deadline": ("PLAN", '''
PLAN = {"gateway->orders": (1.0, 2), "orders->payments": (0.3, 2)}
''', {"plan_fits_the_deadline", "plan_fails_fast"}),
    "timeout_too_short": ("PLAN", '''
PLAN = {"gateway->orders": (1.0, 1), "orders->payments": (0.05, 3)}
''', {"plan_is_well_formed"}),
}


class TestGrading(GradingChecks):
    ASSIGNMENT = ASSIGNMENT
    NOTEBOOK = NOTEBOOK
    GRADE_CELLS = GRADE_CELLS
    MUTANTS = MUTANTS

    @classmethod
    def extra_submissions(cls, solution: dict) -> dict[str, dict]:
        return {"correct_deadline_rewritten": submission_with(solution, "Deadline", DEADLINE)}

    def test_the_mutants_base_deadline_is_correct(self, graded: dict[str, Graded]) -> None:
        assert_full_marks(self.entry(graded, "correct_deadline_rewritten"))
