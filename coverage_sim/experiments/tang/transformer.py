"""F6 (transformer) ``tang-transformer`` — Tang et al. 2024 (arXiv:2405.08448): the online vs
offline IPO Pareto frontier with a transformer policy over token sequences.

Gold win rate against ``pi_ref`` vs ``KL(pi || pi_ref)`` across tau, online vs offline IPO, with
**exact** population gradients over an enumerable token space
(:func:`coverage_sim.torch_backend.train_exact`) for minGPT's gpt-nano
(:mod:`coverage_sim.transformer`), and the tabular softmax over the same sequences as the bandit
baseline. Bandit version: ``tang-pareto`` (:mod:`~coverage_sim.experiments.tang.pareto`).

Claim: online IPO (pairs from the current policy, proxy labels) reaches a higher golden win rate
than offline IPO at the same KL; offline IPO plateaus or declines as the KL grows. The finding does
not robustly transfer to the transformer (``expected_to_agree=False``); the instance, the result
and why: ``EXPERIMENT.differences``.

Conventions as in :mod:`~coverage_sim.experiments.tang.setting`: IPO is TRL's
``(h - 1/(2 tau))^2`` (tau = Azar's tau = TRL beta); KL is ``KL(pi || pi_ref)`` in nats; the gold
reward is the environment's ``reward_of``. Randomness comes from generators seeded from the run's
seed; each run uses one torch thread (:func:`~coverage_sim.experiments.common.one_thread`). Torch is
optional: the experiment registers only when it imports; the config, check and plot are always
importable.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import softmax

from coverage_sim._validation import check_int, check_positive
from coverage_sim.data import offline_pairs
from coverage_sim.experiments.common import HAVE_TORCH, one_thread, require_torch, seed_streams
from coverage_sim.experiments.registry import Experiment, check_tuple, register
from coverage_sim.experiments.tang.setting import ARXIV, PAPER, final_points, frontier, kl_grid
from coverage_sim.objectives import objective
from coverage_sim.plotting import mean_band, new_figure
from coverage_sim.reward_model import fit_bradley_terry
from coverage_sim.sequences import SequenceEnv
from coverage_sim.train import log_schedule, train_many

if HAVE_TORCH:
    from coverage_sim.torch_backend import train_exact
    from coverage_sim.transformer import CausalTransformer, TransformerConfig, sft_to_reference

__all__ = ["EXPERIMENT", "TangTransformerConfig", "check", "plot", "run", "tang_sequence_env"]

_METHODS = {"online": "online IPO (proxy labels)", "offline": "offline IPO (n gold pairs)",
            "offline_exact": "offline IPO, n = ∞"}
_COLOURS = {"online": "C0", "offline": "C3", "offline_exact": "0.45"}
_POLICIES = ("transformer", "tabular")


@dataclass(frozen=True)
class TangTransformerConfig:
    """Config of F6 (transformer) (``tang-transformer``).

    Attributes:
      vocab: vocabulary size V.
      length: response length L (``V**L`` sequences are enumerated).
      ref_scale: scale of the reference's sequence log-probs: per-token logits are
        ``N(0, ref_scale^2 / L)`` i.i.d. per (position, token), so ``log pi_ref(y)`` has roughly
        the spread of the bandit's ``N(0, ref_scale^2)`` logits.
      reward_scale: gold reward ``r*(y) ~ N(0, reward_scale^2)`` i.i.d. per sequence (as the
        bandit's per-arm reward).
      instance_seed: seed of the task (pi_ref and r*), fixed across seeds.
      n_pairs: gold-labelled offline pairs from ``pi_ref x pi_ref`` per seed.
      proxy_l2: ridge of the proxy's Bradley-Terry fit.
      taus: IPO strengths swept to trace the frontier.
      steps: Adam steps of the transformer runs.
      lr: their Adam step size.
      sft_steps: exact SFT steps to ``pi_ref`` (``sft_to_reference``) before training.
      sft_lr: its Adam step size.
      tabular_steps: Adam steps of the tabular (bandit) baseline on the same sequences.
      tabular_lr: its step size (the bandit figure's 0.05).
      record_points: log-spaced checkpoints per run.
      include_exact: also run offline IPO on the exact n = infinity gold population (tabular
        and transformer).
      min_gap_kl: the gap is asserted on the common KL grid at or above this KL (nats).
    """

    vocab: int = 4
    length: int = 3
    ref_scale: float = 2.0
    reward_scale: float = 1.5
    instance_seed: int = 0
    n_pairs: int = 300
    proxy_l2: float = 1e-3
    taus: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3)
    steps: int = 600
    lr: float = 1e-3
    sft_steps: int = 300
    sft_lr: float = 1e-2
    tabular_steps: int = 1000
    tabular_lr: float = 0.05
    record_points: int = 8
    include_exact: bool = False
    min_gap_kl: float = 1.0

    def __post_init__(self):
        check_int(self.vocab, "vocab", minimum=2)
        check_int(self.length, "length", minimum=1)
        if self.vocab ** self.length > 4096:
            raise ValueError(f"vocab**length must be <= 4096 (exact mode enumerates every "
                             f"sequence), got vocab={self.vocab}, length={self.length}")
        check_positive(self.ref_scale, "ref_scale", allow_zero=True)
        check_positive(self.reward_scale, "reward_scale")
        check_int(self.instance_seed, "instance_seed")
        check_int(self.n_pairs, "n_pairs", minimum=1)
        check_positive(self.proxy_l2, "proxy_l2")
        check_tuple(self.taus, "taus", check_positive)
        if len(self.taus) < 3:
            raise ValueError(f"taus must hold at least 3 values to trace a frontier, got "
                             f"{self.taus!r}")
        check_int(self.steps, "steps", minimum=1)
        check_positive(self.lr, "lr")
        check_int(self.sft_steps, "sft_steps")
        check_positive(self.sft_lr, "sft_lr")
        check_int(self.tabular_steps, "tabular_steps", minimum=1)
        check_positive(self.tabular_lr, "tabular_lr")
        check_int(self.record_points, "record_points", minimum=2)
        check_positive(self.min_gap_kl, "min_gap_kl")

    @classmethod
    def quick(cls) -> TangTransformerConfig:
        return cls(taus=(0.01, 0.1, 0.3), steps=150, sft_steps=200, record_points=4)


def tang_sequence_env(config: TangTransformerConfig) -> SequenceEnv:
    """The task: per-token reference ``softmax(ref_scale / sqrt(L) * z_t)`` i.i.d. over positions'
    draws, gold reward ``reward_scale * z'`` per sequence; one prompt."""
    rng = np.random.default_rng(config.instance_seed)
    L, V = config.length, config.vocab
    ref = softmax(config.ref_scale / np.sqrt(L) * rng.standard_normal((L, V)), axis=1)
    reward = config.reward_scale * rng.standard_normal(V ** L)
    return SequenceEnv(V, L, 1, f"tang-seq-V{V}-L{L}-seed{config.instance_seed}",
                       reward=reward, ref=ref)


def _tidy(policy, method, taus, histories, seed) -> list[pd.DataFrame]:
    frames = []
    for tau, h in zip(taus, histories):
        for metric in ("kl", "win_rate", "reward"):
            frames.append(pd.DataFrame({"policy": policy, "method": method, "tau": float(tau),
                                        "seed": seed, "step": h["step"].to_numpy(),
                                        "metric": metric, "value": h[metric].to_numpy()}))
    return frames


def run(config: TangTransformerConfig, seed: int) -> pd.DataFrame:
    """KL, gold win rate and reward at log-spaced checkpoints, per policy, method and tau.

    Per seed: n offline pairs from ``pi_ref`` (gold Bradley-Terry labels) and the proxy ``r_hat``
    fitted on them; online IPO labels ``pi_t x pi_t`` pairs with ``r_hat`` (exact expectation,
    sampler held fixed), offline IPO trains on the n pairs. The same data and proxy serve the
    transformer (SFT'd to ``pi_ref``, Adam) and the tabular softmax over the ``V**L`` sequences
    (started at ``pi_ref``, the bandit figure's optimiser).
    """
    require_torch()
    env = tang_sequence_env(config)
    bandit = env.bandit
    data_seed, init_seed = seed_streams(seed, 2)
    data = offline_pairs(bandit, bandit.ref, n=config.n_pairs,
                         seed=np.random.default_rng(data_seed))
    r_hat = fit_bradley_terry(data, l2=config.proxy_l2)
    taus = config.taus
    datasets = {"online": None, "offline": data}
    if config.include_exact:
        datasets["offline_exact"] = offline_pairs(bandit, bandit.ref)

    def objectives(method):
        if method == "online":
            return [objective("online_ipo", beta=t, reward=r_hat) for t in taus]
        return [objective("ipo", beta=t) for t in taus]

    frames = []
    tab_record = log_schedule(config.tabular_steps, config.record_points)
    for method, d in datasets.items():
        runs = train_many(bandit, objectives(method), d, steps=config.tabular_steps,
                          lr=config.tabular_lr, seed=seed, record=tab_record)
        frames += _tidy("tabular", method, taus, [r.history for r in runs], seed)
    record = log_schedule(config.steps, config.record_points)
    with one_thread():
        base = CausalTransformer(TransformerConfig(vocab=env.vocab, n_prompts=1,
                                                   length=env.length), seed=init_seed)
        if config.sft_steps:
            sft_to_reference(base, env, steps=config.sft_steps, lr=config.sft_lr)
        for method, d in datasets.items():
            hists = [train_exact(env, obj, d, model=copy.deepcopy(base), steps=config.steps,
                                 lr=config.lr, record=record).history
                     for obj in objectives(method)]
            frames += _tidy("transformer", method, taus, hists, seed)
    return pd.concat(frames, ignore_index=True)


def _policy_rows(table: pd.DataFrame, policy: str) -> pd.DataFrame:
    return table[table["policy"] == policy].drop(columns="policy")


def _gap_curve(table: pd.DataFrame, grid) -> np.ndarray:
    on = frontier(table, "online", grid).groupby("kl")["win_rate"].mean().to_numpy()
    off = frontier(table, "offline", grid).groupby("kl")["win_rate"].mean().to_numpy()
    return on - off


def plot(table: pd.DataFrame, config: TangTransformerConfig):
    """(a) transformer and (b) tabular tau-sweep frontiers (final points, mean ± s.e. over seeds;
    faint: checkpoints); (c) online - offline win-rate gap at matched KL for both policies."""
    fig, axes = new_figure(ncols=3, width=2.9, height=3.0)
    titles = {"transformer": f"(a) gpt-nano, exact ({config.vocab}^{config.length} sequences, "
                             f"n = {config.n_pairs})",
              "tabular": "(b) tabular softmax, same data (bandit)"}
    for ax, policy in zip(axes[0, :2], _POLICIES):
        rows = _policy_rows(table, policy)
        for method in [m for m in _METHODS if m in set(rows["method"])]:
            colour = _COLOURS[method]
            ck = rows[rows["method"] == method].pivot_table(
                index=["seed", "tau", "step"], columns="metric", values="value")
            ax.scatter(ck["kl"], ck["win_rate"], s=5, color=colour, alpha=0.25, linewidths=0)
            grid = kl_grid(rows, [method], 40)
            mean_band(ax, frontier(rows, method, grid), "kl", "win_rate",
                      label=_METHODS[method], color=colour,
                      linestyle="--" if method == "offline_exact" else "-")
            pts = final_points(rows, method).groupby("tau")[["kl", "win_rate"]].mean()
            ax.plot(pts["kl"], pts["win_rate"], "o", ms=3, color=colour)
        ax.set_xlabel("KL(π ‖ π_ref)  [nats]")
        ax.set_ylabel("gold win rate vs π_ref")
        ax.set_title(titles[policy], fontsize=8.5)
    ax = axes[0, 2]
    for policy, colour in (("transformer", "C0"), ("tabular", "0.4")):
        rows = _policy_rows(table, policy)
        grid = kl_grid(rows, ["online", "offline"], 40)
        on = frontier(rows, "online", grid)
        off = frontier(rows, "offline", grid)
        diff = on.merge(off, on=["seed", "kl"], suffixes=("_on", "_off"))
        diff["gap"] = diff["win_rate_on"] - diff["win_rate_off"]
        mean_band(ax, diff, "kl", "gap", color=colour, label=policy)
    ax.axhline(0.0, color="k", linewidth=0.8)
    ax.axvline(config.min_gap_kl, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlabel("KL(π ‖ π_ref)  [nats]")
    ax.set_ylabel("win-rate gap (online − offline)")
    ax.set_title("(c) online − offline at matched KL", fontsize=9)
    ax.legend(loc="best")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncol=3)
    return fig


def check(table: pd.DataFrame, config: TangTransformerConfig) -> None:
    """Tang's F6 shape for both policies (means over seeds, final points of the tau sweep):

    1. online IPO's frontier lies above offline IPO's on average over the common KL grid at or
       above ``min_gap_kl`` (by >= 0.01), and at its largest point by >= 0.03;
    2. offline IPO saturates or declines at large KL: its win rate at the smallest tau is below its
       best over tau by more than online's is (the offline plateau).

    The tabular policy is the bandit baseline on the same instance and data; the transformer is
    checked first, so a failure message starting with "transformer" means the finding did not
    transfer while the bandit version may still hold.
    """
    for policy in _POLICIES:
        rows = _policy_rows(table, policy)
        grid = kl_grid(rows, ["online", "offline"], 40)
        upper = grid >= config.min_gap_kl
        assert upper.sum() >= 3, (
            f"{policy}: online and offline frontiers share too little KL range above "
            f"{config.min_gap_kl} nats (common grid {grid[0]:.2f}-{grid[-1]:.2f})")
        gap = _gap_curve(rows, grid)[upper]
        assert gap.mean() >= 0.01 and gap.max() >= 0.03, (
            f"{policy}: online IPO is not above offline IPO at matched KL >= "
            f"{config.min_gap_kl}: mean gap {gap.mean():+.3f}, max {gap.max():+.3f}")
        drop = {}
        for method in ("online", "offline"):
            pts = final_points(rows, method).groupby("tau")["win_rate"].mean()
            drop[method] = float(pts.max() - pts.iloc[0])
        assert drop["offline"] > drop["online"], (
            f"{policy}: offline IPO does not plateau/decline at small tau more than online "
            f"(win-rate drop from the best tau to the smallest: offline {drop['offline']:.3f}, "
            f"online {drop['online']:.3f})")


if HAVE_TORCH:  # registered only when torch imports
    EXPERIMENT = register(Experiment(
        id="tang-transformer", figure="F6 (transformer)",
        title="Transfer: online vs offline IPO Pareto frontier with a transformer policy over "
              "token sequences",
        paper=PAPER, arxiv=ARXIV,
        claim=("Online IPO (pairs from the current policy, proxy labels) reaches a higher golden "
               "win rate than offline IPO at the same KL(pi || pi_SFT); offline IPO plateaus or "
               "declines as the KL grows."),
        differences=(
            "Token-sequence instance of the bandit F6: V = 4, L = 3 (64 sequences, enumerated: "
            "exact population gradients via train_exact), per-token reference logits "
            "N(0, 2^2/3) i.i.d. per (position, token) so log pi_ref has the bandit's spread, gold "
            "reward N(0, 1.5^2) i.i.d. per sequence (no token structure), n = 300 gold-labelled "
            "pairs from pi_ref per seed (the bandit: 1000 pairs on 100 arms; fewer here so that "
            "the bandit gap shows on 64 sequences), proxy = ridge Bradley-Terry MLE on them. "
            "gpt-nano (float64) SFT'd exactly to pi_ref (300 Adam steps, KL < 1e-3; 150 steps "
            "leave some seeds on a KL ~ 0.06-0.17 plateau), then Adam lr 1e-3 for 600 steps "
            "(lr >= 3e-3 gives erratic, seed-chaotic end points at small tau), taus 0.01-0.3 "
            "(four, not nine, for time), no n = infinity reference by default. The tabular "
            "softmax over the same 64 sequences, with the bandit figure's optimiser (Adam 0.05, "
            "1000 steps) and the same data and proxy, is the bandit baseline. Result (4 seeds): "
            "the tabular baseline reproduces the bandit shape (online - offline gap +0.043 on "
            "average above 1 nat, offline flat at 0.78 from tau 0.03 down while online reaches "
            "0.875). The transformer only partly follows: averaged over the common KL range the "
            "online frontier is above offline (+0.058), but the large-KL end is reversed - at "
            "tau = 0.01 online IPO settles on near-deterministic policies of poor sequences (win "
            "rate 0.70-0.71 in 3 of 4 seeds, 0.876 in one; the tabular online optimum is 0.875) "
            "and stays there (unchanged from step 300 to 1500 in a longer run), while offline "
            "IPO lands on a good single sequence (0.894 in 3 seeds) or collapses on a bad one "
            "(0.48 at tau 0.03). So offline does not plateau more than online and the check "
            "fails on that criterion: the online advantage does not robustly transfer; with the "
            "transformer both methods' large-KL end points are decided by which sequences the "
            "shared parameters collapse onto. An earlier run whose SFT had not converged in one "
            "seed gave an average gap of only +0.005, another sign of that sensitivity."),
        config=TangTransformerConfig, run=run, plot=plot, check=check, seeds=4,
        expected_to_agree=False))
