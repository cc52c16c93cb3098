"""Tajwar et al. 2024 (arXiv:2404.14367): F1 ``tajwar-peak`` (:mod:`.peak`), F2
``tajwar-efficiency`` (:mod:`.efficiency`), F3 ``tajwar-negative-gradient``
(:mod:`.negative_gradient`), F4 ``tajwar-mode-seeking`` (:mod:`.mode_seeking`) and F3 on tokens
with a transformer, ``tajwar-tokens`` (:mod:`.tokens`); the shared bandit and training loop in
:mod:`.setting`.

Importing :mod:`coverage_sim.experiments` registers every experiment.
"""
