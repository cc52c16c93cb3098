# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 — From bandits to transformers: the same objective on a tiny transformer
#
# **Question.** Notebooks 01–05 optimise a softmax over a handful of responses. A language model is
# an *autoregressive* policy over token sequences, with parameters shared across every prefix. Does
# anything we learned on bandits survive that change? Do RLHF and DPO still reach
# $\pi^*_\beta = \pi_{\mathrm{ref}}\, e^{r/\beta}/Z$, does offline DPO still suffer under partial
# coverage, and does training on sampled minibatches follow the exact population gradient?
#
# **Papers.** Tajwar et al. 2024, *Preference Fine-Tuning of LLMs Should Leverage Suboptimal,
# On-Policy Data* (arXiv:2404.14367): the token task and minGPT's "gpt-nano" policy used here.
# Rafailov et al. 2023, *Direct Preference Optimization* (arXiv:2305.18290): DPO and its optimum.
# Tang et al. 2024, *Understanding the performance gap between online and offline alignment
# algorithms* (arXiv:2405.08448): online beats offline. Song et al. 2024 (arXiv:2406.01462):
# coverage. The claims checked below:
#
# * **One objective, three policies.** The KL-regularised objective is defined once, in the
#   numba core. A tabular softmax over whole sequences, a tabular autoregressive policy and a
#   causal transformer all reach the same $\pi^*_\beta$ with it (C1 of the
#   [theory guide](../docs/claims.md), now for sequence policies).
# * **Coverage, for a transformer.** Offline DPO on data that never show a good *token* ends far
#   below online DPO, for the transformer as for the tabular policies. Data that miss only the
#   best *sequence* stall the tabular policies but not the transformer, which extrapolates.
# * **Sampled = exact, in expectation.** Minibatch RLHF (REINFORCE with a leave-one-out baseline)
#   tracks the exact-gradient run and converges to the same policy.
#
# **Setting.** Tajwar's token task, shrunk until every response can be enumerated: one prompt,
# responses of $L = 3$ tokens from a vocabulary of $V = 4$, so $4^3 = 64$ sequences. The reference
# draws each token i.i.d. from the tanh-Cauchy histogram of notebook 03 (4 bins), and the gold
# reward is the mean over positions of a bump at 70% of the vocabulary,
# $r(y) = \frac1L \sum_t e^{-((y_t - 2.8)/0.4)^2}$. Token 3 is the good token, and the best
# sequence $(3, 3, 3)$ has reference probability $\approx 10^{-3}$.

# %% [markdown]
# ## The knob
#
# $\beta$ is the KL strength of RLHF and DPO. Small $\beta$ puts $\pi^*_\beta$ almost entirely on
# $(3, 3, 3)$; large $\beta$ keeps it near $\pi_{\mathrm{ref}}$, and every gap below shrinks
# with $\pi^*_\beta$'s gain in reward. The checks hold for $\beta \in [0.05, 1]$. Try `0.05` or
# `1`.

# %% tags=["parameters"]
beta = 0.1  # KL strength beta > 0 of RLHF and DPO

# %%
import copy

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

import coverage_sim as cs
from coverage_sim import metrics
from coverage_sim.torch_backend import train_exact, train_sampled
from coverage_sim.transformer import (CausalTransformer, TransformerConfig, sequence_logp_table,
                                      sft_to_reference)

# Every tensor here is tiny (64 sequences of 3 tokens): a second intra-op thread costs more in
# synchronisation than it saves, and it competes for the 2 cores when notebooks run in parallel.
torch.set_num_threads(1)

env = cs.tajwar_token_env(length=3, vocab=4)
bandit = env.bandit                      # the exact core Bandit over all 64 sequences
tokens = env.tokens                      # row i = response i (lexicographic)
reward, ref = bandit.reward2d[0], bandit.ref2d[0]
best = int(np.argmax(reward))
pi_star = cs.optimal_policy(bandit, beta)
names = ["".join(map(str, row)) for row in tokens]
print(env)
print(f"best sequence {names[best]}: r = {reward[best]:.3f}, pi_ref = {ref[best]:.1e}, "
      f"pi*_beta = {pi_star[0, best]:.3f}")
