"""F6 (transformer) (Tang et al. 2024, arXiv:2405.08448, tang-transformer) on the token task with
token structure: the quick run (a block of seeds trained as one stack) and its pinned verdict and
numbers, the check's power (a table with the effect agrees) and negative controls (the effect
removed or reversed fails every clause), the committed full run's pinned disagreement,
determinism, bad configs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from coverage_sim.experiments.registry import TABLE_COLUMNS
from coverage_sim.experiments.tang import transformer
from coverage_sim.experiments.verdict import AGREES, DISAGREES, PARTLY


@pytest.fixture(scope="module")
def quick():
    cfg = transformer.TangTransformerConfig.quick()
    return cfg, transformer.run(cfg, 0)


def test_quick_run_structure_and_start(quick, save_plot):
    cfg, table = quick
    assert list(table.columns) == ["policy", "method", "tau"] + list(TABLE_COLUMNS)
    assert set(table["policy"]) == {"transformer", "tabular"}
    assert sorted(table["seed"].unique()) == [0, 1]              # block 0 of seeds_per_run = 2
    start = table[(table["step"] == 0) & (table["policy"] == "transformer")]
    # the SFT'd transformer starts near pi_ref: KL ~ 0 and win rate 1/2
    assert start[start["metric"] == "kl"]["value"].max() < 0.05
    assert np.allclose(start[start["metric"] == "win_rate"]["value"], 0.5, atol=0.02)
    eff = transformer.seed_effects(table, "transformer")
    assert list(eff.columns) == ["gap", "decline", "gap_checkpoints"] and len(eff) == 2
    save_plot(transformer.EXPERIMENT, table, cfg)


def test_quick_verdict_and_numbers_are_pinned(quick):
    """The quick run (60 steps) stops before offline IPO over-fits: the transformer's final-point
    gap is not there yet in seed 0, while offline already falls at the smallest tau. The tabular
    arm (exact, float64) is pinned to 0.01, a fifth of its seed-to-seed spread: labelling the
    online arm by the gold reward instead of the proxy raises its gaps by ~0.03 (and makes the
    quick verdict agree)."""
    cfg, table = quick
    result = transformer.check(table, cfg)
    assert (result.verdict, result.failing) == transformer.EXPERIMENT.expected(quick=True)
    assert (result.verdict, result.failing) == (PARTLY, ("gap",))
    clauses = {c.name: c for c in result.clauses}
    assert clauses["decline"].holds and clauses["gap"].passes == 1
    eff = transformer.seed_effects(table, "transformer")         # float64: the same on every CPU
    np.testing.assert_allclose(eff["gap"], [-0.0065, 0.0229], atol=5e-4)
    np.testing.assert_allclose(eff["decline"], [0.0090, 0.0370], atol=5e-4)
    tab = transformer.seed_effects(table, "tabular")
    np.testing.assert_allclose(tab["gap"], [0.0038, 0.0510], atol=0.01)
    np.testing.assert_allclose(tab["decline"], [0.0319, 0.0312], atol=0.01)


def _with_effect(table: pd.DataFrame, size: float) -> pd.DataFrame:
    """Offline IPO replaced by online IPO's runs with the win rate lowered by ``size`` (and by
    ``2 size`` at the smallest tau) after step 0: a gap of at least ``size`` at matched KL and an
    offline decline of ``size`` in every seed, for both policies."""
    # 8 copies of the quick run's seeds: the check's CI then reflects the effect, not 2 seeds
    table = pd.concat([table.assign(seed=table["seed"] + 100 * k) for k in range(8)],
                      ignore_index=True)
    on = table[table["method"] == "online"]
    off = on.assign(method="offline")
    lower = (off["metric"] == "win_rate") & (off["step"] > 0)
    off.loc[lower, "value"] -= size
    off.loc[lower & (off["tau"] == off["tau"].min()), "value"] -= size
    return pd.concat([on, off], ignore_index=True)


def test_check_has_power_and_negative_controls_fail(quick, swap_methods):
    cfg, table = quick
    effect = _with_effect(table, 0.1)
    result = transformer.check(effect, cfg)                      # the effect present: agrees
    assert result.verdict == AGREES and all(
        c.holds for c in result.clauses if "early-stopping" not in c.name), result.summary()
    # reversed: online and offline swapped -> every clause fails, the tabular ones too
    swapped = transformer.check(swap_methods(effect), cfg)
    assert swapped.verdict == DISAGREES
    assert not any(c.holds for c in swapped.clauses), swapped.summary()
    # removed: offline given the online arm's results -> no gap, no decline
    removed = transformer.check(_with_effect(table, 0.0), cfg)
    assert removed.verdict == DISAGREES and set(removed.failing) == {"gap", "decline"}
    assert not any(c.holds for c in removed.clauses)


def test_committed_full_run_pins_the_disagreement(committed_run):
    """The full run (8 seeds, float64, figures/tang-transformer.csv): online above offline at
    matched KL in 6 of 8 seeds (+0.012 [-0.011, +0.034]), short of the 80% a clause needs; offline
    declines at small tau more than online in 3 of 8 (+0.009 [-0.011, +0.029]): does not agree;
    with early stopping the gap reverses in every seed."""
    cfg, table = committed_run(transformer.EXPERIMENT)
    assert cfg.dtype == "float64"
    result = transformer.check(table, cfg)
    assert (result.verdict, result.failing) == transformer.EXPERIMENT.expected()
    assert (result.verdict, result.failing) == (DISAGREES, ("gap", "decline"))
    assert {c.name: (c.passes, c.instances) for c in result.clauses} == {
        "gap": (6, 8), "decline": (3, 8), "gap-with-early-stopping": (0, 8),
        "tabular-gap": (6, 8), "tabular-decline": (2, 8),
        "tabular-gap-with-early-stopping": (3, 8)}
    assert result.effect.mean == pytest.approx(0.0116, abs=5e-4)
    eff = transformer.seed_effects(table, "transformer")
    assert eff["decline"].mean() == pytest.approx(0.0090, abs=5e-4)
    assert (eff["decline"] == 0).sum() == 4                    # offline's best tau the smallest
    assert (eff["gap_checkpoints"] < 0).all()


def test_deterministic():
    cfg = dataclasses.replace(transformer.TangTransformerConfig.quick(), steps=3, sft_steps=2,
                              tabular_steps=3, record_points=2)
    pd.testing.assert_frame_equal(transformer.run(cfg, 1), transformer.run(cfg, 1))


@pytest.mark.parametrize("field, value", [("taus", (0.1, 0.3)), ("length", 7), ("lr", 0.0),
                                          ("n_pairs", 0), ("size", "huge"), ("dtype", "half"),
                                          ("seeds_per_run", 0), ("device", "")])
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        transformer.TangTransformerConfig(**{field: value})
