"""F10 ``song-coverage`` — Song et al. 2024 (arXiv:2406.01462), "The Importance of Online Data:
Understanding Preference Fine-tuning via Coverage": DPO's KL grows like log(1/eps) when the data
miss a response; RLHF with a bounded reward and HyPO stay bounded.

F10 (claims C3-C5): reverse KL and suboptimality against the coverage knob ``eps = pi_ref(y3)``.
DPO's implicit reward on the unseen ``y3`` is unconstrained, so its iterate goes to ``delta_{y3}``:
``KL = log(1/eps)`` and the reward collapses to ``r*(y3)``. RLHF with a reward model clipped to
``|r_hat| <= R`` keeps ``KL <= 2R/beta`` (C4), and HyPO (DPO + ``lam`` KL on the policy's own
samples) keeps ``KL <= log(2)/lam`` (C5). HyPO runs twice: with the paper's estimate of the KL
gradient on sampled online responses (``batch_size`` responses per step), and with the exact KL
gradient.

The paper's evidence is theory plus LLM tasks; ours is the 3-arm construction of
:mod:`coverage_sim.experiments.xu.setting` (the bandit, the clipped reward model and the loss
conventions, shared with F11). Instances: the construction's features and random perturbations of
them (:func:`~coverage_sim.experiments.xu.setting.feature_family`), each over the whole ``eps``
grid: ``EXPERIMENT.differences``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from coverage_sim import metrics
from coverage_sim._validation import check_in_range, check_int, check_positive
from coverage_sim.env import optimal_policy
from coverage_sim.experiments.registry import Experiment, check_tuple, register
from coverage_sim.experiments.verdict import CheckResult, Effect, clause
from coverage_sim.experiments.xu.setting import (check_reward, clipped_reward_model,
                                                 feature_family)
from coverage_sim.instances import xu_bandit, xu_pairs
from coverage_sim.objectives import objective
from coverage_sim.plotting import new_figure
from coverage_sim.policies import LogLinear
from coverage_sim.train import train_many

__all__ = ["EXPERIMENT", "SongConfig", "check", "plot", "run"]

_LOG2 = float(np.log(2.0))
#: Method names: HyPO with sampled online responses (the paper's estimate) and with the exact KL.
DPO, RLHF, HYPO, HYPO_EXACT = "DPO", "RLHF", "HyPO", "HyPO (exact KL)"
#: DPO's KL "grows like log(1/eps)": the slope of its final KL against log(1/eps) is at least this
#: (log(1/eps) is the KL of delta_{y3}, the largest KL any policy can have up to log 2).
MIN_DPO_SLOPE = 0.9
#: RLHF's final KL "does not grow" with log(1/eps): slope below this.
MAX_BOUNDED_SLOPE = 0.1


@dataclass(frozen=True)
class SongConfig:
    """Config of F10.

    Attributes:
      eps_values: coverage knob ``pi_ref(y3)`` values (log-spaced); every instance runs all.
      instances: feature sets: the construction, then random perturbations of it.
      feature_noise: standard deviation of the perturbation of the random instances' features.
      beta: KL strength of DPO, RLHF and HyPO (DPO's beta inside the sigmoid).
      reward: gold reward of ``(y1, y2, y3)``; must have ``r1 > r2 > r3``.
      reward_bound: ``R``: the RLHF reward model is clipped to ``[-R, R]`` (C4: ``KL <= 2R/beta``).
      lams: HyPO KL weights ``lam`` (C5: ``KL <= log(2)/lam``).
      batch_size: online responses per step of sampled HyPO (its KL-gradient estimate).
      steps: optimiser steps for every run.
      lr: Adam step size for HyPO.
      dpo_lr: Adam step size for DPO (its drift to ``delta_{y3}`` must finish within ``steps``
        at the smallest eps: ``log(1/eps)`` nats).
      rlhf_lr: natural-policy-gradient step size for RLHF (converges to machine precision).
      record_points: number of log-spaced record steps (the bounds are checked at each).
    """

    eps_values: tuple[float, ...] = tuple(float(10.0 ** -k) for k in range(1, 9))
    instances: int = 8
    feature_noise: float = 0.2
    beta: float = 0.1
    reward: tuple[float, ...] = (1.0, 0.0, -3.0)
    reward_bound: float = 0.25
    lams: tuple[float, ...] = (0.01, 0.1, 1.0)
    batch_size: int = 8
    steps: int = 4000
    lr: float = 0.05
    dpo_lr: float = 0.1
    rlhf_lr: float = 0.5
    record_points: int = 30

    def __post_init__(self):
        if len(self.eps_values) < 3:
            raise ValueError("eps_values must hold at least 3 values (a slope is fitted)")
        for eps in self.eps_values:
            check_in_range(eps, "eps_values", 0.0, 1.0, low_open=True, high_open=True)
        check_int(self.instances, "instances", minimum=1)
        check_positive(self.feature_noise, "feature_noise", allow_zero=True)
        check_positive(self.beta, "beta")
        check_reward(self.reward)
        check_positive(self.reward_bound, "reward_bound")
        check_tuple(self.lams, "lams", check_positive)
        check_int(self.batch_size, "batch_size", minimum=1)
        check_int(self.steps, "steps", minimum=1)
        check_positive(self.lr, "lr")
        check_positive(self.dpo_lr, "dpo_lr")
        check_positive(self.rlhf_lr, "rlhf_lr")
        check_int(self.record_points, "record_points", minimum=2)

    @classmethod
    def quick(cls) -> SongConfig:
        return cls(eps_values=(1e-1, 1e-3, 1e-5, 1e-7), steps=2000, record_points=15)


def run(config: SongConfig, seed: int) -> pd.DataFrame:
    """Final KL, reward and suboptimality, and the largest KL and log max pi/pi_ref along the
    descent, of DPO, RLHF (clipped r_hat) and HyPO (sampled and exact) for every instance and eps.

    The seed draws the perturbed features and sampled HyPO's online responses.
    """
    family = feature_family(config.instances, config.feature_noise, seed)
    eps_values = list(config.eps_values)
    cells = [(b, eps) for b in range(len(family)) for eps in eps_values]
    envs = [xu_bandit(eps, reward=config.reward) for _, eps in cells]
    datas = [xu_pairs(env) for env in envs]
    policies = [LogLinear(family[b]) for b, _ in cells]
    r_hats = [clipped_reward_model(family[b], [(0, 1)], config.reward_bound) for b, _ in cells]
    beta, lams = config.beta, list(config.lams)
    common = {"steps": config.steps, "seed": seed, "record": config.record_points, "metrics": []}
    runs = {(DPO, 0.0): train_many(envs, objective("sigmoid", beta=beta), datas, lr=config.dpo_lr,
                                   optimizer="adam", policy=policies, **common),
            (RLHF, 0.0): train_many(envs, [objective("rlhf", beta=beta, reward=r) for r in r_hats],
                                    lr=config.rlhf_lr, optimizer="npg", policy=policies,
                                    **common)}
    for method, batch in ((HYPO, config.batch_size), (HYPO_EXACT, None)):
        batched = train_many(envs * len(lams), [objective("hypo", beta=beta, lam=lam)
                                                for lam in lams for _ in envs],
                             datas * len(lams), lr=config.lr, optimizer="adam",
                             policy=policies * len(lams), batch_size=batch, **common)
        for i, lam in enumerate(lams):
            runs[(method, lam)] = batched[i * len(envs):(i + 1) * len(envs)]
    records = []
    for (method, lam), method_runs in runs.items():
        for (b, eps), env, r in zip(cells, envs, method_runs):
            step = int(r.history["step"].iloc[-1])
            records += [(b, method, lam, eps, seed, step, metric, value)
                        for metric, value in _summary(r, env, beta).items()]
    return pd.DataFrame.from_records(records, columns=["instance", "method", "lam", "eps", "seed",
                                                       "step", "metric", "value"])


def _summary(run, env, beta) -> dict:
    """One run's final KL, reward and suboptimality, and its largest KL and log max pi/pi_ref
    over the recorded steps."""
    snaps = run.snapshots
    kl = metrics.kl_divergence(env, snaps, env.ref)
    reward = metrics.expected_reward(env, snaps)
    opt = optimal_policy(env, beta)
    j_opt = float(metrics.expected_reward(env, opt) - beta * metrics.kl_divergence(env, opt,
                                                                                    env.ref))
    values = {"kl": kl[-1], "reward": reward[-1], "subopt": j_opt - (reward[-1] - beta * kl[-1]),
              "max_kl": kl.max(), "max_log_ratio": np.log(snaps / env.ref).max()}
    return {metric: float(v) for metric, v in values.items()}


def _final(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Value of ``metric`` per (instance, method, lam, eps), averaged over seeds."""
    rows = table[table["metric"] == metric].rename(columns={"value": metric})
    return rows.groupby(["instance", "method", "lam", "eps"], as_index=False)[metric].mean()


def _slope(frame: pd.DataFrame, metric: str) -> float:
    """Least-squares slope of ``metric`` against log(1/eps)."""
    frame = frame.sort_values("eps")
    return float(np.polyfit(np.log(1.0 / frame["eps"].to_numpy()), frame[metric].to_numpy(),
                            1)[0])


def _song_series(config: SongConfig):
    """(method, lam, label, colour, linestyle, marker) of every curve."""
    greens = ("#74c476", "#238b45", "#00441b", "#002a10")
    out = [(DPO, 0.0, "DPO (log-linear)", "C3", "-", "o"),
           (RLHF, 0.0, f"RLHF, |r̂| ≤ R = {config.reward_bound:g}", "C0", "-", "s")]
    for i, lam in enumerate(sorted(config.lams)):
        out.append((HYPO, lam, f"HyPO λ = {lam:g} (sampled)", greens[i % len(greens)], "-", "^"))
        out.append((HYPO_EXACT, lam, None, greens[i % len(greens)], ":", None))
    return out


def plot(table: pd.DataFrame, config: SongConfig):
    """(a) reverse KL and (b) suboptimality against eps = pi_ref(y3), with the C4/C5 bounds;
    instance 0 (the construction) bold, the perturbed instances thin."""
    fig, axes = new_figure(ncols=2, width=3.6, height=3.1)
    ax_kl, ax_sub = axes[0]
    kl = _final(table, "kl")
    sub = _final(table, "subopt")
    eps = np.array(sorted(kl["eps"].unique()))
    first = kl["instance"].min()
    ax_kl.plot(eps, np.log(1.0 / eps), color="0.55", linestyle=":", linewidth=2.5,
               label="log(1/ε)", zorder=1)
    for method, lam, label, colour, ls, marker in _song_series(config):
        for frame, ax, metric in ((kl, ax_kl, "kl"), (sub, ax_sub, "subopt")):
            rows = frame[(frame["method"] == method) & (frame["lam"] == lam)]
            for instance, inst in rows.groupby("instance"):
                inst = inst.sort_values("eps")
                bold = instance == first
                ax.plot(inst["eps"], inst[metric], color=colour, linestyle=ls,
                        marker=marker if bold else None, markersize=3.5,
                        linewidth=1.4 if bold else 0.6, alpha=1.0 if bold else 0.4,
                        label=label if bold else None)
    ax_kl.plot([], [], color="0.3", linestyle=":", label="HyPO, exact KL gradient")
    beta = config.beta
    bound = 2 * config.reward_bound / beta
    top = max(np.log(1.0 / eps.min()) * 1.1, bound * 1.15)
    marks = [(bound, "C0", f"RLHF bound 2R/β = {bound:.3g}")]
    for method, lam, label, colour, ls, marker in _song_series(config):
        if method == HYPO:
            marks.append((_LOG2 / lam, colour,
                          f"HyPO bound log 2/λ = {_LOG2 / lam:.3g} (λ = {lam:g})"))
    # The bounds' values are named in the legend (dashed entries): written on their lines, the
    # labels were crossed by DPO's rising KL or sat on the runs' cluster near log 2.
    for value, colour, text in marks:
        if value < top:
            ax_kl.axhline(value, color=colour, linestyle="--", linewidth=1, label=text)
        else:
            ax_kl.annotate(f"{text}: off scale", (0.02, 0.97), xycoords="axes fraction",
                           ha="left", va="top", fontsize=7, color=colour)
    ax_kl.set_ylim(-0.3, top)
    for ax in (ax_kl, ax_sub):
        ax.set_xscale("log")
        ax.set_xlabel(r"coverage $\varepsilon = \pi_{\rm ref}(y_3)$  (log scale)")
        ax.invert_xaxis()
    ax_kl.set_ylabel(r"reverse KL$(\pi \,\|\, \pi_{\rm ref})$  [nats]")
    n = kl["instance"].nunique()
    ax_kl.set_title(f"(a) reverse KL vs coverage, {n} instances")
    ax_sub.set_yscale("log")
    ax_sub.set_ylabel(r"suboptimality $J(\pi^*_\beta) - J(\pi)$")
    ax_sub.set_title("(b) suboptimality vs coverage")
    handles, labels = ax_kl.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=7.5)
    return fig