print(f"E_ref r = {float(metrics.expected_reward(bandit, bandit.ref)):.3f},  "
      f"E_pi* r = {float(metrics.expected_reward(bandit, pi_star)):.3f}")

# %% [markdown]
# What the knob does to the target: $\pi^*_\beta$ over the 64 sequences against
# $\pi_{\mathrm{ref}}$ (in Jupyter with ipywidgets, a slider; headless, the parameter cell's
# value).

# %%
from coverage_sim.notebook import explore


def show(beta):
    target_2d = cs.optimal_policy(bandit, beta)
    target = target_2d[0]
    order = np.argsort(-reward)
    fig, ax = plt.subplots(figsize=(9, 3))
    x = np.arange(len(order))
    ax.bar(x - 0.2, ref[order], 0.4, color="0.6", label=r"$\pi_{\mathrm{ref}}$")
    ax.bar(x + 0.2, target[order], 0.4, color="C0", label=rf"$\pi^*_\beta$, $\beta$ = {beta:g}")
    ax.set_yscale("log")
    ax.set_ylim(1e-6, 1.5)
    ax.set_xticks(x[::8], [names[i] for i in order[::8]], fontsize=8)
    ax.set_xlabel("sequence, by decreasing reward")
    ax.set_ylabel("probability")
    ax.set_title(f"E_pi* r = {float(metrics.expected_reward(bandit, target_2d)):.3f}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.show()


explore(show, beta=(beta, [0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0]))

# %% [markdown]
# ## 1. Three policies over the same 64 sequences
#
# * **Tabular softmax over sequences** (`cs.TabularSoftmax` on `env.bandit`): one logit per whole
#   sequence, $\pi(y) \propto e^{\theta_y}$. The bandit of notebooks 01–05.
# * **Tabular autoregressive** (`cs.AutoregressiveTabular`): one softmax per prefix,
#   $$\log \pi(y \mid x)
#     = \sum_{t=0}^{L-1} \log \mathrm{softmax}\big(\theta_{x, y_{<t}}\big)_{y_t},$$
#   with $1 + 4 + 16 = 21$ next-token distributions. It can represent every policy the first one
#   can, but a gradient step moves next-token conditionals, not sequences.
# * **Causal transformer**: minGPT's gpt-nano (3 layers, 3 heads, 48-dimensional embeddings),
#   Tajwar's policy. The same chain-rule factorisation, but every conditional comes from one shared
#   set of weights. As in Tajwar et al., it starts from a fit to the reference (SFT, minimising
#   $\mathrm{KL}(\pi_{\mathrm{ref}} \| \pi)$ exactly).

# %%
config = TransformerConfig(vocab=env.vocab, n_prompts=env.n_prompts, length=env.length)
sft_model = CausalTransformer(config, seed=0)
sft_loss = sft_to_reference(sft_model, env, steps=100, lr=1e-2)
n_params = sum(p.numel() for p in sft_model.parameters())
print(f"gpt-nano: {n_params:,} parameters; after SFT KL(pi_ref || pi) = {sft_loss[-1]:.1e}")
assert sft_loss[-1] < 1e-3, "the SFT'd transformer does not start at pi_ref"

# %% [markdown]
# ### The objective is defined once
#
# RLHF maximises $J_\beta(\pi) = \mathbb{E}_{y\sim\pi}\, r(y) - \beta\,
# \mathrm{KL}(\pi\|\pi_{\mathrm{ref}})$. The core's `Objective.loss_and_grad` returns the loss
# $L = -J_\beta$ and its gradient $g = \partial L / \partial \log\pi$, one number per sequence.
# No policy appears in it. Each parameterisation only supplies the chain rule:
#
# $$\nabla_\theta L = \sum_y g(y)\, \nabla_\theta \log \pi_\theta(y).$$
#
# For the transformer, `train_exact` computes $\log\pi_\theta$ for all 64 sequences in one
# forward pass and calls `logp.backward(g)`. As a check of that bridge, here is the same gradient
# from an independent torch transcription of $-J_\beta$, by autograd.

# %%
rlhf = cs.objective("rlhf", beta=beta)
model = copy.deepcopy(sft_model)
with torch.no_grad():   # push the model off pi_ref, where the gradient would be tiny
    for p in model.parameters():
        p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1),
                                 dtype=p.dtype))

