"""Fixtures shared by the experiment tests: an experiment's quick sweep and its saved figure."""

from __future__ import annotations

import pytest

from coverage_sim.plotting import save_figure
from coverage_sim.sweep import run_sweep


@pytest.fixture(scope="session")
def quick_sweep(tmp_path_factory):
    """``quick_sweep(experiment, seeds=(0,), **kwargs) -> (config, table)``: the experiment's quick
    config swept over ``seeds`` by :func:`coverage_sim.sweep.run_sweep` (``kwargs`` go to it)."""
    def sweep(experiment, seeds=(0,), **kwargs):
        config = experiment.config.quick()
        table = run_sweep(experiment, config, list(seeds),
                          out=tmp_path_factory.mktemp(experiment.id), progress=False, **kwargs)
        return config, table
    return sweep


@pytest.fixture
def save_plot(tmp_path):
    """``save_plot(experiment, table, config)``: draws the figure from the table, saves it under
    ``tmp_path`` and asserts every file was written."""
    def save(experiment, table, config):
        paths = save_figure(experiment.plot(table, config), tmp_path / experiment.id)
        assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    return save
