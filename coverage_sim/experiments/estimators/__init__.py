"""Sampled gradient estimators against the exact gradient, figures only an exact simulator can
draw: F18 ``kl-estimators`` (:mod:`.kl_estimators`: Schulman's k1, k2, k3 in the reward or in the
loss) and F19 ``group-baselines`` (:mod:`.group_baselines`: REINFORCE, batch mean, RLOO, GRPO and
Dr. GRPO); the shared evaluation policies in :mod:`.setting`.

Importing :mod:`coverage_sim.experiments` registers every experiment.
"""
