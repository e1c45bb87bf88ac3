"""The source distribution builds anywhere: it holds every file the build reads
and every file the tests need (a wheel is built from it in CI)."""
import os
import pathlib
import subprocess
import sys
import tarfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
NEEDED_DIRS = ("csrc", "src", "tests", "benchmarks")
NEEDED_FILES = ("setup.py", "pyproject.toml", "MANIFEST.in", "LICENSE", "README.md")
pytestmark = pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the git checkout")


def _tracked():
    out = subprocess.run(["git", "ls-files", *NEEDED_DIRS, *NEEDED_FILES], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    return {p for p in out if (ROOT / p).exists()}


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    given = os.environ.get("FAULTKIT_SDIST")
    if given:
        return pathlib.Path(given)
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("sdist")
    subprocess.run([sys.executable, "-m", "build", "--sdist", "-o", str(out), str(ROOT)],
                   check=True, capture_output=True)
    return next(out.glob("faultkit-*.tar.gz"))


def test_sdist_holds_every_tracked_source_and_test(sdist):
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    missing = sorted(_tracked() - names)
    assert not missing, f"{len(missing)} files missing from {sdist.name}: {missing[:20]}"


def test_sdist_carries_no_build_products(sdist):
    with tarfile.open(sdist) as tar:
        bad = [n for n in tar.getnames() if n.endswith((".so", ".o", ".pyc")) or "/build/" in n]
    assert not bad, bad
