"""F1 (tokens) ``tajwar-token-peak`` — Tajwar et al. 2024 (arXiv:2404.14367), their main token
result: on-policy vs offline preference fine-tuning of a transformer when the reward peak (token
70) is far from the reference's mass.

Sampled training (:func:`coverage_sim.torch_backend.draw_batch`) of minGPT's gpt-nano, SFT'd to
``pi_ref``, on the 9-token task of their ``transformer_*.py``
(:func:`coverage_sim.tajwar_token_env`). Two losses, each offline (a fixed dataset drawn once from
``pi_ref``) and on-policy (fresh draws from the current policy, reused for ``reuse`` steps):
Best-of-N (filtered behaviour cloning, maximum likelihood on the best of N samples;
:class:`~coverage_sim.torch_backend.BestOfNLoss`) and IPO (contrastive;
:class:`~coverage_sim.torch_backend.PairwiseLoss`), both labelled by the gold reward. Bandit
version: ``tajwar-peak`` (:mod:`~coverage_sim.experiments.tajwar.peak`); the push-down variant on
the same task: ``tajwar-tokens`` (:mod:`.tokens`).

Claim: with the peak at 70, on-policy methods reach far higher reward than offline ones. Where this
differs from the paper and the result: ``EXPERIMENT.differences``.

Conventions: IPO is TRL's ``(h - 1/(2 beta))^2`` with ``beta = 1/(2 m)`` for Tajwar's target
margin ``m`` (:func:`~coverage_sim.experiments.tajwar.setting.ipo_beta`); labels are
deterministic (winner = higher gold reward, ties 1/2); KL is ``KL(pi || pi_ref)``. Randomness comes
from ``torch.Generator`` objects seeded from the run's seed (initialisation, SFT, data and
evaluation streams); runs are single-threaded with deterministic algorithms
(:func:`coverage_sim.torch_backend.reproducible`). Torch is optional: the experiment registers
only when it imports; the config, check and plot are always importable.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pandas as pd

from coverage_sim._validation import check_in_range, check_int, check_positive
from coverage_sim.experiments.common import HAVE_TORCH, require_torch, seed_clause, seed_streams
from coverage_sim.experiments.registry import Experiment, mean_curve, register, tidy_rows
from coverage_sim.experiments.tajwar.setting import (ARXIV, METHOD_COLOURS, OFFLINE, ON_POLICY,
                                                     PAPER, ipo_beta)
from coverage_sim.experiments.tajwar.token_task import (TokenTaskConfig, sft_base_model,
                                                        token_metrics, token_tables)
from coverage_sim.experiments.verdict import PARTLY, CheckResult, Effect
from coverage_sim.plotting import mean_band, new_figure
from coverage_sim.sequences import tajwar_token_env

__all__ = ["EXPERIMENT", "TajwarTokenPeakConfig", "check", "plot", "run"]

METHODS = ("Best-of-N", "IPO")
REGIMES = (OFFLINE, ON_POLICY)


@dataclass(frozen=True)
class TajwarTokenPeakConfig(TokenTaskConfig):
    """Config of F1 (tokens) (``tajwar-token-peak``); the task, SFT, optimiser and metric fields are
    :class:`~coverage_sim.experiments.tajwar.token_task.TokenTaskConfig`'s.

    Attributes:
      ipo_margin: Tajwar's IPO target margin ``m`` (TRL beta ``1/(2m)``).
      groups: prompts per gradient step (Best-of-N: groups of N responses; IPO: pairs, so that both
        train on about the same number of responses per step).
      offline_groups: size of the fixed offline dataset, in the same units (Tajwar's offline runs:
        100 states x N = 10 responses).
      reuse: gradient steps per on-policy draw (Tajwar's transformer runs: 10).
      min_lead: the check's least on-policy lead over offline (final reward, same loss).
    """

    steps: int = 120
    eval_every: int = 10
    n_eval: int = 128
    ipo_margin: float = 10.0
    groups: int = 10
    offline_groups: int = 100
    reuse: int = 10
    min_lead: float = 0.15

    def __post_init__(self):
        super().__post_init__()
        check_positive(self.ipo_margin, "ipo_margin")
        check_int(self.groups, "groups", minimum=1)
        check_int(self.offline_groups, "offline_groups", minimum=1)
        if self.groups > self.offline_groups:
            raise ValueError(f"groups must be <= offline_groups={self.offline_groups}, got "
                             f"{self.groups}")
        check_int(self.reuse, "reuse", minimum=1)
        check_in_range(self.min_lead, "min_lead", 0.0, 1.0)

    @classmethod
    def quick(cls) -> TajwarTokenPeakConfig:
        return cls(steps=60, sft_steps=60, eval_every=20, n_eval=64)


def _loss(method: str, regime: str, config: TajwarTokenPeakConfig):
    from coverage_sim.torch_backend import BestOfNLoss, PairwiseLoss

    online = regime == ON_POLICY
    if method == "Best-of-N":
        return BestOfNLoss(config.n, online=online)
    return PairwiseLoss("ipo", {"beta": ipo_beta(config.ipo_margin)}, labels="deterministic",
                        online=online)


def _groups(method: str, count: int, config: TajwarTokenPeakConfig) -> int:
    """Groups holding about ``count * N`` responses: Best-of-N groups, or pairs for IPO."""
    return count if method == "Best-of-N" else count * config.n // 2


def run(config: TajwarTokenPeakConfig, seed: int) -> pd.DataFrame:
    """Gold reward, mass near the optimum and KL against step, per method and regime.

    One gpt-nano is initialised and SFT'd to ``pi_ref`` per seed; every run starts from a copy of
    it. Offline runs draw their dataset once from ``pi_ref`` and take ``groups`` of it per step
    (without replacement within a step); on-policy runs draw ``groups`` fresh groups from the
    current policy every ``reuse`` steps.
    """
    require_torch()
    import torch

    from coverage_sim.torch_backend import draw_batch, reproducible, sampled_backward

    env = tajwar_token_env(length=config.length, vocab=config.vocab, peak=config.peak,
                           width=config.width)
    tables = token_tables(env, config.peak, config.near)
    init_seed, sft_seed, data_seed, eval_seed = seed_streams(seed, 4)
    record = np.unique(np.r_[np.arange(0, config.steps + 1, config.eval_every), config.steps])
    device = torch.device(config.device)
    frames = []
    with reproducible(threads=1, deterministic=True):
        base = sft_base_model(env, init_seed=init_seed, sft_seed=sft_seed, dtype=config.dtype,
                              sft_steps=config.sft_steps, sft_lr=config.sft_lr,
                              sft_batch=config.sft_batch, device=device)
        for method in METHODS:
            for regime in REGIMES:
                model = copy.deepcopy(base)
                loss = _loss(method, regime, config)
                opt = torch.optim.Adam(model.parameters(), lr=config.lr)
                gen = torch.Generator(device=device).manual_seed(data_seed)
                eval_gen = torch.Generator(device=device).manual_seed(eval_seed)
                size = _groups(method, config.groups, config)
                dataset = None
                if regime == OFFLINE:
                    dataset = draw_batch(model, env, loss,
                                         _groups(method, config.offline_groups, config), gen)
                rows, batch = [], None
                for step in range(config.steps + 1):
                    if step in record:
                        rows.append(token_metrics(model, tables, config.n_eval, eval_gen))
                    if step == config.steps:
                        break
                    if dataset is not None:
                        pick = torch.randperm(dataset.prompts.shape[0], generator=gen,
                                              device=device)[:size]
                        batch = dataset.take(pick)
                    elif step % config.reuse == 0:
                        batch = draw_batch(model, env, loss, size, gen)
                    opt.zero_grad()
                    sampled_backward(model, loss, batch)
                    opt.step()
                cols = {k: [r[k] for r in rows] for k in rows[0]}
                frames += tidy_rows({"method": method, "regime": regime}, seed, record, cols)
    return pd.concat(frames, ignore_index=True)


def final_rewards(table: pd.DataFrame) -> pd.DataFrame:
    """Final-step gold reward, one row per seed, one column per ``(method, regime)``."""
    rows = table[(table["metric"] == "reward") & (table["step"] == table["step"].max())]
    out = rows.pivot_table(index="seed", columns=["method", "regime"], values="value")
    out.columns = [f"{m}, {r}" for m, r in out.columns]
    return out


def on_policy_leads(table: pd.DataFrame) -> pd.DataFrame:
    """Per seed and method: on-policy final reward minus the same loss's offline final reward."""
    final = final_rewards(table)
    return pd.DataFrame({m: final[f"{m}, {ON_POLICY}"] - final[f"{m}, {OFFLINE}"]
                         for m in METHODS})


def plot(table: pd.DataFrame, config: TajwarTokenPeakConfig):
    """(a) gold reward and (b) mass near the optimum against step (mean ± s.e. over seeds);
    (c) gold reward against KL(pi || pi_ref). Colour = method, solid = on-policy, dashed =
    offline."""
    fig, axes = new_figure(ncols=3, width=2.9, height=2.9)
    for metric, ax in (("reward", axes[0, 0]), ("mass_near_opt", axes[0, 1])):
        for method in METHODS:
            for regime in REGIMES:
                rows = table[(table["metric"] == metric) & (table["method"] == method)
                             & (table["regime"] == regime)]
                mean_band(ax, rows, "step", "value", color=METHOD_COLOURS[method],
                          linestyle="-" if regime == ON_POLICY else "--",
                          label=f"{method}, {regime}")
        ax.set_xlabel(f"gradient step (Adam, lr {config.lr:g})")
        ax.set_ylim(0, 1.02)
    axes[0, 0].set_ylabel("gold reward")
    axes[0, 0].set_title(f"(a) gpt-nano, V = {config.vocab}, L = {config.length}, peak "
                         f"{config.peak:g}", fontsize=8.5)
    axes[0, 1].set_ylabel("mass near the optimum")
    axes[0, 1].set_title(f"(b) per-token mass on |a − {config.peak * config.vocab / 100:g}| ≤ "
                         f"{config.near * config.vocab / 100:g}", fontsize=8.5)
    ax = axes[0, 2]
    for method in METHODS:
        for regime in REGIMES:
            kl = mean_curve(table, "kl", method=method, regime=regime)
            reward = mean_curve(table, "reward", method=method, regime=regime)
            ax.plot(kl.values, reward.values, color=METHOD_COLOURS[method],
                    linestyle="-" if regime == ON_POLICY else "--")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("KL(π ‖ π_ref)  [nats]")
    ax.set_ylabel("gold reward")
    ax.set_ylim(0, 1.02)
    ax.set_title("(c) reward vs KL (mean over seeds)", fontsize=8.5)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncol=2)
    return fig


