"""Autograding 04-circuit-breakers: the solution scores full marks, the blank exercise 0, and
each wrong breaker loses exactly the points of the grade cells whose behaviour it breaks.

The wrong breakers are the solution's own class with one small edit each (``mutant``), so
each differs from a correct answer in exactly one behaviour.
"""

from __future__ import annotations

from tests.grading import (
    GRADING_MARKS,
    GradingChecks,
    Mutant,
    load_notebook,
)

pytestmark = GRADING_MARKS

ASSIGNMENT = "04-circuit-breakers"
NOTEBOOK = "04-circuit-breakers"
ANSWER = "CircuitBreaker"
GRADE_CELLS = {
    "validation": 1,
    "opens_at_failure_rate": 2,
    "minimum_calls": 1,
    "window_slides": 2,
    "open_for_open_timeout": 2,
    "half_open_trials": 2,
    "half_open_failure_reopens": 2,
    "half_open_successes_close": 2,
    "on_transition_events": 2,
    "call_outcomes": 2,
    "call_concurrency": 1,
    "call_cancellation": 1,
    "answers_are_your_own": 1,
}
ALL_BEHAVIOUR = set(GRADE_CELLS) - {"answers_are_your_own", "validation"}


def solution_source() -> str:
    nb = load_notebook("solutions", ASSIGNMENT, NOTEBOOK)
    (cell,) = [c for c in nb["cells"]
               if c["metadata"].get("nbgrader", {}).get("grade_id") == ANSWER]
    return "".join(cell["source"])


def mutant(*edits: tuple[str, str]) -> str:
    """The solution's answer cell with each ``old`` text (found exactly once) replaced."""
    source = solution_source()
    for old, new in edits:
        assert source.count(old) == 1, f"mutant edit must match exactly once: {old!r}"
        source = source.replace(old, new)
    return source


OPEN_CHECK = ("            if (len(self._window) >= self.minimum_calls\n"
              "                    and failures / len(self._window) "
              ">= self.failure_rate_threshold):\n")
LAZY = ("        if self._state == State.OPEN and self.clock() - self._opened_at "
        ">= self.open_timeout:\n")

