"""Tajwar et al.'s bandit MLP as a :class:`~coverage_sim.policies.Policy` (torch-backed).

The policy network of Tajwar et al. 2024 (arXiv:2404.14367, ``bandit_experiment/bandit_agents.py``,
``CategoricalActor``): a context vector ``u_x`` (100-dim, Uniform[0, 1]) goes through
``Linear(100, 50) -> LayerNorm(50) -> ReLU -> Linear(50, 256) -> ReLU -> Linear(256, 256) -> ReLU
-> Linear(256, K)`` to the logits of a softmax over the K arms. Their reward and ``pi_data`` ignore
the context, so it is a K-arm bandit whose arms share every parameter but the last layer's row.

It plugs into :func:`coverage_sim.train` like any non-engine policy: :meth:`MLPPolicy.logp` is a
forward pass, :meth:`MLPPolicy.grad` pulls the objective's ``dL/dlog pi`` back to the parameters by
a vector-Jacobian product (autograd), and the numpy loop of ``train`` applies GD/Adam to the flat
parameter vector. A policy never learns which objective it serves, so every objective of the
catalogue runs unchanged (exact population gradients).

Conventions:
  * context ``x`` of the bandit gets the fixed input ``u_x``, drawn once from ``input_seed``
    (Tajwar et al. draw one per training state; with the reward ignoring it, one fixed vector per
    context is the exact-population analogue);
  * initialisation as Tajwar's ``utils.weight_init``: Xavier-uniform weights with gain ``1e-2``,
    zero biases, LayerNorm ``(1, 0)``, drawn from a CPU ``torch.Generator`` seeded by the run's
    ``numpy`` generator -- the initial policy is uniform to ~1e-8;
  * then SFT to the reference as Tajwar's ``run_sft``: Adam (lr 0.01, 100 steps) on the exact
    reverse KL ``KL(pi_theta || pi_ref)`` averaged over contexts;
  * the objectives' reference stays the environment's exact ``pi_ref`` (Tajwar's bandit code
    passes ``pi_ref=self.pi_data``, not the SFT'd network), so the run starts at the SFT residual
    ``KL(pi_0 || pi_ref) > 0`` rather than at 0 (:meth:`MLPPolicy.sft` returns it);
  * responses outside the reference's support get logit ``-inf`` (probability 0), as for the
    tabular and log-linear policies;
  * float64 and one CPU thread by default (:func:`coverage_sim.torch_backend.reproducible`).

Examples:
  >>> import numpy as np, coverage_sim as cs
  >>> from coverage_sim.mlp import MLPPolicy
  >>> env = cs.tajwar_bandit(peak=70.0)
  >>> pol = MLPPolicy()
  >>> params = pol.init_params(env, np.random.default_rng(0))
  >>> params.size                                    # Tajwar's network at K = 100
  109698
  >>> bool(cs.metrics.kl_divergence(env, pol.probs(env, params), env.ref) < 0.05)
  True
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from coverage_sim._validation import (as_float_array, check_choice, check_finite, check_int,
                                      check_positive)
from coverage_sim.env import Bandit
from coverage_sim.policies import Policy
from coverage_sim.torch_backend import default_device, reproducible

__all__ = ["MLPPolicy"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class MLPPolicy(Policy):
    """Tajwar et al.'s bandit MLP, ``pi(.|x) = softmax(f_theta(u_x))`` over the reference's support.

    Args:
      hidden: hidden widths; the first layer is followed by LayerNorm and ReLU, the others by
        ReLU (Tajwar: ``(50, 256, 256)``).
      input_dim: context input dimension (Tajwar: 100).
      input_seed: seed of the fixed Uniform[0, 1] inputs ``u_x``, one row per context.
      init_gain: Xavier-uniform gain of the initial weights (Tajwar: 1e-2).
      sft_steps: Adam steps of the SFT to ``pi_ref`` in :meth:`init_params` (Tajwar: 100; 0 keeps
        the near-uniform initialisation).
      sft_lr: its Adam step size (Tajwar: 0.01).
      dtype: ``"float64"`` (default) or ``"float32"`` for the forward/backward passes; the
        parameter vector handed to ``train`` is float64 either way.
      threads: torch intra-op threads during every pass (default 1).
      device: where the passes run (default CPU; see
        :func:`~coverage_sim.torch_backend.default_device`).

    Examples:
      >>> import numpy as np, coverage_sim as cs
      >>> from coverage_sim.mlp import MLPPolicy
      >>> env = cs.Bandit(reward=[1.0, 0.0, 0.0], ref=[0.5, 0.25, 0.25])
      >>> pol = MLPPolicy(hidden=(8, 8), input_dim=4, sft_steps=300)
      >>> run = cs.train(env, cs.objective("rlhf", beta=0.5), steps=200, lr=1e-2, policy=pol)
      >>> bool(run.policy[0] > 0.7)
      True
    """

    kind = None

    def __init__(self, hidden=(50, 256, 256), input_dim: int = 100, input_seed: int = 0,
                 init_gain: float = 1e-2, sft_steps: int = 100, sft_lr: float = 0.01,
                 dtype: str = "float64", threads: int | None = 1, device=None):
        hidden = tuple(hidden) if isinstance(hidden, (tuple, list)) else hidden
        if not isinstance(hidden, tuple) or not hidden:
            raise ValueError(f"hidden must be a non-empty tuple of layer widths, got {hidden!r}")
        self.hidden = tuple(check_int(h, "hidden", minimum=1) for h in hidden)
        self.input_dim = check_int(input_dim, "input_dim", minimum=1)
        self.input_seed = check_int(input_seed, "input_seed")
        self.init_gain = check_positive(init_gain, "init_gain")
        self.sft_steps = check_int(sft_steps, "sft_steps")
        self.sft_lr = check_positive(sft_lr, "sft_lr")
        self.dtype = _DTYPES[check_choice(dtype, "dtype", _DTYPES)]
        self.threads = None if threads is None else check_int(threads, "threads", minimum=1)
        self.device = default_device("cpu" if device is None else device)
        self._inputs: dict[int, torch.Tensor] = {}
        self._cache = None
        self._sft_memo: dict[tuple, np.ndarray] = {}

    # ------------------------------------------------------------------ layout

    def shapes(self, n_responses: int) -> list[tuple[int, ...]]:
        """Parameter shapes in the flat vector's order (torch ``nn.Sequential`` order)."""
        widths = (self.input_dim,) + self.hidden
        out = [(widths[1], widths[0]), (widths[1],), (widths[1],), (widths[1],)]
        for a, b in zip(widths[1:-1], widths[2:]):
            out += [(b, a), (b,)]
        return out + [(n_responses, widths[-1]), (n_responses,)]

    def n_params(self, n_responses: int) -> int:
        """Length of the flat parameter vector for ``n_responses`` arms."""
        return sum(math.prod(s) for s in self.shapes(n_responses))

    def module(self, n_responses: int) -> nn.Sequential:
        """The same network as a torch ``nn.Sequential`` (Tajwar's ``CategoricalActor.policy``);
        ``torch.nn.utils.vector_to_parameters(params, module.parameters())`` loads a flat vector."""
        widths = (self.input_dim,) + self.hidden
        layers = [nn.Linear(widths[0], widths[1]), nn.LayerNorm(widths[1]), nn.ReLU()]
        for a, b in zip(widths[1:-1], widths[2:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], n_responses))
        return nn.Sequential(*layers).to(dtype=torch.float64)

    def inputs(self, n_contexts: int) -> np.ndarray:
        """The fixed context inputs ``u_x``, ``(n_contexts, input_dim)`` Uniform[0, 1]."""
        return self._input_tensor(n_contexts).double().cpu().numpy()

    def _input_tensor(self, n_contexts: int) -> torch.Tensor:
        if n_contexts not in self._inputs:
            u = np.random.default_rng(self.input_seed).uniform(size=(n_contexts, self.input_dim))
            self._inputs[n_contexts] = torch.as_tensor(u, dtype=self.dtype, device=self.device)
        return self._inputs[n_contexts]

    # ------------------------------------------------------------------ forward

    def _check_env(self, env) -> Bandit:
        if not isinstance(env, Bandit):
            raise ValueError(f"env must be a coverage_sim Bandit, got {type(env).__name__}")
        return env

    def _params(self, env: Bandit, params) -> np.ndarray:
        theta = as_float_array(params, "params", ndim=1, shape=(self.n_params(env.n_responses),))
        if not np.isfinite(theta).all():
            raise ValueError("params must be finite")
        return theta

    def _logp(self, env: Bandit, views) -> torch.Tensor:
        """``log pi`` ``(X, K)`` of the parameter tensors (in :meth:`shapes` order;
        differentiable)."""
        h = F.linear(self._input_tensor(env.n_contexts), views[0], views[1])
        h = F.relu(F.layer_norm(h, (self.hidden[0],), views[2], views[3]))
        for i in range(4, len(views) - 2, 2):
            h = F.relu(F.linear(h, views[i], views[i + 1]))
        logits = F.linear(h, views[-2], views[-1])
        support = torch.as_tensor(env.ref2d > 0, device=self.device)
        if not bool(support.all()):
            logits = logits.masked_fill(~support, -math.inf)
        return torch.log_softmax(logits, dim=-1)

    def _tensors(self, env: Bandit, theta: np.ndarray, grad: bool) -> list[torch.Tensor]:
        """One leaf tensor per parameter (slicing one flat leaf would make every backward pass
        scatter each slice's gradient into a zero vector of the full size)."""
        out, start = [], 0
        for shape in self.shapes(env.n_responses):
            n = math.prod(shape)
            out.append(torch.tensor(theta[start:start + n].reshape(shape), dtype=self.dtype,
                                    device=self.device, requires_grad=grad))
            start += n
        return out

    @staticmethod
    def _flat(tensors) -> np.ndarray:
        sizes = [t.numel() for t in tensors]
        out = np.empty(sum(sizes))
        for t, a, b in zip(tensors, np.cumsum([0] + sizes[:-1]), np.cumsum(sizes)):
            out[a:b] = t.detach().reshape(-1).cpu().numpy()
        return out

    def logp(self, env, params) -> np.ndarray:
        """``log pi`` shaped like ``env.ref`` (a forward pass; ``-inf`` off the support)."""
        env = self._check_env(env)
        theta = self._params(env, params)
        with reproducible(self.threads, deterministic=None):
            leaves = self._tensors(env, theta, grad=True)
            lp = self._logp(env, leaves)
        # train() asks for grad at the parameters it just evaluated: keep that graph.
        self._cache = (env, theta.copy(), leaves, lp)
        return env.like_ref(lp.detach().double().cpu().numpy())

    def grad(self, env, params, grad_logp) -> np.ndarray:
        """Pull ``dL/dlog pi`` (shaped like ``env.ref``) back to ``dL/dparams`` (flat, float64).

        The vector-Jacobian product ``sum_{x,y} g[x,y] d log pi(y|x) / d theta`` by autograd;
        entries of ``g`` off the reference's support are ignored (their ``log pi`` is constant).
        """
        env = self._check_env(env)
        theta = self._params(env, params)
        g = check_finite(env.as2d(grad_logp, "grad_logp"), "grad_logp")
        g = np.where(env.ref2d > 0, g, 0.0)
        with reproducible(self.threads, deterministic=None):
            cache = self._cache
            if (cache is not None and cache[0] is env and np.array_equal(cache[1], theta)):
                leaves, lp = cache[2], cache[3]
            else:
                leaves = self._tensors(env, theta, grad=True)
                lp = self._logp(env, leaves)
            self._cache = None
            out = torch.autograd.grad(lp, leaves, torch.as_tensor(g, dtype=lp.dtype,
                                                                  device=self.device))
        return self._flat(out)

    # ------------------------------------------------------------------ initialisation

    def random_params(self, env, rng: np.random.Generator) -> np.ndarray:
        """Tajwar's initialisation (Xavier-uniform, gain ``init_gain``; zero biases; LayerNorm
        ``(1, 0)``) from a CPU ``torch.Generator`` seeded by ``rng``; float64, flat."""
        env = self._check_env(env)
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy Generator, got {type(rng).__name__}")
        gen = torch.Generator().manual_seed(int(rng.integers(2 ** 63 - 1)))
        parts = []
        shapes = self.shapes(env.n_responses)
        for i, shape in enumerate(shapes):
            if len(shape) == 2:
                fan_out, fan_in = shape
                bound = self.init_gain * math.sqrt(6.0 / (fan_in + fan_out))
                w = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2.0 - 1.0) * bound
                parts.append(w.reshape(-1))
            elif i == 2:                                    # LayerNorm weight
                parts.append(torch.ones(shape, dtype=torch.float64))
            else:                                           # biases, LayerNorm bias
                parts.append(torch.zeros(shape, dtype=torch.float64))
        return torch.cat(parts).numpy()

    def sft(self, env, params, *, steps: int | None = None, lr: float | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
        """SFT to the reference (Tajwar's ``run_sft``): Adam on the reverse KL
        ``sum_x w_x KL(pi(.|x) || pi_ref(.|x))``.

        Args:
          env: the bandit (its ``pi_ref`` is the target; ``context_weights`` weight the contexts).
          params: starting parameters (flat).
          steps: Adam steps (default ``sft_steps``).
          lr: Adam step size (default ``sft_lr``).

        Returns:
          ``(params, kl)``: the fitted flat float64 parameters and the exact reverse KL before each
          step and after the last, ``(steps + 1,)`` (``kl[-1]`` is the SFT residual).
        """
        env = self._check_env(env)
        theta = self._params(env, params)
        steps = self.sft_steps if steps is None else check_int(steps, "steps")
        lr = self.sft_lr if lr is None else check_positive(lr, "lr")
        support = torch.as_tensor(env.ref2d > 0, device=self.device)
        # 0 off the support in both log-probs: a -inf there would turn the gradient into NaN.
        ref_lp = torch.as_tensor(np.where(env.ref2d > 0, env.ref_logp2d, 0.0), dtype=self.dtype,
                                 device=self.device)
        weights = torch.tensor(env.context_weights, dtype=self.dtype, device=self.device)
        kl = np.empty(steps + 1)
        with reproducible(self.threads, deterministic=None):
            leaves = self._tensors(env, theta, grad=True)
            opt = torch.optim.Adam(leaves, lr=lr)
            for step in range(steps + 1):
                lp = torch.where(support, self._logp(env, leaves), 0.0)
                terms = torch.where(support, lp.exp() * (lp - ref_lp), 0.0)
                loss = (weights * terms.sum(dim=1)).sum()
                kl[step] = float(loss.detach())
                if not math.isfinite(kl[step]):
                    raise FloatingPointError(f"MLP SFT diverged at step {step} (KL {kl[step]}); "
                                             "lower sft_lr")
                if step < steps:
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            out = self._flat([t.detach() for t in leaves])
        return out, kl

    def init_params(self, env, rng: np.random.Generator) -> np.ndarray:
        """Tajwar's initialisation drawn from ``rng``, then ``sft_steps`` of SFT to ``pi_ref``.

        The SFT'd parameters are a deterministic function of the initial ones and the reference,
        so they are remembered per (initial parameters, ``pi_ref``, context weights): an
        experiment that trains several objectives from one seed fits once.
        """
        params = self.random_params(env, rng)
        if not self.sft_steps:
            return params
        key = (params.tobytes(), env.ref2d.tobytes(), env.context_weights.tobytes())
        if key not in self._sft_memo:
            self._sft_memo[key] = self.sft(env, params)[0]
        return self._sft_memo[key].copy()

    def __repr__(self) -> str:
        return (f"MLPPolicy(hidden={self.hidden}, input_dim={self.input_dim}, "
                f"sft_steps={self.sft_steps}, dtype={str(self.dtype)[6:]!r})")
