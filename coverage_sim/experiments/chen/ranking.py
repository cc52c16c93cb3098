"""F12 — Chen et al. 2024 (arXiv:2405.19534): preference learning rarely flips rankings.

Ranking accuracy (their Def. 2.3) is ``R = E_D 1[pi(y_w|x) >= pi(y_l|x)]``, a property of the
*policy* likelihoods. The idealized ranking accuracy of the DPO/RLHF optimum (Corollary 3.3) is
``R* = E_D 1[(pi_ref(y_w)/pi_ref(y_l)) (alpha/(1-alpha))^(1/beta) > 1]`` with ``alpha`` the fraction
of raters preferring ``y_w`` (capped at ``1 - 1e-3``). Theorem 4.1: with
``c = log pi_ref(y_l)/pi_ref(y_w)``, a pair is ranked correctly iff its DPO loss
``-log sigma(beta h)`` is at most ``-log sigma(beta c)`` — a pair the reference ranks wrongly by a
wide margin (large ``c > 0``) only flips once its loss is nearly 0.

Our setting: X prompts with K responses each, a gold reward ``r ~ N(0, s^2)``, a
reference with random log-odds errors ``log pi_ref = a r + sigma xi`` (``xi ~ N(0, 1)``), one
compared pair per prompt rated by M Bradley-Terry raters; ``y_w`` is the majority choice. Exact
population DPO (every rater's vote is a datapoint), tabular softmax, Adam.

Their Section 5 scales the reference log-ratio by gamma,
``L^gamma_DPO = -log sigma(beta (log pi(y_w)/pi(y_l) - gamma log pi_ref(y_w)/pi_ref(y_l)))``, and
finds that ranking accuracy and win rate (against the reference) trend together when the
reference's influence is strong (gamma >= 1.25). Our gamma panel takes each gamma's exact optimum:
in a tabular policy ``L^gamma`` only moves the two logits of each rated pair, in opposite
directions, so its minimiser keeps their sum and sets
``log pi(y_w)/pi(y_l) = -gamma c + logit(alpha_hat)/beta`` (``alpha_hat`` the vote fraction):
:func:`gamma_optimum`. The win rate is ``E_x E_{y ~ pi, y' ~ pi_ref} sigma(r(y) - r(y'))``.

Instances: each run draws ``instances`` problems from its seed (new gold rewards, references and
votes), with rater counts cycling through ``rater_counts``.

Conventions: DPO's ``-log sigma(beta h)`` with
``h = log pi(y_w)/pi_ref(y_w) - log pi(y_l)/pi_ref(y_l)``
(TRL ``sigmoid``); "pair loss" in the table and figure is that single-orientation loss of the
majority pair (Theorem 4.1's quantity), "loss" is the full training loss over all votes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import expit, log_expit

from coverage_sim._validation import check_in_range, check_int, check_positive
from coverage_sim.data import pairs_from_list
from coverage_sim.env import Bandit
from coverage_sim.experiments.common import seed_streams
from coverage_sim.experiments.registry import Experiment, check_tuple, register
from coverage_sim.experiments.verdict import PARTLY, CheckResult, Effect, clause
from coverage_sim.objectives import objective
from coverage_sim.plotting import new_figure
from coverage_sim.train import train_many

__all__ = ["ChenConfig", "check", "gamma_optimum", "ideal_ranking_accuracy", "make_problem",
           "plot", "run", "win_rate"]

#: Chen et al. replace a unanimous rater fraction alpha = 1 by 1 - 1e-3 in Corollary 3.3.
_ALPHA_CAP = 1e-3
#: Chen et al.'s gamma grid (their Section 5) and the gammas where they find ranking accuracy and
#: win rate trending together.
GAMMAS = tuple(float(g) for g in np.arange(0.0, 2.01, 0.25))
STRONG_REFERENCE = 1.25


@dataclass(frozen=True)
class ChenConfig:
    """Config of F12.

    Attributes:
      instances: problems per run (each its own gold reward, reference and votes).
      n_prompts: X prompts (contexts), one rated pair each.
      n_responses: K responses per prompt.
      n_raters: M Bradley-Terry raters per pair in :func:`make_problem` (odd, so the majority is
        defined) when no count is given.
      rater_counts: the instances' rater counts, cycled (odd).
      reward_scale: standard deviation of the gold reward.
      ref_signal: ``a`` in ``log pi_ref = a r + sigma xi``: how much the reference follows the
        reward.
      ref_noise: ``sigma``: the reference's random log-odds errors (nats); sequence-level
        log-probability gaps of LLMs span tens of nats, so the default is wide.
      beta: DPO's beta.
      steps: Adam steps (run to convergence: R reaches R*).
      lr: Adam step size.
      record_points: number of log-spaced record steps.
      budget_fraction: the "practical budget" is the first recorded step at which the training loss
        has made this fraction of its total decrease (loss(0) - loss(final)).
      min_gap: smallest alignment gap ``R* - R`` at the practical budget that :func:`check` accepts
        as "large".
      gammas: the reference scalings of the gamma panel (Chen et al.'s 0, 0.25, ..., 2).
    """

    instances: int = 8
    n_prompts: int = 200
    n_responses: int = 8
    n_raters: int = 5
    rater_counts: tuple[int, ...] = (1, 3, 5, 7)
    reward_scale: float = 1.0
    ref_signal: float = 1.0
    ref_noise: float = 10.0
    beta: float = 0.1
    steps: int = 2000
    lr: float = 0.1
    record_points: int = 40
    budget_fraction: float = 0.5
    min_gap: float = 0.1
    gammas: tuple[float, ...] = GAMMAS

    def __post_init__(self):
        check_int(self.instances, "instances", minimum=1)
        check_int(self.n_prompts, "n_prompts", minimum=10)
        check_int(self.n_responses, "n_responses", minimum=2)
        for name, counts in (("n_raters", (self.n_raters,)), ("rater_counts",
                                                               self.rater_counts)):
            check_tuple(counts, name, lambda v, n: check_int(v, n, minimum=1))
            if any(m % 2 == 0 for m in counts):
                raise ValueError(f"{name} must be odd (a majority winner per pair), got "
                                 f"{counts if name == 'rater_counts' else counts[0]!r}")
        check_positive(self.reward_scale, "reward_scale")
        check_positive(self.ref_signal, "ref_signal", allow_zero=True)
        check_positive(self.ref_noise, "ref_noise", allow_zero=True)
        check_positive(self.beta, "beta")
        check_int(self.steps, "steps", minimum=1)
        check_positive(self.lr, "lr")
        check_int(self.record_points, "record_points", minimum=5)
        check_in_range(self.budget_fraction, "budget_fraction", 0.0, 1.0, low_open=True,
                       high_open=True)
        check_in_range(self.min_gap, "min_gap", 0.0, 1.0)
        check_tuple(self.gammas, "gammas", lambda v, n: check_positive(v, n, allow_zero=True))

    @classmethod
    def quick(cls) -> ChenConfig:
        """The full config: its clauses depend on the problems' size (the alignment gap at the
        budget, the flipped fractions), and it runs in a couple of seconds."""
        return cls()


def make_problem(config: ChenConfig, rng: np.random.Generator, n_raters: int | None = None):
    """A random instance: env, training votes, majority pairs, and per-pair (w, l, alpha, c).

    ``n_raters`` (odd) overrides ``config.n_raters``."""
    X, K = config.n_prompts, config.n_responses
    M = config.n_raters if n_raters is None else check_int(n_raters, "n_raters", minimum=1)
    if M % 2 == 0:
        raise ValueError(f"n_raters must be odd (a majority winner per pair), got {M!r}")
    reward = config.reward_scale * rng.standard_normal((X, K))
    logits = config.ref_signal * reward + config.ref_noise * rng.standard_normal((X, K))
    logits -= logits.max(axis=1, keepdims=True)
    ref = np.exp(logits)
    ref /= ref.sum(axis=1, keepdims=True)
    env = Bandit(reward=reward, ref=ref, name=f"chen-X{X}-K{K}")
    idx = np.arange(X)
    first = rng.integers(K, size=X)
    second = (first + 1 + rng.integers(K - 1, size=X)) % K  # a different response
    votes = rng.binomial(M, expit(reward[idx, first] - reward[idx, second]))
    win_first = 2 * votes > M
    w = np.where(win_first, first, second)
    l = np.where(win_first, second, first)
    alpha = np.maximum(votes, M - votes) / M
    triples, weights = [], []
    for x in range(X):
        for (a, b), n in (((first[x], second[x]), votes[x]), ((second[x], first[x]), M - votes[x])):
            if n > 0:
                triples.append((x, int(a), int(b)))
                weights.append(float(n))
    train_data = pairs_from_list(env, triples, weights, source=f"{M} BT raters per pair")
    majority = pairs_from_list(env, [(x, int(w[x]), int(l[x])) for x in range(X)],
                               source="majority pairs")
    c = np.log(ref[idx, l]) - np.log(ref[idx, w])
    return env, train_data, majority, w, l, alpha, c


def ideal_ranking_accuracy(alpha, c, beta: float) -> float:
    """Chen et al.'s Corollary 3.3 over majority pairs: mean of 1[logit(alpha)/beta > c]."""
    a = np.clip(alpha, 0.0, 1.0 - _ALPHA_CAP)
    return float(np.mean((np.log(a) - np.log1p(-a)) / beta > c))


