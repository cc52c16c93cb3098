"""F8 (Tang et al. 2024, arXiv:2405.08448, tang-classifier): the quick run shows offline IPO as the
better classifier and worse generator; the check is not vacuous."""

from __future__ import annotations

import numpy as np
import pytest

from coverage_sim.experiments.tang import classifier
from coverage_sim.plotting import save_figure
from coverage_sim.sweep import run_sweep


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """Quick config, seeds 0 and 1 (every Tang figure averages seeds), run in-process."""
    exp = classifier.EXPERIMENT
    cfg = exp.config.quick()
    table = run_sweep(exp, cfg, [0, 1], out=tmp_path_factory.mktemp(exp.id), workers=1,
                      progress=False)
    return exp, cfg, table


def _plot_ok(exp, table, cfg, tmp_path):
    paths = save_figure(exp.plot(table, cfg), tmp_path / exp.id)
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)


def _swap(table, a="online", b="offline"):
    swapped = table.copy()
    swapped["method"] = table["method"].replace({a: b, b: a})
    return swapped


def test_classifier_quick(quick, tmp_path):
    exp, cfg, table = quick
    exp.check(table, cfg)
    last = table[table["step"] == cfg.steps].groupby(["method", "metric"])["value"].mean()
    ref = table[table["method"] == "reference"].groupby("metric")["value"].mean()
    # offline IPO orders the pi_ref pairs as well as the proxy does; online IPO leaves most arms'
    # log-ratios unordered once their probability is ~0
    assert last[("offline", "sign_accuracy")] == pytest.approx(ref["proxy_accuracy"], abs=0.01)
    assert last[("online", "sign_accuracy")] < ref["proxy_accuracy"] - 0.08
    assert ref["gold_accuracy"] > ref["proxy_accuracy"]       # the Bayes classifier is best
    assert last[("online", "win_rate")] > last[("offline", "win_rate")] + 0.08
    start = table[(table["step"] == 0) & (table["metric"] == "sign_accuracy")]["value"]
    assert np.allclose(start, 0.5)                             # h = 0 at pi_ref: all ties
    _plot_ok(exp, table, cfg, tmp_path)


def test_check_fails_without_the_effect(quick):
    exp, cfg, table = quick
    with pytest.raises(AssertionError):
        exp.check(_swap(table), cfg)


@pytest.mark.parametrize("cls, kwargs, field", [
    (classifier.TangClassifierConfig, {"n_pairs": 0}, "n_pairs"),
])
def test_config_validation(cls, kwargs, field):
    with pytest.raises(ValueError, match=field):
        cls(**kwargs)
