"""Invalid inputs across the public API: every one raises ValueError naming the offending parameter.

One table, one test: each row is ``(id, call, parameter name the message must contain as a word)``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import coverage_sim as cs
from coverage_sim import metrics as M

NAN, INF = float("nan"), float("inf")

ENV = cs.Bandit(reward=[1.0, 0.0, -1.0], ref=[0.5, 0.3, 0.2])
PARTIAL = cs.Bandit(reward=[1.0, 0.0, -1.0], ref=[0.5, 0.5, 0.0])
CTX = cs.Bandit(reward=np.zeros((2, 3)), ref=np.full((2, 3), 1 / 3))
LOCK = cs.combination_lock(vocab=2, length=2)
CTX_PARTIAL = cs.Bandit(reward=np.zeros((2, 3)), ref=[[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]])
DATA = cs.offline_pairs(ENV, ENV.ref)
DATA_K2 = cs.offline_pairs(cs.Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5]), [0.5, 0.5])


def _train(objective="rlhf", data=None, env=ENV, **kw):
    kw = {"steps": 2, "lr": 0.1, **kw}
    return lambda: cs.train(env, objective, data, **kw)


CASES = [
    # -- environment shapes and values
    ("reward-ref-shape-mismatch", lambda: cs.Bandit(reward=[1.0, 0.0, 0.0], ref=[0.5, 0.5]), "ref"),
    ("reward-3d", lambda: cs.Bandit(reward=np.zeros((1, 1, 2)), ref=np.full((1, 1, 2), 0.5)),
     "reward"),
    ("ref-3d", lambda: cs.Bandit(reward=np.zeros((1, 2)), ref=np.full((1, 1, 2), 0.5)), "ref"),
    ("K=1", lambda: cs.Bandit(reward=[1.0], ref=[1.0]), "reward"),
    ("K=1-contextual", lambda: cs.Bandit(reward=np.zeros((3, 1)), ref=np.ones((3, 1))), "reward"),
    ("ref-negative", lambda: cs.Bandit(reward=[1.0, 0.0], ref=[1.5, -0.5]), "ref"),
    ("ref-not-normalised", lambda: cs.Bandit(reward=[1.0, 0.0], ref=[0.5, 0.4]), "ref"),
    ("ref-row-not-normalised", lambda: cs.Bandit(reward=np.zeros((2, 2)),
                                                 ref=[[0.5, 0.5], [0.5, 0.6]]), "ref"),
    ("ref-nan", lambda: cs.Bandit(reward=[1.0, 0.0], ref=[NAN, 0.5]), "ref"),
    ("reward-nan", lambda: cs.Bandit(reward=[NAN, 0.0], ref=[0.5, 0.5]), "reward"),
    ("reward-inf", lambda: cs.Bandit(reward=[INF, 0.0], ref=[0.5, 0.5]), "reward"),
    ("reward-not-numeric", lambda: cs.Bandit(reward=["a", "b"], ref=[0.5, 0.5]), "reward"),
    ("context-weights-sum", lambda: cs.Bandit(reward=np.zeros((2, 2)), ref=np.full((2, 2), 0.5),
                                              context_weights=[0.5, 0.6]), "context_weights"),
    ("context-weights-shape", lambda: cs.Bandit(reward=np.zeros((2, 2)), ref=np.full((2, 2), 0.5),
                                                context_weights=[1.0]), "context_weights"),
    ("context-weights-plain", lambda: cs.Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5],
                                                context_weights=[0.5, 0.5]), "context_weights"),
    ("proxy-reward-shape", lambda: cs.optimal_policy(ENV, 1.0, reward=[1.0, 2.0]), "reward"),
    ("proxy-reward-nan", lambda: cs.optimal_policy(ENV, 1.0, reward=[NAN, 0.0, 0.0]), "reward"),
    # -- beta <= 0 and NaN beta, several objectives
    ("optimal_policy-beta0", lambda: cs.optimal_policy(ENV, 0.0), "beta"),
    ("optimal_policy-beta-nan", lambda: cs.optimal_policy(ENV, NAN), "beta"),
    ("sigmoid-beta-neg", lambda: cs.objective("sigmoid", beta=-1.0), "beta"),
    ("ipo-beta-nan", lambda: cs.objective("ipo", beta=NAN), "beta"),
    ("hinge-beta-0", lambda: cs.objective("hinge", beta=0.0), "beta"),
    ("rlhf-beta-0", lambda: cs.objective("rlhf", beta=0), "beta"),
    ("rlhf-beta-inf", lambda: cs.objective("rlhf", beta=INF), "beta"),
    ("online_dpo-beta-neg", lambda: cs.objective("online_dpo", beta=-0.1), "beta"),
    ("online_ipo-beta-nan", lambda: cs.objective("online_ipo", beta=NAN), "beta"),
    ("iterative_dpo-beta-0", lambda: cs.objective("iterative_dpo", beta=0.0), "beta"),
    ("hypo-beta-neg", lambda: cs.objective("hypo", beta=-1.0), "beta"),
    ("vpo-beta-nan", lambda: cs.objective("vpo", beta=NAN), "beta"),
    ("awr-beta-0", lambda: cs.objective("awr", beta=0.0), "beta"),
    ("beta-not-a-number", lambda: cs.objective("sigmoid", beta="big"), "beta"),
    ("ideal-ranking-beta-0", lambda: M.ideal_ranking_accuracy(ENV, DATA, 0.0), "beta"),
    ("policy_metrics-beta-neg", lambda: M.policy_metrics(ENV, ENV.ref[None], beta=-1.0), "beta"),
    # -- other objective parameters
    ("hypo-lam-neg", lambda: cs.objective("hypo", lam=-1.0), "lam"),
    ("vpo-alpha-neg", lambda: cs.objective("vpo", alpha=-1.0), "alpha"),
    ("vpo-mode", lambda: cs.objective("vpo", mode="sideways"), "mode"),
    ("ipo-length-0", lambda: cs.objective("ipo", length=0.0), "length"),
    ("discopop-tau-neg", lambda: cs.objective("discopop", discopop_tau=-1.0), "discopop_tau"),
    ("unknown-parameter", lambda: cs.objective("rlhf", gamma=1.0), "gamma"),
    # -- epsilon (label_smoothing, label_noise) outside its range
    ("cdpo-label_smoothing-0.6", lambda: cs.objective("cdpo", label_smoothing=0.6), "label_smoothing"),
    ("cdpo-label_smoothing-neg", lambda: cs.objective("cdpo", label_smoothing=-0.1),
     "label_smoothing"),
    ("sigmoid-label_smoothing-nan", lambda: cs.objective("sigmoid", label_smoothing=NAN),
     "label_smoothing"),
    ("robust-label_smoothing-0.5", lambda: cs.objective("robust", label_smoothing=0.5),
     "label_smoothing"),
    ("exo-label_smoothing-0", lambda: cs.objective("exo_pair", label_smoothing=0.0),
     "label_smoothing"),
    ("exo-label_smoothing-1", lambda: cs.objective("exo_pair", label_smoothing=1.0),
     "label_smoothing"),
    ("online_dpo-label_noise", lambda: cs.objective("online_dpo", label_noise=0.7), "label_noise"),
    ("vpo-label_noise-neg", lambda: cs.objective("vpo", label_noise=-0.1), "label_noise"),
    ("offline_pairs-label_noise", lambda: cs.offline_pairs(ENV, ENV.ref, label_noise=0.51),
     "label_noise"),
    ("offline_pairs-label_noise-nan", lambda: cs.offline_pairs(ENV, ENV.ref, label_noise=NAN),
     "label_noise"),
    # -- unknown names
    ("unknown-objective", lambda: cs.objective("dpo2"), "objective"),
    ("unknown-objective-in-train", _train("dpo2"), "objective"),
    ("unknown-loss_type", lambda: cs.objective("online_dpo", loss_type="sigmoidal"), "loss_type"),
    ("unknown-loss_type-iterative", lambda: cs.objective("iterative_dpo", loss_type="x"),
     "loss_type"),
    ("unknown-pair-loss", lambda: cs.pair_loss("sigmoidal", 0.0, 0.0, 0.0, 0.0), "loss"),
    ("unknown-labels", lambda: cs.offline_pairs(ENV, ENV.ref, labels="thurstone"), "labels"),
    ("unknown-labels-objective", lambda: cs.objective("online_dpo", labels="thurstone"), "labels"),
    ("unknown-optimizer", _train(optimizer="sgd"), "optimizer"),
    ("unknown-init", lambda: cs.TabularSoftmax(init="zeros"), "init"),
    ("unknown-base", lambda: cs.LogLinear(np.eye(3), base="one"), "base"),
    # -- behaviour policies
    ("behavior-no-support", lambda: cs.offline_pairs(ENV, [0.0, 0.0, 0.0]), "behavior"),
    ("behavior-no-support-context", lambda: cs.offline_pairs(CTX, [[0.5, 0.5, 0.0], [0, 0, 0]]),
     "behavior"),
    ("behavior-mass-where-ref-0", lambda: cs.offline_pairs(PARTIAL, [0.4, 0.4, 0.2]), "behavior"),
    ("behavior-not-normalised", lambda: cs.offline_pairs(ENV, [0.4, 0.4, 0.4]), "behavior"),
    ("behavior-negative", lambda: cs.offline_pairs(ENV, [1.2, -0.2, 0.0]), "behavior"),
    ("behavior-shape", lambda: cs.offline_pairs(ENV, [0.5, 0.5]), "behavior"),
    ("policy_pairs-mass-where-ref-0", lambda: cs.policy_pairs(PARTIAL, [0.4, 0.4, 0.2]), "policy"),
    ("restrict_support-empty", lambda: cs.restrict_support(ENV.ref, np.zeros(3, dtype=bool)),
     "support"),
    ("pairs_from_list-ref-0", lambda: cs.pairs_from_list(PARTIAL, [(0, 2)]), "ref"),
    # -- counts
    ("offline_pairs-n-0", lambda: cs.offline_pairs(ENV, ENV.ref, n=0), "n"),
    ("offline_pairs-n-float", lambda: cs.offline_pairs(ENV, ENV.ref, n=2.5), "n"),
    ("best_of_n-n-0", lambda: cs.objective("best_of_n", n=0), "n"),
    ("iterative_dpo-n-1", lambda: cs.objective("iterative_dpo", n=1), "n"),
    ("iterative_dpo-steps_per_iteration-0",
     lambda: cs.objective("iterative_dpo", steps_per_iteration=0), "steps_per_iteration"),
    # -- training arguments
    ("steps-negative", _train(steps=-1), "steps"),
    ("steps-float", _train(steps=1.5), "steps"),
    ("steps-bool", _train(steps=True), "steps"),
    ("lr-0", _train(lr=0.0), "lr"),
    ("lr-negative", _train(lr=-0.1), "lr"),
    ("lr-nan", _train(lr=NAN), "lr"),
    ("record-beyond-steps", _train(record=[0, 3]), "record"),
    ("record-0-points", _train(record=0), "record"),
    ("env-not-a-bandit", lambda: cs.train("env", "rlhf", steps=2, lr=0.1), "env"),
    ("objective-wrong-type", _train(objective=3), "objective"),
    ("policy-wrong-type", _train(policy="tabular"), "policy"),
    ("init-not-a-distribution", _train(policy=cs.TabularSoftmax(init=[0.5, 0.6, 0.0])), "init"),
    ("init-mass-where-ref-0",
     _train(env=PARTIAL, policy=cs.TabularSoftmax(init=[0.4, 0.4, 0.2])), "init"),
    ("init-shape", _train(policy=cs.TabularSoftmax(init=[0.5, 0.5])), "init"),
    ("init_scale-0", lambda: cs.TabularSoftmax(init="random", init_scale=0.0), "init_scale"),
    ("features-shape", _train(policy=cs.LogLinear(np.eye(4))), "features"),
    ("features-1d", lambda: cs.LogLinear(np.ones(3)), "features"),
    ("features-nan", lambda: cs.LogLinear(np.full((3, 2), NAN)), "features"),
    ("loglinear-init-shape", lambda: cs.LogLinear(np.eye(3), init=[0.0, 0.0]), "init"),
    # -- data passed to train
    ("data-wrong-shape", _train("sigmoid", DATA_K2), "data"),
    ("data-wrong-type", _train("sigmoid", np.zeros((1, 3, 3))), "data"),
    ("data-missing-sigmoid", _train("sigmoid"), "data"),
    ("data-missing-best_of_n", _train("best_of_n"), "data"),
    ("data-missing-awr", _train("awr"), "data"),
    ("data-missing-hypo", _train("hypo"), "data"),
    ("data-missing-vpo-offline", _train(cs.objective("vpo", mode="offline")), "data"),
    ("loss_and_grad-data-missing",
     lambda: cs.objective("ipo").loss_and_grad(ENV, np.log(ENV.ref)), "data"),
    ("loss_and_grad-logp-shape",
     lambda: cs.objective("rlhf").loss_and_grad(ENV, np.zeros(2)), "logp"),
    # -- train_many batches
    ("train_many-list-lengths", lambda: cs.train_many([ENV, ENV], ["rlhf"] * 3, steps=1, lr=0.1),
     "envs"),
    ("train_many-lr-length", lambda: cs.train_many([ENV, ENV], "rlhf", steps=1, lr=[0.1]), "lr"),
    ("train_many-empty", lambda: cs.train_many([], "rlhf", steps=1, lr=0.1), "envs"),
    ("train_many-shapes", lambda: cs.train_many([ENV, cs.Bandit([1.0, 0.0], [0.5, 0.5])], "rlhf",
                                                steps=1, lr=0.1), "envs"),
    ("train_many-objective-names", lambda: cs.train_many(ENV, ["rlhf", "online_dpo"], steps=1,
                                                         lr=0.1), "objectives"),
    ("train_many-data-shape", lambda: cs.train_many(ENV, "sigmoid", DATA_K2, steps=1, lr=0.1),
     "data"),
    ("train_many-lr-0", lambda: cs.train_many(ENV, "rlhf", steps=1, lr=[0.1, 0.0]), "lr"),
    ("log_schedule-steps", lambda: cs.log_schedule(-1), "steps"),
    ("log_schedule-num", lambda: cs.log_schedule(10, 0), "num"),
    # -- sampled mode
    ("sampled-batch_size-0", _train(batch_size=0), "batch_size"),
    ("sampled-batch_size-neg", _train(batch_size=-3), "batch_size"),
    ("sampled-batch_size-float", _train(batch_size=2.5), "batch_size"),
    ("sampled-reuse-0", _train(batch_size=4, reuse=0), "reuse"),
    ("sampled-reuse-without-batch", _train(reuse=2), "reuse"),
    ("sampled-estimator-without-batch", _train(estimator=dict(group_size=2)), "estimator"),
    ("sampled-estimator-type", _train(batch_size=4, estimator=3), "estimator"),
    ("sampled-estimator-unknown-field", _train(batch_size=4, estimator=dict(gamma=1)), "gamma"),
    ("sampled-baseline-name", _train(batch_size=4, estimator=dict(baseline="ppo")), "baseline"),
    ("sampled-kl_estimator-name", _train(batch_size=4, estimator=dict(kl_estimator="k4")),
     "kl_estimator"),
    ("sampled-kl_in-name", _train(batch_size=4, estimator=dict(kl_in="both")), "kl_in"),
    ("sampled-pairs-name", _train("online_dpo", batch_size=4, estimator=dict(pairs="some")),
     "pairs"),
    ("sampled-clip-range", _train(batch_size=4, estimator=dict(clip=1.5)), "clip"),
    ("sampled-group_size-0", _train(batch_size=4, estimator=dict(group_size=0)), "group_size"),
    ("sampled-min_reward_gap-neg", _train("online_dpo", batch_size=4,
                                          estimator=dict(min_reward_gap=-0.1)), "min_reward_gap"),
    ("sampled-baseline-offline", _train("sigmoid", DATA, batch_size=4,
                                        estimator=dict(baseline="rloo")), "baseline"),
    ("sampled-kl-without-kl-term", _train("online_dpo", batch_size=4,
                                          estimator=dict(kl_estimator="k1")), "kl_estimator"),
    ("sampled-clip-without-score", _train("online_dpo", batch_size=4, estimator=dict(clip=0.2)),
     "clip"),
    ("sampled-rloo-group-1", _train(batch_size=4, estimator=dict(group_size=1)), "group_size"),
    ("sampled-grpo-group-1", _train(batch_size=4, estimator=dict(group_size=1, baseline="grpo")),
     "group_size"),
    ("sampled-pairs-group-1", _train("online_dpo", batch_size=4, estimator=dict(group_size=1)),
     "group_size"),
    ("sampled-iterative-reuse", _train("iterative_dpo", batch_size=4, reuse=2), "reuse"),
    ("sampled-data-missing", _train("sigmoid", batch_size=4), "data"),
    ("sampled-train_many-batch_size", lambda: cs.train_many(ENV, "rlhf", steps=1, lr=0.1,
                                                            batch_size=0), "batch_size"),
    ("sampled_gradient-batch_size", lambda: cs.sampled_gradient(ENV, "rlhf", np.zeros(3),
                                                                batch_size=0), "batch_size"),
    ("sampled_gradient-seed", lambda: cs.sampled_gradient(ENV, "rlhf", np.zeros(3), batch_size=2,
                                                          seed=-1), "seed"),
    ("sampled_gradient-option", lambda: cs.sampled_gradient(ENV, "rlhf", np.zeros(3), batch_size=2,
                                                            pairs="all"), "pairs"),
    ("sampled_gradients-draws", lambda: cs.sampled_gradients(ENV, "rlhf", np.zeros(3),
                                                             batch_size=2, draws=0), "draws"),
    ("gradient-logits-nan", lambda: cs.gradient(ENV, "rlhf", [0.0, NAN, 0.0]), "logits"),
    ("gradient-logits-shape", lambda: cs.gradient(ENV, "rlhf", np.zeros(2)), "logits"),
    ("gradient-logits-off-support", lambda: cs.gradient(PARTIAL, "rlhf", np.zeros(3)), "logits"),
    ("gradient-min_reward_gap-offline", lambda: cs.gradient(ENV, "rlhf", np.zeros(3),
                                                            min_reward_gap=0.1), "min_reward_gap"),
    ("batch_gradient-batch", lambda: cs.batch_gradient(ENV, "rlhf", np.zeros(3), batch={}),
     "batch"),
    ("population_batch-best_worst", lambda: cs.population_batch(
        ENV, "online_dpo", np.zeros(3), group_size=3, pairs="best_worst"), "pairs"),
    ("group_pairs-group_size", lambda: cs.group_pairs(ENV, ENV.ref, 3, 1), "group_size"),
    ("group_pairs-n_groups", lambda: cs.group_pairs(ENV, ENV.ref, 0, 3), "n_groups"),
    ("group_pairs-pairs", lambda: cs.group_pairs(ENV, ENV.ref, 3, 3, pairs="some"), "pairs"),
    ("group_pairs-gap", lambda: cs.group_pairs(ENV, ENV.ref, 3, 3, min_reward_gap=-1.0),
     "min_reward_gap"),
    ("group_pairs-behavior", lambda: cs.group_pairs(ENV, [0.5, 0.5], 3, 3), "behavior"),
    # -- metrics
    ("metric-policy-shape", lambda: M.expected_reward(ENV, [0.5, 0.5]), "policy"),
    ("metric-kl-q-shape", lambda: M.kl_divergence(ENV, ENV.ref, [0.5, 0.5]), "q"),
    ("metric-tv-p-shape", lambda: M.tv_distance(ENV, np.ones((2, 2)), ENV.ref), "p"),
    ("metric-win_rate-against", lambda: M.win_rate(ENV, ENV.ref, against=[1.0, 0.0]), "against"),
    ("metric-reward-shape", lambda: M.expected_reward(ENV, ENV.ref, reward=[1.0, 2.0]), "reward"),
    ("metric-data-shape", lambda: M.ranking_accuracy(ENV, ENV.ref, DATA_K2), "data"),
    ("metric-mass_off_support-data", lambda: M.mass_off_support(ENV, ENV.ref, DATA_K2), "data"),
    # -- TRL DPOTrainer options, combined losses, KTO, Nash-MD, XPO, TR-DPO
    ("f_divergence_type-unknown", lambda: cs.objective("sigmoid", f_divergence_type="kl"),
     "f_divergence_type"),
    ("f_divergence_type-no-effect", lambda: cs.objective("sft", f_divergence_type="forward_kl"),
     "f_divergence_type"),
    ("f_divergence_type-no-effect-list",
     lambda: cs.objective(["apo_zero", "aot"], f_divergence_type="js_divergence"),
     "f_divergence_type"),
    ("f_alpha_divergence_coef-nan",
     lambda: cs.objective("ipo", f_alpha_divergence_coef=NAN), "f_alpha_divergence_coef"),
    ("use_weighting-not-bool", lambda: cs.objective("sigmoid", use_weighting="yes"),
     "use_weighting"),
    ("use_weighting-aot", lambda: cs.objective("aot", use_weighting=True), "use_weighting"),
    ("use_weighting-rpo", lambda: cs.objective("rpo", use_weighting=True), "use_weighting"),
    ("ld_alpha-1.5", lambda: cs.objective("sigmoid", ld_alpha=1.5), "ld_alpha"),
    ("ld_alpha-neg", lambda: cs.objective("ipo", ld_alpha=-0.1), "ld_alpha"),
    ("sync_ref_model-not-bool", lambda: cs.objective("sigmoid", sync_ref_model=1),
     "sync_ref_model"),
    ("ref_model_mixup_alpha-0", lambda: cs.objective("sigmoid", ref_model_mixup_alpha=0.0),
     "ref_model_mixup_alpha"),
    ("ref_model_mixup_alpha-1.5", lambda: cs.objective("sigmoid", ref_model_mixup_alpha=1.5),
     "ref_model_mixup_alpha"),
    ("ref_model_sync_steps-0", lambda: cs.objective("sigmoid", ref_model_sync_steps=0),
     "ref_model_sync_steps"),
    ("ref_model_sync_steps-float", lambda: cs.objective("sigmoid", ref_model_sync_steps=2.5),
     "ref_model_sync_steps"),
    ("sync_ref_model-autoregressive",
     lambda: cs.train(LOCK.bandit, cs.objective("sigmoid", sync_ref_model=True),
                      cs.offline_pairs(LOCK.bandit, LOCK.bandit.ref), steps=1, lr=0.1,
                      policy=cs.AutoregressiveTabular(LOCK)),
     "sync_ref_model"),
    ("loss_weights-length", lambda: cs.objective(["sigmoid", "sft"], loss_weights=[1.0]),
     "loss_weights"),
    ("loss_weights-negative", lambda: cs.objective("mpo", loss_weights=[1.0, -0.2, 1.0]),
     "loss_weights"),
    ("loss_weights-nan", lambda: cs.objective("rpo", loss_weights=[NAN, 1.0]), "loss_weights"),
    ("loss_weights-not-numbers", lambda: cs.objective("rpo", loss_weights="ab"), "loss_weights"),
    ("loss_weights-single-loss", lambda: cs.objective("sigmoid", loss_weights=[2.0]),
     "loss_weights"),
    ("loss-types-unknown", lambda: cs.objective(["sigmoid", "simpo"]), "loss_type"),
    ("loss-types-empty", lambda: cs.objective([]), "loss"),
    ("loss-types-list-exo-0", lambda: cs.objective(["sigmoid", "exo_pair"], label_smoothing=0.0),
     "label_smoothing"),
    ("kto-beta-0", lambda: cs.objective("kto", beta=0.0), "beta"),
    ("kto-desirable_weight-0", lambda: cs.objective("kto", desirable_weight=0.0),
     "desirable_weight"),
    ("kto-undesirable_weight-nan",
     lambda: cs.objective("apo_zero_unpaired", undesirable_weight=NAN), "undesirable_weight"),
    ("kto-data-missing", _train("kto"), "data"),
    ("kto-data-wrong-type", lambda: cs.objective("kto").loss_and_grad(ENV, np.log(ENV.ref),
                                                                      np.zeros((1, 3))), "data"),
    ("kto-mismatched-ref-0",
     lambda: cs.objective("kto").loss_and_grad(
         CTX_PARTIAL, np.log(np.full((2, 3), 1 / 3)),
         cs.UnpairedData(desirable=[[0.5, 0.0, 0.0], [0.0, 0.0, 0.0]],
                         undesirable=[[0.0, 0.0, 0.0], [0.0, 0.0, 0.5]], shape=(2, 3))), "data"),
    ("sigmoid-unpaired-data", _train("sigmoid", cs.unpaired_data(ENV, ENV.ref)), "data"),
    ("unpaired_data-labels", lambda: cs.unpaired_data(ENV, ENV.ref, labels="coin"), "labels"),
    ("unpaired_data-threshold-shape", lambda: cs.unpaired_data(CTX, CTX.ref, threshold=[0.0]),
     "threshold"),
    ("unpaired_data-threshold-nan", lambda: cs.unpaired_data(ENV, ENV.ref, threshold=NAN),
     "threshold"),
    ("unpaired_data-n-0", lambda: cs.unpaired_data(ENV, ENV.ref, n=0), "n"),
    ("unpaired_data-behavior", lambda: cs.unpaired_data(PARTIAL, [0.4, 0.4, 0.2]), "behavior"),
    ("UnpairedData-sum", lambda: cs.UnpairedData(desirable=[0.2, 0.2, 0.0],
                                                 undesirable=[0.0, 0.0, 0.2], shape=(3,)),
     "desirable"),
    ("nash_md-mixture_coef", lambda: cs.objective("nash_md", mixture_coef=1.5), "mixture_coef"),
    ("nash_md-beta-0", lambda: cs.objective("nash_md", beta=0.0), "beta"),
    ("nash_md-labels", lambda: cs.objective("nash_md", labels="judge"), "labels"),
    ("xpo-loss_type", lambda: cs.objective("xpo", loss_type="hinge"), "loss_type"),
    ("xpo-alpha-neg", lambda: cs.objective("xpo", alpha=-1e-5), "alpha"),
    ("xpo-label_noise", lambda: cs.objective("xpo", label_noise=0.6), "label_noise"),
    ("xpo-data-given", _train("xpo", DATA), "data"),
    ("unpaired_data-seed-negative", lambda: cs.unpaired_data(ENV, ENV.ref, n=10, seed=-1), "seed"),
    ("unpaired_data-env-list", lambda: cs.unpaired_data([1.0, 0.0], [0.5, 0.5]), "env"),
    # -- the sampled twins of the catalogue's objectives
    ("sync_ref_model-autoregressive-sampled",
     lambda: cs.train(LOCK.bandit, cs.objective("sigmoid", sync_ref_model=True),
                      cs.offline_pairs(LOCK.bandit, LOCK.bandit.ref), steps=1, lr=0.1,
                      policy=cs.AutoregressiveTabular(LOCK), batch_size=2),
     "sync_ref_model"),
    ("kto-sampled-kl_estimator-k2",
     _train("kto", DATA, batch_size=2, estimator=dict(kl_estimator="k2")), "kl_estimator"),
    ("sigmoid-unpaired-data-sampled",
     lambda: cs.sampled_gradient(ENV, "sigmoid", np.log(ENV.ref), cs.unpaired_data(ENV, ENV.ref),
                                 batch_size=2), "data"),
    ("kto-sampled-mismatched-ref-0",
     lambda: cs.sampled_gradient(
         CTX_PARTIAL, "kto", np.where(CTX_PARTIAL.ref > 0, 0.0, -np.inf),
         cs.UnpairedData(desirable=[[0.5, 0.0, 0.0], [0.0, 0.0, 0.0]],
                         undesirable=[[0.0, 0.0, 0.0], [0.0, 0.0, 0.5]], shape=(2, 3)),
         batch_size=2), "data"),
    ("nash_md-sampled-group_size", _train("nash_md", batch_size=2, estimator=dict(group_size=3)),
     "group_size"),
    ("metric-no-pairs", lambda: M.ranking_accuracy(
        ENV, ENV.ref, cs.PairData(weights=np.diag([0.5, 0.5, 0.0])[None], shape=(3,))), "data"),
    # -- seeds, Adam settings, types that used to be coerced or misread
    ("train-seed-str", _train(seed="abc"), "seed"),
    ("train-seed-negative", _train(seed=-1), "seed"),
    ("train-seed-float", _train(seed=1.5), "seed"),
    ("train_many-seed-negative", lambda: cs.train_many(ENV, "rlhf", steps=1, lr=0.1, seed=-1),
     "seed"),
    ("offline_pairs-seed-str", lambda: cs.offline_pairs(ENV, ENV.ref, n=10, seed="abc"), "seed"),
    ("offline_pairs-seed-negative", lambda: cs.offline_pairs(ENV, ENV.ref, n=10, seed=-1), "seed"),
    ("adam-too-short", _train(adam=(0.9,)), "adam"),
    ("adam-beta1-above-1", _train(adam=(1.5, 0.999, 1e-8)), "adam"),
    ("adam-beta2-1", _train(adam=(0.9, 1.0, 1e-8)), "adam"),
    ("adam-eps-0", _train(adam=(0.9, 0.999, 0.0)), "adam"),
    ("train_many-adam", lambda: cs.train_many(ENV, "rlhf", steps=1, lr=0.1, adam=(0.9,)), "adam"),
    ("offline_pairs-env-list", lambda: cs.offline_pairs([1.0, 0.0], [0.5, 0.5]), "env"),
    ("bandit-reward-none", lambda: cs.Bandit(reward=None, ref=[0.5, 0.5]), "reward"),
    ("bandit-ref-none", lambda: cs.Bandit(reward=[1.0, 0.0], ref=None), "ref"),
    ("beta-str", lambda: cs.objective("sigmoid", beta="0.1"), "beta"),
    ("beta-bool", lambda: cs.objective("sigmoid", beta=True), "beta"),
    ("beta-str-online", lambda: cs.objective("rlhf", beta="0.1"), "beta"),
    ("lr-str", _train(lr="0.1"), "lr"),
    ("label_smoothing-bool", lambda: cs.objective("cdpo", label_smoothing=False),
     "label_smoothing"),
    ("beta-1e-300", lambda: cs.objective("ipo", beta=1e-300), "beta"),
    ("beta-1e-300-online", lambda: cs.objective("online_dpo", beta=1e-300), "beta"),
    ("beta-1e-7-pair-loss", lambda: cs.pair_loss("sigmoid", 0.0, 0.0, 0.0, 0.0, beta=1e-7), "beta"),
    ("online-objective-given-data", _train("rlhf", DATA), "data"),
    ("online_dpo-given-data", _train("online_dpo", DATA), "data"),
    ("train_many-online-given-data", lambda: cs.train_many(ENV, "online_dpo", DATA, steps=1,
                                                            lr=0.1), "data"),
    ("restrict_support-int-mask", lambda: cs.restrict_support(ENV.ref, [1, 0, 1]), "support"),
    ("restrict_support-int-mask-k2", lambda: cs.restrict_support([0.5, 0.5], [0, 1]), "support"),
    ("restrict_support-duplicate-indices", lambda: cs.restrict_support(ENV.ref, [2, 2]),
     "support"),
    ("awr-exp-overflow", _train(cs.objective("awr", beta=1e-3), DATA), "beta"),
]


@pytest.mark.parametrize("call,param", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_input_raises_value_error_naming_the_parameter(call, param):
    # the name as a whole word: "n" must not be satisfied by the "n" inside "must"
    with pytest.raises(ValueError, match=rf"\b{re.escape(param)}\b"):
        call()


def test_case_ids_are_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))


def test_awr_overflow_message_names_the_cause():
    with pytest.raises(ValueError, match=r"exp\(r / beta\) overflow"):
        cs.train(ENV, cs.objective("awr", beta=1e-3), DATA, steps=1, lr=0.1)


def test_train_exact_on_cuda_without_cuda_names_the_device():
    torch = pytest.importorskip("torch")
    from coverage_sim.sequences import tajwar_token_env
    from coverage_sim.torch_backend import train_exact
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    env = tajwar_token_env(length=2, vocab=3, n_prompts=1)
    with pytest.raises(ValueError, match=r"\bdevice\b.*CUDA"):
        train_exact(env, cs.objective("rlhf"), steps=1, lr=0.1, device="cuda")


def test_random_bandit_works_with_its_defaults_at_every_size():
    for k in (2, 500, 501, 1000, 4000):
        env = cs.random_bandit(k)
        assert env.ref.min() >= min(1e-3, 0.5 / k) * (1 - 1e-12)
    # the shared §12 instance is unchanged where it worked before
    np.testing.assert_array_equal(cs.random_bandit(12, seed=3).ref,
                                  cs.random_bandit(12, seed=3, min_ref=1e-3).ref)


@pytest.mark.parametrize("env_name,objective,optimizer,lr", [
    ("tajwar-peak70", "sigmoid", "npg", 10.0), ("tajwar-peak70", "sigmoid", "npg", 100.0)])
def test_a_loss_that_grows_by_orders_of_magnitude_is_a_divergence(env_name, objective, optimizer,
                                                                   lr):
    """Finite but absurd (loss 7.7e26 at lr 10) is reported like NaN, not returned."""
    from coverage_sim.instances import make_instance
    env = make_instance(env_name)
    with pytest.raises(FloatingPointError, match="loss grew"):
        cs.train(env, objective, cs.offline_pairs(env, env.ref), steps=200, lr=lr,
                 optimizer=optimizer)
