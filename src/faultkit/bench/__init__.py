"""``faultkit bench``: faultkit against the libraries people use today, in one run.

Ships inside the package, so it runs from an installed wheel:
``pip install 'faultkit[bench]' && faultkit bench``.  Each case times
faultkit's call and each installed peer's call doing the same work, with equal
rounds, interleaved, and the same garbage-collector treatment
(:mod:`faultkit.bench.timing`); what is measured is listed in
:mod:`faultkit.bench.cases`.  The result is one table of ratios (peer time /
faultkit time: above 1 means faultkit is faster), ``--json`` for machines and
``--plot FILE.png`` for people.
"""
from __future__ import annotations

import json
import platform
import textwrap
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Sequence

from faultkit.bench.cases import PILLARS, Case, all_cases
from faultkit.bench.timing import compare

__all__ = ["Row", "run", "format_table", "to_json", "plot", "PILLARS"]


@dataclass
class Row:
    """One comparison: times in seconds per call; ``ratio`` = peer / faultkit (minima).

    With ``runs`` > 1 (``run(repeat=...)``) the times and ratios are medians over the
    repeated runs, ``ratio_runs`` holds each run's ratio, and ``spread`` is the max/min
    of those (run-to-run variation); with one run, ``spread`` is the max/min of the
    per-round ratios."""

    pillar: str
    case: str
    config: str
    peer: str
    gc: str
    faultkit_s: float
    peer_s: float
    ratio: float
    ratio_median: float
    spread: float
    rounds: int
    runs: int = 1
    ratio_runs: List[float] = field(default_factory=list)


def _ratio_spread(ours: List[float], theirs: List[float]) -> float:
    per_round = [b / a for a, b in zip(ours, theirs) if a > 0]
    return max(per_round) / min(per_round) if per_round else float("nan")


def run(*, scale: float = 1.0, rounds: int = 7, pillars: Sequence[str] = PILLARS,
        progress: Optional[Callable[[str], Any]] = None, repeat: int = 1) -> List[Row]:
    """Run every case of ``pillars`` at ``scale`` (1.0: full sizes) with ``rounds`` rounds a side.

    ``repeat`` > 1 runs the whole set that many times (each from fresh objects) and reports
    each row's medians over the runs, with the run-to-run spread (:class:`Row`)."""
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"repeat must be an int >= 1, got {repeat!r}")
    if repeat > 1:
        say = progress or (lambda text: None)
        runs = []
        for i in range(repeat):
            say(f"run {i + 1} of {repeat}")
            runs.append(run(scale=scale, rounds=rounds, pillars=pillars, progress=progress))
        return _combine(runs)
    if not (isinstance(scale, (int, float)) and 0 < scale <= 10):
        raise ValueError(f"scale must be a number in (0, 10], got {scale!r}")
    unknown = [p for p in pillars if p not in PILLARS]
    if unknown:
        raise ValueError(f"unknown pillar(s) {unknown}; choose from {PILLARS}")
    say = progress or (lambda text: None)
    rows: List[Row] = []
    for case in all_cases(float(scale), tuple(pillars)):
        try:
            rows.extend(_run_case(case, rounds, say))
        finally:
            for fn in case.cleanup:
                fn()
    return rows


def _run_case(case: Case, rounds: int, say: Callable[[str], Any]) -> List[Row]:
    rows = []
    ours = case.ours()
    for label, (module, factory) in case.peers.items():
        try:
            peer = factory()
        except ImportError:
            say(f"  {case.pillar}: {case.name}: {label}: skipped ({module} is not installed)")
            continue
        for mode in case.gc_modes:
            t0 = time.perf_counter()
            a, b = compare(ours, peer, rounds=rounds, gc_mode=mode)
            row = Row(case.pillar, case.name, case.config, label, mode, a.best, b.best, b.best / a.best,
                      b.median / a.median, _ratio_spread(a.per_call, b.per_call), rounds)
            rows.append(row)
            say(f"  {case.pillar}: {case.name} vs {label} [gc {mode}]: {row.ratio:.2f}x "
                f"({_fmt(a.best)} vs {_fmt(b.best)}, {time.perf_counter() - t0:.1f} s)")
    return rows


def _median(xs: Sequence[float]) -> float:
    ys = sorted(xs)
    n = len(ys)
    return ys[n // 2] if n % 2 else 0.5 * (ys[n // 2 - 1] + ys[n // 2])


def _combine(runs: Sequence[List[Row]]) -> List[Row]:
    """One row per comparison present in every run: medians, and the spread over the runs."""
    keyed = [{(r.pillar, r.case, r.peer, r.gc): r for r in rows} for rows in runs]
    out = []
    for r in runs[0]:
        key = (r.pillar, r.case, r.peer, r.gc)
        same = [k[key] for k in keyed if key in k]
        if len(same) != len(runs):
            continue
        ratios = [x.ratio for x in same]
        out.append(replace(r, faultkit_s=_median([x.faultkit_s for x in same]),
                           peer_s=_median([x.peer_s for x in same]), ratio=_median(ratios),
                           ratio_median=_median([x.ratio_median for x in same]),
                           spread=max(ratios) / min(ratios), runs=len(same), ratio_runs=ratios))
    return out


def _fmt(seconds: float) -> str:
    for unit, f in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= f:
            return f"{seconds / f:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def format_table(rows: Sequence[Row]) -> str:
    """The comparison as a plain-text table, one row per (case, peer, gc mode)."""
    head = ("pillar", "case", "peer", "gc", "faultkit", "peer time", "ratio (min)", "(median)", "spread")
    body = [(r.pillar, r.case, r.peer, r.gc, _fmt(r.faultkit_s), _fmt(r.peer_s), f"{r.ratio:.2f}x",
             f"{r.ratio_median:.2f}x", f"{r.spread:.2f}") for r in rows]
    widths = [max(len(x[i]) for x in (head, *body)) for i in range(len(head))]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])


def to_json(rows: Sequence[Row], **context: Any) -> str:
    """The rows and the machine they ran on, as JSON."""
    doc: Dict[str, Any] = {
        "faultkit": _version(), "python": sys.version.split()[0], "machine": platform.machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **context,
        "rows": [asdict(r) for r in rows],
    }
    return json.dumps(doc, indent=2)


def _version() -> str:
    import faultkit

    return faultkit.__version__


def plot(rows: Sequence[Row], path: str) -> None:
    """One horizontal bar chart of ratios per pillar (log scale) into ``path`` (PNG); needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pillars = [p for p in PILLARS if any(r.pillar == p for r in rows)]
    if not pillars:
        raise ValueError("no rows to plot")
    heights = [sum(r.pillar == p for r in rows) for p in pillars]
    fig, axes = plt.subplots(len(pillars), 1, figsize=(12, 0.5 * sum(heights) + 1.2 * len(pillars)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, p in zip(axes[:, 0], pillars):
        mine = [r for r in rows if r.pillar == p]
        labels = [textwrap.fill(f"{r.case} vs {r.peer}" + (f" [gc {r.gc}]" if r.gc != "natural" else ""), 60)
                  for r in mine]
        ratios = [r.ratio for r in mine]
        colors = ["#2a7" if x >= 1 else "#c44" for x in ratios]
        ax.barh(range(len(mine)), ratios, color=colors)
        ax.set_xscale("log")
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(mine)))
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(p, loc="left", fontsize=10, fontweight="bold")
        for i, x in enumerate(ratios):
            ax.text(x, i, f" {x:.2g}x", va="center", fontsize=7)
    axes[-1, 0].set_xlabel("peer time / faultkit time (log scale; right of 1 = faultkit faster)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
