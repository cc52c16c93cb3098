"""A minGPT-sized causal transformer policy over token sequences, in plain torch.

The policy of the token-sequence experiments of Tajwar et al. 2024 (arXiv:2404.14367, their
``transformer_*.py``): minGPT's "gpt-nano" (3 layers, 3 heads, 48-dimensional embeddings, no
dropout), about 95k parameters at vocab 100 and 9 response tokens. The input is one prompt token
``x`` followed by the response ``y_1 .. y_L``; the model outputs ``log pi(y_t | x, y_<t)`` for the
``L`` response positions, so ``log pi(y | x) = sum_t log pi(y_t | x, y_<t)`` is exactly
normalised over the ``vocab ** length`` responses of each prompt.

Conventions:
  * prompts are ids in ``range(n_prompts)`` with their own embedding table (they are not response
    tokens); responses are ids in ``range(vocab)``; the input at position ``t`` is the prompt for
    ``t = 0`` and ``y_t`` for ``t >= 1``, with learned position embeddings for ``t < length``;
  * each block is pre-LayerNorm causal self-attention then a pre-LayerNorm GELU MLP of width
    ``4 n_embd``, both residual (minGPT); a final LayerNorm and a bias-free linear head to the
    vocabulary;
  * initialisation as minGPT: weights N(0, 0.02^2), residual projections N(0, (0.02/sqrt(2
    n_layer))^2), biases 0, LayerNorms (1, 0), drawn from a CPU ``torch.Generator`` seeded
    explicitly and rounded to float32, so a seed gives the same parameters on every device and
    dtype, whatever torch's default dtype, and the global generator is not touched;
  * float64 by default (the tests check normalisation to 1e-12); float32 is supported (see
    ``benchmarks/README.md`` for its speed).

:func:`sft_to_reference` fits the model to an environment's reference policy by minimising
``KL(pi_ref || pi)`` (Tajwar et al. start every run from such an SFT policy). The objectives of
:mod:`coverage_sim.torch_backend` still use the environment's exact ``pi_ref`` as the reference, not
the SFT'd model.

Examples:
  >>> import torch
  >>> from coverage_sim.transformer import CausalTransformer, TransformerConfig, sample
  >>> model = CausalTransformer(TransformerConfig(vocab=100, n_prompts=1, length=9), seed=0)
  >>> sum(p.numel() for p in model.parameters())
  94992
  >>> gen = torch.Generator().manual_seed(0)
  >>> tuple(sample(model, torch.zeros(4, dtype=torch.long), gen).shape)
  (4, 9)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from coverage_sim._validation import check_int, check_positive

__all__ = ["TransformerConfig", "CausalTransformer", "sequence_logp", "token_logp",
           "sequence_logp_table", "sample", "sample_reference", "sft_to_reference"]

_INIT_STD = 0.02


@dataclass(frozen=True)
class TransformerConfig:
    """Sizes of a :class:`CausalTransformer`; defaults are minGPT's gpt-nano.

    Attributes:
      vocab: number of response tokens, ``>= 2``.
      n_prompts: number of prompt ids, ``>= 1``.
      length: response length ``L``, ``>= 1`` (also the number of input positions).
      n_layer: transformer blocks (default 3).
      n_head: attention heads per block (default 3); must divide ``n_embd``.
      n_embd: embedding width (default 48).
      dropout: must be 0: torch's dropout draws from the global random state, which this package
        never uses.
    """

    vocab: int
    n_prompts: int
    length: int
    n_layer: int = 3
    n_head: int = 3
    n_embd: int = 48
    dropout: float = 0.0

    def __post_init__(self):
        for name, minimum in (("vocab", 2), ("n_prompts", 1), ("length", 1), ("n_layer", 1),
                              ("n_head", 1), ("n_embd", 1)):
            object.__setattr__(self, name, check_int(getattr(self, name), name, minimum=minimum))
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd must be a multiple of n_head={self.n_head}, "
                             f"got n_embd={self.n_embd}")
        dropout = check_positive(self.dropout, "dropout", allow_zero=True)
        if dropout != 0.0:
            raise ValueError(f"dropout must be 0 (torch's dropout uses the global random state), "
                             f"got {self.dropout!r}")
        object.__setattr__(self, "dropout", 0.0)


class _SelfAttention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, dtype=torch.float32)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, dtype=torch.float32)

    def forward(self, x, cache=None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (z.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for z in (q, k, v))
        causal = True
        if cache is not None:
            # Incremental decoding: one new position attends to every cached one, no mask needed.
            if cache:
                if T != 1:
                    raise AssertionError("incremental decoding takes one position at a time")
                k = torch.cat([cache[0], k], dim=2)
                v = torch.cat([cache[1], v], dim=2)
                causal = False
            cache[:] = [k, v]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal and T > 1)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class _Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd, dtype=torch.float32)
        self.attn = _SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd, dtype=torch.float32)
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, dtype=torch.float32)
        self.fc_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, dtype=torch.float32)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln1(x), cache)
        return x + self.fc_proj(F.gelu(self.fc(self.ln2(x))))


class CausalTransformer(nn.Module):
    """Causal transformer policy ``pi(y | x)`` over ``vocab ** length`` responses per prompt.

    Args:
      config: the sizes.
      seed: seed of the CPU ``torch.Generator`` the initial parameters are drawn from (an int), or
        such a generator itself.
      dtype: parameter dtype, ``torch.float64`` (default) or ``torch.float32``.
      device: where the parameters live (default CPU; see
        :func:`coverage_sim.torch_backend.default_device`).

    Calling the model, ``model(prompts, prefix)`` with ``prompts`` ``(B,)`` and ``prefix``
    ``(B, t)`` (``0 <= t < length``) returns ``(B, t + 1, vocab)`` next-token log-probs after each
    prefix position. Prefer :func:`token_logp` / :func:`sequence_logp`, which validate their
    inputs.
    """

    def __init__(self, config: TransformerConfig, *, seed=0, dtype=torch.float64, device=None):
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise ValueError(f"config must be a TransformerConfig, got {type(config).__name__}")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
        self.config = config
        d = config.n_embd
        # Built without storage (torch's own initialisers would draw from the global generator)
        # and in float32 whatever torch's default dtype: _init_parameters sets every parameter.
        with torch.device("meta"):
            self.prompt_emb = nn.Embedding(config.n_prompts, d, dtype=torch.float32)
            self.token_emb = nn.Embedding(config.vocab, d, dtype=torch.float32)
            self.pos_emb = nn.Embedding(config.length, d, dtype=torch.float32)
            self.blocks = nn.ModuleList(_Block(config) for _ in range(config.n_layer))
            self.ln_f = nn.LayerNorm(d, dtype=torch.float32)
            self.head = nn.Linear(d, config.vocab, bias=False, dtype=torch.float32)
        self.to_empty(device="cpu")
        self._init_parameters(seed)
        self.to(dtype=dtype, device=device)

    def _init_parameters(self, seed):
        if isinstance(seed, torch.Generator):
            if seed.device.type != "cpu":
                raise ValueError(f"seed must be an int or a CPU torch.Generator, got a generator "
                                 f"on {seed.device}")
            gen = seed
        else:
            gen = torch.Generator().manual_seed(check_int(seed, "seed"))
        resid_std = _INIT_STD / math.sqrt(2 * self.config.n_layer)
        with torch.no_grad():
            # Drawn in float64 on the CPU in a fixed order and rounded to float32 (the parameters'
            # dtype here): a seed gives the same initial model on every device, in float32 and in
            # float64, whatever torch's default dtype (the float64 model's initial weights were
            # float32 numbers only when the default was float32, so its runs depended on it).
            for name, p in self.named_parameters():
                if name.startswith("ln") or ".ln" in name:
                    p.fill_(1.0 if name.endswith("weight") else 0.0)
                elif name.endswith("bias"):
                    p.zero_()
                else:
                    std = resid_std if name.endswith("proj.weight") else _INIT_STD
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * std)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.head.weight.dtype

    def _embed(self, prompts, prefix, start: int = 0):
        """Input embeddings of positions ``start .. start + T``; position 0 is the prompt."""
        parts = []
        if start == 0:
            parts.append(self.prompt_emb(prompts)[:, None, :])
        if prefix.shape[1]:
            parts.append(self.token_emb(prefix))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        pos = torch.arange(start, start + x.shape[1], device=x.device)
        return x + self.pos_emb(pos)

    def _head(self, x):
        return torch.log_softmax(self.head(self.ln_f(x)), dim=-1)

    def forward(self, prompts, prefix):
        x = self._embed(prompts, prefix)
        for block in self.blocks:
            x = block(x)
        return self._head(x)


# ------------------------------------------------------------------------------------------------
# input checks

def _check_model(model):
    if not isinstance(model, CausalTransformer):
        raise ValueError(f"model must be a CausalTransformer, got {type(model).__name__}")


def _as_index(value, name: str, device, ndim: int, bound: int) -> torch.Tensor:
    """An integer tensor on ``device`` with ``ndim`` dims and entries in ``[0, bound)``."""
    if isinstance(value, torch.Tensor):
        t = value
    else:
        arr = np.asarray(value)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
            raise ValueError(f"{name} must be an integer array, got dtype {arr.dtype}")
        t = torch.as_tensor(arr.astype(np.int64))
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {t.dtype}")
    if t.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(t.shape)}")
    t = t.to(device=device, dtype=torch.long)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= bound):
        bad = int(t.min()) if int(t.min()) < 0 else int(t.max())
        raise ValueError(f"{name} entries must lie in [0, {bound}), got {bad}")
    return t


def _check_prompts_tokens(model, prompts, tokens):
    cfg = model.config
    p = _as_index(prompts, "prompts", model.device, 1, cfg.n_prompts)
    y = _as_index(tokens, "tokens", model.device, 2, cfg.vocab)
    if y.shape != (p.shape[0], cfg.length):
        raise ValueError(f"tokens must have shape (len(prompts), length) = "
                         f"{(p.shape[0], cfg.length)}, got shape {tuple(y.shape)}")
    return p, y


def _check_generator(generator, device: torch.device) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator (seeded explicitly), got "
                         f"{type(generator).__name__}")
    if generator.device.type != device.type:
        raise ValueError(f"generator must live on the model's device {device}, got a generator on "
                         f"{generator.device}")
    return generator


# ------------------------------------------------------------------------------------------------
# log-probabilities

def _token_logp(model, prompts, tokens):
    return model(prompts, tokens[:, :-1])


def _sequence_logp(model, prompts, tokens):
    lp = _token_logp(model, prompts, tokens)
    return lp.gather(2, tokens[:, :, None])[:, :, 0].sum(dim=1)


def token_logp(model: CausalTransformer, prompts, tokens) -> torch.Tensor:
    """Next-token log-probs ``log pi(. | x, y_<t)`` at every response position.

    Args:
      model: the policy.
      prompts: ``(B,)`` prompt ids in ``range(n_prompts)`` (tensor or array).
      tokens: ``(B, length)`` response tokens in ``range(vocab)``; only ``y_1 .. y_{L-1}`` are read.

    Returns:
      ``(B, length, vocab)`` log-probs on the model's device and dtype, differentiable.

    Raises:
      ValueError: wrong shapes, non-integer or out-of-range ids.
    """
    _check_model(model)
    return _token_logp(model, *_check_prompts_tokens(model, prompts, tokens))


def sequence_logp(model: CausalTransformer, prompts, tokens) -> torch.Tensor:
    """``log pi(y | x) = sum_t log pi(y_t | x, y_<t)`` for a batch of (prompt, response) pairs.

    Args:
      model: the policy.
      prompts: ``(B,)`` prompt ids.
      tokens: ``(B, length)`` responses.

    Returns:
      ``(B,)`` log-probs, differentiable, on the model's device and dtype.

    Raises:
      ValueError: wrong shapes, non-integer or out-of-range ids.

    Examples:
      >>> import torch
      >>> from coverage_sim.transformer import CausalTransformer, TransformerConfig, sequence_logp
      >>> m = CausalTransformer(TransformerConfig(vocab=2, n_prompts=1, length=2, n_layer=1,
      ...                                         n_head=1, n_embd=4))
      >>> y = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
      >>> lp = sequence_logp(m, torch.zeros(4, dtype=torch.long), y).detach()
      >>> round(float(lp.exp().sum()), 12)
      1.0
    """
    _check_model(model)
    return _sequence_logp(model, *_check_prompts_tokens(model, prompts, tokens))


def sequence_logp_table(model: CausalTransformer, tokens, *, chunk_size: int = 8192
                        ) -> torch.Tensor:
    """``log pi(y | x)`` for every prompt ``x`` and every row ``y`` of ``tokens``.

    Args:
      model: the policy.
      tokens: ``(N, length)`` responses, e.g. every response
        (``coverage_sim.sequences.enumerate_sequences``).
      chunk_size: sequences per forward pass (bounds the activation memory).

    Returns:
      ``(n_prompts, N)`` log-probs; differentiable unless called under ``torch.no_grad()``.
    """
    _check_model(model)
    chunk_size = check_int(chunk_size, "chunk_size", minimum=1)
    X = model.config.n_prompts
    y = _as_index(tokens, "tokens", model.device, 2, model.config.vocab)
    if y.shape[1] != model.config.length:
        raise ValueError(f"tokens must have shape (N, {model.config.length}), "
                         f"got shape {tuple(y.shape)}")
    n = y.shape[0]
    prompts = torch.arange(X, device=model.device).repeat_interleave(n)
    all_y = y.repeat(X, 1)
    parts = [_sequence_logp(model, prompts[s:s + chunk_size], all_y[s:s + chunk_size])
             for s in range(0, X * n, chunk_size)]
    return torch.cat(parts).view(X, n)


# ------------------------------------------------------------------------------------------------
# sampling

@torch.no_grad()
def _decode(model, prompts, choose):
    """Left-to-right decoding with cached keys/values; ``choose(t, logp (B, vocab))`` -> (B,)."""
    B, L = prompts.shape[0], model.config.length
    out = torch.empty(B, L, dtype=torch.long, device=model.device)
    caches = [[] for _ in model.blocks]
    x = model._embed(prompts, out[:, :0])
    for t in range(L):
        for block, cache in zip(model.blocks, caches):
            x = block(x, cache)
        out[:, t] = choose(t, model._head(x[:, -1]))
        if t + 1 < L:
            x = model._embed(prompts, out[:, t:t + 1], start=t + 1)
    return out


def _sample(model, prompts, generator):
    return _decode(model, prompts,
                   lambda t, lp: torch.multinomial(lp.exp(), 1, generator=generator)[:, 0])


def sample(model: CausalTransformer, prompts, generator: torch.Generator) -> torch.Tensor:
    """Ancestral samples ``y ~ pi(. | x)``, one response per prompt (no gradient).

    Decodes one position at a time with cached keys and values.

    Args:
      model: the policy.
      prompts: ``(B,)`` prompt ids.
      generator: a ``torch.Generator`` on the model's device, seeded by the caller.

    Returns:
      ``(B, length)`` int64 tokens on the model's device.

    Raises:
      ValueError: bad prompts, or a generator that is missing or on another device.
    """
    _check_model(model)
    p = _as_index(prompts, "prompts", model.device, 1, model.config.n_prompts)
    return _sample(model, p, _check_generator(generator, model.device))


def _check_env_for(env, model):
    cfg = model.config
    got = tuple(getattr(env, a, None) for a in ("vocab", "length", "n_prompts"))
    if got != (cfg.vocab, cfg.length, cfg.n_prompts):
        raise ValueError(f"env (vocab, length, n_prompts) = {got} does not match the model's "
                         f"config {(cfg.vocab, cfg.length, cfg.n_prompts)}")


@torch.no_grad()
def sample_reference(env, prompts: torch.Tensor, generator: torch.Generator, *,
                     return_tables: bool = False):
    """Ancestral samples from a sequence environment's reference ``pi_ref(. | x)``.

    Args:
      env: a :class:`coverage_sim.sequences.SequenceEnv` (its ``ref_next_logp`` is called once per
        position).
      prompts: ``(B,)`` int64 tensor of prompt ids; samples are put on its device.
      generator: a ``torch.Generator`` on the same device as ``prompts``.
      return_tables: also return the ``(B, length, vocab)`` float64 reference next-token log-probs
        along each sample (used by :func:`sft_to_reference`).

    Returns:
      ``(B, length)`` int64 tokens (and the tables when asked).
    """
    device = prompts.device
    _check_generator(generator, device)
    B, L = prompts.shape[0], env.length
    prompts_np = prompts.cpu().numpy()
    out = np.empty((B, L), dtype=np.int64)
    tables = []
    for t in range(L):
        lp = np.asarray(env.ref_next_logp(prompts_np, out[:, :t]), dtype=np.float64)
        lp_t = torch.as_tensor(lp, device=device)
        tables.append(lp_t)
        out[:, t] = torch.multinomial(lp_t.exp(), 1, generator=generator)[:, 0].cpu().numpy()
    tokens = torch.as_tensor(out, device=device)
    return (tokens, torch.stack(tables, dim=1)) if return_tables else tokens


def sft_to_reference(model: CausalTransformer, env, *, steps: int = 200, lr: float = 1e-2,
                     batch_size: int | None = None, generator: torch.Generator | None = None
                     ) -> np.ndarray:
    """SFT-initialise ``model`` to the environment's reference: minimise ``KL(pi_ref || pi)``.

    Tajwar et al. (arXiv:2404.14367) start every run from a policy fitted to ``pi_data``; here the
    target is ``env``'s ``pi_ref``, by Adam on the forward (maximum-likelihood, mode-covering) KL,
    summed over positions: ``E_x E_{y ~ pi_ref} sum_t KL(pi_ref(.|x,y_<t) || pi(.|x,y_<t))``, which
    by the chain rule is the sequence-level ``E_x KL(pi_ref(.|x) || pi(.|x))``. With
    ``batch_size=None`` the loss is exact over every response (needs ``env.enumerable``); otherwise
    each step draws ``batch_size`` fresh prompts ``x ~ env.prompt_weights`` and responses from
    ``pi_ref`` and uses the per-token form with the full next-token distributions (lower variance
    than the sequence log-likelihood). Objectives keep using ``env``'s exact ``pi_ref``.

    Args:
      model: the policy, updated in place.
      env: a :class:`coverage_sim.sequences.SequenceEnv` matching the model's config.
      steps: Adam steps.
      lr: Adam learning rate.
      batch_size: responses per step, or ``None`` for the exact enumerated loss.
      generator: a seeded ``torch.Generator`` on the model's device (needed when ``batch_size`` is
        given).

    Returns:
      ``(steps + 1,)`` loss per step (at the parameters before each update, the last one after
      all updates): the exact KL, or its minibatch estimate.

    Raises:
      ValueError: env does not match the model, no generator for the sampled form, or a
        non-enumerable env for the exact form.
    """
    _check_model(model)
    _check_env_for(env, model)
    steps = check_int(steps, "steps")
    lr = check_positive(lr, "lr")
    device, dtype = model.device, model.dtype
    if batch_size is None:
        if not env.enumerable:
            raise ValueError(f"env with vocab**length = {env.vocab}**{env.length} responses is not "
                             "enumerable; pass batch_size for the sampled SFT loss")
        bandit = env.bandit
        ref = bandit.ref2d
        rho = np.asarray(env.prompt_weights, dtype=np.float64)
        weight = torch.as_tensor(rho[:, None] * ref, dtype=dtype, device=device)
        with np.errstate(divide="ignore"):
            const = float(np.sum(rho[:, None] * np.where(ref > 0, ref * np.log(ref), 0.0)))
        tokens = torch.tensor(env.tokens, device=device)

        def loss_fn():
            return const - (weight * sequence_logp_table(model, tokens)).sum()
    else:
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        _check_generator(generator, device)
        prompt_w = torch.tensor(np.asarray(env.prompt_weights, dtype=np.float64), device=device)

        def loss_fn():
            prompts = torch.multinomial(prompt_w, batch_size, replacement=True, generator=generator)
            y, ref_lp = sample_reference(env, prompts, generator, return_tables=True)
            ref_lp = ref_lp.to(dtype)
            lp = _token_logp(model, prompts, y)
            # xlogy-safe: reference tokens of probability 0 contribute nothing.
            terms = torch.where(ref_lp > -np.inf, ref_lp.exp() * (ref_lp - lp), 0.0)
            return terms.sum() / batch_size

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = np.empty(steps + 1)
    for step in range(steps + 1):
        loss = loss_fn()
        losses[step] = float(loss.detach())
        if not np.isfinite(losses[step]):
            raise FloatingPointError(f"SFT loss became {losses[step]} at step {step}; lower lr")
        if step < steps:
            opt.zero_grad()
            loss.backward()
            opt.step()
    return losses
