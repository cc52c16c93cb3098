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
# # 02 — Coverage: what DPO does to responses the data never shows
#
# **Question.** Offline DPO only ever sees the responses in its dataset. What happens to the
# probability of a response that never appears? And why do RLHF with a *bounded* reward model and
# HyPO, which adds a KL term on the policy's own samples, keep it under control?
#
# **Papers.** Song et al. 2024, *The Importance of Online Data: Understanding Preference
# Fine-tuning via Coverage* (arXiv:2406.01462); Xu et al. 2024, *Is DPO Superior to PPO for LLM
# Alignment?* (arXiv:2404.10719). Claims **C3–C5** of the [theory guide](../docs/claims.md), figures F10 and F11:
#
# * **C3:** the DPO loss only sees ratios *inside* the data's support. Mass moved outside it
#   changes the loss by exactly 0, and the KL of such a policy is unbounded as the reference mass
#   there goes to 0.
# * **C4:** RLHF with a reward model $\hat r \in [a, b]$ keeps
#   $\pi(y)/\pi_{\mathrm{ref}}(y) \le e^{(b-a)/\beta}$ for every $y$.
# * **C5:** HyPO, $L_{\mathrm{DPO}} + \lambda\,\mathrm{KL}(\pi\|\pi_{\mathrm{ref}})$, keeps
#   $\mathrm{KL} \le \log 2 / \lambda$.
#
# **Setting.** Xu et al.'s three-response example, in the version behind F10 and F11: gold reward
# $(1, 0, -3)$ and
# $\pi_{\mathrm{ref}} = \big(\tfrac{1-\varepsilon}{2}, \tfrac{1-\varepsilon}{2}, \varepsilon\big)$.
# The data hold a single comparison, $y_1 \succ y_2$. The bad response $y_3$ is never shown.

# %% [markdown]
# ## The knob
#
# $\varepsilon = \pi_{\mathrm{ref}}(y_3)$ is the coverage knob: how much reference mass sits on the
# response that the data miss. The smaller it is, the further DPO can drift. Try `1e-1` or `1e-6`.
# All $\varepsilon$ in $(0, 1)$ are allowed.

# %% tags=["parameters"]
eps = 1e-3  # reference mass pi_ref(y3) of the response the data never show

# %%
import matplotlib.pyplot as plt
import numpy as np

import coverage_sim as cs
from coverage_sim import metrics
from coverage_sim.experiments.song import coverage as song
from coverage_sim.experiments.xu.setting import clipped_reward_model

beta = 0.1            # KL strength of DPO, RLHF and HyPO
R = 0.25              # the RLHF reward model is clipped to [-R, R]
lams = (0.1, 1.0)     # HyPO's KL weights
steps = 5000

env = cs.xu_bandit(eps)          # reward (1, 0, -3), pi_ref = ((1-eps)/2, (1-eps)/2, eps)
data = cs.xu_pairs(env)          # the single comparison y1 > y2
dpo = cs.objective("sigmoid", beta=beta)
print(env, "  pi_ref =", env.ref)
print("data support (responses that appear in a pair):", data.support[0])

# %% [markdown]
# ## 1. The loss is blind outside the support (C3)
#
# With one pair, the DPO loss is $-\log\sigma(\beta h)$ with
# $h = \log\frac{\pi(y_1)}{\pi_{\mathrm{ref}}(y_1)} - \log\frac{\pi(y_2)}{\pi_{\mathrm{ref}}(y_2)}$.
# It depends on $\pi$ only through the ratio $\pi(y_1)/\pi(y_2)$. Take two policies with the
# same ratio, one of which puts 90% of its mass on $y_3$:

# %%
pi_a = np.array([0.6, 0.3, 0.1])
pi_b = np.array([0.1 * 2 / 3, 0.1 / 3, 0.9])  # the same 2:1 ratio of y1 to y2, 90% on y3
for name, pi in (("pi_a", pi_a), ("pi_b", pi_b)):
    loss, _ = dpo.loss_and_grad(env, np.log(pi), data)
    print(f"{name} = {pi.round(3)}   DPO loss = {loss:.15f}   "
          f"KL(pi || pi_ref) = {float(metrics.kl_divergence(env, pi, env.ref)):.3f}")
loss_a, _ = dpo.loss_and_grad(env, np.log(pi_a), data)
loss_b, _ = dpo.loss_and_grad(env, np.log(pi_b), data)
assert abs(loss_a - loss_b) < 1e-12, "the DPO loss saw mass outside the data's support"
print(f"log(1/eps) = {np.log(1 / eps):.3f}: moving mass onto y3 costs KL ~ log(1/eps), "
      "which the DPO loss never sees")

