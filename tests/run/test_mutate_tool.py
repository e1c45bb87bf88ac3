"""tools/mutate.py itself: it mutates a toy module in a copy of the tree, runs the toy's
tests against each mutant, and tells a killed mutant from a surviving one."""
import importlib.util
import pathlib

import pytest

TOOL = pathlib.Path(__file__).resolve().parents[2] / "tools" / "mutate.py"

TOY = '''def clamp(x, hi):
    if x > hi:
        return hi
    return x
'''
TOY_TEST = '''from toy import clamp


def test_clamp():
    assert clamp(5, 3) == 3
    assert clamp(1, 3) == 1
'''


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("faultkit_mutate_tool", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mutants_are_single_point_changes(tool):
    found = {(line, desc) for line, desc, _ in tool.mutants(TOY)}
    assert found == {(2, "Gt -> GtE"), (3, "return value -> return None"), (4, "return value -> return None")}


@pytest.mark.slow  # three pytest runs in subprocesses
def test_killed_and_surviving_mutants_reported_and_tree_untouched(tool, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "toy.py").write_text(TOY)
    (tmp_path / "test_toy.py").write_text(TOY_TEST)
    result = tool.mutate("src/toy.py", ["test_toy.py"], timeout=60, jobs=2, root=tmp_path)
    assert result["mutants"] == 3
    assert result["killed"] == 2 and result["timeout"] == 0
    # x >= hi returns hi == x at the boundary: equivalent, and the tool must say it survived
    assert result["survivors"] == [{"line": 2, "mutation": "Gt -> GtE"}]
    assert (tmp_path / "src" / "toy.py").read_text() == TOY  # mutants went to copies only


@pytest.mark.slow  # waits out a 4 s per-mutant timeout
def test_hanging_mutant_counted_as_timeout(tool, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "toy.py").write_text("def stop():\n    return True\n")
    (tmp_path / "test_toy.py").write_text(
        "from toy import stop\n\n\ndef test_loop():\n    while not stop():\n        pass\n")
    result = tool.mutate("src/toy.py", ["test_toy.py"], timeout=4, jobs=2, root=tmp_path)
    # both mutants (True -> False, return None) make stop() falsy: the test loops forever
    assert result["mutants"] == 2 and result["timeout"] == 2 and result["killed"] == 0
    assert result["survivors"] == []
    assert sorted(d["mutation"] for d in result["timeouts"]) == ["True -> False", "return value -> return None"]
