"""F8 ``tang-classifier`` — Tang et al. 2024 (arXiv:2405.08448), with Chen et al. 2024's ranking
accuracy (arXiv:2405.19534): offline IPO is the better pairwise classifier and the worse generator.

Pairwise classification accuracy (sign of the implicit preference,
:func:`~coverage_sim.experiments.tang.setting.sign_accuracy`, and ranking accuracy) on held-out
gold pairs vs generation quality (gold win rate, reward) over training, online vs offline IPO.

Claim: policies trained offline become better pairwise classifiers but worse generators; online
policies the reverse. The tabular mechanism and where the effect fades: ``EXPERIMENT.differences``.

See :mod:`coverage_sim.experiments.tang.setting` for the task, the data, the proxy and the
conventions shared by F6-F9.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import softmax

from coverage_sim._validation import check_in_range, check_int, check_positive
from coverage_sim.data import offline_pairs
from coverage_sim.env import Bandit
from coverage_sim.experiments.registry import Experiment, register
from coverage_sim.experiments.tang.setting import (ARXIV, PAPER, SETUP, TangConfig, seed_inputs,
                                                    sign_accuracy, single_row, tang_bandit)
from coverage_sim.metrics import ranking_accuracy
from coverage_sim.objectives import objective
from coverage_sim.plotting import mean_band, metric_frame, new_figure
from coverage_sim.train import log_schedule, train

__all__ = ["EXPERIMENT", "TangClassifierConfig", "check", "plot", "run"]


@dataclass(frozen=True)
class TangClassifierConfig(TangConfig):
    """Config of F8 (shared fields in :class:`TangConfig`).

    Attributes:
      tau: IPO strength of both runs (small: the regime where offline IPO over-fits).
      record_points: number of log-spaced checkpoints.
      late_fraction: assertions average the checkpoints at steps >= late_fraction * steps.
    """

    tau: float = 0.02
    record_points: int = 30
    late_fraction: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        check_positive(self.tau, "tau")
        check_int(self.record_points, "record_points", minimum=2)
        check_in_range(self.late_fraction, "late_fraction", 0.0, 1.0)

    @classmethod
    def quick(cls) -> TangClassifierConfig:
        return cls(steps=600, record_points=15)


def _reward_policy(env: Bandit, reward) -> np.ndarray:
    """A policy whose log-ratio is ``reward`` (to score ``sign(reward_i - reward_j)``)."""
    r = env.as2d(reward, "reward")
    logits = env.ref_logp2d + r - r.max(axis=1, keepdims=True)
    return env.like_ref(softmax(logits, axis=1))


_F8_METRICS = {"sign_accuracy": "accuracy of sign(h_π)",
               "ranking_accuracy": "ranking accuracy 1[π(y_w) ≥ π(y_l)]",
               "win_rate": "gold win rate vs π_ref", "reward": "gold reward E_π r*",
               "kl": "KL(π ‖ π_ref)"}


def run(config: TangClassifierConfig, seed: int) -> pd.DataFrame:
    """Classification accuracies on held-out gold pairs (the exact ``pi_ref x pi_ref`` population
    with gold BT labels) and generation quality at log-spaced checkpoints, online vs offline; plus
    the proxy's and the gold reward's own sign accuracy (``method = "reference"``, step 0)."""
    env = tang_bandit(config)
    data, r_hat, _ = seed_inputs(env, config, seed)
    held_out = offline_pairs(env, env.ref)
    record = log_schedule(config.steps, config.record_points)
    runs = {"online": train(env, objective("online_ipo", beta=config.tau, reward=r_hat),
                            steps=config.steps, lr=config.lr, seed=seed, record=record,
                            eval_data=held_out),
            "offline": train(env, objective("ipo", beta=config.tau), data, steps=config.steps,
                             lr=config.lr, seed=seed, record=record, eval_data=held_out)}
    frames = []
    for method, r in runs.items():
        hist = r.history.assign(sign_accuracy=sign_accuracy(env, r.snapshots, held_out))
        frames += [pd.DataFrame({"method": method, "tau": config.tau, "seed": seed,
                                 "step": hist["step"].to_numpy(), "metric": metric,
                                 "value": hist[metric].to_numpy()}) for metric in _F8_METRICS]
    for name, reward in (("proxy_accuracy", r_hat), ("gold_accuracy", env.reward)):
        acc = sign_accuracy(env, _reward_policy(env, reward)[None], held_out)[0]
        frames.append(single_row("reference", config.tau, seed, 0, name, acc))
    frames.append(single_row("reference", config.tau, seed, 0, "proxy_ranking_accuracy",
                             ranking_accuracy(env, _reward_policy(env, r_hat), held_out)))
    return pd.concat(frames, ignore_index=True)


def _late(frame, config):
    return frame[frame["step"] >= config.late_fraction * config.steps]


def plot(table: pd.DataFrame, config: TangClassifierConfig):
    """(a) classification accuracies vs step; (b) gold win rate vs step; (c) the trajectories in the
    (accuracy, win rate) plane."""
    fig, axes = new_figure(ncols=3, width=2.75, height=3.2)
    colours = {"online": "C0", "offline": "C3"}
    ref = table[table["method"] == "reference"].groupby("metric")["value"].mean()
    for method in ("online", "offline"):
        rows = table[table["method"] == method]
        for metric, style in (("sign_accuracy", "-"), ("ranking_accuracy", ":")):
            mean_band(axes[0, 0], metric_frame(rows, metric), "step", metric,
                      color=colours[method], linestyle=style,
                      label=f"{method}, {'sign(h_π)' if style == '-' else 'π(y_w) ≥ π(y_l)'}")
        mean_band(axes[0, 1], metric_frame(rows, "win_rate"), "step", "win_rate",
                  color=colours[method], label=f"{method} IPO")
        piv = rows.pivot_table(index="step", columns="metric", values="value")
        axes[0, 2].plot(piv["sign_accuracy"], piv["win_rate"], "-o", ms=2.5,
                        color=colours[method])
        axes[0, 2].plot(piv["sign_accuracy"].iloc[-1], piv["win_rate"].iloc[-1], "*", ms=10,
                        color=colours[method])
    if "proxy_accuracy" in ref:
        axes[0, 0].axhline(ref["proxy_accuracy"], color="0.4", linestyle="--", linewidth=1,
                           label="proxy r̂, sign")
    if "gold_accuracy" in ref:
        axes[0, 0].axhline(ref["gold_accuracy"], color="k", linestyle="-.", linewidth=1,
                           label="gold r*, sign (Bayes)")
    for ax in axes[0, :2]:
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(0, config.steps)
        ax.set_xlabel("Adam step")
    axes[0, 0].set_ylabel("held-out pairwise accuracy")
    axes[0, 0].set_title(f"(a) classification (τ = {config.tau:g})")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncol=3)
    axes[0, 1].set_ylabel("gold win rate vs π_ref")
    axes[0, 1].set_title("(b) generation")
    axes[0, 2].set_xlabel("accuracy of sign(h_π)")
    axes[0, 2].set_ylabel("gold win rate vs π_ref")
    axes[0, 2].set_title("(c) trajectories (★ = end)")
    return fig


def check(table: pd.DataFrame, config: TangClassifierConfig) -> None:
    """Late in training offline IPO is the better classifier (sign(h) and ranking accuracy) and the
    worse generator (gold win rate and reward); online IPO the reverse."""
    late = _late(table, config)
    mean = late.groupby(["method", "metric"])["value"].mean()

    def get(method, metric):
        return float(mean[(method, metric)])

    for metric, margin in (("sign_accuracy", 0.05), ("ranking_accuracy", 0.03)):
        on, off = get("online", metric), get("offline", metric)
        assert off >= on + margin, (f"offline IPO is not the better classifier by {metric}: "
                                    f"offline {off:.3f} vs online {on:.3f} (margin {margin})")
    for metric, margin in (("win_rate", 0.05), ("reward", 0.3)):
        on, off = get("online", metric), get("offline", metric)
        assert on >= off + margin, (f"online IPO is not the better generator by {metric}: "
                                    f"online {on:.3f} vs offline {off:.3f} (margin {margin})")


EXPERIMENT = register(Experiment(
    id="tang-classifier", figure="F8",
    title="Offline IPO: better pairwise classifier, worse generator",
    paper=PAPER + " (with Chen et al. 2024's ranking accuracy, arXiv:2405.19534)", arxiv=ARXIV,
    claim=("Policies trained offline become better pairwise classifiers (accuracy of their implicit "
           "preference on held-out golden pairs) but worse generators (golden win rate); online "
           "policies the reverse."),
    differences=(SETUP + " Held-out pairs = the exact pi_ref x pi_ref population with gold BT "
                 "labels (the expectation over any held-out sample). Accuracy of sign(h_pi) is Tang "
                 "et al.'s metric; ranking accuracy 1[pi(y_w) >= pi(y_l)] is Chen et al.'s. "
                 "Mechanism in the tabular case: at small tau online IPO drives most arms' "
                 "probability to ~0, after which their log-ratios get no gradient and stay "
                 "unordered, while offline IPO orders every arm of the pi_ref pair distribution "
                 "(its accuracy equals the proxy's) but puts its mass on lucky rare arms. At larger "
                 "tau both accuracies converge to the proxy's and the effect fades."),
    config=TangClassifierConfig, run=run, plot=plot, check=check, seeds=3))
