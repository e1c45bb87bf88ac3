"""House style holds: ruff's configuration (pyproject.toml) passes over the code."""
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not (ROOT / "pyproject.toml").exists() or not (ROOT / "src").exists(),
                                reason="needs the source checkout")


def test_ruff_passes():
    ruff = shutil.which("ruff") or str(pathlib.Path(sys.executable).parent / "ruff")
    if not pathlib.Path(ruff).exists():
        pytest.skip("ruff is not installed")
    proc = subprocess.run([ruff, "check", "--no-cache", "src", "tests", "benchmarks", "tools"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# Exceptions that report a bad argument: a test expecting one must say which (match=),
# or it passes when the call fails for any other reason of the same type.
ARGUMENT_ERRORS = {"TypeError", "ValueError", "OverflowError", "KeyError", "IndexError", "LookupError",
                   "UnicodeError", "UnicodeEncodeError", "UnicodeDecodeError", "BufferError"}
# (test file, enclosing function, exception) that genuinely cannot name the bad value, with
# the reason.  Empty: every one can.
RAISES_WITHOUT_MATCH_ALLOWED: "dict[tuple[str, str, str], str]" = {}


def _raises_without_match(tree):
    """(line, function, exception source) of each pytest.raises(<argument error>) without match=.

    An argument error is a name in ARGUMENT_ERRORS (or a tuple holding one), or a lower-case
    variable (a parametrized ``error``), which may hold one."""
    import ast

    def is_arg_error(node):
        if isinstance(node, ast.Tuple):
            return any(is_arg_error(e) for e in node.elts)
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
        return name in ARGUMENT_ERRORS or (isinstance(node, ast.Name) and name[:1].islower())

    out = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            f = node.func
            if not ((isinstance(f, ast.Attribute) and f.attr == "raises" and isinstance(f.value, ast.Name)
                     and f.value.id == "pytest") or (isinstance(f, ast.Name) and f.id == "raises")):
                continue
            if any(k.arg == "match" for k in node.keywords) or not is_arg_error(node.args[0]):
                continue
            out.append((node.lineno, fn.name, ast.unparse(node.args[0])))
    return out


def test_every_bad_argument_test_names_the_message_it_expects():
    import ast

    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for line, fn, exc in _raises_without_match(ast.parse(path.read_text(), str(path))):
            if (rel, fn, exc) not in RAISES_WITHOUT_MATCH_ALLOWED:
                found.append(f"{rel}:{line} in {fn}: pytest.raises({exc}) without match=")
    assert not found, "\n".join(found)


def test_the_match_guard_finds_what_it_should():
    import ast

    src = '''
def test_a(error):
    with pytest.raises(ValueError): f()
    with pytest.raises((KeyError, OSError)): f()
    with pytest.raises(error): f()
    with pytest.raises(ValueError, match="x 3"): f()
    with pytest.raises(fk.CorruptCheckpointError): f()
    with pytest.raises(Boom): f()
'''
    assert [(line, exc) for line, _, exc in _raises_without_match(ast.parse(src))] == [
        (3, "ValueError"), (4, "(KeyError, OSError)"), (5, "error")]
