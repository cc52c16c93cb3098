"""Pairwise preference losses: the registry and the array-generic reference definitions.

Every ``loss_type`` of TRL's ``DPOTrainer`` at bandit level, with TRL's names, parameter names and
defaults, plus ``cdpo`` (TRL <= v0.24 label-smoothed ``sigmoid``) and the aliases ``dpo`` (=
sigmoid) and ``slic`` (= hinge). Notation: u_w = logp_w - ref_logp_w, u_l = logp_l - ref_logp_l, h =
u_w - u_l; h_bar = h / length for the length-normalised losses (length = 1 for a one-token bandit).

TRL's per-pair modifiers (checked against ``trl/trainer/dpo_trainer.py``, ``DPOTrainer._compute_loss``):

- ``f_divergence_type`` / ``f_alpha_divergence_coef`` (Wang et al. 2023, "Beyond Reverse KL",
  arXiv:2309.16240): every loss reads the scores s(u_w), s(u_l) and delta = s(u_w) - s(u_l) in place
  of u_w, u_l, h, with s(u) = u (``reverse_kl``), -e^{-u} (``forward_kl``), log sigma(u)
  (``js_divergence``), e^{(a-1) u} / (a - 1) (``alpha_divergence``, a =
  ``f_alpha_divergence_coef``; a = 1 falls back to reverse KL). Exceptions, as in TRL: ``apo_zero``,
  ``sft``, ``aot`` and ``aot_unpaired`` read the raw log-ratios (:attr:`PairLossSpec.divergence_scope`
  ``"none"``), and ``apo_down``'s first term sigma(beta u_w) is raw while its margin term uses delta
  (``"partial"``). TRL's a is Wang et al.'s alpha-divergence with alpha = 1 - a (their f'(t) = (1 -
  t^{-alpha}) / alpha; the two agree at the default a = 0.5), and a -> 0 is forward KL. TRL clamps
  (a - 1) u at 80 in float32/bfloat16 before exponentiating (and has no float64 entry); here the
  exponent is not clamped, so the score overflows only past float64's range.
- ``use_weighting`` (WPO, Zhou et al. 2024, arXiv:2406.11827): each pair's loss times w(y_w) w(y_l),
  held fixed in the gradient; see :func:`wpo_weights`. It needs the policy's whole distribution, so
  :func:`population_loss` takes it and :func:`pair_loss` does not.
- ``ld_alpha`` (LD-DPO, Liu et al. 2024, arXiv:2409.06411) changes how token log-probs are summed
  into sequence log-probs: :func:`ld_sequence_logps`. Responses of equal length (every bandit and
  :class:`~coverage_sim.sequences.SequenceEnv`) have no tail, so there LD-DPO is exactly DPO.

:func:`pair_loss` is THE reference definition: element-wise, no reduction, and generic over numpy
(returns float64) and torch (returns a tensor autograd can differentiate). :func:`population_loss`
sums it over a joint weight tensor W[x, winner, loser]. The numba kernels in
:mod:`coverage_sim._pair_kernels` are the fast path and are tested against these definitions.

Examples:
  >>> from coverage_sim.losses import get_pair_loss, pair_loss
  >>> spec = get_pair_loss("ipo")
  >>> spec.code, dict(spec.defaults)
  (2, {'beta': 0.1, 'length': 1.0})
  >>> float(pair_loss("ipo", 0.0, 0.0, 0.0, 0.0, beta=0.5))  # (0 - 1/(2*0.5))^2
  1.0
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np
from scipy.special import expit

from coverage_sim import _pair_kernels as _pk
from coverage_sim._validation import (as_float_array, check_beta, check_choice, check_finite,
                                      check_in_range, check_positive, check_real)

__all__ = ["PairLossSpec", "PAIR_LOSSES", "DIVERGENCE_DEFAULTS", "F_DIVERGENCE_TYPES",
           "get_pair_loss", "pair_loss", "population_loss", "wpo_weights", "ld_sequence_logps"]

# Defaults of the four loss parameters of the packed prm vector of the numba kernels, used for the
# slots a loss does not read.
_GLOBAL_DEFAULTS = {"beta": 0.1, "label_smoothing": 0.0, "length": 1.0, "discopop_tau": 0.05}
_PRM_ORDER = ("beta", "label_smoothing", "length", "discopop_tau")

#: TRL's ``f_divergence_type`` values, in the order of their kernel codes.
F_DIVERGENCE_TYPES = tuple(_pk.DIVERGENCE_CODES)
#: The divergence parameters every pairwise loss accepts, with TRL's ``DPOConfig`` defaults.
DIVERGENCE_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {"f_divergence_type": "reverse_kl", "f_alpha_divergence_coef": 0.5})


@dataclass(frozen=True, eq=False)
class PairLossSpec:
    """One registered pairwise loss: code, parameters, citation, convention and structural flags.

    Attributes:
      name: registry key, TRL's ``loss_type`` string (or ``cdpo``/``dpo``/``slic``).
      code: integer code used by the numba kernels (``coverage_sim._pair_kernels`` constants).
      defaults: read-only mapping parameter -> default; the only parameters this loss accepts.
      paper: short citation.
      arxiv: arXiv id, or ``None`` when there is none (cDPO is a technical note).
      convention: the formula and the parameter convention, one paragraph.
      shift_invariant: invariant to adding a per-pair constant to both u_w and u_l (depends on each
        pair only through h, or for ``aot`` through the policy and reference log-ratio pair). False
        for nca_pair, bco_pair, sppo_hard, apo_zero, apo_down, sft and aot_unpaired.
      needs_batch: the per-pair value depends on the rest of the batch (AOT sorts along axis 0).
      length_normalized: uses h_bar = h / length (ipo, sigmoid_norm).
      alias_of: canonical name when this entry is an alias (``dpo``, ``slic``), else ``None``.
      label_smoothing_interval: ``(low, high, low_open, high_open)`` allowed for label_smoothing, or
        ``None`` when the loss takes no label_smoothing.
      divergence_scope: where TRL's ``f_divergence_type`` acts: ``"all"`` (every log-ratio the loss
        reads becomes a score), ``"partial"`` (``apo_down``: its margin term only) or ``"none"``
        (``apo_zero``, ``sft``, ``aot``, ``aot_unpaired``).
    """

    name: str
    code: int
    defaults: Mapping[str, float]
    paper: str
    arxiv: str | None
    convention: str
    shift_invariant: bool = True
    needs_batch: bool = False
    length_normalized: bool = False
    alias_of: str | None = None
    label_smoothing_interval: tuple[float, float, bool, bool] | None = field(default=None,
                                                                            repr=False)
    divergence_scope: str = "all"

    def validate_params(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Check ``params`` against this loss and fill in the defaults of its own parameters.

        Args:
          params: mapping of parameter name -> value: names in ``self.defaults``, plus the
            divergence parameters of :data:`DIVERGENCE_DEFAULTS` that every loss accepts.

        Returns:
          A new dict with every parameter of this loss as a float, and the divergence parameters
          that were given (``f_divergence_type`` as its name, the coefficient as a float).

        Raises:
          ValueError: an unknown parameter for this loss, a value outside its allowed range, or a
            non-default ``f_divergence_type`` for a loss TRL computes on the raw log-ratios (the
            message names the parameter, the value and what is allowed).

        Examples:
          >>> get_pair_loss("robust").validate_params({"label_smoothing": 0.1})
          {'beta': 0.1, 'label_smoothing': 0.1}
        """
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.defaults) - set(DIVERGENCE_DEFAULTS))
        if unknown:
            hint = (" (WPO weights need the whole policy: pass it to population_loss or "
                    "objective)" if unknown[0] == "use_weighting" else "")
            raise ValueError(
                f"loss {self.name!r} does not take parameter {unknown[0]!r}; its parameters are: "
                f"{', '.join([*self.defaults, *DIVERGENCE_DEFAULTS])}{hint}")
        out = {**self.defaults, **params}
        try:
            if "beta" in out:
                out["beta"] = check_beta(out["beta"], "beta")
            if "label_smoothing" in out:
                lo, hi, lo_open, hi_open = self.label_smoothing_interval
                out["label_smoothing"] = check_in_range(
                    out["label_smoothing"], "label_smoothing", lo, hi, low_open=lo_open,
                    high_open=hi_open)
            if "length" in out:
                out["length"] = check_positive(out["length"], "length")
            if "discopop_tau" in out:
                out["discopop_tau"] = check_positive(out["discopop_tau"], "discopop_tau")
            if "f_divergence_type" in out:
                div = check_choice(out["f_divergence_type"], "f_divergence_type",
                                   F_DIVERGENCE_TYPES)
                if div != "reverse_kl" and self.divergence_scope == "none":
                    raise ValueError(
                        f"f_divergence_type {div!r} has no effect: TRL computes {self.name!r} on "
                        f"the raw log-ratios (allowed for it: 'reverse_kl')")
            if "f_alpha_divergence_coef" in out:
                out["f_alpha_divergence_coef"] = check_real(out["f_alpha_divergence_coef"],
                                                            "f_alpha_divergence_coef")
        except ValueError as exc:
            raise ValueError(f"loss {self.name!r}: {exc}") from None
        return out

    def check_use_weighting(self, value) -> bool:
        """Validate WPO's ``use_weighting`` flag for this loss; returns it as a bool.

        Raises:
          ValueError: not a bool, or True for ``aot``/``aot_unpaired`` (TRL raises: sorting
            misaligns the weights) or ``sft`` (TRL weights its batch-mean SFT loss by the
            batch-mean weight, not pair by pair; not modelled).

        Examples:
          >>> get_pair_loss("sigmoid").check_use_weighting(True)
          True
        """
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"use_weighting must be True or False, got {value!r}")
        if value and self.code in (_pk.AOT, _pk.AOT_UNPAIRED):
            raise ValueError(f"use_weighting=True is not available for loss {self.name!r}: it "
                             "sorts the batch, which would misalign the per-pair weights (TRL "
                             "raises too)")
        if value and self.code == _pk.SFT:
            raise ValueError("use_weighting=True is not modelled for loss 'sft': TRL multiplies "
                             "its batch-mean SFT loss by the batch-mean WPO weight, not pair by "
                             "pair")
        return bool(value)

    def pack(self, params: Mapping[str, Any] | None = None) -> np.ndarray:
        """Validate ``params`` and return the numba parameter vector.

        Args:
          params: as :meth:`validate_params`, plus ``use_weighting`` (bool, WPO; refused for
            ``aot``/``aot_unpaired`` as TRL does, and for ``sft``, whose batch-level SFT loss TRL
            multiplies by the batch-mean weight rather than per pair).

        Returns:
          float64 array of shape ``(N_PRM,) = (7,)``: beta, label_smoothing, length, discopop_tau,
          the divergence code, f_alpha_divergence_coef and use_weighting (0/1); slots this loss
          does not read hold the defaults (0.1, 0.0, 1.0, 0.05, 0, 0.5, 0).

        Examples:
          >>> get_pair_loss("discopop").pack({"beta": 0.5})
          array([0.5 , 0.  , 1.  , 0.05, 0.  , 0.5 , 0.  ])
        """
        params = dict(params or {})
        use_weighting = self.check_use_weighting(params.pop("use_weighting", False))
        full = {**_GLOBAL_DEFAULTS, **DIVERGENCE_DEFAULTS, **self.validate_params(params)}
        out = np.array([full[k] for k in _PRM_ORDER] + [0.0, 0.0, 0.0], dtype=np.float64)
        out[_pk.P_DIVERGENCE] = _pk.DIVERGENCE_CODES[full["f_divergence_type"]]
        out[_pk.P_ALPHA_COEF] = full["f_alpha_divergence_coef"]
        out[_pk.P_USE_WEIGHTING] = float(use_weighting)
        return out


