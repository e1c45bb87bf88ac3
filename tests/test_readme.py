"""The README stays true: CI runs its test command verbatim, every Python example runs, and
what an example says a line returns or prints is what it returns or prints.

Convention for expected output in a ```python block: a trailing comment ``# -> EXPECTED``
on an expression statement.  EXPECTED is compared with ``repr()`` of the statement's value,
or, for a ``print(...)`` call, with the text it prints (without the newline); several
expression statements on one line compare with their values joined by ``", "``.  ``…``
(U+2026) in EXPECTED matches any text: the explicit wildcard for what varies between runs or
machines (times, sizes, a node chosen by hashing, the digits after a rounded float).
EXPECTED ends where the match ends, before a space, ``:``, ``;`` or ``,``; the rest of the
comment is prose.  Comment-only lines right below, with their ``#`` in the same column,
continue EXPECTED (joined with one space).  An annotation on a line that is not an expression
statement, or that never runs, fails the test.
"""
import ast
import io
import pathlib
import re
import tokenize

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
pytestmark = pytest.mark.skipif(not README.exists(), reason="needs the source checkout")


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)\n```", README.read_text(), re.S) if README.exists() else []


def _python_examples():
    """(section title, code) of every ```python block, named by the heading above it."""
    text = README.read_text() if README.exists() else ""
    out = []
    for m in re.finditer(r"```python\n(.*?)\n```", text, re.S):
        heads = re.findall(r"^#+ (.+)$", text[: m.start()], re.M)
        out.append((heads[-1] if heads else "top", m.group(1)))
    return out


def test_ci_runs_the_readme_test_command_verbatim():
    demo, tests = _blocks("sh")[:2]
    assert "faultkit demo" in demo and "pytest" in tests
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()


WILDCARD = "\u2026"  # …


def _annotations(code: str) -> "dict[int, str]":
    """{line: EXPECTED} of every ``# -> EXPECTED`` comment in code, continuations joined."""
    lines = code.splitlines()
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type != tokenize.COMMENT or not tok.string[1:].strip().startswith("-> "):
            continue
        (row, col), expected = tok.start, tok.string[1:].strip()[3:]
        nxt = row  # lines are 1-based: lines[nxt] is the line below row
        while nxt < len(lines) and lines[nxt][:col].strip() == "" and lines[nxt][col:col + 1] == "#":
            expected += " " + lines[nxt][col + 1:].strip()
            nxt += 1
        out[row] = expected
    return out


def _matches(expected: str, actual: str) -> bool:
    """True if a prefix of expected, ending at its end or before one of ' :;,', matches actual
    in full, with the wildcard standing for any text."""
    for k in range(1, len(expected) + 1):
        if k < len(expected) and expected[k] not in " :;,":
            continue
        pattern = ".*".join(re.escape(part) for part in expected[:k].split(WILDCARD))
        if re.fullmatch(pattern, actual, re.S):
            return True
    return False


class _Instrument(ast.NodeTransformer):
    """Wraps every annotated expression statement so its value (or printed text) is recorded."""

    def __init__(self, rows):
        self.rows = rows

    def visit_Expr(self, node):
        if node.lineno not in self.rows:
            return node
        where = [ast.Constant(node.lineno), ast.Constant(node.col_offset)]
        value = node.value
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "print":
            call = ast.Call(ast.Name("__readme_print__", ast.Load()), where + value.args, value.keywords)
        else:
            call = ast.Call(ast.Name("__readme_value__", ast.Load()), [*where, value], [])
        return ast.copy_location(ast.Expr(call), node)


