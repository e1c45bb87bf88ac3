"""The README stays true: CI runs its test command verbatim, and every Python example runs."""
import pathlib
import re

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


@pytest.mark.parametrize("section,code", _python_examples(), ids=[t for t, _ in _python_examples()])
def test_readme_example_runs(section, code, tmp_path, monkeypatch):
    import faultkit.recover

    monkeypatch.chdir(tmp_path)  # examples that write files (checkpoints) write here
    try:
        exec(compile(code, f"README.md ({section})", "exec"), {})
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