def _spec(name, code, params, paper, arxiv, convention, *, ls_default=0.0, ls_interval=None,
          **flags) -> PairLossSpec:
    defaults = {"beta": _GLOBAL_DEFAULTS["beta"]}
    if "label_smoothing" in params:
        defaults["label_smoothing"] = ls_default
    if "length" in params:
        defaults["length"] = _GLOBAL_DEFAULTS["length"]
    if "discopop_tau" in params:
        defaults["discopop_tau"] = _GLOBAL_DEFAULTS["discopop_tau"]
    return PairLossSpec(name=name, code=code, defaults=MappingProxyType(defaults), paper=paper,
                        arxiv=arxiv, convention=convention, label_smoothing_interval=ls_interval,
                        **flags)


_HALF_CLOSED = (0.0, 0.5, False, False)   # [0, 0.5]
_DPO_PAPER = "Rafailov et al. 2023, Direct Preference Optimization (DPO)"
_DPO_CONV = (
    "DPO: -log sigma(beta h). With label_smoothing eps > 0 it is the conservative form "
    "-(1-eps) log sigma(beta h) - eps log sigma(-beta h) that TRL's 'sigmoid' computed up to v0.24 "
    "(TRL HEAD's 'sigmoid' has no smoothing; eps = 0, the default, reproduces it). beta is the KL "
    "coefficient of J_beta, so under full coverage and Bradley-Terry labels the population "
    "minimiser is pi*_beta = pi_ref e^{r/beta} / Z (arXiv:2305.18290).")
