"""F15 (Razin et al., razin-displacement): quick runs show displacement only with shared params."""

from __future__ import annotations

import numpy as np
import pytest

from coverage_sim.experiments.razin import displacement as razin
from coverage_sim.plotting import save_figure
from coverage_sim.sweep import run_sweep


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    cfg = razin.RazinConfig.quick()
    table = run_sweep(razin.EXPERIMENT, cfg, [0], out=tmp_path_factory.mktemp("razin"),
                      workers=1, progress=False)
    return cfg, table


def test_quick_agrees_and_numbers(quick, tmp_path, assert_drawn):
    cfg, table = quick
    razin.check(table, cfg)
    single = razin._target(table, "tabular-single")
    assert single.iloc[0] == pytest.approx(np.log(cfg.single_ref[0]))
    assert single.iloc[-1] > -1e-3  # pi(y+) -> 1
    overlap = razin._target(table, "tabular-overlap")
    assert overlap.iloc[0] == pytest.approx(np.log(cfg.overlap_ref[1]))
    assert overlap.iloc[-1] < overlap.iloc[0] - 10
    # b's logit never moves (the two pairs' pushes cancel), so log pi(b) falls by log Z(t)
    rows = table[(table["setting"] == "tabular-overlap") & (table["metric"] == "logp")]
    last = rows[rows["step"] == rows["step"].max()].set_index("response")["value"]
    assert last["a"] == pytest.approx(0.0, abs=1e-9)
    # C12 rate factor at pi_ref (uniform) for the similar features: <phi+ - E phi, phi+ - phi->
    rate = table[(table["setting"] == "loglinear-similar") & (table["metric"] == "rate_factor")]
    phi = cfg.features(similar=True)
    expected = (phi[0] - phi.mean(axis=0)) @ (phi[0] - phi[1])
    assert rate[rate["step"] == 0]["value"].iloc[0] == pytest.approx(expected)
    assert expected < 0 and razin.ches(phi[0], phi[1]) == pytest.approx(0.2)
    fig = razin.plot(table, cfg)
    assert_drawn(fig)
    paths = save_figure(fig, tmp_path / "razin")
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)


def test_check_fails_without_the_effect(quick):
    cfg, table = quick
    fake = table.copy()
    a, b = fake["setting"] == "tabular-single", fake["setting"] == "loglinear-similar"
    fake.loc[a, "setting"], fake.loc[b, "setting"] = "loglinear-similar", "tabular-single"
    with pytest.raises(AssertionError):
        razin.check(fake, cfg)
    no_overlap = table.copy()
    sel = (no_overlap["setting"] == "tabular-overlap") & (no_overlap["metric"] == "logp_target")
    no_overlap.loc[sel, "value"] = -no_overlap.loc[sel, "value"]
    with pytest.raises(AssertionError, match="overlapping pairs"):
        razin.check(no_overlap, cfg)


@pytest.mark.parametrize("field, value", [("overlap_ref", (0.2, 0.3, 0.5)),
                                          ("phi_similar", (0.0, 1.0)), ("lr", 0.0),
                                          ("single_ref", (0.5, 0.5))])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        razin.RazinConfig(**{field: value})
