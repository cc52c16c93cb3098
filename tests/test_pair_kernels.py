"""Tests for the numba pairwise-loss kernels against the reference definitions in losses.py.

Oracles: torch autograd of ``population_loss`` on torch tensors (float64), central finite
differences of the kernel's own loss, the numpy ``population_loss`` for values, TRL's batch mean for
AOT, and the closed-form population DPO gradient (docs/theory.md, "Offline pairwise losses").

The population tests run over CASES: every registered loss with non-default parameters, plus TRL's
modifiers (f-divergence scores, WPO weights) and combined losses (list-valued ``loss_type``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_profiles import examples

from coverage_sim import _pair_kernels as pk
from coverage_sim.losses import PAIR_LOSSES, get_pair_loss, pair_loss, population_loss, wpo_weights

ALL_NAMES = sorted(PAIR_LOSSES)
PARAMS = {
    "sigmoid": dict(beta=0.7, label_smoothing=0.1), "dpo": dict(beta=1.3),
    "cdpo": dict(beta=0.7, label_smoothing=0.15), "hinge": dict(beta=0.7), "slic": dict(beta=1.3),
    "ipo": dict(beta=0.7, length=2.5), "exo_pair": dict(beta=0.7, label_smoothing=0.05),
    "nca_pair": dict(beta=0.7), "robust": dict(beta=0.7, label_smoothing=0.2),
    "bco_pair": dict(beta=0.7), "sppo_hard": dict(beta=0.7),
    "aot": dict(beta=0.7, label_smoothing=0.1), "aot_unpaired": dict(beta=0.7, label_smoothing=0.1),
    "apo_zero": dict(beta=0.7), "apo_down": dict(beta=0.7), "discopop": dict(beta=0.7),
    "sft": dict(beta=0.7), "sigmoid_norm": dict(beta=0.7, length=2.5),
}
SHAPES = [(1, 2), (3, 2), (1, 5), (3, 5), (1, 17), (3, 17)]
DIVERGENCES = [dict(f_divergence_type="forward_kl"), dict(f_divergence_type="js_divergence"),
               dict(f_divergence_type="alpha_divergence", f_alpha_divergence_coef=0.3),
               dict(f_divergence_type="alpha_divergence", f_alpha_divergence_coef=1.6)]
_DIV_ID = {0: "fkl", 1: "js", 2: "alpha0.3", 3: "alpha1.6"}


def _with(name, **extra):
    return (name, {**PARAMS[name], **extra}, 1.0)


# case id -> components (name, params, weight); one component of weight 1 is a plain loss.
CASES = {name: [(name, PARAMS[name], 1.0)] for name in ALL_NAMES}
# Each divergence with losses that read it through delta only, through the two scores, partially
# (apo_down) and length-normalised, so every branch of the score chain rule is exercised.
for _d, _names in ((0, ("sigmoid", "nca_pair", "apo_down", "ipo", "hinge")),
                   (1, ("exo_pair", "bco_pair", "sigmoid_norm", "robust", "apo_down")),
                   (2, ("discopop", "sppo_hard", "sigmoid", "nca_pair", "cdpo")),
                   (3, ("sigmoid", "bco_pair", "ipo", "apo_down", "exo_pair"))):
    for _n in _names:
        CASES[f"{_n}@{_DIV_ID[_d]}"] = [_with(_n, **DIVERGENCES[_d])]
CASES.update({
    "sigmoid@alpha1": [_with("sigmoid", f_divergence_type="alpha_divergence",
                             f_alpha_divergence_coef=1.0)],   # TRL's reverse-KL fallback
    "sigmoid+wpo": [_with("sigmoid", use_weighting=True)],
    "ipo+wpo": [_with("ipo", use_weighting=True)],
    "nca_pair+wpo@js": [_with("nca_pair", use_weighting=True, f_divergence_type="js_divergence")],
    "rpo": [_with("sigmoid"), ("sft", PARAMS["sft"], 1.0)],
    "mpo": [("sigmoid", PARAMS["dpo"], 0.8), ("bco_pair", PARAMS["bco_pair"], 0.2),
            ("sft", PARAMS["sft"], 1.0)],
    "ipo+aot": [("ipo", PARAMS["ipo"], 0.5), ("aot", PARAMS["aot"], 2.0)],
    "robust+hinge+wpo@fkl": [("robust", {**PARAMS["robust"], **DIVERGENCES[0],
                                         "use_weighting": True}, 0.3),
                             ("hinge", {**PARAMS["hinge"], **DIVERGENCES[0]}, 1.7)],
})
# Scores that grow like e^{|u|} make squares overflow float64 at |u| ~ 500 (the loss itself is
# beyond float64 there), so the extreme-logit test leaves those out.
_OVERFLOW_AT_EXTREMES = {"ipo@fkl", "sppo_hard@alpha0.3", "ipo@alpha1.6"}


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _kernel(name, lp, rlp, W, **params):
    spec = get_pair_loss(name)
    # C-contiguous float64 only, as a public wrapper would pass: other layouts compile again (slow).
    lp, rlp, W = (np.ascontiguousarray(a, dtype=np.float64) for a in (lp, rlp, W))
    grad = np.zeros_like(lp)
    loss = pk.population_pairwise(spec.code, spec.pack(params), lp, rlp, W, grad)
    return loss, grad


def _autograd(name, lp, rlp, W, **params):
    lpt = torch.tensor(lp, dtype=torch.float64, requires_grad=True)
    loss = population_loss(name, lpt, torch.tensor(rlp, dtype=torch.float64), W, **params)
    loss.backward()
    return loss.item(), lpt.grad.numpy()


def _case_kernel(case, lp, rlp, W):
    comps = CASES[case]
    codes = np.array([get_pair_loss(n).code for n, _, _ in comps], dtype=np.int64)
    prms = np.stack([get_pair_loss(n).pack(p) for n, p, _ in comps])
    weights = np.array([w for _, _, w in comps])
    lp, rlp, W = (np.ascontiguousarray(a, dtype=np.float64) for a in (lp, rlp, W))
    grad = np.zeros_like(lp)
    loss = pk.population_pairwise_sum(codes, prms, weights, lp, rlp, W, grad)
    if len(comps) == 1 and comps[0][2] == 1.0:   # the single-loss entry point agrees exactly
        name, params, _ = comps[0]
        assert (loss, grad.tolist()) == (lambda r: (r[0], r[1].tolist()))(
            _kernel(name, lp, rlp, W, **params))
    return loss, grad


def _case_numpy(case, lp, rlp, W):
    return sum(w * population_loss(n, lp, rlp, W, **p) for n, p, w in CASES[case])


def _case_autograd(case, lp, rlp, W):
    lpt = torch.tensor(lp, dtype=torch.float64, requires_grad=True)
    rlpt = torch.tensor(rlp, dtype=torch.float64)
    loss = sum(w * population_loss(n, lpt, rlpt, W, **p) for n, p, w in CASES[case])
    loss.backward()
    return loss.item(), lpt.grad.numpy()


def _relmax(a, b):
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)


def _safe_for_fd(case, lp, rlp, W, margin=1e-5):
    """False if a hinge kink or an AOT rank swap is within ``margin`` (10 FD steps)."""
    x, i, j = np.nonzero(W)
    for name, params, _ in CASES[case]:
        code = PAIR_LOSSES[name].code
        if code == pk.HINGE:
            div = pk.DIVERGENCE_CODES[params.get("f_divergence_type", "reverse_kl")]
            a = params.get("f_alpha_divergence_coef", 0.5)
            h = np.array([pk.divergence_score_diff(div, a, uw, ul) for uw, ul in
                          zip(lp[x, i] - rlp[x, i], lp[x, j] - rlp[x, j])])
            if np.abs(1.0 - params["beta"] * h).min() <= margin:
                return False
        if code == pk.AOT:
            a = np.unique(lp[x, i] - lp[x, j])   # i == j entries are exactly 0 and stay tied
            if np.diff(a).min(initial=np.inf) <= margin:
                return False
        if code == pk.AOT_UNPAIRED:
            u = np.sort((lp - rlp).ravel())
            if np.diff(u).min(initial=np.inf) <= margin:
                return False
    return True


def _instance(seed, X, K, case=None):
    rng = np.random.default_rng(seed)
    for _ in range(100):
        lp = _log_softmax(rng.normal(size=(X, K)) * 1.5)
        rlp = _log_softmax(rng.normal(size=(X, K)))
        W = rng.random((X, K, K)) * (rng.random((X, K, K)) > 0.3)
        W[0, 0, 1] += 0.05
        W /= W.sum()
        if case is None or _safe_for_fd(case, lp, rlp, W):
            return lp, rlp, W
    raise RuntimeError("no instance away from kinks")  # pragma: no cover


# ------------------------------------------------------------------------------------------------
# Constants and entry checks


def test_codes_and_prm_layout():
    names = ["SIGMOID", "HINGE", "IPO", "EXO_PAIR", "NCA_PAIR", "ROBUST", "BCO_PAIR", "SPPO_HARD",
             "AOT", "AOT_UNPAIRED", "APO_ZERO", "APO_DOWN", "DISCOPOP", "SFT", "SIGMOID_NORM"]
    assert [getattr(pk, n) for n in names] == list(range(15))
    assert (pk.P_BETA, pk.P_LABEL_SMOOTHING, pk.P_LENGTH, pk.P_DISCOPOP_TAU, pk.P_DIVERGENCE,
            pk.P_ALPHA_COEF, pk.P_USE_WEIGHTING, pk.N_PRM) == (0, 1, 2, 3, 4, 5, 6, 7)


def test_population_pairwise_rejects_bad_code_and_shapes():
    lp = np.zeros((1, 3))
    W = np.full((1, 3, 3), 1 / 9)
    prm = get_pair_loss("sigmoid").pack()
    with pytest.raises(ValueError, match="unknown loss code"):
        pk.population_pairwise(15, prm, lp, lp, W, np.zeros((1, 3)))
    with pytest.raises(ValueError, match="W must have shape"):
        pk.population_pairwise(0, prm, lp, lp, W[:, :2], np.zeros((1, 3)))
    with pytest.raises(ValueError, match="grad_out"):
        pk.population_pairwise(0, prm, lp, lp, W, np.zeros((1, 2)))


def test_pair_value_grad_not_defined_for_aot():
    prm = get_pair_loss("aot").pack()
    for code in (pk.AOT, pk.AOT_UNPAIRED, 99):
        assert all(math.isnan(v) for v in pk.pair_value_grad(code, 0.1, 0.2, 0.0, 0.0, prm))


def test_hinge_subgradient_zero_at_kink():
    prm = get_pair_loss("hinge").pack({"beta": 0.5})
    assert pk.pair_value_grad(pk.HINGE, 1.0, -1.0, 0.0, 0.0, prm) == (0.0, 0.0, 0.0)  # beta h = 1
    v, gw, gl = pk.pair_value_grad(pk.HINGE, 1.0, -0.5, 0.0, 0.0, prm)
    assert (v, gw, gl) == (0.25, -0.5, 0.5)


# ------------------------------------------------------------------------------------------------
# Per pair: the kernel's scalar function vs torch autograd of pair_loss


_PER_PAIR = [(n, d) for n in ALL_NAMES if not PAIR_LOSSES[n].needs_batch
             for d in [{}] + (DIVERGENCES if PAIR_LOSSES[n].divergence_scope != "none" else [])]


@pytest.mark.parametrize("name,divergence", _PER_PAIR,
                         ids=[f"{n}-{d.get('f_divergence_type', 'reverse_kl')}"
                              f"{d.get('f_alpha_divergence_coef', '')}" for n, d in _PER_PAIR])
def test_pair_value_grad_matches_autograd(name, divergence):
    rng = np.random.default_rng(7)
    lw, ll, rw, rl = (rng.normal(size=50) * 3 for _ in range(4))
    lw[:3], ll[:3] = [400.0, -400.0, 0.0], [-400.0, 400.0, 0.0]   # |beta h| ~ 560 and h = 0
    params = {**PARAMS[name], **divergence}
    spec = get_pair_loss(name)
    prm = spec.pack(params)
    got = np.array([pk.pair_value_grad(spec.code, *args, prm) for args in zip(lw, ll, rw, rl)])
    tw, tl = torch.tensor(lw, requires_grad=True), torch.tensor(ll, requires_grad=True)
    ref = pair_loss(name, tw, tl, torch.tensor(rw), torch.tensor(rl), **params)
    ref.sum().backward()
    gl_ref = np.zeros_like(ll) if tl.grad is None else tl.grad.numpy()
    # |u| = 400 makes the exponential scores ~e^{400} and a square of them (IPO, SPPO) e^{800},
    # past float64. There (first three pairs, exponential scores only) the value overflows to
    # inf and autograd's chain rule multiplies inf by 0 (NaN); ours is never NaN. Elsewhere
    # compare relative to each column's scale.
    for col, want in ((0, ref.detach().numpy()), (1, tw.grad.numpy()), (2, gl_ref)):
        assert not np.isnan(got[:, col]).any()
        finite = np.isfinite(want)
        assert finite[3:].all() and (divergence or finite.all())
        scale = max(np.abs(want[finite]).max(), 1e-300)
        np.testing.assert_allclose(got[finite, col], want[finite], rtol=1e-12,
                                   atol=1e-13 * max(scale, 1.0))


def test_divergence_scores_match_trl_definitions():
    # TRL's scores: reverse u, forward -e^{-u}, JS log sigma(u), alpha e^{(a-1)u}/(a-1) (a = 1:
    # reverse); their differences without cancellation where the two scores nearly agree.
    for u in (-3.0, -0.2, 0.0, 1.5, 30.0):
        assert pk.divergence_score(pk.REVERSE_KL, 0.5, u) == (u, 1.0)
        assert pk.divergence_score(pk.FORWARD_KL, 0.5, u) == pytest.approx(
            (-math.exp(-u), math.exp(-u)), rel=1e-15)
        assert pk.divergence_score(pk.JS_DIVERGENCE, 0.5, u) == pytest.approx(
            (-math.log1p(math.exp(-u)), 1 / (1 + math.exp(u))), rel=1e-15)
        assert pk.divergence_score(pk.ALPHA_DIVERGENCE, 0.3, u) == pytest.approx(
            (math.exp(-0.7 * u) / -0.7, math.exp(-0.7 * u)), rel=1e-15)
        assert pk.divergence_score(pk.ALPHA_DIVERGENCE, 1.0 - 1e-7, u) == (u, 1.0)
    # forward KL at u_w = -700, u_l = -700 - 2^-30 (exactly representable): the naive difference
    # e^{700 + 2^-30} - e^{700} of two numbers 1e304 keeps ~7 digits; ours keeps them all.
    delta = 2.0 ** -30
    d = pk.divergence_score_diff(pk.FORWARD_KL, 0.5, -700.0, -700.0 - delta)
    assert d == pytest.approx(math.exp(700.0) * math.expm1(delta), rel=1e-14)
    assert abs((math.exp(700.0 + delta) - math.exp(700.0)) / d - 1.0) > 1e-10
    assert pk.divergence_score_diff(pk.FORWARD_KL, 0.5, -800.0, -800.0) == 0.0


# ------------------------------------------------------------------------------------------------
# Population: kernel vs torch autograd, finite differences and the numpy reference


@pytest.mark.parametrize("X,K", SHAPES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_population_gradient_matches_autograd(case, X, K):
    lp, rlp, W = _instance(100 * X + K, X, K)
    loss, grad = _case_kernel(case, lp, rlp, W)
    loss_t, grad_t = _case_autograd(case, lp, rlp, W)
    assert _relmax(grad, grad_t) <= 1e-10
    assert loss == pytest.approx(_case_numpy(case, lp, rlp, W), rel=1e-12, abs=1e-12)
    assert loss == pytest.approx(loss_t, rel=1e-12, abs=1e-12)
    assert np.abs(grad).max() > 0


@pytest.mark.parametrize("X,K", SHAPES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_population_gradient_matches_finite_differences(case, X, K):
    lp, rlp, W = _instance(7 + 100 * X + K, X, K, case)
    _, grad = _case_kernel(case, lp, rlp, W)
    step = 1e-6
    fd = np.zeros_like(lp)
    for idx in np.ndindex(*lp.shape):
        up, dn = lp.copy(), lp.copy()
        up[idx] += step
        dn[idx] -= step
        fd[idx] = (_loss_fixed_wpo(case, up, lp, rlp, W)
                   - _loss_fixed_wpo(case, dn, lp, rlp, W)) / (2 * step)
    assert _relmax(grad, fd) <= 1e-6


def _loss_fixed_wpo(case, lp, lp_weights, rlp, W):
    """The case's loss at ``lp`` with WPO weights taken at ``lp_weights``: TRL computes them under
    torch.no_grad, so finite differences must hold them fixed too."""
    w = wpo_weights(lp_weights)
    total = 0.0
    for name, params, weight in CASES[case]:
        params = dict(params)
        W_c = W * w[:, :, None] * w[:, None, :] if params.pop("use_weighting", False) else W
        total += weight * _kernel(name, lp, rlp, W_c, **params)[0]
    return total


@pytest.mark.parametrize("case", sorted(CASES))
def test_empty_weights_give_zero(case):
    lp = np.log(np.array([[0.2, 0.8]]))
    loss, grad = _case_kernel(case, lp, lp, np.zeros((1, 2, 2)))
    assert loss == 0.0 and (grad == 0).all()


def test_gradient_is_added_into_grad_out():
    lp, rlp, W = _instance(3, 2, 4)
    spec = get_pair_loss("sigmoid")
    _, grad = _kernel("sigmoid", lp, rlp, W)
    out = np.ones_like(lp)
    pk.population_pairwise(spec.code, spec.pack(), lp, rlp, W, out)
    np.testing.assert_allclose(out, 1.0 + grad, rtol=1e-15)


def test_dpo_gradient_closed_form():
    # the closed form of docs/theory.md with W = rho mu(i) mu(j) P_ij, P Bradley-Terry:
    # dL/dlp[x,k] = beta rho mu_k sum_j mu_j (sigma(beta h_kj) - P_kj).
    rng = np.random.default_rng(11)
    X, K, beta = 2, 6, 0.8
    lp = _log_softmax(rng.normal(size=(X, K)))
    rlp = _log_softmax(rng.normal(size=(X, K)))
    r = rng.normal(size=(X, K))
    mu = np.exp(_log_softmax(rng.normal(size=(X, K))))
    rho = np.array([0.3, 0.7])
    P = 1.0 / (1.0 + np.exp(-(r[:, :, None] - r[:, None, :])))
    W = rho[:, None, None] * mu[:, :, None] * mu[:, None, :] * P
    g = lp - rlp
    sig = 1.0 / (1.0 + np.exp(-beta * (g[:, :, None] - g[:, None, :])))
    expected = beta * rho[:, None] * mu * np.einsum("xj,xkj->xk", mu, sig - P)
    _, grad = _kernel("sigmoid", lp, rlp, W, beta=beta)
    assert _relmax(grad, expected) <= 1e-13


# ------------------------------------------------------------------------------------------------
# Extreme logits


@pytest.mark.parametrize("case", sorted(set(CASES) - _OVERFLOW_AT_EXTREMES))
def test_extreme_logits_finite_and_match_autograd(case):
    rng = np.random.default_rng(5)
    X, K = 2, 6
    saved = CASES[case]
    CASES[case] = [(n, {**p, "beta": 1.0}, w) for n, p, w in saved]
    # Half the responses far out (log-ratios of several hundred), half moderate, so that |beta h|
    # reaches ~1e3 while some pairs keep gradients of order one to normalise the comparison.
    lp = np.concatenate([rng.uniform(-500.0, 500.0, size=(X, K // 2)),
                         rng.normal(size=(X, K - K // 2))], axis=1)
    lp[:, 0], lp[:, 1] = 500.0, -500.0
    rlp = _log_softmax(rng.normal(size=(X, K)))
    W = rng.random((X, K, K))
    W /= W.sum()
    x, i, j = np.nonzero(W)
    h = (lp[x, i] - rlp[x, i]) - (lp[x, j] - rlp[x, j])
    assert np.abs(h).max() > 900
    try:
        loss, grad = _case_kernel(case, lp, rlp, W)
        assert np.isfinite(loss) and np.isfinite(grad).all()
        loss_t, grad_t = _case_autograd(case, lp, rlp, W)
        assert _relmax(grad, grad_t) <= 1e-10
        assert loss == pytest.approx(loss_t, rel=1e-12)
        assert loss == pytest.approx(_case_numpy(case, lp, rlp, W), rel=1e-12)
    finally:
        CASES[case] = saved


@pytest.mark.parametrize("case", sorted(CASES))
def test_inf_logps_outside_support_are_skipped(case):
    rng = np.random.default_rng(9)
    X, K = 2, 5
    lp = _log_softmax(rng.normal(size=(X, K)))
    rlp = _log_softmax(rng.normal(size=(X, K)))
    W = rng.random((X, K, K))
    support = np.array([True, True, False, True, False])
    W[:, ~support, :] = 0.0
    W[:, :, ~support] = 0.0
    W /= W.sum()
    lp_inf, rlp_inf = lp.copy(), rlp.copy()
    lp_inf[:, ~support] = -np.inf
    rlp_inf[:, ~support] = -np.inf
    if any(p.get("use_weighting") for _, p, _ in CASES[case]):
        # WPO weights depend on the whole row of pi: renormalise lp on the support so that the
        # -inf entries change nothing (pi is 0 there in both).
        lp = _log_softmax(np.where(support, lp, -np.inf))
        lp_inf = lp.copy()
    loss, grad = _case_kernel(case, lp_inf, rlp_inf, W)
    assert np.isfinite(loss) and np.isfinite(grad).all()
    assert (grad[:, ~support] == 0).all()
    sub = np.ix_(range(X), support.nonzero()[0])
    loss_sub, grad_sub = _case_kernel(case, lp[sub], rlp[sub], W[:, support][:, :, support])
    assert loss == pytest.approx(loss_sub, rel=1e-14)
    np.testing.assert_allclose(grad[sub], grad_sub, rtol=1e-14)


# ------------------------------------------------------------------------------------------------
# W = empirical counts / n reproduces TRL's batch mean (AOT included: its sort becomes the coupling)


def _trl_wpo_weights(logits, tokens):
    """TRL's WPO weight for one-token completions, written out from DPOTrainer._compute_loss:
    exp(mean_t(per_token_logps - (logsumexp(2 z) - 2 logsumexp(z)))), computed without grad."""
    with torch.no_grad():
        lse1 = torch.logsumexp(logits, dim=-1)
        lse2 = torch.logsumexp(2.0 * logits, dim=-1)
        per_token_logps = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, None])[:, 0]
        return torch.exp(per_token_logps - (lse2 - 2.0 * lse1))


@pytest.mark.parametrize("case", sorted(CASES))
def test_empirical_weights_reproduce_trl_batch_mean(case):
    # TRL: loss = sum_c loss_weight_c * mean_i(per_sequence_loss_c[i] * w_w[i] w_l[i]); the
    # population kernel with W = counts / n must give the same value and gradient.
    rng = np.random.default_rng(13)
    X, K, n = 2, 4, 9
    lp = _log_softmax(rng.normal(size=(X, K)) * 2)
    rlp = _log_softmax(rng.normal(size=(X, K)))
    xs = rng.integers(0, X, size=n)
    ws = rng.integers(0, K, size=n)
    ls = (ws + rng.integers(1, K, size=n)) % K
    xs[1], ws[1], ls[1] = xs[0], ws[0], ls[0]          # a duplicated pair
    xs[2], ws[2], ls[2] = xs[3], ls[3], ws[3]          # a pair and its reverse
    W = np.zeros((X, K, K))
    np.add.at(W, (xs, ws, ls), 1.0 / n)
    lpt = torch.tensor(lp, requires_grad=True)
    rlpt = torch.tensor(rlp)
    total = 0.0
    for name, params, weight in CASES[case]:
        per_pair = pair_loss(name, lpt[xs, ws], lpt[xs, ls], rlpt[xs, ws], rlpt[xs, ls],
                             **{k: v for k, v in params.items() if k != "use_weighting"})
        if params.get("use_weighting"):
            per_pair = (per_pair * _trl_wpo_weights(lpt[xs], torch.tensor(ws))
                        * _trl_wpo_weights(lpt[xs], torch.tensor(ls)))
        total = total + weight * per_pair.mean()
    total.backward()
    loss, grad = _case_kernel(case, lp, rlp, W)
    assert loss == pytest.approx(total.item(), rel=1e-12)
    assert _relmax(grad, lpt.grad.numpy()) <= 1e-10


def test_wpo_weights_match_trl_formula():
    rng = np.random.default_rng(3)
    lp = _log_softmax(rng.normal(size=(3, 7)) * 2)
    tokens = torch.arange(7).repeat(3)
    rows = torch.tensor(lp).repeat_interleave(7, dim=0)
    trl = _trl_wpo_weights(rows, tokens).numpy().reshape(3, 7)
    np.testing.assert_allclose(wpo_weights(lp), trl, rtol=1e-13)
    probs = np.exp(lp)
    np.testing.assert_allclose(wpo_weights(lp), probs / (probs ** 2).sum(1, keepdims=True),
                               rtol=1e-13)
    for row in lp:
        assert pk.log_sq_norm(row) == pytest.approx(np.log((np.exp(row) ** 2).sum()), rel=1e-14)


def test_quantile_coupling_unequal_weights_by_hand():
    # a: 0 (mass 0.5), 1 (0.5); b: 0 (0.25), 3 (0.75). Segments: [0,.25] (0,0), [.25,.5] (0,3),
    # [.5,1] (1,3).
    a, wa = np.array([1.0, 0.0]), np.array([0.5, 0.5])
    b, wb = np.array([3.0, 0.0]), np.array([0.75, 0.25])
    ga, gb = np.zeros(2), np.zeros(2)
    loss = pk.quantile_coupling_loss(a, wa, b, wb, 1.0, 0.0, ga, gb)

    def sp(z):
        return math.log1p(math.exp(-z))   # -log sigma(z)

    assert loss == pytest.approx(0.25 * sp(0.0) + 0.25 * sp(-3.0) + 0.5 * sp(-2.0), rel=1e-15)
    s = lambda z: 1.0 / (1.0 + math.exp(z))  # noqa: E731  d/dz[-log sigma(z)] = -sigma(-z)
    np.testing.assert_allclose(ga, [-0.5 * s(-2.0), -0.25 * s(0.0) - 0.25 * s(-3.0)], rtol=1e-15)
    np.testing.assert_allclose(gb, [0.25 * s(-3.0) + 0.5 * s(-2.0), 0.25 * s(0.0)], rtol=1e-15)


# ------------------------------------------------------------------------------------------------
# Properties (hypothesis)


@st.composite
def _population(draw):
    X = draw(st.integers(1, 3))
    K = draw(st.integers(2, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    lp = _log_softmax(rng.normal(size=(X, K)) * 3)
    rlp = _log_softmax(rng.normal(size=(X, K)))
    W = rng.random((X, K, K)) * (rng.random((X, K, K)) > 0.4)
    W[0, 0, 1] += 0.01
    return lp, rlp, W / W.sum()


@settings(max_examples=examples(25), deadline=None)
@given(pop=_population(), beta=st.floats(0.05, 5.0), shift=st.floats(-5.0, 5.0))
def test_shift_invariance_of_kernel(pop, beta, shift):
    # Invariance to a per-context shift of lp makes every row of the gradient sum to zero; for
    # aot_unpaired (one shift of the whole batch) only the total does.
    lp, rlp, W = pop
    for name in ALL_NAMES:
        spec = PAIR_LOSSES[name]
        loss, grad = _kernel(name, lp, rlp, W, beta=beta)
        scale = max(np.abs(grad).max(), 1e-300)
        if spec.shift_invariant:
            # Absolute floor: the row sum cancels terms of size <= beta * sum(W) = O(1), whose
            # rounding error (~1e-16 each) does not shrink with the gradient's own scale.
            assert np.abs(grad.sum(axis=1)).max() <= 1e-12 * scale * grad.shape[1] + 1e-14, name
            shifted = _kernel(name, lp + shift, rlp, W, beta=beta)[0]
            assert shifted == pytest.approx(loss, rel=1e-9, abs=1e-9), name
        elif name == "aot_unpaired":
            assert abs(grad.sum()) <= 1e-12 * scale * grad.size + 1e-14


@settings(max_examples=examples(25), deadline=None)
@given(pop=_population(), beta=st.floats(0.05, 5.0), eps=st.floats(0.0, 0.5))
def test_cdpo_kernel_equals_sigmoid_on_noisy_labels(pop, beta, eps):
    lp, rlp, W = pop
    noisy = (1 - eps) * W + eps * W.transpose(0, 2, 1)
    la, ga = _kernel("cdpo", lp, rlp, W, beta=beta, label_smoothing=eps)
    lb, gb = _kernel("sigmoid", lp, rlp, noisy, beta=beta)
    assert la == pytest.approx(lb, rel=1e-11, abs=1e-12)
    assert np.abs(ga - gb).max() <= 1e-11 * max(np.abs(gb).max(), 1e-12)
