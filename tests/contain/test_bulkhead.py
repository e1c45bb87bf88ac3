"""Bulkhead: the cap holds under many threads and tasks (counted), waiting, handoff."""
import asyncio
import math
import threading

import pytest

import faultkit as fk
from faultkit.contain import Bulkhead


class InFlight:
    """Counts calls inside the protected section and remembers the maximum."""

    def __init__(self):
        self.lock = threading.Lock()
        self.now = 0
        self.max = 0
        self.done = 0

    def enter(self):
        with self.lock:
            self.now += 1
            self.max = max(self.max, self.now)

    def leave(self):
        with self.lock:
            self.now -= 1
            self.done += 1


def test_threads_never_exceed_the_cap():
    cap, n_threads, calls = 4, 32, 50
    bh = Bulkhead(cap, max_wait=math.inf)
    count = InFlight()
    ready = threading.Barrier(n_threads, timeout=30)

    @bh
    def work():
        count.enter()
        for _ in range(200):  # a little work; threads switch meanwhile
            pass
        count.leave()

    def worker():
        ready.wait()
        for _ in range(calls):
            work()

    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert count.max <= cap
    assert count.done == n_threads * calls
    assert bh.in_flight == 0 and bh.refused == 0


def test_full_bulkhead_refuses_at_once_and_the_cap_is_reached():
    cap = 3
    bh = Bulkhead(cap)
    inside = threading.Barrier(cap + 1, timeout=30)  # cap workers + the test
    leave = threading.Event()
    count = InFlight()

    def hold():
        with bh:
            count.enter()
            inside.wait()
            leave.wait(30)
            count.leave()

    threads = [threading.Thread(target=hold) for _ in range(cap)]
    for t in threads:
        t.start()
    inside.wait()  # all cap workers are inside at once
    assert count.now == cap and bh.in_flight == cap and bh.available == 0
    with pytest.raises(fk.BulkheadFullError, match="3 of 3 calls in flight"):
        bh.call(lambda: None)
    leave.set()
    for t in threads:
        t.join()
    assert bh.in_flight == 0 and bh.refused == 1
    assert bh.call(lambda x: x + 1, 1) == 2


def test_a_waiting_thread_gets_the_slot_handed_over():
    bh = Bulkhead(1, max_wait=math.inf)
    order = []
    bh.acquire()
    waiter = threading.Thread(target=lambda: bh.call(order.append, "waiter"))
    waiter.start()
    while bh.waiting == 0:  # until the waiter has queued
        threading.Event().wait(0.001)
    bh.release()
    waiter.join(30)
    assert order == ["waiter"] and bh.in_flight == 0


def test_max_wait_expires_with_bulkhead_full():
    bh = Bulkhead(1, max_wait=0.01)
    with bh:
        with pytest.raises(fk.BulkheadFullError, match="after waiting 0.01 s"):
            bh.acquire()
    assert bh.in_flight == 0 and bh.waiting == 0


def test_tasks_never_exceed_the_cap_and_reach_it():
    cap, n = 5, 200
    bh = Bulkhead(cap, max_wait=math.inf)
    count = InFlight()

    @bh
    async def work():
        count.enter()
        for _ in range(3):
            await asyncio.sleep(0)
        count.leave()
        return 1

    async def main():
        return sum(await asyncio.gather(*(work() for _ in range(n))))

    assert asyncio.run(main()) == n
    assert count.max == cap and count.done == n and bh.in_flight == 0


def test_tasks_refused_at_once_without_max_wait():
    bh = Bulkhead(5)
    count = InFlight()

    async def work():
        async with bh:
            count.enter()
            await asyncio.sleep(0)
            count.leave()

    async def main():
        return await asyncio.gather(*(work() for _ in range(50)), return_exceptions=True)

    results = asyncio.run(main())
    refused = [r for r in results if isinstance(r, fk.BulkheadFullError)]
    assert len(refused) == 45 and count.done == 5 and count.max == 5
    assert bh.refused == 45 and bh.in_flight == 0


def test_async_call_and_timeout_and_cancellation():
    bh = Bulkhead(1, max_wait=0.01)

    async def value(x):
        return x

    async def main():
        assert await bh.call(value, 3) == 3
        await bh.acquire_async()
        with pytest.raises(fk.BulkheadFullError):
            await bh.acquire_async()
        waiting = asyncio.ensure_future(Bulkhead.call_async(bh, value, 4))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        bh.release()
        assert bh.in_flight == 0 and bh.waiting == 0

    asyncio.run(main())


def test_an_async_waiter_gets_a_slot_released_by_a_thread():
    bh = Bulkhead(1, max_wait=math.inf)
    go = threading.Event()
    held = threading.Event()

    def holder():
        with bh:
            held.set()
            go.wait(30)

    async def main():
        t = threading.Thread(target=holder)
        t.start()
        await asyncio.get_running_loop().run_in_executor(None, held.wait, 30)
        task = asyncio.ensure_future(bh.call_async(asyncio.sleep, 0, "task"))
        while bh.waiting == 0:
            await asyncio.sleep(0)
        go.set()
        result = await task
        t.join(30)
        return result

    assert asyncio.run(main()) == "task"
    assert bh.in_flight == 0


