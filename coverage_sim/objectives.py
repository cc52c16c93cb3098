"""The objective catalogue: offline pairwise, non-contrastive offline, and online objectives.

Every objective is an exact *population* loss over a (contextual) bandit, with an exact gradient with
respect to ``log pi(y|x)`` (taken as free coordinates; a policy pulls it back to its parameters). It is
assembled from a few shared terms (see :mod:`coverage_sim._engine`): a pairwise term over labelled pair
weights (offline data, or pairs drawn from the current policy held fixed in the gradient), a linear
log-likelihood term, a KL term and an expected-reward term. The per-pair losses are defined once in
:mod:`coverage_sim.losses` and shared by every backend.

Use :func:`objective` to build one by name; :data:`OBJECTIVES` lists them with their paper and convention.
TRL's ``DPOTrainer`` options apply to every offline pairwise objective, with TRL's names and defaults:
a list of loss types with ``loss_weights`` (``objective(["sigmoid", "sft"], loss_weights=[1, 1])``; the
presets ``rpo`` and ``mpo``), ``f_divergence_type`` / ``f_alpha_divergence_coef``, ``use_weighting``
(WPO), ``ld_alpha`` (LD-DPO) and ``sync_ref_model`` / ``ref_model_mixup_alpha`` /
``ref_model_sync_steps`` (TR-DPO, applied by :func:`coverage_sim.train`).

Examples:
  >>> import coverage_sim as cs
  >>> dpo = cs.objective("sigmoid", beta=0.1)
  >>> dpo.name, dpo.params["beta"]
  ('sigmoid', 0.1)
  >>> float(dpo.pair_loss(0.0, 0.0, 0.0, 0.0))  # -log sigma(0)
  0.6931471805599453
  >>> rpo = cs.objective(["sigmoid", "sft"], loss_weights=[1.0, 1.0])
  >>> rpo.name, rpo.loss_types
  ('sigmoid+sft', ('sigmoid', 'sft'))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping

import numpy as np

from coverage_sim import _engine
from coverage_sim import _pair_kernels as _pk
from coverage_sim._dpo_fast import dpo_fast_precompute
from coverage_sim._validation import (as_float_array, check_beta, check_choice, check_finite,
                                      check_in_range, check_int, check_positive, check_real)
from coverage_sim.best_of_n import best_of_n_policy, best_worst_of_n_pairs
from coverage_sim.data import PairData, UnpairedData, unpaired_from_pairs
from coverage_sim.env import Bandit
from coverage_sim.losses import (DIVERGENCE_DEFAULTS, F_DIVERGENCE_TYPES, PAIR_LOSSES,
                                 get_pair_loss, pair_loss)
from coverage_sim.preferences import preference_probs

__all__ = ["Objective", "ObjectiveSpec", "OBJECTIVES", "DPO_OPTIONS", "objective"]

_FAST_CODES = (_pk.SIGMOID, _pk.ROBUST, _pk.SIGMOID_NORM)
#: The KTO-trainer objectives: unpaired binary feedback (UnpairedData).
_UNPAIRED = ("kto", "apo_zero_unpaired")

#: TRL ``DPOConfig`` options that every offline pairwise objective takes, with TRL's defaults.
DPO_OPTIONS: Mapping[str, object] = MappingProxyType({
    **DIVERGENCE_DEFAULTS, "use_weighting": False, "ld_alpha": None, "sync_ref_model": False,
    "ref_model_mixup_alpha": 0.6, "ref_model_sync_steps": 512})


@dataclass(frozen=True)
class ObjectiveSpec:
    """Registry entry: what an objective needs, its defaults, paper and convention."""

    name: str
    family: str  # "offline pairwise" | "offline pointwise" | "online" | "hybrid"
    paper: str
    arxiv: str
    convention: str
    defaults: Mapping[str, object]
    needs_data: bool
    pair_loss: str | None = None  # fixed pairwise loss, or None when chosen by the loss_type param
    validate: Callable[[dict], None] | None = None
    loss_types: tuple[str, ...] | None = None  # fixed components of a combined loss (rpo, mpo)


def _check_beta(p):
    p["beta"] = check_positive(p["beta"], "beta")


def _check_loss_type(p, allowed=None):
    allowed = tuple(PAIR_LOSSES) if allowed is None else allowed
    check_choice(p["loss_type"], "loss_type", allowed)


def _check_labels(p):
    if isinstance(p["labels"], str):
        check_choice(p["labels"], "labels", ("bradley_terry", "deterministic"))
    p["label_noise"] = check_in_range(p["label_noise"], "label_noise", 0.0, 0.5)


_ONLINE_LABELS = dict(labels="bradley_terry", label_noise=0.0, reward=None)

OBJECTIVES: dict[str, ObjectiveSpec] = {}


def _register(spec: ObjectiveSpec):
    OBJECTIVES[spec.name] = spec


for _name, _loss in PAIR_LOSSES.items():
    _register(ObjectiveSpec(
        name=_name, family="offline pairwise", paper=_loss.paper, arxiv=_loss.arxiv,
        convention=_loss.convention, defaults={**_loss.defaults, **DPO_OPTIONS},
        needs_data=True, pair_loss=_name))


def _combined_defaults(names) -> dict:
    """Union of the components' defaults; a parameter whose defaults disagree (label_smoothing of
    exo_pair vs the others) is None: each component then keeps its own default."""
    out: dict = {}
    for name in names:
        for key, value in PAIR_LOSSES[name].defaults.items():
            out[key] = value if out.get(key, value) == value else None
    return {**out, "loss_weights": None, **DPO_OPTIONS}


_register(ObjectiveSpec(
    name="rpo", family="offline pairwise",
    paper="Pang et al. 2024, Iterative Reasoning Preference Optimization (RPO: DPO + NLL)",
    arxiv="2404.19733",
    convention=("TRL loss_type ['sigmoid', 'sft'] with loss_weights [1.0, 1.0] (TRL's paper index: "
                "'alpha in the paper, recommended value is 1.0'): -log sigma(beta h) - "
                "alpha log pi(y_w|x) per pair. The paper's NLL is length-normalised; for one-token "
                "responses it is -log pi(y_w|x). One offline round (the paper iterates)."),
    defaults={**_combined_defaults(("sigmoid", "sft")), "loss_weights": (1.0, 1.0)},
    needs_data=True, loss_types=("sigmoid", "sft")))
_register(ObjectiveSpec(
    name="mpo", family="offline pairwise",
    paper="Wang et al. 2024, Mixed Preference Optimization (MPO)", arxiv="2411.10442",
    convention=("TRL loss_type ['sigmoid', 'bco_pair', 'sft'] with loss_weights [0.8, 0.2, 1.0] "
                "(TRL's docs: 'as used in the MPO paper', w_p L_p + w_q L_q + w_g L_g): DPO "
                "preference loss + BCO quality loss + SFT generation loss."),
    defaults={**_combined_defaults(("sigmoid", "bco_pair", "sft")),
              "loss_weights": (0.8, 0.2, 1.0)},
    needs_data=True, loss_types=("sigmoid", "bco_pair", "sft")))

_register(ObjectiveSpec(
    name="best_of_n", family="offline pointwise",
    paper="Tajwar et al. 2024, filtered behaviour cloning / Best-of-N distillation", arxiv="2404.14367",
    convention=("L = -E_x sum_y q_n(y|x) log pi(y|x), with q_n the exact distribution of the "
                "highest-reward of n i.i.d. draws from the data's behaviour policy (ties pooled)."),
    defaults=dict(n=10, reward=None), needs_data=True,
    validate=lambda p: p.update(n=check_int(p["n"], "n", minimum=1))))
_register(ObjectiveSpec(
    name="awr", family="offline pointwise",
    paper="Peng et al. 2019, advantage-weighted regression (Tajwar et al. 2024's variant)",
    arxiv="1910.00177",
    convention=("L = -E_x sum_y mu(y|x) exp(r(x,y)/beta) log pi(y|x), mu the data's behaviour policy; "
                "weights are not normalised, as in Tajwar et al.'s bandit code."),
    defaults=dict(beta=1.0, reward=None), needs_data=True, validate=_check_beta))
_register(ObjectiveSpec(
    name="rlhf", family="online",
    paper="Ouyang et al. 2022 / Rafailov et al. 2023 (KL-regularised RLHF)", arxiv="2203.02155",
    convention=("L = -E_x[E_{y~pi} r(x,y) - beta KL(pi||pi_ref)]; exact policy gradient "
                "pi (a - E_pi a), a = r - beta log(pi/pi_ref). `reward` may be a proxy r_hat "
                "(RLHF with a reward model); default the gold reward."),
    defaults=dict(beta=0.1, reward=None), needs_data=False, validate=_check_beta))


def _check_online(p, loss_types=None):
    _check_beta(p)
    _check_loss_type(p, loss_types)
    _check_labels(p)


_register(ObjectiveSpec(
    name="online_dpo", family="online",
    paper="Guo et al. 2024, direct alignment from online AI feedback", arxiv="2402.04792",
    convention=("Pairs (y, y') ~ pi_t x pi_t with the sampler held fixed in the gradient "
                "(semi-gradient), labels from `labels` on `reward` (gold by default: Bradley-Terry "
                "or deterministic, as TRL's OnlineDPOTrainer judge), per-pair loss `loss_type` "
                "(TRL names, default sigmoid)."),
    defaults=dict(beta=0.1, loss_type="sigmoid", **_ONLINE_LABELS), needs_data=False,
    validate=_check_online))
_register(ObjectiveSpec(
    name="online_ipo", family="online",
    paper="Calandriello et al. 2024, online IPO = self-play Nash-MD", arxiv="2403.08635",
    convention=("Online DPO with the IPO loss (h - 1/(2 beta))^2 (TRL convention: beta is Azar's tau). "
                "Its fixed point is the regularised Nash equilibrium beta log(pi/pi_ref) = P(y > pi) + c."),
    defaults=dict(beta=0.1, **_ONLINE_LABELS), needs_data=False, pair_loss="ipo",
    validate=lambda p: (_check_beta(p), _check_labels(p))))
_register(ObjectiveSpec(
    name="iterative_dpo", family="online",
    paper="Xiong et al. 2023 / Dong et al. 2024 (RLHF Workflow), iterative DPO", arxiv="2405.07863",
    convention=("Every `steps_per_iteration` steps, pairs are rebuilt as the exact best-vs-worst of n "
                "draws from the current policy (`max_min`, deterministic labels by `reward`), then "
                "the policy is trained on them with a fresh optimiser; the reference stays pi_0."),
    defaults=dict(beta=0.1, n=8, steps_per_iteration=100, loss_type="sigmoid", reward=None),
    needs_data=False,
    validate=lambda p: (_check_beta(p), _check_loss_type(p),
                        p.update(n=check_int(p["n"], "n", minimum=2),
                                 steps_per_iteration=check_int(p["steps_per_iteration"],
                                                               "steps_per_iteration", minimum=1)))))
_register(ObjectiveSpec(
    name="hypo", family="hybrid",
    paper="Song et al. 2024, hybrid preference optimisation (HyPO)", arxiv="2406.01462",
    convention=("L = L_DPO(offline data) + lam * E_x KL(pi(.|x) || pi_ref(.|x)); the KL is on the "
                "policy's own (unlabelled) samples, here with its exact gradient."),
    defaults=dict(beta=0.1, lam=0.1), needs_data=True, pair_loss="sigmoid",
    validate=lambda p: (_check_beta(p), p.update(lam=check_positive(p["lam"], "lam",
                                                                     allow_zero=True)))))


def _check_vpo(p):
    _check_beta(p)
    p["alpha"] = check_positive(p["alpha"], "alpha", allow_zero=True)
    check_choice(p["mode"], "mode", ("online", "offline"))
    _check_labels(p)


_register(ObjectiveSpec(
    name="vpo", family="online",
    paper="Cen et al. 2024, value-incentivised preference optimisation (VPO); Zhang et al. 2024 (SELM)",
    arxiv="2405.19320",
    convention=("online: L = L_DPO(pairs ~ pi_t x pi_t) + alpha beta E_{x, y~pi_ref} log pi(y|x) "
                "(optimism, pi_cal = pi_ref as in SELM); offline: L = L_DPO(data) - alpha beta "
                "E_{(x,y_w)~data} log pi(y_w|x) (pessimism, pi_cal = the chosen responses). "
                "alpha = 0 is exactly DPO."),
    defaults=dict(beta=0.1, alpha=1e-3, mode="online", **_ONLINE_LABELS), needs_data=False,
    pair_loss="sigmoid", validate=_check_vpo))


def _check_kto(p):
    _check_beta(p)
    for key in ("desirable_weight", "undesirable_weight"):
        p[key] = check_positive(p[key], key)


_KTO_PAPER = "Ethayarajh et al. 2024, KTO: Model Alignment as Prospect Theoretic Optimization"
_register(ObjectiveSpec(
    name="kto", family="offline pointwise", paper=_KTO_PAPER, arxiv="2402.01306",
    convention=(
        "TRL KTOTrainer loss_type 'kto' (eq. 7): desirable (x, y): 1 - sigma(beta (u - z0)), "
        "undesirable: 1 - sigma(beta (z0 - u)), u = log pi(y|x) - log pi_ref(y|x), weighted by "
        "desirable_weight / undesirable_weight and averaged over all examples. z0 is TRL's "
        "estimator's population value: the mean log-ratio over mismatched pairs (x_i, y_{i-1}), "
        "which for i.i.d. examples is E_{x~rho_D, y~m_D} log(pi/pi_ref)(y|x) with m_D the data's "
        "pooled response marginal (UnpairedData.mismatched), clamped at 0 and held fixed in the "
        "gradient (TRL: .detach().clamp(min=0); the clamp here acts on the population mean, TRL's "
        "on each batch mean). In one context z0 = KL(m_D || pi_ref) - KL(m_D || pi): it is "
        "KL(pi || pi_ref) only if m_D = pi. Data: UnpairedData, or PairData unpaired as TRL does."),
    defaults=dict(beta=0.1, desirable_weight=1.0, undesirable_weight=1.0), needs_data=True,
    validate=_check_kto))
_register(ObjectiveSpec(
    name="apo_zero_unpaired", family="offline pointwise",
    paper="D'Oosterlinck et al. 2024, Anchored Preference Optimization (APO-zero, unpaired)",
    arxiv="2408.06266",
    convention=("TRL KTOTrainer loss_type 'apo_zero_unpaired': desirable 1 - sigma(beta u), "
                "undesirable sigma(beta u), weighted as KTO; no reference point (TRL does not "
                "compute the KL term for it)."),
    defaults=dict(beta=0.1, desirable_weight=1.0, undesirable_weight=1.0), needs_data=True,
    validate=_check_kto))


def _check_nash_md(p):
    _check_beta(p)
    p["mixture_coef"] = check_in_range(p["mixture_coef"], "mixture_coef", 0.0, 1.0)
    _check_labels(p)


_register(ObjectiveSpec(
    name="nash_md", family="online",
    paper="Munos et al. 2023, Nash Learning from Human Feedback (Nash-MD)", arxiv="2312.00886",
    convention=(
        "TRL NashMDTrainer in population form: y ~ pi_t (held fixed), y' ~ pi_mix with log pi_mix "
        "= normalise(m log pi_ref + (1 - m) log pi_t) (m = mixture_coef, TRL's "
        "GeometricMixtureWrapper mixes logits; for a one-step policy that is this geometric "
        "mixture), P = Pr(y > y') from `labels` (TRL: sigma(r(y) - r(y')), the bradley_terry "
        "default). Loss E_{x, y~pi_t}[beta sg(log pi(y)/pi_ref(y)) log pi(y) - (E_{y'~pi_mix} "
        "P(y > y') - 1/2) log pi(y)]: a REINFORCE step on the preference against the mixture "
        "with baseline 1/2 plus beta times the REINFORCE gradient of KL(pi || pi_ref). Exact for "
        "one-token responses; over whole sequences (SequenceEnv) this is the sequence-level "
        "REINFORCE term, whereas TRL's per-token product sum_t log_ratio_t log p_t drops the "
        "later tokens' ratios from each token's score."),
    defaults=dict(beta=0.1, mixture_coef=0.5, **_ONLINE_LABELS), needs_data=False,
    validate=_check_nash_md))


def _check_xpo(p):
    _check_beta(p)
    _check_loss_type(p, ("sigmoid", "ipo"))
    p["alpha"] = check_positive(p["alpha"], "alpha", allow_zero=True)
    _check_labels(p)


_register(ObjectiveSpec(
    name="xpo", family="online",
    paper="Xie et al. 2024, Exploratory Preference Optimization (XPO)", arxiv="2405.21046",
    convention=(
        "TRL XPOTrainer in population form: one response y ~ pi_t and one y' ~ pi_ref per "
        "context (pi_t held fixed); the chosen one is y when r(y) >= r(y') (labels='deterministic', "
        "TRL's rule, ties to the policy's response) or with probability sigma(r(y) - r(y')) "
        "(labels='bradley_terry'); per-pair loss_type 'sigmoid' or 'ipo' (TRL's unnormalised "
        "(h - 1/(2 beta))^2); plus the exploration term alpha E_{x, y'~pi_ref} log pi(y'|x) "
        "(alpha not multiplied by beta, as in TRL)."),
    defaults=dict(beta=0.1, alpha=1e-5, loss_type="sigmoid", labels="deterministic",
                  label_noise=0.0, reward=None), needs_data=False, validate=_check_xpo))


def _check_dpo_options(p: dict, loss_types: tuple) -> None:
    """Validate TRL's DPOTrainer options in place (``p`` holds them with their defaults)."""
    div = check_choice(p["f_divergence_type"], "f_divergence_type", F_DIVERGENCE_TYPES)
    if div != "reverse_kl" and all(PAIR_LOSSES[n].divergence_scope == "none" for n in loss_types):
        raise ValueError(f"f_divergence_type {div!r} has no effect on {'+'.join(loss_types)}: TRL "
                         "computes it on the raw log-ratios (allowed: 'reverse_kl')")
    p["f_alpha_divergence_coef"] = check_real(p["f_alpha_divergence_coef"],
                                              "f_alpha_divergence_coef")
    for name in loss_types:
        PAIR_LOSSES[name].check_use_weighting(p["use_weighting"])
    p["use_weighting"] = bool(p["use_weighting"])
    if p["ld_alpha"] is not None:
        p["ld_alpha"] = check_in_range(p["ld_alpha"], "ld_alpha", 0.0, 1.0)
    if not isinstance(p["sync_ref_model"], (bool, np.bool_)):
        raise ValueError(f"sync_ref_model must be True or False, got {p['sync_ref_model']!r}")
    p["sync_ref_model"] = bool(p["sync_ref_model"])
    p["ref_model_mixup_alpha"] = check_in_range(p["ref_model_mixup_alpha"],
                                                "ref_model_mixup_alpha", 0.0, 1.0, low_open=True)
    p["ref_model_sync_steps"] = check_int(p["ref_model_sync_steps"], "ref_model_sync_steps",
                                          minimum=1)


