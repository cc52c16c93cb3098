"""F19 ``group-baselines`` — REINFORCE, batch-mean, RLOO, GRPO and Dr. GRPO gradients against the
exact KL-regularised RLHF gradient as the group size G varies: bias, spread, and where sampled
training with each ends.

The loss is the core's ``rlhf``, ``-E_pi r + beta KL(pi || pi_ref)``, with the KL gradient exact
(``kl_estimator="exact"``) so that only the reward's score-function term is sampled: a group of G
responses from ``pi``, advantage ``r_i - b_i`` with the baseline ``b_i``: none (REINFORCE,
Williams 1992), the group mean including ``r_i`` ("mean"), the mean of the others (RLOO, Ahmadian
et al., arXiv:2402.14740), the mean with the advantage divided by the group's standard deviation
(GRPO, Shao et al., arXiv:2402.03300) or the mean without it (Dr. GRPO, Liu et al.,
arXiv:2503.20783, whose other change, no length normalisation, is moot for one-token responses).

Claim (derived; claim C19): REINFORCE and RLOO are unbiased; the batch mean is exactly
``(G-1)/G`` times RLOO, so its expected gradient is ``(G-1)/G`` times the reward gradient plus the
exact KL gradient and its training converges to ``pi*`` at ``beta G/(G-1)``, not at ``beta``;
Dr. GRPO equals the batch mean on a bandit; GRPO's normaliser depends on the samples, so it is
biased (at G = 2 its advantage is ``+- sign(r_1 - r_2)/sqrt(2)``, a rank-based gradient). The
baselines lower the spread.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib
import numpy as np
import pandas as pd

from coverage_sim._validation import check_int, check_positive
from coverage_sim.env import optimal_policy
from coverage_sim.experiments.common import check_peak_family
from coverage_sim.experiments.estimators.setting import (evaluation_logits, exact_parts,
                                                         instance_envs, tv)
from coverage_sim.experiments.registry import Experiment, check_tuple, register, tidy_rows
from coverage_sim.experiments.verdict import CheckResult, Effect, clause
from coverage_sim.gradients import gradient, sampled_gradients
from coverage_sim.objectives import objective
from coverage_sim.plotting import figure_legend, new_figure
from coverage_sim.train import train_many

__all__ = ["BASELINES", "EXPERIMENT", "GroupBaselinesConfig", "check", "plot", "run",
           "split_z"]

#: Baselines compared (the core's ``Estimator.baseline`` names), in plotting order.
BASELINES = ("none", "mean", "rloo", "grpo", "dr_grpo")
_NAMES = {"none": "REINFORCE", "mean": "batch mean", "rloo": "RLOO", "grpo": "GRPO",
          "dr_grpo": "Dr. GRPO"}
#: On a bandit Dr. GRPO is the batch mean draw for draw (checked), so it is drawn once.
_LEGEND = {"mean": "batch mean = Dr. GRPO"}
_COLOURS = {"none": "C7", "mean": "C1", "rloo": "C0", "grpo": "C3", "dr_grpo": "C2"}
#: |z| beyond this rejects "the Monte Carlo mean equals the target" (one test per instance and
#: G: two-sided p ~ 7e-6 each, below 1e-3 over every instance and G together).
_Z = 4.5
#: Draws of Dr. GRPO, compared draw for draw with the batch mean's first draws.
_IDENTITY_DRAWS = 200


def split_z(grads: np.ndarray, target: np.ndarray) -> float:
    """Sample-splitting z statistic of ``E[grad] = target`` from i.i.d. draws ``(n, K)``.

    The first half estimates the direction of the bias, ``d = mean_1 - target`` (normalised); the
    second half tests the projection ``(grad - target) . d`` with a t statistic. Under ``E[grad] =
    target`` the two halves are independent and the statistic is ~N(0, 1) whatever ``d`` is; under
    a bias ``b`` it grows like ``|b| sqrt(n/2) / sd``. A whole-vector test would rest on
    coordinates the draws almost never visit (rare arms, whose sample variance is ~0), where the
    central limit theorem does not yet hold; the projection averages over them.

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> draws = rng.normal(size=(4000, 3))
      >>> abs(split_z(draws, np.zeros(3))) < 4, split_z(draws + 0.3, np.zeros(3)) > 4
      (True, True)
    """
    n = len(grads) // 2
    direction = grads[:n].mean(axis=0) - target
    norm = np.linalg.norm(direction)
    if norm == 0:
        return 0.0
    proj = (grads[n:2 * n] - target) @ (direction / norm)
    spread = proj.std(ddof=1)
    if spread == 0:
        return 0.0 if proj.mean() == 0 else float(np.sign(proj.mean()) * np.inf)
    return float(proj.mean() / (spread / np.sqrt(n)))


@dataclass(frozen=True)
class GroupBaselinesConfig:
    """Config of F19 (``group-baselines``).

    Instance family: instance ``i`` is Tajwar's bandit with the reward peak at
    ``peak + offsets[i]`` (66-74 by default), evaluated at its own evaluation policy (exact RLHF
    Adam steps from ``pi_ref``) and sampled with its own seed (``seed * len(offsets) + i``).

    Attributes:
      peak: centre of the peak family.
      offsets: peak offsets of the instances (>= 8 for the robustness check).
      beta: KL coefficient.
      eval_steps: exact RLHF Adam steps (lr 0.01) to the evaluation policy.
      group_sizes: group sizes G (>= 2), increasing.
      draws: single-group gradient draws per instance, G and baseline.
      samples: responses per training step (``samples / G`` groups; a multiple of every G).
      steps: sampled Adam training steps.
      lr: Adam step size of the training.
      record_every: record the training every this many steps.
    """

    peak: float = 70.0
    offsets: tuple[int, ...] = (-4, -3, -2, -1, 0, 1, 2, 3, 4)
    beta: float = 0.1
    eval_steps: int = 150
    group_sizes: tuple[int, ...] = (2, 4, 8, 16)
    draws: int = 6000
    samples: int = 32
    steps: int = 1500
    lr: float = 0.01
    record_every: int = 25

    def __post_init__(self):
        check_peak_family(self.peak, self.offsets, name="peak", single=True)
        check_positive(self.beta, "beta")
        check_int(self.eval_steps, "eval_steps", minimum=1)
        check_tuple(self.group_sizes, "group_sizes",
                    lambda v, name: check_int(v, name, minimum=2))
        if list(self.group_sizes) != sorted(set(self.group_sizes)):
            raise ValueError(f"group_sizes must be increasing, got {self.group_sizes!r}")
        check_int(self.draws, "draws", minimum=4)
        check_int(self.samples, "samples", minimum=2)
        if any(self.samples % g for g in self.group_sizes):
            raise ValueError(f"samples must be a multiple of every group size "
                             f"{self.group_sizes!r}, got {self.samples}")
        check_int(self.steps, "steps", minimum=1)
        check_positive(self.lr, "lr")
        check_int(self.record_every, "record_every", minimum=1)

    @classmethod
    def quick(cls) -> GroupBaselinesConfig:
        return cls(offsets=(-1, 0, 1), group_sizes=(2, 4), record_every=50)


def run(config: GroupBaselinesConfig, seed: int) -> pd.DataFrame:
    """Per instance, G and baseline: at the evaluation policy (step 0 rows) the split z statistics
    against the exact gradient (``z_exact``) and against the scaled prediction ``(G-1)/G`` reward
    gradient + exact KL gradient (``z_scaled``), the Monte Carlo relative bias and relative
    standard deviation of one group, and for Dr. GRPO its largest difference from the batch mean on
    the same draws (``dr_minus_mean``); along sampled training, reward and KL(pi || pi_ref), and at
    the end the TV distances to ``pi*_beta`` and ``pi*_{beta G/(G-1)}``."""
    k = len(config.offsets)
    envs = instance_envs(config.peak, config.offsets)
    obj = objective("rlhf", beta=config.beta)
    logits = evaluation_logits(envs, config.beta, config.eval_steps, 0.01)
    frames = []
    for i, (env, theta) in enumerate(zip(envs, logits)):
        exact = gradient(env, obj, theta)[1]
        scale = float(np.linalg.norm(exact))
        parts = exact_parts(env, theta)
        keys = {"instance": i, "peak": config.peak + config.offsets[i]}
        for g in config.group_sizes:
            scaled = (g - 1) / g * parts["reward"] + config.beta * parts["reverse"]
            draws = {}
            for baseline in BASELINES:
                # Dr. GRPO is compared draw for draw with the batch mean: a few draws suffice
                n = min(config.draws, _IDENTITY_DRAWS) if baseline == "dr_grpo" else config.draws
                _, grads = sampled_gradients(env, obj, theta, batch_size=1, draws=n,
                                             seed=seed * k + i, group_size=g, baseline=baseline,
                                             kl_estimator="exact")
                draws[baseline] = grads
                if baseline == "dr_grpo":
                    continue
                mean = grads.mean(axis=0)
                frames += tidy_rows({**keys, "group_size": g, "baseline": baseline}, seed, [0], {
                    "z_exact": [split_z(grads, exact)], "z_scaled": [split_z(grads, scaled)],
                    "rel_bias": [np.linalg.norm(mean - exact) / scale],
                    "rel_std": [np.sqrt(np.mean(np.sum((grads - mean) ** 2, axis=1))) / scale]})
            same = draws["mean"][:len(draws["dr_grpo"])]   # draw d is the same batch in both
            frames += tidy_rows({**keys, "group_size": g, "baseline": "dr_grpo"}, seed, [0], {
                "dr_minus_mean": [float(np.abs(draws["dr_grpo"] - same).max())]})
    rec = np.unique(np.r_[np.arange(0, config.steps + 1, config.record_every), config.steps])
    for g in config.group_sizes:
        optimum = np.stack([optimal_policy(e, config.beta) for e in envs])
        shifted = np.stack([optimal_policy(e, config.beta * g / (g - 1)) for e in envs])
        for baseline in BASELINES:
            if baseline == "dr_grpo":
                continue   # identical to the batch mean on a bandit (dr_minus_mean above)
            runs = train_many(envs, obj, steps=config.steps, lr=config.lr, seed=seed * k,
                              batch_size=config.samples // g, record=rec,
                              estimator=dict(group_size=g, baseline=baseline,
                                             kl_estimator="exact"),
                              metrics=["reward", "kl"], progress=False)
            for i, r in enumerate(runs):
                keys = {"instance": i, "peak": config.peak + config.offsets[i], "group_size": g,
                        "baseline": baseline}
                frames += tidy_rows(keys, seed, r.history["step"],
                                    {"reward": r.history["reward"], "kl": r.history["kl"]})
                frames += tidy_rows(keys, seed, [config.steps], {
                    "tv_opt": [tv(r.policy, optimum[i])], "tv_shifted": [tv(r.policy, shifted[i])]})
    return pd.concat(frames, ignore_index=True)


def _grid(table: pd.DataFrame, metric: str, baseline: str, step=None) -> pd.DataFrame:
    """Rows = instances, columns = group sizes: ``metric`` of ``baseline`` at ``step`` (default:
    the last step)."""
    rows = table[(table["metric"] == metric) & (table["baseline"] == baseline)]
    rows = rows[rows["step"] == (rows["step"].max() if step is None else step)]
    return rows.pivot_table(index="instance", columns="group_size", values="value",
                            aggfunc="mean")


def check(table: pd.DataFrame, config: GroupBaselinesConfig) -> CheckResult:
    """Every instance, at every G unless said: REINFORCE and RLOO are unbiased (split z < 4.5);
    the batch mean matches ``(G-1)/G`` x reward gradient + KL gradient (|z| < 4.5) and is rejected
    as unbiased at the smallest G; Dr. GRPO equals the batch mean draw for draw; GRPO is biased
    (z > 4.5); RLOO's spread is below REINFORCE's; trained at G <= 4 the batch mean ends closer
    (TV) to ``pi*`` at ``beta G/(G-1)`` than at ``beta``, RLOO the other way round; GRPO ends with
    a larger KL(pi || pi_ref) than RLOO. Effect: final KL(pi || pi_ref), GRPO minus RLOO at the
    largest G trained with both (nats)."""
    z = {b: _grid(table, "z_exact", b, 0) for b in BASELINES}
    zs = _grid(table, "z_scaled", "mean", 0)
    sizes = list(z["rloo"].columns)
    small = [g for g in sizes if g <= 4] or sizes[:1]
    std = {b: _grid(table, "rel_std", b, 0) for b in ("none", "rloo")}
    dr = _grid(table, "dr_minus_mean", "dr_grpo", 0)
    tv_opt = {b: _grid(table, "tv_opt", b) for b in ("mean", "rloo")}
    tv_shift = {b: _grid(table, "tv_shifted", b) for b in ("mean", "rloo")}
    kl = {b: _grid(table, "kl", b) for b in ("rloo", "grpo")}

    def span(frame):
        return f"{frame.min().min():.2g}..{frame.max().max():.2g}"

    clauses = (
        clause("reinforce-unbiased", f"REINFORCE (no baseline) is unbiased at every G "
               f"(split z < {_Z})", (z["none"] < _Z).all(axis=1).tolist(),
               f"z {span(z['none'])}"),
        clause("rloo-unbiased", f"RLOO is unbiased at every G (split z < {_Z})",
               (z["rloo"] < _Z).all(axis=1).tolist(), f"z {span(z['rloo'])}"),
        clause("mean-scaled", f"the batch mean's expected gradient is (G-1)/G x the reward "
               f"gradient + the KL gradient at every G (|z| < {_Z}), and not the exact gradient "
               f"at G = {sizes[0]} (z > {_Z})",
               ((zs.abs() < _Z).all(axis=1) & (z["mean"][sizes[0]] > _Z)).tolist(),
               f"z against the scaled gradient {span(zs)}; against the exact one "
               f"{span(z['mean'])}"),
        clause("dr-grpo-is-mean", "Dr. GRPO's gradient equals the batch mean's on the same draws "
               "(no length normalisation to remove on a bandit)", (dr == 0).all(axis=1).tolist(),
               f"largest difference {dr.max().max():.2g}"),
        clause("grpo-biased", f"GRPO is biased at every G (split z > {_Z})",
               (z["grpo"] > _Z).all(axis=1).tolist(), f"z {span(z['grpo'])}"),
        clause("rloo-lower-spread", "RLOO's spread (one group) is below REINFORCE's at every G",
               (std["rloo"] < std["none"]).all(axis=1).tolist(),
               f"RLOO {span(std['rloo'])}, REINFORCE {span(std['none'])} (x |g|)"),
        clause("mean-shifted-optimum", f"trained with the batch mean at G in {small}, the policy "
               "ends closer (TV) to pi* at beta G/(G-1) than to pi* at beta",
               (tv_shift["mean"][small] < tv_opt["mean"][small]).all(axis=1).tolist(),
               f"TV to the shifted optimum {span(tv_shift['mean'][small])}, to pi*_beta "
               f"{span(tv_opt['mean'][small])}"),
        clause("rloo-optimum", f"trained with RLOO at G in {small}, the policy ends closer (TV) "
               "to pi* at beta than at beta G/(G-1)",
               (tv_opt["rloo"][small] < tv_shift["rloo"][small]).all(axis=1).tolist(),
               f"TV to pi*_beta {span(tv_opt['rloo'][small])}, to the shifted optimum "
               f"{span(tv_shift['rloo'][small])}"),
        clause("grpo-weaker-kl", "trained with GRPO the policy ends with a larger "
               "KL(pi || pi_ref) than with RLOO at every G",
               (kl["grpo"] > kl["rloo"]).all(axis=1).tolist(),
               f"GRPO {span(kl['grpo'])}, RLOO {span(kl['rloo'])} nats"),
    )
    top = max(kl["rloo"].columns)
    effect = Effect(f"final KL(pi || pi_ref), GRPO - RLOO at G = {top} (nats)",
                    tuple(kl["grpo"][top] - kl["rloo"][top]))
    return CheckResult(clauses=clauses, effect=effect, mode="exact+sampled")


def plot(table: pd.DataFrame, config: GroupBaselinesConfig):
    """(a) Monte Carlo relative bias and (b) relative spread of one group against G (mean over
    instances; the bias's Monte Carlo floor dotted); (c) reward along training at G = 4 (or the
    middle G) at the central instance; (d) final KL(pi || pi_ref) against G, with the KL of
    ``pi*_beta`` and of ``pi*_{beta G/(G-1)}``."""
    fig, axes = new_figure(ncols=4, width=2.3, height=2.9)
    sizes = sorted(table.loc[table["metric"] == "rel_std", "group_size"].unique())
    for ax, metric, title in ((axes[0, 0], "rel_bias", "(a) |E ĝ − g| / |g|"),
                              (axes[0, 1], "rel_std", "(b) spread / |g|, one group")):
        for baseline in ("none", "mean", "rloo", "grpo"):
            values = _grid(table, metric, baseline, 0)
            ax.plot(values.columns, values.mean(), marker="o", color=_COLOURS[baseline],
                    label=_LEGEND.get(baseline, _NAMES[baseline]), markersize=3)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("group size G")
        ax.set_title(title, fontsize=9)
    floor = _grid(table, "rel_std", "rloo", 0).mean() / np.sqrt(config.draws)
    # dashed, not dotted: the shared legend tells it from pi*_beta's dotted lines in (c, d)
    axes[0, 0].plot(floor.index, floor.values, "--", color="k", linewidth=0.9,
                    label="(a) Monte Carlo floor (RLOO)")
    central = len(config.offsets) // 2
    shown = 4 if 4 in sizes else sizes[len(sizes) // 2]
    ax = axes[0, 2]
    rows = table[(table["metric"] == "reward") & (table["instance"] == central)
                 & (table["group_size"] == shown)]
    for baseline, group in rows.groupby("baseline"):
        curve = group.groupby("step")["value"].mean()
        ax.plot(curve.index, curve.values, color=_COLOURS[baseline],
                label=_LEGEND.get(baseline, _NAMES[baseline]))
    env = instance_envs(config.peak, [config.offsets[central]])[0]
    star = float(env.reward2d[0] @ optimal_policy(env, config.beta))
    ax.axhline(star, color="k", linestyle=":", linewidth=1,
               label=r"$\pi^*_\beta$: (c) its reward, (d) its KL")
    ax.set_xlabel(f"step (Adam lr {config.lr:g}, {config.samples} samples)")
    ax.set_ylabel("reward  $E_\\pi r$")
    ax.set_title(f"(c) training, G = {shown}", fontsize=9)
    ax = axes[0, 3]
    for baseline in ("none", "mean", "rloo", "grpo"):
        values = _grid(table, "kl", baseline)
        ax.plot(values.columns, values.mean(), "o-", color=_COLOURS[baseline],
                label=_LEGEND.get(baseline, _NAMES[baseline]), markersize=3)
    g = np.asarray(sizes, dtype=float)
    cmap = matplotlib.colormaps["Greys"]
    kl_of = [float(optimal_policy(env, b) @ np.log(optimal_policy(env, b) / env.ref2d[0]))
             for b in config.beta * g / (g - 1)]
    star_kl = optimal_policy(env, config.beta)
    ax.axhline(float(star_kl @ np.log(star_kl / env.ref2d[0])), color=cmap(0.9), linestyle=":",
               linewidth=1)
    ax.plot(g, kl_of, "s:", color=cmap(0.5), markersize=3,
            label=r"(d) KL of $\pi^*$ at $\beta G/(G-1)$")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("group size G")
    ax.set_ylabel(r"final KL$(\pi \,\|\, \pi_{\rm ref})$ (nats)")
    ax.set_title("(d) where training ends", fontsize=9)
    # one legend below the panels: inside, each panel's legend covered its curves
    handles, labels = axes[0, 0].get_legend_handles_labels()
    for other in (axes[0, 2], axes[0, 3]):
        extra = [(h, lab) for h, lab in zip(*other.get_legend_handles_labels())
                 if lab not in labels]
        handles += [h for h, _ in extra]
        labels += [lab for _, lab in extra]
    figure_legend(fig, handles, labels, ncol=4, fontsize=7)
    return fig


EXPERIMENT = register(Experiment(
    id="group-baselines", figure="F19",
    title="Group baselines (REINFORCE, batch mean, RLOO, GRPO, Dr. GRPO) against the exact RLHF "
          "gradient as the group size varies",
    paper=("Ahmadian et al. 2024 (RLOO); Shao et al. 2024 (GRPO, arXiv:2402.03300); Liu et al. "
           "2025 (Dr. GRPO, arXiv:2503.20783)"),
    arxiv="2402.14740",
    claim=("REINFORCE and RLOO are unbiased; the batch-mean baseline (and Dr. GRPO, equal to it on "
           "a bandit) scales the reward gradient by (G-1)/G, so training converges to pi* at "
           "beta G/(G-1); GRPO's standard-deviation normaliser biases it; baselines lower the "
           "spread."),
    differences=(
        "Our derivations (claim C19), tested by Monte Carlo against the exact gradient. Instance "
        "family: 9 instances, Tajwar's 100-arm bandit with the reward peak at 66-74, each at its "
        "evaluation policy (150 exact RLHF Adam steps from pi_ref; reward ~0.5, KL ~1.3) with its "
        "own sampling seed. beta = 0.1 with the KL gradient exact, so that only the reward term "
        "is sampled; G = 2, 4, 8, 16; 6000 single-group draws per instance, G and baseline, "
        "tested with a sample-splitting z statistic (the first half's mean fixes the direction, "
        "the second half tests the projection; ~N(0, 1) for an unbiased estimator; threshold "
        "4.5, a family-wise false alarm below 1e-3). GRPO divides by the group's standard "
        "deviation with ddof = 1 plus 1e-4 (TRL); at G = 2 that is +-1/sqrt(2). Training: 1500 "
        "sampled Adam steps (lr 0.01) with 32 responses per step (32/G groups) from pi_ref. As the "
        "policy concentrates, GRPO's per-group standard deviation shrinks and its advantages "
        "grow while the exact KL term does not, so the KL penalty loses weight."),
    config=GroupBaselinesConfig, run=run, plot=plot, check=check, seeds=1))
