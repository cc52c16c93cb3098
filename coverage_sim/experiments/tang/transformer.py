"""F6 (transformer) ``tang-transformer`` — Tang et al. 2024 (arXiv:2405.08448): the online vs
offline IPO Pareto frontier with a transformer policy over token sequences.

Gold win rate against ``pi_ref`` vs ``KL(pi || pi_ref)`` across tau, online vs offline IPO, with
**exact** population gradients on the token task of :mod:`.token_task` (a gold reward with token
structure: per-position values plus a bigram term), for minGPT's gpt-nano, and the tabular softmax
over the same sequences and data as the bandit baseline. Bandit version: ``tang-pareto``
(:mod:`~coverage_sim.experiments.tang.pareto`); the same comparison against policy size:
``tang-scaling`` (:mod:`.scaling`).

Claim: online IPO (pairs from the current policy, proxy labels) reaches a higher golden win rate
than offline IPO at the same KL; offline IPO plateaus or declines as the KL grows. The check
evaluates each clause on each seed (:func:`seed_effects`) and gives the seed means with 95%
confidence intervals beside the fractions; the result: ``EXPERIMENT.differences``.

Conventions as in :mod:`~coverage_sim.experiments.tang.setting`: IPO is TRL's
``(h - 1/(2 tau))^2`` (tau = Azar's tau = TRL beta); KL is ``KL(pi || pi_ref)`` in nats. Torch is
optional: the experiment registers only when it imports; the config, check and plot are always
importable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from coverage_sim._validation import check_choice, check_int, check_positive
from coverage_sim.experiments.common import HAVE_TORCH, require_torch, seed_clause
from coverage_sim.experiments.registry import Experiment, check_tuple, mean_ci, register
from coverage_sim.experiments.tang.setting import ARXIV, PAPER, final_points
from coverage_sim.experiments.tang.token_task import (MATERIAL_GAP, SIZES, TokenTaskConfig,
                                                      block_seeds, seed_data, sft_stack,
                                                      tidy_history, token_task_env, train_methods)
from coverage_sim.experiments.verdict import DISAGREES, PARTLY, CheckResult, Effect
from coverage_sim.objectives import objective
from coverage_sim.plotting import mean_band, new_figure
from coverage_sim.train import log_schedule, train_many

__all__ = ["EXPERIMENT", "TangTransformerConfig", "check", "envelope", "plot", "run",
           "seed_effects"]

_METHODS = {"online": "online IPO (proxy labels)", "offline": "offline IPO (n gold pairs)"}
_COLOURS = {"online": "C0", "offline": "C3"}
_POLICIES = ("transformer", "tabular")


@dataclass(frozen=True)
class TangTransformerConfig(TokenTaskConfig):
    """Config of F6 (transformer) (``tang-transformer``); shared fields in
    :class:`~coverage_sim.experiments.tang.token_task.TokenTaskConfig`.

    Attributes:
      size: the transformer (a key of ``token_task.SIZES``; default minGPT's gpt-nano).
      sft_steps: exact SFT steps (gpt-nano needs ~300 at lr 1e-2 to reach KL < 1e-3 in every
        seed; 150 leave some on a 0.06-0.17 plateau).
      taus: IPO strengths swept to trace the frontier (at least 3).
      tabular_steps: Adam steps of the tabular (bandit) baseline on the same sequences.
      tabular_lr: its step size (the bandit figure's 0.05).
    """

    size: str = "gpt-nano"
    taus: tuple[float, ...] = (0.01, 0.03, 0.1)
    sft_steps: int = 300
    record_points: int = 8
    tabular_steps: int = 1000
    tabular_lr: float = 0.05

    def __post_init__(self):
        super().__post_init__()
        check_choice(self.size, "size", SIZES)
        check_tuple(self.taus, "taus", check_positive)
        if len(self.taus) < 3:
            raise ValueError(f"taus must hold at least 3 values to trace a frontier, got "
                             f"{self.taus!r}")
        check_int(self.tabular_steps, "tabular_steps", minimum=1)
        check_positive(self.tabular_lr, "tabular_lr")

    @classmethod
    def quick(cls) -> TangTransformerConfig:
        return cls(steps=60, record_points=3, tabular_steps=300, seeds_per_run=2)


def run(config: TangTransformerConfig, seed: int) -> pd.DataFrame:
    """KL, gold win rate and reward at log-spaced checkpoints, per policy, method and tau.

    Per seed: n offline pairs from ``pi_ref`` (gold Bradley-Terry labels) and the proxy ``r_hat``
    fitted on them; the same data and proxy serve the transformer (SFT'd to ``pi_ref``, Adam) and
    the tabular softmax over the ``V**L`` sequences (started at ``pi_ref``, the bandit figure's
    optimiser).
    """
    require_torch()
    env = token_task_env(config)
    bandit = env.bandit
    seeds = block_seeds(config, seed)
    datas, r_hats, init_seeds = zip(*[seed_data(env, config, s) for s in seeds])
    frames = []
    tab_record = log_schedule(config.tabular_steps, config.record_points)
    for s, data, r_hat in zip(seeds, datas, r_hats):
        for method in _METHODS:
            objs = [objective("online_ipo", beta=t, reward=r_hat) if method == "online"
                    else objective("ipo", beta=t) for t in config.taus]
            runs = train_many(bandit, objs, None if method == "online" else data,
                              steps=config.tabular_steps, lr=config.tabular_lr, seed=s,
                              record=tab_record)
            for tau, r in zip(config.taus, runs):
                frames += tidy_history({"policy": "tabular", "method": method,
                                        "tau": float(tau)}, s, r.history)
    stack, _ = sft_stack(env, config.size, config, init_seeds)
    for tau in config.taus:
        for method, histories in train_methods(env, stack, datas, r_hats, tau, config).items():
            for s, history in zip(seeds, histories):
                frames += tidy_history({"policy": "transformer", "method": method,
                                        "tau": float(tau)}, s, history)
    return pd.concat(frames, ignore_index=True)


def _policy_rows(table: pd.DataFrame, policy: str) -> pd.DataFrame:
    return table[table["policy"] == policy].drop(columns="policy")


def envelope(table: pd.DataFrame, method: str, grid) -> pd.DataFrame:
    """Per seed, the Pareto frontier of ``method`` over every tau and checkpoint: the best gold
    win rate reached at ``KL(pi || pi_ref) <= k`` for each ``k`` of ``grid`` (Tang et al. trace
    their curves "across beta and checkpoints"). Every run starts at ``pi_ref`` (KL ~ 0), so the
    envelope is defined from the start's KL up. Returns columns ``seed, kl, win_rate``."""
    rows = table[(table["method"] == method) & table["metric"].isin(["kl", "win_rate"])]
    ck = rows.pivot_table(index=["seed", "tau", "step"], columns="metric", values="value")
    frames = []
    for seed, pts in ck.groupby(level="seed"):
        kl, win = pts["kl"].to_numpy(), pts["win_rate"].to_numpy()
        best = [win[kl <= k].max() if (kl <= k).any() else np.nan for k in grid]
        frames.append(pd.DataFrame({"seed": seed, "kl": grid, "win_rate": best}))
    return pd.concat(frames, ignore_index=True)


def _final_frontier_gap(sub: pd.DataFrame) -> float:
    """One seed: online minus offline final-point frontier (win rate against KL through the tau
    sweep's final points), averaged over the KL range both cover; NaN if they do not overlap."""
    fp = {m: final_points(sub, m).sort_values("kl") for m in ("online", "offline")}
    lo = max(f["kl"].min() for f in fp.values())
    hi = min(f["kl"].max() for f in fp.values())
    if not hi > lo:
        return float("nan")
    grid = np.linspace(lo, hi, 40)
    win = {m: np.interp(grid, f["kl"].to_numpy(), f["win_rate"].to_numpy())
           for m, f in fp.items()}
    return float(np.mean(win["online"] - win["offline"]))


def seed_effects(table: pd.DataFrame, policy: str) -> pd.DataFrame:
    """Per seed, Tang's two F6 effects for ``policy``, as the bandit figure (``tang-pareto``)
    measures them on the tau sweep's final points:

    - ``gap``: online minus offline IPO's final-point frontier, averaged over the KL range both
      cover in that seed (matched KL);
    - ``decline``: how much more offline IPO's final win rate falls from its best tau to the
      smallest tau than online's (the offline plateau/decline at large KL);

    and, not checked, ``gap_checkpoints``: the same gap between the frontiers over every tau and
    checkpoint (:func:`envelope`: with early stopping).
    """
    rows = _policy_rows(table, policy)
    gaps, early = {}, {}
    for seed, sub in rows.groupby("seed"):
        gaps[seed] = _final_frontier_gap(sub)
        kl = sub[sub["metric"] == "kl"]
        top = min(kl[kl["method"] == m]["value"].max() for m in ("online", "offline"))
        grid = np.linspace(0.0, top, 40)
        on = envelope(sub, "online", grid)["win_rate"].to_numpy()
        off = envelope(sub, "offline", grid)["win_rate"].to_numpy()
        early[seed] = float(np.nanmean(on - off))
    drop = {}
    for method in ("online", "offline"):
        pts = final_points(rows, method).pivot_table(index="seed", columns="tau",
                                                     values="win_rate")
        drop[method] = pts.max(axis=1) - pts.iloc[:, 0]
    return pd.DataFrame({"gap": pd.Series(gaps), "decline": drop["offline"] - drop["online"],
                         "gap_checkpoints": pd.Series(early)})


def plot(table: pd.DataFrame, config: TangTransformerConfig):
    """(a) transformer and (b) tabular frontiers over tau and checkpoints (mean ± s.e. over seeds;
    faint: checkpoints; dots: final points per tau); (c) the effects per seed (:func:`seed_effects`)
    with their means and 95% CIs."""
    fig, axes = new_figure(ncols=3, width=2.9, height=3.0)
    titles = {"transformer": f"(a) {config.size}, exact (${config.vocab}^{{{config.length}}}$ "
                             f"sequences, n = {config.n_pairs})",
              "tabular": "(b) tabular softmax, same data (bandit)"}
    for ax, policy in zip(axes[0, :2], _POLICIES):
        rows = _policy_rows(table, policy)
        for method in _METHODS:
            colour = _COLOURS[method]
            ck = rows[rows["method"] == method].pivot_table(
                index=["seed", "tau", "step"], columns="metric", values="value")
            ax.scatter(ck["kl"], ck["win_rate"], s=5, color=colour, alpha=0.25, linewidths=0)
            top = ck.groupby(level="seed")["kl"].max().min()
            mean_band(ax, envelope(rows, method, np.linspace(0.0, top, 40)), "kl", "win_rate",
                      label=_METHODS[method], color=colour)
            pts = final_points(rows, method).groupby("tau")[["kl", "win_rate"]].mean()
            ax.plot(pts["kl"], pts["win_rate"], "o", ms=3, color=colour)
        ax.set_xlabel(r"KL($\pi\,\|\,\pi_{\rm ref}$)  [nats]")
        ax.set_ylabel(r"gold win rate vs $\pi_{\rm ref}$")
        ax.set_title(titles[policy], fontsize=8.5)
    ax = axes[0, 2]
    for i, policy in enumerate(_POLICIES):
        eff = seed_effects(table, policy)
        for j, (name, marker) in enumerate((("gap", "o"), ("decline", "s"),
                                            ("gap_checkpoints", "^"))):
            x = 2 * j + i
            vals = eff[name].dropna().to_numpy()
            ax.scatter(np.full(vals.size, x) + np.linspace(-0.15, 0.15, vals.size), vals, s=6,
                       color="0.6")
            mean, lo, hi = mean_ci(vals)
            ax.errorbar(x, mean, yerr=[[mean - lo], [hi - mean]] if np.isfinite(lo) else None,
                        fmt=marker, color="C0" if policy == "transformer" else "0.3", capsize=3)
    ax.axhline(0.0, color="k", linewidth=0.8)
    # Two-level x labels: the policy under each point, the effect under each pair.
    ax.set_xticks(range(6), ["transf.", "tabular"] * 3, fontsize=7)
    groups = ax.secondary_xaxis("bottom")
    groups.set_xticks([0.5, 2.5, 4.5], ["gap", "decline", "gap (ckpts)"], fontsize=8)
    groups.tick_params(length=0, pad=14)
    groups.spines["bottom"].set_visible(False)
    ax.set_ylabel("win rate")
    ax.set_title("(c) effects per seed, mean and 95% CI", fontsize=8.5)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncol=2)
    return fig


#: The clauses of :func:`check`: effect column of :func:`seed_effects` -> (name, statement).
_CLAUSES = {"gap": ("gap", "online IPO's final-point frontier (tau sweep) lies above offline IPO's "
                           "at matched KL (mean win-rate gap over the common KL range)"),
            "decline": ("decline", "offline IPO's final win rate falls from its best tau to the "
                                   "smallest tau by more than online IPO's (offline plateaus or "
                                   "declines at large KL)"),
            "gap_checkpoints": ("gap-with-early-stopping",
                                "finding: online IPO's frontier over every tau and checkpoint "
                                "lies above offline IPO's (mean win-rate gap)")}


def check(table: pd.DataFrame, config: TangTransformerConfig) -> CheckResult:
    """Tang's F6 shape on each seed (instances = seeds; :func:`seed_effects`; each clause's detail
    gives the seed mean with its 95% CI):

    - paper clauses, for the transformer: ``gap`` (online above offline at matched KL on the tau
      sweep's final points, as the bandit figure ``tang-pareto`` measures it) and ``decline``
      (offline IPO plateaus or declines at small tau more than online);
    - ``paper=False``: the same two for the tabular softmax on the same data (``tabular-gap``,
      ``tabular-decline``: the bandit baseline), and the gap between the frontiers over every tau
      and checkpoint (``gap-with-early-stopping``, both policies), which we report but which is not
      the figure's criterion;

    each effect must exceed :data:`~coverage_sim.experiments.tang.token_task.MATERIAL_GAP` in a
    seed.

    Effect: the transformer's ``gap`` per seed.
    """
    clauses = []
    for policy in _POLICIES:
        eff = seed_effects(table, policy)
        prefix = "" if policy == "transformer" else "tabular-"
        for column, (name, statement) in _CLAUSES.items():
            values = eff[column]
            clauses.append(seed_clause(
                prefix + name, f"{policy}: {statement}, by more than {MATERIAL_GAP:g}", values,
                values.fillna(-1.0) > MATERIAL_GAP,
                paper=policy == "transformer" and column != "gap_checkpoints", what=column))
    # a seed whose two frontiers share no KL range has no gap: it fails the clause (above) and
    # has no effect value
    gaps = seed_effects(table, "transformer")["gap"].dropna()
    effect = (Effect("win rate at matched KL, online - offline IPO (transformer, final points)",
                     gaps.to_numpy()) if len(gaps) else None)
    return CheckResult(clauses=tuple(clauses), effect=effect, mode="exact")


if HAVE_TORCH:  # registered only when torch imports
    EXPERIMENT = register(Experiment(
        id="tang-transformer", figure="F6 (transformer)",
        title="Transfer: online vs offline IPO Pareto frontier with a transformer policy over "
              "token sequences",
        paper=PAPER, arxiv=ARXIV,
        claim=("Online IPO (pairs from the current policy, proxy labels) reaches a higher golden "
               "win rate than offline IPO at the same KL(pi || pi_SFT); offline IPO plateaus or "
               "declines as the KL grows."),
        differences=("Token task with token structure (tang.token_task): V = 4, L = 3 (64 "
                     "sequences, exact population gradients), per-token reference logits N(0, "
                     "2^2/3), gold reward = per-position token values + 0.5 x bigram values, "
                     "standardised to std 1.5 (the earlier version drew an i.i.d. reward per "
                     "sequence, which gives shared parameters nothing to generalise over); n = 300 "
                     "gold-labelled pairs from pi_ref per seed, proxy = ridge Bradley-Terry MLE "
                     "per sequence. gpt-nano (float64) SFT'd exactly to pi_ref (300 Adam steps, lr "
                     "1e-2), then 300 Adam steps (lr 5e-3) of online and offline IPO at taus 0.01, "
                     "0.03, 0.1; the tabular softmax over the same sequences and data (Adam 0.05, "
                     "1000 steps) is the bandit baseline. 8 seeds, trained as one stack of "
                     "independent models (transformer_stack); each clause is evaluated per seed "
                     "(the instances; a difference counts above 0.005), with the seed mean and its "
                     "95% CI beside it; the earlier version ran 4 seeds and its curves moved "
                     "between machines. Result (float64; the float32 version, the earlier default, "
                     "gave the gap in 7 of 8 seeds with AVX2 kernels and in 5 of 8 with AVX-512 "
                     "ones, so its verdict depended on the CPU): online IPO lies above offline at "
                     "matched KL (final points of the tau sweep, as tang-pareto measures it) in 6 "
                     "of 8 seeds (6 above 0), gap +0.012 [-0.011, +0.034] (tabular 6 of 8, +0.060 "
                     "[+0.016, +0.103]); and offline IPO does not decline at small tau more than "
                     "online: 3 of 8 seeds, +0.009 [-0.011, +0.029] (offline's best tau is the "
                     "smallest in 4 of 8 seeds; tabular 2 of 8, +0.016 [-0.014, +0.045]). Verdict "
                     "does not agree, pinned: neither clause passes on the 80% of seeds it needs. "
                     "With the frontier over every checkpoint (early stopping; reported, not a "
                     "paper clause) the transformer's gap reverses, -0.016 [-0.023, -0.009], in "
                     "every seed (tabular 3 of 8, +0.002 [-0.011, +0.015]): offline IPO passes "
                     "through better policies than it ends at. Why: with shared parameters and a "
                     "structured reward, offline IPO on the finite data no longer collapses at "
                     "small tau (transformer offline final win rate 0.878 at tau 0.01 vs tabular "
                     "0.808), which is the bandit figure's offline plateau; the remaining online "
                     "advantage is small and is an end-of-training effect. The quick run (60 "
                     "steps, 2 seeds) stops before offline IPO over-fits: there the final-point "
                     "gap is not there yet in one seed (-0.006 and +0.023) while offline already "
                     "falls at the smallest tau (+0.009, +0.037): quick verdict partly with gap "
                     "failing, pinned separately."),
        config=TangTransformerConfig, run=run, plot=plot, check=check, seeds=1,
        expected_verdict=DISAGREES, expected_failing=("gap", "decline"),
        expected_quick_verdict=PARTLY, expected_quick_failing=("gap",)))
