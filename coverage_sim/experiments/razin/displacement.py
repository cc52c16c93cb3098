"""F15 — Razin et al. 2024 (arXiv:2410.08847): likelihood displacement in DPO.

During DPO the log-probability of the *preferred* response ``log pi(y+)`` can decrease, and the
mass can move to responses the data never shows — in the paper's single-token experiments even to
responses of opposite meaning. Their explanation: the gradient step on ``y+ > y-`` changes
``log pi(y+)`` through the similarity of the two responses' hidden embeddings (the CHES score
``<h(y-), h(y+)> - ||h(y+)||^2``); similar embeddings displace ``y+``.

Three exact-gradient settings (claim C12; gradient descent, so that the flow formulas apply step
by step):

1. **tabular, single pair** ``y+ > y-`` among K responses:
   ``d log pi(y+) ∝ 1 - pi(y+) + pi(y-) > 0``: no displacement, ever;
2. **tabular, overlapping pairs** ``a > b`` and ``b > c`` (equal weights) with
   ``pi_ref(a) > pi_ref(c)``: the two pairs push ``b``'s logit up and down by the same amount, and
   ``a``'s logit rises by as much as ``c``'s falls, so the normaliser grows because
   ``pi(a) > pi(c)``: ``d log pi(b) = -(...)(pi_a - pi_c) < 0``, the *chosen* ``b`` is displaced;
3. **log-linear, similar features** ``pi ∝ pi_ref exp(w . phi)`` with ``phi(y-)`` close to
   ``phi(y+)`` (CHES > 0): ``d log pi(y+) ∝ <phi(y+) - E_pi phi, phi(y+) - phi(y-)> < 0`` and the
   mass goes to ``y_opp`` with ``phi(y_opp) = -phi(y+)``. As a control, the same setting with a
   dissimilar ``phi(y-)`` (CHES < 0) is not displaced.

Instances: each setting is a family, and the check evaluates every clause on every member: random
references ``Dirichlet(1, ..., 1)`` for the tabular single pair; random references with
``pi_ref(a) > pi_ref(c)`` (the premise, imposed by ordering the draw) for the overlapping pairs; and
for the log-linear settings the configured features with ``phi(y-)`` and ``phi(o)`` perturbed by
``feature_noise * N(0, 1)`` entrywise, all scaled by a random factor in [0.5, 1.5] (``y_opp`` stays
``-phi(y+)``). Instance 0 is the configured setting itself.

Convention: DPO is ``-log sigma(beta h)`` (TRL ``sigmoid``); all data are a single deterministic
comparison per pair, as in the paper's single-example experiments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from coverage_sim._validation import (
    as_float_array,
    check_distribution,
    check_finite,
    check_int,
    check_positive,
)
from coverage_sim.data import pairs_from_list
from coverage_sim.env import Bandit
from coverage_sim.experiments.policy_classes import check_policy_class, make_policy, train_each
from coverage_sim.experiments.registry import Experiment, register
from coverage_sim.experiments.verdict import CheckResult, Effect, clause
from coverage_sim.objectives import objective
from coverage_sim.plotting import new_figure
from coverage_sim.policies import LogLinear
from coverage_sim.train import train_many

__all__ = ["SETTINGS", "RazinConfig", "check", "ches", "loglinear_rate", "plot", "run",
           "settings"]

#: Settings in plotting order: (id, title).
SETTINGS = (
    ("tabular-single", "tabular, single pair y+ ≻ y−"),
    ("tabular-overlap", "tabular, a ≻ b and b ≻ c (y+ = b)"),
    ("loglinear-similar", "log-linear, similar φ(y+), φ(y−)"),
    ("loglinear-dissimilar", "log-linear, dissimilar φ(y−) (control)"),
)


def settings(policy: str = "tabular") -> tuple[tuple[str, str], ...]:
    """The settings of a run with ``policy``: the two pair settings use that policy class
    (``"<policy>-single"``, ``"<policy>-overlap"``), the log-linear ones are fixed."""
    if policy == "tabular":
        return SETTINGS
    return ((f"{policy}-single", f"{policy}, single pair y+ ≻ y−"),
            (f"{policy}-overlap", f"{policy}, a ≻ b and b ≻ c (y+ = b)")) + SETTINGS[2:]


@dataclass(frozen=True)
class RazinConfig:
    """Config of F15.

    Attributes:
      instances: members of each setting's family (instance 0 is the configured setting).
      feature_noise: standard deviation of the perturbation of ``phi(y-)`` and ``phi(o)`` in the
        log-linear families.
      beta: DPO's beta.
      steps: gradient-descent steps.
      lr: gradient-descent step size.
      record_points: number of log-spaced record steps.
      single_ref: reference of the tabular single-pair setting; responses ``(y+, y-, o1, o2, ...)``.
      overlap_ref: reference of ``(a, b, c)`` in the overlapping-pairs setting (needs
        ``pi_ref(a) > pi_ref(c)``).
      phi_plus: feature of ``y+`` in the log-linear settings.
      phi_similar: feature of ``y-`` in the similar setting (CHES > 0).
      phi_dissimilar: feature of ``y-`` in the control (CHES < 0).
      phi_other: feature of the fourth response ``o`` (``y_opp`` has ``-phi_plus``).
      policy: policy class of the two pair settings: ``"tabular"`` or ``"mlp"`` (Tajwar et al.'s
        bandit MLP, arXiv:2404.14367, SFT'd to the reference; same gradient descent).
    """

    instances: int = 8
    feature_noise: float = 0.1
    beta: float = 0.1
    steps: int = 5000
    lr: float = 2.0
    record_points: int = 60
    policy: str = "tabular"
    single_ref: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4)
    overlap_ref: tuple[float, ...] = (0.5, 0.3, 0.2)
    phi_plus: tuple[float, ...] = (1.0, 0.0)
    phi_similar: tuple[float, ...] = (1.2, 0.3)
    phi_dissimilar: tuple[float, ...] = (-0.5, -1.0)
    phi_other: tuple[float, ...] = (0.0, 1.0)

    def __post_init__(self):
        check_int(self.instances, "instances", minimum=1)
        check_positive(self.feature_noise, "feature_noise", allow_zero=True)
        check_positive(self.beta, "beta")
        check_int(self.steps, "steps", minimum=1)
        check_positive(self.lr, "lr")
        check_int(self.record_points, "record_points", minimum=5)
        check_policy_class(self.policy, allowed=("tabular", "mlp"))
        single = check_distribution(as_float_array(self.single_ref, "single_ref", ndim=1),
                                    "single_ref", atol=1e-6)
        if single.size < 3 or (single <= 0).any():
            raise ValueError(f"single_ref must hold >= 3 positive probabilities, got "
                             f"{self.single_ref!r}")
        overlap = check_distribution(as_float_array(self.overlap_ref, "overlap_ref", ndim=1,
                                                    shape=(3,)), "overlap_ref", atol=1e-6)
        if (overlap <= 0).any() or overlap[0] <= overlap[2]:
            raise ValueError(f"overlap_ref must be positive with pi_ref(a) > pi_ref(c), got "
                             f"{self.overlap_ref!r}")
        dims = set()
        for name in ("phi_plus", "phi_similar", "phi_dissimilar", "phi_other"):
            arr = check_finite(as_float_array(getattr(self, name), name, ndim=1), name)
            dims.add(arr.size)
        if len(dims) != 1:
            raise ValueError("phi_plus, phi_similar, phi_dissimilar and phi_other must have the "
                             "same length")
        plus = np.asarray(self.phi_plus)
        if ches(plus, np.asarray(self.phi_similar)) <= 0:
            raise ValueError("phi_similar must have CHES = <phi-, phi+> - |phi+|^2 > 0")
        if ches(plus, np.asarray(self.phi_dissimilar)) >= 0:
            raise ValueError("phi_dissimilar must have CHES = <phi-, phi+> - |phi+|^2 < 0")

    @classmethod
    def quick(cls) -> RazinConfig:
        return cls(steps=1500, record_points=30)

    def features(self, similar: bool) -> np.ndarray:
        """Features of ``(y+, y-, y_opp, o)`` for the log-linear settings."""
        plus = np.asarray(self.phi_plus, dtype=float)
        minus = np.asarray(self.phi_similar if similar else self.phi_dissimilar, dtype=float)
        return np.stack([plus, minus, -plus, np.asarray(self.phi_other, dtype=float)])


def ches(phi_plus, phi_minus) -> float:
    """Razin et al.'s CHES score for single-token responses: ``<phi-, phi+> - ||phi+||^2``."""
    phi_plus, phi_minus = np.asarray(phi_plus, float), np.asarray(phi_minus, float)
    return float(phi_minus @ phi_plus - phi_plus @ phi_plus)


def loglinear_rate(features, policy, plus: int, minus: int) -> float:
    """Sign-carrying factor of d log pi(y+)/dt under DPO gradient flow on a log-linear policy:
    ``<phi(y+) - E_pi phi, phi(y+) - phi(y-)>`` (claim C12)."""
    features = np.asarray(features, float)
    mean = np.asarray(policy, float) @ features
    return float((features[plus] - mean) @ (features[plus] - features[minus]))


def _family(config: RazinConfig, seed: int) -> list[dict]:
    """Per instance: the single-pair and overlap references and the two log-linear feature sets."""
    rng = np.random.default_rng([seed, 15])
    single = np.asarray(config.single_ref, float)
    out = [{"single": single / single.sum(), "overlap": np.asarray(config.overlap_ref, float),
            "similar": config.features(True), "dissimilar": config.features(False)}]
    for _ in range(config.instances - 1):
        overlap = rng.dirichlet(np.ones(3))
        if overlap[0] < overlap[2]:          # the premise pi_ref(a) > pi_ref(c)
            overlap = overlap[::-1]
        member = {"single": rng.dirichlet(np.ones(single.size)), "overlap": overlap}
        scale = rng.uniform(0.5, 1.5)
        for kind, similar in (("similar", True), ("dissimilar", False)):
            phi = config.features(similar).copy()
            phi[[1, 3]] += config.feature_noise * rng.standard_normal((2, phi.shape[1]))
            member[kind] = scale * phi
        out.append(member)
    return out


def _problems(config: RazinConfig, seed: int):
    """Per setting: (setting, envs, datas, policy or per-instance policies, response names,
    index of y+, index of y-, per-instance features or None)."""
    family = _family(config, seed)
    ids = [s for s, _ in settings(config.policy)]
    pair_policy = make_policy(config.policy)
    k = len(config.single_ref)
    names = ("y+", "y−") + tuple(f"o{i}" for i in range(1, k - 1))
    single = [Bandit(reward=np.zeros(k), ref=m["single"], name="razin-single") for m in family]
    overlap = [Bandit(reward=np.zeros(3), ref=m["overlap"], name="razin-overlap")
               for m in family]
    out = [(ids[0], single, [pairs_from_list(e, [(0, 1)]) for e in single], pair_policy, names,
            0, 1, None),
           (ids[1], overlap, [pairs_from_list(e, [(0, 1), (1, 2)]) for e in overlap], pair_policy,
            ("a", "b", "c"), 1, 2, None)]
    for kind in ("similar", "dissimilar"):
        envs = [Bandit(reward=np.zeros(4), ref=np.full(4, 0.25), name=f"razin-loglinear-{kind}")
                for _ in family]
        feats = [m[kind] for m in family]
        out.append((f"loglinear-{kind}", envs, [pairs_from_list(e, [(0, 1)]) for e in envs],
                    [LogLinear(f) for f in feats], ("y+", "y−", "y_opp", "o"), 0, 1, feats))
    return out


def run(config: RazinConfig, seed: int) -> pd.DataFrame:
    """log pi of every response over DPO gradient descent, per setting and instance (exact; the
    seed draws the families)."""
    frames = []
    common = {"steps": config.steps, "lr": config.lr, "optimizer": "gd", "seed": seed,
              "record": config.record_points}
    for setting, envs, datas, policy, names, plus, minus, feats in _problems(config, seed):
        obj = objective("sigmoid", beta=config.beta)
        if isinstance(policy, list):
            runs = train_many(envs, obj, datas, policy=policy, **common)
        else:
            runs = train_each(envs, obj, datas, policy=policy, **common)
        for b, r in enumerate(runs):
            steps = r.history["step"].to_numpy()
            logp = np.log(r.snapshots)
            keys = {"setting": setting, "instance": b}
            for i, name in enumerate(names):
                frames.append(pd.DataFrame({**keys, "response": name, "seed": seed,
                                            "step": steps, "metric": "logp", "value": logp[:, i]}))
            frames.append(pd.DataFrame({**keys, "response": names[plus], "seed": seed,
                                        "step": steps, "metric": "logp_target",
                                        "value": logp[:, plus]}))
            if feats is not None:
                rate = [loglinear_rate(feats[b], p, plus, minus) for p in r.snapshots]
                frames.append(pd.DataFrame({**keys, "response": names[plus], "seed": seed,
                                            "step": steps, "metric": "rate_factor",
                                            "value": rate}))
                frames.append(pd.DataFrame({**keys, "response": names[plus], "seed": seed,
                                            "step": [0], "metric": "ches",
                                            "value": ches(feats[b][plus], feats[b][minus])}))
    return pd.concat(frames, ignore_index=True)


def _targets(table: pd.DataFrame, setting: str) -> dict:
    """Per (instance, seed): log pi(y+) against step."""
    rows = table[(table["setting"] == setting) & (table["metric"] == "logp_target")]
    if rows.empty:
        raise AssertionError(f"no log pi(y+) rows for setting {setting!r}")
    return {key: g.sort_values("step")["value"].to_numpy()
            for key, g in rows.groupby(["instance", "seed"])}


def _target(table: pd.DataFrame, setting: str, instance: int = 0) -> pd.Series:
    """log pi(y+) against step of one instance (mean over seeds)."""
    rows = table[(table["setting"] == setting) & (table["metric"] == "logp_target")
                 & (table["instance"] == instance)]
    if rows.empty:
        raise AssertionError(f"no log pi(y+) rows for setting {setting!r}")
    return rows.groupby("step")["value"].mean()


def plot(table: pd.DataFrame, config: RazinConfig):
    """(a) change of log pi(y+) per setting, every instance; (b, c) where the mass goes when it is
    displaced (instance 0)."""
    fig, axes = new_figure(ncols=3, width=2.6, height=3.0)
    ax = axes[0, 0]
    styles = {"tabular-single": ("C0", "-"), "tabular-overlap": ("C1", "-"),
              "loglinear-similar": ("C3", "-"), "loglinear-dissimilar": ("C2", "--")}
    labels = {"tabular-single": "tabular, one pair",
              "tabular-overlap": "tabular, a≻b, b≻c (y+ = b)",
              "loglinear-similar": "log-linear, similar φ", "loglinear-dissimilar":
              "log-linear, dissimilar φ"}
    for setting, title in settings(config.policy):
        colour, ls = styles.get(setting, ("C0" if setting.endswith("single") else "C1", "-"))
        rows = table[(table["setting"] == setting) & (table["metric"] == "logp_target")]
        for instance, g in rows.groupby("instance"):
            target = g.groupby("step")["value"].mean()
            first = instance == rows["instance"].min()
            ax.plot(target.index, target.values - target.values[0], color=colour, linestyle=ls,
                    linewidth=1.5 if first else 0.6, alpha=1.0 if first else 0.45,
                    label=labels.get(setting, title) if first else None)
    ax.axhline(0.0, color="k", linewidth=0.8)
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylabel(r"$\log\pi_t(y^+) - \log\pi_0(y^+)$  [nats]")
    n = table["instance"].nunique()
    ax.set_title(f"(a) chosen log-prob, {n} instances")
    handles, names = ax.get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=4, fontsize=8)
    colours = {"a": "C2", "b": "C0", "c": "C3", "y+": "C0", "y−": "C3", "y_opp": "C4", "o": "0.55"}
    display = {"y_opp": r"$y_{\rm opp}$"}   # response names as the legend shows them
    overlap_id = settings(config.policy)[1][0]
    for ax, setting, title in ((axes[0, 1], overlap_id, "(b) a≻b, b≻c: π of each"),
                               (axes[0, 2], "loglinear-similar", "(c) similar φ: π of each")):
        rows = table[(table["setting"] == setting) & (table["metric"] == "logp")
                     & (table["instance"] == table["instance"].min())]
        target = "b" if setting == overlap_id else "y+"
        for name, resp in rows.groupby("response", sort=False):
            mean = np.exp(resp.groupby("step")["value"].mean())
            shown = display.get(name, name)
            ax.plot(mean.index, mean.values, color=colours.get(name, "0.5"),
                    linewidth=2.4 if name == target else 1.2,
                    label=f"{shown} (chosen)" if name == target else shown)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel(r"$\pi_t(y)$")
        ax.set_title(title)
        # (c): upper left, before y_opp's rise (center right covered it); (b): a's curve is
        # above and b's, c's below the center right
        ax.legend(loc="upper left" if setting == "loglinear-similar" else "center right",
                  fontsize=7)
    for ax in axes[0]:
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(0, config.steps)
        ax.set_xlabel("GD step (symlog)")
    return fig


