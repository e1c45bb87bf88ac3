"""What the demo shows: the live progress line, the final timeline and tables, the JSON report
and the plot."""
from __future__ import annotations

import sys
import time
from typing import Any, Optional

from faultkit.demo.faults import KINDS, detection


class Progress:
    """One line refreshed in place on a terminal; plain lines every few seconds otherwise."""

    def __init__(self, stream: Any = sys.stdout) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.every = 0.5 if self.tty else 5.0
        self.t0 = time.monotonic()
        self._open = False

    def say(self, text: str) -> None:
        self.done()
        print(text, file=self.stream, flush=True)

    def line(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
            self._open = True
        else:
            print(text, file=self.stream, flush=True)

    def done(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def progress_text(t: float, load: Any, router: Any, faults: list) -> str:
    w = sum(s.writes for s in load.seconds)
    we = sum(s.write_errors for s in load.seconds)
    r = sum(s.reads for s in load.seconds)
    re_ = sum(s.read_errors for s in load.seconds)
    st = sum(s.stale for s in load.seconds)
    ins = sum(1 for x in router.layout.names if router.in_sync(x))
    done = sum(1 for f in faults if f.injected is not None)
    return (f"t={t:5.1f}s  writes acked {w} (failed {we})  reads {r} (failed {re_}, stale {st})  "
            f"in sync {ins}/{len(router.layout.names)}  faults {done}/{len(faults)}")


def _pct(xs: list, q: float) -> Optional[float]:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _dash(x: Any) -> Any:
    return "-" if x is None else x


def _ms(x: Optional[float]) -> Optional[float]:
    return None if x is None else round(1000 * x, 2)


def build(opts: Any, layout: Any, node: Any, router: Any, load: Any, faults: list, timeline: list,
          t0: float, verdict: dict, audit: dict, settled: float) -> dict:
    """The machine-readable report (``--json``); :func:`text` and :func:`plot` read it."""
    rel = lambda t: None if t is None else round(t - t0, 3)
    series = [{"t": i, "writes": s.writes, "write_errors": s.write_errors, "reads": s.reads,
               "read_errors": s.read_errors, "stale_reads": s.stale,
               "p50_ms": _ms(_pct(s.lat, 0.5)), "p99_ms": _ms(_pct(s.lat, 0.99))}
              for i, s in enumerate(load.seconds)]
    fl = []
    for f in faults:
        d = detection(f)
        first_by: dict = {}
        for t, _w, what in f.signals:
            first_by.setdefault(what, round(t - f.injected, 3))
        rec = [r for t, w, r in router.recoveries if w in f.workers and t >= f.injected
               and (f.routable is None or t <= f.routable + 0.5)]
        fl.append({"recovered": rec, "kind": f.kind, "what": KINDS[f.kind], "target": f.target, "workers": f.workers,
                   "at": rel(f.injected), "restarted_at": rel(f.restarted),
                   "detected_at": rel(d[0]) if d else None,
                   "detection_s": round(d[0] - f.injected, 3) if d else None,
                   "detected_by": d[2] if d else None, "signals": first_by,
                   "keys_moved": f.keys_moved, "routable_at": rel(f.routable),
                   "routable_after_s": round(f.routable - f.injected, 3) if f.routable else None,
                   "damaged": f.damaged})
    # Phases: before the first fault, then from each fault to the next, then the tail.
    cuts = [0.0] + [f.injected - t0 for f in faults if f.injected is not None] + [len(series)]
    names = ["steady"] + [f"{f.kind} {f.target}" for f in faults if f.injected is not None]
    phases = []
    for name, a, b in zip(names, cuts, cuts[1:]):
        rows = [s for s in load.seconds[int(a):max(int(a) + 1, int(b))]]
        span = max(1, len(rows))
        lat = [x for s in rows for x in s.lat]
        phases.append({"phase": name, "from_s": round(a, 1), "to_s": round(b, 1),
                       "writes": sum(s.writes for s in rows), "write_errors": sum(s.write_errors for s in rows),
                       "reads": sum(s.reads for s in rows), "read_errors": sum(s.read_errors for s in rows),
                       "stale_reads": sum(s.stale for s in rows),
                       "ops_per_s": round(sum(s.writes + s.reads for s in rows) / span, 1),
                       "p50_ms": _ms(_pct(lat, 0.5)), "p99_ms": _ms(_pct(lat, 0.99))})
    total = lambda k: sum(getattr(s, k) for s in load.seconds)
    return {
        "acknowledged_writes": total("writes"),
        "keys_with_acknowledged_writes": len(load.acked),
        "lost_acknowledged_writes": verdict["lost"],
        "lost_keys": verdict["lost_keys"],
        "read_back": {"last_acknowledged": verdict["ok"], "newer_unacknowledged": verdict["newer"]},
        "failed_writes": total("write_errors"), "reads": total("reads"), "failed_reads": total("read_errors"),
        "stale_reads": total("stale"), "wrong_values": load.bad_values, "shed": load.shed,
        "audit": audit, "faults": fl, "phases": phases, "series": series,
        "timeline": [[rel(t), w, what] for t, w, what in timeline],
        "settle_s": round(settled, 2), "router": dict(router.stats, hedge_delay_ms=_ms(router.hedge.current_delay())),
        "options": {k: getattr(opts, k) for k in ("workers", "racks", "duration", "rate", "faults", "detector",
                                                  "interval", "membership", "store", "keys", "seed",
                                                  "unsafe", "netns")},
        "detection_bound_s": round(node.detection_bound, 3),
    }


def text(r: dict) -> str:
    """The human report: timeline, phases, verdict."""
    out = ["", "Faults (times in s from the start of the load; detection and routable-again after the injection):"]
    out.append(f"  {'fault':<13}{'at':>7}  {'detected by':<22}{'after':>7}  {'keys moved':>10}  {'routable after':>14}")
    for f in r["faults"]:
        name = f"{f['kind']} {f['target']}"
        det = f["detected_by"] or "NOT DETECTED"
        after = f"{f['detection_s']:.2f}" if f["detection_s"] is not None else "-"
        back = f"{f['routable_after_s']:.2f}" if f["routable_after_s"] is not None else "-"
        out.append(f"  {name:<13}{f['at']:>7.2f}  {det:<22}{after:>7}  {f['keys_moved']:>10}  {back:>14}")
        sig = ", ".join(f"{k} +{v:.2f}" for k, v in sorted(f["signals"].items(), key=lambda kv: kv[1]))
        out.append(f"  {'':<13}{'':>7}  signals: {sig or '-'}")
        if f.get("damaged"):
            out.append(f"  {'':<13}{'':>7}  damaged on disk: {'; '.join(f['damaged'])}")
        for rec in f.get("recovered", []):
            r_, s_ = rec.get("recovered") or {}, rec.get("synced") or {}
            skipped = r_.get("damage") or []
            out.append(f"  {'':<13}{'':>7}  restarted with checkpoint {r_.get('checkpoint')} + {r_.get('records')} "
                       f"journal records ({r_.get('keys')} keys)"
                       + (f", skipping what failed its checksum ({len(skipped)} warnings)" if skipped else "")
                       + f", then pulled {s_.get('pulled')} newer entries from its peers"
                       + (" (all of them: it may have lost acknowledged writes)" if skipped else ""))
    out += ["", "Phases:",
            f"  {'phase':<14}{'from':>6}{'to':>6}{'ops/s':>8}{'writes':>8}{'failed':>7}{'reads':>8}{'failed':>7}"
            f"{'stale':>6}{'p50 ms':>8}{'p99 ms':>8}"]
    for p in r["phases"]:
        out.append(f"  {p['phase']:<14}{p['from_s']:>6.1f}{p['to_s']:>6.1f}{p['ops_per_s']:>8.1f}{p['writes']:>8}"
                   f"{p['write_errors']:>7}{p['reads']:>8}{p['read_errors']:>7}{p['stale_reads']:>6}"
                   f"{_dash(p['p50_ms']):>8}{_dash(p['p99_ms']):>8}")
    a = r["audit"]["replicas_holding_each_acknowledged_write"]
    out += ["", f"acknowledged writes: {r['acknowledged_writes']} ({r['keys_with_acknowledged_writes']} keys); "
            f"failed writes (never acknowledged): {r['failed_writes']}; reads: {r['reads']} "
            f"(failed {r['failed_reads']}, stale {r['stale_reads']}, wrong value {r['wrong_values']})",
            f"read back: {r['read_back']['last_acknowledged']} keys at their last acknowledged write, "
            f"{r['read_back']['newer_unacknowledged']} at a later unacknowledged one; replicas holding each: "
            + ", ".join(f"{k}: {v}" for k, v in sorted(a.items(), key=lambda kv: -int(kv[0]))),
            *[f"UNEXPECTED: {u['worker']} exited with status {u['status']} at {u['at']:.2f} s (restarted); "
              f"its log ends: {u['log_tail'][-300:]!r}" for u in r.get("unexpected_exits", [])],
            f"wall time {r.get('wall_seconds', 0):.1f} s; worker processes left running: "
            f"{len(r.get('leftover_processes', []))}",
            f"lost acknowledged writes: {r['lost_acknowledged_writes']}"]
    return "\n".join(out)


def plot(r: dict, path: str) -> None:
    """Throughput and latency per second with the faults marked (needs matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = r["series"]
    t = [x["t"] + 0.5 for x in s]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 5.2), sharex=True, dpi=80)
    ax1.plot(t, [x["writes"] for x in s], label="writes acknowledged/s", color="tab:blue")
    ax1.plot(t, [x["reads"] for x in s], label="reads/s", color="tab:green")
    ax1.plot(t, [x["write_errors"] + x["read_errors"] for x in s], label="failed ops/s", color="tab:red")
    ax1.set_ylabel("operations / s")
    ax1.legend(loc="lower left", fontsize=8, ncol=3)
    ax2.plot(t, [x["p50_ms"] for x in s], label="p50", color="tab:purple")
    ax2.plot(t, [x["p99_ms"] for x in s], label="p99", color="tab:orange")
    ax2.set_yscale("log")
    ax2.set_ylabel("latency, ms")
    ax2.set_xlabel("seconds of load")
    ax2.legend(loc="upper left", fontsize=8)
    for f in r["faults"]:
        for ax in (ax1, ax2):
            ax.axvline(f["at"], color="black", lw=0.8, ls="--")
            if f["routable_at"] is not None:
                ax.axvspan(f["at"], f["routable_at"], color="grey", alpha=0.12)
        ax1.annotate(f"{f['kind']} {f['target']}", (f["at"], 1.0), xycoords=("data", "axes fraction"),
                     fontsize=8, rotation=0, va="bottom", ha="left")
    fig.suptitle(f"faultkit demo: {r['acknowledged_writes']} acknowledged writes, "
                 f"lost acknowledged writes: {r['lost_acknowledged_writes']}\n"
                 "dashed: a fault injected; shaded: until its workers were routable and in sync again", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
