"""coverage_sim: an exact simulator for online vs offline preference optimisation.

Categorical-policy and contextual-bandit environments with controllable data coverage, optimised by
numba-accelerated exact-gradient online and offline objectives (RLHF, DPO and TRL's whole loss
catalogue with its combinations, f-divergences, WPO and TR-DPO, IPO, KTO, online/iterative DPO,
Nash-MD, XPO, HyPO, VPO, ...). See README.md for a tour.
"""

from coverage_sim import metrics, preferences
from coverage_sim.behavior import mixture, quality_mixture, replay, restrict_support, uniform
from coverage_sim.best_of_n import (best_of_n_kl_bound, best_of_n_policy, best_worst_of_n_pairs,
                                    best_worst_pairs)
from coverage_sim.coverage import concentrability, mass_in_support, pair_concentrability
from coverage_sim.data import (PairData, UnpairedData, offline_pairs, pairs_from_list, policy_pairs,
                               unpaired_data, unpaired_from_pairs)
from coverage_sim.env import Bandit, optimal_policy
from coverage_sim.instances import (INSTANCES, azar_bandit, azar_d1, make_instance, random_bandit,
                                    tajwar_bandit, tajwar_reference, xu_bandit, xu_features,
                                    xu_pairs)
from coverage_sim.losses import PAIR_LOSSES, ld_sequence_logps, pair_loss, wpo_weights
from coverage_sim.objectives import OBJECTIVES, Objective, objective
from coverage_sim.policies import LogLinear, Policy, TabularSoftmax
from coverage_sim.reward_model import fit_bradley_terry
from coverage_sim.sequences import (AutoregressiveTabular, SequenceEnv, combination_lock,
                                    enumerate_sequences, n_prefix_nodes, prefix_nodes,
                                    tajwar_token_env)
from coverage_sim.train import Run, log_schedule, package_versions, train, train_many

__version__ = "0.1.0"

__all__ = [
    "Bandit", "optimal_policy",
    "tajwar_reference", "tajwar_bandit", "azar_bandit", "azar_d1", "xu_bandit", "xu_features",
    "xu_pairs", "random_bandit", "INSTANCES", "make_instance",
    "preferences", "PairData", "offline_pairs", "policy_pairs", "pairs_from_list",
    "UnpairedData", "unpaired_data", "unpaired_from_pairs",
    "restrict_support", "mixture", "quality_mixture", "replay", "uniform",
    "concentrability", "mass_in_support", "pair_concentrability",
    "fit_bradley_terry",
    "best_of_n_policy", "best_worst_of_n_pairs", "best_worst_pairs", "best_of_n_kl_bound",
    "PAIR_LOSSES", "pair_loss", "wpo_weights", "ld_sequence_logps", "OBJECTIVES", "Objective",
    "objective",
    "Policy", "TabularSoftmax", "LogLinear",
    "enumerate_sequences", "n_prefix_nodes", "prefix_nodes", "SequenceEnv",
    "tajwar_token_env", "combination_lock", "AutoregressiveTabular",
    "Run", "train", "train_many", "log_schedule", "package_versions",
    "metrics",
]