def _check_loss_weights(value, n: int) -> tuple:
    try:
        weights = tuple(float(w) for w in value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"loss_weights must be a list of {n} numbers, got {value!r}") from exc
    if len(weights) != n:
        raise ValueError(f"loss_weights must have one weight per loss type ({n}), got {value!r}")
    if not all(np.isfinite(w) and w >= 0 for w in weights) or not any(weights):
        raise ValueError(f"loss_weights must be finite, >= 0 and not all 0, got {value!r}")
    return weights


def _combined_spec(names) -> ObjectiveSpec:
    """The spec of TRL's list-valued loss_type ``names`` (not registered: built on demand)."""
    if isinstance(names, str) or not names:
        raise ValueError(f"loss types must be a non-empty list of names, got {names!r}")
    for n in names:
        if not isinstance(n, str):
            raise ValueError(f"loss types must be names, got {n!r} in {list(names)!r}")
        check_choice(n, "loss_type", PAIR_LOSSES)
    names = tuple(names)
    papers = "; ".join(dict.fromkeys(PAIR_LOSSES[n].paper for n in names))
    return ObjectiveSpec(
        name="+".join(names), family="offline pairwise",
        paper=f"TRL DPOTrainer list-valued loss_type: {papers}", arxiv=PAIR_LOSSES[names[0]].arxiv,
        convention=("sum_c loss_weights[c] * L_c with every component on the same pairs (TRL: "
                    "sum of per_sequence_loss.mean() * loss_weight): " + " | ".join(
                        f"{n}: {PAIR_LOSSES[n].convention}" for n in dict.fromkeys(names))),
        defaults=_combined_defaults(names), needs_data=True, loss_types=names)


