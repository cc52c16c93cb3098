"""Tang et al. 2024 (arXiv:2405.08448), "Understanding the performance gap between online and
offline alignment algorithms": the K-arm tasks, data and helpers shared by F6-F9.

A K-arm analogue of Tang et al.'s controlled setting (who follow Gao et al., arXiv:2210.10760, in
using a large "golden" preference model as the ground truth). One *task* is a K-arm bandit with a
peaked reference ``pi_ref`` (the SFT policy; ``log pi_ref ~ N(0, ref_scale^2)``) and a gold
Bradley-Terry reward ``r* ~ N(0, reward_scale^2)`` (the golden preference model). For each task and
seed, ``n`` pairs ``(y, y') ~ pi_ref x pi_ref`` are labelled by one draw each from the gold model
(Tang et al.'s golden-labelled dataset); the proxy preference model is the ridge Bradley-Terry MLE
``r_hat`` fitted to those same pairs (Tang et al. train their proxy on that data too). Offline IPO
trains on the n pairs; online IPO samples pairs from the current policy ``pi_t x pi_t`` and labels
them with the proxy, ``sigma(r_hat(y) - r_hat(y'))``.

**Instance family.** Every check runs on ``instances`` random tasks (each with its own offline data
and proxy), times the seeds: task seeds ``instance_seed, instance_seed + 1, ...``, keeping a task
only if its best arm beats ``pi_ref`` with probability at least ``min_best_win`` (0.75 by default:
the SFT policy must leave room to align; the rule skips tasks whose SFT mode is already nearly the
best arm: 2 of the first 400 task seeds, seed 3 among them). Which tasks are kept depends on the
task alone, never on a method's result. One *unit* of a check is one (task, seed).

**Theory line.** IPO's population objective with pairs from ``mu`` is
``max_pi E_{y~pi, y'~mu} P(y > y') - tau KL(pi || pi_ref)`` (Azar et al., arXiv:2310.12036), so
with ``mu = pi_ref``, gold labels and infinite data its optimum ``pi_tau ∝ pi_ref exp(P(y > pi_ref)
/ tau)`` (:func:`ipo_optimum`) maximises the win rate against ``pi_ref`` at its own KL: the curve of
these optima over tau (:func:`optimum_frontier`) is the upper boundary of every policy's (KL, win
rate) point. No method, online or offline, can lie above it.

Conventions: IPO is TRL's ``(h - 1/(2 tau))^2``, so ``tau`` here is Azar et al.'s tau and TRL's
beta (``cs.objective("ipo", beta=tau)``, ``cs.objective("online_ipo", beta=tau, reward=r_hat)``).
KL is ``KL(pi || pi_ref)`` in nats; "win rate" is the gold Bradley-Terry win rate of ``pi`` against
``pi_ref``. On-policy arms sample: ``batch_size`` groups of two responses from ``pi_t`` per step,
each pair labelled by one Bernoulli draw (``cs.train(..., batch_size=...)``); offline arms use the
exact gradient of the loss on their finite data set (full batch).

The figures: F6 :mod:`~coverage_sim.experiments.tang.pareto`, F7
:mod:`~coverage_sim.experiments.tang.ablations`, F8
:mod:`~coverage_sim.experiments.tang.classifier`, F9
:mod:`~coverage_sim.experiments.tang.best_of_2`; F6 with a transformer policy:
:mod:`~coverage_sim.experiments.tang.transformer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.special import expit, softmax

from coverage_sim._validation import check_in_range, check_int, check_positive
from coverage_sim.data import PairData, offline_pairs
from coverage_sim.env import Bandit
from coverage_sim.experiments.policy_classes import make_policy, random_features, train_each
from coverage_sim.metrics import kl_divergence, win_rate
from coverage_sim.policies import Policy, TabularSoftmax
from coverage_sim.reward_model import fit_bradley_terry
from coverage_sim.train import train_many

__all__ = [
    "ARXIV",
    "FAMILY",
    "Instance",
    "METHOD_COLOURS",
    "METHOD_LABELS",
    "PAPER",
    "SETUP",
    "TangConfig",
    "best_win_rate",
    "check_taus",
    "final_points",
    "first_unit",
    "frontier",
    "ipo_optimum",
    "listed",
    "matched_wins",
    "optimum_frontier",
    "optimum_rows",
    "pareto_axes",
    "proxy_relabel",
    "sign_accuracy",
    "single_row",
    "tang_instances",
    "tang_policy",
    "tang_task",
    "task_seeds",
    "tidy_runs",
    "train_sweep",
    "unit_keys",
    "unit_rows",
]

PAPER = ("Tang et al. 2024, Understanding the performance gap between online and offline alignment "
         "algorithms")
ARXIV = "2405.08448"
_TIE = 1e-9  # |h| below this counts as a tie (1/2) in sign accuracy
#: At most this many task seeds are tried per kept task before the family rule gives up.
_MAX_TRIES = 50


def check_taus(taus, name="taus", minimum=1):
    """A config's tau sweep: at least ``minimum`` values, each positive (else ValueError)."""
    if len(taus) < minimum:
        what = "one value" if minimum == 1 else f"{minimum} values to trace a frontier"
        raise ValueError(f"{name} must hold at least {what}")
    for tau in taus:
        check_positive(tau, name)