def check(table: pd.DataFrame, config: TajwarTokenPeakConfig) -> CheckResult:
    """Tajwar's F1 claim on the token task, on each seed (instances = seeds; each clause's detail
    gives the seed mean with its 95% CI): for each loss, the on-policy lead -- on-policy final gold
    reward minus the same loss's offline final gold reward -- is at least ``min_lead``.

    Paper clauses ``best-of-n`` and ``ipo``, one per loss. Effect: the on-policy lead per seed,
    averaged over the two losses.
    """
    leads = on_policy_leads(table)
    final = final_rewards(table)
    clauses = []
    for method in METHODS:
        lead = leads[method]
        on, off = final[f"{method}, {ON_POLICY}"], final[f"{method}, {OFFLINE}"]
        clauses.append(seed_clause(
            method.lower(),
            f"{method}: on-policy final gold reward at least {config.min_lead:g} above offline "
            f"{method}'s", lead, lead >= config.min_lead,
            what=f"lead (on-policy {', '.join(f'{v:.3f}' for v in on)} vs offline "
                 f"{', '.join(f'{v:.3f}' for v in off)})"))
    effect = Effect("final gold reward, on-policy - offline (mean of Best-of-N and IPO)",
                    leads.mean(axis=1).to_numpy())
    return CheckResult(clauses=tuple(clauses), effect=effect, mode="sampled")


