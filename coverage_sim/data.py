"""Offline (and exact on-policy) preference data as a joint distribution over labelled pairs.

A dataset is stored as its (empirical or exact) joint distribution
``weights[x, i, j] = Pr(context x, winner y_w = i, loser y_l = j)``, shape ``(X, K, K)``, summing to
1. Every population loss of the GPO family (docs/theory.md, "Objectives") is then
``L(pi) = sum_{x,i,j} weights[x, i, j] * f(beta * h_pi(x, i, j))``.

Convention for pairs drawn from ``mu x mu`` (docs/theory.md, "Offline data"): two responses
``y, y' ~ mu(.|x)`` are drawn independently and ordered by a label drawn from ``P``, so for
``i != j``::

    weights[x, i, j] = 2 * rho(x) * mu(i|x) * mu(j|x) * P[x, i, j]

(the factor 2 counts the draws ``(i, j)`` and ``(j, i)``), and the diagonal holds the draws
``y = y'``: ``weights[x, i, i] = rho(x) * mu(i|x)**2``. With this convention
``-sum weights * log sigma(beta h)`` is exactly the population DPO loss of docs/theory.md, and
``pair_mass / 2 = rho(x) mu(i|x) mu(j|x)`` recovers the ordered sampling distribution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from coverage_sim._validation import (as_float_array, check_choice, check_distribution,
                                      check_finite, check_int, check_seed)
from coverage_sim.env import Bandit
from coverage_sim.preferences import preference_probs

__all__ = ["PairData", "offline_pairs", "policy_pairs", "pairs_from_list", "UnpairedData",
           "unpaired_from_pairs", "unpaired_data"]

_ATOL = 1e-9


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class PairData:
    """Preference data as a joint distribution over (context, winner, loser).

    Diagonal entries ``weights[x, i, i]`` (both draws returned the same response) are part of the
    ``mu x mu`` population and are kept, so that ``pair_mass / 2`` is the sampling distribution;
    losses that depend only on the margin ``h(i, i) = 0`` contribute a constant for them and their
    gradients ignore them.

    Args:
      weights: ``(X, K, K)`` joint, ``weights[x, i, j] = Pr(x, y_w = i, y_l = j)``; finite,
        non-negative, summing to 1 (within 1e-9). A fresh read-only copy is stored.
      shape: ``env.shape`` -- ``(K,)`` (then ``X`` must be 1) or ``(X, K)``; per-response outputs
        are returned in this shape.
      behavior: ``(X, K)`` (or shaped like ``shape``) behaviour policy ``mu`` when the pairs come
        from ``mu x mu``, else ``None``. Rows sum to 1 (all-zero rows allowed for contexts the data
        never visits).
      n: number of sampled pairs (``weights = counts / n``) or ``None`` for an exact population.
      labels: the label model, e.g. ``"bradley_terry"``, ``"deterministic"``, ``"custom"``.
      source: human-readable description, e.g. ``"mu x mu (exact)"``.

    Examples:
      >>> import numpy as np
      >>> from coverage_sim.data import PairData
      >>> w = np.zeros((1, 2, 2)); w[0, 0, 1] = 1.0
      >>> d = PairData(weights=w, shape=(2,))
      >>> d.chosen, d.rejected
      (array([[1., 0.]]), array([[0., 1.]]))
    """

    weights: np.ndarray
    shape: tuple
    behavior: np.ndarray | None = None
    n: int | None = None
    labels: str = "custom"
    source: str = field(default="custom")

    def __post_init__(self):
        w = as_float_array(self.weights, "weights", ndim=3).copy()
        check_finite(w, "weights")
        if w.shape[1] != w.shape[2] or w.shape[2] < 2:
            raise ValueError(f"weights must have shape (X, K, K) with K >= 2, got shape {w.shape}")
        if (w < 0).any():
            idx = tuple(int(i) for i in np.argwhere(w < 0)[0])
            raise ValueError(f"weights must be non-negative, got {w[idx]!r} at index {idx}")
        total = w.sum()
        if abs(total - 1.0) > _ATOL:
            raise ValueError(f"weights must sum to 1, got sum {total!r}")
        X, K = w.shape[0], w.shape[2]
        try:
            shape = tuple(int(s) for s in self.shape)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"shape must be a tuple of ints, got {self.shape!r}") from exc
        if shape not in ((K,), (X, K)) or (len(shape) == 1 and X != 1):
            allowed = f"({K},) or ({X}, {K})" if X == 1 else f"({X}, {K})"
            raise ValueError(f"shape must be {allowed} to match weights of shape {w.shape}, "
                             f"got {self.shape!r}")
        object.__setattr__(self, "weights", _readonly(w))
        object.__setattr__(self, "shape", shape)
        if self.behavior is not None:
            b = as_float_array(self.behavior, "behavior", ndim=(1, 2)).copy()
            if b.shape not in (shape, (X, K)):
                raise ValueError(f"behavior must have shape {shape} or ({X}, {K}), "
                                 f"got shape {b.shape}")
            b = b.reshape(X, K)
            check_distribution(b, "behavior", allow_empty_rows=True)
            object.__setattr__(self, "behavior", _readonly(b))
        if self.n is not None:
            object.__setattr__(self, "n", check_int(self.n, "n", minimum=1))
        if not isinstance(self.labels, str):
            raise ValueError(f"labels must be a str, got {self.labels!r}")
        if not isinstance(self.source, str):
            raise ValueError(f"source must be a str, got {self.source!r}")

    # -- sizes ------------------------------------------------------------------------------------
    @property
    def n_contexts(self) -> int:
        return self.weights.shape[0]

    @property
    def n_responses(self) -> int:
        return self.weights.shape[2]

    def like_shape(self, arr2d: np.ndarray) -> np.ndarray:
        """Reshape an ``(X, K)`` per-response array to ``self.shape``."""
        return np.asarray(arr2d).reshape(self.shape)

    # -- marginals (cached, read-only) ------------------------------------------------------------
    @cached_property
    def context_weights(self) -> np.ndarray:
        """``(X,)`` context distribution of the data, ``sum_{i,j} weights[x, i, j]``."""
        return _readonly(self.weights.sum(axis=(1, 2)))

    @cached_property
    def chosen(self) -> np.ndarray:
        """``(X, K)`` joint mass of each response as the winner, ``weights.sum(2)``."""
        return _readonly(self.weights.sum(axis=2))

    @cached_property
    def rejected(self) -> np.ndarray:
        """``(X, K)`` joint mass of each response as the loser, ``weights.sum(1)``."""
        return _readonly(self.weights.sum(axis=1))

    @cached_property
    def pair_mass(self) -> np.ndarray:
        """``(X, K, K)`` symmetric unordered-pair mass ``weights + weights^T``.

        For ``i != j`` this is ``Pr(x, {y_w, y_l} = {i, j})``; the full array sums to 2 (every
        unordered pair appears at ``(i, j)`` and ``(j, i)``; the diagonal holds twice the
        self-pair mass). For ``mu x mu`` data ``pair_mass / 2 = rho(x) mu(i|x) mu(j|x)``.
        """
        return _readonly(self.weights + np.swapaxes(self.weights, 1, 2))

    @cached_property
    def response_mass(self) -> np.ndarray:
        """``(X, K)`` joint mass of each response in a pair, ``(chosen + rejected) / 2``.

        For ``mu x mu`` data this is ``rho(x) mu(y|x)``; it sums to 1.
        """
        return _readonly(0.5 * (self.chosen + self.rejected))

    @cached_property
    def support(self) -> np.ndarray:
        """``(X, K)`` bool: responses that appear in at least one pair."""
        return _readonly(self.response_mass > 0)

    @cached_property
    def pair_support(self) -> np.ndarray:
        """``(X, K, K)`` bool: unordered pairs with positive mass."""
        return _readonly(self.pair_mass > 0)

    def __repr__(self) -> str:
        n = "exact" if self.n is None else f"n={self.n}"
        return (f"PairData(source={self.source!r}, labels={self.labels!r}, {n}, "
                f"n_contexts={self.n_contexts}, n_responses={self.n_responses})")


def _check_sampler(env, policy, name: str) -> np.ndarray:
    """A behaviour/sampling policy shaped like ``env.ref``: a distribution on ``supp(pi_ref)``."""
    mu = env.as2d(policy, name).copy()
    check_distribution(mu, name, allow_empty_rows=True)
    empty = (mu.sum(axis=1) == 0) & (env.context_weights > 0)
    if empty.any():
        x = int(np.argmax(empty))
        raise ValueError(f"{name} has no support in context {x} (all-zero row) although the "
                         f"context has weight {env.context_weights[x]!r} > 0; every visited "
                         f"context needs a distribution summing to 1")
    off_ref = (mu > 0) & (env.ref2d == 0)
    if off_ref.any():
        x, y = (int(i) for i in np.argwhere(off_ref)[0])
        raise ValueError(f"{name} puts mass {mu[x, y]!r} on response {y} in context {x} where "
                         f"env.ref is 0; log pi/pi_ref is undefined there (allowed: {name} = 0 "
                         f"wherever env.ref = 0)")
    return mu


def _pairs(env, policy, labels, n, seed, label_noise, reward, name: str, source: str) -> PairData:
    if not isinstance(env, Bandit):
        raise ValueError(f"env must be a coverage_sim.Bandit, got {type(env).__name__}")
    seed = check_seed(seed)
    mu = _check_sampler(env, policy, name)
    if n is not None:
        n = check_int(n, "n", minimum=1)
    P = preference_probs(env, labels=labels, reward=reward, label_noise=label_noise)
    label_name = labels if isinstance(labels, str) else "custom"
    extras = []
    if reward is not None:
        extras.append("proxy reward")
    if label_noise > 0:
        extras.append(f"label noise {label_noise:g}")
    rho = env.context_weights
    draw = rho[:, None, None] * mu[:, :, None] * mu[:, None, :]      # ordered draws (y, y')
    if n is None:
        # winner i, loser j: (y, y') = (i, j) and y wins, or (j, i) and y' wins; draw is
        # symmetric, so 2 * draw * P (diagonal: 2 rho mu_i^2 / 2 = rho mu_i^2).
        w = 2.0 * draw * P
        w /= w.sum()                                                  # remove rounding only
        desc = f"{source} (exact)"
    else:
        rng = np.random.default_rng(seed)
        flat = draw.ravel() / draw.sum()
        counts = rng.multinomial(n, flat).reshape(draw.shape)
        wins = rng.binomial(counts, np.clip(P, 0.0, 1.0))             # y beats y'
        # winner i, loser j: draw (i, j) won by y, or draw (j, i) won by y' (on the diagonal this
        # is the full count of (i, i) draws)
        c = wins + np.swapaxes(counts - wins, 1, 2)
        w = c / n
        desc = f"{source} (n={n}, seed={seed!r})"
    if extras:
        desc += ", " + ", ".join(extras)
    return PairData(weights=w, shape=env.shape, behavior=mu, n=n, labels=label_name, source=desc)


def offline_pairs(env, behavior, labels="bradley_terry", n: int | None = None, seed=0, *,
                  label_noise: float = 0.0, reward=None) -> PairData:
    """Offline preference data from a behaviour policy: pairs ``(y, y') ~ mu x mu``, labels from P.

    The offline regime (docs/theory.md, "Offline data"; Tang et al., arXiv:2405.08448; Song et al.,
    arXiv:2406.01462). Zeros in ``behavior`` give partial coverage (the coverage dial of
    :mod:`coverage_sim.behavior`). With ``n=None`` the exact population
    ``weights[x,i,j] = 2 rho_x mu_i mu_j P_ij`` (``i != j``), ``rho_x mu_i^2`` (``i = j``) is
    returned; otherwise ``n`` labelled pairs are sampled (context ~ rho, ``y, y' ~ mu_x``
    independently, winner ~ ``P``) and ``weights = counts / n``.

    Args:
      env: the :class:`coverage_sim.env.Bandit`.
      behavior: behaviour policy ``mu``, shaped like ``env.ref``; rows sum to 1 (an all-zero row is
        allowed only for contexts with ``rho = 0``); zero wherever ``env.ref`` is 0.
      labels: ``"bradley_terry"``, ``"deterministic"`` or an explicit preference array (see
        :func:`coverage_sim.preferences.preference_probs`).
      n: number of sampled pairs (``>= 1``), or ``None`` for the exact population.
      seed: seed for ``np.random.default_rng`` (only used when ``n`` is given).
      label_noise: label flip rate in ``[0, 0.5]``.
      reward: optional proxy reward, shaped like ``env.ref``, used by the named label models.

    Returns:
      A :class:`PairData` with ``behavior = mu`` and ``n``.

    Examples:
      >>> from coverage_sim.env import Bandit
      >>> from coverage_sim.data import offline_pairs
      >>> env = Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5])
      >>> offline_pairs(env, [0.5, 0.5], labels="deterministic").weights[0]
      array([[0.25, 0.5 ],
             [0.  , 0.25]])
    """
    return _pairs(env, behavior, labels, n, seed, label_noise, reward, "behavior", "mu x mu")


def policy_pairs(env, policy, labels="bradley_terry", reward=None, label_noise: float = 0.0
                 ) -> PairData:
    """Exact on-policy pair distribution ``pi x pi`` (a snapshot of online data).

    The online regime (docs/theory.md, "Online objectives"): pairs from the current policy ``pi_t`` (treated as
    stop-gradient), labelled by the gold or a proxy preference model. Identical to
    ``offline_pairs(env, policy, labels, n=None, ...)``.

    Args:
      env: the bandit.
      policy: sampling policy ``pi``, shaped like ``env.ref``, zero wherever ``env.ref`` is 0.
      labels: label model (see :func:`offline_pairs`).
      reward: optional proxy reward shaped like ``env.ref``.
      label_noise: flip rate in ``[0, 0.5]``.

    Returns:
      Exact :class:`PairData` with ``behavior = policy`` and ``n = None``.

    Examples:
      >>> from coverage_sim.env import Bandit
      >>> from coverage_sim.data import policy_pairs
      >>> env = Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5])
      >>> policy_pairs(env, [0.9, 0.1], labels="deterministic").weights[0].round(2)
      array([[0.81, 0.18],
             [0.  , 0.01]])
    """
    return _pairs(env, policy, labels, None, 0, label_noise, reward, "policy", "pi x pi")


def pairs_from_list(env, pairs, weights=None, *, source: str | None = None) -> PairData:
    """Preference data from an explicit list of labelled pairs.

    Args:
      env: the bandit.
      pairs: sequence of ``(winner, loser)`` response indices (plain bandit only) or
        ``(context, winner, loser)`` triples. Repeated pairs accumulate weight.
        ``winner == loser`` is an error, as is a response where ``env.ref`` is 0.
      weights: optional non-negative weights, one per pair, with a positive sum (normalised to 1);
        default: equal weights.
      source: description stored in :attr:`PairData.source` (default ``"explicit pairs"``).

    Returns:
      :class:`PairData` with ``labels = "custom"``, ``behavior = None`` and ``n = len(pairs)`` when
      equally weighted (``None`` when ``weights`` is given).

    Examples:
      >>> from coverage_sim.env import Bandit
      >>> from coverage_sim.data import pairs_from_list
      >>> env = Bandit(reward=[1.0, 0.0, -1.0], ref=[1/3, 1/3, 1/3])
      >>> pairs_from_list(env, [(0, 1), (1, 2)]).chosen
      array([[0.5, 0.5, 0. ]])
    """
    X, K = env.n_contexts, env.n_responses
    try:
        items = [tuple(p) for p in pairs]
    except TypeError as exc:
        raise ValueError(f"pairs must be a sequence of (winner, loser) or (context, winner, loser) "
                         f"tuples, got {pairs!r}") from exc
    if not items:
        raise ValueError("pairs must contain at least one pair, got an empty sequence")
    triples = []
    for p in items:
        if len(p) == 2 and X == 1:
            p = (0,) + p
        if len(p) != 3:
            allowed = "(winner, loser) or (context, winner, loser)" if X == 1 else \
                "(context, winner, loser) for a contextual bandit"
            raise ValueError(f"pairs entries must be {allowed}, got {p!r}")
        for v, bound, what in zip(p, (X, K, K), ("context", "winner", "loser")):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < bound:
                raise ValueError(f"pairs entry {p!r}: {what} must be an integer in [0, {bound}), "
                                 f"got {v!r}")
        x, i, j = (int(v) for v in p)
        if i == j:
            raise ValueError(f"pairs entry {p!r}: winner and loser must differ")
        for y in (i, j):
            if env.ref2d[x, y] == 0:
                raise ValueError(f"pairs entry {p!r}: response {y} has env.ref = 0 in context {x}; "
                                 "log pi/pi_ref is undefined there")
        triples.append((x, i, j))
    if weights is None:
        wts = np.full(len(triples), 1.0 / len(triples))
        n = len(triples)
    else:
        wts = check_finite(as_float_array(weights, "weights", ndim=1, shape=(len(triples),)),
                           "weights")
        if (wts < 0).any() or wts.sum() <= 0:
            raise ValueError(f"weights must be non-negative with a positive sum, got {wts!r}")
        wts = wts / wts.sum()
        n = None
    W = np.zeros((X, K, K))
    idx = np.asarray(triples)
    np.add.at(W, (idx[:, 0], idx[:, 1], idx[:, 2]), wts)
    W /= W.sum()
    return PairData(weights=W, shape=env.shape, behavior=None, n=n, labels="custom",
                    source="explicit pairs" if source is None else source)


@dataclass(frozen=True, eq=False)
class UnpairedData:
    """Unpaired (binary-feedback) data for KTO: desirable and undesirable example masses.

    The population form of TRL's unpaired preference dataset (``prompt``, ``completion``, ``label``)
    that ``KTOTrainer`` trains on: ``desirable[x, y]`` = Pr(example = (x, y) with label True) and
    ``undesirable[x, y]`` likewise for False; together they sum to 1 (one example = mass 1/n).

    KTO's reference point is estimated by TRL from *mismatched* pairs: the completions of a batch
    rotated by one position, (x_i, y_{i-1}). With the examples in i.i.d. order, example i - 1 is
    independent of example i, so the mismatched pair is distributed as rho_D(x) m_D(y) with rho_D
    the data's context marginal and m_D the response marginal pooled over contexts:
    :attr:`mismatched`. (TRL's automatic unpairing of a *paired* dataset writes the chosen and
    rejected completions in blocks of 1,000 rows, so with its required sequential sampling most
    batches then see only one label; that ordering artefact is not modelled.)

    Args:
      desirable, undesirable: ``(X, K)`` (or shaped like ``shape``) non-negative masses with a total
        of 1 (within 1e-9).
      shape: ``env.shape``, as :class:`PairData`.
      behavior: the behaviour policy the responses were drawn from, or ``None``.
      n: number of sampled examples, or ``None`` for an exact population.
      labels: how the labels were made (``"threshold"``, ``"bradley_terry"``, ``"pairs"``, ...).
      source: human-readable description.

    Examples:
      >>> import numpy as np
      >>> d = UnpairedData(desirable=[[0.5, 0.0]], undesirable=[[0.0, 0.5]], shape=(2,))
      >>> d.mismatched
      array([[0.5, 0.5]])
    """

    desirable: np.ndarray
    undesirable: np.ndarray
    shape: tuple
    behavior: np.ndarray | None = None
    n: int | None = None
    labels: str = "custom"
    source: str = field(default="custom")

    def __post_init__(self):
        try:
            shape = tuple(int(s) for s in self.shape)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"shape must be a tuple of ints, got {self.shape!r}") from exc
        arrays = {}
        for name in ("desirable", "undesirable"):
            arr = check_finite(as_float_array(getattr(self, name), name, ndim=(1, 2)), name)
            if arr.shape != shape and not (len(shape) == 1 and arr.shape == (1,) + shape):
                raise ValueError(f"{name} must have shape {shape}, got shape {arr.shape}")
            if (arr < 0).any():
                idx = tuple(int(i) for i in np.argwhere(arr < 0)[0])
                raise ValueError(f"{name} must be non-negative, got {arr[idx]!r} at index {idx}")
            arrays[name] = arr.reshape(-1, shape[-1]).copy()
        total = arrays["desirable"].sum() + arrays["undesirable"].sum()
        if abs(total - 1.0) > _ATOL:
            raise ValueError(f"desirable and undesirable must sum to 1 together, got sum {total!r}")
        object.__setattr__(self, "shape", shape)
        for name, arr in arrays.items():
            object.__setattr__(self, name, _readonly(arr))
        if self.behavior is not None:
            b = as_float_array(self.behavior, "behavior", ndim=(1, 2)).reshape(-1, shape[-1])
            check_distribution(b, "behavior", allow_empty_rows=True)
            object.__setattr__(self, "behavior", _readonly(b.copy()))
        if self.n is not None:
            object.__setattr__(self, "n", check_int(self.n, "n", minimum=1))

    @property
    def n_contexts(self) -> int:
        return self.desirable.shape[0]

    @property
    def n_responses(self) -> int:
        return self.desirable.shape[1]

    @cached_property
    def response_mass(self) -> np.ndarray:
        """``(X, K)`` joint mass of each (context, response) example, both labels."""
        return _readonly(self.desirable + self.undesirable)

    @cached_property
    def context_weights(self) -> np.ndarray:
        """``(X,)`` context distribution of the examples."""
        return _readonly(self.response_mass.sum(axis=1))

    @cached_property
    def support(self) -> np.ndarray:
        """``(X, K)`` bool: responses that appear in at least one example."""
        return _readonly(self.response_mass > 0)

    @cached_property
    def mismatched(self) -> np.ndarray:
        """``(X, K)`` law of TRL's mismatched KL pair (x_i, y_{i-1}): rho_D(x) m_D(y)."""
        return _readonly(self.context_weights[:, None] * self.response_mass.sum(axis=0)[None, :])

    def __repr__(self) -> str:
        n = "exact" if self.n is None else f"n={self.n}"
        return (f"UnpairedData(source={self.source!r}, labels={self.labels!r}, {n}, "
                f"desirable={self.desirable.sum():.3g}, n_contexts={self.n_contexts}, "
                f"n_responses={self.n_responses})")