def _run_checked(code: str, filename: str) -> int:
    """Executes code, checking each ``# -> `` annotation; returns how many were checked."""
    expected = _annotations(code)
    seen: "dict[int, dict[int, str]]" = {}

    def value(row, col, v):
        seen.setdefault(row, {})[col] = repr(v)
        return v

    def printed(row, col, *args, **kwargs):
        buf = io.StringIO()
        print(*args, **{**kwargs, "file": buf})
        print(*args, **kwargs)
        seen.setdefault(row, {})[col] = buf.getvalue().rstrip("\n")

    tree = ast.fix_missing_locations(_Instrument(set(expected)).visit(ast.parse(code)))
    exec(compile(tree, filename, "exec"), {"__readme_value__": value, "__readme_print__": printed})
    for row, want in sorted(expected.items()):
        assert row in seen, f"{filename} line {row}: '# -> {want}' is not on an expression statement that ran"
        got = ", ".join(v for _, v in sorted(seen[row].items()))
        shown = got if len(got) <= 400 else got[:300] + " ... " + got[-80:]
        assert _matches(want, got), f"{filename} line {row}: the README says {want!r}, the code gives {shown!r}"
    return len(expected)


def test_the_output_checker_checks():
    # The checker itself: a wrong value, a misplaced annotation and a rounded float.
    assert _matches("0.301\u2026: prose", "0.30102999566398125")
    assert not _matches("0.302\u2026: prose", "0.30102999566398125")
    assert _matches("'cache-\u2026': prose", "'cache-7'") and not _matches("'cache-\u2026'", "'cash-7'")
    assert _matches("0, 1 (prose)", "0, 1") and not _matches("0, 12", "0, 1")
    assert _matches("{'a': 1}; prose", "{'a': 1}") and not _matches("[1] prose", "[1, 2]")
    assert _run_checked("x = [1]\nx  # -> [1]\nprint(*x, 2)  # -> 1 2: printed\n1; 2  # -> 1, 2\n", "t") == 3
    with pytest.raises(AssertionError, match="the README says '\\[2\\]', the code gives '\\[1\\]'"):
        _run_checked("[1]  # -> [2]\n", "t")
    with pytest.raises(AssertionError, match="not on an expression statement"):
        _run_checked("x = 1  # -> 1\n", "t")
    with pytest.raises(AssertionError, match="the README says \"\\[Event\\('a'\\), Event\\('b'\\)\\]\""):
        _run_checked("['E(a)']  # -> [Event('a'),\n          # Event('b')]\n", "t")


def test_the_readme_annotates_its_outputs():
    # The examples state their results, and the checker finds those statements.
    assert sum(len(_annotations(code)) for _, code in _python_examples()) >= 15


@pytest.mark.parametrize("section,code", _python_examples(), ids=[t for t, _ in _python_examples()])
def test_readme_example_runs(section, code, tmp_path, monkeypatch):
    import faultkit.recover

    monkeypatch.chdir(tmp_path)  # examples that write files (checkpoints) write here
    try:
        _run_checked(code, f"README.md ({section})")
    finally:
        # The Recover example registers complex; leave the registry as other tests expect it.
        try:
            faultkit.recover.unregister_type(complex)
        except KeyError:
            pass


@pytest.mark.slow
def test_readme_examples_pass_mypy_strict(tmp_path):
    # The library is typed well enough that its documented use checks under --strict.
    pytest.importorskip("mypy")
    import subprocess
    import sys

    import faultkit

    for i, (_, code) in enumerate(_python_examples()):
        (tmp_path / f"example_{i}.py").write_text(code + "\n")
    env = None
    pkg = pathlib.Path(faultkit.__file__).resolve().parent
    if "site-packages" not in pkg.parts:
        import os

        env = dict(os.environ, MYPYPATH=str(pkg.parent))
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           *sorted(p.name for p in tmp_path.glob("example_*.py"))],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_headline_block_is_generated_from_the_recorded_run():
    # The README's ratios are never typed by hand: tools/headlines.py writes them from
    # the committed bench run, and this fails if the two drift apart.
    import json
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import headlines
    finally:
        sys.path.pop(0)
    doc = json.loads((ROOT / "docs" / "bench-quick.json").read_text())
    assert headlines.render(README.read_text(), doc) == README.read_text()
