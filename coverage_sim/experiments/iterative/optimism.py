"""F16 ``iterative-optimism`` — iterative / online DPO and optimism (VPO, SELM) vs offline DPO, with
sampled batches: gold reward vs iteration.

Papers: Cen et al. 2024, VPO (arXiv:2405.19320); Zhang et al. 2024, SELM (arXiv:2405.19332);
Dong et al. 2024, RLHF Workflow (arXiv:2405.07863) and Xiong et al. 2023 (arXiv:2312.11456) for the
iterative best-vs-worst loop. Figure F16.

Tajwar et al.'s 100-arm bandit (``cs.tajwar_bandit``, arXiv:2404.14367). **Instance family**: unit
``i = 0..7`` pairs a *far* reward peak ``55 + 5 i`` (where the tanh-Cauchy ``pi_ref`` puts little
mass: ``E_ref r`` 0.04-0.06) with a *near* one ``10 + 2 i`` (``E_ref r`` about 0.38), and the seed
of every sampled run. Every method starts at ``pi_ref``, uses DPO's ``beta`` (TRL convention: loss
``-log sigma(beta h)``) and Adam, and samples ``batch_size`` groups per step; one *iteration* =
``steps_per_iteration`` steps:

- **offline DPO**: best vs worst of ``n = 8`` draws from ``pi_ref`` (deterministic gold labels, RLHF
  Workflow's ``max_min``), ``iterations * batch_size`` groups drawn once (``cs.group_pairs``): the
  data iterative DPO would collect over the whole run, never refreshed; exact gradient on that
  finite set;
- **iterative DPO** (``iterative_dpo``, sampled): every iteration draws ``batch_size`` groups of
  ``n`` from the current policy and trains on their best-vs-worst pairs; reference fixed to pi_0;
- **online DPO** (``vpo`` with ``alpha = 0``): pairs from ``pi_t`` every step, one Bernoulli label
  from the gold Bradley-Terry model each; swept over ``betas`` (the *smaller-beta control*);
- **VPO / SELM optimism** (``vpo``, online): online DPO + ``alpha beta E_{y~pi_ref} log pi(y)``,
  whose logit gradient ``alpha beta (pi_ref - pi)`` pushes mass away from ``pi_ref`` (claim C13);
  swept over ``alphas`` at ``beta``;
- **online RLHF** (``rlhf``, sampled REINFORCE with a leave-one-out baseline, gold reward).

Why sampled: with exact population gradients every arm's logit receives its exact gradient, so
there is no exploration problem for optimism to solve; the bonus can then only move the fixed point
past the KL-regularised optimum ``pi*_beta``, which a smaller ``beta`` does too. With sampled
batches a peak where ``pi_ref`` puts little mass is rarely drawn, which is the situation optimism
is meant for. The control compares VPO with the Pareto front of online DPO over a beta sweep, at
VPO's final KL (:func:`beta_frontier`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from coverage_sim._validation import check_int, check_positive
from coverage_sim.env import optimal_policy
from coverage_sim.experiments.registry import Experiment, check_tuple, register
from coverage_sim.experiments.verdict import PARTLY, CheckResult, Effect, clause
from coverage_sim.instances import tajwar_bandit
from coverage_sim.metrics import expected_reward, kl_divergence
from coverage_sim.objectives import objective
from coverage_sim.plotting import effect_axes, new_figure
from coverage_sim.sampling import group_pairs
from coverage_sim.train import train_many

__all__ = ["EXPERIMENT", "IterativeConfig", "METHODS", "beta_frontier", "check", "finals", "plot",
           "run", "unit_effects"]

OFFLINE, ITERATIVE, ONLINE_DPO, VPO, RLHF, OPTIMUM = ("offline", "iterative", "online_dpo",
                                                      "vpo", "rlhf", "optimum")
METHODS = (OFFLINE, ITERATIVE, ONLINE_DPO, VPO, RLHF)
_LABELS = {OFFLINE: r"offline DPO (best/worst of 8 from $\pi_{\rm ref}$, same number of groups)",
           ITERATIVE: r"iterative DPO (best/worst of 8 from $\pi_t$)",
           ONLINE_DPO: "online DPO (VPO, α = 0)", VPO: "online DPO + optimism (VPO)",
           RLHF: "online RLHF (REINFORCE, gold reward)",
           OPTIMUM: r"$E\,r^*$ under $\pi^*_\beta$ (theory)"}
_STYLE = {OFFLINE: dict(color="C3", linestyle="--"), ITERATIVE: dict(color="C2"),
          ONLINE_DPO: dict(color="C4"), VPO: dict(color="C5"),
          RLHF: dict(color="C0", linestyle=":")}


@dataclass(frozen=True)
class IterativeConfig:
    """Config of F16 (the instance family is in the module docstring).

    Attributes:
      instances: number of units; unit i has far peak ``far_start + far_step * i`` and near peak
        ``near_start + near_step * i``.
      far_start, far_step, near_start, near_step: the peak positions of the family.
      beta: DPO / RLHF / VPO KL strength (TRL convention).
      n: draws per group of the best/worst pairs (RLHF Workflow: 8).
      iterations: number of iterations T.
      steps_per_iteration: Adam steps per iteration.
      lr: Adam step size.
      batch_size: groups drawn per step (online DPO, VPO: pairs; RLHF: groups of 2; iterative DPO:
        groups of ``n`` per iteration).
      alphas: optimism strengths of VPO at ``beta`` (``alpha_main`` must be one of them).
      alpha_main: the VPO strength the check tests.
      betas: the online-DPO (``alpha = 0``) beta sweep of the smaller-beta control; must contain
        ``beta``.
      min_gap: "A beats B" needs A's gold reward ahead by more than this.
    """

    instances: int = 8
    far_start: float = 55.0
    far_step: float = 5.0
    near_start: float = 10.0
    near_step: float = 2.0
    beta: float = 0.1
    n: int = 8
    iterations: int = 10
    steps_per_iteration: int = 100
    lr: float = 0.01
    batch_size: int = 64
    alphas: tuple[float, ...] = (0.03, 0.1, 0.3)
    alpha_main: float = 0.1
    betas: tuple[float, ...] = (0.1, 0.05, 0.03, 0.02, 0.01, 0.005, 0.002)
    min_gap: float = 0.01

    def __post_init__(self):
        check_int(self.instances, "instances", minimum=1)
        for name in ("far_start", "far_step", "near_start", "near_step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not np.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        check_positive(self.beta, "beta")
        check_int(self.n, "n", minimum=2)
        check_int(self.iterations, "iterations", minimum=2)
        check_int(self.steps_per_iteration, "steps_per_iteration", minimum=1)
        check_positive(self.lr, "lr")
        check_int(self.batch_size, "batch_size", minimum=1)
        check_tuple(self.alphas, "alphas", check_positive)
        if self.alpha_main not in self.alphas:
            raise ValueError(f"alpha_main must be one of alphas {self.alphas!r}, got "
                             f"{self.alpha_main!r}")
        check_tuple(self.betas, "betas", check_positive)
        if self.beta not in self.betas:
            raise ValueError(f"betas must contain beta={self.beta!r} (the online-DPO baseline), "
                             f"got {self.betas!r}")
        check_positive(self.min_gap, "min_gap", allow_zero=True)

    @classmethod
    def quick(cls) -> IterativeConfig:
        return cls(iterations=6, steps_per_iteration=60, lr=0.02, alphas=(0.1, 0.3),
                   betas=(0.1, 0.03, 0.01, 0.003))

    def peaks(self) -> list[tuple[int, str, float]]:
        """``(unit, "far" | "near", peak)`` for every unit, far peaks first."""
        return ([(i, "far", self.far_start + self.far_step * i) for i in range(self.instances)]
                + [(i, "near", self.near_start + self.near_step * i)
                   for i in range(self.instances)])


def _rows(meta, method, alpha, beta, seed, runs, record, steps_per_iteration):
    frames = []
    for (unit, group, peak), r in zip(meta, runs):
        h = r.history
        iteration = (h["step"].to_numpy() // steps_per_iteration).astype(int)
        for metric, col in (("gold", "reward"), ("kl", "kl")):
            frames.append(pd.DataFrame({"instance": unit, "group": group, "peak": peak,
                                        "method": method, "alpha": float(alpha),
                                        "beta": float(beta), "seed": seed, "step": iteration,
                                        "metric": metric, "value": h[col].to_numpy()}))
    return frames


def run(config: IterativeConfig, seed: int) -> pd.DataFrame:
    """Gold reward and KL at every iteration boundary for every method, unit and peak (sampled),
    and ``E r*`` and KL of ``pi*_beta`` (``method = "optimum"``, step 0)."""
    S, T, B = config.steps_per_iteration, config.iterations, config.batch_size
    meta = config.peaks()
    envs = [tajwar_bandit(peak=peak) for _, _, peak in meta]
    record = [k * S for k in range(T + 1)]
    base = seed * (len(meta) + 1)  # problem b of every batch below draws from stream base + b
    common = dict(steps=T * S, lr=config.lr, seed=base, record=record, metrics=["reward", "kl"])

    def batch(method, objectives, datas=None, alpha=0.0, beta=config.beta, sampled=True):
        runs = train_many(envs, objectives, datas, batch_size=B if sampled else None, **common)
        return _rows(meta, method, alpha, beta, seed, runs, record, S)

    datas = [group_pairs(env, env.ref, T * B, config.n, pairs="best_worst",
                         labels="deterministic", seed=base + b) for b, env in enumerate(envs)]
    frames = batch(OFFLINE, objective("sigmoid", beta=config.beta), datas, sampled=False)
    frames += batch(ITERATIVE, objective("iterative_dpo", beta=config.beta, n=config.n,
                                         steps_per_iteration=S))
    frames += batch(RLHF, objective("rlhf", beta=config.beta))
    for beta in config.betas:
        frames += batch(ONLINE_DPO, objective("vpo", beta=beta, alpha=0.0), beta=beta)
    for alpha in config.alphas:
        frames += batch(VPO, objective("vpo", beta=config.beta, alpha=alpha), alpha=alpha)
    for (unit, group, peak), env in zip(meta, envs):
        opt = optimal_policy(env, config.beta)
        frames.append(pd.DataFrame({"instance": unit, "group": group, "peak": peak,
                                    "method": OPTIMUM, "alpha": 0.0, "beta": config.beta,
                                    "seed": seed, "step": 0, "metric": ["gold", "kl"],
                                    "value": [float(expected_reward(env, opt)),
                                              float(kl_divergence(env, opt, env.ref))]}))
    return pd.concat(frames, ignore_index=True)


def finals(table: pd.DataFrame) -> pd.DataFrame:
    """Final gold reward and KL of every run: one row per (instance, seed, group, method, alpha,
    beta), columns ``gold``, ``kl``."""
    keys = ["instance", "seed", "group", "method", "alpha", "beta"]
    last = table[table["step"] == table.groupby(keys)["step"].transform("max")]
    return last.pivot_table(index=keys, columns="metric", values="value").reset_index()


def beta_frontier(kl, gold, at: float) -> float:
    """The gold reward a beta sweep reaches at KL ``at``: its Pareto front (running maximum of gold
    over the sweep's points in KL order) interpolated linearly; flat beyond the largest KL any beta
    reached (no beta gets further within the step budget); ``-inf`` below the smallest.

    Examples:
      >>> beta_frontier([1.0, 2.0, 3.0], [0.5, 0.7, 0.6], 2.5)
      0.7
      >>> beta_frontier([1.0, 2.0], [0.5, 0.7], 1.5), beta_frontier([1.0, 2.0], [0.5, 0.7], 9.0)
      (0.6, 0.7)
    """
    order = np.argsort(np.asarray(kl, dtype=float))
    k = np.asarray(kl, dtype=float)[order]
    front = np.maximum.accumulate(np.asarray(gold, dtype=float)[order])
    if at < k[0]:
        return -np.inf
    return float(np.interp(at, k, front))


def unit_effects(table: pd.DataFrame, config: IterativeConfig) -> pd.DataFrame:
    """Per unit (instance, seed): the numbers the check tests.

    Columns: ``online_margin`` (the smallest final-gold lead of iterative DPO and online RLHF over
    offline DPO, over both peaks), ``gain_far`` / ``gain_near`` (VPO at ``alpha_main`` minus online
    DPO at ``beta``), ``control_far`` / ``control_near`` (VPO at ``alpha_main`` minus the online-DPO
    beta sweep's :func:`beta_frontier` at VPO's final KL), ``beyond_sweep_far`` (whether VPO's KL
    exceeds every beta's there).
    """
    f = finals(table)
    rows = []
    for (unit, seed), g in f.groupby(["instance", "seed"]):
        def gold(group, method, alpha=0.0, beta=config.beta):
            sel = g[(g["group"] == group) & (g["method"] == method)
                    & np.isclose(g["alpha"], alpha) & np.isclose(g["beta"], beta)]
            return sel.iloc[0]

        margin = min(gold(grp, m)["gold"] - gold(grp, OFFLINE)["gold"]
                     for grp in ("far", "near") for m in (ITERATIVE, RLHF))
        gains = {grp: gold(grp, VPO, config.alpha_main)["gold"] - gold(grp, ONLINE_DPO)["gold"]
                 for grp in ("far", "near")}
        row = {"instance": unit, "seed": seed, "online_margin": margin,
               "gain_far": gains["far"], "gain_near": gains["near"]}
        for grp in ("far", "near"):
            vpo = gold(grp, VPO, config.alpha_main)
            sweep = g[(g["group"] == grp) & (g["method"] == ONLINE_DPO)]
            row[f"control_{grp}"] = vpo["gold"] - beta_frontier(sweep["kl"], sweep["gold"],
                                                                vpo["kl"])
            row[f"beyond_sweep_{grp}"] = bool(vpo["kl"] > sweep["kl"].max())
        rows.append(row)
    return pd.DataFrame(rows).set_index(["instance", "seed"])


def _curve(table, unit, group, method, alpha=0.0, beta=None, metric="gold") -> pd.Series:
    rows = table[(table["instance"] == unit) & (table["group"] == group)
                 & (table["method"] == method) & np.isclose(table["alpha"], alpha)
                 & (table["metric"] == metric)]
    if beta is not None:
        rows = rows[np.isclose(rows["beta"], beta)]
    return rows.groupby("step")["value"].mean()


def _shown_unit(config) -> int:
    """The unit drawn in panels (a)-(c): the one whose far peak is closest to Tajwar's 70."""
    return min(range(config.instances), key=lambda i: abs(config.far_start + config.far_step * i
                                                          - 70.0))


def plot(table: pd.DataFrame, config: IterativeConfig):
    """(a), (b) gold vs iteration at one unit's far and near peaks; (c) its far peak's gold vs KL:
    the online-DPO beta sweep against the VPO alpha sweep (the smaller-beta control); (d) the paired
    effects per unit (dots), mean and 95% CI."""
    fig, axes = new_figure(ncols=4, width=2.7, height=3.4,
                           gridspec_kw={"width_ratios": [1.0, 1.0, 1.0, 1.25]})
    unit = _shown_unit(config)
    peaks = {grp: p for i, grp, p in config.peaks() if i == unit}
    opt = table[table["method"] == OPTIMUM].pivot_table(index=["instance", "group"],
                                                         columns="metric", values="value")
    for ax, group in zip(axes[0, :2], ("far", "near")):
        for method in (OFFLINE, ITERATIVE, RLHF):
            c = _curve(table, unit, group, method)
            ax.plot(c.index, c.values, marker="o", ms=2.5, label=_LABELS[method],
                    **_STYLE[method])
        c = _curve(table, unit, group, ONLINE_DPO, beta=config.beta)
        ax.plot(c.index, c.values, marker="o", ms=2.5, label=_LABELS[ONLINE_DPO],
                **_STYLE[ONLINE_DPO])
        c = _curve(table, unit, group, VPO, config.alpha_main)
        ax.plot(c.index, c.values, marker="o", ms=2.5,
                label=f"{_LABELS[VPO]}, α = {config.alpha_main:g}", **_STYLE[VPO])
        ax.axhline(opt.loc[(unit, group), "gold"], color="grey", linewidth=0.9,
                   label=_LABELS[OPTIMUM])
        ax.set_title(f"({'a' if group == 'far' else 'b'}) {group} peak: arm {peaks[group]:g}")
        ax.set_xlabel("iteration")
        ax.set_ylim(0.0, 1.02)
    axes[0, 0].set_ylabel(r"gold reward $E_\pi r^*$")
    ax = axes[0, 2]
    f = finals(table)
    f = f[(f["instance"] == unit) & (f["group"] == "far")]
    sweep = f[f["method"] == ONLINE_DPO].groupby("beta")[["kl", "gold"]].mean().sort_values("kl")
    ax.plot(sweep["kl"], sweep["gold"], "-o", ms=3, label="online DPO, β sweep",
            **_STYLE[ONLINE_DPO])
    # The largest beta ends lowest and leftmost: its label goes right of the point, level with
    # it (below it would cross the x-axis, above it the rising sweep line).
    for beta, offset, va in ((max(config.betas), (6, -2), "center"),
                             (min(config.betas), (3, -9), "baseline")):
        row = sweep.loc[beta]
        ax.annotate(f"β={beta:g}", (row["kl"], row["gold"]), fontsize=6.5, xytext=offset,
                    textcoords="offset points", va=va)
    vpo = f[f["method"] == VPO].groupby("alpha")[["kl", "gold"]].mean()
    ax.plot(vpo["kl"], vpo["gold"], "*", ms=8, label=f"VPO, α sweep at β = {config.beta:g}",
            color=_STYLE[VPO]["color"])
    # alpha labels up-left of their stars: the sweep rises to the right (it crossed labels
    # placed right of a star) and the largest alphas sit at the right edge of the panel
    for alpha, row in vpo.iterrows():
        ax.annotate(f"α={alpha:g}", (row["kl"], row["gold"]), fontsize=6.5, xytext=(-4, 3),
                    textcoords="offset points", ha="right")
    ax.set_xlabel(r"KL$(\pi \,\|\, \pi_{\rm ref})$ at the end [nats]")
    ax.set_ylabel("final gold reward")
    ax.set_title("(c) far peak: α vs smaller β")
    # frameless: a framed box reached over the largest beta's label
    ax.legend(loc="lower right", fontsize=6.5, frameon=False, handlelength=1.4)
    eff = unit_effects(table, config)
    shown = [Effect("online − offline (min)", tuple(eff["online_margin"])),
             Effect("VPO − online DPO, far", tuple(eff["gain_far"])),
             Effect("VPO − online DPO, near", tuple(eff["gain_near"])),
             Effect("far gain − near gain", tuple(eff["gain_far"] - eff["gain_near"]))]
    control = (eff["control_far"] - eff["control_near"]).to_numpy()
    if np.isfinite(control).all():
        shown += [Effect("VPO − β front, far", tuple(eff["control_far"])),
                  Effect("(VPO − β front): far − near", tuple(control))]
    effect_axes(axes[0, 3], shown, "gold reward difference")
    axes[0, 3].set_title("(d) per unit (95% CI)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=7)
    fig.suptitle(f"Tajwar bandit (100 arms), β = {config.beta:g}, sampled: {config.batch_size} "
                 f"groups per step; one iteration = {config.steps_per_iteration} Adam steps",
                 fontsize=9)
    return fig


def _listed(values) -> str:
    return "per unit: " + ", ".join(f"{v:+.3f}" for v in values)


def check(table: pd.DataFrame, config: IterativeConfig) -> CheckResult:
    """Per unit (a far and a near peak, one seed), final gold rewards; "above" means by more than
    ``min_gap``:

    1. ``online-beats-offline``: iterative DPO and online RLHF end above offline DPO on the same
       number of best/worst groups from pi_ref, at both peaks;
    2. ``optimism-helps-far``: at the far peak VPO (``alpha_main``) ends above online DPO at the
       same beta;
    3. ``optimism-helps-more-far``: that gain is larger at the far peak than at the near one;
    4. ``optimism-beyond-smaller-beta``: at the far peak VPO ends above the online-DPO beta sweep's
       frontier at VPO's KL (:func:`beta_frontier`: the gain is not a smaller effective beta);
    5. ``beyond-smaller-beta-more-far``: clause 4's lead is larger at the far peak than at the
       near one (clause 3 with the smaller-beta control: online DPO at ``beta`` is slower at a far
       peak, so a raw gain can be larger there without optimism doing more).

    Effect: clause 4's difference (VPO minus the beta sweep's frontier at VPO's KL).
    """
    eff = unit_effects(table, config)
    gap = config.min_gap
    margin, far, near = (eff[c].to_numpy() for c in ("online_margin", "gain_far", "gain_near"))
    control, near_control = eff["control_far"].to_numpy(), eff["control_near"].to_numpy()
    beyond = int(eff["beyond_sweep_far"].sum())
    clauses = (
        clause("online-beats-offline", f"iterative DPO and online RLHF end above offline DPO on "
               f"the same number of best/worst-of-{config.n} groups from pi_ref, at the far and "
               f"the near peak, by more than {gap:g}", margin > gap,
               _listed(margin) + " (smallest of the four leads)"),
        clause("optimism-helps-far", f"at the far peak, VPO (alpha = {config.alpha_main:g}) ends "
               f"above online DPO at the same beta by more than {gap:g}", far > gap, _listed(far)),
        clause("optimism-helps-more-far", f"VPO's gain over online DPO is larger at the far peak "
               f"than at the near one by more than {gap:g}", far - near > gap,
               _listed(far - near)),
        clause("optimism-beyond-smaller-beta", f"at the far peak, VPO ends above the gold that "
               f"online DPO's beta sweep {config.betas} reaches at VPO's KL (its Pareto front, "
               f"flat beyond the largest KL any beta reached), by more than {gap:g}",
               control > gap, _listed(control) + f"; VPO's KL beyond every beta's on {beyond} "
               f"of {len(control)} units"),
        clause("beyond-smaller-beta-more-far", f"VPO's lead over the beta sweep's frontier is "
               f"larger at the far peak than at the near one by more than {gap:g}",
               control - near_control > gap, _listed(control - near_control)),
    )
    values = np.where(np.isfinite(control), control, np.nan)
    effect = None
    if np.isfinite(values).all():
        effect = Effect("final gold at the far peak, VPO - online DPO's beta frontier at VPO's "
                        "KL", tuple(values))
    return CheckResult(clauses=clauses, effect=effect, mode="exact+sampled")


EXPERIMENT = register(Experiment(
    id="iterative-optimism", figure="F16",
    title="Iterative/online DPO and optimism (VPO) vs offline DPO, sampled: gold reward vs "
          "iteration",
    paper="Cen et al. 2024 (VPO); Zhang et al. 2024 (SELM); Dong et al. 2024 (RLHF Workflow) / "
          "Xiong et al. 2023 (iterative GSHF)", arxiv="2405.19320",
    claim=("Iterative (online) DPO, which re-draws best-vs-worst pairs from the current policy, "
           "and online RLHF reach a higher gold reward than offline DPO on a fixed dataset; adding "
           "an optimism bonus (VPO/SELM) helps further, especially when the reward peak lies "
           "where pi_ref puts little mass."),
    differences=("A 100-arm bandit instead of LLMs, every method sampled (64 groups per step) "
                 "with Adam on tabular logits, except offline DPO (exact gradient on its finite "
                 "data). Instances: 8 units, each a far peak (55, 60, ..., 90) and a near peak "
                 "(10, 12, ..., 24) with the seed of all their sampled runs. 'VPO' is the core's "
                 "online form (online DPO with Bradley-Terry labels every step + alpha beta "
                 "E_ref log pi, SELM's pi_cal = pi_ref), not iterative max_min DPO plus optimism. "
                 "Offline DPO gets as many best/worst groups from pi_ref as iterative DPO draws "
                 "over the whole run. The optimism bonus pushes the policy past the "
                 "KL-regularised optimum pi*_beta (its gold line), as a smaller beta would: the "
                 "smaller-beta control compares VPO with the Pareto front of online DPO over a "
                 "beta sweep down to 0.002, at VPO's final KL; where VPO's KL exceeds every "
                 "beta's (most far units at alpha = 0.1: no beta gets that far in the same step "
                 "budget) the front is taken flat at its best gold, so the control says 'better "
                 "than any smaller beta within the budget', not 'better at matched KL'. At "
                 "alpha = 0.03, whose KL the sweep covers, VPO lies on the beta front (panel c). "
                 "With exact population gradients there is no exploration problem (see the "
                 "module docstring), which is why this figure samples."),
    config=IterativeConfig, run=run, plot=plot, check=check, seeds=1,
    expected_verdict=PARTLY, expected_failing=("beyond-smaller-beta-more-far",)))