# %% [markdown]
# ## 2. Tabular versus log-linear: who actually moves the mass?
#
# Whether training *does* move mass to $y_3$ depends on the policy class.
#
# * **Tabular softmax** ($\pi = \mathrm{softmax}(\theta)$): the gradient of the loss on
#   $\theta_{y_3}$ is exactly 0, so $y_3$'s logit never moves. $\pi(y_3)$ can only change through
#   the normaliser, and it shrinks as $y_1$ rises.
# * **Log-linear** ($\pi(y) \propto \pi_{\mathrm{ref}}(y)\, e^{w\cdot\phi(y)}$), with features
#   chosen so that $\phi(y_3) = \phi(y_1) - \phi(y_2)$ (`cs.xu_features`): DPO's gradient pushes
#   $w$ along $\phi(y_1) - \phi(y_2)$, and that *is* $y_3$'s feature. Every step that separates
#   $y_1$ from $y_2$ also raises $y_3$.
#
# The single comparison has an empirical label of exactly 1. The loss therefore keeps pushing
# ($h \to \infty$, notebook 01), and nothing in it holds $y_3$ back.

# %%
phi = cs.xu_features()
print("features phi(y1), phi(y2), phi(y3):", phi.tolist())
tabular, loglinear = cs.TabularSoftmax(), cs.LogLinear(phi)
_, g = dpo.loss_and_grad(env, np.log(env.ref), data)
print("tabular  dL/dtheta at pi_ref:", tabular.grad(env, np.log(env.ref), g).round(4))
print("log-lin. dL/dw     at pi_ref:", loglinear.grad(env, np.zeros(2), g).round(4),
      " -> w moves along +phi(y3) = (1, -1)")

runs = {"DPO, tabular": cs.train(env, dpo, data, steps=steps, lr=0.05, policy=tabular),
        "DPO, log-linear": cs.train(env, dpo, data, steps=steps, lr=0.05, policy=loglinear)}
for name, run in runs.items():
    print(f"{name:16s} final pi = {run.policy.round(4)}   KL = {run.history['kl'].iloc[-1]:.3f}")

# %%
tab_y3 = runs["DPO, tabular"].snapshots[:, 2]
lin = runs["DPO, log-linear"]
assert np.all(tab_y3 <= eps * (1 + 1e-9)), "tabular DPO raised pi(y3) above pi_ref(y3)"
assert lin.policy[2] > 0.9, f"log-linear DPO put only {lin.policy[2]:.3f} on the unseen y3"
assert lin.history["reward"].iloc[-1] < env.reward[2] + 0.2, "log-linear DPO's reward held up"

# %% [markdown]
# ## 3. Two fixes: a bounded reward model (C4) and HyPO (C5)
#
# **RLHF with a bounded reward model.** Its optimum is
# $\pi(y) = \pi_{\mathrm{ref}}(y)\,e^{\hat r(y)/\beta}/Z$ (notebook 01), and
# $Z \ge e^{a/\beta}$ when $\hat r \ge a$. Hence
#
# $$\frac{\pi(y)}{\pi_{\mathrm{ref}}(y)} \le e^{(b-a)/\beta} \quad\Rightarrow\quad
#   \mathrm{KL}(\pi\|\pi_{\mathrm{ref}}) \le \frac{b-a}{\beta} = \frac{2R}{\beta}.$$
#
# This holds even for a reward model that extrapolates badly. Ours is the clipped linear
# Bradley–Terry fit to the one pair, and it rates the unseen $y_3$ at the *top*, $+R$. That is the
# worst case. The bound does not depend on $\varepsilon$: this is "partial coverage suffices for
# online RL".
#
# **HyPO** adds the policy's own KL:
#
# $$L_{\mathrm{HyPO}} = L_{\mathrm{DPO}} + \lambda\,\mathrm{KL}(\pi\|\pi_{\mathrm{ref}}).$$
#
# The KL is estimated from online, *unlabelled* samples; here we use its exact gradient. Training
# starts at $\pi_{\mathrm{ref}}$, where $h = 0$ and $L_{\mathrm{HyPO}} = L_{\mathrm{DPO}} = \log 2$.
# Descent with a small enough step keeps
# $L_{\mathrm{DPO}}(\pi) + \lambda\,\mathrm{KL}(\pi) \le \log 2$. Since $L_{\mathrm{DPO}} \ge 0$,
# it follows that $\mathrm{KL} \le \log 2/\lambda$ all along the way, and at the minimiser.