logp = sequence_logp_table(model, tokens)                     # (1, 64), differentiable
loss, g = rlhf.loss_and_grad(bandit, logp.detach().numpy())   # the core: L and dL/dlog pi
logp.backward(torch.from_numpy(g))
core_grad = torch.cat([p.grad.ravel() for p in model.parameters()])

model.zero_grad()
logp = sequence_logp_table(model, tokens)
r_t, ref_lp = torch.tensor(reward), torch.tensor(bandit.ref_logp2d)
torch_loss = -(logp.exp() * (r_t - beta * (logp - ref_lp))).sum()
torch_loss.backward()
torch_loss = torch_loss.item()
autograd = torch.cat([p.grad.ravel() for p in model.parameters()])
rel = float((core_grad - autograd).abs().max() / autograd.abs().max())
print(f"loss: core {loss:.12f}, torch {torch_loss:.12f}; max relative gradient gap {rel:.1e}")
assert abs(loss - torch_loss) < 1e-12 and rel < 1e-10

# %% [markdown]
# ## 2. RLHF: three routes to $\pi^*_\beta$
#
# The same `rlhf` objective, three optimisers suited to each policy: natural policy gradient for
# the sequence softmax (as in notebook 01), Adam on the autoregressive logits, and Adam
# (lr $10^{-2}$) on the transformer's weights. `history["tv_to_opt"]` is the exact total variation
# distance to $\pi^*_\beta$.

# %%
rlhf_tab = cs.train(bandit, rlhf, steps=300, lr=0.5 / beta, optimizer="npg")
rlhf_ar = cs.train(bandit, rlhf, steps=5000, lr=1e-2, optimizer="adam",
                   policy=cs.AutoregressiveTabular(env))
rlhf_tf = train_exact(env, rlhf, model=copy.deepcopy(sft_model), steps=300, lr=1e-2)
routes = {"tabular softmax (NPG)": rlhf_tab, "tabular autoregressive (Adam)": rlhf_ar,
          "transformer, exact (Adam)": rlhf_tf}

fig, ax = plt.subplots(figsize=(6.5, 3.6))
for (name, run), style in zip(routes.items(), ("k:", "C1--", "C0-")):
    ax.plot(run.history["step"], run.history["tv_to_opt"], style, label=name)
ax.set_xscale("symlog", linthresh=1)
ax.set_xlim(0, None)
ax.set_yscale("log")
ax.set_xlabel("step")
ax.set_ylabel(r"TV($\pi_t$, $\pi^*_\beta$)")
ax.set_title(rf"RLHF, one objective, three policies ($\beta$ = {beta:g})")
ax.legend(fontsize=8)
fig.tight_layout()

final_tv = {name: run.history["tv_to_opt"].iloc[-1] for name, run in routes.items()}
print({name: f"{tv:.1e}" for name, tv in final_tv.items()})

# %% [markdown]
# The sequence softmax, with natural policy gradient, converges to machine precision. Adam's
# constant step leaves a small residual on the other two, so their stated tolerances are TV
# $< 10^{-3}$ (autoregressive) and $< 10^{-2}$ (transformer); both hold with a margin of at least
# 5 at every $\beta$ in the knob's range.

# %%
assert final_tv["tabular softmax (NPG)"] < 1e-9, "the sequence softmax missed pi*"
assert final_tv["tabular autoregressive (Adam)"] < 1e-3, "the autoregressive policy missed pi*"
assert final_tv["transformer, exact (Adam)"] < 1e-2, "the transformer missed pi*"

# %% [markdown]
# ## 3. DPO under partial coverage: tokens, not sequences
#
# Population DPO on pairs $(y, y') \sim \mu\otimes\mu$ with Bradley–Terry labels minimises
#
# $$L_{\mathrm{DPO}}(\pi) = -\,\mathbb{E}_{(y_w, y_l)}\,
#   \log\sigma\Big(\beta \log\frac{\pi(y_w)}{\pi_{\mathrm{ref}}(y_w)}
#                  - \beta \log\frac{\pi(y_l)}{\pi_{\mathrm{ref}}(y_l)}\Big).$$
#
# It fixes the log-ratios of the sequences $\mu$ covers (notebook 01) and says nothing about the
# others (notebook 02). Online DPO draws its pairs from $\pi_t$ itself, which always covers
# everything, and ends at $\pi^*_\beta$. We compare it with offline DPO on two partial-coverage
# datasets, both $\pi_{\mathrm{ref}}$ restricted to a support:
#
# * **best sequence unseen:** every sequence except $(3, 3, 3)$;
# * **token 3 unseen:** only sequences without token 3 (27 of 64).

