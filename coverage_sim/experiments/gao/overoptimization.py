"""F14 — Gao, Schulman, Hilton 2022 (arXiv:2210.10760): reward-model over-optimisation.

A gold reward labels preference pairs; a proxy reward model fitted to them is optimised either by
Best-of-N sampling or by RL with a KL penalty, and both rewards are tracked against
``d = sqrt(KL(pi || pi_init))``. Gao et al. fit the gold reward gain with

- Best-of-N: ``R_bon(d) = d (alpha_bon - beta_bon d)``;
- RL:        ``R_RL(d)  = d (alpha_RL - beta_RL log d)``.

Bandit analogue (science.md §10): K arms, a long-tailed (Zipf) ``pi_ref`` and a gold reward
``r* = z + gamma * standardised(log pi_ref)`` with ``z ~ N(0, 1)`` (atypical responses are worse on
average). The proxy ``r_hat`` = :func:`coverage_sim.fit_bradley_terry` (ridge ``l2``) on ``n`` pairs
``~ pi_ref x pi_ref`` with gold Bradley-Terry labels (the dataset is what the seed draws). Policies
are exact: Best-of-N = :func:`coverage_sim.best_of_n_policy` on ``r_hat`` for log-spaced N, and the
KL-regularised optimum of the proxy ``pi_ref exp(r_hat / beta) / Z``
(:func:`coverage_sim.optimal_policy` with ``reward=r_hat``) for log-spaced beta -- the policy that
RL with a KL penalty converges to. Gains are relative to ``pi_ref`` (d = 0).

Convention: ``beta`` here is the KL coefficient of the RL objective ``E r_hat - beta KL``; Gao's
``alpha, beta`` are fit coefficients (called ``a, b`` in the table and the legends).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from coverage_sim._validation import check_int, check_positive
from coverage_sim.best_of_n import best_of_n_policy
from coverage_sim.data import offline_pairs
from coverage_sim.env import Bandit, optimal_policy
from coverage_sim.experiments.registry import Experiment, register
from coverage_sim.metrics import expected_reward, kl_divergence
from coverage_sim.plotting import new_figure
from coverage_sim.reward_model import fit_bradley_terry

__all__ = ["METHODS", "GaoConfig", "check", "fit_gao", "make_env", "mean_curves", "plot", "run"]

METHODS = ("best-of-N", "KL-regularised optimum")
_FORMS = {"best-of-N": "d (a - b d)", "KL-regularised optimum": "d (a - b log d)"}

#: Fit quality the check requires of Gao's functional forms on the seed-mean gold curve.
MIN_R2 = 0.8


@dataclass(frozen=True)
class GaoConfig:
    """Config of F14.

    Attributes:
      n_arms: number of arms K.
      zipf: exponent s of the reference ``pi_ref(y) ∝ (rank + 1)^-s`` (a long tail of rare arms).
      gamma: weight of the standardised ``log pi_ref`` in the gold reward (rare = worse on average).
      instance_seed: seed of the gold reward's ``z ~ N(0, 1)`` (the instance is fixed; the run seed
        draws the preference dataset).
      n_pairs: offline preference pairs the proxy is fitted on.
      l2: ridge coefficient of the Bradley-Terry fit.
      n_max: largest N of Best-of-N (log-spaced from 1).
      beta_max, beta_min: range of the KL coefficient of the regularised optimum (log-spaced;
        the sweep starts with beta = inf, i.e. pi_ref).
      points: sweep points per method.
    """

    n_arms: int = 200
    zipf: float = 1.0
    gamma: float = 0.6
    instance_seed: int = 0
    n_pairs: int = 1000
    l2: float = 1e-4
    n_max: int = 100000
    beta_max: float = 30.0
    beta_min: float = 0.003
    points: int = 40

    def __post_init__(self):
        check_int(self.n_arms, "n_arms", minimum=3)
        check_positive(self.zipf, "zipf", allow_zero=True)
        check_positive(self.gamma, "gamma", allow_zero=True)
        check_int(self.instance_seed, "instance_seed", minimum=0)
        check_int(self.n_pairs, "n_pairs", minimum=1)
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
        return cls(points=24)


def make_env(config: GaoConfig) -> Bandit:
    """The fixed instance: Zipf ``pi_ref``, gold ``z + gamma * standardised(log pi_ref)``."""
    ranks = np.arange(1, config.n_arms + 1, dtype=float)
    ref = ranks ** -config.zipf
    ref /= ref.sum()
    log_ref = np.log(ref)
    spread = log_ref.std()
    typical = (log_ref - log_ref.mean()) / spread if spread > 0 else np.zeros_like(log_ref)
    z = np.random.default_rng(config.instance_seed).normal(size=config.n_arms)
    return Bandit(reward=z + config.gamma * typical, ref=ref,
                  name=f"gao-zipf{config.zipf:g}-K{config.n_arms}")


def run(config: GaoConfig, seed: int) -> pd.DataFrame:
    """d = sqrt(KL), gold and proxy reward along the Best-of-N and KL-regularised sweeps.

    Column ``knob`` is N for Best-of-N and the KL coefficient beta for the regularised optimum
    (``inf`` at step 0, which is pi_ref).
    """
    env = make_env(config)
    data = offline_pairs(env, env.ref, labels="bradley_terry", n=config.n_pairs, seed=seed)
    r_hat = fit_bradley_terry(data, l2=config.l2)
    ns = np.unique(np.round(np.geomspace(1, config.n_max, config.points)).astype(int))
    betas = np.geomspace(config.beta_max, config.beta_min, config.points)
    # step 0 of both sweeps is pi_ref itself: N = 1, and beta = inf for the regularised optimum
    sweeps = {"best-of-N": (ns.astype(float),
                            np.stack([best_of_n_policy(env.ref, r_hat, int(n)) for n in ns])),
              "KL-regularised optimum": (np.concatenate([[np.inf], betas]),
                                         np.stack([env.ref] + [optimal_policy(env, b, reward=r_hat)
                                                               for b in betas]))}
    frames = []
    for method, (knob, policies) in sweeps.items():
        kl = np.maximum(kl_divergence(env, policies, env.ref), 0.0)  # clip -1e-17 rounding
        columns = {"kl": kl, "d": np.sqrt(kl), "gold": expected_reward(env, policies),
                   "proxy": expected_reward(env, policies, reward=r_hat)}
        for metric, values in columns.items():
            frames.append(pd.DataFrame({"method": method, "knob": knob, "seed": seed,
                                        "step": np.arange(knob.size), "metric": metric,
                                        "value": values}))
    return pd.concat(frames, ignore_index=True)


def _seed_curves(table: pd.DataFrame, method: str):
    """Per seed: (d, gold gain, proxy gain) sorted along the sweep."""
    rows = table[table["method"] == method]
    wide = rows.pivot_table(index=["seed", "step"], columns="metric", values="value")
    out = {}
    for seed, w in wide.groupby(level="seed"):
        w = w.sort_index()
        out[seed] = (w["d"].to_numpy(), w["gold"].to_numpy() - w["gold"].iloc[0],
                     w["proxy"].to_numpy() - w["proxy"].iloc[0])
    return out


def mean_curves(table: pd.DataFrame, method: str):
    """Seed-mean and s.e. of d and of the gold and proxy gains at every sweep point.

    Averages at matched N (Best-of-N) or beta (regularised optimum) over datasets, so every seed
    contributes its whole sweep. Returns ``(d, gold_mean, gold_se, proxy_mean, proxy_se)``.
    """
    curves = _seed_curves(table, method)
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


def plot(table: pd.DataFrame, config: GaoConfig):
    """Gold and proxy reward gain vs sqrt(KL): Best-of-N (left), KL-regularised optimum (right)."""
    fig, axes = new_figure(ncols=2, width=3.5, height=3.0, sharey=True)
    n_seeds = table["seed"].nunique()
    for ax, method in zip(axes[0], METHODS):
        d, gold, gold_se, proxy, proxy_se = mean_curves(table, method)
        ax.plot(d, proxy, color="C1", label="proxy $\\hat r$ (BT fit)")
        ax.fill_between(d, proxy - proxy_se, proxy + proxy_se, color="C1", alpha=0.2, lw=0)
        ax.plot(d, gold, color="C0", label="gold $r^*$")
        ax.fill_between(d, gold - gold_se, gold + gold_se, color="C0", alpha=0.2, lw=0)
        a, b, r2, fitted = fit_gao(method, d, gold)
        ax.plot(d, fitted, color="black", linestyle="--", linewidth=1.1,
                label=f"fit {_FORMS[method]}\na={a:.2f}, b={b:.2f}, $R^2$={r2:.2f}")
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_xlabel(r"$d = \sqrt{\mathrm{KL}(\pi \,\|\, \pi_{\mathrm{ref}})}$ (nats$^{1/2}$)")
        ax.set_title(f"{method}" + (" (exact)" if method == "best-of-N" else
                                    r": $\pi_{\mathrm{ref}} e^{\hat r/\beta}/Z$"))
        ax.legend(loc="upper left", fontsize=7.5)
    axes[0, 0].set_ylabel("reward gain over $\\pi_{\\mathrm{ref}}$")
    fig.suptitle(f"K = {config.n_arms} arms, proxy fitted on n = {config.n_pairs} pairs; "
                 f"mean ± s.e. over {n_seeds} datasets", fontsize=9)
    return fig


def check(table: pd.DataFrame, config: GaoConfig) -> None:
    """The F14 claims, for both Best-of-N and the KL-regularised optimum:

    1. per seed, d is non-decreasing along the sweep and the proxy reward is non-decreasing in d
       (tolerance 1e-9): proxy monotone increasing;
    2. seed-mean gold gain is hump-shaped: its maximum lies strictly inside the d-range (between
       10% and 90% of it), is > 0.3 (reward units, z ~ N(0, 1)), and the gold gain at the largest d
       is at most 70% of the peak (it falls by >= 30% of its rise);
    3. Gao's functional form fits the seed-mean gold gain with R^2 >= ``MIN_R2`` = 0.8.
    """
    for method in METHODS:
        for seed, (d, gold, proxy) in _seed_curves(table, method).items():
            assert np.all(np.diff(d) >= -1e-9), f"{method}: d not monotone along the sweep " \
                                                f"(seed {seed})"
            assert np.all(np.diff(proxy) >= -1e-9), (
                f"{method}: proxy reward decreases along the sweep (seed {seed}), min step "
                f"{np.diff(proxy).min():.3g}")
            assert proxy[-1] > proxy[0] + 1e-6, f"{method}: proxy reward never increases " \
                                                f"(seed {seed})"
        d, gold, _, _, _ = mean_curves(table, method)
        i = int(np.argmax(gold))
        frac = d[i] / d[-1]
        assert 0.1 <= frac <= 0.9, (
            f"{method}: gold peak at d = {d[i]:.3f} is not inside the d-range "
            f"(at {frac:.0%} of d_max = {d[-1]:.3f}); no hump")
        assert gold[i] > 0.3, f"{method}: gold gain peaks at {gold[i]:.3f} <= 0.3 (no rise)"
        assert gold[-1] <= 0.7 * gold[i], (
            f"{method}: gold gain at d_max {gold[-1]:.3f} is not below 70% of the peak "
            f"{gold[i]:.3f} (no over-optimisation)")
        a, b, r2, _ = fit_gao(method, d, gold)
        assert r2 >= MIN_R2, f"{method}: Gao fit {_FORMS[method]} has R^2 = {r2:.3f} < {MIN_R2}"
        assert a > 0 and b > 0, f"{method}: Gao fit coefficients a = {a:.3g}, b = {b:.3g} not " \
                                f"both > 0 (no rise-then-fall)"


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
                 "KL is <= log N - (N-1)/N and saturates at log 1/pi_ref(argmax r_hat)."),
    config=GaoConfig, run=run, plot=plot, check=check, seeds=10))