def objective(name, **params) -> "Objective":
    """Build an objective by name with validated parameters.

    Args:
      name: a key of :data:`OBJECTIVES`: every TRL DPOTrainer ``loss_type`` (``sigmoid``, ``hinge``,
        ``ipo``, ..., with TRL's parameter names), ``cdpo``/``dpo``/``slic``, ``rpo``, ``mpo``,
        ``best_of_n``, ``awr``, ``kto``, ``apo_zero_unpaired``, ``rlhf``, ``online_dpo``,
        ``online_ipo``, ``iterative_dpo``, ``nash_md``, ``xpo``, ``hypo``, ``vpo``; or a list of
        pairwise loss names, TRL's list-valued ``loss_type``, combined with ``loss_weights``
        (default all 1.0); its name is the names joined by ``+``.
      **params: the objective's parameters; unknown ones are an error. Offline pairwise objectives
        also take TRL's DPOTrainer options :data:`DPO_OPTIONS`. A parameter shared by the
        components of a list (``beta``, ``label_smoothing``, ...) applies to every component that
        takes it; left out, each keeps its own default.

    Returns:
      An :class:`Objective`.

    Raises:
      ValueError: unknown name (the message lists the valid names), unknown or invalid parameter.

    Examples:
      >>> import coverage_sim as cs
      >>> cs.objective("ipo", beta=0.5).params["beta"]
      0.5
      >>> cs.objective("mpo").loss_weights
      (0.8, 0.2, 1.0)
    """
    if isinstance(name, str):
        check_choice(name, "objective", OBJECTIVES)
        spec = OBJECTIVES[name]
    else:
        spec = _combined_spec(name)
    unknown = set(params) - set(spec.defaults)
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} for objective {spec.name!r}; "
                         f"allowed: {sorted(spec.defaults)}")
    full = {**spec.defaults, **params}
    if spec.loss_types is not None:
        full["loss_weights"] = _check_loss_weights(
            (1.0,) * len(spec.loss_types) if full["loss_weights"] is None else full["loss_weights"],
            len(spec.loss_types))
        for comp in dict.fromkeys(spec.loss_types):
            _component_params(full, comp)   # validates
        _check_dpo_options(full, spec.loss_types)
    elif spec.name in PAIR_LOSSES:
        own = get_pair_loss(spec.name).validate_params(
            {k: v for k, v in full.items() if k in PAIR_LOSSES[spec.name].defaults
             or k in DIVERGENCE_DEFAULTS})
        full.update(own)
        _check_dpo_options(full, (spec.name,))
    elif spec.validate is not None:
        spec.validate(full)
    if (spec.pair_loss or spec.loss_types or "loss_type" in full
            or spec.name in _UNPAIRED) and "beta" in full:
        # beta scales a pairwise margin (or KTO's u - z0): too small leaves the loss inert or
        # overflows (IPO)
        full["beta"] = check_beta(full["beta"], "beta")
    if "reward" in full and full["reward"] is not None:
        full["reward"] = check_finite(as_float_array(full["reward"], "reward", ndim=(1, 2)),
                                      "reward")
    return Objective(name=spec.name, params=MappingProxyType(full), spec=spec)


