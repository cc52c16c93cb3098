"""F14 — Gao, Schulman, Hilton 2022 (arXiv:2210.10760): reward-model over-optimisation.

A gold reward labels preference pairs; a proxy reward model fitted to them is optimised either by
Best-of-N sampling or by RL with a KL penalty, and both rewards are tracked against
``d = sqrt(KL(pi || pi_init))``. Gao et al. fit the gold reward gain with

- Best-of-N: ``R_bon(d) = d (alpha_bon - beta_bon d)``;
- RL:        ``R_RL(d)  = d (alpha_RL - beta_RL log d)``;

and find that the gold peak moves to larger d as the proxy gets larger or sees more data. Best-of-N
has ``KL = log N - (N - 1)/N`` (an upper bound for discrete policies, Beirami et al.,
arXiv:2401.01879).

Bandit analogue: K arms, a long-tailed (Zipf) ``pi_ref`` and a gold reward
``r* = z + gamma * standardised(log pi_ref)`` with ``z ~ N(0, 1)`` (atypical responses are worse on
average). The proxy ``r_hat`` = :func:`coverage_sim.fit_bradley_terry` (ridge ``l2``) on ``n`` pairs
``~ pi_ref x pi_ref`` with gold Bradley-Terry labels. Policies are exact: Best-of-N =
:func:`coverage_sim.best_of_n_policy` on ``r_hat`` for log-spaced N, and the KL-regularised optimum
of the proxy ``pi_ref exp(r_hat / beta) / Z`` (:func:`coverage_sim.optimal_policy` with
``reward=r_hat``) for log-spaced beta -- the policy that RL with a KL penalty converges to. Gains
are relative to ``pi_ref`` (d = 0).

Instances: a run draws ``instances`` instances from its seed, each with its own gold reward ``z``
and, for every proxy data size ``n`` in ``data_sizes``, an independent dataset of ``n`` pairs
(``fixed_instance=True`` keeps every instance's ``z`` at ``instance_seed``, so they differ only by
their data).

Convention: ``beta`` here is the KL coefficient of the RL objective ``E r_hat - beta KL``; Gao's
``alpha, beta`` are fit coefficients (called ``a, b`` in the table and the legends).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from coverage_sim._validation import check_int, check_positive
from coverage_sim.best_of_n import best_of_n_kl_bound, best_of_n_policy
from coverage_sim.data import offline_pairs
from coverage_sim.env import Bandit, optimal_policy
from coverage_sim.experiments.common import seed_streams
from coverage_sim.experiments.registry import Experiment, check_tuple, register
from coverage_sim.experiments.verdict import PARTLY, CheckResult, Effect, clause
from coverage_sim.metrics import expected_reward, kl_divergence
from coverage_sim.plotting import new_figure
from coverage_sim.reward_model import fit_bradley_terry

__all__ = ["METHODS", "GaoConfig", "check", "fit_gao", "make_env", "mean_curves", "plot", "run"]

METHODS = ("best-of-N", "KL-regularised optimum")
_FORMS = {"best-of-N": "d (a - b d)", "KL-regularised optimum": "d (a - b log d)"}

#: Fit quality the check requires of Gao's functional forms on an instance's gold curve.
MIN_R2 = 0.8


@dataclass(frozen=True)
class GaoConfig:
    """Config of F14.

    Attributes:
      n_arms: number of arms K.
      zipf: exponent s of the reference ``pi_ref(y) ∝ (rank + 1)^-s`` (a long tail of rare arms).
      gamma: weight of the standardised ``log pi_ref`` in the gold reward (rare = worse on average).
      instances: instances per run (each its own gold reward and datasets).
      fixed_instance: keep the gold reward's ``z`` at ``instance_seed`` for every instance (they
        then differ only by their datasets).
      instance_seed: seed of the fixed instance's ``z ~ N(0, 1)``.
      n_pairs: the proxy's data size of the main panels and of the over-optimisation clauses.
      data_sizes: proxy data sizes of the data-size panel (must include ``n_pairs``).
      l2: ridge coefficient of the Bradley-Terry fit.
      n_max: largest N of Best-of-N (log-spaced from 1).
      beta_max, beta_min: range of the KL coefficient of the regularised optimum (log-spaced;
        the sweep starts with beta = inf, i.e. pi_ref).
      points: sweep points per method.
    """

    n_arms: int = 200
    zipf: float = 1.0
    gamma: float = 0.6
    instances: int = 8
    fixed_instance: bool = False
    instance_seed: int = 0
    n_pairs: int = 1000
    data_sizes: tuple[int, ...] = (250, 1000, 4000)
    l2: float = 1e-4
    n_max: int = 100000
    beta_max: float = 30.0
    beta_min: float = 0.003
    points: int = 30

    def __post_init__(self):
        check_int(self.n_arms, "n_arms", minimum=3)
        check_positive(self.zipf, "zipf", allow_zero=True)
        check_positive(self.gamma, "gamma", allow_zero=True)
        check_int(self.instances, "instances", minimum=1)
        if not isinstance(self.fixed_instance, bool):
            raise ValueError(f"fixed_instance must be true or false, got {self.fixed_instance!r}")
        check_int(self.instance_seed, "instance_seed", minimum=0)
        check_int(self.n_pairs, "n_pairs", minimum=1)
        check_tuple(self.data_sizes, "data_sizes", lambda v, name: check_int(v, name, minimum=1))
        if self.n_pairs not in self.data_sizes:
            raise ValueError(f"data_sizes must include n_pairs={self.n_pairs}, got "
                             f"{self.data_sizes!r}")
        check_positive(self.l2, "l2")
        check_int(self.n_max, "n_max", minimum=2)
        check_positive(self.beta_max, "beta_max")
        check_positive(self.beta_min, "beta_min")
        if self.beta_min >= self.beta_max:
            raise ValueError(f"beta_min must be < beta_max, got {self.beta_min!r} >= "
                             f"{self.beta_max!r}")
        check_int(self.points, "points", minimum=5)

    @classmethod
    def quick(cls) -> GaoConfig:
        return cls(points=16)


def make_env(config: GaoConfig, seed: int | None = None) -> Bandit:
    """An instance: Zipf ``pi_ref``, gold ``z + gamma * standardised(log pi_ref)``, with ``z``
    drawn from ``seed`` (default, and whenever ``config.fixed_instance``: ``instance_seed``)."""
    ranks = np.arange(1, config.n_arms + 1, dtype=float)
    ref = ranks ** -config.zipf
    ref /= ref.sum()
    log_ref = np.log(ref)
    spread = log_ref.std()
    typical = (log_ref - log_ref.mean()) / spread if spread > 0 else np.zeros_like(log_ref)
    if seed is None or config.fixed_instance:
        seed = config.instance_seed
    z = np.random.default_rng(seed).normal(size=config.n_arms)
    return Bandit(reward=z + config.gamma * typical, ref=ref,
                  name=f"gao-zipf{config.zipf:g}-K{config.n_arms}")


def run(config: GaoConfig, seed: int) -> pd.DataFrame:
    """d = sqrt(KL), gold and proxy reward along the Best-of-N and KL-regularised sweeps, for every
    instance and every proxy data size.

    Column ``knob`` is N for Best-of-N and the KL coefficient beta for the regularised optimum
    (``inf`` at step 0, which is pi_ref).
    """
    ns = np.unique(np.round(np.geomspace(1, config.n_max, config.points)).astype(int))
    betas = np.geomspace(config.beta_max, config.beta_min, config.points)
    sizes = sorted(config.data_sizes)
    frames = []
    for instance, instance_seed in enumerate(seed_streams(seed, config.instances)):
        streams = seed_streams(instance_seed, len(sizes) + 1)
        env = make_env(config, streams[0])
        for size, data_seed in zip(sizes, streams[1:]):
            data = offline_pairs(env, env.ref, labels="bradley_terry", n=size, seed=data_seed)
            r_hat = fit_bradley_terry(data, l2=config.l2)
            # step 0 of both sweeps is pi_ref itself: N = 1, and beta = inf
            sweeps = {"best-of-N": (ns.astype(float), np.stack(
                          [best_of_n_policy(env.ref, r_hat, int(n)) for n in ns])),
                      "KL-regularised optimum": (np.concatenate([[np.inf], betas]), np.stack(
                          [env.ref] + [optimal_policy(env, b, reward=r_hat) for b in betas]))}
            for method, (knob, policies) in sweeps.items():
                kl = np.maximum(kl_divergence(env, policies, env.ref), 0.0)  # clip -1e-17
                columns = {"kl": kl, "d": np.sqrt(kl), "gold": expected_reward(env, policies),
                           "proxy": expected_reward(env, policies, reward=r_hat)}
                frames += [pd.DataFrame({"instance": instance, "n_pairs": size, "method": method,
                                         "knob": knob, "seed": seed,
                                         "step": np.arange(knob.size), "metric": metric,
                                         "value": values})
                           for metric, values in columns.items()]
    return pd.concat(frames, ignore_index=True)


def _sizes(table: pd.DataFrame, n_pairs: int | None) -> int:
    sizes = sorted(table["n_pairs"].unique())
    if n_pairs is None:
        if len(sizes) != 1:
            raise ValueError(f"the table holds several proxy data sizes {sizes}; pass n_pairs")
        return int(sizes[0])
    if n_pairs not in sizes:
        raise ValueError(f"n_pairs={n_pairs!r} is not in the table; it has {sizes}")
    return int(n_pairs)


def _seed_curves(table: pd.DataFrame, method: str, n_pairs: int | None = None):
    """Per (instance, seed): (d, gold gain, proxy gain) sorted along the sweep, for one proxy data
    size."""
    size = _sizes(table, n_pairs)
    rows = table[(table["method"] == method) & (table["n_pairs"] == size)]
    wide = rows.pivot_table(index=["instance", "seed", "step"], columns="metric", values="value")
    out = {}
    for key, w in wide.groupby(level=["instance", "seed"]):
        w = w.sort_index()
        out[key] = (w["d"].to_numpy(), w["gold"].to_numpy() - w["gold"].iloc[0],
                    w["proxy"].to_numpy() - w["proxy"].iloc[0])
    return out


def mean_curves(table: pd.DataFrame, method: str, n_pairs: int | None = None):
    """Mean and s.e. over instances (and seeds) of d and of the gold and proxy gains at every
    sweep point.

    Averages at matched N (Best-of-N) or beta (regularised optimum), so every instance contributes
    its whole sweep. ``n_pairs`` selects the
    proxy's data size (needed when the table holds several).
    Returns ``(d, gold_mean, gold_se, proxy_mean, proxy_se)``.
    """
    curves = _seed_curves(table, method, n_pairs)
    d = np.stack([c[0] for c in curves.values()])
    gold = np.stack([c[1] for c in curves.values()])
    proxy = np.stack([c[2] for c in curves.values()])
    n = gold.shape[0]

    def se(a):
        return a.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(a.shape[1])

    return d.mean(axis=0), gold.mean(axis=0), se(gold), proxy.mean(axis=0), se(proxy)


def fit_gao(method: str, d: np.ndarray, gain: np.ndarray):
    """Least-squares fit of Gao's form to the gold gain; returns ``(a, b, r2, fitted)``.

    Both forms are linear in ``(a, b)``: ``a d - b d^2`` (Best-of-N) and ``a d - b d log d`` (RL,
    with ``d log d -> 0`` at 0). ``r2`` is the coefficient of determination on the given points.
    """
    d = np.asarray(d, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        dlogd = np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)
    second = d ** 2 if method == "best-of-N" else dlogd
    A = np.column_stack([d, -second])
    (a, b), *_ = np.linalg.lstsq(A, gain, rcond=None)
    fitted = A @ np.array([a, b])
    ss_res = float(np.sum((gain - fitted) ** 2))
    ss_tot = float(np.sum((gain - gain.mean()) ** 2))
    return float(a), float(b), 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"), fitted


def _hump(d, gold) -> tuple[bool, int]:
    """Whether a gold-gain curve rises, peaks inside the d-range and falls: the maximum lies between
    10% and 90% of d_max, exceeds 0.3 (reward units, z ~ N(0, 1)), and the gain at d_max is at most
    70% of it. Returns ``(hump, index of the maximum)``."""
    i = int(np.argmax(gold))
    return bool(0.1 <= d[i] / d[-1] <= 0.9 and gold[i] > 0.3 and gold[-1] <= 0.7 * gold[i]), i


def plot(table: pd.DataFrame, config: GaoConfig):
    """(a, b) gold and proxy reward gain vs sqrt(KL) for Best-of-N and the KL-regularised optimum,
    with Gao's fits; (c) the Best-of-N gold gain for each proxy data size, with its peak; (d) the
    exact Best-of-N sqrt(KL) against N with Gao's formula sqrt(log N - (N-1)/N)."""
    fig, axes = new_figure(ncols=2, nrows=2, width=3.5, height=2.7)
    n_seeds = len(table.drop_duplicates(["instance", "seed"]))
    size = config.n_pairs
    for ax, method in zip(axes[0], METHODS):
        d, gold, gold_se, proxy, proxy_se = mean_curves(table, method, size)
        ax.plot(d, proxy, color="C1", label="proxy $\\hat r$ (BT fit)")
        ax.fill_between(d, proxy - proxy_se, proxy + proxy_se, color="C1", alpha=0.2, lw=0)
        ax.plot(d, gold, color="C0", label="gold $r^*$")
        ax.fill_between(d, gold - gold_se, gold + gold_se, color="C0", alpha=0.2, lw=0)
        a, b, r2, fitted = fit_gao(method, d, gold)
        ax.plot(d, fitted, color="black", linestyle="--", linewidth=1.1,
                label=f"fit {_FORMS[method]}\na={a:.2f}, b={b:.2f}, $R^2$={r2:.2f}")
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_xlabel(r"$d = \sqrt{\mathrm{KL}(\pi \,\|\, \pi_{\mathrm{ref}})}$")
        ax.set_title(("(a) best-of-N (exact)" if method == "best-of-N" else
                      r"(b) KL-regularised $\pi_{\mathrm{ref}} e^{\hat r/\beta}/Z$"), fontsize=9)
        ax.legend(loc="upper left", fontsize=7)
    axes[0, 0].set_ylabel("reward gain over $\\pi_{\\mathrm{ref}}$")
    ax = axes[1, 0]
    sizes = sorted(table["n_pairs"].unique())
    colours = dict(zip(sizes, ("#9ecae1", "#4292c6", "#08519c", "#08306b", "#041f45")))
    for n in sizes:
        d, gold, gold_se, _, _ = mean_curves(table, "best-of-N", n)
        ax.plot(d, gold, color=colours[n], linewidth=1.8 if n == size else 1.2,
                label=f"n = {n} pairs")
        ax.fill_between(d, gold - gold_se, gold + gold_se, color=colours[n], alpha=0.15, lw=0)
        i = int(np.argmax(gold))
        ax.plot(d[i], gold[i], "v", color=colours[n], markersize=7)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel(r"$d$ (best-of-N)")
    ax.set_ylabel("gold reward gain")
    ax.set_title("(c) proxy data size: ▼ = gold peak", fontsize=9)
    ax.legend(loc="upper left", fontsize=7)
    ax = axes[1, 1]
    bon = table[(table["method"] == "best-of-N") & (table["metric"] == "d")
                & (table["n_pairs"] == size)]
    for i, (_, rows) in enumerate(bon.groupby(["instance", "seed"])):
        rows = rows.sort_values("step")
        ax.plot(rows["knob"], rows["value"], color="C0", linewidth=0.7, alpha=0.5,
                label="exact, each instance" if i == 0 else None)
    grid = np.unique(np.round(np.geomspace(1, config.n_max, 200)).astype(int))
    ax.plot(grid, np.sqrt([best_of_n_kl_bound(int(n)) for n in grid]), color="black",
            linestyle="--", linewidth=1.1, label=r"$\sqrt{\log N - (N-1)/N}$ (Gao)")
    ax.set_xscale("log")
    ax.set_xlabel("N (best-of-N)")
    ax.set_ylabel("$d$")
    ax.set_title("(d) best-of-N KL: below Gao's formula", fontsize=9)
    ax.legend(loc="upper left", fontsize=7)
    fig.suptitle(f"K = {config.n_arms} arms; mean ± s.e. over {n_seeds} instance"
                 f"{'s' if n_seeds > 1 else ''}; (a, b, d) proxy fitted on n = {size} pairs",
                 fontsize=9)
    return fig


