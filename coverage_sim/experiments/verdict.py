"""Verdicts: how far a paper's claim holds in our reproduction, across instances.

A check does not answer yes or no. It splits the paper's claim into *clauses*, each a statement it
can test on one instance of the experiment's setting (one random instance, one peak position, one
seed), and evaluates every clause on every instance. A clause *holds* when it passes on at least
:data:`HOLDS_FRACTION` of the instances. Where our setting needs a substitute for the paper's (plain
gradient descent instead of Adam, a larger push-down coefficient, ...), the substitute is a separate
clause marked ``paper=False``: it is reported beside the paper's own clause and never replaces it.

The verdict is a function of the paper's clauses alone:

- **agrees**: every clause of the paper's claim holds;
- **partly**: some hold and some do not (the failing clauses are named);
- **does not agree**: none holds.

Each check also reports one paired *effect size*: a signed difference measured on every instance
(e.g. final reward on-policy minus offline), with its mean and a 95% t confidence interval over the
instances, so that a reader sees how large the effect is, not only whether a threshold was crossed.

Examples:
  >>> from coverage_sim.experiments.verdict import CheckResult, Effect, clause
  >>> result = CheckResult(clauses=(
  ...     clause("gap", "online beats offline", [True] * 9 + [False]),
  ...     clause("cap", "offline saturates", [False] * 10)),
  ...     effect=Effect("final reward, online - offline", (0.3, 0.5, 0.4)))
  >>> result.verdict, result.failing
  ('partly', ('cap',))
  >>> round(result.effect.mean, 2), [round(v, 2) for v in result.effect.ci]
  (0.4, [0.15, 0.65])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

__all__ = ["AGREES", "PARTLY", "DISAGREES", "VERDICTS", "MODES", "HOLDS_FRACTION", "Clause",
           "Effect", "CheckResult", "clause", "verdict_of"]

AGREES = "agrees"
PARTLY = "partly"
DISAGREES = "does not agree"
VERDICTS = (AGREES, PARTLY, DISAGREES)
#: How an experiment computes its objectives: exact population expectations, sampled batches, or
#: both side by side.
MODES = ("exact", "sampled", "exact+sampled")
#: A clause holds when it passes on at least this fraction of the instances it was evaluated on.
HOLDS_FRACTION = 0.8


@dataclass(frozen=True)
class Clause:
    """One testable part of a claim, evaluated on each instance.

    Attributes:
      name: short stable identifier (used to pin expected failures in tests), e.g. ``"far-gap"``.
      statement: the statement as tested, one sentence with its thresholds.
      results: pass (True) or fail (False) on each instance, in instance order.
      detail: the numbers behind the outcome, e.g. per-instance values or their range.
      paper: True for a clause of the paper's own claim; False for a substitute variant that our
        setting needed, reported beside the paper's clause.
    """

    name: str
    statement: str
    results: tuple[bool, ...]
    detail: str = ""
    paper: bool = True

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"clause name must be a non-empty str, got {self.name!r}")
        results = tuple(bool(r) for r in self.results)
        if not results:
            raise ValueError(f"clause {self.name!r} has no results; evaluate it on at least one "
                             "instance")
        object.__setattr__(self, "results", results)

    @property
    def instances(self) -> int:
        """Number of instances the clause was evaluated on."""
        return len(self.results)

    @property
    def passes(self) -> int:
        """Number of instances on which it passed."""
        return sum(self.results)

    @property
    def fraction(self) -> float:
        """Fraction of instances on which it passed."""
        return self.passes / self.instances

    @property
    def holds(self) -> bool:
        """Whether it passes on at least :data:`HOLDS_FRACTION` of the instances."""
        return self.fraction >= HOLDS_FRACTION

    def to_dict(self) -> dict:
        return {"name": self.name, "statement": self.statement, "paper": self.paper,
                "passes": self.passes, "instances": self.instances, "holds": self.holds,
                "results": list(self.results), "detail": self.detail}


def clause(name: str, statement: str, results: Iterable[bool] | bool, detail: str = "", *,
           paper: bool = True) -> Clause:
    """Build a :class:`Clause` from per-instance outcomes (a single bool is one instance)."""
    if isinstance(results, (bool, np.bool_)):
        results = (bool(results),)
    return Clause(name=name, statement=statement, results=tuple(results), detail=detail,
                  paper=paper)


@dataclass(frozen=True)
class Effect:
    """A paired effect size: one signed difference per instance, with a 95% confidence interval.

    Attributes:
      name: what is measured and its sign, e.g. ``"final reward, on-policy - offline (peak 70)"``.
      values: the per-instance differences (finite).
    """

    name: str
    values: tuple[float, ...]

    def __post_init__(self):
        values = tuple(float(v) for v in self.values)
        if not values or not all(math.isfinite(v) for v in values):
            raise ValueError(f"effect {self.name!r} needs finite per-instance values, got {values}")
        object.__setattr__(self, "values", values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def ci(self) -> tuple[float, float]:
        """Two-sided 95% Student-t interval of the mean over instances (nan with one instance)."""
        n = len(self.values)
        if n < 2:
            return (math.nan, math.nan)
        sem = float(np.std(self.values, ddof=1)) / math.sqrt(n)
        half = float(stats.t.ppf(0.975, n - 1)) * sem
        return (self.mean - half, self.mean + half)

    def describe(self, digits: int = 3) -> str:
        lo, hi = self.ci
        interval = "" if math.isnan(lo) else f" [{lo:.{digits}g}, {hi:.{digits}g}]"
        return f"{self.mean:.{digits}g}{interval} (n = {len(self.values)})"

    def to_dict(self) -> dict:
        lo, hi = self.ci
        return {"name": self.name, "mean": self.mean, "ci95": [lo, hi],
                "values": list(self.values)}


def verdict_of(clauses: Sequence[Clause]) -> str:
    """The verdict that the paper's clauses support (see the module docstring)."""
    paper = [c for c in clauses if c.paper]
    if not paper:
        raise ValueError("a check needs at least one clause of the paper's own claim (paper=True)")
    holding = sum(c.holds for c in paper)
    if holding == len(paper):
        return AGREES
    return PARTLY if holding else DISAGREES


