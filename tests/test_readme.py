"""The README's two set-up commands stay true: CI runs the test command verbatim."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


@pytest.mark.skipif(not README.exists(), reason="needs the source checkout")
def test_ci_runs_the_readme_test_command_verbatim():
    blocks = re.findall(r"```sh\n(.*?)\n```", README.read_text(), re.S)
    demo, tests = blocks[0], blocks[1]
    assert "faultkit demo" in demo and "pytest" in tests
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()
