"""The .pyi stubs of the extension modules match the modules: mypy's stubtest
compares every name, signature and class of each stub with the compiled module."""
import os
import pathlib
import subprocess
import sys

import pytest

import faultkit as fk

PKG = pathlib.Path(fk.__file__).parent
ALLOWLIST = pathlib.Path(__file__).parent / "support" / "stubtest_allowlist.txt"
MODULES = sorted(
    "faultkit." + ".".join(p.relative_to(PKG).with_name(p.name.split(".")[0]).parts)
    for p in PKG.rglob("*.so")
)


@pytest.mark.skipif(not MODULES, reason="no compiled extension modules found")
def test_stubtest_finds_no_drift(tmp_path):
    pytest.importorskip("mypy.stubtest")
    env = dict(os.environ)
    if "site-packages" not in PKG.parts:  # a source tree; an installed, typed package mypy finds itself
        env["MYPYPATH"] = str(PKG.parent)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "--concise", "--allowlist", str(ALLOWLIST),
         "--ignore-disjoint-bases", *MODULES],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
