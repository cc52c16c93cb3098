"""Tang et al. 2024 (arXiv:2405.08448): F6 ``tang-pareto`` (:mod:`.pareto`), F7 ``tang-ablations``
(:mod:`.ablations`), F8 ``tang-classifier`` (:mod:`.classifier`), F9 ``tang-best-of-2``
(:mod:`.best_of_2`) and F6 with a transformer, ``tang-transformer`` (:mod:`.transformer`); the
shared task and data in :mod:`.setting`.

Importing :mod:`coverage_sim.experiments` registers every experiment.
"""
