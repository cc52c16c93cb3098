"""Bandit environments: a response set per context, a gold reward and a reference policy.

A (contextual) bandit is the population object every objective in coverage_sim is evaluated on:
contexts ``x`` drawn from ``context_weights`` (rho), responses ``y`` in a finite set of size K, a gold
reward ``r*(x, y)`` and a reference policy ``pi_ref(y | x)``. The KL-regularised optimum
``pi*_beta = pi_ref * exp(r / beta) / Z`` (Rafailov et al. 2023, arXiv:2305.18290, eq. 4) is computed
exactly by :func:`optimal_policy`.

Shapes: a plain bandit has ``reward`` and ``ref`` of shape ``(K,)``; a contextual bandit has shape
``(X, K)``. Internally everything is handled as ``(X, K)`` (``X = 1`` for a plain bandit) and results
are returned shaped like ``ref``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import log_softmax

from coverage_sim._validation import (as_float_array, check_distribution, check_finite,
                                      check_positive)

__all__ = ["Bandit", "optimal_policy"]


@dataclass(frozen=True, eq=False)
class Bandit:
    """A (contextual) bandit with a gold reward and a reference policy.

    Args:
      reward: gold reward ``r*(x, y)``, shape ``(K,)`` or ``(X, K)``; finite.
      ref: reference policy ``pi_ref(y | x)``, same shape as ``reward``; every row non-negative and
        summing to 1. Zeros are allowed (a reference with partial support); such responses have
        ``log pi_ref = -inf`` and a policy anchored at ``pi_ref`` never reaches them.
      context_weights: context distribution ``rho``, shape ``(X,)``; defaults to uniform. Ignored
        (must be ``None`` or ``[1.0]``) for a plain bandit.
      name: a label used in reprs and result tables.

    Examples:
      >>> import coverage_sim as cs
      >>> env = cs.Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5])
      >>> env.n_contexts, env.n_responses
      (1, 2)
    """

    reward: np.ndarray
    ref: np.ndarray
    context_weights: np.ndarray | None = None
    name: str = field(default="bandit")

    def __post_init__(self):
        # Copies: the stored arrays are made read-only, which must not freeze the caller's arrays.
        reward = check_finite(as_float_array(self.reward, "reward", ndim=(1, 2)).copy(), "reward")
        ref = as_float_array(self.ref, "ref", ndim=(1, 2)).copy()
        if ref.shape != reward.shape:
            raise ValueError(f"ref must have the same shape as reward {reward.shape}, "
                             f"got shape {ref.shape}")
        if reward.shape[-1] < 2:
            raise ValueError(f"reward must have at least 2 responses, got shape {reward.shape}")
        check_distribution(ref, "ref")
        n_contexts = 1 if reward.ndim == 1 else reward.shape[0]
        if self.context_weights is None:
            weights = np.full(n_contexts, 1.0 / n_contexts)
        else:
            weights = as_float_array(self.context_weights, "context_weights", ndim=1,
                                     shape=(n_contexts,)).copy()
            check_distribution(weights, "context_weights")
        for arr in (reward, ref, weights):
            arr.setflags(write=False)
        object.__setattr__(self, "reward", reward)
        object.__setattr__(self, "ref", ref)
        object.__setattr__(self, "context_weights", weights)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of ``reward`` and ``ref``: ``(K,)`` or ``(X, K)``."""
        return self.ref.shape

    @property
    def n_contexts(self) -> int:
        return 1 if self.ref.ndim == 1 else self.ref.shape[0]

    @property
    def n_responses(self) -> int:
        return self.ref.shape[-1]

    @property
    def reward2d(self) -> np.ndarray:
        """Gold reward as ``(X, K)``."""
        return self.reward.reshape(self.n_contexts, self.n_responses)

    @property
    def ref2d(self) -> np.ndarray:
        """Reference policy as ``(X, K)``."""
        return self.ref.reshape(self.n_contexts, self.n_responses)

    @property
    def ref_logp2d(self) -> np.ndarray:
        """``log pi_ref`` as ``(X, K)``, ``-inf`` outside the reference's support."""
        with np.errstate(divide="ignore"):
            return np.log(self.ref2d)

    def as2d(self, arr, name: str) -> np.ndarray:
        """Coerce a per-response array shaped like ``ref`` (or already ``(X, K)``) to ``(X, K)``."""
        arr = as_float_array(arr, name, ndim=(1, 2))
        if arr.shape not in (self.shape, (self.n_contexts, self.n_responses)):
            raise ValueError(f"{name} must have shape {self.shape}, got shape {arr.shape}")
        return arr.reshape(self.n_contexts, self.n_responses)

    def like_ref(self, arr2d: np.ndarray) -> np.ndarray:
        """Reshape an ``(X, K)`` array back to the shape of ``ref``."""
        return np.asarray(arr2d).reshape(self.shape)

    def __repr__(self) -> str:
        return (f"Bandit(name={self.name!r}, n_contexts={self.n_contexts}, "
                f"n_responses={self.n_responses})")


def optimal_policy(env: Bandit, beta: float, reward=None) -> np.ndarray:
    """The KL-regularised optimum ``pi*_beta(y|x) = pi_ref(y|x) exp(r(x,y)/beta) / Z(x)``.

    Maximiser of ``E_x[E_{y~pi} r(x, y) - beta KL(pi(.|x) || pi_ref(.|x))]`` (Rafailov et al. 2023,
    arXiv:2305.18290, eq. 4). Computed with a log-softmax, so large ``r / beta`` does not overflow.

    Args:
      env: the bandit.
      beta: KL coefficient, > 0.
      reward: optional reward to tilt by (e.g. a proxy ``r_hat``), shaped like ``env.ref``;
        defaults to the gold reward.

    Returns:
      ``pi*_beta``, shaped like ``env.ref``; zero wherever ``pi_ref`` is zero.

    Examples:
      >>> import coverage_sim as cs
      >>> env = cs.Bandit(reward=[0.0, 1.0], ref=[0.5, 0.5])
      >>> cs.optimal_policy(env, beta=1.0).round(4)
      array([0.2689, 0.7311])
    """
    beta = check_positive(beta, "beta")
    r = env.reward2d if reward is None else check_finite(env.as2d(reward, "reward"), "reward")
    # Subtract each row's best reward first: with huge r / beta, log pi_ref would otherwise be lost
    # in the rounding of the sum.
    logits = env.ref_logp2d + (r - r.max(axis=-1, keepdims=True)) / beta
    return env.like_ref(np.exp(log_softmax(logits, axis=-1)))
