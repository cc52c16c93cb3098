"""Razin et al. 2024 (arXiv:2410.08847), likelihood displacement: F15 ``razin-displacement``
(:mod:`.displacement`).

Importing :mod:`coverage_sim.experiments` registers every experiment.
"""