# %%
dpo, online_dpo = cs.objective("sigmoid", beta=beta), cs.objective("online_dpo", beta=beta)
supports = {"best sequence unseen": np.arange(env.n_sequences) != best,
            "token 3 unseen": ~(tokens == env.vocab - 1).any(axis=1)}
datasets = {name: cs.offline_pairs(bandit, cs.restrict_support(bandit.ref, mask),
                                   labels="bradley_terry") for name, mask in supports.items()}


def train_three(objective, data=None):
    """Final policies (1, 64) of the three parameterisations on one objective."""
    tab = cs.train(bandit, objective, data, steps=2000, lr=0.1, optimizer="adam")
    ar = cs.train(bandit, objective, data, steps=2000, lr=0.1, optimizer="adam",
                  policy=cs.AutoregressiveTabular(env))
    tf = train_exact(env, objective, data, model=copy.deepcopy(sft_model), steps=200, lr=1e-2,
                     record=[0, 200])
    return {"tabular softmax": tab.policy.reshape(1, -1), "tabular autoregressive": ar.policy,
            "transformer": tf.policy}


policies = {"online DPO": train_three(online_dpo)}
policies.update({f"offline DPO, {name}": train_three(dpo, data)
                 for name, data in datasets.items()})
gold = pd.DataFrame({run: {param: float(metrics.expected_reward(bandit, pi))
                           for param, pi in pis.items()} for run, pis in policies.items()})
ref_r = float(metrics.expected_reward(bandit, bandit.ref))
star_r = float(metrics.expected_reward(bandit, pi_star))
print(f"gold reward E_pi r  (pi_ref: {ref_r:.3f}, pi*: {star_r:.3f})")
print(gold.round(3).to_string())

fig, ax = plt.subplots(figsize=(9, 3.6))
gold.plot.bar(ax=ax, rot=0, color=["C0", "C1", "C3"])
ax.axhline(ref_r, color="0.5", ls=":", label=r"$\pi_{\mathrm{ref}}$")
ax.axhline(star_r, color="k", ls="--", lw=1, label=r"$\pi^*_\beta$")
ax.set_ylabel("gold reward")
ax.set_title(rf"online vs offline DPO ($\beta$ = {beta:g})")
ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
fig.tight_layout()

# %% [markdown]
# **Token 3 unseen.** No pair ever contains the good token, so no parameterisation can learn that
# it is good: every offline run gains at most a tenth of what $\pi^*_\beta$ gains over
# $\pi_{\mathrm{ref}}$, while online DPO, whose own samples contain token 3, gets at least 90% of
# it. The autoregressive and transformer policies even *lose* reward: token 3's probability is not
# anchored by any pair, only moved by the normalisation of the conditionals that the data do
# constrain. This is Tang et al.'s online–offline gap, and it appears for the transformer as for the
# bandit.

# %%
gain = star_r - ref_r
for param in gold.index:
    online_r, offline_r = gold.loc[param, "online DPO"], gold.loc[param,
                                                                  "offline DPO, token 3 unseen"]
    assert online_r - ref_r >= 0.9 * gain, f"online DPO ({param}) missed pi*'s reward"
    assert offline_r - ref_r <= 0.1 * gain, f"offline DPO ({param}) learned an unseen token"
    assert online_r - offline_r >= 0.9 * gain, f"no online-offline gap for {param}"
print(f"transformer: online {gold.loc['transformer', 'online DPO']:.3f} vs offline "
      f"{gold.loc['transformer', 'offline DPO, token 3 unseen']:.3f} (gain of pi*: {gain:.3f})")

