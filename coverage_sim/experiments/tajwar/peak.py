"""F1 ``tajwar-peak`` — Tajwar et al. 2024 (arXiv:2404.14367), §4 didactic bandit: on-policy
sampling wins when the optimum is far from the reference.

Evaluation reward against gradient step, offline vs on-policy DPO, IPO, Best-of-N and REINFORCE,
with the reward peak far from ``pi_ref``'s mass (around arm 70) or inside it (around arm 20), in
three arms side by side:

- ``protocol``: Tajwar et al.'s own protocol, sampled (10 responses per state, all 45 pairs,
  deterministic labels, reward-gap threshold 0.2 for offline DPO/IPO, 100 states offline as one
  batch for 200 steps, 10 states per on-policy batch with 15 steps per batch, their learning
  rates per method, Adam);
- ``lr-0.01``: the same sampled protocol with Adam lr 0.01 for every method (a substitute: their
  learning rates were tuned for an MLP, which moves each arm's logit faster per step than a
  table does);
- ``exact``: exact population gradients (the offline pairs are the truncated ``pi_ref x pi_ref``
  population, on-policy objectives are refreshed from ``pi_t`` every step), Adam lr 0.01, 1500
  steps for every method.

Claim: with the peak far from ``pi_ref`` on-policy and contrastive methods beat offline
maximum likelihood (Best-of-N) by a wide margin; with the peak inside ``pi_ref``'s mass all
methods perform similarly. The check tests it on a family of instances (peak offsets, each with
its own sampling seed); where our setting differs: ``EXPERIMENT.differences``.

See :mod:`coverage_sim.experiments.tajwar.setting` for the bandit, the protocol constants and the
theory lines (offline caps, Adam's speed limit).
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.ticker
import numpy as np
import pandas as pd

from coverage_sim import metrics
from coverage_sim._validation import check_choice, check_in_range, check_int, check_positive
from coverage_sim.best_of_n import best_of_n_policy
from coverage_sim.data import offline_pairs, policy_pairs
from coverage_sim.experiments.common import steps_to_reach
from coverage_sim.experiments.policy_classes import check_policy_class, train_each
from coverage_sim.experiments.registry import (Experiment, check_tuple, register, tidy_rows)
from coverage_sim.experiments.tajwar.setting import (
    ARXIV, METHOD_COLOURS, OFFLINE, ON_POLICY, PAPER, PROTOCOL_BATCHES, PROTOCOL_DPO_BETA,
    PROTOCOL_GAP, PROTOCOL_IPO_MARGIN, PROTOCOL_LRS, PROTOCOL_N, PROTOCOL_OFFLINE_STATES,
    PROTOCOL_OFFLINE_STEPS, PROTOCOL_ONLINE_STATES, PROTOCOL_REUSE, gap_pairs, ipo_beta,
    ipo_fixed_point, peak_env, peak_policy, refresh_train,
    sign_descent_limit, step_grid, train_best_of_n)
from coverage_sim.experiments.verdict import DISAGREES, CheckResult, Effect, clause
from coverage_sim.objectives import objective
from coverage_sim.plotting import new_figure
from coverage_sim.sampling import group_pairs
from coverage_sim.train import train_many

__all__ = ["ARMS", "EXPERIMENT", "METHODS", "PeakConfig", "RUN_METRICS", "check", "final_rewards",
           "plot", "run", "steps_to", "summary"]

#: The arms: Tajwar's sampled protocol (their learning rates), the same with lr 0.01 for every
#: method, and exact population gradients (lr 0.01).
ARMS = ("protocol", "lr-0.01", "exact")
_SAMPLED_ARMS = ("protocol", "lr-0.01")
_ARM_TITLES = {"protocol": "Tajwar protocol\n(sampled, their lrs)",
               "lr-0.01": "sampled protocol,\nAdam lr 0.01 for all",
               "exact": "exact population,\nAdam lr 0.01"}
#: (method, regime) pairs, in plotting order.
METHODS = (("DPO", OFFLINE), ("IPO", OFFLINE), ("Best-of-N", OFFLINE),
           ("DPO", ON_POLICY), ("IPO", ON_POLICY), ("Best-of-N", ON_POLICY), ("PG", ON_POLICY))
_LABELS = {"PG": "REINFORCE"}
#: A peak is "far" from pi_ref when E_ref r < this (Tajwar's reward_4 at 70: 0.039; reward_5 at 20:
#: 0.377; every peak of the families 66-74 and 16-24 is on its side).
_FAR = 0.1
#: "By a wide margin" and "similar", in reward units.
_WIDE, _SIMILAR = 0.3, 0.1
#: Reward level of the steps-to-reach numbers in the text.
REACH = 0.9
#: Metrics ``run`` can record at every recorded step: the expected reward ``E_pi r`` (always; the
#: check and the plots read it) and ``KL(pi || pi_ref)`` in nats (reward-against-KL plots).
RUN_METRICS = ("reward", "kl")


@dataclass(frozen=True)
class PeakConfig:
    """Config of F1 (``tajwar-peak``).

    Instance family: instance ``i`` is the pair of peaks ``c + offsets[i]`` for every centre ``c``
    in ``peaks`` (far 70 and near 20 by default: peaks 66-74 and 16-24), with its own sampling
    seed (``seed * len(offsets) + i``: the offline data and every sampled batch).

    Attributes:
      peaks: centres of the peak families; a peak with ``E_ref r < 0.1`` is "far" (70), else "near"
        (20).
      offsets: peak offsets of the instances (>= 8 for the robustness check).
      arms: subset of ``ARMS`` (``"protocol"`` carries the paper's clauses).
      steps: on-policy Adam steps (Tajwar: 100 batches x 15 steps = 1500); the exact arm trains
        every method this long.
      offline_steps: offline Adam steps of the sampled arms (Tajwar: 200 on one batch).
      lr: Adam step size of the ``lr-0.01`` and ``exact`` arms.
      n: responses per state (Tajwar: 10).
      dpo_beta: DPO beta in ``-log sigma(beta h)`` (Tajwar: 0.01).
      ipo_margin: Tajwar's IPO target margin ``m`` in ``(h - m)^2`` (TRL beta = 1/(2m)).
      offline_gap: offline DPO/IPO drop pairs whose rewards differ by less than this (Tajwar:
        0.2; 0 keeps every reference pair).
      pg_beta: KL strength of the policy gradient (tiny: Tajwar's REINFORCE has none).
      record_every: record every this many on-policy steps (offline sampled: every 10).
      policy: policy class of the exact arm, ``"tabular"``, ``"loglinear"`` or ``"mlp"``
        (``tajwar.setting.peak_policy``); the sampled arms need ``"tabular"`` or ``"loglinear"``.
      metrics: recorded metrics, a subset of ``RUN_METRICS`` holding ``"reward"``; add ``"kl"``
        for ``KL(pi_t || pi_ref)`` (not needed by the check).
    """

    peaks: tuple[float, ...] = (70.0, 20.0)
    offsets: tuple[int, ...] = (-4, -3, -2, -1, 0, 1, 2, 3, 4)
    arms: tuple[str, ...] = ARMS
    steps: int = PROTOCOL_BATCHES * PROTOCOL_REUSE
    offline_steps: int = PROTOCOL_OFFLINE_STEPS
    lr: float = 0.01
    n: int = PROTOCOL_N
    dpo_beta: float = PROTOCOL_DPO_BETA
    ipo_margin: float = PROTOCOL_IPO_MARGIN
    offline_gap: float = PROTOCOL_GAP
    pg_beta: float = 1e-3
    record_every: int = 15
    policy: str = "tabular"
    metrics: tuple[str, ...] = ("reward",)

    def __post_init__(self):
        check_tuple(self.peaks, "peaks", lambda v, name: check_in_range(v, name, 0.0, 99.0))
        check_tuple(self.offsets, "offsets", lambda v, name: check_int(v, name, minimum=-99))
        for c in self.peaks:
            for o in self.offsets:
                check_in_range(c + o, "peaks + offsets", 0.0, 99.0)
        check_tuple(self.arms, "arms", lambda v, name: check_choice(v, name, ARMS))
        check_int(self.steps, "steps", minimum=1)
        if self.steps % PROTOCOL_REUSE and set(self.arms) & set(_SAMPLED_ARMS):
            raise ValueError(f"steps must be a multiple of the protocol's {PROTOCOL_REUSE} steps "
                             f"per batch when a sampled arm runs, got {self.steps}")
        check_int(self.offline_steps, "offline_steps", minimum=1)
        check_positive(self.lr, "lr")
        check_int(self.n, "n", minimum=2)
        check_positive(self.dpo_beta, "dpo_beta")
        check_positive(self.ipo_margin, "ipo_margin")
        check_in_range(self.offline_gap, "offline_gap", 0.0, 1.0, high_open=True)
        check_positive(self.pg_beta, "pg_beta")
        check_int(self.record_every, "record_every", minimum=1)
        check_policy_class(self.policy)
        if self.policy == "mlp" and set(self.arms) & set(_SAMPLED_ARMS):
            raise ValueError("policy='mlp' runs the exact arm only: set arms=('exact',)")
        check_tuple(self.metrics, "metrics", lambda v, name: check_choice(v, name, RUN_METRICS))
        if "reward" not in self.metrics:
            raise ValueError(f"metrics must hold 'reward' (the check reads it), got "
                             f"{self.metrics!r}")

    @classmethod
    def quick(cls) -> PeakConfig:
        return cls(offsets=(-1, 0, 1), steps=900, record_every=30)


# ------------------------------------------------------------------------------------------------
# run

def _sampled_arm(envs, lrs, config: PeakConfig, seed0: int) -> dict:
    """Tajwar's protocol on every env (one instance each): policies at the recorded steps."""
    n, tau = config.n, ipo_beta(config.ipo_margin)
    policy = peak_policy(config.policy)
    rec_off = step_grid(config.offline_steps, 10)
    rec_on = step_grid(config.steps, config.record_every)
    # Tajwar's offline data: 100 states x 10 responses, all 45 pairs per state, |dr| >= 0.2
    datas = [group_pairs(env, env.ref, PROTOCOL_OFFLINE_STATES, n,
                         min_reward_gap=config.offline_gap, seed=seed0 + b)
             for b, env in enumerate(envs)]
    behaviour = [offline_pairs(env, env.ref, labels="deterministic") for env in envs]
    common = dict(seed=seed0, policy=policy, metrics=["reward"], progress=False)
    group = dict(group_size=n)
    out = {}
    for method, obj in (("DPO", objective("sigmoid", beta=config.dpo_beta)),
                        ("IPO", objective("ipo", beta=tau))):
        out[(method, OFFLINE)] = (rec_off, train_many(
            envs, obj, datas, steps=config.offline_steps, lr=lrs[(method, OFFLINE)],
            record=rec_off, **common))
    # offline Best-of-N: one batch of 100 states x 10 draws from pi_ref, its best responses fitted
    # for all 200 steps
    out[("Best-of-N", OFFLINE)] = (rec_off, train_many(
        envs, objective("best_of_n", n=n), behaviour, steps=config.offline_steps,
        lr=lrs[("Best-of-N", OFFLINE)], record=rec_off, batch_size=PROTOCOL_OFFLINE_STATES,
        reuse=config.offline_steps, **common))
    online = dict(steps=config.steps, record=rec_on, batch_size=PROTOCOL_ONLINE_STATES,
                  reuse=PROTOCOL_REUSE, **common)
    specs = {
        ("DPO", ON_POLICY): (objective("online_dpo", beta=config.dpo_beta,
                                       labels="deterministic"), dict(group, pairs="all")),
        ("IPO", ON_POLICY): (objective("online_ipo", beta=tau, labels="deterministic"),
                             dict(group, pairs="all")),
        # -log pi(best of the state's 10 draws): the "sft" loss on each group's best-vs-worst pair
        ("Best-of-N", ON_POLICY): (objective("online_dpo", loss_type="sft",
                                             labels="deterministic"),
                                   dict(group, pairs="best_worst")),
        # REINFORCE with per-state reward normalisation (Tajwar's --normalize_rewards_per_state)
        ("PG", ON_POLICY): (objective("rlhf", beta=config.pg_beta), dict(group, baseline="grpo")),
    }
    for key, (obj, est) in specs.items():
        out[key] = (rec_on, train_many(envs, obj, lr=lrs[key], estimator=est, **online))
    return {key: (rec, np.stack([r.snapshots for r in runs])) for key, (rec, runs) in out.items()}


def _exact_arm(envs, config: PeakConfig, seed: int) -> dict:
    """Exact population gradients, Adam lr ``config.lr``, ``config.steps`` steps for every method."""
    tau = ipo_beta(config.ipo_margin)
    rec = step_grid(config.steps, config.record_every)
    policy = peak_policy(config.policy)
    truncated = [gap_pairs(env, config.offline_gap) for env in envs]
    full = [offline_pairs(env, env.ref, labels="deterministic") for env in envs]
    specs = {
        ("DPO", OFFLINE): (objective("sigmoid", beta=config.dpo_beta), truncated),
        ("IPO", OFFLINE): (objective("ipo", beta=tau), truncated),
        ("Best-of-N", OFFLINE): (objective("best_of_n", n=config.n), full),
        ("DPO", ON_POLICY): (objective("online_dpo", beta=config.dpo_beta,
                                       labels="deterministic"), None),
        ("IPO", ON_POLICY): (objective("online_ipo", beta=tau, labels="deterministic"), None),
        ("PG", ON_POLICY): (objective("rlhf", beta=config.pg_beta), None),
    }
    out = {}
    for key, (obj, datas) in specs.items():
        runs = train_each(envs, obj, datas, steps=config.steps, lr=config.lr, seed=seed,
                          record=rec, policy=policy)
        out[key] = (rec, np.stack([r.snapshots for r in runs]))
    if config.policy == "tabular":
        snaps = train_best_of_n(envs, config.n, steps=config.steps, lr=config.lr, record=rec)
    else:
        bon = objective("best_of_n", n=config.n)
        snaps = np.stack([refresh_train(
            env, lambda pi, env=env: [(1.0, bon, policy_pairs(env, pi, labels="deterministic"))],
            steps=config.steps, lr=config.lr, refresh_every=1, record=rec, policy=policy,
            seed=seed) for env in envs])
    out[("Best-of-N", ON_POLICY)] = (rec, snaps)
    return out


def run(config: PeakConfig, seed: int) -> pd.DataFrame:
    """Reward (and every other metric in ``config.metrics``) against step for the 7 method x regime
    pairs, every arm, centre and instance."""
    k = len(config.offsets)
    frames = []
    for centre in config.peaks:
        peaks = [centre + o for o in config.offsets]
        envs = [peak_env(p) for p in peaks]
        for arm in config.arms:
            if arm == "exact":
                result = _exact_arm(envs, config, seed)
            else:
                lrs = PROTOCOL_LRS if arm == "protocol" else {m: config.lr for m in METHODS}
                result = _sampled_arm(envs, lrs, config, seed * k)
            for (method, regime), (rec, snaps) in result.items():
                for i, (peak, env) in enumerate(zip(peaks, envs)):
                    columns = {"reward": metrics.expected_reward(env, snaps[i])}
                    if "kl" in config.metrics:
                        columns["kl"] = metrics.kl_divergence(env, snaps[i], env.ref)
                    frames += tidy_rows(
                        {"centre": centre, "instance": i, "peak": peak, "arm": arm,
                         "method": method, "regime": regime}, seed, rec, columns)
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------------------------------
# read-outs

def final_rewards(table: pd.DataFrame) -> pd.DataFrame:
    """Final reward (mean over seeds) per centre, instance, arm and method x regime: one row per
    (centre, instance, arm), one column per ``"method, regime"``."""
    rows = table[table["metric"] == "reward"]
    last = rows[rows["step"] == rows.groupby(["centre", "instance", "arm", "method", "regime"])
                ["step"].transform("max")]
    wide = last.assign(key=last["method"] + ", " + last["regime"]).pivot_table(
        index=["centre", "instance", "arm"], columns="key", values="value", aggfunc="mean")
    return wide


def steps_to(table: pd.DataFrame, level: float = REACH) -> pd.DataFrame:
    """First recorded step at which the mean reward reaches ``level`` (``inf`` if never), per centre,
    instance, arm and method x regime (same layout as :func:`final_rewards`)."""
    rows = table[table["metric"] == "reward"]
    out = {}
    for key, group in rows.groupby(["centre", "instance", "arm", "method", "regime"]):
        curve = group.groupby("step")["value"].mean().sort_index()
        out[key] = steps_to_reach(curve, level)
    s = pd.Series(out)
    s.index.names = ["centre", "instance", "arm", "method", "regime"]
    s = s.reset_index(name="steps")
    s["key"] = s["method"] + ", " + s["regime"]
    return s.pivot_table(index=["centre", "instance", "arm"], columns="key", values="steps",
                         aggfunc="first")


def _is_far(centre: float) -> bool:
    env = peak_env(centre)
    return float(env.ref @ env.reward) < _FAR


def _arm_clauses(finals: pd.DataFrame, arm: str, far: list, near: list, paper: bool,
                 suffix: str) -> tuple:
    """The three clauses of the claim on one arm (instances: far x offsets, near x offsets)."""
    clauses = []
    on = [c for c in finals.columns if c.endswith(", " + ON_POLICY)]
    if far:
        rows = finals.xs(arm, level="arm").loc[far]
        bon = rows["Best-of-N, offline"]
        lead = rows[on].min(axis=1) - bon
        clauses.append(clause(
            "far-on-policy" + suffix,
            f"far peaks: every on-policy method (DPO, IPO, Best-of-N, REINFORCE) ends >= {_WIDE} "
            "above offline Best-of-N (maximum likelihood)",
            (lead >= _WIDE).tolist(),
            f"worst on-policy lead over offline Best-of-N: {lead.min():.3f}..{lead.max():.3f}",
            paper=paper))
        contrast = rows[["DPO, offline", "IPO, offline"]].min(axis=1) - bon
        clauses.append(clause(
            "far-contrastive" + suffix,
            f"far peaks: offline DPO and offline IPO (contrastive) end >= {_WIDE} above offline "
            "Best-of-N", (contrast >= _WIDE).tolist(),
            f"min(offline DPO, IPO) - offline Best-of-N: {contrast.min():.3f}..{contrast.max():.3f}"
            f" (offline Best-of-N {bon.min():.3f}..{bon.max():.3f})", paper=paper))
    if near:
        rows = finals.xs(arm, level="arm").loc[near]
        spread = rows.max(axis=1) - rows.min(axis=1)
        clauses.append(clause(
            "near-similar" + suffix,
            f"near peaks: all seven method x regime final rewards within {_SIMILAR} of each other",
            (spread <= _SIMILAR).tolist(),
            f"spread {spread.min():.3f}..{spread.max():.3f}; lowest: "
            f"{rows.min(axis=1).min():.3f} ({rows.mean().idxmin()})", paper=paper))
    return tuple(clauses)


_SUFFIX = {"protocol": "", "lr-0.01": " (lr 0.01 for all)",
           "exact": " (exact population, lr 0.01)"}


def check(table: pd.DataFrame, config: PeakConfig) -> CheckResult:
    """The paper's clauses on the ``protocol`` arm; the same clauses on the ``lr-0.01`` and
    ``exact`` arms as substitutes (``paper=False``). Far peaks (``E_ref r < 0.1``): every on-policy
    method, and offline DPO and IPO, end >= 0.3 ("by a wide margin") above offline Best-of-N.
    Near peaks: all final rewards within 0.1. Effect: mean on-policy final reward minus offline
    Best-of-N's, far peaks, protocol arm (or the first arm run)."""
    finals = final_rewards(table)
    centres = sorted(table["centre"].unique())
    arms = [a for a in ARMS if a in set(table["arm"])]
    far = [c for c in centres if _is_far(c)]
    near = [c for c in centres if not _is_far(c)]
    clauses = ()
    for arm in arms:
        clauses += _arm_clauses(finals, arm, far, near, arm == "protocol", _SUFFIX[arm])
    effect = None
    if far:
        arm = "protocol" if "protocol" in arms else arms[0]
        rows = finals.xs(arm, level="arm").loc[far]
        on = [c for c in finals.columns if c.endswith(", " + ON_POLICY)]
        values = rows[on].mean(axis=1) - rows["Best-of-N, offline"]
        effect = Effect(f"final reward, mean on-policy - offline Best-of-N (far peaks, {arm})",
                        tuple(values))
    mode = "exact+sampled" if "exact" in arms and set(arms) & set(_SAMPLED_ARMS) else (
        "exact" if arms == ["exact"] else "sampled")
    return CheckResult(clauses=clauses, effect=effect, mode=mode)


# ------------------------------------------------------------------------------------------------
# plot and text

def _theory(centre: float, config: PeakConfig) -> dict:
    env = peak_env(centre)
    tau = ipo_beta(config.ipo_margin)
    return {"Best-of-N cap": float(best_of_n_policy(env.ref, env.reward, config.n) @ env.reward),
            "IPO cap": float(ipo_fixed_point(env, gap_pairs(env, config.offline_gap), tau)
                             @ env.reward)}


def plot(table: pd.DataFrame, config: PeakConfig):
    """Reward against step at the central instance of each centre (columns) for every arm (rows);
    colour = method, solid = on-policy, dashed = offline; theory lines: the offline caps (the exact
    Best-of-N and IPO fixed points of Tajwar's offline population) and Adam's speed limit."""
    centres = sorted(table["centre"].unique(), reverse=True)
    arms = [a for a in ARMS if a in set(table["arm"])]
    offsets = list(config.offsets)
    central = offsets.index(0) if 0 in offsets else len(offsets) // 2
    fig, axes = new_figure(ncols=len(centres), nrows=len(arms), width=3.3, height=2.3,
                           sharey=True, sharex=True)
    rows = table[(table["metric"] == "reward") & (table["instance"] == central)]
    for i, arm in enumerate(arms):
        for j, centre in enumerate(centres):
            ax = axes[i, j]
            sub = rows[(rows["arm"] == arm) & (rows["centre"] == centre)]
            peak = float(sub["peak"].iloc[0])
            for method, regime in METHODS:
                curve = sub[(sub["method"] == method) & (sub["regime"] == regime)]
                if curve.empty:
                    continue
                mean = curve.groupby("step")["value"].mean()
                ax.plot(mean.index, mean.values, color=METHOD_COLOURS[method],
                        linestyle="-" if regime == ON_POLICY else "--",
                        label=f"{_LABELS.get(method, method)}, {regime}")
            theory = _theory(peak, config)
            ax.axhline(theory["Best-of-N cap"], color=METHOD_COLOURS["Best-of-N"], linestyle=":",
                       linewidth=1, label="offline Best-of-N cap (exact)")
            ax.axhline(theory["IPO cap"], color=METHOD_COLOURS["IPO"], linestyle=":",
                       linewidth=1, label=f"offline IPO cap (exact, |Δr| ≥ {config.offline_gap:g})")
            steps = np.arange(0, config.steps + 1, max(config.steps // 150, 1))
            lr = config.lr if arm != "protocol" else max(PROTOCOL_LRS.values())
            ax.plot(steps, sign_descent_limit(peak_env(peak), lr * steps), color="0.4",
                    linewidth=0.8, linestyle="-.",
                    label="Adam speed limit (every logit ±lr per step)")
            ax.set_title(f"reward peak at arm {peak:g}", fontsize=8.5)
            if j == 0:
                ax.set_ylabel(f"{_ARM_TITLES[arm]}\n$E_\\pi r$", fontsize=8)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlim(0, config.steps)
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))
            if i == len(arms) - 1:
                ax.set_xlabel("gradient step (Adam)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    # Three columns (offline | on-policy | theory): pad the shorter ones with blank entries,
    # since the legend fills column by column.
    blank = matplotlib.lines.Line2D([], [], alpha=0.0)
    groups = [[k for k, lab in enumerate(labels) if lab.endswith(f", {regime}")]
              for regime in (OFFLINE, ON_POLICY)]
    groups.append([k for k in range(len(labels)) if k not in groups[0] + groups[1]])
    depth = max(len(g) for g in groups)
    order = [k for g in groups for k in g + [None] * (depth - len(g))]
    fig.legend([blank if k is None else handles[k] for k in order],
               ["" if k is None else labels[k] for k in order],
               loc="outside lower center", ncol=3, frameon=False, fontsize=7)
    return fig


def summary(table: pd.DataFrame, config: PeakConfig) -> str:
    """Markdown: final reward and steps to reward 0.9 of every method at the central instance of
    each centre, per arm."""
    finals = final_rewards(table)
    reach = steps_to(table)
    offsets = list(config.offsets)
    central = offsets.index(0) if 0 in offsets else len(offsets) // 2
    cols = [f"{m}, {r}" for m, r in METHODS]
    head = "| peak | arm | " + " | ".join(
        f"{_LABELS.get(m, m)} {'on' if r == ON_POLICY else 'off'}" for m, r in METHODS) + " |"
    lines = [f"Final reward (steps to reward {REACH:g}) at the central instance:", "", head,
             "|" + "---|" * (len(cols) + 2)]
    for centre in sorted(table["centre"].unique(), reverse=True):
        for arm in [a for a in ARMS if a in set(table["arm"])]:
            key = (centre, central, arm)
            cells = []
            for c in cols:
                steps = reach.loc[key, c]
                shown = "never" if not np.isfinite(steps) else f"{steps:.0f}"
                cells.append(f"{finals.loc[key, c]:.3f} ({shown})")
            lines.append(f"| {centre + offsets[central]:g} | {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


EXPERIMENT = register(Experiment(
    id="tajwar-peak", figure="F1",
    title="On-policy sampling wins when the optimum is far from the reference (100-arm bandit)",
    paper=PAPER + ", §4 didactic bandit", arxiv=ARXIV,
    claim=("With the reward peak far from pi_ref's mass (arm 70), on-policy methods (DPO, IPO, "
           "Best-of-N, REINFORCE) and contrastive methods (DPO, IPO) beat offline maximum "
           "likelihood (Best-of-N) by a wide margin; with the peak inside pi_ref's mass (arm 20) "
           "all methods perform similarly."),
    differences=(
        "Instance family: 9 instances, peak offsets -4..4 around each centre (far: arms 66-74, "
        "E_ref r 0.036-0.042; near: arms 16-24, E_ref r 0.33-0.40), each with its own sampling "
        "seed. A tabular softmax started at pi_ref (Tajwar et al.: an MLP SFT'd to a sampled "
        "histogram). Three arms. (1) 'protocol', the paper's clauses: Tajwar's protocol sampled "
        "with the core's sampled mode - offline DPO/IPO on cs.group_pairs(env, pi_ref, 100, 10, "
        "min_reward_gap=0.2) (all 45 pairs of each state's 10 draws, deterministic labels, "
        "pairs with |dr| < 0.2 dropped), offline Best-of-N on one batch of 100 states x 10 draws, "
        "both for 200 steps; on-policy 100 batches of 10 states x 10 draws from pi_t, 15 steps "
        "each (DPO, IPO: all 45 pairs; Best-of-N: -log pi of each state's best draw; REINFORCE: "
        "per-state normalised rewards, the GRPO baseline, with a 1e-3 KL in the reward since the "
        "core needs beta > 0); DPO beta 0.01, IPO margin 10 (TRL beta 0.05); Adam at their "
        "learning rates (offline IPO 0.003, on-policy IPO 0.01, offline Best-of-N 0.01, "
        "on-policy Best-of-N 0.001, REINFORCE 0.001; their bandit scripts run no DPO, so DPO "
        "takes IPO's). Those rates were tuned for an MLP, in which one step moves many arms' "
        "logits; per-logit Adam moves each tabular logit by about lr per step, so at lr 0.001 "
        "on-policy Best-of-N and REINFORCE can move each logit by only 1.5 nats in 1500 steps "
        "and offline methods by 0.6-2 nats in 200. (2) 'lr-0.01' (substitute): the same sampled "
        "protocol with lr 0.01 for every method. (3) 'exact' (substitute): exact population "
        "gradients - offline DPO/IPO on the truncated pi_ref x pi_ref population (the limit of "
        "the protocol's data), offline Best-of-N on the exact best-of-10 law of pi_ref, on-policy "
        "objectives refreshed from pi_t every step - Adam lr 0.01, 1500 steps for every method. "
        "Theory lines: the exact offline caps (offline Best-of-N's target q_10(pi_ref) has reward "
        "0.313 at peak 70; offline IPO's fixed point on the truncated population, solved from its "
        "Laplacian system, 0.716 - the threshold raises it from 0.50 on the full population, "
        "because the pairs among near-zero-reward arms that pull towards pi_ref are dropped) and "
        "Adam's speed limit: the largest reward a tabular softmax reaches when every logit moves "
        "by lr per step (bang-bang over the top-reward sets), which puts steps-to-0.9 at >= 330 "
        "for lr 0.01 at peak 70. Claim C11's bound |dL/dtheta_z| <= 2 beta mu(z) limits offline "
        "DPO's rate under gradient descent; under Adam it only sets the mix of terms within a "
        "logit's step, and the speed limit binds instead. The sampled numbers are in the summary "
        "table below the figure."),
    config=PeakConfig, run=run, plot=plot, check=check, seeds=1, summary=summary,
    expected_verdict=DISAGREES, expected_failing=("far-on-policy", "far-contrastive",
                                                  "near-similar")))
