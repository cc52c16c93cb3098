"""Song et al. 2024 (arXiv:2406.01462), coverage: F10 ``song-coverage`` (:mod:`.coverage`), on Xu et
al.'s bandit (:mod:`coverage_sim.experiments.xu.setting`).

Importing :mod:`coverage_sim.experiments` registers every experiment.
"""
