"""Autograding 03-retries: the solution scores full marks, the blank exercise 0, and each
wrong implementation loses exactly the points of the grade cells it breaks.

Each mutant is the solution's answer cell with one behaviour broken (a textual edit that
must apply), so a mutant tests one rule at a time. One temporary nbgrader course is
generated and every submission autograded in this one process through ``NbGraderAPI``.
"""

from __future__ import annotations

from tests.grading import (
    GRADING_MARKS,
    GradingChecks,
    Mutant,
    load_notebook,
)

pytestmark = GRADING_MARKS

ASSIGNMENT = "03-retries"
NOTEBOOK = "03-retries"
GRADE_CELLS = {
    "backoff_delay_exponential": 1,
    "backoff_delay_jitter_values": 2,
    "backoff_delay_envelopes": 2,
    "backoff_delay_cap": 2,
    "backoff_delay_validation": 1,
    "retry_policy_retries_until_success": 2,
    "retry_policy_gives_up": 2,
    "retry_policy_no_sleep_after_last_try": 1,
    "retry_policy_retry_on": 2,
    "retry_policy_jittered_sleeps": 1,
    "retry_policy_cancellation": 2,
    "retry_policy_budget": 2,
    "retry_policy_validation": 1,
    "retry_budget_starts_with_min_tokens": 1,
    "retry_budget_deposits_ratio": 1,
    "retry_budget_caps_at_max_tokens": 1,
    "retry_budget_validation": 1,
    "retry_budget_bounds_amplification": 2,
    "answers_are_your_own": 1,
}

SOLUTION = load_notebook("solutions", ASSIGNMENT, NOTEBOOK)


def answer_source(cell_id: str) -> str:
    """The solution's answer cell ``cell_id`` without its nbgrader solution markers."""
    for cell in SOLUTION["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id") == cell_id:
            source = "".join(cell["source"])
            return "\n".join(line for line in source.splitlines()
                             if "### BEGIN SOLUTION" not in line
                             and "### END SOLUTION" not in line)
    raise KeyError(cell_id)


def variant(cell_id: str, edits: list[tuple[str, str]], broken: set[str]) -> Mutant:
    """The solution's ``cell_id`` with each ``(old, new)`` edit made (each must apply once)."""
    source = answer_source(cell_id)
    for old, new in edits:
        assert source.count(old) == 1, f"{cell_id}: {old!r} is not in the solution exactly once"
        source = source.replace(old, new)
    return cell_id, source, broken


T_LINE = "t = cap if attempt > 1000 else min(cap, base * 2.0**attempt)"
VALIDATION = '''        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
            raise TypeError(f"max_attempts must be an int, got {max_attempts!r}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts!r}")
        if not 0 < base <= cap or math.isinf(cap):
            raise ValueError(f"need 0 < base <= cap (finite), got base={base!r}, cap={cap!r}")
        if jitter not in ("none", "full", "equal", "decorrelated"):
            raise ValueError(f"jitter must be none, full, equal or decorrelated, got {jitter!r}")
'''