# %%
r_hat = clipped_reward_model(phi, [(0, 1)], R)
print("clipped reward model r_hat(y1, y2, y3) =", r_hat)
runs["RLHF, |r_hat| <= R"] = cs.train(env, cs.objective("rlhf", beta=beta, reward=r_hat),
                                      steps=steps, lr=0.5, optimizer="npg", policy=loglinear)
for lam in lams:
    runs[f"HyPO, lambda = {lam:g}"] = cs.train(env, cs.objective("hypo", beta=beta, lam=lam), data,
                                               steps=steps, lr=0.05, policy=loglinear)
for name, run in runs.items():
    print(f"{name:20s} final pi = {run.policy.round(4)}   KL = {run.history['kl'].iloc[-1]:7.3f}"
          f"   gold reward = {run.history['reward'].iloc[-1]:+.3f}")

# %%
rl = runs["RLHF, |r_hat| <= R"]
log_ratio = np.log(rl.snapshots / env.ref).max(axis=1)
assert np.all(log_ratio <= 2 * R / beta + 1e-9), "RLHF broke pi/pi_ref <= e^{2R/beta} (C4)"
assert np.all(rl.history["kl"] <= 2 * R / beta + 1e-9), "RLHF broke KL <= 2R/beta (C4)"
for lam in lams:
    kl = runs[f"HyPO, lambda = {lam:g}"].history["kl"]
    assert np.all(kl <= np.log(2) / lam + 1e-9), f"HyPO broke KL <= log2/lambda, lambda={lam} (C5)"

# %%
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.8))
colours = {"DPO, tabular": "C1", "DPO, log-linear": "C3", "RLHF, |r_hat| <= R": "C0",
           f"HyPO, lambda = {lams[0]:g}": "#74c476", f"HyPO, lambda = {lams[1]:g}": "#00441b"}
for name, run in runs.items():
    ax0.plot(run.history["step"], run.snapshots[:, 2], color=colours[name], label=name)
    ax1.plot(run.history["step"], run.history["kl"], color=colours[name], label=name)
ax0.axhline(eps, color="0.5", ls="--", lw=1)
ax0.set_yscale("log")
ax0.set_ylabel(r"$\pi(y_3)$, the unseen response")
ax0.set_title(rf"mass on $y_3$ ($\varepsilon$ = {eps:g}, dashed)")
ax1.axhline(np.log(1 / eps), color="0.5", ls=":", lw=2, label=r"$\log(1/\varepsilon)$")
ax1.axhline(2 * R / beta, color="C0", ls="--", lw=1, label=r"RLHF bound $2R/\beta$")
for lam in lams:
    ax1.axhline(np.log(2) / lam, color=colours[f"HyPO, lambda = {lam:g}"], ls="--", lw=1,
                label=rf"HyPO bound $\log 2/\lambda$, $\lambda$ = {lam:g}")
ax1.set_ylim(0, 1.15 * max(np.log(1 / eps), 2 * R / beta, np.log(2) / min(lams)))
ax1.set_ylabel(r"KL($\pi$ ‖ $\pi_{\mathrm{ref}}$)  [nats]")
ax1.set_title("reverse KL, with each method's bound")
for ax in (ax0, ax1):
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlim(0, steps)
    ax.set_xlabel("step")
ax1.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
fig.tight_layout()

# %% [markdown]
# ## 4. Turning the knob all the way: KL against coverage (F10)
#
# `song.run` (F10, `coverage_sim.experiments.song.coverage`) repeats section 3 for $\varepsilon$
# from $10^{-1}$ to $10^{-8}$, and we plot the final reverse KL. DPO's KL tracks
# $\log(1/\varepsilon)$ (slope 1), so it is *unbounded* as coverage vanishes. RLHF and HyPO stay
# flat, under their bounds. Your $\varepsilon$ is marked with stars; in Jupyter a slider moves it.

# %%
# the construction itself (the experiment also runs perturbed features), exact HyPO only
from coverage_sim.notebook import explore

config = song.SongConfig(instances=1, steps=2000)
table = song.run(config, seed=0)
final = table[(table["metric"] == "kl") & (table["method"] != song.HYPO)
              & (table["step"] == table["step"].max())]
