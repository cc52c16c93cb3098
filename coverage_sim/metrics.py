"""Exact metrics of a policy on a (contextual) bandit.

Every function takes policies with any leading batch axes, ``(..., X, K)`` (or ``(..., K)`` for a
plain bandit when ``env`` says so), and averages over contexts with the environment's weights ``rho``.

- reward: ``E_x E_{y~pi} r(x, y)`` (gold, or a proxy reward model ``r_hat``).
- KL both ways to ``pi_ref`` and TV / KL to the KL-regularised optimum ``pi*_beta``
  (Rafailov et al. 2023, arXiv:2305.18290).
- win rate against ``pi_ref`` under the gold Bradley-Terry preference ``sigma(r(y) - r(y'))``
  (Tang et al. 2024, arXiv:2405.08448, use it against the SFT policy).
- ranking accuracy ``R = E_D 1[pi(y_w|x) >= pi(y_l|x)]`` (Chen et al. 2024, arXiv:2405.19534, Def. 2.3)
  and the idealized ranking accuracy ``R*`` of the DPO/RLHF optimum (their Corollary 3.3).
- mass outside the data's support, and entropy.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, xlogy

from coverage_sim._validation import check_positive
from coverage_sim.env import Bandit, optimal_policy

__all__ = [
    "expected_reward",
    "kl_divergence",
    "tv_distance",
    "entropy",
    "win_rate",
    "ranking_accuracy",
    "ideal_ranking_accuracy",
    "mass_off_support",
    "policy_metrics",
]

#: Chen et al. replace a unanimous rater fraction alpha = 1 by 1 - 1e-3 in Corollary 3.3.
_ALPHA_CAP = 1e-3


def _batched(env: Bandit, policy, name: str = "policy") -> np.ndarray:
    arr = np.asarray(policy, dtype=np.float64)
    nd = env.ref.ndim
    if arr.ndim < nd or arr.shape[arr.ndim - nd:] != env.ref.shape:
        raise ValueError(f"{name} must have shape (..., {', '.join(map(str, env.ref.shape))}) "
                         f"to match env.ref, got shape {arr.shape}")
    return arr.reshape(arr.shape[: arr.ndim - nd] + (env.n_contexts, env.n_responses))


def _context_mean(env: Bandit, per_context: np.ndarray) -> np.ndarray:
    return per_context @ env.context_weights


def expected_reward(env: Bandit, policy, reward=None) -> np.ndarray:
    """``E_x E_{y~pi} r(x, y)`` for the gold reward or a given ``reward`` shaped like ``ref``."""
    r = env.reward2d if reward is None else env.as2d(reward, "reward")
    return _context_mean(env, (_batched(env, policy) * r).sum(-1))


def _kl_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise KL(p || q): +inf where p > 0 and q = 0; 0 log 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = xlogy(p, p) - xlogy(p, q)
    terms = np.where(p > 0, terms, 0.0)
    return terms.sum(-1)


def kl_divergence(env: Bandit, p, q) -> np.ndarray:
    """``E_x KL(p(.|x) || q(.|x))``; ``+inf`` when ``p`` puts mass where ``q`` has none."""
    return _context_mean(env, _kl_rows(_batched(env, p, "p"), _batched(env, q, "q")))


def tv_distance(env: Bandit, p, q) -> np.ndarray:
    """``E_x TV(p(.|x), q(.|x)) = E_x 1/2 ||p - q||_1``."""
    diff = _batched(env, p, "p") - _batched(env, q, "q")
    return _context_mean(env, 0.5 * np.abs(diff).sum(-1))


def entropy(env: Bandit, policy) -> np.ndarray:
    """``E_x H(pi(.|x))`` in nats."""
    p = _batched(env, policy)
    return _context_mean(env, -xlogy(p, p).sum(-1))


def win_rate(env: Bandit, policy, against=None) -> np.ndarray:
    """``E_x E_{y~pi, y'~pi_against} sigma(r(y) - r(y'))``: gold Bradley-Terry win rate (default vs ``pi_ref``)."""
    other = env.ref2d if against is None else _batched(env, against, "against")
    r = env.reward2d
    pref = expit(r[:, :, None] - r[:, None, :])
    p = _batched(env, policy)
    per_ctx = np.einsum("...xi,xij,...xj->...x", p, pref, np.broadcast_to(other, p.shape))
    return _context_mean(env, per_ctx)


def _off_diagonal(weights: np.ndarray) -> np.ndarray:
    k = weights.shape[-1]
    return weights * (1.0 - np.eye(k))


def _data_weights(env: Bandit, data) -> np.ndarray:
    """``data.weights`` after checking they match ``env``: ``(X, K, K)``."""
    weights = getattr(data, "weights", None)
    expected = (env.n_contexts, env.n_responses, env.n_responses)
    if weights is None or np.shape(weights) != expected:
        got = "no pair weights" if weights is None else f"pair weights of shape {np.shape(weights)}"
        raise ValueError(f"data must be a PairData with pair weights of shape {expected} for env, "
                         f"got {got}")
    return np.asarray(weights)


def ranking_accuracy(env: Bandit, policy, data) -> np.ndarray:
    """Chen et al.'s ranking accuracy ``E_D 1[pi(y_w|x) >= pi(y_l|x)]`` over ``data``'s pairs (i != j).

    ``policy`` may be probabilities or log-probabilities (the ranking is the same); pass
    log-probabilities when some probabilities underflow to 0, which would otherwise tie.
    """
    weights = _off_diagonal(_data_weights(env, data))
    total = weights.sum()
    if total <= 0:
        raise ValueError("data has no pairs of distinct responses to rank")
    p = _batched(env, policy)
    correct = p[..., :, :, None] >= p[..., :, None, :]
    return (correct * weights).sum(axis=(-3, -2, -1)) / total


def ideal_ranking_accuracy(env: Bandit, data, beta: float) -> float:
    """Idealized ranking accuracy ``R*`` (Chen et al. 2024, arXiv:2405.19534, Corollary 3.3).

    ``R* = E_D 1[(pi_ref(y_w)/pi_ref(y_l)) (alpha/(1-alpha))^(1/beta) > 1]`` with ``alpha`` the
    fraction of raters preferring ``y_w``, here ``W_ij / (W_ij + W_ji)`` from the pair weights,
    capped at ``1 - 1e-3`` as in the paper. It is the ranking accuracy of the DPO and RLHF optimum.
    """
    beta = check_positive(beta, "beta")
    weights = _off_diagonal(_data_weights(env, data))
    total = weights.sum()
    if total <= 0:
        raise ValueError("data has no pairs of distinct responses to rank")
    pair = weights + np.swapaxes(weights, 1, 2)
    alpha = np.divide(weights, pair, out=np.full_like(weights, 0.5), where=pair > 0)
    alpha = np.clip(alpha, _ALPHA_CAP, 1.0 - _ALPHA_CAP)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ref = np.log(env.ref2d)
        score = (log_ref[:, :, None] - log_ref[:, None, :]
                 + (np.log(alpha) - np.log1p(-alpha)) / beta)
    return float((weights * np.where(weights > 0, score > 0, False)).sum() / total)


def mass_off_support(env: Bandit, policy, data) -> np.ndarray:
    """``E_x pi(Y \\ supp(data) | x)``: policy mass on responses the data never shows.

    ``data``: a :class:`~coverage_sim.data.PairData` or :class:`~coverage_sim.data.UnpairedData`.
    """
    expected = (env.n_contexts, env.n_responses)
    support = getattr(data, "support", None)
    if support is None or np.shape(support) != expected:
        got = "no support" if support is None else f"support of shape {np.shape(support)}"
        raise ValueError(f"data must be a PairData or UnpairedData with support of shape "
                         f"{expected} for env, got {got}")
    outside = ~np.asarray(support)
    return _context_mean(env, (_batched(env, policy) * outside).sum(-1))


def policy_metrics(env: Bandit, policies, *, beta: float | None = None, data=None,
                   eval_data=None, proxy_reward=None, log_policies=None) -> dict[str, np.ndarray]:
    """All metrics for a stack of policies ``(R, ...)``; returns ``{name: (R,) array}``.

    Args:
      env: the bandit.
      policies: policies with one leading axis, ``(R,) + env.ref.shape``.
      beta: KL strength for ``tv_to_opt``, ``kl_to_opt`` and ``ideal_ranking_accuracy``.
      data: training data, for ``mass_off_support``.
      eval_data: held-out pairs for ``ranking_accuracy``.
      proxy_reward: a reward model, for ``proxy_reward``.
      log_policies: ``log`` of ``policies`` when known exactly; ranks without underflow ties.
    """
    p = np.asarray(policies, dtype=np.float64)
    ref = env.ref
    out = {
        "reward": expected_reward(env, p),
        "kl": kl_divergence(env, p, ref),
        "kl_ref": kl_divergence(env, ref, p),
        "entropy": entropy(env, p),
        "win_rate": win_rate(env, p),
    }
    if proxy_reward is not None:
        out["proxy_reward"] = expected_reward(env, p, proxy_reward)
    if beta is not None:
        opt = optimal_policy(env, beta)
        out["tv_to_opt"] = tv_distance(env, p, opt)
        out["kl_to_opt"] = kl_divergence(env, p, opt)
    if eval_data is not None:
        ranked = p if log_policies is None else np.asarray(log_policies, dtype=np.float64)
        out["ranking_accuracy"] = ranking_accuracy(env, ranked, eval_data)
        if beta is not None:
            out["ideal_ranking_accuracy"] = np.full(p.shape[0],
                                                    ideal_ranking_accuracy(env, eval_data, beta))
    if data is not None:
        out["mass_off_support"] = mass_off_support(env, p, data)
    return out