def _component_params(params: Mapping, name: str) -> dict:
    """The validated parameters of pairwise component ``name`` of an objective's ``params``.

    The loss's own parameters (None: the component's default) and, where TRL applies them to this
    loss, the divergence parameters.
    """
    spec = get_pair_loss(name)
    picked = {k: params[k] for k in spec.defaults if params.get(k) is not None}
    if spec.divergence_scope != "none":
        picked.update({k: params[k] for k in DIVERGENCE_DEFAULTS if k in params})
    return spec.validate_params(picked)


@dataclass(frozen=True, eq=False)
class Objective:
    """A population objective with an exact gradient; build it with :func:`objective`."""

    name: str
    params: Mapping[str, object]
    spec: ObjectiveSpec = field(repr=False)

    @property
    def beta(self) -> float | None:
        """The KL strength of the objective (None for objectives without one)."""
        return self.params.get("beta")

    @property
    def needs_data(self) -> bool:
        return self.spec.needs_data or (self.name == "vpo" and self.params["mode"] == "offline")

    @property
    def online(self) -> bool:
        """True when the objective trains on the current policy's own samples."""
        return self.spec.family == "online" and not (self.name == "vpo"
                                                      and self.params["mode"] == "offline")

    @property
    def unpaired(self) -> bool:
        """True for the KTO-trainer objectives, which train on unpaired binary feedback."""
        return self.name in _UNPAIRED

    @property
    def loss_types(self) -> tuple[str, ...]:
        """The pairwise losses (TRL ``loss_type`` names) this objective sums; () for none."""
        if self.spec.loss_types is not None:
            return self.spec.loss_types
        name = self.spec.pair_loss or self.params.get("loss_type")
        return () if name is None else (name,)

    @property
    def loss_weights(self) -> tuple[float, ...]:
        """TRL's ``loss_weights`` of :attr:`loss_types` (all 1.0 for a single loss)."""
        return tuple(self.params.get("loss_weights") or (1.0,) * len(self.loss_types))

    @property
    def pair_loss_name(self) -> str | None:
        """The per-pair loss this objective uses (TRL ``loss_type`` name), if it uses exactly one."""
        return self.loss_types[0] if len(self.loss_types) == 1 else None

    @property
    def refresh_every(self) -> int | None:
        """Steps between rebuilding the pair data from the current policy (iterative DPO)."""
        return self.params.get("steps_per_iteration") if self.name == "iterative_dpo" else None

    @property
    def ref_sync(self) -> tuple[int, float] | None:
        """TR-DPO's ``(ref_model_sync_steps, ref_model_mixup_alpha)`` when ``sync_ref_model``."""
        if not self.params.get("sync_ref_model"):
            return None
        return self.params["ref_model_sync_steps"], self.params["ref_model_mixup_alpha"]

    def pair_params(self, name: str | None = None) -> dict:
        """The validated parameters of pairwise component ``name`` (default: the only one).

        The loss's own parameters and, where TRL applies them to this loss, the divergence
        parameters: what :func:`coverage_sim.losses.pair_loss` takes for this component.

        Examples:
          >>> import coverage_sim as cs
          >>> cs.objective("rpo", beta=0.2).pair_params("sft")
          {'beta': 0.2}
        """
        return _component_params(self.params, name or self.pair_loss_name)

    def pair_loss(self, logp_w, logp_l, ref_logp_w, ref_logp_l):
        """Per-pair loss, elementwise (no reduction), TRL's definition for TRL's names.

        A combined objective returns ``sum_c loss_weights[c] * l_c``. AOT components sort along
        axis 0, as :func:`coverage_sim.losses.pair_loss`.

        Args:
          logp_w, logp_l: log pi of the chosen / rejected responses, any matching shape (numpy
            arrays or torch tensors).
          ref_logp_w, ref_logp_l: the same under the reference policy.

        Returns:
          The per-pair loss, same shape and array type as the inputs.

        Raises:
          ValueError: the objective has no pairwise loss, or uses WPO weights (they need the
            policy's whole distribution: see :func:`coverage_sim.losses.population_loss`).
        """
        if not self.loss_types:
            raise ValueError(f"objective {self.name!r} has no per-pair loss")
        if self.params.get("use_weighting"):
            raise ValueError("use_weighting=True: the WPO weight needs the whole policy, so "
                             "there is no per-pair loss of the four log-probs alone")
        total = 0.0
        for name, weight in zip(self.loss_types, self.loss_weights):
            total = total + weight * pair_loss(name, logp_w, logp_l, ref_logp_w, ref_logp_l,
                                               **self.pair_params(name))
        return total

    def reward_for(self, env: Bandit) -> np.ndarray:
        """The reward this objective optimises or labels with, as ``(X, K)``."""
        reward = self.params.get("reward")
        return env.reward2d if reward is None else env.as2d(reward, "reward")

    def _pair_arrays(self):
        """(codes, prms, loss_weights) of the pairwise components, in kernel layout."""
        names = self.loss_types
        codes = np.array([PAIR_LOSSES[n].code for n in names], dtype=np.int64)
        prms = np.zeros((len(names), _pk.N_PRM))
        for c, name in enumerate(names):
            packed = dict(self.pair_params(name))
            if name in PAIR_LOSSES and self.spec.family == "offline pairwise":
                packed["use_weighting"] = self.params["use_weighting"]
            prms[c] = get_pair_loss(name).pack(packed)
        return codes, prms, np.array(self.loss_weights, dtype=np.float64)

    def _xpo_probs(self, env: Bandit) -> np.ndarray:
        """Pr(the policy's response i beats the reference's response j), (X, K, K)."""
        p = self.params
        if isinstance(p["labels"], str) and p["labels"] == "deterministic":
            r = self.reward_for(env)
            # TRL: chosen_mask = model_scores >= ref_scores, so ties go to the policy's response.
            wins = (r[:, :, None] >= r[:, None, :]).astype(np.float64)
            eps = p["label_noise"]
            return (1.0 - eps) * wins + eps * (1.0 - wins)
        return preference_probs(env, labels=p["labels"], reward=p.get("reward"),
                                label_noise=p["label_noise"]).reshape(
                                    env.n_contexts, env.n_responses, env.n_responses)

    def _unpaired_data(self, data) -> UnpairedData:
        if isinstance(data, PairData):
            return unpaired_from_pairs(data)   # as TRL's KTOTrainer does with paired data
        return data

    def terms(self, env: Bandit, data=None, logp=None, factored: bool = True) -> tuple:
        """Compile the objective on ``env`` (and ``data``) into the engine's term tuple.

        ``logp`` (X, K) is the current policy; only iterative DPO needs it (to draw its pairs).
        ``factored=False`` keeps the dense DPO kernel even when the pair matrix is rank one.
        The layout is documented in :mod:`coverage_sim._engine`.
        """
        n_ctx, k = env.n_contexts, env.n_responses
        if self.needs_data:
            if data is None:
                builder = ("coverage_sim.unpaired_data or coverage_sim.offline_pairs"
                           if self.unpaired else "coverage_sim.offline_pairs")
                raise ValueError(f"data is required for objective {self.name!r}; "
                                 f"build it with {builder}")
            if self.unpaired:
                if not isinstance(data, (UnpairedData, PairData)):
                    raise ValueError(f"data must be an UnpairedData or a PairData for objective "
                                     f"{self.name!r}, got {type(data).__name__}")
                data = self._unpaired_data(data)
                if data.desirable.shape != (n_ctx, k):
                    raise ValueError(f"data has examples of shape {data.desirable.shape}, "
                                     f"expected {(n_ctx, k)} for this environment")
            elif not isinstance(data, PairData):
                raise ValueError(f"data must be a PairData for objective {self.name!r}, got "
                                 f"{type(data).__name__}")
            elif data.weights.shape != (n_ctx, k, k):
                raise ValueError(f"data has pair weights of shape {data.weights.shape}, "
                                 f"expected {(n_ctx, k, k)} for this environment")
        rho = env.context_weights
        t = list(_engine.empty_terms(n_ctx, k))
        # Pointwise objectives keep the empty pair arrays: at tens of thousands of responses (token
        # sequences) an unused (X, K, K) array would not fit in memory.
        t[13] = rho
        p = self.params
        if self.loss_types:
            t[0], t[1], t[14] = self._pair_arrays()
            if self.name == "xpo":
                t[2], t[4] = _engine.ONLINE_REF, self._xpo_probs(env)
                t[9] = -p["alpha"] * rho[:, None] * env.ref2d
            elif self.online and self.name != "iterative_dpo":
                t[2] = _engine.ONLINE
                probs = preference_probs(env, labels=p["labels"], reward=p.get("reward"),
                                         label_noise=p["label_noise"])
                t[4] = probs.reshape(n_ctx, k, k)
            elif self.name == "iterative_dpo":
                if logp is None:
                    logp = env.ref_logp2d
                t[3] = best_worst_of_n_pairs(np.exp(logp), self.reward_for(env), p["n"],
                                             context_weights=rho)
            else:
                t[3] = data.weights
        if self.name == "best_of_n":
            target = best_of_n_policy(_behaviour(data), self.reward_for(env), p["n"])
            t[9] = data.context_weights[:, None] * np.reshape(target, (n_ctx, k))
        elif self.name == "awr":
            t[9] = data.context_weights[:, None] * _behaviour(data) * _awr_weights(
                self.reward_for(env), p["beta"])
        elif self.name == "rlhf":
            t[10], t[11], t[12] = p["beta"], 1.0, self.reward_for(env)
        elif self.name == "hypo":
            t[10] = p["lam"]
        elif self.name == "vpo":
            scale = p["alpha"] * p["beta"]
            if p["mode"] == "online":
                t[9] = -scale * rho[:, None] * env.ref2d
            else:
                t[9] = scale * data.chosen.reshape(n_ctx, k)
        elif self.unpaired:
            t[15] = _pk.KTO if self.name == "kto" else _pk.APO_ZERO_UNPAIRED
            t[16] = np.array([p["beta"], p["desirable_weight"], p["undesirable_weight"]])
            t[17] = np.stack([data.desirable, data.undesirable])
            if self.name == "kto":
                t[18] = _kto_mismatched(env, data)
        elif self.name == "nash_md":
            t[19], t[20] = _engine.NASH_MD, np.array([p["beta"], p["mixture_coef"]])
            t[4] = preference_probs(env, labels=p["labels"], reward=p.get("reward"),
                                    label_noise=p["label_noise"]).reshape(n_ctx, k, k)
        codes, prms, weights = t[0], t[1], t[14]
        if (t[2] == _engine.OFFLINE and codes.size == 1 and codes[0] in _FAST_CODES
                and prms[0, _pk.P_DIVERGENCE] == _pk.REVERSE_KL
                and prms[0, _pk.P_USE_WEIGHTING] == 0.0 and weights[0] == 1.0):
            t[6], t[7], t[8], t[5] = dpo_fast_precompute(
                t[3], prms[0, _pk.P_LABEL_SMOOTHING], codes[0] == _pk.ROBUST,
                prms[0, _pk.P_BETA] / prms[0, _pk.P_LENGTH], factored=factored)
        return _engine.compile_terms(t)

    def loss_and_grad(self, env: Bandit, logp, data=None):
        """Exact population loss and its gradient with respect to ``log pi``.

        Online objectives hold their sampler (the current ``logp``) fixed in the gradient; WPO
        weights and KTO's reference point are likewise computed at ``logp`` and held fixed.

        Args:
          env: the bandit.
          logp: log pi(y|x), shaped like ``env.ref``.
          data: offline :class:`~coverage_sim.data.PairData` (or
            :class:`~coverage_sim.data.UnpairedData` for KTO), for objectives that need it.

        Returns:
          ``(loss, grad)`` with ``grad`` shaped like ``env.ref``.
        """
        lp = env.as2d(logp, "logp")
        terms = self.terms(env, data, lp)
        grad = np.zeros_like(lp)
        shape = (env.n_responses,) * 2 if _engine.needs_pair_buffer(terms) else (0, 0)
        wbuf = np.zeros((env.n_contexts,) + shape)
        loss = _engine.objective_grad(terms, lp, env.ref_logp2d, grad, True, None, wbuf)
        return float(loss), env.like_ref(grad)

    def __repr__(self) -> str:
        shown = {k: ("<array>" if isinstance(v, np.ndarray) else v) for k, v in self.params.items()}
        return f"Objective({self.name!r}, {shown})"


