"""``faultline-grade``: the instructor's grading command (``python -m autograder.grade``).

import submissions, autograde them in parallel with each kernel sandboxed, write feedback
without hidden tests, export grades for Canvas. See ``autograder.grade.cli``.
"""
