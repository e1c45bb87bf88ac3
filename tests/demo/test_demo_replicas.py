"""The demo's correctness pieces: last-writer-wins by version, recovery from the
journal, and the front end's bookkeeping of replicas that missed writes and
their catch-up, on real worker processes."""
import asyncio
import json
import os
import random
import secrets

import pytest
from hypothesis import given, settings, strategies as st

import faultkit as fk
from faultkit.demo.common import PARTITIONS, Layout, partition_of
from faultkit.demo.faults import Supervisor
from faultkit.demo.front import Router
from faultkit.demo.worker import apply_record, empty_state, merge

pytestmark = pytest.mark.timeout(120)


def _workers(tmp_path, layout, *, checkpoint_every):
    """The workers' config (0.1 s heartbeats, static membership, local checkpoints every
    ``checkpoint_every`` s) written to ``tmp_path``, and a Supervisor to start them."""
    cfg = {"layout": layout.to_json(), "dir": str(tmp_path), "key": secrets.token_hex(32), "interval": 0.1,
           "detector": "phi", "checkpoint_every": checkpoint_every, "etcd": None, "store": None}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return cfg, Supervisor(str(path), str(tmp_path))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcd"), st.integers(1, 50)), max_size=40), st.randoms())
def test_last_writer_wins_whatever_the_order_and_repeats(writes, rnd):
    """Applying writes in any order, some twice, leaves each key at its highest version."""
    shuffled = writes + writes[: len(writes) // 2]
    rnd.shuffle(shuffled)
    part: dict = {}
    for k, v in shuffled:
        merge(part, k, v, f"{k}@{v}")
    want = {}
    for k, v in writes:
        want[k] = max(v, want.get(k, 0))
    assert part == {k: [v, f"{k}@{v}"] for k, v in want.items()}


def test_journal_records_replay_into_the_same_state(tmp_path):
    j = fk.Journal(str(tmp_path / "wal"))
    state = empty_state()
    for ver, k in enumerate(["x", "y", "x", "z"], 1):
        rec = [[partition_of(k), k, ver, f"{k}{ver}"]]
        j.append(json.dumps(rec).encode())
        apply_record(state, 0, json.dumps(rec).encode())
    j.close()
    j = fk.Journal(str(tmp_path / "wal"))
    again = empty_state()
    for lsn, rec in j.replay():
        apply_record(again, lsn, rec)
    j.close()
    assert again == state and state["parts"][partition_of("x")]["x"] == [3, "x3"]


async def _until(pred, timeout=30.0, what=""):
    end = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > end:
            raise AssertionError(f"not {what} within {timeout} s")
        await asyncio.sleep(0.05)


def test_a_replica_that_missed_writes_serves_no_read_until_it_caught_up(tmp_path):
    """w2 is down while writes are acknowledged by w0 and w1: each is marked behind for w2
    before it is acknowledged, no read goes to w2, and once w2 is back the front end has it
    pull what it missed; it then holds every acknowledged write."""
    layout = Layout(3, 3)
    cfg, sup = _workers(tmp_path, layout, checkpoint_every=0.5)
    signals = []

    async def main():
        node = fk.Node("front", key=bytes.fromhex(cfg["key"]), membership=fk.StaticMembership(layout.members()),
                       bind=f"127.0.0.1:{layout.udp['front']}", domain=layout.path("front"), interval=0.1,
                       hold_restarted=True)
        await node.start()
        router = Router(layout, node, signal=lambda t, w, what: signals.append((w, what)))
        sync = None
        try:
            sup.start("w0"), sup.start("w1")
            await _until(lambda: all(sup.procs[w].poll() is None for w in ("w0", "w1")), what="started")
            acked = {}
            for i in range(120):
                k = f"key{i}"
                for _ in range(100):  # the workers may still be starting
                    try:
                        acked[k] = (await router.put(k, f"v{i}"), f"v{i}")
                        break
                    except Exception:
                        await asyncio.sleep(0.05)
            assert len(acked) == 120
            assert {w for w, _ in router.behind} == {"w2"}
            assert {p for _, p in router.behind} == {partition_of(k) for k in acked}
            for p in range(PARTITIONS):
                assert "w2" not in router.read_replicas(p)
            sup.start("w2")
            sync = asyncio.ensure_future(router.sync_loop(period=0.05))
            await _until(lambda: router.in_sync("w2"), what="w2 in sync")
            for k, (ver, val) in acked.items():
                ans = await router.conns["w2"].call({"op": "get", "p": partition_of(k), "k": k})
                assert (ans["ver"], ans["val"]) == (ver, val)
                got = await router.get(k)
                assert got[:2] == (ver, val)
            assert ("w2", "caught up") in signals
        finally:
            if sync is not None:
                sync.cancel()
            router.close()
            await node.stop()
    try:
        asyncio.run(main())
    finally:
        assert sup.reap_all() == []


def test_a_killed_worker_recovers_its_journal(tmp_path):
    """SIGKILL right after writes were acknowledged: the restarted worker has them from its
    own journal (and checkpoint), before any catch-up from peers."""
    layout = Layout(3, 3)
    cfg, sup = _workers(tmp_path, layout, checkpoint_every=0.3)

    async def main():
        from faultkit.demo.common import Conn
        for w in layout.names:
            sup.start(w)
        conn = Conn("127.0.0.1", layout.tcp["w0"])
        for _ in range(200):
            try:
                await conn.call({"op": "status"})
                break
            except OSError:
                await asyncio.sleep(0.05)
        keys = [f"j{i}" for i in range(200)]
        for i, k in enumerate(keys, 1):
            assert (await conn.call({"op": "put", "p": partition_of(k), "k": k, "ver": i, "val": k}))["ok"]
        conn.close()
        # stop the peers first, so w0 cannot get anything back from them
        for w in ("w1", "w2", "w0"):
            os.kill(sup.procs[w].pid, 9)
            await asyncio.get_running_loop().run_in_executor(None, sup.procs[w].wait)
        sup.start("w0")
        conn = Conn("127.0.0.1", layout.tcp["w0"])
        for _ in range(200):
            try:
                st = await conn.call({"op": "status"})
                if st["ready"]:
                    break
            except OSError:
                pass
            await asyncio.sleep(0.05)
        assert st["ready"] and st["keys"] == 200 and st["synced"]["pulled"] == 0
        for i, k in enumerate(keys, 1):
            ans = await conn.call({"op": "get", "p": partition_of(k), "k": k})
            assert ans["ver"] == i
        conn.close()
    try:
        asyncio.run(main())
    finally:
        assert sup.reap_all() == []


@pytest.mark.slow
def test_a_worker_with_a_damaged_disk_serves_no_read_until_every_peer_answered(tmp_path):
    """w0 and w1 journal 200 writes that w2 missed. w0's journal is damaged (a byte flipped
    early in its records) while it is down, and w1 is down too: the restarted w0 skips the
    damaged records, and must not serve reads on the word of w2 alone (which lacks the
    writes); once w1 is back, w0 pulls from it and holds all 200."""
    from faultkit.demo.common import Conn
    from faultkit.demo.faults import damage_disk

    layout = Layout(3, 3)
    cfg, sup = _workers(tmp_path, layout, checkpoint_every=1000.0)

    async def call(w, msg):
        conn = Conn("127.0.0.1", layout.tcp[w])
        try:
            return await conn.call(msg)
        finally:
            conn.close()

    async def status(w):
        for _ in range(400):
            try:
                return await call(w, {"op": "status"})
            except OSError:
                await asyncio.sleep(0.05)
        raise AssertionError(f"{w} never answered")

    async def kill(w):
        os.kill(sup.procs[w].pid, 9)
        await asyncio.get_running_loop().run_in_executor(None, sup.procs[w].wait)

    async def main():
        for w in layout.names:
            sup.start(w)
        for w in layout.names:
            await status(w)
        keys = [f"d{i}" for i in range(200)]
        for i, k in enumerate(keys, 1):
            for w in ("w0", "w1"):  # two journals: acknowledged; w2 missed them
                assert (await call(w, {"op": "put", "p": partition_of(k), "k": k, "ver": i, "val": k}))["ok"]
        await kill("w1")
        await kill("w0")
        assert [d.split()[0] for d in damage_disk(sup.data_dir("w0"), random.Random(5))] == ["journal"]
        sup.start("w0")
        st = await status("w0")
        assert any("is damaged" in m for m in st["recovered"]["damage"]), st
        assert st["recovered"]["keys"] < 200                      # the damage cost it writes
        await asyncio.sleep(2.0)  # past the catch-up's tries with one peer answering (5 x 0.2 s)
        st = await status("w0")
        assert not st["ready"], st                                # w2 answered, w1 did not
        ans = await call("w0", {"op": "get", "p": partition_of(keys[-1]), "k": keys[-1]})
        assert (ans["ok"], ans["err"]) == (False, "syncing")
        sup.start("w1")
        for _ in range(400):
            st = await status("w0")
            if st["ready"]:
                break
            await asyncio.sleep(0.05)
        assert st["ready"] and st["synced"]["unreached"] == 0, st
        for i, k in enumerate(keys, 1):
            ans = await call("w0", {"op": "get", "p": partition_of(k), "k": k})
            assert (ans["ver"], ans["val"]) == (i, k)
    try:
        asyncio.run(main())
    finally:
        assert sup.reap_all() == []
