"""Behaviour policies ``mu``: the coverage dial of offline data (docs/theory.md, "Coverage").

* :func:`restrict_support` -- support truncation (``mu = 0`` outside ``S``), Song et al.
  (arXiv:2406.01462) partial coverage.
* :func:`quality_mixture` -- ``mu = (1 - k) pi_ref + k pi_q`` with ``pi_q ∝ pi_ref e^{r/beta_q}``
  (Tang et al., arXiv:2405.08448, the "quality" hypothesis).
* :func:`replay` -- ``(1/T) sum_t pi_t`` (Tang et al.'s replay ablation of the coverage hypothesis).
* :func:`mixture`, :func:`uniform` -- building blocks.

All functions take and return policies shaped ``(K,)`` or ``(X, K)`` with rows summing to 1.
"""

from __future__ import annotations

import numpy as np

from coverage_sim._validation import (as_float_array, check_distribution, check_in_range,
                                      check_positive)
from coverage_sim.env import optimal_policy

__all__ = ["restrict_support", "mixture", "quality_mixture", "replay", "uniform"]


def _policy(policy, name: str) -> np.ndarray:
    arr = as_float_array(policy, name, ndim=(1, 2))
    if arr.shape[-1] < 2:
        raise ValueError(f"{name} must have at least 2 responses, got shape {arr.shape}")
    return check_distribution(arr, name)


def restrict_support(policy, support) -> np.ndarray:
    """Truncate a policy to a support set and renormalise each row.

    ``mu(y|x) = policy(y|x) 1[y in S_x] / sum_{y' in S_x} policy(y'|x)``: the support-truncation
    coverage knob (docs/theory.md, "Coverage"; Song et al., arXiv:2406.01462).

    Args:
      policy: ``(K,)`` or ``(X, K)`` distribution(s).
      support: boolean mask shaped like ``policy`` (or ``(K,)``, used for every context), or a
        sequence of distinct response indices kept in every context (a 0/1 integer list of length
        K is refused as ambiguous: a mask must be boolean).

    Returns:
      The truncated policy, shaped like ``policy``.

    Raises:
      ValueError: if a row has no policy mass left on the support.

    Examples:
      >>> from coverage_sim.behavior import restrict_support
      >>> restrict_support([0.5, 0.25, 0.25], [0, 1])
      array([0.66666667, 0.33333333, 0.        ])
    """
    pi = _policy(policy, "policy")
    pi2 = pi.reshape(-1, pi.shape[-1])
    K = pi2.shape[1]
    sup = np.asarray(support)
    if sup.dtype == bool:
        if sup.shape not in ((K,), pi.shape, pi2.shape):
            allowed = " or ".join(dict.fromkeys(map(str, [(K,), pi.shape])))
            raise ValueError(f"support mask must have shape {allowed}, got shape {sup.shape}")
        mask = np.broadcast_to(sup.reshape(-1, K), pi2.shape)
    else:
        if sup.ndim != 1 or sup.size == 0 or not np.issubdtype(sup.dtype, np.integer):
            raise ValueError(f"support must be a boolean mask or a non-empty sequence of integer "
                             f"indices, got {support!r}")
        if ((sup < 0) | (sup >= K)).any():
            raise ValueError(f"support indices must lie in [0, {K}), got {support!r}")
        # [1, 0, 1] read as indices would keep responses {0, 1}, not the mask's {0, 2}.
        if np.unique(sup).size != sup.size or (sup.size == K and np.isin(sup, (0, 1)).all()):
            raise ValueError(f"support {support!r} is ambiguous: integer indices must be distinct "
                             f"and not look like a 0/1 mask; pass a mask as booleans "
                             f"(np.asarray(mask, dtype=bool)) or distinct response indices")
        mask = np.zeros(pi2.shape, dtype=bool)
        mask[:, sup] = True
    kept = np.where(mask, pi2, 0.0)
    mass = kept.sum(axis=1)
    if (mass <= 0).any():
        x = int(np.argmax(mass <= 0))
        raise ValueError(f"support leaves no policy mass in context {x}; the support must "
                         f"overlap the policy's support in every context")
    return (kept / mass[:, None]).reshape(pi.shape)


