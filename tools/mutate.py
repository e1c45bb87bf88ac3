"""Mutation testing of faultkit's policy modules: do the tests notice a wrong line?

Usage (from a checkout with the extensions built in place)::

    python tools/mutate.py src/faultkit/contain/policy.py tests/contain/test_policy.py [--jobs 1]
    python tools/mutate.py --preset policies          # every module in PRESETS, its tests

Each mutant changes one operator or constant of the module (a comparison's
direction or strictness, ``and``/``or``, a dropped ``not``, ``+``/``-``, a
number off by one, ``True``/``False``, a returned value dropped),
the module's tests run against it (stopping at the first failure), and the
mutant is *killed* if they fail (or *caught by timeout* if they hang).  Mutants are
written into temporary copies of ``src/`` (the checkout's files are only read), but
the tests are read from the checkout as they run: edit them elsewhere (or run from a
copy of the checkout) during a long run.  Survivors are printed with their line, to be read: each is
either a missing test or an equivalent mutant (one no test could tell apart),
and docs/mutation.md lists the equivalent ones with the reason.
"""
from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import pathlib
import random
import shutil
import signal
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
import subprocess
import sys
import time
from typing import Iterator, List, Optional, Tuple

ROOT = pathlib.Path(__file__).resolve().parent.parent
_LIVE: set = set()        # pytest runs in flight (their process groups are killed on SIGTERM)
_STOP = threading.Event()  # set on SIGTERM/SIGINT: no new mutant starts

PRESETS = {
    "policies": [
        ("src/faultkit/contain/policy.py", ["tests/contain/test_policy.py", "tests/contain/test_domains.py",
                                            "tests/run/test_cluster.py"]),
        ("src/faultkit/cluster.py", ["tests/run/test_cluster.py", "tests/run/test_cluster_lifecycle.py",
                                     "tests/observe/test_observe_system.py"]),
        ("src/faultkit/recover/checkpointer.py", ["tests/recover/test_recover_checkpointer.py",
                                                  "tests/recover/test_recover_hardening.py",
                                                  "tests/recover/test_recover_recycle.py",
                                                  "tests/recover/test_recover_journal.py",
                                                  "tests/recover/test_recover_read_verified.py",
                                                  "tests/recover/test_recover_tracking.py",
                                                  "tests/recover/test_recover_objstore.py"]),
    ],
    "all": [],  # filled below: policies + contain
    "contain": [
        ("src/faultkit/contain/outlier.py", ["tests/contain/test_outlier.py", "tests/run/test_cluster.py"]),
        ("src/faultkit/contain/hedge.py", ["tests/contain/test_hedge_stack.py"]),
        ("src/faultkit/contain/bulkhead.py", ["tests/contain/test_bulkhead.py"]),
        ("src/faultkit/contain/timelimit.py", ["tests/contain/test_hedge_stack.py",
                                                "tests/contain/test_breaker_faults.py"]),
        ("src/faultkit/balance/bounded.py", ["tests/balance/test_balance.py"]),
        ("src/faultkit/balance/moves.py", ["tests/observe/test_observe_system.py"]),
        ("src/faultkit/recover/journal.py", ["tests/recover/test_recover_journal.py",
                                             "tests/recover/test_recover_journal_archive.py"]),
    ],
}
PRESETS["all"] = PRESETS["policies"] + PRESETS["contain"]

_SWAP_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
             ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In,
             ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_SWAP_BIN = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.FloorDiv: ast.Mult}


def mutants(source: str) -> Iterator[Tuple[int, str, str]]:
    """(line, description, mutated source) for each single-point mutation of ``source``."""
    tree = ast.parse(source)
    nodes = list(ast.walk(tree))
    for idx, node in enumerate(nodes):
        for desc, apply in _mutations(node):
            t2 = copy.deepcopy(tree)
            target = list(ast.walk(t2))[idx]
            apply(target)
            try:
                yield node.lineno, desc, ast.unparse(t2)
            except Exception:  # pragma: no cover - a mutation unparse cannot express
                continue


def _mutations(node: ast.AST):
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            new = _SWAP_CMP.get(type(op))
            if new:
                yield (f"{type(op).__name__} -> {new.__name__}",
                       lambda n, i=i, new=new: n.ops.__setitem__(i, new()))
    elif isinstance(node, ast.BoolOp):
        other = ast.Or if isinstance(node.op, ast.And) else ast.And
        yield f"{type(node.op).__name__} -> {other.__name__}", lambda n, o=other: setattr(n, "op", o())
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield "drop not", lambda n: (setattr(n, "op", ast.UAdd()), setattr(n, "operand", ast.Call(
            ast.Name("bool", ast.Load()), [n.operand], [])))
    elif isinstance(node, ast.BinOp) and type(node.op) in _SWAP_BIN:
        new = _SWAP_BIN[type(node.op)]
        yield f"{type(node.op).__name__} -> {new.__name__}", lambda n, new=new: setattr(n, "op", new())
    elif isinstance(node, ast.Constant) and type(node.value) is bool:
        yield f"{node.value} -> {not node.value}", lambda n: setattr(n, "value", not n.value)
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float) and not isinstance(node.value, bool):
        yield f"{node.value!r} -> {node.value + 1!r}", lambda n: setattr(n, "value", n.value + 1)
    elif (isinstance(node, ast.Return) and node.value is not None
          and not (isinstance(node.value, ast.Constant) and node.value.value is None)):
        yield "return value -> return None", lambda n: setattr(n, "value", None)


