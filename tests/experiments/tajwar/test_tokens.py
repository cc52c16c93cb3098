"""F3 (tokens) (Tajwar et al. 2024, arXiv:2404.14367, tajwar-tokens): the quick run with gpt-nano
shows the negative gradient's speed-up; runs are deterministic; bad configs name the field."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from coverage_sim.experiments.common import steps_to_reach
from coverage_sim.experiments.registry import TABLE_COLUMNS, mean_curve
from coverage_sim.experiments.tajwar import tokens


def _run(exp, cfg, seeds):
    return pd.concat([exp.run(cfg, s) for s in seeds], ignore_index=True)


@pytest.fixture(scope="module")
def quick():
    cfg = tokens.TajwarTokensConfig.quick()
    return cfg, _run(tokens.EXPERIMENT, cfg, [0])


def test_tajwar_tokens_negative_gradient_is_faster(quick, save_plot):
    cfg, table = quick
    assert list(table.columns) == ["reuse", "push_down"] + list(TABLE_COLUMNS)
    assert table["value"].notna().all()
    tokens.check(table, cfg)
    plain = mean_curve(table, "reward", reuse=10, push_down=0.0)
    pushed = mean_curve(table, "reward", reuse=10, push_down=cfg.push_down)
    # SFT start: the reference's expected reward (Tajwar's 0.039 at peak 70) within MC error
    assert plain.iloc[0] == pushed.iloc[0] and abs(plain.iloc[0] - 0.039) < 0.01
    assert steps_to_reach(pushed, 0.4) < steps_to_reach(plain, 0.4)
    assert (pushed - plain).loc[10:].mean() > 0.02
    kl = mean_curve(table, "kl", reuse=10, push_down=0.0)
    assert kl.iloc[0] < 0.05 and kl.iloc[-1] > 1.0           # starts at pi_ref, then moves
    save_plot(tokens.EXPERIMENT, table, cfg)


def test_tajwar_tokens_is_deterministic():
    cfg = dataclasses.replace(tokens.TajwarTokensConfig.quick(), vocab=20, length=2, steps=6,
                              sft_steps=3, eval_every=3, n_eval=16)
    a = tokens.run(cfg, 5)
    b = tokens.run(cfg, 5)
    pd.testing.assert_frame_equal(a, b)
    c = tokens.run(cfg, 6)
    assert not np.allclose(a["value"], c["value"])


@pytest.mark.parametrize("config, field, value", [
    (tokens.TajwarTokensConfig, "vocab", 1),
    (tokens.TajwarTokensConfig, "push_down", 0.0),
    (tokens.TajwarTokensConfig, "reuses", ()),
    (tokens.TajwarTokensConfig, "dtype", "float16"),
    (tokens.TajwarTokensConfig, "threshold", 1.0),
])
def test_invalid_config_names_the_field(config, field, value):
    with pytest.raises(ValueError, match=field):
        config(**{field: value})
