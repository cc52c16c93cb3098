"""F5 — Azar et al. 2023 (arXiv:2310.12036), §5.2 illustrative bandit: DPO overfits, IPO does not.

Three actions a > b > c, uniform reference, tabular softmax; the dataset D1 holds each pair of
the total order once, so its empirical preferences are deterministic. DPO's loss has no finite
minimiser there: it sends pi(a) -> 1 whatever tau is. IPO converges to an interior point whose logit
gaps are theta_a - theta_b = theta_b - theta_c = 1/(3 tau) (science.md §5, claim C6), approaching
uniform as tau grows.

Conventions: IPO is TRL's (h - 1/(2 beta))^2 with beta = tau (Azar's tau); DPO uses beta = tau.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from coverage_sim._validation import check_choice, check_int, check_positive
from coverage_sim.experiments.registry import Experiment, register
from coverage_sim.instances import AZAR_ARMS, azar_bandit, azar_d1
from coverage_sim.objectives import objective
from coverage_sim.plotting import metric_frame, new_figure
from coverage_sim.experiments.policy_classes import check_policy_class, make_policy, train_each

__all__ = ["AzarConfig", "run", "plot", "check"]

_LOSSES = {"DPO": "sigmoid", "IPO": "ipo"}


@dataclass(frozen=True)
class AzarConfig:
    """Config of F5.

    Attributes:
      taus: regularisation strengths tau (Azar et al. use 0.1, 0.5 and 1).
      steps: gradient steps.
      lr: step size.
      optimizer: "gd" (plain gradient descent); the paper's "adam" draws the same picture but, at a
        constant step size, keeps oscillating around IPO's fixed point at the 1e-4 level.
      record_points: number of log-spaced record steps.
      policy: policy class, ``"tabular"`` or ``"mlp"`` (Tajwar et al.'s bandit MLP,
        arXiv:2404.14367, SFT'd to the uniform reference); a log-linear policy with full-rank
        features on 3 arms is the tabular one.
    """

    taus: tuple[float, ...] = (0.1, 0.5, 1.0)
    steps: int = 5000
    lr: float = 0.3
    optimizer: str = "gd"
    record_points: int = 80
    policy: str = "tabular"

    def __post_init__(self):
        check_policy_class(self.policy, allowed=("tabular", "mlp"))
        if not self.taus:
            raise ValueError("taus must hold at least one value")
        for tau in self.taus:
            check_positive(tau, "taus")
        check_int(self.steps, "steps", minimum=1)
        check_positive(self.lr, "lr")
        check_choice(self.optimizer, "optimizer", ("adam", "gd", "npg"))
        check_int(self.record_points, "record_points", minimum=2)

    @classmethod
    def quick(cls) -> "AzarConfig":
        return cls(steps=2000, record_points=40)


def run(config: AzarConfig, seed: int) -> pd.DataFrame:
    """Action probabilities and loss of DPO and IPO on D1 for every tau (exact, so seed-free)."""
    env = azar_bandit()
    data = azar_d1(env)
    frames = []
    for name, loss in _LOSSES.items():
        runs = train_each(env, [objective(loss, beta=tau) for tau in config.taus], data,
                          steps=config.steps, lr=config.lr, optimizer=config.optimizer, seed=seed,
                          record=config.record_points, policy=make_policy(config.policy))
        frames += _tidy(name, config.taus, runs, seed)
    return pd.concat(frames, ignore_index=True)


def _tidy(name, taus, runs, seed) -> list[pd.DataFrame]:
    frames = []
    for tau, r in zip(taus, runs):
        steps = r.history["step"].to_numpy()
        columns = {f"pi({arm})": r.snapshots[:, i] for i, arm in enumerate(AZAR_ARMS)}
        columns["loss"] = r.history["loss"].to_numpy()
        for metric, values in columns.items():
            frames.append(pd.DataFrame({"loss_type": name, "tau": tau, "seed": seed, "step": steps,
                                        "metric": metric, "value": values}))
    return frames


def plot(table: pd.DataFrame, config: AzarConfig):
    """Action probabilities against step: DPO (left) next to IPO (right), one colour per action."""
    fig, axes = new_figure(ncols=2, width=3.6, height=2.9, sharey=True)
    styles = {tau: style for tau, style in zip(sorted(config.taus), ("-", "--", ":", "-."))}
    colours = dict(zip(AZAR_ARMS, ("C0", "C1", "C2")))
    for ax, name in zip(axes[0], _LOSSES):
        for arm in AZAR_ARMS:
            frame = metric_frame(table[table["loss_type"] == name], f"pi({arm})")
            for tau, rows in frame.groupby("tau"):
                mean = rows.groupby("step")[f"pi({arm})"].mean()
                ax.plot(mean.index, mean.values, color=colours[arm], linestyle=styles[tau],
                        label=f"π({arm}), τ={tau:g}")
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel(f"{config.optimizer} step")
        ax.set_title(f"{name} on D1 (a ≻ b ≻ c)")
        ax.set_ylim(-0.02, 1.02)
    axes[0, 0].set_ylabel("action probability")
    axes[0, 1].legend(ncol=1, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig


def check(table: pd.DataFrame, config: AzarConfig) -> None:
    """DPO: pi(a) strictly increasing and > 0.99 for every tau. IPO: gaps 1/(3 tau) within 1e-6."""
    for tau in config.taus:
        dpo = table[(table["loss_type"] == "DPO") & (table["tau"] == tau)]
        pa = dpo[dpo["metric"] == "pi(a)"].sort_values("step")["value"].to_numpy()
        assert np.all(np.diff(pa) > 0), f"DPO pi(a) not strictly increasing at tau={tau}"
        assert pa[-1] > 0.99, f"DPO pi(a) = {pa[-1]:.4f} <= 0.99 at tau={tau}"
        loss = dpo[dpo["metric"] == "loss"]["value"].to_numpy()
        assert np.all(loss > 0), f"DPO loss reached 0 at tau={tau}"
        ipo = table[(table["loss_type"] == "IPO") & (table["tau"] == tau)]
        last = ipo[ipo["step"] == ipo["step"].max()].set_index("metric")["value"]
        logits = np.log([last[f"pi({arm})"] for arm in AZAR_ARMS])
        gaps = -np.diff(logits)
        assert np.all(np.abs(gaps - 1.0 / (3.0 * tau)) < 1e-6), (
            f"IPO logit gaps {gaps} differ from 1/(3 tau) = {1 / (3 * tau):.6f} at tau={tau}")


EXPERIMENT = register(Experiment(
    id="azar-ipo-vs-dpo", figure="F5",
    title="DPO overfits deterministic preferences; IPO converges (3-arm total order)",
    paper="Azar et al. 2023, A General Theoretical Paradigm to Understand Learning from Human "
          "Preferences, §5.2", arxiv="2310.12036",
    claim=("DPO drives pi(a) to 1 and pi(b), pi(c) to 0 for every tau and never converges; IPO "
           "converges to an interior tau-dependent point keeping a > b > c."),
    differences=("Exact population gradients on D1 instead of minibatches, and plain gradient descent "
                 "instead of Adam: at a constant step size Adam keeps oscillating around IPO's fixed "
                 "point (3.5e-4 off after 10,000 steps), which would hide the exact fixed point we "
                 "assert (gaps 1/(3 tau)); the trajectories look the same. IPO in TRL's convention "
                 "(h - 1/(2 tau))^2, DPO with beta = tau. What produces the effect: D1's empirical "
                 "preferences are deterministic, so DPO's loss has no finite minimiser."),
    config=AzarConfig, run=run, plot=plot, check=check, seeds=1))
