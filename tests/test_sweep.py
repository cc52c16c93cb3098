"""Sweeps: resumable run folders, atomic files, local processes and a real Dask cluster agree."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coverage_sim.experiments import EXPERIMENTS, get_experiment
from coverage_sim.experiments.registry import Experiment, config_from_overrides, register
from coverage_sim.sweep import UnitRecorder, load_run, run_sweep

AZAR = "azar-ipo-vs-dpo"


@dataclass(frozen=True)
class _SlowConfig:
    """A tiny random experiment whose seeds take a while, to be killed mid-sweep."""

    size: int = 4
    seconds: float = 0.0

    @classmethod
    def quick(cls):
        return cls()


def _slow_run(config, seed):
    rng = np.random.default_rng(seed)
    time.sleep(config.seconds)
    values = rng.normal(size=config.size)
    return pd.DataFrame({"seed": seed, "step": np.arange(config.size), "metric": "x",
                         "value": values})


def _register_slow():
    if "test-slow" not in EXPERIMENTS:
        register(Experiment(id="test-slow", figure="T0", title="test", paper="none", arxiv="-",
                            claim="-", differences="-", config=_SlowConfig, run=_slow_run,
                            plot=lambda t, c: None, check=lambda t, c: None))
    return get_experiment("test-slow")


def test_run_folder_holds_config_seeds_versions_and_table(tmp_path):
    exp = get_experiment(AZAR)
    cfg = exp.default_config(quick=True)
    table = run_sweep(exp, cfg, seeds=[0], out=tmp_path, progress=False, workers=1)
    manifest = json.loads((tmp_path / "config.json").read_text())
    assert manifest["experiment"] == AZAR and manifest["seeds"] == [0]
    assert manifest["config"]["steps"] == cfg.steps
    assert {"numpy", "numba", "python"} <= set(manifest["versions"])
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "results.csv"), table)
    again, config, loaded = load_run(tmp_path)
    assert again is exp and config == cfg
    pd.testing.assert_frame_equal(loaded, table)
    assert not [p for p in tmp_path.rglob(".*tmp")], "temporary files left behind"


def test_rerun_skips_finished_seeds_and_refuses_another_config(tmp_path):
    exp = _register_slow()
    first = run_sweep(exp, _SlowConfig(), seeds=[0, 1], out=tmp_path, progress=False, workers=1)
    seed_file = tmp_path / "seeds" / "seed-0.csv"
    stamp = seed_file.stat().st_mtime_ns
    second = run_sweep(exp, _SlowConfig(), seeds=[0, 1, 2], out=tmp_path, progress=False,
                       workers=1)
    assert seed_file.stat().st_mtime_ns == stamp  # seed 0 was not recomputed
    pd.testing.assert_frame_equal(second[second["seed"] < 2].reset_index(drop=True), first)
    with pytest.raises(ValueError, match="different run"):
        run_sweep(exp, _SlowConfig(size=5), seeds=[0], out=tmp_path, progress=False, workers=1)


def test_killed_sweep_resumes_to_the_uninterrupted_table(tmp_path):
    """SIGKILL a sweep after its first seed lands; re-running loses nothing and matches."""
    script = tmp_path / "sweep.py"
    script.write_text(
        "import sys\n"
        "sys.path.insert(0, %r)\n"
        "from test_sweep import _register_slow, _SlowConfig\n"
        "from coverage_sim.sweep import run_sweep\n"
        "run_sweep(_register_slow(), _SlowConfig(seconds=float(sys.argv[2])), seeds=range(6),\n"
        "          out=sys.argv[1], progress=False, workers=1)\n" % str(Path(__file__).parent))
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(killed), "1.0"],
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while not (killed / "seeds" / "seed-0.csv").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "sweep died or stalled"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted((killed / "seeds").glob("seed-*.csv"))
    assert 1 <= len(done) < 6 and not (killed / "results.csv").exists()
    exp = _register_slow()
    resumed = run_sweep(exp, _SlowConfig(seconds=1.0), seeds=range(6), out=killed,
                        progress=False, workers=1)
    resumed_seeds = sorted(int(p.stem.split("-")[1]) for p in (killed / "seeds").glob("*.csv"))
    assert resumed_seeds == list(range(6))
    clean = run_sweep(exp, _SlowConfig(seconds=0.0), seeds=range(6), out=tmp_path / "clean",
                      progress=False, workers=1)
    pd.testing.assert_frame_equal(resumed, clean)


def test_local_processes_equal_in_process_run(tmp_path):
    exp = get_experiment(AZAR)
    cfg = config_from_overrides(exp, {"steps": 300, "taus": [0.5, 1.0]})
    serial = run_sweep(exp, cfg, seeds=[0, 1], out=tmp_path / "a", progress=False, workers=1)
    pooled = run_sweep(exp, cfg, seeds=[0, 1], out=tmp_path / "b", progress=False, workers=2)
    pd.testing.assert_frame_equal(serial, pooled)


def test_dask_local_cluster_equals_local_run(tmp_path):
    distributed = pytest.importorskip("distributed")
    exp = get_experiment(AZAR)
    cfg = config_from_overrides(exp, {"steps": 300, "taus": [0.5, 1.0]})
    local = run_sweep(exp, cfg, seeds=[0, 1], out=tmp_path / "local", progress=False, workers=1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        remote = run_sweep(exp, cfg, seeds=[0, 1], out=tmp_path / "dask", progress=False,
                           scheduler=cluster.scheduler_address)
    pd.testing.assert_frame_equal(local, remote)


def test_config_overrides_are_type_checked():
    exp = get_experiment(AZAR)
    assert config_from_overrides(exp, {"taus": [0.2]}).taus == (0.2,)
    with pytest.raises(ValueError, match="unknown config key 'tau'"):
        config_from_overrides(exp, {"tau": 1})
    with pytest.raises(ValueError, match="steps"):
        config_from_overrides(exp, {"steps": 1.5})
    with pytest.raises(ValueError, match="taus"):
        config_from_overrides(exp, {"taus": [-1.0]})


def _cell_run(config, seed, cell):
    rng = np.random.default_rng([seed, int(cell[1:])])
    return pd.DataFrame({"cell": cell, "seed": seed, "step": np.arange(config.size), "metric": "x",
                         "value": rng.normal(size=config.size)})


def _register_cells():
    if "test-cells" not in EXPERIMENTS:
        register(Experiment(id="test-cells", figure="T1", title="test", paper="none", arxiv="-",
                            claim="-", differences="-", config=_SlowConfig,
                            run=lambda c, s: pd.concat([_cell_run(c, s, x) for x in
                                                        ("c2", "c0", "c1")], ignore_index=True),
                            plot=lambda t, c: None, check=lambda t, c: None,
                            cells=lambda c: ["c2", "c0", "c1"], run_cell=_cell_run))
    return get_experiment("test-cells")


def test_cells_are_units_stored_and_resumed_one_by_one(tmp_path):
    """An experiment split into cells: one file per (seed, cell), resumed cell by cell, and the
    table is the seeds' ``run`` tables in seed order."""
    exp = _register_cells()
    first = run_sweep(exp, _SlowConfig(), seeds=[0, 1], out=tmp_path, progress=False, workers=1)
    expected = pd.concat([exp.run(_SlowConfig(), s) for s in (0, 1)], ignore_index=True)
    pd.testing.assert_frame_equal(first, expected)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "seeds").rglob("*.csv"))
    assert files == [f"seeds/seed-{s}/c{c}.csv" for s in (0, 1) for c in (0, 1, 2)]
    lost = tmp_path / "seeds" / "seed-1" / "c0.csv"
    lost.unlink()
    kept = tmp_path / "seeds" / "seed-1" / "c1.csv"
    stamp = kept.stat().st_mtime_ns
    again = run_sweep(exp, _SlowConfig(), seeds=[0, 1], out=tmp_path, progress=False, workers=1)
    assert lost.exists() and kept.stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(again, first)


