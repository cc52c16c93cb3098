"""F1 ``tajwar-peak`` — Tajwar et al. 2024 (arXiv:2404.14367), §4 didactic bandit: on-policy
sampling wins when the optimum is far from the reference.

Evaluation reward against gradient step, offline vs on-policy DPO, IPO, Best-of-N and policy
gradient (REINFORCE analogue), peak 70 vs peak 20, with Adam (lr 0.01, Tajwar's).

Claim: with the reward peak far from ``pi_ref``'s mass (arm 70) on-policy methods reach far higher
reward than offline ones, and offline contrastive methods beat offline maximum likelihood
(Best-of-N); with the peak inside ``pi_ref``'s mass (arm 20) all methods perform similarly. Where
our exact, tabular setting differs and what produces the gap: ``EXPERIMENT.differences``.

See :mod:`coverage_sim.experiments.tajwar.setting` for the 100-arm bandit and the loss
conventions shared by F1-F4.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.ticker
import pandas as pd

from coverage_sim import metrics
from coverage_sim._validation import check_in_range, check_int, check_positive
from coverage_sim.data import offline_pairs, policy_pairs
from coverage_sim.experiments.registry import (Experiment, check_tuple, mean_curve,
                                                register, tidy_rows)
from coverage_sim.experiments.tajwar.setting import (ARXIV, METHOD_COLOURS, OFFLINE, ON_POLICY,
                                                      PAPER, ipo_beta, peak_env, peak_policy,
                                                      refresh_train, step_grid)
from coverage_sim.experiments.policy_classes import check_policy_class, train_each
from coverage_sim.objectives import objective
from coverage_sim.plotting import metric_frame, new_figure

__all__ = ["EXPERIMENT", "PeakConfig", "check", "plot", "run"]

_LABELS = {"PG": "policy gradient (REINFORCE)"}


@dataclass(frozen=True)
class PeakConfig:
    """Config of F1 (``tajwar-peak``).

    Attributes:
      peaks: reward peaks; 70 = optimum far from ``pi_ref``'s mass, 20 = inside it.
      steps: Adam steps (Tajwar's on-policy runs: 100 epochs x 15 steps = 1500).
      lr: Adam step size (Tajwar: 0.01).
      n: samples per state N for Best-of-N (Tajwar: 10).
      dpo_beta: DPO beta in ``-log sigma(beta h)``.
      ipo_margin: Tajwar's IPO target margin ``m`` in ``(h - m)^2`` (TRL beta = 1/(2m)).
      pg_beta: KL strength of the exact policy gradient (tiny: REINFORCE has none).
      record_every: record the policy every this many steps.
      policy: policy class, ``"tabular"``, ``"loglinear"`` (20 bumps over the arm index) or
        ``"mlp"`` (Tajwar's network, SFT'd to ``pi_ref``; ``tajwar.setting.peak_policy``).
    """

    peaks: tuple[float, ...] = (70.0, 20.0)
    steps: int = 1500
    lr: float = 0.01
    n: int = 10
    dpo_beta: float = 0.1
    ipo_margin: float = 10.0
    pg_beta: float = 1e-3
    record_every: int = 10
    policy: str = "tabular"

    def __post_init__(self):
        check_policy_class(self.policy)
        check_tuple(self.peaks, "peaks", lambda v, name: check_in_range(v, name, 0.0, 99.0))
        check_int(self.steps, "steps", minimum=1)
        check_positive(self.lr, "lr")
        check_int(self.n, "n", minimum=2)
        check_positive(self.dpo_beta, "dpo_beta")
        check_positive(self.ipo_margin, "ipo_margin")
        check_positive(self.pg_beta, "pg_beta")
        check_int(self.record_every, "record_every", minimum=1)

    @classmethod
    def quick(cls) -> PeakConfig:
        return cls(steps=1200, record_every=20)


def run(config: PeakConfig, seed: int) -> pd.DataFrame:
    """Reward and KL(pi || pi_ref) against step for the 7 method x regime pairs and every peak."""
    envs = [peak_env(p) for p in config.peaks]
    offline = [offline_pairs(e, e.ref, labels="deterministic") for e in envs]
    tau = ipo_beta(config.ipo_margin)
    rec = step_grid(config.steps, config.record_every)
    specs = {
        ("DPO", OFFLINE): (objective("sigmoid", beta=config.dpo_beta), offline),
        ("IPO", OFFLINE): (objective("ipo", beta=tau), offline),
        ("Best-of-N", OFFLINE): (objective("best_of_n", n=config.n), offline),
        ("DPO", ON_POLICY): (objective("online_dpo", beta=config.dpo_beta,
                                       labels="deterministic"), None),
        ("IPO", ON_POLICY): (objective("online_ipo", beta=tau, labels="deterministic"), None),
        ("PG", ON_POLICY): (objective("rlhf", beta=config.pg_beta), None),
    }
    policy = peak_policy(config.policy)
    policies = {}
    for key, (obj, datas) in specs.items():
        runs = train_each(envs, obj, datas, steps=config.steps, lr=config.lr, seed=seed,
                          record=rec, policy=policy)
        for peak, run in zip(config.peaks, runs):
            policies[key + (peak,)] = run.snapshots
    bon = objective("best_of_n", n=config.n)
    for peak, env in zip(config.peaks, envs):
        policies[("Best-of-N", ON_POLICY, peak)] = refresh_train(
            env, lambda pi, env=env: [(1.0, bon, policy_pairs(env, pi, labels="deterministic"))],
            steps=config.steps, lr=config.lr, refresh_every=1, record=rec, policy=policy,
            seed=seed)
    frames = []
    for (method, regime, peak), snaps in policies.items():
        env = envs[config.peaks.index(peak)]
        frames += tidy_rows({"peak": peak, "regime": regime, "method": method}, seed, rec,
                        {"reward": metrics.expected_reward(env, snaps),
                         "kl": metrics.kl_divergence(env, snaps, env.ref)})
    return pd.concat(frames, ignore_index=True)


def _final(table: pd.DataFrame, metric: str, **where) -> float:
    curve = mean_curve(table, metric, **where)
    return float(curve.iloc[-1])


def plot(table: pd.DataFrame, config: PeakConfig):
    """Reward against step, one panel per peak; colour = method, solid = on-policy, dashed = offline."""
    peaks = sorted(table["peak"].unique(), reverse=True)
    fig, axes = new_figure(ncols=len(peaks), width=3.3, height=2.9, sharey=True)
    for ax, peak in zip(axes[0], peaks):
        frame = metric_frame(table[table["peak"] == peak], "reward")
        for (method, regime), rows in frame.groupby(["method", "regime"]):
            mean = rows.groupby("step")["reward"].mean()
            ax.plot(mean.index, mean.values, color=METHOD_COLOURS[method],
                    linestyle="-" if regime == ON_POLICY else "--",
                    label=f"{_LABELS.get(method, method)}, {regime}")
        ax.set_title(f"reward peak at arm {peak:g}")
        ax.set_xlim(0, frame["step"].max())
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
        ax.set_xlabel("gradient step (Adam)")
        ax.set_ylim(-0.02, 1.02)
    axes[0, 0].set_ylabel("evaluation reward  $E_\\pi r$")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: (labels[i].endswith(OFFLINE), labels[i]))
    fig.legend([handles[i] for i in order], [labels[i] for i in order], loc="outside lower center",
               ncol=2, frameon=False)
    return fig


def check(table: pd.DataFrame, config: PeakConfig) -> None:
    """Peaks far from pi_ref (E_ref r < 0.1, e.g. 70): every on-policy method >= 0.9 and >= 0.3
    above every offline method at the end; offline IPO (contrastive) beats offline Best-of-N
    (maximum likelihood). Peaks inside pi_ref's mass (e.g. 20): all methods >= 0.8 and within 0.1
    of each other at the end."""
    pairs = sorted({(m, r) for m, r in zip(table["method"], table["regime"])})
    for peak in config.peaks:
        sub = table[table["peak"] == peak]
        final = {(m, r): _final(sub, "reward", method=m, regime=r) for m, r in pairs}
        on = {k: v for k, v in final.items() if k[1] == ON_POLICY}
        off = {k: v for k, v in final.items() if k[1] == OFFLINE}
        assert on and off, f"peak {peak}: need both on-policy and offline runs"
        shown = ", ".join(f"{m} {r} {v:.3f}" for (m, r), v in sorted(final.items()))
        env = peak_env(peak)
        if env.ref @ env.reward < 0.1:  # optimum far from pi_ref's mass (reward_4: E_ref r 0.039)
            for key, value in on.items():
                assert value >= 0.9, f"peak {peak}: on-policy {key[0]} reward {value:.3f} < 0.9"
            gap = min(on.values()) - max(off.values())
            assert gap >= 0.3, (f"peak {peak}: on-policy lead over offline is {gap:.3f} < 0.3 "
                                f"({shown})")
            if ("IPO", OFFLINE) in off and ("Best-of-N", OFFLINE) in off:
                assert off[("IPO", OFFLINE)] > off[("Best-of-N", OFFLINE)], (
                    f"peak {peak}: offline IPO {off[('IPO', OFFLINE)]:.3f} does not beat offline "
                    f"Best-of-N {off[('Best-of-N', OFFLINE)]:.3f}")
        else:  # optimum inside pi_ref's mass (reward_5, E_ref r 0.377): all methods similar
            assert min(final.values()) >= 0.8, f"peak {peak}: some method below 0.8 ({shown})"
            spread = max(final.values()) - min(final.values())
            assert spread <= 0.1, f"peak {peak}: methods differ by {spread:.3f} > 0.1 ({shown})"


EXPERIMENT = register(Experiment(
    id="tajwar-peak", figure="F1",
    title="On-policy sampling wins when the optimum is far from the reference (100-arm bandit)",
    paper=PAPER + ", §4 didactic bandit", arxiv=ARXIV,
    claim=("With the reward peak far from pi_ref's mass (arm 70), on-policy methods (DPO, IPO, "
           "Best-of-N, REINFORCE) reach far higher reward than offline ones, and offline "
           "contrastive methods beat offline maximum likelihood (Best-of-N); with the peak inside "
           "pi_ref's mass (arm 20) all methods perform similarly."),
    differences=(
        "Exact population gradients on a tabular softmax started at pi_ref (Tajwar et al.: an MLP "
        "SFT'd to a sampled histogram, 10 samples x 10 or 100 states). Offline = exact "
        "pi_ref x pi_ref pairs with deterministic labels; on-policy DPO/IPO/PG = the exact online "
        "objectives (pairs from pi_t, stop-gradient, refreshed every step); on-policy Best-of-N "
        "refits the exact best-of-10 law of pi_t every step. Tajwar's REINFORCE has no KL; we use "
        "the exact policy gradient with beta_KL = 1e-3, and it has no offline counterpart. DPO "
        "beta = 0.1 (Tajwar tuned 0.01/0.001 with smaller lr), IPO margin 10 (TRL beta 0.05), Adam "
        "lr 0.01, 1500 steps. What produces the gap with exact gradients: offline Best-of-N has a "
        "finite target q_10(pi_ref) whose reward is capped at 0.313, and offline IPO a fixed point "
        "pi_ref exp(P(y > pi_ref)/tau) capped at 0.50, because against pi_ref every arm in a wide "
        "window around 70 wins almost surely (the signal saturates); offline DPO has no cap but "
        "its gradient on arm z is a mu(z) mu(y')-weighted sum (|dL/dtheta_z| <= 2 beta mu(z), "
        "claim C11) in which the comparisons between near-peak arms, the only ones that order "
        "the window, carry weight ~mu(70)^2 ~ 4e-6, so with Adam (which rescales each logit's "
        "step but not the mix of terms in it) it first lifts the whole top half of the arms in "
        "pi_ref proportions and needs ~20000 steps to reach 0.99. On-policy, the comparison set "
        "is pi_t itself, so the signal keeps discriminating as pi_t concentrates (a tournament); "
        "with the peak at 20 pi_ref already covers the optimum and the caps are near 1."),
    config=PeakConfig, run=run, plot=plot, check=check, seeds=1))
