"""Token-sequence environments and the tabular autoregressive policy over them.

A *sequence environment* has prompts ``x`` (one token id in ``range(n_prompts)``, drawn from
``prompt_weights``) and responses ``y = (y_0, ..., y_{L-1})``, ``L = length`` tokens from
``range(vocab)``; a gold reward ``r*(x, y)`` on whole sequences and an autoregressive reference
``pi_ref(y|x) = prod_t pi_ref(y_t | x, y_<t)``.

Conventions:

- **Enumeration.** When ``vocab**length <= MAX_ENUMERABLE`` the response set is enumerable: response
  index ``i`` is the sequence whose tokens are the base-``vocab`` digits of ``i``, most significant
  first (row ``i`` of :func:`enumerate_sequences`, lexicographic order).
  :attr:`SequenceEnv.bandit` is then the exact core :class:`~coverage_sim.env.Bandit` over all
  sequences, so every objective of :mod:`coverage_sim.objectives` applies unchanged at the sequence
  level (sequence-level log-ratios, no length normalisation).
- **Prefix tree.** The nodes are the prefixes ``y_<t`` for ``t = 0..L-1``, ordered by depth and then
  lexicographically: node ``offset_t + value(y_<t)`` with ``offset_t = (V^t - 1)/(V - 1)``
  (:func:`prefix_nodes`). :class:`AutoregressiveTabular` keeps one softmax of ``vocab`` logits per
  (prompt, node).

Factories: :func:`tajwar_token_env` (Tajwar et al. 2024, arXiv:2404.14367, the 9-token task) and
:func:`combination_lock` (Chang et al. 2024, DR-PO, arXiv:2404.08495).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import numpy as np

from coverage_sim._validation import (as_float_array, check_choice, check_distribution,
                                      check_finite, check_int, check_positive, check_real)
from coverage_sim.env import Bandit
from coverage_sim.instances import tajwar_reference
from coverage_sim.policies import Policy

__all__ = [
    "MAX_ENUMERABLE",
    "enumerate_sequences",
    "n_prefix_nodes",
    "prefix_nodes",
    "SequenceEnv",
    "tajwar_token_env",
    "combination_lock",
    "AutoregressiveTabular",
]

#: Largest response set (``vocab**length``) that is enumerated into a core Bandit.
MAX_ENUMERABLE: int = 65536

# Tolerance on the normalisation of a user-supplied next-token log-distribution.
_NORM_ATOL = 1e-9


def _check_dims(vocab, length) -> tuple[int, int]:
    return check_int(vocab, "vocab", minimum=2), check_int(length, "length", minimum=1)


def _n_sequences(vocab: int, length: int) -> int:
    return vocab ** length      # Python int: no overflow for huge vocabularies


def _digits(vocab: int, length: int) -> np.ndarray:
    """All ``vocab**length`` sequences (length 0 allowed: one empty row), lexicographic."""
    n = _n_sequences(vocab, length)
    powers = vocab ** np.arange(length - 1, -1, -1, dtype=np.int64)
    return (np.arange(n, dtype=np.int64)[:, None] // powers) % vocab


def enumerate_sequences(vocab: int, length: int) -> np.ndarray:
    """Every token sequence of ``length`` tokens from ``range(vocab)``, in lexicographic order.

    Row ``i`` holds the base-``vocab`` digits of ``i``, most significant first.

    Args:
      vocab: vocabulary size, ``>= 2``.
      length: sequence length, ``>= 1``.

    Returns:
      ``(vocab**length, length)`` int64.

    Raises:
      ValueError: bad sizes, or ``vocab**length > MAX_ENUMERABLE``.

    Examples:
      >>> from coverage_sim.sequences import enumerate_sequences
      >>> enumerate_sequences(2, 2).tolist()
      [[0, 0], [0, 1], [1, 0], [1, 1]]
    """
    vocab, length = _check_dims(vocab, length)
    n = _n_sequences(vocab, length)
    if n > MAX_ENUMERABLE:
        raise ValueError(f"vocab**length must be <= MAX_ENUMERABLE = {MAX_ENUMERABLE} to enumerate "
                         f"the sequences, got vocab={vocab}, length={length} ({n} sequences)")
    return _digits(vocab, length)


def n_prefix_nodes(vocab: int, length: int) -> int:
    """Number of prefixes ``y_<t``, ``t = 0..length-1``: ``(vocab**length - 1) / (vocab - 1)``.

    Examples:
      >>> from coverage_sim.sequences import n_prefix_nodes
      >>> n_prefix_nodes(3, 2)   # the root and its 3 children
      4
    """
    vocab, length = _check_dims(vocab, length)
    return (_n_sequences(vocab, length) - 1) // (vocab - 1)


def prefix_nodes(vocab: int, length: int) -> np.ndarray:
    """Prefix-tree node of each position of each enumerated sequence.

    ``nodes[i, t]`` is the node of the prefix ``y_<t`` of sequence ``i`` (row ``i`` of
    :func:`enumerate_sequences`): ``offset_t + i // vocab**(length - t)`` with
    ``offset_t = (vocab**t - 1) / (vocab - 1)``, so nodes are ordered by depth, then
    lexicographically, and node 0 is the root (the empty prefix).

    Returns:
      ``(vocab**length, length)`` int64 in ``range(n_prefix_nodes(vocab, length))``.

    Examples:
      >>> from coverage_sim.sequences import prefix_nodes
      >>> prefix_nodes(2, 2).tolist()
      [[0, 1], [0, 1], [0, 2], [0, 2]]
    """
    vocab, length = _check_dims(vocab, length)
    enumerate_sequences(vocab, length)      # size check
    n = _n_sequences(vocab, length)
    t = np.arange(length, dtype=np.int64)
    offsets = (vocab ** t - 1) // (vocab - 1)
    return offsets + np.arange(n, dtype=np.int64)[:, None] // (vocab ** (length - t))


def _depth_slices(vocab: int, length: int) -> list[slice]:
    """Node range of each depth ``t`` in the depth-major node layout."""
    out, off = [], 0
    for t in range(length):
        out.append(slice(off, off + vocab ** t))
        off += vocab ** t
    return out


def _tree_logp(node_lsm: np.ndarray, vocab: int, length: int) -> np.ndarray:
    """Sequence log-probs ``(X, V^L)`` from per-node next-token log-probs ``(X, M, V)``.

    Accumulated depth by depth (each prefix's log-prob is computed once and shared by its subtree),
    so the cost is ``O(X V^L V/(V-1))`` rather than ``O(X V^L L)``.
    """
    n_ctx = node_lsm.shape[0]
    acc = np.zeros((n_ctx, 1))
    for t, sl in enumerate(_depth_slices(vocab, length)):
        acc = (acc[:, :, None] + node_lsm[:, sl, :]).reshape(n_ctx, vocab ** (t + 1))
    return acc


def _tree_backprop(node_lsm: np.ndarray, grad_logp: np.ndarray, vocab: int,
                   length: int) -> np.ndarray:
    """Exact pullback of ``g = dL/dlog pi(y|x)`` ``(X, V^L)`` to the node logits ``(X, M, V)``.

    ``dL/dtheta[node, v] = sum_{y through node} g_y (1[y_t = v] - pi(v|node))
    = S(node + v) - pi(v|node) S(node)`` with ``S`` the subtree sums of ``g``; the sums are built
    bottom-up by reshaping, one level at a time.
    """
    n_ctx = node_lsm.shape[0]
    out = np.empty_like(node_lsm)
    sub = grad_logp
    for t, sl in reversed(list(enumerate(_depth_slices(vocab, length)))):
        child = sub.reshape(n_ctx, vocab ** t, vocab)
        total = child.sum(axis=2)
        out[:, sl, :] = child - np.exp(node_lsm[:, sl, :]) * total[:, :, None]
        sub = total
    return out


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=-1, keepdims=True)
    shifted = logits - top
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _as_index_array(value, name: str, ndim: int, high: int, what: str) -> np.ndarray:
    """An integer array of rank ``ndim`` with entries in ``range(high)``."""
    arr = np.asarray(value)
    if arr.size == 0 and arr.dtype.kind == "f":
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an integer array of {what}, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {arr.shape}")
    bad = (arr < 0) | (arr >= high)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} must hold {what} in range({high}), got {arr[idx]!r} at index "
                         f"{idx}")
    return np.ascontiguousarray(arr, dtype=np.int64)


class _TableReward:
    """Reward from an ``(n_prompts, vocab**length)`` table indexed by enumeration order."""

    def __init__(self, table: np.ndarray, vocab: int, length: int):
        self.table = table
        self.powers = vocab ** np.arange(length - 1, -1, -1, dtype=np.int64)

    def __call__(self, prompts, tokens):
        return self.table[prompts, tokens @ self.powers]


class _BumpReward:
    """Tajwar et al.'s token reward: mean over positions of ``exp(-((a - centre)/width)^2)``."""

    def __init__(self, centre: float, width: float):
        self.centre, self.width = centre, width

    def __call__(self, prompts, tokens):
        return np.exp(-(((tokens - self.centre) / self.width) ** 2)).mean(axis=1)


class _LockReward:
    """1 on the secret sequence, 0 elsewhere."""

    def __init__(self, secret: np.ndarray):
        self.secret = secret

    def __call__(self, prompts, tokens):
        return np.all(tokens == self.secret, axis=1).astype(np.float64)


@dataclass(frozen=True, eq=False)
class SequenceEnv:
    """Prompts, token-sequence responses, a gold sequence reward and an autoregressive reference.

    Args:
      vocab: vocabulary size ``V >= 2``.
      length: response length ``L >= 1`` (every response has exactly ``L`` tokens).
      n_prompts: number of prompts ``X >= 1``; a prompt is one token id in ``range(n_prompts)``.
      name: a label (used as the Bandit's name).
      reward: the gold reward: a callable ``reward(prompts (B,), tokens (B, L)) -> (B,)``
        (vectorised; returning finite floats), or, for an enumerable env, a table of shape
        ``(n_prompts, V**L)`` (or ``(V**L,)`` for every prompt) in enumeration order.
      ref: the reference policy, either per-token probabilities i.i.d. across positions given the
        prompt -- shape ``(V,)`` (all prompts and positions), ``(L, V)`` (per position) or
        ``(n_prompts, L, V)``; rows sum to 1, zeros allowed -- or a callable
        ``ref(prompts (B,), prefixes (B, t)) -> (B, V)`` of next-token *log*-probabilities for a
        general autoregressive reference.
      prompt_weights: prompt distribution ``(n_prompts,)``; default uniform.

    After construction an array ``ref`` is stored as read-only ``(n_prompts, L, V)`` probabilities.

    Examples:
      >>> import numpy as np
      >>> from coverage_sim.sequences import SequenceEnv
      >>> env = SequenceEnv(2, 2, 1, "toy", reward=lambda x, y: y.sum(axis=1) * 1.0,
      ...                   ref=np.array([0.25, 0.75]))
      >>> env.bandit.ref.round(4).tolist()
      [[0.0625, 0.1875, 0.1875, 0.5625]]
      >>> env.reward_of(np.array([0]), np.array([[1, 1]])).tolist()
      [2.0]
    """

    vocab: int
    length: int
    n_prompts: int
    name: str
    reward: Callable | np.ndarray = field(kw_only=True)
    ref: Callable | np.ndarray = field(kw_only=True)
    prompt_weights: np.ndarray | None = field(default=None, kw_only=True)

    def __post_init__(self):
        vocab, length = _check_dims(self.vocab, self.length)
        n_prompts = check_int(self.n_prompts, "n_prompts", minimum=1)
        if not isinstance(self.name, str):
            raise ValueError(f"name must be a str, got {self.name!r}")
        for key, value in (("vocab", vocab), ("length", length), ("n_prompts", n_prompts)):
            object.__setattr__(self, key, value)
        if self.prompt_weights is None:
            weights = np.full(n_prompts, 1.0 / n_prompts)
        else:
            weights = as_float_array(self.prompt_weights, "prompt_weights", ndim=1,
                                     shape=(n_prompts,)).copy()
            check_distribution(weights, "prompt_weights")
        weights.setflags(write=False)
        object.__setattr__(self, "prompt_weights", weights)
        object.__setattr__(self, "reward", self._checked_reward(self.reward))
        if not callable(self.ref):
            ref = as_float_array(self.ref, "ref", ndim=(1, 2, 3))
            full = (n_prompts, length, vocab)
            if ref.shape != full[3 - ref.ndim:]:
                raise ValueError(f"ref must be a callable or per-token probabilities of shape "
                                 f"({vocab},), ({length}, {vocab}) or {full}, got shape "
                                 f"{ref.shape}")
            check_distribution(ref, "ref")
            ref = np.ascontiguousarray(np.broadcast_to(ref, full))
            ref.setflags(write=False)
            object.__setattr__(self, "ref", ref)

    def _checked_reward(self, reward):
        if callable(reward):
            return reward
        table = check_finite(as_float_array(reward, "reward", ndim=(1, 2)), "reward")
        n = _n_sequences(self.vocab, self.length)
        if not self.enumerable or table.shape not in ((n,), (self.n_prompts, n)):
            raise ValueError(f"reward must be a callable or a table of shape ({self.n_prompts}, "
                             f"{n}) for an enumerable env (vocab**length <= {MAX_ENUMERABLE}), got "
                             f"shape {table.shape}")
        table = np.ascontiguousarray(np.broadcast_to(table, (self.n_prompts, n)))
        table.setflags(write=False)
        return _TableReward(table, self.vocab, self.length)

    # ------------------------------------------------------------------ per-sequence queries

    def _prompts(self, prompts) -> np.ndarray:
        return _as_index_array(prompts, "prompts", 1, self.n_prompts, "prompt ids")

    def _sequences(self, tokens, name: str, n_rows: int, width: int | None) -> np.ndarray:
        arr = _as_index_array(tokens, name, 2, self.vocab, "token ids")
        if arr.shape[0] != n_rows or (width is not None and arr.shape[1] != width):
            want = f"({n_rows}, {width if width is not None else 't'})"
            raise ValueError(f"{name} must have shape {want} to match prompts, got shape "
                             f"{arr.shape}")
        return arr

    def reward_of(self, prompts, tokens) -> np.ndarray:
        """Gold reward of whole sequences.

        Args:
          prompts: ``(B,)`` prompt ids.
          tokens: ``(B, length)`` token ids.

        Returns:
          ``(B,)`` float64.
        """
        prompts = self._prompts(prompts)
        tokens = self._sequences(tokens, "tokens", prompts.size, self.length)
        out = np.asarray(self.reward(prompts, tokens), dtype=np.float64)
        if out.shape != prompts.shape:
            raise ValueError(f"the reward callable of {self.name!r} must return shape "
                             f"{prompts.shape}, got {out.shape}")
        return check_finite(out, "reward")

    def ref_next_logp(self, prompts, prefixes) -> np.ndarray:
        """``log pi_ref(next token | x, prefix)``.

        Args:
          prompts: ``(B,)`` prompt ids.
          prefixes: ``(B, t)`` token ids, ``0 <= t < length`` (``t = 0``: the first token).

        Returns:
          ``(B, vocab)`` float64; ``-inf`` for tokens the reference excludes.
        """
        prompts = self._prompts(prompts)
        prefixes = self._sequences(prefixes, "prefixes", prompts.size, None)
        t = prefixes.shape[1]
        if t >= self.length:
            raise ValueError(f"prefixes must have fewer than length={self.length} tokens, got "
                             f"{t}")
        if not callable(self.ref):
            with np.errstate(divide="ignore"):
                return np.log(self.ref[prompts, t])
        out = np.asarray(self.ref(prompts, prefixes), dtype=np.float64)
        want = (prompts.size, self.vocab)
        if out.shape != want:
            raise ValueError(f"the ref callable of {self.name!r} must return shape {want}, got "
                             f"{out.shape}")
        if np.isnan(out).any() or np.isposinf(out).any():
            raise ValueError(f"the ref callable of {self.name!r} returned NaN or +inf "
                             "log-probabilities")
        if out.size:
            top = out.max(axis=1, keepdims=True)
            norm = top[:, 0] + np.log(np.exp(out - top).sum(axis=1))
            if not (np.abs(norm) <= _NORM_ATOL).all():
                bad = int(np.argmax(~(np.abs(norm) <= _NORM_ATOL)))
                raise ValueError(f"the ref callable of {self.name!r} must return normalised "
                                 f"log-probabilities, got logsumexp {norm[bad]!r} at row {bad}")
        return out

    def ref_logp(self, prompts, tokens) -> np.ndarray:
        """``log pi_ref(y|x) = sum_t log pi_ref(y_t | x, y_<t)``: ``(B,)`` from ``(B,)``,
        ``(B, length)``."""
        prompts = self._prompts(prompts)
        tokens = self._sequences(tokens, "tokens", prompts.size, self.length)
        rows = np.arange(prompts.size)
        if not callable(self.ref):
            with np.errstate(divide="ignore"):
                return np.log(self.ref[prompts[:, None], np.arange(self.length),
                                       tokens]).sum(axis=1)
        out = np.zeros(prompts.size)
        for t in range(self.length):
            out += self.ref_next_logp(prompts, tokens[:, :t])[rows, tokens[:, t]]
        return out

    # ------------------------------------------------------------------ enumerated views

    @property
    def n_sequences(self) -> int:
        """``vocab**length``."""
        return _n_sequences(self.vocab, self.length)

    @property
    def enumerable(self) -> bool:
        """Whether ``vocab**length <= MAX_ENUMERABLE`` (the response set can be enumerated)."""
        return self.n_sequences <= MAX_ENUMERABLE

    @cached_property
    def tokens(self) -> np.ndarray:
        """All responses, ``(vocab**length, length)``, row ``i`` = response index ``i``."""
        out = enumerate_sequences(self.vocab, self.length)
        out.setflags(write=False)
        return out

    @cached_property
    def prefix_ref_logp(self) -> np.ndarray:
        """``log pi_ref(. | x, node)`` for every prompt and prefix-tree node: ``(X, M, vocab)``.

        Nodes in the order of :func:`prefix_nodes`; enumerable envs only.
        """
        enumerate_sequences(self.vocab, self.length)    # raises if not enumerable
        n_x, vocab = self.n_prompts, self.vocab
        parts = []
        for t in range(self.length):
            if not callable(self.ref):
                with np.errstate(divide="ignore"):
                    row = np.log(self.ref[:, t, :])
                parts.append(np.broadcast_to(row[:, None, :], (n_x, vocab ** t, vocab)))
                continue
            prefixes = np.tile(_digits(vocab, t), (n_x, 1))
            prompts = np.repeat(np.arange(n_x), vocab ** t)
            parts.append(self.ref_next_logp(prompts, prefixes).reshape(n_x, vocab ** t, vocab))
        out = np.ascontiguousarray(np.concatenate(parts, axis=1))
        out.setflags(write=False)
        return out

    @cached_property
    def bandit(self) -> Bandit:
        """The exact core :class:`~coverage_sim.env.Bandit` over all sequences.

        ``reward`` and ``ref`` have shape ``(n_prompts, vocab**length)`` (responses in
        :attr:`tokens` order), ``context_weights = prompt_weights``; enumerable envs only.
        """
        tokens = self.tokens
        n_x, n = self.n_prompts, self.n_sequences
        reward = self.reward_of(np.repeat(np.arange(n_x), n), np.tile(tokens, (n_x, 1)))
        ref = np.exp(_tree_logp(self.prefix_ref_logp, self.vocab, self.length))
        return Bandit(reward=reward.reshape(n_x, n), ref=ref, context_weights=self.prompt_weights,
                      name=self.name)

    def __repr__(self) -> str:
        return (f"SequenceEnv(name={self.name!r}, vocab={self.vocab}, length={self.length}, "
                f"n_prompts={self.n_prompts})")


def tajwar_token_env(length: int = 9, vocab: int = 100, peak: float = 70.0, width: float = 10.0,
                     n_prompts: int = 1) -> SequenceEnv:
    """Tajwar et al.'s token task (arXiv:2404.14367, ``transformer_*.py``; figures F1 and F3 (tokens)).

    Per-token reference = :func:`~coverage_sim.instances.tajwar_reference` with ``vocab`` bins (the
    exact tanh-Cauchy bin masses; Tajwar's 100-bin histogram for ``vocab = 100``), i.i.d. over
    positions and prompts. Reward = mean over positions of ``exp(-((a - c)/w)^2)`` with
    ``c = peak * vocab / 100`` and ``w = width * vocab / 100``: ``peak`` and ``width`` are in units
    of token index on a 100-token vocabulary (``peak=70`` is 70% of the way along any vocabulary).
    Tajwar's reward_6 is ``peak=70``, reward_7 ``peak=20``; the prompt (one random token) does not
    change the reward or the reference. With ``length=1, vocab=100`` it is
    :func:`~coverage_sim.instances.tajwar_bandit`.

    Args:
      length: tokens per response, ``>= 1`` (the paper: 9).
      vocab: vocabulary size, ``>= 2`` (the paper: 100).
      peak: reward peak (finite), on the 100-token scale.
      width: reward width ``> 0``, on the 100-token scale.
      n_prompts: number of prompts, ``>= 1``.

    Returns:
      A :class:`SequenceEnv` named e.g. ``"tajwar-token-peak70-V100-L9"``.

    Examples:
      >>> from coverage_sim.sequences import tajwar_token_env
      >>> env = tajwar_token_env(length=2, vocab=10)
      >>> env.bandit.shape, round(float(env.bandit.ref.sum()), 12)
      ((1, 100), 1.0)
    """
    vocab, length = _check_dims(vocab, length)
    n_prompts = check_int(n_prompts, "n_prompts", minimum=1)
    peak = check_real(peak, "peak")
    width = check_positive(width, "width")
    scale = vocab / 100.0
    name = (f"tajwar-token-peak{peak:g}" + ("" if width == 10.0 else f"-width{width:g}")
            + f"-V{vocab}-L{length}")
    return SequenceEnv(vocab, length, n_prompts, name,
                       reward=_BumpReward(peak * scale, width * scale),
                       ref=tajwar_reference(vocab))


def combination_lock(vocab: int = 4, length: int = 6, seed: int | None = 0,
                     secret=None) -> SequenceEnv:
    """DR-PO's combination lock (Chang et al. 2024, arXiv:2404.08495; figure F17).

    Reward 1 on one secret sequence ``y*`` and 0 elsewhere; uniform per-token reference, so
    ``pi_ref(y*) = vocab**-length``; one prompt. ``y*`` is ``numpy.random.default_rng(seed)
    .integers(0, vocab, size=length)`` unless ``secret`` is given (then ``seed`` is unused).

    Args:
      vocab: vocabulary size, ``>= 2``.
      length: lock length (horizon), ``>= 1``.
      seed: seed of the secret (``None``: fresh OS entropy).
      secret: explicit ``(length,)`` token ids.

    Returns:
      A :class:`SequenceEnv` with ``env.secret`` (read-only ``(length,)`` int64).

    Examples:
      >>> from coverage_sim.sequences import combination_lock
      >>> env = combination_lock(vocab=3, length=2, secret=[2, 0])
      >>> env.secret.tolist(), float(env.bandit.reward[0, 6])
      ([2, 0], 1.0)
    """
    vocab, length = _check_dims(vocab, length)
    if secret is None:
        if seed is not None:
            check_int(seed, "seed", minimum=0)
        secret = np.random.default_rng(seed).integers(0, vocab, size=length)
    secret = _as_index_array(secret, "secret", 1, vocab, "token ids").copy()
    if secret.shape != (length,):
        raise ValueError(f"secret must have shape ({length},), got shape {secret.shape}")
    secret.setflags(write=False)
    env = SequenceEnv(vocab, length, 1, f"lock-V{vocab}-L{length}", reward=_LockReward(secret),
                      ref=np.full(vocab, 1.0 / vocab))
    object.__setattr__(env, "secret", secret)
    return env


class AutoregressiveTabular(Policy):
    """Tabular autoregressive softmax: one softmax per (prompt, prefix) of a :class:`SequenceEnv`.

    ``log pi(y|x) = sum_t log_softmax(theta[x, node(y_<t)])[y_t]`` with ``theta`` the flat
    ``(n_prompts * n_prefix_nodes * vocab,)`` array of logits in C order of
    ``(prompt, node, token)`` (nodes as in :func:`prefix_nodes`). Every full-support distribution
    over sequences is representable (chain rule), so on an enumerable env this policy spans the same
    set as :class:`~coverage_sim.policies.TabularSoftmax` over ``V^L`` responses -- with a
    different geometry (gradient steps act on per-token conditionals). This is the tabular
    per-prefix policy of DR-PO (arXiv:2404.08495) and of Tajwar et al.'s token task
    (arXiv:2404.14367). Not an engine policy (``kind = None``): :func:`coverage_sim.train` runs it
    with its numpy loop.

    Args:
      env: the :class:`SequenceEnv` (enumerable). The policy's ``env`` arguments may be this env or
        any :class:`~coverage_sim.env.Bandit` of its shape ``(n_prompts, vocab**length)``
        (e.g. ``env.bandit``).
      init: ``"ref"`` (logits = ``log pi_ref(. | x, prefix)``: starts at ``pi_ref``), ``"uniform"``
        (uniform next-token distribution over the reference's support at every prefix),
        ``"random"`` (``log pi_ref`` plus standard-normal noise of size ``init_scale`` from the
        run's seed), or sequence probabilities ``(n_prompts, vocab**length)`` (see
        :meth:`params_from_probs`).
      init_scale: noise scale for ``init="random"``.

    Examples:
      >>> import numpy as np
      >>> from coverage_sim.sequences import AutoregressiveTabular, combination_lock
      >>> env = combination_lock(vocab=2, length=2)
      >>> pol = AutoregressiveTabular(env)
      >>> pol.probs(env.bandit, pol.init_params(env.bandit, np.random.default_rng(0))).tolist()
      [[0.25, 0.25, 0.25, 0.25]]
    """

    kind = None

    def __init__(self, env: SequenceEnv, init="ref", init_scale: float = 1.0):
        if not isinstance(env, SequenceEnv):
            raise ValueError(f"env must be a SequenceEnv, got {type(env).__name__}")
        if not env.enumerable:
            raise ValueError(f"AutoregressiveTabular needs an enumerable env (vocab**length <= "
                             f"{MAX_ENUMERABLE}), got vocab={env.vocab}, length={env.length}")
        self.env = env
        if isinstance(init, str):
            check_choice(init, "init", ("ref", "uniform", "random"))
        else:
            init = check_finite(as_float_array(init, "init", ndim=(1, 2)), "init")
            self._check_probs(init, "init")
        self.init = init
        self.init_scale = check_positive(init_scale, "init_scale")
        self.n_nodes = n_prefix_nodes(env.vocab, env.length)

    @property
    def n_params(self) -> int:
        """``n_prompts * n_prefix_nodes * vocab``."""
        return self.env.n_prompts * self.n_nodes * self.env.vocab

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_prompts, vocab**length)``: the shape of ``logp``."""
        return self.env.n_prompts, self.env.n_sequences

    def _check_env(self, env) -> None:
        if isinstance(env, SequenceEnv):
            dims = (env.vocab, env.length, env.n_prompts)
            own = (self.env.vocab, self.env.length, self.env.n_prompts)
            if dims != own:
                raise ValueError(f"env has (vocab, length, n_prompts) = {dims}, the policy was "
                                 f"built for {own}")
        elif isinstance(env, Bandit):
            if (env.n_contexts, env.n_responses) != self.shape:
                raise ValueError(f"env has (contexts, responses) = "
                                 f"{(env.n_contexts, env.n_responses)}, the policy was built for "
                                 f"{self.shape} ({self.env.name!r})")
        else:
            raise ValueError(f"env must be a SequenceEnv or a Bandit, got {type(env).__name__}")

    def _check_probs(self, probs: np.ndarray, name: str) -> np.ndarray:
        if probs.size != self.env.n_prompts * self.env.n_sequences:
            raise ValueError(f"{name} must have shape {self.shape}, got shape {probs.shape}")
        probs = probs.reshape(self.shape)
        check_distribution(probs, name)
        if ((probs > 0) & (self.env.bandit.ref2d == 0)).any():
            raise ValueError(f"{name} puts mass where ref is 0; a tabular policy anchored at the "
                             "reference cannot start there")
        return probs

    def _ref_logits(self, env) -> np.ndarray:
        """Reference next-token log-probs ``(X, M, V)``; from ``env.ref`` for a foreign Bandit."""
        own = self.env.bandit
        if (isinstance(env, SequenceEnv) or env is own
                or np.array_equal(env.ref2d, own.ref2d)):
            return np.array(self.env.prefix_ref_logp)
        return self._conditionals(env.ref2d, fallback=np.zeros(self._tree_shape))

    @property
    def _tree_shape(self) -> tuple[int, int, int]:
        return self.env.n_prompts, self.n_nodes, self.env.vocab

    def _conditionals(self, probs: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        """Log next-token conditionals ``(X, M, V)`` of sequence probabilities; ``fallback``
        logits at prefixes of probability 0."""
        vocab, n_x = self.env.vocab, self.env.n_prompts
        out = np.empty(self._tree_shape)
        mass = probs
        with np.errstate(divide="ignore", invalid="ignore"):
            for t, sl in reversed(list(enumerate(_depth_slices(vocab, self.env.length)))):
                child = mass.reshape(n_x, vocab ** t, vocab)
                mass = child.sum(axis=2)
                cond = np.log(child) - np.log(mass)[:, :, None]
                out[:, sl, :] = np.where((mass > 0)[:, :, None], cond, fallback[:, sl, :])
        return out

    def params_from_probs(self, probs) -> np.ndarray:
        """Parameters whose policy is ``probs`` (sequence probabilities ``(n_prompts, V**L)``).

        Logits are the log conditionals ``log p(y_t | x, y_<t)`` (chain rule), ``-inf`` for
        zero-probability continuations; prefixes of probability 0 keep the reference's conditionals.
        """
        probs = self._check_probs(check_finite(as_float_array(probs, "probs"), "probs"), "probs")
        return self._conditionals(probs, np.asarray(self.env.prefix_ref_logp)).ravel()

    def init_params(self, env, rng: np.random.Generator) -> np.ndarray:
        self._check_env(env)
        if not isinstance(self.init, str):
            return self.params_from_probs(self.init)
        logits = self._ref_logits(env)
        if self.init == "uniform":
            logits = np.where(np.isfinite(logits), 0.0, -np.inf)
        elif self.init == "random":
            logits = logits + self.init_scale * rng.standard_normal(logits.shape)
        return np.ascontiguousarray(logits.ravel())

    def _node_logsoftmax(self, params) -> np.ndarray:
        theta = as_float_array(params, "params", ndim=1, shape=(self.n_params,))
        if np.isnan(theta).any() or np.isposinf(theta).any():
            raise ValueError("params must not contain NaN or +inf")
        lsm = _log_softmax(theta.reshape(self._tree_shape))
        if np.isnan(lsm).any():
            raise ValueError("params must have at least one finite logit at every prefix")
        return lsm

    def node_logp(self, params) -> np.ndarray:
        """``log pi(. | x, node)`` for every prompt and prefix node, ``(X, M, V)``."""
        return self._node_logsoftmax(params)

    def logp(self, env, params) -> np.ndarray:
        """``log pi(y|x)`` ``(n_prompts, vocab**length)`` (shaped like ``env.ref`` for a Bandit)."""
        self._check_env(env)
        lp = _tree_logp(self._node_logsoftmax(params), self.env.vocab, self.env.length)
        return env.like_ref(lp) if isinstance(env, Bandit) else lp

    def grad(self, env, params, grad_logp) -> np.ndarray:
        """Exact pullback of ``dL/dlog pi(y|x)`` (shaped like ``logp``) to ``dL/dtheta``."""
        self._check_env(env)
        g = check_finite(as_float_array(grad_logp, "grad_logp", ndim=(1, 2)), "grad_logp")
        allowed = (self.shape,) + (((self.shape[1],),) if self.shape[0] == 1 else ())
        if g.shape not in allowed:
            raise ValueError(f"grad_logp must have shape {self.shape}, got shape {g.shape}")
        lsm = self._node_logsoftmax(params)
        return _tree_backprop(lsm, g.reshape(self.shape), self.env.vocab, self.env.length).ravel()

    def __repr__(self) -> str:
        init = self.init if isinstance(self.init, str) else "<array>"
        return f"AutoregressiveTabular(env={self.env.name!r}, init={init!r})"