@dataclass(frozen=True)
class CheckResult:
    """What an experiment's check returns: its clauses, its effect size and how it computed them.

    Attributes:
      clauses: the paper's clauses and any substitute variants.
      effect: the paired effect size over instances, or None where no paired contrast exists.
      mode: ``"exact"``, ``"sampled"`` or ``"exact+sampled"``.
    """

    clauses: tuple[Clause, ...]
    effect: Effect | None = None
    mode: str = "exact"
    notes: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self):
        clauses = tuple(self.clauses)
        if not all(isinstance(c, Clause) for c in clauses):
            raise ValueError("clauses must be Clause objects (see coverage_sim.experiments."
                             "verdict.clause)")
        names = [c.name for c in clauses]
        if len(set(names)) != len(names):
            raise ValueError(f"clause names must be unique, got {names}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        object.__setattr__(self, "clauses", clauses)
        verdict_of(clauses)  # at least one paper clause

    @property
    def verdict(self) -> str:
        return verdict_of(self.clauses)

    @property
    def failing(self) -> tuple[str, ...]:
        """Names of the paper's clauses that do not hold."""
        return tuple(c.name for c in self.clauses if c.paper and not c.holds)

    @property
    def pass_fraction(self) -> float:
        """Fraction of instances on which every paper clause passes.

        Clauses evaluated on different numbers of instances (e.g. one on seed averages) are
        combined conservatively: the smallest per-clause fraction.
        """
        paper = [c for c in self.clauses if c.paper]
        lengths = {c.instances for c in paper}
        if len(lengths) == 1:
            joint = np.logical_and.reduce([np.asarray(c.results) for c in paper])
            return float(np.mean(joint))
        return min(c.fraction for c in paper)

    @property
    def instances(self) -> int:
        return max(c.instances for c in self.clauses if c.paper)

    def summary(self) -> str:
        """One line: verdict, pass fraction, failing clauses and the effect."""
        text = f"{self.verdict} (all paper clauses pass on {self.pass_fraction:.0%} of " \
               f"{self.instances} instance{'s' if self.instances != 1 else ''})"
        if self.failing:
            text += "; not holding: " + ", ".join(self.failing)
        if self.effect is not None:
            text += f"; {self.effect.name}: {self.effect.describe()}"
        return text

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "pass_fraction": self.pass_fraction,
                "instances": self.instances, "failing": list(self.failing), "mode": self.mode,
                "clauses": [c.to_dict() for c in self.clauses],
                "effect": None if self.effect is None else self.effect.to_dict(),
                "notes": dict(self.notes)}
