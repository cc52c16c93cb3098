"""F11 ``xu-ood`` — Xu et al. 2024 (arXiv:2404.10719), "Is DPO Superior to PPO for LLM Alignment?
A Comprehensive Study", §4: DPO moves mass to an out-of-distribution response; RLHF does not.

F11: the final ``pi_ref``, ``pi_DPO`` and ``pi_RLHF`` on ``{y1, y2, y3}``: log-linear DPO moves the
mass to the out-of-distribution ``y3``; RLHF (whose reward model even extrapolates ``y3`` to the top
of its range) and tabular DPO cannot.

The paper's example is set-valued with ``pi_ref(y3) = 0``; ours follows the optimisation dynamics
with ``pi_ref(y3) = eps > 0`` on the bandit of :mod:`coverage_sim.experiments.xu.setting` (shared
with F10): ``EXPERIMENT.differences``. Instances: the construction itself (``eps = 1e-3``, features
:func:`~coverage_sim.xu_features`) and random members of its family, ``eps`` log-uniform on
``eps_range`` and the features perturbed entrywise by ``feature_noise * N(0, 1)``
(:func:`~coverage_sim.experiments.xu.setting.feature_family`), all drawn from the run's seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from coverage_sim._validation import check_in_range, check_int, check_positive
from coverage_sim.experiments.policy_classes import check_policy_class, make_policy, train_each
from coverage_sim.experiments.registry import Experiment, register
from coverage_sim.experiments.verdict import CheckResult, Effect, clause
from coverage_sim.experiments.xu.setting import (check_reward, clipped_reward_model,
                                                 feature_family, tidy_runs)
from coverage_sim.instances import XU_ARMS, xu_bandit, xu_pairs
from coverage_sim.objectives import objective
from coverage_sim.plotting import metric_frame, new_figure
from coverage_sim.policies import LogLinear, TabularSoftmax
from coverage_sim.train import train_many

__all__ = ["EXPERIMENT", "XuConfig", "check", "plot", "run"]


_LABELS = {"loglinear": "log-linear", "mlp": "MLP"}
#: RLHF keeps pi(y3) "near pi_ref(y3)": within this factor of it at every step.
NEAR_FACTOR = 10.0


def _methods(policy: str) -> tuple[str, str, str]:
    """Method names: DPO with the function approximator, tabular DPO, RLHF with the approximator."""
    label = _LABELS[policy]
    return f"DPO ({label})", "DPO (tabular)", f"RLHF ({label})"


@dataclass(frozen=True)
class XuConfig:
    """Config of F11.

    Attributes:
      eps: reference mass of the out-of-distribution ``y3`` in instance 0 ("near zero"; the
        set-valued claim at ``eps = 0`` is covered by the property tests).
      instances: number of instances: the construction, then random members of its family.
      eps_range: ``pi_ref(y3)`` of the random instances is log-uniform on this range.
      feature_noise: standard deviation of the entrywise perturbation of the random instances'
        features (log-linear policy only).
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
    instances: int = 8
    eps_range: tuple[float, ...] = (1e-5, 1e-2)
    feature_noise: float = 0.2
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
        check_int(self.instances, "instances", minimum=1)
        if len(self.eps_range) != 2 or not 0 < self.eps_range[0] <= self.eps_range[1] < 1:
            raise ValueError(f"eps_range must be (low, high) with 0 < low <= high < 1, got "
                             f"{self.eps_range!r}")
        check_positive(self.feature_noise, "feature_noise", allow_zero=True)
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


def _instances(config: XuConfig, seed: int):
    """(eps, features) per instance: the construction, then random members of its family."""
    rng = np.random.default_rng([seed, 1])
    lo, hi = np.log(config.eps_range)
    eps = [config.eps] + [float(np.exp(rng.uniform(lo, hi))) for _ in range(config.instances - 1)]
    return list(zip(eps, feature_family(config.instances, config.feature_noise, seed)))


