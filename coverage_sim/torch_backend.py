"""Torch backend: train a transformer policy on a token-sequence environment, exactly or sampled.

Two modes, both returning a :class:`TorchRun` with a tidy ``history``:

* **exact** (:func:`train_exact`, :func:`exact_backward`): every response of every prompt is
  enumerated (``env.tokens``, ``vocab ** length <= 2**16``), the model gives ``log pi`` as an
  ``(X, N)`` table, and the loss and its gradient with respect to ``log pi`` come from the numba
  core, ``objective.loss_and_grad(env.bandit, logp, data)``; ``logp.backward(grad)`` pulls it back
  to the parameters. Objectives are defined once, in :mod:`coverage_sim.objectives`; every one of
  them except ``iterative_dpo`` works unchanged.
* **sampled** (:func:`train_sampled`, :func:`draw_batch`, :func:`sampled_backward`): minibatches,
  for sequence spaces too large to enumerate. Each step draws ``batch_size`` prompts
  ``x ~ env.prompt_weights`` and a *group* of responses per prompt from a sampler (the reference or
  a behaviour policy for offline losses, the current policy, detached, for online ones), with their
  gold rewards ``env.reward_of`` and reference log-probs ``env.ref_logp``; a :class:`SampledLoss`
  labels the group once and maps the model's log-probs of the group to a scalar. Built in:

  - :class:`PairwiseLoss` -- any offline pairwise loss of :data:`coverage_sim.losses.PAIR_LOSSES`
    (offline DPO, IPO, SLiC, ...) and online DPO/IPO (Guo et al. arXiv:2402.04792; Calandriello
    et al. arXiv:2403.08635); per-pair losses from :func:`coverage_sim.losses.pair_loss`, labels
    Bradley-Terry ``sigma(r(y) - r(y'))`` or deterministic (ties 1/2) on the gold reward;
  - :class:`ReinforceLoss` -- KL-regularised RLHF (arXiv:2203.02155) by the score-function
    estimator with a leave-one-out baseline (RLOO, Ahmadian et al. arXiv:2402.14740);
  - :class:`BestOfNLoss` -- filtered behaviour cloning / Best-of-N distillation with the optional
    push-down-worst term of Tajwar et al. (arXiv:2404.14367, F3).

  With ``n_data`` a fixed offline dataset is drawn once and minibatches are taken from it (finite
  offline data); without it every step draws fresh samples, and the minibatch gradient is an
  unbiased estimate of the exact-mode gradient of the same objective (tested).

The reference policy of every objective is the environment's exact ``pi_ref`` (not an SFT'd copy of
the model; see :func:`coverage_sim.transformer.sft_to_reference` to start near it). Randomness comes
only from ``torch.Generator`` objects seeded from ``seed`` (initialisation, training draws and
evaluation draws use separate streams); float64 by default.

Examples:
  >>> import coverage_sim as cs
  >>> from coverage_sim.sequences import tajwar_token_env
  >>> from coverage_sim.torch_backend import train_exact
  >>> env = tajwar_token_env(length=2, vocab=3)
  >>> run = train_exact(env, cs.objective("rlhf", beta=0.5), steps=5, lr=1e-2)
  >>> list(run.history.columns[:4])
  ['step', 'loss', 'reward', 'kl']
"""

from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
from scipy.special import expit

from coverage_sim import _threads, metrics
from coverage_sim._progress import StepProgress
from coverage_sim._validation import check_choice, check_in_range, check_int, check_positive
from coverage_sim.data import PairData, offline_pairs
from coverage_sim.env import optimal_policy
from coverage_sim.losses import get_pair_loss, pair_loss
from coverage_sim.metrics import policy_metrics
from coverage_sim.objectives import Objective, objective as make_objective
from coverage_sim.sequences import SequenceEnv
from coverage_sim.train import _record_steps, package_versions
from coverage_sim.transformer import (CausalTransformer, TransformerConfig, _check_env_for,
                                      _check_generator, _sample, _sequence_logp, sample_reference,
                                      sequence_logp_table)

__all__ = ["default_device", "reproducible", "TorchRun", "SequenceBatch", "SampledLoss",
           "PairwiseLoss", "ReinforceLoss", "BestOfNLoss", "sampled_loss", "draw_batch",
           "sampled_backward", "exact_backward", "train_exact", "train_sampled"]

OPTIMIZERS = ("adam", "sgd")
#: Up to this many responses the default held-out ranking pairs (pi_ref x pi_ref) are evaluated.
_RANKING_MAX_K = 1000
#: Above this many responses the exact metrics avoid (X, N, N) arrays.
_PAIRWISE_MAX_K = 2048
#: The win rate is then summed over distinct reward values, if there are at most this many.
_MAX_REWARD_VALUES = 4096
#: Models below this many parameters train on one torch thread by default: their ops are too small
#: to split (every transformer preset here, gpt-nano to gpt-micro, is below it).
_SMALL_MODEL_PARAMETERS = 2_000_000


def default_device(device=None) -> torch.device:
    """The device to train on: ``device`` if given, else CUDA when available, else the CPU.

    Args:
      device: ``None``, or anything ``torch.device`` accepts (``"cpu"``, ``"cuda:1"``, a device).

    Returns:
      A ``torch.device`` (nothing is allocated).

    Raises:
      ValueError: ``device`` is not a valid device description, or asks for CUDA without it.

    Examples:
      >>> default_device("cpu")
      device(type='cpu')
    """
    if device is not None:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device must be a torch device or a string such as 'cpu' or "
                             f"'cuda:0', got {device!r}") from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asks for CUDA, but this torch build or machine "
                             f"has none (torch.cuda.is_available() is False); use 'cpu'")
        return dev
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


