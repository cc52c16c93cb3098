"""Factories for the seed papers' bandit instances (docs/figures.md; the claims' shared strategy in docs/claims.md).

* :func:`tajwar_reference`, :func:`tajwar_bandit` -- Tajwar et al. (arXiv:2404.14367): 100 arms,
  a tanh-Cauchy reference and a Gaussian-bump reward peaked at 70 ("not aligned") or 20.
* :func:`azar_bandit`, :func:`azar_d1` -- Azar et al. (arXiv:2310.12036): 3 arms ``a > b > c``,
  uniform reference, the total-order dataset D1 (and variants with a pair or an action dropped).
* :func:`xu_bandit`, :func:`xu_features`, :func:`xu_pairs` -- Xu et al. (arXiv:2404.10719) / Song
  et al. (arXiv:2406.01462): arms ``y1, y2, y3`` with ``pi_ref(y3) = eps`` and data ``y1 > y2``.
* :func:`random_bandit` -- the shared random instance of the §12 property tests.
* :data:`INSTANCES`, :func:`make_instance` -- a name registry of the above (used by the CLI).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from coverage_sim._validation import (as_float_array, check_choice, check_finite, check_in_range,
                                      check_int, check_positive, check_real)
from coverage_sim.data import PairData, pairs_from_list
from coverage_sim.env import Bandit

__all__ = [
    "tajwar_reference",
    "tajwar_bandit",
    "AZAR_ARMS",
    "azar_bandit",
    "azar_d1",
    "XU_ARMS",
    "xu_bandit",
    "xu_features",
    "xu_pairs",
    "random_bandit",
    "INSTANCES",
    "make_instance",
]

#: Arm names of :func:`azar_bandit`, in index order (``a > b > c``).
AZAR_ARMS = ("a", "b", "c")
#: Arm names of :func:`xu_bandit`, in index order.
XU_ARMS = ("y1", "y2", "y3")

_CAUCHY_LOC, _CAUCHY_SCALE = -0.7, 0.4


def tajwar_reference(n_actions: int = 100) -> np.ndarray:
    """Exact bin masses of ``tanh(Cauchy(loc=-0.7, scale=0.4))`` over ``n`` equal bins on [-1, 1].

    Tajwar et al. (arXiv:2404.14367, repo ``bandit_experiment/``) build ``pi_data`` as a 100-bin
    histogram of 10k samples; here (derived for this project) the exact masses
    ``p_k = F(atanh(e_{k+1})) - F(atanh(e_k))`` with ``F(z) = 1/2 + arctan((z + 0.7)/0.4)/pi`` and
    edges ``e_k = -1 + 2k/n`` are used, so every bin has positive mass. For ``n = 100``: mode at
    bin 0 (0.078), bin 99 = 0.042, minimum about 0.0019.

    Args:
      n_actions: number of bins (actions), integer ``>= 2``.

    Returns:
      ``(n_actions,)`` probability vector.

    Examples:
      >>> from coverage_sim.instances import tajwar_reference
      >>> p = tajwar_reference()
      >>> round(float(p[0]), 3), int(p.argmax()), round(float(p.sum()), 12)
      (0.078, 0, 1.0)
    """
    n = check_int(n_actions, "n_actions", minimum=2)
    edges = -1.0 + 2.0 * np.arange(n + 1) / n
    edges[0], edges[-1] = -1.0, 1.0
    with np.errstate(divide="ignore"):
        z = np.arctanh(edges)                          # -inf, ..., +inf
    F = 0.5 + np.arctan((z - _CAUCHY_LOC) / _CAUCHY_SCALE) / np.pi
    p = np.diff(F)
    return p / p.sum()


def tajwar_bandit(peak: float = 70, width: float = 10.0, n_actions: int = 100) -> Bandit:
    """Tajwar et al.'s 100-arm bandit: reward ``exp(-((a - peak)/width)^2)``, tanh-Cauchy ref.

    Tajwar et al. (arXiv:2404.14367) ``reward_4`` (peak 70, far from the reference's mass,
    ``E_ref r = 0.039``) and ``reward_5`` (peak 20, ``E_ref r = 0.377``); widths 20 and 30 give
    rewards 8 and 9. Actions are ``a = 0..n-1``.

    Args:
      peak: location of the reward bump (any finite real).
      width: width ``> 0`` of the bump.
      n_actions: number of arms, ``>= 2``.

    Returns:
      A :class:`coverage_sim.env.Bandit` named e.g. ``"tajwar-peak70"``.

    Examples:
      >>> from coverage_sim.instances import tajwar_bandit
      >>> env = tajwar_bandit(peak=70)
      >>> env.name, round(float(env.ref @ env.reward), 3)
      ('tajwar-peak70', 0.039)
    """
    peak = check_real(peak, "peak")
    width = check_positive(width, "width")
    ref = tajwar_reference(n_actions)
    a = np.arange(ref.size, dtype=np.float64)
    reward = np.exp(-(((a - peak) / width) ** 2))
    name = f"tajwar-peak{peak:g}" + ("" if width == 10.0 else f"-width{width:g}")
    return Bandit(reward=reward, ref=ref, name=name)


def azar_bandit() -> Bandit:
    """Azar et al.'s 3-arm bandit: arms ``a, b, c`` (indices 0, 1, 2), uniform ``pi_ref``.

    Azar et al. (arXiv:2310.12036, §5.1 illustrative example; figure F5). The gold reward
    ``[1, 0, -1]`` is consistent with the total order ``a > b > c``; the paper's experiment only
    uses the order (the labels of :func:`azar_d1` are deterministic).

    Returns:
      A :class:`coverage_sim.env.Bandit` named ``"azar"``; arm names in :data:`AZAR_ARMS`.

    Examples:
      >>> from coverage_sim.instances import azar_bandit
      >>> env = azar_bandit()
      >>> env.reward, env.ref.round(4)
      (array([ 1.,  0., -1.]), array([0.3333, 0.3333, 0.3333]))
    """
    return Bandit(reward=[1.0, 0.0, -1.0], ref=np.full(3, 1.0 / 3.0), name="azar")


def _arm_index(v, names: tuple, what: str) -> int:
    if isinstance(v, str):
        if v not in names:
            raise ValueError(f"drop: unknown {what} {v!r}; valid names: {', '.join(names)}")
        return names.index(v)
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v < len(names):
        return int(v)
    raise ValueError(f"drop: {what} must be one of {', '.join(names)} or an index in "
                     f"[0, {len(names)}), got {v!r}")


def azar_d1(env: Bandit | None = None, drop=None) -> PairData:
    """Azar et al.'s dataset D1 = {(a, b), (b, c), (a, c)} (winner first), each with weight 1/3.

    Azar et al. (arXiv:2310.12036; figure F5, claims C6 and C7): a total order observed once per pair, i.e.
    deterministic empirical preferences, on which DPO overfits (claim C7) and IPO converges to
    logit gaps ``1/(3 tau)`` (claim C6). ``drop`` gives the paper's second kind of dataset with a
    pair or an action left unobserved; the remaining pairs are equally weighted.

    Args:
      env: the bandit (default :func:`azar_bandit`); must have a single context and 3 arms.
      drop: ``None``; an action (``"a"``/``"b"``/``"c"`` or index) -- every pair containing it is
        dropped; a pair given as a 2-tuple such as ``("a", "c")`` (order ignored); or a list of
        actions and/or pairs.

    Returns:
      :class:`coverage_sim.data.PairData` with ``source`` e.g. ``"azar D1"``.

    Examples:
      >>> from coverage_sim.instances import azar_d1
      >>> azar_d1().chosen.round(4)
      array([[0.6667, 0.3333, 0.    ]])
      >>> azar_d1(drop=("a", "c")).weights[0]
      array([[0. , 0.5, 0. ],
             [0. , 0. , 0.5],
             [0. , 0. , 0. ]])
    """
    env = azar_bandit() if env is None else env
    if not isinstance(env, Bandit) or env.shape != (3,):
        raise ValueError(f"env must be a single-context 3-arm Bandit (see azar_bandit), "
                         f"got {env!r}")
    pairs = [(0, 1), (1, 2), (0, 2)]
    if drop is None:
        items = []
    elif isinstance(drop, (str, tuple, int, np.integer)):
        items = [drop]
    else:
        items = list(drop)
    dropped_pairs, dropped_arms = set(), set()
    for item in items:
        if isinstance(item, tuple):
            if len(item) != 2:
                raise ValueError(f"drop: a pair must be a 2-tuple of actions, got {item!r}")
            i, j = (_arm_index(v, AZAR_ARMS, "action") for v in item)
            if i == j:
                raise ValueError(f"drop: a pair needs two different actions, got {item!r}")
            dropped_pairs.add(frozenset((i, j)))
        else:
            dropped_arms.add(_arm_index(item, AZAR_ARMS, "action"))
    kept = [p for p in pairs
            if frozenset(p) not in dropped_pairs and not (set(p) & dropped_arms)]
    if not kept:
        raise ValueError(f"drop={drop!r} removes every pair of D1")
    desc = "azar D1"
    if items:
        desc += " minus " + ", ".join(
            "(" + ",".join(AZAR_ARMS[_arm_index(v, AZAR_ARMS, 'action')] for v in it) + ")"
            if isinstance(it, tuple) else AZAR_ARMS[_arm_index(it, AZAR_ARMS, "action")]
            for it in items)
    return pairs_from_list(env, kept, source=desc)


def xu_bandit(eps: float = 1e-3, reward=(1.0, 0.0, -3.0)) -> Bandit:
    """Xu et al.'s 3-arm out-of-distribution bandit: ``pi_ref = [(1-eps)/2, (1-eps)/2, eps]``.

    Xu et al. (arXiv:2404.10719, §4 synthetic example) and Song et al. (arXiv:2406.01462): arms
    ``y1, y2, y3``; the data (:func:`xu_pairs`) only compares ``y1 > y2``, and ``y3`` is rare under
    the reference and bad (``r*(y3) << r*(y1)``). ``eps = 0`` gives the exact set-valued claim of
    figure F11 (``pi_ref(y3) = 0``).

    Args:
      eps: reference mass of ``y3``, in ``[0, 1)``.
      reward: gold reward of ``(y1, y2, y3)``, length 3, finite.

    Returns:
      A :class:`coverage_sim.env.Bandit` named e.g. ``"xu-eps0.001"``; names in :data:`XU_ARMS`.

    Examples:
      >>> from coverage_sim.instances import xu_bandit
      >>> xu_bandit(eps=0.1).ref
      array([0.45, 0.45, 0.1 ])
    """
    eps = check_in_range(eps, "eps", 0.0, 1.0, high_open=True)
    r = check_finite(as_float_array(reward, "reward", ndim=1, shape=(3,)), "reward")
    ref = np.array([(1.0 - eps) / 2.0, (1.0 - eps) / 2.0, eps])
    return Bandit(reward=r, ref=ref, name=f"xu-eps{eps:g}")


def xu_features() -> np.ndarray:
    """Log-linear features ``phi`` of ``(y1, y2, y3)`` with ``phi(y3) = phi(y1) - phi(y2)``.

    Figures F10 and F11 (Xu et al., arXiv:2404.10719; Song et al., arXiv:2406.01462): DPO on the
    single pair ``y1 > y2`` pushes ``w`` along ``phi(y1) - phi(y2)``, which is also ``phi(y3)``, so
    a log-linear policy ``pi ∝ exp(w . phi)`` moves mass to the unseen ``y3``.

    Returns:
      ``(3, 2)`` array ``[[1, 0], [0, 1], [1, -1]]``.

    Examples:
      >>> from coverage_sim.instances import xu_features
      >>> phi = xu_features()
      >>> bool((phi[2] == phi[0] - phi[1]).all())
      True
    """
    return np.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])


def xu_pairs(env: Bandit | None = None) -> PairData:
    """Xu et al.'s dataset: the single comparison ``y1 > y2`` (``y3`` never observed).

    Args:
      env: the bandit (default :func:`xu_bandit`); single context, 3 arms, ``pi_ref(y1), pi_ref(y2)
        > 0``.

    Returns:
      :class:`coverage_sim.data.PairData` with all mass on ``(winner y1, loser y2)``.

    Examples:
      >>> from coverage_sim.instances import xu_pairs
      >>> xu_pairs().support
      array([[ True,  True, False]])
    """
    env = xu_bandit() if env is None else env
    if not isinstance(env, Bandit) or env.shape != (3,):
        raise ValueError(f"env must be a single-context 3-arm Bandit (see xu_bandit), got {env!r}")
    return pairs_from_list(env, [(0, 1)], source="xu y1>y2")


def random_bandit(n_responses: int, n_contexts: int = 1, seed=0, reward_scale: float = 3.0,
                  min_ref: float | None = None) -> Bandit:
    """Random full-support bandit: the shared instance of the claims' property tests (docs/claims.md).

    Rewards are i.i.d. uniform on ``[-reward_scale, reward_scale]``; each context's reference is
    ``min_ref + (1 - K min_ref) * Dirichlet(1, ..., 1)``, so every entry is ``>= min_ref``; context
    weights are ``Dirichlet(1, ..., 1)`` when ``n_contexts > 1``. All randomness comes from
    ``np.random.default_rng(seed)``.

    Args:
      n_responses: ``K >= 2``.
      n_contexts: ``X >= 1``; ``X = 1`` returns a plain bandit with shape ``(K,)``.
      seed: anything ``np.random.default_rng`` accepts (int, SeedSequence, Generator).
      reward_scale: half-width ``> 0`` of the reward range.
      min_ref: floor of every reference entry, ``>= 0`` with ``min_ref * K < 1``; default
        ``1e-3``, or ``0.5 / K`` where that is smaller (K > 500), so that every K works.

    Returns:
      A :class:`coverage_sim.env.Bandit` named e.g. ``"random-K5-X1-seed0"``.

    Examples:
      >>> from coverage_sim.instances import random_bandit
      >>> env = random_bandit(5, n_contexts=2, seed=1)
      >>> env.shape, bool((env.ref >= 1e-3).all())
      ((2, 5), True)
    """
    K = check_int(n_responses, "n_responses", minimum=2)
    X = check_int(n_contexts, "n_contexts", minimum=1)
    reward_scale = check_positive(reward_scale, "reward_scale")
    min_ref = min(1e-3, 0.5 / K) if min_ref is None else check_positive(min_ref, "min_ref",
                                                                         allow_zero=True)
    if min_ref * K >= 1:
        raise ValueError(f"min_ref must satisfy min_ref * n_responses < 1, got min_ref={min_ref!r} "
                         f"with n_responses={K} (product {min_ref * K!r})")
    try:
        rng = np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"seed must be accepted by np.random.default_rng, got {seed!r}") from exc
    reward = rng.uniform(-reward_scale, reward_scale, size=(X, K))
    # no renormalisation: it could push an entry below min_ref; the sum is 1 to rounding
    ref = min_ref + (1.0 - K * min_ref) * rng.dirichlet(np.ones(K), size=X)
    if X == 1:
        return Bandit(reward=reward[0], ref=ref[0], name=f"random-K{K}-X1-seed{seed}")
    rho = rng.dirichlet(np.ones(X))
    return Bandit(reward=reward, ref=ref, context_weights=rho, name=f"random-K{K}-X{X}-seed{seed}")


#: Built-in instances by name: ``name -> (factory, one-line summary)``; see :func:`make_instance`.
INSTANCES = {
    "tajwar-peak70": (partial(tajwar_bandit, peak=70),
                      "Tajwar et al. 2404.14367: 100 arms, tanh-Cauchy pi_ref, reward peak at 70 "
                      "(far from pi_ref's mass)"),
    "tajwar-peak20": (partial(tajwar_bandit, peak=20),
                      "Tajwar et al. 2404.14367: 100 arms, tanh-Cauchy pi_ref, reward peak at 20 "
                      "(aligned with pi_ref)"),
    "azar": (azar_bandit, "Azar et al. 2310.12036: 3 arms a > b > c, uniform pi_ref"),
    "xu": (xu_bandit, "Xu et al. 2404.10719: arms y1, y2, y3 with pi_ref(y3) = 1e-3, "
                      "r = (1, 0, -3)"),
    "random-k10": (partial(random_bandit, 10, seed=0),
                   "10 arms, rewards U[-3, 3], full-support random pi_ref (seed 0)"),
    "random-k10-x3": (partial(random_bandit, 10, n_contexts=3, seed=0),
                      "3 contexts x 10 arms, rewards U[-3, 3], random pi_ref and rho (seed 0)"),
}


def make_instance(name: str) -> Bandit:
    """Build a built-in instance by name (see :data:`INSTANCES`).

    Args:
      name: one of the keys of :data:`INSTANCES`.

    Returns:
      A fresh :class:`coverage_sim.env.Bandit`.

    Examples:
      >>> from coverage_sim.instances import make_instance
      >>> make_instance("azar").name
      'azar'
    """
    check_choice(name, "instance name", INSTANCES)
    return INSTANCES[name][0]()
