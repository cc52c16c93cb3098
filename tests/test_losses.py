"""Tests for coverage_sim.losses: registry, parameter validation and the reference pair_loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_profiles import examples

from coverage_sim import _pair_kernels as pk
from coverage_sim.losses import (F_DIVERGENCE_TYPES, PAIR_LOSSES, get_pair_loss,
                                 ld_sequence_logps, pair_loss, population_loss)

TRL_LOSS_TYPES = ["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair",
                  "sppo_hard", "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft",
                  "sigmoid_norm"]
ALL_NAMES = sorted(PAIR_LOSSES)
NOT_SHIFT_INVARIANT = {"nca_pair", "bco_pair", "sppo_hard", "apo_zero", "apo_down", "sft",
                       "aot_unpaired"}

# Non-default parameters so that every parameter slot is exercised.
PARAMS = {
    "sigmoid": dict(beta=0.7, label_smoothing=0.1), "dpo": dict(beta=0.7),
    "cdpo": dict(beta=0.7, label_smoothing=0.15), "hinge": dict(beta=0.7), "slic": dict(beta=1.3),
    "ipo": dict(beta=0.7, length=2.5), "exo_pair": dict(beta=0.7, label_smoothing=0.05),
    "nca_pair": dict(beta=0.7), "robust": dict(beta=0.7, label_smoothing=0.2),
    "bco_pair": dict(beta=0.7), "sppo_hard": dict(beta=0.7),
    "aot": dict(beta=0.7, label_smoothing=0.1), "aot_unpaired": dict(beta=0.7, label_smoothing=0.1),
    "apo_zero": dict(beta=0.7), "apo_down": dict(beta=0.7), "discopop": dict(beta=0.7),
    "sft": dict(beta=0.7), "sigmoid_norm": dict(beta=0.7, length=2.5),
}


def _ls(z):
    """log sigma(z) for moderate z (hand values only)."""
    return -math.log1p(math.exp(-z))


def _sig(z):
    return 1.0 / (1.0 + math.exp(-z))


# ------------------------------------------------------------------------------------------------
# Registry


def test_registry_covers_trl_loss_types_and_extras():
    assert set(PAIR_LOSSES) == set(TRL_LOSS_TYPES) | {"cdpo", "dpo", "slic"}


def test_codes_match_kernel_constants():
    expected = {name: i for i, name in enumerate(TRL_LOSS_TYPES)}
    expected.update(cdpo=0, dpo=0, slic=1)
    assert {n: s.code for n, s in PAIR_LOSSES.items()} == expected
    for i, name in enumerate(TRL_LOSS_TYPES):
        assert getattr(pk, name.upper()) == i
    assert pk.N_CODES == 15 and pk.N_PRM == 7


def test_flags():
    assert {n for n, s in PAIR_LOSSES.items() if not s.shift_invariant} == NOT_SHIFT_INVARIANT
    assert {n for n, s in PAIR_LOSSES.items() if s.needs_batch} == {"aot", "aot_unpaired"}
    assert {n for n, s in PAIR_LOSSES.items() if s.length_normalized} == {"ipo", "sigmoid_norm"}
    assert PAIR_LOSSES["dpo"].alias_of == "sigmoid" and PAIR_LOSSES["slic"].alias_of == "hinge"


@pytest.mark.parametrize("name", ALL_NAMES)
def test_spec_documents_paper(name):
    spec = PAIR_LOSSES[name]
    assert spec.name == name and spec.paper and spec.convention
    if name == "cdpo":
        assert spec.arxiv is None and "no arXiv" in spec.paper
    else:
        assert spec.arxiv and len(spec.arxiv.split(".")) == 2


def test_convention_texts():
    assert "tau" in PAIR_LOSSES["ipo"].convention and "2 tau" in PAIR_LOSSES["ipo"].convention
    assert "1/(2 beta)" in PAIR_LOSSES["ipo"].convention


def test_defaults_and_pack():
    assert dict(get_pair_loss("sigmoid").defaults) == {"beta": 0.1, "label_smoothing": 0.0}
    assert dict(get_pair_loss("exo_pair").defaults) == {"beta": 0.1, "label_smoothing": 1e-3}
    assert dict(get_pair_loss("hinge").defaults) == {"beta": 0.1}
    assert dict(get_pair_loss("discopop").defaults) == {"beta": 0.1, "discopop_tau": 0.05}
    assert dict(get_pair_loss("sigmoid_norm").defaults) == {"beta": 0.1, "length": 1.0}
    np.testing.assert_array_equal(get_pair_loss("exo_pair").pack({}),
                                  [0.1, 1e-3, 1.0, 0.05, 0.0, 0.5, 0.0])
    np.testing.assert_array_equal(get_pair_loss("ipo").pack({"beta": 2, "length": 3}),
                                  [2.0, 0.0, 3.0, 0.05, 0.0, 0.5, 0.0])
    prm = get_pair_loss("discopop").pack({"discopop_tau": 0.3})
    assert prm.dtype == np.float64 and prm.shape == (7,) and prm[pk.P_DISCOPOP_TAU] == 0.3
    prm = get_pair_loss("sigmoid").pack({"f_divergence_type": "alpha_divergence",
                                         "f_alpha_divergence_coef": 0.3, "use_weighting": True})
    assert (prm[pk.P_DIVERGENCE], prm[pk.P_ALPHA_COEF], prm[pk.P_USE_WEIGHTING]) == (
        pk.ALPHA_DIVERGENCE, 0.3, 1.0)
    assert [pk.DIVERGENCE_CODES[d] for d in F_DIVERGENCE_TYPES] == [0, 1, 2, 3]
    assert get_pair_loss("robust").validate_params({"beta": 1}) == {"beta": 1.0,
                                                                   "label_smoothing": 0.0}


# ------------------------------------------------------------------------------------------------
# Invalid inputs


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown pair loss 'kto_pair'") as exc:
        get_pair_loss("kto_pair")
    for name in ALL_NAMES:
        assert name in str(exc.value)
    with pytest.raises(ValueError, match="valid names"):
        pair_loss("simpo", 0.0, 0.0, 0.0, 0.0)


INVALID = [
    ("sigmoid", dict(beta=0.0), "beta"),
    ("sigmoid", dict(beta=-1.0), "beta"),
    ("hinge", dict(beta=float("nan")), "beta"),
    ("ipo", dict(beta=float("inf")), "beta"),
    ("sigmoid", dict(label_smoothing=0.6), r"label_smoothing must lie in \[0.0, 0.5\]"),
    ("cdpo", dict(label_smoothing=-0.1), r"label_smoothing must lie in \[0.0, 0.5\]"),
    ("aot", dict(label_smoothing=0.51), r"label_smoothing must lie in \[0.0, 0.5\]"),
    ("aot_unpaired", dict(label_smoothing=1.0), r"label_smoothing must lie in \[0.0, 0.5\]"),
    ("robust", dict(label_smoothing=0.5), r"label_smoothing must lie in \[0.0, 0.5\)"),
    ("exo_pair", dict(label_smoothing=0.0), r"label_smoothing must lie in \(0.0, 1.0\)"),
    ("exo_pair", dict(label_smoothing=1.0), r"label_smoothing must lie in \(0.0, 1.0\)"),
    ("exo_pair", dict(label_smoothing=float("nan")), "label_smoothing"),
    ("ipo", dict(length=0.0), "length"),
    ("sigmoid_norm", dict(length=-2.0), "length"),
    ("discopop", dict(discopop_tau=0.0), "discopop_tau"),
    ("discopop", dict(discopop_tau=-0.05), "discopop_tau"),
    ("hinge", dict(label_smoothing=0.1), "does not take parameter 'label_smoothing'"),
    ("sigmoid", dict(length=2.0), "does not take parameter 'length'"),
    ("ipo", dict(tau=0.5), "does not take parameter 'tau'"),
    ("sigmoid", dict(beta="big"), "beta must be a real number"),
]


@pytest.mark.parametrize("name,params,message", INVALID)
def test_invalid_parameters(name, params, message):
    with pytest.raises(ValueError, match=message) as exc:
        pair_loss(name, 0.0, 0.0, 0.0, 0.0, **params)
    assert name in str(exc.value)
    with pytest.raises(ValueError, match=message):
        get_pair_loss(name).pack(params)


def test_aot_needs_batch_axis():
    with pytest.raises(ValueError, match="batch axis"):
        pair_loss("aot", 0.0, 0.0, 0.0, 0.0)


def test_non_numeric_and_unbroadcastable_inputs():
    with pytest.raises(ValueError, match="logp_l must be a numeric array"):
        pair_loss("sigmoid", 0.0, "x", 0.0, 0.0)
    with pytest.raises(ValueError, match="broadcast"):
        pair_loss("sigmoid", np.zeros(2), np.zeros(3), 0.0, 0.0)


def test_population_loss_shape_checks():
    with pytest.raises(ValueError, match="lp must have shape"):
        population_loss("sigmoid", np.zeros((1, 3)), np.zeros((1, 2)), np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match="non-negative"):
        population_loss("sigmoid", np.zeros((1, 2)), np.zeros((1, 2)), -np.ones((1, 2, 2)))


# ------------------------------------------------------------------------------------------------
# Hand-computed values (rlax style), beta = 0.5.
# Pairs: A u=(1,-1) h=2; B u=(0,0) h=0; C u=(-1,0) h=-1.

LW = np.array([1.0, 0.0, -2.0])
LL = np.array([-1.0, 0.0, -1.0])
RW = np.array([0.0, 0.0, -1.0])
RL = np.array([0.0, 0.0, -1.0])
LOG2 = math.log(2.0)

EXPECTED = [
    ("sigmoid", {}, [-_ls(1.0), LOG2, -_ls(-0.5)]),
    ("dpo", {}, [-_ls(1.0), LOG2, -_ls(-0.5)]),
    ("cdpo", dict(label_smoothing=0.2),
     [-0.8 * _ls(1.0) - 0.2 * _ls(-1.0), LOG2, -0.8 * _ls(-0.5) - 0.2 * _ls(0.5)]),
    ("hinge", {}, [0.0, 1.0, 1.5]),
    ("slic", {}, [0.0, 1.0, 1.5]),
    ("ipo", {}, [1.0, 1.0, 4.0]),
    ("ipo", dict(length=2.0), [0.0, 1.0, 2.25]),
    ("exo_pair", dict(label_smoothing=0.1),
     [_sig(1.0) * (_ls(1.0) - math.log(0.9)) + _sig(-1.0) * (_ls(-1.0) - math.log(0.1)),
      0.5 * (-LOG2 - math.log(0.9)) + 0.5 * (-LOG2 - math.log(0.1)),
      _sig(-0.5) * (_ls(-0.5) - math.log(0.9)) + _sig(0.5) * (_ls(0.5) - math.log(0.1))]),
    ("nca_pair", {}, [-_ls(0.5) - 0.5 * _ls(-0.5) - 0.5 * _ls(0.5), 2 * LOG2,
                      -_ls(-0.5) - 0.5 * _ls(0.5) + 0.5 * LOG2]),
    ("robust", dict(label_smoothing=0.2),
     [(-0.8 * _ls(1.0) + 0.2 * _ls(-1.0)) / 0.6, LOG2, (-0.8 * _ls(-0.5) + 0.2 * _ls(0.5)) / 0.6]),
    ("bco_pair", {}, [-2 * _ls(0.5), 2 * LOG2, -_ls(-0.5) + LOG2]),
    ("sppo_hard", {}, [0.0, 2.0, 5.0]),
    ("apo_zero", {}, [2 * _sig(-0.5), 1.0, 1 - _sig(-0.5) + 0.5]),
    ("apo_down", {}, [_sig(0.5) + 1 - _sig(1.0), 1.0, 1.0]),
    ("discopop", {}, [(1 - _sig(20.0)) * -_ls(1.0) + _sig(20.0) * math.exp(-1.0), 0.5 * LOG2 + 0.5,
                      (1 - _sig(-10.0)) * -_ls(-0.5) + _sig(-10.0) * math.exp(0.5)]),
    ("discopop", dict(discopop_tau=1.0),
     [(1 - _sig(1.0)) * -_ls(1.0) + _sig(1.0) * math.exp(-1.0), 0.5 * LOG2 + 0.5,
      (1 - _sig(-0.5)) * -_ls(-0.5) + _sig(-0.5) * math.exp(0.5)]),
    ("sft", {}, [-1.0, 0.0, 2.0]),
    ("sigmoid_norm", {}, [-_ls(1.0), LOG2, -_ls(-0.5)]),
    ("sigmoid_norm", dict(length=2.0), [-_ls(0.5), LOG2, -_ls(-0.25)]),
    # Sorted along the batch: a = lw - ll = (2, 0, -1) -> (-1, 0, 2); ref diffs all 0.
    ("aot", {}, [-_ls(-0.5), LOG2, -_ls(1.0)]),
    ("aot", dict(label_smoothing=0.5), [-0.5 * _ls(-0.5) - 0.5 * _ls(0.5), LOG2,
                                        -0.5 * _ls(1.0) - 0.5 * _ls(-1.0)]),
    # sort(u_w) = (-1, 0, 1), sort(u_l) = (-1, 0, 0): Delta = (0, 0, 1).
    ("aot_unpaired", {}, [LOG2, LOG2, -_ls(0.5)]),
]


@pytest.mark.parametrize("name,params,expected", EXPECTED)
def test_hand_computed_values(name, params, expected):
    got = pair_loss(name, LW, LL, RW, RL, beta=0.5, **params)
    assert got.dtype == np.float64 and got.shape == (3,)
    np.testing.assert_allclose(got, expected, rtol=1e-14, atol=1e-15)
    got_t = pair_loss(name, torch.tensor(LW), torch.tensor(LL), torch.tensor(RW), torch.tensor(RL),
                      beta=0.5, **params)
    np.testing.assert_allclose(got_t.numpy(), expected, rtol=1e-14, atol=1e-15)


def test_every_loss_has_hand_values():
    assert {name for name, _, _ in EXPECTED} == set(ALL_NAMES)


def test_defaults_match_trl():
    # beta = 0.1 default: h = 1 -> -log sigma(0.1); exo uses eps = 1e-3 by default.
    assert float(pair_loss("sigmoid", 1.0, 0.0, 0.0, 0.0)) == pytest.approx(-_ls(0.1), rel=1e-15)
    exo = float(pair_loss("exo_pair", 0.0, 0.0, 0.0, 0.0))
    assert exo == pytest.approx(0.5 * (-LOG2 - math.log1p(-1e-3)) + 0.5 * (-LOG2 - math.log(1e-3)),
                                rel=1e-15)
    assert float(pair_loss("ipo", 0.0, 0.0, 0.0, 0.0)) == pytest.approx(25.0, rel=1e-15)


def test_scalar_inputs_return_numpy_scalar():
    out = pair_loss("sigmoid", 0.0, 0.0, 0.0, 0.0)
    assert isinstance(out, np.float64) and out == pytest.approx(LOG2, rel=1e-15)
    assert pair_loss("sft", np.zeros((2, 1)), np.zeros((1, 3)), 0.0, 0.0).shape == (2, 3)


# ------------------------------------------------------------------------------------------------
# numpy vs torch, stability, autograd


def _random_pairs(rng, n=64, scale=3.0):
    return [rng.normal(size=n) * scale for _ in range(4)]


@pytest.mark.parametrize("name", ALL_NAMES)
def test_numpy_matches_torch(name):
    rng = np.random.default_rng(1)
    args = _random_pairs(rng)
    got = pair_loss(name, *args, **PARAMS[name])
    targs = [torch.tensor(a, requires_grad=True) for a in args]
    got_t = pair_loss(name, *targs, **PARAMS[name])
    assert isinstance(got_t, torch.Tensor) and got_t.dtype == torch.float64
    np.testing.assert_allclose(got_t.detach().numpy(), got, rtol=1e-14, atol=1e-14)
    got_t.sum().backward()
    # sft reads logp_w only, so the other inputs get no gradient.
    grads = [np.zeros_like(a) if t.grad is None else t.grad.numpy() for a, t in zip(args, targs)]
    assert targs[0].grad is not None
    # The gradient is right, not just finite: directional central differences of the numpy
    # loss's sum along random directions (inputs away from hinge kinks and AOT rank swaps).
    dirs = np.random.default_rng(2)
    step = 1e-6
    for _ in range(3):
        v = [dirs.normal(size=a.shape) for a in args]
        up = pair_loss(name, *[a + step * d for a, d in zip(args, v)], **PARAMS[name]).sum()
        dn = pair_loss(name, *[a - step * d for a, d in zip(args, v)], **PARAMS[name]).sum()
        slope = sum(float((g * d).sum()) for g, d in zip(grads, v))
        assert (up - dn) / (2 * step) == pytest.approx(slope, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_mixed_numpy_torch_inputs(name):
    rng = np.random.default_rng(2)
    lw, ll, rw, rl = _random_pairs(rng, n=8)
    got = pair_loss(name, torch.tensor(lw), torch.tensor(ll), rw, rl, **PARAMS[name])
    assert isinstance(got, torch.Tensor)
    np.testing.assert_allclose(got.numpy(), pair_loss(name, lw, ll, rw, rl, **PARAMS[name]),
                               rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_extreme_margins_are_finite(name):
    # |beta h| up to 1e3 (beta = 1): no overflow to inf, no NaN, on both backends.
    h = np.array([-1000.0, -300.0, -40.0, 0.0, 40.0, 300.0, 1000.0])
    args = [h / 2, -h / 2, np.zeros_like(h), np.zeros_like(h)]
    params = {**PARAMS[name], "beta": 1.0}
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        got = pair_loss(name, *args, **params)
    assert np.isfinite(got).all()
    targs = [torch.tensor(a, requires_grad=True) for a in args]
    got_t = pair_loss(name, *targs, **params)
    np.testing.assert_allclose(got_t.detach().numpy(), got, rtol=1e-14, atol=1e-14)
    got_t.sum().backward()
    assert all(t.grad is None or torch.isfinite(t.grad).all() for t in targs)
    if PAIR_LOSSES[name].needs_batch:
        return
    # and exact there: the numba kernel's analytic derivatives (direct tails, no cancellation)
    spec = get_pair_loss(name)
    prm = spec.pack(params)
    exact = np.array([pk.pair_value_grad(spec.code, *a, prm) for a in zip(*args)])
    scale = np.abs(exact[:, 1:]).max()
    for col, t in ((1, targs[0]), (2, targs[1])):
        torch_grad = np.zeros(len(h)) if t.grad is None else t.grad.numpy()
        np.testing.assert_allclose(torch_grad, exact[:, col], rtol=1e-12, atol=1e-15 * scale)


def test_extreme_sigmoid_is_linear_tail():
    # -log sigma(-1000) = 1000 + log1p(e^-1000) = 1000 exactly in float64 (naive: log(0) = -inf).
    assert float(pair_loss("sigmoid", -1000.0, 0.0, 0.0, 0.0, beta=1.0)) == 1000.0
    assert float(pair_loss("discopop", -1000.0, 0.0, 0.0, 0.0, beta=1.0)) == 1000.0


def test_aot_sorts_along_axis0_like_trl():
    rng = np.random.default_rng(3)
    lw, ll, rw, rl = (rng.normal(size=(6, 2)) for _ in range(4))
    got = pair_loss("aot", lw, ll, rw, rl, beta=0.4, label_smoothing=0.1)
    delta = np.sort(lw - ll, axis=0) - np.sort(rw - rl, axis=0)
    expected = -0.9 * _vls(0.4 * delta) - 0.1 * _vls(-0.4 * delta)
    np.testing.assert_allclose(got, expected, rtol=1e-14)
    got_u = pair_loss("aot_unpaired", lw, ll, rw, rl, beta=0.4)
    delta_u = np.sort(lw - rw, axis=0) - np.sort(ll - rl, axis=0)
    np.testing.assert_allclose(got_u, -_vls(0.4 * delta_u), rtol=1e-14)
    # Each column is sorted on its own: permuting rows leaves the result unchanged.
    perm = rng.permutation(6)
    np.testing.assert_array_equal(pair_loss("aot", lw[perm], ll[perm], rw[perm], rl[perm],
                                            beta=0.4, label_smoothing=0.1), got)


def _vls(z):
    return -np.logaddexp(0.0, -z)


# ------------------------------------------------------------------------------------------------
# Properties (hypothesis)

_floats = st.floats(-6.0, 6.0, allow_nan=False, allow_infinity=False)
_betas = st.floats(0.05, 5.0)


@st.composite
def _pairs(draw, max_n=6):
    n = draw(st.integers(1, max_n))
    arr = st.lists(_floats, min_size=n, max_size=n).map(np.array)
    return [draw(arr) for _ in range(5)]   # lw, ll, rw, rl, per-pair shift


@pytest.mark.parametrize("name", sorted(set(ALL_NAMES) - NOT_SHIFT_INVARIANT))
@settings(max_examples=examples(40), deadline=None)
@given(data=_pairs(), beta=_betas)
def test_shift_invariant_losses(name, data, beta):
    lw, ll, rw, rl, c = data
    assert PAIR_LOSSES[name].shift_invariant
    base = pair_loss(name, lw, ll, rw, rl, beta=beta)
    # A per-pair constant added to u_w and u_l, via the policy and via the reference.
    np.testing.assert_allclose(pair_loss(name, lw + c, ll + c, rw, rl, beta=beta), base,
                               rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(pair_loss(name, lw, ll, rw - c, rl - c, beta=beta), base,
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", sorted(NOT_SHIFT_INVARIANT))
def test_non_shift_invariant_losses_change(name):
    assert not PAIR_LOSSES[name].shift_invariant
    lw, ll = np.array([0.3, -0.2]), np.array([-0.1, 0.4])
    zero = np.zeros(2)
    c = np.array([1.0, -2.0])
    base = pair_loss(name, lw, ll, zero, zero, beta=0.5)
    shifted = pair_loss(name, lw + c, ll + c, zero, zero, beta=0.5)
    assert np.abs(shifted - base).max() > 1e-3


@settings(max_examples=examples(60), deadline=None)
@given(data=_pairs(), beta=_betas)
def test_sigmoid_equals_robust_and_cdpo_at_zero_smoothing(data, beta):
    lw, ll, rw, rl, _ = data
    ref = pair_loss("sigmoid", lw, ll, rw, rl, beta=beta)
    for name in ("dpo", "cdpo", "robust"):
        np.testing.assert_array_equal(
            pair_loss(name, lw, ll, rw, rl, beta=beta, label_smoothing=0.0), ref)
    # The numba kernel agrees for the three codes as well.
    for name in ("sigmoid", "robust"):
        prm = get_pair_loss(name).pack({"beta": beta})
        for k in range(len(lw)):
            v, _, _ = pk.pair_value_grad(get_pair_loss(name).code, lw[k], ll[k], rw[k], rl[k], prm)
            assert v == pytest.approx(ref[k], rel=1e-12, abs=1e-12)


@settings(max_examples=examples(60), deadline=None)
@given(data=_pairs(), beta=_betas, eps=st.floats(1e-4, 1 - 1e-4))
def test_exo_swap_with_label_flip(data, beta, eps):
    # Swapping (y_w, y_l) is the same as flipping the target distribution (1-eps, eps).
    lw, ll, rw, rl, _ = data
    a = pair_loss("exo_pair", ll, lw, rl, rw, beta=beta, label_smoothing=eps)
    b = pair_loss("exo_pair", lw, ll, rw, rl, beta=beta, label_smoothing=1.0 - eps)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


@st.composite
def _population(draw):
    X = draw(st.integers(1, 2))
    K = draw(st.integers(2, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    lp = rng.normal(size=(X, K)) * 2
    lp -= np.log(np.exp(lp).sum(1, keepdims=True))
    rlp = rng.normal(size=(X, K))
    rlp -= np.log(np.exp(rlp).sum(1, keepdims=True))
    W = rng.random((X, K, K)) * (rng.random((X, K, K)) < 0.7)
    W[0, 0, 1] += 0.1
    return lp, rlp, W / W.sum()


@settings(max_examples=examples(40), deadline=None)
@given(pop=_population(), beta=_betas, eps=st.floats(0.0, 0.5))
def test_cdpo_is_dpo_on_noisy_labels(pop, beta, eps):
    lp, rlp, W = pop
    noisy = (1 - eps) * W + eps * W.transpose(0, 2, 1)
    a = population_loss("cdpo", lp, rlp, W, beta=beta, label_smoothing=eps)
    b = population_loss("sigmoid", lp, rlp, noisy, beta=beta)
    assert a == pytest.approx(b, rel=1e-11, abs=1e-12)


@settings(max_examples=examples(40), deadline=None)
@given(pop=_population(), beta=_betas, eps=st.floats(0.0, 0.45))
def test_robust_is_unbiased_under_label_noise(pop, beta, eps):
    # rDPO's defining property: its expectation under eps-flipped labels is the clean DPO loss.
    lp, rlp, W = pop
    noisy = (1 - eps) * W + eps * W.transpose(0, 2, 1)
    a = population_loss("robust", lp, rlp, noisy, beta=beta, label_smoothing=eps)
    b = population_loss("sigmoid", lp, rlp, W, beta=beta)
    assert a == pytest.approx(b, rel=1e-10, abs=1e-11)


@settings(max_examples=examples(30), deadline=None)
@given(pop=_population(), beta=_betas, shift=st.lists(_floats, min_size=2, max_size=2))
def test_population_invariant_to_per_context_logit_shift(pop, beta, shift):
    lp, rlp, W = pop
    lp2 = lp + np.array(shift[: lp.shape[0]])[:, None]
    for name in ALL_NAMES:
        if not PAIR_LOSSES[name].shift_invariant:
            continue
        a = population_loss(name, lp, rlp, W, beta=beta)
        b = population_loss(name, lp2, rlp, W, beta=beta)
        assert b == pytest.approx(a, rel=1e-9, abs=1e-9), name


def test_population_loss_skips_zero_weight_pairs_with_inf_logps():
    lp = np.array([[math.log(0.5), math.log(0.5), -np.inf]])
    rlp = np.array([[math.log(0.3), math.log(0.7), -np.inf]])
    W = np.zeros((1, 3, 3))
    W[0, 0, 1] = 1.0
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        for name in ALL_NAMES:
            v = population_loss(name, lp, rlp, W, **PARAMS[name])
            expected = pair_loss(name, lp[0, :1], lp[0, 1:2], rlp[0, :1], rlp[0, 1:2],
                                 **PARAMS[name])[0]
            assert v == pytest.approx(expected, rel=1e-14), name


@pytest.mark.parametrize("name", ALL_NAMES)
def test_population_loss_of_empty_weights_is_zero(name):
    lp = np.log(np.array([[0.2, 0.8]]))
    assert population_loss(name, lp, lp, np.zeros((1, 2, 2))) == 0.0
    lpt = torch.tensor(lp, requires_grad=True)
    loss = population_loss(name, lpt, torch.tensor(lp), np.zeros((1, 2, 2)))
    loss.backward()
    assert loss.item() == 0.0 and (lpt.grad == 0).all()


# ------------------------------------------------------------------------------------------------
# TRL's per-pair formulas, written out from trl/trainer/dpo_trainer.py (DPOTrainer._compute_loss,
# huggingface/trl commit f2cd57710ae345ea6428ae95363267fcf38a3dc8), compared elementwise.

F = torch.nn.functional


def _trl_scores(f_divergence_type, coef, chosen_logratios, rejected_logratios):
    """TRL's f-divergence block, verbatim in structure (float64: TRL has no float64 clamp entry,
    so the float32 clamp at 80 is applied here and the test data keep (a - 1) u below it)."""
    if f_divergence_type == "reverse_kl":
        return chosen_logratios, rejected_logratios
    if f_divergence_type == "forward_kl":
        return -torch.exp(-chosen_logratios), -torch.exp(-rejected_logratios)
    if f_divergence_type == "js_divergence":
        return F.logsigmoid(chosen_logratios), F.logsigmoid(rejected_logratios)
    if abs(coef - 1.0) < 1e-6:
        return chosen_logratios, rejected_logratios
    c = 1.0 / (coef - 1.0)
    t_chosen = torch.clamp((coef - 1.0) * chosen_logratios, max=80.0)
    t_rejected = torch.clamp((coef - 1.0) * rejected_logratios, max=80.0)
    return torch.exp(t_chosen) * c, torch.exp(t_rejected) * c


def _trl_per_sequence_loss(loss_type, chosen_logps, rejected_logps, ref_chosen_logps,
                           ref_rejected_logps, beta=0.1, label_smoothing=0.0, length=1.0,
                           discopop_tau=0.05, f_divergence_type="reverse_kl",
                           f_alpha_divergence_coef=0.5):
    chosen_logratios = chosen_logps - ref_chosen_logps
    rejected_logratios = rejected_logps - ref_rejected_logps
    chosen_scores, rejected_scores = _trl_scores(f_divergence_type, f_alpha_divergence_coef,
                                                 chosen_logratios, rejected_logratios)
    delta_score = chosen_scores - rejected_scores
    eps = label_smoothing
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * delta_score)
    if loss_type == "hinge":
        return torch.relu(1 - beta * delta_score)
    if loss_type == "ipo":
        return (chosen_scores / length - rejected_scores / length - 1 / (2 * beta)) ** 2
    if loss_type == "exo_pair":
        qw, log_qw = torch.sigmoid(beta * delta_score), F.logsigmoid(beta * delta_score)
        ql, log_ql = torch.sigmoid(-beta * delta_score), F.logsigmoid(-beta * delta_score)
        return qw * (log_qw - math.log1p(-eps)) + ql * (log_ql - math.log(eps))
    if loss_type == "nca_pair":
        cr, rr = beta * chosen_scores, beta * rejected_scores
        return -F.logsigmoid(cr) - 0.5 * F.logsigmoid(-cr) - 0.5 * F.logsigmoid(-rr)
    if loss_type == "robust":
        clean = -(1 - eps) * F.logsigmoid(beta * delta_score)
        flipped = -eps * F.logsigmoid(-beta * delta_score)
        return (clean - flipped) / (1 - 2 * eps)
    if loss_type == "bco_pair":
        return -F.logsigmoid(beta * chosen_scores) - F.logsigmoid(-beta * rejected_scores)
    if loss_type == "sppo_hard":
        return (chosen_scores - 0.5 / beta) ** 2 + (rejected_scores + 0.5 / beta) ** 2
    if loss_type in ("aot", "aot_unpaired"):
        if loss_type == "aot":
            delta = (torch.sort(chosen_logps - rejected_logps, dim=0)[0]
                     - torch.sort(ref_chosen_logps - ref_rejected_logps, dim=0)[0])
        else:
            delta = (torch.sort(chosen_logratios, dim=0)[0]
                     - torch.sort(rejected_logratios, dim=0)[0])
        return -F.logsigmoid(beta * delta) * (1 - eps) - F.logsigmoid(-beta * delta) * eps
    if loss_type == "apo_zero":
        return (1 - torch.sigmoid(beta * chosen_logratios)) + torch.sigmoid(beta * rejected_logratios)
    if loss_type == "apo_down":
        return torch.sigmoid(beta * chosen_logratios) + (1 - torch.sigmoid(beta * delta_score))
    if loss_type == "discopop":
        logits = delta_score * beta
        m = torch.sigmoid(logits / discopop_tau)
        return -F.logsigmoid(logits) * (1 - m) + torch.exp(-logits) * m
    if loss_type == "sft":
        return (-chosen_logps).mean().expand(chosen_logps.shape[0])   # one-token cross-entropy
    if loss_type == "sigmoid_norm":
        return -F.logsigmoid(beta * (chosen_scores / length - rejected_scores / length))
    raise AssertionError(loss_type)


_TRL_DIVERGENCES = [("reverse_kl", 0.5), ("forward_kl", 0.5), ("js_divergence", 0.5),
                    ("alpha_divergence", 0.5), ("alpha_divergence", 0.2),
                    ("alpha_divergence", 1.7), ("alpha_divergence", 1.0)]


@pytest.mark.parametrize("div,coef", _TRL_DIVERGENCES)
@pytest.mark.parametrize("name", TRL_LOSS_TYPES)
def test_pair_loss_matches_trl_formula_with_divergence(name, div, coef):
    rng = np.random.default_rng(21)
    args = [rng.normal(size=40) * 3 for _ in range(4)]
    params = {k: v for k, v in PARAMS[name].items()}
    if name == "sigmoid":
        params.pop("label_smoothing")   # TRL HEAD's sigmoid has no label smoothing (that is cdpo)
    divergence = dict(f_divergence_type=div, f_alpha_divergence_coef=coef)
    if PAIR_LOSSES[name].divergence_scope == "none" and div != "reverse_kl":
        with pytest.raises(ValueError, match="f_divergence_type"):
            pair_loss(name, *args, **params, **divergence)
        return
    u = np.concatenate([args[0] - args[2], args[1] - args[3]])
    assert ((coef - 1.0) * u).max() < 80.0   # TRL's float32 clamp does not bind
    ours = pair_loss(name, *args, **params, **divergence)
    trl = _trl_per_sequence_loss(name, *(torch.tensor(a) for a in args), **params, **divergence)
    if name == "sft":   # TRL expands the batch-mean cross-entropy; ours is per pair
        ours = np.full_like(ours, ours.mean())
    trl = trl.numpy()
    assert np.isfinite(ours).all()
    # TRL's discopop evaluates exp(-beta delta) * sigma(beta delta / tau), which is inf * 0 = NaN
    # once beta delta < -709 (reachable at moderate log-ratios with forward KL scores); ours is the
    # stable form. Everywhere else the two agree.
    ok = np.isfinite(trl)
    assert ok.all() or name == "discopop"
    np.testing.assert_allclose(ours[ok], trl[ok], rtol=1e-12, atol=1e-12)


def test_combined_loss_matches_trl_weighted_sum():
    # MPO: TRL loss = sum_c loss_weight_c * per_sequence_loss_c.mean().
    import coverage_sim as cs
    rng = np.random.default_rng(5)
    args = [rng.normal(size=30) for _ in range(4)]
    obj = cs.objective("mpo", beta=0.4, f_divergence_type="js_divergence")
    trl = sum(w * _trl_per_sequence_loss(n, *(torch.tensor(a) for a in args), beta=0.4,
                                         f_divergence_type="js_divergence").mean()
              for n, w in zip(("sigmoid", "bco_pair", "sft"), (0.8, 0.2, 1.0)))
    assert obj.pair_loss(*args).mean() == pytest.approx(trl.item(), rel=1e-13)


def _trl_ld_logps(per_token_logps, completion_mask, ld_alpha):
    """TRL's LD-DPO aggregation, verbatim in structure: the batch is [chosen; rejected]."""
    comp_pos = completion_mask.cumsum(dim=1)
    comp_lens = completion_mask.sum(dim=1).long()
    chosen_lens, rejected_lens = comp_lens.chunk(2, dim=0)
    shared_lens = torch.minimum(chosen_lens, rejected_lens)
    shared_lens = torch.cat([shared_lens, shared_lens], dim=0)
    shared_mask = (comp_pos > 0) & (comp_pos <= shared_lens.unsqueeze(1))
    tail_mask = comp_pos > shared_lens.unsqueeze(1)
    per_token_logps = per_token_logps.masked_fill(completion_mask == 0, 0.0)
    shared_logps = (per_token_logps * shared_mask).sum(dim=1)
    tail_logps = (per_token_logps * tail_mask).sum(dim=1)
    return (shared_logps + ld_alpha * tail_logps).chunk(2, dim=0)