# A mutant: (answer cell to replace, its new source, the grade cells it must fail).
MUTANTS: dict[str, Mutant] = {
    # backoff_delay
    "backoff_without_cap": variant(
        "backoff_delay", [(T_LINE, "t = base * 2.0**attempt")], {"backoff_delay_cap"}),
    "full_jitter_from_base": variant(
        "backoff_delay", [("return rng.uniform(0, t)", "return rng.uniform(base, t)")],
        {"backoff_delay_jitter_values", "backoff_delay_envelopes"}),
    "decorrelated_from_attempt": variant(
        "backoff_delay",
        [("last = base if previous is None else previous",
          "last = min(cap, base * 2.0 ** min(attempt, 1000))")],
        {"backoff_delay_jitter_values", "backoff_delay_envelopes"}),
    "equal_jitter_over_the_whole_range": variant(
        "backoff_delay", [("return t / 2 + rng.uniform(0, t / 2)", "return rng.uniform(0, t)")],
        {"backoff_delay_jitter_values", "backoff_delay_envelopes", "backoff_delay_cap"}),
    "backoff_unchecked": ("backoff_delay", '''
def backoff_delay(attempt, *, base, cap, jitter, rng, previous=None):
    rng = rng if rng is not None else random.Random()
    if jitter == "decorrelated":
        return min(cap, rng.uniform(base, 3 * (base if previous is None else previous)))
    t = cap if attempt > 1000 else min(cap, base * 2.0**attempt)
    if jitter == "none":
        return t
    if jitter == "full":
        return rng.uniform(0, t)
    return t / 2 + rng.uniform(0, t / 2)
''', {"backoff_delay_validation"}),
    # RetryPolicy
    "max_attempts_retries_not_tries": variant(
        "RetryPolicy", [("if self.attempts >= self.max_attempts:",
                         "if self.attempts > self.max_attempts:")],
        {"retry_policy_gives_up"}),
    "sleeps_after_the_last_try": variant(
        "RetryPolicy", [("""                if self.attempts >= self.max_attempts:
                    raise""", """                if self.attempts >= self.max_attempts:
                    await asyncio.sleep(backoff_delay(
                        self.attempts - 1, base=self.base, cap=self.cap, jitter=self.jitter,
                        rng=self.rng, previous=previous))
                    raise""")],
        {"retry_policy_no_sleep_after_last_try"}),
    "retries_every_exception": variant(
        "RetryPolicy", [("""                if not isinstance(error, self.retry_on):
                    raise
""", "")], {"retry_policy_retry_on"}),
    "catches_base_exception": variant(
        "RetryPolicy", [("except Exception as error:", "except BaseException as error:")],
        {"retry_policy_cancellation"}),
    "forgets_the_previous_sleep": variant(
        "RetryPolicy", [("rng=self.rng, previous=previous)", "rng=self.rng, previous=None)")],
        {"retry_policy_jittered_sleeps"}),
    "ignores_the_budget": variant(
        "RetryPolicy", [("if self.budget is not None and not self.budget.try_acquire():",
                         "if False:")],
        {"retry_policy_budget", "retry_budget_bounds_amplification"}),
    "policy_unchecked": variant(
        "RetryPolicy", [(VALIDATION, "")], {"retry_policy_validation"}),
    # RetryBudget
    "budget_not_recording_requests": variant(
        "RetryBudget",
        [("self.balance = min(self.max_tokens, self.balance + self.ratio)", "pass")],
        {"retry_budget_deposits_ratio", "retry_budget_bounds_amplification"}),
    "budget_starts_empty": variant(
        "RetryBudget", [("self.balance = min_tokens", "self.balance = 0")],
        {"retry_budget_starts_with_min_tokens", "retry_budget_bounds_amplification"}),
    "budget_not_capped": variant(
        "RetryBudget", [("self.balance = min(self.max_tokens, self.balance + self.ratio)",
                         "self.balance = self.balance + self.ratio")],
        {"retry_budget_caps_at_max_tokens"}),
    "budget_unchecked": variant(
        "RetryBudget", [('''        if not ratio >= 0:
            raise ValueError(f"ratio must be >= 0, got {ratio!r}")
        if not min_tokens >= 0:
            raise ValueError(f"min_tokens must be >= 0, got {min_tokens!r}")
        if not max_tokens >= min_tokens:
            raise ValueError(f"max_tokens must be >= min_tokens, got {max_tokens!r}")
''', "")], {"retry_budget_validation"}),
    # provenance
    "reference_policy_imported": ("RetryPolicy", '''
from faultline.retry import RetryPolicy
''', {"answers_are_your_own"}),
    "reference_budget_subclassed": ("RetryBudget", '''
import faultline.retry


class RetryBudget(faultline.retry.RetryBudget):
    """Not my own: the reference budget under another name."""
''', {"answers_are_your_own"}),
}


class TestGrading(GradingChecks):
    ASSIGNMENT = ASSIGNMENT
    NOTEBOOK = NOTEBOOK
    GRADE_CELLS = GRADE_CELLS
    MUTANTS = MUTANTS
