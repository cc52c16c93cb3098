"""Gradients of an objective with respect to the logits of a tabular softmax policy.

* :func:`gradient`: the exact population loss and gradient (what exact training follows).
* :func:`sampled_gradient` / :func:`sampled_gradients`: the same objective estimated on one (or many
  independent) sampled batches (:mod:`coverage_sim.sampling` describes the estimators).
* :func:`batch_gradient`: the objective evaluated on an explicit measure (:class:`~coverage_sim.Batch`).

All take ``logits`` shaped like ``env.ref`` (``pi(.|x) = softmax(logits[x])``; ``-inf`` exactly where
``env.ref`` is 0) and return ``(loss, grad)`` with ``grad`` shaped like ``env.ref``. Online objectives
hold their sampler (the policy at ``logits``) fixed in the gradient, as in training.
"""

from __future__ import annotations

import numpy as np

from coverage_sim import _engine, _sampled as _s
from coverage_sim._validation import check_int
from coverage_sim.env import Bandit
from coverage_sim.sampling import (KL_ESTIMATORS, KL_PLACES, Batch, check_data, coerce_objective,
                                   compile_plan, logits_to_logp, prepare, sampled_terms,
                                   sampling_stream, truncation_mask)

__all__ = ["gradient", "sampled_gradient", "sampled_gradients", "batch_gradient"]


def _to_logits(env: Bandit, lp: np.ndarray, grad_lp: np.ndarray) -> np.ndarray:
    flat = _engine.policy_backprop(_engine.TABULAR, np.zeros(lp.shape + (0,)), lp, grad_lp)
    return env.like_ref(flat.reshape(lp.shape))


def gradient(env: Bandit, objective, logits, data=None, *, min_reward_gap: float = 0.0
             ) -> tuple[float, np.ndarray]:
    """Exact population loss and its gradient with respect to the logits.

    Args:
      env: the bandit.
      objective: an :class:`~coverage_sim.objectives.Objective` or its name.
      logits: shaped like ``env.ref``; ``-inf`` exactly where ``env.ref`` is 0.
      data: offline :class:`~coverage_sim.data.PairData` (or :class:`~coverage_sim.data.UnpairedData`
        for KTO), for objectives that need it.
      min_reward_gap: online pair objectives only: truncate the pair measure to pairs whose
        labelling rewards differ by at least this (not renormalised), the target of a sampled
        estimator with the same ``min_reward_gap``.

    Returns:
      ``(loss, grad)``, ``grad`` shaped like ``env.ref``.

    Examples:
      >>> import numpy as np, coverage_sim as cs
      >>> env = cs.Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5])
      >>> loss, grad = cs.gradient(env, cs.objective("rlhf", beta=1.0), np.zeros(2))
      >>> round(loss, 6), grad.round(6).tolist()   # pi (a - E_pi a), a = -(r - beta log pi/pi_ref)
      (-0.5, [-0.25, 0.25])
    """
    objective = coerce_objective(objective)
    check_data(env, objective, data)
    lp = logits_to_logp(env, logits)
    terms = objective.terms(env, data, lp)
    if min_reward_gap:
        if not (len(terms[0]) and terms[2] == _engine.ONLINE):
            raise ValueError(f"min_reward_gap={min_reward_gap!r} applies to online pair objectives "
                             f"(online_dpo, online_ipo, vpo online), not {objective.name!r}")
        gap_p = terms[4] * truncation_mask(objective.reward_for(env), float(min_reward_gap))
        terms = terms[:4] + (_engine.kernel_array(gap_p),) + terms[5:]
    grad = np.zeros_like(lp)
    pair_buffer = _engine.needs_pair_buffer(terms)
    wbuf = np.zeros((env.n_contexts,) + ((env.n_responses,) * 2 if pair_buffer else (0, 0)))
    loss = _engine.objective_grad(terms, lp, _engine.kernel_array(env.ref_logp2d), grad, True,
                                  None, wbuf)
    return float(loss), _to_logits(env, lp, grad)


def sampled_gradients(env: Bandit, objective, logits, data=None, *, batch_size: int, draws: int,
                      seed: int = 0, **estimator) -> tuple[np.ndarray, np.ndarray]:
    """``draws`` independent sampled estimates of the loss and gradient (one batch each).

    Draw ``d`` uses the sampling stream of ``seed`` after the ``d`` earlier draws, so draw 0 is
    :func:`sampled_gradient` with the same seed.

    Args:
      env, objective, logits, data: as :func:`gradient`.
      batch_size: pairs (offline), groups (online, rlhf, hypo's KL samples) or responses
        (best_of_n, awr) per batch, >= 1.
      draws: number of independent batches, >= 1.
      seed: seed of the sampling stream.
      **estimator: :class:`~coverage_sim.sampling.Estimator` fields (group_size, pairs,
        min_reward_gap, baseline, kl_estimator, kl_in, clip).

    Returns:
      ``(losses, grads)`` of shapes ``(draws,)`` and ``(draws,) + env.ref.shape``.

    Examples:
      >>> import numpy as np, coverage_sim as cs
      >>> env = cs.Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5])
      >>> losses, grads = cs.sampled_gradients(env, "rlhf", np.zeros(2), batch_size=8, draws=3)
      >>> grads.shape
      (3, 2)
    """
    draws = check_int(draws, "draws", minimum=1)
    objective, batch_size, est = prepare(env, objective, data, batch_size, estimator)
    lp = logits_to_logp(env, logits)
    terms, plan = compile_plan(env, objective, data, est, batch_size)
    losses = np.empty(draws)
    grads = np.empty((draws, env.n_contexts, env.n_responses))
    _s.sampled_gradients(lp, _engine.kernel_array(env.ref_logp2d), terms, plan,
                         sampling_stream(seed), losses, grads)
    return losses, grads.reshape((draws,) + env.shape)