def _awr_weights(reward: np.ndarray, beta: float) -> np.ndarray:
    """AWR's unnormalised weights ``exp(r / beta)``; a ValueError (not inf) when they overflow."""
    with np.errstate(over="ignore"):
        weights = np.exp(reward / beta)
    if not np.isfinite(weights).all():
        raise ValueError(f"awr's weights exp(r / beta) overflow float64: max r / beta = "
                         f"{np.max(reward) / beta:.4g} > 709 (beta={beta!r}); use a larger beta or "
                         f"a smaller reward scale")
    return weights


def _kto_mismatched(env: Bandit, data: UnpairedData) -> np.ndarray:
    """KTO's mismatched-pair weights; refuses pairs whose log-ratio is undefined (pi_ref = 0)."""
    mism = np.asarray(data.mismatched)
    bad = (mism > 0) & (env.ref2d == 0)
    if bad.any():
        x, y = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"data: KTO's mismatched pair (context {x}, response {y}) has env.ref = 0, "
                         "so its log-ratio is undefined; every response of the data must have "
                         "env.ref > 0 in every visited context")
    return mism


def _behaviour(data) -> np.ndarray:
    """The behaviour policy behind offline data, (X, K): mu if known, else the response marginal."""
    if data.behavior is not None:
        return np.asarray(data.behavior).reshape(data.response_mass.shape)
    mass = np.asarray(data.response_mass)
    totals = mass.sum(axis=1, keepdims=True)
    return np.divide(mass, totals, out=np.zeros_like(mass), where=totals > 0)