def mixture(policy_a, policy_b, weight: float) -> np.ndarray:
    """Convex mixture ``(1 - weight) * policy_a + weight * policy_b``.

    Args:
      policy_a: ``(K,)`` or ``(X, K)`` distribution(s).
      policy_b: same shape as ``policy_a``.
      weight: mixing weight in ``[0, 1]`` on ``policy_b``.

    Returns:
      The mixture, shaped like ``policy_a``.

    Examples:
      >>> from coverage_sim.behavior import mixture
      >>> mixture([1.0, 0.0], [0.0, 1.0], 0.25)
      array([0.75, 0.25])
    """
    a = _policy(policy_a, "policy_a")
    b = _policy(policy_b, "policy_b")
    if a.shape != b.shape:
        raise ValueError(f"policy_b must have the shape of policy_a {a.shape}, got shape {b.shape}")
    weight = check_in_range(weight, "weight", 0.0, 1.0)
    return (1.0 - weight) * a + weight * b


def quality_mixture(env, k: float, beta_q: float) -> np.ndarray:
    """Quality knob ``mu = (1 - k) pi_ref + k pi_q`` with ``pi_q = pi_ref e^{r/beta_q} / Z``.

    The coverage dial (docs/theory.md); Tang et al. (arXiv:2405.08448) "data quality" ablation. ``k = 0``
    is ``pi_ref``; ``k = 1`` with small ``beta_q`` concentrates on high-reward responses. The
    support never leaves ``supp(pi_ref)``.

    Args:
      env: the bandit.
      k: mixing weight in ``[0, 1]``.
      beta_q: temperature ``> 0`` of the quality policy (:func:`coverage_sim.env.optimal_policy`).

    Returns:
      ``mu`` shaped like ``env.ref``.

    Examples:
      >>> from coverage_sim.env import Bandit
      >>> from coverage_sim.behavior import quality_mixture
      >>> env = Bandit(reward=[0.0, 1.0], ref=[0.5, 0.5])
      >>> quality_mixture(env, 0.5, 1.0).round(4)
      array([0.3845, 0.6155])
    """
    k = check_in_range(k, "k", 0.0, 1.0)
    beta_q = check_positive(beta_q, "beta_q")
    pi_q = env.as2d(optimal_policy(env, beta_q), "pi_q")
    return env.like_ref((1.0 - k) * env.ref2d + k * pi_q)


def replay(policies) -> np.ndarray:
    """Replay buffer policy ``(1/T) sum_t pi_t`` of a sequence of policies.

    Offline data on ``mu_replay`` is Tang et al.'s (arXiv:2405.08448) test of the coverage
    hypothesis (figure F7 in docs/figures.md): same coverage as the online run, but off-policy.

    Args:
      policies: non-empty sequence of ``T`` policies, all of shape ``(K,)`` or all ``(X, K)``
        (or an array of shape ``(T, K)`` / ``(T, X, K)``).

    Returns:
      The average policy, shape ``(K,)`` or ``(X, K)``.

    Examples:
      >>> from coverage_sim.behavior import replay
      >>> replay([[1.0, 0.0], [0.5, 0.5]])
      array([0.75, 0.25])
    """
    try:
        stack = np.stack([np.asarray(p, dtype=np.float64) for p in policies])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"policies must be a non-empty sequence of equally shaped policies, "
                         f"got {policies!r}") from exc
    stack = as_float_array(stack, "policies", ndim=(2, 3))
    if stack.shape[-1] < 2:
        raise ValueError(f"policies must have at least 2 responses, got shape {stack.shape}")
    check_distribution(stack, "policies")
    return stack.mean(axis=0)


def uniform(env) -> np.ndarray:
    """Uniform behaviour policy ``mu(y|x) = 1/K``, shaped like ``env.ref``.

    Note that it puts mass wherever ``env.ref`` is 0, which :func:`coverage_sim.data.offline_pairs`
    rejects; use ``restrict_support(uniform(env), env.ref > 0)`` for such references.

    Args:
      env: the bandit.

    Returns:
      ``np.full(env.shape, 1 / K)``.

    Examples:
      >>> from coverage_sim.env import Bandit
      >>> from coverage_sim.behavior import uniform
      >>> uniform(Bandit(reward=[0.0, 1.0, 2.0, 3.0], ref=[0.25] * 4))
      array([0.25, 0.25, 0.25, 0.25])
    """
    return np.full(env.shape, 1.0 / env.n_responses)
