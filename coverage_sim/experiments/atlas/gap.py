"""A1 — the gap atlas: for which offline data does online preference optimisation win, and by how much?

Each paper of the catalogue shows the online/offline gap at one or two points of a large space; the
atlas maps it. For three pairs (online method minus its offline counterpart)

* ``online_dpo-dpo``: online DPO (Guo et al., arXiv:2402.04792) minus DPO (Rafailov et al.,
  arXiv:2305.18290), both at the same ``beta`` grid;
* ``online_ipo-ipo``: online IPO (Calandriello et al., arXiv:2403.08635) minus IPO (Azar et al.,
  arXiv:2310.12036), TRL's convention ``(h - 1/(2 tau))^2``, over a ``tau`` grid;
* ``rlhf-dpo``: RLHF with a Bradley-Terry reward model fitted on the offline data (Ouyang et al.,
  arXiv:2203.02155) minus DPO on that same data; the reward model's class matches the policy's
  (one value per response for the tabular policy, ``phi . theta`` for the log-linear one);

it measures the gold Bradley-Terry **win rate against pi_ref** and the **gold expected reward** gap
over a grid of

* **coverage** of the behaviour policy ``mu``: ``ref`` (``mu = pi_ref``, global coverage, Song et al.
  arXiv:2406.01462), ``mix<k>`` (``mu = (1-k) pi_ref + k pi_low`` with ``pi_low ∝ pi_ref e^{-r*/beta_q}``
  a low-quality policy: full support, a larger concentrability ``C*``) and ``drop<m>`` (``pi_ref``
  truncated to all but the ``m`` highest-reward arms: ``C* = inf``, and ``pi*``'s mass leaves the
  support as ``m`` grows). Each cell reports ``C*(pi*_beta, mu)`` (inf included) and the mass of the
  target inside the support of ``mu`` and of the sampled data;
* ``beta`` (DPO, RLHF) / ``tau`` (IPO): five values over two decades each;
* **offline data size** ``n``: ``inf`` (the exact ``mu x mu`` population) and finite sampled sets;
* **labels**: ``gold`` (Bradley-Terry ``sigma(r*_i - r*_j)`` for the data and for the online
  labeller), ``deterministic`` (argmax labels for both, Tajwar et al. arXiv:2404.14367) and
  ``proxy`` (gold Bradley-Terry data; the online methods label with the reward model ``r_hat`` fitted
  on it, Tang et al. arXiv:2405.08448);
* **policy class**: ``tabular`` softmax and ``loglinear`` ``pi ∝ pi_ref exp(w . phi)``.

**Instance family** (:func:`atlas_instance`): K arms, features ``phi(y) ~ N(0, I_d)``; the gold reward
``r* = reward_scale (sqrt(1-m) phi . u + sqrt(m) xi)`` with ``u`` a uniform unit vector and
``xi ~ N(0, I_K)``, so a share ``m`` (``misspecification``) of its variance lies outside the
features' span; ``pi_ref = softmax(ref_scale z)``, ``z ~ N(0, I_K)``, independent of the reward.
The log-linear policies use these features with base ``log pi_ref``.

**The gap.** A method's frontier over its ``beta`` grid is the non-decreasing upper envelope of its
``(KL(pi || pi_ref), value)`` points, anchored at ``pi_ref`` (KL 0), linearly interpolated: every point
on it is reached by a mixture of trained policies, since the value (win rate, reward) is linear in
``pi`` and KL is convex. The *matched-KL gap* at the offline method's ``beta`` is the online
frontier at the offline point's KL minus the offline value there (beyond the online method's largest
KL its frontier stays at its best point, which can only understate online). The *best-point gap* is
the online method's best value over its grid minus the offline method's best value. Each cell is
averaged over ``n_instances`` random instances, with a 95% Student-t confidence interval.

**What theory predicts.** With ``mu = pi_ref``, exact data and gold Bradley-Terry labels, the
population IPO loss is minimised by the maximiser of ``E_{pi x pi_ref} P - tau KL(pi || pi_ref)``
(Azar et al.; the caveat to Tang et al.'s gap), so for the tabular class *no* policy (online or
mixtures) has a higher win rate at that KL: the matched-KL win-rate gap of online IPO is <= 0, a
theorem. DPO's population minimiser with full support and gold labels is ``pi*_beta``, the maximiser
of ``E_pi r* - beta KL``, so the matched-KL *reward* gap of any online method against DPO is <= 0; online
DPO's own fixed point is also ``pi*_beta`` and RLHF with the (exact) reward model reaches it too, so
both DPO pairs have zero gap in both metrics there. None of this holds for the log-linear class under
misspecification (the loss minimiser within the class depends on ``mu``), nor with finite ``n``,
deterministic or proxy labels, or partial coverage (Song et al.: DPO needs global coverage).

Arms that do not depend on a grid axis are computed once: online DPO/IPO with gold or deterministic
labels use no offline data (the table stores them with ``coverage = "none"`` and ``n = 0``); offline
DPO, IPO and RLHF on gold data serve both the ``gold`` and the ``proxy`` conditions. Every run takes
``steps`` Adam steps at learning rate ``lr`` (the same for every method) from ``pi_ref``; DPO on
deterministic labels never converges (its logits diverge, Azar et al.), so those cells describe that
step budget.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import softmax

from coverage_sim import metrics
from coverage_sim._validation import check_choice, check_in_range, check_int, check_positive
from coverage_sim.behavior import mixture, restrict_support
from coverage_sim.coverage import concentrability, mass_in_support
from coverage_sim.data import offline_pairs
from coverage_sim.env import Bandit, optimal_policy
from coverage_sim.experiments.registry import Experiment, check_tuple, register
from coverage_sim.experiments.verdict import CheckResult, Clause, Effect, clause
from coverage_sim.objectives import objective
from coverage_sim.policies import LogLinear, TabularSoftmax
from coverage_sim.preferences import bradley_terry
from coverage_sim.reward_model import fit_bradley_terry, fit_linear_bradley_terry
from coverage_sim.train import train_policies

__all__ = [
    "GAP_ATLAS",
    "GOLD_CONTRAST",
    "GapAtlasConfig",
    "LABELS",
    "METHODS",
    "PAIRS",
    "POLICIES",
    "PROXY_BOUND",
    "THEOREM",
    "THEOREM_TOL",
    "arm_problem",
    "atlas_instance",
    "behaviour_policy",
    "best_gaps",
    "cell_names",
    "check",
    "claim_support",
    "claim_theorem",
    "figure_table",
    "final_values",
    "finding_gold_contrast",
    "finding_loglinear",
    "finding_proxy",
    "finding_sample_size",
    "frontier_value",
    "ipo_target",
    "matched_gaps",
    "plot",
    "plot_heatmaps",
    "run",
    "run_cell",
    "stored_arm",
    "summarise",
    "support_effect",
    "target_readouts",
    "targets",
]

_PAPER = ("Song et al. 2024 (coverage), Tang et al. 2024 (online vs offline gap), Azar et al. 2023 "
          "(IPO): mapped together")
_ARXIV = "2406.01462"

#: The pairs: ``name -> (online method, offline method)``.
PAIRS = {"online_dpo-dpo": ("online_dpo", "dpo"),
         "online_ipo-ipo": ("online_ipo", "ipo"),
         "rlhf-dpo": ("rlhf", "dpo")}
#: Every trained method, and the coefficient grid it is swept over ("beta" or "tau").
METHODS = {"dpo": "betas", "ipo": "taus", "rlhf": "betas", "online_dpo": "betas",
           "online_ipo": "taus"}
#: Label conditions of the atlas.
LABELS = ("gold", "deterministic", "proxy")
#: Policy classes.
POLICIES = ("tabular", "loglinear")
#: Final metrics stored per run.
_RUN_METRICS = ("kl", "win_rate", "reward")
_COVERAGE = re.compile(r"^(ref|mix(0(\.\d+)?|1(\.0+)?)|drop([1-9]\d*))$")
_COLUMNS = ("policy", "coverage", "n", "labels", "method", "beta", "instance", "seed", "step",
            "metric", "value")
_INSTANCE_STREAM, _DATA_STREAM = 0, 1
_T95 = 0.975


# ---------------------------------------------------------------------------------------------
# config, instances, behaviour policies
# ---------------------------------------------------------------------------------------------

def _check_coverage(level, name):
    if not isinstance(level, str) or not _COVERAGE.match(level):
        raise ValueError(f"{name} entries must be 'ref', 'mix<k>' with k in [0, 1] or 'drop<m>' "
                         f"with m >= 1, got {level!r}")


def _check_grid(values, name):
    check_tuple(values, name, check_positive)
    if len(values) < 2 or list(values) != sorted(set(values)):
        raise ValueError(f"{name} must hold at least 2 strictly increasing values to trace a "
                         f"frontier, got {values!r}")


@dataclass(frozen=True)
class GapAtlasConfig:
    """The atlas grid, the instance family and the optimiser.

    Attributes:
      n_instances: random instances per cell (the confidence intervals are over them).
      n_responses: arms K.
      feature_dim: dimension d of the features ``phi(y) ~ N(0, I_d)``.
      ref_scale: ``pi_ref = softmax(ref_scale z)``, ``z ~ N(0, I_K)`` (its peakedness).
      reward_scale: standard deviation of the gold reward.
      misspecification: share of the gold reward's variance outside the features' span, in [0, 1]
        (0: the log-linear class holds every ``pi*_beta``).
      coverages: behaviour levels, best coverage first: ``"ref"``, ``"mix<k>"``, ``"drop<m>"``.
      low_quality_beta: temperature ``beta_q`` of ``pi_low ∝ pi_ref e^{-r*/beta_q}`` in ``mix<k>``.
      betas: DPO / online DPO / RLHF coefficients, increasing.
      taus: IPO / online IPO coefficients (TRL beta = Azar's tau), increasing.
      exact: include ``n = inf`` (the exact ``mu x mu`` population).
      ns: finite offline data sizes (sampled pairs).
      labels: label conditions, a subset of :data:`LABELS`.
      policies: policy classes, a subset of :data:`POLICIES`.
      proxy_l2: ridge of the reward model (``fit_bradley_terry(l2=...)``; the data's weights sum to
        1, so ``l2 * n`` is the ridge in pair counts). It also sets the reward model's scale on
        deterministic labels, whose likelihood has no finite maximiser.
      steps: Adam steps of every run.
      lr: Adam learning rate of every run.
    """

    n_instances: int = 32
    n_responses: int = 10
    feature_dim: int = 4
    ref_scale: float = 1.0
    reward_scale: float = 1.0
    misspecification: float = 0.25
    coverages: tuple[str, ...] = ("ref", "mix0.5", "mix0.9", "drop1", "drop2", "drop3", "drop5")
    low_quality_beta: float = 0.5
    betas: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0, 3.0)
    taus: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
    exact: bool = True
    ns: tuple[int, ...] = (20, 100, 500)
    labels: tuple[str, ...] = LABELS
    policies: tuple[str, ...] = POLICIES
    proxy_l2: float = 1e-3
    steps: int = 1000
    lr: float = 0.05

    def __post_init__(self):
        check_int(self.n_instances, "n_instances", minimum=2)
        k = check_int(self.n_responses, "n_responses", minimum=3)
        check_int(self.feature_dim, "feature_dim", minimum=1)
        check_positive(self.ref_scale, "ref_scale", allow_zero=True)
        check_positive(self.reward_scale, "reward_scale")
        check_in_range(self.misspecification, "misspecification", 0.0, 1.0)
        check_tuple(self.coverages, "coverages", _check_coverage)
        if len(set(self.coverages)) != len(self.coverages):
            raise ValueError(f"coverages must be distinct, got {self.coverages!r}")
        for level in self.coverages:
            if level.startswith("drop") and int(level[4:]) >= k:
                raise ValueError(f"coverages: {level!r} drops every arm; allowed: drop1 .. "
                                 f"drop{k - 1} for n_responses={k}")
        check_positive(self.low_quality_beta, "low_quality_beta")
        _check_grid(self.betas, "betas")
        _check_grid(self.taus, "taus")
        if not isinstance(self.exact, bool):
            raise ValueError(f"exact must be true or false, got {self.exact!r}")
        if self.ns:
            check_tuple(self.ns, "ns", lambda v, name: check_int(v, name, minimum=1))
        if not self.exact and not self.ns:
            raise ValueError("the atlas needs a data size: set exact=true or give ns")
        check_tuple(self.labels, "labels", lambda v, name: check_choice(v, name, LABELS))
        check_tuple(self.policies, "policies", lambda v, name: check_choice(v, name, POLICIES))
        check_positive(self.proxy_l2, "proxy_l2")
        check_int(self.steps, "steps", minimum=1)
        check_positive(self.lr, "lr")

    @classmethod
    def quick(cls) -> GapAtlasConfig:
        """A small atlas for tests and ``--quick`` (well under a minute): the default instance
        family, fewer instances, cells and steps."""
        return cls(n_instances=16, coverages=("ref", "mix0.9", "drop1", "drop2"), ns=(20, 200),
                   steps=400, lr=0.1)

    @property
    def sizes(self) -> tuple[float, ...]:
        """The offline data sizes as floats: ``inf`` (exact) first, then ``ns``."""
        return ((np.inf,) if self.exact else ()) + tuple(float(n) for n in self.ns)

    def grid(self, method: str) -> tuple[float, ...]:
        """The coefficient grid of ``method`` (``betas`` or ``taus``)."""
        return getattr(self, METHODS[method])


def _stream(*keys) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(k) for k in keys])


def _code(name: str) -> int:
    """A stable integer for a name (``hash`` is salted per process)."""
    return zlib.crc32(name.encode())


def atlas_instance(config: GapAtlasConfig, seed: int, index: int) -> tuple[Bandit, np.ndarray]:
    """Instance ``index`` of seed ``seed``: ``(bandit, features (K, d))`` (family in the module doc).

    Examples:
      >>> from coverage_sim.experiments.atlas.gap import GapAtlasConfig, atlas_instance
      >>> env, phi = atlas_instance(GapAtlasConfig(), seed=0, index=3)
      >>> env.shape, phi.shape
      ((10,), (10, 4))
    """
    rng = np.random.default_rng(_stream(seed, _INSTANCE_STREAM, index))
    k, d = config.n_responses, config.feature_dim
    features = rng.standard_normal((k, d))
    direction = rng.standard_normal(d)
    direction /= np.linalg.norm(direction)
    m = config.misspecification
    reward = config.reward_scale * (np.sqrt(1.0 - m) * features @ direction
                                    + np.sqrt(m) * rng.standard_normal(k))
    ref = softmax(config.ref_scale * rng.standard_normal(k))
    env = Bandit(reward=reward, ref=ref, name=f"atlas-K{k}-seed{seed}-{index}")
    return env, features


def behaviour_policy(env: Bandit, level: str, low_quality_beta: float = 0.5) -> np.ndarray:
    """The behaviour policy ``mu`` of a coverage level (see the module doc).

    Examples:
      >>> import coverage_sim as cs
      >>> from coverage_sim.experiments.atlas.gap import behaviour_policy
      >>> env = cs.Bandit(reward=[2.0, 1.0, 0.0], ref=[0.2, 0.3, 0.5])
      >>> behaviour_policy(env, "drop1").round(3)
      array([0.   , 0.375, 0.625])
    """
    _check_coverage(level, "level")
    if level == "ref":
        return np.array(env.ref)
    if level.startswith("mix"):
        low = optimal_policy(env, low_quality_beta, reward=-np.asarray(env.reward))
        return mixture(env.ref, low, float(level[3:]))
    dropped = np.argsort(-env.reward2d, axis=-1, kind="stable")[..., : int(level[4:])]
    mask = np.ones(env.ref2d.shape, dtype=bool)
    np.put_along_axis(mask, dropped, False, axis=-1)
    return restrict_support(env.ref, mask.reshape(env.shape))


def ipo_target(env: Bandit, tau: float) -> np.ndarray:
    """``pi ∝ pi_ref exp(P(y > pi_ref) / tau)``: the maximiser of the gold win rate against
    ``pi_ref`` minus ``tau KL(pi || pi_ref)`` (Azar et al., arXiv:2310.12036, with Psi = identity)."""
    pref = bradley_terry(env.reward2d)
    score = np.einsum("xij,xj->xi", pref, env.ref2d)
    return env.like_ref(softmax(env.ref_logp2d + score / tau, axis=-1))


def targets(env: Bandit, config: GapAtlasConfig) -> dict[str, list[np.ndarray]]:
    """The regularised optima each pair is judged against: ``pi*_beta`` on the ``betas`` grid
    (``"dpo_target"``) and :func:`ipo_target` on the ``taus`` grid (``"ipo_target"``)."""
    return {"dpo_target": [optimal_policy(env, b) for b in config.betas],
            "ipo_target": [ipo_target(env, t) for t in config.taus]}


# ---------------------------------------------------------------------------------------------
# cells: the unit of work (resumable, distributable)
# ---------------------------------------------------------------------------------------------

def _size_label(n: float) -> str:
    return "inf" if np.isinf(n) else str(int(n))


def _cell_specs(config: GapAtlasConfig) -> dict[str, tuple]:
    """``cell name -> (policy, coverage or None, n or None)``; ``None``: the online arms that use
    no offline data (computed once per policy class)."""
    specs = {}
    online_gold = any(lab in config.labels for lab in ("gold", "deterministic"))
    for policy in config.policies:
        if online_gold:
            specs[f"{policy}-online"] = (policy, None, None)
        for coverage in config.coverages:
            for n in config.sizes:
                specs[f"{policy}-{coverage}-n{_size_label(n)}"] = (policy, coverage, n)
    return specs


def cell_names(config: GapAtlasConfig) -> list[str]:
    """The atlas's independent cells, in table order (one file each in a sweep folder)."""
    return list(_cell_specs(config))


class _Rows:
    """Accumulates table rows column-wise (one DataFrame at the end, not one per run)."""

    def __init__(self, policy: str, coverage: str, n: float, seed: int, step: int):
        self.fixed = dict(policy=policy, coverage=coverage, n=n, seed=seed)
        self.step = step
        self.cols = {c: [] for c in ("labels", "method", "beta", "instance", "metric", "value")}

    def add(self, labels, method, beta, instance, values: dict):
        for metric, value in values.items():
            for col, v in zip(self.cols, (labels, method, beta, instance, metric, value)):
                self.cols[col].append(v)

    def frame(self) -> pd.DataFrame:
        size = len(self.cols["value"])
        out = pd.DataFrame({"policy": [self.fixed["policy"]] * size,
                            "coverage": [self.fixed["coverage"]] * size,
                            "n": np.full(size, self.fixed["n"], dtype=float),
                            "labels": self.cols["labels"], "method": self.cols["method"],
                            "beta": np.asarray(self.cols["beta"], dtype=float),
                            "instance": np.asarray(self.cols["instance"], dtype=np.int64),
                            "seed": np.full(size, self.fixed["seed"], dtype=np.int64),
                            "step": np.full(size, self.step, dtype=np.int64),
                            "metric": self.cols["metric"],
                            "value": np.asarray(self.cols["value"], dtype=float)})
        return out[list(_COLUMNS)]


def _policy(name: str, features: np.ndarray):
    return TabularSoftmax() if name == "tabular" else LogLinear(features, base="ref")


#: Objective name of each method.
_OBJECTIVE = {"dpo": "sigmoid", "ipo": "ipo", "rlhf": "rlhf", "online_dpo": "online_dpo",
              "online_ipo": "online_ipo"}


@dataclass(frozen=True, eq=False)
class _Problem:
    """One training run of the atlas: the stored arm (labels, method), its coefficient and
    instance, and what it trains on."""

    labels: str
    method: str
    coef: float
    instance: int
    env: Bandit
    policy: object
    data: object
    params: dict

    def objective(self):
        return objective(_OBJECTIVE[self.method], beta=self.coef, **self.params)


def _train(rows: _Rows, config, problems: list) -> None:
    """Train ``problems`` of one method as one batch and add their final metrics to ``rows``."""
    if not problems:
        return
    objs = [p.objective() for p in problems]
    datas = [p.data for p in problems] if objs[0].needs_data else None
    logp = train_policies([p.env for p in problems], objs, datas, steps=config.steps,
                          lr=config.lr, policy=[p.policy for p in problems],
                          record=[config.steps])
    for p, lp in zip(problems, logp[:, -1]):
        pi = np.exp(lp)
        rows.add(p.labels, p.method, p.coef, p.instance,
                 {"kl": float(metrics.kl_divergence(p.env, pi, p.env.ref)),
                  "win_rate": float(metrics.win_rate(p.env, pi)),
                  "reward": float(metrics.expected_reward(p.env, pi))})


def _online_problems(config, i, env, pol, labels) -> list[_Problem]:
    """The online arms with gold or deterministic labels: they use no offline data."""
    out = []
    for lab in labels:
        judge = {"labels": "bradley_terry" if lab == "gold" else "deterministic"}
        for method in ("online_dpo", "online_ipo"):
            out += [_Problem(lab, method, c, i, env, pol, None, judge)
                    for c in config.grid(method)]
    return out


def _offline_data(config, seed, i, env, phi, policy, coverage, n, data_labels):
    """``(mu, {labels: data}, {labels: r_hat})`` of instance ``i`` in a data cell."""
    mu = behaviour_policy(env, coverage, config.low_quality_beta)
    size = None if np.isinf(n) else int(n)
    stream = (seed, _DATA_STREAM, i, _code(coverage), 0 if size is None else size)
    datas, r_hats = {}, {}
    for lab in data_labels:
        # the same stream for every label model: the same sampled pairs, only labels differ
        datas[lab] = offline_pairs(env, mu, "bradley_terry" if lab == "gold" else lab, n=size,
                                   seed=_stream(*stream))
        r_hats[lab] = (fit_bradley_terry(datas[lab], l2=config.proxy_l2) if policy == "tabular"
                       else fit_linear_bradley_terry(datas[lab], phi, l2=config.proxy_l2))
    return mu, datas, r_hats


def _data_problems(config, i, env, pol, datas, r_hats, proxy: bool) -> list[_Problem]:
    """DPO, IPO and RLHF on each data set, and the online arms labelled by the gold data's
    reward model (``proxy``)."""
    out = []
    for lab, data in datas.items():
        out += [_Problem(lab, "dpo", b, i, env, pol, data, {}) for b in config.betas]
        out += [_Problem(lab, "ipo", t, i, env, pol, data, {}) for t in config.taus]
        out += [_Problem(lab, "rlhf", b, i, env, pol, None, {"reward": r_hats[lab]})
                for b in config.betas]
        if lab == "gold" and proxy:
            for method in ("online_dpo", "online_ipo"):
                out += [_Problem("proxy", method, c, i, env, pol, None,
                                 {"reward": r_hats[lab]}) for c in config.grid(method)]
    return out


def _by_method(problems: list[_Problem]) -> dict[str, list[_Problem]]:
    out = {}
    for p in problems:
        out.setdefault(p.method, []).append(p)
    return out


def _online_cell(config: GapAtlasConfig, seed: int, policy: str) -> pd.DataFrame:
    rows = _Rows(policy, "none", 0.0, seed, config.steps)
    labels = [lab for lab in ("gold", "deterministic") if lab in config.labels]
    problems = []
    for i in range(config.n_instances):
        env, phi = atlas_instance(config, seed, i)
        problems += _online_problems(config, i, env, _policy(policy, phi), labels)
    for batch in _by_method(problems).values():
        _train(rows, config, batch)
    return rows.frame()


def _data_cell(config: GapAtlasConfig, seed: int, policy: str, coverage: str,
               n: float) -> pd.DataFrame:
    rows = _Rows(policy, coverage, n, seed, 0)
    data_labels = [lab for lab in ("gold", "deterministic")
                   if lab in config.labels or (lab == "gold" and "proxy" in config.labels)]
    problems = []
    for i in range(config.n_instances):
        env, phi = atlas_instance(config, seed, i)
        mu, datas, r_hats = _offline_data(config, seed, i, env, phi, policy, coverage, n,
                                          data_labels)
        rows.add("none", "reference", 0.0, i, {"ref_reward": float(env.ref @ env.reward)})
        some = next(iter(datas.values()))
        for method, pis in targets(env, config).items():
            grid = config.betas if method == "dpo_target" else config.taus
            for coef, target in zip(grid, pis):
                rows.add("none", method, coef, i,
                         {"c_star": concentrability(target, mu),
                          "mass_in_support": mass_in_support(target, mu),
                          "data_mass_in_support": mass_in_support(target, some)})
        problems += _data_problems(config, i, env, _policy(policy, phi), datas, r_hats,
                                   "proxy" in config.labels)
    targets_frame = rows.frame()
    rows = _Rows(policy, coverage, n, seed, config.steps)
    for batch in _by_method(problems).values():
        _train(rows, config, batch)
    return pd.concat([targets_frame, rows.frame()], ignore_index=True)


def arm_problem(config: GapAtlasConfig, seed: int, instance: int, *, policy: str,
                coverage: str, n: float, labels: str, method: str, coefficient: float):
    """The training problem behind one atlas entry, to train it on its own (e.g. with a record
    schedule, for its training curve).

    Args:
      config, seed, instance: as in :func:`run_cell` (``instance`` in ``[0, n_instances)``).
      policy, coverage, n: the cell (``n = inf`` for exact data).
      labels: the label condition (:data:`LABELS`).
      method: a key of :data:`METHODS`.
      coefficient: the method's ``beta`` or ``tau``, from its grid.

    Returns:
      ``(env, objective, data or None, policy model)``: the arguments of ``cs.train``.
    """
    check_choice(labels, "labels", LABELS)
    check_choice(method, "method", METHODS)
    check_choice(policy, "policy", POLICIES)
    _check_coverage(coverage, "coverage")
    if coefficient not in config.grid(method):
        raise ValueError(f"coefficient must be on {method}'s grid {config.grid(method)}, got "
                         f"{coefficient!r}")
    env, phi = atlas_instance(config, seed, instance)
    pol = _policy(policy, phi)
    stored = stored_arm(labels, method, coverage, n)[2]
    if method.startswith("online_") and labels != "proxy":
        problems = _online_problems(config, instance, env, pol, [labels])
    else:
        data_labels = ["deterministic" if labels == "deterministic" else "gold"]
        _, datas, r_hats = _offline_data(config, seed, instance, env, phi, policy, coverage, n,
                                         data_labels)
        problems = _data_problems(config, instance, env, pol, datas, r_hats, labels == "proxy")
    match = next(p for p in problems
                 if p.method == method and p.labels == stored and p.coef == coefficient)
    return env, match.objective(), match.data, pol


def run_cell(config: GapAtlasConfig, seed: int, cell: str) -> pd.DataFrame:
    """One cell of the atlas: a tidy table (columns ``policy, coverage, n, labels, method, beta,
    instance, seed, step, metric, value``).

    A data cell ``<policy>-<coverage>-n<size>`` holds, per instance, the final ``kl``, ``win_rate``
    and ``reward`` of DPO, IPO and RLHF on its data (labels ``gold`` / ``deterministic``) and of
    online DPO/IPO labelled by the reward model (labels ``proxy``), plus the coverage readouts of the
    targets (methods ``dpo_target`` / ``ipo_target``, step 0). The cell ``<policy>-online`` holds the
    online arms with gold or deterministic labels, which use no offline data.
    """
    specs = _cell_specs(config)
    if cell not in specs:
        raise ValueError(f"unknown cell {cell!r}; this config's cells: {', '.join(specs)}")
    policy, coverage, n = specs[cell]
    if coverage is None:
        return _online_cell(config, seed, policy)
    return _data_cell(config, seed, policy, coverage, n)


def run(config: GapAtlasConfig, seed: int) -> pd.DataFrame:
    """Every cell of the atlas for one seed (the instances are drawn from ``seed``)."""
    return pd.concat([run_cell(config, seed, c) for c in cell_names(config)], ignore_index=True)


# ---------------------------------------------------------------------------------------------
# gaps and summaries
# ---------------------------------------------------------------------------------------------

def frontier_value(kl, value, at, anchor: float) -> np.ndarray:
    """The KL frontier of a swept method at the KLs ``at``.

    The non-decreasing upper envelope of the points ``(kl, value)``, anchored at ``(0, anchor)``
    (``pi_ref``), linearly interpolated and constant beyond the largest KL. Each point of it is
    reached by a mixture of the swept policies (or of one with ``pi_ref``): the value is linear in
    ``pi`` and KL is convex, so the mixture's KL is at most the interpolated one.

    Examples:
      >>> from coverage_sim.experiments.atlas.gap import frontier_value
      >>> frontier_value([1.0, 2.0, 3.0], [0.7, 0.6, 0.9], [0.5, 2.0, 9.0], anchor=0.5).tolist()
      [0.6, 0.7, 0.9]
    """
    kl = np.asarray(kl, dtype=float)
    order = np.argsort(kl, kind="stable")
    xs = np.concatenate([[0.0], kl[order]])
    ys = np.maximum.accumulate(np.concatenate([[anchor], np.asarray(value, dtype=float)[order]]))
    return np.interp(at, xs, ys)


def _frontier_rows(kl, value, at, anchor) -> np.ndarray:
    """:func:`frontier_value` row by row: ``kl``, ``value`` ``(I, B)``, ``at`` ``(I, Q)``,
    ``anchor`` ``(I,)``; returns ``(I, Q)``."""
    order = np.argsort(kl, axis=1, kind="stable")
    xs = np.concatenate([np.zeros((kl.shape[0], 1)), np.take_along_axis(kl, order, 1)], axis=1)
    ys = np.concatenate([anchor[:, None], np.take_along_axis(value, order, 1)], axis=1)
    ys = np.maximum.accumulate(ys, axis=1)
    # segment of each query: the last knot at or below it (queries beyond the last knot clamp)
    seg = np.clip((xs[:, None, :] <= at[:, :, None]).sum(axis=2) - 1, 0, xs.shape[1] - 2)
    x0 = np.take_along_axis(xs, seg, 1)
    x1 = np.take_along_axis(xs, seg + 1, 1)
    y0 = np.take_along_axis(ys, seg, 1)
    y1 = np.take_along_axis(ys, seg + 1, 1)
    width = x1 - x0
    t = np.clip(np.divide(at - x0, width, out=np.zeros_like(at), where=width > 0), 0.0, 1.0)
    return y0 + t * (y1 - y0)


@dataclass(frozen=True)
class _Arm:
    """One trained arm's final metrics on its coefficient grid: ``values[metric]`` is
    ``(instances, coefficients)``; ``units`` the ``(seed, instance)`` of each row."""

    units: np.ndarray
    betas: np.ndarray
    values: dict


_ARM_KEYS = ["policy", "coverage", "n", "labels", "method"]


def final_values(table: pd.DataFrame) -> pd.DataFrame:
    """The trained arms' final metrics, wide: one row per run, columns ``kl, win_rate, reward``."""
    runs = table[table["method"].isin(list(METHODS))]
    last = runs[runs["step"] == runs.groupby(_ARM_KEYS)["step"].transform("max")]
    return last.pivot_table(index=_ARM_KEYS + ["seed", "instance", "beta"], columns="metric",
                            values="value", aggfunc="first").reset_index()


def _arms(table: pd.DataFrame) -> dict[tuple, _Arm]:
    """Every trained arm of the table by ``(policy, coverage, n, labels, method)``."""
    finals = final_values(table).sort_values(_ARM_KEYS + ["seed", "instance", "beta"],
                                             kind="stable")
    arms = {}
    for key, frame in finals.groupby(_ARM_KEYS, sort=False):
        betas = np.unique(frame["beta"].to_numpy())
        units = frame[["seed", "instance"]].to_numpy()[:: betas.size]
        if len(frame) != units.shape[0] * betas.size:
            raise ValueError(f"arm {key} does not hold every coefficient for every instance")
        arms[key] = _Arm(units=units, betas=betas, values={
            m: frame[m].to_numpy().reshape(units.shape[0], betas.size) for m in _RUN_METRICS})
    return arms


def stored_arm(condition: str, method: str, coverage: str, n: float) -> tuple:
    """Where the table stores ``method``'s arm for a label condition of cell ``(coverage, n)``:
    ``(coverage, n, labels)``. Online arms with gold or deterministic labels use no offline data
    (``("none", 0.0, condition)``); offline arms and RLHF on gold data serve the ``proxy`` condition
    too (``labels = "gold"``)."""
    if method.startswith("online_"):
        if condition == "proxy":
            return coverage, n, "proxy"
        return "none", 0.0, condition
    return coverage, n, "deterministic" if condition == "deterministic" else "gold"


def _pairs(arms: dict):
    """Yield ``(keys, online arm, offline arm)`` per (policy, coverage, n, labels, pair)."""
    cells = dict.fromkeys((k[0], k[1], k[2]) for k in arms if k[1] != "none")
    for policy, coverage, n in cells:
        for condition in LABELS:
            where = (coverage, n) if condition == "proxy" else ("none", 0.0)
            if not any((policy,) + where + (condition, m) in arms
                       for m in ("online_dpo", "online_ipo")):
                continue                        # the condition was not run

            for pair, (on, off) in PAIRS.items():
                on_key = (policy,) + stored_arm(condition, on, coverage, n) + (on,)
                off_key = (policy,) + stored_arm(condition, off, coverage, n) + (off,)
                if on_key in arms and off_key in arms:
                    on_arm, off_arm = arms[on_key], arms[off_key]
                    if not np.array_equal(on_arm.units, off_arm.units):
                        raise ValueError(f"arms {on_key} and {off_key} hold different instances")
                    keys = dict(policy=policy, coverage=coverage, n=n, labels=condition, pair=pair)
                    yield keys, on_arm, off_arm


class _Gaps:
    """Accumulates gap blocks (constant keys, per-row arrays) into one DataFrame at the end."""

    def __init__(self, columns):
        self.columns = list(columns)
        self.blocks = []

    def add(self, keys: dict, units: np.ndarray, **arrays):
        self.blocks.append((keys, units, arrays))

    def frame(self) -> pd.DataFrame:
        out = {}
        for col in self.columns:
            parts = []
            for keys, units, arrays in self.blocks:
                size = units.shape[0]
                if col in keys:
                    parts.append(np.full(size, keys[col], dtype=object if isinstance(
                        keys[col], str) else float))
                elif col in ("seed", "instance"):
                    parts.append(units[:, 0 if col == "seed" else 1])
                else:
                    parts.append(np.asarray(arrays[col]))
            out[col] = np.concatenate(parts)
        return pd.DataFrame(out)


def _unit_codes(units: np.ndarray) -> np.ndarray:
    return units[:, 0].astype(np.int64) * 1_000_000_007 + units[:, 1].astype(np.int64)


def matched_gaps(table: pd.DataFrame) -> pd.DataFrame:
    """Matched-KL gaps per instance: the online frontier at the offline point's KL minus the
    offline value, at each offline coefficient.

    Returns columns ``policy, coverage, n, labels, pair, beta, seed, instance, metric, gap``
    (``beta``: the offline method's coefficient; ``metric``: ``win_rate`` or ``reward``; the reward
    frontier is anchored at ``E_{pi_ref} r*``, stored as metric ``ref_reward``).
    """
    arms = _arms(table)
    ref = table[table["metric"] == "ref_reward"].drop_duplicates(["seed", "instance"])
    ref_codes = _unit_codes(ref[["seed", "instance"]].to_numpy())
    order = np.argsort(ref_codes)
    ref_codes, ref_values = ref_codes[order], ref["value"].to_numpy()[order]
    out = _Gaps(["policy", "coverage", "n", "labels", "pair", "beta", "seed", "instance",
                 "metric", "gap"])
    for keys, on, off in _pairs(arms):
        codes = _unit_codes(on.units)
        at = np.clip(np.searchsorted(ref_codes, codes), 0, max(len(ref_codes) - 1, 0))
        has_ref = len(ref_codes) > 0 and np.array_equal(ref_codes[at], codes)
        anchors = {"win_rate": np.full(codes.size, 0.5),
                   "reward": ref_values[at] if has_ref else np.full(codes.size, np.nan)}
        units = np.repeat(on.units, off.betas.size, axis=0)
        for metric in ("win_rate", "reward"):
            gap = (_frontier_rows(on.values["kl"], on.values[metric], off.values["kl"],
                                  anchors[metric]) - off.values[metric])
            out.add({**keys, "metric": metric}, units, beta=np.tile(off.betas, codes.size),
                    gap=gap.ravel())
    return out.frame()


def best_gaps(table: pd.DataFrame) -> pd.DataFrame:
    """Best-point gaps per instance: the online method's best value over its grid minus the
    offline method's best value. Columns ``policy, coverage, n, labels, pair, seed, instance,
    metric, gap``."""
    out = _Gaps(["policy", "coverage", "n", "labels", "pair", "seed", "instance", "metric",
                 "gap"])
    for keys, on, off in _pairs(_arms(table)):
        for metric in ("win_rate", "reward"):
            out.add({**keys, "metric": metric}, on.units,
                    gap=on.values[metric].max(axis=1) - off.values[metric].max(axis=1))
    return out.frame()


def summarise(gaps: pd.DataFrame, value: str = "gap") -> pd.DataFrame:
    """Mean over instances with a 95% Student-t confidence interval, per everything else.

    Returns the grouping columns plus ``mean``, ``half_width`` (of the 95% CI), ``count``.
    """
    keys = [c for c in gaps.columns if c not in ("seed", "instance", value)]
    grouped = gaps.groupby(keys, sort=False, dropna=False)[value]
    out = grouped.agg(mean="mean", std="std", count="count").reset_index()
    t = stats.t.ppf(_T95, np.maximum(out["count"] - 1, 1))
    out["half_width"] = np.where(out["count"] > 1, t * out["std"] / np.sqrt(out["count"]), np.inf)
    return out.drop(columns="std")


# ---------------------------------------------------------------------------------------------
# figure and claims
# ---------------------------------------------------------------------------------------------

_PAIR_NAMES = {"online_dpo-dpo": "online DPO − DPO", "online_ipo-ipo": "online IPO − IPO",
               "rlhf-dpo": "RLHF(r̂) − DPO"}
_PAIR_COLOURS = {"online_dpo-dpo": "C0", "online_ipo-ipo": "C3", "rlhf-dpo": "C2"}
_PAIR_TARGET = {"online_dpo-dpo": "dpo_target", "online_ipo-ipo": "ipo_target",
                "rlhf-dpo": "dpo_target"}
_METRIC_NAMES = {"win_rate": "win-rate gap", "reward": "reward gap"}


def _size_name(n: float) -> str:
    return "n = ∞" if np.isinf(n) else f"n = {int(n)}"


def target_readouts(table: pd.DataFrame) -> pd.DataFrame:
    """Per (policy, coverage, n, target, beta, seed, instance): ``c_star``, ``mass_in_support`` and
    ``data_mass_in_support`` of the pair's regularised optimum (wide)."""
    rows = table[table["method"].isin(["dpo_target", "ipo_target"])]
    return rows.pivot_table(index=["policy", "coverage", "n", "method", "beta", "seed", "instance"],
                            columns="metric", values="value", aggfunc="first").reset_index()


def _with_predictors(gaps: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """``gaps`` (matched, per instance) joined with their target's coverage readouts."""
    readouts = target_readouts(table).rename(columns={"method": "target"})
    out = gaps.assign(target=gaps["pair"].map(_PAIR_TARGET))
    return out.merge(readouts, on=["policy", "coverage", "n", "target", "beta", "seed",
                                   "instance"], how="left")


def plot_heatmaps(fig_or_subfig, summary: pd.DataFrame, config: GapAtlasConfig, *, pair: str,
                  policy: str, metric: str = "win_rate", limit: float | None = None):
    """Heatmaps of the matched-KL gap over (coverage x coefficient), one per (labels, n), with the
    zero-gap contour; a dot marks a cell whose 95% CI excludes 0. Returns the colour mappable."""
    rows = summary[(summary["pair"] == pair) & (summary["policy"] == policy)
                   & (summary["metric"] == metric)]
    labels = [lab for lab in LABELS if lab in set(rows["labels"])]
    sizes = list(config.sizes)
    grid = config.grid(PAIRS[pair][1])
    if limit is None:
        limit = max(float(rows["mean"].abs().max()), 1e-3)
    axes = fig_or_subfig.subplots(len(labels), len(sizes), sharex=True, sharey=True,
                                  squeeze=False)
    mappable = None
    for r, lab in enumerate(labels):
        for c, n in enumerate(sizes):
            ax = axes[r, c]
            cell = rows[(rows["labels"] == lab) & (rows["n"] == n)]
            mean = cell.pivot_table(index="coverage", columns="beta", values="mean")
            hw = cell.pivot_table(index="coverage", columns="beta", values="half_width")
            mean = mean.reindex(index=list(config.coverages), columns=list(grid))
            hw = hw.reindex(index=list(config.coverages), columns=list(grid))
            m = mean.to_numpy()
            mappable = ax.imshow(m, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto",
                                 origin="upper", interpolation="nearest")
            if np.nanmin(m) < 0 < np.nanmax(m):
                ax.contour(np.arange(m.shape[1]), np.arange(m.shape[0]), m, levels=[0.0],
                           colors="k", linewidths=1.0)
            sig = np.abs(m) > hw.to_numpy()
            yy, xx = np.nonzero(sig)
            ax.plot(xx, yy, ".", color="k", ms=2.5)
            ax.grid(False)
            ax.set_xticks(range(len(grid)))
            ax.set_xticklabels([f"{g:g}" for g in grid], rotation=90, fontsize=7)
            ax.set_yticks(range(len(config.coverages)))
            ax.set_yticklabels(config.coverages, fontsize=7)
            # every panel names its cell (labels, n): the grid's rows and columns at a glance
            ax.set_title(f"{lab}, {_size_name(n)}", fontsize=8 if r == 0 else 7)
            if c == 0:
                ax.set_ylabel("coverage", fontsize=8)
            if r == len(labels) - 1:
                ax.set_xlabel("β" if METHODS[PAIRS[pair][1]] == "betas" else "τ", fontsize=8)
    return mappable


def plot(table: pd.DataFrame, config: GapAtlasConfig, *, pair: str = "online_dpo-dpo",
         policy: str = "tabular", metric: str = "win_rate"):
    """(a) heatmaps of one pair's matched-KL gap, labels x n; (b) the gap against the target's mass
    outside the data support; (c) against C*/n on full-support data; (d) the best-point gap with
    gold vs proxy labels."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from coverage_sim.plotting import STYLE

    matched = matched_gaps(table)
    summary = summarise(matched)
    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=(7.6, 9.6), layout="constrained")
        top, bottom = fig.subfigures(2, 1, height_ratios=[2.6, 1.0])
        mappable = plot_heatmaps(top, summary, config, pair=pair, policy=policy, metric=metric)
        top.colorbar(mappable, ax=top.axes, shrink=0.6, label=f"{_METRIC_NAMES[metric]} "
                     "(online − offline) at matched KL")
        top.suptitle(f"(a) {_PAIR_NAMES[pair]}, {policy} policy: {_METRIC_NAMES[metric]} at the "
                     "offline method's KL", fontsize=9)
        # The heatmaps' key, below them (in the title it ran edge to edge).
        top.legend([Line2D([], [], color="k", marker=".", ms=2.5, linestyle="none"),
                    Line2D([], [], color="k", linewidth=1.0)],
                   ["cell whose 95% CI excludes 0", "zero-gap contour"],
                   loc="outside lower center", ncol=2, fontsize=7.5, frameon=False)
        axes = bottom.subplots(1, 3)
        _plot_support_collapse(axes[0], matched, table, policy, metric)
        _plot_sample_collapse(axes[1], matched, table, policy, metric)
        _plot_information(axes[2], table, config, metric)
    return fig


def _plot_support_collapse(ax, matched, table, policy, metric):
    data = _with_predictors(matched[(matched["policy"] == policy) & (matched["metric"] == metric)
                                    & np.isinf(matched["n"]) & (matched["labels"] == "gold")],
                            table)
    data = data.assign(outside=1.0 - data["mass_in_support"])
    cells = data.groupby(["pair", "coverage", "beta"])[["outside", "gap"]].mean().reset_index()
    for pair, rows in cells.groupby("pair", sort=False):
        ax.scatter(rows["outside"], rows["gap"], s=9, color=_PAIR_COLOURS[pair],
                   label=_PAIR_NAMES[pair], alpha=0.8, linewidths=0)
    ax.axhline(0.0, color="k", linewidth=0.8)
    ax.annotate("global coverage:\ngap ≤ 0 (Song et al.;\ntheorem for IPO)", (0.0, 0.0),
                xytext=(0.08, 0.45), textcoords="axes fraction", fontsize=7,
                arrowprops=dict(arrowstyle="->", color="0.3", linewidth=0.8))
    ax.set_xlabel("target's mass outside supp μ")
    ax.set_ylabel(_METRIC_NAMES[metric])
    ax.set_title("(b) n = ∞, gold labels", fontsize=9)
    ax.legend(loc="upper left", fontsize=7)


def _plot_sample_collapse(ax, matched, table, policy, metric):
    from matplotlib.ticker import LogLocator

    data = _with_predictors(matched[(matched["policy"] == policy) & (matched["metric"] == metric)
                                    & np.isfinite(matched["n"]) & (matched["labels"] == "gold")],
                            table)
    data = data[data["mass_in_support"] >= 1.0 - 1e-9]
    data = data.assign(ratio=data["c_star"] / data["n"])
    cells = data.groupby(["pair", "coverage", "n", "beta"])[["ratio", "gap"]].mean().reset_index()
    for pair, rows in cells.groupby("pair", sort=False):
        ax.scatter(rows["ratio"], rows["gap"], s=9, color=_PAIR_COLOURS[pair], alpha=0.8,
                   linewidths=0)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(numticks=12))  # every decade, also on a narrow panel
    online = cells[cells["pair"] != "rlhf-dpo"]
    if len(online) > 1 and (online["ratio"] > 0).all():
        # the offline statistical rate's shape sqrt(C*/n) (Rashidinejad et al. 2103.12021), its
        # constant fitted by least squares to the online pairs' points
        root = np.sqrt(online["ratio"].to_numpy())
        c = float(root @ online["gap"].to_numpy() / (root @ root))
        xs = np.geomspace(online["ratio"].min(), online["ratio"].max(), 50)
        ax.plot(xs, c * np.sqrt(xs), "--", color="0.3", linewidth=1,
                label=f"{c:.2f}·√(C*/n), c fitted")
        ax.legend(loc="upper left", fontsize=7)
    ax.axhline(0.0, color="k", linewidth=0.8)
    ax.set_xlabel("C*(target, μ) / n")
    ax.set_ylabel(_METRIC_NAMES[metric])  # its scale is not (b)'s
    ax.set_title("(c) full support, finite n, gold", fontsize=9)


def _plot_information(ax, table, config, metric):
    best = summarise(best_gaps(table))
    best = best[best["metric"] == metric]
    piv = best.pivot_table(index=["policy", "coverage", "n", "pair"], columns="labels",
                           values="mean").reset_index()
    if {"gold", "proxy"} <= set(piv.columns):
        for pair, rows in piv.groupby("pair", sort=False):
            ax.scatter(rows["gold"], rows["proxy"], s=9, color=_PAIR_COLOURS[pair], alpha=0.8,
                       linewidths=0)
        lim = [min(piv["gold"].min(), piv["proxy"].min()), max(piv["gold"].max(),
                                                               piv["proxy"].max())]
        ax.plot(lim, lim, ":", color="0.5", linewidth=1)
    ax.axhline(0.0, color="k", linewidth=0.8)
    ax.set_xlabel("best gap, gold labeller")
    ax.set_ylabel("best gap, proxy r̂ labeller")
    ax.set_title("(d) every cell: gold vs proxy", fontsize=9)


def figure_table(table: pd.DataFrame, config: GapAtlasConfig) -> pd.DataFrame:
    """The atlas summarised for ``figures/gap-atlas.csv`` (the full table is ~20 MB).

    Tidy, one row per statistic: ``metric`` is ``matched_win_rate_gap`` / ``matched_reward_gap``
    (``beta`` = the offline coefficient) or ``best_win_rate_gap`` / ``best_reward_gap`` (``beta``
    empty), ``value`` the mean over instances, with ``half_width`` (95% CI) and ``count``; and the
    coverage readouts of the targets (``pair`` = ``dpo_target`` / ``ipo_target``): ``value`` the
    mean over instances of ``mass_in_support`` / ``data_mass_in_support`` and the median of
    ``c_star`` (``inf`` when most instances leave the support). ``seed`` is -1: pooled over seeds.
    """
    frames = []
    for kind, gaps in (("matched", matched_gaps(table)), ("best", best_gaps(table))):
        summary = summarise(gaps)
        summary["metric"] = kind + "_" + summary["metric"] + "_gap"
        frames.append(summary.rename(columns={"mean": "value"}))
    readouts = target_readouts(table).rename(columns={"method": "pair"})
    grouped = readouts.groupby(["policy", "coverage", "n", "pair", "beta"])
    stats_ = grouped.agg(c_star=("c_star", "median"), mass_in_support=("mass_in_support", "mean"),
                         data_mass_in_support=("data_mass_in_support", "mean"),
                         count=("c_star", "size")).reset_index()
    long = stats_.melt(id_vars=["policy", "coverage", "n", "pair", "beta", "count"],
                       var_name="metric", value_name="value")
    frames.append(long.assign(labels="none", half_width=np.nan))
    out = pd.concat(frames, ignore_index=True)
    out["seed"] = -1
    out["step"] = np.where(out["metric"].str.endswith("_gap"), config.steps, 0)
    columns = ["policy", "coverage", "n", "labels", "pair", "beta", "half_width", "count",
               "seed", "step", "metric", "value"]
    return out.reindex(columns=columns)


#: (pair, metric) whose matched-KL gap theory bounds by 0 under global coverage, n = inf, gold
#: labels, tabular policy: IPO's win rate (offline IPO maximises win rate - tau KL); DPO's reward
#: (offline DPO maximises reward - beta KL); and both DPO pairs' win rate (both reach pi*_beta).
THEOREM = (("online_ipo-ipo", "win_rate"), ("online_dpo-dpo", "win_rate"),
           ("online_dpo-dpo", "reward"), ("rlhf-dpo", "win_rate"), ("rlhf-dpo", "reward"))
#: Optimisation tolerance of the theorem check: the runs stop after ``steps``, not at the optimum.
THEOREM_TOL = 2e-3
#: The proxy finding's bound on the best-point win-rate gap, and the gold contrast it needs.
PROXY_BOUND, GOLD_CONTRAST = 0.05, 0.1


def _select(frame: pd.DataFrame, **where) -> pd.DataFrame:
    for key, value in where.items():
        if key == "n" and value == "inf":
            frame = frame[np.isinf(frame["n"])]
        else:
            frame = frame[frame[key] == value]
    return frame


def _fmt(row) -> str:
    return f"{row['mean']:+.3f} ± {row['half_width']:.3f}"


def _missing(name: str, statement: str, what: str, paper: bool) -> Clause:
    """A clause the atlas cannot assess (its cells were not run): one failing instance."""
    return clause(name, statement, False, f"not assessed: the atlas has no {what} cell",
                  paper=paper)


_THEOREM_STATEMENT = ("global coverage (mu = pi_ref), n = inf, gold labels, tabular: at every "
                      "offline coefficient, no online method's frontier is above the offline "
                      "method's point (matched-KL gap <= {tol:g}) where theory bounds it: "
                      + ", ".join(f"{p} {m}" for p, m in THEOREM))


def claim_theorem(matched: pd.DataFrame, config: GapAtlasConfig) -> Clause:
    """Global coverage (``ref``), n = inf, gold labels, tabular: on each random instance, every
    matched-KL gap of :data:`THEOREM` (every offline coefficient) is at most ``THEOREM_TOL``."""
    statement = _THEOREM_STATEMENT.format(tol=THEOREM_TOL)
    rows = _select(matched, policy="tabular", coverage="ref", n="inf", labels="gold")
    keep = np.zeros(len(rows), dtype=bool)
    for pair, metric in THEOREM:
        keep |= ((rows["pair"] == pair) & (rows["metric"] == metric)).to_numpy()
    rows = rows[keep]
    if rows.empty:
        return _missing("theorem", statement, "tabular / ref / n = inf / gold", True)
    worst = rows.groupby(["seed", "instance"])["gap"].max()
    ok = worst <= THEOREM_TOL
    top = rows.loc[rows["gap"].idxmax()]
    detail = (f"{int(ok.sum())} of {ok.size} instances; largest gap {top['gap']:+.2g} "
              f"({top['pair']}, {top['metric']}, coefficient {top['beta']:g})")
    return clause("theorem", statement, ok.to_numpy(), detail)


def _coverage_outside(table: pd.DataFrame) -> pd.Series:
    """Mean mass of pi*_beta outside supp(mu) per coverage level (over betas and instances)."""
    readouts = target_readouts(table)
    readouts = readouts[readouts["method"] == "dpo_target"]
    return 1.0 - readouts.groupby("coverage")["mass_in_support"].mean()


def _support_levels(table: pd.DataFrame) -> tuple[list[str], list[str], pd.Series]:
    """``(partial levels sorted by pi*'s mass outside the support, full-support levels,
    mass outside per level)``."""
    outside = _coverage_outside(table)
    partial = [c for c in outside.sort_values(kind="stable").index if outside[c] > 1e-9]
    full = [c for c in outside.index if outside[c] <= 1e-9]
    return partial, full, outside


def claim_support(best: pd.DataFrame, table: pd.DataFrame, config: GapAtlasConfig) -> Clause:
    """Tabular, n = inf, gold labels, on each random instance: the best-point win-rate gap of
    online DPO and of online IPO grows as pi*'s mass leaves the support. Along the coverage
    levels with mass outside the support, sorted by that mass, the gap never falls by more than
    ``THEOREM_TOL``, and at the last level it exceeds every full-support level's by more than
    ``THEOREM_TOL``."""
    statement = ("Song et al.: with pi*'s mass leaving the support of mu (tabular, n = inf, gold), "
                 "the best-point win-rate gap of online DPO and online IPO over their offline "
                 f"counterparts does not fall (by more than {THEOREM_TOL:g}) from one truncation "
                 "level to the next, and at the smallest support it exceeds every full-support "
                 "level's")
    partial, full, outside = _support_levels(table)
    if len(partial) < 2 or not full:
        return clause("support", statement, False,
                      f"not assessed: needs >= 2 coverage levels with pi* mass outside the "
                      f"support and one without; got {dict(outside.round(3))}")
    rows = _select(best, policy="tabular", n="inf", labels="gold", metric="win_rate")
    ok, notes = None, []
    for pair in ("online_dpo-dpo", "online_ipo-ipo"):
        piv = rows[rows["pair"] == pair].pivot_table(index=["seed", "instance"],
                                                     columns="coverage", values="gap")
        if not set(partial + full) <= set(piv.columns):
            return _missing("support", statement, f"{pair} tabular / n = inf / gold", True)
        steps = np.diff(piv[partial].to_numpy(), axis=1)
        last = piv[partial[-1]] - piv[full].max(axis=1)
        passes = (steps.min(axis=1) >= -THEOREM_TOL) & (last.to_numpy() > THEOREM_TOL)
        ok = passes if ok is None else ok & passes
        notes.append(f"{pair}: mean " + " → ".join(f"{piv[c].mean():+.3f}" for c in partial)
                     + f" ({int(passes.sum())} of {passes.size} instances)")
    detail = (f"{int(ok.sum())} of {ok.size} instances; levels " + ", ".join(
        f"{c}: {outside[c]:.2f} of pi* outside" for c in partial) + "; " + "; ".join(notes))
    return clause("support", statement, ok, detail)


def finding_proxy(best: pd.DataFrame, config: GapAtlasConfig) -> Clause:
    """Finding, per proxy cell: with the proxy labeller (a reward model fitted on the same offline
    data) the best-point win-rate gap is within ``±PROXY_BOUND`` (not significantly beyond:
    ``|mean| - half_width <= PROXY_BOUND`` over the instances): the online advantage is the gold
    labeller's information, not on-policy sampling (:func:`finding_gold_contrast` checks that the
    gold labeller has one)."""
    statement = (f"finding: with the proxy labeller the best-point win-rate gap is within "
                 f"±{PROXY_BOUND:g} (up to its 95% CI) in each cell")
    summary = summarise(_select(best, metric="win_rate", labels="proxy"))
    if summary.empty:
        return _missing("proxy", statement, "proxy-label", False)
    excess = summary["mean"].abs() - summary["half_width"]
    worst = summary.loc[excess.idxmax()]
    detail = (f"{int((excess <= PROXY_BOUND).sum())} of {len(summary)} cells; largest |gap| "
              f"{summary['mean'].abs().max():.3f}; worst {_fmt(worst)} ({worst['policy']}, "
              f"{worst['coverage']}, n = {worst['n']:g}, {worst['pair']})")
    return clause("proxy", statement, (excess <= PROXY_BOUND).to_numpy(), detail, paper=False)


def finding_gold_contrast(best: pd.DataFrame, config: GapAtlasConfig) -> Clause:
    """The contrast the proxy finding needs: with the gold labeller the mean best-point win-rate
    gap reaches ``GOLD_CONTRAST`` in some cell."""
    statement = (f"finding: with the gold labeller the mean best-point win-rate gap reaches "
                 f"{GOLD_CONTRAST:g} in some cell (the contrast to the proxy finding)")
    summary = summarise(_select(best, metric="win_rate", labels="gold"))
    if summary.empty:
        return _missing("gold-contrast", statement, "gold-label", False)
    top = summary.loc[summary["mean"].idxmax()]
    return clause("gold-contrast", statement, bool(top["mean"] >= GOLD_CONTRAST),
                  f"largest {_fmt(top)} ({top['policy']}, {top['coverage']}, n = {top['n']:g}, "
                  f"{top['pair']})", paper=False)


def finding_sample_size(best: pd.DataFrame, config: GapAtlasConfig) -> Clause:
    """Finding, per random instance: with global coverage and gold labels (tabular), online DPO's
    best-point win-rate gap at the smallest n is above its gap at the largest n (n = inf when
    exact): the gold labeller's advantage falls with the offline data's size."""
    statement = ("finding: with global coverage and gold labels (tabular), online DPO's best-point "
                 "win-rate gap over DPO is larger at the smallest n than at the largest")
    rows = _select(best, policy="tabular", coverage="ref", labels="gold", pair="online_dpo-dpo",
                   metric="win_rate")
    sizes = sorted(config.sizes)
    if len(sizes) < 2 or rows.empty:
        return _missing("sample-size", statement, "global-coverage data size", False)
    piv = rows.pivot_table(index=["seed", "instance"], columns="n", values="gap")
    ok = piv[sizes[0]] > piv[sizes[-1]]
    summary = summarise(rows).set_index("n").loc[sizes]
    detail = (f"{int(ok.sum())} of {ok.size} instances; mean " + ", ".join(
        f"n = {n:g}: {_fmt(r)}" for n, r in summary.iterrows()))
    return clause("sample-size", statement, ok.to_numpy(), detail, paper=False)


def finding_loglinear(best: pd.DataFrame, config: GapAtlasConfig) -> Clause:
    """Finding: in the log-linear class with a misspecified reward, online DPO beats DPO at its
    best point even with global coverage, n = inf and gold labels, on average over the instances
    (95% CI above 0): the theorem's premise that the class holds the regularised optimum fails,
    and which in-class point is reached depends on the sampling distribution. One clause on the
    mean (the gap is about 0 on the instances whose class holds the optimum); the detail gives the
    share of instances with a gap."""
    statement = ("finding: in the misspecified log-linear class (ref, n = inf, gold) online DPO's "
                 "best-point win rate is above DPO's on average (95% CI above 0)")
    if config.misspecification == 0:
        return clause("log-linear", statement, True, "not assessed: misspecification = 0, the "
                      "class holds pi*_beta", paper=False)
    rows = _select(best, policy="loglinear", coverage="ref", n="inf", labels="gold",
                   pair="online_dpo-dpo", metric="win_rate")
    if rows.empty:
        return _missing("log-linear", statement, "loglinear / ref / n = inf / gold", False)
    row = summarise(rows).iloc[0]
    positive = int((rows["gap"] > THEOREM_TOL).sum())
    return clause("log-linear", statement, bool(row["mean"] - row["half_width"] > 0),
                  f"mean {_fmt(row)}; gap above {THEOREM_TOL:g} in {positive} of {len(rows)} "
                  "instances", paper=False)


def support_effect(best: pd.DataFrame, table: pd.DataFrame) -> Effect | None:
    """Per random instance: online DPO's best-point win-rate gap over DPO at the smallest support
    minus at global coverage (tabular, n = inf, gold); None without those cells."""
    partial, full, _ = _support_levels(table)
    rows = _select(best, policy="tabular", n="inf", labels="gold", metric="win_rate",
                   pair="online_dpo-dpo")
    piv = rows.pivot_table(index=["seed", "instance"], columns="coverage", values="gap")
    if not partial or "ref" not in piv.columns or partial[-1] not in piv.columns:
        return None
    return Effect(f"best-point win-rate gap, online DPO - DPO, at {partial[-1]} minus at ref "
                  "(tabular, n = inf, gold)", (piv[partial[-1]] - piv["ref"]).to_numpy())


def check(table: pd.DataFrame, config: GapAtlasConfig) -> CheckResult:
    """The two claims as paper clauses, on each random instance (:func:`claim_theorem`,
    :func:`claim_support`), and the four findings with ``paper=False``
    (:func:`finding_proxy` per cell, :func:`finding_gold_contrast`,
    :func:`finding_sample_size` per instance, :func:`finding_loglinear` on the mean). Effect:
    :func:`support_effect`."""
    matched, best = matched_gaps(table), best_gaps(table)
    clauses = (claim_theorem(matched, config), claim_support(best, table, config),
               finding_proxy(best, config), finding_gold_contrast(best, config),
               finding_sample_size(best, config), finding_loglinear(best, config))
    return CheckResult(clauses=clauses, effect=support_effect(best, table), mode="exact")


GAP_ATLAS = register(Experiment(
    id="gap-atlas", figure="A1",
    title="The gap atlas: online minus offline over coverage, β, n, labels and policy class",
    paper=_PAPER, arxiv=_ARXIV,
    claim=("Offline contrastive methods need global coverage and online methods with the gold "
           "labeller only partial coverage (Song et al.); with global coverage, exact data and "
           "gold labels, offline IPO on μ = π_ref is the KL-regularised maximiser of the win rate, "
           "so online cannot beat it there (the caveat to Tang et al.'s gap)."),
    differences=(
        "Our own experiment, not a paper's figure. 32 random 10-arm instances per cell (features "
        "φ ~ N(0, I_4); a gold reward with 25% of its variance outside their span; π_ref = "
        "softmax(z)); coverage ref, mix0.5 and mix0.9 (π_ref mixed with π_ref e^{-r*/0.5}), drop1, "
        "drop2, drop3 and drop5 (the best arms removed); β from 0.03 to 3, τ from 0.01 to 1; n = ∞, "
        "20, 100, 500; gold, deterministic and proxy labels; tabular and log-linear policies; "
        "1000 Adam steps (lr 0.05) per run, about 73,000 runs. The gap is the online frontier at "
        "the offline run's KL minus the offline win rate, with 95% CIs over instances (figure: "
        "online DPO − DPO, tabular; the notebook 07 opens every cell). The two claims are the "
        "paper clauses, evaluated on each random instance: (1) where theory forbids a gap "
        "(tabular, ref, n = ∞, gold) every matched-KL gap is ≤ 0.002 (32 of 32 instances; the "
        "largest is 3e-16). (2) The gap grows as π* leaves the support: online DPO's best-point "
        "win-rate gap is +0.089, +0.147, +0.188, +0.244 with 0.60, 0.72, 0.78, 0.87 of π*'s mass "
        "outside (drop1 to drop5; n = ∞, gold, tabular), and grows along the levels in 32 of 32 "
        "instances (effect: drop5 minus ref, +0.243 [+0.213, +0.273]). Findings, reported beside "
        "them: (3) the gap is the gold labeller's information: with the proxy labeller (a reward "
        "model fitted on the same data) the best-point gap stays within ±0.036 in all 168 cells, "
        "against up to +0.28 with the gold labeller (online DPO with the proxy reaches the same "
        "policy as RLHF with it). (4) With full coverage the gold labeller's advantage falls with "
        "n: +0.094 ± 0.034 (n = 20), +0.045 ± 0.023 (100), +0.007 ± 0.005 (500), +0.002 ± 0.002 "
        "(∞); larger at n = 20 than at ∞ in 31 of 32 instances. (5) In the misspecified "
        "log-linear class online DPO beats DPO even at ref, n = ∞, gold (+0.024 ± 0.012, a gap in "
        "17 of 32 instances, about 0 in the others): no theorem protects offline when the class "
        "lacks the optimum. Seen but not checked: with "
        "deterministic labels and full-support mixtures offline DPO beats online DPO at matched "
        "KL (down to −0.06); with proxy labels, Tang et al.'s matched-KL gap appears at small β "
        "and n = 20 (+0.10 at drop5, β = 0.03) but closes at the best β (+0.02). gap-atlas.csv "
        "holds the per-cell means and CIs; the full table (~20 MB) is runs/gap-atlas/results.csv."),
    config=GapAtlasConfig, run=run, plot=plot, check=check, seeds=1,
    cells=cell_names, run_cell=run_cell, figure_table=figure_table))
