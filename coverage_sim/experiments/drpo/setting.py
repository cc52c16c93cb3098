"""DR-PO, Chang et al. 2024 (arXiv:2404.08495), "Dataset Reset Policy Optimization for RLHF": the
start distributions and the exact reset objective shared by F17 (``drpo-resets``,
:mod:`~coverage_sim.experiments.drpo.resets`) and its transformer version (``drpo-transformer``,
:mod:`~coverage_sim.experiments.drpo.transformer`).

Dataset Reset Policy Optimisation resets some of its rollouts to prefixes ``(x, y_{<h})`` of offline
*preferred* responses (h uniform) besides the usual start state ``x``, so the learner sees states
deep along good responses that its own rollouts from ``x`` would almost never reach. A start
distribution ``rho`` over the prefixes ``h = 0..H-1`` is ``e_0`` for
root-only policy gradient and uniform for dataset resets (:func:`start_distribution`);
:func:`reset_objective` is the exact objective and its gradient for any token-sequence policy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ARXIV", "METHODS", "PAPER", "RESETS", "ROOT", "reset_objective", "start_distribution"]

PAPER = ("Chang, Zhan, Oertell, Swamy, Brantley, Kallus, Lee, Sun 2024, Dataset Reset Policy "
         "Optimization for RLHF")
ARXIV = "2404.08495"
ROOT = "root only (exact PG)"
RESETS = "dataset resets (h uniform)"
METHODS = (ROOT, RESETS)


def start_distribution(method: str, horizon: int) -> np.ndarray:
    """rho over the correct prefixes h = 0..H-1: root only (e_0) or uniform resets."""
    if method == ROOT:
        rho = np.zeros(horizon)
        rho[0] = 1.0
        return rho
    if method == RESETS:
        return np.full(horizon, 1.0 / horizon)
    raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")


def reset_objective(token_logp, tokens, reward, target, rho):
    """Exact reset objective and its gradient with respect to the per-position log-probs.

    With start states the prefixes ``y*_{<h}`` of the offline preferred response ``y*``
    (``target``), drawn with probability ``rho_h`` (``h = 0`` is the ordinary start ``x``)::

        J = sum_h rho_h J_h,   J_h = sum_{y : y_{<h} = y*_{<h}} pi(y_{>=h} | x, y*_{<h}) r(y),
        pi(y_{>=h} | x, y_{<h}) = exp(sum_{t>=h} log pi(y_t | x, y_{<t})),

    so ``dJ / d log pi(y_t | x, y_{<t})
    = sum_{h<=t} rho_h 1[y_{<h} = y*_{<h}] pi(y_{>=h} | x, y_{<h}) r(y)``.
    The sums may run over any set of sequences that contains the support of ``r`` (sequences with
    ``r = 0`` contribute nothing); for a combination lock that is ``y*`` alone.

    Args:
      token_logp: ``(N, L)`` ``log pi(y_t | x, y_{<t})`` of each sequence's own tokens.
      tokens: ``(N, L)`` the sequences.
      reward: ``(N,)`` their rewards.
      target: ``(L,)`` the preferred response ``y*``.
      rho: ``(L,)`` start distribution over ``h = 0..L-1`` (``e_0``: root-only policy gradient).

    Returns:
      ``(J, W)``: the objective (float) and ``W = dJ/d token_logp`` ``(N, L)``.

    Examples:
      >>> import numpy as np
      >>> from coverage_sim.experiments.drpo.setting import reset_objective
      >>> lp = np.log(np.full((1, 2), 0.5))
      >>> J, W = reset_objective(lp, np.array([[1, 0]]), np.ones(1), np.array([1, 0]),
      ...                        np.array([0.5, 0.5]))
      >>> float(J), W.tolist()        # 0.5 * 0.25 + 0.5 * 0.5
      (0.375, [[0.125, 0.375]])
    """
    lp = np.asarray(token_logp, dtype=np.float64)
    tokens = np.asarray(tokens)
    reward = np.asarray(reward, dtype=np.float64)
    target = np.asarray(target)
    rho = np.asarray(rho, dtype=np.float64)
    if lp.ndim != 2 or tokens.shape != lp.shape:
        raise ValueError(f"token_logp and tokens must have the same shape (N, L), got "
                         f"{lp.shape} and {tokens.shape}")
    n, length = lp.shape
    if reward.shape != (n,):
        raise ValueError(f"reward must have shape ({n},), got {reward.shape}")
    if target.shape != (length,) or rho.shape != (length,):
        raise ValueError(f"target and rho must have shape ({length},), got {target.shape} and "
                         f"{rho.shape}")
    if np.any(rho < 0) or abs(rho.sum() - 1.0) > 1e-9:
        raise ValueError(f"rho must be a distribution over the {length} start prefixes, got "
                         f"{rho.tolist()}")
    # match[i, h]: y_{<h} == y*_{<h} (the empty prefix always matches)
    match = np.ones((n, length), dtype=bool)
    match[:, 1:] = np.cumprod(tokens == target, axis=1)[:, :-1].astype(bool)
    suffix = np.cumsum(lp[:, ::-1], axis=1)[:, ::-1]          # sum_{t >= h} log pi(y_t | y_<t)
    term = np.where(match, rho * np.exp(suffix), 0.0) * reward[:, None]
    return float(term.sum()), np.cumsum(term, axis=1)
