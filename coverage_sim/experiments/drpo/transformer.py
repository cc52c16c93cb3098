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
                                              seed_clause, seed_streams, steps_to_reach)
from coverage_sim.experiments.drpo.setting import (ARXIV, PAPER, RESETS, ROOT, reset_objective,
                                                    start_distribution)
from coverage_sim.experiments.registry import Experiment, check_tuple, register
from coverage_sim.experiments.verdict import CheckResult, Effect
from coverage_sim.plotting import new_figure
from coverage_sim.sequences import AutoregressiveTabular, combination_lock
from coverage_sim.train import log_schedule

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
    import torch

    from coverage_sim.transformer import (CausalTransformer, TransformerConfig, sft_to_reference,
                                          token_logp)

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
    from coverage_sim.torch_backend import reproducible

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
    # (c)'s column is wider: its legend sits on its right, off the curves and markers
    fig, axes = new_figure(ncols=3, width=3.3, height=2.9,
                           gridspec_kw={"width_ratios": (1.0, 1.0, 1.45)})
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
    # The methods are named on (a)'s curves (a legend there is crossed by the resets' rise or
    # hides root-only's slow start; the colours are the same in (b) and (c)); the legend keeps
    # the V^-H floor, in the corner the curves leave empty.
    ax = axes[0, 0]
    ax.text(1.3, 2e-2, "dataset resets", color=_LOCK_COLOURS[_RESETS], fontsize=7,
            ha="left", va="center")
    ax.text(0.9 * ax.get_xlim()[1], 1.5e-3, "root only", color=_LOCK_COLOURS[_ROOT], fontsize=7,
            ha="right", va="center")
    ax.legend(handles=ax.get_lines()[-1:], fontsize=7, loc="upper left", frameon=False)
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
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return fig


def _faster(table, policy, horizon, threshold):
    """Per seed: ``(iterations to solve with resets, with root-only, resets solve in fewer)``; an
    unsolved run takes ``inf`` iterations, so resets that solve beat a root-only run that never
    does."""
    t_reset = _solve_steps(table, policy, _RESETS, horizon, threshold, np.inf)
    t_root = _solve_steps(table, policy, _ROOT, horizon, threshold, np.inf)
    return t_reset, t_root, np.isfinite(t_reset) & (t_reset < t_root)


def _faster_clause(name, table, policy, horizon, config, paper):
    t_reset, t_root, faster = _faster(table, policy, horizon, config.threshold)
    roots = ", ".join(f"{t:g}" if np.isfinite(t) else "never" for t in t_root)
    return seed_clause(
        name, f"{policy}, H = {horizon}: with resets P(y*) reaches {config.threshold:g} within "
        f"{config.max_steps} iterations, in fewer than root-only needs (or root-only never does)",
        np.where(np.isfinite(t_reset), t_reset, np.nan), faster, paper=paper,
        what=f"iterations with resets (root-only: {roots})")


def check(table: pd.DataFrame, config: DRPOTransformerConfig) -> CheckResult:
    """DR-PO's F17 claim on each lock (instances = seeds: each draws the secret and the
    transformer's initialisation; each clause's detail gives the seed mean with its 95% CI).

    Paper clauses, for the transformer at the largest horizon (where root-only stalls):

    - ``resets-faster``: with resets P(y*) reaches ``threshold`` within the budget, in fewer
      iterations than root-only (which may never reach it);
    - ``resets-ahead``: at the end of the budget P(y*) with resets is at least 0.2 above
      root-only's.

    ``paper=False``: the tabular policy at ``horizon``, as the bandit figure ``drpo-resets``
    (``tabular-resets-faster``: resets solve and root-only needs at least 4x as many iterations or
    never solves; ``tabular-root-stalls``: root-only is still at most 10 V^-H when resets solve),
    and ``resets-faster-H<h>`` for the transformer's other horizons (the finding that its shared
    parameters shorten the root-only plateau at small H).

    Effect: final P(y*), resets minus root-only, transformer at the largest horizon, per seed.
    """
    V, H, thr = config.vocab, config.horizon, config.threshold
    floor = float(V) ** -H
    big = max(config.horizons)
    clauses = []
    clauses.append(_faster_clause("resets-faster", table, "transformer", big, config, True))
    final_reset = _lock_curves(table, "transformer", _RESETS, big).iloc[-1]
    final_root = _lock_curves(table, "transformer", _ROOT, big).iloc[-1]
    lead = (final_reset - final_root).to_numpy()
    clauses.append(seed_clause(
        "resets-ahead", f"transformer, H = {big}: after {config.max_steps} iterations P(y*) with "
        "resets is at least 0.2 above root-only's", lead, lead >= 0.2, what="lead"))
    for h in sorted(set(config.horizons) - {big}):
        clauses.append(_faster_clause(f"resets-faster-H{h}", table, "transformer", h, config,
                                      False))
    t_reset, t_root, _ = _faster(table, "tabular", H, thr)
    clauses.append(seed_clause(
        "tabular-resets-faster", f"tabular, H = {H}: resets solve within {config.max_steps} "
        "iterations and root-only needs at least 4x as many or never solves",
        np.where(np.isfinite(t_root), t_root, config.max_steps) / t_reset,
        np.isfinite(t_reset) & (t_root >= 4.0 * t_reset), paper=False,
        what="root-only / resets iterations (unsolved at the budget)"))
    root = _lock_curves(table, "tabular", _ROOT, H)
    at = np.array([root[s][root.index <= (t if np.isfinite(t) else config.max_steps)].iloc[-1]
                   for s, t in zip(root.columns, t_reset)])
    clauses.append(seed_clause(
        "tabular-root-stalls", f"tabular, H = {H}: when resets solve, root-only's P(y*) is still "
        f"at most 10 V^-H = {10 * floor:.3g} (resets must solve)", at / floor,
        np.isfinite(t_reset) & (at <= 10.0 * floor), paper=False,
        what="root-only P(y*) / V^-H"))
    effect = Effect(f"final P(y*), resets - root-only (transformer, H = {big})", lead)
    return CheckResult(clauses=tuple(clauses), effect=effect, mode="exact")


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
            "(23-281 at H = 10, all seeds). The check (per lock, i.e. per seed) asserts the "
            "claim for the transformer at H = 10: resets faster and at least 0.2 ahead at the "
            "end, in 4 of 4 seeds; at H = 4 resets are faster in 0 of 4 seeds, at H = 6 in 3 of "
            "4, at H = 8 in 4 of 4 (reported, not the paper's clause). Transformer-only effect: "
            "resets first lower P(y*) "
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
        config=DRPOTransformerConfig, run=run, plot=plot, check=check, seeds=4,
        needs_kernels=False))
