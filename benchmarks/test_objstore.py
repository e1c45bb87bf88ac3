"""Checkpoints in S3: faultkit's ObjectStore against one raw obstore put/get and boto3, in one run.

The server is moto[server] (a subprocess on 127.0.0.1), so absolute figures
are moto's; the ratios within a group are the result.  Compare within a
group: ``faultkit bench -k objstore --benchmark-group-by=group``.

- save: ``Checkpointer.save`` (encode + streamed multipart upload + lease
  check + conditional commit + retention listing) against one
  ``obstore.put`` and boto3 ``put_object``/``upload_fileobj`` of the same
  already-encoded bytes (their encoding is outside their timers: the floor);
- recover: ``Checkpointer.recover`` (list + get + verify + decode, arrays
  writable) against ``obstore.get(...).bytes()`` and boto3
  ``get_object``/``download_fileobj`` of the same object;
- incremental: a save after changing 1% of the array against a full save;
- memory: peak extra RSS of a process saving a 1 GiB array (printed and
  asserted under 256 MiB; measured with VmHWM after clear_refs).
"""
import gc
import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

obstore = pytest.importorskip("obstore")
boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto.server")

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "support"))
from s3_server import CREDENTIALS, REGION, MotoServer  # noqa: E402

import faultkit as fk  # noqa: E402
from faultkit.recover import dumps, loads  # noqa: E402
from faultkit.recover.objstore import ObjectStore  # noqa: E402

BIG = 256 << 20
ROUNDS = dict(rounds=3, iterations=1, warmup_rounds=1)


@pytest.fixture(scope="module")
def s3():
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bucket(s3):
    return s3.bucket()


@pytest.fixture(scope="module")
def client(s3):
    return boto3.client("s3", endpoint_url=s3.endpoint, region_name=REGION,
                        aws_access_key_id=CREDENTIALS["access_key_id"],
                        aws_secret_access_key=CREDENTIALS["secret_access_key"])


@pytest.fixture(scope="module")
def raw(s3, bucket):
    return ObjectStore(f"s3://{bucket}/raw", **s3.options())._store


