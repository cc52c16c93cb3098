"""Policy classes of the bandit experiments: the ``policy`` config field (``"tabular"``,
``"loglinear"``, ``"mlp"``) and training any of them through one call.

The bandit figures were built on the tabular softmax; some effects depend on that
parameterisation (per-logit Adam, zero gradient on unseen arms). With ``policy="loglinear"`` an
experiment uses ``pi ∝ pi_ref exp(phi . w)`` with features suited to its arms (smooth bumps over
the arm index for ordered arms, :func:`rbf_features`; random directions otherwise,
:func:`random_features`); with ``policy="mlp"`` Tajwar et al.'s bandit MLP
(:class:`coverage_sim.mlp.MLPPolicy`, arXiv:2404.14367; needs torch). :func:`train_each` trains a
batch of problems with any of them: :func:`coverage_sim.train_many` for engine policies (exactly
as before), :func:`coverage_sim.train` problem by problem otherwise, with the same seeds.
"""

from __future__ import annotations

import numpy as np

from coverage_sim._validation import check_choice, check_int, check_positive
from coverage_sim.experiments.common import HAVE_TORCH
from coverage_sim.policies import LogLinear, Policy, TabularSoftmax
from coverage_sim.train import train, train_many

__all__ = ["POLICY_CLASSES", "check_policy_class", "make_policy", "random_features",
           "rbf_features", "train_each"]

#: Values of an experiment's ``policy`` field.
POLICY_CLASSES = ("tabular", "loglinear", "mlp")


def check_policy_class(value, name: str = "policy", allowed=POLICY_CLASSES) -> str:
    """``value`` if it is one of ``allowed`` policy classes, else ValueError naming ``name``."""
    check_choice(value, name, allowed)
    if value == "mlp" and not HAVE_TORCH:
        raise ValueError(f"{name}='mlp' needs torch (pip install torch)")
    return value


def rbf_features(n_responses: int, n_features: int = 20, width: float | None = None
                 ) -> np.ndarray:
    """Gaussian bumps over the arm index: ``phi[a, j] = exp(-((a - c_j) / width)^2 / 2)``.

    For ordered arms (Tajwar's 100 bins): ``n_features`` centres evenly spaced over
    ``[0, n_responses - 1]``, width the spacing by default, so a log-linear policy moves
    neighbouring arms together.

    Examples:
      >>> rbf_features(5, 3).round(3).tolist()[0]
      [1.0, 0.607, 0.135]
    """
    k = check_int(n_responses, "n_responses", minimum=2)
    d = check_int(n_features, "n_features", minimum=1)
    centres = np.linspace(0.0, k - 1.0, d)
    w = (k - 1.0) / max(d - 1, 1) if width is None else check_positive(width, "width")
    return np.exp(-0.5 * ((np.arange(k)[:, None] - centres[None, :]) / w) ** 2)


def random_features(n_responses: int, n_features: int, seed: int = 0) -> np.ndarray:
    """Standard-normal features ``(n_responses, n_features)`` from ``seed`` (unordered arms)."""
    k = check_int(n_responses, "n_responses", minimum=2)
    d = check_int(n_features, "n_features", minimum=1)
    return np.random.default_rng(check_int(seed, "seed")).standard_normal((k, d))


def make_policy(kind: str, *, features=None, mlp: dict | None = None) -> Policy:
    """The policy of class ``kind``: ``TabularSoftmax()`` (at ``pi_ref``),
    ``LogLinear(features)`` (base ``log pi_ref``, ``w = 0``: starts at ``pi_ref``) or
    ``MLPPolicy(**mlp)`` (Tajwar's network, SFT'd to ``pi_ref``)."""
    check_policy_class(kind)
    if kind == "tabular":
        return TabularSoftmax()
    if kind == "loglinear":
        if features is None:
            raise ValueError("policy='loglinear' needs features")
        return LogLinear(features)
    from coverage_sim.mlp import MLPPolicy

    return MLPPolicy(**(mlp or {}))


def train_each(envs, objectives, datas=None, *, policy: Policy, steps: int, lr, seed: int = 0,
               optimizer: str = "adam", record=None) -> list:
    """Train a batch of problems (as :func:`coverage_sim.train_many`) with any policy.

    Engine policies (tabular, log-linear) go through ``train_many`` unchanged; other policies are
    trained problem by problem with :func:`coverage_sim.train`, problem ``b`` seeded ``seed + b``
    (``train_many``'s convention). ``envs``, ``objectives``, ``datas`` and ``lr`` may each be one
    value or a list.
    """
    if getattr(policy, "kind", None) is not None:
        return train_many(envs, objectives, datas, steps=steps, lr=lr, seed=seed,
                          optimizer=optimizer, policy=policy, record=record)
    lists = [v for v in (envs, objectives, datas, lr) if isinstance(v, (list, tuple))]
    n = max((len(v) for v in lists), default=1)

    def item(value, b):
        return value[b] if isinstance(value, (list, tuple)) else value

    return [train(item(envs, b), item(objectives, b), item(datas, b), steps=steps,
                  lr=item(lr, b), optimizer=optimizer, seed=seed + b, policy=policy,
                  record=record) for b in range(n)]