def check(table: pd.DataFrame, config: SongConfig) -> CheckResult:
    """Song et al.'s claims on every instance (feature set), each over the whole eps grid.

    Paper's clauses:

    - ``dpo-kl-unbounded``: DPO's final KL rises at every smaller eps, with slope at least
      ``MIN_DPO_SLOPE`` = 0.9 against log(1/eps) (unbounded as coverage vanishes);
    - ``dpo-reward-collapse``: DPO's final gold reward is within 5% of the reward range of
      r*(y3), the worst response, at every eps (arbitrarily bad reward);
    - ``rlhf-kl-bounded``: RLHF with |r_hat| <= R keeps KL <= 2R/beta and log pi/pi_ref <= 2R/beta
      at every recorded step and eps, and its final KL has slope < 0.1 against log(1/eps);
    - ``hypo-kl-bounded``: HyPO with the paper's sampled online KL estimate keeps KL <= log(2)/lam
      at every recorded step, lam and eps.

    Substitute variant: ``hypo-exact-kl-bounded``: the same bound with the exact KL gradient.

    Effect: final KL at the smallest eps, DPO minus RLHF (nats), per instance.
    """
    r_range = config.reward[0] - config.reward[2]
    kl, reward = _final(table, "kl"), _final(table, "reward")
    max_kl, max_ratio = _final(table, "max_kl"), _final(table, "max_log_ratio")
    bound = 2 * config.reward_bound / config.beta
    instances = sorted(kl["instance"].unique())
    unbounded, collapse, rlhf_ok, effect, slopes, worst_reward = [], [], [], [], [], []
    hypo = {HYPO: [], HYPO_EXACT: []}
    hypo_excess = {HYPO: -np.inf, HYPO_EXACT: -np.inf}
    rlhf_slopes = []
    for b in instances:
        def rows(frame, method, lam=0.0):
            return frame[(frame["instance"] == b) & (frame["method"] == method)
                         & (frame["lam"] == lam)].sort_values("eps")

        dpo = rows(kl, DPO)
        slope = _slope(dpo, "kl")
        slopes.append(slope)
        # sorted by eps ascending: the KL must fall as eps grows
        unbounded.append(bool(np.all(np.diff(dpo["kl"].to_numpy()) < 0)
                              and slope >= MIN_DPO_SLOPE))
        dpo_reward = rows(reward, DPO)["reward"].to_numpy()
        worst_reward.append(dpo_reward.max())
        collapse.append(bool(np.all(dpo_reward <= config.reward[2] + 0.05 * r_range)))
        rl_slope = _slope(rows(kl, RLHF), "kl")
        rlhf_slopes.append(rl_slope)
        rlhf_ok.append(bool(rows(max_kl, RLHF)["max_kl"].max() <= bound + 1e-9
                            and rows(max_ratio, RLHF)["max_log_ratio"].max() <= bound + 1e-9
                            and rl_slope < MAX_BOUNDED_SLOPE))
        for method in hypo:
            excess = max(rows(max_kl, method, lam)["max_kl"].max() - _LOG2 / lam
                         for lam in config.lams)
            hypo_excess[method] = max(hypo_excess[method], excess)
            hypo[method].append(bool(excess <= 1e-9))
        effect.append(float(dpo["kl"].iloc[0] - rows(kl, RLHF)["kl"].iloc[0]))
    clauses = (
        clause("dpo-kl-unbounded", f"DPO's final KL rises at every smaller ε, with slope ≥ "
               f"{MIN_DPO_SLOPE:g} against log(1/ε)", unbounded,
               f"slopes {min(slopes):.3f} to {max(slopes):.3f}"),
        clause("dpo-reward-collapse", "DPO's final gold reward is within 5% of the reward range "
               "of r*(y3) (the worst response) at every ε", collapse,
               f"highest final reward {max(worst_reward):.3f} (r*(y3) = {config.reward[2]:g})"),
        clause("rlhf-kl-bounded", f"RLHF with |r̂| ≤ R keeps KL and log π/π_ref ≤ 2R/β = "
               f"{bound:g} at every step and ε, and its final KL has slope < "
               f"{MAX_BOUNDED_SLOPE:g} against log(1/ε)", rlhf_ok,
               f"slopes {min(rlhf_slopes):.2g} to {max(rlhf_slopes):.2g}"),
        clause("hypo-kl-bounded", f"HyPO with its KL gradient estimated on {config.batch_size} "
               "sampled online responses per step keeps KL ≤ log(2)/λ at every step, λ and ε",
               hypo[HYPO], f"largest KL − log(2)/λ: {hypo_excess[HYPO]:.3g}"),
        clause("hypo-exact-kl-bounded", "HyPO with the exact KL gradient instead of sampled "
               "responses keeps KL ≤ log(2)/λ at every step, λ and ε", hypo[HYPO_EXACT],
               f"largest KL − log(2)/λ: {hypo_excess[HYPO_EXACT]:.3g}", paper=False),
    )
    eps_min = min(config.eps_values)
    return CheckResult(clauses=clauses,
                       effect=Effect(f"final KL at ε = {eps_min:g}, DPO − RLHF (nats)", effect),
                       mode="exact+sampled")


