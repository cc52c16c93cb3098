"""F10 — Song et al. 2024 (arXiv:2406.01462) and F11 — Xu et al. 2024 (arXiv:2404.10719).

Both figures use the 3-arm out-of-distribution bandit of :func:`coverage_sim.xu_bandit`: arms
``y1, y2, y3`` with ``pi_ref = [(1-eps)/2, (1-eps)/2, eps]``, gold reward ``(1, 0, -3)``, and one
observed comparison ``y1 > y2`` (:func:`coverage_sim.xu_pairs`; its empirical label is
deterministic). ``y3`` is never in the data. The policy is log-linear,
``pi(y) ∝ pi_ref(y) exp(w . phi(y))`` with :func:`coverage_sim.xu_features`, whose
``phi(y3) = phi(y1) - phi(y2)`` is correlated with the direction DPO pushes ``w`` in.

F10 (``song-coverage``, science.md §2, claims C3-C5): reverse KL and suboptimality against the
coverage knob ``eps = pi_ref(y3)``. DPO's implicit reward on the unseen ``y3`` is unconstrained, so
its iterate goes to ``delta_{y3}``: ``KL = log(1/eps)`` and the reward collapses to ``r*(y3)``.
RLHF with a reward model clipped to ``|r_hat| <= R`` keeps ``pi/pi_ref <= e^{2R/beta}`` (C4), and
HyPO (DPO + ``lam`` KL on the policy's own samples) keeps ``KL <= log(2)/lam`` (C5).

F11 (``xu-ood``, science.md §6): the final ``pi_ref``, ``pi_DPO`` and ``pi_RLHF`` on
``{y1, y2, y3}``:
log-linear DPO moves the mass to the out-of-distribution ``y3``; RLHF (whose reward model even
extrapolates ``y3`` to the top of its range) and tabular DPO cannot.

Conventions: DPO is ``-log sigma(beta h)`` (TRL ``sigmoid``); RLHF maximises
``E_pi r_hat - beta KL(pi || pi_ref)``; HyPO is ``L_DPO + lam KL(pi || pi_ref)`` with the exact KL
gradient (the paper uses a REINFORCE estimate on online samples). Suboptimality is measured on the
gold KL-regularised objective ``J(pi) = E_pi r* - beta KL(pi || pi_ref)``:
``J(pi*_beta) - J(pi) = beta KL(pi || pi*_beta) >= 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from coverage_sim import metrics
from coverage_sim._validation import (
    as_float_array,
    check_finite,
    check_in_range,
    check_int,
    check_positive,
)
from coverage_sim.env import optimal_policy
from coverage_sim.experiments.registry import Experiment, register
from coverage_sim.instances import XU_ARMS, xu_bandit, xu_features, xu_pairs
from coverage_sim.objectives import objective
from coverage_sim.plotting import metric_frame, new_figure
from coverage_sim.policies import LogLinear, TabularSoftmax
from coverage_sim.train import train_many

__all__ = [
    "SongConfig",
    "XuConfig",
    "check_song",
    "check_xu",
    "clipped_reward_model",
    "plot_song",
    "plot_xu",
    "run_song",
    "run_xu",
]

_LOG2 = float(np.log(2.0))


def clipped_reward_model(features, pairs, bound: float, scale: float = 1e3) -> np.ndarray:
    """Linear Bradley-Terry reward model on ``features``, clipped to ``[-bound, bound]``.

    On deterministic comparisons the linear BT maximum likelihood diverges along
    ``sum_pairs (phi(y_w) - phi(y_l))``; ``r_hat = clip(phi . theta, -R, R)`` with ``theta`` that
    direction times a large ``scale`` is the limit of the clipped MLE. With
    :func:`~coverage_sim.xu_features` and the pair ``y1 > y2`` it is ``(R, -R, R)``: the model
    extrapolates the unseen ``y3`` to the top of its range (the worst case for RLHF).
    """
    phi = check_finite(as_float_array(features, "features", ndim=2), "features")
    direction = sum(phi[w] - phi[l] for w, l in pairs)
    return np.clip(scale * phi @ direction, -bound, bound)


def _check_reward(reward, name="reward") -> tuple:
    r = check_finite(as_float_array(reward, name, ndim=1, shape=(3,)), name)
    if not (r[0] > r[1] and r[2] < r[1]):
        raise ValueError(f"{name} must satisfy r(y1) > r(y2) > r(y3) (y3 the bad unseen arm), "
                         f"got {tuple(r)}")
    return tuple(float(v) for v in r)


def _tidy(runs, keys: dict, env_beta, seed, extra=None) -> list[pd.DataFrame]:
    """Per-step metrics of ``runs`` (one per key row) as tidy frames."""
    frames = []
    for run, key in zip(runs, keys):
        env, beta = env_beta(key)
        snaps = run.snapshots
        opt = optimal_policy(env, beta)
        kl = metrics.kl_divergence(env, snaps, env.ref)
        reward = metrics.expected_reward(env, snaps)
        j_opt = float(metrics.expected_reward(env, opt) - beta * metrics.kl_divergence(env, opt,
                                                                                        env.ref))
        columns = {
            "kl": kl,
            "reward": reward,
            "subopt": j_opt - (reward - beta * kl),
            "max_ratio": (snaps / env.ref).max(axis=-1),
            "loss": run.history["loss"].to_numpy(),
        }
        for i, arm in enumerate(XU_ARMS):
            columns[f"pi({arm})"] = snaps[:, i]
        if extra is not None:
            columns.update(extra(run, key))
        steps = run.history["step"].to_numpy()
        for metric, values in columns.items():
            frames.append(pd.DataFrame({**key, "seed": seed, "step": steps, "metric": metric,
                                        "value": np.asarray(values, dtype=float)}))
    return frames


# ------------------------------------------------------------------------------------------------
# F10: Song et al.
# ------------------------------------------------------------------------------------------------


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
      slope_tol: allowed ``|slope - 1|`` of DPO's KL against ``log(1/eps)`` in :func:`check_song`.
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
        _check_reward(self.reward)
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


def run_song(config: SongConfig, seed: int) -> pd.DataFrame:
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
    frames += _tidy(dpo, [{"method": "DPO", "lam": 0.0, "eps": e} for e in eps_values], env_beta,
                    seed)
    rlhf = train_many(envs, objective("rlhf", beta=beta, reward=r_hat), lr=config.rlhf_lr,
                      optimizer="npg", **common)
    frames += _tidy(rlhf, [{"method": "RLHF", "lam": 0.0, "eps": e} for e in eps_values], env_beta,
                    seed)
    lams = list(config.lams)
    hypo = train_many([e for _ in lams for e in envs],
                      [objective("hypo", beta=beta, lam=lam) for lam in lams for _ in envs],
                      [d for _ in lams for d in datas], lr=config.lr, optimizer="adam", **common)
    frames += _tidy(hypo,
                    [{"method": "HyPO", "lam": lam, "eps": e} for lam in lams for e in eps_values],
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


def plot_song(table: pd.DataFrame, config: SongConfig):
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


def check_song(table: pd.DataFrame, config: SongConfig) -> None:
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


SONG = register(Experiment(
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
    config=SongConfig, run=run_song, plot=plot_song, check=check_song, seeds=1))


# ------------------------------------------------------------------------------------------------
# F11: Xu et al.
# ------------------------------------------------------------------------------------------------

_XU_METHODS = ("DPO (log-linear)", "DPO (tabular)", "RLHF (log-linear)")


@dataclass(frozen=True)
class XuConfig:
    """Config of F11.

    Attributes:
      eps: reference mass of the out-of-distribution ``y3`` ("near zero"; ``eps = 0`` is the
        set-valued claim of science.md §6 and is covered by the property tests).
      beta: KL strength of DPO and RLHF.
      reward: gold reward of ``(y1, y2, y3)`` (``r1 > r2 > r3``).
      reward_bound: RLHF's reward model is clipped to ``[-R, R]``.
      steps: optimiser steps.
      lr: Adam step size for DPO.
      rlhf_lr: natural-policy-gradient step size for RLHF.
      record_points: number of log-spaced record steps.
    """

    eps: float = 1e-3
    beta: float = 0.1
    reward: tuple[float, ...] = (1.0, 0.0, -3.0)
    reward_bound: float = 0.25
    steps: int = 5000
    lr: float = 0.05
    rlhf_lr: float = 0.5
    record_points: int = 40

    def __post_init__(self):
        check_in_range(self.eps, "eps", 0.0, 1.0, low_open=True, high_open=True)
        check_positive(self.beta, "beta")
        _check_reward(self.reward)
        check_positive(self.reward_bound, "reward_bound")
        check_int(self.steps, "steps", minimum=1)
        check_positive(self.lr, "lr")
        check_positive(self.rlhf_lr, "rlhf_lr")
        check_int(self.record_points, "record_points", minimum=2)

    @classmethod
    def quick(cls) -> XuConfig:
        return cls(steps=2000, record_points=20)


def run_xu(config: XuConfig, seed: int) -> pd.DataFrame:
    """pi_ref, and pi over steps of log-linear DPO, tabular DPO and RLHF with a clipped r_hat."""
    env = xu_bandit(config.eps, reward=config.reward)
    data = xu_pairs(env)
    phi = xu_features()
    r_hat = clipped_reward_model(phi, [(0, 1)], config.reward_bound)
    beta = config.beta
    common = {"steps": config.steps, "seed": seed, "record": config.record_points}
    runs = {
        _XU_METHODS[0]: train_many(env, [objective("sigmoid", beta=beta)], data, lr=config.lr,
                                   optimizer="adam", policy=LogLinear(phi), **common)[0],
        _XU_METHODS[1]: train_many(env, [objective("sigmoid", beta=beta)], data, lr=config.lr,
                                   optimizer="adam", policy=TabularSoftmax(), **common)[0],
        _XU_METHODS[2]: train_many(env, [objective("rlhf", beta=beta, reward=r_hat)],
                                   lr=config.rlhf_lr, optimizer="npg", policy=LogLinear(phi),
                                   **common)[0],
    }
    frames = _tidy(list(runs.values()), [{"method": m} for m in runs], lambda key: (env, beta),
                   seed)
    for i, arm in enumerate(XU_ARMS):
        frames.append(pd.DataFrame({"method": ["π_ref"], "seed": seed, "step": 0,
                                    "metric": f"pi({arm})", "value": float(env.ref[i])}))
    for i, arm in enumerate(XU_ARMS):
        frames.append(pd.DataFrame({"method": ["r̂ (clipped)"], "seed": seed, "step": 0,
                                    "metric": f"r_hat({arm})", "value": float(r_hat[i])}))
    return pd.concat(frames, ignore_index=True)


def _xu_final(table: pd.DataFrame, method: str) -> np.ndarray:
    rows = table[table["method"] == method]
    last = rows[rows["step"] == rows["step"].max()].groupby("metric")["value"].mean()
    return np.array([last[f"pi({arm})"] for arm in XU_ARMS])


def plot_xu(table: pd.DataFrame, config: XuConfig):
    """(a) final pi on y1, y2, y3 per method next to pi_ref; (b) pi(y3) against step."""
    fig, axes = new_figure(ncols=2, width=3.6, height=3.0)
    ax_bar, ax_t = axes[0]
    names = ("π_ref",) + _XU_METHODS
    colours = dict(zip(names, ("0.6", "C3", "C1", "C0")))
    width = 0.8 / len(names)
    x = np.arange(len(XU_ARMS))
    for i, name in enumerate(names):
        probs = _xu_final(table, name)
        bars = ax_bar.bar(x + (i - (len(names) - 1) / 2) * width, probs, width, color=colours[name],
                          label=name)
        for rect, p in zip(bars, probs):
            ax_bar.annotate(f"{p:.2g}" if p >= 0.005 else f"{p:.0e}",
                            (rect.get_x() + rect.get_width() / 2, p), xytext=(0, 1),
                            textcoords="offset points", ha="center", va="bottom", fontsize=6,
                            rotation=90)
    ax_bar.set_xticks(x, [f"{a}\n(r* = {r:g})" for a, r in zip(XU_ARMS, config.reward)])
    ax_bar.set_ylim(0, 1.2)
    ax_bar.set_ylabel("final probability")
    ax_bar.set_title("(a) final π; data y1 ≻ y2 only")
    for name in _XU_METHODS:
        frame = metric_frame(table[table["method"] == name], "pi(y3)")
        mean = frame.groupby("step")["pi(y3)"].mean()
        ax_t.plot(mean.index, mean.values, color=colours[name], label=name)
    ax_t.axhline(config.eps, color="0.6", linestyle="--", linewidth=1.2)
    ax_t.set_xscale("symlog", linthresh=1)
    ax_t.set_xlim(0, config.steps)
    ax_t.set_yscale("log")
    ax_t.set_xlabel("optimiser step (symlog)")
    ax_t.set_ylabel("π(y3)  (log scale)")
    ax_t.set_title("(b) mass on the unseen y3")
    ax_t.annotate(f"π_ref(y3) = {config.eps:g}", (0.02, config.eps),
                  xycoords=ax_t.get_yaxis_transform(),
                  xytext=(0, -2), textcoords="offset points", ha="left", va="top", fontsize=7,
                  color="0.4")
    handles, labels = ax_bar.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4)
    return fig


def check_xu(table: pd.DataFrame, config: XuConfig) -> None:
    """Log-linear DPO: pi(y3) > 0.9; tabular DPO: pi(y3) never above pi_ref(y3); RLHF: pi(y3)
    within the C4 bound pi_ref(y3) e^{2R/beta} and below 0.01."""
    eps = config.eps
    dpo = _xu_final(table, _XU_METHODS[0])
    assert dpo[2] > 0.9, f"log-linear DPO put only {dpo[2]:.4f} on the unseen y3"
    tab = table[(table["method"] == _XU_METHODS[1]) & (table["metric"] == "pi(y3)")]
    tab_y3 = tab.sort_values("step")["value"].to_numpy()
    assert np.all(tab_y3 <= eps * (1 + 1e-9)), (
        f"tabular DPO raised pi(y3) to {tab_y3.max():.3g} > pi_ref(y3) = {eps:g}")
    rl = table[(table["method"] == _XU_METHODS[2]) & (table["metric"] == "pi(y3)")]["value"]
    bound = eps * np.exp(2 * config.reward_bound / config.beta)
    assert rl.max() <= bound, (
        f"RLHF pi(y3) = {rl.max():.3g} exceeds pi_ref e^(2R/beta) = {bound:.3g}")
    assert rl.max() < 0.01 < dpo[2], f"RLHF pi(y3) = {rl.max():.3g} is not small"
    rl_final = _xu_final(table, _XU_METHODS[2])
    assert rl_final.argmax() == 0, f"RLHF's final policy {rl_final} does not favour y1"


XU = register(Experiment(
    id="xu-ood", figure="F11",
    title="DPO moves mass to an out-of-distribution response; RLHF does not",
    paper="Xu et al. 2024, Is DPO Superior to PPO for LLM Alignment? A Comprehensive Study, §4",
    arxiv="2404.10719",
    claim=("Every PPO/RLHF solution minimises the DPO loss but not conversely: with data only "
           "y1 > y2, DPO can put large probability on the unseen y3, while RLHF's KL term keeps "
           "pi(y3) near pi_ref(y3) ~ 0."),
    differences=("The paper's example is set-valued with pi_ref(y3) = 0 and a table of solutions; "
                 "we "
                 "use pi_ref(y3) = 1e-3 and follow the optimisation dynamics. Tabular DPO cannot "
                 "move y3 (its logit gets zero gradient), so the OOD drift needs function "
                 "approximation: a log-linear policy with phi(y3) = phi(y1) - phi(y2). RLHF uses "
                 "the "
                 "same log-linear policy and a clipped linear reward model that even rates y3 at "
                 "the top; its KL term still pins pi(y3) ~ 2 pi_ref(y3). PPO is replaced by the "
                 "exact natural policy gradient to the RLHF optimum."),
    config=XuConfig, run=run_xu, plot=plot_xu, check=check_xu, seeds=1))
