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
# # 01 — The KL-regularised optimum, and why DPO finds it too
#
# **Question.** RLHF maximises a reward minus a KL penalty, using on-policy samples. DPO minimises a
# classification loss on a *fixed* set of preference pairs. Why do the two have the same solution,
# and what does that require of the data?
#
# **Papers.** Rafailov et al. 2023, *Direct Preference Optimization* (arXiv:2305.18290); Azar et
# al. 2023, *A General Theoretical Paradigm to Understand Learning from Human Preferences*
# (arXiv:2310.12036). These are claims **C1** and **C2** of the
# [claims page of the theory guide](../docs/claims.md):
#
# * **C1:** the exact policy gradient on the KL-regularised objective converges to
#   $\pi^*_\beta = \pi_{\mathrm{ref}}\, e^{r/\beta} / Z$.
# * **C2:** population DPO with Bradley–Terry labels converges to the *same* $\pi^*_\beta$ for
#   **any** behaviour policy $\mu$ with full support (global coverage). Online DPO, whose pairs
#   come from the current policy, has $\pi^*_\beta$ as its fixed point.
#
# Everything below is exact: the objectives are population expectations over a small bandit, with
# no sampling noise.

# %% [markdown]
# ## The knob
#
# $\beta$ sets how strongly the policy is tied to the reference. Small $\beta$ gives a nearly
# greedy optimum; large $\beta$ keeps it close to $\pi_{\mathrm{ref}}$. Every claim checked
# below holds for any $\beta > 0$. Try `0.05` or `5`.

# %% tags=["parameters"]
beta = 0.5  # KL strength beta > 0

# %%
import matplotlib.pyplot as plt
import numpy as np
from scipy.special import expit

import coverage_sim as cs
from coverage_sim import metrics

env = cs.random_bandit(8, seed=1)  # 8 responses, gold reward in [-3, 3], full-support pi_ref
K = env.n_responses
print(env)
print("reward r*:", env.reward.round(2))
print("pi_ref   :", env.ref.round(3))

# %% [markdown]
# ## 1. The closed form (C1)
#
# The KL-regularised objective is
#
# $$J_\beta(\pi) = \mathbb{E}_{y\sim\pi}\, r(y)
#   - \beta\, \mathrm{KL}(\pi \,\|\, \pi_{\mathrm{ref}}).$$
#
# Write $\pi^*(y) = \pi_{\mathrm{ref}}(y)\, e^{r(y)/\beta} / Z$ with
# $Z = \sum_y \pi_{\mathrm{ref}}(y)\, e^{r(y)/\beta}$. Then
#
# $$r(y) = \beta \log \frac{\pi^*(y)}{\pi_{\mathrm{ref}}(y)} + \beta \log Z.$$
#
# Substituting this into $J_\beta$ gives the Gibbs variational identity
#
# $$J_\beta(\pi) = \beta \log Z - \beta\, \mathrm{KL}(\pi \,\|\, \pi^*).$$
#
# KL is non-negative and zero only at $\pi = \pi^*$, so $\pi^*$ is the unique maximiser. Let us
# check the identity on random policies, using the package's exact metrics.

# %%
pi_star = cs.optimal_policy(env, beta)


def J(pi):
    """The KL-regularised objective J_beta(pi), exactly."""
    return metrics.expected_reward(env, pi) - beta * metrics.kl_divergence(env, pi, env.ref)


rng = np.random.default_rng(0)
random_policies = rng.dirichlet(np.ones(K), size=200)
# beta log Z computed stably: J(pi*) = beta log Z since KL(pi* || pi*) = 0
beta_log_Z = float(J(pi_star))
gap = J(random_policies) + beta * metrics.kl_divergence(env, random_policies, pi_star) - beta_log_Z
print(f"J(pi*) = beta log Z = {beta_log_Z:.6f}")
print(f"max |J(pi) + beta KL(pi || pi*) - beta log Z| over 200 random policies: "
      f"{np.abs(gap).max():.1e}")
