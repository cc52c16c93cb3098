"""``trdpo-moving-reference`` — does TR-DPO's moving reference (Gorbatovski et al. 2024,
arXiv:2404.09656) recover online-like behaviour on offline data?

The F1 instance of Tajwar et al. (arXiv:2404.14367): 100 arms, ``pi_ref`` = tanh-Cauchy bin masses,
reward ``exp(-((a - peak)/10)^2)`` with the peak at 70 (far from ``pi_ref``'s mass); offline data
the exact pairs ``pi_ref x pi_ref`` with deterministic labels, a tabular softmax from ``pi_ref``,
Adam with lr 0.01 and DPO's beta = 0.1 (F1's settings). Methods:

- offline DPO (``sigmoid``) on those pairs, reference fixed at ``pi_ref``;
- TR-DPO on the same pairs: soft update (``ref_model_mixup_alpha`` = 0.6, every
  ``ref_model_sync_steps`` = 32 updates) and hard update (alpha = 1, every 256), TRL's
  ``sync_ref_model`` (the reference becomes the geometric mixture normalise(pi^alpha
  pi_ref^(1-alpha)); :func:`coverage_sim.train`);
- online DPO (pairs from ``pi_t x pi_t``, the same deterministic labels), the on-policy baseline.

Readouts per recorded step: reward, KL(pi || pi_ref_0), the policy's and the *current reference's*
mass on the arms with reward >= ``good_reward`` (the region the optimum lives in), and the
concentrability C* of pi*_beta under the current reference.

The question as a hypothesis (the check): the gap in final reward between online and offline DPO
on this instance is large, and a moving reference closes at least half of it. Peak 20 (inside
``pi_ref``'s mass) is the negative control of the gap itself: there is nothing to close.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from coverage_sim._validation import check_in_range, check_int, check_positive
from coverage_sim.data import offline_pairs
from coverage_sim.env import optimal_policy
from coverage_sim.experiments.registry import (Experiment, check_tuple, mean_curve, register,
                                                tidy_rows)
from coverage_sim.instances import tajwar_bandit
from coverage_sim.objectives import objective
from coverage_sim.plotting import new_figure
from coverage_sim.train import train

__all__ = ["EXPERIMENT", "MovingReferenceConfig", "check", "gap_closed", "plot", "run"]

OFFLINE, ONLINE = "offline DPO", "online DPO"
_COLOURS = {OFFLINE: "C0", ONLINE: "C3"}


@dataclass(frozen=True)
class MovingReferenceConfig:
    """Config of ``trdpo-moving-reference``.

    Attributes:
      peaks: reward peaks of the F1 bandit; 70 is the F1 instance, 20 the control without a gap.
      beta: DPO's beta (F1's).
      steps: Adam steps.
      lr: Adam step size (Tajwar's 0.01).
      mixup_alphas: TR-DPO's ``ref_model_mixup_alpha``, one per TR-DPO variant.
      sync_steps: TR-DPO's ``ref_model_sync_steps`` (tau), paired with ``mixup_alphas``.
      good_reward: arms with reward >= this are "near the optimum" for the mass readouts.
      record_every: record every this many steps.
      min_gap: the online - offline reward gap (at the last step, peak 70) the question needs.
      closed_fraction: the fraction of that gap a TR-DPO variant must close to count as
        online-like.
    """

    peaks: tuple[float, ...] = (70.0, 20.0)
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
        return cls(steps=800, sync_steps=(32, 128), record_every=40)

    def variants(self) -> list[tuple[str, float, int]]:
        """``(label, alpha, tau)`` of every TR-DPO variant."""
        return [(f"TR-DPO α={a:g}, τ={t}", float(a), int(t))
                for a, t in zip(self.mixup_alphas, self.sync_steps)]


def run(config: MovingReferenceConfig, seed: int) -> pd.DataFrame:
    """Reward, KL, mass near the optimum (policy and current reference) and C* against step.

    Everything is exact, so ``seed`` only labels the rows.
    """
    record = np.unique(np.r_[np.arange(0, config.steps + 1, config.record_every), config.steps])
    frames = []
    for peak in config.peaks:
        env = tajwar_bandit(peak=peak)
        data = offline_pairs(env, env.ref, labels="deterministic")
        good = (env.reward2d >= config.good_reward).ravel()
        target = optimal_policy(env, config.beta)
        methods = [(OFFLINE, objective("sigmoid", beta=config.beta), data),
                   (ONLINE, objective("online_dpo", beta=config.beta, labels="deterministic"),
                    None)]
        methods += [(label, objective("sigmoid", beta=config.beta, sync_ref_model=True,
                                      ref_model_mixup_alpha=alpha, ref_model_sync_steps=tau),
                     data) for label, alpha, tau in config.variants()]
        for method, obj, d in methods:
            r = train(env, obj, d, steps=config.steps, lr=config.lr, record=record,
                      eval_data=data)
            hist = r.history
            refs = (np.broadcast_to(env.ref, r.snapshots.shape) if r.references is None
                    else r.references).reshape(len(record), -1)
            c_star = (hist["coverage_current_ref"] if "coverage_current_ref" in hist else
                      np.full(len(record), float(np.max(target.ravel() / env.ref.ravel()))))
            frames += tidy_rows({"peak": peak, "method": method}, seed, hist["step"], {
                "reward": hist["reward"], "kl": hist["kl"],
                "policy_mass_near_optimum": r.snapshots.reshape(len(record), -1)[:, good].sum(1),
                "reference_mass_near_optimum": refs[:, good].sum(1),
                "coverage_current_ref": c_star})
    return pd.concat(frames, ignore_index=True)


def _final(table: pd.DataFrame, metric: str, peak: float, method: str) -> float:
    return float(mean_curve(table, metric, peak=peak, method=method).iloc[-1])


def gap_closed(table: pd.DataFrame, peak: float, method: str) -> float:
    """(R_method - R_offline) / (R_online - R_offline) in final reward: 1 = online-like."""
    off = _final(table, "reward", peak, OFFLINE)
    on = _final(table, "reward", peak, ONLINE)
    return (_final(table, "reward", peak, method) - off) / (on - off)


def plot(table: pd.DataFrame, config: MovingReferenceConfig):
    """Reward, and mass near the optimum (TR-DPO: its current reference; offline and online DPO:
    their policy), against step, one row per peak."""
    peaks = list(config.peaks)
    fig, axes = new_figure(2, len(peaks), width=3.6, height=2.7)
    styles = {label: (f"C{i + 1}", "--") for i, (label, _, _) in enumerate(config.variants())}
    styles.update({OFFLINE: (_COLOURS[OFFLINE], "-"), ONLINE: (_COLOURS[ONLINE], "-")})
    for row, peak in enumerate(peaks):
        for method, (colour, ls) in styles.items():
            reward = mean_curve(table, "reward", peak=peak, method=method)
            axes[row, 0].plot(reward.index, reward.values, color=colour, linestyle=ls,
                              label=method)
            moving = method not in (OFFLINE, ONLINE)
            mass = mean_curve(table, ("reference" if moving else "policy") + "_mass_near_optimum",
                              peak=peak, method=method)
            axes[row, 1].plot(mass.index, mass.values, color=colour, linestyle=ls,
                              label=f"{method}: {'reference' if moving else 'policy'}")
        ref = mean_curve(table, "reference_mass_near_optimum", peak=peak, method=OFFLINE)
        axes[row, 1].axhline(ref.iloc[0], color="0.6", linewidth=0.8, label="π_ref")
        axes[row, 0].set_ylabel(f"reward (peak {peak:g})")
        axes[row, 1].set_ylabel(f"mass on r ≥ {config.good_reward:g}")
        axes[row, 1].set_yscale("log")
        for ax in axes[row]:
            ax.set_xlabel("Adam step")
    axes[0, 0].set_title("evaluation reward")
    axes[0, 1].set_title("mass near the optimum")
    axes[0, 0].legend(fontsize=7, loc="best")
    axes[0, 1].legend(fontsize=6, loc="best")
    return fig


def check(table: pd.DataFrame, config: MovingReferenceConfig) -> None:
    """The hypothesis on the F1 instance (peak 70, or the first peak): online DPO beats offline DPO
    by at least ``min_gap`` in final reward, and every TR-DPO variant closes at least
    ``closed_fraction`` of that gap."""
    peak = 70.0 if 70.0 in config.peaks else config.peaks[0]
    off = _final(table, "reward", peak, OFFLINE)
    on = _final(table, "reward", peak, ONLINE)
    assert on - off >= config.min_gap, (
        f"peak {peak:g}: online DPO ({on:.3f}) does not beat offline DPO ({off:.3f}) by "
        f"{config.min_gap:g}: no offline-online gap to close")
    for label, _, _ in config.variants():
        closed = gap_closed(table, peak, label)
        assert closed >= config.closed_fraction, (
            f"peak {peak:g}: {label} closes {closed:.1%} of the online-offline reward gap "
            f"(reward {_final(table, 'reward', peak, label):.3f}; offline {off:.3f}, online "
            f"{on:.3f}); online-like needs {config.closed_fraction:.0%}")


EXPERIMENT = register(Experiment(
    id="trdpo-moving-reference", figure="F1-TR",
    title="TR-DPO's moving reference vs online DPO on offline data (F1 instance)",
    paper="Gorbatovski et al. 2024, Learn Your Reference Model for Real Good Alignment (TR-DPO)",
    arxiv="2404.09656",
    claim=("Hypothesis raised by TR-DPO: updating the reference during training (soft or hard "
           "sync) frees offline DPO from a poor initial reference, so on offline pi_ref x pi_ref "
           "data it recovers online-like behaviour: it closes at least half of the final-reward "
           "gap between offline and online DPO on Tajwar's peak-70 bandit."),
    differences=(
        "Not a reproduction of the paper's LLM results (Anthropic-HH, TLDR): the exact, tabular "
        "F1 bandit with TRL's sync_ref_model semantics (parameter mixing = geometric mixture of "
        "the distributions for a tabular softmax; Adam state kept). Expected to disagree: the "
        "reference follows the policy, but the pairs stay on pi_ref x pi_ref, so the gradient on "
        "the logit of an arm is still bounded by 2 beta mu(arm) (claim C11) and "
        "mass reaches the peak no faster; with the reference near the policy the margins h stay "
        "near 0 and the update is the data-weighted drift of the winning arms. Measured (full "
        "config, peak 70): final reward 0.08-0.11 for the two TR-DPO variants, 0.29 for offline "
        "DPO, 1.00 for online DPO; the current reference's mass on arms with reward >= 0.5 rises "
        "only from 0.04 to about 0.1, and C* of pi*_beta under it grows from 80 to 1e8-1e9 (the "
        "reference drops arms pi*_beta still weights). At peak 20 every method ends within 0.26 "
        "of online DPO."),
    config=MovingReferenceConfig, run=run, plot=plot, check=check, seeds=1,
    expected_to_agree=False))
