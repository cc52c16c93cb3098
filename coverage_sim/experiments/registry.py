"""Experiment registry: each reproduced figure is an experiment with an id, a config, a run and a plot.

An experiment (bsuite style) bundles

- ``config``: a frozen dataclass whose fields are the knobs, with paper-faithful defaults and a
  ``quick()`` classmethod returning the small version used by tests and ``--quick``;
- ``run(config, seed) -> DataFrame``: a tidy long table, one row per (setting, seed, step, metric)
  with columns ``<sweep variables>..., seed, step, metric, value``;
- ``plot(table, config) -> Figure``: the figure, drawn from that table alone;
- ``check(table, config)``: asserts the paper's qualitative claim on the data (raises
  ``AssertionError`` when the reproduction does not show it).

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

__all__ = ["Experiment", "EXPERIMENTS", "register", "get_experiment", "config_from_overrides",
           "config_to_dict", "TABLE_COLUMNS", "tidy_rows", "mean_curve", "mean_ci", "check_tuple"]

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
    check: Callable[[pd.DataFrame, Any], None]
    seeds: int = 1  # default number of seeds for `reproduce`
    # False for a reproduction whose finding does not carry over (its `differences` say why): its
    # check keeps asserting the claim and fails, and `reproduce` counts that as the expected outcome.
    expected_to_agree: bool = True
    # Optional markdown (e.g. a table) computed from the table, written into the figures index.
    summary: Callable[[pd.DataFrame, Any], str] | None = None

    def default_config(self, quick: bool = False):
        return self.config.quick() if quick else self.config()

    def default_seeds(self, quick: bool = False) -> list[int]:
        """Seeds ``reproduce`` runs: ``self.seeds`` of them, at most 2 when ``quick``."""
        return list(range(min(self.seeds, 2) if quick else self.seeds))


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


def register(experiment: Experiment) -> Experiment:
    """Add an experiment to :data:`EXPERIMENTS` (ids are unique)."""
    if experiment.id in EXPERIMENTS:
        raise ValueError(f"experiment id {experiment.id!r} is registered twice")
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
