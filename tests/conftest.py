"""Shared test set-up: the references and helpers in tests/support/ are
importable by name (``from ring_ref import RefRing``) from every pillar's tests."""
import pathlib
import sys

SUPPORT = pathlib.Path(__file__).parent / "support"
if str(SUPPORT) not in sys.path:
    sys.path.insert(0, str(SUPPORT))