def unpaired_from_pairs(data: PairData) -> UnpairedData:
    """Unpair preference pairs as TRL does: every chosen response desirable, every rejected not.

    TRL's ``unpair_preference_dataset`` (which ``KTOTrainer`` applies to a paired dataset) turns
    each pair (x, y_w, y_l) into the examples (x, y_w, True) and (x, y_l, False), so
    ``desirable = chosen / 2`` and ``undesirable = rejected / 2``.

    Args:
      data: a :class:`PairData`.

    Returns:
      An :class:`UnpairedData` with ``n = 2 data.n`` (or ``None``).

    Examples:
      >>> from coverage_sim.env import Bandit
      >>> env = Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5])
      >>> unpaired_from_pairs(offline_pairs(env, env.ref, labels="deterministic")).desirable
      array([[0.375, 0.125]])
    """
    if not isinstance(data, PairData):
        raise ValueError(f"data must be a PairData, got {type(data).__name__}")
    return UnpairedData(desirable=data.chosen / 2, undesirable=data.rejected / 2, shape=data.shape,
                        behavior=data.behavior, n=None if data.n is None else 2 * data.n,
                        labels=f"pairs ({data.labels})", source=f"unpaired {data.source}")


_UNPAIRED_LABELS = ("threshold", "bradley_terry")