# %% [markdown]
# **Best sequence unseen.** Here the parameterisations part ways. A tabular policy has no way to
# move $(3, 3, 3)$ on purpose: no pair contains it, so the sequence softmax leaves its logit where
# it was, and the autoregressive one moves $\pi(3 \mid 3, 3)$ only through the normalisation at
# that prefix. Both lose nearly all of $\pi^*_\beta(3,3,3)$. The transformer reaches
# $\pi^*_\beta$ anyway: the data show token 3 at every position in other sequences, and its shared
# weights carry that over to the one sequence the data miss. It works here because the reward is a
# sum over tokens and the reference is i.i.d. over positions, so $\pi^*_\beta$ itself factorises
# over positions, a structure the transformer represents easily. Coverage for a function
# approximator is about the features the data reveal, not the responses they list. Exercise 1
# breaks this structure.

# %%
seq_gap = gold["offline DPO, best sequence unseen"]
for param in ("tabular softmax", "tabular autoregressive"):
    assert seq_gap[param] < gold.loc[param, "online DPO"], f"{param} found the unseen sequence"
tf_tv = float(metrics.tv_distance(bandit, policies["offline DPO, best sequence unseen"]
                                  ["transformer"], pi_star))
print(f"transformer, offline DPO without {names[best]}: TV(pi, pi*) = {tf_tv:.1e}")
assert tf_tv < 1e-2, "the transformer did not extrapolate to the unseen best sequence"

# %% [markdown]
# ## 4. Sampled mode tracks exact mode
#
# Above, every gradient is a population expectation over all 64 sequences. Tajwar's gpt-nano task
# has $100^9$ responses, so there `train_sampled` estimates it from minibatches instead. For RLHF it
# uses REINFORCE with a leave-one-out baseline (RLOO, Ahmadian et al. arXiv:2402.14740): per prompt,
# $G = 2$ responses from the current policy, with
#
# $$a(y) = r(y) - \beta \log\frac{\pi(y)}{\pi_{\mathrm{ref}}(y)}, \qquad
#   \hat\nabla L = -\frac1G \sum_{i=1}^G \Big(a(y_i) - \frac{1}{G-1}\sum_{j\ne i} a(y_j)\Big)
#   \nabla\log\pi(y_i),$$
#
# which is unbiased for the exact gradient. At $\pi^*_\beta$ the advantage is the same for every
# sequence, $a(y) = \beta\log Z$ (notebook 01's identity), so the estimate is exactly zero there:
# the noise dies out as training converges, and sampled training does not jitter around
# $\pi^*_\beta$.
#
# The check uses plain gradient descent (SGD) for both runs, so that the *expected* sampled
# update is exactly the exact update. Adam would not do: its first updates are close to
# $\pm\,\mathrm{lr}$ on every weight whatever the gradient's size (at step 1,
# $m/\sqrt{v} = \mathrm{sign}(g)$), so it amplifies minibatch noise early on (exercise 2). The
# step size shrinks for large $\beta$, where the KL term's curvature grows.

# %%
a_star = reward - beta * (np.log(pi_star[0]) - np.log(ref))
print(f"a(y) at pi*: min {a_star.min():.12f}, max {a_star.max():.12f}")
assert np.ptp(a_star) < 1e-12, "the advantage is not constant at pi*"

sgd = {"steps": 300, "lr": 0.1 * min(1.0, 0.3 / beta), "optimizer": "sgd"}
exact = train_exact(env, rlhf, model=copy.deepcopy(sft_model), **sgd)
sampled = train_sampled(env, rlhf, model=copy.deepcopy(sft_model), batch_size=32, seed=0,
                        record=exact.history["step"].tolist(), **sgd)
h_ex, h_sa = exact.history, sampled.history
gap = np.abs(h_sa["reward"].to_numpy() - h_ex["reward"].to_numpy())
late = h_ex["step"].to_numpy() >= sgd["steps"] // 2
tv_final = float(metrics.tv_distance(bandit, sampled.policy, exact.policy))

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.4))
for h, style, label in ((h_ex, "C0-", "exact (all 64 sequences)"),
                        (h_sa, "C3--", "sampled (32 prompts x 2 draws)")):
    ax0.plot(h["step"], h["reward"], style, label=label)
    ax1.plot(h["step"], h["tv_to_opt"], style, label=label)
ax0.axhline(star_r, color="k", lw=1, ls=":", label=r"$E_{\pi^*} r$")
ax0.set_ylabel("gold reward")
ax1.set_yscale("log")
ax1.set_ylabel(r"TV($\pi_t$, $\pi^*_\beta$)")
for ax in (ax0, ax1):
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(0, None)
    ax.set_xlabel("SGD step")