def test_register_needs_cells_and_run_cell_together():
    with pytest.raises(ValueError, match="both cells and run_cell"):
        register(Experiment(id="test-half-cells", figure="T2", title="t", paper="p", arxiv="-",
                            claim="-", differences="-", config=_SlowConfig, run=_slow_run,
                            plot=lambda t, c: None, check=lambda t, c: None,
                            cells=lambda c: ["a"]))


def test_units_run_with_the_training_calls_bars_hidden(monkeypatch):
    # the sweep shows its own bar; an automatic bar of a training call inside a unit would
    # interleave with it, and --no-progress must hide everything
    from coverage_sim._progress import ENV_PROGRESS, wants_progress
    from coverage_sim.sweep import _inner_bars_hidden

    monkeypatch.delenv(ENV_PROGRESS, raising=False)
    assert wants_progress(None, expected_seconds=1e9)
    with _inner_bars_hidden():
        assert not wants_progress(None, expected_seconds=1e9)
        assert wants_progress(True, expected_seconds=0.0)      # an explicit request still shows
    assert ENV_PROGRESS not in os.environ                       # restored as it was
    monkeypatch.setenv(ENV_PROGRESS, "1")
    with _inner_bars_hidden():
        assert not wants_progress(None, expected_seconds=0.0)
    assert os.environ[ENV_PROGRESS] == "1"


def _tasks(*values):
    return [(abs, (v,), f"t{abs(v)}") for v in values]


@pytest.mark.parametrize("workers", [1, 2])
def test_run_queue_runs_follow_ups_before_the_queued_tasks(workers):
    from coverage_sim.sweep import run_queue

    order = []

    def on_done(key, result):
        order.append((key, result))
        return _tasks(-10) if key == "t1" else []   # t1 makes t10 ready

    run_queue(_tasks(-1, -2, -3), workers, on_done)
    assert sorted(order) == [("t1", 1), ("t10", 10), ("t2", 2), ("t3", 3)]
    if workers == 1:
        # in order, the follow-up ahead of the tasks still queued
        assert [key for key, _ in order] == ["t1", "t10", "t2", "t3"]


def test_unit_bar_ends_at_its_total_whatever_the_order_of_the_costs(capsys):
    """The total is summed most expensive unit first and the units finish in any order: summed
    in this order the costs exceed the total by one ulp, which tqdm reported as a warning (and a
    remaining time of -00:00) at the end of every ``reproduce``."""
    costs = [3.9, 1.5, 2.4, 2.9, 4.5, 2.5]
    units = [("exp", {}, i, "folder", None) for i in range(len(costs))]
    extra = 2 * 1.5
    finished = sum(costs) + extra              # the order in which they arrive below
    assert finished > sum(sorted(costs, reverse=True)) + extra
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with UnitRecorder(units, costs, progress=True, desc="test", extra=extra) as record:
            for cost in costs:
                record.advance(cost, "unit")
            record.advance(1.5, "figure")
            record.advance(1.5, "figure")
            assert record.bar.n == record.bar.total
    assert "-00:00" not in capsys.readouterr().err