@pytest.mark.parametrize("ld_alpha", [0.0, 0.3, 1.0])
def test_ld_sequence_logps_match_trl_on_unequal_lengths(ld_alpha):
    rng = np.random.default_rng(8)
    B, T = 16, 12
    masks, logps = [], []
    for _ in range(2):   # chosen, rejected: prompt of 1-3 tokens, completion of 1-9, padding
        m = np.zeros((B, T))
        for b in range(B):
            start = rng.integers(1, 4)
            m[b, start:start + rng.integers(1, 10)] = 1.0
        masks.append(m)
        logps.append(-rng.exponential(size=(B, T)))
    lengths = [m.sum(1) for m in masks]
    assert (lengths[0] != lengths[1]).sum() >= B // 2   # unequal lengths, both ways
    ours = ld_sequence_logps(logps[0], masks[0], logps[1], masks[1], ld_alpha)
    trl = _trl_ld_logps(torch.tensor(np.concatenate(logps)), torch.tensor(np.concatenate(masks)),
                        ld_alpha)
    for a, b in zip(ours, trl):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-14)
    ours_t = ld_sequence_logps(*(torch.tensor(a) for a in (logps[0], masks[0], logps[1],
                                                          masks[1])), ld_alpha)
    for a, b in zip(ours_t, trl):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-14)
    # the LD-DPO per-pair loss is pair_loss on these sequence log-probs
    ref = [-rng.exponential(size=B) * 5 for _ in range(2)]
    np.testing.assert_allclose(
        pair_loss("sigmoid", *ours, *ref, beta=0.2),
        _trl_per_sequence_loss("sigmoid", *trl, *(torch.tensor(r) for r in ref), beta=0.2).numpy(),
        rtol=1e-13)
    # ld_alpha = 1, or equal lengths, is the plain sum (LD-DPO = DPO)
    plain = ld_sequence_logps(logps[0], masks[0], logps[0], masks[0], ld_alpha)
    np.testing.assert_allclose(plain[0], (logps[0] * masks[0]).sum(1), rtol=1e-14)
    if ld_alpha < 1.0:
        longer = lengths[0] > lengths[1]
        assert (ours[0][longer] > (logps[0] * masks[0]).sum(1)[longer]).all()


