"""Azar et al. 2023 (arXiv:2310.12036), IPO: F5 ``azar-ipo-vs-dpo`` (:mod:`.ipo_vs_dpo`).

Importing :mod:`coverage_sim.experiments` registers every experiment.
"""
