"""F3 ``tajwar-negative-gradient`` — Tajwar et al. 2024 (arXiv:2404.14367), §5: pushing down the
worst sample relocates mass to the optimum faster (Best-of-N).

Best-of-N with and without pushing down the worst of the N samples (``L_BoN(r) - c L_BoN(-r)``),
offline and on-policy, peaks 70 and 20; mass near the optimum against step, with plain gradient
descent.

Claim: adding a negative gradient on the worst of the N samples to Best-of-N moves probability mass
to the optimum faster, offline and on-policy; on-policy sampling and the negative gradient are
complementary. Why gradient descent rather than Adam, and c = 0.5 rather than Tajwar's 0.05:
``EXPERIMENT.differences``. The token-task version with gpt-nano is
:mod:`coverage_sim.experiments.tajwar.tokens`.

See :mod:`coverage_sim.experiments.tajwar.setting` for the 100-arm bandit and the loss
conventions shared by F1-F4.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib
import numpy as np
import pandas as pd

from coverage_sim import metrics
from coverage_sim._validation import check_choice, check_in_range, check_int, check_positive
from coverage_sim.data import offline_pairs, policy_pairs
from coverage_sim.experiments.registry import (Experiment, check_tuple, mean_curve, register,
                                                tidy_rows)
from coverage_sim.experiments.tajwar.setting import (ARXIV, OFFLINE, ON_POLICY, PAPER,
                                                      log_record, peak_env, peak_policy,
                                                      refresh_train)
from coverage_sim.experiments.policy_classes import check_policy_class
from coverage_sim.objectives import objective
from coverage_sim.plotting import new_figure

__all__ = ["EXPERIMENT", "NegativeGradientConfig", "check", "plot", "run"]


@dataclass(frozen=True)
class NegativeGradientConfig:
    """Config of F3 (``tajwar-negative-gradient``).

    Attributes:
      peaks: reward peaks.
      push_downs: coefficients c of ``+ c log pi(worst of N)``; 0 is plain Best-of-N (must be
        included). Tajwar's code default is 0.05; c >= 1 makes offline training diverge to the
        wrong arm (the loss is unbounded below).
      regimes: subset of ``("offline", "on-policy")``.
      n: N samples per state.
      steps: gradient steps.
      lr: step size.
      optimizer: "gd" (default, see differences) or "adam".
      near: radius of the "near the optimum" window, |a - peak| <= near.
      policy: policy class, ``"tabular"``, ``"loglinear"`` or ``"mlp"``
        (``tajwar.setting.peak_policy``).
    """

    peaks: tuple[float, ...] = (70.0, 20.0)
    push_downs: tuple[float, ...] = (0.0, 0.2, 0.5)
    regimes: tuple[str, ...] = (OFFLINE, ON_POLICY)
    n: int = 10
    steps: int = 1000
    lr: float = 1.0
    optimizer: str = "gd"
    near: int = 5
    policy: str = "tabular"

    def __post_init__(self):
        check_tuple(self.peaks, "peaks", lambda v, name: check_in_range(v, name, 0.0, 99.0))
        check_tuple(self.push_downs, "push_downs",
                     lambda v, name: check_in_range(v, name, 0.0, 1.0, high_open=True))
        if 0.0 not in self.push_downs or len(self.push_downs) < 2:
            raise ValueError(f"push_downs must contain 0 (plain Best-of-N) and a positive value, "
                             f"got {self.push_downs!r}")
        check_tuple(self.regimes, "regimes",
                    lambda v, name: check_choice(v, name, (OFFLINE, ON_POLICY)))
        check_int(self.n, "n", minimum=2)
        check_int(self.steps, "steps", minimum=1)
        check_positive(self.lr, "lr")
        check_choice(self.optimizer, "optimizer", ("gd", "adam"))
        check_policy_class(self.policy)
        check_int(self.near, "near", minimum=0)

    @classmethod
    def quick(cls) -> NegativeGradientConfig:
        return cls(push_downs=(0.0, 0.5), steps=300)


def run(config: NegativeGradientConfig, seed: int) -> pd.DataFrame:
    """Mass near the optimum and reward against step, Best-of-N with push-down c, both regimes."""
    rec = log_record(config.steps)
    policy = peak_policy(config.policy)
    frames = []
    for peak in config.peaks:
        env = peak_env(peak)
        near = np.abs(np.arange(env.n_responses) - peak) <= config.near
        best = objective("best_of_n", n=config.n)
        worst = objective("best_of_n", n=config.n, reward=-env.reward)  # worst of N under r
        offline = offline_pairs(env, env.ref, labels="deterministic")
        for regime in config.regimes:
            for c in config.push_downs:
                def build(pi, c=c, env=env, regime=regime, offline=offline, best=best,
                          worst=worst):
                    data = offline if regime == OFFLINE else policy_pairs(
                        env, pi, labels="deterministic")
                    return [(1.0, best, data)] + ([(-c, worst, data)] if c > 0 else [])
                snaps = refresh_train(env, build, steps=config.steps, lr=config.lr,
                                      policy=policy, seed=seed,
                                      refresh_every=1 if regime == ON_POLICY else config.steps + 1,
                                      optimizer=config.optimizer, record=rec)
                frames += tidy_rows({"peak": peak, "regime": regime, "push_down": c}, seed, rec,
                                {"mass_near_opt": snaps[:, near].sum(axis=1),
                                 "reward": metrics.expected_reward(env, snaps)})
    return pd.concat(frames, ignore_index=True)


def plot(table: pd.DataFrame, config: NegativeGradientConfig):
    """Mass near the optimum against step: rows = peaks, columns = offline / on-policy."""
    peaks = sorted(table["peak"].unique(), reverse=True)
    regimes = [r for r in (OFFLINE, ON_POLICY) if r in set(table["regime"])]
    fig, axes = new_figure(ncols=len(regimes), nrows=len(peaks), width=3.3, height=2.3,
                           sharex=True, sharey=True)
    pushes = sorted(table["push_down"].unique())
    cmap = matplotlib.colormaps["plasma"]
    for i, peak in enumerate(peaks):
        for j, regime in enumerate(regimes):
            ax = axes[i, j]
            for k, c in enumerate(pushes):
                curve = mean_curve(table, "mass_near_opt", peak=peak, regime=regime, push_down=c)
                label = "Best-of-N" if c == 0 else f"+ push-down worst, c={c:g}"
                ax.plot(curve.index, curve.values, color=cmap(0.8 * k / max(len(pushes) - 1, 1)),
                        linestyle="-" if c > 0 else "--", label=label)
            ax.set_xscale("symlog", linthresh=1)
            ax.set_xlim(0, config.steps * 1.1)
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{regime}, peak {peak:g}")
            if i == len(peaks) - 1:
                ax.set_xlabel(f"gradient step ({config.optimizer.upper()}, lr {config.lr:g})")
            if j == 0:
                ax.set_ylabel(f"mass on |a - {peak:g}| ≤ {config.near}")
    axes[0, 0].legend(loc="upper left", fontsize=7)
    return fig


def check(table: pd.DataFrame, config: NegativeGradientConfig) -> None:
    """For every peak and regime: the largest push-down keeps at least the plain Best-of-N mass near
    the optimum at every step (tolerance 0.01) and has a larger time-average; on-policy with
    push-down is the best of all (complementary)."""
    c_max = max(config.push_downs)
    for peak in config.peaks:
        auc = {}
        for regime in config.regimes:
            plain = mean_curve(table, "mass_near_opt", peak=peak, regime=regime, push_down=0.0)
            pushed = mean_curve(table, "mass_near_opt", peak=peak, regime=regime, push_down=c_max)
            worst = float((pushed - plain).min())
            assert worst >= -0.01, (
                f"peak {peak} {regime}: push-down c={c_max} falls {-worst:.3f} below plain "
                f"Best-of-N mass near the optimum")
            steps = plain.index.to_numpy(dtype=float)
            auc[(regime, 0.0)] = np.trapezoid(plain.values, steps) / steps[-1]
            auc[(regime, c_max)] = np.trapezoid(pushed.values, steps) / steps[-1]
            assert auc[(regime, c_max)] > auc[(regime, 0.0)] + 1e-3, (
                f"peak {peak} {regime}: time-averaged mass near the optimum with push-down "
                f"{auc[(regime, c_max)]:.4f} is not above plain Best-of-N {auc[(regime, 0.0)]:.4f}")
        if ON_POLICY in config.regimes and OFFLINE in config.regimes:
            top = max(auc, key=auc.get)
            assert top == (ON_POLICY, c_max), (
                f"peak {peak}: on-policy + push-down is not the best combination "
                f"({ {f'{r} c={c:g}': round(v, 4) for (r, c), v in auc.items()} })")


EXPERIMENT = register(Experiment(
    id="tajwar-negative-gradient", figure="F3",
    title="Pushing down the worst sample relocates mass to the optimum faster (Best-of-N)",
    paper=PAPER + ", §5 (negative gradient)", arxiv=ARXIV,
    claim=("Adding a negative gradient on the worst of the N samples to Best-of-N (filtered "
           "behaviour cloning) moves probability mass to the optimum faster, offline and "
           "on-policy; on-policy sampling and the negative gradient are complementary."),
    differences=(
        "The push-down objective is not in the core; it is built exactly from two core "
        "objectives, L = L_BoN(r) - c L_BoN(-r) (gradient on log pi: -q_best + c q_worst, q the "
        "exact best/worst-of-10 laws), offline on pi_ref and on-policy on pi_t refreshed every "
        "step. Plain gradient descent (lr 1) on a tabular softmax instead of Adam on an MLP: the "
        "negative gradient acts through its magnitude - on logits it is c q_worst(z), large "
        "exactly on the high-mass bad bins (q_worst(0) ~ 0.56 at pi_ref), while the "
        "maximum-likelihood gradient there is only pi(z) - q_best(z) <= pi(z) - and per-logit Adam "
        "on a tabular policy rescales every logit's step to ~lr, erasing that (with Adam the "
        "effect is mixed and the check fails: on-policy at peak 70 the push-down lowers the "
        "near-optimum mass at step 150 from 0.27 to 0.25 and raises it at step 500 from 0.92 to "
        "0.97; offline at peak 70 it ends 0.07 lower). c = 0.5 instead of "
        "Tajwar's default 0.05 (too small to see exactly). With GD the push-down (c = 0.5) "
        "leads by up to 0.06 (offline, peak 70), 0.16 (offline, peak 20), 0.33 (on-policy, peak "
        "70) and 0.11 (on-policy, peak 20); offline at peak 70 it is slightly behind for steps "
        "20-100 (by at most 0.009) before it pulls ahead; c >= 1 "
        "offline diverges (the loss is unbounded below and pi concentrates on argmax q_best - "
        "q_worst, not the optimum). The mass near the optimum is pi(|a - peak| <= 5)."),
    config=NegativeGradientConfig, run=run, plot=plot, check=check, seeds=1))