_HINGE_PAPER = ("Zhao et al. 2023, SLiC-HF; hinge with reference as in Liu et al. 2023, RSO "
                "(arXiv:2309.06657)")
_HINGE_CONV = (
    "SLiC/RSO hinge: max(0, 1 - beta h), TRL convention: margin 1/beta in h, with the reference "
    "(SLiC-HF's original max(0, delta - log pi(y_w) + log pi(y_l)) has no reference and adds an "
    "SFT term, arXiv:2305.10425). Subgradient 0 at the kink beta h = 1.")
_AOT_PAPER = "Melnyk et al. 2024, Distributional Preference Alignment of LLMs via Optimal Transport"

_SPECS = [
    _spec("sigmoid", _pk.SIGMOID, ("label_smoothing",), _DPO_PAPER, "2305.18290", _DPO_CONV,
          ls_interval=_HALF_CLOSED),
    _spec("dpo", _pk.SIGMOID, ("label_smoothing",), _DPO_PAPER, "2305.18290",
          "Alias of 'sigmoid'. " + _DPO_CONV, ls_interval=_HALF_CLOSED, alias_of="sigmoid"),
    _spec("cdpo", _pk.SIGMOID, ("label_smoothing",),
          "Mitchell 2023, A note on DPO with noisy preferences & relationship to IPO "
          "(technical note; no arXiv id)", None,
          "Conservative DPO: -(1-eps) log sigma(beta h) - eps log sigma(-beta h), eps = "
          "label_smoothing in [0, 0.5]: DPO against labels flipped with probability eps, i.e. the "
          "population cdpo loss of W equals the sigmoid loss of (1-eps) W + eps W^T. TRL <= v0.24 "
          "'sigmoid' with label_smoothing; no arXiv paper exists (Eric Mitchell's 2023 note).",
          ls_interval=_HALF_CLOSED),
    _spec("hinge", _pk.HINGE, (), _HINGE_PAPER, "2305.10425", _HINGE_CONV),
    _spec("slic", _pk.HINGE, (), _HINGE_PAPER, "2305.10425", "Alias of 'hinge'. " + _HINGE_CONV,
          alias_of="hinge"),
    _spec("ipo", _pk.IPO, ("length",), "Azar et al. 2023, A General Theoretical Paradigm to "
          "Understand Learning from Human Preferences (IPO)", "2310.12036",
          "IPO: (h_bar - 1/(2 beta))^2 with h_bar = h / length, TRL convention (log-probs averaged "
          "over tokens, 'confirmed with IPO authors', TRL #1265/#1677); beta here plays Azar et "
          "al.'s tau (arXiv:2310.12036, eq. 17); GPO's beta is 2 tau; Tajwar's (h - beta_T)^2 has "
          "target beta_T = 1/(2 beta).", length_normalized=True),
    _spec("exo_pair", _pk.EXO_PAIR, ("label_smoothing",), "Ji et al. 2024, Towards Efficient Exact "
          "Optimization of Language Model Alignment (EXO)", "2402.00856",
          "EXO-pref (eq. 16): KL(q || p_eps) over {y_w, y_l} with q = softmax(beta (u_w, u_l)) and "
          "p_eps = (1-eps, eps): sigma(beta h)[log sigma(beta h) - log(1-eps)] + sigma(-beta h)"
          "[log sigma(-beta h) - log eps]. eps = label_smoothing must lie in (0, 1); default 1e-3, "
          "the value the EXO paper recommends. TRL HEAD raises ValueError for label_smoothing = 0 "
          "(DPOTrainer.__init__; its default 0 must be overridden for exo_pair), and TRL <= v0.24 "
          "substituted 1e-3 for 0; here 0 is refused. Minimum 0 at beta h = log((1-eps)/eps).",
          ls_default=1e-3, ls_interval=(0.0, 1.0, True, True)),
    _spec("nca_pair", _pk.NCA_PAIR, (), "Chen et al. 2024, Noise Contrastive Alignment of Language "
          "Models with Explicit Rewards (NCA)", "2402.05369",
          "NCA (pairwise): -log sigma(beta u_w) - 1/2 log sigma(-beta u_w) - 1/2 log sigma(-beta "
          "u_l). Anchors each log-ratio separately, so it is not invariant to a common shift of "
          "u_w, u_l.",
          shift_invariant=False),
    _spec("robust", _pk.ROBUST, ("label_smoothing",), "Chowdhury et al. 2024, Provably Robust DPO: "
          "Aligning Language Models with Noisy Feedback (rDPO)", "2403.00409",
          "rDPO: [-(1-eps) log sigma(beta h) + eps log sigma(-beta h)] / (1 - 2 eps), eps = "
          "label_smoothing in [0, 0.5): unbiased under eps label noise, (1-eps) l(h) + eps l(-h) = "
          "-log sigma(beta h). This is what TRL computes, at HEAD (DPOTrainer._compute_loss: "
          "(clean - flipped)/(1 - 2 eps) with clean = -(1-eps) log sigma(beta h), flipped = -eps "
          "log sigma(-beta h)) and in v0.24; TRL only warns for eps outside [0, 0.5), here it is "
          "refused.",
          ls_interval=(0.0, 0.5, False, True)),
    _spec("bco_pair", _pk.BCO_PAIR, (), "Jung et al. 2024, Binary Classifier Optimization for "
          "Large Language Model Alignment (BCO)", "2404.04656",
          "BCO (pairwise, TRL HEAD): -log sigma(beta u_w) - log sigma(-beta u_l), without the "
          "running reward mean delta TRL <= v0.24 subtracted. Not shift-invariant.",
          shift_invariant=False),
    _spec("sppo_hard", _pk.SPPO_HARD, (), "Wu et al. 2024, Self-Play Preference Optimization for "
          "Language Model Alignment (SPPO)", "2405.00675",
          "SPPO with hard probabilities (P = 1 for the winner, 0 for the loser): (u_w - 1/(2 "
          "beta))^2 + (u_l + 1/(2 beta))^2, i.e. SPPO's eta = 1/beta. Not shift-invariant.",
          shift_invariant=False),
    _spec("aot", _pk.AOT, ("label_smoothing",), _AOT_PAPER, "2406.05882",
          "AOT (paired): sort (logp_w - logp_l) and (ref_logp_w - ref_logp_l) separately along the "
          "batch axis, Delta = sorted - sorted_ref, loss -(1-eps) log sigma(beta Delta) - eps log "
          "sigma(-beta Delta) per sorted position, eps = label_smoothing in [0, 0.5]. For weighted "
          "pairs the rank pairing becomes the quantile (monotone optimal-transport) coupling.",
          ls_interval=_HALF_CLOSED, needs_batch=True, divergence_scope="none"),
    _spec("aot_unpaired", _pk.AOT_UNPAIRED, ("label_smoothing",), _AOT_PAPER, "2406.05882",
          "AOT (unpaired; 'aot_pair' in TRL <= v0.24): Delta = sort(u_w) - sort(u_l) along the "
          "batch axis, same link as 'aot'. Sorting decouples u_w from u_l of the same pair, so it "
          "is not invariant to per-pair shifts (only to one common shift of the whole batch).",
          ls_interval=_HALF_CLOSED, needs_batch=True, shift_invariant=False,
          divergence_scope="none"),
    _spec("apo_zero", _pk.APO_ZERO, (), "D'Oosterlinck et al. 2024, Anchored Preference "
          "Optimization and Contrastive Revisions (APO)", "2408.06266",
          "APO-zero (eq. 7): (1 - sigma(beta u_w)) + sigma(beta u_l): raise the winner, lower the "
          "loser, each against the reference. Not shift-invariant. TRL computes it on the raw "
          "log-ratios whatever f_divergence_type.", shift_invariant=False,
          divergence_scope="none"),
    _spec("apo_down", _pk.APO_DOWN, (), "D'Oosterlinck et al. 2024, Anchored Preference "
          "Optimization and Contrastive Revisions (APO)", "2408.06266",
          "APO-down (eq. 8): sigma(beta u_w) + (1 - sigma(beta h)): lower both, the loser more. "
          "Not shift-invariant. With an f-divergence TRL keeps the raw u_w in sigma(beta u_w) and "
          "uses the score margin delta in the second term.", shift_invariant=False,
          divergence_scope="partial"),
    _spec("discopop", _pk.DISCOPOP, ("discopop_tau",), "Lu et al. 2024, Discovering Preference "
          "Optimization Algorithms with and for Large Language Models (DiscoPOP)", "2406.08414",
          "DiscoPOP / log-ratio modulated loss (eq. 5): z = beta h, m = sigma(z/tau), "
          "(1-m)(-log sigma(z)) + m e^{-z}, tau = discopop_tau (default 0.05). m e^{-z} is "
          "evaluated as exp(log sigma(z/tau) - z), finite wherever the loss is (for tau > 1 the "
          "loss itself diverges as z -> -inf)."),
    _spec("sft", _pk.SFT, (), "Negative log-likelihood of the chosen response; with 'sigmoid' it "
          "is RPO (Pang et al. 2024, Iterative Reasoning Preference Optimization)", "2404.19733",
          "SFT: -logp_w (token cross-entropy on y_w; one token in a bandit). Ignores the reference "
          "and beta (beta is accepted for uniformity). TRL replaced rpo_alpha by loss_type "
          "['sigmoid', 'sft'] with loss_weights. Not shift-invariant.", shift_invariant=False,
          divergence_scope="none"),
    _spec("sigmoid_norm", _pk.SIGMOID_NORM, ("length",), "Length-normalised DPO: Meng et al. 2024, "
          "SimPO (arXiv:2405.14734) / Lambert et al. 2024, Tulu 3 (arXiv:2411.15124)", "2405.14734",
          "Length-normalised DPO: -log sigma(beta h_bar), h_bar = h / length, with the reference "
          "(Tulu 3 style; SimPO drops the reference and adds a margin). TRL #2964.",
          length_normalized=True),
]

