"""Coverage readouts of offline data (docs/theory.md, "Coverage").

* :func:`concentrability` -- single-policy ``C* = max pi/mu`` (Rashidinejad et al.,
  arXiv:2103.12021; a bandit with ``pi = delta_{a*}`` gives ``1/mu(a*)``).
* :func:`pair_concentrability` -- ``C_pair(pi) = max pi(y) pi(y') / (mu(y) mu(y'))`` over the
  data's pair distribution.
* :func:`mass_in_support` -- how much of a policy's mass the data covers.

Every readout takes policies shaped ``(K,)`` or ``(X, K)``; data may be a
:class:`coverage_sim.data.PairData`. Contexts with zero (data) weight are skipped.
"""

from __future__ import annotations

import numpy as np

from coverage_sim._validation import as_float_array, check_distribution
from coverage_sim.data import PairData

__all__ = ["concentrability", "mass_in_support", "pair_concentrability"]


def _as2d(arr, name: str, shape: tuple | None = None) -> np.ndarray:
    a = as_float_array(arr, name, ndim=(1, 2))
    if shape is not None:
        K = shape[-1]
        X = 1 if len(shape) == 1 else shape[0]
        if a.shape not in (tuple(shape), (X, K)):
            raise ValueError(f"{name} must have shape {tuple(shape)}, got shape {a.shape}")
    return a.reshape(-1, a.shape[-1])


def _context_weights(context_weights, X: int) -> np.ndarray:
    if context_weights is None:
        return np.full(X, 1.0 / X)
    w = as_float_array(context_weights, "context_weights", ndim=1, shape=(X,))
    return check_distribution(w, "context_weights")


def concentrability(target, behavior, context_weights=None) -> float:
    """Single-policy concentrability ``C* = max_{x, y: target > 0} target(y|x) / mu(y|x)``.

    Rashidinejad et al. (arXiv:2103.12021; docs/theory.md, "Coverage"). ``inf`` when the target puts mass on a
    response the behaviour never plays. For a bandit and ``target = delta_{a*}``, ``C* = 1/mu(a*)``.

    Args:
      target: target policy (e.g. ``pi*``), ``(K,)`` or ``(X, K)``; rows sum to 1.
      behavior: behaviour policy ``mu`` of the same shape, or a :class:`PairData` (then
        ``mu(y|x)`` is its per-context normalised ``response_mass``, which equals the behaviour
        policy for ``mu x mu`` data, and its context weights are used).
      context_weights: optional ``(X,)`` weights; contexts with weight 0 are skipped. Ignored for
        :class:`PairData`.

    Returns:
      ``C*`` as a float in ``[1, inf]``.

    Examples:
      >>> from coverage_sim.coverage import concentrability
      >>> concentrability([0.0, 1.0], [0.75, 0.25])
      4.0
    """
    if isinstance(behavior, PairData):
        pi = check_distribution(_as2d(target, "target", behavior.shape), "target")
        rho = behavior.context_weights
        with np.errstate(invalid="ignore", divide="ignore"):
            mu = np.where(rho[:, None] > 0, behavior.response_mass / rho[:, None], 0.0)
    else:
        pi = check_distribution(_as2d(target, "target"), "target")
        mu = _as2d(behavior, "behavior")
        if mu.shape != pi.shape:
            raise ValueError(f"behavior must have the shape of target {np.shape(target)}, "
                             f"got shape {np.shape(behavior)}")
        check_distribution(mu, "behavior", allow_empty_rows=True)
        rho = _context_weights(context_weights, pi.shape[0])
    live = (rho[:, None] > 0) & (pi > 0)
    if (live & (mu == 0)).any():
        return float("inf")
    return float(np.max(pi[live] / mu[live]))