ax0.legend(fontsize=8)
ax1.set_title("transformer RLHF: sampled vs exact gradients")
fig.tight_layout()
print(f"reward gap / pi*'s gain: max {gap.max() / gain:.3f}, "
      f"second half {gap[late].max() / gain:.4f}")
print(f"final TV(sampled, exact) = {tv_final:.1e};  TV(sampled, pi*) = "
      f"{h_sa['tv_to_opt'].iloc[-1]:.1e}")

# %% [markdown]
# **The check, with its tolerances.** Measured in units of $\pi^*_\beta$'s gain in reward over
# $\pi_{\mathrm{ref}}$, the sampled run's gold reward stays within 0.25 of the exact run's at every
# recorded step, and within 0.02 over the second half of training. The worst moment is the steep
# initial climb, where a step's worth of noise shifts the curve by a lot. The two final policies are
# within TV $2\times10^{-3}$ of each other, and the sampled one within $10^{-2}$ of
# $\pi^*_\beta$.

# %%
assert gap.max() <= 0.25 * gain, f"sampled RLHF strayed {gap.max():.3f} from the exact run"
assert gap[late].max() <= 0.02 * gain, "sampled RLHF does not settle where the exact run does"
assert tv_final <= 2e-3, "sampled and exact RLHF ended at different policies"
assert h_sa["tv_to_opt"].iloc[-1] <= 1e-2, "sampled RLHF missed pi*"

# %% [markdown]
# ## Takeaways
#
# * The objective lives in one place. A transformer is one more way to pull
#   $\partial L/\partial\log\pi$ back to parameters, so every exact result about the population
#   objectives (the optimum $\pi^*_\beta$, DPO's blindness outside the data's support) carries over
#   unchanged.
# * What changes is what "covered" means. A tabular policy needs every good *response* in the data;
#   a transformer can extrapolate from responses that share its features, for better or worse
#   (notebook 02's log-linear drift is the "worse"). A good token that never appears cannot be
#   learned offline by any policy, and online sampling finds it.
# * Minibatch gradients are unbiased for the population ones. For KL-regularised RLHF with a
#   leave-one-out baseline the estimate even vanishes at $\pi^*_\beta$, so the sampled run lands on
#   the same policy as the exact one.
#
# ## Exercises
#
# 1. **When extrapolation fails.** Replace the reward by a lock that pays only on the best sequence:
#    `cs.SequenceEnv(4, 3, 1, "lock", reward=(tokens == 3).all(axis=1) * 1.0, ref=env.ref[0])`,
#    and rerun section 3 with the best sequence unseen. Does the transformer still find
#    $(3, 3, 3)$ offline? Why not, when it did for the bump reward?
# 2. **Noise and the optimiser.** In section 4, (a) pass
#    `ReinforceLoss(beta, group_size=2, baseline="none")` (from `coverage_sim.torch_backend`)
#    instead of `rlhf` to `train_sampled`. The estimator is still unbiased. Does `tv_to_opt` still
#    settle at $\pi^*_\beta$? Relate the answer to $a(y) = \beta\log Z$. (b) Run both modes with
#    `optimizer="adam", lr=1e-2` and a few seeds. Where do the curves part, and why there?
# 3. **Finite offline data.** `train_sampled(env, dpo, model=copy.deepcopy(sft_model), n_data=64,
#    batch_size=64, steps=300, lr=1e-2)` trains offline DPO on one fixed set of 64 reference
#    pairs. How much of $\pi^*_\beta$'s gain does it get, compared with online DPO
#    (`online_dpo`, fresh pairs from $\pi_t$ at every step) given the same number of sampled pairs
#    (the history's `samples` column)?
# 4. **Tajwar's scale.** `cs.tajwar_token_env()` has vocabulary 100 and 9 tokens: not enumerable.
#    Run `train_sampled` there with a `BestOfNLoss(10, online=True)` and with
#    `BestOfNLoss(10, push_down=0.1, online=True)` for a few hundred steps (Monte-Carlo metrics,
#    minutes on a CPU). Does the push-down on the worst sample raise the reward faster, as it moved
#    mass to the peak in notebook 03 (F3)?
