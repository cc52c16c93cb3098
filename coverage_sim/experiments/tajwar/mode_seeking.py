"""F4 ``tajwar-mode-seeking`` — Tajwar et al. 2024 (arXiv:2404.14367), §6: reverse KL
(mode-seeking) empties the wrong region faster than forward KL (mode-covering).

Forward KL(p || pi) vs reverse KL(pi || p) fit of a tabular softmax, started at Tajwar's
``pi_ref``, to a bimodal categorical target (:func:`bimodal_target`); mass on the wrong region and
on each mode against step, with plain gradient descent.

Claim: mode-seeking objectives (reverse KL, as in on-policy RL and contrastive losses) remove
probability mass from the wrong bins of a categorical distribution faster than mode-covering
maximum likelihood (forward KL). The construction is ours (the paper argues it in words);
details and the Adam variant: ``EXPERIMENT.differences``.

See :mod:`coverage_sim.experiments.tajwar.setting` for the 100-arm bandit and the loss
conventions shared by F1-F4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from coverage_sim import metrics
from coverage_sim._validation import check_choice, check_in_range, check_int, check_positive
from coverage_sim.data import offline_pairs
from coverage_sim.env import Bandit
from coverage_sim.experiments.registry import (Experiment, check_tuple, mean_curve, register,
                                                tidy_rows)
from coverage_sim.experiments.tajwar.setting import ARXIV, PAPER, log_record
from coverage_sim.instances import tajwar_reference
from coverage_sim.objectives import objective
from coverage_sim.plotting import new_figure
from coverage_sim.train import train

__all__ = ["EXPERIMENT", "ModeSeekingConfig", "bimodal_target", "check", "plot", "run"]


@dataclass(frozen=True)
class ModeSeekingConfig:
    """Config of F4 (``tajwar-mode-seeking``).

    Attributes:
      modes: centres of the target's modes (arms; Tajwar's two reward peaks).
      weights: mixture weights of the modes (normalised).
      width: standard deviation of each discretised Gaussian mode, in arms.
      floor: mass of a uniform component mixed into the target (keeps log p finite).
      radius: arms farther than this from every mode form the "wrong" region.
      steps: gradient steps.
      lr: step size.
      optimizer: "gd" (default) or "adam".
    """

    modes: tuple[float, ...] = (20.0, 70.0)
    weights: tuple[float, ...] = (0.5, 0.5)
    width: float = 5.0
    floor: float = 1e-6
    radius: int = 10
    steps: int = 2000
    lr: float = 1.0
    optimizer: str = "gd"

    def __post_init__(self):
        check_tuple(self.modes, "modes", lambda v, name: check_in_range(v, name, 0.0, 99.0))
        if len(self.modes) < 2:
            raise ValueError(f"modes must hold at least two modes, got {self.modes!r}")
        check_tuple(self.weights, "weights", lambda v, name: check_positive(v, name))
        if len(self.weights) != len(self.modes):
            raise ValueError(f"weights must have one entry per mode ({len(self.modes)}), "
                             f"got {self.weights!r}")
        check_positive(self.width, "width")
        check_in_range(self.floor, "floor", 0.0, 1.0, low_open=True, high_open=True)
        check_int(self.radius, "radius", minimum=0)
        check_int(self.steps, "steps", minimum=1)
        check_positive(self.lr, "lr")
        check_choice(self.optimizer, "optimizer", ("gd", "adam"))

    @classmethod
    def quick(cls) -> ModeSeekingConfig:
        return cls(steps=1000)


def bimodal_target(config: ModeSeekingConfig, n_actions: int = 100) -> np.ndarray:
    """The target p: normalised mixture of discretised Gaussians at ``modes``, plus ``floor`` uniform."""
    a = np.arange(n_actions, dtype=float)
    w = np.asarray(config.weights, dtype=float) / np.sum(config.weights)
    p = np.zeros(n_actions)
    for centre, weight in zip(config.modes, w):
        bump = np.exp(-0.5 * ((a - centre) / config.width) ** 2)
        p += weight * bump / bump.sum()
    return (1.0 - config.floor) * p + config.floor / n_actions


def _fit_problems(config: ModeSeekingConfig):
    """Environment started at pi_ref and the two exact core objectives.

    Forward KL(p || pi) = cross-entropy -sum p log pi - H(p): ``best_of_n`` with n = 1 on data whose
    behaviour is p (its target is p itself). Reverse KL(pi || p) = the ``rlhf`` loss with beta = 1
    and reward log(p / pi_ref): -E_pi log(p/pi_ref) + KL(pi || pi_ref) = KL(pi || p).
    """
    ref = tajwar_reference()
    p = bimodal_target(config, ref.size)
    env = Bandit(reward=np.log(p / ref), ref=ref, name="tajwar-bimodal-fit")
    forward = (objective("best_of_n", n=1), offline_pairs(env, p, labels="deterministic"))
    reverse = (objective("rlhf", beta=1.0), None)
    return env, p, {"forward KL": forward, "reverse KL": reverse}


def run(config: ModeSeekingConfig, seed: int) -> pd.DataFrame:
    """Mass on the wrong region, on each mode, and KL to the target, against step."""
    env, p, fits = _fit_problems(config)
    a = np.arange(p.size)
    dist = np.abs(a[None, :] - np.asarray(config.modes)[:, None])
    wrong = (dist > config.radius).all(axis=0)
    rec = log_record(config.steps, dense=20, num=80)
    frames = []
    for name, (obj, data) in fits.items():
        run = train(env, obj, data, steps=config.steps, lr=config.lr, optimizer=config.optimizer,
                    seed=seed, record=rec)
        snaps = run.snapshots
        columns = {"wrong_mass": snaps[:, wrong].sum(axis=1),
                   "kl_to_target": metrics.kl_divergence(env, snaps, p),
                   "target_wrong_mass": np.full(rec.size, p[wrong].sum())}
        for centre in config.modes:
            window = np.abs(a - centre) <= config.radius
            columns[f"mode_{centre:g}_mass"] = snaps[:, window].sum(axis=1)
        frames += tidy_rows({"objective": name}, seed, rec, columns)
    return pd.concat(frames, ignore_index=True)


def _half_time(curve: pd.Series, target: float) -> float:
    """First step at which the excess over ``target`` is at most half its initial value."""
    excess = curve - target
    hit = excess[excess <= 0.5 * excess.iloc[0]]
    return float(hit.index[0]) if len(hit) else np.inf


def plot(table: pd.DataFrame, config: ModeSeekingConfig):
    """(a) mass on the wrong region; (b) mass on each target mode; forward vs reverse KL."""
    fig, axes = new_figure(ncols=2, width=3.4, height=2.9)
    styles = {"forward KL": ("C0", "forward KL(p‖π) (mode-covering)"),
              "reverse KL": ("C3", "reverse KL(π‖p) (mode-seeking)")}
    ax = axes[0, 0]
    for name, (colour, label) in styles.items():
        curve = mean_curve(table, "wrong_mass", objective=name)
        ax.plot(curve.index, curve.values, color=colour, label=label)
    target = mean_curve(table, "target_wrong_mass").iloc[0]
    ax.axhline(target, color="k", linestyle=":", linewidth=1, label="target p")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(0, config.steps * 1.1)
    ax.set_xlabel(f"gradient step ({config.optimizer.upper()}, lr {config.lr:g})")
    ax.set_ylabel(f"π mass > {config.radius} arms from both modes")
    ax.set_title("(a) mass on the wrong region")
    ax.legend(fontsize=7, loc="upper right")
    ax = axes[0, 1]
    for k, centre in enumerate(config.modes):
        for name, (colour, _) in styles.items():
            curve = mean_curve(table, f"mode_{centre:g}_mass", objective=name)
            ax.plot(curve.index, curve.values, color=colour, linestyle=("-", "--", ":")[k % 3],
                    label=f"{name}, mode at {centre:g}")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(0, config.steps * 1.1)
    ax.set_xlabel(f"gradient step ({config.optimizer.upper()}, lr {config.lr:g})")
    ax.set_ylabel(f"π mass within {config.radius} arms of the mode")
    ax.set_title("(b) mass on each target mode")
    ax.legend(fontsize=7)
    return fig


def check(table: pd.DataFrame, config: ModeSeekingConfig) -> None:
    """Reverse KL holds less mass on the wrong region than forward KL at every recorded step and
    halves the excess at least twice as fast; it first drains the under-covered mode (mode
    seeking) while forward KL grows it steadily; both end near p."""
    fwd = mean_curve(table, "wrong_mass", objective="forward KL")
    rev = mean_curve(table, "wrong_mass", objective="reverse KL")
    target = float(mean_curve(table, "target_wrong_mass").iloc[0])
    gap = (rev - fwd).iloc[1:]
    assert (gap < 0).all(), (f"reverse KL wrong-region mass exceeds forward KL's at steps "
                             f"{list(gap.index[gap >= 0][:5])}")
    t_fwd, t_rev = _half_time(fwd, target), _half_time(rev, target)
    assert t_rev * 2 <= t_fwd, (f"reverse KL halves the excess wrong mass at step {t_rev:g}, "
                                f"forward KL at {t_fwd:g}: not twice as fast")
    ref = tajwar_reference()
    under_covered = [m for m in config.modes if ref[round(m)] < np.median(ref)]
    for centre in under_covered:
        f = mean_curve(table, f"mode_{centre:g}_mass", objective="forward KL")
        r = mean_curve(table, f"mode_{centre:g}_mass", objective="reverse KL")
        assert np.all(np.diff(f.values) >= -1e-9), f"forward KL mass on mode {centre:g} dips"
        assert r.min() < r.iloc[0] - 1e-3, (
            f"reverse KL does not first drain the under-covered mode {centre:g} (min {r.min():.4f} "
            f"vs start {r.iloc[0]:.4f})")
    for name in ("forward KL", "reverse KL"):
        kl = mean_curve(table, "kl_to_target", objective=name)
        assert kl.iloc[-1] < 0.05 * kl.iloc[0], (
            f"{name} does not converge to the target: KL {kl.iloc[0]:.3f} -> {kl.iloc[-1]:.4f}")


EXPERIMENT = register(Experiment(
    id="tajwar-mode-seeking", figure="F4",
    title="Reverse KL (mode-seeking) empties the wrong region faster than forward KL",
    paper=PAPER + ", §6 (mode-seeking vs mode-covering)", arxiv=ARXIV,
    claim=("Mode-seeking objectives (reverse KL, as in on-policy RL and contrastive losses) "
           "remove probability mass from the wrong bins of a categorical distribution faster "
           "than mode-covering maximum likelihood (forward KL), so they relocate mass faster."),
    differences=(
        "Our construction of the paper's categorical argument: a tabular softmax over 100 arms "
        "started at Tajwar's pi_ref, fitted by plain gradient descent (lr 1) to a bimodal target "
        "p (equal discretised Gaussians at arms 20 and 70, sd 5, 1e-6 uniform floor); the wrong "
        "region is every arm farther than 10 from both modes (pi_ref holds 0.50 there, p 0.035). "
        "Both fits use exact core objectives: forward KL = best_of_n with n = 1 on data with "
        "behaviour p; reverse KL = rlhf with beta = 1 and reward log(p/pi_ref). The logit "
        "velocity of a bin is p(z) - pi(z) (>= -pi(z)) for forward KL and "
        "-pi(z)(log(pi(z)/p(z)) - KL) for reverse KL, which is faster wherever pi >> p. Reverse KL "
        "halves the excess wrong mass by step ~14, forward KL by ~76. The price is mode "
        "seeking: reverse KL first drains the mode pi_ref under-covers (70) into the covered "
        "one (mass at 20 peaks at 0.87) and refills it only between steps ~200 and 500, "
        "whereas forward KL grows it from the start; both converge to p. With Adam (lr 0.01) "
        "reverse KL is also ahead at every step, by less (halving at step 76 vs 135, so the "
        "check's factor 2 is specific to gradient descent)."),
    config=ModeSeekingConfig, run=run, plot=plot, check=check, seeds=1))
