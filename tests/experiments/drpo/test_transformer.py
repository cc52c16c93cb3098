"""F17 (transformer) (DR-PO, Chang et al. 2024, arXiv:2404.08495, drpo-transformer): the tabular arm
follows drpo-resets exactly; the quick run shows resets beating root-only for both policies; every
clause fails with the methods' roles swapped or the resets removed; the committed full run's
verdict and numbers are pinned; runs are deterministic; bad configs name the field."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from coverage_sim.experiments.drpo import resets, transformer
from coverage_sim.experiments.drpo.setting import METHODS, RESETS, ROOT
from coverage_sim.experiments.registry import TABLE_COLUMNS
from coverage_sim.experiments.verdict import AGREES, DISAGREES
from coverage_sim.sequences import combination_lock


def _run(exp, cfg, seeds):
    return pd.concat([exp.run(cfg, s) for s in seeds], ignore_index=True)


def test_tabular_lock_training_equals_drpo_resets():
    """The tabular arm of drpo-transformer (AutoregressiveTabular + reset_objective) follows the
    bandit module's on-path recursion exactly (uniform start: the secret does not matter)."""
    V, H, steps = 4, 5, 200
    record = np.arange(0, steps + 1, 20)
    _, p_path, _, _ = resets.train_lock(V, [H], METHODS, 1.0, steps, record, 0.5)
    env = combination_lock(V, H, seed=3)
    for b, (method, ours) in enumerate([(transformer._ROOT, ROOT), (transformer._RESETS, RESETS)]):
        probs = transformer._train_tabular_lock(env, method, steps, 1.0, record)
        assert np.allclose(probs.prod(axis=1), p_path[:, b], rtol=1e-10), ours


@pytest.fixture(scope="module")
def quick():
    cfg = transformer.DRPOTransformerConfig.quick()
    return cfg, _run(transformer.EXPERIMENT, cfg, [0, 1])


def test_drpo_transformer_resets_beat_root(quick, save_plot):
    cfg, table = quick
    assert list(table.columns) == ["policy", "method", "horizon", "position"] + list(TABLE_COLUMNS)
    result = transformer.check(table, cfg)
    assert result.verdict == AGREES, result.summary()
    assert [c.name for c in result.clauses if c.paper] == ["resets-faster", "resets-ahead"]
    # both policies start at V^-H: the start of every lock is the uniform reference
    for policy in ("tabular", "transformer"):
        start = table[(table["step"] == 0) & (table["metric"] == "p_target")
                      & (table["policy"] == policy)]
        np.testing.assert_allclose(start["value"], 4.0 ** -start["horizon"].astype(float),
                                   rtol=1e-9 if policy == "tabular" else 0.5)
    # tabular: at the end of the budget resets are solved, root-only is still near V^-H
    tab_reset = transformer._lock_curves(table, "tabular", transformer._RESETS, 6).iloc[-1]
    tab_root = transformer._lock_curves(table, "tabular", transformer._ROOT, 6).iloc[-1]
    assert np.all(tab_reset > 0.9) and np.all(tab_root < 10 * 4.0 ** -6)
    # transformer, H = 10: resets' P(y*) above root-only's by a margin at the last step
    tr_reset = transformer._lock_curves(table, "transformer", transformer._RESETS, 10).iloc[-1]
    tr_root = transformer._lock_curves(table, "transformer", transformer._ROOT, 10).iloc[-1]
    tr_reset, tr_root = tr_reset.mean(), tr_root.mean()
    assert tr_reset > tr_root + 0.3
    # per-token rows only for the main horizon, and the transformer has no tabular-size limit
    tok = table[table["metric"] == "p_token"]
    assert set(tok["horizon"]) == {6} and set(tok["position"]) == set(range(6))
    assert set(table[table["policy"] == "tabular"]["horizon"]) == {6}
    save_plot(transformer.EXPERIMENT, table, cfg)


def test_every_clause_fails_without_the_effect(quick):
    cfg, table = quick
    # reversed: resets and root-only swapped -> every clause fails, the tabular ones too
    swapped = table.assign(method=table["method"].map({transformer._ROOT: transformer._RESETS,
                                                      transformer._RESETS: transformer._ROOT}))
    result = transformer.check(swapped, cfg)
    assert result.verdict == DISAGREES
    assert not any(c.holds for c in result.clauses), result.summary()
    # removed: the resets runs replaced by root-only's -> no paper or tabular clause holds
    root = table[table["method"] == transformer._ROOT]
    removed = pd.concat([root, root.assign(method=transformer._RESETS)], ignore_index=True)
    result = transformer.check(removed, cfg)
    assert result.verdict == DISAGREES and result.effect.values == (0.0, 0.0)
    assert not any(c.holds for c in result.clauses), result.summary()


def test_committed_full_run_verdict_and_numbers(committed_run):
    """The full run (4 locks, figures/drpo-transformer.csv): at H = 10 resets solve every lock in
    23-281 iterations and root-only none; the transformer's resets are faster in 0 of 4 locks at
    H = 4, 3 of 4 at H = 6 and 4 of 4 at H = 8 (the plateau returns with H)."""
    cfg, table = committed_run(transformer.EXPERIMENT)
    result = transformer.check(table, cfg)
    assert (result.verdict, result.failing) == transformer.EXPERIMENT.expected() == (AGREES, ())
    assert {c.name: c.passes for c in result.clauses} == {
        "resets-faster": 4, "resets-ahead": 4, "resets-faster-H4": 0, "resets-faster-H6": 3,
        "resets-faster-H8": 4, "tabular-resets-faster": 4, "tabular-root-stalls": 4}
    assert result.effect.mean == pytest.approx(0.999, abs=1e-3)


def test_drpo_transformer_is_deterministic():
    cfg = transformer.DRPOTransformerConfig(horizon=3, horizons=(3,), max_steps=5, record_points=3)
    pd.testing.assert_frame_equal(transformer.run(cfg, 1), transformer.run(cfg, 1))


@pytest.mark.parametrize("config, field, value", [
    (transformer.DRPOTransformerConfig, "horizons", (4, 8)),
    (transformer.DRPOTransformerConfig, "clip", -1.0),
    (transformer.DRPOTransformerConfig, "horizon", 9),
    (transformer.DRPOTransformerConfig, "max_steps", 0),
])
def test_invalid_config_names_the_field(config, field, value):
    with pytest.raises(ValueError, match=field):
        config(**{field: value})
