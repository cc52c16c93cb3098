"""Helpers shared by experiments of several papers: the optional torch dependency of the transformer
experiments (``tajwar-tokens``, ``tang-transformer``, ``drpo-transformer``, ...), seed streams,
curve read-outs, clauses evaluated per seed (:func:`seed_clause`), and the validation of a family of
reward peaks on a 100-arm bandit (:func:`check_peak_family`).

Torch is an optional dependency: :data:`HAVE_TORCH` says whether it is installed, and the
transformer experiments register only when it is (their configs, checks and plots are always
importable). Their modules import torch inside the functions that run it, so that importing the
registry (every CLI command that runs something, the parent process of ``reproduce``) does not pay
torch's import (about 2 s).
Each torch run uses one thread with deterministic algorithms
(:func:`coverage_sim.torch_backend.reproducible`, restored afterwards): the reproduce pool already
runs one seed per core, a batch-1 gpt-nano is faster single-threaded, and a fixed thread count is
what makes a run bit-identical on one machine.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd

from coverage_sim._validation import check_in_range, check_int
from coverage_sim.experiments.registry import check_tuple, mean_ci
from coverage_sim.experiments.verdict import Clause, clause


def _torch_installed() -> bool:
    # torch is a test/extra dependency; without it the transformer experiments are not registered
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # pragma: no cover - a blocked or broken installation
        return False


#: Whether torch is installed (found without importing it).
HAVE_TORCH = _torch_installed()

__all__ = ["DTYPES", "HAVE_TORCH", "check_device", "check_peak_family", "require_torch",
           "seed_clause", "seed_streams", "steps_to_reach", "torch_dtype"]

#: The dtypes a transformer experiment's config may name.
DTYPES = ("float32", "float64")


def require_torch():
    """Raise ImportError unless torch imports (the transformer experiments' runs need it)."""
    if not HAVE_TORCH:
        raise ImportError("the transfer experiments need torch (pip install torch)")


def torch_dtype(name: str):
    """``torch.float32`` or ``torch.float64`` for ``"float32"`` / ``"float64"`` (:data:`DTYPES`)."""
    import torch

    return torch.float32 if name == "float32" else torch.float64


def check_device(value, name: str = "device") -> str:
    """A torch experiment's ``device`` field: a device string torch accepts (``"cpu"``,
    ``"cuda"``, ``"cuda:1"``, ...); a CUDA device must be available. Without torch only the type
    is checked."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a torch device string such as 'cpu' or 'cuda', got "
                         f"{value!r}")
    if HAVE_TORCH and value != "cpu":   # the default needs no torch import to be valid
        import torch

        try:
            device = torch.device(value)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"{name} must be a torch device string such as 'cpu' or 'cuda', "
                             f"got {value!r}") from exc
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"{name}={value!r} but torch sees no CUDA device; use 'cpu'")
    return value


def check_peak_family(peaks, offsets, name: str = "peaks", arms: int = 100, *,
                      single: bool = False) -> None:
    """Validate an instance family of reward peaks ``c + o`` on an ``arms``-arm bandit (Tajwar et
    al.'s 100-arm bandit, arXiv:2404.14367, and the estimator experiments built on it).

    Args:
      peaks: the family's centres, a non-empty tuple of numbers each in ``[0, arms - 1]`` (with
        ``single``: one such number).
      offsets: non-empty tuple of whole-number offsets ``>= -(arms - 1)``.
      name: the config field holding ``peaks`` (used in error messages: ``name``,
        ``"<name> + offsets"``).
      arms: number of arms; every ``c + o`` must lie in ``[0, arms - 1]``.
      single: ``peaks`` is a single centre (a config's ``peak`` field), not a tuple.

    Returns:
      None; raises ``ValueError`` naming the field, the value and what is allowed.

    Examples:
      >>> from coverage_sim.experiments.common import check_peak_family
      >>> check_peak_family((70.0, 20.0), (-4, 0, 4))
      >>> check_peak_family(98.0, (0, 2), name="peak", single=True)
      Traceback (most recent call last):
      ...
      ValueError: peak + offsets must lie in [0.0, 99.0], got 100.0
    """
    top = float(arms - 1)
    if single:
        centres = (check_in_range(peaks, name, 0.0, top),)
    else:
        check_tuple(peaks, name, lambda v, field: check_in_range(v, field, 0.0, top))
        centres = peaks
    check_tuple(offsets, "offsets", lambda v, field: check_int(v, field, minimum=-(arms - 1)))
    for c in centres:
        for o in offsets:
            check_in_range(c + o, f"{name} + offsets", 0.0, top)


def seed_streams(seed: int, n: int) -> list[int]:
    """``n`` independent 63-bit seeds derived from ``seed`` (one per random stream)."""
    seed = check_int(seed, "seed")
    return [int(s.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
            for s in np.random.SeedSequence(seed).spawn(n)]


def steps_to_reach(curve: pd.Series, level: float) -> float:
    """First index (step) at which ``curve`` reaches ``level``; ``inf`` if it never does."""
    hit = curve[curve >= level]
    return float(hit.index[0]) if len(hit) else float("inf")


def seed_clause(name: str, statement: str, values, passes, *, paper: bool = True,
                what: str = "") -> Clause:
    """A clause evaluated on each seed, whose detail also gives the seed mean with its 95% CI.

    The transformer experiments run a few expensive seeds and state their claims on seed averages
    (a fresh machine reproduces the averages within their bands, not each seed's curve); a clause
    evaluated per seed makes its pass fraction count seeds, and the detail puts the seed-averaged
    statement beside it.

    Args:
      name, statement, paper: as in :func:`coverage_sim.experiments.verdict.clause`.
      values: the measured quantity per seed (array-like, in seed order; NaN where undefined).
      passes: whether each seed passes (array-like of bool, same order as ``values``).
      what: name of the measured quantity in the detail (e.g. ``"lead"``).

    Returns:
      The :class:`~coverage_sim.experiments.verdict.Clause`.

    Examples:
      >>> from coverage_sim.experiments.common import seed_clause
      >>> c = seed_clause("gap", "online above offline", [0.1, 0.3, -0.1], [True, True, False],
      ...                 what="gap")
      >>> c.passes, c.detail
      (2, 'gap per seed +0.1, +0.3, -0.1: 2 of 3 seeds pass; seed mean +0.1 [-0.397, +0.597]')
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    ok = np.asarray(passes, dtype=bool).ravel()
    if v.size != ok.size or v.size == 0:
        raise ValueError(f"clause {name!r}: values and passes must have the same non-zero length, "
                         f"got {v.size} and {ok.size}")
    finite = v[np.isfinite(v)]
    shown = ", ".join(f"{x:+.3g}" for x in v)
    detail = (f"{what + ' ' if what else ''}per seed {shown}: {int(ok.sum())} of {ok.size} "
              f"seed{'s' if ok.size != 1 else ''} pass")
    if finite.size >= 2:
        mean, lo, hi = mean_ci(finite)
        detail += f"; seed mean {mean:+.3g} [{lo:+.3g}, {hi:+.3g}]"
    return clause(name, statement, ok.tolist(), detail, paper=paper)
