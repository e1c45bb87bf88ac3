"""Accuracy study: mistake rate vs detection time of TimeoutDetector and PhiAccrualDetector.

A deterministic simulation (seeded; nothing sleeps; the detectors get explicit times):
M components send a heartbeat every second for H hours, then crash.  Each heartbeat is
lost with probability `loss` or arrives after a random delay; one that arrives after a
later-sent one is dropped (as faultkit.transport's receiver drops it by sequence number);
the rest are fed to the detector in arrival order.  We measure, per configuration:

- false suspicions per component-hour: heartbeats that arrive at or after the component's
  dead deadline as it stood just before them (the component was healthy, yet the detector
  had declared - or would at its next scan have declared - it dead).  This counts every
  mistake, however short, as Chen, Toueg and Aguilera's mistake rate does; a monitor that
  scans every s seconds reports only those lasting longer than about s;
- mean detection time: the dead deadline after the last heartbeat a crashed component
  sent, minus the crash time (crash uniform within the second after its last send).

Run from a checkout with faultkit installed: ``python benchmarks/detection_study.py``
(about a minute on one core); it rewrites docs/detection.md and, if matplotlib is
installed, docs/detection.png.  ``--quick`` runs a small version (for a smoke test).
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

import faultkit as fk

INTERVAL = 1.0  # heartbeat interval, seconds (Akka's heartbeat-interval)


def scenarios():
    """name -> (description, delay sampler(rng, shape) -> seconds, loss probability)."""
    def normal(rng, shape):
        return np.clip(rng.normal(0.2, 0.1, shape), 0.0, None)

    def pareto(rng, shape):
        # Pareto(alpha 1.5, minimum 50 ms): median 79 ms, P(delay > 2 s) = 0.4%,
        # occasional multi-second stalls (GC pauses, queueing); infinite variance.
        return 0.05 * (rng.pareto(1.5, shape) + 1.0)

    return {
        "normal": ("delay ~ N(0.2 s, 0.1 s) clipped at 0, 1% loss", normal, 0.01),
        "heavy-tailed": ("delay ~ Pareto(alpha 1.5, minimum 50 ms): median 79 ms, P(> 2 s) = 0.4%; 1% loss", pareto, 0.01),
        "lossy": ("delay ~ N(0.2 s, 0.1 s) clipped at 0, 10% loss", normal, 0.10),
    }


def detectors():
    """(family, setting label, factory) for every configuration studied."""
    out = []
    for t in (1.5, 2.0, 3.0, 5.0, 8.0):
        out.append(("timeout", f"timeout={t:g} s", lambda t=t: fk.TimeoutDetector(t)))
    for thr in (1.0, 3.0, 8.0, 12.0):
        out.append(("phi, pause 0", f"threshold={thr:g}, pause=0",
                    lambda thr=thr: fk.PhiAccrualDetector(thr, acceptable_heartbeat_pause=0.0)))
    for thr in (1.0, 8.0, 16.0):
        out.append(("phi, pause 3 s (Akka)", f"threshold={thr:g}, pause=3 s",
                    lambda thr=thr: fk.PhiAccrualDetector(thr)))
    return out


def simulate(make_detector, delay, loss, *, components, hours, seed):
    """(false suspicions per component-hour, mean detection time in s, heartbeats fed)."""
    rng = np.random.default_rng(seed)
    rounds = int(hours * 3600 / INTERVAL)
    phase = rng.uniform(0.0, INTERVAL, components)
    sends = phase[:, None] + INTERVAL * np.arange(rounds)[None, :]
    arrivals = sends + delay(rng, sends.shape)
    arrivals[rng.random(sends.shape) < loss] = np.inf
    # A heartbeat arriving after a later-sent one is dropped, as the transport's receiver
    # drops it by sequence number (else a stale heartbeat would revive a crashed node):
    # heartbeat k is stale if some j > k arrived before it.
    later_min = np.minimum.accumulate(arrivals[:, ::-1], axis=1)[:, ::-1]
    stale = np.zeros(arrivals.shape, dtype=bool)
    stale[:, :-1] = arrivals[:, :-1] > later_min[:, 1:]
    arrivals[stale] = np.inf
    arrivals.sort(axis=1)  # the kept ones are increasing already; dropped (inf) go last
    crash = sends[:, -1] + rng.uniform(0.0, INTERVAL, components)

    det = make_detector()
    ids = det.add_many(range(components), 0.0)
    mistakes = fed = 0
    for k in range(rounds):
        col = arrivals[:, k]
        got = np.isfinite(col)
        if not got.any():
            break
        _, dead = det.deadlines_all()
        if k:  # a first heartbeat is a join, never a mistake (its deadline is the join timeout's)
            mistakes += int(np.count_nonzero(col[got] >= dead[ids[got]]))
        det.heartbeat_many(ids[got], col[got])
        fed += int(got.sum())
    _, dead = det.deadlines_all()
    detection = dead[ids] - crash
    hours_total = components * (crash - phase).mean() / 3600.0
    return mistakes / hours_total, float(detection.mean()), fed


def run(components, hours, seed=2026):
    rows = []
    for sname, (_desc, delay, loss) in scenarios().items():
        for family, label, make in detectors():
            rate, det_time, fed = simulate(make, delay, loss, components=components,
                                           hours=hours, seed=seed)
            rows.append((sname, family, label, rate, det_time))
            print(f"{sname:13s} {label:26s} mistakes/h {rate:10.5f}  detection {det_time:6.3f} s",
                  file=sys.stderr)
    return rows


def markdown(rows, components, hours, elapsed):
    descs = {k: v[0] for k, v in scenarios().items()}
    lines = [
        "# Detection accuracy: mistakes against detection time",
        "",
        "Generated by `python benchmarks/detection_study.py` (deterministic, seed 2026; the",
        "detectors are fed explicit times, nothing sleeps). Each configuration watches",
        f"{components:,} components sending a heartbeat every {INTERVAL:g} s for {hours:g} h",
        f"({components * hours:,.0f} component-hours), then crashing at a uniform time within",
        f"the second after their last heartbeat. Run time {elapsed:.0f} s. A heartbeat that",
        "arrives after a later-sent one is dropped, as `faultkit.transport`'s receiver drops it",
        "by sequence number.",
        "",
        "- **false suspicions / h**: heartbeats from a healthy component that arrive at or after its",
        "  dead deadline as it stood just before them, per component-hour: every mistake however",
        "  short (Chen, Toueg and Aguilera's mistake rate). A monitor scanning every s seconds",
        "  reports only the mistakes that last longer than about s.",
        "- **detection**: mean time from the crash to the dead deadline left by the last heartbeat",
        "  (in-flight heartbeats sent before the crash count).",
        "",
        "Scenarios:",
        "",
    ]
    lines += [f"- **{k}**: {v}" for k, v in descs.items()]
    for sname in descs:
        lines += ["", f"## {sname}", "", "| detector | setting | false suspicions / h | detection (s) |",
                  "|---|---|---|---|"]
        for s, family, label, rate, det_time in rows:
            if s == sname:
                lines.append(f"| {family} | {label} | {rate:.4f} | {det_time:.2f} |")
    lines += [
        "",
        "## Reading the tables",
        "",
        "(Figures quoted below are from the run recorded here.)",
        "",
        "- **A fixed timeout's mistakes are the gaps longer than it.** With 1 s heartbeats, one",
        "  lost heartbeat makes a ~2 s gap, so timeouts of 1.5-2 s err about once per loss",
        "  (36 losses an hour at 1% loss, 360 at 10%); 3 s forgives one loss, 5 s two.",
        "- **Phi with no acceptable pause hugs the observed distribution**: its deadline is",
        "  mean + y* x std of the intervals, 0.6-2 s here, so up to threshold 8 about every loss",
        "  is a mistake; and Akka's rule of not learning an interval that ended after phi crossed",
        "  the threshold keeps those gaps out of the window, so it cannot adapt to them. Only",
        "  once y* x std covers a lost interval do such gaps enter the window and widen the",
        "  deadline (threshold 12 under 10% loss: 6.5 mistakes/h at 3.0 s, vs 17.8 at 2.6 s for",
        "  a 3 s timeout).",
        "- **Akka's 3 s acceptable pause is what makes phi accurate**: at its default threshold 8",
        "  it makes 0 / 0.0005 / 0.016 mistakes an hour (normal / heavy-tailed / lossy) at a",
        "  detection time of 4.6-5.7 s - about what a 5 s timeout achieves (0 / 0.0005 / 0.18 at",
        "  4.6 s). The difference is adaptation: phi's deadline grew by itself from 4.6 s to",
        "  5.7 s when loss went from 1% to 10% and made 12x fewer mistakes than the 5 s timeout",
        "  there, while a timeout must be tuned by hand for the worst network it will meet.",
        "- Heavy tails (infinite-variance delays) hurt the normal model of phi: with no pause it",
        "  needs threshold 12 to come near a 2-3 s timeout; with the pause, both detectors are",
        "  equivalent at equal detection time.",
        "",
    ]
    if (pathlib.Path(__file__).resolve().parent.parent / "docs" / "detection.png").exists():
        lines += ["![mistakes vs detection time](detection.png)", ""]
    return "\n".join(lines)


def plot(rows, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = list(scenarios())
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), sharey=True)
    for ax, sname in zip(axes, names):
        for family in dict.fromkeys(r[1] for r in rows):
            pts = sorted((r[4], r[3]) for r in rows if r[0] == sname and r[1] == family)
            ax.plot([p[0] for p in pts], [max(p[1], 1e-4) for p in pts], "o-", label=family)
        ax.set_yscale("log")
        ax.set_title(sname)
        ax.set_xlabel("mean detection time (s)")
    axes[0].set_ylabel("false suspicions per component-hour (floor 1e-4)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--components", type=int, default=1000)
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--quick", action="store_true", help="100 components, 0.1 h; print only")
    args = ap.parse_args(argv)
    if args.quick:
        args.components, args.hours = 100, 0.1
    t0 = time.perf_counter()
    rows = run(args.components, args.hours)
    elapsed = time.perf_counter() - t0
    if args.quick:
        return 0
    docs = pathlib.Path(__file__).resolve().parent.parent / "docs"
    plot(rows, docs / "detection.png")
    (docs / "detection.md").write_text(markdown(rows, args.components, args.hours, elapsed))
    print(f"wrote {docs / 'detection.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
