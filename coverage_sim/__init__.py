"""coverage_sim: an exact simulator for online vs offline preference optimisation.

Categorical-policy and contextual-bandit environments with controllable data coverage, optimised by
numba-accelerated exact-gradient online and offline objectives (RLHF, DPO and TRL's whole loss
catalogue with its combinations, f-divergences, WPO and TR-DPO, IPO, KTO, online/iterative DPO,
Nash-MD, XPO, HyPO, VPO, ...). See README.md for a tour.
"""

import importlib
import sys
import types
from typing import TYPE_CHECKING

# Public names are imported on first use (PEP 562), so that `import coverage_sim` -- and with it
# every `coverage-sim` command -- does not pay for numba, scipy, pandas and matplotlib until a name
# that needs them is used (`coverage-sim list` answers in well under a second). Add a new public
# name to _EXPORTS (its module) and to __all__.
_EXPORTS = {
    "coverage_sim.behavior": (
        "mixture", "quality_mixture", "replay", "restrict_support", "uniform",
    ),
    "coverage_sim.best_of_n": (
        "best_of_n_kl_bound", "best_of_n_policy", "best_worst_of_n_pairs", "best_worst_pairs",
    ),
    "coverage_sim.coverage": ("concentrability", "mass_in_support", "pair_concentrability",),
    "coverage_sim.data": (
        "PairData", "UnpairedData", "offline_pairs", "pairs_from_list", "policy_pairs",
        "unpaired_data", "unpaired_from_pairs",
    ),
    "coverage_sim.env": ("Bandit", "optimal_policy",),
    "coverage_sim.gradients": ("batch_gradient", "gradient", "sampled_gradient", "sampled_gradients",),
    "coverage_sim.instances": (
        "INSTANCES", "azar_bandit", "azar_d1", "make_instance", "random_bandit", "tajwar_bandit",
        "tajwar_reference", "xu_bandit", "xu_features", "xu_pairs",
    ),
    "coverage_sim.losses": ("PAIR_LOSSES", "ld_sequence_logps", "pair_loss", "wpo_weights",),
    "coverage_sim.objectives": ("OBJECTIVES", "Objective", "objective",),
    "coverage_sim.policies": ("LogLinear", "Policy", "TabularSoftmax",),
    "coverage_sim.reward_model": ("fit_bradley_terry", "fit_linear_bradley_terry",),
    "coverage_sim.sampling": ("Batch", "Estimator", "draw_batch", "group_pairs", "population_batch",),
    "coverage_sim.sequences": (
        "AutoregressiveTabular", "SequenceEnv", "combination_lock", "enumerate_sequences",
        "n_prefix_nodes", "prefix_nodes", "tajwar_token_env",
    ),
    "coverage_sim.train": (
        "Run", "log_schedule", "package_versions", "train", "train_many", "train_policies",
    ),
}
_SUBMODULES = ("metrics", "preferences")
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"coverage_sim.{name}")
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'coverage_sim' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Keeps ``coverage_sim.train`` the function: importing the submodule of the same name binds
    the module to that attribute, which the eager imports used to overwrite right away."""

    def __setattr__(self, name, value):
        if isinstance(value, types.ModuleType) and _MODULE_OF.get(name) == value.__name__:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:  # the eager imports, for type checkers and IDEs
    from coverage_sim import metrics, preferences
    from coverage_sim.behavior import mixture, quality_mixture, replay, restrict_support, uniform
    from coverage_sim.best_of_n import (best_of_n_kl_bound, best_of_n_policy,
                                        best_worst_of_n_pairs, best_worst_pairs)
    from coverage_sim.coverage import concentrability, mass_in_support, pair_concentrability
    from coverage_sim.data import (PairData, UnpairedData, offline_pairs, pairs_from_list,
                                   policy_pairs, unpaired_data, unpaired_from_pairs)
    from coverage_sim.env import Bandit, optimal_policy
    from coverage_sim.gradients import (batch_gradient, gradient, sampled_gradient,
                                        sampled_gradients)
    from coverage_sim.instances import (INSTANCES, azar_bandit, azar_d1, make_instance,
                                        random_bandit, tajwar_bandit, tajwar_reference, xu_bandit,
                                        xu_features, xu_pairs)
    from coverage_sim.losses import PAIR_LOSSES, ld_sequence_logps, pair_loss, wpo_weights
    from coverage_sim.objectives import OBJECTIVES, Objective, objective
    from coverage_sim.policies import LogLinear, Policy, TabularSoftmax
    from coverage_sim.reward_model import fit_bradley_terry, fit_linear_bradley_terry
    from coverage_sim.sampling import Batch, Estimator, draw_batch, group_pairs, population_batch
    from coverage_sim.sequences import (AutoregressiveTabular, SequenceEnv, combination_lock,
                                        enumerate_sequences, n_prefix_nodes, prefix_nodes,
                                        tajwar_token_env)
    from coverage_sim.train import (Run, log_schedule, package_versions, train, train_many,
                                    train_policies)

__version__ = "0.1.0"

__all__ = [
    "Bandit", "optimal_policy",
    "tajwar_reference", "tajwar_bandit", "azar_bandit", "azar_d1", "xu_bandit", "xu_features",
    "xu_pairs", "random_bandit", "INSTANCES", "make_instance",
    "preferences", "PairData", "offline_pairs", "policy_pairs", "pairs_from_list",
    "UnpairedData", "unpaired_data", "unpaired_from_pairs",
    "restrict_support", "mixture", "quality_mixture", "replay", "uniform",
    "concentrability", "mass_in_support", "pair_concentrability",
    "fit_bradley_terry", "fit_linear_bradley_terry",
    "best_of_n_policy", "best_worst_of_n_pairs", "best_worst_pairs", "best_of_n_kl_bound",
    "PAIR_LOSSES", "pair_loss", "wpo_weights", "ld_sequence_logps", "OBJECTIVES", "Objective",
    "objective",
    "Policy", "TabularSoftmax", "LogLinear",
    "enumerate_sequences", "n_prefix_nodes", "prefix_nodes", "SequenceEnv",
    "tajwar_token_env", "combination_lock", "AutoregressiveTabular",
    "Run", "train", "train_many", "train_policies", "log_schedule", "package_versions",
    "metrics",
    "gradient", "sampled_gradient", "sampled_gradients", "batch_gradient",
    "Estimator", "Batch", "draw_batch", "population_batch", "group_pairs",
]
