"""A2 ``capacity-findings`` — which bandit findings survive function approximation?

Six findings of the bandit figures, each re-run with three policy classes through the experiments'
own ``policy`` config field: the **tabular** softmax (the figures' policy), a **log-linear** policy
``pi ∝ pi_ref exp(phi . w)`` (features suited to the arms: bumps over the arm index for Tajwar's
ordered arms, random directions for Tang's, the OOD construction for Xu's, similar features for
Razin's) and Tajwar et al.'s bandit **MLP** (arXiv:2404.14367: 100-dim context input,
Linear-LayerNorm-ReLU 50, 256, 256, K logits; :class:`coverage_sim.mlp.MLPPolicy`, SFT'd to
``pi_ref``). The selection covers the three ways a parameterisation can matter:

- optimiser geometry -- **F1** (on-policy vs offline at peak 70, ``tajwar-peak``) and **F3**
  (push-down of the worst sample, ``tajwar-negative-gradient``), the two effects per-logit Adam
  pins or erases on the table;
- the population optimum -- **F5** (DPO vs IPO on Azar's D1, ``azar-ipo-vs-dpo``) and **F6**
  (Tang's online/offline gap from finite offline data, ``tang-pareto``), where capacity decides
  whether the optimum is reachable and whether offline over-fits;
- sharing across responses -- **F11** (DPO's drift to an unseen response, ``xu-ood``) and **F15**
  (likelihood displacement in a single preference pair, ``razin-displacement``), which the tabular
  policy cannot show by construction.

Each finding is measured by an effect size on its own scale and judged ``holds`` / ``partly`` /
``fails`` by the rule in :data:`FINDINGS` (the bandit figure's criterion where it has one);
``n/a`` where a class adds nothing (a log-linear policy with full-rank features on Azar's 3 arms
is the tabular one). Exact runs of the tabular and log-linear classes are seed-free and run once
(seed 0); the MLP's initialisation and Tang's offline data depend on the seed, so their effects
are seed means with 95% confidence intervals. :func:`capacity_table` is the finding x class table
that ``reproduce`` writes into ``figures/README.md``. The check (:func:`check`) asks each finding
of the MLP, Tajwar et al.'s own bandit network, as the paper's claim, seed by seed, and reports
the tabular and log-linear cells beside it. (The figure id is A2, a project experiment like the
gap atlas A1; C1-C17 name the claims.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from coverage_sim._validation import check_choice, check_int
from coverage_sim.experiments.azar.ipo_vs_dpo import AzarConfig, run as run_azar
from coverage_sim.experiments.common import HAVE_TORCH, seed_clause
from coverage_sim.experiments.policy_classes import POLICY_CLASSES, check_policy_class
from coverage_sim.experiments.razin.displacement import RazinConfig, run as run_razin
from coverage_sim.experiments.registry import Experiment, check_tuple, mean_ci, register
from coverage_sim.experiments.tajwar.negative_gradient import (NegativeGradientConfig,
                                                               run as run_negative_gradient)
from coverage_sim.experiments.tajwar.peak import PeakConfig, run as run_peak
from coverage_sim.experiments.tajwar.setting import OFFLINE, ON_POLICY
from coverage_sim.experiments.tang.pareto import TangParetoConfig, run as run_pareto
from coverage_sim.experiments.tang.setting import matched_wins
from coverage_sim.experiments.verdict import PARTLY, CheckResult, clause
from coverage_sim.experiments.xu.ood import XuConfig, run as run_xu
from coverage_sim.instances import AZAR_ARMS
from coverage_sim.plotting import new_figure

__all__ = ["EXPERIMENT", "CapacityConfig", "FINDINGS", "capacity_table", "check", "plot", "run",
           "seed_holds", "summary"]

#: finding id -> (what is measured, effect metric, rule text)
FINDINGS = {
    "F1": ("peak 70: on-policy ≫ offline (tajwar-peak)", "lead",
           "holds: worst on-policy final reward ≥ 0.9 and ≥ 0.3 above the best offline one; "
           "partly: on-policy ahead; effect: the lead"),
    "F3": ("push-down speeds up on-policy Best-of-N, Adam (tajwar-negative-gradient)", "auc_gain",
           "holds: time-averaged mass near the optimum ≥ 0.01 higher with push-down and never "
           "0.01 lower; partly: higher on average; effect: the time-averaged gain"),
    "F5": ("DPO → one-hot, IPO → gaps 1/(3τ) on D1 (azar-ipo-vs-dpo)", "ipo_error",
           "holds: DPO's π(a) > 0.99 and IPO's logit gaps within 1e-3 of 1/(3τ); partly: one of "
           "the two; effect: IPO's largest gap error"),
    "F6": ("online IPO above offline at matched KL (tang-pareto)", "gap",
           "holds: mean win-rate gap over the common KL range ≥ 0.01 and above 0 in every seed; "
           "partly: mean above 0; effect: the gap"),
    "F11": ("DPO drifts to the unseen y3, RLHF does not (xu-ood)", "pi_y3",
            "holds: DPO's final π(y3) > 0.5 in every seed; partly: in some seeds; effect: DPO's "
            "final π(y3)"),
    "F15": ("displacement: log π(y+) falls in a single pair y+ ≻ y− (razin-displacement)",
            "displacement",
            "holds: min over training of log π(y+) − log π_0(y+) < −0.01 nats in every seed; "
            "partly: in some seeds; effect: that minimum"),
}
#: finding -> policy classes that make sense for it
_CLASSES = {"F1": POLICY_CLASSES, "F3": POLICY_CLASSES, "F5": ("tabular", "mlp"),
            "F6": POLICY_CLASSES, "F11": POLICY_CLASSES, "F15": POLICY_CLASSES}
#: findings whose tabular and log-linear runs depend on the seed (Tang's offline data)
_SEEDED = ("F6",)


@dataclass(frozen=True)
class CapacityConfig:
    """Config of ``capacity-findings``: which findings and classes, and the (shortened) runs.

    Attributes:
      findings: subset of :data:`FINDINGS`.
      policies: subset of ``("tabular", "loglinear", "mlp")``.
      peak_steps: Adam steps of F1 (``tajwar-peak``'s quick length).
      push_steps: Adam steps of F3 (lr 0.01, Tajwar's optimiser, for every class).
      azar_steps: gradient steps of F5 (tau 0.1; the figure's gradient descent, lr 0.3).
      tang_steps: Adam steps of F6 (taus 0.01, 0.1, 1).
      xu_steps: steps of F11.
      razin_steps: steps of F15.
    """

    findings: tuple[str, ...] = tuple(FINDINGS)
    policies: tuple[str, ...] = POLICY_CLASSES
    peak_steps: int = 800
    push_steps: int = 200
    azar_steps: int = 1000
    tang_steps: int = 400
    xu_steps: int = 600
    razin_steps: int = 600

    def __post_init__(self):
        check_tuple(self.findings, "findings", lambda v, name: check_choice(v, name, FINDINGS))
        check_tuple(self.policies, "policies", check_policy_class)
        for name in ("peak_steps", "push_steps", "azar_steps", "tang_steps", "xu_steps",
                     "razin_steps"):
            check_int(getattr(self, name), name, minimum=10)

    @classmethod
    def quick(cls) -> CapacityConfig:
        """Every class, shorter runs (the MLP's F1 at 800 steps is most of a full seed's time).
        The MLP findings come out as in the full run; the tabular column does not reproduce the
        figures at these lengths (F1, F6 need the full steps) and is pinned by the tests at the
        full lengths."""
        return cls(peak_steps=150, push_steps=100, azar_steps=700, tang_steps=100, xu_steps=150,
                   razin_steps=150)


# ------------------------------------------------------------------------------------------------
# one finding, one class, one seed -> effect metrics

def _final(table, metric, **where) -> float:
    rows = table[table["metric"] == metric]
    for k, v in where.items():
        rows = rows[rows[k] == v]
    return float(rows[rows["step"] == rows["step"].max()]["value"].mean())


def _f1(kind, seed, config):
    cfg = PeakConfig(peaks=(70.0,), offsets=(0,), arms=("exact",), steps=config.peak_steps,
                     record_every=max(config.peak_steps // 20, 1), policy=kind, dpo_beta=0.1,
                     offline_gap=0.0)
    table = run_peak(cfg, seed)
    final = {(m, r): _final(table, "reward", method=m, regime=r)
             for m, r in {(m, r) for m, r in zip(table["method"], table["regime"])}}
    on = min(v for (m, r), v in final.items() if r == ON_POLICY)
    off = max(v for (m, r), v in final.items() if r == OFFLINE)
    return {"lead": on - off, "on_min": on, "off_max": off}


def _f3(kind, seed, config):
    cfg = NegativeGradientConfig(peaks=(70.0,), offsets=(0,), variants=("large-c",),
                                 regimes=(ON_POLICY,), steps=config.push_steps, adam_lr=0.01,
                                 large_push_down=0.5, policy=kind)
    table = run_negative_gradient(cfg, seed)
    mass = table[table["metric"] == "mass_near_opt"]
    curves = {c: rows.groupby("step")["value"].mean() for c, rows in mass.groupby("push_down")}
    plain, pushed = curves[0.0], curves[0.5]
    steps = plain.index.to_numpy(dtype=float)
    auc = {c: float(np.trapezoid(v.to_numpy(), steps) / steps[-1]) for c, v in curves.items()}
    return {"auc_gain": auc[0.5] - auc[0.0], "min_diff": float((pushed - plain).min())}


def _f5(kind, seed, config):
    cfg = AzarConfig(taus=(0.1,), steps=config.azar_steps, policy=kind)
    table = run_azar(cfg, seed)
    table = table[table["optimizer"] == "gd"]  # the exact fixed point (Adam oscillates about it)
    ipo = table[table["loss_type"] == "IPO"]
    last = ipo[ipo["step"] == ipo["step"].max()].set_index("metric")["value"]
    gaps = -np.diff(np.log([last[f"pi({a})"] for a in AZAR_ARMS]))
    return {"ipo_error": float(np.abs(gaps - 1.0 / (3 * 0.1)).max()),
            "dpo_pi_a": _final(table[table["loss_type"] == "DPO"], "pi(a)")}


def _f6(kind, seed, config):
    cfg = TangParetoConfig(taus=(0.01, 0.1, 1.0), steps=config.tang_steps, record_points=3,
                           instances=1, batch_size=None, policy=kind)
    wins = matched_wins(run_pareto(cfg, seed), ["online", "offline"]).iloc[0]
    return {"gap": float(wins["online"] - wins["offline"]), "kl_max": float(wins["kl_high"])}


def _f11(kind, seed, config):
    cfg = XuConfig(steps=config.xu_steps, record_points=10, instances=1,
                   policy="mlp" if kind == "mlp" else "loglinear")
    table = run_xu(cfg, seed)
    label = {"tabular": "tabular", "loglinear": "log-linear", "mlp": "MLP"}[kind]
    rlhf = "RLHF (log-linear)" if kind == "tabular" else f"RLHF ({label})"
    return {"pi_y3": _final(table, "pi(y3)", method=f"DPO ({label})"),
            "pi_y3_rlhf": _final(table, "pi(y3)", method=rlhf)}


def _f15(kind, seed, config):
    cfg = RazinConfig(steps=config.razin_steps, record_points=30, instances=1,
                      policy="mlp" if kind == "mlp" else "tabular")
    table = run_razin(cfg, seed)
    setting = {"tabular": "tabular-single", "loglinear": "loglinear-similar",
               "mlp": "mlp-single"}[kind]
    rows = table[(table["setting"] == setting) & (table["metric"] == "logp_target")]
    curve = rows.groupby("step")["value"].mean()
    return {"displacement": float((curve - curve.iloc[0]).min())}


_RUNNERS = {"F1": _f1, "F3": _f3, "F5": _f5, "F6": _f6, "F11": _f11, "F15": _f15}


def run(config: CapacityConfig, seed: int) -> pd.DataFrame:
    """Effect metrics of every (finding, policy class) pair that this seed runs: seed 0 runs
    every pair, other seeds only the seed-dependent ones (the MLP everywhere, and F6)."""
    frames = []
    for finding in config.findings:
        for kind in config.policies:
            if kind not in _CLASSES[finding]:
                continue
            if seed > 0 and kind != "mlp" and finding not in _SEEDED:
                continue
            values = _RUNNERS[finding](kind, seed, config)
            frames.append(pd.DataFrame({"finding": finding, "policy": kind, "seed": seed,
                                        "step": 0, "metric": list(values),
                                        "value": [float(v) for v in values.values()]}))
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------------------------------
# verdicts

def _values(table, finding, kind, metric) -> np.ndarray:
    rows = table[(table["finding"] == finding) & (table["policy"] == kind)
                 & (table["metric"] == metric)]
    return rows.sort_values("seed")["value"].to_numpy()


def _verdict(table, finding, kind) -> tuple[str, np.ndarray]:
    """``(holds | partly | fails, effect values per seed)``."""
    v = lambda m: _values(table, finding, kind, m)  # noqa: E731
    effect = v(FINDINGS[finding][1])
    if finding == "F1":
        hold = effect.mean() >= 0.3 and v("on_min").mean() >= 0.9
        part = effect.mean() > 0
    elif finding == "F3":
        hold = effect.mean() >= 0.01 and v("min_diff").min() >= -0.01
        part = effect.mean() > 0
    elif finding == "F5":
        dpo, ipo = v("dpo_pi_a").min() > 0.99, effect.max() < 1e-3
        hold, part = dpo and ipo, dpo or ipo
    elif finding == "F6":
        hold = effect.mean() >= 0.01 and (effect > 0).all()
        part = effect.mean() > 0
    elif finding == "F11":
        drift = effect > 0.5
        hold, part = drift.all(), drift.any()
    else:
        displaced = effect < -0.01
        hold, part = displaced.all(), displaced.any()
    return ("holds" if hold else "partly" if part else "fails"), effect


def _cell(verdict, effect) -> str:
    if effect.size == 1:
        return f"{verdict} ({effect[0]:+.3g})"
    mean, lo, hi = mean_ci(effect)
    return f"{verdict} ({mean:+.3g} [{lo:+.3g}, {hi:+.3g}], {effect.size} seeds)"


def capacity_table(table: pd.DataFrame) -> pd.DataFrame:
    """Finding (rows) x policy class (columns): verdict and effect size (seed mean with 95% CI
    where seeded; ``n/a`` where the class was not run)."""
    out = {}
    for finding in FINDINGS:
        if finding not in set(table["finding"]):
            continue
        row = {}
        for kind in POLICY_CLASSES:
            if not len(_values(table, finding, kind, FINDINGS[finding][1])):
                row[kind] = "n/a"
                continue
            row[kind] = _cell(*_verdict(table, finding, kind))
        out[f"{finding}: {FINDINGS[finding][0]}"] = row
    return pd.DataFrame(out).T[list(POLICY_CLASSES)]


def summary(table: pd.DataFrame, config: CapacityConfig) -> str:
    """The finding x policy-class table as markdown, with each finding's rule."""
    cap = capacity_table(table)
    lines = ["| finding | " + " | ".join(cap.columns) + " |",
             "|---" * (len(cap.columns) + 1) + "|"]
    lines += [f"| {idx} | " + " | ".join(row) + " |" for idx, row in cap.iterrows()]
    lines += ["", "Rules (effect sizes in brackets: seed mean [95% CI] where the run depends on "
                  "the seed):", ""]
    lines += [f"- {f}: {FINDINGS[f][2]}." for f in FINDINGS if f in set(table["finding"])]
    return "\n".join(lines)


#: effect metric -> its name on the figure (panel titles)
_EFFECT_LABELS = {"lead": "on-policy lead", "auc_gain": "push-down gain",
                  "ipo_error": "IPO gap error", "gap": "win-rate gap",
                  "pi_y3": r"DPO's $\pi(y_3)$", "displacement": r"min $\Delta\log\pi(y^+)$"}


def _display_exponent(values: np.ndarray) -> int:
    """Power of ten to divide a panel's values by, so that its tick labels need no offset text
    (matplotlib's own threshold: ``|value| < 1e-4`` or ``>= 1e5``); 0 for ordinary scales."""
    finite = np.abs(values[np.isfinite(values)])
    largest = finite.max() if finite.size else 0.0
    if largest == 0.0 or 1e-4 <= largest < 1e5:
        return 0
    return int(np.floor(np.log10(largest)))


def plot(table: pd.DataFrame, config: CapacityConfig):
    """One panel per finding: the effect per policy class (seeds as dots, mean with 95% CI), with
    the verdict above each class."""
    findings = [f for f in FINDINGS if f in set(table["finding"])]
    ncols = 3
    fig, axes = new_figure(ncols=ncols, nrows=int(np.ceil(len(findings) / ncols)), width=2.7,
                           height=2.4)
    colours = {"holds": "C2", "partly": "C1", "fails": "C3"}
    for index, (ax, finding) in enumerate(zip(axes.ravel(), findings)):
        metric = FINDINGS[finding][1]
        values = {kind: _values(table, finding, kind, metric) for kind in POLICY_CLASSES}
        # A tiny scale (F5's errors ~1e-16) goes into the y-label instead of an offset text,
        # which matplotlib would draw over the verdicts above the panel.
        exponent = _display_exponent(np.concatenate(list(values.values())))
        scale = 10.0 ** -exponent
        for i, kind in enumerate(POLICY_CLASSES):
            vals = values[kind] * scale
            if not len(vals):
                ax.text(i, 0.5, "n/a", transform=ax.get_xaxis_transform(), ha="center",
                        va="center", fontsize=7, color="0.5",
                        bbox=dict(facecolor="white", edgecolor="none", pad=1.5), zorder=4)
                continue
            verdict, effect = _verdict(table, finding, kind)
            ax.scatter(np.full(vals.size, i), vals, s=8, color=colours[verdict], zorder=2)
            mean, lo, hi = mean_ci(vals)
            if np.isfinite(lo):
                ax.errorbar(i, mean, yerr=[[mean - lo], [hi - mean]], fmt="_", color="k",
                            capsize=3, zorder=3)
            ax.annotate(verdict, (i, 1.0), xycoords=("data", "axes fraction"), ha="center",
                        va="bottom", fontsize=6.5, color=colours[verdict])
        ax.axhline(0.0, color="k", linewidth=0.6)
        ax.set_xticks(range(len(POLICY_CLASSES)), ["tabular", "log-linear", "MLP"], fontsize=7)
        ax.set_xlim(-0.5, len(POLICY_CLASSES) - 0.5)
        ax.tick_params(axis="y", labelsize=7)
        if exponent:
            ax.set_ylabel(rf"effect ($\times 10^{{{exponent}}}$)", fontsize=8)
        elif index % ncols == 0:
            ax.set_ylabel("effect", fontsize=8)
        ax.set_title(f"{finding}: {_EFFECT_LABELS.get(metric, metric)}", fontsize=8, pad=10)
    for ax in axes.ravel()[len(findings):]:
        ax.set_visible(False)
    return fig


#: The per-seed form of each finding's "holds" rule (:data:`FINDINGS`), as the clauses state it.
_SEED_RULES = {"F1": "on-policy final reward >= 0.9 and >= 0.3 above the best offline one",
               "F3": "push-down's time-averaged mass near the optimum >= 0.01 higher and never "
                     "0.01 lower",
               "F5": "DPO's pi(a) > 0.99 and IPO's logit gaps within 1e-3 of 1/(3 tau)",
               "F6": "online IPO's win rate >= 0.01 above offline IPO's over the common KL range",
               "F11": "DPO's final pi(y3) > 0.5",
               "F15": "log pi(y+) falls below its start by more than 0.01 nats"}


def seed_holds(table: pd.DataFrame, finding: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """``(effect per seed, whether the finding holds in that seed)`` for one class: the
    :data:`FINDINGS` rule applied to each seed on its own (seeds in order)."""
    v = lambda m: _values(table, finding, kind, m)  # noqa: E731
    effect = v(FINDINGS[finding][1])
    if finding == "F1":
        ok = (effect >= 0.3) & (v("on_min") >= 0.9)
    elif finding == "F3":
        ok = (effect >= 0.01) & (v("min_diff") >= -0.01)
    elif finding == "F5":
        ok = (v("dpo_pi_a") > 0.99) & (effect < 1e-3)
    elif finding == "F6":
        ok = effect >= 0.01
    elif finding == "F11":
        ok = effect > 0.5
    else:
        ok = effect < -0.01
    return effect, ok


def check(table: pd.DataFrame, config: CapacityConfig) -> CheckResult:
    """Which findings survive function approximation, one clause per (finding, class), evaluated
    on each seed of the class's runs (each clause's detail gives the seed mean with its 95% CI):

    - paper clauses, named by the finding (``"F1"``, ...): the finding, as its paper states it,
      holds with Tajwar et al.'s bandit MLP (the network their bandit used; the papers' claims are
      about neural policies or about the objectives themselves);
    - ``paper=False``: the same rule with the tabular and log-linear policies (``"F1-tabular"``,
      ``"F1-loglinear"``, ...); the tabular column is the bandit figures' own setting.

    Without the MLP in the table the paper clauses are not assessed (each fails, saying so). No
    effect size: the findings have no common scale (each clause's detail gives its own).
    """
    present = set(table["policy"])
    clauses = []
    for finding in config.findings:
        statement = f"{FINDINGS[finding][0]}, {{kind}} policy: {_SEED_RULES[finding]}"
        if "mlp" not in present:
            clauses.append(clause(finding, statement.format(kind="mlp"), False,
                                  "not assessed: the MLP class was not run"))
        for kind in sorted(POLICY_CLASSES, key=lambda k: k != "mlp"):   # the paper's first
            if kind not in present or not len(_values(table, finding, kind,
                                                      FINDINGS[finding][1])):
                continue
            effect, ok = seed_holds(table, finding, kind)
            paper = kind == "mlp"
            clauses.append(seed_clause(finding if paper else f"{finding}-{kind}",
                                       statement.format(kind=kind), effect, ok, paper=paper,
                                       what=FINDINGS[finding][1]))
    return CheckResult(clauses=tuple(clauses), effect=None, mode="exact")


if HAVE_TORCH:  # the MLP class needs torch
    EXPERIMENT = register(Experiment(
        id="capacity-findings", figure="A2",
        title="Capacity: which bandit findings hold for tabular, log-linear and MLP policies",
        paper="Tajwar et al. 2024 (network), with the findings of Tajwar, Azar, Tang, Xu and Razin",
        arxiv="2404.14367",
        claim=("The bandit findings are statements about preference-optimisation objectives; a "
               "finding that depends on the tabular parameterisation should change with the policy "
               "class."),
        differences=(
            "Each finding runs through its bandit experiment's own run function with the "
            "experiment's policy config field, exact population gradients, shortened (F1 800 "
            "Adam steps at peak 70 only; F3 on-policy at peak 70, Adam lr 0.01 for every class, "
            "200 steps; F5 tau 0.1, 1000 GD steps; F6 taus 0.01, 0.1, 1, 400 steps, no n = "
            "infinity reference; F11 600 steps; F15 600 GD steps). Log-linear features: 20 "
            "Gaussian bumps over the arm index (Tajwar's 100 ordered arms), 20 random directions "
            "(Tang's 100 unordered arms), the OOD construction phi(y3) = phi(y1) - phi(y2) (Xu), "
            "similar features (Razin). The MLP is Tajwar's (109,698 parameters at K = 100), "
            "float64, Xavier init with gain 1e-2, SFT'd to pi_ref by 100 Adam steps on the "
            "reverse KL (their run_sft; residual KL ~2e-6 on their bandit); the objectives' "
            "reference stays the exact pi_ref, as in their bandit code. Tabular and log-linear "
            "runs are exact and seed-free (one run; F6's offline data depend on the seed: 3), the "
            "MLP runs 3 seeds. What changes with the class: (F1) with the MLP, offline DPO/IPO "
            "on the exact pi_ref pairs also reach reward 1.000 at peak 70 (tabular offline best "
            "0.307, log-linear 0.438), so the on-policy lead vanishes: the tabular gap is the "
            "per-logit weight mu(z) of the offline gradient, and a shared network moves the "
            "unsampled arms with the sampled ones. (F3) the push-down does not help on-policy "
            "Best-of-N under Adam for any class (tabular -0.011, log-linear +0.005, MLP -0.033 in "
            "time-averaged mass near the optimum); the bandit figure shows it with plain gradient "
            "descent on the table. (F5) holds for the MLP too (3 arms are within its reach). (F6) "
            "the online/offline gap holds for all three (tabular +0.044, log-linear +0.179, MLP "
            "+0.065, every seed positive). (F11, F15) the impossibilities of the table are "
            "not automatic for a network: the MLP, like the table, keeps pi(y3) at 0 under DPO "
            "and never displaces y+ in a single pair, while the log-linear constructions built "
            "for them do (pi(y3) = 1.000, log pi(y+) falls 18.6 nats): drift and displacement "
            "need features aligned with the data's direction, not just shared parameters. The "
            "check's paper clauses are the findings with Tajwar's MLP, per seed: F5 and F6 hold "
            "(3 of 3 seeds), F1 (lead -0.00002 [-0.00009, +0.00004]), F3, F11 and F15 do not (0 "
            "of 3): verdict partly, pinned; the tabular and log-linear cells are reported beside "
            "them (the tabular column reproduces the bandit figures: F1, F5, F6 hold; F3 under "
            "Adam, F11 and F15 do not). The quick config runs every class with shorter runs "
            "(F1 150 steps, F3 100, F5 700, F6 100, F11 and F15 150): the MLP clauses come out "
            "as in the full run, the tabular column does not (F1 and F6 need the full length)."),
        config=CapacityConfig, run=run, plot=plot, check=check, seeds=3, summary=summary,
        expected_verdict=PARTLY, expected_failing=("F1", "F3", "F11", "F15")))
