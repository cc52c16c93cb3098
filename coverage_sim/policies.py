"""Policy parameterisations over a finite response set.

A policy maps parameters ``theta`` to ``log pi(y|x)`` of shape ``(X, K)`` and pulls a gradient with
respect to ``log pi`` back to ``theta``; objectives never see more than that, so sequence and
transformer policies plug in without touching an objective.

- :class:`TabularSoftmax`: free logits per context. Gradient descent can never move a response whose
  probability is 0, so tabular policies cannot drift onto responses the reference excludes
  (Xu et al. 2024, arXiv:2404.10719, §4): out-of-distribution drift is a function-approximation effect.
- :class:`LogLinear`: ``log pi(y|x) = base(x,y) + phi(x,y) . w - log Z(x)`` with shared weights ``w``;
  with the default ``base = log pi_ref`` it starts at ``pi_ref`` and can move mass onto responses the
  data never shows (Song et al. 2024, arXiv:2406.01462; Xu et al. 2024).
"""

from __future__ import annotations

import numpy as np

from coverage_sim import _engine
from coverage_sim._validation import as_float_array, check_choice, check_finite, check_positive
from coverage_sim.env import Bandit

__all__ = ["Policy", "TabularSoftmax", "LogLinear"]


class Policy:
    """Base class: subclasses set ``kind`` and implement the parameter layout."""

    kind: int

    def init_params(self, env: Bandit, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def features_for(self, env: Bandit) -> np.ndarray:
        """Features ``(X, K, D)`` handed to the engine (empty for tabular policies)."""
        return np.zeros((env.n_contexts, env.n_responses, 0))

    def base_for(self, env: Bandit) -> np.ndarray:
        """Fixed logit offset ``(X, K)`` handed to the engine."""
        return np.zeros((env.n_contexts, env.n_responses))

    def logp(self, env: Bandit, params) -> np.ndarray:
        """``log pi`` shaped like ``env.ref`` for parameters ``params``."""
        theta = as_float_array(params, "params", ndim=1)
        lp = _engine.policy_logp(self.kind, theta, self.features_for(env), self.base_for(env),
                                 env.n_contexts, env.n_responses)
        return env.like_ref(lp)

    def probs(self, env: Bandit, params) -> np.ndarray:
        """``pi`` shaped like ``env.ref``."""
        return np.exp(self.logp(env, params))

    def grad(self, env: Bandit, params, grad_logp) -> np.ndarray:
        """Pull ``dL/dlog pi`` (shaped like ``env.ref``) back to ``dL/dparams``."""
        lp = env.as2d(self.logp(env, params), "logp")
        return _engine.policy_backprop(self.kind, self.features_for(env), lp,
                                       env.as2d(grad_logp, "grad_logp"))


class TabularSoftmax(Policy):
    """One softmax per context, ``pi(.|x) = softmax(theta[x])``; ``theta`` flattened to ``(X*K,)``.

    Args:
      init: ``"ref"`` (start at ``pi_ref``; logits ``log pi_ref``, ``-inf`` outside its support),
        ``"uniform"`` (uniform over the reference's support), ``"random"`` (``log pi_ref`` plus
        standard-normal noise of size ``init_scale``, drawn from the run's seed), or an array of
        initial probabilities shaped like ``ref``.
      init_scale: noise scale for ``init="random"``.

    Examples:
      >>> import numpy as np, coverage_sim as cs
      >>> env = cs.Bandit(reward=[1.0, 0.0], ref=[0.25, 0.75])
      >>> pol = cs.TabularSoftmax()
      >>> pol.probs(env, pol.init_params(env, np.random.default_rng(0)))
      array([0.25, 0.75])
    """

    kind = _engine.TABULAR

    def __init__(self, init="ref", init_scale: float = 1.0):
        if isinstance(init, str):
            check_choice(init, "init", ("ref", "uniform", "random"))
        self.init = init
        self.init_scale = check_positive(init_scale, "init_scale")

    def init_params(self, env: Bandit, rng: np.random.Generator) -> np.ndarray:
        ref_lp = env.ref_logp2d
        if isinstance(self.init, str):
            if self.init == "ref":
                logits = ref_lp.copy()
            elif self.init == "uniform":
                logits = np.where(np.isfinite(ref_lp), 0.0, -np.inf)
            else:
                logits = ref_lp + self.init_scale * rng.standard_normal(ref_lp.shape)
        else:
            probs = env.as2d(self.init, "init")
            check_finite(probs, "init")
            if (probs < 0).any() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-9):
                raise ValueError("init must be a probability array shaped like ref (rows >= 0 "
                                 "summing to 1)")
            if ((probs > 0) & (env.ref2d == 0)).any():
                raise ValueError("init puts mass where ref is 0; a tabular policy anchored at the "
                                 "reference cannot start there")
            with np.errstate(divide="ignore"):
                logits = np.log(probs)
        return np.ascontiguousarray(logits.ravel())

    def __repr__(self) -> str:
        init = self.init if isinstance(self.init, str) else "<array>"
        return f"TabularSoftmax(init={init!r})"