def run(config: XuConfig, seed: int) -> pd.DataFrame:
    """pi_ref, and pi over steps of DPO with the function approximator, tabular DPO and RLHF with a
    clipped r_hat, on every instance."""
    instances = _instances(config, seed)
    envs = [xu_bandit(eps, reward=config.reward) for eps, _ in instances]
    datas = [xu_pairs(env) for env in envs]
    r_hats = [clipped_reward_model(phi, [(0, 1)], config.reward_bound) for _, phi in instances]
    beta = config.beta
    common = {"steps": config.steps, "seed": seed, "record": config.record_points}
    dpo, rlhf = objective("sigmoid", beta=beta), [objective("rlhf", beta=beta, reward=r)
                                                  for r in r_hats]
    names = _methods(config.policy)
    if config.policy == "loglinear":
        approx = [LogLinear(phi) for _, phi in instances]
        runs = {names[0]: train_many(envs, dpo, datas, lr=config.lr, optimizer="adam",
                                     policy=approx, **common),
                names[2]: train_many(envs, rlhf, lr=config.rlhf_lr, optimizer="npg",
                                     policy=approx, **common)}
    else:  # the MLP has no features: its instances differ by eps only
        approx = make_policy(config.policy)
        runs = {names[0]: train_each(envs, dpo, datas, lr=config.lr, optimizer="adam",
                                     policy=approx, **common),
                names[2]: train_each(envs, rlhf, lr=config.lr, optimizer="adam", policy=approx,
                                     **common)}
    runs[names[1]] = train_many(envs, dpo, datas, lr=config.lr, optimizer="adam",
                                policy=TabularSoftmax(), **common)
    frames = []
    for b, ((eps, _), env) in enumerate(zip(instances, envs)):
        frames += tidy_runs([runs[m][b] for m in names],
                            [{"instance": b, "eps": eps, "method": m} for m in names],
                            lambda key: (env, beta), seed)
        static = {f"pi({arm})": float(env.ref[i]) for i, arm in enumerate(XU_ARMS)}
        static.update({f"r_hat({arm})": float(r_hats[b][i]) for i, arm in enumerate(XU_ARMS)})
        frames.append(pd.DataFrame({"instance": b, "eps": eps,
                                    "method": ["π_ref"] * 3 + ["r̂ (clipped)"] * 3, "seed": seed,
                                    "step": 0, "metric": list(static),
                                    "value": list(static.values())}))
    return pd.concat(frames, ignore_index=True)


def _final_policy(table: pd.DataFrame, method: str, instance: int = 0) -> np.ndarray:
    rows = table[(table["method"] == method) & (table["instance"] == instance)]
    last = rows[rows["step"] == rows["step"].max()].groupby("metric")["value"].mean()
    return np.array([last[f"pi({arm})"] for arm in XU_ARMS])


def _paths(table: pd.DataFrame, method: str, metric: str = "pi(y3)") -> dict:
    """Per (instance, seed): the metric against step, sorted."""
    rows = table[(table["method"] == method) & (table["metric"] == metric)]
    if rows.empty:
        raise AssertionError(f"no {metric} rows for {method!r}")
    return {key: g.sort_values("step")["value"].to_numpy()
            for key, g in rows.groupby(["instance", "seed"])}


def plot(table: pd.DataFrame, config: XuConfig):
    """(a) final pi on y1, y2, y3 per method next to pi_ref (instance 0, the construction);
    (b) pi(y3) against step on every instance, relative to its pi_ref(y3)."""
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
                          label=r"$\pi_{\rm ref}$" if name == "π_ref" else name)
        for rect, p in zip(bars, probs):
            ax_bar.annotate(f"{p:.2g}" if p >= 0.005 else f"{p:.0e}",
                            (rect.get_x() + rect.get_width() / 2, p), xytext=(0, 1),
                            textcoords="offset points", ha="center", va="bottom", fontsize=7.5,
                            rotation=90)
    ax_bar.set_xticks(x, [f"{a}\n(r* = {r:g})" for a, r in zip(XU_ARMS, config.reward)])
    ax_bar.set_ylim(0, 1.25)  # room for the value labels above the bars at 1
    ax_bar.set_ylabel("final probability")
    ax_bar.set_title(f"(a) final π, ε = {config.eps:g}; data y1 ≻ y2 only")
    eps = table.drop_duplicates("instance").set_index("instance")["eps"]
    for name in methods:
        frame = metric_frame(table[table["method"] == name], "pi(y3)")
        for instance, rows in frame.groupby("instance"):
            mean = rows.groupby("step")["pi(y3)"].mean()
            first = instance == frame["instance"].min()
            ax_t.plot(mean.index, mean.values / eps[instance], color=colours[name],
                      linewidth=1.6 if first else 0.7, alpha=1.0 if first else 0.45,
                      label=name if first else None)
    ax_t.axhline(1.0, color="0.6", linestyle="--", linewidth=1.2)
    ax_t.axhline(NEAR_FACTOR, color="C0", linestyle=":", linewidth=1.0,
                 label=f"{NEAR_FACTOR:g} " + r"$\pi_{\rm ref}(\mathrm{y3})$")
    ax_t.set_xscale("symlog", linthresh=1)
    ax_t.set_xlim(0, config.steps)
    ax_t.set_yscale("log")
    # tabular DPO's pi(y3) keeps falling (the normaliser grows): clip the axis below
    ax_t.set_ylim(1e-3, None)
    ax_t.set_xlabel("optimiser step (symlog)")
    ax_t.set_ylabel(r"$\pi(\mathrm{y3})\,/\,\pi_{\rm ref}(\mathrm{y3})$")
    n = table["instance"].nunique()
    ax_t.set_title(f"(b) unseen y3, {n} instance{'s' if n > 1 else ''}")
    ax_t.legend(loc="upper left", fontsize=7)
    handles, labels = ax_bar.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4)
    return fig


