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

Cost (K responses, X contexts, R policies): every metric is O(R X K) except the pairwise ones, whose
O(X K^2) part is done once, not per policy. The win rate against a fixed policy ``q`` is
``pi . v`` with ``v_i = sum_j sigma(r_i - r_j) q_j`` built once (one division per pair). The ranking
accuracy compares every weighted pair for all R policies in one numba pass (O(R X K^2) compares,
skipping rows without pairs; split over the free cores when it is large). It is a weighted
concordance count, O(K log K) per policy, only when the weights factor along an order,
``W_ij = a_i a_j D(s_i, s_j)`` with ``D`` 1, 1/2 or 0 as ``s_i >, =, < s_j``: the exact ``mu x mu``
pairs with deterministic labels on the gold reward (``offline_pairs(env, mu,
labels="deterministic")``, recognised by an entrywise check), which then take that path.
Bradley-Terry labels ``sigma(r_i - r_j)`` do not factor, so the default held-out pairs,
``eval_data="reference"`` (exact ``pi_ref x pi_ref`` with gold Bradley-Terry labels), take the pass;
they are never materialised: their weights are formed pair by pair. :func:`policy_metrics` takes
``metrics=`` to compute only some of them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.special import expit

from coverage_sim import _metric_kernels as _mk, _threads
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
    "METRICS",
    "select_metrics",
]

#: Every metric :func:`policy_metrics` can compute, in its column order.
METRICS = ("reward", "kl", "kl_ref", "entropy", "win_rate", "proxy_reward", "tv_to_opt",
           "kl_to_opt", "ranking_accuracy", "ideal_ranking_accuracy", "mass_off_support")
#: ``eval_data`` naming the exact pi_ref x pi_ref pairs with gold Bradley-Terry labels.
REFERENCE_PAIRS = "reference"

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


