"""Tajwar et al.'s token task (arXiv:2404.14367, ``transformer_*.py``): what the two token-sequence
experiments share -- ``tajwar-tokens`` (F3, :mod:`.tokens`) and ``tajwar-token-peak`` (F1,
:mod:`.token_peak`).

The environment is :func:`coverage_sim.tajwar_token_env` (V = 100 tokens, L = 9, per-token
tanh-Cauchy reference, reward = mean over positions of a bump at token 70). The policy is minGPT's
gpt-nano SFT'd to ``pi_ref`` (:func:`sft_base_model`); the metrics are Rao-Blackwellised
Monte-Carlo estimates from policy samples (:func:`token_metrics`). Torch is needed to call
anything here but not to import it.
"""

from __future__ import annotations

import numpy as np

from dataclasses import dataclass

from coverage_sim._validation import check_choice, check_in_range, check_int, check_positive
from coverage_sim.experiments.common import DTYPES, check_device, torch_dtype
from coverage_sim.sequences import SequenceEnv

__all__ = ["TokenTaskConfig", "sft_base_model", "token_metrics", "token_tables"]


@dataclass(frozen=True)
class TokenTaskConfig:
    """Fields shared by the token experiments: the task, the SFT, the optimiser and the metrics.

    Attributes:
      vocab: vocabulary size V (Tajwar: 100).
      length: response tokens L (Tajwar: 9).
      peak: reward peak on the 100-token scale (70: far from the reference's mode at token 0).
      width: reward width on the 100-token scale.
      near: radius of the "near the optimum" window on the 100-token scale (scaled like ``peak``).
      n: responses per prompt N (Best-of-N: best and worst of N).
      steps: Adam steps.
      lr: Adam step size (Tajwar's on-policy Best-of-N: 1e-3).
      sft_steps: steps of the sampled SFT to ``pi_ref`` before training (``sft_to_reference``).
      sft_lr: its Adam step size.
      sft_batch: its responses per step.
      eval_every: record every this many steps.
      n_eval: policy samples per evaluation (Rao-Blackwellised per-token estimates).
      dtype: ``"float32"`` or ``"float64"`` (sampled training: Monte-Carlo noise >> float32
        rounding; float32 halves the run time). In float32 the tables depend on the CPU (a
        rounding flips a later draw): AVX2 and AVX-512 kernels gave different tables of both
        token experiments, with the same verdicts and clause counts.
      device: torch device of the runs (``"cpu"``, ``"cuda"``, ...).
    """

    vocab: int = 100
    length: int = 9
    peak: float = 70.0
    width: float = 10.0
    near: float = 5.0
    n: int = 10
    steps: int = 150
    lr: float = 1e-3
    sft_steps: int = 100
    sft_lr: float = 1e-2
    sft_batch: int = 128
    eval_every: int = 5
    n_eval: int = 256
    dtype: str = "float32"
    device: str = "cpu"

    def __post_init__(self):
        check_int(self.vocab, "vocab", minimum=2)
        check_int(self.length, "length", minimum=1)
        check_in_range(self.peak, "peak", 0.0, 99.0)
        check_positive(self.width, "width")
        check_positive(self.near, "near", allow_zero=True)
        check_int(self.n, "n", minimum=2)
        check_int(self.steps, "steps", minimum=1)
        check_positive(self.lr, "lr")
        check_int(self.sft_steps, "sft_steps")
        check_positive(self.sft_lr, "sft_lr")
        check_int(self.sft_batch, "sft_batch", minimum=1)
        check_int(self.eval_every, "eval_every", minimum=1)
        check_int(self.n_eval, "n_eval", minimum=2)
        check_choice(self.dtype, "dtype", DTYPES)
        check_device(self.device)


def token_tables(env: SequenceEnv, peak: float, near: float):
    """Per-token reward bump ``(V,)``, near-optimum mask ``(V,)`` and ``log pi_ref`` ``(L, V)``.

    The bump is read off the env (the reward of the constant sequence ``(a, ..., a)`` is
    ``bump(a)``, since Tajwar's token reward is the mean of per-token bumps); ``peak`` and ``near``
    are on the 100-token scale, like :func:`coverage_sim.tajwar_token_env`'s.
    """
    V, L = env.vocab, env.length
    tokens = np.repeat(np.arange(V)[:, None], L, axis=1)
    bump = env.reward_of(np.zeros(V, dtype=np.int64), tokens)
    centre = peak * V / 100.0
    mask = (np.abs(np.arange(V) - centre) <= near * V / 100.0).astype(np.float64)
    with np.errstate(divide="ignore"):
        ref_logp = np.log(np.asarray(env.ref)[0])
    return bump, mask, ref_logp


def token_metrics(model, tables, n_eval: int, generator) -> dict:
    """Rao-Blackwellised Monte-Carlo metrics from ``n_eval`` policy samples (no gradient).

    With ``y ~ pi`` and ``p_t = pi(. | x, y_<t)``, ``E r = E_y[(1/L) sum_t p_t . bump]``,
    ``mass near = E_y[(1/L) sum_t p_t . near]`` and ``KL(pi || pi_ref) = E_y[sum_t KL(p_t ||
    ref_t)]`` (chain rule): unbiased, with lower variance than scoring the sampled tokens.
    """
    import torch

    from coverage_sim.transformer import sample, token_logp

    bump, near, ref_logp = tables
    with torch.no_grad():
        prompts = torch.zeros(n_eval, dtype=torch.long, device=model.device)
        y = sample(model, prompts, generator)
        lp = token_logp(model, prompts, y).double().cpu()            # (B, L, V)
    p = lp.exp()
    dt = torch.float64
    reward = float((p @ torch.as_tensor(bump, dtype=dt)).mean())
    mass = float((p @ torch.as_tensor(near, dtype=dt)).mean())
    ref = torch.as_tensor(ref_logp, dtype=dt)
    kl = float(torch.where(p > 0, p * (lp - ref), 0.0).sum(dim=(1, 2)).mean())
    return {"reward": reward, "mass_near_opt": mass, "kl": kl}


def sft_base_model(env: SequenceEnv, *, init_seed: int, sft_seed: int, dtype: str,
                   sft_steps: int, sft_lr: float, sft_batch: int, device="cpu"):
    """A gpt-nano initialised from ``init_seed`` and SFT'd to ``pi_ref`` by ``sft_steps`` sampled
    forward-KL Adam steps (:func:`coverage_sim.transformer.sft_to_reference`) on ``device``."""
    import torch

    from coverage_sim.transformer import CausalTransformer, TransformerConfig, sft_to_reference

    model = CausalTransformer(TransformerConfig(vocab=env.vocab, n_prompts=env.n_prompts,
                                                length=env.length),
                              seed=init_seed, dtype=torch_dtype(dtype), device=device)
    if sft_steps:
        sft_to_reference(model, env, steps=sft_steps, lr=sft_lr, batch_size=sft_batch,
                         generator=torch.Generator(device=model.device).manual_seed(sft_seed))
    return model
