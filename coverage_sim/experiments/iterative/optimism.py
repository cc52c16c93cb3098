"""F16 — iterative / online DPO and optimism (VPO, SELM) vs offline DPO: gold reward vs iteration.

Papers: Cen et al. 2024, VPO (arXiv:2405.19320); Zhang et al. 2024, SELM (arXiv:2405.19332);
Dong et al. 2024, RLHF Workflow (arXiv:2405.07863) and Xiong et al. 2023 (arXiv:2312.11456) for the
iterative best-vs-worst loop (science.md §7, §9, §10). Figure F16.

Tajwar et al.'s 100-arm bandit (``cs.tajwar_bandit``) with the reward peak far from the reference's
mass (peak 70, ``E_ref r = 0.04``) and, for contrast, near it (peak 20). Every method starts at
``pi_ref``, uses DPO's ``beta`` (TRL convention: loss ``-log sigma(beta h)``) and Adam; one
*iteration* = ``steps_per_iteration`` exact-gradient steps:

- **offline DPO (best/worst of 8 from pi_ref)**: the pairs of iterative DPO's first iteration, never
  refreshed (the matched offline ablation of RLHF Workflow);
- **offline DPO (all pairs, BT)**: the exact population ``pi_ref x pi_ref`` with gold Bradley-Terry
  labels (infinite offline data with full coverage);
- **iterative DPO** (``iterative_dpo``): at each iteration, pairs = exact best vs worst of ``n = 8``
  draws from the current policy (``max_min``), reference fixed to ``pi_0``;
- **online DPO** = ``vpo`` with ``alpha = 0``: pairs ``~ pi_t x pi_t`` at every step, BT labels;
- **VPO / SELM optimism** (``vpo``, online): online DPO + ``alpha beta E_{y~pi_ref} log pi(y)``,
  whose logit gradient ``alpha beta (pi_ref - pi)`` pushes mass *away* from ``pi_ref`` (claim C13);
- **online RLHF** (``rlhf``): exact policy gradient on ``E_pi r - beta KL`` with the gold reward.

Metric: gold reward ``E_pi r*`` (and ``KL(pi || pi_ref)``) at the end of every iteration. Everything
is exact, so the run is seed-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from coverage_sim._validation import check_int, check_positive
from coverage_sim.best_of_n import best_worst_pairs
from coverage_sim.data import offline_pairs
from coverage_sim.env import optimal_policy
from coverage_sim.experiments.registry import Experiment, register
from coverage_sim.instances import tajwar_bandit
from coverage_sim.metrics import expected_reward
from coverage_sim.objectives import objective
from coverage_sim.plotting import metric_frame, new_figure
from coverage_sim.train import train, train_many

__all__ = ["METHODS", "IterativeConfig", "check", "plot", "run"]

OFFLINE_BW = "offline DPO (best/worst of n from π_ref)"
OFFLINE_BT = "offline DPO (all pairs, BT, exact)"
ITERATIVE = "iterative DPO (best/worst of n)"
VPO = "online DPO + optimism (VPO)"
RLHF = "online RLHF (gold reward)"
METHODS = (OFFLINE_BW, OFFLINE_BT, ITERATIVE, VPO, RLHF)
_STYLE = {OFFLINE_BW: {"color": "C3", "linestyle": "--"},
          OFFLINE_BT: {"color": "C1", "linestyle": "--"},
          ITERATIVE: {"color": "C2"}, RLHF: {"color": "C0", "linestyle": ":"}}


@dataclass(frozen=True)
class IterativeConfig:
    """Config of F16.

    Attributes:
      peaks: reward-peak locations of ``tajwar_bandit`` (70: far from pi_ref's mass; 20: near it).
      beta: DPO / RLHF KL strength (TRL convention).
      n: draws per prompt of the best/worst pairs (RLHF Workflow: 8).
      iterations: number of iterations T.
      steps_per_iteration: Adam steps per iteration.
      lr: Adam step size.
      alphas: optimism strengths of VPO (0 = online DPO); ``alpha_main`` must be one of them.
      alpha_main: the VPO strength drawn in the gold-vs-iteration panels.
    """

    peaks: tuple[float, ...] = (70.0, 20.0)
    beta: float = 0.1
    n: int = 8
    iterations: int = 10
    steps_per_iteration: int = 100
    lr: float = 0.01
    alphas: tuple[float, ...] = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
    alpha_main: float = 0.1

    def __post_init__(self):
        if not self.peaks:
            raise ValueError("peaks must hold at least one reward-peak location")
        for p in self.peaks:
            if not np.isfinite(p):
                raise ValueError(f"peaks must be finite, got {p!r}")
        check_positive(self.beta, "beta")
        check_int(self.n, "n", minimum=2)
        check_int(self.iterations, "iterations", minimum=2)
        check_int(self.steps_per_iteration, "steps_per_iteration", minimum=1)
        check_positive(self.lr, "lr")
        if not self.alphas or 0.0 not in self.alphas:
            raise ValueError(f"alphas must include 0 (the online-DPO baseline), got "
                             f"{self.alphas!r}")
        for a in self.alphas:
            check_positive(a, "alphas", allow_zero=True)
        check_positive(self.alpha_main, "alpha_main")
        if self.alpha_main not in self.alphas:
            raise ValueError(f"alpha_main must be one of alphas {self.alphas!r}, got "
                             f"{self.alpha_main!r}")

    @classmethod
    def quick(cls) -> IterativeConfig:
        return cls(iterations=6, steps_per_iteration=60, lr=0.02, alphas=(0.0, 0.1, 1.0))


def _rows(peak, method, alpha, seed, run_, beta):
    h = run_.history
    steps = h["step"].to_numpy() // run_.config["record_steps"][1]
    frames = []
    for metric, col in (("gold", "reward"), ("kl", "kl")):
        frames.append(pd.DataFrame({"peak": peak, "method": method, "alpha": alpha, "seed": seed,
                                    "step": steps.astype(int), "metric": metric,
                                    "value": h[col].to_numpy()}))
    return frames


def run(config: IterativeConfig, seed: int) -> pd.DataFrame:
    """Gold reward and KL at every iteration boundary for every method and peak (exact)."""
    S, T, beta = config.steps_per_iteration, config.iterations, config.beta
    record = [k * S for k in range(T + 1)]
    common = {"steps": T * S, "lr": config.lr, "optimizer": "adam", "seed": seed, "record": record}
    frames = []
    for peak in config.peaks:
        env = tajwar_bandit(peak=peak)
        dpo = objective("sigmoid", beta=beta)
        jobs = [(OFFLINE_BW, dpo, best_worst_pairs(env, env.ref, config.n)),
                (OFFLINE_BT, dpo, offline_pairs(env, env.ref, labels="bradley_terry")),
                (ITERATIVE, objective("iterative_dpo", beta=beta, n=config.n,
                                      steps_per_iteration=S), None),
                (RLHF, objective("rlhf", beta=beta), None)]
        for method, obj, data in jobs:
            frames += _rows(peak, method, 0.0, seed, train(env, obj, data, **common), beta)
        vpo_runs = train_many(env, [objective("vpo", beta=beta, alpha=a, mode="online")
                                    for a in config.alphas], **common)
        for alpha, r in zip(config.alphas, vpo_runs):
            frames += _rows(peak, VPO, float(alpha), seed, r, beta)
        opt = expected_reward(env, optimal_policy(env, beta))
        frames.append(pd.DataFrame({"peak": peak, "method": "optimum pi*_beta", "alpha": 0.0,
                                    "seed": seed, "step": [0], "metric": ["gold"],
                                    "value": [float(opt)]}))
    return pd.concat(frames, ignore_index=True)


def _curve(table, peak, method, alpha=0.0, metric="gold") -> pd.Series:
    rows = table[(table["peak"] == peak) & (table["method"] == method)
                 & np.isclose(table["alpha"], alpha) & (table["metric"] == metric)]
    return rows.groupby("step")["value"].mean()


def plot(table: pd.DataFrame, config: IterativeConfig):
    """One panel per peak (gold vs iteration), plus the VPO alpha sweep (gain over online DPO)."""
    peaks = list(config.peaks)
    fig, axes = new_figure(ncols=len(peaks) + 1, width=2.55, height=3.4)
    gold = metric_frame(table, "gold")
    for ax, peak in zip(axes[0], peaks):
        for method in (OFFLINE_BW, OFFLINE_BT, ITERATIVE):
            c = _curve(table, peak, method)
            ax.plot(c.index, c.values, label=method, marker="o", markersize=2.5, **_STYLE[method])
        base = _curve(table, peak, VPO, 0.0)
        ax.plot(base.index, base.values, color="C4", marker="o", markersize=2.5,
                label="online DPO (VPO, α = 0)")
        main = _curve(table, peak, VPO, config.alpha_main)
        ax.plot(main.index, main.values, color="C5", marker="o", markersize=2.5,
                label=f"online DPO + optimism (VPO, α = {config.alpha_main:g})")
        c = _curve(table, peak, RLHF)
        ax.plot(c.index, c.values, label=RLHF, marker="x", markersize=4, zorder=5,
                **_STYLE[RLHF])
        opt = gold[(gold["peak"] == peak) & (gold["method"] == "optimum pi*_beta")]["gold"].mean()
        ax.axhline(opt, color="grey", linewidth=0.9, label=r"$E_{\pi^*_\beta}\, r^*$")
        ax.set_title(f"reward peak at arm {peak:g}\n" + ("(far from π_ref's mass)" if peak >= 50
                                                       else "(near π_ref's mass)"), fontsize=8.5)
        ax.set_xlabel("iteration")
        ax.set_ylim(0.0, 1.02)
    axes[0, 0].set_ylabel(r"gold reward $E_\pi r^*$")
    ax = axes[0, -1]
    T = config.iterations
    probes = sorted({max(2, T // 5), T})
    alphas = sorted(config.alphas)
    lowest = np.inf
    for i, peak in enumerate(peaks):
        for j, t in enumerate(probes):
            gains = np.array([_curve(table, peak, VPO, a)[t] - _curve(table, peak, VPO, 0.0)[t]
                              for a in alphas])
            lowest = min(lowest, gains.min())
            ax.plot(alphas, gains, color=f"C{i}", marker="o", markersize=2.5,
                    linestyle=("--", "-", ":")[j % 3], label=f"peak {peak:g}, iteration {t}")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xscale("symlog", linthresh=min(a for a in alphas if a > 0))
    ax.set_xlim(0.0, max(alphas) * 1.05)
    ax.set_ylim(-0.1, 0.1)
    if lowest < -0.1:
        ax.text(0.97, 0.97, f"large α collapses:\ndown to {lowest:.2f} (off scale)",
                transform=ax.transAxes, ha="right", va="top", fontsize=6.5)
    ax.set_xlabel("optimism strength α")
    ax.set_ylabel("gold gain over α = 0", labelpad=1)
    ax.set_title("VPO: effect of α", fontsize=8.5)
    ax.legend(fontsize=6.5, loc="lower left")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=7, frameon=False)
    fig.suptitle(f"Tajwar bandit (100 arms), β = {config.beta:g}; one iteration = "
                 f"{config.steps_per_iteration} exact Adam steps", fontsize=9)
    return fig


def check(table: pd.DataFrame, config: IterativeConfig) -> None:
    """What F16 asserts (per peak; see the experiment's ``differences`` for what does not hold):

    1. online/iterative > offline on the matched data: iterative DPO's, online DPO's, VPO's and
       online RLHF's final gold reward exceed offline DPO on best/worst-of-n pairs from pi_ref by
       >= 0.1;
    2. online > offline even with infinite full-coverage offline data: online RLHF and online DPO
       are above offline DPO on all pi_ref x pi_ref pairs at iteration 1 (by >= 0.02) and on the
       mean over iterations 1..T;
    3. small optimism helps: VPO at ``alpha_main`` is never more than 0.005 below online DPO
       (alpha = 0) and is above it by >= 0.01 at the last iteration.
    """
    T = config.iterations
    for peak in config.peaks:
        off_bw = _curve(table, peak, OFFLINE_BW)
        off_bt = _curve(table, peak, OFFLINE_BT)
        online = {ITERATIVE: _curve(table, peak, ITERATIVE), RLHF: _curve(table, peak, RLHF),
                  "online DPO": _curve(table, peak, VPO, 0.0),
                  "VPO": _curve(table, peak, VPO, config.alpha_main)}
        for name, c in online.items():
            assert c[T] >= off_bw[T] + 0.1, (
                f"peak {peak:g}: {name} final gold {c[T]:.3f} does not beat offline DPO on "
                f"best/worst pairs from pi_ref ({off_bw[T]:.3f}) by 0.1")
        for name in (RLHF, "online DPO"):
            c = online[name]
            assert c[1] >= off_bt[1] + 0.02, (
                f"peak {peak:g}: {name} gold at iteration 1 ({c[1]:.3f}) is not above offline "
                f"DPO on all pi_ref pairs ({off_bt[1]:.3f}) by 0.02")
            auc, auc_off = c.loc[1:T].mean(), off_bt.loc[1:T].mean()
            assert auc > auc_off, (f"peak {peak:g}: {name} mean gold over iterations "
                                   f"{auc:.3f} <= offline DPO (all pairs) {auc_off:.3f}")
        base, opt = online["online DPO"], online["VPO"]
        assert (opt - base >= -0.005).all(), (
            f"peak {peak:g}: VPO (alpha = {config.alpha_main:g}) falls more than 0.005 below "
            f"online DPO at iterations {list(opt.index[opt - base < -0.005])}")
        assert opt[T] >= base[T] + 0.01, (
            f"peak {peak:g}: VPO (alpha = {config.alpha_main:g}) final gold {opt[T]:.3f} is not "
            f"above online DPO {base[T]:.3f} by 0.01")


EXPERIMENT = register(Experiment(
    id="iterative-optimism", figure="F16",
    title="Iterative/online DPO and optimism (VPO) vs offline DPO: gold reward vs iteration",
    paper="Cen et al. 2024 (VPO); Zhang et al. 2024 (SELM); Dong et al. 2024 (RLHF Workflow) / "
          "Xiong et al. 2023 (iterative GSHF)", arxiv="2405.19320",
    claim=("Iterative (online) DPO, which re-draws best-vs-worst pairs from the current policy, "
           "and "
           "online RLHF reach a higher gold reward than offline DPO on a fixed dataset; adding an "
           "optimism bonus (VPO/SELM) should help further, especially when the reward peak lies "
           "where pi_ref puts little mass."),
    differences=("Exact population gradients on a 100-arm bandit instead of LLM minibatches; 'VPO' "
                 "is the core's online form (online DPO with BT labels every step + alpha beta "
                 "E_ref log pi, SELM's pi_cal = pi_ref), not iterative max_min DPO plus optimism. "
                 "What we find: online/iterative >> offline on matched best/worst-of-8 data "
                 "(fixed pairs from pi_ref rarely contain the peak: gold 0.09 vs 0.93-1.0 at peak "
                 "70), and online > offline on the exact full-coverage population early on (Adam "
                 "largely removes the 2 beta mu(z) coverage slow-down, so offline on all pairs "
                 "catches up by iteration 10). Optimism: small alpha (0.01-0.1) raises gold at "
                 "every iteration, but by a similar amount for the near and the far peak (about "
                 "+0.06 at iteration 10 for alpha = 0.1), mostly late, by taking the policy past "
                 "pi*_beta (KL 3.7 -> 4.7): it acts as anti-regularisation (claim C13) rather than "
                 "as faster exploration of the low-pi_ref peak. Large alpha (1) pushes mass away "
                 "from pi_ref indiscriminately and gold collapses. So 'optimism helps more when "
                 "the peak is far' is not reproduced in the exact tabular setting, and the check "
                 "does not assert it. Iterative DPO's deterministic max_min labels keep "
                 "sharpening past pi*_beta (science.md §9(c))."),
    config=IterativeConfig, run=run, plot=plot, check=check, seeds=1))
