"""The reference retry policy against tenacity, backoff and stamina: the cost of a call that
succeeds at once.

    .venv/bin/python bench/peers_retry.py [--number 20000] [--repeat 7]

The success path is what a retry wrapper costs on almost every call: ``async def fn():
return 1`` through each library's async retry, set up alike (3 tries in all, exponential
backoff with jitter, retrying ``ConnectionError``): faultline's ``RetryPolicy.call``,
backoff's ``on_exception(expo, ..., max_tries=3)`` decorator, tenacity's ``@retry`` and
``AsyncRetrying``, stamina's ``@retry`` (stamina is on, as in production). All side by
side in one process, timeit-style (best of ``--repeat`` interleaved rounds of
``--number`` calls); figures in µs per call and as ratios to backoff. Not a test.
"""

from __future__ import annotations

import asyncio

import backoff
import stamina
import tenacity
from _timing import Case, machine, table, time_async, timing_arguments, versions

import faultline as fl
from faultline.retry import RetryPolicy

PEERS = ("tenacity", "backoff", "stamina")


async def fn() -> int:
    return 1


def cases() -> list[Case]:
    """Every library's retry around ``fn``, configured alike."""
    policy = RetryPolicy(max_attempts=3, base=0.1, cap=10.0, jitter="full",
                         retry_on=ConnectionError)
    backoff_fn = backoff.on_exception(backoff.expo, ConnectionError, max_tries=3,
                                      jitter=backoff.full_jitter)(fn)
    tenacity_fn = tenacity.retry(stop=tenacity.stop_after_attempt(3),
                                 wait=tenacity.wait_random_exponential(multiplier=0.1, max=10),
                                 retry=tenacity.retry_if_exception_type(ConnectionError),
                                 reraise=True)(fn)
    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_random_exponential(multiplier=0.1, max=10),
        retry=tenacity.retry_if_exception_type(ConnectionError), reraise=True)

    async def tenacity_loop() -> int:
        async for attempt in retrying:
            with attempt:
                return await fn()
        raise AssertionError("unreachable")

    stamina_fn = stamina.retry(on=ConnectionError, attempts=3, wait_initial=0.1, wait_max=10.0,
                               wait_jitter=0.1)(fn)
    return [
        Case("await fn() (no retry)", fn, note="the floor"),
        Case("faultline RetryPolicy", lambda: policy.call(fn)),
        Case("backoff", backoff_fn, note="@on_exception(expo, full_jitter)"),
        Case("tenacity @retry", tenacity_fn),
        Case("tenacity AsyncRetrying", tenacity_loop, note="async for attempt in ..."),
        Case("stamina", stamina_fn, note="@retry (instrumentation hooks on)"),
    ]


def main() -> None:
    args = timing_arguments(__doc__)
    print(f"{machine()}; faultline {fl.__version__}, {versions(*PEERS)}")
    print(f"best of {args.repeat} rounds of {args.number} calls, rounds interleaved\n")
    success = cases()
    asyncio.run(time_async(success, number=args.number, repeat=args.repeat))
    print(table("success path: await an async call that succeeds at once, through each retry",
                success, reference="backoff"))
    ours = next(c for c in success if c.name.startswith("faultline"))
    ref = next(c for c in success if c.name == "backoff")
    ratio = ours.best / ref.best
    print(f"\ntarget: faultline RetryPolicy <= 1.0x backoff: {ratio:.2f}x "
          f"({'met' if ratio <= 1 else 'MISSED'})")


if __name__ == "__main__":
    main()
