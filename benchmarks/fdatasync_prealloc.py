"""Bare fdatasync per record: appended vs posix_fallocate'd vs pre-zeroed segment (issue #15 probe).

Usage: python benchmarks/fdatasync_prealloc.py DIR RECORD_BYTES.  Prints the median microseconds
per pwrite+fdatasync over N records in each mode, three rounds; a plain script, not a
pytest-benchmark test.
"""
import os
import statistics
import sys
import time

N = 1000


def run(directory: str, mode: str, rec: bytes) -> float:
    path = os.path.join(directory, f"seg-{mode}")
    if os.path.exists(path):
        os.unlink(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    size = N * len(rec) + 4096
    if mode == "fallocate":
        os.posix_fallocate(fd, 0, size)
        os.fsync(fd)
    elif mode == "zeroed":
        os.pwrite(fd, b"\0" * size, 0)
        os.fsync(fd)
    offset, times = 0, []
    for _ in range(N):
        t = time.perf_counter_ns()
        os.pwrite(fd, rec, offset)
        os.fdatasync(fd)
        times.append(time.perf_counter_ns() - t)
        offset += len(rec)
    os.close(fd)
    os.unlink(path)
    return statistics.median(times) / 1e3


def main() -> None:
    directory, rec = sys.argv[1], b"x" * int(sys.argv[2])
    for _ in range(3):
        print({m: round(run(directory, m, rec), 1) for m in ("append", "fallocate", "zeroed")})


if __name__ == "__main__":
    main()
