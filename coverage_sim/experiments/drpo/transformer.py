"""F17 (transformer) ``drpo-transformer`` — DR-PO, Chang et al. 2024 (arXiv:2404.08495): dataset
resets vs root-only exact policy gradient on a combination lock, for the tabular autoregressive
policy and a transformer.

P(y*) against iteration and iterations to solve against the lock length H, for
:class:`~coverage_sim.sequences.AutoregressiveTabular` (plain gradient ascent) and minGPT's gpt-nano
(:mod:`coverage_sim.transformer`, SGD with gradient-norm clipping), both trained exactly on the
reset objective (:func:`~coverage_sim.experiments.drpo.setting.reset_objective`). Bandit version:
``drpo-resets`` (:mod:`~coverage_sim.experiments.drpo.resets`).

Claim: resetting rollouts to prefixes of offline preferred responses makes policy optimisation
efficient where policy gradient from the start state stalls. How the transformer differs (its
shared parameters shorten the root-only plateau; the effect returns with H) and what optimiser and
initialisation change: ``EXPERIMENT.differences``.

Randomness comes from generators seeded from the run's seed (the lock's secret and the
transformer's initialisation); each run uses one torch thread
with deterministic algorithms (:func:`coverage_sim.torch_backend.reproducible`). Torch is
optional: the experiment registers
only when it imports; the config, check and plot are always importable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from coverage_sim._validation import check_in_range, check_int, check_positive
from coverage_sim.experiments.common import (HAVE_TORCH, check_device, require_torch,
                                              seed_streams, steps_to_reach)
from coverage_sim.experiments.drpo.setting import (ARXIV, PAPER, RESETS, ROOT, reset_objective,
                                                    start_distribution)
from coverage_sim.experiments.registry import Experiment, check_tuple, register
from coverage_sim.plotting import new_figure
from coverage_sim.sequences import AutoregressiveTabular, combination_lock
from coverage_sim.train import log_schedule

if HAVE_TORCH:
    import torch

    from coverage_sim.torch_backend import reproducible
    from coverage_sim.transformer import (
        CausalTransformer,
        TransformerConfig,
        sft_to_reference,
        token_logp,
    )

__all__ = ["EXPERIMENT", "DRPOTransformerConfig", "check", "plot", "run"]

_ROOT, _RESETS = "root only", "dataset resets"
_LOCK_COLOURS = {_ROOT: "C3", _RESETS: "C0"}


@dataclass(frozen=True)
class DRPOTransformerConfig:
    """Config of F17 (transformer) (``drpo-transformer``).

    Attributes:
      vocab: vocabulary size V of the lock.
      horizon: lock length H of the P(y*) panels.
      horizons: lengths of the scaling panel (must include ``horizon``); the tabular policy runs
        those with ``V**H <= 65536`` (it stores one softmax per prefix).
      max_steps: exact gradient steps per run (both policies).
      lr_tabular: plain gradient-ascent step of the tabular policy (as ``drpo-resets``).
      lr_transformer: SGD step of the transformer.
      clip: global gradient-norm clip of the transformer's SGD (minGPT's trainer uses 1.0).
      sft_steps: exact SFT steps of the transformer to the (uniform) reference; 0 keeps minGPT's
        initialisation (already within 0.03-0.05 nats of uniform at H = 6; see the differences).
      threshold: "solved" once ``P(y*) >= threshold``.
      record_points: log-spaced record steps.
      device: torch device of the transformer runs (``"cpu"``, ``"cuda"``, ...).
    """

    vocab: int = 4
    horizon: int = 6
    horizons: tuple[int, ...] = (4, 6, 8, 10)
    max_steps: int = 600
    lr_tabular: float = 1.0
    lr_transformer: float = 0.3
    clip: float = 1.0
    sft_steps: int = 0
    threshold: float = 0.5
    record_points: int = 60
    device: str = "cpu"

    def __post_init__(self):
        check_int(self.vocab, "vocab", minimum=2)
        check_int(self.horizon, "horizon", minimum=1)
        check_tuple(self.horizons, "horizons", lambda v, name: check_int(v, name, minimum=1))
        if self.horizon not in self.horizons:
            raise ValueError(f"horizons must include horizon={self.horizon}, got "
                             f"{self.horizons!r}")
        if self.vocab ** self.horizon > 65536:
            raise ValueError(f"horizon must keep vocab**horizon <= 65536 (the tabular policy's "
                             f"panel), got vocab={self.vocab}, horizon={self.horizon}")
        check_int(self.max_steps, "max_steps", minimum=1)
        check_positive(self.lr_tabular, "lr_tabular")
        check_positive(self.lr_transformer, "lr_transformer")
        check_positive(self.clip, "clip")
        check_int(self.sft_steps, "sft_steps")
        check_in_range(self.threshold, "threshold", 0.0, 1.0, low_open=True, high_open=True)
        check_int(self.record_points, "record_points", minimum=2)
        check_device(self.device)

    @classmethod
    def quick(cls) -> DRPOTransformerConfig:
        return cls(horizons=(6, 10), max_steps=300, record_points=30)


def _start_distribution(method: str, horizon: int) -> np.ndarray:
    """The bandit F17's start distribution (:func:`start_distribution`) for our labels."""
    return start_distribution(ROOT if method == _ROOT else RESETS, horizon)