def gamma_optimum(ref, w, l, alpha, c, beta: float, gamma: float) -> np.ndarray:
    """The tabular policy that minimises ``L^gamma_DPO`` from ``pi_ref``, one rated pair per prompt.

    ``L^gamma`` depends on each prompt's logits only through ``theta_w - theta_l`` and moves them
    in opposite directions, so its minimiser keeps ``theta_w + theta_l`` and the other logits at
    ``log pi_ref`` and sets ``theta_w - theta_l = -gamma c + logit(alpha)/beta`` (alpha capped at
    ``1 - 1e-3``, as in Corollary 3.3). ``gamma = 1`` is DPO's optimum, whose ranking accuracy is
    ``R*``.

    Args:
      ref: ``(X, K)`` reference.
      w, l: ``(X,)`` winner and loser of each prompt's pair.
      alpha: ``(X,)`` fraction of raters preferring ``w``.
      c: ``(X,)`` ``log pi_ref(l)/pi_ref(w)``.
      beta: DPO's beta.
      gamma: the reference scaling.

    Returns:
      ``(X, K)`` policy.

    Examples:
      >>> import numpy as np
      >>> ref = np.array([[0.5, 0.25, 0.25]])
      >>> p = gamma_optimum(ref, np.array([1]), np.array([0]), np.array([0.75]),
      ...                   np.log(np.array([2.0])), beta=1.0, gamma=1.0)
      >>> round(float(np.log(p[0, 1] / p[0, 0])), 6), round(float(np.log(3.0) - np.log(2.0)), 6)
      (0.405465, 0.405465)
    """
    ref = np.asarray(ref, dtype=float)
    idx = np.arange(ref.shape[0])
    a = np.clip(alpha, 0.0, 1.0 - _ALPHA_CAP)
    theta = np.log(ref)
    total = theta[idx, w] + theta[idx, l]
    gap = -gamma * np.asarray(c) + (np.log(a) - np.log1p(-a)) / beta
    theta[idx, w], theta[idx, l] = (total + gap) / 2.0, (total - gap) / 2.0
    theta -= theta.max(axis=1, keepdims=True)
    p = np.exp(theta)
    return p / p.sum(axis=1, keepdims=True)


