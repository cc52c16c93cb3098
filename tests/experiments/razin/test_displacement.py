"""F15 (Razin et al., razin-displacement): the quick run's clauses on every instance of every
family, and a negative control for every clause of the check."""

from __future__ import annotations

import numpy as np
import pytest

from coverage_sim.experiments.razin import displacement as razin
from coverage_sim.experiments.verdict import AGREES, DISAGREES

from experiments.helpers import clauses_by_name


@pytest.fixture(scope="module")
def quick(quick_sweep):
    return quick_sweep(razin.EXPERIMENT)


def test_quick_agrees_and_numbers(quick, save_plot):
    cfg, table = quick
    result = razin.check(table, cfg)
    assert result.verdict == AGREES
    clauses = clauses_by_name(result)
    assert {n for n, c in clauses.items() if c.paper} == {
        "likelihood-displacement", "mass-to-opposite", "low-ches-not-displaced"}
    for name, c in clauses.items():
        n = 2 * cfg.instances if name == "c12-rate-sign" else cfg.instances
        assert c.passes == c.instances == n, name
    assert result.effect.ci[1] < -10.0
    single = razin._target(table, "tabular-single")
    assert single.iloc[0] == pytest.approx(np.log(cfg.single_ref[0]))
    assert single.iloc[-1] > -1e-3  # pi(y+) -> 1
    overlap = razin._target(table, "tabular-overlap")
    assert overlap.iloc[0] == pytest.approx(np.log(cfg.overlap_ref[1]))
    assert overlap.iloc[-1] < overlap.iloc[0] - 10
    # b's logit never moves (the two pairs' pushes cancel), so log pi(b) falls by log Z(t): pi(a)
    # takes all the mass, on every instance
    rows = table[(table["setting"] == "tabular-overlap") & (table["metric"] == "logp")]
    last = rows[rows["step"] == rows["step"].max()]
    assert np.allclose(last[last["response"] == "a"]["value"], 0.0, atol=1e-9)
    # C12 rate factor at pi_ref (uniform) for the configured similar features
    rate = table[(table["setting"] == "loglinear-similar") & (table["metric"] == "rate_factor")
                 & (table["instance"] == 0)]
    phi = cfg.features(similar=True)
    expected = (phi[0] - phi.mean(axis=0)) @ (phi[0] - phi[1])
    assert rate[rate["step"] == 0]["value"].iloc[0] == pytest.approx(expected)
    assert expected < 0 and razin.ches(phi[0], phi[1]) == pytest.approx(0.2)
    save_plot(razin.EXPERIMENT, table, cfg)


def test_families_hold_their_premises():
    cfg = razin.RazinConfig()
    family = razin._family(cfg, 0)
    assert len(family) == cfg.instances
    assert np.allclose(family[0]["overlap"], cfg.overlap_ref)
    for member in family:
        assert member["overlap"][0] > member["overlap"][2]
        assert member["single"].sum() == pytest.approx(1.0) and (member["single"] > 0).all()
        for kind in ("similar", "dissimilar"):
            phi = member[kind]
            assert np.allclose(phi[2], -phi[0])          # y_opp is the opposite of y+
    assert not np.allclose(razin._family(cfg, 1)[1]["single"], family[1]["single"])


def _swap_settings(table, a, b):
    out = table.copy()
    sel_a, sel_b = out["setting"] == a, out["setting"] == b
    out.loc[sel_a, "setting"], out.loc[sel_b, "setting"] = b, a
    return out


def test_swapping_similar_and_dissimilar_fails_every_paper_clause(quick):
    cfg, table = quick
    result = razin.check(_swap_settings(table, "loglinear-similar", "loglinear-dissimilar"), cfg)
    assert result.verdict == DISAGREES
    assert result.effect.mean > 0


def test_each_clause_fails_without_its_effect(quick):
    cfg, table = quick
    target = table["metric"] == "logp_target"
    cases = {}
    # similar features whose log pi(y+) falls a hundredth as far (under a nat): the direction, and
    # so the rate's sign, stay right, but there is no displacement worth the name
    weak = table.copy()
    sel = target & (weak["setting"] == "loglinear-similar")
    first = weak[sel].groupby(["instance", "seed"])["value"].transform("first")
    weak.loc[sel, "value"] = first + 0.01 * (weak.loc[sel, "value"] - first)
    cases["likelihood-displacement"] = weak
    # displaced mass that goes to o rather than to y_opp
    to_o = table.copy()
    sim = (to_o["setting"] == "loglinear-similar") & (to_o["metric"] == "logp")
    opp, other = sim & (to_o["response"] == "y_opp"), sim & (to_o["response"] == "o")
    to_o.loc[opp, "value"], to_o.loc[other, "value"] = (table.loc[other, "value"].to_numpy(),
                                                        table.loc[opp, "value"].to_numpy())
    cases["mass-to-opposite"] = to_o
    # the dissimilar control displaced too
    sel = target & (table["setting"] == "loglinear-dissimilar")
    displaced = table.copy()
    displaced.loc[sel, "value"] = -displaced.loc[sel, "value"] - 5.0
    cases["low-ches-not-displaced"] = displaced
    # a rate factor of the wrong sign
    wrong = table.copy()
    sel = wrong["metric"] == "rate_factor"
    wrong.loc[sel, "value"] = -wrong.loc[sel, "value"]
    cases["c12-rate-sign"] = wrong
    # a tabular single pair that is displaced, an overlap that is not
    for setting, name in (("tabular-single", "c12-tabular-single"),
                          ("tabular-overlap", "c12-tabular-overlap")):
        flipped = table.copy()
        sel = target & (flipped["setting"] == setting)
        flipped.loc[sel, "value"] = 2 * flipped[sel].groupby(["instance", "seed"])[
            "value"].transform("first") - flipped.loc[sel, "value"]
        cases[name] = flipped
    for name, broken in cases.items():
        failing = {c.name for c in razin.check(broken, cfg).clauses if not c.holds}
        expected = {name}
        if name == "low-ches-not-displaced":
            expected |= {"c12-rate-sign"}   # the made-up curve also breaks the rate's sign
        assert failing == expected, (name, failing)


@pytest.mark.parametrize("field, value", [("overlap_ref", (0.2, 0.3, 0.5)),
                                          ("phi_similar", (0.0, 1.0)), ("lr", 0.0),
                                          ("single_ref", (0.5, 0.5)), ("instances", 0),
                                          ("feature_noise", -1.0)])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        razin.RazinConfig(**{field: value})
