"""Write the README's headline ratios from a recorded ``faultkit bench --json`` run.

Usage::

    faultkit bench --json --plot docs/bench.png > docs/bench.json
    python tools/headlines.py docs/bench.json            # rewrites README.md's block in place
    python tools/headlines.py docs/bench.json --check    # exit 1 if the README differs

The block between ``<!-- headlines:begin -->`` and ``<!-- headlines:end -->``
is generated, never typed: one row per comparison, its configuration, the
ratio by minima and by medians, and the spread of the per-round ratios
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
    head = (f"Recorded {doc['when']} on Python {doc['python']} ({doc['machine']}), scale {doc['scale']:g}, "
            f"{doc['rounds']} interleaved rounds a side; ratio = peer time / faultkit time (above 1: faultkit "
            "is faster), by minima and by medians; spread = max/min of the per-round ratios. "
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=pathlib.Path, help="a faultkit bench --json file")
    ap.add_argument("--readme", type=pathlib.Path, default=ROOT / "README.md")
    ap.add_argument("--check", action="store_true", help="only check that the README matches")
    args = ap.parse_args(argv)
    doc = json.loads(args.run.read_text())
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
