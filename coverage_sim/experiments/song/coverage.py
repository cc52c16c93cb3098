"""F10 ``song-coverage`` — Song et al. 2024 (arXiv:2406.01462), "The Importance of Online Data:
Understanding Preference Fine-tuning via Coverage": DPO's KL grows like log(1/eps) when the data
miss a response; RLHF with a bounded reward and HyPO stay bounded.

F10 (``song-coverage``, science.md §2, claims C3-C5): reverse KL and suboptimality against the
coverage knob ``eps = pi_ref(y3)``. DPO's implicit reward on the unseen ``y3`` is unconstrained, so
its iterate goes to ``delta_{y3}``: ``KL = log(1/eps)`` and the reward collapses to ``r*(y3)``.
RLHF with a reward model clipped to ``|r_hat| <= R`` keeps ``pi/pi_ref <= e^{2R/beta}`` (C4), and
HyPO (DPO + ``lam`` KL on the policy's own samples) keeps ``KL <= log(2)/lam`` (C5).

The paper's evidence is theory plus LLM tasks; ours is the 3-arm construction of
:mod:`coverage_sim.experiments.xu.setting` (the bandit, the clipped reward model and the loss
conventions, shared with F11): ``EXPERIMENT.differences``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from coverage_sim._validation import check_in_range, check_int, check_positive
from coverage_sim.experiments.registry import Experiment, register
from coverage_sim.experiments.xu.setting import check_reward, clipped_reward_model, tidy_runs
from coverage_sim.instances import xu_bandit, xu_features, xu_pairs
from coverage_sim.objectives import objective
from coverage_sim.plotting import metric_frame, new_figure
from coverage_sim.policies import LogLinear
from coverage_sim.train import train_many

__all__ = ["EXPERIMENT", "SongConfig", "check", "plot", "run"]

_LOG2 = float(np.log(2.0))


@dataclass(frozen=True)
class SongConfig:
    """Config of F10.

    Attributes:
      eps_values: coverage knob ``pi_ref(y3)`` values (log-spaced).
      beta: KL strength of DPO, RLHF and HyPO (DPO's beta inside the sigmoid).
      reward: gold reward of ``(y1, y2, y3)``; must have ``r1 > r2 > r3``.
      reward_bound: ``R``: the RLHF reward model is clipped to ``[-R, R]`` (C4: ``KL <= 2R/beta``).
      lams: HyPO KL weights ``lam`` (C5: ``KL <= log(2)/lam``).
      steps: optimiser steps for every run.
      lr: Adam step size for DPO and HyPO.
      rlhf_lr: natural-policy-gradient step size for RLHF (converges to machine precision).
      record_points: number of log-spaced record steps.
      slope_tol: allowed ``|slope - 1|`` of DPO's KL against ``log(1/eps)`` in :func:`check`.
    """

    eps_values: tuple[float, ...] = tuple(float(10.0 ** -k) for k in np.arange(1.0, 8.01, 0.5))
    beta: float = 0.1
    reward: tuple[float, ...] = (1.0, 0.0, -3.0)
    reward_bound: float = 0.25
    lams: tuple[float, ...] = (0.01, 0.1, 1.0)
    steps: int = 10000
    lr: float = 0.05
    rlhf_lr: float = 0.5
    record_points: int = 30
    slope_tol: float = 0.05

    def __post_init__(self):
        if len(self.eps_values) < 3:
            raise ValueError("eps_values must hold at least 3 values (a slope is fitted)")
        for eps in self.eps_values:
            check_in_range(eps, "eps_values", 0.0, 1.0, low_open=True, high_open=True)
        check_positive(self.beta, "beta")
        check_reward(self.reward)
        check_positive(self.reward_bound, "reward_bound")
        if not self.lams:
            raise ValueError("lams must hold at least one value")
        for lam in self.lams:
            check_positive(lam, "lams")
        check_int(self.steps, "steps", minimum=1)
        check_positive(self.lr, "lr")
        check_positive(self.rlhf_lr, "rlhf_lr")
        check_int(self.record_points, "record_points", minimum=2)
        check_in_range(self.slope_tol, "slope_tol", 0.0, 1.0, low_open=True)

    @classmethod
    def quick(cls) -> SongConfig:
        return cls(eps_values=tuple(float(10.0 ** -k) for k in range(1, 9)), steps=3000,
                   record_points=15)


def run(config: SongConfig, seed: int) -> pd.DataFrame:
    """KL, reward and suboptimality of DPO, RLHF (clipped r_hat) and HyPO for every eps (exact)."""
    eps_values = list(config.eps_values)
    envs = [xu_bandit(eps, reward=config.reward) for eps in eps_values]
    datas = [xu_pairs(env) for env in envs]
    phi = xu_features()
    policy = LogLinear(phi)
    r_hat = clipped_reward_model(phi, [(0, 1)], config.reward_bound)
    beta = config.beta
    common = {"steps": config.steps, "seed": seed, "policy": policy, "record": config.record_points}
    env_of = {eps: env for eps, env in zip(eps_values, envs)}
    frames = []

    def env_beta(key):
        return env_of[key["eps"]], beta

    dpo = train_many(envs, objective("sigmoid", beta=beta), datas, lr=config.lr,
                     optimizer="adam", **common)
    frames += tidy_runs(dpo, [{"method": "DPO", "lam": 0.0, "eps": e} for e in eps_values],
                        env_beta, seed)
    rlhf = train_many(envs, objective("rlhf", beta=beta, reward=r_hat), lr=config.rlhf_lr,
                      optimizer="npg", **common)
    frames += tidy_runs(rlhf, [{"method": "RLHF", "lam": 0.0, "eps": e} for e in eps_values],
                        env_beta, seed)
    lams = list(config.lams)
    hypo = train_many([e for _ in lams for e in envs],
                      [objective("hypo", beta=beta, lam=lam) for lam in lams for _ in envs],
                      [d for _ in lams for d in datas], lr=config.lr, optimizer="adam", **common)
    frames += tidy_runs(hypo,
                        [{"method": "HyPO", "lam": lam, "eps": e} for lam in lams
                         for e in eps_values],
                        env_beta, seed)
    return pd.concat(frames, ignore_index=True)


def _final(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Final-step value of ``metric`` per (method, lam, eps), averaged over seeds."""
    rows = metric_frame(table, metric)
    last = rows[rows["step"] == rows["step"].max()]
    return last.groupby(["method", "lam", "eps"], as_index=False)[metric].mean()


def _song_series(config: SongConfig):
    """(method, lam, label, colour, linestyle, marker) of every curve."""
    greens = ("#74c476", "#238b45", "#00441b", "#002a10")
    out = [("DPO", 0.0, "DPO (log-linear)", "C3", "-", "o"),
           ("RLHF", 0.0, f"RLHF, |r̂| ≤ R = {config.reward_bound:g}", "C0", "-", "s")]
    for i, lam in enumerate(sorted(config.lams)):
        out.append(("HyPO", lam, f"HyPO λ = {lam:g}", greens[i % len(greens)], "-", "^"))
    return out


def plot(table: pd.DataFrame, config: SongConfig):
    """(a) reverse KL and (b) suboptimality against eps = pi_ref(y3), with the C4/C5 bounds."""
    fig, axes = new_figure(ncols=2, width=3.6, height=3.1)
    ax_kl, ax_sub = axes[0]
    kl = _final(table, "kl")
    sub = _final(table, "subopt")
    eps = np.array(sorted(kl["eps"].unique()))
    ax_kl.plot(eps, np.log(1.0 / eps), color="0.55", linestyle=":", linewidth=2.5,
               label="log(1/ε)", zorder=1)
    for method, lam, label, colour, ls, marker in _song_series(config):
        for frame, ax in ((kl, ax_kl), (sub, ax_sub)):
            rows = frame[(frame["method"] == method) & (frame["lam"] == lam)].sort_values("eps")
            metric = "kl" if frame is kl else "subopt"
            ax.plot(rows["eps"], rows[metric], color=colour, linestyle=ls, marker=marker,
                    markersize=3.5, label=label)
    beta = config.beta
    bound = 2 * config.reward_bound / beta
    top = max(np.log(1.0 / eps.min()) * 1.1, bound * 1.15)
    marks = [(bound, "C0", f"RLHF bound 2R/β = {bound:.3g}")]
    for method, lam, label, colour, ls, marker in _song_series(config):
        if method == "HyPO":
            marks.append((_LOG2 / lam, colour,
                          f"HyPO bound log2/λ = {_LOG2 / lam:.3g} (λ={lam:g})"))
    for value, colour, text in marks:
        if value < top:
            ax_kl.axhline(value, color=colour, linestyle="--", linewidth=1)
            ax_kl.annotate(text, (0.98, value), xycoords=ax_kl.get_yaxis_transform(),
                           xytext=(0, 1.5), textcoords="offset points", ha="right", va="bottom",
                           fontsize=7, color=colour)
        else:
            ax_kl.annotate(f"{text}: off scale", (0.02, 0.97), xycoords="axes fraction",
                           ha="left", va="top", fontsize=7, color=colour)
    ax_kl.set_ylim(-0.3, top)
    for ax in (ax_kl, ax_sub):
        ax.set_xscale("log")
        ax.set_xlabel("coverage ε = π_ref(y3)  (log scale)")
        ax.invert_xaxis()
    ax_kl.set_ylabel("reverse KL(π ‖ π_ref)  [nats]")
    ax_kl.set_title("(a) reverse KL vs coverage")
    ax_sub.set_yscale("log")
    ax_sub.set_ylabel("suboptimality J(π*_β) − J(π)")
    ax_sub.set_title("(b) suboptimality vs coverage")
    handles, labels = ax_kl.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3)
    return fig


