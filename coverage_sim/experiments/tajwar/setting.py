"""Tajwar et al. 2024 (arXiv:2404.14367), "Preference Fine-Tuning of LLMs Should Leverage
Suboptimal, On-Policy Data": the 100-arm bandit shared by F1-F4, and exact training with an
objective rebuilt from the current policy (:func:`refresh_train`).

Environment (science.md §3): 100 arms, ``pi_ref`` = exact bin masses of tanh(Cauchy(-0.7, 0.4))
(:func:`coverage_sim.tajwar_bandit`), reward ``exp(-((a - peak)/10)^2)`` with the peak at 70 (far
from ``pi_ref``'s mass, ``E_ref r = 0.039``) or at 20 (inside it, ``E_ref r = 0.377``). The policy is
a tabular softmax started at ``pi_ref`` (Tajwar et al. SFT an MLP to ``pi_data`` first).

Everything is exact: the population over the paper's samples. Offline data are the exact pairs
``pi_ref x pi_ref`` with Tajwar's deterministic labels (winner = higher true reward, ties 1/2:
``cs.offline_pairs(env, env.ref, labels="deterministic")``). N samples per state form all
``N(N-1)/2`` pairs, each distributed as ``pi_ref x pi_ref``, so that population is exact for any N.

Conventions:
  - DPO: ``-log sigma(beta h)``, TRL ``sigmoid`` with ``beta`` (Tajwar used 0.01 and 0.001).
  - IPO: Tajwar's code uses ``(h - m)^2`` with target margin ``m = 10``; TRL's ``ipo`` is
    ``(h - 1/(2 beta))^2``, so we pass ``beta = tau = 1/(2 m) = 0.05`` (:func:`ipo_beta`).
  - Best-of-N: ``-log pi(best of N)``, exact law of the best of N draws (``best_of_n``, N = 10).
  - Policy gradient: exact softmax policy gradient of ``E_pi r - beta_KL KL(pi || pi_ref)``
    (``rlhf``) with a tiny ``beta_KL`` (Tajwar's REINFORCE has none; the core needs ``beta > 0``).
  - Push-down (F3): Tajwar's ``worst_action`` loss ``-log pi(best) + c log pi(worst)``, exactly
    ``L_BoN(r) - c L_BoN(-r)`` (the worst of N under ``r`` is the best of N under ``-r``).
  - Optimiser: Adam with lr 0.01 (Tajwar's) for F1/F2; plain gradient descent for F3/F4, whose
    effects are about gradient *magnitudes* (see each experiment's ``differences``).
"""

from __future__ import annotations

import numpy as np

from coverage_sim import _engine
from coverage_sim._validation import check_choice, check_int, check_positive
from coverage_sim.env import Bandit
from coverage_sim.instances import tajwar_bandit
from coverage_sim.experiments.policy_classes import make_policy, rbf_features
from coverage_sim.policies import Policy, TabularSoftmax

__all__ = [
    "ARXIV",
    "METHOD_COLOURS",
    "OFFLINE",
    "ON_POLICY",
    "PAPER",
    "ipo_beta",
    "log_record",
    "peak_env",
    "peak_policy",
    "refresh_train",
    "step_grid",
]

PAPER = ("Tajwar et al. 2024, Preference Fine-Tuning of LLMs Should Leverage Suboptimal, "
         "On-Policy Data")
ARXIV = "2404.14367"
_ADAM = (0.9, 0.999, 1e-8)  # the engine's (and torch's) Adam defaults
ON_POLICY, OFFLINE = "on-policy", "offline"
METHOD_COLOURS = {"DPO": "C0", "IPO": "C1", "Best-of-N": "C2", "PG": "C3"}
#: Objectives whose loss is linear in log pi (constant gradient for frozen data).
_LINEAR_OBJECTIVES = ("best_of_n", "awr")


def ipo_beta(margin: float) -> float:
    """TRL ``ipo`` beta (= Azar's tau) for Tajwar's target margin ``m`` in ``(h - m)^2``."""
    return 1.0 / (2.0 * margin)


def peak_env(peak: float) -> Bandit:
    """Tajwar's 100-arm bandit with the reward peak at arm ``peak``."""
    return tajwar_bandit(peak=peak)


#: Log-linear features of the 100 ordered arms: 20 Gaussian bumps over the arm index.
N_RBF_FEATURES = 20


def peak_policy(kind: str) -> Policy:
    """The ``policy`` config field's policy on the 100-arm bandit: the tabular softmax, a
    log-linear policy on :data:`N_RBF_FEATURES` bumps over the arm index (neighbouring arms move
    together), or Tajwar's MLP (SFT'd to ``pi_ref``)."""
    return make_policy(kind, features=rbf_features(100, N_RBF_FEATURES))


# --------------------------------------------------------------------------------------------
# Exact training with an objective rebuilt from the current policy (sample reuse, on-policy BoN)
# --------------------------------------------------------------------------------------------