@contextlib.contextmanager
def reproducible(threads: int | None = 1, deterministic: bool | None = True):
    """Fix torch's intra-op thread count and deterministic algorithms inside the block.

    What makes a torch run bit-reproducible on one machine, besides the seeded generators: the
    intra-op thread count (a parallel reduction sums in a thread-dependent order) and, on CUDA,
    deterministic kernels (``torch.use_deterministic_algorithms``; cuBLAS then needs
    ``CUBLAS_WORKSPACE_CONFIG``, set here when unset). On exit the caller's settings are restored,
    so the global state of a process that calls this is unchanged.

    Args:
      threads: intra-op threads inside the block (``>= 1``), or ``None`` to leave them.
      deterministic: ``True``/``False`` sets ``torch.use_deterministic_algorithms`` inside the
        block (``warn_only=True``: an op without a deterministic kernel, which exists on CUDA only,
        warns instead of failing); ``None`` leaves it.

    Examples:
      >>> import torch
      >>> from coverage_sim.torch_backend import reproducible
      >>> before = torch.get_num_threads()
      >>> with reproducible(threads=1):
      ...     torch.get_num_threads()
      1
      >>> torch.get_num_threads() == before
      True
    """
    if threads is not None:
        threads = check_int(threads, "threads", minimum=1)
    if deterministic is not None and not isinstance(deterministic, bool):
        raise ValueError(f"deterministic must be True, False or None, got {deterministic!r}")
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        if threads is not None and threads != old_threads:
            torch.set_num_threads(threads)
        if deterministic is not None:
            if deterministic:
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(deterministic, warn_only=True)
        yield
    finally:
        if threads is not None and torch.get_num_threads() != old_threads:
            torch.set_num_threads(old_threads)
        if deterministic is not None:
            torch.use_deterministic_algorithms(old_det, warn_only=old_warn)


@dataclass(frozen=True, eq=False)
class TorchRun:
    """The result of a torch-backend training run.

    Attributes:
      env: the :class:`~coverage_sim.sequences.SequenceEnv`.
      objective: the :class:`~coverage_sim.objectives.Objective` (exact mode, or the one a sampled
        loss was built from), or the :class:`SampledLoss` passed to :func:`train_sampled`.
      model: the trained :class:`~coverage_sim.transformer.CausalTransformer`.
      history: tidy DataFrame, one row per recorded step: ``step``, ``loss`` and the metrics (see
        :func:`train_exact` and :func:`train_sampled`).
      policy: the final policy over every response, ``(n_prompts, vocab ** length)`` in the order of
        ``env.tokens``, when the metrics are exact; else ``None``.
      config: mode, objective, parameters, model config, optimiser, seed, schedule, device, dtype
        and package versions.
    """

    env: SequenceEnv
    objective: object
    model: CausalTransformer
    history: pd.DataFrame
    policy: np.ndarray | None
    config: dict = field(repr=False)

    def __repr__(self) -> str:
        last = self.history.iloc[-1]
        name = getattr(self.objective, "name", type(self.objective).__name__)
        return (f"TorchRun({self.config['mode']}, {name!r} on {self.env.name!r}, "
                f"steps={int(last['step'])}, reward={last['reward']:.4g}, kl={last['kl']:.4g})")


# ------------------------------------------------------------------------------------------------
# shared checks

def _check_env(env):
    if not isinstance(env, SequenceEnv):
        raise ValueError(f"env must be a coverage_sim.sequences.SequenceEnv, got "
                         f"{type(env).__name__}")
    return env


def _as_objective(obj) -> Objective:
    if isinstance(obj, str):
        obj = make_objective(obj)
    if not isinstance(obj, Objective):
        raise ValueError(f"objective must be an Objective or a name, got {type(obj).__name__}")
    return obj


def _check_dtype(dtype):
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    return dtype


def _make_model(env, model, seed, device, dtype) -> CausalTransformer:
    """The model to train: a fresh gpt-nano for ``env`` or ``model`` moved to device/dtype."""
    device = default_device(device)
    if model is None:
        cfg = TransformerConfig(vocab=env.vocab, n_prompts=env.n_prompts, length=env.length)
        return CausalTransformer(cfg, seed=seed, dtype=_check_dtype(dtype or torch.float64),
                                 device=device)
    if not isinstance(model, CausalTransformer):
        raise ValueError(f"model must be a CausalTransformer or None, got {type(model).__name__}")
    _check_env_for(env, model)
    return model.to(device=device, dtype=_check_dtype(dtype or model.dtype))


def _make_optimizer(model, optimizer, lr, adam):
    check_choice(optimizer, "optimizer", OPTIMIZERS)
    lr = check_positive(lr, "lr")
    if optimizer == "adam":
        b1, b2, eps = (float(a) for a in adam)
        return torch.optim.Adam(model.parameters(), lr=lr, betas=(b1, b2), eps=eps)
    return torch.optim.SGD(model.parameters(), lr=lr)


def _seeds(seed) -> tuple[int, int, int]:
    """Independent seeds for initialisation, training draws and evaluation draws."""
    seed = check_int(seed, "seed")
    children = np.random.SeedSequence(seed).spawn(3)
    return tuple(int(c.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)) for c in children)


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _torch_threads(threads, model) -> int:
    """Intra-op threads for a training call: ``threads``, else 1 for a small model, else the free
    cores (:func:`coverage_sim._threads.thread_budget`) up to torch's current setting.

    A step of a small transformer is many tiny ops, each a parallel region: two threads gain little
    on an idle machine and lose 3-10x on a busy one (benchmarks/README.md).
    """
    if threads is not None:
        return check_int(threads, "threads", minimum=1)
    if sum(p.numel() for p in model.parameters()) < _SMALL_MODEL_PARAMETERS:
        return 1
    return _threads.thread_budget(torch.get_num_threads())


def _config(mode, env, objective, model, steps, lr, optimizer, adam, seed, rec, device, extra):
    if isinstance(objective, Objective):
        name = objective.name
        params = {k: ("<array>" if isinstance(v, np.ndarray) else v)
                  for k, v in objective.params.items()}
    else:
        name, params = objective.name, objective.describe()
    cfg = model.config
    return {"mode": mode, "env": env.name, "vocab": env.vocab, "length": env.length,
            "n_prompts": env.n_prompts, "objective": name, "params": params,
            "model": {"n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd,
                      "n_parameters": sum(p.numel() for p in model.parameters())},
            "steps": steps, "lr": lr, "optimizer": optimizer, "adam": list(adam), "seed": seed,
            "record_steps": rec.tolist(), "device": str(device), "dtype": str(model.dtype),
            **extra, "versions": package_versions()}


