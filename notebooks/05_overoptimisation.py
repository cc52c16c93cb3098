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
# # 05 — Reward over-optimisation: gold versus proxy reward against $\sqrt{\mathrm{KL}}$
#
# **Question.** RLHF optimises a *learned* reward model, a proxy for what we actually want. What
# happens to the true ("gold") reward as we optimise the proxy harder, and how does that depend on
# how much data the proxy was fitted on?
#
# **Paper.** Gao, Schulman and Hilton 2022, *Scaling Laws for Reward Model Overoptimization*
# (arXiv:2210.10760); figure F14 of the [theory guide](../docs/figures.md). Measured against
# $d = \sqrt{\mathrm{KL}(\pi\,\|\,\pi_{\mathrm{ref}})}$:
#
# * the **proxy** reward rises monotonically;
# * the **gold** reward rises, peaks and then falls;
# * the gold curves follow $R_{\mathrm{bon}}(d) = d(\alpha - \beta d)$ for Best-of-N and
#   $R_{\mathrm{RL}}(d) = d(\alpha - \beta\log d)$ for RL;
# * the peak moves right as the proxy gets more data.
#
# **Setting** (`coverage_sim.experiments.gao.overoptimization`). $K = 200$ responses with a
# long-tailed (Zipf) reference. The gold reward is
# $r^* = z + 0.6\cdot\mathrm{standardised}(\log\pi_{\mathrm{ref}})$ with $z \sim N(0,1)$: atypical
# responses are worse on average. The proxy $\hat r$ is the
# Bradley–Terry maximum-likelihood fit (`cs.fit_bradley_terry`) on `n_pairs` gold-labelled pairs
# from $\pi_{\mathrm{ref}}\otimes\pi_{\mathrm{ref}}$. Both optimisers are exact:
#
# * **Best-of-N**: the law of the proxy-best of $N$ draws from $\pi_{\mathrm{ref}}$
#   (`cs.best_of_n_policy`), for $N$ from 1 to $10^5$;
# * **RL**: the KL-regularised optimum of the proxy, $\pi_{\mathrm{ref}}\,e^{\hat r/b}/Z$
#   (`cs.optimal_policy(..., reward=r_hat)`), where PPO with a KL penalty converges. We sweep $b$
#   from 30 down to 0.003.

# %% [markdown]
# ## The knob
#
# `n_pairs` is how much preference data the proxy is fitted on. On this instance over-optimisation
# needs an imperfect proxy. With about 1,000 pairs or fewer, the proxy's favourite responses are
# rare ones that won a few lucky comparisons. From roughly 3,000 pairs on, the proxy finds the gold
# best response, the gold curve no longer falls, and the check at the end of section 3 fails to
# tell you so (exercise 1).

# %% tags=["parameters"]
n_pairs = 1000  # preference pairs the proxy reward model is fitted on (over-optimisation: <~ 1000)

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import coverage_sim as cs
from coverage_sim import metrics
from coverage_sim.experiments.gao import overoptimization as gao
from coverage_sim.notebook import explore

# one instance (the experiment draws eight per run), one proxy data size; each seed a new dataset
config = gao.GaoConfig(n_pairs=n_pairs, data_sizes=(n_pairs,), instances=1, fixed_instance=True)
env = gao.make_env(config)
print(env, f"  pi_ref from {env.ref.max():.3f} down to {env.ref.min():.1e}")

# %% [markdown]
# ## 1. One proxy, up close
#
# A response with small $\pi_{\mathrm{ref}}$ is compared only a handful of times. Its fitted reward
# rests on those few labels, and the ridge (`l2`) shrinks it only a little. The highest proxy
# scores therefore go to rare responses that got lucky. Because rare responses are worse on
# average under the gold reward, these are exactly the wrong ones to pick.

# %%
data = cs.offline_pairs(env, env.ref, labels="bradley_terry", n=n_pairs, seed=0)
r_hat = cs.fit_bradley_terry(data, l2=config.l2)
seen = np.asarray(data.response_mass[0]) * 2 * n_pairs       # expected comparisons per response
top = np.argsort(r_hat)[-5:]

fig, ax = plt.subplots(figsize=(6.5, 3.8))
sc = ax.scatter(env.reward, r_hat, c=np.log10(env.ref), s=14, cmap="viridis")
ax.scatter(env.reward[top], r_hat[top], s=80, facecolors="none", edgecolors="C3",
           label=r"5 highest $\hat r$")