def _path_nodes(vocab: int, target: np.ndarray) -> np.ndarray:
    """Prefix-tree node of each prefix ``y*_{<t}`` (layout of :func:`coverage_sim.sequences.
    prefix_nodes`: ``offset_t + value(y*_{<t})``)."""
    nodes, value = [], 0
    for t in range(target.size):
        nodes.append((vocab ** t - 1) // (vocab - 1) + value)
        value = value * vocab + int(target[t])
    return np.asarray(nodes, dtype=np.int64)


def _train_tabular_lock(env, method, steps, lr, record):
    """Exact gradient ascent on J for :class:`~coverage_sim.sequences.AutoregressiveTabular`.

    Only the softmaxes on y*'s path have non-zero gradient (r = 0 off y*), so only they are read
    and updated; the parameter vector is the full per-prefix policy. Returns on-path token
    probabilities ``(R, H)`` at the ``record`` steps.
    """
    V, H = env.vocab, env.length
    target = np.array(env.secret)
    policy = AutoregressiveTabular(env, init="ref")
    theta = policy.init_params(env, np.random.default_rng(0)).reshape(policy._tree_shape)[0]
    nodes = _path_nodes(V, target)
    rho = _start_distribution(method, H)
    onehot = np.eye(V)[target]
    out = np.empty((len(record), H))
    r = 0
    for step in range(steps + 1):
        logits = theta[nodes]
        lsm = logits - logits.max(axis=1, keepdims=True)
        lsm = lsm - np.log(np.exp(lsm).sum(axis=1, keepdims=True))
        tlp = lsm[np.arange(H), target]
        while r < len(record) and record[r] == step:
            out[r] = np.exp(tlp)
            r += 1
        if step == steps:
            break
        _, W = reset_objective(tlp[None], target[None], np.ones(1), target, rho)
        theta[nodes] += lr * W[0][:, None] * (onehot - np.exp(lsm))
    return out


def _train_transformer_lock(env, method, config, init_seed, record):
    """Exact gradient ascent on J for gpt-nano (SGD with gradient-norm clipping)."""
    H = env.length
    target = np.array(env.secret)
    model = CausalTransformer(TransformerConfig(vocab=env.vocab, n_prompts=1, length=H),
                              seed=init_seed, device=config.device)
    if config.sft_steps:
        sft_to_reference(model, env, steps=config.sft_steps, lr=1e-2)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr_transformer)
    rho = _start_distribution(method, H)
    prompts = torch.zeros(1, dtype=torch.long, device=model.device)
    y = torch.tensor(target[None], dtype=torch.long, device=model.device)
    out = np.empty((len(record), H))
    r = 0
    for step in range(config.max_steps + 1):
        tlp = token_logp(model, prompts, y).gather(2, y[:, :, None])[:, :, 0]     # (1, H)
        lp_np = tlp.detach().double().cpu().numpy()
        while r < len(record) and record[r] == step:
            out[r] = np.exp(lp_np[0])
            r += 1
        if step == config.max_steps:
            break
        _, W = reset_objective(lp_np, target[None], np.ones(1), target, rho)
        opt.zero_grad()
        # -sum W * log pi has gradient -dJ/dtheta (W is dJ/dlog pi, held fixed)
        (-(torch.as_tensor(W, dtype=tlp.dtype, device=tlp.device) * tlp).sum()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        opt.step()
    return out


def run(config: DRPOTransformerConfig, seed: int) -> pd.DataFrame:
    """P(y*) and on-path token probabilities against iteration, per policy, method and horizon.

    The lock's secret is ``combination_lock(vocab, H, seed=seed).secret`` (the same prefix for
    every H); the transformer's initialisation comes from the seed as well.
    """
    require_torch()
    record = log_schedule(config.max_steps, config.record_points)
    (init_seed,) = seed_streams(seed, 1)
    frames = []
    with reproducible(threads=1, deterministic=True):
        for H in config.horizons:
            env = combination_lock(config.vocab, H, seed=seed)
            for method in (_ROOT, _RESETS):
                runs = {}
                if config.vocab ** H <= 65536:
                    runs["tabular"] = _train_tabular_lock(env, method, config.max_steps,
                                                          config.lr_tabular, record)
                runs["transformer"] = _train_transformer_lock(env, method, config, init_seed,
                                                              record)
                for policy, probs in runs.items():
                    keys = {"policy": policy, "method": method, "horizon": H}
                    frames += [pd.DataFrame({**keys, "position": -1, "seed": seed, "step": record,
                                             "metric": "p_target", "value": probs.prod(axis=1)})]
                    if H == config.horizon:
                        frames += [pd.DataFrame({**keys, "position": k, "seed": seed,
                                                 "step": record, "metric": "p_token",
                                                 "value": probs[:, k]}) for k in range(H)]
    return pd.concat(frames, ignore_index=True)


def _lock_curves(table, policy, method, horizon) -> pd.DataFrame:
    """P(y*) against step, one column per seed."""
    rows = table[(table["metric"] == "p_target") & (table["policy"] == policy)
                 & (table["method"] == method) & (table["horizon"] == horizon)]
    return rows.pivot_table(index="step", columns="seed", values="value")


def _solve_steps(table, policy, method, horizon, threshold, budget) -> np.ndarray:
    """Per seed: first recorded step with P(y*) >= threshold (``budget`` if never: censored)."""
    curves = _lock_curves(table, policy, method, horizon)
    return np.array([min(steps_to_reach(curves[s], threshold), budget) for s in curves.columns])


def plot(table: pd.DataFrame, config: DRPOTransformerConfig):
    """(a) tabular and (b) transformer P(y*) against iteration at ``horizon`` (thin: seeds; thick:
    median); (c) iterations to solve against H (median over seeds; open markers: not solved
    within the budget in at least half of the seeds)."""
    fig, axes = new_figure(ncols=3, width=2.9, height=2.9)
    V, H = config.vocab, config.horizon
    titles = {"tabular": f"(a) tabular autoregressive, GD lr {config.lr_tabular:g}",
              "transformer": f"(b) gpt-nano, SGD lr {config.lr_transformer:g}, clip "
                             f"{config.clip:g}"}
    for ax, policy in zip(axes[0, :2], ("tabular", "transformer")):
        for method in (_ROOT, _RESETS):
            curves = _lock_curves(table, policy, method, H)
            curves = curves[curves.index >= 1]
            for s in curves.columns:
                ax.plot(curves.index, curves[s], color=_LOCK_COLOURS[method], alpha=0.3,
                        linewidth=0.8)
            ax.plot(curves.index, curves.median(axis=1), color=_LOCK_COLOURS[method],
                    label=method + (" (h uniform)" if method == _RESETS else " (exact PG)"))
        ax.axhline(float(V) ** -H, color="grey", linestyle=":", linewidth=1.0,
                   label=f"$V^{{-H}}$ = {float(V) ** -H:.1e}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        lowest = table[(table["metric"] == "p_target") & (table["policy"] == policy)
                       & (table["horizon"] == H)]["value"].min()
        ax.set_ylim(max(min(lowest, float(V) ** -H) / 3, 1e-12), 1.5)
        ax.set_xlabel("iteration (exact gradient step)")
        ax.set_ylabel(r"$P(y^*)$ from the root")
        ax.set_title(titles[policy] + f"\nlock V = {V}, H = {H}", fontsize=8.5)
    axes[0, 0].legend(fontsize=7, loc="lower right")
    ax = axes[0, 2]
    for policy, ls in (("tabular", "--"), ("transformer", "-")):
        hs = sorted(table[(table["policy"] == policy)]["horizon"].unique())
        for method, marker in ((_ROOT, "s"), (_RESETS, "o")):
            med, cens = [], []
            for h in hs:
                s = _solve_steps(table, policy, method, h, config.threshold, config.max_steps)
                med.append(float(np.median(s)))
                cens.append(np.mean(s >= config.max_steps) >= 0.5)
            med, cens = np.array(med), np.array(cens)
            colour = _LOCK_COLOURS[method]
            ax.plot(hs, med, color=colour, linestyle=ls, label=f"{policy}, {method}")
            ax.scatter(np.array(hs)[~cens], med[~cens], color=colour, marker=marker, s=18)
            ax.scatter(np.array(hs)[cens], med[cens], facecolors="none", edgecolors=colour,
                       marker=marker, s=30)
    ax.axhline(config.max_steps, color="grey", linestyle=":", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("lock length H")
    ax.set_ylabel(f"iterations to $P(y^*) \\geq {config.threshold:g}$ (median)")
    ax.set_title(f"(c) scaling (open: budget {config.max_steps} hit)", fontsize=8.5)
    ax.legend(fontsize=6.5, loc="lower right")
    return fig


def check(table: pd.DataFrame, config: DRPOTransformerConfig) -> None:
    """DR-PO's F17 claim for both policies:

    1. tabular, at ``horizon``: both start at ``V^-H`` (rel. 1e-9); resets solve the lock; root-only
       needs >= 4x as many iterations or does not solve it within the budget, and is still
       <= 10 V^-H when the resets solve it (the ``drpo-resets`` shape);
    2. transformer, at the largest horizon: the median iterations-to-solve over seeds (censored at
       the budget) is smaller with resets than root-only, and resets' mean final P(y*) exceeds
       root-only's by >= 0.2.
    """
    V, H, budget = config.vocab, config.horizon, config.max_steps
    floor = float(V) ** -H
    for method in (_ROOT, _RESETS):
        start = _lock_curves(table, "tabular", method, H).iloc[0]
        assert np.allclose(start, floor, rtol=1e-9), (
            f"tabular {method}: initial P(y*) {start.tolist()} is not V^-H = {floor:.6g}")
    t_reset = _solve_steps(table, "tabular", _RESETS, H, config.threshold, budget)
    t_root = _solve_steps(table, "tabular", _ROOT, H, config.threshold, budget)
    assert np.all(t_reset < budget), f"tabular: resets do not solve H = {H} in {budget} steps"
    assert np.all(t_root >= np.minimum(4.0 * t_reset, budget)), (
        f"tabular: root-only needs {t_root.tolist()} iterations vs {t_reset.tolist()} with "
        f"resets (< 4x, and solved within the budget {budget})")
    root = _lock_curves(table, "tabular", _ROOT, H)
    at = root[root.index <= t_reset.max()].iloc[-1]
    assert np.all(at <= 10.0 * floor), (
        f"tabular: root-only P(y*) = {at.max():.3g} when resets solve the lock, not stalled "
        f"near V^-H = {floor:.3g}")
    big = max(config.horizons)
    t_reset = _solve_steps(table, "transformer", _RESETS, big, config.threshold, budget)
    t_root = _solve_steps(table, "transformer", _ROOT, big, config.threshold, budget)
    assert np.median(t_reset) < np.median(t_root), (
        f"transformer, H = {big}: resets' median iterations to solve {np.median(t_reset):g} is not "
        f"below root-only's {np.median(t_root):g} (budget {budget})")
    final_reset = _lock_curves(table, "transformer", _RESETS, big).iloc[-1].mean()
    final_root = _lock_curves(table, "transformer", _ROOT, big).iloc[-1].mean()
    assert final_reset >= final_root + 0.2, (
        f"transformer, H = {big}: final mean P(y*) with resets {final_reset:.3f} is not >= 0.2 "
        f"above root-only's {final_root:.3f}")


if HAVE_TORCH:  # registered only when torch imports
    EXPERIMENT = register(Experiment(
        id="drpo-transformer", figure="F17 (transformer)",
        title="Transfer: dataset resets vs root-only exact policy gradient on a combination lock, "
              "tabular autoregressive policy and gpt-nano",
        paper=PAPER, arxiv=ARXIV,
        claim=("Resetting rollouts to prefixes of offline preferred responses makes policy "
               "optimisation efficient where policy gradient from the start state stalls "
               "(combination lock: reward only on y*, P(y*) = V^-H initially)."),
        differences=(
            "Lock V = 4 with a random secret per seed (combination_lock), H in {4, 6, 8, 10}, 600 "
            "exact iterations, 4 seeds. Exact objective J = sum_h rho_h J_h from per-position "
            "log-probs (reset_objective), summed over the reward's support (y* alone), rho = e_0 "
            "(root only) or uniform over h = 0..H-1; no KL term or reward model (DR-PO: PPO with "
            "a learned reward and KL). (a) AutoregressiveTabular (one softmax per prefix; only "
            "y*'s path moves), plain gradient ascent lr 1: exactly drpo-resets' dynamics (tested), "
            "so only H <= 8 (4^H/3 prefixes). (b) gpt-nano (float64, minGPT init, no SFT: it is "
            "already within 0.03-0.05 nats of the uniform reference at H = 6), SGD lr 0.3 with "
            "global "
            "gradient-norm clip 1 (minGPT's trainer clip; without it SGD diverges once P(y*) ~ 1, "
            "because the exact gradient grows by ~V^H over training). Result: tabular as in the "
            "bandit (H = 6: resets solve at 147 iterations, root-only is at P(y*) = 1e-3 after "
            "600). The transformer's root-only gradient is as small (~V^-H) but its shared "
            "parameters add the per-position terms coherently, so the plateau is far shorter: at "
            "H = 6 root-only solves in 44-182 iterations vs 10-50 with resets, i.e. the effect "
            "nearly vanishes at the brief's H = 6. It returns with H: root-only median 10, 47, "
            "430 and > 600 iterations (H = 4, 6, 8, 10; no seed solves H = 10), resets 15-40 "
            "(23-281 at H = 10, all seeds). Transformer-only effect: resets first lower P(y*) "
            "from the root (to 1e-9-1e-17 at H = 8-10) because the deep-prefix terms dominate "
            "the gradient and, through shared parameters, push down the correct tokens of "
            "earlier positions before those are learned; the tabular policy has no such "
            "interference. Optimiser and init matter (prototype runs, H = 6, 10 secrets): with "
            "Adam (lr 1e-3) the exact root-only gradient is rescaled and root-only solves every "
            "lock in 34-78 iterations (in exact mode the stall is only a gradient-magnitude "
            "effect; with sampled rollouts it is an exploration failure); and after SFT to the "
            "uniform reference gpt-nano's outputs become position-independent, and Adam-trained "
            "resets then get trapped in 6 of 10 locks (a position pushed to ~0 has exact PG "
            "weight ~0)."),
        config=DRPOTransformerConfig, run=run, plot=plot, check=check, seeds=4))
