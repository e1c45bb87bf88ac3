"""Shared benchmark data: fixed-seed keys, built once per session."""
import numpy as np
import pytest

N_BULK = 1_000_000

# Equal work for every side of a comparison of bulk calls (issue #21): the same rounds, one
# untimed warm-up call, one call per round, for faultkit and for each peer.  (The minimum of
# thousands of auto-calibrated rounds is biased low against the minimum of three.)
BULK = dict(rounds=5, warmup_rounds=1, iterations=1)


def make_keys(n: int, seed: int = 0) -> list[str]:
    """n distinct 16-character ASCII str keys, deterministic."""
    rng = np.random.default_rng(seed)
    return [f"{v:016x}" for v in rng.integers(0, 2**63, n, dtype=np.int64).tolist()]


@pytest.fixture(scope="session")
def keys_1m() -> list[str]:
    return make_keys(N_BULK)


@pytest.fixture(scope="session")
def keys_small() -> list[str]:
    return make_keys(1000, seed=1)