@dataclass(frozen=True)
class TangConfig:
    """Fields shared by F6-F9: the instance family, the offline data, the optimiser and sampling.

    Attributes:
      n_responses: number of arms K.
      ref_scale: std of the reference's logits, ``log pi_ref ~ N(0, ref_scale^2)`` (peakedness).
      reward_scale: std of the gold reward, ``r* ~ N(0, reward_scale^2)`` (BT label noise falls as it
        grows).
      instance_seed: first task seed of the family (see the module docstring).
      instances: number of random tasks the check runs on (each with its own data and proxy).
      min_best_win: keep a drawn task only if its best arm beats ``pi_ref`` with at least this
        gold probability (the SFT policy leaves room to align).
      n_pairs: number n of gold-labelled offline pairs from ``pi_ref x pi_ref`` (per task and seed).
      proxy_l2: ridge of the proxy's Bradley-Terry fit (``cs.fit_bradley_terry(l2=...)``; the
        likelihood is a mean over pairs, so ``l2 * n_pairs`` is the ridge in pair counts).
      steps: Adam steps per run.
      lr: Adam step size.
      batch_size: groups of two responses drawn from ``pi_t`` per step by the on-policy arms, each
        pair labelled by one draw from the labeller; ``None``: the exact expectation over
        ``pi_t x pi_t``.
      min_gap: the checks' smallest difference that counts: "A beats B" needs A ahead by more than
        this (in win rate or accuracy), "flat" means a change smaller than this; one point, so
        that a null difference does not pass or fail on sampling noise.
    """

    n_responses: int = 100
    ref_scale: float = 2.0
    reward_scale: float = 1.5
    instance_seed: int = 0
    instances: int = 8
    min_best_win: float = 0.75
    n_pairs: int = 1000
    proxy_l2: float = 1e-3
    steps: int = 1000
    lr: float = 0.05
    batch_size: int | None = 64
    min_gap: float = 0.01

    def __post_init__(self):
        check_int(self.n_responses, "n_responses", minimum=2)
        check_positive(self.ref_scale, "ref_scale", allow_zero=True)
        check_positive(self.reward_scale, "reward_scale")
        check_int(self.instance_seed, "instance_seed", minimum=0)
        check_int(self.instances, "instances", minimum=1)
        check_in_range(self.min_best_win, "min_best_win", 0.0, 1.0, high_open=True)
        check_int(self.n_pairs, "n_pairs", minimum=1)
        check_positive(self.proxy_l2, "proxy_l2")
        check_int(self.steps, "steps", minimum=1)
        check_positive(self.lr, "lr")
        if self.batch_size is not None:
            check_int(self.batch_size, "batch_size", minimum=1)
        check_positive(self.min_gap, "min_gap", allow_zero=True)


def tang_task(config: TangConfig, task_seed: int) -> Bandit:
    """One task: K arms, ``pi_ref = softmax(ref_scale * z)``, gold reward ``reward_scale * z'``."""
    rng = np.random.default_rng(check_int(task_seed, "task_seed"))
    ref = softmax(config.ref_scale * rng.standard_normal(config.n_responses))
    reward = config.reward_scale * rng.standard_normal(config.n_responses)
    return Bandit(reward=reward, ref=ref, name=f"tang-K{config.n_responses}-seed{task_seed}")


