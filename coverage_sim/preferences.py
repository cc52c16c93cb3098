"""Preference label models: ``P[x, i, j] = Pr(y_i > y_j | x)``.

Every label model returns an array of shape ``(X, K, K)`` (``X = 1`` for a plain bandit) with
``P + P^T = 1`` (so the diagonal is exactly 1/2), float64. These are the "general preferences" of
Azar et al. (arXiv:2310.12036); Bradley-Terry is the special case ``P_ij = sigma(r_i - r_j)``
(docs/theory.md, "The bandit").

Label models:
  * :func:`bradley_terry` -- ``sigma(scale * (r_i - r_j))``, the stochastic rater of DPO/RLHF.
  * :func:`deterministic` -- argmax labels (1 if ``r_i > r_j``, 0 if ``<``, 1/2 on ties), as used by
    Tajwar et al. (arXiv:2404.14367) and TRL's OnlineDPOTrainer judge.
  * :func:`with_noise` -- symmetric label flips with rate ``eps``.
  * :func:`preference_probs` -- the dispatcher used by :mod:`coverage_sim.data`.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from coverage_sim._validation import (as_float_array, check_choice, check_finite, check_in_range,
                                      check_positive)

__all__ = [
    "LABEL_MODELS",
    "bradley_terry",
    "deterministic",
    "with_noise",
    "preference_matrix",
    "preference_probs",
]

#: Names accepted by :func:`preference_probs` (``labels=``).
LABEL_MODELS = ("bradley_terry", "deterministic")

_ATOL = 1e-9


def _reward3(reward, name: str = "reward") -> np.ndarray:
    """Finite reward of shape (K,) or (X, K) -> (X, K)."""
    r = check_finite(as_float_array(reward, name, ndim=(1, 2)), name)
    if r.shape[-1] < 1:
        raise ValueError(f"{name} must have at least 1 response, got shape {r.shape}")
    return r.reshape(-1, r.shape[-1])


def _antisymmetrise(P: np.ndarray) -> np.ndarray:
    """Enforce ``P + P^T = 1`` to rounding (average ``P`` with ``1 - P^T``)."""
    return 0.5 * (P + (1.0 - np.swapaxes(P, -1, -2)))


def bradley_terry(reward, scale: float = 1.0) -> np.ndarray:
    """Bradley-Terry preferences ``P[x, i, j] = sigma(scale * (r(x, i) - r(x, j)))``.

    The rater model behind DPO and RLHF (Rafailov et al., arXiv:2305.18290, eq. 1). Computed with
    ``scipy.special.expit``, so large reward gaps saturate to exactly 0/1 without overflow.

    Args:
      reward: reward ``r(x, y)``, shape ``(K,)`` or ``(X, K)``; finite.
      scale: inverse temperature of the rater, finite and ``>= 0`` (0 gives coin-flip labels).

    Returns:
      ``P`` of shape ``(X, K, K)`` (``X = 1`` for a 1-d reward), ``P + P^T = 1``, diagonal 1/2.

    Examples:
      >>> from coverage_sim.preferences import bradley_terry
      >>> bradley_terry([1.0, 0.0])[0].round(4)
      array([[0.5   , 0.7311],
             [0.2689, 0.5   ]])
    """
    scale = check_positive(scale, "scale", allow_zero=True)
    r = _reward3(reward)
    diff = scale * (r[:, :, None] - r[:, None, :])
    return _antisymmetrise(expit(diff))


def deterministic(reward) -> np.ndarray:
    """Argmax ("deterministic judge") labels: 1 if ``r_i > r_j``, 0 if ``r_i < r_j``, 1/2 on ties.

    The labels of Tajwar et al. (arXiv:2404.14367; winner = higher true reward) and of TRL's
    OnlineDPOTrainer. Ties are exact float equality and get a fair coin (1/2), so ``P + P^T = 1``.

    Args:
      reward: reward ``r(x, y)``, shape ``(K,)`` or ``(X, K)``; finite.

    Returns:
      ``P`` of shape ``(X, K, K)`` with entries in {0, 1/2, 1}.

    Examples:
      >>> from coverage_sim.preferences import deterministic
      >>> deterministic([1.0, 0.0, 1.0])[0]
      array([[0.5, 1. , 0.5],
             [0. , 0.5, 0. ],
             [0.5, 1. , 0.5]])
    """
    r = _reward3(reward)
    return 0.5 + 0.5 * np.sign(r[:, :, None] - r[:, None, :])


def preference_matrix(P) -> np.ndarray:
    """Validate a general preference matrix and return it as ``(X, K, K)`` float64.

    A general preference model (Azar et al., arXiv:2310.12036, §2) need not be transitive; it must
    be finite, in ``[0, 1]`` and satisfy ``P + P^T = 1`` (within 1e-9), which forces a 1/2 diagonal.

    Args:
      P: ``(K, K)`` or ``(X, K, K)`` array with ``P[x, i, j] = Pr(i > j | x)``.

    Returns:
      A fresh ``(X, K, K)`` float64 copy (``X = 1`` for a 2-d input).

    Examples:
      >>> from coverage_sim.preferences import preference_matrix
      >>> preference_matrix([[0.5, 0.9], [0.1, 0.5]]).shape
      (1, 2, 2)
    """
    arr = check_finite(as_float_array(P, "P", ndim=(2, 3)), "P")
    if arr.shape[-1] != arr.shape[-2]:
        raise ValueError(f"P must be square in its last two axes, got shape {arr.shape}")
    arr = arr.reshape(-1, arr.shape[-2], arr.shape[-1]).copy()
    bad = (arr < 0) | (arr > 1)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"P must lie in [0, 1], got {arr[idx]!r} at index {idx}")
    dev = np.abs(arr + np.swapaxes(arr, -1, -2) - 1.0)
    if (dev > _ATOL).any():
        idx = tuple(int(i) for i in np.argwhere(dev > _ATOL)[0])
        x, i, j = idx
        raise ValueError(
            f"P must satisfy P + P^T = 1 (within {_ATOL:g}), got P[{x},{i},{j}] + P[{x},{j},{i}] = "
            f"{arr[x, i, j] + arr[x, j, i]!r}")
    return arr


def with_noise(P, eps: float) -> np.ndarray:
    """Symmetric label noise: each label is flipped with probability ``eps``.

    ``P_eps = (1 - eps) P + eps (1 - P)``. The flipped labels stay a valid preference model; with
    ``eps = 1/2`` every label is a coin flip. This is the noise model of robust DPO (Chowdhury et
    al., arXiv:2403.00409) and cDPO label smoothing.

    Args:
      P: preference matrix, ``(K, K)`` or ``(X, K, K)`` (validated by :func:`preference_matrix`).
      eps: flip rate in ``[0, 0.5]``.

    Returns:
      ``P_eps`` of shape ``(X, K, K)``.

    Examples:
      >>> from coverage_sim.preferences import deterministic, with_noise
      >>> with_noise(deterministic([1.0, 0.0]), 0.1)[0]
      array([[0.5, 0.9],
             [0.1, 0.5]])
    """
    eps = check_in_range(eps, "eps", 0.0, 0.5)
    P = preference_matrix(P)
    return _antisymmetrise((1.0 - eps) * P + eps * (1.0 - P))


def preference_probs(env, labels="bradley_terry", reward=None, label_noise: float = 0.0
                     ) -> np.ndarray:
    """Preference probabilities ``P[x, i, j] = Pr(i > j | x)`` for a bandit.

    Args:
      env: a :class:`coverage_sim.env.Bandit`.
      labels: ``"bradley_terry"`` (``sigma(r_i - r_j)``), ``"deterministic"`` (argmax, ties 1/2) or
        an explicit preference array of shape ``(K, K)`` (used for every context) or ``(X, K, K)``.
      reward: optional reward shaped like ``env.ref`` used instead of the gold reward, e.g. a proxy
        ``r_hat`` fitted by :func:`coverage_sim.reward_model.fit_bradley_terry`. Only valid with a
        named label model.
      label_noise: flip rate in ``[0, 0.5]`` applied on top (:func:`with_noise`).

    Returns:
      ``P`` of shape ``(X, K, K)``.

    Examples:
      >>> from coverage_sim.env import Bandit
      >>> from coverage_sim.preferences import preference_probs
      >>> env = Bandit(reward=[2.0, 0.0], ref=[0.5, 0.5])
      >>> preference_probs(env, "deterministic", label_noise=0.25)[0]
      array([[0.5 , 0.75],
             [0.25, 0.5 ]])
    """
    label_noise = check_in_range(label_noise, "label_noise", 0.0, 0.5)
    X, K = env.n_contexts, env.n_responses
    if isinstance(labels, str):
        check_choice(labels, "labels", LABEL_MODELS)
        r = env.reward2d if reward is None else check_finite(env.as2d(reward, "reward"), "reward")
        P = bradley_terry(r) if labels == "bradley_terry" else deterministic(r)
    else:
        if reward is not None:
            raise ValueError("reward must be None when labels is an explicit preference array "
                             f"(the array already fixes the labels); got reward={reward!r}")
        try:
            P = preference_matrix(labels)
        except ValueError as exc:
            raise ValueError(f"labels: {exc} (valid names: {', '.join(LABEL_MODELS)}, or an array "
                             f"of shape ({K}, {K}) or ({X}, {K}, {K}))") from exc
        if P.shape[1:] != (K, K) or P.shape[0] not in (1, X):
            raise ValueError(f"labels array must have shape ({K}, {K}) or ({X}, {K}, {K}), "
                             f"got shape {np.shape(labels)}")
        P = np.broadcast_to(P, (X, K, K)).copy()
    if label_noise > 0:
        P = _antisymmetrise((1.0 - label_noise) * P + label_noise * (1.0 - P))
    return P
