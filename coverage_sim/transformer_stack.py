"""Many independent transformer policies trained in lockstep: one batched pass for all seeds.

A seed sweep of small transformers in exact mode is dominated by per-operation overhead, not by
arithmetic: a 2-layer, 8-wide model over 64 sequences does the same number of torch calls as one
over 64 x 16. :class:`TransformerStack` stacks S models of one
:class:`~coverage_sim.transformer.TransformerConfig` (``torch.func.stack_module_state``: every
parameter gains a leading seed axis) and evaluates all of them with one batched forward pass
(:func:`stack_logp_table`: minGPT's computation written with a seed axis -- explicit causal
attention, per-seed LayerNorm affine, embeddings and linear maps). The models stay independent:
nothing mixes seeds, each seed's loss has its own gradient, and Adam is elementwise, so training
the stack is training each model on its own (tested against :func:`coverage_sim.torch_backend.
train_exact`, to rounding).

:func:`train_exact_stack` is :func:`~coverage_sim.torch_backend.train_exact` for a stack: every
step, one batched forward over every (seed, sequence), the numba core's exact
``objective.loss_and_grad`` per seed (each seed its own objective and data), one batched
backward and one Adam step. :func:`sft_stack_to_reference` is the exact SFT of
:func:`~coverage_sim.transformer.sft_to_reference` for a stack.

Examples:
  >>> import torch
  >>> from coverage_sim.transformer import CausalTransformer, TransformerConfig
  >>> from coverage_sim.transformer_stack import TransformerStack, stack_logp_table
  >>> cfg = TransformerConfig(vocab=3, n_prompts=1, length=2, n_layer=1, n_head=1, n_embd=4)
  >>> stack = TransformerStack([CausalTransformer(cfg, seed=s) for s in range(5)])
  >>> tokens = torch.tensor([[a, b] for a in range(3) for b in range(3)])
  >>> lp = stack_logp_table(stack, tokens)
  >>> tuple(lp.shape), bool(torch.allclose(lp.exp().sum(-1), torch.ones(5, 1, dtype=lp.dtype)))
  ((5, 1, 9), True)
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.func import stack_module_state

from coverage_sim._validation import check_int, check_positive
from coverage_sim.sequences import SequenceEnv
from coverage_sim.torch_backend import (_as_objective, _check_env, _check_exact_objective,
                                        _check_finite_loss, _default_eval_data, _exact_metrics)
from coverage_sim.train import _record_steps
from coverage_sim.transformer import CausalTransformer, _check_env_for

__all__ = ["TransformerStack", "sft_stack_to_reference", "stack_logp_table",
           "train_exact_stack"]


class TransformerStack:
    """S independent :class:`~coverage_sim.transformer.CausalTransformer` models of one config,
    with their parameters stacked along a leading seed axis.

    Args:
      models: the models (same config, dtype and device); their current parameters are copied.

    Attributes:
      params: ``{name: (S, ...) tensor}``, leaf tensors that require gradients.
      config, dtype, device: the models' common config, dtype and device.
    """

    def __init__(self, models):
        models = list(models)
        if not models or not all(isinstance(m, CausalTransformer) for m in models):
            raise ValueError("models must be a non-empty list of CausalTransformer")
        first = models[0]
        for m in models[1:]:
            if (m.config, m.dtype, m.device) != (first.config, first.dtype, first.device):
                raise ValueError("models must share one config, dtype and device")
        params, _ = stack_module_state(models)
        self.params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        self.config, self.dtype, self.device = first.config, first.dtype, first.device

    def __len__(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def copy(self) -> "TransformerStack":
        """An independent copy (same parameters, fresh leaf tensors)."""
        out = object.__new__(TransformerStack)
        out.params = {k: v.detach().clone().requires_grad_(True) for k, v in self.params.items()}
        out.config, out.dtype, out.device = self.config, self.dtype, self.device
        return out

    def model(self, index: int) -> CausalTransformer:
        """Model ``index`` as a standalone :class:`CausalTransformer` (a copy)."""
        out = CausalTransformer(self.config, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            for name, p in out.named_parameters():
                p.copy_(self.params[name][index])
        return out


def _linear(x, w, b=None):
    """``x @ w^T + b`` per seed: ``x (S, ..., in)``, ``w (S, out, in)``, ``b (S, out)``."""
    shape = x.shape
    y = torch.bmm(x.reshape(shape[0], -1, shape[-1]), w.transpose(1, 2))
    if b is not None:
        y = y + b[:, None, :]
    return y.reshape(shape[:-1] + (w.shape[1],))


def _layer_norm(x, w, b):
    extra = (1,) * (x.dim() - 2)
    y = F.layer_norm(x, x.shape[-1:])
    return y * w.view(w.shape[0], *extra, -1) + b.view(b.shape[0], *extra, -1)


def _stack_forward(p, cfg, prompts, prefix):
    """Next-token log-probs ``(S, B, t + 1, vocab)`` of every model (minGPT's forward)."""
    S = p["head.weight"].shape[0]
    B, t = prefix.shape
    d, H = cfg.n_embd, cfg.n_head
    x = p["prompt_emb.weight"][:, prompts][:, :, None, :]
    if t:
        x = torch.cat([x, p["token_emb.weight"][:, prefix]], dim=2)
    T = t + 1
    x = x + p["pos_emb.weight"][:, None, :T, :]
    causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    for i in range(cfg.n_layer):
        q = f"blocks.{i}."
        h = _layer_norm(x, p[q + "ln1.weight"], p[q + "ln1.bias"])
        qkv = _linear(h, p[q + "attn.qkv.weight"], p[q + "attn.qkv.bias"])
        qh, kh, vh = (z.view(S, B, T, H, d // H).transpose(2, 3) for z in qkv.split(d, dim=-1))
        att = (qh @ kh.transpose(-2, -1)) / math.sqrt(d // H)
        att = torch.softmax(att.masked_fill(~causal, -math.inf), dim=-1)
        y = (att @ vh).transpose(2, 3).reshape(S, B, T, d)
        x = x + _linear(y, p[q + "attn.proj.weight"], p[q + "attn.proj.bias"])
        h = _layer_norm(x, p[q + "ln2.weight"], p[q + "ln2.bias"])
        h = F.gelu(_linear(h, p[q + "fc.weight"], p[q + "fc.bias"]))
        x = x + _linear(h, p[q + "fc_proj.weight"], p[q + "fc_proj.bias"])
    x = _layer_norm(x, p["ln_f.weight"], p["ln_f.bias"])
    return torch.log_softmax(_linear(x, p["head.weight"]), dim=-1)


def stack_logp_table(stack: TransformerStack, tokens) -> torch.Tensor:
    """``log pi_s(y | x)`` for every model ``s``, prompt ``x`` and row ``y`` of ``tokens``.

    Args:
      stack: the models.
      tokens: ``(N, length)`` int64 responses (e.g. ``env.tokens``).

    Returns:
      ``(S, n_prompts, N)``, differentiable with respect to ``stack.params``.
    """
    cfg = stack.config
    y = torch.as_tensor(np.asarray(tokens) if not isinstance(tokens, torch.Tensor) else tokens,
                        dtype=torch.long, device=stack.device)
    if y.dim() != 2 or y.shape[1] != cfg.length:
        raise ValueError(f"tokens must have shape (N, {cfg.length}), got {tuple(y.shape)}")
    n = y.shape[0]
    prompts = torch.arange(cfg.n_prompts, device=stack.device).repeat_interleave(n)
    all_y = y.repeat(cfg.n_prompts, 1)
    lp = _stack_forward(stack.params, cfg, prompts, all_y[:, :-1])
    seq = lp.gather(3, all_y[None, :, :, None].expand(len(stack), -1, -1, 1))[..., 0].sum(-1)
    return seq.view(len(stack), cfg.n_prompts, n)


def sft_stack_to_reference(stack: TransformerStack, env: SequenceEnv, *, steps: int = 200,
                           lr: float = 1e-2) -> np.ndarray:
    """Exact SFT of every model to ``pi_ref`` (:func:`~coverage_sim.transformer.sft_to_reference`
    with ``batch_size=None``), all models in one batched loss; Adam on the stacked parameters.

    Returns:
      ``(steps + 1, S)`` exact ``KL(pi_ref || pi_s)`` before each step and after the last.
    """
    env = _check_env(env)
    steps = check_int(steps, "steps")
    lr = check_positive(lr, "lr")
    bandit = env.bandit
    ref = bandit.ref2d
    rho = np.asarray(env.prompt_weights, dtype=np.float64)
    weight = torch.as_tensor(rho[:, None] * ref, dtype=stack.dtype, device=stack.device)
    with np.errstate(divide="ignore"):
        const = float(np.sum(rho[:, None] * np.where(ref > 0, ref * np.log(ref), 0.0)))
    tokens = torch.tensor(env.tokens, device=stack.device)
    opt = torch.optim.Adam(list(stack.params.values()), lr=lr)
    out = np.empty((steps + 1, len(stack)))
    for step in range(steps + 1):
        per_seed = const - (weight * stack_logp_table(stack, tokens)).sum(dim=(1, 2))
        out[step] = per_seed.detach().double().cpu().numpy()
        if not np.isfinite(out[step]).all():
            raise FloatingPointError(f"SFT loss became non-finite at step {step}; lower lr")
        if step < steps:
            opt.zero_grad()
            per_seed.sum().backward()
            opt.step()
    return out


def train_exact_stack(env: SequenceEnv, objectives, datas=None, *, stack: TransformerStack,
                      steps: int, lr: float, record=None, adam=(0.9, 0.999, 1e-8)
                      ) -> list[pd.DataFrame]:
    """:func:`~coverage_sim.torch_backend.train_exact` for every model of ``stack`` at once.

    Args:
      env: an enumerable :class:`~coverage_sim.sequences.SequenceEnv` matching the models.
      objectives: one :class:`~coverage_sim.objectives.Objective` (or name) per model, or one for
        all.
      datas: offline :class:`~coverage_sim.data.PairData` per model, one for all, or ``None``.
      stack: the models, trained in place.
      steps: Adam steps.
      lr: Adam step size.
      record: record schedule as in :func:`coverage_sim.train`.
      adam: Adam's ``(beta1, beta2, eps)``.

    Returns:
      One history per model, with the columns of ``train_exact``'s (``step``, ``loss`` and the
      exact metrics).
    """
    env = _check_env(env)
    S = len(stack)
    _check_env_for(env, stack.model(0))
    objs = list(objectives) if isinstance(objectives, (list, tuple)) else [objectives] * S
    data = list(datas) if isinstance(datas, (list, tuple)) else [datas] * S
    if len(objs) != S or len(data) != S:
        raise ValueError(f"objectives and datas must have one entry per model ({S})")
    objs = [_check_exact_objective(env, _as_objective(o)) for o in objs]
    steps = check_int(steps, "steps")
    lr = check_positive(lr, "lr")
    rec = _record_steps(record, steps)
    rec_set = set(rec.tolist())
    bandit = env.bandit
    eval_data = _default_eval_data(env, None)
    tokens = torch.tensor(env.tokens, device=stack.device)
    b1, b2, eps = (float(a) for a in adam)
    opt = torch.optim.Adam(list(stack.params.values()), lr=lr, betas=(b1, b2), eps=eps)
    rows = [[] for _ in range(S)]
    for step in range(steps + 1):
        learn = step < steps
        lp = stack_logp_table(stack, tokens)
        lp_np = lp.detach().double().cpu().numpy()
        grads = np.empty_like(lp_np)
        for s in range(S):
            loss, g = objs[s].loss_and_grad(bandit, bandit.like_ref(lp_np[s]), data[s])
            _check_finite_loss(float(loss), step, objs[s].name, lr)
            grads[s] = bandit.as2d(g, "grad")
            if step in rec_set:
                rows[s].append({"step": step, "loss": float(loss),
                                **_exact_metrics(env, lp_np[s], objs[s].beta, data[s], eval_data,
                                                 objs[s].params.get("reward"))})
        if learn:
            opt.zero_grad()
            lp.backward(torch.as_tensor(grads, dtype=lp.dtype, device=lp.device))
            opt.step()
    return [pd.DataFrame(r) for r in rows]
