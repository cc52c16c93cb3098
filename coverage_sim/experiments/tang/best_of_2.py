"""F9 ``tang-best-of-2`` — Tang et al. 2024 (arXiv:2405.08448): the online/offline gap persists for
non-contrastive Best-of-2 SFT.

Gold win rate vs KL along training, on every task of the family, for online Best-of-2 (refreshed
SFT on the proxy-best of two draws from the current policy) and offline Best-of-2 (SFT on the
gold-labelled winners of the n pairs), both with sampled minibatches; with the exact Best-of-2 of
``pi_ref`` under the gold reward (where SFT on infinite offline data with argmax labels ends) and
the Best-of-N KL bound ``log 2 - 1/2`` (Beirami et al., arXiv:2401.01879) it obeys.

Claim: with the non-contrastive Best-of-2 loss online sampling still beats offline data, so the gap
is not specific to contrastive losses. Tested at matched KL (Tang et al.'s Pareto comparison) and at
the end of training.

See :mod:`coverage_sim.experiments.tang.setting` for the tasks, the data, the proxy, the instance
family and the conventions shared by F6-F9.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from coverage_sim._validation import check_int
from coverage_sim.best_of_n import best_of_n_kl_bound, best_of_n_policy
from coverage_sim.data import policy_pairs
from coverage_sim.experiments.registry import Experiment, register
from coverage_sim.experiments.tang.setting import (ARXIV, FAMILY, PAPER, SETUP, TangConfig,
                                                    listed, tang_instances, unit_keys)
from coverage_sim.experiments.verdict import PARTLY, CheckResult, Effect, clause
from coverage_sim.metrics import kl_divergence, win_rate
from coverage_sim.objectives import objective
from coverage_sim.plotting import effect_axes, new_figure
from coverage_sim.policies import TabularSoftmax
from coverage_sim.train import log_schedule, train_many

__all__ = ["EXPERIMENT", "TangBestOf2Config", "check", "paths", "plot", "run"]

_METRICS = ("kl", "win_rate", "reward")


@dataclass(frozen=True)
class TangBestOf2Config(TangConfig):
    """Config of F9 (shared fields, the instance family and ``batch_size`` in :class:`TangConfig`;
    ``steps`` is unused: see below).

    Both arms sample ``batch_size`` per step: online, responses each the proxy-best of two draws
    from the policy of the last refresh; offline, pairs of the n gold-labelled pairs (SFT on their
    winners).

    Attributes:
      refreshes: online Best-of-2 iterations; each refresh freezes the current policy as the sampler
        and runs SFT on its proxy-best-of-two draws with a fresh Adam.
      steps_per_refresh: Adam steps of SFT per refresh. Offline Best-of-2 gets the same total
        ``refreshes * steps_per_refresh`` steps.
      record_points: log-spaced checkpoints per refresh (and, times ``refreshes``, offline).
    """

    refreshes: int = 10
    steps_per_refresh: int = 100
    record_points: int = 8

    def __post_init__(self):
        super().__post_init__()
        check_int(self.refreshes, "refreshes", minimum=1)
        check_int(self.steps_per_refresh, "steps_per_refresh", minimum=1)
        check_int(self.record_points, "record_points", minimum=2)
        if self.batch_size is None:
            raise ValueError("batch_size must be an integer: F9 samples both arms")

    @classmethod
    def quick(cls) -> TangBestOf2Config:
        return cls(refreshes=6, steps_per_refresh=60, record_points=5)


def _rows(method, inst, seed, run, offset, skip_first=False):
    hist = run.history.iloc[1:] if skip_first else run.history
    return [pd.DataFrame({"method": method, "instance": inst.index, "seed": seed,
                          "step": hist["step"].to_numpy() + offset, "metric": m,
                          "value": hist[m].to_numpy()}) for m in _METRICS]


def run(config: TangBestOf2Config, seed: int) -> pd.DataFrame:
    """KL, gold win rate and reward along online and offline Best-of-2 on every task, and each
    task's exact Best-of-2 of ``pi_ref`` by the gold reward (``method = "best_of_2_gold"``,
    step 0). There is no KL term (no tau): the frontier is traced by checkpoints."""
    instances = tang_instances(config, seed)
    m, b = config.steps_per_refresh, len(instances)
    total = config.refreshes * m
    local = log_schedule(m, config.record_points)
    envs = [inst.env for inst in instances]
    frames = []
    policies = [inst.env.ref for inst in instances]
    for it in range(config.refreshes):
        runs = train_many(envs, [objective("best_of_n", n=2, reward=inst.r_hat)
                                 for inst in instances],
                          [policy_pairs(inst.env, pi) for inst, pi in zip(instances, policies)],
                          steps=m, lr=config.lr, seed=(seed * config.refreshes + it) * b,
                          policy=[TabularSoftmax(init=pi) for pi in policies], record=local,
                          metrics=list(_METRICS), batch_size=config.batch_size)
        for inst, r in zip(instances, runs):
            frames += _rows("online", inst, seed, r, it * m, skip_first=it > 0)
        policies = [r.policy for r in runs]
    offline = train_many(envs, objective("sft"), [inst.data for inst in instances], steps=total,
                         lr=config.lr, seed=seed * b,
                         record=log_schedule(total, config.record_points * config.refreshes),
                         metrics=list(_METRICS), batch_size=config.batch_size)
    for inst, r in zip(instances, offline):
        frames += _rows("offline", inst, seed, r, 0)
        target = best_of_n_policy(inst.env.ref, inst.env.reward, 2)
        frames.append(pd.DataFrame({"method": "best_of_2_gold", "instance": inst.index,
                                    "seed": seed, "step": 0, "metric": ["kl", "win_rate"],
                                    "value": [float(kl_divergence(inst.env, target, inst.env.ref)),
                                              float(win_rate(inst.env, target))]}))
    return pd.concat(frames, ignore_index=True)


def paths(table: pd.DataFrame, method: str) -> dict:
    """Per unit, ``method``'s training path: a frame indexed by step with columns ``kl``,
    ``win_rate``."""
    rows = table[(table["method"] == method) & table["metric"].isin(["kl", "win_rate"])]
    return {unit: rows_u.pivot_table(index="step", columns="metric", values="value")
            for unit, rows_u in rows.groupby(unit_keys(table))}


def _matched_gap(on: pd.DataFrame, off: pd.DataFrame, num: int = 40) -> float:
    """Online minus offline win rate, mean over the KL range both paths cover (each path's
    checkpoints joined in KL order)."""
    low = max(on["kl"].min(), off["kl"].min())
    high = min(on["kl"].max(), off["kl"].max())
    grid = np.linspace(low, max(low, high), num)
    a, b = on.sort_values("kl"), off.sort_values("kl")
    return float(np.mean(np.interp(grid, a["kl"], a["win_rate"])
                         - np.interp(grid, b["kl"], b["win_rate"])))


def _effects(table):
    on, off = paths(table, "online"), paths(table, "offline")
    matched = np.array([_matched_gap(on[u], off[u]) for u in on])
    end = np.array([on[u]["win_rate"].iloc[-1] - off[u]["win_rate"].max() for u in on])
    return matched, end


def plot(table: pd.DataFrame, config: TangBestOf2Config):
    """(a) one task: win rate vs KL along training (log KL axis), with the exact gold Best-of-2 of
    pi_ref and the KL bound; (b) every task's paths; (c) the paired effects per task (dots), mean
    and 95% CI."""
    fig, axes = new_figure(ncols=3, width=3.2, height=3.3)
    colours = {"online": "C0", "offline": "C3"}
    labels = {"online": "online Best-of-2 (proxy picks the best of 2 from π_t)",
              "offline": "offline Best-of-2 (SFT on the n gold-labelled winners)"}
    on, off = paths(table, "online"), paths(table, "offline")
    first = sorted(on)[0]
    gold = table[table["method"] == "best_of_2_gold"].pivot_table(
        index=unit_keys(table), columns="metric", values="value")
    bound = best_of_n_kl_bound(2)
    for ax, units in ((axes[0, 0], [first]), (axes[0, 1], sorted(on))):
        for method, path in (("online", on), ("offline", off)):
            for u in units:
                p = path[u][path[u]["kl"] > 1e-4]
                single = len(units) == 1
                ax.plot(p["kl"], p["win_rate"], "-", marker="o" if single else None, ms=2.5,
                        color=colours[method], alpha=1.0 if single else 0.6,
                        linewidth=1.4 if single else 0.9,
                        label=labels[method] if single else None)
        g = gold.loc[units]
        ax.plot(g["kl"], g["win_rate"], "*", ms=9 if len(units) == 1 else 6, color="k",
                label="exact Best-of-2 of π_ref, gold argmax" if len(units) == 1 else None)
        ax.axvline(bound, color="0.4", linestyle="--", linewidth=0.9,
                   label="Best-of-2 KL bound log 2 − 1/2" if len(units) == 1 else None)
        ax.set_xscale("log")
        ax.set_xlabel("KL(π ‖ π_ref)  [nats, log scale]")
        ax.set_ylabel("gold win rate vs π_ref")
    axes[0, 0].set_title("(a) one task, along training")
    axes[0, 1].set_title(f"(b) all {len(on)} tasks")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncol=2)
    matched, end = _effects(table)
    effect_axes(axes[0, 2], [Effect("online − offline, matched KL", tuple(matched)),
                             Effect("online final − offline best", tuple(end))], "win rate",
                labels=["online − offline\nat matched KL", "online final −\noffline best"])
    axes[0, 2].set_title("(c) per task: mean, 95% CI")
    return fig



def check(table: pd.DataFrame, config: TangBestOf2Config) -> CheckResult:
    """Per unit (task, seed):

    * ``online-wins-at-matched-kl``: online Best-of-2's win rate, mean over the KL range both
      training paths cover, is above offline's by more than ``min_gap``;
    * ``online-wins-at-end``: online Best-of-2's final win rate is above the best win rate offline
      Best-of-2 reaches by more than ``min_gap``.

    Effect: the matched-KL gap, online minus offline.
    """
    matched, end = _effects(table)
    clauses = (
        clause("online-wins-at-matched-kl", f"online Best-of-2's win rate at matched KL (mean over "
               f"the KL range both training paths cover) is above offline Best-of-2's by more than "
               f"{config.min_gap:g}", matched > config.min_gap, listed(matched)),
        clause("online-wins-at-end", f"online Best-of-2's final win rate is above the best win "
               f"rate offline Best-of-2 reaches by more than {config.min_gap:g}",
               end > config.min_gap, listed(end)),
    )
    return CheckResult(clauses=clauses,
                       effect=Effect("win rate at matched KL, online - offline Best-of-2",
                                     tuple(matched)),
                       mode="sampled")


EXPERIMENT = register(Experiment(
    id="tang-best-of-2", figure="F9",
    title="The online/offline gap persists for non-contrastive Best-of-2 SFT",
    paper=PAPER, arxiv=ARXIV,
    claim=("With the non-contrastive Best-of-2 loss (SFT on the preferred of two samples) online "
           "sampling still beats offline data: the gap is not specific to contrastive losses."),
    differences=(SETUP + " " + FAMILY + " Both arms sample 64 per step: online Best-of-2 draws "
                 "responses that are each the proxy-argmax of two draws from the policy of the "
                 "last refresh (cs.best_of_n objective, sampled), refreshing the sampler every "
                 "steps_per_refresh steps with a fresh Adam; offline Best-of-2 is SFT (TRL 'sft') "
                 "on the winners of 64 pairs drawn per step from the n gold-labelled pairs, for "
                 "the same total steps. No KL term: the frontier is traced by checkpoints. A "
                 "tabular policy cannot drift beyond its SFT target, so offline Best-of-2 stops "
                 "near the data's winner distribution (the star: the exact Best-of-2 of pi_ref, KL "
                 "at most log 2 - 1/2), while online Best-of-2 compounds one Best-of-2 step per "
                 "refresh. Tang et al.'s LLM offline runs keep drifting in KL with training."),
    config=TangBestOf2Config, run=run, plot=plot, check=check, seeds=1,
    expected_verdict=PARTLY, expected_failing=("online-wins-at-matched-kl",)))