styles = {("DPO", 0.0): ("C3", "DPO (log-linear)"), ("RLHF", 0.0): ("C0", "RLHF, |r̂| ≤ R")}
styles.update({(song.HYPO_EXACT, lam): (c, f"HyPO, λ = {lam:g}")
               for lam, c in zip(config.lams, ("#a1d99b", "#41ab5d", "#00441b"))})


def final_kls(eps):
    """Final KL of log-linear DPO and of RLHF with the clipped reward model at this eps."""
    env_e = cs.xu_bandit(eps)
    dpo_run = cs.train(env_e, dpo, cs.xu_pairs(env_e), steps=steps, lr=0.05, policy=loglinear)
    rlhf_run = cs.train(env_e, cs.objective("rlhf", beta=beta, reward=r_hat), steps=steps,
                        lr=0.5, optimizer="npg", policy=loglinear)
    return dpo_run.history["kl"].iloc[-1], rlhf_run.history["kl"].iloc[-1]


def show(eps):
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    grid = np.array(sorted(final["eps"].unique()))
    ax.plot(grid, np.log(1 / grid), color="0.6", ls=":", lw=2.5, label=r"$\log(1/\varepsilon)$")
    for (method, lam), rows in final.groupby(["method", "lam"]):
        rows = rows.sort_values("eps")
        colour, label = styles[(method, lam)]
        ax.plot(rows["eps"], rows["value"], "o-", ms=3, color=colour, label=label)
    for kl, key in zip(final_kls(eps), (("DPO", 0.0), ("RLHF", 0.0))):
        ax.plot(eps, kl, "*", ms=14, color=styles[key][0], mec="k")
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel(r"coverage $\varepsilon = \pi_{\mathrm{ref}}(y_3)$")
    ax.set_ylabel(r"final KL($\pi$ ‖ $\pi_{\mathrm{ref}}$)")
    ax.set_title("DPO's drift grows without bound as coverage vanishes")
    ax.legend(fontsize=7)
    fig.tight_layout()
    plt.show()


# a slider for eps in Jupyter (with ipywidgets); headless, the parameter cell's value
explore(show, eps=(eps, [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8]))

# %%
dpo_final = final[final["method"] == "DPO"].sort_values("eps")
slope = np.polyfit(np.log(1 / dpo_final["eps"]), dpo_final["value"], 1)[0]
print(f"DPO: d KL / d log(1/eps) = {slope:.3f}")
assert abs(slope - 1) < 0.05, "DPO's KL does not grow like log(1/eps)"
rlhf_final = final[final["method"] == "RLHF"]["value"]
assert rlhf_final.max() <= 2 * R / beta + 1e-9, "RLHF's KL left its bound"
assert dpo_final["value"].max() > 3 * rlhf_final.max(), "DPO's drift is not far above RLHF's"

# %% [markdown]
# ## Takeaways
#
# * The DPO loss is a function of ratios *within* the data's support. Outside it the loss is flat
#   (C3). Whether the optimiser wanders along that flat direction depends on the policy class. A
#   tabular policy cannot. A function approximator with correlated features does, and in an LLM
#   every response shares parameters with every other.
# * Online methods measure KL on the policy's *own* samples. A bounded reward (C4) or an explicit KL
#   term (C5) then caps the drift, whatever the coverage. This is why Song et al. find that partial
#   coverage suffices online, while offline contrastive methods need global coverage.
#
# ## Exercises
#
# 1. **No correlation, no drift?** Train log-linear DPO with features
#    `np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])`, so that $y_3$ has no feature of its own.
#    Where does $\pi(y_3)$ go now, and why?
# 2. **Soft labels on the support.** Replace the single comparison by exact Bradley–Terry data on
#    $\{y_1, y_2\}$: `cs.offline_pairs(env, cs.restrict_support(env.ref, [0, 1]))`. The DPO
#    minimiser is now finite, with $\beta h(y_1, y_2) = r(y_1) - r(y_2)$. With the log-linear
#    features, predict $\pi(y_3)$ at convergence from that equation, then check it.
# 3. **When does HyPO help?** The HyPO bound $\log 2/\lambda$ only bites when it is below DPO's
#    $\log(1/\varepsilon)$. For each $\lambda$ in `config.lams`, find the $\varepsilon$ below which
#    HyPO is visibly better than DPO in the section 4 figure. Does it match the bound?
# 4. **Loosen the reward model.** Rerun RLHF with $R \in \{0.25, 1, 4\}$ and plot its final KL
#    against $2R/\beta$. When does the bound stop protecting you at your $\varepsilon$?
