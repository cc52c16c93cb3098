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
# # 03 — On-policy sampling and the negative gradient
#
# **Question.** When does it pay to train on samples from the *current* policy (on-policy) rather
# than on a fixed dataset drawn from the reference (offline)? And what does a *negative gradient*,
# which pushes down the probability of bad samples, add to maximum likelihood on good ones?
#
# **Paper.** Tajwar et al. 2024, *Preference Fine-Tuning of LLMs Should Leverage Suboptimal,
# On-Policy Data* (arXiv:2404.14367): their didactic 100-arm bandit, figures F1–F3 of the
# [theory guide](../docs/figures.md).
#
# * **F1:** when the reward peak is far from $\pi_{\mathrm{ref}}$'s mass, on-policy methods (DPO,
#   IPO, Best-of-N, policy gradient) reach far higher reward than offline ones. When the peak sits
#   inside $\pi_{\mathrm{ref}}$'s mass, all methods are similar.
# * **F2:** measured against $\mathrm{KL}(\pi\|\pi_{\mathrm{ref}})$, on-policy training spends its
#   KL budget better.
# * **F3:** adding a push-down on the worst of $N$ samples to Best-of-N (filtered behaviour cloning)
#   moves mass to the optimum faster.
#
# **Setting.** 100 arms. $\pi_{\mathrm{ref}}$ is the exact bin masses of
# $\tanh(\mathrm{Cauchy}(-0.7, 0.4))$, with a mode at arm 0, a bump near arm 18 and a heavy tail at
# arm 99. The reward is a bump $r(a) = e^{-((a - \text{peak})/10)^2}$. The policy is a tabular
# softmax started at $\pi_{\mathrm{ref}}$, and everything is an exact population expectation. The
# offline data are all pairs of $\pi_{\mathrm{ref}} \otimes \pi_{\mathrm{ref}}$ with Tajwar's
# deterministic labels (the higher true reward wins). On-policy methods draw their pairs from
# $\pi_t \otimes \pi_t$ at every step.

# %% [markdown]
# ## The knob
#
# `peak` places the optimum. Arm 70 (Tajwar's `reward_4`) is far from $\pi_{\mathrm{ref}}$'s mass;
# arm 20 (`reward_5`) sits inside it. Any value in $[0, 99]$ works. The checks below adapt to how
# much reward $\pi_{\mathrm{ref}}$ already collects.

# %% tags=["parameters"]
peak = 70  # arm of the reward peak, in [0, 99]

# %%
import matplotlib.pyplot as plt
import numpy as np

import coverage_sim as cs
from coverage_sim import metrics
from coverage_sim.experiments.tajwar import negative_gradient
from coverage_sim.experiments.tajwar import peak as peak_experiment
from coverage_sim.experiments.tajwar.setting import refresh_train
from coverage_sim.notebook import explore

env = cs.tajwar_bandit(peak=peak)
arms = np.arange(env.n_responses)
ref_reward = float(metrics.expected_reward(env, env.ref))
near = np.abs(arms - peak) <= 5
print(f"{env}: E_ref r = {ref_reward:.3f}, pi_ref mass within 5 arms of the peak = "
      f"{env.ref[near].sum():.4f}")


def show(peak):
    """The bandit for a reward peak at arm ``peak``: pi_ref's mass and the reward bump."""
    env_p = cs.tajwar_bandit(peak=peak)
    ref_r = float(metrics.expected_reward(env_p, env_p.ref))
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar(arms, env_p.ref, width=1.0, color="0.6", label=r"$\pi_{\mathrm{ref}}$")
    ax.set_ylabel(r"$\pi_{\mathrm{ref}}(a)$")
    ax.set_xlabel("arm a")
    twin = ax.twinx()
    twin.plot(arms, env_p.reward, color="C3", label="reward r(a)")
    twin.set_ylabel("reward", color="C3")
    ax.set_title(rf"the bandit: peak at arm {peak}, "
                 rf"$E_{{\pi_{{\mathrm{{ref}}}}}} r$ = {ref_r:.3f}")
    fig.tight_layout()
    plt.show()


