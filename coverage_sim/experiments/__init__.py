"""Registered experiments: the reproduced figures F1-F19 and the gap atlas (docs/figures.md).

One experiment per module, grouped by paper (``<paper>/<figure>.py``: config, run, plot and check
side by side); code a paper's experiments share is in its ``setting.py``, code shared across papers
in :mod:`~coverage_sim.experiments.registry` and :mod:`~coverage_sim.experiments.common`. The
transformer versions live beside their paper's bandit version and register only when torch
imports.

This project's own experiments, which map what no single paper shows (the gap atlas, A1), live
in :mod:`~coverage_sim.experiments.atlas`.

Importing this package registers every experiment in :data:`EXPERIMENTS`.
"""

from coverage_sim.experiments.registry import (EXPERIMENTS, Experiment, config_from_overrides,
                                               get_experiment, register)
# Registration order is the order of EXPERIMENTS (listings, reproduce): keep it stable.
import coverage_sim.experiments.azar.ipo_vs_dpo  # noqa: F401
import coverage_sim.experiments.song.coverage  # noqa: F401
import coverage_sim.experiments.xu.ood  # noqa: F401
import coverage_sim.experiments.chen.ranking  # noqa: F401
import coverage_sim.experiments.razin.displacement  # noqa: F401
import coverage_sim.experiments.rashidinejad.lcb  # noqa: F401
import coverage_sim.experiments.gao.overoptimization  # noqa: F401
import coverage_sim.experiments.iterative.optimism  # noqa: F401
import coverage_sim.experiments.drpo.resets  # noqa: F401
import coverage_sim.experiments.tajwar.peak  # noqa: F401
import coverage_sim.experiments.tajwar.efficiency  # noqa: F401
import coverage_sim.experiments.tajwar.negative_gradient  # noqa: F401
import coverage_sim.experiments.tajwar.mode_seeking  # noqa: F401
import coverage_sim.experiments.tang.pareto  # noqa: F401
import coverage_sim.experiments.tang.ablations  # noqa: F401
import coverage_sim.experiments.tang.classifier  # noqa: F401
import coverage_sim.experiments.tang.best_of_2  # noqa: F401
import coverage_sim.experiments.gorbatovski.moving_reference  # noqa: F401
# estimator figures only an exact simulator can draw (F18, F19)
import coverage_sim.experiments.estimators.kl_estimators  # noqa: F401
import coverage_sim.experiments.estimators.group_baselines  # noqa: F401
# the transformer versions register only when torch imports
import coverage_sim.experiments.tajwar.tokens  # noqa: F401
import coverage_sim.experiments.tajwar.token_peak  # noqa: F401
import coverage_sim.experiments.tang.transformer  # noqa: F401
import coverage_sim.experiments.tang.scaling  # noqa: F401
import coverage_sim.experiments.drpo.transformer  # noqa: F401
import coverage_sim.experiments.capacity.findings  # noqa: F401
# this project's own experiments (no single paper's figure)
import coverage_sim.experiments.atlas.gap  # noqa: F401

__all__ = ["EXPERIMENTS", "Experiment", "get_experiment", "register", "config_from_overrides"]
