"""Thread counts that do not oversubscribe the cores: how many a call may use, and setting them.

A parallel region waits for its slowest thread. When other processes keep every core busy, one of
ours is descheduled for a whole time slice (milliseconds) while the others wait at the region's end,
so a loop with a region per step (one large problem's pair rows, a small torch model's ops) runs
*slower* on two threads than on one. The library therefore asks, before each fine-grained parallel
call, how many cores are free right now, and uses at most that many threads:

- ``COVERAGE_SIM_THREADS=n`` fixes the count (``1``: never parallel inside one call);
- otherwise :func:`free_cores` = usable cores minus the other processes running at this instant
  (``/proc/loadavg``'s runnable count less this process's own running threads, the lesser of two
  reads 0.5 ms apart, so that a brief spike does not count; where that file does not exist, the
  usable cores).

Coarse-grained work (``train_many``'s whole problems per thread, :func:`for_each`; a pool of
processes) keeps every thread: each thread then gets its fair share of a busy machine and nothing
waits per step.
``NUMBA_NUM_THREADS``, ``OMP_NUM_THREADS`` and torch's own settings cap the pools as usual.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import threading
import time

__all__ = ["usable_cores", "free_cores", "thread_budget", "numba_threads", "torch_threads",
           "for_each"]

ENV_THREADS = "COVERAGE_SIM_THREADS"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _runnable() -> int | None:
    """Runnable tasks system-wide right now (this process included), or None if unknown."""
    try:
        with open("/proc/loadavg") as fh:
            return int(fh.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def _own_runnable() -> int:
    """This process's threads that are running or runnable right now (at least 1: the caller).

    Counted so that our own thread pools are not mistaken for other processes: after a parallel
    region, numba's and torch's OpenMP workers spin for a while before they sleep, and
    ``/proc/loadavg`` counts them."""
    running = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 1
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/stat") as fh:
                stat = fh.read()
        except OSError:  # the thread ended between the listing and the read
            continue
        # the state follows the parenthesised command name, which may itself hold spaces
        running += stat[stat.rfind(")") + 2:stat.rfind(")") + 3] == "R"
    return max(1, running)


def free_cores(samples: int = 2, gap: float = 0.0005) -> int:
    """Usable cores not running another process at this instant (at least 1).

    The least count of ``samples`` reads ``gap`` seconds apart of the runnable tasks system-wide
    minus this process's own running threads.
    """
    cores = usable_cores()
    others = []
    for i in range(samples):
        n = _runnable()
        if n is None:
            return cores
        others.append(max(0, n - _own_runnable()))
        if i + 1 < samples:
            time.sleep(gap)
    return max(1, min(cores, cores - min(others)))


def thread_budget(wanted: int | None = None) -> int:
    """Threads one fine-grained parallel call may use now: ``COVERAGE_SIM_THREADS`` if set, else
    :func:`free_cores` (capped by ``wanted``)."""
    fixed = os.environ.get(ENV_THREADS)
    if fixed:
        try:
            n = int(fixed)
        except ValueError:
            raise ValueError(f"{ENV_THREADS} must be a positive integer, got {fixed!r}") from None
        if n < 1:
            raise ValueError(f"{ENV_THREADS} must be a positive integer, got {fixed!r}")
    else:
        n = free_cores()
    return n if wanted is None else max(1, min(n, wanted))


@contextlib.contextmanager
def numba_threads(n: int):
    """Run numba's parallel regions on ``n`` threads inside the block (this thread only)."""
    import numba

    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    before = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield n
    finally:
        numba.set_num_threads(before)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run torch's intra-op pool on ``n`` threads inside the block (None: leave it as it is)."""
    import torch

    if n is None:
        yield torch.get_num_threads()
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def for_each(fn, n: int, threads: int) -> None:
    """Call ``fn(b)`` for every ``b`` in ``range(n)`` on ``threads`` Python threads.

    Each thread takes the next index when it finishes one, so uneven problems balance and no
    thread waits for another until the end. The threads overlap only where ``fn`` releases the GIL
    (a numba function compiled with ``nogil=True``). The first exception raised by ``fn`` is raised
    here once every thread has stopped.
    """
    threads = max(1, min(int(threads), n))
    if threads == 1:
        for b in range(n):
            fn(b)
        return
    indices = iter(range(n))
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                b = next(indices, None)
            if b is None:
                return
            fn(b)

    with cf.ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(worker) for _ in range(threads)]
    for future in futures:
        future.result()