def _win_against_ref(env: Bandit) -> np.ndarray:
    """``P(y > pi_ref)`` for every arm y, shape (K,) (one context)."""
    r = env.reward.ravel()
    return expit(r[:, None] - r[None, :]) @ env.ref.ravel()


def best_win_rate(env: Bandit) -> float:
    """The largest gold win rate against ``pi_ref`` any policy reaches: ``max_y P(y > pi_ref)``.

    Examples:
      >>> from coverage_sim.env import Bandit
      >>> round(best_win_rate(Bandit(reward=[0.0, 0.0], ref=[0.5, 0.5])), 3)
      0.5
    """
    return float(_win_against_ref(env).max())


def task_seeds(config: TangConfig) -> tuple[int, ...]:
    """The family's task seeds: the first ``instances`` seeds from ``instance_seed`` on whose task
    passes the ``min_best_win`` rule (ValueError if too few do)."""
    kept, seed = [], config.instance_seed
    while len(kept) < config.instances:
        if seed - config.instance_seed >= _MAX_TRIES * config.instances:
            raise ValueError(f"min_best_win={config.min_best_win} keeps only {len(kept)} of "
                             f"{seed - config.instance_seed} tasks tried; lower it")
        if best_win_rate(tang_task(config, seed)) >= config.min_best_win:
            kept.append(seed)
        seed += 1
    return tuple(kept)


class Instance(NamedTuple):
    """One task with its data: ``index`` in the family, ``task_seed``, the bandit ``env``, the n
    gold-labelled pairs ``data``, the proxy reward ``r_hat`` and three spare ``streams``
    (``numpy.random.Generator``) for further data sets."""

    index: int
    task_seed: int
    env: Bandit
    data: PairData
    r_hat: np.ndarray
    streams: tuple


def tang_instances(config: TangConfig, seed: int) -> list[Instance]:
    """The family's tasks with their data for ``seed``.

    All randomness of a task's data comes from ``np.random.default_rng([seed, task_seed])``: its
    first spawned stream samples the offline pairs; the three others are returned for further data
    sets.
    """
    out = []
    for index, task_seed in enumerate(task_seeds(config)):
        env = tang_task(config, task_seed)
        streams = np.random.default_rng([check_int(seed, "seed"), task_seed]).spawn(4)
        data = offline_pairs(env, env.ref, n=config.n_pairs, seed=streams[0])
        r_hat = fit_bradley_terry(data, l2=config.proxy_l2)
        out.append(Instance(index, task_seed, env, data, r_hat, tuple(streams[1:])))
    return out


def ipo_optimum(env: Bandit, tau: float) -> np.ndarray:
    """Offline IPO's population optimum with ``mu = pi_ref`` and gold labels:
    ``pi_tau ∝ pi_ref exp(P(y > pi_ref) / tau)`` (Azar et al.'s fixed point), the maximiser of
    ``E_{pi x pi_ref} P - tau KL(pi || pi_ref)`` and so of the win rate at its own KL.

    Examples:
      >>> from coverage_sim.env import Bandit
      >>> env = Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5])
      >>> ipo_optimum(env, 1e3).round(3).tolist()
      [0.5, 0.5]
    """
    tau = check_positive(tau, "tau")
    logits = np.log(env.ref.ravel()) + _win_against_ref(env) / tau
    return env.like_ref(softmax(logits))


def optimum_frontier(env: Bandit, num: int = 60) -> pd.DataFrame:
    """KL and win rate of :func:`ipo_optimum` over ``num`` log-spaced tau in [1e-3, 10]: the
    largest win rate against ``pi_ref`` reachable at each KL (columns ``tau, kl, win_rate``)."""
    rows = []
    for tau in np.geomspace(1e-3, 10.0, check_int(num, "num", minimum=2)):
        pi = ipo_optimum(env, tau)
        rows.append((tau, float(kl_divergence(env, pi, env.ref)), float(win_rate(env, pi))))
    return pd.DataFrame(rows, columns=["tau", "kl", "win_rate"])


