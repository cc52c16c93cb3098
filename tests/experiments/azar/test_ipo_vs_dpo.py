"""F5 (Azar et al. 2023, arXiv:2310.12036, azar-ipo-vs-dpo): the quick run's clauses, and a negative
control for every clause of the check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from coverage_sim.experiments.azar import ipo_vs_dpo as az
from coverage_sim.experiments.verdict import AGREES, DISAGREES

from experiments.helpers import clauses_by_name


@pytest.fixture(scope="module")
def quick(quick_sweep):
    return quick_sweep(az.EXPERIMENT)


def test_quick_run_agrees_on_every_instance(quick, save_plot):
    cfg, table = quick
    result = az.check(table, cfg)
    assert result.verdict == AGREES and result.mode == "exact"
    clauses = clauses_by_name(result)
    assert set(clauses) == {"dpo-one-hot", "dpo-never-converges", "ipo-interior",
                            "ipo-closed-form", "ipo-toward-uniform", "gd-exact-fixed-point"}
    assert not clauses["gd-exact-fixed-point"].paper
    for name, c in clauses.items():
        expected = len(cfg.taus) - 1 if name == "ipo-toward-uniform" else len(cfg.taus)
        assert c.instances == expected and c.passes == expected, name
    # the effect: DPO's pi(a) -> 1 against IPO's interior pi(a) (exactly 1 - ipo_fixed_point(tau))
    expected = [1.0 - az.ipo_fixed_point(t)[0] for t in sorted(cfg.taus)]
    np.testing.assert_allclose(result.effect.values, expected, atol=5e-3)
    assert result.effect.ci[0] > 0.1
    save_plot(az.EXPERIMENT, table, cfg)


def test_gd_reaches_the_closed_form_and_orders_are_random(quick):
    cfg, table = quick
    gd = az._curves(table, "IPO", az.EXACT_OPTIMIZER)
    for (tau, _seed), (_, probs, _) in gd.items():
        np.testing.assert_allclose(probs[-1], az.ipo_fixed_point(tau), rtol=1e-9)
    orders = table.drop_duplicates("tau")["order"]
    assert orders.nunique() > 1  # the instances relabel the arms
    assert sorted(orders.iloc[0].split(" > ")) == ["arm 0", "arm 1", "arm 2"]


def _swap(table, column, a, b):
    out = table.copy()
    sel_a, sel_b = out[column] == a, out[column] == b
    out.loc[sel_a, column], out.loc[sel_b, column] = b, a
    return out


def test_swapping_dpo_and_ipo_fails_every_paper_clause(quick):
    cfg, table = quick
    result = az.check(_swap(table, "loss_type", "DPO", "IPO"), cfg)
    assert result.verdict == DISAGREES
    assert set(result.failing) == {"dpo-one-hot", "dpo-never-converges", "ipo-interior",
                                   "ipo-closed-form", "ipo-toward-uniform"}
    assert result.effect.mean < 0


def _edit(table, value_fn, **where):
    out = table.copy()
    sel = np.ones(len(out), dtype=bool)
    for key, value in where.items():
        sel &= (out[key] == value).to_numpy()
    out.loc[sel, "value"] = value_fn(out.loc[sel])
    return out


def test_each_clause_fails_without_its_effect(quick):
    cfg, table = quick
    last = table["step"].max()
    adam = az.PAPER_OPTIMIZER
    cases = {
        # DPO stops short of one-hot: pi(a) capped at 0.9
        "dpo-one-hot": _edit(table, lambda r: np.minimum(r["value"], 0.9), loss_type="DPO",
                             optimizer=adam, metric="pi(a)"),
        # DPO's loss frozen from the start: a converged loss
        "dpo-never-converges": _edit(table, lambda r: 0.5, loss_type="DPO", optimizer=adam,
                                     metric="loss"),
        # IPO's loss still falling at the end: not converged
        "ipo-interior": _edit(table, lambda r: np.where(r["step"] == last, 0.5 * r["value"],
                                                        r["value"]),
                              loss_type="IPO", optimizer=adam, metric="loss"),
        # IPO ends 0.02 nats away from the fixed point (twice the Adam step): pi(a) scaled up
        "ipo-closed-form": _edit(table, lambda r: r["value"] * np.exp(2 * cfg.lr),
                                 loss_type="IPO", optimizer=adam, metric="pi(a)"),
    }
    # IPO's tau labels reversed: its fixed point moves away from uniform as tau grows
    taus = sorted(cfg.taus)
    reversed_taus = table.copy()
    ipo = reversed_taus["loss_type"] == "IPO"
    reversed_taus.loc[ipo, "tau"] = reversed_taus.loc[ipo, "tau"].map(dict(zip(taus, taus[::-1])))
    cases["ipo-toward-uniform"] = reversed_taus
    # GD's IPO replaced by Adam's (not at the exact fixed point)
    gd_ipo = (table["loss_type"] == "IPO") & (table["optimizer"] == az.EXACT_OPTIMIZER)
    adam_ipo = table[(table["loss_type"] == "IPO") & (table["optimizer"] == adam)]
    cases["gd-exact-fixed-point"] = pd.concat(
        [table[~gd_ipo], adam_ipo.assign(optimizer=az.EXACT_OPTIMIZER)], ignore_index=True)
    for name, broken in cases.items():
        clauses = clauses_by_name(az.check(broken, cfg))
        assert not clauses[name].holds, name
        if name not in ("ipo-toward-uniform",):
            # the control breaks only its own clause
            others = [c for c in clauses.values() if c.name != name and not c.holds]
            assert not others, (name, [c.name for c in others])


def test_ipo_fixed_point_has_gaps_one_over_three_tau():
    for tau in (0.05, 0.3, 4.0):
        p = az.ipo_fixed_point(tau)
        assert p.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(-np.diff(np.log(p)), 1.0 / (3.0 * tau), rtol=1e-12)


@pytest.mark.parametrize("field, value", [("taus", ()), ("taus", (0.1, 0.1)),
                                          ("plotted_taus", (0.3, -5.0)), ("lr", 0.0),
                                          ("steps", 0), ("policy", "loglinear")])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field if field != "policy" else "policy"):
        az.AzarConfig(**{field: value})
