"""Training loops: exact-gradient optimisation of an objective on a bandit, single or batched.

:func:`train` runs one problem with the step loop fused inside numba; :func:`train_many` runs many
independent problems (seeds, beta, coverage levels, ...) at once, split over the cores. Both record the
policy on a log-spaced schedule and return :class:`Run` objects whose ``history`` is a tidy
``pandas.DataFrame`` with one row per recorded step.

Policies the numba engine does not know (``policy.kind`` not an engine kind, e.g.
:class:`coverage_sim.sequences.AutoregressiveTabular`) are trained by :func:`train` with a plain
numpy loop: the same objective gradients, GD/Adam formulas, record schedule and :class:`Run`, with
the policy's own ``logp`` and ``grad``.
"""

from __future__ import annotations

import importlib.metadata
import platform
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from coverage_sim import _engine
from coverage_sim._validation import check_choice, check_int, check_positive
from coverage_sim.coverage import concentrability
from coverage_sim.data import PairData, UnpairedData, offline_pairs
from coverage_sim.env import optimal_policy
from coverage_sim.env import Bandit
from coverage_sim.metrics import kl_divergence, policy_metrics
from coverage_sim.objectives import Objective, objective as make_objective
from coverage_sim.policies import Policy, TabularSoftmax

__all__ = ["Run", "train", "train_many", "log_schedule", "package_versions"]

OPTIMIZERS = {"gd": _engine.GD, "adam": _engine.ADAM, "npg": _engine.NPG}
_ADAM_DEFAULTS = (0.9, 0.999, 1e-8)
#: Above this many responses one problem's DPO rows are split over threads.
_PARALLEL_ROWS_MIN_K = 512
#: Up to this many responses the default held-out ranking pairs (pi_ref x pi_ref) are evaluated.
_RANKING_MAX_K = 1000


