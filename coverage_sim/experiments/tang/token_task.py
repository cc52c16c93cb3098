"""Tang et al.'s online vs offline comparison (arXiv:2405.08448) on a token task with token
structure: what ``tang-transformer`` (:mod:`.transformer`) and ``tang-scaling`` (:mod:`.scaling`)
share.

The task: V tokens, L positions, every one of the ``V**L`` sequences enumerated (exact population
gradients, :func:`coverage_sim.torch_backend.train_exact`). The reference is per-token,
``pi_ref(y_t) = softmax(ref_scale / sqrt(L) * z_t)`` i.i.d. over positions (so ``log pi_ref(y)``
has roughly the spread of the bandit's ``N(0, ref_scale^2)`` logits). The gold reward has token
structure, so that parameters shared across sequences can generalise: per-position token values
plus a bigram term,
``r*(y) = reward_scale * standardise(sum_t a[t, y_t] + bigram * sum_t b[y_t, y_{t+1}])`` with
``a, b ~ N(0, 1)``. Per seed: ``n_pairs`` gold-labelled (Bradley-Terry) pairs from
``pi_ref x pi_ref`` and the proxy ``r_hat``, a ridge Bradley-Terry fit on them (per sequence, as the
bandit F6's). Online IPO labels ``pi_t x pi_t`` pairs with ``r_hat``; offline IPO fits the n gold
pairs; both are TRL's ``(h - 1/(2 tau))^2``.

The transformer is minGPT's (:mod:`coverage_sim.transformer`) at a size of :data:`SIZES`, SFT'd
exactly to ``pi_ref`` (:func:`~coverage_sim.transformer.sft_to_reference`), then trained by Adam;
each run is single-threaded with deterministic algorithms
(:func:`coverage_sim.torch_backend.reproducible`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import softmax

from coverage_sim._validation import check_choice, check_int, check_positive
from coverage_sim.data import offline_pairs
from coverage_sim.experiments.common import DTYPES, check_device, seed_streams, torch_dtype
from coverage_sim.objectives import objective
from coverage_sim.reward_model import fit_bradley_terry
from coverage_sim.sequences import SequenceEnv, enumerate_sequences
from coverage_sim.train import log_schedule

__all__ = ["MATERIAL_GAP", "METHODS", "SIZES", "TokenTaskConfig", "block_seeds", "final_gaps",
           "seed_data", "sft_stack", "tidy_history", "token_task_env", "train_methods"]

#: Transformer sizes by name: (n_layer, n_head, n_embd). Widths at depth 2 (4x the width, about
#: 16x the block parameters per step, Tang et al.'s 16x), and minGPT's gpt-nano.
SIZES = {"w4": dict(n_layer=2, n_head=2, n_embd=4),
         "w8": dict(n_layer=2, n_head=2, n_embd=8),
         "w16": dict(n_layer=2, n_head=2, n_embd=16),
         "w32": dict(n_layer=2, n_head=2, n_embd=32),
         "w64": dict(n_layer=2, n_head=4, n_embd=64),
         "w128": dict(n_layer=2, n_head=4, n_embd=128),
         "gpt-nano": dict(n_layer=3, n_head=3, n_embd=48)}
#: The two arms: online IPO (proxy labels on the policy's pairs), offline IPO (n gold pairs).
METHODS = {"online": "online IPO (proxy labels)", "offline": "offline IPO (n gold pairs)"}
#: The smallest win-rate difference the checks count as an effect in one seed: half a percentage
#: point. The gold win rates are exact, so this is a materiality threshold, not a noise bound: it
#: keeps a seed whose two arms end level (differences of 1e-4 after a short run) from passing or
#: failing on the sign of a rounding-sized number.
MATERIAL_GAP = 0.005


@dataclass(frozen=True)
class TokenTaskConfig:
    """Fields shared by ``tang-transformer`` and ``tang-scaling``: the task, data and optimiser.

    Attributes:
      vocab: vocabulary size V.
      length: response length L (``V**L <= 4096`` sequences are enumerated).
      ref_scale: spread of the reference's sequence log-probs (per-token logits
        ``N(0, ref_scale^2 / L)``).
      reward_scale: std of the gold reward over sequences.
      bigram: weight of the bigram term of the gold reward (0: additive over positions).
      instance_seed: seed of the task (pi_ref and r*), fixed across seeds.
      n_pairs: gold-labelled offline pairs from ``pi_ref x pi_ref`` per seed.
      proxy_l2: ridge of the proxy's Bradley-Terry fit.
      steps: Adam steps of each transformer run.
      lr: their Adam step size.
      sft_steps: exact SFT steps to ``pi_ref`` before training.
      sft_lr: its Adam step size.
      record_points: log-spaced checkpoints per run.
      dtype: ``"float64"`` (default) or ``"float32"`` (about 1.8x faster for gpt-nano on a CPU).
        float32 results depend on the CPU: the same full ``tang-transformer`` run gave the online
        IPO gap in 7 of 8 seeds with AVX2 kernels and in 5 of 8 with AVX-512 ones (per-seed
        effects moved by about 0.01, as much as the effects), and a different verdict; in float64
        the tables of both were identical to the last bit.
      device: torch device of the runs (``"cpu"``, ``"cuda"``, ...).
      seeds_per_run: seeds trained together by one run (one ``seed`` of the registry is a block:
        run ``b`` trains seeds ``b * seeds_per_run`` to ``(b + 1) * seeds_per_run - 1``, as one
        stack of independent models, :mod:`coverage_sim.transformer_stack`); the table's
        ``seed`` column holds those seeds.
    """

    vocab: int = 4
    length: int = 3
    ref_scale: float = 2.0
    reward_scale: float = 1.5
    bigram: float = 0.5
    instance_seed: int = 0
    n_pairs: int = 300
    proxy_l2: float = 1e-3
    steps: int = 300
    lr: float = 5e-3
    sft_steps: int = 100
    sft_lr: float = 1e-2
    record_points: int = 5
    dtype: str = "float64"
    device: str = "cpu"
    seeds_per_run: int = 8

    def __post_init__(self):
        check_int(self.vocab, "vocab", minimum=2)
        check_int(self.length, "length", minimum=2)
        if self.vocab ** self.length > 4096:
            raise ValueError(f"vocab**length must be <= 4096 (exact mode enumerates every "
                             f"sequence), got vocab={self.vocab}, length={self.length}")
        check_positive(self.ref_scale, "ref_scale", allow_zero=True)
        check_positive(self.reward_scale, "reward_scale")
        check_positive(self.bigram, "bigram", allow_zero=True)
        check_int(self.instance_seed, "instance_seed")
        check_int(self.n_pairs, "n_pairs", minimum=1)
        check_positive(self.proxy_l2, "proxy_l2")
        check_int(self.steps, "steps", minimum=1)
        check_positive(self.lr, "lr")
        check_int(self.sft_steps, "sft_steps")
        check_positive(self.sft_lr, "sft_lr")
        check_int(self.record_points, "record_points", minimum=2)
        check_choice(self.dtype, "dtype", DTYPES)
        check_int(self.seeds_per_run, "seeds_per_run", minimum=1)
        check_device(self.device)


def token_task_env(config: TokenTaskConfig) -> SequenceEnv:
    """The task of ``config`` (see the module docstring); one prompt.

    Examples:
      >>> from coverage_sim.experiments.tang.token_task import TokenTaskConfig, token_task_env
      >>> env = token_task_env(TokenTaskConfig())
      >>> env.n_sequences, round(float(env.bandit.reward.std()), 6)
      (64, 1.5)
    """
    rng = np.random.default_rng(config.instance_seed)
    L, V = config.length, config.vocab
    ref = softmax(config.ref_scale / np.sqrt(L) * rng.standard_normal((L, V)), axis=1)
    a, b = rng.standard_normal((L, V)), rng.standard_normal((V, V))
    y = enumerate_sequences(V, L)
    raw = a[np.arange(L), y].sum(axis=1) + config.bigram * b[y[:, :-1], y[:, 1:]].sum(axis=1)
    reward = config.reward_scale * (raw - raw.mean()) / raw.std()
    return SequenceEnv(V, L, 1, f"tang-tokens-V{V}-L{L}-bigram{config.bigram:g}-seed"
                       f"{config.instance_seed}", reward=reward, ref=ref)


def seed_data(env: SequenceEnv, config: TokenTaskConfig, seed: int):
    """``(data, r_hat, init_seed)`` of one seed: the n gold-labelled pairs, the proxy fitted on
    them, and the seed of the transformer's initialisation (independent streams of ``seed``)."""
    data_seed, init_seed = seed_streams(seed, 2)
    bandit = env.bandit
    data = offline_pairs(bandit, bandit.ref, n=config.n_pairs,
                         seed=np.random.default_rng(data_seed))
    return data, fit_bradley_terry(data, l2=config.proxy_l2), init_seed