fig.colorbar(sc, label=r"$\log_{10}\pi_{\mathrm{ref}}$")
ax.set_xlabel("gold reward $r^*$")
ax.set_ylabel(r"proxy $\hat r$ (BT fit)")
ax.set_title(f"proxy fitted on n = {n_pairs} pairs (seed 0)")
ax.legend(fontsize=8)
fig.tight_layout()
print("top-5 proxy responses: comparisons seen =", seen[top].round(1),
      " gold reward =", env.reward[top].round(2), f" (gold max {env.reward.max():.2f})")

# %% [markdown]
# ## 2. Optimising the proxy: Best-of-N and the KL-regularised optimum
#
# Best-of-N has a closed-form KL bound,
#
# $$\mathrm{KL}(\pi_{\mathrm{BoN}}\,\|\,\pi_{\mathrm{ref}}) \le \log N - \frac{N-1}{N},$$
#
# with equality for continuous rewards. On a discrete response set the KL saturates at
# $\log 1/\pi_{\mathrm{ref}}(\arg\max\hat r)$ once Best-of-N always returns the proxy's favourite
# (claim C14).

# %%
ns = np.unique(np.round(np.geomspace(1, config.n_max, 40)).astype(int))
bon = np.stack([cs.best_of_n_policy(env.ref, r_hat, int(n)) for n in ns])
bon_kl = metrics.kl_divergence(env, bon, env.ref)
bound = np.array([cs.best_of_n_kl_bound(int(n)) for n in ns])
assert np.all(bon_kl <= bound + 1e-12), "Best-of-N exceeded the log N - (N-1)/N bound (C14)"

bs = np.geomspace(config.beta_max, config.beta_min, 40)


def show(n_pairs):
    """Gold and proxy gains of Best-of-N and of the KL-regularised optimum, for a proxy fitted on
    ``n_pairs`` pairs (dataset seed 0)."""
    data_n = cs.offline_pairs(env, env.ref, labels="bradley_terry", n=n_pairs, seed=0)
    r_hat_n = cs.fit_bradley_terry(data_n, l2=config.l2)
    bon_n = np.stack([cs.best_of_n_policy(env.ref, r_hat_n, int(n)) for n in ns])
    rl_n = np.stack([cs.optimal_policy(env, b, reward=r_hat_n) for b in bs])
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for ax, (name, pols) in zip(axes, (("Best-of-N", bon_n), ("KL-regularised optimum", rl_n))):
        d = np.sqrt(np.maximum(metrics.kl_divergence(env, pols, env.ref), 0.0))
        gold = metrics.expected_reward(env, pols) - metrics.expected_reward(env, env.ref)
        proxy = metrics.expected_reward(env, pols, reward=r_hat_n) - \
            metrics.expected_reward(env, env.ref, reward=r_hat_n)
        ax.plot(d, proxy, "o-", ms=3, color="C1", label=r"proxy $\hat r$")
        ax.plot(d, gold, "o-", ms=3, color="C0", label="gold $r^*$")
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set_xlabel(r"$d = \sqrt{\mathrm{KL}(\pi\,\|\,\pi_{\mathrm{ref}})}$")
        ax.set_title(f"{name}, n = {n_pairs} pairs (seed 0)")
    axes[0].set_ylabel(r"reward gain over $\pi_{\mathrm{ref}}$")
    axes[0].legend()
    fig.tight_layout()
    plt.show()


# a slider for n_pairs in Jupyter (with ipywidgets); headless, the parameter cell's value
explore(show, n_pairs=(n_pairs, [100, 300, 1000, 3000, 10000, 100000]))

# %% [markdown]
# ## 3. Averaged over datasets, with Gao's functional forms
#
# One dataset is noisy, so `gao.run` repeats the sweep for 10 datasets (seeds). `gao.mean_curves`
# averages the gains at matched $N$ or $b$. Both of Gao's forms are linear in $(\alpha, \beta)$,
# so `gao.fit_gao` fits them by least squares. (Gao's $\alpha, \beta$ are fit coefficients, printed
# as $a, b$, and unrelated to the KL strength.)

# %%
table = pd.concat([gao.run(config, seed) for seed in range(10)], ignore_index=True)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
summary = {}
for ax, method in zip(axes, gao.METHODS):
    d, gold, gold_se, proxy, proxy_se = gao.mean_curves(table, method)
    a, b, r2, fitted = gao.fit_gao(method, d, gold)
    summary[method] = {"d": d, "gold": gold, "a": a, "b": b, "r2": r2}
    ax.plot(d, proxy, color="C1", label=r"proxy $\hat r$")
    ax.fill_between(d, proxy - proxy_se, proxy + proxy_se, color="C1", alpha=0.2, lw=0)
    ax.plot(d, gold, color="C0", label="gold $r^*$")
    ax.fill_between(d, gold - gold_se, gold + gold_se, color="C0", alpha=0.2, lw=0)
    form = "d(a − b d)" if method == "best-of-N" else "d(a − b log d)"
    ax.plot(d, fitted, "k--", lw=1.1, label=f"fit {form}: a={a:.2f}, b={b:.2f}, R²={r2:.2f}")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel(r"$d = \sqrt{\mathrm{KL}}$")
    ax.set_title(f"{method}, mean ± s.e. over 10 datasets")
    ax.legend(fontsize=7, loc="upper left")