def _check_finite_loss(loss: float, step: int, name: str, lr: float):
    if not np.isfinite(loss):
        raise FloatingPointError(f"training {name!r} diverged: loss {loss} at step {step} "
                                 f"with lr={lr}; lower lr")


def _exact_metrics(env, logp2d: np.ndarray, beta, data, eval_data, proxy) -> dict:
    """Exact metrics of one policy given as ``(X, N)`` log-probs over ``env.tokens``."""
    bandit = env.bandit
    lp = bandit.like_ref(logp2d)[None]
    pi = np.exp(lp)
    if bandit.n_responses <= _PAIRWISE_MAX_K:
        m = policy_metrics(bandit, pi, beta=beta, data=data, eval_data=eval_data,
                           proxy_reward=proxy, log_policies=lp)
        return {k: float(v[0]) for k, v in m.items()}
    # policy_metrics' win rate builds an (X, N, N) preference array; here the O(N) metrics come
    # from coverage_sim.metrics and the win rate is summed over distinct reward values instead.
    out = {"reward": metrics.expected_reward(bandit, pi), "kl": metrics.kl_divergence(
        bandit, pi, bandit.ref), "kl_ref": metrics.kl_divergence(bandit, bandit.ref, pi),
        "entropy": metrics.entropy(bandit, pi), "win_rate": _grouped_win_rate(bandit, pi[0])}
    if proxy is not None:
        out["proxy_reward"] = metrics.expected_reward(bandit, pi, proxy)
    if beta is not None:
        opt = optimal_policy(bandit, beta)
        out["tv_to_opt"] = metrics.tv_distance(bandit, pi, opt)
        out["kl_to_opt"] = metrics.kl_divergence(bandit, pi, opt)
    if data is not None:
        out["mass_off_support"] = metrics.mass_off_support(bandit, pi, data)
    return {k: float(np.asarray(v).reshape(-1)[0]) for k, v in out.items()}


def _grouped_win_rate(bandit, pi) -> float:
    """Gold Bradley-Terry win rate against pi_ref, summed over distinct rewards (NaN: too many)."""
    pi2, ref, r = bandit.as2d(pi, "pi"), bandit.ref2d, bandit.reward2d
    total = 0.0
    for x in range(bandit.n_contexts):
        vals, inv = np.unique(r[x], return_inverse=True)
        if vals.size > _MAX_REWARD_VALUES:
            return float("nan")
        p = np.bincount(inv, weights=pi2[x], minlength=vals.size)
        q = np.bincount(inv, weights=ref[x], minlength=vals.size)
        total += bandit.context_weights[x] * float(p @ expit(vals[:, None] - vals[None, :]) @ q)
    return total


def _default_eval_data(env, eval_data):
    if eval_data is not None or env.bandit.n_responses > _RANKING_MAX_K:
        return eval_data
    return offline_pairs(env.bandit, env.bandit.ref, labels="bradley_terry")


# ------------------------------------------------------------------------------------------------
# exact mode

def _exact_step(model, env, objective, data, tokens, chunk_size, backward: bool):
    """Loss (and, if ``backward``, parameter gradients) of the exact population objective."""
    bandit = env.bandit
    X, n = env.n_prompts, tokens.shape[0]
    if backward and X * n <= chunk_size:
        logp = sequence_logp_table(model, tokens, chunk_size=chunk_size)
        lp_np = logp.detach().cpu().numpy().astype(np.float64)
    else:
        with torch.no_grad():
            lp_np = sequence_logp_table(model, tokens, chunk_size=chunk_size).cpu().numpy()
        lp_np = lp_np.astype(np.float64)
        logp = None
    loss, g = objective.loss_and_grad(bandit, bandit.like_ref(lp_np), data)
    if backward:
        g_t = torch.as_tensor(bandit.as2d(g, "grad"), dtype=model.dtype, device=model.device)
        if logp is not None:
            logp.backward(g_t)
        else:
            # Too many sequences for one graph: recompute each chunk with a graph and pull its
            # slice of the gradient back (accumulates into .grad).
            flat_g = g_t.reshape(-1)
            prompts = torch.arange(X, device=model.device).repeat_interleave(n)
            all_y = tokens.repeat(X, 1)
            for s in range(0, X * n, chunk_size):
                part = _sequence_logp(model, prompts[s:s + chunk_size], all_y[s:s + chunk_size])
                part.backward(flat_g[s:s + chunk_size])
    return float(loss), lp_np


def exact_backward(model: CausalTransformer, env: SequenceEnv, objective, data=None, *,
                   chunk_size: int = 8192) -> float:
    """Exact population loss of ``objective`` at ``model``, gradients accumulated into ``.grad``.

    ``log pi`` of every (prompt, response) is computed by the model; the numba core's
    ``objective.loss_and_grad(env.bandit, logp, data)`` gives the loss and ``dL/dlog pi``, which is
    back-propagated. Online objectives hold their sampler (the current policy) fixed, as in the
    core.

    Args:
      model: the policy (its ``.grad`` fields are accumulated into, as ``loss.backward()`` would).
      env: an enumerable :class:`~coverage_sim.sequences.SequenceEnv` matching the model.
      objective: an :class:`~coverage_sim.objectives.Objective` or its name.
      data: offline :class:`~coverage_sim.data.PairData` over ``env.bandit``, when needed.
      chunk_size: sequences per forward pass; above it the gradient is pulled back chunk by chunk.

    Returns:
      The loss (float).

    Raises:
      ValueError: a non-enumerable env, a model that does not match env, ``iterative_dpo``, or
        missing/mismatched data.
    """
    env = _check_env(env)
    if not isinstance(model, CausalTransformer):
        raise ValueError(f"model must be a CausalTransformer, got {type(model).__name__}")
    _check_env_for(env, model)
    objective = _check_exact_objective(env, _as_objective(objective))
    chunk_size = check_int(chunk_size, "chunk_size", minimum=1)
    tokens = torch.tensor(env.tokens, device=model.device)
    return _exact_step(model, env, objective, data, tokens, chunk_size, True)[0]