# a slider for the peak in Jupyter (with ipywidgets); headless, the parameter cell's value
explore(show, peak=(peak, list(range(0, 100, 5))))

# %% [markdown]
# ## 1. Why offline data are slow to use: the coverage bound on the gradient
#
# Population offline DPO on pairs from $\mu \otimes \mu$ has a logit gradient
#
# $$\frac{\partial L}{\partial\theta_z}
#   = -2\beta\,\mu(z) \sum_{y'} \mu(y')\,\big(P(z\succ y') - \sigma(\beta h(z, y'))\big),
# \qquad\text{so}\qquad \Big|\frac{\partial L}{\partial\theta_z}\Big| \le 2\beta\,\mu(z).$$
#
# This is claim C11. An arm that the data rarely show can only move slowly, and it stays slow
# however good it is. Worse, what orders the arms *near* the peak are comparisons between
# near-peak arms, and those carry weight $\sim\mu(\text{peak})^2$. On-policy, $\mu$ is $\pi_t$
# itself: as $\pi_t$ moves towards the peak, so does the data.

# %%
beta = 0.1  # DPO's beta in this notebook (Tajwar et al.'s sampled protocol uses 0.01)
offline = cs.offline_pairs(env, env.ref, labels="deterministic")
dpo = cs.objective("sigmoid", beta=beta)
policy = cs.TabularSoftmax()
_, g_logp = dpo.loss_and_grad(env, np.log(env.ref), offline)
grad = np.abs(policy.grad(env, np.log(env.ref), g_logp))
bound = 2 * beta * env.ref
assert np.all(grad <= bound * (1 + 1e-12)), "the coverage bound |dL/dtheta_z| <= 2 beta mu(z) fails"

fig, ax = plt.subplots(figsize=(7, 3))
ax.semilogy(arms, grad, ".", color="C0",
            label=r"$|\partial L/\partial\theta_z|$ at $\pi_{\mathrm{ref}}$")
ax.semilogy(arms, bound, color="0.4", lw=1, label=r"bound $2\beta\,\mu(z)$")
ax.axvline(peak, color="C3", ls="--", lw=1, label="reward peak")
ax.set_xlabel("arm z")
ax.set_title("offline DPO's first step: the push each logit gets")
ax.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# ## 2. Offline versus on-policy, seven ways (F1)
#
# `peak_experiment.run` (F1) trains all seven method/regime pairs with Adam (lr 0.01, Tajwar's
# setting) for 1,500 steps, on exact population objectives (the experiment's `exact` arm; its
# `protocol` arm replays Tajwar et al.'s finite-sample protocol, with their β = 0.01 and their
# reward-gap filter on the offline pairs):
#
# * **DPO** $-\log\sigma(\beta h)$ ($\beta = 0.1$) and **IPO** $(h - 10)^2$ (Tajwar's margin), offline on
#   $\pi_{\mathrm{ref}}$ pairs or online on $\pi_t$ pairs;
# * **Best-of-N**, maximum likelihood on the best of $N = 10$ draws, from $\pi_{\mathrm{ref}}$
#   (offline) or from $\pi_t$ (on-policy);
# * **policy gradient**, the exact softmax policy gradient on $\mathbb{E}_\pi r$ (REINFORCE's
#   expectation, plus a tiny KL term $10^{-3}\,\mathrm{KL}$), which exists only on-policy.

# %%
# the exact population arm on one peak, every reference pair as offline data (no reward-gap filter)
config = peak_experiment.PeakConfig(peaks=(float(peak),), offsets=(0,), arms=("exact",),
                                    dpo_beta=beta, offline_gap=0.0)
table = peak_experiment.run(config, seed=0)
reward = table[table["metric"] == "reward"]

fig, ax = plt.subplots(figsize=(7, 3.8))
colours = {"DPO": "C0", "IPO": "C1", "Best-of-N": "C2", "PG": "C3"}
for (method, regime), rows in reward.groupby(["method", "regime"]):
    ax.plot(rows["step"], rows["value"], color=colours[method],
            ls="-" if regime == "on-policy" else "--", label=f"{method}, {regime}")
