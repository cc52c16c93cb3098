"""F8 (Tang et al. 2024, arXiv:2405.08448, tang-classifier): the quick run shows offline IPO as the
better classifier and worse generator; the check is not vacuous."""

from __future__ import annotations

import numpy as np
import pytest

from coverage_sim.experiments.tang import classifier


@pytest.fixture(scope="module")
def quick(quick_sweep):
    """Quick config, seeds 0 and 1 (every Tang figure averages seeds), run in-process."""
    config, table = quick_sweep(classifier.EXPERIMENT, seeds=(0, 1), workers=1)
    return classifier.EXPERIMENT, config, table


def test_classifier_quick(quick, save_plot):
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
    save_plot(exp, table, cfg)


def test_check_fails_without_the_effect(quick, swap_methods):
    exp, cfg, table = quick
    with pytest.raises(AssertionError):
        exp.check(swap_methods(table), cfg)


@pytest.mark.parametrize("cls, kwargs, field", [
    (classifier.TangClassifierConfig, {"n_pairs": 0}, "n_pairs"),
])
def test_config_validation(cls, kwargs, field):
    with pytest.raises(ValueError, match=field):
        cls(**kwargs)