def _check_exact_objective(env, objective):
    if not env.enumerable:
        raise ValueError(f"exact mode enumerates every response, but env has vocab**length = "
                         f"{env.vocab}**{env.length} > 2**16 responses; use train_sampled")
    if objective.refresh_every is not None:
        raise ValueError("iterative_dpo rebuilds its pairs between iterations and is not supported "
                         "by the torch backend; use coverage_sim.train")
    return objective


def train_exact(env: SequenceEnv, objective, data: PairData | None = None, *,
                model: CausalTransformer | None = None, steps: int, lr: float,
                optimizer: str = "adam", seed: int = 0, device=None, dtype=None, record=None,
                eval_data: PairData | None = None, adam=(0.9, 0.999, 1e-8),
                chunk_size: int = 8192, threads: int | None = None,
                progress: bool | None = None) -> TorchRun:
    """Train a transformer on the exact population objective (every response enumerated).

    Cost: one forward and backward pass over all ``n_prompts * vocab**length`` sequences per step,
    and the core's ``loss_and_grad``: O(X N) for pointwise objectives (rlhf, best_of_n, awr, ...),
    O(X N^2) time and memory for pairwise ones, so these are practical up to a few thousand
    responses.

    Args:
      env: an enumerable :class:`~coverage_sim.sequences.SequenceEnv`.
      objective: an :class:`~coverage_sim.objectives.Objective` or its name (any but
        ``iterative_dpo``); its reference is ``env``'s ``pi_ref``.
      data: offline pairs over ``env.bandit`` (:func:`coverage_sim.offline_pairs`), when needed.
      model: the policy, trained in place (pass a ``copy.deepcopy`` to keep it); default a fresh
        gpt-nano (:class:`~coverage_sim.transformer.TransformerConfig` defaults) initialised from
        ``seed``.
      steps: parameter updates.
      lr: learning rate.
      optimizer: ``"adam"`` (``torch.optim.Adam`` with ``adam = (beta1, beta2, eps)``) or ``"sgd"``.
      seed: seeds the initialisation of a default model; recorded in the config.
      device: see :func:`default_device`; the model is moved there.
      dtype: ``torch.float64`` (default for a new model) or ``torch.float32``; a given model is
        cast.
      record: record schedule as in :func:`coverage_sim.train`: ``None`` (about 50 log-spaced
        steps), a number of points, or a list of steps.
      eval_data: held-out pairs for ``ranking_accuracy`` (default ``pi_ref x pi_ref`` with gold
        Bradley-Terry labels, up to 1000 responses).
      adam: Adam's ``(beta1, beta2, eps)``.
      chunk_size: sequences per forward pass.
      threads: torch intra-op threads during the call (restored afterwards); default 1 for models
        under 2M parameters, else the cores free at the start (``COVERAGE_SIM_THREADS`` fixes it).
      progress: show a progress bar; default when the first step predicts more than a few seconds
        (``COVERAGE_SIM_PROGRESS=0`` turns automatic bars off).

    Returns:
      A :class:`TorchRun`; ``history`` has ``step``, ``loss`` (the exact loss at that step's
      parameters) and the exact metrics of :func:`coverage_sim.metrics.policy_metrics` on
      ``env.bandit`` (``reward``, ``kl`` = KL(pi||pi_ref), ``kl_ref``, ``entropy``, ``win_rate``,
      ``tv_to_opt``/``kl_to_opt`` when the objective has a beta, ...); ``policy`` is the final
      ``(n_prompts, N)`` policy.

    Raises:
      ValueError: invalid arguments (see :func:`exact_backward`).
      FloatingPointError: the loss became non-finite.
    """
    env = _check_env(env)
    objective = _check_exact_objective(env, _as_objective(objective))
    steps = check_int(steps, "steps")
    chunk_size = check_int(chunk_size, "chunk_size", minimum=1)
    init_seed, _, _ = _seeds(seed)
    device = default_device(device)
    model = _make_model(env, model, init_seed, device, dtype)
    opt = _make_optimizer(model, optimizer, lr, adam)
    rec = _record_steps(record, steps)
    eval_data = _default_eval_data(env, eval_data)
    tokens = torch.tensor(env.tokens, device=device)
    proxy = objective.params.get("reward")
    rows, final_lp = [], None
    rec_set = set(rec.tolist())
    n_threads = _torch_threads(threads, model)
    with _threads.torch_threads(n_threads), StepProgress(
            progress, steps, f"train_exact {objective.name}") as bar:
        for step in range(steps + 1):
            learn = step < steps
            if learn:
                opt.zero_grad()
            loss, lp = _exact_step(model, env, objective, data, tokens, chunk_size, learn)
            _check_finite_loss(loss, step, objective.name, lr)
            if step in rec_set:
                rows.append({"step": step, "loss": loss,
                             **_exact_metrics(env, lp, objective.beta, data, eval_data, proxy)})
            if learn:
                opt.step()
            final_lp = lp
            bar.step()
    config = _config("exact", env, objective, model, steps, float(lr), optimizer, adam, seed, rec,
                     device, {"data": None if data is None else {"source": data.source,
                                                                 "labels": data.labels,
                                                                 "n": data.n}})
    return TorchRun(env=env, objective=objective, model=model, history=pd.DataFrame(rows),
                    policy=np.exp(final_lp), config=config)


# ------------------------------------------------------------------------------------------------
# sampled mode: batches and losses