def block_seeds(config: TokenTaskConfig, run_seed: int) -> list[int]:
    """The seeds that registry run ``run_seed`` trains (see ``seeds_per_run``)."""
    k = config.seeds_per_run
    return list(range(run_seed * k, (run_seed + 1) * k))


def sft_stack(env: SequenceEnv, size: str, config: TokenTaskConfig, init_seeds):
    """One transformer of ``size`` per initialisation seed, stacked, SFT'd exactly to ``pi_ref``
    together; returns ``(stack, residual KL(pi_ref || pi) per seed)``."""
    from coverage_sim.torch_backend import reproducible
    from coverage_sim.transformer import CausalTransformer, TransformerConfig
    from coverage_sim.transformer_stack import TransformerStack, sft_stack_to_reference

    check_choice(size, "size", SIZES)
    cfg = TransformerConfig(vocab=env.vocab, n_prompts=1, length=env.length, **SIZES[size])
    stack = TransformerStack([CausalTransformer(cfg, seed=s, dtype=torch_dtype(config.dtype),
                                                device=config.device) for s in init_seeds])
    with reproducible(threads=1, deterministic=True):
        kl = (sft_stack_to_reference(stack, env, steps=config.sft_steps, lr=config.sft_lr)[-1]
              if config.sft_steps else np.zeros(len(stack)))
    return stack, kl


