"""DR-PO, Chang et al. 2024 (arXiv:2404.08495): F17 ``drpo-resets`` (:mod:`.resets`) and its
transformer version ``drpo-transformer`` (:mod:`.transformer`); shared code in :mod:`.setting`.

Importing :mod:`coverage_sim.experiments` registers every experiment.
"""
