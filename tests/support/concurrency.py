"""Readers in threads racing a writer: the harness of the concurrency tests."""
from __future__ import annotations

import sys
import threading
from typing import Callable


def race(read: Callable[[], object], change: Callable[[int], object], *, readers: int = 2,
         min_changes: int = 1, min_reads: int = 1, max_changes: int = 100_000) -> int:
    """Call ``read()`` over and over in ``readers`` threads while this thread calls
    ``change(0)``, ``change(1)``, ... with a tiny switch interval, so the threads
    interleave finely.  Changes go on until at least ``min_changes`` are made and
    the readers have finished ``min_reads`` reads in all, or ``max_changes`` are
    made (so a starved reader cannot hang the test).  Every reader reads at least
    once, however the threads are scheduled.  An exception in a reader is raised
    here.  Returns the number of reads.
    """
    stop = threading.Event()
    reads: list[int] = []
    failures: list[BaseException] = []

    def loop() -> None:
        try:
            while True:
                read()
                reads.append(1)
                if stop.is_set():
                    return
        except BaseException as e:  # reported to the test's thread below
            failures.append(e)

    threads = [threading.Thread(target=loop) for _ in range(readers)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    for t in threads:
        t.start()
    try:
        for i in range(max_changes):
            change(i)
            if failures or (i + 1 >= min_changes and len(reads) >= min_reads):
                break
    finally:
        stop.set()
        for t in threads:
            t.join()
        sys.setswitchinterval(switch)
    if failures:
        raise failures[0]
    return len(reads)