def train_methods(env: SequenceEnv, stack, datas, r_hats, tau: float, config: TokenTaskConfig
                  ) -> dict:
    """Online and offline IPO at ``tau`` from copies of ``stack`` (one seed's data and proxy per
    model): ``{method: [history per seed]}``."""
    from coverage_sim.torch_backend import reproducible
    from coverage_sim.transformer_stack import train_exact_stack

    record = log_schedule(config.steps, config.record_points)
    plans = {"online": ([objective("online_ipo", beta=tau, reward=r) for r in r_hats], None),
             "offline": ([objective("ipo", beta=tau)] * len(datas), list(datas))}
    out = {}
    with reproducible(threads=1, deterministic=True):
        for method, (objs, data) in plans.items():
            out[method] = train_exact_stack(env, objs, data, stack=stack.copy(),
                                            steps=config.steps, lr=config.lr, record=record)
    return out


def tidy_history(keys: dict, seed: int, history: pd.DataFrame,
                 metrics=("kl", "win_rate", "reward")) -> list[pd.DataFrame]:
    """Table rows (``keys..., seed, step, metric, value``) of one run's history."""
    steps = history["step"].to_numpy()
    return [pd.DataFrame({**keys, "seed": seed, "step": steps, "metric": m,
                          "value": history[m].to_numpy(dtype=float)}) for m in metrics]


def final_gaps(table: pd.DataFrame, by: str) -> pd.DataFrame:
    """Final-step gold win rate of online minus offline IPO, one row per seed, one column per
    value of ``by`` (e.g. the size)."""
    rows = table[table["metric"] == "win_rate"]
    last = rows[rows["step"] == rows.groupby([by, "method", "seed"])["step"].transform("max")]
    wide = last.pivot_table(index=["seed", by], columns="method", values="value")
    return (wide["online"] - wide["offline"]).unstack(by)
