"""F18 ``kl-estimators`` — Schulman's k1, k2, k3 estimators of KL(pi || pi_ref) ("Approximating
KL divergence", 2020), placed in the reward or in the loss: their exact bias and their variance
against the exact KL-regularised gradient, and where sampled training with each sends the policy.

The loss is the core's ``rlhf``: ``-E_pi r + beta KL(pi || pi_ref)``, estimated from groups of
policy samples (RLOO baseline) with the KL term replaced by ``k(y) = k1, k2 or k3`` of the sampled
responses, ``rho = pi_ref / pi``: ``k1 = -log rho``, ``k2 = (log rho)^2 / 2``,
``k3 = (rho - 1) - log rho``. *In the reward*, ``-beta k`` is added to the return inside the
REINFORCE advantage (no pathwise gradient); *in the loss*, ``beta k`` is differentiated at the
fixed samples (as TRL's GRPO trainer does with k3, following Shao et al., arXiv:2402.03300).

Claim (derived; claim C18): the expected gradient of each is exactly

- k1 in the loss: the reward gradient alone (``E[grad k1] = E_pi[score] = 0``: the KL is lost);
- k2 in the loss: the reverse-KL gradient (unbiased);
- k3 in the loss: the *forward* KL's gradient ``pi - pi_ref`` (``E[(1 - rho) score]``);
- k1 in the reward: the reverse-KL gradient (unbiased);
- k3 in the reward: reverse minus forward KL gradient;
- k2 in the reward: ``pi * (k2 - E_pi k2)``;

so sampled training with the unbiased two ends near ``pi*_beta = pi_ref e^{r/beta} / Z``, with k3
in the loss near the forward-KL optimum (:func:`~.setting.forward_kl_optimum`), and with k1 in the
loss as if there were no KL at all. An exact simulator computes each expectation exactly
(``cs.population_batch`` + ``cs.batch_gradient``), so the identities are checked to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.legend_handler import HandlerTuple

from coverage_sim import metrics
from coverage_sim._validation import check_int, check_positive
from coverage_sim.env import optimal_policy
from coverage_sim.experiments.common import check_peak_family
from coverage_sim.experiments.estimators.setting import (evaluation_logits, exact_parts,
                                                         forward_kl_optimum, instance_envs, tv)
from coverage_sim.experiments.registry import Experiment, register, tidy_rows
from coverage_sim.experiments.verdict import CheckResult, Effect, clause
from coverage_sim.gradients import batch_gradient, gradient, sampled_gradients
from coverage_sim.objectives import objective
from coverage_sim.plotting import figure_legend, new_figure
from coverage_sim.sampling import population_batch
from coverage_sim.train import train_many

__all__ = ["CANDIDATES", "ESTIMATORS", "EXPERIMENT", "KLEstimatorsConfig", "PREDICTIONS",
           "candidate_gradient", "check", "label", "plot", "predicted_gradient", "run"]

#: (KL estimator, where it goes), in plotting order.
ESTIMATORS = (("k1", "reward"), ("k2", "reward"), ("k3", "reward"),
              ("k1", "loss"), ("k2", "loss"), ("k3", "loss"))
#: The candidate expected gradients: reward gradient + beta x a combination of the exact parts
#: (:func:`~coverage_sim.experiments.estimators.setting.exact_parts`).
CANDIDATES = {
    "no KL": {},
    "reverse": {"reverse": 1.0},
    "forward": {"forward": 1.0},
    "reverse - forward": {"reverse": 1.0, "forward": -1.0},
    "k2 score": {"k2": 1.0},
}
#: The derived expected gradient of each estimator (claim C18): one of :data:`CANDIDATES`.
PREDICTIONS = {
    ("k1", "reward"): "reverse",
    ("k2", "reward"): "k2 score",
    ("k3", "reward"): "reverse - forward",
    ("k1", "loss"): "no KL",
    ("k2", "loss"): "reverse",
    ("k3", "loss"): "forward",
}
_IDENTITY = {("k1", "reward"): "the reverse-KL gradient (unbiased)",
             ("k2", "reward"): "beta pi (k2 - E_pi k2) in place of the KL gradient",
             ("k3", "reward"): "beta (reverse - forward KL gradient)",
             ("k1", "loss"): "no KL gradient at all (E[grad k1] = 0)",
             ("k2", "loss"): "the reverse-KL gradient (unbiased)",
             ("k3", "loss"): "the forward KL(pi_ref || pi) gradient"}
_COLOURS = {("k1", "reward"): "C0", ("k2", "reward"): "C9", ("k3", "reward"): "C2",
            ("k1", "loss"): "C3", ("k2", "loss"): "C1", ("k3", "loss"): "C4"}
#: Relative error allowed in an exact identity: float64 rounding over 100 arms.
_ROUNDING = 1e-9
_UNBIASED = (("k1", "reward"), ("k2", "loss"))
#: Arms with reward below this are "low-reward": the forward-KL optimum keeps ~10% of its mass
#: there (mode covering), pi*_beta ~0.6% (beta = 0.1, peaks 66-74).
_LOW = 0.5
_OPTIMUM, _FORWARD = "pi*_beta", "forward-KL optimum"
_BIASED = tuple(e for e in ESTIMATORS if e not in _UNBIASED)


def label(estimator: tuple[str, str]) -> str:
    """``"k1 in reward"`` etc."""
    return f"{estimator[0]} in {estimator[1]}"


def candidate_gradient(parts: dict, candidate: str, beta: float) -> np.ndarray:
    """Reward gradient + beta x the KL combination named ``candidate`` (:data:`CANDIDATES`)."""
    return parts["reward"] + beta * sum((c * parts[name] for name, c in
                                         CANDIDATES[candidate].items()),
                                        np.zeros_like(parts["reward"]))


def predicted_gradient(parts: dict, estimator: tuple[str, str], beta: float) -> np.ndarray:
    """The derived expected logit gradient of ``estimator`` from the exact parts."""
    return candidate_gradient(parts, PREDICTIONS[estimator], beta)


@dataclass(frozen=True)
class KLEstimatorsConfig:
    """Config of F18 (``kl-estimators``).

    Instance family: instance ``i`` is Tajwar's bandit with the reward peak at
    ``peak + offsets[i]`` (66-74 by default), evaluated at its own evaluation policy and trained
    with its own sampling seed (``seed * len(offsets) + i``).

    Attributes:
      peak: centre of the peak family.
      offsets: peak offsets of the instances (>= 8 for the robustness check).
      beta: KL coefficient.
      eval_steps: exact RLHF Adam steps (lr 0.01) from ``pi_ref`` to the evaluation policy.
      group_size: responses per group G (RLOO baseline within the group).
      batch_size: groups per sampled gradient (and per training step).
      draws: sampled gradients per estimator and instance for the variance.
      steps: sampled Adam training steps.
      lr: Adam step size of the training.
      record_every: record the training every this many steps.
    """

    peak: float = 70.0
    offsets: tuple[int, ...] = (-4, -3, -2, -1, 0, 1, 2, 3, 4)
    beta: float = 0.1
    eval_steps: int = 150
    group_size: int = 4
    batch_size: int = 8
    draws: int = 2000
    steps: int = 1500
    lr: float = 0.01
    record_every: int = 25

    def __post_init__(self):
        check_peak_family(self.peak, self.offsets, name="peak", single=True)
        check_positive(self.beta, "beta")
        check_int(self.eval_steps, "eval_steps", minimum=1)
        check_int(self.group_size, "group_size", minimum=2)
        check_int(self.batch_size, "batch_size", minimum=1)
        check_int(self.draws, "draws", minimum=2)
        check_int(self.steps, "steps", minimum=1)
        check_positive(self.lr, "lr")
        check_int(self.record_every, "record_every", minimum=1)

    @classmethod
    def quick(cls) -> KLEstimatorsConfig:
        return cls(offsets=(-1, 0, 1), draws=400, steps=1000, record_every=50)


def run(config: KLEstimatorsConfig, seed: int) -> pd.DataFrame:
    """Per instance and estimator: exact relative bias, relative distance of the exact expected
    gradient to every candidate of :data:`CANDIDATES` and relative standard deviation at the
    evaluation policy (step 0 rows), and the reward, KL(pi || pi_ref) and TV
    distance to ``pi*_beta`` and mass on the low-reward arms along sampled training (method
    ``exact KL``: the same training with the exact KL gradient, for reference), and the same
    read-outs of the two optima."""
    k = len(config.offsets)
    envs = instance_envs(config.peak, config.offsets)
    obj = objective("rlhf", beta=config.beta)
    logits = evaluation_logits(envs, config.beta, config.eval_steps, 0.01)
    frames = []
    for i, (env, theta) in enumerate(zip(envs, logits)):
        exact = gradient(env, obj, theta)[1]
        scale = float(np.linalg.norm(exact))
        parts = exact_parts(env, theta)
        for est in ESTIMATORS:
            options = dict(group_size=config.group_size, kl_estimator=est[0], kl_in=est[1])
            mean = batch_gradient(env, obj, theta, population_batch(env, obj, theta,
                                                                    **options))[1]
            _, grads = sampled_gradients(env, obj, theta, batch_size=config.batch_size,
                                         draws=config.draws, seed=seed * k + i, **options)
            spread = np.sqrt(np.mean(np.sum((grads - mean) ** 2, axis=1)))
            frames += tidy_rows({"instance": i, "peak": config.peak + config.offsets[i],
                                 "estimator": label(est)}, seed, [0], {
                "rel_bias": [np.linalg.norm(mean - exact) / scale],
                **{f"distance to {name}": [np.linalg.norm(
                    mean - candidate_gradient(parts, name, config.beta)) / scale]
                   for name in CANDIDATES},
                "rel_std": [spread / scale]})
    rec = np.unique(np.r_[np.arange(0, config.steps + 1, config.record_every), config.steps])
    optima = np.stack([optimal_policy(e, config.beta) for e in envs])
    forward = np.stack([forward_kl_optimum(e, config.beta) for e in envs])
    low = [e.reward2d[0] < _LOW for e in envs]
    for name, policies in ((_OPTIMUM, optima), (_FORWARD, forward)):
        for i, env in enumerate(envs):
            frames += tidy_rows({"instance": i, "peak": config.peak + config.offsets[i],
                                 "estimator": name}, seed, [config.steps], {
                "reward": [float(env.reward2d[0] @ policies[i])],
                "kl": [float(metrics.kl_divergence(env, policies[i], env.ref))],
                "low_mass": [float(policies[i][low[i]].sum())]})
    for est in ESTIMATORS + (("exact", None),):
        options = dict(group_size=config.group_size, kl_estimator=est[0])
        if est[1] is not None:
            options["kl_in"] = est[1]
        runs = train_many(envs, obj, steps=config.steps, lr=config.lr, seed=seed * k,
                          batch_size=config.batch_size, estimator=options, record=rec,
                          metrics=["reward", "kl"], progress=False)
        name = "exact KL" if est[1] is None else label(est)
        for i, (env, r) in enumerate(zip(envs, runs)):
            keys = {"instance": i, "peak": config.peak + config.offsets[i], "estimator": name}
            frames += tidy_rows(keys, seed, r.history["step"],
                                {"reward": r.history["reward"], "kl": r.history["kl"]})
            frames += tidy_rows(keys, seed, [config.steps], {
                "tv_opt": [tv(r.policy, optima[i])], "low_mass": [r.policy[low[i]].sum()]})
    return pd.concat(frames, ignore_index=True)


def _per_instance(table: pd.DataFrame, metric: str, step=None) -> pd.DataFrame:
    """Rows = instances, columns = estimators: ``metric`` at ``step`` (default: the last)."""
    rows = table[table["metric"] == metric]
    rows = rows[rows["step"] == (rows["step"].max() if step is None else step)]
    return rows.pivot_table(index="instance", columns="estimator", values="value",
                            aggfunc="mean")


def check(table: pd.DataFrame, config: KLEstimatorsConfig) -> CheckResult:
    """Every instance: (1-6) each estimator's exact expected gradient equals its derived identity
    (relative error < 1e-9); (7) the two unbiased estimators (k1 in the reward, k2 in the loss)
    end sampled training closer (TV) to ``pi*_beta`` than every biased one; (8) k3 in the loss
    ends with the largest mass on the low-reward arms, closer to the forward-KL optimum's than to
    ``pi*_beta``'s; (9) k1 in the loss ends with the
    largest KL(pi || pi_ref) of the six. Effect: final KL(pi || pi_ref), k1 in the loss minus k2
    in the loss (nats)."""
    clauses = []
    for est in ESTIMATORS:
        err = _per_instance(table, f"distance to {PREDICTIONS[est]}", 0)[label(est)]
        clauses.append(clause(
            f"identity-{est[0]}-{est[1]}",
            f"E[gradient] with {label(est)} = reward gradient + {_IDENTITY[est]} "
            f"(relative error < {_ROUNDING:g})",
            (err < _ROUNDING).tolist(), f"relative error up to {err.max():.2g}"))
    tv_opt = _per_instance(table, "tv_opt")
    low = _per_instance(table, "low_mass")
    kl = _per_instance(table, "kl")
    unbiased = tv_opt[[label(e) for e in _UNBIASED]].max(axis=1)
    biased = tv_opt[[label(e) for e in _BIASED]].min(axis=1)
    clauses.append(clause(
        "unbiased-reach-optimum",
        "sampled training with k1 in the reward and with k2 in the loss ends closer (TV) to "
        "pi*_beta than with any biased estimator",
        (unbiased < biased).tolist(),
        f"largest TV of the unbiased {unbiased.min():.3f}..{unbiased.max():.3f}; smallest of the "
        f"biased {biased.min():.3f}..{biased.max():.3f}"))
    k3 = label(("k3", "loss"))
    to_forward = (low[k3] - low[_FORWARD]).abs()
    to_optimum = (low[k3] - low[_OPTIMUM]).abs()
    rest = low[[label(e) for e in ESTIMATORS if e != ("k3", "loss")]].max(axis=1)
    clauses.append(clause(
        "k3-loss-forward-optimum",
        f"sampled training with k3 in the loss ends with the largest mass on the low-reward arms "
        f"(r < {_LOW:g}) of the six estimators, closer to the forward-KL optimum's than to "
        "pi*_beta's (mode covering)",
        ((to_forward < to_optimum) & (low[k3] > rest)).tolist(),
        f"low-reward mass {low[k3].min():.3f}..{low[k3].max():.3f} (the others at most "
        f"{rest.max():.3f}); forward-KL optimum {low[_FORWARD].mean():.3f}, pi*_beta "
        f"{low[_OPTIMUM].mean():.4f}"))
    k1 = label(("k1", "loss"))
    others = kl[[label(e) for e in ESTIMATORS if e != ("k1", "loss")]].max(axis=1)
    clauses.append(clause(
        "k1-loss-no-penalty",
        "sampled training with k1 in the loss ends with the largest KL(pi || pi_ref) of the six "
        "estimators", (kl[k1] > others).tolist(),
        f"k1 in the loss {kl[k1].min():.2f}..{kl[k1].max():.2f} nats; the others at most "
        f"{others.max():.2f}"))
    effect = Effect("final KL(pi || pi_ref), k1 in the loss - k2 in the loss (nats)",
                    tuple(kl[k1] - kl[label(("k2", "loss"))]))
    return CheckResult(clauses=tuple(clauses), effect=effect, mode="exact+sampled")


#: axis label of KL(pi || pi_ref) in panels (b) and (c)
_KL_LABEL = r"KL$(\pi \,\|\, \pi_{\rm ref})$ (nats)"


def plot(table: pd.DataFrame, config: KLEstimatorsConfig):
    """(a) exact relative bias and sampled relative standard deviation of each estimator (bars:
    mean over instances; dots: instances); (b) KL(pi || pi_ref) along sampled training (central
    instance) with the KL of the two optima; (c) final reward vs KL of every instance, with the
    exact KL-regularised frontier and the two optima."""
    fig, axes = new_figure(ncols=3, width=2.9, height=3.0)
    names = [label(e) for e in ESTIMATORS]
    ax = axes[0, 0]
    x = np.arange(len(names))
    for offset, metric, hatch in ((-0.2, "rel_bias", None), (0.2, "rel_std", "//")):
        values = _per_instance(table, metric, 0)[names]
        ax.bar(x + offset, values.mean(), width=0.38, hatch=hatch,
               color=[_COLOURS[e] for e in ESTIMATORS], alpha=0.8, edgecolor="k",
               linewidth=0.4, label="|bias| / |g| (exact)" if metric == "rel_bias"
               else f"std / |g| ({config.batch_size} groups of {config.group_size})")
        for j, name in enumerate(names):
            ax.plot(np.full(len(values), j + offset), values[name], "k.", markersize=2)
            if metric == "rel_bias" and values[name].max() < 1e-9:
                ax.text(j + offset, 0.03, "0", ha="center", fontsize=7)
    # "k1\nreward" rather than "k1 in reward": the full label is wider than a bar pair
    ax.set_xticks(x, [n.replace(" in ", "\n") for n in names], fontsize=6.5)
    ax.set_ylabel("relative to the exact |g|")   # shorter than the panel, legend below
    ax.set_title("(a) bias and spread")
    ax.set_ylim(0, 1.35 * ax.get_ylim()[1])   # head room for the legend above the bars
    ax.legend(fontsize=7, loc="upper left")
    central = len(config.offsets) // 2
    env = instance_envs(config.peak, [config.offsets[central]])[0]
    star = optimal_policy(env, config.beta)
    fwd = forward_kl_optimum(env, config.beta)
    ax = axes[0, 1]
    curves = table[(table["metric"] == "kl") & (table["instance"] == central)]
    for est in ESTIMATORS + (("exact", None),):
        name = "exact KL" if est[1] is None else label(est)
        curve = curves[curves["estimator"] == name].groupby("step")["value"].mean()
        ax.plot(curve.index, curve.values, color=_COLOURS.get(est, "k"),
                linestyle=":" if est[1] is None else "-", label=name)
    optimum_lines = [ax.axhline(float(metrics.kl_divergence(env, p, env.ref)), color="0.4",
                                linestyle=style, linewidth=0.9)
                     for p, style in ((star, "--"), (fwd, "-."))]
    ax.set_xlabel(f"step (Adam lr {config.lr:g}, {config.batch_size}x{config.group_size} "
                  "samples)")
    ax.set_ylabel(_KL_LABEL)
    ax.set_title(f"(b) training, peak {config.peak + config.offsets[central]:g}")
    curve_handles, curve_labels = ax.get_legend_handles_labels()
    ax = axes[0, 2]
    betas = np.geomspace(0.02, 5.0, 60)
    front = np.stack([optimal_policy(env, b) for b in betas])
    ax.plot(metrics.kl_divergence(env, front, env.ref), metrics.expected_reward(env, front),
            color="0.6", linewidth=3, alpha=0.5, label=r"$\pi^*_{\beta'}$ frontier")
    final_r = _per_instance(table, "reward")
    final_kl = _per_instance(table, "kl")
    for est in ESTIMATORS:
        ax.plot(final_kl[label(est)], final_r[label(est)], "o", color=_COLOURS[est],
                markersize=3, label=label(est))
    optimum_markers = [ax.plot(metrics.kl_divergence(env, p, env.ref),
                               metrics.expected_reward(env, p), marker, color="k",
                               markersize=8)[0]
                       for p, marker in ((star, "*"), (fwd, "X"))]
    ax.set_xlabel(_KL_LABEL)
    ax.set_ylabel("reward  $E_\\pi r$")
    ax.set_title("(c) where training ends")
    # One legend below (b) and (c) for both: inside, it covered (b)'s rising curves and was too
    # small to read in (c). Each optimum shows its KL line in (b) and its marker in (c).
    frontier = ax.get_legend_handles_labels()
    handles = curve_handles + [tuple(pair) for pair in zip(optimum_lines, optimum_markers)]
    labels = curve_labels + [r"$\pi^*_\beta$: KL (b), point (c)",
                             "forward-KL optimum: KL (b), point (c)"]
    figure_legend(fig, handles + frontier[0][:1], labels + frontier[1][:1], ncol=5,
                  fontsize=7, handler_map={tuple: HandlerTuple(ndivide=None)})
    return fig


EXPERIMENT = register(Experiment(
    id="kl-estimators", figure="F18",
    title="KL estimators k1, k2, k3 in the reward or in the loss: exact bias, variance and where "
          "training ends",
    paper=("Shao et al. 2024, DeepSeekMath (GRPO: k3 in the loss); the estimators k1, k2, k3 of "
           "Schulman 2020, Approximating KL divergence (note)"),
    arxiv="2402.03300",
    claim=("The expected gradient of k1 in the loss carries no KL term, k2 in the loss and k1 in "
           "the reward are unbiased for the reverse-KL gradient, k3 in the loss is the forward "
           "KL's gradient, k3 in the reward the reverse minus the forward one; so sampled training "
           "with the unbiased estimators ends near pi*_beta, with k3 in the loss near the "
           "forward-KL optimum, and with k1 in the loss as if unregularised."),
    differences=(
        "Our derivations (claim C18), tested exactly: an exact simulator computes each "
        "estimator's expectation as a finite sum over the policy's responses "
        "(cs.population_batch + cs.batch_gradient), so the identities are checked to rounding, "
        "not by Monte Carlo. Instance family: 9 instances, Tajwar's 100-arm bandit with the reward "
        "peak at 66-74, each at its evaluation policy (150 exact RLHF Adam steps, lr 0.01, from "
        "pi_ref; reward ~0.5, KL ~1.3 there) and with its own sampling seed. Loss -E r + beta "
        "KL(pi || pi_ref), beta = 0.1, groups of 4 responses with the RLOO baseline; the spread is "
        "that of one training batch (8 groups) over 2000 draws. Training: 1500 sampled Adam "
        "steps (lr 0.01) from pi_ref. pi*_beta = pi_ref e^{r/beta}/Z has KL 3.8 at peak 70; the "
        "forward-KL optimum, beta pi_ref / (beta + R - r), keeps ~8% of its mass spread over "
        "pi_ref's support (KL 4.9). The questions TRL, verl and the RLHF book have argued "
        "(which estimator, where) have exact answers here."),
    config=KLEstimatorsConfig, run=run, plot=plot, check=check, seeds=1))
