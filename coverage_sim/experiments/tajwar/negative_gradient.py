"""F3 ``tajwar-negative-gradient`` — Tajwar et al. 2024 (arXiv:2404.14367), §5: pushing down the
worst sample relocates mass to the optimum faster (Best-of-N).

Best-of-N with and without pushing down the worst of the N samples (``L_BoN(r) - c L_BoN(-r)``),
offline and on-policy, on families of peaks around 70 and 20; mass near the optimum against step.
Three variants: Tajwar's own setting (Adam, their push-down coefficient c = 0.05) carries the
paper's clauses; Adam with c = 0.5 and plain gradient descent with c = 0.5 are substitutes.

Claim: adding a negative gradient on the worst of the N samples to Best-of-N moves probability mass
to the optimum faster, offline and on-policy; on-policy sampling and the negative gradient are
complementary. Details: ``EXPERIMENT.differences``. The token-task version with gpt-nano is
:mod:`coverage_sim.experiments.tajwar.tokens`.

See :mod:`coverage_sim.experiments.tajwar.setting` for the 100-arm bandit and the loss
conventions shared by F1-F4.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib
import numpy as np
import pandas as pd

from coverage_sim._validation import check_choice, check_in_range, check_int, check_positive
from coverage_sim.data import offline_pairs, policy_pairs
from coverage_sim.experiments.common import check_peak_family
from coverage_sim.experiments.policy_classes import check_policy_class
from coverage_sim.experiments.registry import Experiment, check_tuple, register, tidy_rows
from coverage_sim.experiments.tajwar.setting import (ARXIV, OFFLINE, ON_POLICY, PAPER,
                                                      log_record, peak_env, peak_policy,
                                                      refresh_train, train_best_of_n)
from coverage_sim.experiments.verdict import PARTLY, CheckResult, Effect, clause
from coverage_sim.objectives import objective
from coverage_sim.plotting import new_figure

__all__ = ["EXPERIMENT", "NegativeGradientConfig", "VARIANTS", "check", "plot", "run",
           "time_averages"]

#: Variants: Tajwar's setting (Adam, their coefficient), and two substitutes: a larger
#: coefficient with Adam, and a larger coefficient with plain gradient descent.
VARIANTS = ("paper", "large-c", "gd")
_TITLES = {"paper": "Adam, c = {c}", "large-c": "Adam, c = {c}", "gd": "GD, c = {c}"}
_SUFFIX = {"paper": "", "large-c": " (Adam, c = {c})", "gd": " (gradient descent, c = {c})"}
#: "Faster" = a larger time-averaged mass near the optimum by more than this.
_MARGIN = 1e-3


@dataclass(frozen=True)
class NegativeGradientConfig:
    """Config of F3 (``tajwar-negative-gradient``).

    Instance family: instance ``(c, i)`` is the reward peak ``c + offsets[i]`` for every centre
    ``c`` in ``peaks`` (peaks 66-74 and 16-24 by default: 18 instances); all runs are exact, so an
    instance is its peak.

    Attributes:
      peaks: centres of the peak families.
      offsets: peak offsets of the instances.
      variants: subset of ``VARIANTS``: ``"paper"`` (Adam at ``adam_lr``, c = ``paper_push_down``),
        ``"large-c"`` (Adam, c = ``large_push_down``), ``"gd"`` (gradient descent at ``gd_lr``,
        c = ``large_push_down``).
      regimes: subset of ``("offline", "on-policy")``.
      n: N samples per state.
      steps: updates per run.
      adam_lr: Adam step size (Tajwar: 0.01 offline, 0.001 on-policy; see differences).
      gd_lr: gradient-descent step size.
      paper_push_down: Tajwar's coefficient of ``+ c log pi(worst of N)`` (their default 0.05).
      large_push_down: the substitutes' coefficient, in (0, 1) (c >= 1 makes offline training
        diverge: the loss is unbounded below).
      near: radius of the "near the optimum" window, |a - peak| <= near.
      policy: policy class, ``"tabular"``, ``"loglinear"`` or ``"mlp"``
        (``tajwar.setting.peak_policy``).
    """

    peaks: tuple[float, ...] = (70.0, 20.0)
    offsets: tuple[int, ...] = (-4, -3, -2, -1, 0, 1, 2, 3, 4)
    variants: tuple[str, ...] = VARIANTS
    regimes: tuple[str, ...] = (OFFLINE, ON_POLICY)
    n: int = 10
    steps: int = 1000
    adam_lr: float = 0.01
    gd_lr: float = 1.0
    paper_push_down: float = 0.05
    large_push_down: float = 0.5
    near: int = 5
    policy: str = "tabular"

    def __post_init__(self):
        check_peak_family(self.peaks, self.offsets)
        check_tuple(self.variants, "variants", lambda v, name: check_choice(v, name, VARIANTS))
        check_tuple(self.regimes, "regimes",
                    lambda v, name: check_choice(v, name, (OFFLINE, ON_POLICY)))
        check_int(self.n, "n", minimum=2)
        check_int(self.steps, "steps", minimum=1)
        check_positive(self.adam_lr, "adam_lr")
        check_positive(self.gd_lr, "gd_lr")
        check_in_range(self.paper_push_down, "paper_push_down", 0.0, 1.0, low_open=True,
                       high_open=True)
        check_in_range(self.large_push_down, "large_push_down", 0.0, 1.0, low_open=True,
                       high_open=True)
        check_int(self.near, "near", minimum=0)
        check_policy_class(self.policy)

    @classmethod
    def quick(cls) -> NegativeGradientConfig:
        return cls(offsets=(-1, 0, 1))

    def setting(self, variant: str) -> tuple[str, float, float]:
        """``(optimizer, lr, push-down c)`` of a variant."""
        if variant == "paper":
            return "adam", self.adam_lr, self.paper_push_down
        if variant == "large-c":
            return "adam", self.adam_lr, self.large_push_down
        return "gd", self.gd_lr, self.large_push_down


def _train(envs, config: NegativeGradientConfig, regime: str, c: float, optimizer: str, lr: float,
           rec, seed: int) -> np.ndarray:
    """``(B, R, K)`` policies of Best-of-N with push-down ``c`` on every env."""
    if config.policy == "tabular":
        return train_best_of_n(envs, config.n, push_down=c, on_policy=regime == ON_POLICY,
                               optimizer=optimizer, steps=config.steps, lr=lr, record=rec)
    policy = peak_policy(config.policy)
    out = []
    for env in envs:
        best = objective("best_of_n", n=config.n)
        worst = objective("best_of_n", n=config.n, reward=-env.reward)  # worst of N under r
        offline = offline_pairs(env, env.ref, labels="deterministic")

        def build(pi, env=env, best=best, worst=worst, offline=offline):
            data = offline if regime == OFFLINE else policy_pairs(env, pi, labels="deterministic")
            return [(1.0, best, data)] + ([(-c, worst, data)] if c > 0 else [])
        out.append(refresh_train(env, build, steps=config.steps, lr=lr, policy=policy, seed=seed,
                                 refresh_every=1 if regime == ON_POLICY else config.steps + 1,
                                 optimizer=optimizer, record=rec))
    return np.stack(out)


def run(config: NegativeGradientConfig, seed: int) -> pd.DataFrame:
    """Mass near the optimum against step, Best-of-N with and without push-down, every variant,
    regime and instance."""
    rec = log_record(config.steps)
    frames = []
    for centre in config.peaks:
        peaks = [centre + o for o in config.offsets]
        envs = [peak_env(p) for p in peaks]
        near = np.abs(np.arange(envs[0].n_responses)[None, :]
                      - np.asarray(peaks)[:, None]) <= config.near
        done = {}
        for variant in config.variants:
            optimizer, lr, c_pushed = config.setting(variant)
            for regime in config.regimes:
                for c in (0.0, c_pushed):
                    key = (optimizer, lr, regime, c)
                    if key not in done:  # the plain Adam run is shared by two variants
                        snaps = _train(envs, config, regime, c, optimizer, lr, rec, seed)
                        done[key] = (snaps * near[:, None, :]).sum(axis=2)
                    for i, peak in enumerate(peaks):
                        frames += tidy_rows(
                            {"centre": centre, "instance": i, "peak": peak, "variant": variant,
                             "regime": regime, "push_down": c}, seed, rec,
                            {"mass_near_opt": done[key][i]})
    return pd.concat(frames, ignore_index=True)


def time_averages(table: pd.DataFrame) -> pd.Series:
    """Time-averaged mass near the optimum (trapezoid over the recorded steps, divided by the last
    step), mean over seeds, per centre, instance, variant, regime and push-down ``c``; ``c`` is
    recorded as 0 (plain) or 1 (pushed)."""
    rows = table[table["metric"] == "mass_near_opt"]
    out = {}
    for key, group in rows.groupby(["centre", "instance", "variant", "regime", "push_down"]):
        curve = group.groupby("step")["value"].mean().sort_index()
        steps = curve.index.to_numpy(dtype=float)
        out[key[:4] + (int(key[4] > 0),)] = float(np.trapezoid(curve.to_numpy(), steps)
                                                  / steps[-1])
    s = pd.Series(out)
    s.index.names = ["centre", "instance", "variant", "regime", "pushed"]
    return s


def check(table: pd.DataFrame, config: NegativeGradientConfig) -> CheckResult:
    """Per variant (``paper``: the paper's clauses; the others substitutes), on every instance:
    the push-down's time-averaged mass near the optimum exceeds plain Best-of-N's by more than
    0.001, offline and on-policy; on-policy + push-down has the largest time average of the four
    combinations (complementary). Effect: on-policy time-averaged mass, push-down minus plain
    (paper variant, or the first variant run)."""
    avg = time_averages(table)
    variants = [v for v in VARIANTS if v in set(table["variant"])]
    regimes = [r for r in (OFFLINE, ON_POLICY) if r in set(table["regime"])]
    clauses = []
    for variant in variants:
        _, _, c = config.setting(variant)
        sub = avg.xs(variant, level="variant").unstack(["regime", "pushed"])
        sfx = _SUFFIX[variant].format(c=f"{c:g}")
        for regime in regimes:
            gain = sub[(regime, 1)] - sub[(regime, 0)]
            clauses.append(clause(
                f"faster-{regime}{sfx}",
                f"{regime}: pushing down the worst of N (c = {c:g}) raises the time-averaged mass "
                f"within {config.near} arms of the peak by more than {_MARGIN:g}",
                (gain > _MARGIN).tolist(), f"gain {gain.min():.4f}..{gain.max():.4f}",
                paper=variant == "paper"))
        if len(regimes) == 2:
            top = sub.idxmax(axis=1)
            clauses.append(clause(
                f"complementary{sfx}",
                "on-policy + push-down has the largest time-averaged mass near the peak of the "
                "four regime x push-down combinations",
                (top == (ON_POLICY, 1)).tolist(),
                "best combination: " + ", ".join(
                    f"{r} {'pushed' if p else 'plain'}: {int((top == (r, p)).sum())}"
                    for r, p in sorted(set(top))), paper=variant == "paper"))
    shown = "paper" if "paper" in variants else variants[0]
    regime = ON_POLICY if ON_POLICY in regimes else regimes[0]
    sub = avg.xs(shown, level="variant").unstack(["regime", "pushed"])
    effect = Effect(f"time-averaged mass near the peak, {regime}, push-down - plain ({shown})",
                    tuple(sub[(regime, 1)] - sub[(regime, 0)]))
    return CheckResult(clauses=tuple(clauses), effect=effect, mode="exact")


def plot(table: pd.DataFrame, config: NegativeGradientConfig):
    """Mass near the optimum against step at the central instance of each centre: rows = centres,
    columns = regimes; dashed = plain Best-of-N, solid = with push-down, colour = variant."""
    centres = sorted(table["centre"].unique(), reverse=True)
    regimes = [r for r in (OFFLINE, ON_POLICY) if r in set(table["regime"])]
    instances = sorted(table["instance"].unique())
    central = instances[len(instances) // 2]
    fig, axes = new_figure(ncols=len(regimes), nrows=len(centres), width=3.3, height=2.3,
                           sharex=True, sharey=True)
    colours = dict(zip(VARIANTS, matplotlib.colormaps["plasma"]([0.0, 0.45, 0.75])))
    rows = table[(table["metric"] == "mass_near_opt") & (table["instance"] == central)]
    for i, centre in enumerate(centres):
        for j, regime in enumerate(regimes):
            ax = axes[i, j]
            sub = rows[(rows["centre"] == centre) & (rows["regime"] == regime)]
            peak = float(sub["peak"].iloc[0])
            drawn = set()
            for variant in [v for v in VARIANTS if v in set(sub["variant"])]:
                optimizer, _, c = config.setting(variant)
                for pushed in (0.0, c):
                    if (optimizer, pushed) in drawn:
                        continue
                    drawn.add((optimizer, pushed))
                    curve = sub[(sub["variant"] == variant) & (sub["push_down"] == pushed)]
                    curve = curve.groupby("step")["value"].mean()
                    label = (f"{optimizer.upper()}, Best-of-N" if pushed == 0 else
                             f"{optimizer.upper()}, + push-down c = {pushed:g}")
                    ax.plot(curve.index, curve.values, color=colours[variant],
                            linestyle="-" if pushed else "--", label=label)
            ax.set_xscale("symlog", linthresh=1)
            ax.set_xlim(0, config.steps * 1.1)
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{regime}, peak {peak:g}")
            if i == len(centres) - 1:
                ax.set_xlabel(f"step (Adam lr {config.adam_lr:g}; GD lr {config.gd_lr:g})")
            if j == 0:
                ax.set_ylabel(f"mass on |a - peak| ≤ {config.near}")
    axes[0, 0].legend(loc="upper left", fontsize=6)
    return fig


EXPERIMENT = register(Experiment(
    id="tajwar-negative-gradient", figure="F3",
    title="Pushing down the worst sample relocates mass to the optimum faster (Best-of-N)",
    paper=PAPER + ", §5 (negative gradient)", arxiv=ARXIV,
    claim=("Adding a negative gradient on the worst of the N samples to Best-of-N (filtered "
           "behaviour cloning) moves probability mass to the optimum faster, offline and "
           "on-policy; on-policy sampling and the negative gradient are complementary."),
    differences=(
        "Instance family: 18 instances, reward peaks 66-74 and 16-24 (offsets -4..4 around 70 and "
        "20). Exact: the push-down objective is Tajwar's worst_action loss -log pi(best of 10) + "
        "c log pi(worst of 10) in expectation, L = L_BoN(r) - c L_BoN(-r) (logit gradient "
        "(pi - q_best) - c (pi - q_worst), q the exact best/worst-of-10 laws), offline on pi_ref "
        "and on-policy on pi_t recomputed every step (infinitely many states per batch, one step "
        "per batch); a tabular softmax started at pi_ref, 1000 steps. 'Faster' = a larger "
        "time-averaged mass within 5 arms of the peak (by more than 0.001). The paper's clauses "
        "use Tajwar's setting: Adam and their push-down coefficient c = 0.05, lr 0.01 for both "
        "regimes (their on-policy Best-of-N rate 0.001 barely moves a tabular softmax, see F1). "
        "Substitutes: Adam with c = 0.5, and plain gradient descent (lr 1) with c = 0.5. The "
        "negative gradient acts through its magnitude - on logits it is c q_worst(z), large "
        "exactly on the high-mass bad bins (q_worst(0) ~ 0.56 at pi_ref), while the "
        "maximum-likelihood gradient there is only pi(z) - q_best(z) <= pi(z) - and per-logit "
        "Adam on a tabular policy rescales every logit's step to ~lr, which largely erases it; "
        "gradient descent keeps it. c >= 1 offline diverges (the loss is unbounded below and pi "
        "concentrates on argmax q_best - q_worst, not the optimum)."),
    config=NegativeGradientConfig, run=run, plot=plot, check=check, seeds=1,
    expected_verdict=PARTLY, expected_failing=("faster-offline",)))