ax.axhline(ref_reward, color="0.5", lw=1, ls=":", label=r"$\pi_{\mathrm{ref}}$")
ax.set_xlabel("Adam step")
ax.set_ylabel(r"$E_\pi r$")
ax.set_ylim(-0.02, 1.02)
ax.set_title(f"peak at arm {peak}: solid = on-policy, dashed = offline")
ax.legend(fontsize=7, ncol=2)
fig.tight_layout()

final = reward[reward["step"] == reward["step"].max()].set_index(["regime", "method"])["value"]
print(final.round(3).to_string())

# %% [markdown]
# **The check.** On-policy training never loses. Every on-policy method ends near the optimum, above
# every offline one. How *much* it wins is set by how little reward $\pi_{\mathrm{ref}}$ already
# collects. With the peak far from $\pi_{\mathrm{ref}}$'s mass ($E_{\mathrm{ref}}\, r < 0.08$,
# arms 50–95) the gap is at least 0.3. With the peak inside it ($E_{\mathrm{ref}}\, r > 0.3$,
# arms 5–25) all methods end within 0.1 of each other.

# %%
on, off = final["on-policy"], final["offline"]
assert on.min() >= 0.95, f"an on-policy method stalled at {on.min():.3f}"
assert on.min() > off.max(), "an offline method beat an on-policy one"
if ref_reward < 0.08:
    assert on.min() - off.max() >= 0.3, (
        f"peak far from pi_ref, yet the on-policy lead is only {on.min() - off.max():.3f}")
elif ref_reward > 0.3:
    assert final.max() - final.min() <= 0.1, "peak inside pi_ref's mass, yet the methods differ"
print(f"on-policy lead over the best offline method: {on.min() - off.max():.3f}")

# %% [markdown]
# ## 3. Reward against KL: who spends the KL budget well? (F2)
#
# Every method buys reward by moving away from $\pi_{\mathrm{ref}}$. The best any policy can do at
# a given KL is the KL-regularised family $\pi^*_b \propto \pi_{\mathrm{ref}}\, e^{r/b}$
# (notebook 01): no policy can lie above this frontier. Offline runs stall far below it.
# On-policy runs climb along it.

# %%
betas = np.geomspace(1e-3, 1e2, 400)
family = np.stack([cs.optimal_policy(env, b) for b in betas])
front_kl = metrics.kl_divergence(env, family, env.ref)[::-1]        # increasing in KL
front_r = metrics.expected_reward(env, family)[::-1]
wide = table.pivot_table(index=["method", "regime", "step"], columns="metric", values="value")

fig, ax = plt.subplots(figsize=(6.5, 3.8))
ax.plot(front_kl, front_r, color="k", lw=2.5, alpha=0.3, label=r"frontier $\pi^*_b$")
for (method, regime), rows in wide.groupby(level=["method", "regime"]):
    ax.plot(rows["kl"], rows["reward"], color=colours[method],
            ls="-" if regime == "on-policy" else "--", label=f"{method}, {regime}")
ax.set_xlabel(r"KL($\pi_t$ ‖ $\pi_{\mathrm{ref}}$)  [nats]")
ax.set_ylabel(r"$E_{\pi_t} r$")
ax.set_title("reward bought per nat of KL")
ax.legend(fontsize=7, ncol=2)
fig.tight_layout()

# %%
# No trajectory point may lie above the frontier (the frontier is flat at max r beyond its last KL).
ceiling = np.interp(wide["kl"], front_kl, front_r, right=env.reward.max())
assert np.all(wide["reward"] <= ceiling + 1e-3), "a policy beat the KL-regularised frontier"

