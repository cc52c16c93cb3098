"""Registered experiments: the reproduced figures F1-F17 (science.md §11).

Importing this package registers every experiment in :data:`EXPERIMENTS`.
"""

from coverage_sim.experiments.registry import (EXPERIMENTS, Experiment, config_from_overrides,
                                               get_experiment, register)
from coverage_sim.experiments import azar  # noqa: F401  (registers)
from coverage_sim.experiments import song_xu  # noqa: F401  (registers)
from coverage_sim.experiments import chen  # noqa: F401  (registers)
from coverage_sim.experiments import razin  # noqa: F401  (registers)
from coverage_sim.experiments import rashidinejad  # noqa: F401  (registers)
from coverage_sim.experiments import gao  # noqa: F401  (registers)
from coverage_sim.experiments import iterative  # noqa: F401  (registers)
from coverage_sim.experiments import drpo  # noqa: F401  (registers)
from coverage_sim.experiments import tajwar  # noqa: F401  (registers)
from coverage_sim.experiments import tang  # noqa: F401  (registers)
from coverage_sim.experiments import transfer  # noqa: F401  (registers when torch imports)

__all__ = ["EXPERIMENTS", "Experiment", "get_experiment", "register", "config_from_overrides"]