@pytest.mark.parametrize("args, error, match", [
    ((0,), ValueError, r"max_concurrent must be >= 1, got 0"),
    ((-1,), ValueError, r"max_concurrent must be >= 1, got -1"),
    ((2.0,), TypeError, r"max_concurrent must be an int, not float"),
    ((True,), TypeError, r"max_concurrent must be an int, not bool"),
    ((1, -0.5), ValueError, r"max_wait must be >= 0 seconds \(or math\.inf\), got -0\.5"),
    ((1, float("nan")), ValueError, r"max_wait must be >= 0 seconds \(or math\.inf\), got nan"),
    ((1, "1"), TypeError, r"max_wait must be a number, not str"),
])
def test_bad_arguments(args, error, match):
    with pytest.raises(error, match=match):
        Bulkhead(*args)


def test_release_without_acquire_and_bad_decoration():
    bh = Bulkhead(2)
    with pytest.raises(RuntimeError, match="without a matching acquire"):
        bh.release()
    with pytest.raises(TypeError, match=r"the bulkhead decorates callables, not int"):
        bh(3)
    with pytest.raises(ZeroDivisionError):
        bh.call(lambda: 1 / 0)
    assert bh.in_flight == 0


# ---- cancellation paths (issue #21): a waiter that leaves never takes a slot with it

class _Interrupted(Exception):
    pass


def _interrupt_when_queued(bh, *, release_first):
    """A SIGALRM handler that, once the main thread is queued in ``bh.acquire()``, raises
    _Interrupted there (as Ctrl-C would), after handing it the slot if ``release_first``."""
    import signal

    def handler(signum, frame):
        if bh.waiting == 0:                  # not blocked yet: look again shortly
            signal.setitimer(signal.ITIMER_REAL, 0.01)
            return
        if release_first:
            bh.release()                     # the slot moves to the blocked thread ...
        raise _Interrupted                   # ... which is interrupted before it wakes

    return handler


@pytest.mark.parametrize("release_first", [False, True])
def test_a_thread_interrupted_while_waiting_leaves_no_slot_behind(release_first):
    import signal

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread")
    bh = Bulkhead(1, max_wait=math.inf)
    go, held = threading.Event(), threading.Event()

    def holder():
        bh.acquire()
        held.set()
        go.wait(30)
        if not release_first:
            bh.release()

    t = threading.Thread(target=holder)
    t.start()
    assert held.wait(30)
    old = signal.signal(signal.SIGALRM, _interrupt_when_queued(bh, release_first=release_first))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.01)
        with pytest.raises(_Interrupted):
            bh.acquire()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        go.set()
        t.join(30)
    # Interrupted while waiting: the waiter is abandoned, the holder's slot goes back to the
    # pool.  Interrupted just after the slot was handed over: it is passed on, not kept.
    assert bh.in_flight == 0 and bh.waiting == 0 and bh.available == 1
    with bh:
        assert bh.in_flight == 1


def test_a_task_cancelled_as_its_slot_arrives_passes_the_slot_on():
    bh = Bulkhead(1, max_wait=math.inf)

    async def main():
        await bh.acquire_async()
        first = asyncio.ensure_future(bh.acquire_async())
        second = asyncio.ensure_future(bh.acquire_async())
        while bh.waiting < 2:
            await asyncio.sleep(0)
        bh.release()          # the slot moves to `first` ...
        first.cancel()        # ... cancelled before it could run: it goes on to `second`
        with pytest.raises(asyncio.CancelledError):
            await first
        await second
        assert bh.in_flight == 1 and bh.waiting == 0
        bh.release()

    asyncio.run(main())
    assert bh.in_flight == 0


def test_a_waiter_whose_loop_closed_does_not_keep_the_slot():
    bh = Bulkhead(1, max_wait=math.inf)
    bh.acquire()
    loop = asyncio.new_event_loop()
    task = loop.create_task(bh.acquire_async())
    loop.run_until_complete(asyncio.sleep(0))   # the task runs until it waits
    assert bh.waiting == 1
    loop.close()                                # gone without cancelling its task
    bh.release()                                # cannot hand over: back to the pool
    assert bh.in_flight == 0 and bh.available == 1
    with bh:                                    # someone else holds the slot now ...
        task.get_coro().close()                 # ... when the orphan is finally closed:
        assert bh.in_flight == 1                # it must not give back a slot it never had
    assert bh.in_flight == 0
    assert repr(bh) == "Bulkhead(max_concurrent=1, max_wait=inf, in_flight=0)"
    assert (bh.max_concurrent, bh.max_wait) == (1, math.inf)
    task._log_destroy_pending = False           # closed by hand above: nothing pending


def test_context_managers_hand_back_the_bulkhead_and_never_swallow_errors():
    """Kills: ``__exit__`` returning True (``False -> True``: an exception inside ``with``
    swallowed) and ``__aenter__`` returning None (``async with b as x`` losing ``x``)."""
    b = Bulkhead(1)
    with pytest.raises(ZeroDivisionError, match="division"):
        with b as x:
            assert x is b
            raise ZeroDivisionError("division by zero")
    assert b.in_flight == 0

    async def main():
        async with b as y:
            assert y is b and b.in_flight == 1
        with pytest.raises(KeyError, match="k"):
            async with b:
                raise KeyError("k")
    asyncio.run(main())
    assert b.in_flight == 0