def win_rate(policy, ref, reward) -> float:
    """``E_x E_{y ~ policy, y' ~ ref} sigma(r(y) - r(y'))`` (prompts weighted equally)."""
    prefs = expit(reward[:, :, None] - reward[:, None, :])
    return float(np.einsum("xi,xj,xij->x", policy, ref, prefs).mean())


def _rater_count(config: ChenConfig, instance: int) -> int:
    return config.rater_counts[instance % len(config.rater_counts)]


def run(config: ChenConfig, seed: int) -> pd.DataFrame:
    """Per instance: R vs step and R*, per-pair (c, alpha, pair loss, correctness) at the budget
    and the end, and R and win rate of each gamma's optimum."""
    problems = [make_problem(config, np.random.default_rng(s), _rater_count(config, b))
                for b, s in enumerate(seed_streams(seed, config.instances))]
    beta = config.beta
    runs = train_many([p[0] for p in problems], objective("sigmoid", beta=beta),
                      [p[1] for p in problems], steps=config.steps, lr=config.lr,
                      optimizer="adam", seed=seed, record=config.record_points, metrics=[])
    frames = []
    for b, ((env, _, _, w, l, alpha, c), r) in enumerate(zip(problems, runs)):
        keys = {"instance": b, "n_raters": _rater_count(config, b)}
        steps = r.history["step"].to_numpy()
        loss = r.history["loss"].to_numpy()
        target = loss[0] - config.budget_fraction * (loss[0] - loss[-1])
        k_budget = int(np.argmax(loss <= target))
        pairs = np.arange(len(w))
        snaps = r.snapshots
        accuracy = (snaps[:, pairs, w] >= snaps[:, pairs, l]).mean(axis=1)
        n = steps.size
        frames += [pd.DataFrame({**keys, "pair": -1, "gamma": 1.0, "seed": seed, "step": steps,
                                 "metric": metric, "value": values}) for metric, values in (
            ("ranking_accuracy", accuracy), ("loss", loss),
            ("ideal_ranking_accuracy", np.full(n, ideal_ranking_accuracy(alpha, c, beta))))]
        frames.append(pd.DataFrame({**keys, "pair": [-1], "gamma": 1.0, "seed": seed,
                                    "step": int(steps[k_budget]), "metric": "budget_step",
                                    "value": float(steps[k_budget])}))
        frames += [pd.DataFrame({**keys, "pair": pairs, "gamma": 1.0, "seed": seed, "step": 0,
                                 "metric": metric, "value": values})
                   for metric, values in (("c", c), ("alpha", alpha))]
        ref_lp = np.log(env.ref2d)
        for k in (k_budget, n - 1):
            lp = np.log(snaps[k])
            h = (lp[pairs, w] - ref_lp[pairs, w]) - (lp[pairs, l] - ref_lp[pairs, l])
            for metric, values in (("pair_loss", -log_expit(beta * h)),
                                   ("correct", (lp[pairs, w] >= lp[pairs, l]).astype(float))):
                frames.append(pd.DataFrame({**keys, "pair": pairs, "gamma": 1.0, "seed": seed,
                                            "step": int(steps[k]), "metric": metric,
                                            "value": values}))
        reward = env.reward2d
        for gamma in config.gammas:
            pi = gamma_optimum(env.ref2d, w, l, alpha, c, beta, gamma)
            frames.append(pd.DataFrame({**keys, "pair": -1, "gamma": gamma, "seed": seed,
                                        "step": 0, "metric": ["gamma_ranking_accuracy",
                                                              "gamma_win_rate"],
                                        "value": [float(np.mean(pi[pairs, w] >= pi[pairs, l])),
                                                  win_rate(pi, env.ref2d, reward)]}))
    return pd.concat(frames, ignore_index=True)


