"""F12 (Chen et al., chen-ranking): quick runs show the alignment gap and Theorem 4.1."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_expit

from coverage_sim.experiments.chen import ranking as chen
from coverage_sim.plotting import save_figure
from coverage_sim.sweep import run_sweep


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    cfg = chen.ChenConfig.quick()
    table = run_sweep(chen.EXPERIMENT, cfg, [0, 1], out=tmp_path_factory.mktemp("chen"),
                      workers=1, progress=False)
    return cfg, table


def test_quick_agrees_and_numbers(quick, tmp_path, assert_drawn):
    cfg, table = quick
    chen.check(table, cfg)
    acc = chen._aggregate(table, "ranking_accuracy")
    r_star = chen._aggregate(table, "ideal_ranking_accuracy")
    for seed in (0, 1):
        _env, _, _, _w, _l, alpha, c = chen.make_problem(cfg, np.random.default_rng(seed))
        rows = acc[acc["seed"] == seed].sort_values("step")["ranking_accuracy"].to_numpy()
        assert rows[0] == pytest.approx(np.mean(c <= 0))  # R(pi_ref)
        star = chen.ideal_ranking_accuracy(alpha, c, cfg.beta)
        assert r_star[r_star["seed"] == seed]["ideal_ranking_accuracy"].iloc[0] == star
        assert rows[-1] == pytest.approx(star)  # converged: R = R* (claim C10)
        assert star - rows[0] > 0.2  # a large gap to close
    pairs = chen._pairs_at(table, "final")
    assert len(pairs) == 2 * cfg.n_prompts
    assert set(np.round(pairs["alpha"] * cfg.n_raters)) <= {3.0, 4.0, 5.0}
    unanimous = pairs[pairs["alpha"] == 1.0]
    assert (unanimous["correct"] > 0.5).all()  # logit(1 - 1e-3)/beta = 69 > every c here
    fig = chen.plot(table, cfg)
    assert_drawn(fig)
    paths = save_figure(fig, tmp_path / "chen")
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)


def test_theorem_4_1_boundary(quick):
    cfg, table = quick
    pairs = chen._pairs_at(table, "budget")
    threshold = -log_expit(cfg.beta * pairs["c"])
    assert ((pairs["pair_loss"] <= threshold) == (pairs["correct"] > 0.5)).all()


def test_check_fails_without_the_effect(quick):
    cfg, table = quick
    no_gap = table.copy()
    acc = no_gap["metric"] == "ranking_accuracy"
    for seed in (0, 1):
        star = no_gap[(no_gap["metric"] == "ideal_ranking_accuracy")
                      & (no_gap["seed"] == seed)]["value"].iloc[0]
        no_gap.loc[acc & (no_gap["seed"] == seed), "value"] = star  # R = R* from the start
    with pytest.raises(AssertionError, match="alignment gap"):
        chen.check(no_gap, cfg)
    flipped = table.copy()
    sel = (flipped["metric"] == "correct") & (flipped["pair"] == 0)
    flipped.loc[sel, "value"] = 1.0 - flipped.loc[sel, "value"]
    with pytest.raises(AssertionError, match="Theorem 4.1"):
        chen.check(flipped, cfg)


@pytest.mark.parametrize("field, value", [("n_raters", 4), ("beta", 0.0),
                                          ("budget_fraction", 1.0), ("n_prompts", 3)])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        chen.ChenConfig(**{field: value})
