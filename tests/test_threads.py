"""Thread budgets: how many threads a call may use, and that a busy machine gets the serial path."""

from __future__ import annotations

import threading

import numba
import pytest

from coverage_sim import _threads
from coverage_sim.train import _row_threads


def test_free_cores_subtracts_other_running_processes(monkeypatch):
    monkeypatch.setattr(_threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(_threads, "_own_runnable", lambda: 1)
    counts = iter([3, 5])                                   # us + 2 others, then a spike
    monkeypatch.setattr(_threads, "_runnable", lambda: next(counts))
    assert _threads.free_cores(gap=0.0) == 1                # the lesser read: 2 others
    monkeypatch.setattr(_threads, "_runnable", lambda: 1)   # only us
    assert _threads.free_cores(gap=0.0) == 2
    monkeypatch.setattr(_threads, "_runnable", lambda: None)  # no /proc/loadavg
    assert _threads.free_cores(gap=0.0) == 2


def test_free_cores_does_not_count_our_own_spinning_workers(monkeypatch):
    # After a parallel region numba's OpenMP worker spins before it sleeps, and /proc/loadavg
    # counts it: it must not make the next call of the same process go serial.
    monkeypatch.setattr(_threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(_threads, "_runnable", lambda: 2)
    monkeypatch.setattr(_threads, "_own_runnable", lambda: 2)   # us + our own worker
    assert _threads.free_cores(gap=0.0) == 2
    monkeypatch.setattr(_threads, "_runnable", lambda: 3)       # ... and one other process
    assert _threads.free_cores(gap=0.0) == 1


def test_own_runnable_counts_this_process_threads():
    import threading

    # the calling thread is running; the count never exceeds this process's threads
    assert 1 <= _threads._own_runnable() <= max(threading.active_count(), 1) + numba.get_num_threads()


def test_environment_fixes_the_budget(monkeypatch):
    monkeypatch.setenv("COVERAGE_SIM_THREADS", "3")
    assert _threads.thread_budget() == 3
    assert _threads.thread_budget(wanted=2) == 2
    for bad in ("0", "two"):
        monkeypatch.setenv("COVERAGE_SIM_THREADS", bad)
        with pytest.raises(ValueError, match="COVERAGE_SIM_THREADS must be a positive integer"):
            _threads.thread_budget()


def test_one_large_problem_goes_serial_on_a_busy_machine(monkeypatch):
    monkeypatch.delenv("COVERAGE_SIM_THREADS", raising=False)
    monkeypatch.setattr(_threads, "free_cores", lambda: 1)
    assert _row_threads(None, 1000) == (False, 1)
    monkeypatch.setattr(_threads, "free_cores", lambda: 2)
    assert _row_threads(None, 1000) == (True, 2)
    assert _row_threads(None, 100) == (False, None)         # small K: never split
    assert _row_threads(True, 100) == (True, None)          # explicit: as asked
    assert _row_threads(False, 5000) == (False, None)


def test_numba_threads_context_restores_the_count():
    before = numba.get_num_threads()
    with _threads.numba_threads(1) as n:
        assert n == 1 == numba.get_num_threads()
    assert numba.get_num_threads() == before


@pytest.mark.parametrize("n, threads", [(0, 2), (1, 3), (7, 1), (7, 2), (7, 16)])
def test_for_each_calls_every_index_once(n, threads):
    seen = []
    _threads.for_each(seen.append, n, threads)
    assert sorted(seen) == list(range(n))


def test_for_each_runs_the_calls_concurrently():
    # Two calls that each wait for the other: a serial loop would break the barrier (timeout).
    barrier = threading.Barrier(2, timeout=10)
    _threads.for_each(lambda b: barrier.wait(), 2, 2)


def test_for_each_raises_the_first_error():
    def fn(b):
        if b == 3:
            raise ValueError("problem 3")

    with pytest.raises(ValueError, match="problem 3"):
        _threads.for_each(fn, 6, 2)


def test_batched_loops_release_the_gil():
    # train_many's threads overlap only inside loops compiled with nogil
    from coverage_sim import _engine, _sampled

    assert _engine.run_chunk.targetoptions["nogil"] is True
    assert _sampled.run_one_sampled.targetoptions["nogil"] is True