def refresh_train(env: Bandit, build, *, steps: int, lr: float, refresh_every: int,
                  optimizer: str = "adam", record=None, policy: Policy | None = None,
                  seed: int = 0) -> np.ndarray:
    """Exact-gradient training of a policy whose objective is rebuilt every few steps.

    At every step ``s`` with ``s % refresh_every == 0`` the objective is rebuilt from the current
    policy, ``terms = build(pi_s)``: a list of ``(weight, objective, data)``; until the next rebuild
    the gradient is ``sum weight * objective.loss_and_grad(env, log pi, data)`` with that frozen
    data. ``refresh_every = 1`` is fully on-policy; ``refresh_every >= steps`` is offline training
    on ``build(pi_ref)``. One optimiser state runs through the whole run, as Tajwar et al.'s code
    keeps one torch Adam across epochs (the engine's iterative DPO restarts Adam instead).

    Each objective is compiled on its frozen data once per refresh (``Objective.terms``) and its
    exact gradient evaluated by the engine's ``objective_grad``, which is what
    ``Objective.loss_and_grad`` does on every call. The softmax pull-back and the optimiser
    updates are the engine's (``g - pi * sum(g)``; Adam with ``(0.9, 0.999, 1e-8)`` and bias
    correction), so a run with a fixed ``build`` equals :func:`coverage_sim.train` to rounding
    and ``refresh_every = 1`` with a frozen DPO/IPO loss equals the online objective (tested).

    Args:
      env: a plain (single-context) bandit; the logits start at ``log pi_ref``.
      build: ``pi -> [(weight, Objective, PairData | None), ...]``.
      steps: number of updates.
      lr: step size.
      refresh_every: steps per frozen objective (the sample-reuse knob), ``>= 1``.
      optimizer: ``"adam"`` or ``"gd"``.
      record: steps to record (default every step).
      policy: ``None`` for the tabular softmax started at ``pi_ref`` (the loop above), or any
        :class:`~coverage_sim.policies.Policy` (log-linear, MLP, ...): parameters from
        ``policy.init_params(env, numpy.random.default_rng(seed))``, ``log pi`` from
        ``policy.logp`` and the pull-back from ``policy.grad``, with the same optimiser updates.
      seed: seed of a given ``policy``'s initialisation.

    Returns:
      ``(R, K)`` policies at the recorded steps.
    """
    if env.n_contexts != 1:
        raise ValueError("refresh_train needs a plain (single-context) bandit")
    steps = check_int(steps, "steps", minimum=0)
    refresh_every = check_int(refresh_every, "refresh_every", minimum=1)
    lr = check_positive(lr, "lr")
    check_choice(optimizer, "optimizer", ("adam", "gd"))
    rec = np.arange(steps + 1) if record is None else np.unique(np.asarray(record, dtype=int))
    if rec.size == 0 or rec[0] < 0 or rec[-1] > steps:
        raise ValueError(f"record must hold steps within [0, {steps}], got {record!r}")
    b1, b2, eps = _ADAM
    k = env.n_responses
    ref_lp = _engine.kernel_array(env.ref_logp2d)
    wbuf = np.zeros((1, k, k))
    if isinstance(policy, TabularSoftmax) and policy.init == "ref":
        policy = None            # the loop above is the tabular softmax started at pi_ref
    if policy is None:
        theta = np.log(env.ref2d[0]).copy()
    else:
        if not isinstance(policy, Policy):
            raise ValueError(f"policy must be None or a coverage_sim Policy, got "
                             f"{type(policy).__name__}")
        theta = np.array(policy.init_params(env, np.random.default_rng(seed)), dtype=np.float64)
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    out = np.empty((rec.size, k))
    nxt = 0
    fixed, moving = None, []
    for s in range(steps + 1):
        if policy is None:
            top = theta.max()
            lp = theta - (top + np.log(np.exp(theta - top).sum()))
        else:
            lp = np.asarray(policy.logp(env, theta), dtype=np.float64).reshape(k)
        pi = np.exp(lp)
        if nxt < rec.size and rec[nxt] == s:
            out[nxt] = pi
            nxt += 1
        if s == steps:
            break
        lp2d = _engine.kernel_array(lp.reshape(1, k))
        if s % refresh_every == 0:
            # Compile each objective on its frozen data once per refresh (what
            # Objective.loss_and_grad does on every call). Objectives linear in log pi
            # (Best-of-N, AWR) have a constant gradient while the data are frozen.
            fixed, moving = np.zeros(k), []
            for weight, obj, data in build(pi):
                terms = obj.terms(env, data, lp2d)
                if obj.name in _LINEAR_OBJECTIVES:
                    g_lp = np.zeros((1, k))
                    _engine.objective_grad(terms, lp2d, ref_lp, g_lp, False, False, wbuf)
                    fixed += weight * g_lp[0]
                else:
                    moving.append((weight, terms))
        grad = fixed.copy()
        for weight, terms in moving:
            g_lp = np.zeros((1, k))
            _engine.objective_grad(terms, lp2d, ref_lp, g_lp, False, False, wbuf)
            grad += weight * g_lp[0]
        if policy is None:
            g = grad - pi * grad.sum()  # softmax pull-back (TabularSoftmax)
        else:
            g = np.asarray(policy.grad(env, theta, env.like_ref(grad.reshape(1, k))),
                           dtype=np.float64)
        if optimizer == "gd":
            theta -= lr * g
        else:
            t = s + 1
            m = b1 * m + (1.0 - b1) * g
            v = b2 * v + (1.0 - b2) * g * g
            theta -= lr * (m / (1.0 - b1 ** t)) / (np.sqrt(v / (1.0 - b2 ** t)) + eps)
    return out


def step_grid(steps: int, every: int) -> np.ndarray:
    """Steps ``0, every, 2 every, ...`` and ``steps`` (int64)."""
    return np.unique(np.concatenate([np.arange(0, steps + 1, every), [steps]])).astype(np.int64)


def log_record(steps: int, dense: int = 100, num: int = 60) -> np.ndarray:
    """Every step up to ``dense``, then ``num`` log-spaced steps up to ``steps``."""
    pts = np.round(np.geomspace(1, steps, num)).astype(np.int64)
    return np.unique(np.concatenate([np.arange(0, min(dense, steps) + 1), pts, [steps]]))
