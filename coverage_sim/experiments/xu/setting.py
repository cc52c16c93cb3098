"""The 3-arm out-of-distribution bandit of Xu et al. 2024 (arXiv:2404.10719), shared by F10
(``song-coverage``, Song et al. 2024, arXiv:2406.01462) and F11 (``xu-ood``), and its family of
instances.

Both figures use the 3-arm out-of-distribution bandit of :func:`coverage_sim.xu_bandit`: arms
``y1, y2, y3`` with ``pi_ref = [(1-eps)/2, (1-eps)/2, eps]``, gold reward ``(1, 0, -3)``, and one
observed comparison ``y1 > y2`` (:func:`coverage_sim.xu_pairs`; its empirical label is
deterministic). ``y3`` is never in the data. The policy is log-linear,
``pi(y) ∝ pi_ref(y) exp(w . phi(y))`` with :func:`coverage_sim.xu_features`, whose
``phi(y3) = phi(y1) - phi(y2)`` is correlated with the direction DPO pushes ``w`` in.

Conventions: DPO is ``-log sigma(beta h)`` (TRL ``sigmoid``); RLHF maximises
``E_pi r_hat - beta KL(pi || pi_ref)``; HyPO is ``L_DPO + lam KL(pi || pi_ref)`` with the exact KL
gradient (the paper uses a REINFORCE estimate on online samples). Suboptimality is measured on the
gold KL-regularised objective ``J(pi) = E_pi r* - beta KL(pi || pi_ref)``:
``J(pi*_beta) - J(pi) = beta KL(pi || pi*_beta) >= 0``.

Instances (:func:`feature_family`): the checks of both figures run on a family of feature sets,
the construction itself (instance 0) and random perturbations of it, ``phi + noise * N(0, 1)``
entrywise; the perturbations keep ``phi(y3)`` only approximately equal to ``phi(y1) - phi(y2)``,
so the family tests that the drift does not hinge on the exact identity.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from coverage_sim import metrics
from coverage_sim._validation import as_float_array, check_finite
from coverage_sim.env import optimal_policy
from coverage_sim.instances import XU_ARMS, xu_features

__all__ = ["check_reward", "clipped_reward_model", "feature_family", "tidy_runs"]


def feature_family(instances: int, noise: float, seed: int) -> list[np.ndarray]:
    """``instances`` feature sets ``(3, 2)``: :func:`~coverage_sim.xu_features` first, then
    ``xu_features() + noise * N(0, 1)`` drawn from ``seed``.

    Examples:
      >>> family = feature_family(3, 0.2, seed=0)
      >>> len(family), family[0].tolist()
      (3, [[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
    """
    rng = np.random.default_rng(seed)
    base = xu_features()
    return [base] + [base + noise * rng.standard_normal(base.shape) for _ in range(instances - 1)]


def clipped_reward_model(features, pairs, bound: float, scale: float = 1e3) -> np.ndarray:
    """Linear Bradley-Terry reward model on ``features``, clipped to ``[-bound, bound]``.

    On deterministic comparisons the linear BT maximum likelihood diverges along
    ``sum_pairs (phi(y_w) - phi(y_l))``; ``r_hat = clip(phi . theta, -R, R)`` with ``theta`` that
    direction times a large ``scale`` is the limit of the clipped MLE. With
    :func:`~coverage_sim.xu_features` and the pair ``y1 > y2`` it is ``(R, -R, R)``: the model
    extrapolates the unseen ``y3`` to the top of its range (the worst case for RLHF).
    """
    phi = check_finite(as_float_array(features, "features", ndim=2), "features")
    direction = sum(phi[w] - phi[l] for w, l in pairs)
    return np.clip(scale * phi @ direction, -bound, bound)


def check_reward(reward, name="reward") -> tuple:
    """A config's gold reward of ``(y1, y2, y3)`` as floats, ValueError unless ``r1 > r2 > r3``."""
    r = check_finite(as_float_array(reward, name, ndim=1, shape=(3,)), name)
    if not (r[0] > r[1] and r[2] < r[1]):
        raise ValueError(f"{name} must satisfy r(y1) > r(y2) > r(y3) (y3 the bad unseen arm), "
                         f"got {tuple(r)}")
    return tuple(float(v) for v in r)


def tidy_runs(runs, keys: dict, env_beta, seed, extra=None) -> list[pd.DataFrame]:
    """Per-step metrics of ``runs`` (one per key row) as tidy frames."""
    frames = []
    for run, key in zip(runs, keys):
        env, beta = env_beta(key)
        snaps = run.snapshots
        opt = optimal_policy(env, beta)
        kl = metrics.kl_divergence(env, snaps, env.ref)
        reward = metrics.expected_reward(env, snaps)
        j_opt = float(metrics.expected_reward(env, opt) - beta * metrics.kl_divergence(env, opt,
                                                                                        env.ref))
        columns = {
            "kl": kl,
            "reward": reward,
            "subopt": j_opt - (reward - beta * kl),
            "max_ratio": (snaps / env.ref).max(axis=-1),
            "loss": run.history["loss"].to_numpy(),
        }
        for i, arm in enumerate(XU_ARMS):
            columns[f"pi({arm})"] = snaps[:, i]
        if extra is not None:
            columns.update(extra(run, key))
        steps = run.history["step"].to_numpy()
        for metric, values in columns.items():
            frames.append(pd.DataFrame({**key, "seed": seed, "step": steps, "metric": metric,
                                        "value": np.asarray(values, dtype=float)}))
    return frames
