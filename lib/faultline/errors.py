"""The errors that patterns and the toy shop raise.

Caller misuse is a ``ValueError``/``TypeError``; everything here is a failure of a remote
call or a protective pattern saying no, so callers can tell the two apart.
"""

from __future__ import annotations

__all__ = [
    "BulkheadFullError",
    "CircuitOpenError",
    "DeadlineExceeded",
    "UpstreamError",
    "VirtualTimeDeadlock",
]


class CircuitOpenError(Exception):
    """The circuit breaker refused the call; a trial is admitted in ``retry_after`` seconds."""

    def __init__(self, retry_after: float) -> None:
        # An open breaker raises this on every call, so it does as little as it can: the
        # message is formatted only when shown, and ``args`` (set by ``BaseException``
        # from the call) already holds what pickling needs to rebuild the error.
        if type(retry_after) is not float:
            retry_after = float(retry_after)
        self.retry_after = retry_after if retry_after > 0.0 else 0.0

    def __str__(self) -> str:
        return f"circuit open: retry after {self.retry_after:.3f} s"


class BulkheadFullError(Exception):
    """The bulkhead had no free slot within its ``max_wait``; the call was not made."""

    def __init__(self, message: str = "bulkhead full: no free slot") -> None:
        super().__init__(message)


class DeadlineExceeded(TimeoutError):
    """The request's deadline had already passed, so the work was not started."""


class UpstreamError(Exception):
    """A dependency answered with an error status (5xx), or an error status was passed on."""

    RETRYABLE_STATUSES = frozenset({502, 503, 504})

    def __init__(self, status: int, service: str = "", detail: str = "") -> None:
        self.status = int(status)
        self.service = service
        self.detail = detail
        where = f" from {service}" if service else ""
        extra = f": {detail}" if detail else ""
        super().__init__(f"HTTP {self.status}{where}{extra}")

    @property
    def retryable(self) -> bool:
        """True for statuses that say "try again later" (502, 503, 504)."""
        return self.status in self.RETRYABLE_STATUSES


class VirtualTimeDeadlock(RuntimeError):
    """Every task is waiting and no timer is set: in real time this would hang forever."""
