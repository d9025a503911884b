"""The reference circuit breaker: exact state sequences on a fake clock, the asyncio shell in
virtual time, and the state machine's table (illegal moves change nothing)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from faultline.breaker import (
    TRANSITIONS,
    Admit,
    BreakerConfig,
    BreakerMachine,
    CircuitBreaker,
    InvalidTransitionError,
    Reject,
    State,
    Transition,
    TransitionLog,
)
from faultline.clock import FakeClock
from faultline.errors import CircuitOpenError, UpstreamError
from faultline.faults import ErrorRate, Hang
from faultline.load import closed_loop
from faultline.messages import Response
from faultline.sim import SimShop
from faultline.timeouts import with_timeout

CLOSED, OPEN, HALF_OPEN = State.CLOSED, State.OPEN, State.HALF_OPEN


def make(clock: FakeClock, **options) -> tuple[CircuitBreaker, TransitionLog]:
    log = TransitionLog()
    return CircuitBreaker(clock=clock, on_transition=log, **options), log


def feed(breaker: CircuitBreaker, outcomes: str) -> list[str]:
    """Ask, then record each outcome ("S" success, "F" failure); the state after each."""
    states = []
    for outcome in outcomes:
        assert breaker.allow_request()
        (breaker.record_success if outcome == "S" else breaker.record_failure)()
        states.append(breaker.state.value)
    return states


def trip(breaker: CircuitBreaker) -> None:
    """Record failures until the breaker opens."""
    while breaker.state is not OPEN:
        assert breaker.allow_request()
        breaker.record_failure()


# --- the flows, with exact times


def test_closed_open_half_open_closed(fake_clock):
    breaker, log = make(fake_clock, window_size=4, minimum_calls=4, open_timeout=30)
    assert breaker.state == "closed"
    fake_clock.advance(5)
    assert feed(breaker, "SFFF") == ["closed", "closed", "closed", "open"]
    fake_clock.advance(29.5)
    assert breaker.state == "open" and not breaker.allow_request()
    fake_clock.advance(0.5)  # exactly open_timeout after it opened at 5
    assert breaker.allow_request() and breaker.state == "half_open"
    fake_clock.advance(2)
    breaker.record_success()
    assert breaker.state == "closed"
    assert log.events == [Transition(CLOSED, OPEN, 5), Transition(OPEN, HALF_OPEN, 35),
                          Transition(HALF_OPEN, CLOSED, 37)]


def test_closed_open_half_open_open_half_open_closed(fake_clock):
    breaker, log = make(fake_clock, window_size=2, minimum_calls=2, open_timeout=10,
                        half_open_max_calls=2)
    feed(breaker, "FF")
    fake_clock.advance(12)
    assert breaker.allow_request() and breaker.allow_request()
    fake_clock.advance(1)
    breaker.record_success()
    fake_clock.advance(1)
    breaker.record_failure()  # any failure reopens, even after a success
    assert breaker.state == "open"
    fake_clock.advance(9.5)
    assert not breaker.allow_request()  # a full open_timeout from the failure at 14
    fake_clock.advance(0.5)
    assert breaker.allow_request() and breaker.allow_request()
    breaker.record_success()
    assert breaker.state == "half_open"  # one success of two is not enough
    breaker.record_success()
    assert breaker.state == "closed"
    assert [(e.new.value, e.at) for e in log] == [
        ("open", 0), ("half_open", 12), ("open", 14), ("half_open", 24), ("closed", 24)]


@pytest.mark.parametrize(("options", "outcomes", "states"), [
    # the threshold reached exactly opens; just below it does not
    ({"window_size": 4, "minimum_calls": 4}, "SSFF", ["closed"] * 3 + ["open"]),
    ({"window_size": 4, "minimum_calls": 4}, "SSSF", ["closed"] * 4),
    ({"failure_rate_threshold": 0.25, "window_size": 8, "minimum_calls": 8}, "SSSSSSFF",
     ["closed"] * 7 + ["open"]),
    ({"failure_rate_threshold": 1.0, "window_size": 3, "minimum_calls": 3}, "FFSFFF",
     ["closed"] * 5 + ["open"]),
    # a rate, not a run: failures need not be consecutive
    ({"window_size": 10, "minimum_calls": 5}, "FSFSF", ["closed"] * 4 + ["open"]),
    # minimum_calls: nothing opens before the window holds that many outcomes
    ({"window_size": 10, "minimum_calls": 5}, "FFFFF", ["closed"] * 4 + ["open"]),
    ({"window_size": 4, "minimum_calls": 1}, "F", ["open"]),
    # the window slides: only the last window_size outcomes count
    ({"window_size": 4, "minimum_calls": 4}, "SSSSSFF", ["closed"] * 6 + ["open"]),
    ({"failure_rate_threshold": 0.75, "window_size": 4, "minimum_calls": 4}, "FFSSSFFF",
     ["closed"] * 7 + ["open"]),
    ({"window_size": 3, "minimum_calls": 3}, "FSSSSSSF", ["closed"] * 8),
])
def test_when_the_closed_breaker_opens(fake_clock, options, outcomes, states):
    breaker, _ = make(fake_clock, **options)
    assert feed(breaker, outcomes) == states


def test_open_refuses_until_open_timeout_and_ignores_outcomes(fake_clock):
    breaker, log = make(fake_clock, window_size=2, minimum_calls=2, open_timeout=30)
    fake_clock.advance(10)
    trip(breaker)
    fake_clock.advance(20)
    assert not breaker.allow_request()
    assert breaker.retry_after() == 10.0
    breaker.record_success()  # a straggler's outcome while open: ignored
    breaker.record_success()
    assert breaker.state == "open"
    fake_clock.advance(10)
    assert breaker.state == "half_open"
    assert [e.at for e in log] == [10, 40]


def test_half_open_is_lazy_and_stamped_when_it_is_seen(fake_clock):
    breaker, log = make(fake_clock, window_size=1, minimum_calls=1, open_timeout=5)
    trip(breaker)
    fake_clock.advance(60)  # nobody asks for a minute
    assert log.states() == ["open"]  # no timer fired behind our back
    assert breaker.allow_request()
    assert log.events[-1] == Transition(OPEN, HALF_OPEN, 60)


def test_reading_state_makes_the_due_change(fake_clock):
    breaker, log = make(fake_clock, window_size=1, minimum_calls=1, open_timeout=5)
    trip(breaker)
    fake_clock.advance(7)
    assert breaker.state == "half_open"
    assert breaker.state == "half_open"  # a second read changes nothing
    assert log.states() == ["open", "half_open"]


@pytest.mark.parametrize("max_calls", [1, 2, 5])
def test_half_open_admits_exactly_half_open_max_calls(fake_clock, max_calls):
    breaker, _ = make(fake_clock, window_size=1, minimum_calls=1, open_timeout=1,
                      half_open_max_calls=max_calls)
    trip(breaker)
    fake_clock.advance(1)
    answers = [breaker.allow_request() for _ in range(max_calls + 3)]
    assert answers == [True] * max_calls + [False] * 3
    for _ in range(max_calls - 1):
        breaker.record_success()
        assert breaker.state == "half_open" and not breaker.allow_request()
    breaker.record_success()
    assert breaker.state == "closed"


def test_one_failure_in_half_open_reopens_for_a_full_open_timeout(fake_clock):
    breaker, log = make(fake_clock, window_size=1, minimum_calls=1, open_timeout=10,
                        half_open_max_calls=3)
    trip(breaker)
    fake_clock.advance(15)
    for _ in range(3):
        assert breaker.allow_request()
    breaker.record_success()
    fake_clock.advance(2)
    breaker.record_failure()
    assert breaker.state == "open" and breaker.retry_after() == 10.0
    fake_clock.advance(9)
    assert not breaker.allow_request()
    fake_clock.advance(1)
    assert breaker.allow_request()
    assert [(e.new.value, e.at) for e in log] == [
        ("open", 0), ("half_open", 15), ("open", 17), ("half_open", 27)]


def test_closing_starts_a_fresh_window(fake_clock):
    breaker, _ = make(fake_clock, window_size=4, minimum_calls=2, open_timeout=1)
    assert feed(breaker, "FF") == ["closed", "open"]
    fake_clock.advance(1)
    assert breaker.allow_request()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.failure_rate is None
    # the old failures are gone and the trial's success is not in the window either
    assert feed(breaker, "F") == ["closed"]
    assert feed(breaker, "F") == ["open"]


# --- the asyncio shell


async def ok(value="ok", seconds=0.0):
    await asyncio.sleep(seconds)
    return value


async def fail(seconds=0.0):
    await asyncio.sleep(seconds)
    raise ConnectionResetError("boom")


async def test_call_returns_the_result_and_passes_arguments():
    breaker = CircuitBreaker(clock=asyncio.get_running_loop().time)
    assert await breaker.call(ok, "hello", seconds=1) == "hello"
    assert breaker.failure_rate == 0.0


async def test_call_raises_the_error_and_counts_it_as_a_failure():
    log = TransitionLog()
    breaker = CircuitBreaker(window_size=2, minimum_calls=2, on_transition=log,
                             clock=asyncio.get_running_loop().time)
    for _ in range(2):
        with pytest.raises(ConnectionResetError, match="boom"):
            await breaker.call(fail, seconds=0.5)
    assert breaker.state == "open"
    assert log.events == [Transition(CLOSED, OPEN, 1.0)]


async def test_call_never_calls_the_function_while_open():
    loop = asyncio.get_running_loop()
    breaker = CircuitBreaker(window_size=1, minimum_calls=1, open_timeout=30, clock=loop.time)
    with pytest.raises(ConnectionResetError):
        await breaker.call(fail)
    calls = []

    async def counted():
        calls.append(loop.time())
        return "ok"

    await asyncio.sleep(12)
    with pytest.raises(CircuitOpenError) as raised:
        await breaker.call(counted)
    assert raised.value.retry_after == 18.0
    assert calls == []
    await asyncio.sleep(18)
    assert await breaker.call(counted) == "ok"
    assert calls == [30.0] and breaker.state == "closed"


async def test_many_concurrent_callers_get_exactly_half_open_max_calls_trials():
    loop = asyncio.get_running_loop()
    log = TransitionLog()
    breaker = CircuitBreaker(window_size=2, minimum_calls=2, open_timeout=10,
                             half_open_max_calls=3, clock=loop.time, on_transition=log)
    for _ in range(2):
        with pytest.raises(ConnectionResetError):
            await breaker.call(fail)
    await asyncio.sleep(10)
    running, peak, started = 0, 0, []

    async def probe(i):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        started.append(i)
        await asyncio.sleep(1 + i % 3)
        running -= 1
        return i

    async def caller(i):
        await asyncio.sleep(i * 0.01)
        try:
            return await breaker.call(probe, i)
        except CircuitOpenError:
            return "rejected"

    results = await asyncio.gather(*(caller(i) for i in range(200)))
    assert peak == 3 and started == [0, 1, 2]
    assert results.count("rejected") == 197
    assert breaker.state == "closed"
    assert log.events[-1] == Transition(HALF_OPEN, CLOSED, 13.02)


async def test_trials_stay_bounded_under_load_across_many_openings():
    """Callers arrive all the time while the dependency fails for 100 s: whenever the
    breaker is half-open, no more than half_open_max_calls trials are ever in flight."""
    loop = asyncio.get_running_loop()
    log = TransitionLog()
    breaker = CircuitBreaker(window_size=10, minimum_calls=5, open_timeout=3,
                             half_open_max_calls=2, clock=loop.time, on_transition=log)
    in_flight: dict[int, int] = {}  # ticket of the half-open period -> trials running
    peak = 0

    async def dependency():
        nonlocal peak
        period = len(log)
        if breaker.state is HALF_OPEN:
            in_flight[period] = in_flight.get(period, 0) + 1
            peak = max(peak, in_flight[period])
        try:
            await asyncio.sleep(0.5)
            if loop.time() < 100:
                raise ConnectionError("down")
            return "up"
        finally:
            if period in in_flight:
                in_flight[period] -= 1

    async def caller(i):
        await asyncio.sleep(i * 0.05)
        try:
            return await breaker.call(dependency)
        except (CircuitOpenError, ConnectionError) as exc:
            return type(exc).__name__

    results = await asyncio.gather(*(caller(i) for i in range(3000)))
    assert peak == 2
    assert results.count("CircuitOpenError") > 1900  # of the 2000 callers while it was down
    assert log.states()[:3] == ["open", "half_open", "open"]
    assert breaker.state == "closed" and results[-1] == "up"


async def test_a_cancelled_trial_gives_its_place_back_and_records_nothing():
    loop = asyncio.get_running_loop()
    log = TransitionLog()
    breaker = CircuitBreaker(window_size=1, minimum_calls=1, open_timeout=5, clock=loop.time,
                             on_transition=log)
    with pytest.raises(ConnectionResetError):
        await breaker.call(fail)
    await asyncio.sleep(5)
    trial = asyncio.ensure_future(breaker.call(ok, seconds=100))
    await asyncio.sleep(1)
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)  # the one trial is taken
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    assert breaker.state == "half_open"
    assert await breaker.call(ok) == "ok"  # the place was given back
    assert log.states() == ["open", "half_open", "closed"]


async def test_a_cancelled_call_in_closed_state_records_nothing():
    breaker = CircuitBreaker(window_size=2, minimum_calls=2,
                             clock=asyncio.get_running_loop().time)
    with pytest.raises(ConnectionResetError):
        await breaker.call(fail)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1):
            await breaker.call(ok, seconds=10)
    assert breaker.state == "closed" and breaker.failure_rate == 1.0  # still one outcome


async def test_a_late_outcome_from_a_state_already_left_is_not_counted():
    """Trial A fails and reopens the breaker; trial B of the same half-open period
    succeeds later, during the next half-open period: it must not close the breaker."""
    loop = asyncio.get_running_loop()
    log = TransitionLog()
    breaker = CircuitBreaker(window_size=1, minimum_calls=1, open_timeout=5,
                             half_open_max_calls=2, clock=loop.time, on_transition=log)
    with pytest.raises(ConnectionResetError):
        await breaker.call(fail)
    await asyncio.sleep(5)
    slow = asyncio.ensure_future(breaker.call(ok, seconds=7))  # trial B, ends at 12
    failing = asyncio.ensure_future(breaker.call(fail, seconds=1))  # trial A, fails at 6
    with pytest.raises(ConnectionResetError):
        await failing
    await asyncio.sleep(5)  # 11: half-open again
    assert breaker.allow_request()
    assert await slow == "ok"
    assert breaker.state == "half_open"
    assert log.states() == ["open", "half_open", "open", "half_open"]


async def test_slow_successes_count_as_failures_when_asked():
    loop = asyncio.get_running_loop()
    breaker = CircuitBreaker(window_size=2, minimum_calls=2, slow_call_duration=1.0,
                             clock=loop.time)
    assert await breaker.call(ok, "slow", seconds=1.5) == "slow"  # the caller still gets it
    assert await breaker.call(ok, "fast", seconds=0.2) == "fast"
    assert breaker.state == "open"  # 1 slow of 2 = 50 %


async def test_slow_calls_are_successes_by_default():
    breaker = CircuitBreaker(window_size=2, minimum_calls=2,
                             clock=asyncio.get_running_loop().time)
    for _ in range(2):
        await breaker.call(ok, seconds=3600)
    assert breaker.state == "closed" and breaker.failure_rate == 0.0


async def test_on_transition_gets_state_values_and_the_clock_time():
    seen = []
    loop = asyncio.get_running_loop()
    breaker = CircuitBreaker(window_size=1, minimum_calls=1, open_timeout=2, clock=loop.time,
                             on_transition=lambda old, new, at: seen.append((old, new, at)))
    await asyncio.sleep(3)
    with pytest.raises(ConnectionResetError):
        await breaker.call(fail, seconds=1)
    await asyncio.sleep(2.5)
    await breaker.call(ok)
    assert seen == [("closed", "open", 4.0), ("open", "half_open", 6.5),
                    ("half_open", "closed", 6.5)]
    assert all(isinstance(old, State) and isinstance(new, State) for old, new, _ in seen)


# --- the state machine and its table


def test_the_table_lists_the_four_moves_of_the_contract():
    assert set(TRANSITIONS) == {(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED),
                                (HALF_OPEN, OPEN)}
    assert all(TRANSITIONS.values())  # every move says why it happens


def machine_in(state: State) -> BreakerMachine:
    machine = BreakerMachine(BreakerConfig(window_size=1, minimum_calls=1, open_timeout=1))
    if state is not CLOSED:
        machine.record(0, failed=True)
    if state is HALF_OPEN:
        machine.poll(1)
    machine.take_events()
    assert machine.state is state
    return machine


@pytest.mark.parametrize(("old", "new"), [
    pair for pair in itertools.product(State, State) if pair not in TRANSITIONS])
def test_an_illegal_transition_raises_and_leaves_the_state_unchanged(old, new):
    machine = machine_in(old)
    before = (machine.window, machine.retry_after(0.5))
    with pytest.raises(InvalidTransitionError, match=f"from {old.value} to {new.value}"):
        machine._transition(new, 0.5)
    assert machine.state is old and (machine.window, machine.retry_after(0.5)) == before
    assert machine.take_events() == []
    assert isinstance(machine.acquire(0.5), Reject if old is OPEN else Admit)


def test_the_machine_answers_admit_and_reject_with_retry_after():
    machine = BreakerMachine(BreakerConfig(window_size=2, minimum_calls=2, open_timeout=10))
    first = machine.acquire(0)
    assert first == Admit(ticket=0)
    machine.record(1, failed=True, ticket=first.ticket)
    machine.record(2, failed=True, ticket=first.ticket)
    assert machine.take_events() == [Transition(CLOSED, OPEN, 2)]
    assert machine.acquire(4) == Reject(retry_after=8.0)
    trial = machine.acquire(12)
    assert trial == Admit(ticket=2, trial=True)
    assert machine.acquire(12) == Reject(retry_after=0.0)
    machine.release(trial)
    assert machine.acquire(13) == Admit(ticket=2, trial=True)
    machine.record(14, failed=True, ticket=first.ticket)  # from a state long gone: ignored
    assert machine.state is HALF_OPEN
    assert machine.take_events() == [Transition(OPEN, HALF_OPEN, 12)]


# --- configuration


@pytest.mark.parametrize(("options", "error", "name"), [
    ({"failure_rate_threshold": 0}, ValueError, "failure_rate_threshold"),
    ({"failure_rate_threshold": 1.5}, ValueError, "failure_rate_threshold"),
    ({"failure_rate_threshold": float("nan")}, ValueError, "failure_rate_threshold"),
    ({"failure_rate_threshold": "0.5"}, TypeError, "failure_rate_threshold"),
    ({"window_size": 0}, ValueError, "window_size"),
    ({"window_size": 2.0}, TypeError, "window_size"),
    ({"minimum_calls": 0}, ValueError, "minimum_calls"),
    ({"window_size": 4, "minimum_calls": 5}, ValueError, "minimum_calls"),
    ({"open_timeout": 0}, ValueError, "open_timeout"),
    ({"open_timeout": -1}, ValueError, "open_timeout"),
    ({"open_timeout": float("inf")}, ValueError, "open_timeout"),
    ({"half_open_max_calls": 0}, ValueError, "half_open_max_calls"),
    ({"half_open_max_calls": True}, TypeError, "half_open_max_calls"),
    ({"slow_call_duration": 0}, ValueError, "slow_call_duration"),
    ({"clock": 3.0}, TypeError, "clock"),
    ({"on_transition": "print"}, TypeError, "on_transition"),
])
def test_bad_settings_are_refused_naming_the_argument(options, error, name):
    with pytest.raises(error, match=name):
        CircuitBreaker(**options)


def test_the_contract_defaults():
    config = CircuitBreaker().config
    assert config == BreakerConfig(0.5, 10, 5, 30.0, 1, None)
    assert CircuitBreaker.__init__.__kwdefaults__["clock"].__name__ == "monotonic"


def test_state_compares_equal_to_plain_strings():
    assert [State.CLOSED, State.OPEN, State.HALF_OPEN] == ["closed", "open", "half_open"]
    assert f"{State.HALF_OPEN}" == str(State.HALF_OPEN) == "half_open"


def test_repr_says_what_the_breaker_is_doing(fake_clock):
    breaker, _ = make(fake_clock, window_size=4, minimum_calls=3, open_timeout=10)
    feed(breaker, "SF")
    assert repr(breaker) == ("<CircuitBreaker closed: 1 of the last 2 calls failed; opens at "
                             "50% of at least 3>")
    breaker.allow_request()
    breaker.record_failure()
    fake_clock.advance(4)
    assert repr(breaker) == "<CircuitBreaker open: a trial in 6 s>"


def test_transition_log_converts_plain_strings():
    log = TransitionLog()
    log("closed", "open", 3)
    assert log.events == [Transition(CLOSED, OPEN, 3.0)] and len(log) == 1
    assert log.states() == ["open"] and "open at 3" in repr(log)
    log.clear()
    assert list(log) == []


# --- on the shop, in virtual time


def charge_later(send, request):
    async def wrapper():
        try:
            return await send(request)
        except CircuitOpenError:
            return Response(202, {"charged": "later"})
    return wrapper()


async def test_on_the_shop_a_hung_payments_service_stops_being_called():
    loop = asyncio.get_running_loop()
    shop = SimShop(seed=4)
    log = TransitionLog()
    breaker = CircuitBreaker(window_size=10, minimum_calls=5, open_timeout=5, clock=loop.time,
                             on_transition=log)
    shop.client("orders").use("payments", charge_later, lambda send, req: breaker.call(send, req),
                              lambda send, req: with_timeout(send(req), 1.0))
    shop.faults.inject("payments", Hang())
    records = await closed_loop(shop.route("checkout"), clients=5, duration=16, timeout=5)
    payments = shop.service("payments").received
    assert all(r.status in (201, 504) for r in records)
    slow = [r for r in records if r.status == 504]
    assert len(slow) == 5 + 2  # the five calls that tripped it, then trials at 6 s and 12 s
    assert sum(r.status == 201 and r.latency < 0.1 for r in records) > 1000  # the fallback
    assert payments == len(slow)  # nothing else reached payments
    assert log.states()[:4] == ["open", "half_open", "open", "half_open"]


async def test_on_the_shop_the_breaker_closes_once_payments_recovers():
    loop = asyncio.get_running_loop()
    shop = SimShop(seed=5)
    log = TransitionLog()
    breaker = CircuitBreaker(open_timeout=2, clock=loop.time, on_transition=log)
    shop.client("orders").use("payments", lambda send, req: breaker.call(send, req))
    shop.faults.inject("payments", ErrorRate(1.0))
    loop.call_later(10, shop.faults.clear)
    records = await closed_loop(shop.route("checkout"), clients=2, duration=20)
    failed = [r for r in records if not r.ok]
    assert {r.status for r in failed} == {503}  # payments' 503, then the breaker's
    assert max(r.start for r in failed) < 12
    assert log.states()[-1] == "closed" and 10 <= log.events[-1].at <= 12
    assert breaker.state == "closed"
    with pytest.raises(UpstreamError):
        shop.faults.inject("payments", ErrorRate(1.0))
        await shop.client("orders").request("payments", "POST", "/charge")
