"""Chen et al. 2024 (arXiv:2405.19534), ranking accuracy: F12 ``chen-ranking`` (:mod:`.ranking`).

Importing :mod:`coverage_sim.experiments` registers every experiment.
"""
