"""Fixtures shared by the experiment tests: an experiment's quick sweep and its saved figure."""

from __future__ import annotations

import numpy as np
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
