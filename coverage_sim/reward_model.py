"""Proxy reward models fitted to preference data.

:func:`fit_bradley_terry` is the ridge-regularised Bradley-Terry maximum-likelihood reward model
``r_hat`` used as the proxy labeller of online methods (Tang et al., arXiv:2405.08448; Gao et al.,
arXiv:2210.10760; docs/theory.md, "The bandit"), one free value
per response. :func:`fit_linear_bradley_terry` is its linear counterpart ``r_hat = phi . theta`` on
given features, the reward-model class that matches a log-linear policy: it extrapolates to responses
the data never shows.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve
from scipy.special import expit
from threadpoolctl import ThreadpoolController

from coverage_sim._validation import check_int, check_positive
from coverage_sim.data import PairData

__all__ = ["fit_bradley_terry", "fit_linear_bradley_terry"]

# The Newton systems are small (K x K): one BLAS thread solves them fastest, and a second thread
# spin-waiting for a busy core (e.g. under pytest -n 2) slowed a 200 x 200 solve ~600x.
_THREADPOOLS = ThreadpoolController()


def _objective(r, w, l2):
    """Negative penalised log-likelihood, its gradient and Hessian for one context."""
    d = r[:, None] - r[None, :]
    nll = np.sum(w * np.logaddexp(0.0, -d)) + 0.5 * l2 * (r @ r)   # -log sigma(d) = log(1+e^-d)
    s = expit(-d)                                                     # 1 - sigma(r_i - r_j)
    M = w * s
    grad = -(M.sum(axis=1) - M.sum(axis=0)) + l2 * r
    A = (w + w.T) * expit(d) * s                                      # Laplacian edge weights
    np.fill_diagonal(A, 0.0)
    H = np.diag(A.sum(axis=1)) - A + l2 * np.eye(len(r))
    return nll, grad, H


@_THREADPOOLS.wrap(limits=1, user_api="blas")
def _newton(fun, dim, tol, max_iter):
    """Minimise a strictly convex ``fun(x) -> (f, grad, Hessian)`` from ``x = 0`` (Newton + Armijo)."""
    r = np.zeros(dim)
    f, g, H = fun(r)
    for _ in range(max_iter):
        if np.max(np.abs(g)) <= tol:
            return r
        step = solve(H, g, assume_a="pos")
        decrease = g @ step                                           # predicted decrease * 2
        # below ~1e-14 relative the change in f is lost in rounding: then accept a step that
        # reduces the gradient (Newton is locally quadratically convergent there)
        tiny = decrease <= 1e-14 * (1.0 + abs(f))
        g_max = np.max(np.abs(g))
        t = 1.0
        while True:                                                   # Armijo backtracking
            r_new = r - t * step
            f_new, g_new, H_new = fun(r_new)
            if f_new <= f - 1e-4 * t * decrease or t < 1e-12:
                break
            if tiny and np.max(np.abs(g_new)) < g_max:
                break
            t *= 0.5
        if t < 1e-12:                                                 # no progress possible
            break
        r, f, g, H = r_new, f_new, g_new, H_new
    if np.max(np.abs(g)) <= max(tol, 1e3 * np.finfo(float).eps * max(1.0, np.abs(r).max())):
        return r
    raise RuntimeError(f"fit_bradley_terry: Newton did not converge in {max_iter} iterations "
                       f"(max |grad| = {np.max(np.abs(g)):.3g}); increase l2 or max_iter")


def fit_bradley_terry(data: PairData, l2: float = 1e-4, *, tol: float = 1e-12,
                      max_iter: int = 200) -> np.ndarray:
    """Ridge Bradley-Terry reward model: the maximiser of the penalised log-likelihood.

    Per context ``x`` maximises
    ``sum_{i,j} weights[x,i,j] log sigma(r_i - r_j) - (l2/2) ||r_x||^2``
    (weights are the joint distribution of :class:`PairData`, so a context with little data is
    shrunk more). The objective is strictly concave; it is solved by Newton's method with Armijo
    backtracking on the responses seen in that context (analytic gradient and Hessian = comparison
    graph Laplacian + ``l2 I``). The ridge keeps separable data (deterministic labels, a single
    observed pair) finite. Each context's ``r_hat`` is centred to mean 0 over the responses seen in
    the data; responses never seen get 0, the ridge's prior mean. Separate connected components of
    the comparison graph are each pinned near mean 0 by the ridge (their offsets are not
    identified by the data).

    With exact BT labels from ``mu x mu`` with full support and ``l2 -> 0`` the fit recovers the
    gold reward up to a per-context constant (Bradley-Terry identifiability).

    Args:
      data: a :class:`PairData`.
      l2: ridge coefficient, ``> 0``.
      tol: stopping tolerance on the max-norm of the gradient.
      max_iter: maximum number of Newton iterations per context.

    Returns:
      ``r_hat`` shaped like ``data.shape``.

    Examples:
      >>> from coverage_sim.env import Bandit
      >>> from coverage_sim.data import offline_pairs
      >>> from coverage_sim.reward_model import fit_bradley_terry
      >>> env = Bandit(reward=[1.0, 0.0, -1.0], ref=[1/3, 1/3, 1/3])
      >>> fit_bradley_terry(offline_pairs(env, env.ref), l2=1e-9).round(5) + 0.0
      array([ 1.,  0., -1.])
    """
    if not isinstance(data, PairData):
        raise ValueError(f"data must be a PairData, got {type(data).__name__}")
    l2 = check_positive(l2, "l2")
    tol = check_positive(tol, "tol")
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    X, K = data.n_contexts, data.n_responses
    r_hat = np.zeros((X, K))
    for x in range(X):
        seen = np.flatnonzero(data.support[x])
        if seen.size < 2:
            continue                                  # no informative pair: prior mean 0
        w = np.array(data.weights[x][np.ix_(seen, seen)])
        np.fill_diagonal(w, 0.0)                      # self-pairs carry no information
        r = _newton(lambda v, w=w: _objective(v, w, l2), seen.size, tol, max_iter)
        r_hat[x, seen] = r - r.mean()
    return data.like_shape(r_hat)


def _linear_objective(theta, features, weights, l2):
    """Negative penalised log-likelihood of ``r = features @ theta`` (every context), its gradient
    and Hessian in ``theta``: the per-context response-space terms pulled back through ``phi``."""
    f = 0.5 * l2 * (theta @ theta)
    g = l2 * theta
    H = l2 * np.eye(theta.size)
    for phi, w in zip(features, weights):
        f_x, g_x, H_x = _objective(phi @ theta, w, 0.0)
        f += f_x
        g = g + phi.T @ g_x
        H = H + phi.T @ H_x @ phi
    return f, g, H


def fit_linear_bradley_terry(data: PairData, features, l2: float = 1e-4, *, tol: float = 1e-12,
                             max_iter: int = 200) -> np.ndarray:
    """Linear ridge Bradley-Terry reward model ``r_hat(x, y) = phi(x, y) . theta``.

    Maximises ``sum_{x,i,j} weights[x,i,j] log sigma(r_hat(x,i) - r_hat(x,j)) - (l2/2) ||theta||^2``
    (strictly concave in ``theta``) by Newton's method with Armijo backtracking, as
    :func:`fit_bradley_terry`, with one weight vector shared by all contexts. Unlike the tabular
    model, responses the data never shows get ``phi . theta``, the model's extrapolation (Song et
    al., arXiv:2406.01462, reward-model class; Xu et al., arXiv:2404.10719). No centring: a constant
    feature would make ``r_hat`` depend on the ridge alone along it, and Bradley-Terry labels only
    see differences.

    Args:
      data: a :class:`PairData`.
      features: ``phi``, shape ``(K, D)`` (shared by the contexts) or ``(X, K, D)``; finite.
      l2: ridge coefficient on ``theta``, ``> 0``.
      tol: stopping tolerance on the max-norm of the gradient.
      max_iter: maximum number of Newton iterations.

    Returns:
      ``r_hat`` shaped like ``data.shape``.

    Examples:
      >>> import numpy as np
      >>> from coverage_sim.env import Bandit
      >>> from coverage_sim.data import offline_pairs
      >>> from coverage_sim.reward_model import fit_linear_bradley_terry
      >>> phi = np.array([[1.0], [0.0], [-1.0]])
      >>> env = Bandit(reward=[2.0, 0.0, -2.0], ref=[0.5, 0.5, 0.0])
      >>> fit_linear_bradley_terry(offline_pairs(env, [0.5, 0.5, 0.0]), phi, l2=1e-9).round(4)
      array([ 2.,  0., -2.])
    """
    if not isinstance(data, PairData):
        raise ValueError(f"data must be a PairData, got {type(data).__name__}")
    X, K = data.n_contexts, data.n_responses
    phi = np.asarray(features, dtype=np.float64)
    if phi.ndim == 2:
        phi = np.broadcast_to(phi, (X,) + phi.shape)
    if phi.ndim != 3 or phi.shape[:2] != (X, K) or phi.shape[2] < 1:
        raise ValueError(f"features must have shape ({K}, D) or ({X}, {K}, D) with D >= 1, got "
                         f"shape {np.shape(features)}")
    if not np.isfinite(phi).all():
        raise ValueError("features must be finite")
    l2 = check_positive(l2, "l2")
    tol = check_positive(tol, "tol")
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    weights = np.array(data.weights)
    idx = np.arange(K)
    weights[:, idx, idx] = 0.0                        # self-pairs carry no information
    theta = _newton(lambda t: _linear_objective(t, phi, weights, l2), phi.shape[2], tol, max_iter)
    return data.like_shape(phi @ theta)
