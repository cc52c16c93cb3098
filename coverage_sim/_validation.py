"""Input checks shared by every public function.

Each check coerces to a contiguous float64 array (the only layout the numba kernels are compiled for, so
that a fresh clone compiles each kernel once) and raises a ``ValueError`` that names the parameter, the
offending value and what is allowed.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

__all__ = [
    "as_float_array",
    "check_finite",
    "check_distribution",
    "check_positive",
    "check_in_range",
    "check_choice",
    "check_int",
    "check_seed",
    "check_beta",
]

#: Smallest beta a pairwise loss accepts: below it the per-pair losses' gradients (which scale with
#: beta) fall below Adam's eps and float64 resolution, and IPO's target 1/(2 beta) squared
#: overflows near 1e-154, so a run would be silently inert or infinite. (Objectives whose beta only
#: weights a KL term, such as rlhf, take any beta > 0.)
BETA_MIN = 1e-6


def _describe(value) -> str:
    arr = np.asarray(value)
    if arr.ndim == 0:
        return repr(value)
    return f"array of shape {arr.shape}"


def as_float_array(value, name: str, *, ndim: Iterable[int] | int | None = None,
                   shape: tuple | None = None) -> np.ndarray:
    """Return ``value`` as a C-contiguous float64 array, checking its rank and shape."""
    if value is None or isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be a numeric array, got {value!r}")
    try:
        arr = np.ascontiguousarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array, got {value!r}") from exc
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            raise ValueError(
                f"{name} must have {' or '.join(map(str, allowed))} dimension(s), "
                f"got shape {arr.shape}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got shape {arr.shape}")
    return arr


def check_finite(arr: np.ndarray, name: str) -> np.ndarray:
    """Reject NaN and +-inf entries."""
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} must be finite, got {arr[idx]!r} at index {idx}")
    return arr


def check_distribution(arr: np.ndarray, name: str, *, atol: float = 1e-9,
                       allow_empty_rows: bool = False) -> np.ndarray:
    """Check that every row (last axis) is a probability vector: finite, >= 0, summing to 1."""
    check_finite(arr, name)
    if (arr < 0).any():
        idx = tuple(int(i) for i in np.argwhere(arr < 0)[0])
        raise ValueError(f"{name} must be non-negative, got {arr[idx]!r} at index {idx}")
    sums = arr.sum(axis=-1)
    ok = np.abs(sums - 1.0) <= atol
    if allow_empty_rows:
        ok |= sums == 0.0
    if not ok.all():
        idx = tuple(int(i) for i in np.argwhere(~ok)[0])
        raise ValueError(
            f"{name} must sum to 1 along its last axis, got sum {sums[idx]!r} at row {idx}")
    return arr


def _scalar(value, name: str, what: str) -> float:
    """``float(value)`` for a real number; strings and booleans are refused, not coerced."""
    if isinstance(value, (str, bytes, bool, np.bool_)):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be {what}, got {value!r}") from exc


def check_real(value, name: str) -> float:
    """A finite real scalar."""
    v = _scalar(value, name, "a finite real number")
    if not np.isfinite(v):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return v


def check_positive(value, name: str, *, allow_zero: bool = False) -> float:
    """A finite scalar > 0 (or >= 0 with ``allow_zero``)."""
    v = _scalar(value, name, "a real number")
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        allowed = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {allowed}, got {value!r}")
    return v


def check_in_range(value, name: str, low: float, high: float, *, low_open: bool = False,
                   high_open: bool = False) -> float:
    """A finite scalar in the interval between ``low`` and ``high``."""
    v = _scalar(value, name, "a real number")
    lo_ok = v > low if low_open else v >= low
    hi_ok = v < high if high_open else v <= high
    if not (np.isfinite(v) and lo_ok and hi_ok):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return v


def check_choice(value, name: str, choices: Iterable[str]) -> str:
    """One of a fixed set of names."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid names: {', '.join(sorted(choices))}")
    return value


def check_int(value, name: str, *, minimum: int = 0) -> int:
    """An integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {_describe(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_seed(value, name: str = "seed"):
    """A seed for ``np.random.default_rng``: an integer >= 0, a SeedSequence or a Generator."""
    if isinstance(value, (np.random.SeedSequence, np.random.Generator)):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0 (or a numpy SeedSequence / Generator), "
                         f"got {value!r}")
    return int(value)


def check_beta(value, name: str = "beta") -> float:
    """The beta of a pairwise loss: a finite real number >= :data:`BETA_MIN`."""
    v = check_positive(value, name)
    if v < BETA_MIN:
        raise ValueError(f"{name} must be >= {BETA_MIN:g} (smaller values make the losses inert or "
                         f"overflow in float64), got {value!r}")
    return v