def _pairs_at(table: pd.DataFrame, which: str) -> pd.DataFrame:
    """Per-pair frame (instance, seed, pair, c, alpha, pair_loss, correct) at the budget or the
    final step."""
    pairs = table[table["pair"] >= 0]
    index = ["instance", "seed", "pair"]
    static = pairs[pairs["metric"].isin(["c", "alpha"])].pivot_table(
        index=index, columns="metric", values="value")
    dyn = pairs[pairs["metric"].isin(["pair_loss", "correct"])]
    picked = []
    for _, rows in dyn.groupby(["instance", "seed"]):
        step = rows["step"].max() if which == "final" else rows["step"].min()
        picked.append(rows[rows["step"] == step])
    dyn = pd.concat(picked).pivot_table(index=index, columns="metric", values="value")
    return static.join(dyn).reset_index()


def _aggregate(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = table[(table["pair"] == -1) & (table["metric"] == metric)]
    return rows.rename(columns={"value": metric}).drop(columns="metric")


def _gamma_curves(table: pd.DataFrame) -> dict:
    """Per (instance, seed): (gammas, R, win rate) of the gamma optima, sorted by gamma."""
    rows = table[table["metric"].isin(["gamma_ranking_accuracy", "gamma_win_rate"])]
    wide = rows.pivot_table(index=["instance", "seed", "gamma"], columns="metric",
                            values="value")
    out = {}
    for key, w in wide.groupby(level=["instance", "seed"]):
        w = w.sort_index()
        out[key] = (w.index.get_level_values("gamma").to_numpy(),
                    w["gamma_ranking_accuracy"].to_numpy(), w["gamma_win_rate"].to_numpy())
    return out


def plot(table: pd.DataFrame, config: ChenConfig):
    """(a) R vs step with R* and the budget, every instance; (b, c) pair loss vs c at the budget
    and at the end (the first instance with ``config.n_raters`` raters); (d) R vs win rate of the
    gamma-scaled optima."""
    fig, axes = new_figure(ncols=2, nrows=2, width=3.5, height=2.6)
    first = table["instance"].min()
    raters = table.drop_duplicates("instance").set_index("instance")["n_raters"]
    shown = raters[raters == config.n_raters].index.min()
    shown = first if pd.isna(shown) else shown
    ax = axes[0, 0]
    acc = _aggregate(table, "ranking_accuracy")
    stars = _aggregate(table, "ideal_ranking_accuracy").groupby("instance")[
        "ideal_ranking_accuracy"].first()
    budgets = _aggregate(table, "budget_step").groupby("instance")["budget_step"].first()
    for instance, rows in acc.groupby("instance"):
        curve = rows.groupby("step")["ranking_accuracy"].mean()
        bold = instance == first
        line, = ax.plot(curve.index, curve.values, linewidth=1.5 if bold else 0.7,
                        alpha=1.0 if bold else 0.5, color="C0",
                        label=r"R of $\pi_t$ (each instance)" if bold else None)
        ax.plot([curve.index.max() * 1.15], [stars[instance]], marker="<", color="k",
                markersize=4, linestyle="none",
                label="idealized R* (Cor. 3.3)" if bold else None)
        at = curve[curve.index <= budgets[instance]].iloc[-1]
        ax.plot([budgets[instance]], [at], marker="o", color="C3", markersize=3.5,
                linestyle="none", label="at the practical budget" if bold else None)
    ax.axhline(stars[first], color="k", linestyle="--", linewidth=0.9)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(0, acc["step"].max() * 1.3)
    ax.set_xlabel("Adam step (symlog)")
    ax.set_ylabel("ranking accuracy")
    ax.set_title(f"(a) R vs step, {acc['instance'].nunique()} instances", fontsize=9)
    # upper left, under R*'s dashed line: every instance is still near R(pi_ref) there (lower
    # right hid their curves)
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, 0.94), fontsize=6.5, frameon=False)
    for axis, which, title in ((axes[0, 1], "budget", "(b) at the budget"),
                               (axes[1, 0], "final", "(c) converged")):
        frame = _pairs_at(table, which)
        frame = frame[frame["instance"] == shown]
        good = frame["correct"] > 0.5
        for mask, colour, label in ((good, "C2", "ranked correctly"),
                                    (~good, "C3", "ranked incorrectly")):
            axis.scatter(frame.loc[mask, "c"], frame.loc[mask, "pair_loss"], s=6, alpha=0.5,
                         color=colour, label=label, linewidths=0)
        grid = np.linspace(frame["c"].min(), frame["c"].max(), 400)
        axis.plot(grid, -log_expit(config.beta * grid), color="k", linewidth=1.2,
                  label="−log σ(βc) (Thm 4.1)")
        axis.axvline(0.0, color="0.6", linewidth=0.8)
        axis.set_yscale("log")
        axis.set_xlabel(r"$c = \log \pi_{\rm ref}(y_l) / \pi_{\rm ref}(y_w)$  [nats]")
        axis.set_ylabel(r"pair loss $-\log\sigma(\beta h)$")
        axis.set_title(f"{title}, {raters[shown]} raters: {np.mean(good):.0%} correct",
                       fontsize=9)
    axes[0, 1].legend(loc="lower left", markerscale=2.5, fontsize=6.5)
    ax = axes[1, 1]
    curves = _gamma_curves(table)
    gammas = next(iter(curves.values()))[0]
    mean_r = np.mean([v[1] for v in curves.values()], axis=0)
    # win rates relative to gamma = 1's (DPO's optimum), in thousandths
    mean_w = 1e3 * np.mean([v[2] - v[2][gammas == 1.0] for v in curves.values()], axis=0)
    for key, (_, r, wr) in curves.items():
        ax.plot(1e3 * (wr - wr[gammas == 1.0]), r, color="0.6", linewidth=0.6, alpha=0.6)
    points = ax.scatter(mean_w, mean_r, c=gammas, cmap="viridis", s=22, zorder=3)
    ax.plot(mean_w, mean_r, color="k", linewidth=1.0, zorder=2)
    for g, x, y in zip(gammas, mean_w, mean_r):
        if g in (0.0, 1.0, 2.0):
            # gamma = 2 ends the curve on the left: its label goes above-left, off the mean line
            # (and above the per-instance curves, which run below it)
            left = g == 2.0
            ax.annotate(f"γ = {g:g}", (x, y), xytext=(-5, 4) if left else (4, 2),
                        textcoords="offset points", fontsize=7, ha="right" if left else "left")
    fig.colorbar(points, ax=ax, label="γ")
    ax.set_xlabel(r"win rate vs $\pi_{\rm ref}$ − γ = 1's  ($\times 10^{-3}$)")
    ax.set_ylabel("ranking accuracy")
    ax.set_title("(d) γ-scaled reference: optima (black: mean)", fontsize=9)
    return fig


