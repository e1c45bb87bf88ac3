"""A plain-Python model of the circuit breaker's state machine (resilience4j's).

Reference for differential tests of the native core (faultkit.contain._breaker): the
same state machine written the obvious way, one method per event, taking the
time explicitly.  It is also the "plain-Python version" whose per-call
overhead docs/benchmarks.md compares against the native one.

resilience4j (CircuitBreakerStateMachine, CircuitBreakerMetrics,
FixedSizeSlidingWindowMetrics, SlidingTimeWindowMetrics):
- closed: every call is permitted and recorded in a sliding window (the last
  ``window_size`` calls, or the calls of the last ``window_size`` whole epoch
  seconds in one-second buckets); once the window holds at least
  ``minimum_calls`` calls (for a count window, min(minimum_calls,
  window_size)), failure share >= ``failure_rate`` or slow share >=
  ``slow_call_rate`` opens the breaker.  A call is slow when its duration is
  strictly greater than ``slow_call_duration``.
- open: calls are rejected until ``reset_timeout`` seconds after opening; the
  first call or state read (``advance``) after that moves to half-open.
  While open, the counts are those of the window that opened it.
- half-open: ``half_open_calls`` trial calls are permitted; once all are
  recorded, the breaker opens again if their failure or slow share is at the
  threshold, and closes (with a fresh window) otherwise.  A half-open state
  older than ``max_half_open_wait`` opens again on the next ``advance``.
- results of calls permitted before the last transition are dropped (the
  generation check; resilience4j would record them into the new state).
"""
import math

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class BreakerModel:
    def __init__(self, *, failure_rate=0.5, minimum_calls=10, window_size=100,
                 window_type="count", slow_call_duration=None, slow_call_rate=1.0,
                 reset_timeout=60.0, half_open_calls=10, max_half_open_wait=60.0):
        self.failure_rate = failure_rate
        self.slow_call_rate = slow_call_rate
        self.slow_call_duration = math.inf if slow_call_duration is None else slow_call_duration
        self.window_size = window_size
        self.time_window = window_type == "time"
        self.minimum_calls = minimum_calls if self.time_window else min(minimum_calls, window_size)
        self.reset_timeout = reset_timeout
        self.half_open_calls = half_open_calls
        self.max_half_open_wait = math.inf if max_half_open_wait is None else max_half_open_wait
        self.half_open_until = math.inf
        self.tripped = (0, 0, 0)
        self.state = CLOSED
        self.generation = 0
        self.retry_at = math.inf
        self.not_permitted = 0
        self._closed_window()

    # -- windows
    def _closed_window(self):
        self.outcomes = []          # count window: (failed, slow), oldest first
        self.buckets = {}           # time window: epoch second -> [total, failed, slow]
        self.latest = None          # time window: the newest bucket's epoch second

    def _time_record(self, now, failed, slow):
        sec = math.floor(now)
        if self.latest is None or sec > self.latest:
            self.latest = sec
        self.buckets = {s: b for s, b in self.buckets.items() if s > self.latest - self.window_size}
        b = self.buckets.setdefault(self.latest, [0, 0, 0])
        b[0] += 1
        b[1] += failed
        b[2] += slow

    def counts(self):
        """(total, failed, slow) over the window of the current state."""
        if self.state == HALF_OPEN:
            return tuple(self.half)
        if self.state == OPEN:
            return self.tripped
        if self.time_window:
            tot = [0, 0, 0]
            for b in self.buckets.values():
                for i in range(3):
                    tot[i] += b[i]
            return tuple(tot)
        return (len(self.outcomes), sum(f for f, _ in self.outcomes),
                sum(s for _, s in self.outcomes))

    # -- transitions
    def _move(self, state, now):
        if state == OPEN:
            self.tripped = self.counts()
        self.state = state
        self.half_open_until = now + self.max_half_open_wait if state == HALF_OPEN else math.inf
        self.generation += 1
        if state == OPEN:
            self.retry_at = now + self.reset_timeout
        elif state == HALF_OPEN:
            self.permits = self.half_open_calls
            self.half = [0, 0, 0]
        else:
            self._closed_window()

    def acquire(self, now):
        """True if a call may start now; moves open -> half-open once the timeout is over."""
        self.advance(now)
        if self.state == CLOSED:
            return True
        if self.state == HALF_OPEN and self.permits > 0:
            self.permits -= 1
            return True
        self.not_permitted += 1
        return False

    def advance(self, now):
        """The time-driven transitions at ``now`` (what a call or a state read does)."""
        while True:
            if self.state == OPEN and now >= self.retry_at:
                self._move(HALF_OPEN, now)
            elif self.state == HALF_OPEN and now >= self.half_open_until:
                self._move(OPEN, now)
            else:
                return

    def record(self, generation, now, failed, duration):
        """Record a call permitted in ``generation`` that ended at ``now``."""
        if generation != self.generation or self.state == OPEN:
            return
        failed = int(bool(failed))
        slow = int(duration > self.slow_call_duration)
        if self.state == HALF_OPEN:
            self.half[0] += 1
            self.half[1] += failed
            self.half[2] += slow
            if self.half[0] < self.half_open_calls:
                return
            self._move(OPEN if self._above(self.half) else CLOSED, now)
            return
        if self.time_window:
            self._time_record(now, failed, slow)
        else:
            self.outcomes.append((failed, slow))
            if len(self.outcomes) > self.window_size:
                del self.outcomes[0]
        total = self.counts()
        if total[0] >= self.minimum_calls and self._above(total):
            self._move(OPEN, now)

    def _above(self, counts):
        total, failed, slow = counts
        return failed / total >= self.failure_rate or slow / total >= self.slow_call_rate

    def release(self, generation):
        """An excluded outcome: give a half-open trial permit back."""
        if generation == self.generation and self.state == HALF_OPEN:
            self.permits += 1


class PlainBreaker:
    """The best plain-Python fast path: closed state, count window as a ring of
    outcomes with running counts, no lock (the GIL argument of the native one).
    Only measured (docs/benchmarks.md): the closed-state success path is all it
    implements faithfully; anything else falls back to the model."""

    def __init__(self, clock, **kw):
        self.model = BreakerModel(**kw)
        self.clock = clock
        self.ring = bytearray(self.model.window_size)
        self.head = 0
        self.total = 0
        self.failed = 0

    def call(self, fn, *args, **kwargs):
        m = self.model
        if m.state != CLOSED and not m.acquire(self.clock()):
            raise RuntimeError("open")
        gen = m.generation
        try:
            result = fn(*args, **kwargs)
        except Exception:
            m.record(gen, self.clock(), True, 0.0)
            raise
        if gen == m.generation:
            h = self.head
            if self.total == len(self.ring):
                self.failed -= self.ring[h]
            else:
                self.total += 1
            self.ring[h] = 0
            self.head = h + 1 if h + 1 < len(self.ring) else 0
            if self.total >= m.minimum_calls and self.failed >= m.failure_rate * self.total:
                m.record(gen, self.clock(), False, 0.0)
        return result
