"""What F18 (``kl-estimators``) and F19 (``group-baselines``) share: the bandit, the policies at
which estimators are compared, the exact KL gradients they are compared with, and the two
KL-regularised optima they can send training to.

The instance family is Tajwar et al.'s 100-arm bandit (arXiv:2404.14367, ``cs.tajwar_bandit``)
with the reward peak at ``70 + offset``. An estimator is compared with the exact gradient at an
*evaluation policy*: the tabular softmax after a few exact RLHF Adam steps from ``pi_ref``
(:func:`evaluation_logits`), where the reward gradient and both KL gradients are all far from 0
(at ``pi_ref`` itself every KL gradient vanishes).

Gradients are those of the loss ``L(pi) = -E_pi r + beta KL(pi || pi_ref)`` (the core's ``rlhf``)
with respect to the tabular logits (:func:`exact_parts`):

- reward part ``-pi * (r - E_pi r)``;
- reverse KL ``d KL(pi || pi_ref) = pi * (g - E_pi g)``, ``g = log pi / pi_ref``;
- forward KL ``d KL(pi_ref || pi) = pi - pi_ref``.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

from coverage_sim._validation import check_int, check_positive
from coverage_sim.env import Bandit
from coverage_sim.instances import tajwar_bandit
from coverage_sim.objectives import objective
from coverage_sim.train import train_many

__all__ = ["evaluation_logits", "exact_parts", "forward_kl_optimum", "instance_envs", "tv"]


def instance_envs(peak: float, offsets) -> list[Bandit]:
    """Tajwar's bandit with the reward peak at ``peak + o`` for every offset ``o``."""
    return [tajwar_bandit(peak=peak + o) for o in offsets]


def evaluation_logits(envs, beta: float, steps: int, lr: float) -> np.ndarray:
    """``(B, K)`` logits ``log pi`` after ``steps`` exact RLHF (``beta``) Adam steps from ``pi_ref``
    on every env (one batched run)."""
    steps = check_int(steps, "steps", minimum=1)
    runs = train_many(envs, objective("rlhf", beta=check_positive(beta, "beta")), steps=steps,
                      lr=lr, record=[steps], metrics=[], progress=False)
    return np.log(np.stack([r.policy for r in runs]))


def exact_parts(env: Bandit, logits: np.ndarray) -> dict:
    """The exact logit gradients at ``pi = softmax(logits)`` of a plain bandit: ``"reward"``
    (of ``-E_pi r``), ``"reverse"`` (of ``KL(pi || pi_ref)``), ``"forward"`` (of
    ``KL(pi_ref || pi)``) and ``"k2"`` (``pi * (k2 - E_pi k2)``, ``k2 = (log pi/pi_ref)^2 / 2``, the
    score-function term of k2 placed in the reward).

    Examples:
      >>> env = Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5])
      >>> parts = exact_parts(env, np.log([0.75, 0.25]))
      >>> [round(float(v), 4) for v in parts["forward"]]
      [0.25, -0.25]
    """
    pi = np.exp(logits - logits.max())
    pi /= pi.sum()
    r, ref = env.reward2d[0], env.ref2d[0]
    g = np.log(pi) - np.log(ref)
    k2 = 0.5 * g * g
    return {"reward": -pi * (r - pi @ r), "reverse": pi * (g - pi @ g), "forward": pi - ref,
            "k2": pi * (k2 - pi @ k2)}


def forward_kl_optimum(env: Bandit, beta: float) -> np.ndarray:
    """The maximiser of ``E_pi r - beta KL(pi_ref || pi)`` (forward KL) on a plain bandit.

    Stationarity ``pi (r - E_pi r) = beta (pi - pi_ref)`` gives ``pi(y) = beta pi_ref(y) /
    (beta + R - r(y))`` with ``R = E_pi r`` the root of ``sum_y pi(y) = 1`` on
    ``R > max r - beta`` (the sum falls from +inf to 0 there). Unlike the reverse-KL optimum
    ``pi_ref e^{r/beta} / Z`` it keeps mass ``>= beta pi_ref(y) / (beta + R - min r)`` on every arm
    (mode-covering).

    Examples:
      >>> env = Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5])
      >>> [round(float(v), 4) for v in forward_kl_optimum(env, 1.0)]
      [0.7071, 0.2929]
    """
    beta = check_positive(beta, "beta")
    r, ref = env.reward2d[0], env.ref2d[0]

    def excess(big_r):
        return float(np.sum(beta * ref / (beta + big_r - r))) - 1.0

    low = r.max() - beta
    root = brentq(excess, low + 1e-12 * max(1.0, abs(low)), r.max() + 1.0, xtol=1e-15,
                  rtol=4 * np.finfo(float).eps)
    p = beta * ref / (beta + root - r)
    return p / p.sum()


def tv(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Total variation ``|p - q|_1 / 2`` along the last axis."""
    return 0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum(axis=-1)
