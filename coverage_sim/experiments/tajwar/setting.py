"""Tajwar et al. 2024 (arXiv:2404.14367), "Preference Fine-Tuning of LLMs Should Leverage
Suboptimal, On-Policy Data": the 100-arm bandit shared by F1-F4, their sampling protocol
(:data:`PROTOCOL_LRS` and the constants beside it), exact training with an objective rebuilt from
the current policy (:func:`refresh_train`), exact Best-of-N (on-policy or offline, with or without
pushing down the worst draw) for a batch of problems (:func:`train_best_of_n`), and the theory
lines drawn on F1 (:func:`ipo_fixed_point`, :func:`sign_descent_limit`).

Environment: 100 arms, ``pi_ref`` = exact bin masses of tanh(Cauchy(-0.7, 0.4))
(:func:`coverage_sim.tajwar_bandit`), reward ``exp(-((a - peak)/10)^2)`` with the peak at 70 (far
from ``pi_ref``'s mass, ``E_ref r = 0.039``) or at 20 (inside it, ``E_ref r = 0.377``). The policy is
a tabular softmax started at ``pi_ref`` (Tajwar et al. SFT an MLP to ``pi_data`` first).

Tajwar et al.'s own protocol (their ``bandit_experiment`` code, repository
Asap7772/understanding-rlhf): for every state draw N = 10 responses and form all 45 pairs, the
higher true reward wins (deterministic labels); offline DPO/IPO drop pairs whose rewards differ by
less than 0.2 (``--reward_threshold 0.2``); offline = one batch of 100 states (1000 responses)
from ``pi_data`` trained on for 200 Adam steps; on-policy = 100 batches of 10 states drawn from the
current policy, 15 Adam steps on each (1500 steps); learning rates per method from their scripts
(:data:`PROTOCOL_LRS`). The core's sampled mode runs exactly this (``cs.group_pairs`` for the
offline pairs, ``train_many(..., batch_size=, reuse=)`` for the rest).

The exact versions use the population over the paper's samples. Offline data are the exact pairs
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
from coverage_sim.data import PairData, offline_pairs
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
    "PROTOCOL_BATCHES",
    "PROTOCOL_DPO_BETA",
    "PROTOCOL_GAP",
    "PROTOCOL_IPO_MARGIN",
    "PROTOCOL_LRS",
    "PROTOCOL_N",
    "PROTOCOL_OFFLINE_STATES",
    "PROTOCOL_OFFLINE_STEPS",
    "PROTOCOL_ONLINE_STATES",
    "PROTOCOL_REUSE",
    "best_of_n_laws",
    "gap_pairs",
    "ipo_beta",
    "ipo_fixed_point",
    "log_record",
        "peak_env",
    "peak_policy",
    "refresh_train",
    "sign_descent_limit",
    "step_grid",
    "train_best_of_n",
]

PAPER = ("Tajwar et al. 2024, Preference Fine-Tuning of LLMs Should Leverage Suboptimal, "
         "On-Policy Data")
ARXIV = "2404.14367"
_ADAM = (0.9, 0.999, 1e-8)  # the engine's (and torch's) Adam defaults
ON_POLICY, OFFLINE = "on-policy", "offline"
METHOD_COLOURS = {"DPO": "C0", "IPO": "C1", "Best-of-N": "C2", "PG": "C3"}
#: Objectives whose loss is linear in log pi (constant gradient for frozen data).
_LINEAR_OBJECTIVES = ("best_of_n", "awr")


#: Tajwar et al.'s protocol: responses per state, states per offline batch and per on-policy
#: batch, Adam steps per on-policy batch (their ``num_iterations_on_same_samples``), on-policy
#: batches (epochs), offline Adam steps on the one batch, the offline reward-gap threshold, IPO's
#: target margin and DPO's beta (their tuned 0.01).
PROTOCOL_N = 10
PROTOCOL_OFFLINE_STATES = 100
PROTOCOL_ONLINE_STATES = 10
PROTOCOL_REUSE = 15
PROTOCOL_BATCHES = 100
PROTOCOL_OFFLINE_STEPS = 200
PROTOCOL_GAP = 0.2
PROTOCOL_IPO_MARGIN = 10.0
PROTOCOL_DPO_BETA = 0.01
#: Adam learning rates of Tajwar et al.'s bandit scripts (``scripts/ipo.sh`` 0.003,
#: ``onpolicy_ipo.sh`` 0.01, ``best_of_n.sh`` 0.01, ``onpolicy_best_of_n.sh`` 0.001; REINFORCE
#: 0.001 from ``best_hyperparams.py``). Their bandit scripts run no DPO; DPO takes IPO's rates (the
#: same contrastive loss family).
PROTOCOL_LRS = {("DPO", OFFLINE): 0.003, ("IPO", OFFLINE): 0.003, ("Best-of-N", OFFLINE): 0.01,
                ("DPO", ON_POLICY): 0.01, ("IPO", ON_POLICY): 0.01,
                ("Best-of-N", ON_POLICY): 0.001, ("PG", ON_POLICY): 0.001}


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
                    _engine.objective_grad(terms, lp2d, ref_lp, g_lp, False, None, wbuf)
                    fixed += weight * g_lp[0]
                else:
                    moving.append((weight, terms))
        grad = fixed.copy()
        for weight, terms in moving:
            g_lp = np.zeros((1, k))
            _engine.objective_grad(terms, lp2d, ref_lp, g_lp, False, None, wbuf)
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


# --------------------------------------------------------------------------------------------
# Exact Best-of-N for a batch of problems, and the theory lines of F1
# --------------------------------------------------------------------------------------------

def gap_pairs(env: Bandit, gap: float) -> PairData:
    """The population of Tajwar et al.'s offline DPO/IPO data: ``pi_ref x pi_ref`` pairs with
    deterministic labels, pairs whose rewards differ by less than ``gap`` dropped, renormalised.

    This is the limit of ``cs.group_pairs(env, env.ref, n_groups, 10, min_reward_gap=gap)`` as
    ``n_groups`` grows (any two distinct draws of a group are a ``pi_ref x pi_ref`` pair).

    Args:
      env: a plain (single-context) bandit.
      gap: reward-gap threshold (Tajwar: 0.2), ``>= 0``.

    Returns:
      :class:`~coverage_sim.data.PairData` with ``behavior = env.ref``.

    Examples:
      >>> import numpy as np
      >>> env = Bandit(reward=[0.0, 0.1, 1.0], ref=[0.2, 0.3, 0.5])
      >>> gap_pairs(env, 0.2).weights[0].round(3).tolist()
      [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.4, 0.6, 0.0]]
    """
    if env.n_contexts != 1:
        raise ValueError("gap_pairs needs a plain (single-context) bandit")
    gap = check_positive(gap, "gap", allow_zero=True)
    full = offline_pairs(env, env.ref, labels="deterministic")
    r = env.reward2d[0]
    keep = np.abs(r[:, None] - r[None, :]) >= gap
    w = full.weights * keep[None]
    total = w.sum()
    if total <= 0:
        raise ValueError(f"no pair of env has a reward gap >= gap={gap!r}")
    return PairData(weights=w / total, shape=env.shape, behavior=env.ref, labels="deterministic",
                    source=f"pi_ref x pi_ref, |dr| >= {gap:g} (exact)")


def ipo_fixed_point(env: Bandit, data: PairData, tau: float) -> np.ndarray:
    """The policy offline IPO converges to on ``data`` (TRL convention: per-pair loss
    ``(h - 1/(2 tau))^2``), for a tabular softmax.

    Minimising ``sum_ij W_ij (u_i - u_j - m)^2`` over ``u = log pi/pi_ref`` (``m = 1/(2 tau)``) is
    the Laplacian system ``sum_j S_ij (u_i - u_j) = m sum_j (W_ij - W_ji)``, ``S = W + W^T``
    (Azar et al., arXiv:2310.12036, give its closed form ``u = P(y > mu)/tau + c`` for the full
    ``mu x mu`` data). Solved by least squares; needs a connected pair graph (else the shift of
    each component is free).

    Args:
      env: a plain bandit.
      data: the offline pairs.
      tau: IPO's ``beta`` (Azar's tau).

    Returns:
      ``(K,)`` policy.
    """
    w = np.asarray(data.weights, dtype=np.float64)[0]
    s = w + w.T
    lap = np.diag(s.sum(axis=1)) - s
    rhs = (w.sum(axis=1) - w.sum(axis=0)) / (2.0 * check_positive(tau, "tau"))
    u = np.linalg.lstsq(lap, rhs, rcond=None)[0]
    logits = np.log(env.ref) + u
    return np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()


def best_of_n_laws(pi: np.ndarray, reward: np.ndarray, n: int) -> np.ndarray:
    """Exact Best-of-``n`` laws of many policies at once (rows), as
    :func:`coverage_sim.best_of_n_policy` computes row by row (ties pooled, split in proportion to
    the policy mass), vectorised over rows for the training loops.

    Args:
      pi: ``(B, K)`` policies (rows sum to 1).
      reward: ``(B, K)`` rewards of each row.
      n: draws, ``>= 1``.

    Returns:
      ``(B, K)`` laws.

    Examples:
      >>> best_of_n_laws(np.array([[0.5, 0.5]]), np.array([[0.0, 1.0]]), 2).tolist()
      [[0.25, 0.75]]
    """
    return _BestOfN(reward, n)(pi)


class _BestOfN:
    """The Best-of-``n`` law for fixed rewards ``(B, K)``: the sort and the tie groups are computed
    once, each call costs a few vector operations."""

    def __init__(self, reward, n: int):
        reward = np.asarray(reward, dtype=np.float64)
        self.n = check_int(n, "n", minimum=1)
        b, k = reward.shape
        order = np.argsort(reward, axis=1, kind="stable")
        self.flat = (order + k * np.arange(b)[:, None]).ravel()   # sorted position -> entry
        r_sorted = np.take_along_axis(reward, order, axis=1)
        new_group = np.ones((b, k), dtype=bool)
        new_group[:, 1:] = r_sorted[:, 1:] != r_sorted[:, :-1]
        self.gid = (np.cumsum(new_group, axis=1) - 1 + k * np.arange(b)[:, None]).ravel()
        self.shape = (b, k)

    def __call__(self, pi: np.ndarray) -> np.ndarray:
        b, k = self.shape
        p = np.asarray(pi, dtype=np.float64).ravel()[self.flat]
        mass = np.bincount(self.gid, weights=p, minlength=b * k).reshape(b, k)
        # mass strictly above each group, accurate near the top where F ~ 1
        above = (np.cumsum(mass[:, ::-1], axis=1)[:, ::-1] - mass).ravel()[self.gid]
        m = mass.ravel()[self.gid]
        with np.errstate(divide="ignore", invalid="ignore"):
            log_f = np.log1p(-np.minimum(above, 1.0))
            log_f_prev = np.log1p(-np.minimum(above + m, 1.0))
            p_group = np.exp(self.n * log_f) * -np.expm1(self.n * (log_f_prev - log_f))
            share = np.where(m > 0, p / m, 0.0)
        q = np.zeros(b * k)
        q[self.flat] = np.clip(np.where(np.isnan(p_group), 0.0, p_group) * share, 0.0, None)
        q = q.reshape(b, k)
        return q / q.sum(axis=1, keepdims=True)


def train_best_of_n(envs, n: int, *, push_down: float = 0.0, on_policy: bool = True,
                    optimizer: str = "adam", steps: int, lr: float, record) -> np.ndarray:
    """Exact Best-of-N, optionally pushing down the worst of the N draws, on a tabular softmax for a
    batch of plain bandits at once.

    Loss ``-sum_y q_best(y) log pi(y) + c sum_y q_worst(y) log pi(y)`` (Tajwar et al.'s
    ``worst_action`` variant with coefficient ``c = push_down``), where ``q_best`` and ``q_worst``
    are the exact laws of the best and the worst of ``n`` draws (:func:`best_of_n_laws` under
    ``r`` and ``-r``) from the current policy (``on_policy``, recomputed every step: the limit of
    infinitely many states per batch and one step per batch) or from ``pi_ref`` (offline, the
    limit of infinitely many offline states). Logit gradient ``(pi - q_best) - c (pi - q_worst)``;
    Adam ``(0.9, 0.999, 1e-8)`` or plain gradient descent from ``log pi_ref``.

    Equals :func:`refresh_train` on ``best_of_n`` objectives (tested), for a batch of problems.

    Args:
      envs: list of B plain bandits with the same number of arms.
      n: draws per state.
      push_down: coefficient ``c >= 0`` of the worst draw's log-likelihood.
      on_policy: draw from the current policy (True) or from ``pi_ref`` (False).
      optimizer: ``"adam"`` or ``"gd"``.
      steps: number of updates.
      lr: step size.
      record: steps to record.

    Returns:
      ``(B, R, K)`` policies at the recorded steps.
    """
    n = check_int(n, "n", minimum=1)
    push_down = check_positive(push_down, "push_down", allow_zero=True)
    check_choice(optimizer, "optimizer", ("adam", "gd"))
    steps = check_int(steps, "steps", minimum=0)
    lr = check_positive(lr, "lr")
    rec = np.unique(np.asarray(record, dtype=int))
    if rec.size == 0 or rec[0] < 0 or rec[-1] > steps:
        raise ValueError(f"record must hold steps within [0, {steps}], got {record!r}")
    b1, b2, eps = _ADAM
    reward = np.stack([e.reward2d[0] for e in envs])
    theta = np.stack([np.log(e.ref2d[0]) for e in envs])

    best_law = _BestOfN(reward, n)
    worst_law = _BestOfN(-reward, n) if push_down else None

    def laws(pi):
        return best_law(pi), (worst_law(pi) if push_down else None)

    if not on_policy:
        fixed = laws(np.exp(theta))
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    out = np.empty((len(envs), rec.size, theta.shape[1]))
    nxt = 0
    for s in range(steps + 1):
        z = theta - theta.max(axis=1, keepdims=True)
        pi = np.exp(z)
        pi /= pi.sum(axis=1, keepdims=True)
        if nxt < rec.size and rec[nxt] == s:
            out[:, nxt] = pi
            nxt += 1
        if s == steps:
            break
        best, worst = laws(pi) if on_policy else fixed
        g = pi - best
        if push_down:
            g -= push_down * (pi - worst)
        if optimizer == "gd":
            theta -= lr * g
            continue
        t = s + 1
        m = b1 * m + (1.0 - b1) * g
        v = b2 * v + (1.0 - b2) * g * g
        theta -= lr * (m / (1.0 - b1 ** t)) / (np.sqrt(v / (1.0 - b2 ** t)) + eps)
    return out


def sign_descent_limit(env: Bandit, radius) -> np.ndarray:
    """The largest expected reward of a tabular softmax whose logits moved by at most ``radius``
    each from ``log pi_ref``: ``max E_pi r`` over ``pi ∝ pi_ref e^delta``, ``|delta_y| <= D``.

    Adam moves each logit by about ``lr`` per step (exactly ``lr`` on its first step, and in the
    steady state of a gradient of constant sign), so ``D = lr t`` gives the reward reachable
    in ``t`` steps at that speed: the speed limit of per-logit Adam on a tabular policy. (Adam can
    exceed ``lr`` transiently, by at most ``(1 - beta1) / sqrt(1 - beta2) ~ 3.2`` times.) The
    maximiser is bang-bang: ``delta = +D`` on arms whose reward exceeds the optimum's value and
    ``-D`` on the others, so the maximum is over the ``K + 1`` top-reward sets.

    Args:
      env: a plain bandit.
      radius: ``D >= 0``, scalar or array.

    Returns:
      The limit, shaped like ``radius``.

    Examples:
      >>> env = Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5])
      >>> float(sign_descent_limit(env, np.log(3.0) / 2))
      0.75
    """
    d = np.asarray(radius, dtype=np.float64)
    if (d < 0).any() or not np.isfinite(d).all():
        raise ValueError(f"radius must be finite and >= 0, got {radius!r}")
    r, ref = env.reward2d[0], env.ref2d[0]
    order = np.argsort(-r, kind="stable")
    top_r = np.concatenate([[0.0], np.cumsum(ref[order] * r[order])])   # top-k sums, k = 0..K
    top_p = np.concatenate([[0.0], np.cumsum(ref[order])])
    boost = np.exp(2.0 * d.ravel())[:, None]
    value = (boost * top_r + (top_r[-1] - top_r)) / (boost * top_p + (top_p[-1] - top_p))
    return value.max(axis=1).reshape(d.shape)