def optimum_rows(instances, seed: int) -> pd.DataFrame:
    """Each task's :func:`optimum_frontier` as table rows (``method = "optimum"``, step 0)."""
    frames = []
    for inst in instances:
        line = optimum_frontier(inst.env)
        for metric in ("kl", "win_rate"):
            frames.append(pd.DataFrame({"method": "optimum", "instance": inst.index,
                                        "tau": line["tau"], "seed": seed, "step": 0,
                                        "metric": metric, "value": line[metric]}))
    return pd.concat(frames, ignore_index=True)


def proxy_relabel(env: Bandit, data: PairData, r_hat) -> PairData:
    """The same pairs as ``data`` with soft labels ``sigma(r_hat_i - r_hat_j)`` (a 2x2 cell).

    Pair ``{i, j}`` keeps its empirical mass ``W_ij + W_ji``; the winner share becomes the model's
    preference (``r_hat = env.reward`` gives the gold probabilities, noise-free labels). Diagonal
    draws are kept. Offline IPO on it differs from offline IPO on ``data`` only in the labels, and
    from online IPO labelled by the same model only in the pairs (fixed ``pi_ref`` pairs vs ``pi_t``
    pairs).
    """
    w = np.asarray(data.weights)
    pair = w + np.swapaxes(w, 1, 2)
    r = env.as2d(r_hat, "r_hat")
    new = pair * expit(r[:, :, None] - r[:, None, :])
    k = env.n_responses
    idx = np.arange(k)
    new[:, idx, idx] = w[:, idx, idx]
    new /= new.sum()
    return PairData(weights=new, shape=env.shape, behavior=data.behavior, n=None, labels="custom",
                    source=f"{data.source}, relabelled")


def sign_accuracy(env: Bandit, policies, eval_data: PairData) -> np.ndarray:
    """Tang et al.'s classification accuracy: ``E_D 1[h_pi(y_w, y_l) > 0]`` (ties count 1/2).

    ``h_pi = log pi(y_w)/pi_ref(y_w) - log pi(y_l)/pi_ref(y_l)`` is the policy's implicit preference;
    ``eval_data`` holds the held-out gold pairs (i != j). ``policies`` is ``(R,) + env.ref.shape``.
    """
    p = np.asarray(policies, dtype=np.float64).reshape(-1, env.n_contexts, env.n_responses)
    with np.errstate(divide="ignore"):
        g = np.log(p) - env.ref_logp2d[None]
    h = g[..., :, None] - g[..., None, :]
    w = np.asarray(eval_data.weights) * (1.0 - np.eye(env.n_responses))
    score = np.where(np.abs(h) <= _TIE, 0.5, (h > 0).astype(float))
    return (score * w[None]).sum(axis=(1, 2, 3)) / w.sum()


#: Log-linear features of the K unordered arms: this many standard-normal directions.
N_RANDOM_FEATURES = 20


def tang_policy(kind: str, n_responses: int, task_seed: int) -> Policy:
    """The ``policy`` config field's policy on one task: the tabular softmax, a log-linear policy on
    :data:`N_RANDOM_FEATURES` random features of the arms (fixed by the task seed), or Tajwar et
    al.'s MLP (SFT'd to ``pi_ref``)."""
    return make_policy(kind, features=random_features(n_responses, N_RANDOM_FEATURES, task_seed))


def train_sweep(instances, objective, taus, config: TangConfig, seed: int, *, data=None,
                record=None, sampled: bool = False, metrics=("kl", "win_rate", "reward"),
                policy: str = "tabular", steps: int | None = None) -> list:
    """Train every (instance, tau) problem at once: :func:`coverage_sim.train_many` (engine
    policies) or problem by problem (the MLP).

    Args:
      instances: the :class:`Instance` list.
      objective: ``objective(instance, tau) -> Objective``.
      taus: the tau sweep.
      config: the shared config (``steps``, ``lr``, ``batch_size``).
      seed: seed of the runs (problem b is seeded ``seed + b``).
      data: ``data(instance) -> PairData`` for offline objectives, else None.
      record: record schedule.
      sampled: draw ``config.batch_size`` groups per step (on-policy arms); ignored when it is None.
      metrics: the history's metric columns.
      policy: ``"tabular"``, ``"loglinear"`` or ``"mlp"`` (see :func:`tang_policy`).
      steps: Adam steps (default ``config.steps``).

    Returns:
      The runs, instance-major: run ``i * len(taus) + t`` is instance i at ``taus[t]``.
    """
    envs = [inst.env for inst in instances for _ in taus]
    objectives = [objective(inst, tau) for inst in instances for tau in taus]
    datas = None if data is None else [data(inst) for inst in instances for _ in taus]
    steps = config.steps if steps is None else steps
    batch = config.batch_size if sampled else None
    if policy == "tabular":
        policies = TabularSoftmax()
    else:
        policies = [tang_policy(policy, config.n_responses, inst.task_seed)
                    for inst in instances for _ in taus]
    if policy != "mlp":
        return train_many(envs, objectives, datas, steps=steps, lr=config.lr, seed=seed,
                          policy=policies, record=record, metrics=list(metrics),
                          batch_size=batch)
    if batch is not None:
        raise ValueError("policy='mlp' runs the exact on-policy expectation: set batch_size=None")
    return train_each(envs, objectives, datas, policy=policies[0], steps=steps, lr=config.lr,
                      seed=seed, record=record)