PAIR_LOSSES: Mapping[str, PairLossSpec] = MappingProxyType({s.name: s for s in _SPECS})
"""Registry: name -> :class:`PairLossSpec` (TRL loss types plus ``cdpo``, ``dpo``, ``slic``)."""


def get_pair_loss(name: str) -> PairLossSpec:
    """Look up a pairwise loss by name.

    Args:
      name: a key of :data:`PAIR_LOSSES`.

    Returns:
      The :class:`PairLossSpec`.

    Raises:
      ValueError: unknown name; the message lists the valid names.

    Examples:
      >>> get_pair_loss("slic").code == get_pair_loss("hinge").code
      True
    """
    check_choice(name, "pair loss", PAIR_LOSSES)
    return PAIR_LOSSES[name]


# ------------------------------------------------------------------------------------------------
# Backends: the reference formulas are written once against this tiny op set.

class _NumpyOps:
    @staticmethod
    def logsigmoid(z):
        # log sigma(z) = -log(1 + e^{-z}); logaddexp never overflows.
        return -np.logaddexp(0.0, -z)

    sigmoid = staticmethod(expit)
    exp = staticmethod(np.exp)
    expm1 = staticmethod(np.expm1)
    where = staticmethod(np.where)

    @staticmethod
    def relu(z):
        return np.maximum(z, 0.0)

    @staticmethod
    def sort0(z):
        return np.sort(z, axis=0)


