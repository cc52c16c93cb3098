"""A small explicit PRNG for numba loops: xoshiro256** (Blackman and Vigna, arXiv:1805.01407).

The sampled mode draws its batches inside fused numba loops, including batches of independent
problems spread over threads, and a run must be bit-identical whatever the thread count. That
needs one explicit stream per problem whose state is plain data. numba 0.68 can take
``np.random.Generator`` objects into jitted code (a reflected list of them even works inside
``prange``), but we do not use them, because:

* a per-problem state here is one row of a ``(B, 4)`` uint64 array, which slices, stacks and copies
  like any other engine buffer; a list of Python Generator objects crossing into ``prange`` relies on
  numba's reflected lists, which numba deprecates;
* the stream is defined by this file (the reference algorithm below, checked against the authors' C
  code in the tests), not by how a numba release implements ``Generator`` methods;
* a draw costs about 1.2 ns here against about 7 ns through ``Generator.random()`` in numba
  (measured on the development machine; the sampler draws a few numbers per response).

Seeding: :func:`seed_state` expands a seed with ``numpy.random.SeedSequence`` (never global random
state), as numpy's own bit generators do. Uniforms are the top 53 bits, so they lie in ``[0, 1)`` with
spacing 2^-53.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

__all__ = ["seed_state", "next_u64", "uniform"]

_JIT = dict(cache=True, error_model="numpy")
_TWO_POW_M53 = 1.0 / 9007199254740992.0


def seed_state(seed, spawn_key: tuple = ()) -> np.ndarray:
    """The 4-word xoshiro256** state of ``SeedSequence(seed, spawn_key=spawn_key)``.

    Args:
      seed: a non-negative int (the SeedSequence entropy).
      spawn_key: SeedSequence spawn key, to derive independent streams from one seed.

    Returns:
      uint64 array of shape (4,), never all zero (the one state xoshiro cannot leave).
    """
    state = np.random.SeedSequence(seed, spawn_key=tuple(spawn_key)).generate_state(4, np.uint64)
    if not state.any():  # probability 2^-256, but the all-zero state would be a constant stream
        state[0] = 1
    return state


@njit(inline="always")
def _rotl(x, k):
    return (x << uint64(k)) | (x >> uint64(64 - k))


@njit(**_JIT)
def next_u64(s):
    """Advance the state ``s`` (uint64 (4,), modified in place) and return the next 64-bit output."""
    result = _rotl(s[1] * uint64(5), 7) * uint64(9)
    t = s[1] << uint64(17)
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = _rotl(s[3], 45)
    return result


@njit(**_JIT)
def uniform(s):
    """A uniform double in ``[0, 1)`` from the top 53 bits of the next output."""
    return float(next_u64(s) >> uint64(11)) * _TWO_POW_M53
