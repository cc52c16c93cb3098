"""Xu et al. 2024 (arXiv:2404.10719): F11 ``xu-ood`` (:mod:`.ood`); the 3-arm bandit it shares
with F10 in :mod:`.setting`.

Importing :mod:`coverage_sim.experiments` registers every experiment.
"""