def unpaired_data(env, behavior, labels: str = "threshold", threshold=None, n: int | None = None,
                  seed=0, *, reward=None) -> UnpairedData:
    """Unpaired binary feedback on responses from a behaviour policy (KTO's data).

    Each example is a context x ~ rho and a response y ~ mu(.|x), labelled desirable when its
    reward beats a threshold t(x): ``labels="threshold"``: desirable iff r(x, y) > t(x)
    (deterministic, Ethayarajh et al.'s binary "good/bad" signal); ``labels="bradley_terry"``:
    desirable with probability sigma(r(x, y) - t(x)), a Bradley-Terry comparison against a
    response of reward t(x).

    Args:
      env: the bandit.
      behavior: behaviour policy mu, shaped like ``env.ref`` (as :func:`offline_pairs`).
      labels: ``"threshold"`` or ``"bradley_terry"``.
      threshold: t, a float or one value per context; default the behaviour policy's mean reward
        E_{y~mu} r(x, y) in each context (a response is desirable when it is better than mu's
        average).
      n: number of sampled examples, or ``None`` for the exact population.
      seed: seed for ``np.random.default_rng`` (only used when ``n`` is given).
      reward: optional proxy reward shaped like ``env.ref`` used instead of the gold reward.

    Returns:
      An :class:`UnpairedData`.

    Examples:
      >>> from coverage_sim.env import Bandit
      >>> env = Bandit(reward=[1.0, 0.0, -1.0], ref=[0.5, 0.25, 0.25])
      >>> d = unpaired_data(env, env.ref)          # threshold = E_mu r = 0.25
      >>> d.desirable, d.undesirable
      (array([[0.5, 0. , 0. ]]), array([[0.  , 0.25, 0.25]]))
    """
    if not isinstance(env, Bandit):
        raise ValueError(f"env must be a coverage_sim.Bandit, got {type(env).__name__}")
    seed = check_seed(seed)
    mu = _check_sampler(env, behavior, "behavior")
    check_choice(labels, "labels", _UNPAIRED_LABELS)
    r = env.reward2d if reward is None else check_finite(env.as2d(reward, "reward"), "reward")
    if threshold is None:
        t = (mu * r).sum(axis=1)
    else:
        t = check_finite(as_float_array(threshold, "threshold", ndim=(0, 1)), "threshold")
        if t.ndim == 1 and t.shape != (env.n_contexts,):
            raise ValueError(f"threshold must be a float or have shape ({env.n_contexts},), got "
                             f"shape {t.shape}")
        t = np.broadcast_to(t, (env.n_contexts,))
    if labels == "threshold":
        p_des = (r > t[:, None]).astype(np.float64)
    else:
        p_des = 1.0 / (1.0 + np.exp(-(r - t[:, None])))
    joint = env.context_weights[:, None] * mu
    if n is None:
        total = joint.sum()            # removes rounding only
        des, und = joint * p_des / total, joint * (1.0 - p_des) / total
        desc = "mu (exact)"
    else:
        n = check_int(n, "n", minimum=1)
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(n, joint.ravel() / joint.sum()).reshape(joint.shape)
        good = rng.binomial(counts, p_des)
        des, und = good / n, (counts - good) / n
        desc = f"mu (n={n}, seed={seed!r})"
    return UnpairedData(desirable=des, undesirable=und, shape=env.shape, behavior=mu, n=n,
                        labels=labels, source=desc)
