"""The public surface: __all__, the error tree, and the .pyi stubs of the extension modules."""
import ast
import importlib
import pathlib

import pytest

import faultkit as fk

PKG = pathlib.Path(fk.__file__).parent
EXTENSIONS = sorted(
    ".".join(p.relative_to(PKG).with_name(p.name.split(".")[0]).parts) for p in PKG.rglob("*.so")
) or ["_common.xxh3"]


def test_all_names_exist():
    for name in fk.__all__:
        assert hasattr(fk, name), name


def test_errors_derive_from_base():
    for name in fk.__all__:
        obj = getattr(fk, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, fk.FaultkitError), name


@pytest.mark.parametrize("module", EXTENSIONS)
def test_stub_matches_extension(module):
    stub = PKG / (module.replace(".", "/") + ".pyi")
    assert stub.exists(), f"{module} has no .pyi stub"
    tree = ast.parse(stub.read_text())
    stubbed = {  # private base classes may appear in a stub to share declarations
        n.name for n in tree.body
        if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")
    }
    mod = importlib.import_module(f"faultkit.{module}")
    public = {
        n for n in dir(mod)
        if not n.startswith("_") and (callable(getattr(mod, n))) and getattr(getattr(mod, n), "__module__", None) == mod.__name__
    }
    assert public == stubbed


def test_py_typed_marker_ships():
    assert (PKG / "py.typed").exists()
