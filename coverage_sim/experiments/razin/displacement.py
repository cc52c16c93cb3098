"""F15 — Razin et al. 2024 (arXiv:2410.08847): likelihood displacement in DPO.

During DPO the log-probability of the *preferred* response ``log pi(y+)`` can decrease, and the
mass can move to responses the data never shows — in the paper's single-token experiments even to
responses of opposite meaning. Their explanation: the gradient step on ``y+ > y-`` changes
``log pi(y+)`` through the similarity of the two responses' hidden embeddings (the CHES score
``<h(y-), h(y+)> - ||h(y+)||^2``); similar embeddings displace ``y+``.

Three exact-gradient settings (science.md §10, claim C12; gradient descent, so that the flow
formulas apply step by step):

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
from coverage_sim.experiments.registry import Experiment, register
from coverage_sim.objectives import objective
from coverage_sim.plotting import new_figure
from coverage_sim.experiments.policy_classes import check_policy_class, make_policy
from coverage_sim.policies import LogLinear
from coverage_sim.train import train

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
    ``<phi(y+) - E_pi phi, phi(y+) - phi(y-)>`` (science.md §10, claim C12)."""
    features = np.asarray(features, float)
    mean = np.asarray(policy, float) @ features
    return float((features[plus] - mean) @ (features[plus] - features[minus]))


def _problems(config: RazinConfig):
    """(setting, env, data, policy, responses, index of y+, index of y-) of every setting."""
    out = []
    single = np.asarray(config.single_ref, float)
    names = ("y+", "y−") + tuple(f"o{i}" for i in range(1, single.size - 1))
    env = Bandit(reward=np.zeros(single.size), ref=single / single.sum(), name="razin-single")
    ids = [s for s, _ in settings(config.policy)]
    pair_policy = None if config.policy == "tabular" else make_policy(config.policy)
    out.append((ids[0], env, pairs_from_list(env, [(0, 1)]), pair_policy, names, 0, 1))
    env = Bandit(reward=np.zeros(3), ref=np.asarray(config.overlap_ref, float),
                 name="razin-overlap")
    out.append((ids[1], env, pairs_from_list(env, [(0, 1), (1, 2)]), pair_policy,
                ("a", "b", "c"), 1, 2))
    for setting, similar in (("loglinear-similar", True), ("loglinear-dissimilar", False)):
        env = Bandit(reward=np.zeros(4), ref=np.full(4, 0.25), name=f"razin-{setting}")
        out.append((setting, env, pairs_from_list(env, [(0, 1)]),
                    LogLinear(config.features(similar)), ("y+", "y−", "y_opp", "o"), 0, 1))
    return out


def run(config: RazinConfig, seed: int) -> pd.DataFrame:
    """log pi of every response over DPO gradient descent, per setting (exact, so seed-free)."""
    frames = []
    for setting, env, data, policy, names, plus, minus in _problems(config):
        r = train(env, objective("sigmoid", beta=config.beta), data, steps=config.steps,
                  lr=config.lr, optimizer="gd", seed=seed, policy=policy,
                  record=config.record_points)
        steps = r.history["step"].to_numpy()
        logp = np.log(r.snapshots)
        for i, name in enumerate(names):
            frames.append(pd.DataFrame({"setting": setting, "response": name, "seed": seed,
                                        "step": steps, "metric": "logp", "value": logp[:, i]}))
        target = names[plus]
        frames.append(pd.DataFrame({"setting": setting, "response": target, "seed": seed,
                                    "step": steps, "metric": "logp_target",
                                    "value": logp[:, plus]}))
        if isinstance(policy, LogLinear):
            rate = [loglinear_rate(policy.features, p, plus, minus) for p in r.snapshots]
            frames.append(pd.DataFrame({"setting": setting, "response": target, "seed": seed,
                                        "step": steps, "metric": "rate_factor", "value": rate}))
    return pd.concat(frames, ignore_index=True)


def _target(table: pd.DataFrame, setting: str) -> pd.Series:
    rows = table[(table["setting"] == setting) & (table["metric"] == "logp_target")]
    if rows.empty:
        raise AssertionError(f"no log pi(y+) rows for setting {setting!r}")
    return rows.groupby("step")["value"].mean()