class LogLinear(Policy):
    """Log-linear policy ``pi(y|x) ∝ exp(base(x,y) + phi(x,y) . w)`` with shared weights ``w``.

    Args:
      features: ``phi``, shape ``(K, D)`` (shared across contexts) or ``(X, K, D)``; finite.
      base: ``"ref"`` (``log pi_ref``: the policy starts at ``pi_ref`` when ``w = 0`` and never puts
        mass where ``pi_ref`` is 0) or ``"zero"`` (plain ``pi ∝ exp(phi . w)``).
      init: initial weights ``(D,)``; defaults to zeros.

    Examples:
      >>> import numpy as np, coverage_sim as cs
      >>> env = cs.Bandit(reward=[1.0, 0.0, 0.0], ref=[0.25, 0.25, 0.5])
      >>> pol = cs.LogLinear(features=np.eye(3)[:, :2])
      >>> pol.probs(env, np.zeros(2))
      array([0.25, 0.25, 0.5 ])
    """

    kind = _engine.LOGLINEAR

    def __init__(self, features, base: str = "ref", init=None):
        feats = check_finite(as_float_array(features, "features", ndim=(2, 3)).copy(), "features")
        feats.setflags(write=False)
        self.features = feats
        self.base = check_choice(base, "base", ("ref", "zero"))
        dim = feats.shape[-1]
        if init is None:
            self.init = np.zeros(dim)
        else:
            self.init = check_finite(as_float_array(init, "init", ndim=1, shape=(dim,)), "init")

    @property
    def dim(self) -> int:
        return self.features.shape[-1]

    def features_for(self, env: Bandit) -> np.ndarray:
        feats = self.features
        if feats.ndim == 2:
            if feats.shape[0] != env.n_responses:
                raise ValueError(f"features must have shape ({env.n_responses}, D) or "
                                 f"({env.n_contexts}, {env.n_responses}, D), got {feats.shape}")
            feats = np.broadcast_to(feats, (env.n_contexts,) + feats.shape)
        elif feats.shape[:2] != (env.n_contexts, env.n_responses):
            raise ValueError(f"features must have shape ({env.n_responses}, D) or "
                             f"({env.n_contexts}, {env.n_responses}, D), got {feats.shape}")
        return _engine.kernel_array(feats)

    def base_for(self, env: Bandit) -> np.ndarray:
        if self.base == "ref":
            return _engine.kernel_array(env.ref_logp2d)
        return np.zeros((env.n_contexts, env.n_responses))

    def init_params(self, env: Bandit, rng: np.random.Generator) -> np.ndarray:
        self.features_for(env)
        return self.init.copy()

    def __repr__(self) -> str:
        return f"LogLinear(dim={self.dim}, base={self.base!r})"