def _is_engine_policy(policy: Policy) -> bool:
    """Whether the numba engine implements ``policy`` (its ``kind`` is an engine kind)."""
    return getattr(policy, "kind", None) in (_engine.TABULAR, _engine.LOGLINEAR)


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages a result depends on, to store beside it."""
    out = {"python": platform.python_version()}
    for name in ("coverage-sim", "numpy", "scipy", "numba", "pandas", "torch"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def log_schedule(steps: int, num: int = 50) -> np.ndarray:
    """About ``num`` unique record steps, log-spaced in ``[1, steps]``, plus step 0.

    Examples:
      >>> log_schedule(1000, num=5).tolist()
      [0, 1, 6, 32, 178, 1000]
    """
    steps = check_int(steps, "steps", minimum=0)
    num = check_int(num, "num", minimum=1)
    if steps == 0:
        return np.zeros(1, dtype=np.int64)
    # geomspace(1, steps, 1) is [1]; a single point must be the last step
    pts = np.unique(np.round(np.geomspace(1, steps, num)).astype(np.int64)) if num > 1 else [steps]
    return np.concatenate([[0], pts]).astype(np.int64)


def _record_steps(record, steps: int) -> np.ndarray:
    if record is None:
        return log_schedule(steps)
    if isinstance(record, (int, np.integer)) and not isinstance(record, bool):
        if record < 1:
            raise ValueError(f"record must be a number of points >= 1 or a list of integer steps "
                             f"within [0, {steps}], got {record!r}")
        return log_schedule(steps, int(record))
    rec = np.unique(np.asarray(record))
    if rec.size == 0 or not np.issubdtype(rec.dtype, np.integer) or rec[0] < 0 or rec[-1] > steps:
        raise ValueError(f"record must be a number of points or integer steps within [0, {steps}], "
                         f"got {record!r}")
    return rec.astype(np.int64)


@dataclass(frozen=True, eq=False)
class Run:
    """The result of a training run.

    Attributes:
      policy: final policy, shaped like ``env.ref``.
      history: tidy DataFrame, one row per recorded step: ``step``, ``loss`` and the metrics of
        :func:`coverage_sim.metrics.policy_metrics`.
      snapshots: the policy at each recorded step, ``(R,) + env.ref.shape``.
      params: final policy parameters.
      config: objective, parameters, optimiser, seed, schedule and package versions.
      references: the reference at each recorded step, ``(R,) + env.ref.shape``, when it moves
        (TR-DPO's ``sync_ref_model``), else ``None`` (it is ``env.ref`` throughout).
    """

    env: Bandit
    objective: Objective
    policy_model: Policy
    params: np.ndarray
    policy: np.ndarray
    snapshots: np.ndarray
    history: pd.DataFrame
    config: dict = field(repr=False)
    references: np.ndarray | None = field(default=None, repr=False)

    def replay_policy(self) -> np.ndarray:
        """The replay-buffer policy ``(1/T) sum_{t<T} pi_t`` of this run's ``T`` updates.

        Offline training on it is Tang et al.'s (arXiv:2405.08448) test of the coverage hypothesis:
        the online run's coverage, without its on-policy sampling. Exact, so it needs every step
        recorded (``train(..., record=list(range(steps + 1)))``).
        """
        steps = self.config["steps"]
        recorded = np.asarray(self.history["step"])
        if steps == 0 or not np.array_equal(recorded[recorded < steps], np.arange(steps)):
            raise ValueError("replay_policy needs every step recorded: train with "
                             "record=list(range(steps + 1))")
        return self.snapshots[recorded < steps].mean(axis=0)

    def __repr__(self) -> str:
        last = self.history.iloc[-1]
        return (f"Run({self.objective.name!r} on {self.env.name!r}, steps={int(last['step'])}, "
                f"reward={last['reward']:.4g}, kl={last['kl']:.4g})")


def _check_data(env: Bandit, data):
    if data is None:
        return
    if isinstance(data, UnpairedData):
        if data.desirable.shape != (env.n_contexts, env.n_responses):
            raise ValueError(f"data has examples of shape {data.desirable.shape}, expected "
                             f"{(env.n_contexts, env.n_responses)} for env")
        return
    if not isinstance(data, PairData):
        raise ValueError(f"data must be a PairData (see coverage_sim.offline_pairs) or an "
                         f"UnpairedData (coverage_sim.unpaired_data), got {type(data).__name__}")
    if data.weights.shape != (env.n_contexts, env.n_responses, env.n_responses):
        raise ValueError(f"data has pair weights of shape {data.weights.shape}, expected "
                         f"{(env.n_contexts, env.n_responses, env.n_responses)} for env")


def _common_args(env, objective, steps, lr, optimizer, policy, record):
    if not isinstance(env, Bandit):
        raise ValueError(f"env must be a coverage_sim.Bandit, got {type(env).__name__}")
    if isinstance(objective, str):
        objective = make_objective(objective)
    if not isinstance(objective, Objective):
        raise ValueError(f"objective must be an Objective or a name, got {type(objective).__name__}")
    steps = check_int(steps, "steps", minimum=0)
    lr = check_positive(lr, "lr")
    opt = OPTIMIZERS[check_choice(optimizer, "optimizer", OPTIMIZERS)]
    policy = TabularSoftmax() if policy is None else policy
    if not isinstance(policy, Policy):
        raise ValueError(f"policy must be a coverage_sim Policy, got {type(policy).__name__}")
    return objective, steps, lr, opt, policy, _record_steps(record, steps)


def _default_eval_data(env: Bandit, eval_data):
    if eval_data is not None or env.n_responses > _RANKING_MAX_K:
        return eval_data
    return offline_pairs(env, env.ref, labels="bradley_terry")


def _reference_metrics(env, objective, shaped, out_rlp) -> dict:
    """Readouts against the moving reference of TR-DPO, one value per recorded step.

    ``kl_current_ref``: E_x KL(pi_t || pi_ref_t). ``coverage_current_ref``: the concentrability
    C* = max pi*_beta / pi_ref_t of the KL-regularised optimum (against the original reference)
    under the current reference, the coverage the next updates work with.
    """
    refs = np.exp(out_rlp).reshape(shaped.shape)
    out = {"kl_current_ref": kl_divergence(env, shaped, refs)}
    if objective.beta is not None:
        target = optimal_policy(env, objective.beta)
        out["coverage_current_ref"] = np.array(
            [concentrability(target, r, env.context_weights) for r in refs])
    return out


def _finish(env, objective, policy, theta, out_lp, out_loss, rec, data, eval_data, config,
            out_rlp=None) -> Run:
    if np.isnan(theta).any() or np.isnan(out_lp).any() or np.isnan(out_loss).any():
        bad = np.flatnonzero(np.isnan(out_lp).any(axis=(1, 2)) | np.isnan(out_loss))
        where = f"first NaN at recorded step {rec[bad[0]]}" if bad.size else "NaN at the end"
        raise FloatingPointError(
            f"training {objective.name!r} diverged ({where}) with optimizer="
            f"{config['optimizer']!r}, lr={config['lr']}; lower lr (natural policy gradient divides "
            "by pi, so it needs small steps on objectives that push probabilities towards 0)")
    shaped = np.exp(out_lp).reshape((len(rec),) + env.shape)
    metrics = policy_metrics(env, shaped, beta=objective.beta, data=data, eval_data=eval_data,
                             proxy_reward=objective.params.get("reward"),
                             log_policies=out_lp.reshape(shaped.shape))
    if out_rlp is not None:
        metrics.update(_reference_metrics(env, objective, shaped, out_rlp))
    history = pd.DataFrame({"step": rec, "loss": out_loss, **metrics})
    # The final policy comes from the final parameters: the record schedule need not end at `steps`.
    if _is_engine_policy(policy):
        final = np.exp(_engine.policy_logp(policy.kind, theta, policy.features_for(env),
                                           policy.base_for(env), env.n_contexts, env.n_responses))
    else:
        final = np.exp(policy.logp(env, theta))
    references = None if out_rlp is None else np.exp(out_rlp).reshape(shaped.shape)
    return Run(env=env, objective=objective, policy_model=policy, params=theta,
               policy=env.like_ref(final), snapshots=shaped, history=history, config=config,
               references=references)


def _config(env, objective, policy, steps, lr, optimizer, seed, adam, rec, data):
    params = {k: ("<array>" if isinstance(v, np.ndarray) else v)
              for k, v in objective.params.items()}
    return {"env": env.name, "shape": list(env.shape), "objective": objective.name,
            "params": params, "policy": repr(policy), "steps": steps, "lr": lr,
            "optimizer": optimizer, "adam": list(adam), "seed": seed,
            "record_steps": rec.tolist(),
            "data": None if data is None else {"source": data.source, "labels": data.labels,
                                               "n": data.n},
            "versions": package_versions()}


def train(env: Bandit, objective, data: PairData | None = None, *, steps: int, lr: float,
          optimizer: str = "adam", seed: int = 0, policy: Policy | None = None, record=None,
          eval_data: PairData | None = None, adam=_ADAM_DEFAULTS,
          parallel: bool | None = None) -> Run:
    """Optimise ``objective`` on ``env`` with exact (population) gradients.

    Args:
      env: the bandit.
      objective: an :class:`~coverage_sim.objectives.Objective` or its name.
      data: offline pairs (:func:`coverage_sim.offline_pairs`), or unpaired examples
        (:func:`coverage_sim.unpaired_data`, KTO), for objectives that need them.
      steps: number of parameter updates.
      lr: step size.
      optimizer: ``"adam"``, ``"gd"`` (plain gradient descent) or ``"npg"`` (natural policy
        gradient: mirror descent on each context's simplex for tabular policies, Fisher-preconditioned
        for log-linear ones). npg converges fastest on online objectives (RLHF, online DPO/IPO) but
        its 1/pi preconditioner makes offline objectives that push probabilities to 0 unstable;
        a run that diverges raises ``FloatingPointError`` rather than returning NaN.
      seed: seeds ``numpy.random.default_rng`` for random initialisations; recorded in the config.
      policy: parameterisation; default :class:`~coverage_sim.policies.TabularSoftmax` at ``pi_ref``.
      record: record schedule: ``None`` (about 50 log-spaced steps), a number of points, or a list
        of steps.
      eval_data: held-out pairs for ranking accuracy; default the exact ``pi_ref x pi_ref`` pairs with
        gold Bradley-Terry labels (skipped above 1000 responses).
      adam: ``(beta1, beta2, eps)`` for Adam.
      parallel: split one large problem's pair rows over threads; default when K >= 512.

    With ``sync_ref_model=True`` in the objective (TR-DPO, Gorbatovski et al. 2024,
    arXiv:2404.09656) the reference moves: after every ``ref_model_sync_steps``-th update it becomes
    the geometric mixture normalise(pi^alpha pi_ref^(1-alpha)), alpha = ``ref_model_mixup_alpha``
    (TRL mixes parameters; for the engine's policies, whose logits are affine in their parameters,
    that is this mixture, starting from ``env.ref``), with the Adam state kept. The run then records
    the reference trajectory (:attr:`Run.references`) and the history gains ``kl_current_ref``
    (E_x KL(pi_t || pi_ref_t)) and ``coverage_current_ref`` (C* of pi*_beta under pi_ref_t);
    ``kl`` stays the KL to the original ``env.ref``.

    Policies outside the numba engine (``policy.kind`` not an engine kind, e.g.
    :class:`~coverage_sim.sequences.AutoregressiveTabular`) run a numpy loop over the policy's
    ``logp``/``grad`` with the engine's objective gradients and GD/Adam updates; ``"npg"`` is
    engine-only for them.

    Returns:
      A :class:`Run` with ``.policy`` (shaped like ``env.ref``) and ``.history``.

    Examples:
      >>> import coverage_sim as cs
      >>> env = cs.Bandit(reward=[1.0, 0.0, -1.0], ref=[1/3, 1/3, 1/3])
      >>> run = cs.train(env, cs.objective("rlhf", beta=1.0), steps=2000, lr=0.1)
      >>> bool(abs(run.policy - cs.optimal_policy(env, 1.0)).max() < 1e-6)
      True
    """
    objective, steps, lr, opt, policy, rec = _common_args(env, objective, steps, lr, optimizer,
                                                          policy, record)
    _check_data(env, data)
    engine = _is_engine_policy(policy)
    if not engine and opt == _engine.NPG:
        raise ValueError(f"optimizer='npg' is only available for engine policies (TabularSoftmax, "
                         f"LogLinear), got policy {policy!r}; use 'adam' or 'gd'")
    b1, b2, eps = (float(a) for a in adam)
    rng = np.random.default_rng(seed)
    theta = _engine.kernel_array(policy.init_params(env, rng))
    rlp = _engine.kernel_array(env.ref_logp2d)
    if parallel is None:
        parallel = env.n_responses >= _PARALLEL_ROWS_MIN_K
    sync = objective.ref_sync
    if sync is not None and not engine:
        raise ValueError(f"sync_ref_model=True (TR-DPO) needs an engine policy (TabularSoftmax, "
                         f"LogLinear), whose parameter mixing is a geometric mixture of the "
                         f"distributions; got policy {policy!r}")
    if not engine:
        out_lp, out_loss = _run_generic(env, objective, data, policy, theta, rlp, opt, lr,
                                        (b1, b2, eps), steps, rec, bool(parallel))
        config = _config(env, objective, policy, steps, lr, optimizer, seed, (b1, b2, eps), rec,
                         data)
        return _finish(env, objective, policy, theta, out_lp, out_loss, rec, data,
                       _default_eval_data(env, eval_data), config)
    features, base = policy.features_for(env), policy.base_for(env)
    n_ctx, k = env.n_contexts, env.n_responses
    out_lp = np.empty((rec.size, n_ctx, k))
    out_loss = np.empty(rec.size)
    if sync is not None:
        # TR-DPO: the reference moves inside the fused loop (the optimiser state is kept).
        terms = objective.terms(env, data, None)
        out_rlp = np.empty((rec.size, n_ctx, k))
        _engine.run_one(theta, policy.kind, features, base, rlp, terms, opt, lr, b1, b2, eps,
                        steps, rec, out_lp, out_loss, bool(parallel), sync[0], sync[1], out_rlp)
        config = _config(env, objective, policy, steps, lr, optimizer, seed, (b1, b2, eps), rec,
                         data)
        return _finish(env, objective, policy, theta, out_lp, out_loss, rec, data,
                       _default_eval_data(env, eval_data), config, out_rlp)
    # Iterative DPO rebuilds its pairs from the current policy at every iteration boundary.
    period = objective.refresh_every or max(steps, 1)
    start = 0
    while True:
        stop = min(start + period, steps)
        lp = _engine.policy_logp(policy.kind, theta, features, base, n_ctx, k)
        terms = objective.terms(env, data, lp)
        local = np.flatnonzero((rec >= start) & ((rec < stop) | (stop == steps)))
        seg_lp = np.empty((local.size, n_ctx, k))
        seg_loss = np.empty(local.size)
        _engine.run_one(theta, policy.kind, features, base, rlp, terms, opt, lr, b1, b2, eps,
                        stop - start, rec[local] - start, seg_lp, seg_loss, bool(parallel))
        out_lp[local], out_loss[local] = seg_lp, seg_loss
        if stop == steps:
            break
        start = stop
    config = _config(env, objective, policy, steps, lr, optimizer, seed, (b1, b2, eps), rec, data)
    return _finish(env, objective, policy, theta, out_lp, out_loss, rec, data,
                   _default_eval_data(env, eval_data), config)


def _run_generic(env, objective, data, policy, theta, rlp, opt, lr, adam, steps, rec, parallel):
    """The engine's step loop (``_engine.run_one`` plus iterative DPO's refreshes) in numpy.

    Updates ``theta`` in place and returns the record buffers ``(out_lp, out_loss)``. Matches the
    engine: the objective's terms are compiled at step 0 and, for iterative DPO, rebuilt from the
    current policy every ``refresh_every`` steps with a fresh Adam state; the loss is evaluated only
    at recorded steps. A non-finite gradient or update stops the run with ``theta`` set to NaN, so
    that :func:`_finish` reports the divergence; later records stay NaN.
    """
    b1, b2, eps = adam
    n_ctx, k = env.n_contexts, env.n_responses
    out_lp = np.full((rec.size, n_ctx, k), np.nan)
    out_loss = np.full(rec.size, np.nan)
    period = objective.refresh_every or max(steps, 1)
    m = np.zeros(theta.size)
    v = np.zeros(theta.size)
    nxt, seg_start, terms, wbuf = 0, 0, None, None
    for s in range(steps + 1):
        lp = _engine.kernel_array(env.as2d(policy.logp(env, theta), "logp"))
        if terms is None or (s % period == 0 and s < steps):
            terms = objective.terms(env, data, lp)
            wbuf = np.zeros((n_ctx, k, k) if _engine.needs_pair_buffer(terms) else (0, 0, 0))
            m[:], v[:], seg_start = 0.0, 0.0, s
        recording = nxt < rec.size and rec[nxt] == s
        if s == steps and not recording:
            break
        grad_lp = np.zeros((n_ctx, k))
        loss = _engine.objective_grad(terms, lp, rlp, grad_lp, recording, parallel, wbuf)
        if recording:
            out_lp[nxt], out_loss[nxt] = lp, loss
            nxt += 1
        if s == steps:
            break
        if np.isnan(grad_lp).any():
            theta[:] = np.nan
            break
        g = np.asarray(policy.grad(env, theta, env.like_ref(grad_lp)), dtype=np.float64)
        if opt == _engine.GD:
            theta -= lr * g
        else:
            t = s - seg_start + 1
            m[:] = b1 * m + (1.0 - b1) * g
            v[:] = b2 * v + (1.0 - b2) * g * g
            theta -= lr * (m / (1.0 - b1 ** t)) / (np.sqrt(v / (1.0 - b2 ** t)) + eps)
        if np.isnan(theta).any() or np.isposinf(theta).any():
            theta[:] = np.nan
            break
    return out_lp, out_loss


def _as_list(value, n: int, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name} must have {n} entries to match the batch, got {len(value)}")
        return list(value)
    return [value] * n


def train_many(envs: Bandit | Sequence[Bandit], objectives, datas=None, *, steps: int, lr,
               optimizer: str = "adam", seed: int = 0, policy: Policy | None = None,
               record=None, eval_data: PairData | None = None,
               adam=_ADAM_DEFAULTS) -> list[Run]:
    """Train many independent problems at once, with a numba ``prange`` over the batch.

    Any of ``envs``, ``objectives``, ``datas`` and ``lr`` may be a single value (shared) or a list
    (one per problem); lists must have one common length B. All problems must have the same shape
    and the same objective name (parameters such as ``beta`` may differ). Iterative DPO is not
    batched (its pairs are rebuilt in Python between iterations).

    Returns:
      B :class:`Run` objects, in order. Problem ``b`` is initialised with seed ``seed + b``.

    Examples:
      >>> import coverage_sim as cs
      >>> env = cs.Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5])
      >>> runs = cs.train_many(env, [cs.objective("rlhf", beta=b) for b in (0.5, 1.0)],
      ...                      steps=500, lr=0.1)
      >>> [round(float(r.policy[0]), 4) for r in runs]
      [0.8808, 0.7311]
    """
    sizes = [len(v) for v in (envs, objectives, datas, lr) if isinstance(v, (list, tuple))]
    n = max(sizes, default=1)
    if n == 0:
        raise ValueError("envs, objectives, datas and lr lists must not be empty (train_many needs "
                         "at least one problem)")
    env_list = _as_list(envs, n, "envs")
    obj_list = _as_list(objectives, n, "objectives")
    data_list = _as_list(datas, n, "datas")
    lr_list = _as_list(lr, n, "lr")
    checked = [_common_args(e, o, steps, lr_b, optimizer, policy, record)
               for e, o, lr_b in zip(env_list, obj_list, lr_list)]
    obj_list = [c[0] for c in checked]
    steps, opt, policy, rec = checked[0][1], checked[0][3], checked[0][4], checked[0][5]
    if not _is_engine_policy(policy):
        raise ValueError(f"train_many batches engine policies only (TabularSoftmax, LogLinear), "
                         f"got policy {policy!r}; train it problem by problem with train")
    shape = env_list[0].shape
    for e, o, d in zip(env_list, obj_list, data_list):
        if e.shape != shape:
            raise ValueError(f"all envs must have the same shape, got {shape} and {e.shape}")
        if o.name != obj_list[0].name:
            raise ValueError(f"all objectives must share one name, got {obj_list[0].name!r} "
                             f"and {o.name!r}")
        if o.refresh_every is not None:
            raise ValueError("iterative_dpo is not supported by train_many; use train")
        _check_data(e, d)
    b1, b2, eps = (float(a) for a in adam)
    thetas = np.stack([np.asarray(policy.init_params(e, np.random.default_rng(seed + b)),
                                  dtype=np.float64) for b, e in enumerate(env_list)])
    features = np.stack([policy.features_for(e) for e in env_list])
    bases = np.stack([policy.base_for(e) for e in env_list])
    rlps = np.stack([e.ref_logp2d for e in env_list])
    all_terms = [o.terms(e, d) for o, e, d in zip(obj_list, env_list, data_list)]
    if len({t[5] for t in all_terms}) > 1:
        # Some pair matrices are rank one and some are not: one batch runs one kernel, the dense one.
        all_terms = [o.terms(e, d, factored=False)
                     for o, e, d in zip(obj_list, env_list, data_list)]
    n_ctx, k = env_list[0].n_contexts, env_list[0].n_responses
    out_lp = np.empty((n, rec.size, n_ctx, k))
    out_loss = np.empty((n, rec.size))
    lrs = np.array([c[2] for c in checked])
    syncs = [o.ref_sync or (0, 1.0) for o in obj_list]
    moving = any(o.ref_sync is not None for o in obj_list)
    out_rlp = np.empty((n, rec.size if moving else 0, n_ctx, k))
    _engine.run_batch(thetas, policy.kind, features, bases, rlps, _engine.stack_terms(all_terms),
                      opt, lrs, b1, b2, eps, steps, rec, out_lp, out_loss,
                      np.array([s_[0] for s_ in syncs], dtype=np.int64),
                      np.array([s_[1] for s_ in syncs], dtype=np.float64), out_rlp)
    runs = []
    for b in range(n):
        config = _config(env_list[b], obj_list[b], policy, steps, float(lrs[b]), optimizer,
                         seed + b, (b1, b2, eps), rec, data_list[b])
        runs.append(_finish(env_list[b], obj_list[b], policy, thetas[b], out_lp[b], out_loss[b],
                            rec, data_list[b], _default_eval_data(env_list[b], eval_data), config,
                            out_rlp[b] if moving else None))
    return runs
