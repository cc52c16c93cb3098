"""Iterative / online DPO with optimism, VPO (Cen et al. 2024, arXiv:2405.19320) and SELM (Zhang
et al. 2024, arXiv:2405.19332): F16 ``iterative-optimism`` (:mod:`.optimism`).

Importing :mod:`coverage_sim.experiments` registers every experiment.
"""