axes[0].set_ylabel(r"reward gain over $\pi_{\mathrm{ref}}$")
fig.tight_layout()

# %%
for method, s in summary.items():
    for seed, rows in table[table["method"] == method].groupby("seed"):
        wide = rows.pivot_table(index="step", columns="metric", values="value")
        assert np.all(np.diff(wide["proxy"]) >= -1e-9), f"{method}: proxy reward fell (seed {seed})"
    i = int(np.argmax(s["gold"]))
    print(f"{method:24s} gold peaks at d = {s['d'][i]:.2f} (d_max {s['d'][-1]:.2f}) with gain "
          f"{s['gold'][i]:.2f}; at d_max it is {s['gold'][-1]:.2f}; fit R² = {s['r2']:.2f}")
    assert 0.1 <= s["d"][i] / s["d"][-1] <= 0.9 and s["gold"][-1] <= 0.7 * s["gold"][i], (
        f"{method}: no over-optimisation at n_pairs = {n_pairs}: the gold reward does not rise and "
        "fall (a proxy fitted on this much data finds the gold-best response)")
    assert s["r2"] >= 0.8 and s["a"] > 0 and s["b"] > 0, f"{method}: Gao's form does not fit"

# %% [markdown]
# ## 4. More data moves the peak right
#
# The same Best-of-N sweep for proxies fitted on less and more data. With more pairs the proxy's
# mistakes cost less and come later. Past a few thousand pairs, on this instance, they disappear.

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.8))
sizes = sorted({max(n_pairs // 10, 10), max(n_pairs // 3, 10), n_pairs, 3 * n_pairs})
for size, colour in zip(sizes, plt.cm.viridis(np.linspace(0.1, 0.9, len(sizes)))):
    if size == n_pairs:
        t = table                                    # section 3's 10 datasets
    else:                                            # 5 datasets each keeps this cell quick
        sized = gao.GaoConfig(n_pairs=size, data_sizes=(size,), instances=1, fixed_instance=True)
        t = pd.concat([gao.run(sized, seed) for seed in range(5)])
    d, gold, _, _, _ = gao.mean_curves(t, "best-of-N")
    ax.plot(d, gold, color=colour, lw=2.5 if size == n_pairs else 1.2, label=f"n = {size}")
    ax.plot(d[np.argmax(gold)], gold.max(), "v", color=colour, ms=8)
ax.axhline(0, color="0.6", lw=0.8)
ax.set_xlabel(r"$d = \sqrt{\mathrm{KL}}$ (Best-of-N)")
ax.set_ylabel("gold reward gain")
ax.set_title("gold reward of Best-of-N; ▼ = peak")
ax.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# ## Takeaways
#
# * The proxy always looks better the harder you optimise it: this is guaranteed for Best-of-N
#   and for the KL-regularised family. The gold reward does not share that guarantee. Past the
#   peak, every extra nat of KL is spent on the proxy's errors.
# * The errors that get exploited are the proxy's poorly covered responses. It is the coverage
#   story of notebook 02 again, this time for a reward model instead of a policy.
# * KL is the natural budget. Best-of-N spends it in steps of $\log N - (N-1)/N$, RL continuously
#   through $b$, and both trace a rise-and-fall in $d = \sqrt{\mathrm{KL}}$.
#
# ## Exercises
#
# 1. **The knob.** Set `n_pairs = 3000`. The check in section 3 fails. Look at the section 1 scatter
#    plot and explain why the gold reward no longer falls.
# 2. **Where the errors come from.** Set the gold reward's dependence on typicality to zero,
#    `gao.GaoConfig(n_pairs=n_pairs, gamma=0.0)`. Is there still over-optimisation? Why is it now
#    weak and seed-dependent?
# 3. **Pessimism.** Replace $\hat r$ by a lower confidence bound,
#    $\hat r - \kappa / \sqrt{1 + \text{comparisons seen}}$, and redo section 2. Which $\kappa$
#    removes the fall? (Compare Rashidinejad et al.'s LCB, arXiv:2103.12021.)
# 4. **Best-of-N versus RL at equal KL.** At the same $d$, which of the two optimisers reaches the
#    higher gold reward in section 3? Relate your answer to the shape of each method's policy.