class _TorchOps:
    def __init__(self, torch):
        self.torch = torch
        self.logsigmoid = torch.nn.functional.logsigmoid
        self.sigmoid = torch.sigmoid
        self.exp = torch.exp
        self.expm1 = torch.expm1
        self.where = torch.where
        self.relu = torch.relu

    def sort0(self, z):
        return self.torch.sort(z, dim=0).values


def _is_tensor(x) -> bool:
    # torch is optional: if it was never imported, nothing can be a tensor.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _coerce(arrays: dict[str, Any]):
    """Broadcast the inputs on one backend; returns (ops, list of arrays, is_torch)."""
    if any(_is_tensor(v) for v in arrays.values()):
        torch = sys.modules["torch"]
        tensors = [v for v in arrays.values() if _is_tensor(v)]
        dtype = tensors[0].dtype
        for t in tensors[1:]:
            dtype = torch.promote_types(dtype, t.dtype)
        if not dtype.is_floating_point:
            dtype = torch.float64
        device = tensors[0].device
        out = [torch.as_tensor(v, dtype=dtype, device=device) for v in arrays.values()]
        return _TorchOps(torch), list(torch.broadcast_tensors(*out)), True
    out = [_as_float(v, k) for k, v in arrays.items()]
    try:
        return _NumpyOps, list(np.broadcast_arrays(*out)), False
    except ValueError as exc:
        shapes = ", ".join(f"{k} {a.shape}" for k, a in zip(arrays, out))
        raise ValueError(f"inputs must broadcast together, got shapes {shapes}") from exc


def _as_float(value, name: str) -> np.ndarray:
    # Unlike _validation.as_float_array, keeps 0-d inputs 0-d (ascontiguousarray makes them 1-d).
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array, got {value!r}") from exc


def _smoothed_logistic(ops, z, eps):
    return -(1.0 - eps) * ops.logsigmoid(z) - eps * ops.logsigmoid(-z)


def _scores(ops, p, uw, ul):
    """TRL's f-divergence scores (s_w, s_l) and their difference delta, stable forms."""
    div = p.get("f_divergence_type", "reverse_kl")
    a = p.get("f_alpha_divergence_coef", 0.5)
    if div == "forward_kl":
        c = -1.0
    elif div == "alpha_divergence" and abs(a - 1.0) >= 1e-6:
        c = a - 1.0
    elif div == "js_divergence":
        sw, sl = ops.logsigmoid(uw), ops.logsigmoid(ul)
        return sw, sl, sw - sl
    else:   # reverse KL, and TRL's fallback for a within 1e-6 of 1
        return uw, ul, uw - ul
    ew, el = c * uw, c * ul
    # delta = (e^{ew} - e^{el}) / c = sign e^{big} expm1(small - big) / c: no cancellation, and
    # both where-branches read finite arguments, so autograd never multiplies 0 by inf.
    first = ew >= el
    big = ops.where(first, ew, el)
    gap = ops.where(first, el - ew, ew - el)
    sign = ops.where(first, -1.0, 1.0)
    return ops.exp(ew) / c, ops.exp(el) / c, sign * ops.exp(big) * ops.expm1(gap) / c