# %% [markdown]
# ## 4. The negative gradient (F3)
#
# Best-of-N maximises $\log\pi$ of the best of $N$ samples. Its gradient on a logit is
# $\pi(z) - q_{\mathrm{best}}(z)$, which is small wherever $\pi$ is small. Tajwar's push-down adds
# $+c\,\log\pi(\text{worst of } N)$ to the loss, a gradient of $c\,q_{\mathrm{worst}}(z)$. That
# term is *large* exactly on the high-mass bad arms, so mass leaves them faster. In this
# construction the two terms are exact: $L = L_{\mathrm{BoN}}(r) - c\,L_{\mathrm{BoN}}(-r)$, since
# the worst under $r$ is the best under $-r$. Training uses plain gradient descent. Per-logit Adam
# would rescale every logit's step and erase this difference in magnitude.

# %%
neg_config = negative_gradient.NegativeGradientConfig(peaks=(float(peak),))
neg = negative_gradient.run(neg_config, seed=0)
mass = neg[neg["metric"] == "mass_near_opt"]

fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
auc = {}
for ax, regime in zip(axes, ("offline", "on-policy")):
    for c, colour in zip(neg_config.push_downs, ("0.3", "C1", "C3")):
        rows = mass[(mass["regime"] == regime) & (mass["push_down"] == c)].sort_values("step")
        steps_, values = rows["step"].to_numpy(float), rows["value"].to_numpy()
        auc[(regime, c)] = np.trapezoid(values, steps_) / steps_[-1]  # time-averaged mass
        ax.plot(steps_, values, color=colour,
                label="Best-of-N" if c == 0 else f"+ push-down worst, c = {c:g}")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(0, None)
    ax.set_xlabel("gradient step (GD)")
    ax.set_title(regime)
axes[0].set_ylabel(f"mass on |a − {peak}| ≤ {neg_config.near}")
axes[0].legend(fontsize=8)
fig.tight_layout()
print({f"{r}, c={c:g}": round(v, 3) for (r, c), v in auc.items()})

# %%
c_max = max(neg_config.push_downs)
assert auc[("offline", c_max)] > auc[("offline", 0.0)], "offline push-down did not help"
assert auc[("on-policy", 0.0)] > auc[("offline", 0.0)], "on-policy Best-of-N did not beat offline"

# %% [markdown]
# ## Takeaways
#
# * Offline, the data fix the comparison set: arms that $\pi_{\mathrm{ref}}$ rarely shows get a
#   gradient at most $2\beta\mu(z)$, and the comparisons that order the near-optimal arms are
#   rarer still. On-policy, the comparison set follows the policy, and training becomes a
#   tournament among the arms the policy currently favours.
# * A negative gradient and on-policy sampling attack the same problem, moving mass off where it
#   is, from two sides. Both are "mode-seeking" (reverse-KL-like) rather than mode-covering.
# * When $\pi_{\mathrm{ref}}$ already covers the optimum (peak 20), none of this matters much.
#
# ## Exercises
#
# 1. **Move the peak.** Set `peak = 20`, then `peak = 45`. Which gap in section 2 closes, and which
#    offline method is hurt most? Relate the answer to $E_{\mathrm{ref}}\, r$.
# 2. **A negative gradient can lock in the wrong mode.** Set `peak = 85` and look at the on-policy
#    push-down curves in section 4. They collapse onto arm 99, the heavy-tail arm. Why can an
#    on-policy method with no exploration not escape a mode it has sharpened onto? (Hint: what are
#    the best and the worst of $N$ draws from a policy concentrated on one arm?)
# 3. **Sample reuse (F2).** `refresh_train` rebuilds the on-policy data only every
#    `refresh_every` steps:
#
#    ```python
#    def build(pi):
#        return [(1.0, cs.objective("sigmoid", beta=0.1),
#                 cs.policy_pairs(env, pi, labels="deterministic"))]
#    snapshots = refresh_train(env, build, steps=1500, lr=0.01, refresh_every=15)
#    ```
#
#    Try `refresh_every` in {1, 15, 100, 1500} and plot the reward against the number of
#    refreshes, a proxy for reward-model queries. `refresh_every = 1500` is offline.
# 4. **The C11 time bound.** Using the bound of section 1, give a lower bound on the number of
#    gradient-descent steps offline DPO needs to raise $\theta_{\text{peak}}$ by 5 nats with step
#    size $\eta$. Evaluate it for $\eta = 1$ and compare it with the on-policy run.