assert np.abs(gap).max() < 1e-9, "the Gibbs variational identity fails"
assert np.all(J(random_policies) < beta_log_Z), "a random policy beats pi*"

# %% [markdown]
# Turn the knob and watch $\pi^*_\beta$ move. The right panel shows the whole family
# $\{\pi^*_b\}_{b>0}$ as a reward-versus-KL curve. No policy can lie above this curve: at a given
# KL budget, $\pi^*_b$ has the highest expected reward. Your $\beta$ is the star. In Jupyter (with
# ipywidgets) the cell below shows a slider for $\beta$; run headless, it draws the parameter
# cell's value.

# %%
from coverage_sim.notebook import explore

betas = np.geomspace(1e-2, 1e2, 200)
family = np.stack([cs.optimal_policy(env, b) for b in betas])


def show(beta):
    pi_b = cs.optimal_policy(env, beta)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.5))
    x = np.arange(K)
    ax0.bar(x - 0.2, env.ref, 0.4, label=r"$\pi_{\mathrm{ref}}$", color="0.6")
    ax0.bar(x + 0.2, pi_b, 0.4, label=rf"$\pi^*_\beta$, $\beta$ = {beta:g}", color="C0")
    ax0.set_xticks(x, [f"y{i}\nr={r:.1f}" for i, r in enumerate(env.reward)], fontsize=8)
    ax0.set_ylabel("probability")
    ax0.legend()
    ax0.set_title("reference and KL-regularised optimum")
    ax1.plot(metrics.kl_divergence(env, family, env.ref), metrics.expected_reward(env, family))
    ax1.plot(metrics.kl_divergence(env, pi_b, env.ref), metrics.expected_reward(env, pi_b),
             "*", ms=14, color="C3", label=rf"$\beta$ = {beta:g}")
    ax1.set_xlabel(r"KL($\pi^*_b$ ‖ $\pi_{\mathrm{ref}}$)  [nats]")
    ax1.set_ylabel(r"$E_{\pi^*_b}\, r$")
    ax1.set_title(r"the family $\pi^*_b$, $b \in [0.01, 100]$")
    ax1.legend()
    fig.tight_layout()
    plt.show()


explore(show, beta=(beta, [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]))

# %% [markdown]
# ## 2. RLHF reaches $\pi^*$ by policy gradient
#
# For a tabular softmax $\pi = \mathrm{softmax}(\theta)$, the exact policy gradient is
#
# $$\nabla_\theta J = \pi \odot (a - \mathbb{E}_\pi a), \qquad
#   a = r - \beta \log(\pi/\pi_{\mathrm{ref}}).$$
#
# `cs.train` runs it with the natural policy gradient (mirror ascent on the simplex), the fastest
# optimiser for online objectives. `history` records the exact total-variation distance to
# $\pi^*_\beta$ as `tv_to_opt`.

# %%
rlhf = cs.train(env, cs.objective("rlhf", beta=beta), steps=300, lr=0.5 / beta, optimizer="npg")
print(rlhf)
print(f"TV(pi_RLHF, pi*) = {rlhf.history['tv_to_opt'].iloc[-1]:.1e}")
assert rlhf.history["tv_to_opt"].iloc[-1] < 1e-9, "RLHF did not converge to pi* (C1)"