def check(table: pd.DataFrame, config: RazinConfig) -> CheckResult:
    """Razin et al.'s claim on every instance of the log-linear families, and our exact tabular
    analysis (claim C12) on every instance of the tabular ones.

    Paper's clauses (log-linear policy, single pair y+ > y-):

    - ``likelihood-displacement``: with similar features (CHES > 0), log pi(y+) ends at least 1 nat
      below its start;
    - ``mass-to-opposite``: there the mass moves to a response never in the data, the opposite
      y_opp (final pi(y_opp) > 0.5);
    - ``low-ches-not-displaced``: with dissimilar features (CHES < 0), log pi(y+) ends above its
      start.

    Our derived clauses (claim C12, not the paper's):

    - ``c12-rate-sign``: between consecutive records of every log-linear instance, the change of
      log pi(y+) has the sign of ``<phi(y+) - E_pi phi, phi(y+) - phi(y-)>`` at an end of the
      interval (the sign of both ends when they agree);
    - ``c12-tabular-single``: a tabular single pair is never displaced (log pi(y+) rises at every
      record until it reaches 0) -- evaluated on the tabular policy only;
    - ``c12-tabular-overlap``: with overlapping pairs a > b, b > c and pi_ref(a) > pi_ref(c),
      log pi(b) falls at every record and by at least 1 nat -- tabular policy only.

    With ``policy="mlp"`` the two pair settings use the MLP and their clauses are not evaluated
    (the capacity table, ``capacity-findings``, measures them).

    Effect: change of log pi(y+) over training, similar minus dissimilar features (nats).
    """
    similar, dissimilar = _targets(table, "loglinear-similar"), _targets(table, "loglinear-"
                                                                          "dissimilar")
    keys = sorted(set(similar) & set(dissimilar))
    displaced = [bool(similar[k][-1] < similar[k][0] - 1.0) for k in keys]
    kept = [bool(dissimilar[k][-1] > dissimilar[k][0]) for k in keys]
    opp = table[(table["setting"] == "loglinear-similar") & (table["metric"] == "logp")
                & (table["response"] == "y_opp")]
    opp_final = {key: g.sort_values("step")["value"].iloc[-1]
                 for key, g in opp.groupby(["instance", "seed"])}
    to_opp = [bool(opp_final[k] > np.log(0.5)) for k in keys]
    ches_values = table[(table["setting"] == "loglinear-similar") & (table["metric"] == "ches")]
    signs = []
    for setting in ("loglinear-similar", "loglinear-dissimilar"):
        rows = table[(table["setting"] == setting) & (table["metric"] == "rate_factor")]
        rates = {key: g.sort_values("step")["value"].to_numpy()
                 for key, g in rows.groupby(["instance", "seed"])}
        for key, logp in _targets(table, setting).items():
            # between two records the change has the sign of the rate at an end of the interval
            # (when the rate keeps its sign across it, that sign)
            change, rate = np.sign(np.diff(logp)), np.sign(rates[key])
            ok = (change == rate[:-1]) | (change == rate[1:]) | (np.abs(np.diff(logp)) < 1e-9)
            signs.append(bool(ok.all()))
    changes = [(similar[k][-1] - similar[k][0]) - (dissimilar[k][-1] - dissimilar[k][0])
               for k in keys]
    clauses = [
        clause("likelihood-displacement", "log-linear DPO with similar features (CHES > 0) "
               "lowers log π(y+) by at least 1 nat", displaced,
               "Δ log π(y+) " + ", ".join(f"{similar[k][-1] - similar[k][0]:.2f}" for k in keys)
               + "; CHES " + ", ".join(f"{v:.2f}" for v in ches_values["value"])),
        clause("mass-to-opposite", "there the mass moves to the opposite response y_opp, never "
               "in the data (final π(y_opp) > 0.5)", to_opp),
        clause("low-ches-not-displaced", "with dissimilar features (CHES < 0) log π(y+) ends "
               "above its start", kept),
        clause("c12-rate-sign", "derived (C12): the change of log π(y+) has the sign of "
               "⟨φ(y+) − E_π φ, φ(y+) − φ(y−)⟩ between every two records, similar and dissimilar "
               "features",
               signs, paper=False),
    ]
    if config.policy == "tabular":
        single = _targets(table, "tabular-single")
        # strictly up until it reaches log 1 (where the increments round to 0)
        never = [bool(((np.diff(v) > 0) | (v[1:] > -1e-12)).all() and v[-1] > v[0])
                 for v in single.values()]
        overlap = _targets(table, "tabular-overlap")
        falls = [bool(np.all(np.diff(v) < 0) and v[-1] < v[0] - 1.0) for v in overlap.values()]
        clauses += [
            clause("c12-tabular-single", "derived (C12): tabular DPO on a single pair never "
                   "lowers log π(y+) (random references)", never, paper=False),
            clause("c12-tabular-overlap", "derived (C12): with overlapping pairs a ≻ b, b ≻ c and "
                   "π_ref(a) > π_ref(c), log π(b) falls at every record, by at least 1 nat "
                   "(random references)", falls,
                   "Δ log π(b) " + ", ".join(f"{v[-1] - v[0]:.1f}" for v in overlap.values()),
                   paper=False),
        ]
    return CheckResult(clauses=tuple(clauses),
                       effect=Effect("Δ log π(y+), similar − dissimilar features (nats)",
                                     changes), mode="exact")


