"""Fair timing of one contender against another, in one process, in one run.

Both sides get the same treatment, so a ratio compares equal work:

- the same number of rounds, interleaved (ours, peer, ours, peer, ...), so a
  slow moment of a noisy machine falls on both;
- each side's loop count per round is calibrated alone so a round lasts about
  ``round_time`` seconds (a slow peer runs fewer calls a round, never fewer rounds);
- the garbage collector, by mode: ``"natural"`` (the default) leaves it as a
  program would have it; ``"charged"`` runs at least ``MIN_CHARGED_LOOPS`` calls
  a round with the collector on and ends each round with a young collection
  *inside* the timer, so the collections a call's new containers make due (a
  call that pauses the collector defers them to the next allocation, which is
  the next call) are paid by the side that caused them; ``"off"`` disables it
  for the whole round, for both sides, and collects outside the timer.  Cases
  that build many containers report both ``"charged"`` and ``"off"``.

A :class:`Timing` keeps every round's time per call; ratios use minima (the
least disturbed round) and medians, and the spread is max/min of the per-round
ratios.
"""
from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Tuple

__all__ = ["Timing", "compare", "calibrate"]

# A round long enough that timer resolution and loop overhead are noise
# (perf_counter resolves ~100 ns here), short enough that --quick stays quick.
DEFAULT_ROUND_TIME = 0.02
GC_MODES = ("natural", "charged", "off")
# With the collector charged, a round runs at least this many calls, so what one
# call defers lands inside the same side's round (only the last call's is
# collected explicitly).
MIN_CHARGED_LOOPS = 10


@dataclass
class Timing:
    """Seconds per call, one entry per round."""

    per_call: List[float] = field(default_factory=list)
    loops: int = 1

    @property
    def best(self) -> float:
        return min(self.per_call)

    @property
    def median(self) -> float:
        return statistics.median(self.per_call)


def _round(fn: Callable[[], Any], loops: int, gc_mode: str) -> float:
    if gc_mode == "natural":
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        return time.perf_counter() - t0
    if gc_mode == "off":
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            for _ in range(loops):
                fn()
            t = time.perf_counter() - t0
        finally:
            gc.enable()
        return t
    t0 = time.perf_counter()
    for _ in range(loops):
        fn()
    gc.collect(0)  # the last call's deferred young collection is its own to pay
    return time.perf_counter() - t0


def calibrate(fn: Callable[[], Any], round_time: float, gc_mode: str) -> int:
    """Loop count that makes one round of ``fn`` last about ``round_time`` seconds."""
    loops = 1
    while True:
        t = _round(fn, loops, gc_mode)
        if t >= round_time * 0.5 or loops >= 1 << 24:
            floor = MIN_CHARGED_LOOPS if gc_mode == "charged" else 1
            return max(floor, int(loops * round_time / max(t, 1e-9)))
        loops *= 10 if t < round_time / 50 else 2


def compare(ours: Callable[[], Any], peer: Callable[[], Any], *, rounds: int = 7,
            round_time: float = DEFAULT_ROUND_TIME, gc_mode: str = "natural") -> Tuple[Timing, Timing]:
    """Time ``ours`` and ``peer`` over ``rounds`` interleaved rounds each (see module doc)."""
    if gc_mode not in GC_MODES:
        raise ValueError(f"gc_mode must be one of {GC_MODES}, got {gc_mode!r}")
    if not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1, got {rounds!r}")
    a, b = Timing(loops=calibrate(ours, round_time, gc_mode)), Timing(loops=calibrate(peer, round_time, gc_mode))
    for _ in range(rounds):
        a.per_call.append(_round(ours, a.loops, gc_mode) / a.loops)
        b.per_call.append(_round(peer, b.loops, gc_mode) / b.loops)
    return a, b
