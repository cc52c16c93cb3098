"""F6 (transformer) (Tang et al. 2024, arXiv:2405.08448, tang-transformer) on the token task with
token structure: the quick run (a block of seeds trained as one stack), the check's power (a table
with the effect passes) and its negative control (the online arm given the offline arm's results
fails), determinism, bad configs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from coverage_sim.experiments.registry import TABLE_COLUMNS
from coverage_sim.experiments.tang import transformer


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
    assert 0.0 <= transformer.pass_fraction(table) <= 1.0
    save_plot(transformer.EXPERIMENT, table, cfg)


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
    transformer.check(effect, cfg)                               # the effect present: passes
    with pytest.raises(AssertionError, match="transformer"):
        transformer.check(swap_methods(effect), cfg)             # online and offline swapped
    # negative control: offline given the online arm's results -> no gap, no decline
    with pytest.raises(AssertionError, match="transformer"):
        transformer.check(_with_effect(table, 0.0), cfg)


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
