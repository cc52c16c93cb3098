"""Tests for the xoshiro256** stream of coverage_sim._rng against the authors' reference algorithm."""

from __future__ import annotations

import numpy as np

from coverage_sim import _rng

MASK = (1 << 64) - 1


def _reference_xoshiro(state, n):
    """xoshiro256** transcribed from Blackman and Vigna's C code (prng.di.unimi.it), in Python
    integers."""
    s = [int(v) for v in state]
    rotl = lambda x, k: ((x << k) | (x >> (64 - k))) & MASK  # noqa: E731
    out = []
    for _ in range(n):
        out.append((rotl((s[1] * 5) & MASK, 7) * 9) & MASK)
        t = (s[1] << 17) & MASK
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
    return out, s


def test_stream_matches_the_reference_algorithm():
    state = _rng.seed_state(12345)
    expected, final = _reference_xoshiro(state, 1000)
    got = [int(_rng.next_u64(state)) for _ in range(1000)]
    assert got == expected
    assert [int(v) for v in state] == final


def test_uniforms_are_the_top_53_bits_in_unit_interval():
    state = _rng.seed_state(7)
    ref_state = state.copy()
    u = np.array([_rng.uniform(state) for _ in range(20000)])
    raw, _ = _reference_xoshiro(ref_state, 20000)
    assert np.array_equal(u, np.array([(r >> 11) * 2.0 ** -53 for r in raw]))
    assert u.min() >= 0.0 and u.max() < 1.0
    # mean and variance of U[0, 1) within 5 standard errors
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / u.size)
    assert abs(u.var() - 1 / 12) < 5 * np.sqrt(1 / 180 / u.size)


def test_seed_state_is_seedsequence_and_never_all_zero():
    a = _rng.seed_state(3)
    assert a.dtype == np.uint64 and a.shape == (4,) and a.any()
    assert np.array_equal(a, np.random.SeedSequence(3).generate_state(4, np.uint64))
    assert np.array_equal(_rng.seed_state(3, (0,)),
                          np.random.SeedSequence(3, spawn_key=(0,)).generate_state(4, np.uint64))
    assert not np.array_equal(_rng.seed_state(3), _rng.seed_state(4))
    assert not np.array_equal(_rng.seed_state(3), _rng.seed_state(3, (0,)))
