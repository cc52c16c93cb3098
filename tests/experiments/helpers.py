"""Helpers shared by the experiment tests (imported as ``experiments.helpers``: ``tests/`` is on
the import path, as for ``hypothesis_profiles``)."""

from __future__ import annotations

from coverage_sim.experiments.verdict import CheckResult, Clause


def clauses_by_name(result: CheckResult) -> dict[str, Clause]:
    """The check's clauses keyed by name.

    Args:
      result: a check's :class:`~coverage_sim.experiments.verdict.CheckResult`.

    Returns:
      ``{clause name: Clause}``, in the check's order.
    """
    return {c.name: c for c in result.clauses}


def clause_passes(result: CheckResult) -> dict[str, int]:
    """How many instances pass each clause of the check.

    Args:
      result: a check's :class:`~coverage_sim.experiments.verdict.CheckResult`.

    Returns:
      ``{clause name: number of passing instances}``, in the check's order.
    """
    return {c.name: c.passes for c in result.clauses}
