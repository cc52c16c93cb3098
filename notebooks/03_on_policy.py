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
# * **DPO** $-\log\sigma(\beta h)$ ($\beta = 0.1$) and **IPO** $(h - 10)^2$ (Tajwar's margin),
#   offline on $\pi_{\mathrm{ref}}$ pairs or online on $\pi_t$ pairs;
# * **Best-of-N**, maximum likelihood on the best of $N = 10$ draws, from $\pi_{\mathrm{ref}}$
#   (offline) or from $\pi_t$ (on-policy);
# * **policy gradient**, the exact softmax policy gradient on $\mathbb{E}_\pi r$ (REINFORCE's
#   expectation, plus a tiny KL term $10^{-3}\,\mathrm{KL}$), which exists only on-policy.

# %%
# the exact population arm on one peak, every reference pair as offline data (no reward-gap
# filter); KL(pi_t || pi_ref) is recorded beside the reward for section 3
config = peak_experiment.PeakConfig(peaks=(float(peak),), offsets=(0,), arms=("exact",),
                                    dpo_beta=beta, offline_gap=0.0, metrics=("reward", "kl"))
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
# (notebook 01): no policy can lie above this frontier. The KL comes from the same runs as
# section 2 (`metrics=("reward", "kl")` asks F1 to record it).

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

# %% [markdown]
# **The check.** No point of any run lies above the frontier: that is a theorem, so this checks the
# numbers. Every on-policy run ends on the frontier, within 0.02 of it at its own KL, whatever the
# peak (on the way some dip below it). With the peak far from $\pi_{\mathrm{ref}}$'s mass
# ($E_{\mathrm{ref}}\, r < 0.08$) every offline run stalls at least 0.05 below the frontier: its
# KL buys less reward than it could. With the peak inside the mass, the offline runs also end near
# the frontier, only at a lower KL and a lower reward.

# %%
# the frontier is flat at max r beyond its last KL
ceiling = np.interp(wide["kl"], front_kl, front_r, right=env.reward.max())
assert np.all(wide["reward"] <= ceiling + 1e-3), "a policy beat the KL-regularised frontier"
below = (ceiling - wide["reward"]).xs(wide.index.get_level_values("step").max(), level="step")
print("final distance below the frontier:\n" + below.round(3).to_string())
assert below.xs("on-policy", level="regime").max() <= 0.02, (
    "an on-policy run ended off the frontier")
if ref_reward < 0.08:
    assert below.xs("offline", level="regime").min() >= 0.05, (
        "peak far from pi_ref, yet an offline run ended on the frontier")

# %% [markdown]
# ## 4. The negative gradient (F3)
#
# Best-of-N maximises $\log\pi$ of the best of $N$ samples. Its gradient on a logit is
# $\pi(z) - q_{\mathrm{best}}(z)$, which is small wherever $\pi$ is small. Tajwar's push-down adds
# $+c\,\log\pi(\text{worst of } N)$ to the loss, a logit gradient of
# $c\,(q_{\mathrm{worst}}(z) - \pi(z))$. Its $q_{\mathrm{worst}}$ part is *large* exactly on the
# high-mass bad arms (with the peak at 70, $q_{\mathrm{worst}}(0) \approx 0.56$ at
# $\pi_{\mathrm{ref}}$, seven times $\pi_{\mathrm{ref}}(0)$), so mass leaves them faster. In this
# construction the two terms are exact: $L = L_{\mathrm{BoN}}(r) - c\,L_{\mathrm{BoN}}(-r)$, since
# the worst under $r$ is the best under $-r$. Training uses plain gradient descent (F3's variant
# `"gd"`: step size 1, $c = 0.5$, 1,000 steps). Per-logit Adam rescales every logit's step to
# about its learning rate, which largely erases this difference in magnitude. The dotted curves
# show it: F3's variant `"large-c"`, Adam at lr 0.01 with the same $c$.

# %%
# F3 on this peak: variant "gd" (plain gradient descent, lr 1, c = 0.5) and, for contrast,
# "large-c" (Adam, lr 0.01, the same c)
neg_config = negative_gradient.NegativeGradientConfig(peaks=(float(peak),), offsets=(0,),
                                                      variants=("gd", "large-c"))
neg = negative_gradient.run(neg_config, seed=0)
mass = neg[neg["metric"] == "mass_near_opt"]
c = neg_config.large_push_down
# time-averaged mass near the peak, indexed by (variant, regime, pushed), pushed 0 = plain Best-of-N
auc = negative_gradient.time_averages(neg).droplevel(["centre", "instance"])

fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
for ax, regime in zip(axes, ("offline", "on-policy")):
    for variant, optimizer, colours in (("gd", "GD", ("0.3", "C3")),
                                        ("large-c", "Adam", ("0.75", "C1"))):
        for push_down, colour in zip((0.0, c), colours):
            rows = mass[(mass["variant"] == variant) & (mass["regime"] == regime)
                        & (mass["push_down"] == push_down)].sort_values("step")
            ax.plot(rows["step"], rows["value"], color=colour, ls="-" if variant == "gd" else ":",
                    label=f"{optimizer}, " + ("Best-of-N" if push_down == 0 else
                                              f"+ push-down worst, c = {push_down:g}"))
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(0, None)
    ax.set_xlabel("step")
    ax.set_title(regime)
axes[0].set_ylabel(f"mass on |a − {peak}| ≤ {neg_config.near}")
axes[0].legend(fontsize=7)
fig.tight_layout()
print(auc.unstack("pushed").rename(columns={0: "plain", 1: f"c = {c:g}"}).round(3).to_string())

# %% [markdown]
# **The check.** With gradient descent, pushing down the worst sample raises the offline
# time-averaged mass near the peak (by more than 0.001, the margin of F3's check), and by more
# than it does under Adam. Under Adam the offline gain is small or negative; F3's paper clause
# (Adam with Tajwar's c = 0.05) fails offline for the same reason. On-policy Best-of-N beats
# offline Best-of-N even without the push-down. On-policy, the push-down adds only a little here
# (plain on-policy Best-of-N already puts 90% of its mass near the peak within about 50 of the
# 1,000 steps), and at some peaks it hurts (exercise 2).

# %%
def gain(variant):
    return auc[(variant, "offline", 1)] - auc[(variant, "offline", 0)]


assert gain("gd") > 1e-3, f"offline push-down did not help under GD (gain {gain('gd'):.4f})"
assert gain("gd") > gain("large-c"), "the push-down helped as much under Adam as under GD"
assert auc[("gd", "on-policy", 0)] > auc[("gd", "offline", 0)], (
    "on-policy Best-of-N did not beat offline Best-of-N")
print(f"offline gain of the push-down: GD {gain('gd'):.3f}, Adam {gain('large-c'):.3f}")

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
#    gradient-descent push-down curve in section 4. It collapses onto arm 99, the heavy-tail arm.
#    Why can an on-policy method with no exploration not escape a mode it has sharpened onto?
#    (Hint: what are the best and the worst of $N$ draws from a policy concentrated on one arm?)
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