def sampled_gradient(env: Bandit, objective, logits, data=None, *, batch_size: int, seed: int = 0,
                     **estimator) -> tuple[float, np.ndarray]:
    """A sampled estimate of the loss and its gradient from one batch.

    ``loss_estimate`` is the plug-in estimate of the population loss (the batch average of the
    objective's integrands; for sampled KL estimators their value ``k``). Its measure is the batch
    :func:`~coverage_sim.sampling.draw_batch` draws with the same arguments.

    Args: as :func:`sampled_gradients`, without ``draws``.

    Returns:
      ``(loss_estimate, grad_estimate)``, the gradient shaped like ``env.ref``.

    Examples:
      >>> import numpy as np, coverage_sim as cs
      >>> env = cs.Bandit(reward=[1.0, 0.0, -1.0], ref=[0.5, 0.3, 0.2])
      >>> loss, grad = cs.sampled_gradient(env, "rlhf", np.log(env.ref), batch_size=64, seed=1)
      >>> grad.shape, bool(abs(grad.sum()) < 1e-12)   # softmax gradients sum to zero
      ((3,), True)
    """
    losses, grads = sampled_gradients(env, objective, logits, data, batch_size=batch_size,
                                      draws=1, seed=seed, **estimator)
    return float(losses[0]), grads[0]


def batch_gradient(env: Bandit, objective, logits, batch: Batch) -> tuple[float, np.ndarray]:
    """The objective's plug-in loss and gradient on an explicit measure ``batch``.

    Evaluates the objective's integrands (the same per-pair kernel as the population path) on
    ``batch``'s weighted pairs, responses and policy samples, with ``batch.estimator``'s KL estimator
    and clip; the exact KL term, when the estimator keeps it exact, is added at ``logits``.

    Args:
      env, objective, logits: as :func:`gradient`.
      batch: a :class:`~coverage_sim.sampling.Batch` (:func:`~coverage_sim.sampling.draw_batch`,
        :func:`~coverage_sim.sampling.population_batch`, or built by hand).

    Returns:
      ``(loss, grad)``, ``grad`` shaped like ``env.ref``.

    Examples:
      >>> import numpy as np, coverage_sim as cs
      >>> env = cs.Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5])
      >>> dpo = cs.objective("online_dpo", beta=1.0)
      >>> exact = cs.gradient(env, dpo, np.zeros(2))[1]
      >>> on_population = cs.batch_gradient(env, dpo, np.zeros(2),
      ...                                   cs.population_batch(env, dpo, np.zeros(2)))[1]
      >>> bool(np.allclose(exact, on_population, rtol=1e-12, atol=0))
      True
    """
    if not isinstance(batch, Batch):
        raise ValueError(f"batch must be a coverage_sim.Batch, got {type(batch).__name__}")
    objective = coerce_objective(objective)
    lp = logits_to_logp(env, logits)
    buf = batch.buffers()
    n_ctx, k = lp.shape
    for name, xs, ys in (("pair", buf[0], buf[1]), ("pair", buf[0], buf[2]),
                         ("response", buf[4], buf[5]), ("sample", buf[7], buf[8]),
                         ("unpaired", buf[13], buf[14]), ("mismatched", buf[17], buf[18])):
        if xs.size and (xs.min() < 0 or xs.max() >= n_ctx or ys.min() < 0 or ys.max() >= k):
            raise ValueError(f"batch {name} indices must lie in [0, {n_ctx}) x [0, {k}) for env")
    terms = sampled_terms(env, objective)
    est = batch.estimator
    kl_est = KL_ESTIMATORS[est.kl_estimator] if est.kl_estimator else _s.KL_EXACT
    kl_in = KL_PLACES[est.kl_in] if est.kl_in else _s.KL_IN_REWARD
    grad = np.zeros((n_ctx, k))
    loss = _s.batch_loss_grad(terms, kl_est, kl_in, float(est.clip or 0.0), lp, np.exp(lp),
                              _engine.kernel_array(env.ref_logp2d), buf, grad, True)
    return float(loss), _to_logits(env, lp, grad)