# A mutant: (answer cell to replace, its new source, the grade cells it must fail).
MUTANTS: dict[str, Mutant] = {
    "no_validation": (ANSWER, mutant(
        ("        if not 0 < failure_rate_threshold <= 1:", "        if False:"),
        ("        if not window_size >= 1:", "        if False:"),
        ("        if not 1 <= minimum_calls <= window_size:", "        if False:"),
        ("        if not open_timeout > 0:", "        if False:"),
        ("        if not half_open_max_calls >= 1:", "        if False:"),
    ), {"validation"}),
    "nan_accepted": (ANSWER, mutant(
        ("        if not 0 < failure_rate_threshold <= 1:",
         "        if failure_rate_threshold <= 0 or failure_rate_threshold > 1:"),
        ("        if not open_timeout > 0:", "        if open_timeout <= 0:"),
    ), {"validation"}),
    # pybreaker's rule: open after minimum_calls failures in a row
    "consecutive_failures": (ANSWER, mutant(
        ("            failures = sum(self._window)\n",
         "            failures = 0\n"
         "            for outcome in reversed(self._window):\n"
         "                if not outcome:\n"
         "                    break\n"
         "                failures += 1\n"),
        (OPEN_CHECK, "            if failures >= self.minimum_calls:\n"),
    ), {"opens_at_failure_rate", "window_slides"}),
    "threshold_strictly_above": (ANSWER, mutant(
        (OPEN_CHECK, OPEN_CHECK.replace(">= self.failure_rate_threshold",
                                        "> self.failure_rate_threshold")),
    ), {"opens_at_failure_rate", "window_slides"}),
    "ignores_minimum_calls": (ANSWER, mutant(
        (OPEN_CHECK, OPEN_CHECK.replace("len(self._window) >= self.minimum_calls",
                                        "len(self._window) >= 1")),
    ), {"minimum_calls"}),
    "window_never_slides": (ANSWER, mutant(
        ("deque(maxlen=window_size)", "deque()"),
    ), {"window_slides"}),
    "half_open_never": (ANSWER, mutant(
        (LAZY, "        if False:\n"),
    ), {"open_for_open_timeout", "half_open_trials", "half_open_failure_reopens",
        "half_open_successes_close", "on_transition_events", "call_outcomes",
        "call_concurrency", "call_cancellation"}),
    # a timer on the event loop moves it to half-open when open_timeout runs out, by itself
    "half_open_on_a_timer": (ANSWER, mutant(
        (LAZY, "        if False:\n"),
        ("            self._opened_at = now\n",
         "            self._opened_at = now\n"
         "            try:\n"
         "                loop = asyncio.get_running_loop()\n"
         "            except RuntimeError:\n"
         "                loop = None\n"
         "            if loop is not None:\n"
         "                loop.call_at(now + self.open_timeout,\n"
         "                             lambda: self._state == State.OPEN\n"
         "                             and self._transition(State.HALF_OPEN))\n"),
    ), {"open_for_open_timeout", "half_open_trials", "half_open_failure_reopens",
        "half_open_successes_close", "on_transition_events"}),  # virtual time runs timers
    # only allow_request() makes the due change; reading .state does not
    "state_read_not_lazy": (ANSWER, mutant(
        ("    @property\n    def state(self):",
         "    @property\n    def state(self):\n        return self._state\n\n"
         "    def _lazy_state(self):"),
        ("        state = self.state  # may find it half-open\n",
         "        state = self._lazy_state()  # may find it half-open\n"),
    ), {"open_for_open_timeout", "on_transition_events"}),
    "unbounded_trials": (ANSWER, mutant(
        ("        if state == State.HALF_OPEN and self._trials < self.half_open_max_calls:",
         "        if state == State.HALF_OPEN:"),
    ), {"half_open_trials", "call_concurrency"}),
    "reopen_keeps_the_old_timer": (ANSWER, mutant(
        ("        if new_state == State.OPEN:\n            self._opened_at = now",
         "        if new_state == State.OPEN and old == State.CLOSED:\n"
         "            self._opened_at = now"),
    ), {"half_open_failure_reopens"}),
    "closes_after_one_success": (ANSWER, mutant(
        ("                if self._successes >= self.half_open_max_calls:",
         "                if self._successes >= 1:"),
    ), {"half_open_successes_close"}),
    "close_keeps_the_window": (ANSWER, mutant(
        ("            self._window.clear()\n", "            pass\n"),
    ), {"half_open_successes_close"}),
    "calls_fn_while_open": (ANSWER, mutant(
        ("        if not self.allow_request():\n            left =",
         "        if not self.allow_request():\n"
         "            await fn(*args, **kwargs)  # the dependency is called anyway\n"
         "            left ="),
    ), {"call_outcomes", "call_concurrency"}),
    "failure_not_reraised": (ANSWER, mutant(
        ("        except Exception:\n            self.record_failure()\n            raise\n",
         "        except Exception:\n            self.record_failure()\n            return None\n"),
    ), {"call_outcomes"}),
    "no_events": (ANSWER, mutant(
        ("            self.on_transition(old, new_state, now)",
         "            pass"),
    ), {"on_transition_events"}),
    # stamps the lazy half-open with the moment open_timeout ran out
    "wrong_at": (ANSWER, mutant(
        ("            self.on_transition(old, new_state, now)",
         "            due = self._opened_at + self.open_timeout\n"
         "            self.on_transition(old, new_state,\n"
         "                               due if new_state == State.HALF_OPEN else now)"),
    ), {"on_transition_events"}),
    "cancel_counts_as_failure": (ANSWER, mutant(
        ("        except asyncio.CancelledError:\n"
         "            if trial and self._state == State.HALF_OPEN:\n"
         "                self._trials -= 1  # no outcome: give the trial back\n"
         "            raise\n",
         "        except asyncio.CancelledError:\n"
         "            self.record_failure()\n"
         "            raise\n"),
    ), {"call_cancellation"}),
    "cancel_keeps_the_trial": (ANSWER, mutant(
        ("                self._trials -= 1  # no outcome: give the trial back\n",
         "                pass\n"),
    ), {"call_cancellation"}),
    "reference_imported": (ANSWER, "from faultline.breaker import CircuitBreaker, State\n",
                           {"answers_are_your_own"}),
    "reference_subclassed": (ANSWER,
                             "import faultline.breaker\n\n\n"
                             "class CircuitBreaker(faultline.breaker.CircuitBreaker):\n"
                             "    pass\n",
                             {"answers_are_your_own"}),
}


class TestGrading(GradingChecks):
    ASSIGNMENT = ASSIGNMENT
    NOTEBOOK = NOTEBOOK
    GRADE_CELLS = GRADE_CELLS
    MUTANTS = MUTANTS
