"""The resilience policy a sidecar applies to one upstream: one description, two proxies.

`SidecarPolicy` is read by our Python sidecar (`faultline.sidecar.make_sidecar`) and
rendered as an Envoy route and cluster (`faultline.envoy`), so a lesson can put the same
policy into both and compare what they do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Methods RFC 9110 calls idempotent: repeating one has the same effect as sending it once.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

#: Statuses that mean "try again, maybe elsewhere": the upstream did not do the work.
RETRYABLE_STATUSES = frozenset({502, 503, 504})


def _positive(name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")


def _count(name: str, value: object, low: int, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


@dataclass(frozen=True)
class SidecarPolicy:
    """What a sidecar does for the calls it forwards to its upstream.

    timeout: the whole request, retries included; when it passes the caller gets 504.
    per_try_timeout: each attempt's own limit (None: only the overall timeout).
    max_retries: retries after the first attempt, for idempotent methods only, and only
        on a connection error or a status in ``retry_on_statuses``.
    backoff_base / backoff_cap: full-jitter exponential backoff between attempts.
    retry_budget_ratio / retry_budget_min: a token bucket shared by all requests through
        this sidecar (Finagle/Linkerd style); None turns the budget off.
    breaker_consecutive_failures: this many failed requests in a row open the breaker,
        which then answers 503 without calling upstream for ``breaker_open_seconds``
        (like Envoy's outlier detection ``consecutive_5xx`` and ``base_ejection_time``).
    max_concurrent: requests in flight to the upstream at once; more get 503 at once
        (like Envoy's cluster ``circuit_breakers``). None: unlimited.
    """

    timeout: float = 1.0
    per_try_timeout: float | None = None
    max_retries: int = 2
    retry_on_statuses: frozenset[int] = field(default=RETRYABLE_STATUSES)
    backoff_base: float = 0.025
    backoff_cap: float = 0.25
    retry_budget_ratio: float | None = 0.2
    retry_budget_min: float = 10
    breaker_consecutive_failures: int | None = 5
    breaker_open_seconds: float = 5.0
    max_concurrent: int | None = None

    def __post_init__(self) -> None:
        _positive("timeout", self.timeout)
        _positive("per_try_timeout", self.per_try_timeout, allow_none=True)
        _count("max_retries", self.max_retries, 0)
        statuses = frozenset(self.retry_on_statuses)
        if not all(isinstance(s, int) and 500 <= s <= 599 for s in statuses):
            raise ValueError("retry_on_statuses must hold 5xx status codes, "
                             f"got {sorted(statuses)!r}")
        object.__setattr__(self, "retry_on_statuses", statuses)
        _positive("backoff_base", self.backoff_base)
        _positive("backoff_cap", self.backoff_cap)
        if self.backoff_cap < self.backoff_base:
            raise ValueError(f"backoff_cap must be >= backoff_base, got {self.backoff_cap!r} "
                             f"< {self.backoff_base!r}")
        if self.retry_budget_ratio is not None and not (
                isinstance(self.retry_budget_ratio, int | float)
                and 0 <= self.retry_budget_ratio <= 1):
            raise ValueError("retry_budget_ratio must be between 0 and 1 or None, "
                             f"got {self.retry_budget_ratio!r}")
        if not isinstance(self.retry_budget_min, int | float) or self.retry_budget_min < 0:
            raise ValueError(f"retry_budget_min must be >= 0, got {self.retry_budget_min!r}")
        _count("breaker_consecutive_failures", self.breaker_consecutive_failures, 1,
               allow_none=True)
        _positive("breaker_open_seconds", self.breaker_open_seconds)
        _count("max_concurrent", self.max_concurrent, 1, allow_none=True)

    def may_retry(self, method: str) -> bool:
        """Whether requests with this method may be retried at all (idempotent ones only)."""
        return self.max_retries > 0 and method.upper() in IDEMPOTENT_METHODS
