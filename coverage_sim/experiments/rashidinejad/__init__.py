"""Rashidinejad et al. 2021 (arXiv:2103.12021), pessimism in offline bandits: F13
``rashidinejad-lcb`` (:mod:`.lcb`).

Importing :mod:`coverage_sim.experiments` registers every experiment.
"""
