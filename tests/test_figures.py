"""reproduce's local pool: the order in which it hands out the kernel warm-up, the work of a
worker left idle by it, the units and the figures (the figures themselves: tests/experiments)."""

from __future__ import annotations

import collections

import pytest

from coverage_sim import figures
from coverage_sim.warmup import GROUPS


def _pool_log(monkeypatch, plans, units, workers=2, imports=None, kernel_free=frozenset()
              ) -> list:
    """Run ``figures._reproduce_locally`` on a simulated pool of ``workers`` in which the oldest
    running task finishes first; the warm-up and the imports are stubs, and units and figures are
    only recorded. Returns ``(key, keys running beside it)`` for every task as it starts."""
    log = []

    def run_queue(tasks, n, on_done):
        queue, running = collections.deque(tasks), collections.deque()
        while queue or running:
            while queue and len(running) < n:
                task = queue.popleft()
                log.append((task[2], [t[2] for t in running]))
                running.append(task)
            fn, args, key = running.popleft()
            if key[0] in ("warm", "preload"):
                queue.extendleft(reversed(on_done(key, fn(*args))))

    monkeypatch.setattr(figures, "run_queue", run_queue)
    monkeypatch.setattr(figures, "warm_up", lambda group: 0.0)
    monkeypatch.setattr(figures, "import_experiments",
                        imports if imports is not None else lambda with_torch: 0.0)
    figures._reproduce_locally(plans, units, [1.0] * len(units), workers, False, {}, kernel_free)
    return log


def _plan(name, config):
    return (name, config, "runs/" + name, [0], "figures", True, ("png",))


@pytest.mark.parametrize("torch_experiment", [True, False])
def test_a_worker_done_warming_up_imports_while_the_last_group_compiles(monkeypatch,
                                                                         torch_experiment):
    plans = [_plan("a", {"device": "cpu"} if torch_experiment else {}), _plan("b", {})]
    units = [("a", {}, 0, "runs/a", None), ("b", {}, 0, "runs/b", None)]
    calls = []
    log = _pool_log(monkeypatch, plans, units, imports=lambda t: calls.append(t) or 0.0)
    keys = [key for key, _ in log]
    assert keys[:len(GROUPS)] == [("warm", g) for g in GROUPS]
    # one import, started while the last group still compiles, then the units
    preload = [i for i, k in enumerate(keys) if k[0] == "preload"]
    assert len(preload) == 1 and log[preload[0]][1] == [("warm", GROUPS[-1])]
    assert calls == [torch_experiment]
    assert sorted(k[1][0] for k in keys[preload[0] + 1:] if k[0] == "unit") == ["a", "b"]


def test_every_worker_that_would_wait_imports_once(monkeypatch):
    # one worker per group: each of the first groups to finish leaves its worker waiting
    units = [("a", {}, 0, "runs/a", None), ("b", {}, 0, "runs/b", None)]
    log = _pool_log(monkeypatch, [_plan("a", {}), _plan("b", {})], units, workers=len(GROUPS))
    assert [k for k, _ in log if k[0] == "preload"] == [("preload", g) for g in GROUPS[:-1]]


def test_a_worker_done_warming_up_runs_the_units_that_need_no_kernel(monkeypatch):
    """Units of an experiment that calls no kernel (a torch-only one) start while the last group
    compiles, instead of an import; each unit runs once."""
    plans = [_plan("torch", {"device": "cpu"}), _plan("bandit", {})]
    units = [("torch", {}, 0, "runs/torch", None), ("bandit", {}, 0, "runs/bandit", None)]
    calls = []
    log = _pool_log(monkeypatch, plans, units, imports=lambda t: calls.append(t) or 0.0,
                    kernel_free={"torch"})
    keys = [key for key, _ in log]
    assert keys[:len(GROUPS)] == [("warm", g) for g in GROUPS]
    first = keys[len(GROUPS)]
    assert first[0] == "unit" and first[1][0] == "torch"
    assert log[len(GROUPS)][1] == [("warm", GROUPS[-1])]       # beside the last group
    assert calls == []                                         # no import: the unit does it
    assert sorted(k[1][0] for k in keys if k[0] == "unit") == ["bandit", "torch"]