@dataclass(frozen=True, eq=False)
class SequenceBatch:
    """A minibatch of groups of responses, one group per prompt.

    Attributes:
      prompts: ``(B,)`` int64 prompt ids.
      tokens: ``(B, G, length)`` int64 responses; after labelling by a :class:`PairwiseLoss`,
        ``tokens[:, 0]`` is the chosen and ``tokens[:, 1]`` the rejected response.
      reward: ``(B, G)`` gold rewards ``env.reward_of``.
      ref_logp: ``(B, G)`` ``log pi_ref(y | x)``.
    """

    prompts: torch.Tensor
    tokens: torch.Tensor
    reward: torch.Tensor
    ref_logp: torch.Tensor

    @property
    def group_size(self) -> int:
        return self.tokens.shape[1]

    def take(self, index: torch.Tensor) -> "SequenceBatch":
        """The sub-batch of the groups at ``index`` (a 1-D index tensor)."""
        return SequenceBatch(self.prompts[index], self.tokens[index], self.reward[index],
                             self.ref_logp[index])

    def reorder(self, order: torch.Tensor) -> "SequenceBatch":
        """Permute each group: ``order`` ``(B, G)``; new slot g holds old slot ``order[b, g]``."""
        tok = self.tokens.gather(1, order[:, :, None].expand_as(self.tokens))
        return replace(self, tokens=tok, reward=self.reward.gather(1, order),
                       ref_logp=self.ref_logp.gather(1, order))


