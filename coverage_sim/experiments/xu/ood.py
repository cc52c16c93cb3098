"""F11 ``xu-ood`` — Xu et al. 2024 (arXiv:2404.10719), "Is DPO Superior to PPO for LLM Alignment?
A Comprehensive Study", §4: DPO moves mass to an out-of-distribution response; RLHF does not.

F11 (``xu-ood``, science.md §6): the final ``pi_ref``, ``pi_DPO`` and ``pi_RLHF`` on
``{y1, y2, y3}``:
log-linear DPO moves the mass to the out-of-distribution ``y3``; RLHF (whose reward model even
extrapolates ``y3`` to the top of its range) and tabular DPO cannot.

The paper's example is set-valued with ``pi_ref(y3) = 0``; ours follows the optimisation dynamics
with ``pi_ref(y3) = 1e-3`` on the bandit of :mod:`coverage_sim.experiments.xu.setting` (shared with
F10): ``EXPERIMENT.differences``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from coverage_sim._validation import check_in_range, check_int, check_positive
from coverage_sim.experiments.registry import Experiment, register
from coverage_sim.experiments.xu.setting import check_reward, clipped_reward_model, tidy_runs
from coverage_sim.instances import XU_ARMS, xu_bandit, xu_features, xu_pairs
from coverage_sim.objectives import objective
from coverage_sim.plotting import metric_frame, new_figure
from coverage_sim.experiments.policy_classes import check_policy_class, make_policy, train_each
from coverage_sim.policies import TabularSoftmax

__all__ = ["EXPERIMENT", "XuConfig", "check", "plot", "run"]


_LABELS = {"loglinear": "log-linear", "mlp": "MLP"}


def _methods(policy: str) -> tuple[str, str, str]:
    """Method names: DPO with the function approximator, tabular DPO, RLHF with the approximator."""
    label = _LABELS[policy]
    return f"DPO ({label})", "DPO (tabular)", f"RLHF ({label})"


@dataclass(frozen=True)
class XuConfig:
    """Config of F11.

    Attributes:
      eps: reference mass of the out-of-distribution ``y3`` ("near zero"; ``eps = 0`` is the
        set-valued claim of science.md §6 and is covered by the property tests).
      beta: KL strength of DPO and RLHF.
      reward: gold reward of ``(y1, y2, y3)`` (``r1 > r2 > r3``).
      reward_bound: RLHF's reward model is clipped to ``[-R, R]``.
      steps: optimiser steps.
      lr: Adam step size for DPO.
      rlhf_lr: natural-policy-gradient step size for RLHF.
      record_points: number of log-spaced record steps.
      policy: the function approximator of DPO and RLHF: ``"loglinear"`` (features
        :func:`~coverage_sim.xu_features`, ``phi(y3) = phi(y1) - phi(y2)``) or ``"mlp"``
        (Tajwar et al.'s bandit MLP, arXiv:2404.14367, SFT'd to ``pi_ref``; its RLHF uses Adam
        with ``lr``, since natural policy gradient is engine-only). Tabular DPO is always the
        control.
    """

    eps: float = 1e-3
    beta: float = 0.1
    reward: tuple[float, ...] = (1.0, 0.0, -3.0)
    reward_bound: float = 0.25
    steps: int = 5000
    lr: float = 0.05
    rlhf_lr: float = 0.5
    record_points: int = 40
    policy: str = "loglinear"

    def __post_init__(self):
        check_policy_class(self.policy, allowed=("loglinear", "mlp"))
        check_in_range(self.eps, "eps", 0.0, 1.0, low_open=True, high_open=True)
        check_positive(self.beta, "beta")
        check_reward(self.reward)
        check_positive(self.reward_bound, "reward_bound")
        check_int(self.steps, "steps", minimum=1)
        check_positive(self.lr, "lr")
        check_positive(self.rlhf_lr, "rlhf_lr")
        check_int(self.record_points, "record_points", minimum=2)

    @classmethod
    def quick(cls) -> XuConfig:
        return cls(steps=2000, record_points=20)


def run(config: XuConfig, seed: int) -> pd.DataFrame:
    """pi_ref, and pi over steps of log-linear DPO, tabular DPO and RLHF with a clipped r_hat."""
    env = xu_bandit(config.eps, reward=config.reward)
    data = xu_pairs(env)
    phi = xu_features()
    r_hat = clipped_reward_model(phi, [(0, 1)], config.reward_bound)
    beta = config.beta
    common = {"steps": config.steps, "seed": seed, "record": config.record_points}
    names = _methods(config.policy)
    approx = make_policy(config.policy, features=phi)
    rlhf_opt = ({"lr": config.rlhf_lr, "optimizer": "npg"} if config.policy == "loglinear"
                else {"lr": config.lr, "optimizer": "adam"})
    runs = {
        names[0]: train_each(env, [objective("sigmoid", beta=beta)], data, lr=config.lr,
                             optimizer="adam", policy=approx, **common)[0],
        names[1]: train_each(env, [objective("sigmoid", beta=beta)], data, lr=config.lr,
                             optimizer="adam", policy=TabularSoftmax(), **common)[0],
        names[2]: train_each(env, [objective("rlhf", beta=beta, reward=r_hat)], policy=approx,
                             **rlhf_opt, **common)[0],
    }
    frames = tidy_runs(list(runs.values()), [{"method": m} for m in runs],
                       lambda key: (env, beta), seed)
    for i, arm in enumerate(XU_ARMS):
        frames.append(pd.DataFrame({"method": ["π_ref"], "seed": seed, "step": 0,
                                    "metric": f"pi({arm})", "value": float(env.ref[i])}))
    for i, arm in enumerate(XU_ARMS):
        frames.append(pd.DataFrame({"method": ["r̂ (clipped)"], "seed": seed, "step": 0,
                                    "metric": f"r_hat({arm})", "value": float(r_hat[i])}))
    return pd.concat(frames, ignore_index=True)


def _final_policy(table: pd.DataFrame, method: str) -> np.ndarray:
    rows = table[table["method"] == method]
    last = rows[rows["step"] == rows["step"].max()].groupby("metric")["value"].mean()
    return np.array([last[f"pi({arm})"] for arm in XU_ARMS])


def plot(table: pd.DataFrame, config: XuConfig):
    """(a) final pi on y1, y2, y3 per method next to pi_ref; (b) pi(y3) against step."""
    fig, axes = new_figure(ncols=2, width=3.6, height=3.0)
    ax_bar, ax_t = axes[0]
    methods = _methods(config.policy)
    names = ("π_ref",) + methods
    colours = dict(zip(names, ("0.6", "C3", "C1", "C0")))
    width = 0.8 / len(names)
    x = np.arange(len(XU_ARMS))
    for i, name in enumerate(names):
        probs = _final_policy(table, name)
        bars = ax_bar.bar(x + (i - (len(names) - 1) / 2) * width, probs, width, color=colours[name],
                          label=name)
        for rect, p in zip(bars, probs):
            ax_bar.annotate(f"{p:.2g}" if p >= 0.005 else f"{p:.0e}",
                            (rect.get_x() + rect.get_width() / 2, p), xytext=(0, 1),
                            textcoords="offset points", ha="center", va="bottom", fontsize=6,
                            rotation=90)
    ax_bar.set_xticks(x, [f"{a}\n(r* = {r:g})" for a, r in zip(XU_ARMS, config.reward)])
    ax_bar.set_ylim(0, 1.2)
    ax_bar.set_ylabel("final probability")
    ax_bar.set_title("(a) final π; data y1 ≻ y2 only")
    for name in methods:
        frame = metric_frame(table[table["method"] == name], "pi(y3)")
        mean = frame.groupby("step")["pi(y3)"].mean()
        ax_t.plot(mean.index, mean.values, color=colours[name], label=name)
    ax_t.axhline(config.eps, color="0.6", linestyle="--", linewidth=1.2)
    ax_t.set_xscale("symlog", linthresh=1)
    ax_t.set_xlim(0, config.steps)
    ax_t.set_yscale("log")
    ax_t.set_xlabel("optimiser step (symlog)")
    ax_t.set_ylabel("π(y3)  (log scale)")
    ax_t.set_title("(b) mass on the unseen y3")
    ax_t.annotate(f"π_ref(y3) = {config.eps:g}", (0.02, config.eps),
                  xycoords=ax_t.get_yaxis_transform(),
                  xytext=(0, -2), textcoords="offset points", ha="left", va="top", fontsize=7,
                  color="0.4")
    handles, labels = ax_bar.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4)
    return fig


def check(table: pd.DataFrame, config: XuConfig) -> None:
    """Log-linear DPO: pi(y3) > 0.9; tabular DPO: pi(y3) never above pi_ref(y3); RLHF: pi(y3)
    within the C4 bound pi_ref(y3) e^{2R/beta} and below 0.01."""
    eps = config.eps
    methods = _methods(config.policy)
    dpo = _final_policy(table, methods[0])
    assert dpo[2] > 0.9, f"{methods[0]} put only {dpo[2]:.4f} on the unseen y3"
    tab = table[(table["method"] == methods[1]) & (table["metric"] == "pi(y3)")]
    tab_y3 = tab.sort_values("step")["value"].to_numpy()
    assert np.all(tab_y3 <= eps * (1 + 1e-9)), (
        f"tabular DPO raised pi(y3) to {tab_y3.max():.3g} > pi_ref(y3) = {eps:g}")
    rl = table[(table["method"] == methods[2]) & (table["metric"] == "pi(y3)")]["value"]
    bound = eps * np.exp(2 * config.reward_bound / config.beta)
    assert rl.max() <= bound, (
        f"RLHF pi(y3) = {rl.max():.3g} exceeds pi_ref e^(2R/beta) = {bound:.3g}")
    assert rl.max() < 0.01 < dpo[2], f"RLHF pi(y3) = {rl.max():.3g} is not small"
    rl_final = _final_policy(table, methods[2])
    assert rl_final.argmax() == 0, f"RLHF's final policy {rl_final} does not favour y1"


EXPERIMENT = register(Experiment(
    id="xu-ood", figure="F11",
    title="DPO moves mass to an out-of-distribution response; RLHF does not",
    paper="Xu et al. 2024, Is DPO Superior to PPO for LLM Alignment? A Comprehensive Study, §4",
    arxiv="2404.10719",
    claim=("Every PPO/RLHF solution minimises the DPO loss but not conversely: with data only "
           "y1 > y2, DPO can put large probability on the unseen y3, while RLHF's KL term keeps "
           "pi(y3) near pi_ref(y3) ~ 0."),
    differences=("The paper's example is set-valued with pi_ref(y3) = 0 and a table of solutions; "
                 "we "
                 "use pi_ref(y3) = 1e-3 and follow the optimisation dynamics. Tabular DPO cannot "
                 "move y3 (its logit gets zero gradient), so the OOD drift needs function "
                 "approximation: a log-linear policy with phi(y3) = phi(y1) - phi(y2). RLHF uses "
                 "the "
                 "same log-linear policy and a clipped linear reward model that even rates y3 at "
                 "the top; its KL term still pins pi(y3) ~ 2 pi_ref(y3). PPO is replaced by the "
                 "exact natural policy gradient to the RLHF optimum."),
    config=XuConfig, run=run, plot=plot, check=check, seeds=1))