def _reference(code, ops, lw, ll, rw, rl, p):
    """The per-pair (per sorted position for AOT) loss, TRL's definitions, stable forms."""
    beta = p.get("beta", _GLOBAL_DEFAULTS["beta"])
    eps = p.get("label_smoothing", 0.0)
    uw = lw - rw
    ul = ll - rl
    if code in (_pk.APO_ZERO, _pk.SFT, _pk.AOT, _pk.AOT_UNPAIRED):
        sw, sl, h = uw, ul, uw - ul     # TRL reads the raw log-ratios for these
    else:
        sw, sl, h = _scores(ops, p, uw, ul)
    if code == _pk.SIGMOID:
        return _smoothed_logistic(ops, beta * h, eps)
    if code == _pk.HINGE:
        return ops.relu(1.0 - beta * h)
    if code == _pk.IPO:
        return (h / p["length"] - 0.5 / beta) ** 2
    if code == _pk.EXO_PAIR:
        z = beta * h
        return (ops.sigmoid(z) * (ops.logsigmoid(z) - math.log1p(-eps))
                + ops.sigmoid(-z) * (ops.logsigmoid(-z) - math.log(eps)))
    if code == _pk.NCA_PAIR:
        a, b = beta * sw, beta * sl
        return -ops.logsigmoid(a) - 0.5 * ops.logsigmoid(-a) - 0.5 * ops.logsigmoid(-b)
    if code == _pk.ROBUST:
        z = beta * h
        return (-(1.0 - eps) * ops.logsigmoid(z) + eps * ops.logsigmoid(-z)) / (1.0 - 2.0 * eps)
    if code == _pk.BCO_PAIR:
        return -ops.logsigmoid(beta * sw) - ops.logsigmoid(-beta * sl)
    if code == _pk.SPPO_HARD:
        return (sw - 0.5 / beta) ** 2 + (sl + 0.5 / beta) ** 2
    if code == _pk.AOT:
        delta = ops.sort0(lw - ll) - ops.sort0(rw - rl)
        return _smoothed_logistic(ops, beta * delta, eps)
    if code == _pk.AOT_UNPAIRED:
        delta = ops.sort0(uw) - ops.sort0(ul)
        return _smoothed_logistic(ops, beta * delta, eps)
    if code == _pk.APO_ZERO:
        # 1 - sigma(a) = sigma(-a) without cancellation.
        return ops.sigmoid(-beta * uw) + ops.sigmoid(beta * ul)
    if code == _pk.APO_DOWN:
        # TRL: the first term on the raw log-ratio, the margin term on the scores.
        return ops.sigmoid(beta * uw) + ops.sigmoid(-beta * h)
    if code == _pk.DISCOPOP:
        tau = p["discopop_tau"]
        z = beta * h
        # (1 - m) = sigma(-z/tau); m e^{-z} = exp(log sigma(z/tau) - z): no overflow at large |z|.
        return -ops.sigmoid(-z / tau) * ops.logsigmoid(z) + ops.exp(ops.logsigmoid(z / tau) - z)
    if code == _pk.SFT:
        return -lw
    if code == _pk.SIGMOID_NORM:
        return -ops.logsigmoid(beta * h / p["length"])
    raise AssertionError(f"unhandled loss code {code}")  # pragma: no cover


def pair_loss(name: str, logp_w, logp_l, ref_logp_w, ref_logp_l, **params):
    """Per-pair preference loss, TRL's definition, element-wise with no reduction.

    The reference definition of every registered loss (see :data:`PAIR_LOSSES` and each spec's
    ``paper``/``arxiv``/``convention``: DPO arXiv:2305.18290, IPO 2310.12036, SLiC 2305.10425, cDPO
    (Mitchell 2023 note, no arXiv id), rDPO 2403.00409, EXO 2402.00856, NCA 2402.05369, BCO
    2404.04656, SPPO 2405.00675, AOT 2406.05882, APO 2408.06266, DiscoPOP 2406.08414,
    length-normalised DPO SimPO 2405.14734 / Tulu 3 2411.15124). Stable forms throughout
    (log-sigmoid via logaddexp or ``torch.nn.functional.logsigmoid``), finite at
    ``|beta h| = 1e3``.

    Args:
      name: loss name, a key of :data:`PAIR_LOSSES`.
      logp_w, logp_l: log pi(y_w | x), log pi(y_l | x); arrays (or scalars) broadcastable together.
      ref_logp_w, ref_logp_l: the reference log-probs, broadcastable with the above.
      **params: the loss's parameters (``beta``, and where the loss takes them ``label_smoothing``,
        ``length``, ``discopop_tau``), TRL names and defaults; see ``get_pair_loss(name).defaults``.
        Every loss also takes TRL's ``f_divergence_type`` and ``f_alpha_divergence_coef``
        (:data:`DIVERGENCE_DEFAULTS`; see the module docstring for where they act).

    Returns:
      The loss per pair, with the broadcast shape of the inputs: a float64 numpy array (a numpy
      scalar for 0-d inputs) for numpy inputs; a torch tensor, differentiable by autograd, if any
      input is a tensor. For ``aot``/``aot_unpaired`` (``needs_batch``) axis 0 is the batch axis and
      entry k is the loss at sorted position k, exactly as TRL's ``torch.sort(..., dim=0)``.

    Raises:
      ValueError: unknown name (lists the valid names), invalid parameter, non-numeric input, or a
        0-d input for a batch loss.

    Examples:
      >>> import numpy as np
      >>> from coverage_sim.losses import pair_loss
      >>> float(pair_loss("sigmoid", 0.0, 0.0, 0.0, 0.0))  # -log sigma(0) = log 2
      0.6931471805599453
      >>> pair_loss("hinge", np.array([1.0, 30.0]), 0.0, 0.0, 0.0, beta=0.1)
      array([0.9, 0. ])
      >>> pair_loss("aot", np.array([0.0, 2.0]), 0.0, np.array([3.0, 1.0]), 0.0, beta=1.0).round(4)
      array([1.3133, 1.3133])
      >>> float(pair_loss("sigmoid", 0.0, 0.0, 0.0, 0.0, f_divergence_type="forward_kl"))  # delta = 0
      0.6931471805599453
    """
    spec = get_pair_loss(name)
    p = spec.validate_params(params)
    ops, (lw, ll, rw, rl), _ = _coerce({"logp_w": logp_w, "logp_l": logp_l,
                                        "ref_logp_w": ref_logp_w, "ref_logp_l": ref_logp_l})
    if spec.needs_batch and lw.ndim == 0:
        raise ValueError(f"loss {name!r} sorts along a batch axis (axis 0); inputs must have at "
                         f"least 1 dimension, got 0-d inputs")
    out = _reference(spec.code, ops, lw, ll, rw, rl, p)
    if ops is _NumpyOps and out.ndim == 0:
        return np.float64(out)
    return out