def check(table: pd.DataFrame, config: XuConfig) -> CheckResult:
    """Xu et al.'s claim on every instance.

    Paper's clauses:

    - ``dpo-ood-mass``: DPO with the function approximator ends with pi(y3) > 0.5 (large
      probability on a response the data never show);
    - ``rlhf-near-reference``: RLHF keeps pi(y3) within a factor ``NEAR_FACTOR`` = 10 of
      pi_ref(y3) at every recorded step (its KL term; the bound of claim C4, e^{2R/beta}, allows
      more);
    - ``rlhf-stays-on-y1``: RLHF's final policy puts its largest mass on y1.

    Control (not the paper's claim): ``tabular-dpo-control``: tabular DPO never raises pi(y3) above
    pi_ref(y3) (its logit gets zero gradient), so the drift needs function approximation.

    Effect: final pi(y3), DPO minus RLHF (function approximator), per instance.
    """
    dpo_name, tab_name, rlhf_name = _methods(config.policy)
    eps = table.drop_duplicates(["instance", "seed"]).set_index(["instance", "seed"])["eps"]
    dpo, tab, rlhf = _paths(table, dpo_name), _paths(table, tab_name), _paths(table, rlhf_name)
    keys = sorted(set(dpo) & set(rlhf))
    ood = [bool(dpo[k][-1] > 0.5) for k in keys]
    ratios = [float(rlhf[k].max() / eps[k]) for k in keys]
    near = [r <= NEAR_FACTOR for r in ratios]
    on_y1 = []
    for key in keys:
        final = [_paths(table, rlhf_name, f"pi({arm})")[key][-1] for arm in XU_ARMS]
        on_y1.append(bool(np.argmax(final) == 0))
    control = [bool(np.all(tab[k] <= eps[k] * (1 + 1e-9))) for k in sorted(tab)]
    clauses = (
        clause("dpo-ood-mass", f"{dpo_name} ends with π(y3) > 0.5 on the response the data never "
               "show", ood, "final π(y3) " + ", ".join(f"{dpo[k][-1]:.3g}" for k in keys)),
        clause("rlhf-near-reference", f"{rlhf_name} keeps π(y3) within {NEAR_FACTOR:g} π_ref(y3) "
               "at every step", near,
               "max π(y3)/π_ref(y3) " + ", ".join(f"{r:.3g}" for r in ratios)),
        clause("rlhf-stays-on-y1", f"{rlhf_name}'s final policy puts its largest mass on y1",
               on_y1),
        clause("tabular-dpo-control", "control: tabular DPO never raises π(y3) above π_ref(y3) "
               "(zero gradient on the unseen logit), so the drift needs function approximation",
               control, paper=False),
    )
    effect = Effect(f"final π(y3), {dpo_name} − {rlhf_name}",
                    [dpo[k][-1] - rlhf[k][-1] for k in keys])
    return CheckResult(clauses=clauses, effect=effect, mode="exact")


EXPERIMENT = register(Experiment(
    id="xu-ood", figure="F11",
    title="DPO moves mass to an out-of-distribution response; RLHF does not",
    paper="Xu et al. 2024, Is DPO Superior to PPO for LLM Alignment? A Comprehensive Study, §4",
    arxiv="2404.10719",
    claim=("Every PPO/RLHF solution minimises the DPO loss but not conversely: with data only "
           "y1 > y2, DPO can put large probability on the unseen y3, while RLHF's KL term keeps "
           "pi(y3) near pi_ref(y3) ~ 0."),
    differences=("The paper's example is set-valued with pi_ref(y3) = 0 and a table of solutions; "
                 "we follow the optimisation dynamics with pi_ref(y3) = eps > 0 on eight "
                 "instances: "
                 "the construction (eps = 1e-3) and seven random members of its family (eps "
                 "log-uniform on [1e-5, 1e-2], features perturbed entrywise by 0.2 N(0, 1)). "
                 "Tabular DPO cannot "
                 "move y3 (its logit gets zero gradient), so the OOD drift needs function "
                 "approximation: a log-linear policy with phi(y3) = phi(y1) - phi(y2). RLHF uses "
                 "the "
                 "same log-linear policy and a clipped linear reward model that even rates y3 at "
                 "the top; its KL term still pins pi(y3) ~ 2 pi_ref(y3). PPO is replaced by the "
                 "exact natural policy gradient to the RLHF optimum."),
    config=XuConfig, run=run, plot=plot, check=check, seeds=1))
