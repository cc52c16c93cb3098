"""Kernel warm-up: the groups compile the kernels the experiments then use, and nothing else."""

from __future__ import annotations

import subprocess
import sys

import pytest

from coverage_sim.warmup import GROUPS, warm_up

_EXPERIMENTS_AFTER_WARM_UP = """
import gc, os
os.environ["COVERAGE_SIM_PROGRESS"] = "0"
from numba.core.registry import CPUDispatcher
from coverage_sim.warmup import GROUPS, warm_up

def entry_points():
    # signatures of the kernels called from Python (loaded from the cache or compiled)
    return {f"{d.py_func.__module__}.{d.py_func.__qualname__}": len(d.signatures)
            for d in gc.get_objects() if isinstance(d, CPUDispatcher)
            and d.py_func.__module__.startswith("coverage_sim._")}

for group in GROUPS:
    warm_up(group)
before = entry_points()
from coverage_sim.experiments import get_experiment
from coverage_sim.experiments.registry import config_to_dict
from coverage_sim.sweep import experiment_cells, seed_table
for name in ("azar-ipo-vs-dpo", "song-coverage", "kl-estimators", "iterative-optimism",
             "tajwar-peak", "group-baselines", "chen-ranking", "gap-atlas"):
    exp = get_experiment(name)
    config = exp.default_config(True)
    seed_table(name, config_to_dict(config), 0, (experiment_cells(exp, config) or [None])[0])
after = entry_points()
print(sorted(k for k, n in after.items() if n > before.get(k, 0)))
"""


def test_experiments_use_only_the_warmed_up_kernels():
    # A kernel an experiment calls with other argument types than the warm-up (a read-only or
    # int32 array, a literal) would be compiled again in every worker process of a fresh clone,
    # which is what the warm-up is for.
    out = subprocess.run([sys.executable, "-c", _EXPERIMENTS_AFTER_WARM_UP], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_group_warms_up_and_an_unknown_one_is_refused():
    for group in GROUPS:
        assert warm_up(group) >= 0.0
    with pytest.raises(ValueError, match="group must be one of"):
        warm_up("everything")


def test_import_experiments_loads_the_registry_and_torch_only_when_asked():
    pytest.importorskip("torch")
    code = """
import sys
from coverage_sim.warmup import import_experiments
assert import_experiments(False) >= 0.0
assert "coverage_sim.experiments" in sys.modules and "torch" not in sys.modules
import_experiments(True)
assert "torch._dynamo" in sys.modules
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