def check(table: pd.DataFrame, config: ChenConfig) -> CheckResult:
    """Chen et al.'s claims on every instance.

    Paper's clauses:

    - ``theorem-4-1``: on every pair, at the budget and at the end, R = 1 iff the pair's DPO loss
      is at most ``-log sigma(beta c)`` (their Theorem 4.1);
    - ``alignment-gap``: at the practical budget ``R* - R >= min_gap`` (a large alignment gap);
    - ``flips-rare``: fewer than half of the pairs the reference ranks wrongly (c > 0) are flipped
      by the budget;
    - ``hard-flip-last``: the pairs flipped by the budget have a smaller median c than those not
      flipped (Theorem 4.1's difficulty);
    - ``gamma-trend-together``: over the gamma-scaled optima with gamma >= 1.25, ranking accuracy
      and win rate have a positive correlation (their Section 5, Fig. 10).

    Our derived clause (claim C10, not the paper's): ``converges-to-r-star``: trained to
    convergence, R is monotone in the step, equals R* within one pair and no longer changes over
    the second half; pairs the reference ranks correctly (c <= 0) stay correct.

    Effect: the alignment gap ``R* - R`` at the practical budget, per instance.
    """
    theorem, correct_kept = {}, {}
    for which in ("budget", "final"):
        frame = _pairs_at(table, which)
        predicted = frame["pair_loss"] <= -log_expit(config.beta * frame["c"]) + 1e-12
        frame = frame.assign(ok=predicted == (frame["correct"] > 0.5),
                             kept=(frame["c"] > 0) | (frame["correct"] > 0.5))
        for key, rows in frame.groupby(["instance", "seed"]):
            theorem[key] = theorem.get(key, True) and bool(rows["ok"].all())
            correct_kept[key] = correct_kept.get(key, True) and bool(rows["kept"].all())
    acc = _aggregate(table, "ranking_accuracy")
    stars = _aggregate(table, "ideal_ranking_accuracy").groupby(["instance", "seed"])[
        "ideal_ranking_accuracy"].first()
    budgets = _aggregate(table, "budget_step").groupby(["instance", "seed"])["budget_step"].first()
    budget_pairs = _pairs_at(table, "budget").groupby(["instance", "seed"])
    keys = sorted(theorem)
    gaps, gap_ok, rare, hard, converged, flips = [], [], [], [], [], []
    for key in keys:
        rows = acc[(acc["instance"] == key[0]) & (acc["seed"] == key[1])].sort_values("step")
        values = rows["ranking_accuracy"].to_numpy()
        n_pairs = len(budget_pairs.get_group(key))
        late = rows["step"].to_numpy() >= rows["step"].max() / 2
        converged.append(bool(np.all(np.diff(values) >= -1e-12)
                              and abs(values[-1] - stars[key]) <= 1.0 / n_pairs + 1e-12
                              and np.ptp(values[late]) == 0 and correct_kept[key]))
        at_budget = rows.loc[rows["step"] == budgets[key], "ranking_accuracy"].iloc[0]
        gaps.append(float(stars[key] - at_budget))
        gap_ok.append(gaps[-1] >= config.min_gap)
        pairs = budget_pairs.get_group(key)
        pos = pairs[pairs["c"] > 0]
        flipped = pos["correct"] > 0.5
        flips.append(float(flipped.mean()) if len(pos) else 0.0)
        rare.append(bool(len(pos) and flipped.mean() < 0.5))
        hard.append(bool(flipped.any() and (~flipped).any()
                         and pos.loc[flipped, "c"].median() < pos.loc[~flipped, "c"].median()))
    together, correlations = [], []
    for key, (gammas, r, wr) in sorted(_gamma_curves(table).items()):
        strong = gammas >= STRONG_REFERENCE
        if strong.sum() < 3 or np.ptp(r[strong]) == 0 or np.ptp(wr[strong]) == 0:
            correlations.append(float("nan"))
            together.append(False)
            continue
        rho = float(np.corrcoef(r[strong], wr[strong])[0, 1])
        correlations.append(rho)
        together.append(rho > 0)
    clauses = (
        clause("theorem-4-1", "on every pair, at the budget and at the end, π ranks the pair "
               "correctly iff its DPO loss ≤ −log σ(βc) (Theorem 4.1)",
               [theorem[k] for k in keys]),
        clause("alignment-gap", f"at the practical budget (loss {config.budget_fraction:.0%} of "
               f"the way down) the alignment gap R* − R is at least {config.min_gap:g}", gap_ok,
               "gaps " + ", ".join(f"{g:.2f}" for g in gaps)),
        clause("flips-rare", "fewer than half of the pairs the reference ranks wrongly (c > 0) are "
               "flipped by the budget", rare,
               "flipped fractions " + ", ".join(f"{f:.2f}" for f in flips)),
        clause("hard-flip-last", "pairs flipped by the budget have a smaller median c than those "
               "not flipped", hard),
        clause("gamma-trend-together", f"over the γ-scaled optima with γ ≥ {STRONG_REFERENCE:g}, "
               "ranking accuracy and win rate vs π_ref are positively correlated (Fig. 10)",
               together if together else [False],
               "correlations " + ", ".join(f"{v:.2f}" for v in correlations)),
        clause("converges-to-r-star", "derived (C10): trained to convergence, R rises "
               "monotonically to R* (within one pair) and stays there, and pairs the reference "
               "ranks correctly stay correct", converged, paper=False),
    )
    return CheckResult(clauses=clauses,
                       effect=Effect("alignment gap R* − R at the practical budget", gaps),
                       mode="exact")


