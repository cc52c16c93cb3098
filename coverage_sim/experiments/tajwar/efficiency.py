"""F2 ``tajwar-efficiency`` — Tajwar et al. 2024 (arXiv:2404.14367), §4-5: on-policy data are
more query- and KL-efficient; sample reuse trades queries for staleness.

Reward against reward-model queries and against KL(pi || pi_ref), with a sample-reuse sweep
(gradient steps per frozen on-policy batch,
:func:`~coverage_sim.experiments.tajwar.setting.refresh_train`), offline runs and the exact
KL-regularised frontier ``pi*_beta``; peak 70, Adam.

Claim: on-policy methods reach a given reward with fewer reward-model queries and less KL than
offline methods; reusing each on-policy batch for several gradient steps improves query efficiency,
with moderate reuse best. With exact batches the last clause does not appear as an interior
optimum; the query counting convention and why are in ``EXPERIMENT.differences``.

See :mod:`coverage_sim.experiments.tajwar.setting` for the 100-arm bandit and the loss
conventions shared by F1-F4.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib
import matplotlib.lines
import numpy as np
import pandas as pd

from coverage_sim import metrics
from coverage_sim._validation import check_choice, check_in_range, check_int, check_positive
from coverage_sim.data import offline_pairs, policy_pairs
from coverage_sim.env import optimal_policy
from coverage_sim.experiments.registry import Experiment, check_tuple, register, tidy_rows
from coverage_sim.experiments.tajwar.setting import (ARXIV, METHOD_COLOURS, OFFLINE, ON_POLICY,
                                                      PAPER, ipo_beta, peak_env, refresh_train,
                                                      step_grid)
from coverage_sim.objectives import objective
from coverage_sim.plotting import new_figure
from coverage_sim.train import train

__all__ = ["EXPERIMENT", "EfficiencyConfig", "check", "plot", "run"]


@dataclass(frozen=True)
class EfficiencyConfig:
    """Config of F2 (``tajwar-efficiency``).

    Attributes:
      peak: reward peak (70: optimum far from ``pi_ref``).
      methods: subset of ``("DPO", "IPO", "Best-of-N")``.
      reuses: gradient steps per frozen on-policy batch (sample reuse; Tajwar: 15).
      paper_reuse: the reuse drawn in the query and KL comparisons with offline (one of reuses).
      steps: Adam steps per run.
      lr: Adam step size.
      n: N for Best-of-N.
      dpo_beta: DPO beta.
      ipo_margin: Tajwar's IPO target margin (TRL beta = 1/(2m)).
      batch_queries: reward-model queries per on-policy batch (Tajwar: 10 states x N = 10).
      offline_queries: queries of the offline dataset (Tajwar: 100 states x N = 10).
      query_budget: budget at which on-policy must beat offline in the check.
      threshold: reward level for "queries to reach" in the reuse sweep.
      early_step: gradient step at which the staleness cost of reuse is checked.
      frontier_points: number of beta values on the exact KL-reward frontier.
    """

    peak: float = 70.0
    methods: tuple[str, ...] = ("DPO", "IPO", "Best-of-N")
    reuses: tuple[int, ...] = (1, 2, 5, 15, 50)
    paper_reuse: int = 15
    steps: int = 1500
    lr: float = 0.01
    n: int = 10
    dpo_beta: float = 0.1
    ipo_margin: float = 10.0
    batch_queries: int = 100
    offline_queries: int = 1000
    query_budget: int = 3000
    threshold: float = 0.5
    early_step: int = 150
    frontier_points: int = 120

    def __post_init__(self):
        check_in_range(self.peak, "peak", 0.0, 99.0)
        check_tuple(self.methods, "methods",
                     lambda v, name: check_choice(v, name, ("DPO", "IPO", "Best-of-N")))
        check_tuple(self.reuses, "reuses", lambda v, name: check_int(v, name, minimum=1))
        if len(set(self.reuses)) != len(self.reuses) or len(self.reuses) < 2:
            raise ValueError(f"reuses must hold at least two distinct values, got {self.reuses!r}")
        if self.paper_reuse not in self.reuses:
            raise ValueError(f"paper_reuse must be one of reuses {self.reuses!r}, "
                             f"got {self.paper_reuse!r}")
        check_int(self.steps, "steps", minimum=1)
        check_positive(self.lr, "lr")
        check_int(self.n, "n", minimum=2)
        check_positive(self.dpo_beta, "dpo_beta")
        check_positive(self.ipo_margin, "ipo_margin")
        check_int(self.batch_queries, "batch_queries", minimum=1)
        check_int(self.offline_queries, "offline_queries", minimum=1)
        check_int(self.query_budget, "query_budget", minimum=1)
        check_in_range(self.threshold, "threshold", 0.0, 1.0, low_open=True, high_open=True)
        check_int(self.early_step, "early_step", minimum=1)
        if self.early_step > self.steps:
            raise ValueError(f"early_step must be <= steps = {self.steps}, got {self.early_step}")
        check_int(self.frontier_points, "frontier_points", minimum=10)

    @classmethod
    def quick(cls) -> EfficiencyConfig:
        return cls(reuses=(1, 5, 15), steps=600, frontier_points=60)


def _frozen_objective(method: str, config):
    if method == "DPO":
        return objective("sigmoid", beta=config.dpo_beta)
    if method == "IPO":
        return objective("ipo", beta=ipo_beta(config.ipo_margin))
    return objective("best_of_n", n=config.n)


def _efficiency_record(steps: int, reuse: int, early: int) -> np.ndarray:
    """Ends of batches (multiples of the reuse, at least every 5 steps), plus the early step."""
    stride = reuse * int(np.ceil(5 / reuse))
    return np.unique(np.concatenate([np.arange(0, steps + 1, stride), [early, steps]]))


def run(config: EfficiencyConfig, seed: int) -> pd.DataFrame:
    """Reward, KL and reward-model queries against step for on-policy runs at every reuse, offline
    runs, and the exact KL-regularised frontier ``pi*_beta`` (method ``frontier``)."""
    env = peak_env(config.peak)
    offline = offline_pairs(env, env.ref, labels="deterministic")
    frames = []
    for method in config.methods:
        obj = _frozen_objective(method, config)
        rec = step_grid(config.steps, 5)
        run = train(env, obj, offline, steps=config.steps, lr=config.lr, seed=seed, record=rec)
        queries = np.where(rec > 0, config.offline_queries, 0)
        frames += tidy_rows({"method": method, "regime": OFFLINE, "reuse": 0}, seed, rec,
                        {"reward": metrics.expected_reward(env, run.snapshots),
                         "kl": metrics.kl_divergence(env, run.snapshots, env.ref),
                         "queries": queries})
        for reuse in config.reuses:
            rec = _efficiency_record(config.steps, reuse, config.early_step)
            snaps = refresh_train(
                env, lambda pi, obj=obj: [(1.0, obj, policy_pairs(env, pi, labels="deterministic"))],
                steps=config.steps, lr=config.lr, refresh_every=reuse, record=rec)
            queries = config.batch_queries * np.ceil(rec / reuse)
            frames += tidy_rows({"method": method, "regime": ON_POLICY, "reuse": reuse}, seed, rec,
                            {"reward": metrics.expected_reward(env, snaps),
                             "kl": metrics.kl_divergence(env, snaps, env.ref),
                             "queries": queries})
    betas = np.geomspace(1e-3, 1e2, config.frontier_points)
    opt = np.stack([optimal_policy(env, b) for b in betas])
    frames += tidy_rows({"method": "frontier", "regime": "exact", "reuse": 0}, seed,
                    np.arange(betas.size),
                    {"reward": metrics.expected_reward(env, opt),
                     "kl": metrics.kl_divergence(env, opt, env.ref), "beta": betas})
    return pd.concat(frames, ignore_index=True)


def _wide(table: pd.DataFrame, **where) -> pd.DataFrame:
    """One row per step with the metrics as columns (mean over seeds)."""
    rows = table
    for key, value in where.items():
        rows = rows[rows[key] == value]
    return rows.pivot_table(index="step", columns="metric", values="value", aggfunc="mean")


def _queries_to_reach(wide: pd.DataFrame, level: float) -> float:
    hit = wide[wide["reward"] >= level]
    return float(hit["queries"].iloc[0]) if len(hit) else np.inf


def plot(table: pd.DataFrame, config: EfficiencyConfig):
    """(a) reward vs queries over the reuse sweep (IPO, or the first method); (b) queries to reach
    the threshold vs reuse; (c) reward vs KL(pi || pi_ref), on-policy vs offline, with the exact
    KL-regularised frontier."""
    fig, axes = new_figure(ncols=3, width=2.75, height=3.0)
    methods = [m for m in config.methods if m in set(table["method"])]
    shown = "IPO" if "IPO" in methods else methods[0]
    reuses = sorted(int(r) for r in table.loc[table["regime"] == ON_POLICY, "reuse"].unique())
    cmap = matplotlib.colormaps["viridis"]
    shades = {r: cmap(i / max(len(reuses) - 1, 1) * 0.85) for i, r in enumerate(reuses)}
    ax = axes[0, 0]
    top = 1.0
    for reuse in reuses:
        wide = _wide(table, method=shown, regime=ON_POLICY, reuse=reuse)
        wide = wide[wide["queries"] > 0]
        top = max(top, float(wide["queries"].max()))
        ax.plot(wide["queries"], wide["reward"], color=shades[reuse],
                label=f"{reuse} step{'s' if reuse > 1 else ''}/batch")
    off = _wide(table, method=shown, regime=OFFLINE)
    ax.plot([off["queries"].max(), top], [off["reward"].iloc[-1]] * 2, "k:",
            label="offline (exact π_ref data)")
    ax.plot([off["queries"].max()], [off["reward"].iloc[-1]], "k*", markersize=8)
    ax.set_xscale("log")
    ax.set_xlabel("reward-model queries")
    ax.set_ylabel("evaluation reward  $E_\\pi r$")
    ax.set_title(f"(a) {shown}: sample reuse")
    ax.legend(loc="upper left", fontsize=6.5, ncol=2, handlelength=1.2, columnspacing=0.8,
              borderaxespad=0.2)
    ax.set_ylim(-0.02, 1.45)  # headroom for the legend
    ax.set_yticks(np.linspace(0, 1, 6))
    ax = axes[0, 1]
    for method in methods:
        needed = [_queries_to_reach(_wide(table, method=method, regime=ON_POLICY, reuse=r),
                                    config.threshold) for r in reuses]
        ax.plot(reuses, needed, "o-", color=METHOD_COLOURS[method], label=f"{method}, on-policy")
    never = [m for m in methods
             if not (_wide(table, method=m, regime=OFFLINE)["reward"] >= config.threshold).any()]
    if never:
        ax.text(0.97, 0.97, f"offline {', '.join(never)}:\nnever reach {config.threshold:g}",
                transform=ax.transAxes, ha="right", va="top", fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("gradient steps per on-policy batch")
    ax.set_ylabel(f"queries to reach reward {config.threshold:g}")
    ax.set_title("(b) query cost of reuse")
    ax.legend(loc="lower left", fontsize=6.5)
    ax = axes[0, 2]
    front = _wide(table, method="frontier").sort_values("kl")
    ax.plot(front["kl"], front["reward"], color="0.55", linewidth=3, alpha=0.6, zorder=0)
    for method in methods:
        for regime, style in ((ON_POLICY, "-"), (OFFLINE, "--")):
            where = {"method": method, "regime": regime}
            if regime == ON_POLICY:
                where["reuse"] = config.paper_reuse
            wide = _wide(table, **where)
            ax.plot(wide["kl"], wide["reward"], color=METHOD_COLOURS[method], linestyle=style)
    line = matplotlib.lines.Line2D
    colours = [line([], [], color=METHOD_COLOURS[m]) for m in methods]
    first = ax.legend(colours, methods, loc="center right", fontsize=6.5)
    ax.add_artist(first)
    styles = [line([], [], color="k"), line([], [], color="k", linestyle="--"),
              line([], [], color="0.55", linewidth=3, alpha=0.6)]
    ax.legend(styles, [f"on-policy, {config.paper_reuse} steps/batch", "offline",
                       "exact frontier $\\pi^*_\\beta$"], loc="lower right", fontsize=6.5)
    ax.set_xlim(0, max(front["kl"].max(), 1.0) * 1.05)
    ax.set_xlabel("KL($\\pi\\,\\|\\,\\pi_{ref}$) (nats)")
    ax.set_ylabel("evaluation reward")
    ax.set_title("(c) reward vs KL")
    return fig


def check(table: pd.DataFrame, config: EfficiencyConfig) -> None:
    """On-policy beats offline per query and per nat of KL; more reuse needs fewer queries; reuse
    costs reward per gradient step early on; nothing exceeds the exact frontier."""
    front = _wide(table, method="frontier").sort_values("kl")
    reuses = sorted(int(r) for r in table.loc[table["regime"] == ON_POLICY, "reuse"].unique())
    for method in config.methods:
        off = _wide(table, method=method, regime=OFFLINE)
        on = _wide(table, method=method, regime=ON_POLICY, reuse=config.paper_reuse)
        off_final, off_kl = float(off["reward"].iloc[-1]), float(off["kl"].iloc[-1])
        within = on[on["queries"] <= config.query_budget]["reward"].max()
        assert within >= off_final + 0.3, (
            f"{method}: on-policy reward {within:.3f} within {config.query_budget} queries is not "
            f"0.3 above offline's {off_final:.3f} (which used {config.offline_queries} queries)")
        path = on.sort_index()
        up_to = path[path["kl"].cummax() <= off_kl * 1.0001]
        matched = float(np.interp(off_kl, up_to["kl"].cummax(), up_to["reward"])) \
            if len(up_to) > 1 else float("nan")
        assert matched >= off_final + 0.05, (
            f"{method}: at offline's final KL {off_kl:.3f} on-policy reward is {matched:.3f}, not "
            f"0.05 above offline's {off_final:.3f}")
        needed = [_queries_to_reach(_wide(table, method=method, regime=ON_POLICY, reuse=r),
                                    config.threshold) for r in reuses]
        assert np.all(np.isfinite(needed)), (
            f"{method}: some reuse never reaches reward {config.threshold} ({needed})")
        assert np.all(np.diff(needed) < 0), (
            f"{method}: queries to reach {config.threshold} not decreasing in reuse "
            f"{reuses}: {needed}")
        early = [float(_wide(table, method=method, regime=ON_POLICY,
                             reuse=r).loc[config.early_step, "reward"])
                 for r in reuses]
        assert np.all(np.diff(early) <= 1e-3) and early[0] > early[-1], (
            f"{method}: reward at step {config.early_step} should fall with reuse (stale batches); "
            f"got {dict(zip(reuses, np.round(early, 4)))}")
        for regime, rows in ((OFFLINE, off), (ON_POLICY, on)):
            bound = np.interp(rows["kl"], front["kl"], front["reward"])
            excess = float((rows["reward"] - bound).max())
            assert excess <= 5e-3, (f"{method} {regime}: reward exceeds the exact KL frontier by "
                                    f"{excess:.4f}")


EXPERIMENT = register(Experiment(
    id="tajwar-efficiency", figure="F2",
    title="On-policy data are more query- and KL-efficient; sample reuse trades queries for staleness",
    paper=PAPER + ", §4-5 (sample reuse)", arxiv=ARXIV,
    claim=("On-policy methods reach a given reward with fewer reward-model queries and less "
           "KL(pi || pi_ref) than offline methods; reusing each on-policy batch for several "
           "gradient steps improves query efficiency, with moderate reuse best."),
    differences=(
        "Peak 70, Adam lr 0.01, 1500 steps. Sample reuse = gradient steps taken on a frozen exact "
        "on-policy pair distribution pi_s x pi_s (cs.policy_pairs, deterministic labels; for "
        "Best-of-N the exact best-of-10 law of pi_s) before refreshing it from the current policy, "
        "with one Adam state throughout (as in Tajwar's code). Queries are a counting convention "
        "since every batch is the exact population: each refresh costs 100 queries (Tajwar's 10 "
        "states x N = 10), the offline dataset 1000 (100 states x 10) although it is the exact, "
        "infinite-sample pi_ref x pi_ref population. So offline here is the infinite-data limit "
        "(final reward 0.29-0.42), and on-policy with Tajwar's 15 steps/batch still passes it "
        "after 1,000-1,500 queries and reaches 0.91-0.96 within 3,000; at offline's final KL "
        "on-policy has 0.41-0.54. The frontier is the exact "
        "KL-regularised family pi*_beta, the largest reward at each KL. 'Moderate reuse best' "
        "does NOT appear as an interior optimum: with exact batches there is no sampling noise to "
        "overfit, a frozen batch keeps pointing the right way (deterministic labels, Best-of-N), "
        "and at lr 0.01 pi moves little within 50 steps, so the queries needed to reach reward "
        "0.5 fall monotonically with reuse, roughly as 1/reuse (21,000-22,500 at 1 step/batch, "
        "500-600 at 50); its only cost is a small, transient loss of reward per "
        "gradient step (stale batches: reward at step 150 is 0.22 at reuse 1 and 0.15 at reuse 50 "
        "for DPO/IPO), which the check asserts. Reuse -> infinity is offline "
        "training, the worst case."),
    config=EfficiencyConfig, run=run, plot=plot, check=check, seeds=1))
