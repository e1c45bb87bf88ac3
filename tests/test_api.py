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


# Every name the old flat modules exported (before the per-pillar packages) stays
# importable from its old path, so no user code breaks.
OLD_ALL = {
    "faultkit.ring": ["HashRing", "Rendezvous", "Maglev", "jump_hash", "MAGLEV_TABLE_SIZE",
                      "BoundedLoad", "moved_fraction", "DEFAULT_BALANCE_FACTOR"],
    "faultkit.detect": ["Event", "TimeoutDetector", "PhiAccrualDetector", "ALIVE", "SUSPECT", "DEAD"],
    "faultkit.transport": ["HeartbeatSender", "HeartbeatReceiver", "encode_packet", "decode_packet",
                           "load_key", "parse_address", "PacketError", "MAX_PACKET", "VERSION"],
    "faultkit.contain": ["FailureDomains", "BlastRadius", "IsolationPolicy", "Decision",
                         "CircuitBreaker", "Bulkhead"],
    "faultkit.recover": ["Checkpointer", "CheckpointInfo", "Store", "StoreLock", "LocalStore",
                         "register_type", "unregister_type", "dumps", "loads", "FORMAT_VERSION"],
    "faultkit.cluster": ["Cluster"],
}


@pytest.mark.parametrize("path", sorted(OLD_ALL))
def test_old_module_paths_keep_their_names(path):
    mod = importlib.import_module(path)
    for name in OLD_ALL[path]:
        assert getattr(mod, name) is not None, f"{path}.{name}"
        exec(f"from {path} import {name}", {})


def test_detect_package_serves_the_transport_lazily():
    import faultkit.detect
    from faultkit.detect.transport import HeartbeatSender

    assert faultkit.detect.HeartbeatSender is HeartbeatSender
    with pytest.raises(AttributeError, match="no_such_name"):
        faultkit.detect.no_such_name  # noqa: B018


def test_import_faultkit_loads_no_heavy_module():
    # import faultkit is cheap: the pillars (numpy), the runtime (asyncio), hmac and
    # importlib.metadata load when first used, not at import.
    import subprocess
    import sys

    code = ("import sys; import faultkit; "
            "print(sorted(m for m in ('numpy', 'asyncio', 'hmac', 'importlib.metadata', 'ssl') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_lazy_names_resolve_to_their_modules_and_dir_lists_them():
    import faultkit.balance

    assert fk.HashRing is faultkit.balance.HashRing
    assert fk.recover is importlib.import_module("faultkit.recover")
    assert {"HashRing", "Node", "recover"} <= set(dir(fk))
    with pytest.raises(AttributeError, match="no_such_name"):
        fk.no_such_name  # noqa: B018
