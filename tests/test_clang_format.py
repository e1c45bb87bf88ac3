"""csrc/ follows the repository's .clang-format: `clang-format --dry-run
--Werror` finds nothing to change.  Skipped where clang-format is not
installed (CI installs it: .ci/run)."""
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc" / "faultkit"
# Every pillar of csrc/.
FORMATTED = ["common", "balance", "detect", "contain", "recover"]


def sources():
    return sorted(p for d in FORMATTED for p in (CSRC / d).iterdir() if p.suffix in (".h", ".cc"))


@pytest.mark.skipif(shutil.which("clang-format") is None, reason="clang-format is not installed")
@pytest.mark.skipif(not CSRC.is_dir(), reason="not run from a source checkout (no csrc/)")
def test_csrc_is_clang_formatted():
    files = sources()
    assert files, "no C++ sources found under csrc/faultkit"
    proc = subprocess.run(["clang-format", "--dry-run", "--Werror", *map(str, files)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