DIVERGENCE_INVALID = [
    ("sigmoid", dict(f_divergence_type="kl"), "f_divergence_type"),
    ("ipo", dict(f_divergence_type=None), "f_divergence_type"),
    ("sigmoid", dict(f_alpha_divergence_coef=float("nan")), "f_alpha_divergence_coef"),
    ("sigmoid", dict(f_alpha_divergence_coef="half"), "f_alpha_divergence_coef"),
    ("sft", dict(f_divergence_type="forward_kl"), "no effect"),
    ("aot", dict(f_divergence_type="js_divergence"), "no effect"),
    ("apo_zero", dict(f_divergence_type="alpha_divergence"), "no effect"),
    ("sigmoid", dict(use_weighting=True), "population_loss"),
]


@pytest.mark.parametrize("name,params,message", DIVERGENCE_INVALID)
def test_invalid_modifiers(name, params, message):
    with pytest.raises(ValueError, match=message):
        pair_loss(name, np.zeros(2), 0.0, 0.0, 0.0, **params)


@pytest.mark.parametrize("name,value,message", [
    ("aot", True, "sorts the batch"), ("aot_unpaired", True, "sorts the batch"),
    ("sft", True, "not modelled"), ("sigmoid", 1, "True or False"),
    ("ipo", "yes", "True or False")])
def test_invalid_use_weighting(name, value, message):
    lp = np.log(np.array([[0.5, 0.5]]))
    W = np.array([[[0.0, 1.0], [0.0, 0.0]]])
    with pytest.raises(ValueError, match=message):
        population_loss(name, lp, lp, W, use_weighting=value)
    with pytest.raises(ValueError, match=message):
        get_pair_loss(name).pack({"use_weighting": value})


def test_ld_alpha_out_of_range():
    with pytest.raises(ValueError, match="ld_alpha"):
        ld_sequence_logps(np.zeros((1, 2)), np.ones((1, 2)), np.zeros((1, 2)), np.ones((1, 2)), 1.5)
    with pytest.raises(ValueError, match="shape"):
        ld_sequence_logps(np.zeros((1, 2)), np.ones((1, 3)), np.zeros((1, 2)), np.ones((1, 2)), 0.5)
