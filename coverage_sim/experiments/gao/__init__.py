"""Gao, Schulman, Hilton 2022 (arXiv:2210.10760), reward-model over-optimisation: F14
``gao-overoptimization`` (:mod:`.overoptimization`).

Importing :mod:`coverage_sim.experiments` registers every experiment.
"""