def _quantile_coupling(a, wa, b, wb):
    """Monotone coupling of two weighted 1-D samples: (index into a, index into b, segment mass).

    Breakpoints are the union of the two sequential cumulative sums of the stably sorted weights, up
    to the smaller total, so it reproduces the numba walk ``_pair_kernels.quantile_coupling_loss``.
    """
    if len(a) == 0 or len(b) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    oa = np.argsort(a, kind="stable")
    ob = np.argsort(b, kind="stable")
    ca = np.cumsum(wa[oa])
    cb = np.cumsum(wb[ob])
    t = np.union1d(ca, cb)
    t = t[t <= min(ca[-1], cb[-1])]
    mass = np.diff(t, prepend=0.0)
    keep = mass > 0
    pa = np.searchsorted(ca, t[keep], side="left")
    pb = np.searchsorted(cb, t[keep], side="left")
    return oa[pa], ob[pb], mass[keep]


def population_loss(name: str, lp, rlp, W, *, use_weighting: bool = False, **params):
    """Exact population pairwise loss sum_{x,i,j} W[x,i,j] l(lp[x,i], lp[x,j], rlp[x,i], rlp[x,j]).

    The reference for the numba kernel ``_pair_kernels.population_pairwise``, built from
    :func:`pair_loss`: numpy in, float out; torch ``lp``/``rlp`` in, a differentiable 0-d tensor
    out. Pairs with W == 0 are never evaluated (so -inf log-probs outside the data support are
    harmless). ``aot``/``aot_unpaired`` use the quantile coupling of the weighted log-ratio
    distributions, all contexts pooled (TRL sorts over the whole batch): with W = counts / n of a
    batch of n pairs it equals TRL's batch mean.

    Args:
      name: loss name, a key of :data:`PAIR_LOSSES`.
      lp: (X, K) log pi(y | x), numpy array or torch tensor.
      rlp: (X, K) log pi_ref(y | x).
      W: (X, K, K) joint weights, W[x, i, j] = P(context x, winner i, loser j); finite, >= 0.
      use_weighting: WPO (TRL's ``use_weighting``): multiply each pair's loss by
        w(x, i) w(x, j) from :func:`wpo_weights` of ``lp``, held fixed in the gradient (detached).
      **params: as for :func:`pair_loss`.

    Returns:
      The loss: a Python float (numpy inputs) or a 0-d tensor (torch inputs).

    Examples:
      >>> import numpy as np
      >>> lp = np.log([[0.5, 0.5]]); W = np.array([[[0.0, 1.0], [0.0, 0.0]]])
      >>> round(population_loss("sigmoid", lp, lp, W), 6)  # one pair at h = 0: log 2
      0.693147
    """
    spec = get_pair_loss(name)
    p = spec.validate_params(params)
    use_weighting = spec.check_use_weighting(use_weighting)
    torch_mode = _is_tensor(lp) or _is_tensor(rlp)
    W_np = W.detach().cpu().numpy() if _is_tensor(W) else W
    W_np = check_finite(as_float_array(W_np, "W", ndim=3), "W")
    if (W_np < 0).any():
        raise ValueError("W must be non-negative")
    X, K, K2 = W_np.shape
    if K != K2:
        raise ValueError(f"W must have shape (X, K, K), got shape {W_np.shape}")
    if torch_mode:
        torch = sys.modules["torch"]
        ref = lp if _is_tensor(lp) else rlp
        lp = torch.as_tensor(lp, dtype=ref.dtype, device=ref.device)
        rlp = torch.as_tensor(rlp, dtype=ref.dtype, device=ref.device)
        ops = _TorchOps(torch)

        def const(v):
            return torch.as_tensor(v, dtype=ref.dtype, device=ref.device)

        def index(v):
            return torch.as_tensor(v, dtype=torch.long, device=ref.device)
    else:
        lp = as_float_array(lp, "lp")
        rlp = as_float_array(rlp, "rlp")
        ops = _NumpyOps

        def const(v):
            return v

        def index(v):
            return v
    for arr, nm in ((lp, "lp"), (rlp, "rlp")):
        if tuple(arr.shape) != (X, K):
            raise ValueError(f"{nm} must have shape (X, K) = {(X, K)} to match W, "
                             f"got shape {tuple(arr.shape)}")

    if spec.code == _pk.AOT_UNPAIRED:
        ww = W_np.sum(axis=2)
        wl = W_np.sum(axis=1)
        # Gather before subtracting: entries outside the support may be -inf - (-inf).
        xa, ka = np.nonzero(ww > 0)
        xb, kb = np.nonzero(wl > 0)
        a = lp[index(xa), index(ka)] - rlp[index(xa), index(ka)]
        b = lp[index(xb), index(kb)] - rlp[index(xb), index(kb)]
        ia, ib, mass = _quantile_coupling(_detached(a), ww[xa, ka], _detached(b), wl[xb, kb])
        delta = a[index(ia)] - b[index(ib)]
        eps = p["label_smoothing"]
        return _sum(const(mass) * _smoothed_logistic(ops, p["beta"] * delta, eps))

    x, i, j = np.nonzero(W_np > 0)
    w = W_np[x, i, j]
    xi, ii, ji = index(x), index(i), index(j)
    lw, ll, rw, rl = lp[xi, ii], lp[xi, ji], rlp[xi, ii], rlp[xi, ji]
    if spec.code == _pk.AOT:
        a, b = lw - ll, rw - rl
        ia, ib, mass = _quantile_coupling(_detached(a), w, _detached(b), w)
        delta = a[index(ia)] - b[index(ib)]
        eps = p["label_smoothing"]
        return _sum(const(mass) * _smoothed_logistic(ops, p["beta"] * delta, eps))
    if use_weighting:
        wpo = wpo_weights(_detached(lp))
        w = w * wpo[x, i] * wpo[x, j]
    return _sum(const(w) * _reference(spec.code, ops, lw, ll, rw, rl, p))