def check(table: pd.DataFrame, config: GaoConfig) -> CheckResult:
    """Gao et al.'s claims on every instance, with the proxy fitted on ``n_pairs`` pairs.

    Paper's clauses:

    - ``proxy-monotone``: along both sweeps d is non-decreasing and the proxy reward is
      non-decreasing in d (tolerance 1e-9) and rises;
    - ``gold-hump``: for both methods the gold gain rises, peaks and falls: its maximum lies between
      10% and 90% of the d-range, exceeds 0.3, and the gain at d_max is at most 70% of it;
    - ``gao-fit``: Gao's functional forms fit the gold gain with R^2 >= ``MIN_R2`` = 0.8 and
      positive coefficients (rise then fall), both methods;
    - ``peak-moves-right``: on the instances whose Best-of-N gold gain has a peak (as in
      ``gold-hump``) at the smallest data size, the d of the gold maximum does not decrease as the
      proxy's data grows over ``data_sizes``, and is larger at the largest size than at the
      smallest (a peak that leaves the d-range counts as moving right).

    Derived (Beirami et al.'s bound, not the paper's formula, which is an equality for continuous
    rewards): ``bon-kl-below-formula``: the exact Best-of-N KL is at most ``log N - (N-1)/N``.

    Effect: over-optimisation of Best-of-N, gold gain at the peak minus at d_max, per instance.
    """
    size = config.n_pairs
    curves = {m: _seed_curves(table, m, size) for m in METHODS}
    keys = sorted(set.intersection(*(set(c) for c in curves.values())))
    sizes = sorted(table["n_pairs"].unique())
    monotone, hump, fits, moves, bound, effect = [], [], [], [], [], []
    r2s, peaks, humps = [], [], [0] * len(sizes)
    by_size = {n: _seed_curves(table, "best-of-N", n) for n in sizes}
    for key in keys:
        ok_mono, ok_hump, ok_fit = True, True, True
        for method in METHODS:
            d, gold, proxy = curves[method][key]
            ok_mono &= bool(np.all(np.diff(d) >= -1e-9) and np.all(np.diff(proxy) >= -1e-9)
                            and proxy[-1] > proxy[0] + 1e-6)
            ok_hump &= _hump(d, gold)[0]
            a, b, r2, _ = fit_gao(method, d, gold)
            r2s.append(r2)
            ok_fit &= bool(r2 >= MIN_R2 and a > 0 and b > 0)
        monotone.append(ok_mono)
        hump.append(ok_hump)
        fits.append(ok_fit)
        d, gold, _ = curves["best-of-N"][key]
        effect.append(float(gold.max() - gold[-1]))
        at = [by_size[n][key][0][int(np.argmax(by_size[n][key][1]))] for n in sizes]
        peaks.append(at)
        smallest = by_size[sizes[0]][key]
        humps[0] += _hump(smallest[0], smallest[1])[0]
        if _hump(smallest[0], smallest[1])[0]:
            # only an instance with a peak at the smallest size has a peak to move
            moves.append(bool(len(at) >= 2 and np.all(np.diff(at) >= -1e-9) and at[-1] > at[0]))
        for j, n in enumerate(sizes[1:], 1):
            humps[j] += _hump(by_size[n][key][0], by_size[n][key][1])[0]
        kl = table[(table["instance"] == key[0]) & (table["seed"] == key[1])
                   & (table["method"] == "best-of-N") & (table["metric"] == "kl")
                   & (table["n_pairs"] == size)]
        limit = np.array([best_of_n_kl_bound(int(n)) for n in kl["knob"]])
        bound.append(bool(np.all(kl["value"].to_numpy() <= limit + 1e-12)))
    clauses = (
        clause("proxy-monotone", "the proxy reward rises monotonically with d along both sweeps",
               monotone),
        clause("gold-hump", "the gold gain rises, peaks inside the d-range (10-90% of d_max) above "
               "0.3 and falls to at most 70% of its peak, for both methods", hump,
               "best-of-N humps per data size: " + ", ".join(
                   f"{n} pairs {h}/{len(keys)}" for n, h in zip(sizes, humps))),
        clause("gao-fit", f"Gao's forms d (a − b d) and d (a − b log d) fit the gold gain with "
               f"R² ≥ {MIN_R2:g} and a, b > 0", fits,
               f"R² from {min(r2s):.2f} to {max(r2s):.2f}"),
        clause("peak-moves-right", f"where best-of-N's gold gain has a peak at "
               f"{sizes[0]} pairs, the d of the peak does not fall as the proxy's data grows "
               f"({', '.join(str(n) for n in sizes)} pairs) and is larger at the largest size",
               moves if moves else [False],
               "peak d per size: " + "; ".join("/".join(f"{v:.2f}" for v in at) for at in peaks)),
        clause("bon-kl-below-formula", "derived (Beirami et al.): the exact best-of-N KL is at "
               "most log N − (N−1)/N at every N", bound, paper=False),
    )
    return CheckResult(clauses=clauses,
                       effect=Effect("best-of-N gold gain, peak − at d_max", effect),
                       mode="exact")


