"""Resilience for the oracle poller: error classes, jittered retries and a circuit breaker.

The clock, the sleep and the random source are injected, so tests run deterministic and fast
(``pytest -q tests/runners/oracle/test_poller.py -k breaker``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


# ------------------------------------------------------------------------------------- errors
class SourceError(Exception):
    """A request to an oracle source failed. Transport errors, timeouts and 5xx are retryable."""

    retryable = True
    counts_as_failure = True  # toward the source's circuit breaker


class PermanentSourceError(SourceError):
    """The source answered, but retrying the same request cannot help (4xx, no contract code)."""

    retryable = False


class ExecutionReverted(SourceError):
    """``eth_call`` reverted: a valid answer from a healthy node (e.g. getRoundData of no round)."""

    retryable = False
    counts_as_failure = False


class CircuitOpenError(SourceError):
    """The source's breaker is open: the call was not made."""

    retryable = False
    counts_as_failure = False


# -------------------------------------------------------------------------------------- clock
class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock epoch seconds: the observation time of a reading."""

    def monotonic(self) -> float:
        """Seconds for intervals, deadlines and cool-downs."""

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FakeClock:
    """A thread-safe manual clock: ``sleep`` advances it at once. For tests and dry runs."""

    def __init__(self, start: float = 1_736_121_600.0):
        self._now = start
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        return self.time()

    def sleep(self, seconds: float) -> None:
        self.advance(max(seconds, 0.0))

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


# ------------------------------------------------------------------------------------ retries
@dataclass
class Backoff:
    """Exponential backoff with full jitter: sleep U(0, min(cap, base * 2**attempt))."""

    base_s: float = 0.2
    cap_s: float = 5.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int) -> float:
        return self.rng.uniform(0.0, min(self.cap_s, self.base_s * 2.0 ** min(attempt, 30)))


@dataclass
class RetryPolicy:
    max_retries: int = 3
    backoff: Backoff = field(default_factory=Backoff)


def call_with_retry(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    clock: Clock,
    breaker: CircuitBreaker | None = None,
    deadline: float | None = None,
    what: str = "call",
) -> T:
    """``fn()`` with retries on retryable ``SourceError``s.

    The first attempt is always made; a retry only when its backoff ends before ``deadline``
    (the start of the next poll cycle), so a failing source never delays the next cycle by more
    than one request timeout. Every attempt passes the breaker first and reports to it.
    """
    attempt, last_error = 0, None
    while True:
        if breaker is not None and not breaker.allow():
            if last_error is not None:
                raise last_error  # the breaker opened on our failures: report the cause
            raise CircuitOpenError(f"{what}: circuit breaker '{breaker.name}' is open")
        try:
            result = fn()
        except SourceError as exc:
            last_error = exc
            if breaker is not None:
                if exc.counts_as_failure:
                    breaker.record_failure()
                else:
                    breaker.record_success()
            if not exc.retryable or attempt >= policy.max_retries:
                raise
            delay = policy.backoff.delay(attempt)
            if deadline is not None and clock.monotonic() + delay >= deadline:
                raise
            log.debug("%s failed (%s); retry %d in %.3f s", what, exc, attempt + 1, delay)
            clock.sleep(delay)
            attempt += 1
            continue
        except Exception:
            # not a source error (a bug or a decode surprise): still release a half-open trial
            if breaker is not None:
                breaker.record_failure()
            raise
        if breaker is not None:
            breaker.record_success()
        return result


# ------------------------------------------------------------------------------------ breaker
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    """closed → open after ``threshold`` consecutive failures → half-open after ``cooldown_s``
    → closed on the first success (open again on a failure). Half-open lets one trial through.
    """

    def __init__(
        self, name: str, threshold: int = 5, cooldown_s: float = 30.0, clock: Clock | None = None
    ):
        if threshold < 1:
            raise ValueError("breaker threshold must be >= 1")
        self.name = name
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.clock = clock or SystemClock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False
        self._lock = threading.Lock()
        self.transitions: list[
            tuple[float, str]
        ] = []  # (monotonic time, new state), for logs/tests

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    def would_allow(self) -> bool:
        """Whether a call now could pass (open and still cooling down: no), without taking the
        half-open trial."""
        with self._lock:
            if self._state == OPEN:
                return self.clock.monotonic() - self._opened_at >= self.cooldown_s
            return True

    def allow(self) -> bool:
        with self._lock:
            if self._state == CLOSED:
                return True
            if self._state == OPEN:
                if self.clock.monotonic() - self._opened_at < self.cooldown_s:
                    return False
                self._set(HALF_OPEN)
            if self._trial_in_flight:
                return False
            self._trial_in_flight = True
            return True

    def record_success(self) -> None:
        with self._lock:
            if self._state == OPEN:
                return  # a straggler allowed before the breaker opened proves little
            self._failures = 0
            self._trial_in_flight = False
            if self._state == HALF_OPEN:
                self._set(CLOSED)

    def record_failure(self) -> None:
        with self._lock:
            if self._state == OPEN:
                return  # stragglers must not extend the cool-down
            self._failures += 1
            if self._state == HALF_OPEN or self._failures >= self.threshold:
                self._trial_in_flight = False
                self._opened_at = self.clock.monotonic()
                self._set(OPEN)

    def _set(self, state: str) -> None:
        if state != self._state:
            log.warning("circuit breaker %s: %s -> %s", self.name, self._state, state)
            self._state = state
            self.transitions.append((self.clock.monotonic(), state))