EXPERIMENT = register(Experiment(
    id="razin-displacement", figure="F15",
    title="Likelihood displacement: DPO can lower log pi of the preferred response",
    paper="Razin et al. 2024, Unintentional Unalignment: Likelihood Displacement in Direct "
          "Preference Optimization", arxiv="2410.08847",
    claim=("During DPO, log pi(y+) can decrease and probability mass can move to responses never "
           "in the data, even semantically opposite ones; it happens when the preferred and "
           "dispreferred responses have similar embeddings (high CHES)."),
    differences=("The paper trains LLMs on single-token and real preference data; we follow exact "
                 "gradient descent on 3-4 responses. Tabular softmax with one pair cannot displace "
                 "(claim C12); displacement needs shared parameters: either overlapping pairs (the "
                 "chosen b of b > c is the rejected of a > b, and the normaliser rises because "
                 "pi(a) > pi(c)) or log-linear features with phi(y-) similar to phi(y+) "
                 "(CHES > 0, the paper's mechanism), where the mass goes to y_opp with "
                 "phi(y_opp) = -phi(y+). A dissimilar-feature control is not displaced. Each "
                 "setting is a family of 8 instances: the configured one, random Dirichlet "
                 "references (with pi_ref(a) > pi_ref(c) for the overlap) and, for the log-linear "
                 "settings, phi(y-) and phi(o) perturbed by 0.1 N(0, 1) and all features scaled "
                 "by a random factor in [0.5, 1.5], drawn from the seed. The tabular settings test "
                 "our derived claim C12, not the paper's."),
    config=RazinConfig, run=run, plot=plot, check=check, seeds=1))
