"""Write the README's headline ratios from a recorded ``faultkit bench --json`` run.

Usage::

    faultkit bench --json --plot docs/bench.png > docs/bench.json
    python tools/headlines.py docs/bench.json            # rewrites README.md's block in place
    python tools/headlines.py docs/bench.json --check    # exit 1 if the README differs
    python tools/headlines.py docs/bench.json --compare again.json
        # is each ratio of a later run within the recorded run's spread?  exit 1 if not

The block between ``<!-- headlines:begin -->`` and ``<!-- headlines:end -->``
is generated, never typed: one row per comparison, its configuration, the
ratio by minima and by medians, and the spread (max/min of the ratios of repeated
runs, from ``faultkit bench --repeat K``; of the per-round ratios for a single run)
(max/min), with the run's date, Python and scale above it.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- headlines:begin -->", "<!-- headlines:end -->"


def table(doc: dict) -> str:
    """The markdown block for one recorded run."""
    repeat = doc.get("repeat", 1)
    load = doc.get("loadavg")
    runs = (f", {repeat} runs (each ratio the median over the runs; spread = max/min of the runs' ratios)"
            if repeat > 1 else "; spread = max/min of the per-round ratios")
    head = (f"Recorded {doc['when']} on Python {doc['python']} ({doc['machine']}), scale {doc['scale']:g}, "
            f"{doc['rounds']} interleaved rounds a side{runs}"
            + (f", load average {load[0]:g}" if load else "") + ". "
            "Ratio = peer time / faultkit time (above 1: faultkit is faster), by minima and by medians. "
            "GC \"charged\": each side pays the collections its allocations make due; \"off\": "
            "the collector is off for everyone.")
    lines = [head, "", "| pillar | case | against | GC | ratio | (median) | spread |", "|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        gc = "" if r["gc"] == "natural" else r["gc"]
        case = r["case"] + (f" ({r['config']})" if r["config"] else "")
        lines.append(f"| {r['pillar']} | {case} | {r['peer']} | {gc} | {r['ratio']:.3g}x | "
                     f"{r['ratio_median']:.3g}x | {r['spread']:.2f} |")
    return "\n".join(lines)


def render(readme: str, doc: dict) -> str:
    """``readme`` with its headline block replaced by the table of ``doc``."""
    if BEGIN not in readme or END not in readme:
        raise ValueError(f"README has no {BEGIN} ... {END} block")
    a = readme.index(BEGIN) + len(BEGIN)
    b = readme.index(END)
    return readme[:a] + "\n" + table(doc) + "\n" + readme[b:]


def _key(row: dict) -> tuple:
    return (row["pillar"], row["case"], row["peer"], row["gc"])


def compare(recorded: dict, again: dict) -> tuple[list[str], int]:
    """Lines comparing ``again``'s ratios with ``recorded``'s, and how many fall outside.

    A re-measured ratio is *within* the recorded spread when it lies in
    ``[ratio / spread, ratio * spread]``: the recorded ratios (of its repeated runs,
    or of its rounds) span a factor ``spread`` around ``ratio``, so a ratio outside
    that band is more than the noise the recording saw."""
    later = {_key(r): r for r in again["rows"]}
    lines, outside = [], 0
    for r in recorded["rows"]:
        a = later.get(_key(r))
        if a is None:
            lines.append(f"missing  {r['case']} vs {r['peer']} ({r['gc']})")
            outside += 1
            continue
        lo, hi = r["ratio"] / r["spread"], r["ratio"] * r["spread"]
        ok = lo <= a["ratio"] <= hi
        outside += not ok
        lines.append(f"{'within ' if ok else 'OUTSIDE'}  {a['ratio']:8.3g}x in [{lo:.3g}, {hi:.3g}]  "
                     f"{r['case']} vs {r['peer']}{'' if r['gc'] == 'natural' else ' (GC ' + r['gc'] + ')'}")
    return lines, outside


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=pathlib.Path, help="a faultkit bench --json file")
    ap.add_argument("--readme", type=pathlib.Path, default=ROOT / "README.md")
    ap.add_argument("--check", action="store_true", help="only check that the README matches")
    ap.add_argument("--compare", type=pathlib.Path, metavar="LATER",
                    help="a later faultkit bench --json run: is each ratio within the recorded spread?")
    args = ap.parse_args(argv)
    doc = json.loads(args.run.read_text())
    if args.compare is not None:
        lines, outside = compare(doc, json.loads(args.compare.read_text()))
        print("\n".join(lines))
        print(f"{len(lines) - outside} of {len(lines)} within the recorded spread")
        return 1 if outside else 0
    old = args.readme.read_text()
    new = render(old, doc)
    if args.check:
        if new != old:
            print(f"{args.readme}: headline block differs from {args.run}", file=sys.stderr)
            return 1
        return 0
    args.readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