def mass_in_support(policy, support_or_data, context_weights=None) -> float:
    """Mass of ``policy`` on the data support, ``sum_x w_x sum_{y in S_x} pi(y|x)``.

    ``1 - mass_in_support`` is the policy's off-support ("extrapolated") mass, the quantity that
    DPO leaves unconstrained under partial coverage (Song et al., arXiv:2406.01462; Xu et al.,
    arXiv:2404.10719).

    Args:
      policy: ``(K,)`` or ``(X, K)`` distribution(s).
      support_or_data: a :class:`PairData` (support = responses in some pair, context weights =
        the data's), a boolean mask shaped like ``policy``, or a behaviour policy (support =
        ``mu > 0``).
      context_weights: optional ``(X,)`` context weights (default uniform); ignored for
        :class:`PairData`.

    Returns:
      A float in ``[0, 1]``.

    Examples:
      >>> from coverage_sim.coverage import mass_in_support
      >>> mass_in_support([0.5, 0.3, 0.2], [0.5, 0.5, 0.0])
      0.8
    """
    if isinstance(support_or_data, PairData):
        pi = check_distribution(_as2d(policy, "policy", support_or_data.shape), "policy")
        mask = support_or_data.support
        rho = support_or_data.context_weights
    else:
        pi = check_distribution(_as2d(policy, "policy"), "policy")
        arr = np.asarray(support_or_data)
        if arr.dtype == bool:
            mask = arr
        else:
            mu = as_float_array(arr, "support_or_data", ndim=(1, 2))
            check_distribution(mu, "support_or_data", allow_empty_rows=True)
            mask = mu > 0
        if mask.shape not in (np.shape(policy), pi.shape):
            raise ValueError(f"support_or_data must have the shape of policy {np.shape(policy)}, "
                             f"got shape {mask.shape}")
        mask = mask.reshape(pi.shape)
        rho = _context_weights(context_weights, pi.shape[0])
    return float(np.sum(rho * np.where(mask, pi, 0.0).sum(axis=1)))


def pair_concentrability(policy, data: PairData, diagonal: bool = True) -> float:
    """Pair concentrability ``C_pair(pi) = max_{x, i, j} pi(i|x) pi(j|x) / q(i, j | x)``.

    docs/theory.md, "Coverage": ``q`` is the data's normalised pair distribution, ``pair_mass / sum`` per
    context, which equals ``mu(i|x) mu(j|x)`` for ``mu x mu`` data, so ``C_pair`` is the guide's
    formula ``max pi(y) pi(y') / (mu(y) mu(y'))`` (including ``y = y'``, where it equals
    ``C*(pi)^2``). ``inf`` if a pair with positive policy mass is unobserved. Contexts with zero
    data weight are skipped.

    Args:
      policy: ``(K,)`` or ``(X, K)`` distribution(s), shaped like ``data.shape``.
      data: a :class:`PairData`.
      diagonal: if ``False``, only pairs ``i != j`` count and both ``pi x pi`` and ``q`` are
        renormalised to their off-diagonal mass (use this for data without self-pairs, e.g.
        :func:`coverage_sim.data.pairs_from_list`, which would otherwise give ``inf``).

    Returns:
      ``C_pair`` as a float in ``[1, inf]``.

    Examples:
      >>> from coverage_sim.env import Bandit
      >>> from coverage_sim.data import offline_pairs
      >>> from coverage_sim.coverage import pair_concentrability
      >>> env = Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5])
      >>> float(pair_concentrability([0.75, 0.25], offline_pairs(env, [0.5, 0.5])))
      2.25
    """
    if not isinstance(data, PairData):
        raise ValueError(f"data must be a PairData, got {type(data).__name__}")
    pi = check_distribution(_as2d(policy, "policy", data.shape), "policy")
    K = pi.shape[1]
    pp = pi[:, :, None] * pi[:, None, :]
    q = data.pair_mass.copy()
    if not diagonal:
        off = ~np.eye(K, dtype=bool)
        pp = np.where(off, pp, 0.0)
        q = np.where(off, q, 0.0)
        pp_tot = pp.sum(axis=(1, 2))
        if (pp_tot[data.context_weights > 0] <= 0).any():
            raise ValueError("policy puts all its mass on one response in a context, so it has no "
                             "off-diagonal pairs; use diagonal=True")
        with np.errstate(invalid="ignore", divide="ignore"):
            pp = pp / pp_tot[:, None, None]
    q_tot = q.sum(axis=(1, 2))
    has_q = q_tot > 0
    q = np.where(has_q[:, None, None], q / np.where(has_q, q_tot, 1.0)[:, None, None], 0.0)
    live_ctx = data.context_weights > 0
    live = live_ctx[:, None, None] & (pp > 0)
    if (live & (q == 0)).any():
        return float("inf")
    return float(np.max(pp[live] / q[live]))
