"""Experiment registry: each reproduced figure is an experiment with an id, a config, a run and a plot.

An experiment (bsuite style) bundles

- ``config``: a frozen dataclass whose fields are the knobs, with paper-faithful defaults and a
  ``quick()`` classmethod returning the small version used by tests and ``--quick``;
- ``run(config, seed) -> DataFrame``: a tidy long table, one row per (setting, seed, step, metric)
  with columns ``<sweep variables>..., seed, step, metric, value``;
- ``plot(table, config) -> Figure``: the figure, drawn from that table alone;
- ``check(table, config) -> CheckResult``: tests the paper's claim on the data, clause by clause and
  instance by instance, with a paired effect size (:mod:`coverage_sim.experiments.verdict`); the
  verdict is *agrees*, *partly* or *does not agree*. (A check that returns None and raises
  ``AssertionError`` on failure is read as a single clause on a single instance.)

Each names its paper (arXiv id) and figure and says where our setting differs and why.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from coverage_sim._validation import check_choice
from coverage_sim.experiments.verdict import AGREES, VERDICTS, CheckResult, clause

__all__ = ["Experiment", "EXPERIMENTS", "register", "get_experiment", "config_from_overrides",
           "config_to_dict", "TABLE_COLUMNS", "tidy_rows", "mean_curve", "mean_ci", "check_tuple",
           "assess"]

#: Columns every experiment's table ends with (its sweep variables come first).
TABLE_COLUMNS = ("seed", "step", "metric", "value")


@dataclass(frozen=True)
class Experiment:
    """A registered figure reproduction."""

    id: str
    figure: str  # e.g. "F5"
    title: str
    paper: str
    arxiv: str
    claim: str  # the paper's qualitative claim, one or two sentences
    differences: str  # where our setting differs from the paper's and why
    config: type  # frozen dataclass with defaults and a quick() classmethod
    run: Callable[[Any, int], pd.DataFrame]
    plot: Callable[[pd.DataFrame, Any], Any]
    check: Callable[[pd.DataFrame, Any], CheckResult | None]
    seeds: int = 1  # default number of seeds for `reproduce`
    # The verdict our data give (see coverage_sim.experiments.verdict) and the names of the paper's
    # clauses that do not hold. A reproduction that does not (fully) carry over keeps testing the
    # paper's claim: its expected verdict and failing clauses are pinned here and in the tests, so
    # that a change in *why* it disagrees is noticed. `reproduce` exits 0 when every verdict is the
    # expected one.
    expected_verdict: str = AGREES
    expected_failing: tuple[str, ...] = ()
    # The same for the quick config where it legitimately differs (fewer seeds or steps: e.g. an
    # effect that needs the full training length); None: the quick run is expected to give the
    # full run's verdict and failing clauses.
    expected_quick_verdict: str | None = None
    expected_quick_failing: tuple[str, ...] | None = None
    # An experiment with many independent units of work per seed (the gap atlas) names them:
    # ``cells(config)`` lists them and ``run_cell(config, seed, cell)`` runs one; a sweep then stores
    # and resumes every (seed, cell) on its own. ``run`` must equal the concatenation of ``run_cell``
    # over ``cells(config)``.
    cells: Callable[[Any], list[str]] | None = None
    run_cell: Callable[[Any, int, str], pd.DataFrame] | None = None
    # When the tidy table is too large to commit (the gap atlas: ~20 MB), ``figure_table(table,
    # config)`` gives the smaller tidy table (same closing columns) that `reproduce` writes to
    # ``figures/<id>.csv``; the full table stays in the run folder's ``results.csv``.
    figure_table: Callable[[pd.DataFrame, Any], pd.DataFrame] | None = None
    # Optional markdown (e.g. a table) computed from the table, written into the figures index.
    summary: Callable[[pd.DataFrame, Any], str] | None = None
    # False when the experiment's run, check and plot call no numba kernel (a torch-only
    # experiment): `reproduce` then runs its units on a worker that has compiled its kernel group
    # while another still compiles, instead of leaving that worker idle. The tests check it.
    needs_kernels: bool = True

    def __post_init__(self):
        check_choice(self.expected_verdict, "expected_verdict", VERDICTS)
        if self.expected_quick_verdict is not None:
            check_choice(self.expected_quick_verdict, "expected_quick_verdict", VERDICTS)
        for name in ("expected_failing", "expected_quick_failing"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, tuple)
                                      or not all(isinstance(v, str) and v for v in value)):
                raise ValueError(f"{name} must be a tuple of clause names, got {value!r}")
        for verdict, failing, name in (
                (self.expected_verdict, self.expected_failing, "expected_failing"),
                (self.expected_quick_verdict, self.expected_quick_failing,
                 "expected_quick_failing")):
            if verdict == AGREES and failing:
                raise ValueError(f"{name} must be empty when the expected verdict is "
                                 f"{AGREES!r}, got {failing!r}")

    def expected(self, quick: bool = False) -> tuple[str, tuple[str, ...]]:
        """``(verdict, failing paper clauses)`` expected of the full (or ``quick``) config."""
        if quick and self.expected_quick_verdict is not None:
            failing = self.expected_quick_failing
            return self.expected_quick_verdict, (() if failing is None else failing)
        if quick and self.expected_quick_failing is not None:
            return self.expected_verdict, self.expected_quick_failing
        return self.expected_verdict, self.expected_failing

    def default_config(self, quick: bool = False):
        return self.config.quick() if quick else self.config()

    def default_seeds(self, quick: bool = False) -> list[int]:
        """Seeds ``reproduce`` runs: ``self.seeds`` of them, one when ``quick`` (a quick run shows
        that everything runs and what each figure looks like; the pass fractions over seeds are the
        full run's)."""
        return list(range(1 if quick else self.seeds))


EXPERIMENTS: dict[str, Experiment] = {}


def tidy_rows(keys: dict, seed: int, steps, columns: dict) -> list[pd.DataFrame]:
    """Table rows (``keys..., seed, step, metric, value``), one frame per metric in ``columns``
    (metric name -> values at ``steps``)."""
    steps = np.asarray(steps, dtype=np.int64)
    return [pd.DataFrame({**keys, "seed": seed, "step": steps, "metric": name,
                          "value": np.asarray(values, dtype=float)})
            for name, values in columns.items()]


def mean_curve(table: pd.DataFrame, metric: str, **where) -> pd.Series:
    """Mean over seeds of one metric against step, for the rows matching ``where``."""
    rows = table[table["metric"] == metric]
    for key, value in where.items():
        rows = rows[rows[key] == value]
    if rows.empty:
        raise AssertionError(f"no rows with metric={metric!r} and {where}")
    return rows.groupby("step")["value"].mean().sort_index()


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval ``(mean, low, high)`` of independent values (seeds).

    One value gives ``(v, -inf, inf)``: no interval without a spread.

    Examples:
      >>> [round(v, 3) for v in mean_ci([1.0, 2.0, 3.0])]
      [2.0, -0.484, 4.484]
    """
    from scipy.stats import t

    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0 or not np.isfinite(v).all():
        raise ValueError(f"values must be a non-empty array of finite numbers, got {values!r}")
    mean = float(v.mean())
    if v.size == 1:
        return mean, -np.inf, np.inf
    half = float(t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return mean, mean - half, mean + half


def check_tuple(values, name: str, check) -> None:
    """A config field that must be a non-empty tuple whose entries each pass ``check(v, name)``."""
    if not isinstance(values, tuple) or not values:
        raise ValueError(f"{name} must be a non-empty tuple, got {values!r}")
    for v in values:
        check(v, name)


def assess(experiment: Experiment, table: pd.DataFrame, config) -> CheckResult:
    """Run ``experiment``'s check on ``table`` and return its :class:`CheckResult`.

    A check written in the older style (returns None, raises ``AssertionError`` when the claim does
    not show) becomes one clause named ``"claim"`` on one instance, with the assertion's message as
    its detail.
    """
    try:
        result = experiment.check(table, config)
    except AssertionError as err:
        return CheckResult(clauses=(clause("claim", experiment.claim, False, str(err)),))
    if result is None:
        return CheckResult(clauses=(clause("claim", experiment.claim, True),))
    if not isinstance(result, CheckResult):
        raise TypeError(f"check of {experiment.id!r} must return a CheckResult or None, got "
                        f"{type(result).__name__}")
    return result


def register(experiment: Experiment) -> Experiment:
    """Add an experiment to :data:`EXPERIMENTS` (ids are unique)."""
    if experiment.id in EXPERIMENTS:
        raise ValueError(f"experiment id {experiment.id!r} is registered twice")
    if (experiment.cells is None) != (experiment.run_cell is None):
        raise ValueError(f"experiment {experiment.id!r} must set both cells and run_cell, or "
                         "neither")
    if not (dataclasses.is_dataclass(experiment.config)
            and experiment.config.__dataclass_params__.frozen):
        raise ValueError(f"config of {experiment.id!r} must be a frozen dataclass")
    EXPERIMENTS[experiment.id] = experiment
    return experiment


def get_experiment(experiment_id: str) -> Experiment:
    """The experiment registered under ``experiment_id`` (ValueError listing the valid ids)."""
    check_choice(experiment_id, "experiment", EXPERIMENTS)
    return EXPERIMENTS[experiment_id]


def config_to_dict(config) -> dict:
    """A JSON-ready dict of a config (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _coerce(value, annotation, name: str):
    origin = typing.get_origin(annotation)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        args = typing.get_args(annotation)
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, name) for v in value)
    if annotation is float or annotation == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        return float(value)
    if annotation is int or annotation == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        return value
    if annotation is bool or annotation == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return value
    if annotation is str or annotation == "str":
        return str(value)
    return value


def config_from_overrides(experiment: Experiment, overrides: dict | None = None,
                          quick: bool = False):
    """The experiment's default (or quick) config with ``overrides`` applied and type-checked.

    Values are parsed JSON (``--set taus=[0.1,1]``); an unknown key is a ValueError listing the
    config's fields.
    """
    base = experiment.default_config(quick)
    if not overrides:
        return base
    hints = typing.get_type_hints(experiment.config)
    fields = {f.name for f in dataclasses.fields(base)}
    changes = {}
    for key, value in overrides.items():
        if key not in fields:
            raise ValueError(f"unknown config key {key!r} for experiment {experiment.id!r}; "
                             f"its fields: {', '.join(sorted(fields))}")
        changes[key] = _coerce(value, hints.get(key, Any), key)
    return dataclasses.replace(base, **changes)
