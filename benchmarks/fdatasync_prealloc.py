"""Bare fdatasync per record: appended vs posix_fallocate'd vs pre-zeroed segment (issue #15 probe).

Usage: python benchmarks/fdatasync_prealloc.py DIR RECORD_BYTES. Prints the median microseconds per
pwrite+fdatasync for N records in each mode; a plain script, not a pytest-benchmark test.
"""
import os, time, statistics, sys
d = sys.argv[1]; N = 1000; rec = b"x" * int(sys.argv[2])
def run(mode):
    p = os.path.join(d, f"seg-{mode}")
    if os.path.exists(p): os.unlink(p)
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    size = N * len(rec) + 4096
    if mode == "fallocate": os.posix_fallocate(fd, 0, size); os.fsync(fd)
    if mode == "zeroed": os.pwrite(fd, b"\0" * size, 0); os.fsync(fd)
    off = 0; ts = []
    for _ in range(N):
        t = time.perf_counter_ns(); os.pwrite(fd, rec, off); os.fdatasync(fd); ts.append(time.perf_counter_ns() - t); off += len(rec)
    os.close(fd); os.unlink(p)
    return statistics.median(ts) / 1e3
for r in range(3):
    print({m: round(run(m), 1) for m in ("append", "fallocate", "zeroed")})