class SampledLoss:
    """The sampled-mode loss hook.

    A subclass sets ``name``, ``group_size`` (responses drawn per prompt) and ``online`` (draw from
    the current policy, detached, rather than the behaviour policy), may override :meth:`label`
    (called once per drawn batch, e.g. to draw preference labels) and implements :meth:`__call__`,
    mapping the model's ``(B, G)`` log-probs of the batch to a scalar whose gradient is the
    estimator. A user-defined subclass can be passed to :func:`train_sampled` directly.
    """

    name: str = "custom"
    group_size: int = 1
    online: bool = False

    def label(self, batch: SequenceBatch, generator: torch.Generator) -> SequenceBatch:
        return batch

    def __call__(self, logp: torch.Tensor, batch: SequenceBatch) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict:
        """Parameters for the run config."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


class PairwiseLoss(SampledLoss):
    """Pairs ``(y, y')`` per prompt, labelled on the gold reward, per-pair loss from ``losses``.

    Offline: ``(y, y') ~ mu x mu`` (``mu`` the behaviour policy of :func:`train_sampled`, default
    ``pi_ref``); online: ``(y, y') ~ pi_t x pi_t`` with the sampler held fixed (semi-gradient, as
    the core's online objectives). The winner is ``y`` with probability ``P = sigma(r(y) - r(y'))``
    (``"bradley_terry"``) or ``1[r(y) > r(y')]`` with ties 1/2 (``"deterministic"``), after label
    noise ``P -> (1 - eps) P + eps (1 - P)``. The value is the batch mean of
    :func:`coverage_sim.losses.pair_loss` (TRL's definitions); with fresh draws it and its gradient
    are unbiased for the exact population loss of the same objective, except for the batch-sorted
    ``aot``/``aot_unpaired`` (TRL's batch form).

    Args:
      loss_type: a key of :data:`coverage_sim.losses.PAIR_LOSSES`.
      params: the loss's parameters (``beta``, ...), TRL names.
      labels: ``"bradley_terry"`` or ``"deterministic"``.
      label_noise: flip rate in ``[0, 0.5]``.
      online: draw pairs from the current policy.
    """

    group_size = 2

    def __init__(self, loss_type: str = "sigmoid", params=None, *, labels: str = "bradley_terry",
                 label_noise: float = 0.0, online: bool = False):
        self.loss_type = get_pair_loss(loss_type).name
        self.params = get_pair_loss(loss_type).validate_params(params)
        self.labels = check_choice(labels, "labels", ("bradley_terry", "deterministic"))
        self.label_noise = check_in_range(label_noise, "label_noise", 0.0, 0.5)
        self.online = bool(online)
        self.name = ("online_" if self.online else "") + self.loss_type

    def label(self, batch, generator):
        diff = batch.reward[:, 0] - batch.reward[:, 1]
        if self.labels == "bradley_terry":
            p = torch.sigmoid(diff)
        else:
            p = 0.5 + 0.5 * torch.sign(diff)
        p = (1.0 - self.label_noise) * p + self.label_noise * (1.0 - p)
        u = torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype)
        first_wins = (u < p).long()
        order = torch.stack([1 - first_wins, first_wins], dim=1)
        return batch.reorder(order)

    def __call__(self, logp, batch):
        ref = batch.ref_logp.to(logp.dtype)
        per_pair = pair_loss(self.loss_type, logp[:, 0], logp[:, 1], ref[:, 0], ref[:, 1],
                             **self.params)
        return per_pair.mean()


class ReinforceLoss(SampledLoss):
    """KL-regularised RLHF by the score-function (REINFORCE) estimator, online.

    ``L = -E_x [E_{y~pi} r(x, y) - beta KL(pi(.|x) || pi_ref(.|x))]``, the core's ``rlhf``. With
    ``a = r - beta (log pi - log pi_ref)`` (detached) and ``G`` responses per prompt, the value is
    ``-mean(a)`` (unbiased for L) and the gradient ``-mean((a - b) grad log pi)``, unbiased for
    ``grad L`` (the ``-beta E grad log pi`` term of the KL's gradient vanishes). The baseline ``b``
    is the mean of ``a`` over the *other* responses of the same prompt (``"loo"``, RLOO, Ahmadian et
    al. arXiv:2402.14740; needs ``group_size >= 2``) or 0 (``"none"``).

    Args:
      beta: KL coefficient, > 0.
      group_size: responses per prompt.
      baseline: ``"loo"`` or ``"none"``.
    """

    online = True

    def __init__(self, beta: float = 0.1, *, group_size: int = 2, baseline: str = "loo"):
        self.beta = check_positive(beta, "beta")
        self.group_size = check_int(group_size, "group_size", minimum=1)
        self.baseline = check_choice(baseline, "baseline", ("loo", "none"))
        if self.baseline == "loo" and self.group_size < 2:
            raise ValueError(f"group_size must be >= 2 for the leave-one-out baseline, got "
                             f"{group_size!r}")
        self.name = "rlhf"

    def __call__(self, logp, batch):
        a = (batch.reward.to(logp.dtype)
             - self.beta * (logp.detach() - batch.ref_logp.to(logp.dtype)))
        if self.baseline == "loo":
            g = a.shape[1]
            adv = a - (a.sum(dim=1, keepdim=True) - a) / (g - 1)
        else:
            adv = a
        # Value -mean(a); gradient -mean(adv * grad log pi): logp - logp.detach() is 0 with
        # gradient grad log pi.
        return -a.mean() - (adv * (logp - logp.detach())).mean()


class BestOfNLoss(SampledLoss):
    """Filtered behaviour cloning / Best-of-N distillation, optionally with push-down-worst.

    Per prompt, ``n`` responses are drawn (from the behaviour policy, or the current policy when
    ``online``); the loss is ``-log pi(y_best) + push_down * log pi(y_worst)``, best and worst by
    gold reward (the first of tied draws, which picks within a tie group in proportion to the
    sampler, as the core's pooled ties). ``push_down = 0`` is the core's ``best_of_n`` objective
    (unbiased for it with fresh offline draws); ``push_down > 0`` is Tajwar et al.'s
    (arXiv:2404.14367) "worst action" negative-gradient variant.

    Args:
      n: responses per prompt, ``>= 2``.
      push_down: coefficient of ``log pi(y_worst)``, ``>= 0``.
      online: draw from the current policy.
    """

    def __init__(self, n: int = 10, *, push_down: float = 0.0, online: bool = False):
        self.group_size = check_int(n, "n", minimum=2)
        self.push_down = check_positive(push_down, "push_down", allow_zero=True)
        self.online = bool(online)
        self.name = "best_of_n" + ("_push_down" if self.push_down else "")

    def __call__(self, logp, batch):
        rows = torch.arange(logp.shape[0], device=logp.device)
        best = torch.argmax(batch.reward, dim=1)
        loss = -logp[rows, best]
        if self.push_down:
            worst = torch.argmin(batch.reward, dim=1)
            loss = loss + self.push_down * logp[rows, worst]
        return loss.mean()


def sampled_loss(objective, *, labels: str = "bradley_terry", label_noise: float = 0.0,
                 group_size: int = 2) -> SampledLoss:
    """The built-in :class:`SampledLoss` for a core objective.

    Supported: every offline pairwise objective with a single loss type (``sigmoid``/``dpo``,
    ``ipo``, ``hinge``, ..., with TRL's ``f_divergence_type``; not combined loss types,
    ``use_weighting`` or ``sync_ref_model``; ``labels``/``label_noise`` describe the offline
    data), ``online_dpo`` and ``online_ipo`` (labels
    from the objective's own ``labels``/``label_noise``), ``rlhf`` (:class:`ReinforceLoss` with
    ``group_size`` responses per prompt) and ``best_of_n`` (:class:`BestOfNLoss`, offline).

    Raises:
      ValueError: another objective, or an objective with a proxy ``reward`` array (sampled mode
        labels with the gold ``env.reward_of``).
    """
    obj = _as_objective(objective)
    if obj.params.get("reward") is not None:
        raise ValueError(f"objective {obj.name!r} has a proxy reward array; the sampled torch "
                         "backend labels and rewards with the gold env.reward_of")
    if len(obj.loss_types) > 1 or obj.params.get("use_weighting") or obj.ref_sync is not None:
        raise ValueError(f"objective {obj.name!r} has no sampled torch form: combined loss types, "
                         "use_weighting and sync_ref_model are exact-mode only here")
    if obj.pair_loss_name is not None:
        params = obj.pair_params()
    if obj.spec.family == "offline pairwise":
        return PairwiseLoss(obj.pair_loss_name, params, labels=labels, label_noise=label_noise)
    if obj.name in ("online_dpo", "online_ipo"):
        return PairwiseLoss(obj.pair_loss_name, params, labels=obj.params["labels"],
                            label_noise=obj.params["label_noise"], online=True)
    if obj.name == "rlhf":
        return ReinforceLoss(obj.params["beta"], group_size=group_size)
    if obj.name == "best_of_n":
        return BestOfNLoss(obj.params["n"])
    raise ValueError(f"objective {obj.name!r} has no sampled form; supported: the offline pairwise "
                     "losses, online_dpo, online_ipo, rlhf, best_of_n (or pass a SampledLoss)")


def _draw_responses(model, env, prompts, online, behavior, generator):
    if online:
        return _sample(model, prompts, generator)
    if behavior is None:
        return sample_reference(env, prompts, generator)
    if isinstance(behavior, CausalTransformer):
        return _sample(behavior, prompts.to(behavior.device), generator).to(prompts.device)
    tokens = behavior(prompts, generator)
    if (not isinstance(tokens, torch.Tensor) or tokens.dtype != torch.long
            or tuple(tokens.shape) != (prompts.shape[0], env.length)):
        raise ValueError(f"behavior must return an int64 tensor of shape (B, length) = "
                         f"{(prompts.shape[0], env.length)}, got {tokens!r}")
    return tokens.to(prompts.device)


def draw_batch(model: CausalTransformer, env: SequenceEnv, loss: SampledLoss, batch_size: int,
               generator: torch.Generator, *, behavior=None) -> SequenceBatch:
    """Draw and label a minibatch: ``batch_size`` prompts, ``loss.group_size`` responses each.

    Args:
      model: the current policy (the sampler of online losses; also fixes device and dtype).
      env: the :class:`~coverage_sim.sequences.SequenceEnv`.
      loss: the :class:`SampledLoss`.
      batch_size: number of prompts (groups), ``>= 1``.
      generator: seeded ``torch.Generator`` on the model's device.
      behavior: the offline sampler: ``None`` for ``env``'s ``pi_ref`` (via ``env.ref_next_logp``),
        a :class:`~coverage_sim.transformer.CausalTransformer`, or a callable
        ``(prompts (B,), generator) -> (B, length)`` int64 tensor. Ignored by online losses.

    Returns:
      The labelled :class:`SequenceBatch` on the model's device.
    """
    env = _check_env(env)
    if not isinstance(loss, SampledLoss):
        raise ValueError(f"loss must be a SampledLoss, got {type(loss).__name__}")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    _check_generator(generator, model.device)
    if behavior is not None and not (isinstance(behavior, CausalTransformer) or callable(behavior)):
        raise ValueError(f"behavior must be None, a CausalTransformer or a callable, got "
                         f"{type(behavior).__name__}")
    return _draw_batch(model, env, loss, batch_size, generator, behavior)


def _draw_batch(model, env, loss, batch_size, generator, behavior):
    device, dtype, G = model.device, model.dtype, loss.group_size
    weights = torch.tensor(np.asarray(env.prompt_weights, dtype=np.float64), device=device)
    prompts = torch.multinomial(weights, batch_size, replacement=True, generator=generator)
    flat_p = prompts.repeat_interleave(G)
    tokens = _draw_responses(model, env, flat_p, loss.online, behavior, generator)
    p_np, y_np = flat_p.cpu().numpy(), tokens.cpu().numpy()
    reward = torch.as_tensor(np.asarray(env.reward_of(p_np, y_np), dtype=np.float64),
                             device=device, dtype=dtype).view(batch_size, G)
    ref_lp = torch.as_tensor(np.asarray(env.ref_logp(p_np, y_np), dtype=np.float64),
                             device=device, dtype=dtype).view(batch_size, G)
    batch = SequenceBatch(prompts, tokens.view(batch_size, G, env.length), reward, ref_lp)
    return loss.label(batch, generator)


def sampled_backward(model: CausalTransformer, loss: SampledLoss, batch: SequenceBatch) -> float:
    """Minibatch loss at ``model`` on ``batch``; its gradient is accumulated into ``.grad``.

    Returns:
      The loss value (float): for the built-in losses an unbiased estimate of the population loss.
    """
    if not isinstance(loss, SampledLoss):
        raise ValueError(f"loss must be a SampledLoss, got {type(loss).__name__}")
    out = _batch_loss(model, loss, batch)
    out.backward()
    return float(out.detach())


def _batch_loss(model, loss, batch):
    B, G, L = batch.tokens.shape
    logp = _sequence_logp(model, batch.prompts.repeat_interleave(G), batch.tokens.reshape(-1, L))
    return loss(logp.view(B, G), batch)


def _loss_beta(loss, objective):
    """The KL strength for tv_to_opt / kl_to_opt in exact metrics, if the loss has one."""
    if objective is not None:
        return objective.beta
    if isinstance(loss, ReinforceLoss):
        return loss.beta
    if isinstance(loss, PairwiseLoss):
        return loss.params.get("beta")
    return None


@torch.no_grad()
def _mc_metrics(model, env, n_eval, generator) -> dict:
    """Monte-Carlo metrics from ``n_eval`` samples of the policy (and of pi_ref, for win rate)."""
    weights = torch.tensor(np.asarray(env.prompt_weights, dtype=np.float64), device=model.device)
    prompts = torch.multinomial(weights, n_eval, replacement=True, generator=generator)
    y = _sample(model, prompts, generator)
    y_ref = sample_reference(env, prompts, generator)
    p_np, y_np = prompts.cpu().numpy(), y.cpu().numpy()
    lp = _sequence_logp(model, prompts, y).double().cpu().numpy()
    ref_lp = np.asarray(env.ref_logp(p_np, y_np), dtype=np.float64)
    r = np.asarray(env.reward_of(p_np, y_np), dtype=np.float64)
    r_ref = np.asarray(env.reward_of(p_np, y_ref.cpu().numpy()), dtype=np.float64)
    win = 0.5 * (1.0 + np.tanh(0.5 * (r - r_ref)))          # sigma(r - r'), overflow-free
    se = np.sqrt(n_eval)
    return {"reward": r.mean(), "kl": np.mean(lp - ref_lp), "entropy": -lp.mean(),
            "win_rate": win.mean(), "reward_se": r.std(ddof=1) / se,
            "kl_se": np.std(lp - ref_lp, ddof=1) / se}


def train_sampled(env: SequenceEnv, loss, *, model: CausalTransformer | None = None, steps: int,
                  lr: float, batch_size: int = 64, optimizer: str = "adam", seed: int = 0,
                  device=None, dtype=None, record=None, behavior=None,
                  labels: str = "bradley_terry", label_noise: float = 0.0,
                  n_data: int | None = None, reuse: int = 1, exact_metrics: bool | None = None,
                  n_eval: int = 1024, extra_metrics=None, adam=(0.9, 0.999, 1e-8),
                  threads: int | None = None, progress: bool | None = None) -> TorchRun:
    """Train a transformer by minibatch gradient steps on sampled responses.

    Each draw is ``batch_size`` prompts with ``loss.group_size`` responses each (pairs for pairwise
    losses); see :func:`draw_batch` and the module docstring.

    Args:
      env: the :class:`~coverage_sim.sequences.SequenceEnv` (need not be enumerable).
      loss: a :class:`SampledLoss`, or an objective / objective name turned into one by
        :func:`sampled_loss` (with ``labels`` and ``label_noise`` for offline pairwise data).
      model: the policy, trained in place; default a fresh gpt-nano initialised from ``seed``.
        To start near ``pi_ref`` as Tajwar et al. do, call
        :func:`~coverage_sim.transformer.sft_to_reference` on it first.
      steps: parameter updates.
      lr: learning rate.
      batch_size: prompts (groups) per minibatch.
      optimizer: ``"adam"`` or ``"sgd"``.
      seed: seeds the initialisation, the training draws and the evaluation draws (separate
        ``torch.Generator`` streams derived by ``numpy.random.SeedSequence(seed)``).
      device: see :func:`default_device`.
      dtype: ``torch.float64`` (default for a new model) or ``torch.float32``.
      record: record schedule (see :func:`train_exact`).
      behavior: offline sampler (see :func:`draw_batch`), default ``pi_ref``.
      labels, label_noise: label model of offline pairwise data (when ``loss`` is an objective).
      n_data: if given, a fixed offline dataset of ``n_data`` groups is drawn once and each step
        uses ``batch_size`` of them without replacement (all of them when equal); not for online
        losses.
      reuse: gradient steps per fresh draw (Tajwar et al.'s sample reuse; 1 = a new draw per step).
      exact_metrics: exact metrics over every response (default when ``env.enumerable``), else
        Monte-Carlo estimates from ``n_eval`` samples.
      n_eval: samples for Monte-Carlo metrics.
      extra_metrics: optional callable ``(model, generator) -> dict[str, float]``, called at every
        recorded step without gradients (``generator``: the evaluation stream), e.g. the mass near
        the reward's peak for Tajwar et al.'s F3; its entries become history columns.
      adam: Adam's ``(beta1, beta2, eps)``.
      threads: torch intra-op threads during the call (see :func:`train_exact`).
      progress: show a progress bar (see :func:`train_exact`).

    Returns:
      A :class:`TorchRun`. ``history``: ``step``; ``loss``, the minibatch loss at that step's
      parameters (at the last step, on one extra batch from the evaluation stream); ``samples``,
      the responses drawn for the updates made so far (reward queries; a fixed dataset counts in
      full from step 0); and ``reward``, ``kl`` = KL(pi||pi_ref), ``entropy``,
      ``win_rate`` against ``pi_ref`` (gold Bradley-Terry) -- exact (plus the other exact metrics of
      :func:`train_exact`) or Monte-Carlo with ``reward_se`` and ``kl_se``.

    Raises:
      ValueError: invalid arguments.
      FloatingPointError: the loss became non-finite.
    """
    env = _check_env(env)
    objective = None
    if not isinstance(loss, SampledLoss):
        objective = _as_objective(loss)
        loss = sampled_loss(objective, labels=labels, label_noise=label_noise)
    steps = check_int(steps, "steps")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    reuse = check_int(reuse, "reuse", minimum=1)
    n_eval = check_int(n_eval, "n_eval", minimum=2)
    if n_data is not None:
        n_data = check_int(n_data, "n_data", minimum=1)
        if loss.online:
            raise ValueError(f"n_data fixes an offline dataset, but loss {loss.name!r} is online")
        if batch_size > n_data:
            raise ValueError(f"batch_size must be <= n_data={n_data}, got {batch_size}")
    if exact_metrics is None:
        exact_metrics = env.enumerable
    elif exact_metrics and not env.enumerable:
        raise ValueError("exact_metrics=True needs an enumerable env (vocab**length <= 2**16)")
    if behavior is not None and not (isinstance(behavior, CausalTransformer) or callable(behavior)):
        raise ValueError(f"behavior must be None, a CausalTransformer or a callable, got "
                         f"{type(behavior).__name__}")
    if extra_metrics is not None and not callable(extra_metrics):
        raise ValueError(f"extra_metrics must be None or a callable (model, generator) -> dict, "
                         f"got {type(extra_metrics).__name__}")
    init_seed, train_seed, eval_seed = _seeds(seed)
    device = default_device(device)
    model = _make_model(env, model, init_seed, device, dtype)
    if isinstance(behavior, CausalTransformer):
        behavior = copy.deepcopy(behavior).to(device).requires_grad_(False)
    opt = _make_optimizer(model, optimizer, lr, adam)
    rec = _record_steps(record, steps)
    rec_set = set(rec.tolist())
    gen, eval_gen = _generator(device, train_seed), _generator(device, eval_seed)
    if exact_metrics:
        tokens = torch.tensor(env.tokens, device=device)
        beta = _loss_beta(loss, objective)
        eval_data = _default_eval_data(env, None)

    def evaluate():
        if exact_metrics:
            with torch.no_grad():
                lp = sequence_logp_table(model, tokens).double().cpu().numpy()
            return _exact_metrics(env, lp, beta, None, eval_data, None), lp
        return _mc_metrics(model, env, n_eval, eval_gen), None

    dataset = (_draw_batch(model, env, loss, n_data, gen, behavior) if n_data is not None
               else None)
    samples = 0 if dataset is None else n_data * loss.group_size
    rows, batch, final_lp = [], None, None
    n_threads = _torch_threads(threads, model)
    with _threads.torch_threads(n_threads), StepProgress(
            progress, steps, f"train_sampled {loss.name}") as bar:
        for step in range(steps + 1):
            learn = step < steps
            used = samples                # responses behind the `step` updates made so far
            if learn and step % reuse == 0:
                if dataset is None:
                    batch = _draw_batch(model, env, loss, batch_size, gen, behavior)
                    samples += batch_size * loss.group_size
                elif batch_size == n_data:
                    batch = dataset
                else:
                    batch = dataset.take(torch.randperm(n_data, generator=gen,
                                                        device=device)[:batch_size])
            if learn:
                opt.zero_grad()
                value = _batch_loss(model, loss, batch)
                value.backward()
            elif step in rec_set:
                if dataset is None:
                    extra = _draw_batch(model, env, loss, batch_size, eval_gen, behavior)
                else:
                    extra = dataset.take(torch.randperm(n_data, generator=eval_gen,
                                                        device=device)[:batch_size])
                with torch.no_grad():
                    value = _batch_loss(model, loss, extra)
            else:
                value = None
            if value is not None:
                _check_finite_loss(float(value.detach()), step, loss.name, lr)
            if step in rec_set:
                m, final_lp = evaluate()
                if extra_metrics is not None:
                    with torch.no_grad():
                        m.update({k: float(v) for k, v in extra_metrics(model, eval_gen).items()})
                rows.append({"step": step, "loss": float(value.detach()), "samples": used, **m})
            if learn:
                opt.step()
            bar.step()
        if exact_metrics and rec[-1] != steps:
            final_lp = evaluate()[1]
    extra_cfg = {"batch_size": batch_size, "group_size": loss.group_size, "online": loss.online,
                 "n_data": n_data, "reuse": reuse,
                 "behavior": None if behavior is None else type(behavior).__name__,
                 "metrics": "exact" if exact_metrics else f"monte_carlo (n_eval={n_eval})"}
    config = _config("sampled", env, objective or loss, model, steps, float(lr), optimizer, adam,
                     seed, rec, device, extra_cfg)
    config["sampled_loss"] = {"name": loss.name, **loss.describe()}
    return TorchRun(env=env, objective=objective or loss, model=model,
                    history=pd.DataFrame(rows),
                    policy=None if final_lp is None else np.exp(final_lp), config=config)