def wpo_weights(lp) -> np.ndarray:
    """WPO's per-response weight w(y|x) = pi(y|x) / sum_a pi(a|x)^2 of a one-step policy.

    Zhou et al. 2024 (arXiv:2406.11827) as TRL computes it (``DPOTrainer._compute_loss`` with
    ``use_weighting``): per token, exp(log p(y_t) - (logsumexp(2 z_t) - 2 logsumexp(z_t))) with
    logits z_t, averaged in log space over the completion's tokens, all under ``torch.no_grad``.
    For one token with logits log pi this is exactly pi(y) / sum_a pi(a)^2 (the probability of y
    relative to the policy's collision probability); a pair's loss is multiplied by
    w(y_w) w(y_l), not normalised over the batch. Over whole responses (the engine's view of a
    :class:`~coverage_sim.sequences.SequenceEnv`) it is the same formula at the response level,
    not TRL's per-token geometric mean.

    Args:
      lp: (X, K) log pi(y|x) (a numpy array; entries -inf allowed).

    Returns:
      (X, K) float64 weights (0 where pi = 0).

    Examples:
      >>> import numpy as np
      >>> wpo_weights(np.log([[0.5, 0.25, 0.25]])).round(4)  # sum pi^2 = 0.375
      array([[1.3333, 0.6667, 0.6667]])
    """
    lp = np.asarray(lp, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_norm = np.logaddexp.reduce(2.0 * lp, axis=-1, keepdims=True)
        return np.exp(lp - log_norm)


def ld_sequence_logps(token_logps_w, mask_w, token_logps_l, mask_l, ld_alpha: float):
    """LD-DPO's sequence log-probs of a batch of pairs (Liu et al. 2024, arXiv:2409.06411).

    The first l_p = ``min(|y_w|, |y_l|)`` completion tokens of each response count fully and the
    longer response's tail beyond l_p is weighted by ``ld_alpha``:
    log pi(y) = sum_{t <= l_p} log p_t + ld_alpha * sum_{t > l_p} log p_t, as TRL's
    ``DPOTrainer._compute_loss`` (and ``compute_ref_log_probs`` for the reference) with
    ``ld_alpha`` set. Pass the result to :func:`pair_loss` for the LD-DPO per-pair loss. For
    responses of equal length the tail is empty and this is the plain sum (LD-DPO = DPO): the case of
    every bandit and :class:`~coverage_sim.sequences.SequenceEnv` in this package.

    Args:
      token_logps_w, token_logps_l: (B, T) per-token log-probs of the chosen / rejected sequences
        (numpy or torch; positions outside the completion are ignored).
      mask_w, mask_l: (B, T) completion masks (1 on completion tokens, 0 on prompt and padding),
        matching the arrays above.
      ld_alpha: weight of the tail, in [0, 1] (1: plain DPO, 0: the tail is masked).

    Returns:
      ``(logp_w, logp_l)``, each (B,), on the inputs' backend.

    Examples:
      >>> import numpy as np
      >>> lw = np.array([[-1.0, -1.0, -1.0]]); mw = np.array([[1, 1, 1]])
      >>> ll = np.array([[-2.0, -9.0, -9.0]]); ml = np.array([[1, 0, 0]])
      >>> ld_sequence_logps(lw, mw, ll, ml, 0.5)   # shared length 1: -1 + 0.5 * (-2)
      (array([-2.]), array([-2.]))
    """
    ld_alpha = check_in_range(ld_alpha, "ld_alpha", 0.0, 1.0)
    out = []
    for logps, mask, other in ((token_logps_w, mask_w, mask_l), (token_logps_l, mask_l, mask_w)):
        if _is_tensor(logps):
            torch = sys.modules["torch"]
            mask = torch.as_tensor(mask, device=logps.device).to(logps.dtype)
            other = torch.as_tensor(other, device=logps.device).to(logps.dtype)
            position = torch.cumsum(mask, dim=1)
            shared = torch.minimum(mask.sum(dim=1), other.sum(dim=1))[:, None]
            # full_like keeps the inputs' dtype (torch.where on Python scalars would not).
            weight = mask * torch.where(position <= shared, torch.ones_like(mask),
                                        torch.full_like(mask, ld_alpha))
            out.append((torch.where(mask > 0, logps, torch.zeros_like(logps)) * weight).sum(dim=1))
        else:
            logps = np.asarray(logps, dtype=np.float64)
            mask = np.asarray(mask, dtype=np.float64)
            other = np.asarray(other, dtype=np.float64)
            if logps.ndim != 2 or mask.shape != logps.shape or other.shape[0] != logps.shape[0]:
                raise ValueError(f"token log-probs and masks must be (B, T) arrays of one shape, "
                                 f"got shapes {logps.shape}, {mask.shape}, {other.shape}")
            position = np.cumsum(mask, axis=1)
            shared = np.minimum(mask.sum(axis=1), other.sum(axis=1))[:, None]
            weight = mask * np.where(position <= shared, 1.0, ld_alpha)
            out.append((np.where(mask > 0, logps, 0.0) * weight).sum(axis=1))
    return tuple(out)


def _detached(v) -> np.ndarray:
    return v.detach().cpu().numpy() if _is_tensor(v) else np.asarray(v)


def _sum(v):
    return v.sum() if _is_tensor(v) else float(np.sum(v))