def check(table: pd.DataFrame, config: SongConfig) -> None:
    """DPO: KL ~ log(1/eps) (slope within slope_tol of 1), reward -> r*(y3); RLHF, HyPO bounded."""
    beta, r3 = config.beta, config.reward[2]
    kl = _final(table, "kl")
    reward = _final(table, "reward")
    sub = _final(table, "subopt")
    dpo = kl[kl["method"] == "DPO"].sort_values("eps")
    x = np.log(1.0 / dpo["eps"].to_numpy())
    slope, intercept = np.polyfit(x, dpo["kl"].to_numpy(), 1)
    assert abs(slope - 1.0) <= config.slope_tol, (
        f"DPO's KL vs log(1/eps) has slope {slope:.3f}, not within {config.slope_tol} of 1")
    assert abs(intercept) <= 0.5, f"DPO's KL vs log(1/eps) has intercept {intercept:.3f}, not ~0"
    dpo_r = reward[reward["method"] == "DPO"]["reward"].to_numpy()
    assert np.all(dpo_r <= r3 + 0.05 * (config.reward[0] - r3)), (
        f"DPO's reward {dpo_r.max():.3f} did not collapse to r*(y3) = {r3}")
    # RLHF with |r_hat| <= R (C4): pi/pi_ref <= e^{2R/beta} and KL <= 2R/beta at every step and eps
    ratio_bound = 2 * config.reward_bound / beta
    rl = table[table["method"] == "RLHF"]
    rl_kl = rl[rl["metric"] == "kl"]["value"].to_numpy()
    rl_ratio = rl[rl["metric"] == "max_ratio"]["value"].to_numpy()
    assert np.all(np.log(rl_ratio) <= ratio_bound + 1e-9), (
        f"RLHF log max pi/pi_ref = {np.log(rl_ratio).max():.3f} > 2R/beta = {ratio_bound:.3f}")
    assert np.all(rl_kl <= ratio_bound + 1e-9), (
        f"RLHF KL {rl_kl.max():.3f} exceeds 2R/beta = {ratio_bound:.3f}")
    # HyPO (C5): KL <= log(2)/lam along the whole descent, at every eps
    for lam in config.lams:
        rows = table[(table["method"] == "HyPO") & (table["lam"] == lam)
                     & (table["metric"] == "kl")]["value"].to_numpy()
        assert rows.size, f"no HyPO rows for lam={lam}"
        assert np.all(rows <= _LOG2 / lam + 1e-9), (
            f"HyPO KL {rows.max():.3f} exceeds log(2)/lam = {_LOG2 / lam:.3f} at lam={lam}")
    # bounded vs unbounded: at the smallest eps DPO's KL exceeds every bounded method's
    eps_min = kl["eps"].min()
    at_min = kl[kl["eps"] == eps_min].set_index(["method", "lam"])["kl"]
    others = at_min.drop(index="DPO", level="method")
    assert at_min.loc[("DPO", 0.0)] > 2 * others.max(), (
        f"at eps={eps_min:g} DPO's KL {at_min.loc[('DPO', 0.0)]:.3f} is not far above the "
        f"bounded methods' (max {others.max():.3f})")
    rl_fin = kl[kl["method"] == "RLHF"].sort_values("eps")
    rl_slope = np.polyfit(np.log(1.0 / rl_fin["eps"].to_numpy()), rl_fin["kl"].to_numpy(), 1)[0]
    assert rl_slope < 0.1, f"RLHF's KL grows with log(1/eps) (slope {rl_slope:.3f})"
    # suboptimality: DPO's grows with log(1/eps) and dominates RLHF's everywhere
    d_sub = sub[sub["method"] == "DPO"].sort_values("eps")["subopt"].to_numpy()
    r_sub = sub[sub["method"] == "RLHF"].sort_values("eps")["subopt"].to_numpy()
    assert np.all(np.diff(d_sub) < 0), "DPO's suboptimality is not increasing as eps shrinks"
    assert np.all(d_sub > 3 * r_sub), "DPO's suboptimality is not well above RLHF's at every eps"
    assert d_sub[0] > 100 * r_sub[0], (
        f"at eps={eps_min:g} DPO's suboptimality {d_sub[0]:.3g} is not >> RLHF's {r_sub[0]:.3g}")


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
                 "Ours is the 3-arm construction of science.md §2: one deterministic comparison "
                 "y1 > y2, unseen y3 with pi_ref(y3) = eps, log-linear policy with "
                 "phi(y3) = phi(y1) - phi(y2). The feature correlation is the ingredient: DPO's "
                 "gradient raises w . (phi(y1) - phi(y2)), which is y3's logit, and nothing in the "
                 "loss holds y3 back, so DPO -> delta_{y3} (no finite minimiser). The RLHF reward "
                 "model is the clipped linear BT fit, which rates y3 at the top (R) — the worst "
                 "case — and RLHF is run to its optimum by natural policy gradient; DPO and HyPO "
                 "use Adam. HyPO's KL uses the exact gradient instead of REINFORCE samples. With "
                 "lam = 0.01 and eps >= 1e-2, HyPO's descent is captured by the y3 plateau (KL = "
                 "log(1/eps), still far below log(2)/lam) — the bound holds along the descent, not "
                 "only at the minimiser."),
    config=SongConfig, run=run, plot=plot, check=check, seeds=1))