EXPERIMENT = register(Experiment(
    id="gao-overoptimization", figure="F14",
    title="Reward over-optimisation: gold vs proxy reward against sqrt(KL), Best-of-N and RL",
    paper="Gao, Schulman, Hilton 2022, Scaling Laws for Reward Model Overoptimization",
    arxiv="2210.10760",
    claim=("Optimising a learned proxy reward raises the proxy monotonically with "
           "d = sqrt(KL), while the gold reward rises, peaks and falls; the gold curves follow "
           "R_bon(d) = d (alpha - beta d) for Best-of-N and R_RL(d) = d (alpha - beta log d) for "
           "RL."),
    differences=("A K-arm bandit instead of language models: the proxy is a tabular Bradley-Terry "
                 "fit on n offline pairs from pi_ref (not a smaller network), and 'RL' is the "
                 "exact "
                 "KL-regularised optimum of the proxy for a sweep of KL coefficients (PPO's "
                 "checkpoints are replaced by their limit). The over-optimisation comes from the "
                 "long tail of pi_ref: rare arms are seen in one or two comparisons, a few of them "
                 "win by luck and get the largest r_hat, and their gold reward is low because the "
                 "gold reward favours typical (high pi_ref) responses (gamma > 0). With gamma = 0 "
                 "the effect is weak and seed-dependent. Best-of-N is exact (ties pooled), so its "
                 "KL is <= log N - (N-1)/N and saturates at log 1/pi_ref(argmax r_hat). "
                 "Instances: 8 per run, each its own gold reward and proxy datasets (250, 1000 "
                 "and 4000 pairs), drawn from the seed; the clauses are evaluated per instance "
                 "at 1000 pairs, and the data-size panel compares the sizes."),
    config=GaoConfig, run=run, plot=plot, check=check, seeds=1,
    # per instance, a proxy fitted on 1000 pairs over-optimises on only a few instances (it does on
    # most at 250 pairs, on none at 4000): see the gold-hump clause's detail
    expected_verdict=PARTLY, expected_failing=("gold-hump", "gao-fit", "peak-moves-right")))
