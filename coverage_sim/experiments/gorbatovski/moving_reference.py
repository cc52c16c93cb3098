"""``trdpo-moving-reference`` — does TR-DPO's moving reference (Gorbatovski et al. 2024,
arXiv:2404.09656) recover online-like behaviour on offline data?

Tajwar et al.'s 100-arm bandit (arXiv:2404.14367): ``pi_ref`` = tanh-Cauchy bin masses, reward
``exp(-((a - peak)/10)^2)``. The F1 instance has its peak at 70, far from ``pi_ref``'s mass; the
instances here are the family of such peaks, 50 to 85 (``E_ref r`` between 0.037 and 0.074, every
one below Tajwar's 0.1). Offline data: the exact pairs ``pi_ref x pi_ref`` with deterministic
labels; a tabular softmax from ``pi_ref``, Adam with lr 0.01 and DPO's beta = 0.1 (F1's settings).
Methods, each trained on every instance:

- offline DPO (``sigmoid``) on those pairs, reference fixed at ``pi_ref``;
- TR-DPO on the same pairs, TRL's ``sync_ref_model``: soft update (``ref_model_mixup_alpha`` = 0.6
  every ``ref_model_sync_steps`` = 32 updates) and hard update (alpha = 1 every 256); the reference
  becomes the geometric mixture normalise(pi^alpha pi_ref^(1-alpha)) (:func:`coverage_sim.train`);
- online DPO (pairs from ``pi_t x pi_t``, the same deterministic labels), the on-policy baseline.

Readouts per recorded step: reward, KL(pi || pi_ref_0), the policy's and the *current reference's*
mass on the arms with reward >= ``good_reward`` (the region the optimum lives in), and the
concentrability C* of pi*_beta under the current reference.

The check (:mod:`coverage_sim.experiments.verdict`), per instance: the premise that online DPO beats
offline DPO by ``min_gap`` (reported, not part of the claim); TR-DPO's own claim that each variant
beats offline DPO; and the hypothesis that each variant closes ``closed_fraction`` of the
online-offline gap. Effect: final reward of the soft TR-DPO variant minus offline DPO's, paired by
instance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from coverage_sim._validation import check_in_range, check_int, check_positive
from coverage_sim.coverage import concentrability
from coverage_sim.data import offline_pairs
from coverage_sim.env import optimal_policy
from coverage_sim.experiments.registry import (Experiment, check_tuple, mean_curve, register,
                                                tidy_rows)
from coverage_sim.experiments.verdict import DISAGREES, CheckResult, Effect, clause
from coverage_sim.instances import tajwar_bandit
from coverage_sim.objectives import objective
from coverage_sim.plotting import figure_legend, new_figure
from coverage_sim.train import train_many

__all__ = ["EXPERIMENT", "MovingReferenceConfig", "check", "final_rewards", "gap_closed", "plot",
           "run"]

OFFLINE, ONLINE = "offline DPO", "online DPO"
_COLOURS = {OFFLINE: "C0", ONLINE: "C3"}
#: The F1 instance: its curves are the figure's left panels.
F1_PEAK = 70.0


@dataclass(frozen=True)
class MovingReferenceConfig:
    """Config of ``trdpo-moving-reference``.

    Attributes:
      peaks: reward peaks of Tajwar's bandit, one instance each; 50 to 85 are the peaks far from
        ``pi_ref``'s mass (70 is F1). Peaks inside it (e.g. 20) are the control without a gap.
      beta: DPO's beta (F1's).
      steps: Adam steps.
      lr: Adam step size (Tajwar's 0.01).
      mixup_alphas: TR-DPO's ``ref_model_mixup_alpha``, one per TR-DPO variant (distinct).
      sync_steps: TR-DPO's ``ref_model_sync_steps`` (tau), paired with ``mixup_alphas``.
      good_reward: arms with reward >= this are "near the optimum" for the mass readouts.
      record_every: record every this many steps.
      min_gap: the online - offline final-reward gap an instance needs for the question to arise.
      closed_fraction: the fraction of that gap a TR-DPO variant must close to count as
        online-like.
    """

    peaks: tuple[float, ...] = (50.0, 55.0, 60.0, 65.0, 70.0, 75.0, 80.0, 85.0)
    beta: float = 0.1
    steps: int = 1500
    lr: float = 0.01
    mixup_alphas: tuple[float, ...] = (0.6, 1.0)
    sync_steps: tuple[int, ...] = (32, 256)
    good_reward: float = 0.5
    record_every: int = 25
    min_gap: float = 0.5
    closed_fraction: float = 0.5

    def __post_init__(self):
        check_tuple(self.peaks, "peaks", lambda v, name: check_in_range(v, name, 0.0, 99.0))
        check_positive(self.beta, "beta")
        check_int(self.steps, "steps", minimum=1)
        check_positive(self.lr, "lr")
        check_tuple(self.mixup_alphas, "mixup_alphas",
                    lambda v, name: check_in_range(v, name, 0.0, 1.0, low_open=True))
        if len(set(self.mixup_alphas)) != len(self.mixup_alphas):
            raise ValueError(f"mixup_alphas must be distinct (they name the check's clauses), got "
                             f"{self.mixup_alphas!r}")
        check_tuple(self.sync_steps, "sync_steps", lambda v, name: check_int(v, name, minimum=1))
        if len(self.sync_steps) != len(self.mixup_alphas):
            raise ValueError(f"sync_steps must pair with mixup_alphas (one per TR-DPO variant), got "
                             f"{self.sync_steps!r} and {self.mixup_alphas!r}")
        check_in_range(self.good_reward, "good_reward", 0.0, 1.0, low_open=True)
        check_int(self.record_every, "record_every", minimum=1)
        check_in_range(self.min_gap, "min_gap", 0.0, 1.0, low_open=True)
        check_in_range(self.closed_fraction, "closed_fraction", 0.0, 1.0, low_open=True)

    @classmethod
    def quick(cls) -> MovingReferenceConfig:
        return cls(peaks=(55.0, 65.0, 70.0, 85.0), steps=800, sync_steps=(32, 128),
                   record_every=40)

    def variants(self) -> list[tuple[str, float, int]]:
        """``(label, alpha, tau)`` of every TR-DPO variant."""
        return [(f"TR-DPO α={a:g}, τ={t}", float(a), int(t))
                for a, t in zip(self.mixup_alphas, self.sync_steps)]


def run(config: MovingReferenceConfig, seed: int) -> pd.DataFrame:
    """Reward, KL, mass near the optimum (policy and current reference) and C* against step, for
    every method on every peak (one batched :func:`coverage_sim.train_many` per method).

    Everything is exact, so ``seed`` only labels the rows.
    """
    record = np.unique(np.r_[np.arange(0, config.steps + 1, config.record_every), config.steps])
    envs = [tajwar_bandit(peak=peak) for peak in config.peaks]
    datas = [offline_pairs(env, env.ref, labels="deterministic") for env in envs]
    methods = [(OFFLINE, objective("sigmoid", beta=config.beta), datas),
               (ONLINE, objective("online_dpo", beta=config.beta, labels="deterministic"), None)]
    methods += [(label, objective("sigmoid", beta=config.beta, sync_ref_model=True,
                                  ref_model_mixup_alpha=alpha, ref_model_sync_steps=tau), datas)
                for label, alpha, tau in config.variants()]
    frames = []
    for method, obj, data in methods:
        runs = train_many(envs, obj, data, steps=config.steps, lr=config.lr, record=record,
                          metrics=["reward", "kl"], progress=False)
        for peak, env, r in zip(config.peaks, envs, runs):
            hist = r.history
            good = (env.reward2d >= config.good_reward).ravel()
            refs = (np.broadcast_to(env.ref, r.snapshots.shape) if r.references is None
                    else r.references).reshape(len(record), -1)
            if "coverage_current_ref" in hist:
                c_star = hist["coverage_current_ref"]
            else:  # a fixed reference: C* of pi*_beta under pi_ref throughout
                c_star = np.full(len(record), _concentrability(env, config.beta))
            frames += tidy_rows({"peak": peak, "method": method}, seed, hist["step"], {
                "reward": hist["reward"], "kl": hist["kl"],
                "policy_mass_near_optimum": r.snapshots.reshape(len(record), -1)[:, good].sum(1),
                "reference_mass_near_optimum": refs[:, good].sum(1),
                "coverage_current_ref": c_star})
    return pd.concat(frames, ignore_index=True)


def _concentrability(env, beta: float) -> float:
    return float(concentrability(optimal_policy(env, beta), env.ref, env.context_weights))


def _final(table: pd.DataFrame, metric: str, peak: float, method: str) -> float:
    return float(mean_curve(table, metric, peak=peak, method=method).iloc[-1])


def final_rewards(table: pd.DataFrame, peak: float) -> dict[str, float]:
    """Final reward (mean over seeds) of every method on the instance ``peak``."""
    methods = table.loc[table["peak"] == peak, "method"].unique()
    return {m: _final(table, "reward", peak, m) for m in methods}


def gap_closed(table: pd.DataFrame, peak: float, method: str) -> float:
    """(R_method - R_offline) / (R_online - R_offline) in final reward: 1 = online-like."""
    final = final_rewards(table, peak)
    return (final[method] - final[OFFLINE]) / (final[ONLINE] - final[OFFLINE])


def plot(table: pd.DataFrame, config: MovingReferenceConfig):
    """Left: reward against step on the F1 instance (peak 70, or the first peak). Middle: mass near
    the optimum there (TR-DPO: its current reference; offline and online DPO: their policy).
    Right: final reward of every method on every instance."""
    peak = F1_PEAK if F1_PEAK in config.peaks else config.peaks[0]
    fig, axes = new_figure(3, 1, width=3.6, height=2.8)
    styles = {label: (f"C{i + 1}", "--") for i, (label, _, _) in enumerate(config.variants())}
    styles.update({OFFLINE: (_COLOURS[OFFLINE], "-"), ONLINE: (_COLOURS[ONLINE], "-")})
    peaks = sorted(config.peaks)
    for method, (colour, ls) in styles.items():
        reward = mean_curve(table, "reward", peak=peak, method=method)
        axes[0, 0].plot(reward.index, reward.values, color=colour, linestyle=ls, label=method)
        moving = method not in (OFFLINE, ONLINE)
        mass = mean_curve(table, ("reference" if moving else "policy") + "_mass_near_optimum",
                          peak=peak, method=method)
        axes[0, 1].plot(mass.index, mass.values, color=colour, linestyle=ls)
        finals = [_final(table, "reward", p, method) for p in peaks]
        axes[0, 2].plot(peaks, finals, color=colour, linestyle=ls, marker="o", markersize=3)
    ref = mean_curve(table, "reference_mass_near_optimum", peak=peak, method=OFFLINE)
    axes[0, 1].axhline(ref.iloc[0], color="0.6", linewidth=0.8, label=r"$\pi_{\rm ref}$")
    # Which distribution the middle panel measures; the space above the pi_ref line on the right
    # is empty (the moving references stay above it, the policies far above).
    axes[0, 1].text(0.97, 0.05, "dashed: TR-DPO's current reference\nsolid: the DPO policy",
                    transform=axes[0, 1].transAxes, ha="right", va="bottom", fontsize=7,
                    color="0.3")
    axes[0, 0].set_ylabel(f"reward (peak {peak:g})")
    axes[0, 1].set_ylabel(f"mass on r ≥ {config.good_reward:g} (peak {peak:g})")
    axes[0, 1].set_yscale("log")
    axes[0, 2].set_ylabel(f"final reward (step {config.steps})")
    for ax in axes[0, :2]:
        ax.set_xlabel("Adam step")
    axes[0, 2].set_xlabel("reward peak (instance)")
    axes[0, 0].set_title("evaluation reward")
    axes[0, 1].set_title("mass near the optimum")
    axes[0, 2].set_title("every instance")
    # One legend below the panels (same colours in all three): inside, any corner hides a curve.
    handles, labels = axes[0, 0].get_legend_handles_labels()
    extra_handles, extra_labels = axes[0, 1].get_legend_handles_labels()
    figure_legend(fig, handles + extra_handles, labels + extra_labels, ncol=5, fontsize=7.5)
    return fig


def check(table: pd.DataFrame, config: MovingReferenceConfig) -> CheckResult:
    """Clauses per instance (peak), on final rewards R:

    - ``gap`` (the premise, reported beside the claim): R_online - R_offline >= ``min_gap``;
    - ``beats-dpo-alpha<a>`` (TR-DPO's claim): the variant with mixup alpha a ends above offline
      DPO, R_TR > R_offline;
    - ``online-like-alpha<a>`` (the hypothesis): it closes at least ``closed_fraction`` of the
      gap, (R_TR - R_offline) / (R_online - R_offline) >= ``closed_fraction``, on an instance that
      has the gap (without it there is nothing online-like to recover: the clause fails).

    Effect: R_TR - R_offline of the first variant (the soft update), paired by instance.
    """
    peaks = list(config.peaks)
    finals = [final_rewards(table, p) for p in peaks]
    gaps = [f[ONLINE] - f[OFFLINE] for f in finals]
    has_gap = [g >= config.min_gap for g in gaps]
    clauses = [clause("gap", f"online DPO ends >= {config.min_gap:g} above offline DPO in reward",
                      has_gap, "gap " + _values(peaks, gaps), paper=False)]
    effect = None
    for label, alpha, _ in config.variants():
        lead = [f[label] - f[OFFLINE] for f in finals]
        closed = [lead_i / g if ok else float("nan") for lead_i, g, ok in zip(lead, gaps, has_gap)]
        clauses.append(clause(
            f"beats-dpo-alpha{alpha:g}", f"{label} ends above offline DPO in reward",
            [v > 0.0 for v in lead], "R_TR - R_offline " + _values(peaks, lead)))
        clauses.append(clause(
            f"online-like-alpha{alpha:g}",
            f"{label} closes >= {config.closed_fraction:.0%} of the online-offline reward gap",
            [ok and c >= config.closed_fraction for ok, c in zip(has_gap, closed)],
            "fraction closed " + _values(peaks, closed)))
        if effect is None:
            effect = Effect(f"final reward, {label} - offline DPO", tuple(lead))
    return CheckResult(clauses=tuple(clauses), effect=effect, mode="exact",
                       notes={"peaks": peaks, "final_reward": [
                           {k: round(v, 4) for k, v in f.items()} for f in finals]})


def _values(peaks, values) -> str:
    return ", ".join(f"{p:g}: {v:.3g}" for p, v in zip(peaks, values))


EXPERIMENT = register(Experiment(
    id="trdpo-moving-reference", figure="F1-TR",
    title="TR-DPO's moving reference vs online DPO on offline data (F1 instance and its family)",
    paper="Gorbatovski et al. 2024, Learn Your Reference Model for Real Good Alignment (TR-DPO)",
    arxiv="2404.09656",
    claim=("TR-DPO's claim: updating the reference during training (soft or hard sync) beats DPO "
           "with a fixed reference. The hypothesis it raises here: on offline pi_ref x pi_ref data "
           "a moving reference frees DPO from a poor initial reference and recovers online-like "
           "behaviour, closing at least half of the final-reward gap between offline and online "
           "DPO on Tajwar's bandits whose peak is far from pi_ref's mass (F1: peak 70)."),
    differences=(
        "Not a reproduction of the paper's LLM results (Anthropic-HH, TLDR): the exact, tabular "
        "F1 bandit and its family of far peaks (50-85) with TRL's sync_ref_model semantics "
        "(parameter mixing = geometric mixture of the distributions for a tabular softmax; Adam "
        "state kept across syncs), 1500 Adam steps at lr 0.01. Expected to disagree: the reference "
        "follows the policy, but the pairs stay on pi_ref x pi_ref, so the gradient on an arm's "
        "logit is still bounded by 2 beta mu(arm) (claim C11) and mass reaches the peak no faster; "
        "with the reference near the policy the margins h stay near 0, so every sync restarts the "
        "pairs' logistic terms at sigma(0) and the update is the data-weighted drift of the winning "
        "arms, which keeps the broad top half of pi_ref's arms rather than the peak. Measured "
        "(full config): on every instance both TR-DPO variants end below offline DPO (peak 70: "
        "0.085 for alpha 0.6, tau 32 and 0.11 for alpha 1, tau 256, vs 0.29 for offline DPO and "
        "1.00 for online DPO; across the 8 peaks TR-DPO alpha 0.6 minus offline DPO is -0.23, 95% "
        "CI [-0.27, -0.19]); the current reference's mass on arms with reward >= 0.5 rises only "
        "from 0.04 to 0.08-0.1, while C* of pi*_beta under it grows from 80 to 1e8-6e9 (the "
        "reference drops arms pi*_beta still weights). The control with the peak inside pi_ref's "
        "mass (peak 20) has no gap to close (online - offline 0.05 in the full config, 0.11 in the "
        "quick one)."),
    config=MovingReferenceConfig, run=run, plot=plot, check=check, seeds=1,
    expected_verdict=DISAGREES,
    expected_failing=("beats-dpo-alpha0.6", "online-like-alpha0.6", "beats-dpo-alpha1",
                      "online-like-alpha1")))