EXPERIMENT = register(Experiment(
    id="chen-ranking", figure="F12",
    title="Preference learning rarely flips rankings: ranking accuracy vs the idealized R*",
    paper="Chen et al. 2024, Preference Learning Algorithms Do Not Learn Preference Rankings",
    arxiv="2405.19534",
    claim=("Ranking accuracy of DPO-trained models stays far below the idealized ranking accuracy "
           "R* of the DPO/RLHF optimum (a large alignment gap): a pair the reference ranks wrongly "
           "flips only when its DPO loss drops below -log sigma(beta c) (Theorem 4.1), which is "
           "tiny for large c, so flips are rare. With the reference's log-ratio scaled by "
           "gamma, ranking accuracy and win rate trend together when the reference's influence "
           "is strong (gamma >= 1.25)."),
    differences=("The paper measures trained LLMs; we use a tabular contextual bandit with one "
                 "rated pair per prompt, a reference with wide random log-odds errors (sigma = 10 "
                 "nats, like sequence log-probabilities) and exact population DPO. Instances: 8 "
                 "random problems per run (rewards, references, votes), with 1, 3, 5 or 7 raters "
                 "per pair. Trained to "
                 "convergence, our R equals R* exactly (claim C10) — the gap is an "
                 "optimisation effect, so we report it at a 'practical budget', the step at which "
                 "the training loss has made half of its total decrease (an illustrative stand-in "
                 "for a few epochs of LLM training). The mechanism is Theorem 4.1: flipping needs "
                 "a "
                 "margin h >= c, so pairs with large c flip last. The gamma panel uses each "
                 "gamma's exact optimum (Chen et al. take each gamma's best checkpoint of an LLM), "
                 "and the win rate of a tabular policy against pi_ref under the gold "
                 "Bradley-Terry reward: our bandit has no generative degradation away from the "
                 "reference."),
    config=ChenConfig, run=run, plot=plot, check=check, seeds=1,
    # with 5 or 7 raters the vote fractions are mild, R* is low and the gap at the budget small;
    # the win rate of a tabular optimum moves by thousandths, and its trend with ranking accuracy
    # over gamma >= 1.25 is not consistent (see the clauses' details)
    expected_verdict=PARTLY, expected_failing=("alignment-gap", "gamma-trend-together")))
