"""F6 (scaling) ``tang-scaling`` — Tang et al. 2024 (arXiv:2405.08448), the policy-scale ablation:
does a larger policy narrow the online/offline gap?

On the token task of :mod:`.token_task` (a reward with token structure, so that shared parameters
matter), online IPO (proxy labels) and offline IPO (n gold pairs) are run at one tau from the same
SFT'd transformer, for three transformer widths at fixed depth (:data:`SIZES` ``w4``, ``w16``,
``w32``: 544, 6.8k and 26k parameters), many seeds each (a seed draws the offline data, hence the
proxy, and the initialisation). The gap is the final gold win rate (against ``pi_ref``) of online
minus offline IPO after the same number of steps. The tabular softmax over the same sequences, on
the same data (Adam, the bandit F6's optimiser), is the no-sharing reference.

Claim (Tang et al.): scaling the policy (~16x) narrows the gap but does not close it. The check
(:func:`check`) evaluates each clause on each seed, paired across sizes, with the seed means and
95% confidence intervals beside the fractions; the result and where the setting differs:
``EXPERIMENT.differences``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from coverage_sim._validation import check_choice, check_int, check_positive
from coverage_sim.experiments.common import HAVE_TORCH, require_torch, seed_clause
from coverage_sim.experiments.registry import Experiment, check_tuple, mean_ci, register
from coverage_sim.experiments.tang.setting import ARXIV, PAPER
from coverage_sim.experiments.tang.token_task import (MATERIAL_GAP, METHODS, SIZES,
                                                      TokenTaskConfig, block_seeds, final_gaps,
                                                      seed_data, sft_stack, tidy_history,
                                                      token_task_env, train_methods)
from coverage_sim.experiments.verdict import DISAGREES, CheckResult, Effect
from coverage_sim.objectives import objective
from coverage_sim.plotting import new_figure
from coverage_sim.train import log_schedule, train_many

__all__ = ["EXPERIMENT", "SIZES", "ScalingConfig", "check", "n_parameters", "plot", "run",
           "scaling_env", "size_gaps"]

_COLOURS = {"online": "C0", "offline": "C3"}
TABULAR = "tabular"


@dataclass(frozen=True)
class ScalingConfig(TokenTaskConfig):
    """Config of F6 (scaling) (``tang-scaling``); shared fields in
    :class:`~coverage_sim.experiments.tang.token_task.TokenTaskConfig`.

    Attributes:
      sizes: transformer sizes (keys of :data:`SIZES`), smallest first; at least three.
      tau: the IPO strength of every run (small: the regime where offline IPO over-fits).
      tabular_steps: Adam steps of the tabular reference.
      tabular_lr: its Adam step size (the bandit F6's 0.05).
    """

    sizes: tuple[str, ...] = ("w4", "w16", "w32")
    tau: float = 0.01
    tabular_steps: int = 1000
    tabular_lr: float = 0.05

    def __post_init__(self):
        super().__post_init__()
        check_tuple(self.sizes, "sizes", lambda v, name: check_choice(v, name, SIZES))
        if len(self.sizes) < 3 or len(set(self.sizes)) != len(self.sizes):
            raise ValueError(f"sizes must hold at least three distinct sizes, got {self.sizes!r}")
        check_positive(self.tau, "tau")
        check_int(self.tabular_steps, "tabular_steps", minimum=1)
        check_positive(self.tabular_lr, "tabular_lr")

    @classmethod
    def quick(cls) -> ScalingConfig:
        return cls(steps=60, sft_steps=60, record_points=3, tabular_steps=200, seeds_per_run=2)


def scaling_env(config: ScalingConfig):
    """The task (:func:`~coverage_sim.experiments.tang.token_task.token_task_env`)."""
    return token_task_env(config)


def run(config: ScalingConfig, seed: int) -> pd.DataFrame:
    """KL, gold win rate and reward at log-spaced checkpoints, per size, method and seed of the
    block ``seed`` (``seeds_per_run`` seeds, trained as one stack per size and method), plus the
    tabular reference and each model's SFT residual (metric ``sft_kl``, step 0)."""
    require_torch()
    env = token_task_env(config)
    seeds = block_seeds(config, seed)
    inputs = [seed_data(env, config, s) for s in seeds]
    datas, r_hats, init_seeds = zip(*inputs)
    frames = []
    tab_record = log_schedule(config.tabular_steps, config.record_points)
    for method in METHODS:
        objs = [objective("online_ipo", beta=config.tau, reward=r) if method == "online"
                else objective("ipo", beta=config.tau) for r in r_hats]
        for s, obj, d in zip(seeds, objs, datas):
            (tab,) = train_many(env.bandit, [obj], None if method == "online" else d,
                                steps=config.tabular_steps, lr=config.tabular_lr, seed=s,
                                record=tab_record)
            frames += tidy_history({"size": TABULAR, "method": method}, s, tab.history)
    for size in config.sizes:
        stack, residual = sft_stack(env, size, config, init_seeds)
        frames.append(pd.DataFrame({"size": size, "method": "sft", "seed": seeds, "step": 0,
                                    "metric": "sft_kl", "value": residual}))
        for method, histories in train_methods(env, stack, datas, r_hats, config.tau,
                                               config).items():
            for s, history in zip(seeds, histories):
                frames += tidy_history({"size": size, "method": method}, s, history)
    return pd.concat(frames, ignore_index=True)


def size_gaps(table: pd.DataFrame, sizes) -> pd.DataFrame:
    """Per seed (rows) and size (columns, in ``sizes`` order): online minus offline final win
    rate."""
    gaps = final_gaps(table[table["method"].isin(list(METHODS))], "size")
    return gaps[[s for s in sizes if s in gaps.columns]]


def _fmt(ci) -> str:
    return f"{ci[0]:+.3f} [{ci[1]:+.3f}, {ci[2]:+.3f}]"


def plot(table: pd.DataFrame, config: ScalingConfig):
    """(a) online - offline final win rate per size, seeds and mean with 95% CI (tabular
    reference at the right); (b) final win rate per size and method; (c) win rate against
    KL(pi || pi_ref) along training, mean over seeds, per size."""
    fig, axes = new_figure(ncols=3, width=2.9, height=3.0)
    order = list(config.sizes) + [TABULAR]
    gaps = size_gaps(table, order)
    ax = axes[0, 0]
    x = np.arange(len(order))
    for i, s in enumerate(order):
        vals = gaps[s].dropna().to_numpy()
        jitter = np.linspace(-0.15, 0.15, vals.size) if vals.size > 1 else np.zeros(1)
        ax.scatter(i + jitter, vals, s=7, color="0.6", zorder=1)
        mean, lo, hi = mean_ci(vals)
        ax.errorbar(i, mean, yerr=[[mean - lo], [hi - mean]] if np.isfinite(lo) else None,
                    fmt="o", color="k" if s != TABULAR else "0.4", capsize=3, zorder=2)
    ax.axhline(0.0, color="k", linewidth=0.8)
    ax.set_xticks(x, [f"{s}\n({n_parameters(s, config.vocab, config.length):,})"
                      if s != TABULAR else "tabular\n(no sharing)" for s in order], fontsize=7)
    ax.set_ylabel("win-rate gap (online − offline)")
    ax.set_title(f"(a) final gap, τ = {config.tau:g} (95% CI)", fontsize=8.5)
    ax = axes[0, 1]
    rows = table[(table["metric"] == "win_rate") & table["method"].isin(list(METHODS))]
    last = rows[rows["step"] == rows.groupby(["size", "method", "seed"])["step"].transform("max")]
    for k, method in enumerate(METHODS):
        for i, s in enumerate(order):
            vals = last[(last["size"] == s) & (last["method"] == method)]["value"].to_numpy()
            mean, lo, hi = mean_ci(vals)
            ax.errorbar(i + (k - 0.5) * 0.2, mean,
                        yerr=[[mean - lo], [hi - mean]] if np.isfinite(lo) else None, fmt="o",
                        color=_COLOURS[method], capsize=2,
                        label=METHODS[method] if i == 0 else None)
    ax.set_xticks(x, order, fontsize=7)
    ax.set_ylabel("final gold win rate vs π_ref")
    ax.set_title("(b) final win rate", fontsize=8.5)
    ax = axes[0, 2]
    styles = dict(zip(order, ["-", "--", ":", "-.", (0, (1, 3))]))
    for method in METHODS:
        for s in order:
            sub = table[(table["size"] == s) & (table["method"] == method)]
            wide = sub.pivot_table(index="step", columns="metric", values="value",
                                   aggfunc="mean")
            ax.plot(wide["kl"], wide["win_rate"], color=_COLOURS[method], linestyle=styles[s],
                    label=s if method == "online" else None)
    ax.set_xlabel("KL(π ‖ π_ref)  [nats]")
    ax.set_ylabel("gold win rate vs π_ref")
    ax.set_title("(c) training paths (mean over seeds)", fontsize=8.5)
    ax.legend(fontsize=6.5, loc="lower right", title="size (blue online, red offline)",
              title_fontsize=6)
    fig.legend(*axes[0, 1].get_legend_handles_labels(), loc="outside lower center", ncol=2)
    return fig


def n_parameters(size: str, vocab: int, length: int) -> int:
    """Parameters of a :data:`SIZES` transformer for one prompt: embeddings, ``n_layer`` blocks of
    ``12 d^2 + 13 d``, the final LayerNorm and the bias-free head.

    Examples:
      >>> n_parameters("w4", vocab=4, length=3)
      544
    """
    kw = SIZES[check_choice(size, "size", SIZES)]
    d = kw["n_embd"]
    return d * (1 + vocab + length) + kw["n_layer"] * (12 * d * d + 13 * d) + 2 * d + vocab * d


def check(table: pd.DataFrame, config: ScalingConfig) -> CheckResult:
    """Tang et al.'s scaling claim on each seed (instances = seeds, paired across sizes; each
    clause's detail gives the seed mean with its 95% CI), on the final gold win rate of online
    minus offline IPO (:func:`size_gaps`):

    - ``narrows``: the smallest size's gap is above the largest size's;
    - ``not-closed``: the largest size's gap is above 0;
    - ``tabular-gap`` (``paper=False``): the no-sharing reference (the tabular softmax on the same
      data) has a gap above 0, as in the bandit F6;

    each by more than :data:`~coverage_sim.experiments.tang.token_task.MATERIAL_GAP`.

    Effect: the smallest size's gap minus the largest size's, per seed.
    """
    small, large = config.sizes[0], config.sizes[-1]
    gaps = size_gaps(table, list(config.sizes) + [TABULAR])
    narrowing = gaps[small] - gaps[large]
    by = f"by more than {MATERIAL_GAP:g}"
    clauses = [
        seed_clause("narrows", f"scaling the policy from {small} to {large} narrows the gap: "
                    f"online - offline final gold win rate at {small} above that at {large} {by}",
                    narrowing, narrowing > MATERIAL_GAP, what=f"{small} - {large}"),
        seed_clause("not-closed", f"at the largest size ({large}) online IPO's final gold win "
                    f"rate is above offline IPO's {by}", gaps[large], gaps[large] > MATERIAL_GAP,
                    what=f"gap at {large}")]
    if TABULAR in gaps.columns:
        clauses.append(seed_clause(
            "tabular-gap", "the tabular softmax on the same data (no parameter sharing): online "
            f"IPO's final gold win rate above offline IPO's {by}", gaps[TABULAR],
            gaps[TABULAR] > MATERIAL_GAP, paper=False, what="gap"))
    effect = Effect(f"win-rate gap (online - offline), {small} minus {large}",
                    narrowing.to_numpy())
    numbers = {s: _fmt(mean_ci(gaps[s].to_numpy())) for s in gaps.columns}
    return CheckResult(clauses=tuple(clauses), effect=effect, mode="exact",
                       notes={"gap per size, mean [95% CI]": numbers})


if HAVE_TORCH:  # registered only when torch imports
    EXPERIMENT = register(Experiment(
        id="tang-scaling", figure="F6 (scaling)",
        title="Scaling the policy: the online/offline IPO gap against transformer size",
        paper=PAPER + ", policy-scale ablation", arxiv=ARXIV,
        claim=("Scaling the policy (about 16x) narrows the gap between online and offline IPO "
               "but does not close it."),
        differences=("The token task of tang-transformer (V = 4, L = 3, exact; gold reward with "
                     "per-position and bigram structure; n = 300 gold pairs per seed, proxy = "
                     "ridge Bradley-Terry per sequence). Three widths at depth 2: w4, w16, w32 "
                     "(544, 6.8k and 26k parameters: 50x overall, Tang et al. scale an LLM ~16x), "
                     "each SFT'd exactly to pi_ref (100 Adam steps, lr 1e-2; residual KL < 3e-3), "
                     "then 300 Adam steps (lr 5e-3, float64) of online (proxy labels) and offline "
                     "(gold pairs) IPO at tau = 0.01 from the same SFT'd model. 16 seeds (two runs "
                     "of 8, each trained as one stack of independent models), the same data per "
                     "seed at every size (paired). The gap is the final gold win rate after the "
                     "same number of steps (offline ends at higher KL), not a tau-swept frontier: "
                     "that would triple the cost. The tabular softmax on the same data (Adam 0.05, "
                     "1000 steps) is the no-sharing reference. Result, mean [95% CI] over 16 "
                     "seeds: w4 -0.001 [-0.009, +0.007], w16 +0.031 [-0.002, +0.064], w32 +0.018 "
                     "[-0.006, +0.042], tabular +0.119 [+0.043, +0.195]; smallest minus largest "
                     "-0.020 [-0.046, +0.007]. Per seed (the check's instances; a difference "
                     "counts above 0.005): the gap narrows from w4 to w32 in 3 of 16 seeds and "
                     "stays open at w32 in 8 of 16 (tabular 13 of 16). The float32 version of this "
                     "run (the earlier default) gave 5 and 9 of 16 with AVX2 kernels and 5 and 8 "
                     "with AVX-512 ones. Verdict: does not agree, pinned (both clauses fail; the "
                     "quick run, 60 steps, fails both too: no size has over-fitted yet). The gap "
                     "does not narrow with size; it grows from about 0 at w4 towards the tabular "
                     "gap, and the intervals of the two larger sizes include 0. Mechanism: the gap "
                     "comes from offline IPO over-fitting the near-deterministic empirical labels "
                     "of finite data (the bandit F6), and a small network cannot fit per-pair "
                     "noise, so its offline IPO behaves like online IPO; capacity, like the "
                     "table's free logits, lets offline IPO over-fit. Tang et al.'s larger models "
                     "are pretrained LLMs that generalise better from the same data; a randomly "
                     "initialised transformer SFT'd to a 64-sequence reference has nothing to "
                     "generalise from but the pairs. In a longer float32 prototype (1000 steps, lr "
                     "3e-3, 3 seeds) w128 (400k parameters) offline IPO collapsed in 2 of 3 seeds "
                     "(gap +0.27) while w8 stayed at +0.007."),
        config=ScalingConfig, run=run, plot=plot, check=check, seeds=2,
        expected_verdict=DISAGREES, expected_failing=("narrows", "not-closed")))