def run_one(src_root: pathlib.Path, tests: List[str], timeout: float, *, cwd: pathlib.Path = ROOT) -> str:
    """``"killed"`` if the tests fail, ``"timeout"`` if they hang, ``"survived"`` if they pass.

    ``src_root`` is the (mutated) copy of ``src/`` the tests import faultkit from."""
    env = dict(os.environ, PYTHONPATH=str(src_root), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                             "-m", "not slow", *tests], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    _LIVE.add(proc)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout"  # a mutant that hangs the tests is caught by them (counted apart)
    finally:
        _kill(proc)
    if _STOP.is_set():
        return "interrupted"
    return "killed" if proc.returncode != 0 else "survived"


def _kill(proc: subprocess.Popen) -> None:
    """Kill the pytest run ``proc`` and anything it started (its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    _LIVE.discard(proc)


def _on_signal(signum, frame):  # pragma: no cover - exercised by hand
    _STOP.set()
    for proc in list(_LIVE):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    raise KeyboardInterrupt


def _copy_src(tmp: pathlib.Path, n: int, root: pathlib.Path = ROOT) -> List[pathlib.Path]:
    """``n`` copies of ``src/`` (built extensions included, caches left out) under ``tmp``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.c", "*.cpp.o")
    roots = []
    for i in range(n):
        dst = tmp / f"w{i}" / "src"
        shutil.copytree(root / "src", dst, ignore=ignore)
        roots.append(dst)
    return roots


def mutate(module: str, tests: List[str], *, timeout: float, limit: int = 0,
           sample: int = 0, seed: int = 0, jobs: int = 1, root: pathlib.Path = ROOT,
           only: Optional[set] = None) -> dict:
    """Run every mutant of ``module`` (or a seeded sample of ``sample``) against ``tests``.

    Each mutant is written into one of ``jobs`` temporary copies of ``src/`` (restored
    after it); the working tree (``root``, default this checkout) is only read."""
    original = (root / module).read_text()
    rel = pathlib.Path(module).relative_to("src")
    todo = list(mutants(original))
    if sample and sample < len(todo):
        todo = sorted(random.Random(seed).sample(todo, sample))
    if only is not None:  # --recheck: just these (line, mutation) pairs
        todo = [m for m in todo if (m[0], m[1]) in only]
    if limit:
        todo = todo[:limit]
    result = {"module": module, "tests": tests, "mutants": len(todo), "killed": 0, "timeout": 0,
              "survivors": [], "timeouts": []}
    lock = threading.Lock()
    with tempfile.TemporaryDirectory(prefix="faultkit-mutate-") as tmp:
        free = _copy_src(pathlib.Path(tmp), max(1, jobs), root)
        t0 = time.monotonic()
        if run_one(free[0], tests, timeout, cwd=root) != "survived":  # the unmutated module
            raise RuntimeError(f"{module}: its tests {tests} fail (or hang) without a mutant")
        result["baseline_seconds"] = round(time.monotonic() - t0, 1)

        def one(item):
            line, desc, src = item
            if _STOP.is_set():
                return
            with lock:
                src_root = free.pop()
            try:
                (src_root / rel).write_text(src)
                verdict = run_one(src_root, tests, timeout, cwd=root)
            finally:
                (src_root / rel).write_text(original)
                with lock:
                    free.append(src_root)
            with lock:
                if verdict == "interrupted":
                    return
                if verdict == "survived":
                    result["survivors"].append({"line": line, "mutation": desc})
                    print(f"  survived: {module}:{line}: {desc}", flush=True)
                else:
                    result[verdict] += 1
                    if verdict == "timeout":
                        result["timeouts"].append({"line": line, "mutation": desc})

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            list(pool.map(one, todo))
    result["survivors"].sort(key=lambda d: d["line"])
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("module", nargs="?")
    ap.add_argument("tests", nargs="*")
    ap.add_argument("--preset", choices=sorted(PRESETS))
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant's test run")
    ap.add_argument("--limit", type=int, default=0, help="at most this many mutants per module (0: all)")
    ap.add_argument("--sample", type=int, default=0, help="a seeded random sample of this many per module")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recheck", type=pathlib.Path,
                    help="rerun only the survivors recorded in this results file (after adding tests)")
    ap.add_argument("--jobs", type=int, default=1, help="parallel workers, each with its own copy of src/")
    ap.add_argument("--json", type=pathlib.Path, help="write the results (survivors included) here")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    plan = PRESETS[args.preset] if args.preset else [(args.module, args.tests)]
    if not plan or not plan[0][0]:
        ap.error("give a module and its tests, or --preset")
    previous = {}
    if args.recheck:
        previous = {r["module"]: {(s["line"], s["mutation"]) for s in r["survivors"]}
                    for r in json.loads(args.recheck.read_text())}
        plan = [(m, t) for m, t in plan if m in previous]
    results = []
    for module, tests in plan:
        t0 = time.monotonic()
        r = mutate(module, tests, timeout=args.timeout, limit=args.limit, sample=0 if args.recheck else args.sample,
                   seed=args.seed, jobs=args.jobs, only=previous.get(module) if args.recheck else None)
        r["seconds"] = round(time.monotonic() - t0, 1)
        results.append(r)
        caught = r["killed"] + r["timeout"]
        print(f"{module}: {caught}/{r['mutants']} caught ({caught / max(r['mutants'], 1):.0%}; "
              f"{r['timeout']} by timeout) in {r['seconds']:.0f} s", flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    caught = sum(r["killed"] + r["timeout"] for r in results)
    total = sum(r["mutants"] for r in results)
    print(f"total: {caught}/{total} caught ({caught / max(total, 1):.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
