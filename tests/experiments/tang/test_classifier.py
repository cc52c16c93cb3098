"""F8 (Tang et al. 2024, arXiv:2405.08448, tang-classifier): the quick run's numbers and verdict;
both clauses fail on swapped methods; the failing clause can hold; the full run's verdict."""

from __future__ import annotations

import numpy as np
import pytest

from coverage_sim.experiments.tang import classifier
from coverage_sim.experiments.verdict import PARTLY

from experiments.helpers import clause_passes


@pytest.fixture(scope="module")
def quick(quick_sweep):
    return quick_sweep(classifier.EXPERIMENT, seeds=(0,), workers=1)


def test_classifier_quick(quick, save_plot):
    cfg, table = quick
    result = classifier.check(table, cfg)
    assert result.verdict == PARTLY and result.failing == ("offline-worse-generator",)
    assert clause_passes(result) == {"offline-better-classifier": 8, "offline-worse-generator": 6}
    late = classifier.late_means(table, cfg)
    ref = table[table["method"] == "reference"].pivot_table(index="instance", columns="metric",
                                                            values="value")
    # offline IPO orders the pi_ref pairs as well as the proxy does; online IPO leaves most arms'
    # log-ratios unordered once their probability is ~0; the gold reward is the Bayes classifier
    np.testing.assert_allclose(late[("offline", "sign_accuracy")].to_numpy(),
                               ref["proxy_accuracy"].to_numpy(), atol=0.02)
    assert (late[("online", "sign_accuracy")].to_numpy()
            < ref["proxy_accuracy"].to_numpy() - 0.02).all()
    assert (ref["gold_accuracy"] > ref["proxy_accuracy"]).all()
    start = table[(table["step"] == 0) & (table["metric"] == "sign_accuracy")]["value"]
    assert np.allclose(start, 0.5)                             # h = 0 at pi_ref: all ties
    save_plot(classifier.EXPERIMENT, table, cfg)


def test_swapped_methods_fail_both_clauses(quick, swap_methods):
    cfg, table = quick
    result = classifier.check(swap_methods(table), cfg)
    # the swap passes exactly the tasks where the original failed
    assert clause_passes(result) == {"offline-better-classifier": 0, "offline-worse-generator": 2}
    assert not any(c.holds for c in result.clauses)


def test_generator_clause_can_hold(quick):
    """Offline win rates lowered by 0.1 make offline the worse generator on every task."""
    cfg, table = quick
    lowered = table.copy()
    mask = (lowered["method"] == "offline") & (lowered["metric"] == "win_rate")
    lowered.loc[mask, "value"] -= 0.1
    assert clause_passes(classifier.check(lowered, cfg))["offline-worse-generator"] == 8


def test_full_run_verdict():
    cfg = classifier.TangClassifierConfig()
    result = classifier.check(classifier.run(cfg, 0), cfg)
    assert result.verdict == PARTLY and result.failing == ("offline-worse-generator",)
    assert clause_passes(result) == {"offline-better-classifier": 8, "offline-worse-generator": 6}


@pytest.mark.parametrize("kwargs, field", [
    ({"n_pairs": 0}, "n_pairs"), ({"late_fraction": 1.5}, "late_fraction"),
])
def test_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        classifier.TangClassifierConfig(**kwargs)
