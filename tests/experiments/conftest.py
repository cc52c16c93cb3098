"""Fixtures shared by the experiment tests: an experiment's quick sweep and its saved figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coverage_sim.experiments.registry import config_from_overrides
from coverage_sim.plotting import save_figure
from coverage_sim.sweep import run_sweep

#: The committed figures: each experiment's full-run table and manifest.
FIGURES = Path(__file__).resolve().parents[2] / "figures"


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


@pytest.fixture(scope="session")
def committed_run():
    """``committed_run(experiment) -> (config, table)``: the full run committed in ``figures/``
    (``<id>.csv`` and the config in ``<id>.json``), to pin the full run's verdict and numbers
    without re-running it (the transformer experiments take minutes)."""
    def load(experiment):
        manifest = json.loads((FIGURES / f"{experiment.id}.json").read_text())
        assert not manifest["quick"], f"figures/{experiment.id}.json holds a quick run"
        config = config_from_overrides(experiment, manifest["config"])
        return config, pd.read_csv(FIGURES / f"{experiment.id}.csv")
    return load


def assert_drawn(fig) -> None:
    """The figure shows data, not just a file: some axes hold lines, markers, bars or images with
    finite data, and every axes that holds data is labelled (an axis label or a title)."""
    with_data = []
    for ax in fig.axes:
        lines = [ln for ln in ax.get_lines() if np.isfinite(np.asarray(ln.get_ydata(),
                                                                        dtype=float)).any()]
        if lines or ax.collections or ax.patches or ax.images:
            with_data.append(ax)
            assert ax.get_xlabel() or ax.get_ylabel() or ax.get_title(), \
                f"an axes with data has no label or title: {ax}"
    assert with_data, "the figure has no axes with data"


@pytest.fixture(name="assert_drawn")
def assert_drawn_fixture():
    """:func:`assert_drawn`, for tests that draw and save a figure themselves."""
    return assert_drawn


@pytest.fixture
def save_plot(tmp_path):
    """``save_plot(experiment, table, config)``: draws the figure from the table, checks what it
    draws (:func:`assert_drawn`), saves it under ``tmp_path`` and asserts every file was written."""
    def save(experiment, table, config):
        fig = experiment.plot(table, config)
        assert_drawn(fig)
        paths = save_figure(fig, tmp_path / experiment.id)
        assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    return save