if HAVE_TORCH:  # registered only when torch imports
    EXPERIMENT = register(Experiment(
        id="tajwar-token-peak", figure="F1 (tokens)",
        title="Transfer: on-policy sampling wins when the optimum is far from the reference, on "
              "Tajwar's token task with gpt-nano",
        paper=PAPER + ", token-sequence (transformer) task", arxiv=ARXIV,
        claim=("With the reward peak far from pi_ref's mass (token 70), on-policy methods "
               "(Best-of-N, IPO) reach far higher reward than the same losses on offline data "
               "from pi_ref."),
        differences=(
            "Tajwar's token task at the paper's size (V = 100, L = 9, reward_6 with the peak at "
            "token 70, exact tanh-Cauchy per-token pi_ref, E_ref r = 0.039) with gpt-nano "
            "(float32) SFT'd to pi_ref by 100 sampled forward-KL Adam steps, as tajwar-tokens. "
            "Sampled training, Adam lr 1e-3, 120 steps (Tajwar: 100 epochs of 10 steps; shorter "
            "for time), gold labels. Best-of-N: N = 10 per prompt, 10 prompts per step; IPO: "
            "Tajwar's margin 10 (TRL beta 0.05), 50 pairs per step (about the same number of "
            "responses; Tajwar forms all 45 pairs of 10 samples and drops pairs with |dr| < 0.2). "
            "Offline: one dataset drawn once from pi_ref (100 groups of 10, or 500 pairs), 10 "
            "groups or 50 pairs per step; on-policy: fresh draws from the current policy reused "
            "for 10 steps (Tajwar's transformer runs). Metrics: Rao-Blackwellised estimates from "
            "128 policy samples; 3 seeds; the check's clauses are evaluated per seed (the "
            "instances) with the seed means and 95% CIs beside them. Result (final reward, mean "
            "over seeds): Best-of-N on-policy 0.983 vs offline 0.143 (lead +0.840, every "
            "seed), the paper's finding; "
            "offline IPO (contrastive) 0.533 beats offline Best-of-N (maximum likelihood), as in "
            "the bandit F1; but on-policy IPO reaches only 0.568 (0.72, 0.53, 0.46 by seed), a "
            "lead of +0.035 [-0.320, +0.390] over offline IPO, and oscillates (0.63 -> 0.41 "
            "within 20 steps in one seed): with one pair per prompt, a margin target of 10 and "
            "10-step reuse of its own samples, online IPO has not converged in 120 steps. Verdict "
            "partly, pinned: the clause best-of-n holds in 3 of 3 seeds and ipo in 1 of 3 (lead "
            "+0.191, +0.004, -0.090): the finding transfers for Best-of-N only, within this "
            "budget, and IPO's failure is a missing lead, not a reversed one (the quick run: "
            "+0.012 and -0.014)."),
        config=TajwarTokenPeakConfig, run=run, plot=plot, check=check, seeds=3,
        expected_verdict=PARTLY, expected_failing=("ipo",), needs_kernels=False))