def tidy_runs(method: str, instances, taus, runs, seed: int, metrics) -> pd.DataFrame:
    """Table rows (``method, instance, tau, seed, step, metric, value``) of a
    :func:`train_sweep`."""
    frames = []
    for b, run in enumerate(runs):
        inst, tau = instances[b // len(taus)], taus[b % len(taus)]
        steps = run.history["step"].to_numpy()
        for metric in metrics:
            frames.append(pd.DataFrame({"method": method, "instance": inst.index,
                                        "tau": float(tau), "seed": seed, "step": steps,
                                        "metric": metric,
                                        "value": run.history[metric].to_numpy()}))
    return pd.concat(frames, ignore_index=True)


def single_row(method, instance, tau, seed, step, metric, value) -> pd.DataFrame:
    """One table row (``method, instance, tau, seed, step, metric, value``)."""
    return pd.DataFrame({"method": [method], "instance": [int(instance)], "tau": [float(tau)],
                         "seed": [seed], "step": [int(step)], "metric": [metric],
                         "value": [float(value)]})


def unit_keys(table: pd.DataFrame) -> list[str]:
    """The columns that name one unit of a check: ``instance`` (when present) and ``seed``."""
    return [c for c in ("instance", "seed") if c in table.columns]


def first_unit(table: pd.DataFrame):
    """The unit a figure draws in detail: the first task of the first seed."""
    keys = unit_keys(table)
    first = table[keys].drop_duplicates().sort_values(keys).iloc[0]
    return tuple(first) if len(keys) > 1 else first.iloc[0]


def listed(values) -> str:
    """A clause's detail: its per-task values."""
    return "per task: " + ", ".join(f"{v:+.3f}" for v in values)


def final_points(table: pd.DataFrame, method: str) -> pd.DataFrame:
    """Final-step ``kl`` and ``win_rate`` of ``method``, one row per (unit, tau)."""
    rows = table[(table["method"] == method) & table["metric"].isin(["kl", "win_rate"])]
    if rows.empty:
        raise ValueError(f"method {method!r} has no kl/win_rate rows; methods in the table: "
                         f"{sorted(table['method'].unique())}")
    keys = unit_keys(table) + ["tau"]
    last = rows[rows["step"] == rows.groupby(keys)["step"].transform("max")]
    return last.pivot_table(index=keys, columns="metric", values="value").reset_index()


def frontier(points: pd.DataFrame, grid) -> np.ndarray:
    """One unit's tau-sweep final points (columns ``kl``, ``win_rate``) interpolated on ``grid``."""
    rows = points.sort_values("kl")
    return np.interp(grid, rows["kl"].to_numpy(), rows["win_rate"].to_numpy())


def matched_wins(table: pd.DataFrame, methods, num: int = 40) -> pd.DataFrame:
    """Per unit, each method's mean win rate at matched KL.

    For every unit, the KL range covered by every method's tau sweep (from the largest of their
    smallest final KLs to the smallest of their largest) is split into ``num`` points; each
    method's final-point frontier is interpolated there and averaged. Differences of these columns
    are paired win-rate gaps at matched KL.

    Returns:
      A frame indexed by the unit columns, one column per method plus ``kl_low``, ``kl_high``.
    """
    points = {m: final_points(table, m) for m in methods}
    keys = unit_keys(table)
    rows = []
    for unit, first in points[methods[0]].groupby(keys):
        per = {m: (p if m == methods[0] else unit_rows(p, keys, unit)) for m, p in points.items()}
        per[methods[0]] = first
        low = max(p["kl"].min() for p in per.values())
        high = min(p["kl"].max() for p in per.values())
        grid = np.linspace(low, max(high, low), num)
        row = dict(zip(keys, unit if isinstance(unit, tuple) else (unit,)))
        row.update({m: float(frontier(p, grid).mean()) for m, p in per.items()})
        row.update(kl_low=float(low), kl_high=float(high))
        rows.append(row)
    return pd.DataFrame(rows).set_index(keys)


def unit_rows(frame, keys, unit):
    values = unit if isinstance(unit, tuple) else (unit,)
    mask = np.ones(len(frame), dtype=bool)
    for key, value in zip(keys, values):
        mask &= (frame[key] == value).to_numpy()
    rows = frame[mask]
    if rows.empty:
        raise ValueError(f"unit {dict(zip(keys, values))} has no final points")
    return rows


#: The methods of F6/F7 and their labels and colours.
METHOD_LABELS = {"online": "online IPO (on-policy pairs, proxy labels)",
                 "offline": "offline IPO (n pairs, gold labels)",
                 "proxy_labels": "offline pairs, proxy labels",
                 "online_gold": "on-policy pairs, gold labels",
                 "noise_free": "offline pairs, gold probabilities",
                 "replay": "offline on online replay",
                 "quality": "offline on high-quality μ",
                 "on_policy": "offline on more on-policy μ",
                 "optimum": "KL-regularised optimum (theory)"}
METHOD_COLOURS = {"online": "C0", "offline": "C3", "proxy_labels": "C9", "online_gold": "C5",
                  "noise_free": "C7", "replay": "C2", "quality": "C1", "on_policy": "C4",
                  "optimum": "k"}


def pareto_axes(ax, table, methods, unit, optimum=None, scatter=()):
    """One unit's tau-sweep frontiers (final points joined in KL order), optionally the faint cloud
    of its checkpoints and the KL-regularised optimum frontier ``optimum`` (a frame of
    :func:`optimum_frontier`)."""
    keys = unit_keys(table)
    for method in methods:
        pts = unit_rows(final_points(table, method), keys, unit).sort_values("kl")
        colour = METHOD_COLOURS[method]
        if method in scatter:
            rows = unit_rows(table[table["method"] == method], keys, unit)
            ck = rows.pivot_table(index=["tau", "step"], columns="metric", values="value")
            ax.scatter(ck["kl"], ck["win_rate"], s=6, color=colour, alpha=0.25, linewidths=0)
        ax.plot(pts["kl"], pts["win_rate"], "-o", ms=3, color=colour,
                label=METHOD_LABELS.get(method, method))
    if optimum is not None:
        top = max(final_points(table, m)["kl"].max() for m in methods)
        line = optimum[optimum["kl"] <= 1.05 * top]
        ax.plot(line["kl"], line["win_rate"], "--", color=METHOD_COLOURS["optimum"],
                linewidth=1.0, label=METHOD_LABELS["optimum"])
    ax.set_xlabel("KL(π ‖ π_ref)  [nats]")
    ax.set_ylabel("gold win rate vs π_ref")


#: The shared part of every F6-F9 experiment's ``differences``.
SETUP = ("K = 100 arms, log pi_ref ~ N(0, 2^2) (peaked), gold BT reward r* ~ N(0, 1.5^2); n = "
         "1000 gold-labelled pairs from pi_ref x pi_ref per task and seed; proxy r_hat = ridge BT "
         "MLE on those pairs; tabular logits with Adam instead of LLMs. On-policy arms sample "
         "64 pairs from pi_t per step (one Bernoulli label each); offline arms take exact "
         "gradients of the loss on their finite data set (full batch).")

#: The instance family (every F6-F9 experiment's ``differences`` states it).
FAMILY = ("Instances: 8 random tasks (task seeds 0, 1, ..., skipping the tasks whose best arm "
          "beats pi_ref with probability below 0.75, i.e. where the SFT policy is already nearly "
          "optimal; the rule looks at the task only), each with its own data and proxy.")
