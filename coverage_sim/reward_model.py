"""Proxy reward models fitted to preference data.

:func:`fit_bradley_terry` is the ridge-regularised Bradley-Terry maximum-likelihood reward model
``r_hat`` used as the proxy labeller of online methods (Tang et al., arXiv:2405.08448; Gao et al.,
arXiv:2210.10760; science.md §0 "labels ... proxy r_hat (BT MLE on offline pairs)").
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve
from scipy.special import expit
from threadpoolctl import ThreadpoolController

from coverage_sim._validation import check_int, check_positive
from coverage_sim.data import PairData

__all__ = ["fit_bradley_terry"]

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
def _newton(w, l2, tol, max_iter):
    r = np.zeros(w.shape[0])
    f, g, H = _objective(r, w, l2)
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
            f_new, g_new, H_new = _objective(r_new, w, l2)
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
        r = _newton(w, l2, tol, max_iter)
        r_hat[x, seen] = r - r.mean()
    return data.like_shape(r_hat)
