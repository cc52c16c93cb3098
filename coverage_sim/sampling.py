"""Sampled mode: every objective evaluated on an empirical measure drawn per step.

The exact engine evaluates an objective's terms (pairwise, linear log-likelihood, KL, expected reward;
see :mod:`coverage_sim.objectives`) on the population. A *sampled* step evaluates the same integrands
on a measure drawn for the step (:mod:`coverage_sim._sampled` holds the numba kernels):

* **pairwise term.** Offline objectives: ``batch_size`` labelled pairs drawn i.i.d. from the data's
  pair weights ``W`` (a minibatch), weight ``1/B`` each. Online objectives: ``batch_size`` groups,
  context ``x ~ rho``, ``group_size`` responses ``y ~ pi_t`` (the current policy, held fixed in the
  gradient as in the exact semi-gradient), pairs formed by ``pairs`` and each labelled by one
  ``Bernoulli(P[x, y, y'])`` draw from the objective's label model (Bradley-Terry, deterministic with
  ties 1/2, noisy, proxy reward or a custom ``P``). With ``"all"`` or ``"disjoint"`` every pair is
  marginally a draw from ``pi x pi``, so with weight ``1/(B * pairs per group)`` the estimate is
  unbiased for the population loss and gradient.
* **linear term** ``C = Q * c``: responses ``y ~ Q`` with weight ``c / B``. best_of_n: ``Q`` is the
  law of the best of ``n`` draws from the behaviour policy, drawn as exactly that (``n`` draws, the
  highest reward wins, ties uniformly), ``c = 1``; awr: ``Q`` = behaviour, ``c = exp(r/beta)``; vpo
  online: ``Q = pi_ref`` in each group's context, ``c = -alpha beta``; vpo offline: the winners of the
  same minibatch, ``c = alpha beta``.
* **expected reward** (rlhf): REINFORCE. ``batch_size`` groups of ``group_size`` responses from
  ``pi_t``; ``dL/dlog pi(y_g) += -A_g / (B G)``, which the softmax pull-back turns into the score
  function ``A (e_y - pi)``. ``A`` is the return minus a ``baseline``.
* **KL term** (rlhf, hypo): exact, or estimated from the policy samples with ``k1``, ``k2`` or ``k3``
  (Schulman, "Approximating KL divergence", 2020), placed in the reward (``-kl_coef * k`` inside the
  return, no pathwise gradient) or in the loss (differentiated at the fixed samples, as TRL's GRPO).
* **reuse and clipping.** ``reuse`` updates per drawn batch; without ``clip`` each reuse step
  re-evaluates the same empirical measure at the new policy (Tajwar et al.'s protocol, arXiv
  2404.14367); with ``clip`` the score-function surrogate is PPO's ``min(r A, clip(r, 1 - eps, 1 +
  eps) A)``, ``r = pi / pi_old`` (Schulman et al., arXiv 1707.06347).

Which estimators are unbiased (for the exact gradient of :func:`coverage_sim.gradient`) is stated per
option in :class:`Estimator`; the tests check each claim by Monte Carlo and reject the biased ones.

Also here: :func:`group_pairs`, the finite-data protocol of Tajwar et al. as a data builder, and the
explicit measures :class:`Batch` (:func:`draw_batch`, :func:`population_batch`) that
:func:`coverage_sim.gradients.batch_gradient` evaluates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np
from scipy.special import log_softmax

from coverage_sim import _engine, _pair_kernels as _pk, _sampled as _s
from coverage_sim._rng import seed_state
from coverage_sim._validation import (as_float_array, check_choice, check_in_range, check_int,
                                      check_positive)
from coverage_sim.data import PairData, UnpairedData, _check_sampler
from coverage_sim.env import Bandit
from coverage_sim.losses import PAIR_LOSSES
from coverage_sim.objectives import (Objective, _behaviour, _kto_mismatched,
                                     objective as make_objective)
from coverage_sim.preferences import preference_probs

__all__ = ["Estimator", "Batch", "ESTIMATOR_OPTIONS", "draw_batch", "population_batch",
           "group_pairs", "sampling_stream"]

PAIRINGS = {"all": _s.PAIRING_ALL, "disjoint": _s.PAIRING_DISJOINT,
            "best_worst": _s.PAIRING_BEST_WORST}
BASELINES = {"none": _s.BASE_NONE, "mean": _s.BASE_MEAN, "rloo": _s.BASE_RLOO,
             "grpo": _s.BASE_GRPO, "dr_grpo": _s.BASE_DR_GRPO}
KL_ESTIMATORS = {"exact": _s.KL_EXACT, "k1": _s.KL_K1, "k2": _s.KL_K2, "k3": _s.KL_K3}
KL_PLACES = {"reward": _s.KL_IN_REWARD, "loss": _s.KL_IN_LOSS}
#: Spawn key of the sampling stream: the first child of ``SeedSequence(seed)``, so that it is
#: independent of ``numpy.random.default_rng(seed)``, which initialises the policy.
_STREAM_KEY = (0,)

_SCORE_OPTIONS = ("group_size", "baseline", "kl_estimator", "kl_in", "clip")
_ONLINE_PAIR_OPTIONS = ("group_size", "pairs", "min_reward_gap")
#: Estimator options each objective takes and their defaults (all unbiased).
ESTIMATOR_OPTIONS: dict[str, dict[str, object]] = {
    **{name: {} for name in PAIR_LOSSES},
    "best_of_n": {}, "awr": {}, "iterative_dpo": {},
    "rlhf": dict(group_size=2, baseline="rloo", kl_estimator="k1", kl_in="reward", clip=None),
    "hypo": dict(group_size=2, baseline="rloo", kl_estimator="k1", kl_in="reward", clip=None),
    "online_dpo": dict(group_size=2, pairs="all", min_reward_gap=0.0),
    "online_ipo": dict(group_size=2, pairs="all", min_reward_gap=0.0),
    "vpo_online": dict(group_size=2, pairs="all", min_reward_gap=0.0),
    "vpo_offline": {},
    # TRL's list-valued loss_type (rpo, mpo and any list of pair losses): minibatches of pairs
    "rpo": {}, "mpo": {}, "combined": {},
    # kl_estimator: KTO's reference point z0, "exact" (the population value) or "k1" (TRL's batch
    # estimate: the mean log-ratio of the batch's mismatched pairs)
    "kto": dict(kl_estimator="exact"), "apo_zero_unpaired": {},
    "nash_md": {}, "xpo": {},
}
#: KTO's reference-point estimators (``kl_estimator``): the exact population mean log-ratio of the
#: mismatched pairs, or TRL's batch mean (k1, the log-ratio itself).
KTO_REFERENCE_POINTS = ("exact", "k1")


def sampling_stream(seed) -> np.ndarray:
    """The xoshiro256** state of the sampling stream of ``seed`` (the first SeedSequence child).

    Args:
      seed: a non-negative integer.

    Returns:
      uint64 array of shape (4,).

    Examples:
      >>> from coverage_sim.sampling import sampling_stream
      >>> bool((sampling_stream(0) == sampling_stream(0)).all())
      True
    """
    return seed_state(check_int(seed, "seed", minimum=0), _STREAM_KEY)


@dataclass(frozen=True)
class Estimator:
    """How a sampled step estimates an objective; ``None`` fields take the objective's defaults.

    Fields, and which estimators are unbiased for the exact gradient (:func:`coverage_sim.gradient`,
    logit coordinates of a tabular softmax). Measured biases are relative norms
    ``|E g_hat - g| / |g|`` of the whole rlhf (or online DPO, AOT) gradient, computed exactly with
    :func:`population_batch` where the bias does not come from a group, else from 20,000 draws, on
    ``cs.random_bandit(10, seed=3)`` at the policy after 30 exact RLHF steps (beta = 0.1, Adam,
    lr = 0.1; KL 1.45 there). They depend on the instance and only show the size of the effect;
    the tests reject every biased estimator below with the same Monte Carlo check that accepts the
    unbiased ones.

    Args:
      group_size: responses per group ``G`` (rlhf, hypo, online_dpo, online_ipo, vpo online); default 2.
        Group baselines and online pairs need ``G >= 2``.
      pairs: how an online group forms pairs: ``"all"`` (all ``G(G-1)/2`` pairs; Tajwar et al., arXiv
        2404.14367), ``"disjoint"`` (``(y_1, y_2), (y_3, y_4), ...``) or ``"best_worst"`` (the highest
        vs the lowest labelling reward, then labelled by a Bernoulli draw as any pair). ``all`` and
        ``disjoint`` are unbiased; ``best_worst`` estimates a different measure (the best-vs-worst of
        ``G`` law), so it is biased for the ``pi x pi`` objective except at ``G = 2`` with
        deterministic labels (measured 0.98 at ``G = 4``, Bradley-Terry labels).
      min_reward_gap: drop online pairs whose labelling rewards differ by less than this (Tajwar et
        al.'s ``reward_threshold``). Weights still divide by the nominal pair count, so the estimate is
        unbiased for the *truncated* population (``W[x,i,j] 1{|r_i - r_j| >= gap}``, not
        renormalised): ``coverage_sim.gradient(..., min_reward_gap=gap)``.
      baseline: REINFORCE baseline of the score-function terms (Williams 1992): ``"none"`` (unbiased),
        ``"rloo"`` (leave-one-out, Ahmadian et al., arXiv 2402.14740; unbiased), ``"mean"`` (group
        mean including ``y_i``: exactly ``(G-1)/G`` times RLOO, so biased in scale by ``-1/G``:
        measured 0.50 at ``G = 2``, 0.13 at ``G = 8``), ``"grpo"`` (``(r - mean) / (std + 1e-4)``,
        ddof = 1 as TRL; Shao et al., arXiv 2402.03300; biased, as the normaliser depends on the
        samples: measured 0.37 at ``G = 2``, 0.43 at ``G = 8``), ``"dr_grpo"`` (Liu et al., arXiv
        2503.20783: mean-centred, no std; its other change, no length normalisation, is moot for
        one-token responses, so on a bandit it equals ``"mean"``).
      kl_estimator: ``"exact"`` (the exact KL gradient, dense) or ``"k1"`` (``-log r``), ``"k2"``
        (``(log r)^2 / 2``), ``"k3"`` (``(r - 1) - log r``), ``r = pi_ref / pi``, from the policy
        samples (Schulman, "Approximating KL divergence", 2020).
      kl_in: where a sampled KL estimate goes. ``"reward"``: ``-kl_coef * k`` is added to the return
        inside the REINFORCE advantage, no pathwise gradient; ``k1`` there is the unbiased reverse-KL
        gradient, ``k2`` and ``k3`` are biased (measured 0.12 and 0.20). ``"loss"``: ``kl_coef * k``
        is differentiated at the fixed samples (as TRL's GRPO): ``k1`` has zero expected gradient
        (the KL term is lost: measured 0.12), ``k2`` is the unbiased reverse-KL gradient, ``k3``
        gives the *forward* KL's gradient (measured 0.17).
      clip: PPO clip range ``eps`` in (0, 1) for score-function terms (rlhf; hypo with a sampled KL
        in the reward), or ``None``. Unbiased on the step that drew the batch (``r = 1``); on reuse
        steps the clipped surrogate is biased once ``r`` leaves ``[1 - eps, 1 + eps]``.

    KTO (``kto``): ``kl_estimator`` chooses its reference point z0. ``"exact"`` (default): z0 from
    the data's exact mismatched-pair law at the current policy, so a minibatch of examples is
    unbiased. ``"k1"``: TRL's estimate, the mean log-ratio of the batch's own examples rotated by
    one, ``(x_i, y_{i-1})``, clamped at 0: the loss is nonlinear in z0, so this is biased (by
    O(1/B)). ``apo_zero_unpaired`` reads no z0 and is unbiased.

    Combined loss types (``rpo``, ``mpo``, lists), f-divergences and WPO's ``use_weighting`` are
    evaluated per drawn pair with the exact engine's per-pair layer (WPO's weight from the current
    policy, held fixed as in TRL): unbiased, except for AOT components (below). TR-DPO's moving
    reference (``sync_ref_model``) moves in the sampled loop exactly as in the exact one; each
    step's estimate is unbiased given the current reference. Nash-MD draws ``batch_size`` groups of
    one ``y ~ pi`` and one ``y'`` from the geometric mixture and scores ``P(y > y')`` (the
    probability itself, TRL's reward-model score): unbiased. XPO draws ``batch_size`` groups of one
    ``y ~ pi`` and one ``y' ~ pi_ref``, labels the pair by one Bernoulli draw and puts ``y'`` in
    the exploration term: unbiased.

    Offline minibatches are unbiased for every per-pair loss; ``aot`` and ``aot_unpaired`` sort the
    minibatch (TRL's form), whose coupling differs from the population's: biased, by less than the
    Monte Carlo error of 5,000 draws at ``B = 16`` (< 0.05) on the instance above. best_of_n, awr
    and vpo (both modes) are unbiased. iterative_dpo draws ``batch_size`` groups of ``n`` and drops
    the groups whose draws are all one response (no pair), averaging over the kept pairs, as the
    exact law renormalises: unbiased except when every group is dropped (probability
    ``(sum_x rho_x sum_y pi^n)^B``), which gives a zero gradient.

    Examples:
      >>> import coverage_sim as cs
      >>> cs.Estimator(baseline="grpo").resolve(cs.objective("rlhf")).group_size
      2
    """

    group_size: int | None = None
    pairs: str | None = None
    min_reward_gap: float | None = None
    baseline: str | None = None
    kl_estimator: str | None = None
    kl_in: str | None = None
    clip: float | None = None

    def __post_init__(self):
        if self.group_size is not None:
            object.__setattr__(self, "group_size", check_int(self.group_size, "group_size",
                                                             minimum=1))
        for name, table in (("pairs", PAIRINGS), ("baseline", BASELINES),
                            ("kl_estimator", KL_ESTIMATORS), ("kl_in", KL_PLACES)):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, str):
                    raise ValueError(f"{name} must be one of {', '.join(table)}, got {value!r}")
                check_choice(value, name, table)
        if self.min_reward_gap is not None:
            object.__setattr__(self, "min_reward_gap",
                               check_positive(self.min_reward_gap, "min_reward_gap",
                                              allow_zero=True))
        if self.clip is not None:
            object.__setattr__(self, "clip", check_in_range(self.clip, "clip", 0.0, 1.0,
                                                            low_open=True, high_open=True))

    @classmethod
    def coerce(cls, estimator=None) -> "Estimator":
        """An :class:`Estimator` from ``None``, a dict of its fields, or an Estimator."""
        if estimator is None:
            return cls()
        if isinstance(estimator, Estimator):
            return estimator
        if isinstance(estimator, dict):
            allowed = [f.name for f in fields(cls)]
            unknown = sorted(set(estimator) - set(allowed))
            if unknown:
                raise ValueError(f"unknown estimator option(s) {unknown}; allowed: "
                                 f"{', '.join(allowed)}")
            return cls(**estimator)
        raise ValueError(f"estimator must be an Estimator, a dict of its fields or None, got "
                         f"{type(estimator).__name__}")

    def resolve(self, objective: Objective) -> "Estimator":
        """This estimator completed with ``objective``'s defaults, checked against what it supports.

        Raises:
          ValueError: an option the objective does not take (naming it, its value and the options
            the objective takes), ``group_size < 2`` with online pairs or a group baseline, ``kl_in``
            with the exact KL, ``clip`` without a score-function term.
        """
        key = _options_key(objective)
        defaults = ESTIMATOR_OPTIONS[key]
        given = {f.name: getattr(self, f.name) for f in fields(self)
                 if getattr(self, f.name) is not None}
        for name, value in given.items():
            if name not in defaults:
                takes = ", ".join(defaults) if defaults else "none"
                why = (" (clip needs a score-function term: rlhf, or hypo with a sampled KL in "
                       "the reward)" if name == "clip" else "")
                raise ValueError(f"objective {objective.name!r} does not take estimator option "
                                 f"{name}={value!r}{why}; its estimator options: {takes}")
        out = {**defaults, **given}
        if key == "kto":
            if out["kl_estimator"] not in KTO_REFERENCE_POINTS:
                raise ValueError(f"kl_estimator={out['kl_estimator']!r}: KTO's reference point is "
                                 f"estimated 'exact' (the population value) or 'k1' (TRL's batch "
                                 f"mean of mismatched log-ratios); got neither")
            return Estimator(kl_estimator=out["kl_estimator"])
        if "kl_estimator" in out:
            if out["kl_estimator"] == "exact":
                if "kl_in" in given:
                    raise ValueError(f"kl_in={given['kl_in']!r} applies to a sampled KL estimator "
                                     "(k1, k2, k3); kl_estimator='exact' uses the exact KL gradient")
                out["kl_in"] = None
            score = objective.name == "rlhf" or out["kl_in"] == "reward"
            samples = objective.name == "rlhf" or out["kl_estimator"] != "exact"
            if not score:
                for name in ("baseline", "clip"):
                    if name in given:
                        raise ValueError(
                            f"{name}={given[name]!r} needs a score-function term, and objective "
                            f"{objective.name!r} with kl_estimator={out['kl_estimator']!r}, "
                            f"kl_in={out['kl_in']!r} has none (allowed: a sampled KL estimator "
                            f"with kl_in='reward')")
                out["baseline"] = "none"
            if not samples and "group_size" in given:
                raise ValueError(f"group_size={given['group_size']!r}: objective "
                                 f"{objective.name!r} with kl_estimator='exact' draws no policy "
                                 "samples")
            if out["baseline"] != "none" and out["group_size"] < 2:
                raise ValueError(f"group_size must be >= 2 for baseline={out['baseline']!r} (a "
                                 f"group baseline needs other responses), got {out['group_size']}")
        if "pairs" in out and out["group_size"] < 2:
            raise ValueError(f"group_size must be >= 2 to form pairs={out['pairs']!r}, "
                             f"got {out['group_size']}")
        return Estimator(**{f.name: out.get(f.name) for f in fields(self)})

    def as_dict(self) -> dict:
        """The fields as a plain dict (for :attr:`coverage_sim.train.Run.config`)."""
        return asdict(self)


def _options_key(objective: Objective) -> str:
    if objective.name == "vpo":
        return "vpo_" + objective.params["mode"]
    if objective.spec.loss_types is not None and objective.name not in ESTIMATOR_OPTIONS:
        return "combined"
    if objective.name not in ESTIMATOR_OPTIONS:
        raise ValueError(f"objective {objective.name!r} has no sampled mode yet (sampled "
                         f"objectives: {', '.join(sorted(ESTIMATOR_OPTIONS))})")
    return objective.name


def check_batch_size(batch_size) -> int:
    """``batch_size`` as an int >= 1 (ValueError naming it otherwise)."""
    return check_int(batch_size, "batch_size", minimum=1)


# ------------------------------------------------------------------------------------------------
# compiling an objective into the numba plan
# ------------------------------------------------------------------------------------------------

def sampled_terms(env: Bandit, objective: Objective) -> tuple:
    """The engine's term tuple as the sampled kernels read it: the pairwise components (codes,
    parameters, loss weights), the label matrix ``P`` of online pairs with an explicit preference
    matrix, the KL and reward coefficients, ``R`` and ``rho``, the unpaired code and its
    parameters, Nash-MD's flag and parameters.

    The arrays only the exact kernels read (pair weights ``W``, the fast DPO kernel's arrays, the
    linear term ``C``, the unpaired masses ``U`` and mismatched law ``M``) are left empty: a sampled
    step draws its measure instead, so it needs no data-sized precomputation (and no data at all to
    evaluate a given :class:`Batch`). Named label models (Bradley-Terry, deterministic) are computed
    from the labelling reward per drawn pair (:func:`label_model`), so they need no ``(X, K, K)``
    array either.
    """
    n_ctx, k = env.n_contexts, env.n_responses
    p = objective.params
    t = list(_engine.empty_terms(n_ctx, k))
    if objective.loss_types:
        t[0], t[1], t[14] = objective._pair_arrays()
    explicit = objective.online and not isinstance(p.get("labels", "deterministic"), str)
    if explicit and objective.name != "iterative_dpo":
        # an explicit preference matrix; the named label models are computed per pair
        t[4] = (objective._xpo_probs(env) if objective.name == "xpo" else
                preference_probs(env, labels=p["labels"], label_noise=p["label_noise"]
                                 ).reshape(n_ctx, k, k))
    t[10] = {"rlhf": p.get("beta"), "hypo": p.get("lam")}.get(objective.name, 0.0)
    t[11] = 1.0 if objective.name == "rlhf" else 0.0
    if t[11]:
        t[12] = objective.reward_for(env)
    t[13] = env.context_weights
    if objective.name == "xpo":
        t[2] = _engine.ONLINE_REF
    elif objective.online:
        t[2] = _engine.ONLINE
    if objective.unpaired:
        t[15] = _pk.KTO if objective.name == "kto" else _pk.APO_ZERO_UNPAIRED
        t[16] = np.array([p["beta"], p["desirable_weight"], p["undesirable_weight"]])
    if objective.name == "nash_md":
        t[19], t[20] = _engine.NASH_MD, np.array([p["beta"], p["mixture_coef"]])
    return _engine.compile_terms(t)


def label_model(labels, label_noise: float, ties_to_first: bool = False) -> tuple[int, float]:
    """``(label code, flip rate)`` of the sampler for a label model (see
    :func:`coverage_sim.preferences.preference_probs`): the named models are computed from the
    labelling reward per pair, with ``label_noise`` applied there; an explicit matrix is looked up
    (its noise is already folded into ``P``). ``ties_to_first``: deterministic labels give a tie to
    the first response (XPO's rule, TRL's ``model_scores >= ref_scores``) instead of a fair coin."""
    if isinstance(labels, str):
        code = {"bradley_terry": _s.LABEL_BRADLEY_TERRY,
                "deterministic": (_s.LABEL_AT_LEAST if ties_to_first
                                  else _s.LABEL_DETERMINISTIC)}[labels]
        return code, float(label_noise)
    return _s.LABEL_P, 0.0


def compile_plan(env: Bandit, objective: Objective, data, estimator: Estimator,
                 batch_size: int) -> tuple[tuple, tuple]:
    """``(terms, plan)`` of the numba sampler for one problem (``estimator`` already resolved):
    :func:`sampled_terms` and the plan tuple of :mod:`coverage_sim._sampled`."""
    n_ctx, k = env.n_contexts, env.n_responses
    terms = sampled_terms(env, objective)
    ints = np.zeros(_s.N_INTS, dtype=np.int64)
    flts = np.zeros(_s.N_FLTS)
    ints[_s.I_BATCH] = batch_size
    ints[_s.I_LIN_N] = 1
    rank_reward = _engine.kernel_array(objective.reward_for(env))
    lin_q = np.zeros((n_ctx, k))
    lin_c = np.zeros((n_ctx, k))
    lin_rho = np.zeros(n_ctx)
    tab_p = np.zeros(0)
    tab_flat = np.zeros(0, dtype=np.int64)
    mis_p = np.zeros(0)
    mis_flat = np.zeros(0, dtype=np.int64)
    p = objective.params
    est = estimator
    name = objective.name
    if name == "xpo":
        ints[_s.I_PAIRS] = _s.PAIRS_POLICY_REF
        ints[_s.I_LIN] = _s.LIN_REF_DRAWS
        lin_q = _engine.kernel_array(env.ref2d)
        flts[_s.F_LIN_COEF] = -p["alpha"]
        ints[_s.I_LABEL], flts[_s.F_NOISE] = label_model(p["labels"], p["label_noise"],
                                                         ties_to_first=True)
    elif name == "nash_md":
        ints[_s.I_NASH] = 1
        ints[_s.I_LABEL], flts[_s.F_NOISE] = label_model(p["labels"], p["label_noise"])
    elif objective.unpaired:
        unpaired = objective._unpaired_data(data)
        flat = np.concatenate([np.ravel(unpaired.desirable), np.ravel(unpaired.undesirable)])
        ints[_s.I_UNPAIRED] = 1
        tab_flat = np.flatnonzero(flat).astype(np.int64)
        tab_p = np.ascontiguousarray(flat[tab_flat])
        if name == "kto":
            mism = np.ravel(_kto_mismatched(env, unpaired))
            if est.kl_estimator == "exact":
                ints[_s.I_MISMATCHED] = _s.MIS_EXACT
                mis_flat = np.flatnonzero(mism).astype(np.int64)
                mis_p = np.ascontiguousarray(mism[mis_flat])
                ints[_s.I_MIS_CAP] = mis_p.size
            else:
                ints[_s.I_MISMATCHED] = _s.MIS_BATCH
                ints[_s.I_MIS_CAP] = batch_size
    elif objective.loss_types:
        if name == "iterative_dpo":
            ints[_s.I_PAIRS] = _s.PAIRS_BEST_WORST
            ints[_s.I_GROUP] = p["n"]
        elif objective.online:
            ints[_s.I_PAIRS] = _s.PAIRS_ONLINE
            ints[_s.I_PAIRING] = PAIRINGS[est.pairs]
            ints[_s.I_GROUP] = est.group_size
            flts[_s.F_GAP] = est.min_reward_gap
            ints[_s.I_LABEL], flts[_s.F_NOISE] = label_model(p["labels"], p["label_noise"])
        else:
            ints[_s.I_PAIRS] = _s.PAIRS_DATA
            flat = np.asarray(data.weights).reshape(-1)
            tab_flat = np.flatnonzero(flat).astype(np.int64)
            tab_p = np.ascontiguousarray(flat[tab_flat])
    if name in ("best_of_n", "awr"):
        ints[_s.I_LIN] = _s.LIN_DRAW
        lin_q = _engine.kernel_array(_behaviour(data))
        lin_rho = _engine.kernel_array(data.context_weights)
        if name == "best_of_n":
            ints[_s.I_LIN_N] = p["n"]
            ints[_s.I_LIN_SCORED] = int(p["n"] > 1)
            lin_c = np.ones((n_ctx, k))
        else:
            ints[_s.I_LIN_SCORED] = 1
            lin_c = np.exp(objective.reward_for(env) / p["beta"])
    elif name == "vpo":
        if p["mode"] == "online":
            ints[_s.I_LIN] = _s.LIN_GROUP
            lin_q = _engine.kernel_array(env.ref2d)
            lin_c = np.full((n_ctx, k), -p["alpha"] * p["beta"])
        else:
            ints[_s.I_LIN] = _s.LIN_CHOSEN
            flts[_s.F_LIN_COEF] = p["alpha"] * p["beta"]
    if est.kl_estimator is not None and not objective.unpaired:
        ints[_s.I_KL_EST] = KL_ESTIMATORS[est.kl_estimator]
        ints[_s.I_KL_IN] = KL_PLACES[est.kl_in or "reward"]
        if name == "rlhf" or est.kl_estimator != "exact":
            ints[_s.I_SCORE] = 1
            ints[_s.I_GROUP] = est.group_size
            ints[_s.I_BASELINE] = BASELINES[est.baseline]
        flts[_s.F_CLIP] = est.clip or 0.0
    plan = (ints, flts, rank_reward, lin_q, _engine.kernel_array(lin_c), lin_rho,
            _engine.kernel_array(tab_p), tab_flat, _engine.kernel_array(mis_p), mis_flat)
    return terms, plan


def coerce_objective(objective) -> Objective:
    """An :class:`~coverage_sim.objectives.Objective` from itself or its name."""
    if isinstance(objective, str):
        objective = make_objective(objective)
    if not isinstance(objective, Objective):
        raise ValueError(f"objective must be an Objective or a name, got {type(objective).__name__}")
    return objective


def check_data(env: Bandit, objective: Objective, data) -> None:
    """``data`` is a PairData of ``env``'s shape (or, for the KTO-trainer objectives, an
    UnpairedData), present when ``objective`` needs it."""
    if objective.unpaired and isinstance(data, UnpairedData):
        expected = (env.n_contexts, env.n_responses)
        if data.desirable.shape != expected:
            raise ValueError(f"data has examples of shape {data.desirable.shape}, expected "
                             f"{expected} for env")
        return
    if objective.needs_data and not isinstance(data, PairData):
        kind = "an UnpairedData or a PairData" if objective.unpaired else "a PairData"
        raise ValueError(f"data is required for objective {objective.name!r} ({kind}, see "
                         f"coverage_sim.offline_pairs), got {type(data).__name__}")
    if data is not None:
        if not isinstance(data, PairData):
            raise ValueError(f"data must be a PairData (see coverage_sim.offline_pairs), got "
                             f"{type(data).__name__}")
        expected = (env.n_contexts, env.n_responses, env.n_responses)
        if data.weights.shape != expected:
            raise ValueError(f"data has pair weights of shape {data.weights.shape}, expected "
                             f"{expected} for env")


def prepare(env: Bandit, objective, data, batch_size, estimator) -> tuple:
    """Validated ``(objective, batch_size, resolved estimator)`` for a sampled computation."""
    objective = coerce_objective(objective)
    batch_size = check_batch_size(batch_size)
    est = Estimator.coerce(estimator).resolve(objective)
    check_data(env, objective, data)
    return objective, batch_size, est


# ------------------------------------------------------------------------------------------------
# explicit measures
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Batch:
    """An explicit empirical measure on which :func:`coverage_sim.batch_gradient` evaluates an
    objective: labelled pairs, weighted responses (linear term), policy samples (score and KL
    terms, Nash-MD's samples) and unpaired examples with KTO's mismatched pairs, in the response
    coordinates of ``env`` (contexts ``0..X-1``, responses ``0..K-1``).

    Attributes:
      pair_context, pair_winner, pair_loser: int arrays (n_pairs,).
      pair_weight: float array (n_pairs,): the pairwise term is ``sum_m w_m l(pair m)``.
      response_context, response, response_weight: the linear term ``-sum_m w_m log pi(y_m|x_m)``.
      sample_context, sample, sample_weight, sample_advantage, sample_logp_old: policy samples:
        the surrogate ``-w A log pi(y)`` (PPO-clipped if the estimator clips, with ``pi_old =
        exp(sample_logp_old)``) plus a sampled KL estimator in the loss.
        Nash-MD's samples carry ``A = P(y > y') - 1/2`` and add ``w (beta log pi/pi_ref - A)``
        to ``dL/dlog pi`` at ``y``.
      samples, queries: responses drawn and reward evaluations made to build the batch.
      estimator: the resolved :class:`Estimator` (its KL estimator and clip apply at evaluation).
      unpaired_context, unpaired_response, unpaired_desirable, unpaired_weight: unpaired examples
        (KTO, unpaired APO-zero): ``sum_m w_m w_label l(example m)``, ``unpaired_desirable`` an int
        array (1 desirable, 0 undesirable). Default: none.
      mismatched_context, mismatched_response, mismatched_weight: KTO's mismatched pairs; the
        reference point is ``max(0, sum_m w_m log(pi / pi_ref)(y_m|x_m))``. Default: none.
    """

    pair_context: np.ndarray
    pair_winner: np.ndarray
    pair_loser: np.ndarray
    pair_weight: np.ndarray
    response_context: np.ndarray
    response: np.ndarray
    response_weight: np.ndarray
    sample_context: np.ndarray
    sample: np.ndarray
    sample_weight: np.ndarray
    sample_advantage: np.ndarray
    sample_logp_old: np.ndarray
    samples: int
    queries: int
    estimator: Estimator
    unpaired_context: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    unpaired_response: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    unpaired_desirable: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    unpaired_weight: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mismatched_context: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    mismatched_response: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    mismatched_weight: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def n_pairs(self) -> int:
        return self.pair_weight.shape[0]

    def buffers(self) -> tuple:
        """The tuple layout of :func:`coverage_sim._sampled.alloc_buffers`."""
        ints = [np.ascontiguousarray(a, dtype=np.int64) for a in (
            self.pair_context, self.pair_winner, self.pair_loser, self.response_context,
            self.response, self.sample_context, self.sample)]
        flts = [np.ascontiguousarray(a, dtype=np.float64) for a in (
            self.pair_weight, self.response_weight, self.sample_weight, self.sample_advantage,
            self.sample_logp_old)]
        unp = [np.ascontiguousarray(a, dtype=np.int64) for a in (
            self.unpaired_context, self.unpaired_response, self.unpaired_desirable,
            self.mismatched_context, self.mismatched_response)]
        unp_w = [np.ascontiguousarray(a, dtype=np.float64) for a in (
            self.unpaired_weight, self.mismatched_weight)]
        counts = np.zeros(_s.N_COUNTS, dtype=np.int64)
        counts[[_s.C_PAIRS, _s.C_LIN, _s.C_SAMPLES_TERM, _s.C_SAMPLES, _s.C_QUERIES,
                _s.C_UNPAIRED, _s.C_MISMATCHED]] = (
            self.n_pairs, self.response.shape[0], self.sample.shape[0], self.samples,
            self.queries, unp_w[0].shape[0], unp_w[1].shape[0])
        return (ints[0], ints[1], ints[2], flts[0], ints[3], ints[4], flts[1], ints[5], ints[6],
                flts[2], flts[3], flts[4], counts, unp[0], unp[1], unp[2], unp_w[0], unp[3],
                unp[4], unp_w[1])

    def __repr__(self) -> str:
        return (f"Batch(pairs={self.n_pairs}, responses={self.response.shape[0]}, "
                f"policy_samples={self.sample.shape[0]}, "
                f"unpaired={self.unpaired_weight.shape[0]}, samples={self.samples}, "
                f"queries={self.queries})")


def _batch_from_buffers(buf, est: Estimator) -> Batch:
    counts = buf[12]
    n_p, n_l, n_s = (int(c) for c in counts[:3])
    return Batch(pair_context=buf[0][:n_p].copy(), pair_winner=buf[1][:n_p].copy(),
                 pair_loser=buf[2][:n_p].copy(), pair_weight=buf[3][:n_p].copy(),
                 response_context=buf[4][:n_l].copy(), response=buf[5][:n_l].copy(),
                 response_weight=buf[6][:n_l].copy(), sample_context=buf[7][:n_s].copy(),
                 sample=buf[8][:n_s].copy(), sample_weight=buf[9][:n_s].copy(),
                 sample_advantage=buf[10][:n_s].copy(), sample_logp_old=buf[11][:n_s].copy(),
                 samples=int(counts[_s.C_SAMPLES]), queries=int(counts[_s.C_QUERIES]),
                 estimator=est, **_unpaired_fields(buf, int(counts[_s.C_UNPAIRED]),
                                                   int(counts[_s.C_MISMATCHED])))


def _unpaired_fields(buf, n_u: int, n_m: int) -> dict:
    """The unpaired-example and mismatched-pair fields of a :class:`Batch` from the buffers."""
    return dict(unpaired_context=buf[13][:n_u].copy(), unpaired_response=buf[14][:n_u].copy(),
                unpaired_desirable=buf[15][:n_u].copy(), unpaired_weight=buf[16][:n_u].copy(),
                mismatched_context=buf[17][:n_m].copy(), mismatched_response=buf[18][:n_m].copy(),
                mismatched_weight=buf[19][:n_m].copy())


def logits_to_logp(env: Bandit, logits) -> np.ndarray:
    """``log pi`` (X, K) of a tabular softmax with ``logits`` shaped like ``env.ref``.

    ``-inf`` is allowed exactly where ``env.ref`` is 0 (and required there: a policy with mass where
    the reference has none has an infinite log-ratio); every other entry must be finite.
    """
    z = env.as2d(logits, "logits")
    if np.isnan(z).any() or np.isposinf(z).any():
        idx = tuple(int(i) for i in np.argwhere(np.isnan(z) | np.isposinf(z))[0])
        raise ValueError(f"logits must be finite (or -inf where env.ref is 0), got {z[idx]!r} at "
                         f"index {idx}")
    mismatch = np.isneginf(z) != (env.ref2d == 0)
    if mismatch.any():
        x, y = (int(i) for i in np.argwhere(mismatch)[0])
        raise ValueError(f"logits must be -inf exactly where env.ref is 0, got {z[x, y]!r} at "
                         f"context {x}, response {y} where env.ref is {env.ref2d[x, y]!r}")
    return _engine.kernel_array(log_softmax(z, axis=1))


def draw_batch(env: Bandit, objective, logits, data: PairData | None = None, *, batch_size: int,
               seed: int = 0, **estimator) -> Batch:
    """Draw the empirical measure of one sampled step at the tabular softmax policy ``logits``.

    The same draw that :func:`coverage_sim.sampled_gradient` makes with the same arguments.

    Args:
      env: the bandit.
      objective: an :class:`~coverage_sim.objectives.Objective` or its name.
      logits: policy logits shaped like ``env.ref`` (``-inf`` exactly where ``env.ref`` is 0).
      data: offline :class:`~coverage_sim.data.PairData` for objectives that need it.
      batch_size: pairs (offline), groups (online, rlhf) or responses (best_of_n, awr) per batch.
      seed: seed of the sampling stream (:func:`sampling_stream`).
      **estimator: :class:`Estimator` fields.

    Returns:
      A :class:`Batch`.

    Examples:
      >>> import coverage_sim as cs
      >>> env = cs.Bandit(reward=[1.0, 0.0, -1.0], ref=[0.5, 0.3, 0.2])
      >>> b = cs.draw_batch(env, "rlhf", env.ref * 0, batch_size=4, group_size=3)
      >>> b.sample.shape, b.samples, b.queries
      ((12,), 12, 12)
    """
    objective, batch_size, est = prepare(env, objective, data, batch_size, estimator)
    lp = logits_to_logp(env, logits)
    terms, plan = compile_plan(env, objective, data, est, batch_size)
    buf = _s.draw_one(lp, _engine.kernel_array(env.ref_logp2d), terms, plan, sampling_stream(seed))
    return _batch_from_buffers(buf, est)


def population_batch(env: Bandit, objective, logits, data: PairData | None = None, *,
                     min_reward_gap: float = 0.0, **estimator) -> Batch:
    """The population itself as an explicit measure, with its exact weights.

    Pairs: every nonzero entry of the objective's pair weights ``W`` (offline data, the exact
    best-vs-worst law of iterative DPO, or ``2 rho pi_i pi_j P_ij`` online, truncated at
    ``min_reward_gap``), in ``(x, winner, loser)`` order; responses: every nonzero entry of the linear
    term ``C``; policy samples (objectives with a sampled score or KL term): every ``(x, y)`` with
    weight ``rho(x) pi(y|x)``, advantage ``reward_coef R - kl_coef k`` (``k`` only when the KL
    estimate sits in the reward) and ``pi_old = pi``. Baselines need groups and are not applied.
    XPO's pairs: ``rho (pi_i pi_ref_j P_ij + pi_ref_i pi_j (1 - P_ji))``; Nash-MD's samples: every
    ``(x, y)`` with weight ``rho pi`` and advantage ``E_{y' ~ pi_mix} P(y > y') - 1/2``; unpaired
    examples: every nonzero example mass, and KTO's mismatched pairs its exact mismatched law.

    :func:`coverage_sim.batch_gradient` on it is then the exact expectation of the estimator's
    integrand: equal to :func:`coverage_sim.gradient` for the unbiased estimators, and the exact mean
    of the biased ones whose bias does not come from a group (a KL estimator in the loss or reward).

    Args: as :func:`draw_batch` (``pairs`` must be ``"all"`` or ``"disjoint"``), plus
      min_reward_gap: truncation of the online pairs (as the estimator option).

    Returns:
      A :class:`Batch` (``samples = queries = 0``).

    Examples:
      >>> import numpy as np, coverage_sim as cs
      >>> env = cs.Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5])
      >>> float(cs.population_batch(env, "online_dpo", np.zeros(2)).pair_weight.sum())
      1.0
    """
    if min_reward_gap:
        estimator = {**estimator, "min_reward_gap": min_reward_gap}
    objective, _, est = prepare(env, objective, data, 1, estimator)
    if est.pairs == "best_worst":
        raise ValueError("population_batch: pairs='best_worst' has no pi x pi population measure; "
                         "allowed: 'all', 'disjoint'")
    lp = logits_to_logp(env, logits)
    pi = np.exp(lp)
    terms = objective.terms(env, data, lp)
    codes, W, P, C, kl_coef, reward_coef, R, rho = (terms[0], terms[3], terms[4], terms[9],
                                                     terms[10], terms[11], terms[12], terms[13])
    n_ctx, k = lp.shape
    empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0)
    px = pw = pl = empty_i
    pwt = empty_f
    if codes.size:
        if terms[2] == _engine.ONLINE:
            P = P * truncation_mask(objective.reward_for(env), est.min_reward_gap or 0.0)
            W = 2.0 * rho[:, None, None] * pi[:, :, None] * pi[:, None, :] * P
        elif terms[2] == _engine.ONLINE_REF:
            ref = env.ref2d
            W = rho[:, None, None] * (pi[:, :, None] * ref[:, None, :] * P
                                      + ref[:, :, None] * pi[:, None, :]
                                      * (1.0 - P.transpose(0, 2, 1)))
        px, pw, pl = (a.astype(np.int64) for a in np.nonzero(W))
        pwt = W[px, pw, pl]
    lx, ly = (a.astype(np.int64) for a in np.nonzero(C))
    lwt = C[lx, ly]
    sx = sy = empty_i
    swt = sadv = slp = empty_f
    if (est.kl_estimator is not None and not objective.unpaired
            and (objective.name == "rlhf" or est.kl_estimator != "exact")):
        mass = rho[:, None] * pi
        sx, sy = (a.astype(np.int64) for a in np.nonzero(mass))
        swt = mass[sx, sy]
        sadv = reward_coef * R[sx, sy]
        if est.kl_estimator != "exact" and est.kl_in == "reward":
            g = lp[sx, sy] - env.ref_logp2d[sx, sy]
            sadv = sadv - kl_coef * np.array([_s.kl_value_grad(KL_ESTIMATORS[est.kl_estimator],
                                                               float(v))[0] for v in g])
        slp = lp[sx, sy]
    if terms[19] == _engine.NASH_MD:
        mass = rho[:, None] * pi
        sx, sy = (a.astype(np.int64) for a in np.nonzero(mass))
        swt = mass[sx, sy]
        mix = np.zeros((n_ctx, k))
        _s._mixture_rows(lp, _engine.kernel_array(env.ref_logp2d), terms[20][1], rho, mix)
        win = np.einsum("xij,xj->xi", P, mix)
        sadv = win[sx, sy] - 0.5
        slp = lp[sx, sy]
    unpaired = {}
    if objective.unpaired:
        U, M = terms[17], terms[18]
        ux, uy = (a.astype(np.int64) for a in np.nonzero(U[0]))
        vx, vy = (a.astype(np.int64) for a in np.nonzero(U[1]))
        mx, my = (a.astype(np.int64) for a in np.nonzero(M))
        unpaired = dict(unpaired_context=np.concatenate([ux, vx]),
                        unpaired_response=np.concatenate([uy, vy]),
                        unpaired_desirable=np.concatenate([np.ones(ux.size, np.int64),
                                                           np.zeros(vx.size, np.int64)]),
                        unpaired_weight=np.concatenate([U[0][ux, uy], U[1][vx, vy]]),
                        mismatched_context=mx, mismatched_response=my,
                        mismatched_weight=M[mx, my])
    return Batch(pair_context=px, pair_winner=pw, pair_loser=pl, pair_weight=pwt,
                 response_context=lx, response=ly, response_weight=lwt, sample_context=sx,
                 sample=sy, sample_weight=swt, sample_advantage=sadv, sample_logp_old=slp,
                 samples=0, queries=0, estimator=est, **unpaired)


def truncation_mask(reward2d: np.ndarray, gap: float) -> np.ndarray:
    """``(X, K, K)`` indicator ``|r_i - r_j| >= gap`` (all ones for ``gap = 0``)."""
    r = np.asarray(reward2d)
    return (np.abs(r[:, :, None] - r[:, None, :]) >= gap).astype(np.float64)


# ------------------------------------------------------------------------------------------------
# finite-data protocols
# ------------------------------------------------------------------------------------------------

def group_pairs(env: Bandit, behavior, n_groups: int, group_size: int, *, pairs: str = "all",
                min_reward_gap: float = 0.0, labels="deterministic", reward=None,
                label_noise: float = 0.0, seed: int = 0) -> PairData:
    """Finite offline data from groups of responses: Tajwar et al.'s protocol (arXiv 2404.14367).

    ``n_groups`` groups, context ``x ~ rho``, ``group_size`` responses ``y ~ behavior(.|x)``; pairs
    within a group by ``pairs`` (``"all"``: all ``G(G-1)/2``, ``"disjoint"``, ``"best_worst"``:
    highest vs lowest labelling reward), pairs whose labelling rewards differ by less than
    ``min_reward_gap`` dropped (Tajwar et al.'s ``reward_threshold``), each kept pair labelled by one
    Bernoulli draw from ``labels`` (``"deterministic"``: the higher reward wins, ties by a fair coin).
    The draws are those of the sampled online estimator (:mod:`coverage_sim._sampled`).

    Weights are counts divided by the number of *kept* pairs: the dropped pairs renormalise, as
    :class:`~coverage_sim.data.PairData` is a probability law (so minimising on it is the mean loss
    over kept pairs, as a trainer that filters pairs does).

    Tajwar et al.'s offline data at one call: ``group_pairs(env, env.ref, 100, 10,
    min_reward_gap=0.2)`` (100 states x 10 responses, all 45 pairs, deterministic labels).

    Args:
      env: the bandit.
      behavior: the behaviour policy, shaped like ``env.ref``, zero wherever ``env.ref`` is 0.
      n_groups: number of groups (prompts / states), >= 1.
      group_size: responses per group, >= 2.
      pairs: ``"all"``, ``"disjoint"`` or ``"best_worst"``.
      min_reward_gap: minimum labelling-reward gap of a kept pair, >= 0.
      labels: ``"deterministic"``, ``"bradley_terry"`` or an explicit preference array (see
        :func:`coverage_sim.preferences.preference_probs`).
      reward: optional proxy reward for labelling and the gap (default the gold reward).
      label_noise: label flip rate in [0, 0.5].
      seed: seed of the sampling stream.

    Returns:
      :class:`~coverage_sim.data.PairData` with ``n`` = kept pairs and ``behavior`` = ``behavior``.

    Raises:
      ValueError: bad arguments, or no pair survives the gap filter.

    Examples:
      >>> import coverage_sim as cs
      >>> env = cs.Bandit(reward=[1.0, 0.5, 0.0], ref=[0.4, 0.3, 0.3])
      >>> d = cs.group_pairs(env, env.ref, n_groups=5, group_size=4)
      >>> d.n, float(d.weights.sum())
      (30, 1.0)
    """
    mu = _check_sampler(env, behavior, "behavior")
    n_groups = check_int(n_groups, "n_groups", minimum=1)
    group_size = check_int(group_size, "group_size", minimum=2)
    check_choice(pairs, "pairs", PAIRINGS)
    gap = check_positive(min_reward_gap, "min_reward_gap", allow_zero=True)
    P = np.ascontiguousarray(preference_probs(env, labels=labels, reward=reward,
                                              label_noise=label_noise))  # validates the labels
    rank = env.reward2d if reward is None else env.as2d(reward, "reward")
    n_ctx, k = env.n_contexts, env.n_responses
    ints = np.zeros(_s.N_INTS, dtype=np.int64)
    flts = np.zeros(_s.N_FLTS)
    ints[[_s.I_PAIRS, _s.I_PAIRING, _s.I_GROUP, _s.I_BATCH, _s.I_LIN_N]] = (
        _s.PAIRS_ONLINE, PAIRINGS[pairs], group_size, n_groups, 1)
    flts[_s.F_GAP] = gap
    ints[_s.I_LABEL], flts[_s.F_NOISE] = label_model(labels, label_noise)
    t = list(_engine.empty_terms(n_ctx, k))
    t[2], t[4], t[13] = _engine.ONLINE, P, env.context_weights
    terms = _engine.compile_terms(t)
    plan = (ints, flts, _engine.kernel_array(rank), np.zeros((n_ctx, k)), np.zeros((n_ctx, k)),
            np.zeros(n_ctx), np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0),
            np.zeros(0, dtype=np.int64))
    with np.errstate(divide="ignore"):
        lp = _engine.kernel_array(np.log(mu))
    buf = _s.draw_one(lp, _engine.kernel_array(env.ref_logp2d), terms, plan,
                      sampling_stream(seed))
    kept = int(buf[12][_s.C_PAIRS])
    if kept == 0:
        raise ValueError(f"no pair has a labelling-reward gap >= min_reward_gap={min_reward_gap!r} "
                         f"in {n_groups} groups of {group_size}; lower min_reward_gap or draw "
                         "more groups")
    W = np.zeros((n_ctx, k, k))
    np.add.at(W, (buf[0][:kept], buf[1][:kept], buf[2][:kept]), 1.0 / kept)
    W /= W.sum()
    label_name = labels if isinstance(labels, str) else "custom"
    source = (f"{n_groups} groups of {group_size}, pairs={pairs}, min_reward_gap={gap:g} "
              f"(seed={seed!r})")
    return PairData(weights=W, shape=env.shape, behavior=mu, n=kept, labels=label_name,
                    source=source)


# ------------------------------------------------------------------------------------------------
# training on sampled batches (called by coverage_sim.train)
# ------------------------------------------------------------------------------------------------

def check_training_options(objective: Objective, data, batch_size, reuse, estimator):
    """Validated ``(batch_size, reuse, estimator)`` of a sampled run, or ``(None, 1, None)``.

    ``batch_size=None`` is exact training, where ``reuse`` must be 1 and ``estimator`` None.
    """
    reuse = check_int(reuse, "reuse", minimum=1)
    if batch_size is None:
        if reuse != 1 or estimator is not None:
            what = f"reuse={reuse!r}" if reuse != 1 else f"estimator={estimator!r}"
            raise ValueError(f"{what} applies to sampled training; pass batch_size (an integer "
                             ">= 1), or leave it out for exact training")
        return None, 1, None
    batch_size = check_batch_size(batch_size)
    est = Estimator.coerce(estimator).resolve(objective)
    if objective.needs_data and data is None:
        raise ValueError(f"data is required for objective {objective.name!r}; build it with "
                         "coverage_sim.offline_pairs or coverage_sim.group_pairs")
    if objective.refresh_every is not None and reuse != 1:
        raise ValueError(f"reuse={reuse!r}: iterative_dpo takes steps_per_iteration steps on each "
                         "drawn dataset; set that objective parameter instead (reuse must be 1)")
    return batch_size, reuse, est


def _schedule(objective: Objective, reuse: int) -> tuple[int, bool]:
    """Steps per drawn batch and whether the optimiser restarts with each batch."""
    if objective.refresh_every is not None:
        return objective.refresh_every, True
    return reuse, False


def train_sampled(env, objective, data, policy, theta, opt, lr, adam, steps, rec, batch_size,
                  reuse, est, seed):
    """One sampled run: updates ``theta`` in place and returns the record buffers
    ``(out_lp, out_loss, out_samples, out_queries, out_rlp)``; ``out_rlp`` is TR-DPO's recorded
    log-reference (``objective.ref_sync``), else None.

    Engine policies run the fused numba loop :func:`coverage_sim._sampled.run_one_sampled`; other
    policies (e.g. :class:`coverage_sim.sequences.AutoregressiveTabular`) run the same draws and
    batch gradients in a Python loop over their ``logp``/``grad``, with the engine's GD/Adam update.
    """
    n_ctx, k = env.n_contexts, env.n_responses
    terms, plan = compile_plan(env, objective, data, est, batch_size)
    rlp = _engine.kernel_array(env.ref_logp2d)
    state = sampling_stream(seed)
    period, reset = _schedule(objective, reuse)
    b1, b2, eps = adam
    out_lp = np.full((rec.size, n_ctx, k), np.nan)
    out_loss = np.full(rec.size, np.nan)
    out_samples = np.zeros(rec.size, dtype=np.int64)
    out_queries = np.zeros(rec.size, dtype=np.int64)
    tau, alpha = objective.ref_sync or (0, 1.0)
    out_rlp = np.full((rec.size if tau else 0, n_ctx, k), np.nan)
    if getattr(policy, "kind", None) in (_engine.TABULAR, _engine.LOGLINEAR):
        _s.run_one_sampled(theta, policy.kind, policy.features_for(env), policy.base_for(env), rlp,
                           terms, plan, state, opt, lr, b1, b2, eps, steps, period, reset, rec,
                           out_lp, out_loss, out_samples, out_queries, tau, alpha, out_rlp)
        return out_lp, out_loss, out_samples, out_queries, (out_rlp if tau else None)
    if tau:
        raise ValueError(f"sync_ref_model=True (TR-DPO) needs an engine policy (TabularSoftmax, "
                         f"LogLinear); got policy {policy!r}")
    if opt == _engine.NPG:
        raise ValueError(f"optimizer='npg' is only available for engine policies (TabularSoftmax, "
                         f"LogLinear), got policy {policy!r}; use 'adam' or 'gd'")
    ints, flts = plan[0], plan[1]
    static = _s.build_static(terms[13], plan)
    ws = _s.workspace(ints, n_ctx, k)
    buf = _s.alloc_buffers(ints)
    m, v = np.zeros(theta.size), np.zeros(theta.size)
    no_features = np.zeros((n_ctx, k, 0))
    samples = queries = seg_start = nxt = 0
    for s in range(steps + 1):
        lp = _engine.kernel_array(env.as2d(policy.logp(env, theta), "logp"))
        pi = np.exp(lp)
        recording = nxt < rec.size and rec[nxt] == s
        if s == steps and not recording:
            break
        if recording:
            out_samples[nxt], out_queries[nxt] = samples, queries
        if s % period == 0:
            _s.draw_batch(terms, plan, static, lp, pi, rlp, state, ws, buf)
            samples += int(buf[12][_s.C_SAMPLES])
            queries += int(buf[12][_s.C_QUERIES])
            if reset:
                m[:], v[:], seg_start = 0.0, 0.0, s
        grad_lp = np.zeros((n_ctx, k))
        loss = _s.batch_loss_grad(terms, ints[_s.I_KL_EST], ints[_s.I_KL_IN], flts[_s.F_CLIP], lp,
                                  pi, rlp, buf, grad_lp, recording)
        if recording:
            out_lp[nxt], out_loss[nxt] = lp, loss
            nxt += 1
        if s == steps:
            break
        if np.isnan(grad_lp).any():
            theta[:] = np.nan
            break
        g = np.ascontiguousarray(policy.grad(env, theta, env.like_ref(grad_lp)), dtype=np.float64)
        _engine.apply_update(opt, theta, g, m, v, s - seg_start + 1, lr, b1, b2, eps,
                             _engine.TABULAR, no_features, lp, grad_lp, terms[13])
        if np.isnan(theta).any() or np.isposinf(theta).any():
            theta[:] = np.nan  # as the exact generic loop: _finish reports the divergence
            break
    return out_lp, out_loss, out_samples, out_queries, None


def _pad_stack(arrays: list[np.ndarray]) -> np.ndarray:
    """Stack 1-D arrays of different lengths, zero-padded (zero masses are never drawn)."""
    out = np.zeros((len(arrays), max(a.shape[0] for a in arrays)), dtype=arrays[0].dtype)
    for b, a in enumerate(arrays):
        out[b, :a.shape[0]] = a
    return out


def train_many_sampled(env_list, obj_list, data_list, policy, thetas, features, bases, rlps, opt,
                       lrs, adam, steps, rec, batch_size, reuse, est_list, seed, ref_taus,
                       ref_alphas, out_rlp, threads=1):
    """Batched sampled runs (problem ``b`` with the sampling stream of ``seed + b``): updates
    ``thetas`` in place and returns ``(out_lp, out_loss, out_samples, out_queries)``; TR-DPO's
    references (``ref_taus`` (B,) > 0 for those that move, mixing ``ref_alphas`` (B,)) are recorded
    into ``out_rlp`` (B, R or 0, X, K). Whole problems run on ``threads`` threads."""
    periods = {o.refresh_every for o in obj_list}
    if len(periods) > 1:
        raise ValueError(f"iterative_dpo problems batched together must share steps_per_iteration, "
                         f"got {sorted(periods)}")
    compiled = [compile_plan(e, o, d, est, batch_size)
                for e, o, d, est in zip(env_list, obj_list, data_list, est_list)]
    n = len(compiled)
    terms = _engine.stack_terms([c[0] for c in compiled])
    plans = [np.ascontiguousarray(np.stack([c[1][i] for c in compiled])) for i in range(6)]
    plans += [_pad_stack([c[1][i] for c in compiled]) for i in (6, 7, 8, 9)]
    states = np.stack([sampling_stream(seed + b) for b in range(n)])
    period, reset = _schedule(obj_list[0], reuse)
    n_ctx, k = env_list[0].n_contexts, env_list[0].n_responses
    out_lp = np.empty((n, rec.size, n_ctx, k))
    out_loss = np.empty((n, rec.size))
    out_samples = np.zeros((n, rec.size), dtype=np.int64)
    out_queries = np.zeros((n, rec.size), dtype=np.int64)
    b1, b2, eps = adam
    _s.run_batch_sampled(thetas, policy.kind, features, bases, rlps, terms, *plans, states, opt,
                         lrs, b1, b2, eps, steps, period, reset, rec, out_lp, out_loss,
                         out_samples, out_queries, ref_taus, ref_alphas, out_rlp, threads)
    return out_lp, out_loss, out_samples, out_queries