def _log(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(p)


def _kl_rows(p: np.ndarray, q: np.ndarray, log_p=None) -> np.ndarray:
    """Row-wise KL(p || q) = sum p (log p - log q): +inf where p > 0 and q = 0; 0 log 0 = 0
    (``log_p``: ``log p`` when already known, e.g. shared by several metrics)."""
    log_p = _log(p) if log_p is None else log_p
    with np.errstate(invalid="ignore"):
        terms = p * (log_p - _log(q))
    return np.where(p > 0, terms, 0.0).sum(-1)


def _entropy_rows(p: np.ndarray, log_p=None) -> np.ndarray:
    log_p = _log(p) if log_p is None else log_p
    with np.errstate(invalid="ignore"):
        return -np.where(p > 0, p * log_p, 0.0).sum(-1)


def kl_divergence(env: Bandit, p, q) -> np.ndarray:
    """``E_x KL(p(.|x) || q(.|x))``; ``+inf`` when ``p`` puts mass where ``q`` has none."""
    return _context_mean(env, _kl_rows(_batched(env, p, "p"), _batched(env, q, "q")))


def tv_distance(env: Bandit, p, q) -> np.ndarray:
    """``E_x TV(p(.|x), q(.|x)) = E_x 1/2 ||p - q||_1``."""
    diff = _batched(env, p, "p") - _batched(env, q, "q")
    return _context_mean(env, 0.5 * np.abs(diff).sum(-1))


def entropy(env: Bandit, policy) -> np.ndarray:
    """``E_x H(pi(.|x))`` in nats."""
    return _context_mean(env, _entropy_rows(_batched(env, policy)))


def win_rate(env: Bandit, policy, against=None) -> np.ndarray:
    """``E_x E_{y~pi, y'~pi_against} sigma(r(y) - r(y'))``: gold Bradley-Terry win rate (default vs ``pi_ref``).

    A fixed opponent costs one O(K^2) pass (``v = sigma(r_i - r_j) @ against``), then O(K) per
    policy.
    """
    p = _batched(env, policy)
    other = env.ref2d if against is None else _batched(env, against, "against")
    if other.ndim == 2:
        return _context_mean(env, (p * _win_vector(env, other)).sum(-1))
    r = env.reward2d
    pref = expit(r[:, :, None] - r[:, None, :])
    per_ctx = np.einsum("...xi,xij,...xj->...x", p, pref, np.broadcast_to(other, p.shape))
    return _context_mean(env, per_ctx)


def _win_vector(env: Bandit, against: np.ndarray) -> np.ndarray:
    """``v[x, i] = sum_j sigma(r_xi - r_xj) q_xj`` (X, K) for an unbatched opponent ``q`` (X, K)."""
    return _mk.preference_matvec(np.ascontiguousarray(env.reward2d, dtype=np.float64),
                                 np.ascontiguousarray(against, dtype=np.float64))


def _data_weights(env: Bandit, data) -> np.ndarray:
    """``data.weights`` after checking they match ``env``: ``(X, K, K)``."""
    weights = getattr(data, "weights", None)
    expected = (env.n_contexts, env.n_responses, env.n_responses)
    if weights is None or np.shape(weights) != expected:
        got = "no pair weights" if weights is None else f"pair weights of shape {np.shape(weights)}"
        raise ValueError(f"data must be a PairData with pair weights of shape {expected} for env, "
                         f"or {REFERENCE_PAIRS!r} (the exact pi_ref x pi_ref pairs with gold "
                         f"Bradley-Terry labels), got {got}")
    return np.ascontiguousarray(weights, dtype=np.float64)


def _is_reference(data) -> bool:
    return isinstance(data, str) and data == REFERENCE_PAIRS


#: Pair-policy comparisons from which a ranking pass is split over threads (about 10 ms on one
#: core): below it, waiting for a descheduled thread on a busy machine costs more than the split
#: gains.
_PARALLEL_RANKING_WORK = 2e7


def _ranking_counts(env: Bandit, ranked: np.ndarray, data):
    """``(num (R,), total)`` of the ranking accuracy for ``ranked`` (R, X, K)."""
    ranked = np.ascontiguousarray(ranked, dtype=np.float64)
    n_rec, n_ctx, k = ranked.shape
    work = n_rec * n_ctx * k * k
    threads = _threads.thread_budget() if work >= _PARALLEL_RANKING_WORK else 1
    if _is_reference(data):
        return _mk.reference_ranking_counts(ranked, env.ref2d, env.reward2d, env.context_weights,
                                            threads)
    weights = _data_weights(env, data)
    mu = _ordered_behavior(env, data, weights) if n_rec >= _ORDERED_MIN_POLICIES else None
    if mu is not None:
        return _mk.ordered_ranking_counts(ranked, mu, env.reward2d, env.context_weights)
    return _mk.ranking_counts(ranked, weights, threads)


#: Policies from which checking for order-factored weights (one O(K^2) pass) pays for itself.
_ORDERED_MIN_POLICIES = 4


def _ordered_behavior(env: Bandit, data, weights: np.ndarray):
    """``mu`` (X, K) when ``data`` is the exact ``mu x mu`` population with deterministic labels on
    the gold reward (checked entrywise to 1e-12), else None: then the ranking accuracy is a weighted
    concordance count, O(K log K) per policy (:func:`_metric_kernels.ordered_ranking_counts`)."""
    if data.labels != "deterministic" or data.behavior is None or data.n is not None:
        return None
    mu = np.asarray(data.behavior, dtype=np.float64).reshape(env.n_contexts, env.n_responses)
    r = env.reward2d
    labels = 0.5 + 0.5 * np.sign(r[:, :, None] - r[:, None, :])
    expected = 2.0 * env.context_weights[:, None, None] * mu[:, :, None] * mu[:, None, :] * labels
    expected /= expected.sum()
    if not np.allclose(weights, expected, rtol=1e-12, atol=0.0):
        return None   # labelled by a proxy reward or with label noise: not this structure
    return np.ascontiguousarray(mu)


def ranking_accuracy(env: Bandit, policy, data) -> np.ndarray:
    """Chen et al.'s ranking accuracy ``E_D 1[pi(y_w|x) >= pi(y_l|x)]`` over ``data``'s pairs (i != j).

    ``policy`` may be probabilities or log-probabilities (the ranking is the same); pass
    log-probabilities when some probabilities underflow to 0, which would otherwise tie. ``data``
    is a :class:`~coverage_sim.data.PairData` or ``"reference"``, the exact ``pi_ref x pi_ref``
    pairs with gold Bradley-Terry labels (computed pair by pair, never stored). Any leading batch
    axes of ``policy`` are evaluated in one pass over the pairs.
    """
    p = _batched(env, policy)
    lead = p.shape[:-2]
    flat = p.reshape((-1,) + p.shape[-2:])
    num, total = _ranking_counts(env, flat, data)
    if total <= 0:
        raise ValueError("data has no pairs of distinct responses to rank")
    return (num / total).reshape(lead)


def ideal_ranking_accuracy(env: Bandit, data, beta: float) -> float:
    """Idealized ranking accuracy ``R*`` (Chen et al. 2024, arXiv:2405.19534, Corollary 3.3).

    ``R* = E_D 1[(pi_ref(y_w)/pi_ref(y_l)) (alpha/(1-alpha))^(1/beta) > 1]`` with ``alpha`` the
    fraction of raters preferring ``y_w``, here ``W_ij / (W_ij + W_ji)`` from the pair weights,
    capped at ``1 - 1e-3`` as in the paper. It is the ranking accuracy of the DPO and RLHF optimum.
    ``data`` may be ``"reference"`` (see :func:`ranking_accuracy`); there
    ``alpha = sigma(r_w - r_l)``.
    """
    beta = check_positive(beta, "beta")
    if _is_reference(data):
        num, total = _mk.reference_ideal_ranking(env.ref2d, env.reward2d, env.context_weights,
                                                 beta, _ALPHA_CAP)
    else:
        with np.errstate(divide="ignore"):
            log_ref = np.log(env.ref2d)
        num, total = _mk.ideal_ranking(_data_weights(env, data), log_ref, beta, _ALPHA_CAP)
    if total <= 0:
        raise ValueError("data has no pairs of distinct responses to rank")
    return float(num / total)


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


def _needs(name: str, beta, data, eval_data, proxy_reward) -> str | None:
    """Why metric ``name`` cannot be computed from these arguments (None when it can)."""
    if name == "proxy_reward" and proxy_reward is None:
        return "a proxy reward (proxy_reward=...)"
    if name in ("tv_to_opt", "kl_to_opt") and beta is None:
        return "beta (an objective with a KL strength)"
    if name == "ideal_ranking_accuracy" and (beta is None or eval_data is None):
        return "beta and held-out pairs (eval_data=...)"
    if name == "ranking_accuracy" and eval_data is None:
        return "held-out pairs (eval_data=...)"
    if name == "mass_off_support" and data is None:
        return "training data (data=...)"
    return None


def select_metrics(metrics, *, beta=None, data=None, eval_data=None, proxy_reward=None
                   ) -> tuple[str, ...]:
    """The metrics :func:`policy_metrics` computes, in column order.

    Args:
      metrics: ``None`` (every metric the other arguments allow) or a sequence of names from
        :data:`METRICS` (a single name is accepted too); an empty sequence selects none.
      beta, data, eval_data, proxy_reward: as in :func:`policy_metrics`.

    Returns:
      The selected names, in :data:`METRICS` order.

    Raises:
      ValueError: an unknown name (the message lists :data:`METRICS`), or a name whose inputs are
        missing (e.g. ``"tv_to_opt"`` without ``beta``).

    Examples:
      >>> from coverage_sim.metrics import select_metrics
      >>> select_metrics(["kl", "reward"])
      ('reward', 'kl')
      >>> select_metrics(None, beta=0.1)
      ('reward', 'kl', 'kl_ref', 'entropy', 'win_rate', 'tv_to_opt', 'kl_to_opt')
    """
    if metrics is None:
        return tuple(m for m in METRICS if _needs(m, beta, data, eval_data, proxy_reward) is None)
    if isinstance(metrics, str):
        metrics = (metrics,)
    try:
        names = list(metrics)
    except TypeError:
        raise ValueError(f"metrics must be None or a sequence of names from {list(METRICS)}, "
                         f"got {metrics!r}") from None
    for name in names:
        if not isinstance(name, str) or name not in METRICS:
            raise ValueError(f"metrics: unknown metric {name!r}; allowed: {', '.join(METRICS)}")
        missing = _needs(name, beta, data, eval_data, proxy_reward)
        if missing is not None:
            raise ValueError(f"metrics: {name!r} needs {missing}")
    return tuple(m for m in METRICS if m in names)


def policy_metrics(env: Bandit, policies, *, beta: float | None = None, data=None,
                   eval_data=None, proxy_reward=None, log_policies=None,
                   metrics: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Metrics for a stack of policies ``(R, ...)``; returns ``{name: (R,) array}`` in column order.

    Every metric is computed for all R policies at once; the pairwise ones cost one pass over the
    pairs (see the module docstring), the rest O(R X K).

    Args:
      env: the bandit.
      policies: policies with one leading axis, ``(R,) + env.ref.shape``.
      beta: KL strength for ``tv_to_opt``, ``kl_to_opt`` and ``ideal_ranking_accuracy``.
      data: training data, for ``mass_off_support``.
      eval_data: held-out pairs for ``ranking_accuracy``: a PairData, or ``"reference"`` for the
        exact ``pi_ref x pi_ref`` pairs with gold Bradley-Terry labels (never materialised).
      proxy_reward: a reward model, for ``proxy_reward``.
      log_policies: ``log`` of ``policies`` when known exactly; ranks without underflow ties.
      metrics: which to compute (see :func:`select_metrics`); default every one the arguments allow.

    Examples:
      >>> import coverage_sim as cs
      >>> env = cs.Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5])
      >>> out = cs.metrics.policy_metrics(env, [[0.9, 0.1]], beta=1.0,
      ...                                 metrics=["reward", "kl_to_opt"])
      >>> sorted(out), round(float(out["reward"][0]), 2)
      (['kl_to_opt', 'reward'], 0.9)
    """
    names = select_metrics(metrics, beta=beta, data=data, eval_data=eval_data,
                           proxy_reward=proxy_reward)
    p = _batched(env, policies)
    ref = env.ref2d
    opt = env.as2d(optimal_policy(env, beta), "opt") if {"tv_to_opt", "kl_to_opt"} & set(
        names) else None
    log_p = _log(p) if {"kl", "kl_ref", "entropy", "kl_to_opt"} & set(names) else None
    compute = {
        "reward": lambda: expected_reward(env, p),
        "kl": lambda: _context_mean(env, _kl_rows(p, ref, log_p)),
        "kl_ref": lambda: _context_mean(env, _kl_rows(np.broadcast_to(ref, p.shape), p,
                                                      _log(ref))),
        "entropy": lambda: _context_mean(env, _entropy_rows(p, log_p)),
        "win_rate": lambda: win_rate(env, p),
        "proxy_reward": lambda: expected_reward(env, p, proxy_reward),
        "tv_to_opt": lambda: _context_mean(env, 0.5 * np.abs(p - opt).sum(-1)),
        "kl_to_opt": lambda: _context_mean(env, _kl_rows(p, opt, log_p)),
        "ranking_accuracy": lambda: ranking_accuracy(
            env, p if log_policies is None else _batched(env, log_policies, "log_policies"),
            eval_data),
        "ideal_ranking_accuracy": lambda: np.full(p.shape[0], ideal_ranking_accuracy(
            env, eval_data, beta)),
        "mass_off_support": lambda: mass_off_support(env, p, data),
    }
    return {name: np.asarray(compute[name]()).reshape(p.shape[:-2]) for name in names}
