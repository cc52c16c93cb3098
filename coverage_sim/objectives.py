"""The objective catalogue: offline pairwise, non-contrastive offline, and online objectives.

Every objective is an exact *population* loss over a (contextual) bandit, with an exact gradient with
respect to ``log pi(y|x)`` (taken as free coordinates; a policy pulls it back to its parameters). It is
assembled from a few shared terms (see :mod:`coverage_sim._engine`): a pairwise term over labelled pair
weights (offline data, or pairs drawn from the current policy held fixed in the gradient), a linear
log-likelihood term, a KL term and an expected-reward term. The per-pair losses are defined once in
:mod:`coverage_sim.losses` and shared by every backend.

Use :func:`objective` to build one by name; :data:`OBJECTIVES` lists them with their paper and convention.

Examples:
  >>> import coverage_sim as cs
  >>> dpo = cs.objective("sigmoid", beta=0.1)
  >>> dpo.name, dpo.params["beta"]
  ('sigmoid', 0.1)
  >>> float(dpo.pair_loss(0.0, 0.0, 0.0, 0.0))  # -log sigma(0)
  0.6931471805599453
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping

import numpy as np

from coverage_sim import _engine
from coverage_sim._dpo_fast import dpo_fast_precompute
from coverage_sim._pair_kernels import ROBUST, SIGMOID, SIGMOID_NORM
from coverage_sim._validation import (as_float_array, check_beta, check_choice, check_finite,
                                      check_in_range, check_int, check_positive)
from coverage_sim.best_of_n import best_of_n_policy, best_worst_of_n_pairs
from coverage_sim.env import Bandit
from coverage_sim.losses import PAIR_LOSSES, get_pair_loss, pair_loss
from coverage_sim.preferences import preference_probs

__all__ = ["Objective", "ObjectiveSpec", "OBJECTIVES", "objective"]

_FAST_CODES = (SIGMOID, ROBUST, SIGMOID_NORM)


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
        convention=_loss.convention, defaults=dict(_loss.defaults), needs_data=True,
        pair_loss=_name))

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


def objective(name: str, **params) -> "Objective":
    """Build an objective by name with validated parameters.

    Args:
      name: a key of :data:`OBJECTIVES`: every TRL DPOTrainer ``loss_type`` (``sigmoid``, ``hinge``,
        ``ipo``, ..., with TRL's parameter names), ``cdpo``/``dpo``/``slic``, ``best_of_n``, ``awr``,
        ``rlhf``, ``online_dpo``, ``online_ipo``, ``iterative_dpo``, ``hypo``, ``vpo``.
      **params: the objective's parameters; unknown ones are an error.

    Returns:
      An :class:`Objective`.

    Raises:
      ValueError: unknown name (the message lists the valid names), unknown or invalid parameter.

    Examples:
      >>> import coverage_sim as cs
      >>> cs.objective("ipo", beta=0.5).params["beta"]
      0.5
    """
    check_choice(name, "objective", OBJECTIVES)
    spec = OBJECTIVES[name]
    unknown = set(params) - set(spec.defaults)
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)} for objective {name!r}; "
                         f"allowed: {sorted(spec.defaults)}")
    full = {**spec.defaults, **params}
    if name in PAIR_LOSSES:
        full = get_pair_loss(name).validate_params(full)
    elif spec.validate is not None:
        spec.validate(full)
    if (spec.pair_loss or "loss_type" in full) and "beta" in full:
        # beta scales a pairwise margin: too small leaves the loss inert or overflows (IPO)
        full["beta"] = check_beta(full["beta"], "beta")
    if "reward" in full and full["reward"] is not None:
        full["reward"] = check_finite(as_float_array(full["reward"], "reward", ndim=(1, 2)),
                                      "reward")
    return Objective(name=name, params=MappingProxyType(full), spec=spec)


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
    def pair_loss_name(self) -> str | None:
        """The per-pair loss this objective uses (TRL ``loss_type`` name), if any."""
        return self.spec.pair_loss or self.params.get("loss_type")

    @property
    def refresh_every(self) -> int | None:
        """Steps between rebuilding the pair data from the current policy (iterative DPO)."""
        return self.params.get("steps_per_iteration") if self.name == "iterative_dpo" else None

    def _pair_params(self) -> dict:
        loss = get_pair_loss(self.pair_loss_name)
        picked = {key: self.params[key] for key in loss.defaults if key in self.params}
        return loss.validate_params(picked)

    def pair_loss(self, logp_w, logp_l, ref_logp_w, ref_logp_l):
        """Per-pair loss, elementwise (no reduction), TRL's definition for TRL's names.

        Args:
          logp_w, logp_l: log pi of the chosen / rejected responses, any matching shape (numpy
            arrays or torch tensors).
          ref_logp_w, ref_logp_l: the same under the reference policy.

        Returns:
          The per-pair loss, same shape and array type as the inputs.
        """
        if self.pair_loss_name is None:
            raise ValueError(f"objective {self.name!r} has no per-pair loss")
        return pair_loss(self.pair_loss_name, logp_w, logp_l, ref_logp_w, ref_logp_l,
                         **self._pair_params())

    def reward_for(self, env: Bandit) -> np.ndarray:
        """The reward this objective optimises or labels with, as ``(X, K)``."""
        reward = self.params.get("reward")
        return env.reward2d if reward is None else env.as2d(reward, "reward")

    def terms(self, env: Bandit, data=None, logp=None, factored: bool = True) -> tuple:
        """Compile the objective on ``env`` (and ``data``) into the engine's term tuple.

        ``logp`` (X, K) is the current policy; only iterative DPO needs it (to draw its pairs).
        ``factored=False`` keeps the dense DPO kernel even when the pair matrix is rank one.
        """
        n_ctx, k = env.n_contexts, env.n_responses
        if self.needs_data:
            if data is None:
                raise ValueError(f"data is required for objective {self.name!r}; "
                                 "build it with coverage_sim.offline_pairs")
            if data.weights.shape != (n_ctx, k, k):
                raise ValueError(f"data has pair weights of shape {data.weights.shape}, "
                                 f"expected {(n_ctx, k, k)} for this environment")
        rho = env.context_weights
        # Pointwise objectives carry empty pair arrays: at tens of thousands of responses (token
        # sequences) an unused (X, K, K) array would not fit in memory.
        empty3 = np.zeros((n_ctx, 0, 0))
        code, prm, source, weights, probs = -1, np.zeros(4), _engine.OFFLINE, empty3, empty3
        linear = np.zeros((n_ctx, k))
        kl_coef = reward_coef = 0.0
        reward = np.zeros((n_ctx, k))
        p = self.params
        if self.pair_loss_name is not None:
            loss = get_pair_loss(self.pair_loss_name)
            code, prm = loss.code, loss.pack(self._pair_params())
            if self.online and self.name != "iterative_dpo":
                source = _engine.ONLINE
                probs = preference_probs(env, labels=p["labels"], reward=p.get("reward"),
                                         label_noise=p["label_noise"])
                probs = np.ascontiguousarray(probs.reshape(n_ctx, k, k))
            elif self.name == "iterative_dpo":
                if logp is None:
                    logp = env.ref_logp2d
                weights = best_worst_of_n_pairs(np.exp(logp), self.reward_for(env), p["n"],
                                                context_weights=rho)
            else:
                weights = data.weights
        if self.name == "best_of_n":
            target = best_of_n_policy(_behaviour(data), self.reward_for(env), p["n"])
            linear = data.context_weights[:, None] * np.reshape(target, (n_ctx, k))
        elif self.name == "awr":
            linear = data.context_weights[:, None] * _behaviour(data) * _awr_weights(
                self.reward_for(env), p["beta"])
        elif self.name == "rlhf":
            kl_coef, reward_coef, reward = p["beta"], 1.0, self.reward_for(env)
        elif self.name == "hypo":
            kl_coef = p["lam"]
        elif self.name == "vpo":
            scale = p["alpha"] * p["beta"]
            if p["mode"] == "online":
                linear = -scale * rho[:, None] * env.ref2d
            else:
                linear = scale * data.chosen.reshape(n_ctx, k)
        if source == _engine.OFFLINE and code in _FAST_CODES:
            sym, d, act, fast = dpo_fast_precompute(weights, prm[1], code == ROBUST,
                                                    prm[0] / prm[2], factored=factored)
        else:
            fast = 0
            sym, d, act = empty3[:0], np.zeros((0, 2, k)), np.zeros((0, k), dtype=bool)
        arr = _engine.kernel_array
        return (int(code), arr(prm), int(source), _engine.pair_array(weights), arr(probs), fast,
                arr(sym), arr(d), arr(act, np.bool_), arr(linear), float(kl_coef),
                float(reward_coef), arr(reward), arr(rho))

    def loss_and_grad(self, env: Bandit, logp, data=None):
        """Exact population loss and its gradient with respect to ``log pi``.

        Online objectives hold their sampler (the current ``logp``) fixed in the gradient.

        Args:
          env: the bandit.
          logp: log pi(y|x), shaped like ``env.ref``.
          data: offline :class:`~coverage_sim.data.PairData`, for objectives that need it.

        Returns:
          ``(loss, grad)`` with ``grad`` shaped like ``env.ref``.
        """
        lp = env.as2d(logp, "logp")
        terms = self.terms(env, data, lp)
        grad = np.zeros_like(lp)
        online_pairs = terms[0] >= 0 and terms[2] == _engine.ONLINE
        wbuf = np.zeros((env.n_contexts,) + ((env.n_responses,) * 2 if online_pairs else (0, 0)))
        loss = _engine.objective_grad(terms, lp, env.ref_logp2d, grad, True, False, wbuf)
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


def _behaviour(data) -> np.ndarray:
    """The behaviour policy behind offline data, (X, K): mu if known, else the response marginal."""
    if data.behavior is not None:
        return np.asarray(data.behavior).reshape(data.response_mass.shape)
    mass = np.asarray(data.response_mass)
    totals = mass.sum(axis=1, keepdims=True)
    return np.divide(mass, totals, out=np.zeros_like(mass), where=totals > 0)