def plot(table: pd.DataFrame, config: RazinConfig):
    """(a) change of log pi(y+) per setting; (b, c) where the mass goes when it is displaced."""
    fig, axes = new_figure(ncols=3, width=2.6, height=3.0)
    ax = axes[0, 0]
    styles = {"tabular-single": ("C0", "-"), "tabular-overlap": ("C1", "-"),
              "loglinear-similar": ("C3", "-"), "loglinear-dissimilar": ("C3", "--")}
    labels = {"tabular-single": "tabular, one pair",
              "tabular-overlap": "tabular, a≻b, b≻c (y+ = b)",
              "loglinear-similar": "log-linear, similar φ", "loglinear-dissimilar":
              "log-linear, dissimilar φ"}
    for setting, title in settings(config.policy):
        target = _target(table, setting)
        colour, ls = styles.get(setting, ("C0" if setting.endswith("single") else "C1", "-"))
        ax.plot(target.index, target.values - target.values[0], color=colour, linestyle=ls,
                label=labels.get(setting, title))
    ax.axhline(0.0, color="k", linewidth=0.8)
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylabel("log π_t(y+) − log π_0(y+)  [nats]")
    ax.set_title("(a) chosen response's log-prob")
    handles, names = ax.get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=4, fontsize=8)
    colours = {"a": "C2", "b": "C0", "c": "C3", "y+": "C0", "y−": "C3", "y_opp": "C4", "o": "0.55"}
    overlap_id = settings(config.policy)[1][0]
    for ax, setting, title in ((axes[0, 1], overlap_id, "(b) a≻b, b≻c: π of each"),
                               (axes[0, 2], "loglinear-similar", "(c) similar φ: π of each")):
        rows = table[(table["setting"] == setting) & (table["metric"] == "logp")]
        target = "b" if setting == overlap_id else "y+"
        for name, resp in rows.groupby("response", sort=False):
            mean = np.exp(resp.groupby("step")["value"].mean())
            ax.plot(mean.index, mean.values, color=colours.get(name, "0.5"),
                    linewidth=2.4 if name == target else 1.2,
                    label=f"{name} (chosen)" if name == target else name)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("π_t(y)")
        ax.set_title(title)
        ax.legend(loc="center right", fontsize=7)
    for ax in axes[0]:
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(0, config.steps)
        ax.set_xlabel("GD step (symlog)")
    return fig


def check(table: pd.DataFrame, config: RazinConfig) -> None:
    """No displacement in the tabular single pair; displacement of the chosen response with
    overlapping pairs and with similar log-linear features (sign = sign of the C12 rate).

    With ``policy="mlp"`` the pair settings' claims are the tabular theorem's and are not asserted
    (the capacity table, ``capacity-findings``, measures them); the log-linear ones are."""
    if config.policy == "tabular":
        _check_tabular(table)
    _check_loglinear(table)


def _check_tabular(table: pd.DataFrame) -> None:
    single = _target(table, "tabular-single").to_numpy()
    rising = (np.diff(single) > 0) | (single[1:] > -1e-12)  # strictly up until it reaches log 1
    assert rising.all(), "tabular single pair: log pi(y+) is not increasing"
    assert single[-1] > single[0], "tabular single pair: log pi(y+) did not increase"
    overlap = _target(table, "tabular-overlap").to_numpy()
    assert np.all(np.diff(overlap) < 0), (
        "overlapping pairs: log pi(b) is not decreasing although pi(a) > pi(c)")
    assert overlap[-1] < overlap[0] - 1.0, (
        f"overlapping pairs: log pi(b) fell only {overlap[0] - overlap[-1]:.3f} nats")


def _check_loglinear(table: pd.DataFrame) -> None:
    similar = _target(table, "loglinear-similar").to_numpy()
    assert similar[-1] < similar[0] - 1.0, (
        f"log-linear similar features: log pi(y+) fell only {similar[0] - similar[-1]:.3f} nats")
    control = _target(table, "loglinear-dissimilar").to_numpy()
    assert control[-1] > control[0], "log-linear control (dissimilar features) was displaced"
    for setting in ("loglinear-similar", "loglinear-dissimilar"):
        rows = table[(table["setting"] == setting)]
        rate = rows[rows["metric"] == "rate_factor"].groupby("step")["value"].mean()
        logp = _target(table, setting)
        change = np.diff(logp.to_numpy())
        predicted = np.sign(rate.to_numpy()[:-1])
        ok = (np.sign(change) == predicted) | (np.abs(change) < 1e-9)
        assert ok.all(), (f"{setting}: sign of the change of log pi(y+) differs from the sign of "
                          f"<phi+ - E phi, phi+ - phi-> at {int((~ok).sum())} records")
    opp = table[(table["setting"] == "loglinear-similar") & (table["metric"] == "logp")
                & (table["response"] == "y_opp")]
    last = opp[opp["step"] == opp["step"].max()]["value"].mean()
    assert last > np.log(0.5), (
        f"log-linear similar: the mass did not move to y_opp (log pi = {last:.3f})")


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
                 "phi(y_opp) = -phi(y+). A dissimilar-feature control is not displaced."),
    config=RazinConfig, run=run, plot=plot, check=check, seeds=1))
