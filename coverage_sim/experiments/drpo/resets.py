"""F17 — DR-PO, Chang et al. 2024 (arXiv:2404.08495): dataset resets make policy gradient efficient.

Dataset Reset Policy Optimisation resets some of its rollouts to prefixes ``(x, y_{<h})`` of offline
*preferred* responses (h uniform) besides the usual start state ``x``, so the learner sees states
deep along good responses that its own rollouts from ``x`` would almost never reach
(science.md §10). The start distributions and the paper's reference are in
:mod:`~coverage_sim.experiments.drpo.setting`; the same figure with a tabular autoregressive policy
and gpt-nano over token sequences is :mod:`~coverage_sim.experiments.drpo.transformer`.

Simulator: a token-sequence **combination lock** with vocabulary V and length H; the reward is 1 on
one sequence ``y*`` and 0 elsewhere, so ``J = P(y*) = prod_h pi(y*_h | y*_{<h})``, which starts at
``V^-H`` under the uniform initial policy. The offline preferred response is ``y*`` itself, so the
resets are to its prefixes.

Policy: tabular autoregressive softmax, one softmax per prefix. Because the reward is 0 after any
wrong token (and there is no KL term), the policy-gradient contribution of every off-path prefix is
exactly 0, so only the H softmaxes on the correct-prefix path move; we therefore store one
``(V,)`` logit vector per position ``h`` of the correct prefix (``theta[h]``), which is exactly the
full per-prefix policy restricted to the states that matter (tests/experiments/drpo/test_resets.py
checks this against the full V^H-prefix tree). ``y*_h = h mod V`` (the dynamics are invariant under
relabelling tokens, since the initial policy is uniform).

Exact policy gradient (episodic, undiscounted) from a start distribution ``rho`` over the correct
prefixes ``s_0 = x, s_1 = (x, y*_0), ..., s_{H-1}``::

    dJ/dtheta[k, a] = d(s_k) * prod_{j>k} p_j * p_k * (1[a = y*_k] - pi_k(a)),
    d(s_k) = sum_{h<=k} rho_h prod_{h<=j<k} p_j,   p_j = pi_j(y*_j),

``rho = e_0`` for root-only policy gradient and ``rho_h = 1/H`` (``h = 0..H-1``, the root included)
for dataset resets. Optimiser: plain gradient ascent with a fixed step (vanilla exact PG; Adam's
per-coordinate normalisation would rescale away the ``V^-H`` gradient that *is* the stall in the
exact setting -- with sampled rollouts the stall is that no rollout ever hits ``y*``).

The token-sequence machinery of the core is a later issue; this module is self-contained numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from coverage_sim._validation import check_in_range, check_int, check_positive
from coverage_sim.experiments.drpo.setting import (ARXIV, METHODS, PAPER, RESETS, ROOT,
                                                    start_distribution)
from coverage_sim.experiments.registry import Experiment, register
from coverage_sim.plotting import new_figure
from coverage_sim.train import log_schedule

__all__ = ["EXPERIMENT", "DRPOConfig", "check", "lock_policy_gradient", "plot", "run",
           "train_lock"]

_COLOURS = {ROOT: "C3", RESETS: "C0"}


@dataclass(frozen=True)
class DRPOConfig:
    """Config of F17.

    Attributes:
      vocab: vocabulary size V.
      horizon: sequence length H of the main panels.
      horizons: lengths of the scaling panel (iterations to solve vs H); must include ``horizon``.
      lr: gradient-ascent step size (the same for both methods).
      max_steps: iteration budget (the scaling panel's root-only runs need about ``V^H / H``).
      steps_shown: iterations drawn in the P(y*) panels.
      threshold: "solved" once ``P(y*) >= threshold``.
      record_points: log-spaced record steps.
    """

    vocab: int = 4
    horizon: int = 6
    horizons: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
    lr: float = 1.0
    max_steps: int = 20000
    steps_shown: int = 5000
    threshold: float = 0.5
    record_points: int = 120

    def __post_init__(self):
        check_int(self.vocab, "vocab", minimum=2)
        check_int(self.horizon, "horizon", minimum=1)
        if not self.horizons:
            raise ValueError("horizons must hold at least one length")
        for h in self.horizons:
            check_int(h, "horizons", minimum=1)
        if self.horizon not in self.horizons:
            raise ValueError(f"horizons must include horizon={self.horizon}, got {self.horizons!r}")
        check_positive(self.lr, "lr")
        check_int(self.max_steps, "max_steps", minimum=1)
        check_int(self.steps_shown, "steps_shown", minimum=1)
        if self.steps_shown > self.max_steps:
            raise ValueError(f"steps_shown must be <= max_steps={self.max_steps}, got "
                             f"{self.steps_shown}")
        check_in_range(self.threshold, "threshold", 0.0, 1.0, low_open=True, high_open=True)
        check_int(self.record_points, "record_points", minimum=2)

    @classmethod
    def quick(cls) -> DRPOConfig:
        return cls(horizons=(2, 3, 4, 5, 6), max_steps=3000, steps_shown=3000, record_points=60)


def _softmax(theta: np.ndarray) -> np.ndarray:
    z = theta - theta.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def lock_policy_gradient(theta: np.ndarray, target: np.ndarray, rho: np.ndarray,
                         mask: np.ndarray | None = None):
    """Exact ``J = sum_h rho_h prod_{k>=h} p_k`` and ``dJ/dtheta`` for a batch of locks.

    Args:
      theta: logits ``(B, H, V)`` of the on-path softmaxes.
      target: ``(B, H)`` integer tokens ``y*``.
      rho: ``(B, H)`` start distributions over the correct prefixes.
      mask: ``(B, H)`` bool, True for real positions (a batch may mix lengths: padded positions
        have ``p = 1`` and zero gradient; default all True).

    Returns:
      ``(J (B,), grad (B, H, V), p (B, H))`` with ``p[b, k] = pi_k(y*_k)``.
    """
    B, H, _ = theta.shape
    mask = np.ones((B, H), dtype=bool) if mask is None else mask
    pi = _softmax(theta)
    p = np.take_along_axis(pi, target[..., None], axis=-1)[..., 0]
    p = np.where(mask, p, 1.0)
    # exclusive prefix / suffix products: pre[k] = prod_{j<k} p_j, suf[k] = prod_{j>k} p_j
    ones = np.ones((B, 1))
    pre = np.cumprod(np.concatenate([ones, p[:, :-1]], axis=1), axis=1)
    suf = np.cumprod(np.concatenate([ones, p[:, :0:-1]], axis=1), axis=1)[:, ::-1]
    # d(s_k) = sum_{h<=k} rho_h prod_{h<=j<k} p_j = pre_k * sum_{h<=k} rho_h / pre_h
    # (pre_h >= prod of on-path p >= V^-H at init and the on-path p only grow: no underflow here)
    d = pre * np.cumsum(rho / pre, axis=1)
    J = np.sum(rho * pre[:, -1:] * p[:, -1:] / pre, axis=1)   # prod_{k>=h} p_k = prod_all / pre_h
    c = np.where(mask, d * suf * p, 0.0)
    grad = -c[..., None] * pi
    np.put_along_axis(grad, target[..., None],
                      np.take_along_axis(grad, target[..., None], axis=-1) + c[..., None], axis=-1)
    return J, grad, p


def train_lock(vocab: int, horizons, methods, lr: float, steps: int, record, threshold: float):
    """Gradient ascent on every (method, horizon) lock at once from the uniform policy.

    Returns ``(problems, p_path, per_token, solved_at)``: the list of (method, H); P(y*) from the
    root at each record step ``(R, B)``; on-path token probabilities ``(R, B, Hmax)``; and the
    first iteration with ``P(y*) >= threshold`` (``-1`` if never within ``steps``).
    """
    problems = [(m, h) for m in methods for h in horizons]
    B, Hmax = len(problems), max(horizons)
    theta = np.zeros((B, Hmax, vocab))
    target = np.tile(np.arange(Hmax) % vocab, (B, 1))
    mask = np.zeros((B, Hmax), dtype=bool)
    rho = np.zeros((B, Hmax))
    for b, (m, h) in enumerate(problems):
        mask[b, :h] = True
        rho[b, :h] = start_distribution(m, h)
    record = np.asarray(record)
    p_path = np.empty((record.size, B))
    per_token = np.empty((record.size, B, Hmax))
    solved_at = np.full(B, -1, dtype=np.int64)
    r = 0
    for t in range(steps + 1):
        _, grad, p = lock_policy_gradient(theta, target, rho, mask)
        path = p.prod(axis=1)
        newly = (solved_at < 0) & (path >= threshold)
        solved_at[newly] = t
        while r < record.size and record[r] == t:
            p_path[r], per_token[r] = path, p
            r += 1
        if t < steps:
            theta += lr * grad
    return problems, p_path, per_token, solved_at


def run(config: DRPOConfig, seed: int) -> pd.DataFrame:
    """P(y*), per-token on-path probabilities and iterations-to-solve for both methods (exact)."""
    record = log_schedule(config.max_steps, config.record_points)
    problems, p_path, per_token, solved_at = train_lock(
        config.vocab, config.horizons, METHODS, config.lr, config.max_steps, record,
        config.threshold)
    frames = []
    for b, (method, h) in enumerate(problems):
        frames.append(pd.DataFrame({"method": method, "horizon": h, "position": -1, "seed": seed,
                                    "step": record, "metric": "p_target", "value": p_path[:, b]}))
        if h == config.horizon:
            for k in range(h):
                frames.append(pd.DataFrame({"method": method, "horizon": h, "position": k,
                                            "seed": seed, "step": record, "metric": "p_token",
                                            "value": per_token[:, b, k]}))
        solved = solved_at[b] >= 0
        frames.append(pd.DataFrame({"method": method, "horizon": h, "position": -1, "seed": seed,
                                    "step": [0, 0], "metric": ["steps_to_solve", "solved"],
                                    "value": [float(solved_at[b] if solved else config.max_steps),
                                              float(solved)]}))
    return pd.concat(frames, ignore_index=True)


def _select(table, metric, method, horizon, position=-1) -> pd.Series:
    rows = table[(table["metric"] == metric) & (table["method"] == method)
                 & (table["horizon"] == horizon) & (table["position"] == position)]
    return rows.groupby("step")["value"].mean()


def _solve_times(table, method):
    """Per horizon: (steps_to_solve, solved flag)."""
    steps = table[(table["metric"] == "steps_to_solve") & (table["method"] == method)]
    solved = table[(table["metric"] == "solved") & (table["method"] == method)]
    return (steps.groupby("horizon")["value"].mean(),
            solved.groupby("horizon")["value"].min().astype(bool))


def plot(table: pd.DataFrame, config: DRPOConfig):
    """(a) P(y*) vs iteration; (b) per-token on-path probabilities; (c) iterations to solve vs H."""
    fig, axes = new_figure(ncols=3, width=2.55, height=2.8)
    V, H = config.vocab, config.horizon
    ax = axes[0, 0]
    for method in METHODS:
        c = _select(table, "p_target", method, H)
        c = c[(c.index >= 1) & (c.index <= config.steps_shown)]
        ax.plot(c.index, c.values, color=_COLOURS[method], label=method)
    ax.axhline(float(V) ** -H, color="grey", linestyle=":", linewidth=1.0,
               label=f"$V^{{-H}}$ = {float(V) ** -H:.1e}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(float(V) ** -H / 3, 1.5)
    ax.set_xlabel("iteration (exact PG step)")
    ax.set_ylabel(r"$P(y^*)$ from the root")
    ax.set_title(f"combination lock V = {V}, H = {H}", fontsize=8.5)
    ax.legend(fontsize=6.5, loc="center left", frameon=False)

    ax = axes[0, 1]
    cmap = [f"C{i}" for i in range(10)]
    for k in range(H):
        for method, ls in ((RESETS, "-"), (ROOT, "--")):
            c = _select(table, "p_token", method, H, k)
            c = c[(c.index >= 1) & (c.index <= config.steps_shown)]
            ax.plot(c.index, c.values, color=cmap[k % 10], linestyle=ls, linewidth=1.1,
                    label=f"position {k + 1}" if method == RESETS else None)
    ax.plot([], [], color="black", linestyle="--", label="root only (all positions)")
    ax.set_xscale("log")
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("iteration (exact PG step)")
    ax.set_ylabel(r"$\pi(y^*_h \mid y^*_{<h})$")
    ax.set_title("per-token: resets learn the end first", fontsize=8.5)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(0.0, 0.62), frameon=False)

    ax = axes[0, 2]
    hs = np.array(sorted(config.horizons))
    for method, marker in ((ROOT, "s"), (RESETS, "o")):
        steps, solved = _solve_times(table, method)
        ax.plot(steps.index, steps.values, color=_COLOURS[method], marker=marker, markersize=3.5,
                label=method)
        cens = steps[~solved]
        if len(cens):
            ax.scatter(cens.index, cens.values, marker="^", s=40, facecolors="none",
                       edgecolors=_COLOURS[method], label="not solved within budget")
    ref = float(V) ** hs / hs
    ax.plot(hs, ref / config.lr, color="grey", linestyle=":", linewidth=1.0,
            label=r"$V^H / (H\,\eta)$")
    ax.set_yscale("log")
    ax.set_xlabel("lock length H")
    ax.set_ylabel(f"iterations to $P(y^*) \\geq {config.threshold:g}$")
    ax.set_title(f"scaling with H (V = {V}, η = {config.lr:g})", fontsize=8.5)
    ax.legend(fontsize=6.5, loc="upper left", frameon=False)
    return fig


def check(table: pd.DataFrame, config: DRPOConfig) -> None:
    """The F17 claims:

    1. both methods start at P(y*) = V^-H (uniform policy), exactly (rel. 1e-12);
    2. resets solve the main lock (P(y*) >= threshold) and >= 4x faster than root-only PG;
    3. root-only stalls: when the reset run is solved, root-only P(y*) is still <= 10 V^-H;
    4. scaling: root-only's iterations to solve grow exponentially in H -- every consecutive ratio
       for H >= 4 is >= V/2 and the log-linear slope over H >= 4 is within 30% of log V (counting
       unsolved runs at the budget, which only lowers it) -- while the reset runs' grow
       polynomially: log-log slope in H over H >= 3 is <= 2.5 and all are solved.
    """
    V, H = config.vocab, config.horizon
    for method in METHODS:
        c = _select(table, "p_target", method, H)
        assert abs(c[0] / float(V) ** -H - 1.0) < 1e-12, (
            f"{method}: initial P(y*) = {c[0]:.6g}, expected V^-H = {float(V) ** -H:.6g}")
    steps_root, solved_root = _solve_times(table, ROOT)
    steps_reset, solved_reset = _solve_times(table, RESETS)
    assert solved_reset.all(), (f"resets did not solve horizons "
                                f"{list(solved_reset[~solved_reset].index)}")
    t_reset = steps_reset[H]
    t_root = steps_root[H]
    assert t_root >= 4.0 * t_reset, (
        f"H = {H}: root-only needs {t_root:.0f} iterations vs {t_reset:.0f} with resets "
        f"(< 4x; solved={bool(solved_root[H])})")
    root_curve = _select(table, "p_target", ROOT, H)
    at = root_curve[root_curve.index <= t_reset]
    assert at.iloc[-1] <= 10.0 * float(V) ** -H, (
        f"root-only P(y*) = {at.iloc[-1]:.3g} at iteration {at.index[-1]} (when resets solve "
        f"it) is not stalled near V^-H = {float(V) ** -H:.3g}")
    big = steps_root[steps_root.index >= 4]
    if len(big) >= 2:
        ratios = big.values[1:] / big.values[:-1]
        solved_pairs = solved_root[big.index].values[1:]
        assert np.all(ratios[solved_pairs] >= V / 2.0), (
            f"root-only iterations-to-solve do not grow by >= V/2 per unit H: "
            f"{dict(zip(big.index, big.values))}")
        slope = np.polyfit(big.index.to_numpy(float), np.log(big.values), 1)[0]
        if solved_root[big.index].all():
            assert abs(slope / np.log(V) - 1.0) <= 0.3, (
                f"root-only log(iterations) slope in H {slope:.3f} is not within 30% of log V = "
                f"{np.log(V):.3f}")
    small = steps_reset[steps_reset.index >= 3]
    if len(small) >= 2:
        slope = np.polyfit(np.log(small.index.to_numpy(float)), np.log(small.values), 1)[0]
        assert slope <= 2.5, (f"reset iterations-to-solve grow faster than H^2.5 (log-log "
                              f"slope {slope:.2f}): {small.to_dict()}")


EXPERIMENT = register(Experiment(
    id="drpo-resets", figure="F17",
    title="Dataset resets (DR-PO) solve a combination lock on which root-only policy gradient "
          "stalls",
    paper=PAPER, arxiv=ARXIV,
    claim=("Resetting online rollouts to prefixes of offline preferred responses lets policy "
           "optimisation compete with any policy covered by the data without global coverage: "
           "on a combination lock with reward only on y*, resets make learning fast while policy "
           "gradient from the start state stalls (P(y*) = V^-H initially)."),
    differences=("Exact policy gradient on a tabular autoregressive lock (V = 4, H = 6) instead of "
                 "PPO with a learned reward model and KL penalty on LLMs: the 'offline preferred "
                 "response' is y* itself, rollouts start at y*'s prefixes with h uniform on 0..H-1 "
                 "(h = 0 is the ordinary start, weight 1/H), and plain gradient ascent is used. In "
                 "the exact setting root-only PG is not stuck forever: its gradient is ~V^-H, so "
                 "it plateaus for about V^H/(H eta) iterations (1.1e3 at H = 6, 1.2e4 at H = 8) "
                 "before escaping, while resets learn the last token first and chain backwards in "
                 "a time polynomial in H (~140 and ~240 iterations). With sampled rollouts the "
                 "plateau is worse (no rollout hits y*); with Adam the exact plateau would be "
                 "rescaled away, which is why vanilla PG is the comparison. The state-visitation "
                 "weight d(s_k) of the deep prefixes is the ingredient resets change."),
    config=DRPOConfig, run=run, plot=plot, check=check, seeds=1))