EXPERIMENT = register(Experiment(
    id="song-coverage", figure="F10",
    title="Coverage: DPO's KL grows like log(1/eps); RLHF (bounded reward) and HyPO stay bounded",
    paper="Song et al. 2024, The Importance of Online Data: Understanding Preference Fine-tuning "
          "via Coverage", arxiv="2406.01462",
    claim=("Offline contrastive methods (DPO) need global coverage: when the data miss a response, "
           "some DPO solution has unbounded reverse KL and arbitrarily bad reward. Online RLHF "
           "with "
           "a bounded reward class stays in a KL ball (partial coverage suffices), and HyPO's "
           "online KL term bounds the KL by log(2)/lam."),
    differences=("The paper's evidence is theory plus LLM tasks (TL;DR, chat); no bandit figure. "
                 "Ours is a 3-arm construction: one deterministic comparison y1 > y2, unseen y3 "
                 "with pi_ref(y3) = eps, log-linear policy with phi(y3) = phi(y1) - phi(y2). The "
                 "feature correlation is the ingredient: DPO's gradient raises "
                 "w . (phi(y1) - phi(y2)), which is y3's logit, and nothing in the loss holds y3 "
                 "back, so DPO -> delta_{y3} (no finite minimiser). Instances: the construction "
                 "and seven random perturbations of its features (entrywise 0.2 N(0, 1), drawn "
                 "from the seed), each over eps = 1e-1 .. 1e-8. The RLHF reward model is the "
                 "clipped linear BT fit, which rates y3 at the top (R) — the worst case — and RLHF "
                 "is run to its optimum by natural policy gradient; DPO and HyPO use Adam. HyPO "
                 "estimates its KL gradient from 8 sampled online responses per step, as the "
                 "paper's REINFORCE estimate does; the exact KL gradient is reported beside it. "
                 "With lam = 0.01 and eps >= 1e-2, HyPO's descent is captured by the y3 plateau "
                 "(KL = log(1/eps), still far below log(2)/lam): the bound holds along the "
                 "descent, not only at the minimiser."),
    config=SongConfig, run=run, plot=plot, check=check, seeds=1))