# %% [markdown]
# ## 3. Why DPO has the same minimiser (C2)
#
# Suppose the labels follow Bradley–Terry: $P(y \succ y') = \sigma(r(y) - r(y'))$. Invert the
# closed form as above. The normaliser $Z$ cancels in a *difference* of rewards:
#
# $$P(y \succ y') = \sigma\big(\beta\, h_{\pi^*}(y, y')\big), \qquad
#   h_\pi(y, y') = \log\frac{\pi(y)}{\pi_{\mathrm{ref}}(y)}
#                - \log\frac{\pi(y')}{\pi_{\mathrm{ref}}(y')}.$$
#
# Population DPO on pairs $(y, y') \sim \mu \otimes \mu$ is a logistic regression of these labels on
# $\beta h_\pi$:
#
# $$\begin{aligned}
# L(\pi) &= -\sum_{y, y'} \mu(y)\mu(y')\Big[P(y\succ y') \log\sigma(\beta h_\pi)
#           + P(y'\succ y)\log\sigma(-\beta h_\pi)\Big] \\
#        &= \sum_{y,y'} \mu(y)\mu(y')\Big[H\big(P(y\succ y')\big)
#           + \mathrm{KL}\big(P(y\succ y') \,\big\|\, \sigma(\beta h_\pi(y,y'))\big)\Big].
# \end{aligned}$$
#
# The first term does not depend on $\pi$. The second is zero exactly when
# $\sigma(\beta h_\pi) = P$ on every pair that $\mu \otimes \mu$ can draw. If $\mu$ has **full
# support** (global coverage), that fixes every log-ratio $\log \pi/\pi_{\mathrm{ref}}$ up to one
# constant, so $\pi = \pi^*_\beta$. $\mu$ only weights the pairs. It changes the *path* of
# training, not where it ends. Let us train DPO on three very different behaviour policies.

# %%
behaviours = {
    r"$\mu = \pi_{\mathrm{ref}}$": env.ref,
    r"$\mu$ = uniform": cs.uniform(env),
    # 80% on a policy that prefers low-reward responses
    r"$\mu$ mostly bad responses": cs.mixture(cs.uniform(env),
                                              cs.optimal_policy(env, 1.0, reward=-env.reward), 0.8),
}
dpo = cs.objective("sigmoid", beta=beta)  # TRL's loss_type name for DPO: -log sigma(beta h)
dpo_runs = {}
for name, mu in behaviours.items():
    data = cs.offline_pairs(env, mu, labels="bradley_terry")  # exact mu x mu pairs, BT labels
    # plain gradient descent with step 1/L: the loss is (beta^2 / 4)-smooth in the logits
    dpo_runs[name] = cs.train(env, dpo, data, steps=20000, lr=4 / beta**2, optimizer="gd")
    print(f"{name:32s} min mu = {mu.min():.1e}   "
          f"TV(pi_DPO, pi*) = {dpo_runs[name].history['tv_to_opt'].iloc[-1]:.1e}")

# %% [markdown]
# **Online DPO** draws its pairs from the current policy $\pi_t$. It holds the sampler fixed in the
# gradient and relabels with the same Bradley–Terry model. $\pi_t$ always has full support, so the
# argument above applies at every step, and $\pi^*_\beta$ is its fixed point.

# %%
# NPG step 1/beta, capped at 4/beta^2 where the curvature (~beta^2/4) would make it overshoot
online = cs.train(env, cs.objective("online_dpo", beta=beta), steps=3000,
                  lr=min(1 / beta, 4 / beta**2), optimizer="npg")
print(f"online DPO: TV(pi, pi*) = {online.history['tv_to_opt'].iloc[-1]:.1e}")

fig, ax = plt.subplots(figsize=(6.5, 3.6))
for (name, run), colour in zip(dpo_runs.items(), ("C0", "C1", "C2")):
    ax.plot(run.history["step"], run.history["tv_to_opt"], color=colour,
            label="offline DPO, " + name)
ax.plot(online.history["step"], online.history["tv_to_opt"], "k--", label="online DPO (NPG)")
ax.plot(rlhf.history["step"], rlhf.history["tv_to_opt"], "k:", label="RLHF policy gradient (NPG)")
ax.set_xscale("symlog", linthresh=1)
ax.set_xlim(0, None)
ax.set_yscale("log")
ax.set_ylim(1e-17, 1)
ax.set_xlabel("step")
ax.set_ylabel(r"TV($\pi_t$, $\pi^*_\beta$)")
ax.set_title(rf"every route ends at $\pi^*_\beta$ ($\beta$ = {beta:g})")
ax.legend(fontsize=8)
fig.tight_layout()

# %%
for name, run in dpo_runs.items():
    assert run.history["tv_to_opt"].iloc[-1] < 1e-6, f"offline DPO with {name} missed pi* (C2)"