@pytest.fixture(scope="module")
def big():
    return {"a": np.random.default_rng(0).random(BIG // 8)}


@pytest.fixture(scope="module")
def records():
    return {"r": [{"id": i, "name": f"user{i:06d}", "score": i * 0.5, "active": i % 2 == 0, "tags": ["a", "b"]}
                  for i in range(100_000)]}


def _gc():
    gc.collect()  # (setup must return None: pytest-benchmark passes a returned value as arguments)


CASES = {"256MiB-arrays": "big", "100k-dicts": "records"}


def _state(request, case):
    return request.getfixturevalue(CASES[case])


def _ck(s3, bucket, name, **kw):
    return fk.Checkpointer(f"s3://{bucket}/{name}", retain=1, store_options=s3.options(), **kw)


# ---------------------------------------------------------------- save

@pytest.mark.parametrize("case", list(CASES))
def test_save_faultkit(benchmark, request, s3, bucket, case):
    benchmark.group = f"objstore: save {case}"
    state = _state(request, case)
    ck = _ck(s3, bucket, f"save-{case}")
    info = benchmark.pedantic(ck.save, args=(state,), setup=_gc, **ROUNDS)
    benchmark.extra_info["bytes"] = info.size
    ck.close()


@pytest.mark.parametrize("case", list(CASES))
def test_save_obstore_put(benchmark, request, raw, case):
    benchmark.group = f"objstore: save {case}"
    data = dumps(_state(request, case))
    benchmark.pedantic(obstore.put, args=(raw, f"put-{case}", data), setup=_gc, **ROUNDS)


@pytest.mark.parametrize("case", list(CASES))
def test_save_obstore_put_single_request(benchmark, request, raw, case):
    benchmark.group = f"objstore: save {case}"
    data = dumps(_state(request, case))
    benchmark.pedantic(obstore.put, args=(raw, f"put1-{case}", data), kwargs={"use_multipart": False},
                       setup=_gc, **ROUNDS)


@pytest.mark.parametrize("case", list(CASES))
def test_save_obstore_put_with_encoding(benchmark, request, raw, case):
    # Equal work: the encoding inside the timer, as in Checkpointer.save.
    benchmark.group = f"objstore: save {case}"
    state = _state(request, case)
    benchmark.pedantic(lambda: obstore.put(raw, f"pute-{case}", dumps(state)), setup=_gc, **ROUNDS)


@pytest.mark.parametrize("case", list(CASES))
def test_save_boto3_put_object(benchmark, request, client, bucket, case):
    benchmark.group = f"objstore: save {case}"
    data = dumps(_state(request, case))
    benchmark.pedantic(client.put_object, kwargs=dict(Bucket=bucket, Key=f"boto-{case}", Body=data),
                       setup=_gc, **ROUNDS)


@pytest.mark.parametrize("case", list(CASES))
def test_save_boto3_upload_fileobj(benchmark, request, client, bucket, case):
    benchmark.group = f"objstore: save {case}"
    data = dumps(_state(request, case))
    benchmark.pedantic(lambda: client.upload_fileobj(io.BytesIO(data), bucket, f"bfo-{case}"),
                       setup=_gc, **ROUNDS)


# ---------------------------------------------------------------- recover

@pytest.mark.parametrize("case", list(CASES))
def test_recover_faultkit(benchmark, request, s3, bucket, case):
    benchmark.group = f"objstore: recover {case}"
    ck = _ck(s3, bucket, f"rec-{case}")
    ck.save(_state(request, case))
    ck.close()
    reader = _ck(s3, bucket, f"rec-{case}")
    got = benchmark.pedantic(reader.recover, setup=_gc, **ROUNDS)
    assert got.keys() == _state(request, case).keys()


@pytest.mark.parametrize("case", list(CASES))
def test_recover_obstore_get(benchmark, request, raw, case):
    benchmark.group = f"objstore: recover {case}"
    data = dumps(_state(request, case))
    obstore.put(raw, f"get-{case}", data)
    del data
    got = benchmark.pedantic(lambda: obstore.get(raw, f"get-{case}").bytes(), setup=_gc, **ROUNDS)
    assert len(got) > 0


@pytest.mark.parametrize("case", list(CASES))
def test_recover_obstore_get_with_decoding(benchmark, request, raw, case):
    # Equal work: the decoding (and verification) inside the timer, as in Checkpointer.recover.
    benchmark.group = f"objstore: recover {case}"
    obstore.put(raw, f"getd-{case}", dumps(_state(request, case)))
    got = benchmark.pedantic(lambda: loads(obstore.get(raw, f"getd-{case}").bytes()), setup=_gc, **ROUNDS)
    assert got.keys() == _state(request, case).keys()


@pytest.mark.parametrize("case", list(CASES))
def test_recover_boto3_get_object(benchmark, request, client, bucket, case):
    benchmark.group = f"objstore: recover {case}"
    client.put_object(Bucket=bucket, Key=f"bget-{case}", Body=dumps(_state(request, case)))
    benchmark.pedantic(lambda: client.get_object(Bucket=bucket, Key=f"bget-{case}")["Body"].read(),
                       setup=_gc, **ROUNDS)


@pytest.mark.parametrize("case", list(CASES))
def test_recover_boto3_download_fileobj(benchmark, request, client, bucket, case):
    benchmark.group = f"objstore: recover {case}"
    client.put_object(Bucket=bucket, Key=f"bdl-{case}", Body=dumps(_state(request, case)))

    def run():
        out = io.BytesIO()
        client.download_fileobj(bucket, f"bdl-{case}", out)
        return out

    benchmark.pedantic(run, setup=_gc, **ROUNDS)


# ---------------------------------------------------------------- incremental

@pytest.mark.parametrize("mode", ["full", "incremental-1pct"])
def test_save_incremental(benchmark, s3, bucket, mode):
    benchmark.group = "objstore: save 256 MiB after a 1% change"
    a = np.random.default_rng(1).random(BIG // 8)
    ck = _ck(s3, bucket, f"inc-{mode}", full_every=1000)
    full = ck.save({"a": a})
    n = len(a) // 100
    pos = [0]

    def change():  # a different contiguous 1% each round
        pos[0] = (pos[0] + 7 * n) % (len(a) - n)
        a[pos[0]:pos[0] + n] += 1.0
        gc.collect()
        return None

    info = benchmark.pedantic(ck.save, args=({"a": a},), kwargs={"incremental": mode != "full"},
                              setup=change, **ROUNDS)
    benchmark.extra_info["uploaded_fraction"] = info.size / full.size
    if mode != "full":
        assert info.incremental and info.size <= 0.05 * full.size
    ck.close()


# ---------------------------------------------------------------- memory

def test_save_1gib_peak_rss(s3, bucket):
    """Peak extra RSS of a fresh process saving a 1 GiB array (VmHWM after clear_refs)."""
    src = os.path.dirname(os.path.dirname(fk.__file__))
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {os.path.abspath(src)!r})
        import numpy as np, faultkit as fk
        def status(k):
            for line in open("/proc/self/status"):
                if line.startswith(k):
                    return int(line.split()[1]) * 1024
        a = np.ones((1 << 30) // 8)
        ck = fk.Checkpointer("s3://{bucket}/rss", retain=1, store_options={s3.options()!r})
        ck.save({{"x": 1}})  # lease taken, modules loaded
        base = status("VmRSS")
        open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
        info = ck.save({{"a": a}})
        print(info.size, status("VmHWM") - base)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=600, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    size, extra = map(int, out.stdout.split())
    print(f"\n1 GiB save: object {size} bytes, peak extra RSS {extra / 2**20:.1f} MiB")
    assert size > 1 << 30
    assert extra < 256 << 20
