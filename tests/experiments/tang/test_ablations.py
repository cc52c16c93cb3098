"""F7 (Tang et al. 2024, arXiv:2405.08448, tang-ablations): the quick run's 2x2 and ablations in
numbers and its verdict; every clause can fail (negative controls) and each failing one can hold;
the full run's verdict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from coverage_sim.experiments.tang import ablations
from coverage_sim.experiments.verdict import PARTLY

from experiments.helpers import clause_passes, clauses_by_name


@pytest.fixture(scope="module")
def quick(quick_sweep):
    return quick_sweep(ablations.EXPERIMENT, seeds=(0,), workers=1)


def test_ablations_quick(quick, save_plot):
    cfg, table = quick
    result = ablations.check(table, cfg)
    assert result.verdict == PARTLY
    assert set(result.failing) == {"on-policy-data-helps", "pairs-carry-gap-proxy"}
    passes = clause_passes(result)
    assert passes == {"replay-lags": 8, "quality-lags": 7, "on-policy-data-helps": 4,
                      "on-policy-data-short": 8, "pairs-carry-gap-gold": 8,
                      "pairs-carry-gap-proxy": 0}
    effects = {name: e.mean for name, e in ablations.factor_effects(table).items()}
    # the 2x2: with the proxy's labels on both sides, on-policy pairs add nothing ...
    assert abs(effects["pairs, proxy labels"]) < 0.01
    # ... and with the gold probabilities on the offline pairs neither; the label noise of one
    # gold draw per offline pair is as large as Tang's whole gap
    assert abs(effects["pairs, noise-free gold"]) < 0.02
    assert effects["label noise, offline pairs"] > effects["gap"] > 0.03
    assert effects["interaction"] < -0.04
    mu = table[table["metric"].str.startswith("mu_")].groupby(["method", "metric"])["value"].mean()
    assert mu[("replay", "mu_win_rate")] > 0.7 and mu[("quality", "mu_win_rate")] > 0.6
    assert mu[("replay", "mu_kl")] > 1.0                       # replay data is far from pi_ref
    text = ablations.summary(table, cfg)
    assert "| offline (n pairs from π_ref) |" in text and text.count("\n|") >= 14
    save_plot(ablations.EXPERIMENT, table, cfg)


def _swap(table, a, b):
    swapped = table.copy()
    swapped["method"] = table["method"].replace({a: b, b: a})
    return swapped


@pytest.mark.parametrize("a, b, name", [
    ("online", "replay", "replay-lags"),
    ("online", "quality", "quality-lags"),
    ("online", "on_policy", "on-policy-data-short"),
    ("online_gold", "offline", "pairs-carry-gap-gold"),
])
def test_swapping_the_compared_methods_fails_the_clause(quick, a, b, name):
    cfg, table = quick
    assert clauses_by_name(ablations.check(table, cfg))[name].holds
    assert clauses_by_name(ablations.check(_swap(table, a, b), cfg))[name].passes == 0


def test_failing_clauses_can_hold(quick):
    """Offline IPO on gold labels in place of the proxy-relabelled pairs makes on-policy pairs
    beat offline pairs with the labels held 'fixed'; online IPO's frontier in place of the more
    on-policy data's makes that data help."""
    cfg, table = quick
    fake = table[table["method"] != "proxy_labels"]
    fake = pd.concat([fake, table[table["method"] == "offline"].assign(method="proxy_labels")])
    assert clauses_by_name(ablations.check(fake, cfg))["pairs-carry-gap-proxy"].holds
    better = table[table["method"] != "on_policy"]
    better = pd.concat([better, table[(table["method"] == "online")
                                      & ~table["metric"].str.startswith("mu_")]
                        .assign(method="on_policy")])
    assert clauses_by_name(ablations.check(better, cfg))["on-policy-data-helps"].holds


def test_full_run_verdict():
    cfg = ablations.TangAblationConfig()
    table = ablations.run(cfg, 0)
    result = ablations.check(table, cfg)
    assert result.verdict == PARTLY
    assert set(result.failing) == {"on-policy-data-helps", "pairs-carry-gap-proxy"}
    passes = clause_passes(result)
    assert passes == {"replay-lags": 8, "quality-lags": 8, "on-policy-data-helps": 6,
                      "on-policy-data-short": 7, "pairs-carry-gap-gold": 8,
                      "pairs-carry-gap-proxy": 0}
    assert np.isfinite(result.effect.ci).all() and result.effect.ci[1] < 0.01


@pytest.mark.parametrize("kwargs, field", [
    ({"quality_k": 1.5}, "quality_k"), ({"taus": (0.1, 1.0)}, "taus"),
])
def test_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ablations.TangAblationConfig(**kwargs)