assert online.history["tv_to_opt"].iloc[-1] < 1e-6, "online DPO missed pi* (C2)"

# %% [markdown]
# ### The mechanism, checked exactly
#
# At $\pi^*$ the DPO "classifier" $\sigma(\beta h_{\pi^*})$ reproduces the label probabilities on
# every pair. The loss then sits at its floor, the label entropy, and its gradient vanishes. This
# holds whatever $\mu$ is. `Objective.loss_and_grad` gives the exact population loss and its
# gradient with respect to $\log\pi$.

# %%
log_ratio = np.log(pi_star) - np.log(env.ref)
h_star = log_ratio[:, None] - log_ratio[None, :]
P = expit(env.reward[:, None] - env.reward[None, :])
print(f"max |sigma(beta h_pi*) - P| over all pairs: {np.abs(expit(beta * h_star) - P).max():.1e}")
assert np.abs(expit(beta * h_star) - P).max() < 1e-12

for name, mu in behaviours.items():
    data = cs.offline_pairs(env, mu, labels="bradley_terry")
    loss, grad = dpo.loss_and_grad(env, np.log(pi_star), data)
    W = data.weights[0]
    off = ~np.eye(K, dtype=bool)
    # floor: cross-entropy of the labels with themselves; self-pairs (h = 0) cost log 2 each
    floor = -np.sum(W[off] * np.log(P[off])) + np.log(2) * np.trace(W)
    print(f"{name:32s} L(pi*) - floor = {loss - floor:+.1e}   max |grad L(pi*)| = "
          f"{np.abs(grad).max():.1e}")
    assert abs(loss - floor) < 1e-12 and np.abs(grad).max() < 1e-12

# %% [markdown]
# ## What this needs
#
# Two ingredients made DPO land on $\pi^*_\beta$:
#
# 1. **Global coverage.** Every pair of responses has positive probability under
#    $\mu \otimes \mu$. Otherwise the log-ratios of unseen responses are unconstrained, and
#    notebook 02 shows what DPO then does with them.
# 2. **Bradley–Terry labels with $0 < P < 1$.** With finite data a pair seen once has an empirical
#    label of exactly 0 or 1. Then $\sigma(\beta h) = P$ has no finite solution: DPO drives
#    $h \to \pm\infty$ whatever $\beta$ is. This is Azar et al.'s argument that DPO's KL
#    regularisation is "too weak" on deterministic preferences, and their motivation for IPO.
#
# ## Exercises
#
# 1. **Partial coverage.** Train DPO on
#    `mu = cs.restrict_support(env.ref, np.arange(K) < 4)`, so that only responses 0–3 appear in
#    the data. Which parts of $\pi^*_\beta$ does it recover? Hint: compare $\pi(y)/\pi(y')$
#    within the support with $\pi^*$'s. What happens to the responses outside it, and why does a
#    tabular policy not move them at all?
# 2. **Deterministic labels.** Build the data with `labels="deterministic"`. Plot
#    `run.history["tv_to_opt"]` and `run.history["kl"]` for 10,000 steps. Then repeat with
#    `cs.objective("ipo", beta=...)`. IPO's loss $(h - 1/(2\beta))^2$ regresses $h$ onto the
#    labels instead of classifying, so its minimiser stays finite.
# 3. **The family.** Plot $\mathbb{E}_{\pi^*_b} r$ and $\mathrm{KL}(\pi^*_b \| \pi_{\mathrm{ref}})$
#    against $b$ on a log grid. Both are non-increasing in $b$ (claim C15). What is the limit of
#    each as $b \to 0$ and as $b \to \infty$?
# 4. **The gradient.** Show that
#
#    $$\frac{\partial L}{\partial \theta_z} = -2\beta \sum_{y'} \mu(z)\mu(y')
#      \big(P(z \succ y') - \sigma(\beta h(z, y'))\big).$$
#
#    Check it against `dpo.loss_and_grad` at a random policy.
