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

import contextlib
import functools
import importlib.metadata
import platform
from dataclasses import dataclass, field
from typing import Sequence

import numba
import numpy as np
import pandas as pd

from coverage_sim import _engine, _threads, sampling
from coverage_sim._dpo_fast import DENSE, FACTORED
from coverage_sim._progress import progress_bar, wants_progress
from coverage_sim._validation import check_choice, check_in_range, check_int, check_positive
from coverage_sim.coverage import concentrability
from coverage_sim.data import PairData, UnpairedData
from coverage_sim.env import Bandit, optimal_policy
from coverage_sim.metrics import (REFERENCE_PAIRS, kl_divergence, policy_metrics,
                                  select_metrics)
from coverage_sim.objectives import Objective, objective as make_objective
from coverage_sim.policies import Policy, TabularSoftmax

__all__ = ["Run", "train", "train_many", "train_policies", "log_schedule",
           "package_versions"]

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
    return dict(_package_versions())


@functools.lru_cache(maxsize=1)
def _package_versions() -> tuple[tuple[str, str], ...]:
    # Reading package metadata takes ~25 ms; the versions cannot change within a process.
    out = {"python": platform.python_version()}
    for name in ("coverage-sim", "numpy", "scipy", "numba", "pandas", "torch"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return tuple(out.items())


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


#: A recorded loss above loss_0 + _DIVERGED * max(|loss_0|, 1) means the run diverged: no
#: objective here should grow by four orders of magnitude while it is minimised.
_DIVERGED = 1e4


def _check_adam(adam) -> tuple[float, float, float]:
    """Adam's ``(beta1, beta2, eps)``: both betas in [0, 1), eps > 0."""
    try:
        b1, b2, eps = adam
    except (TypeError, ValueError):
        raise ValueError(f"adam must be a tuple (beta1, beta2, eps), got {adam!r}") from None
    return (check_in_range(b1, "adam beta1", 0.0, 1.0, high_open=True),
            check_in_range(b2, "adam beta2", 0.0, 1.0, high_open=True),
            check_positive(eps, "adam eps"))


def _check_data(env: Bandit, data, objective=None):
    if data is None:
        return
    if objective is not None and not objective.needs_data:
        raise ValueError(f"data was given, but objective {objective.name!r} does not use offline "
                         f"data (it is {objective.spec.family}); pass data=None")
    if isinstance(data, UnpairedData):
        if objective is not None and not objective.unpaired:
            raise ValueError(f"data is an UnpairedData, which only the KTO-trainer objectives "
                             f"(kto, apo_zero_unpaired) take; objective {objective.name!r} needs "
                             f"a PairData (see coverage_sim.offline_pairs)")
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


def _default_eval_data(env: Bandit, eval_data, metrics=None):
    """The held-out pairs: ``eval_data``, else the exact pi_ref x pi_ref Bradley-Terry pairs
    (``"reference"``, formed pair by pair) up to 1000 responses or when a ranking metric is asked
    for."""
    if eval_data is not None:
        return eval_data
    asked = () if metrics is None else [metrics] if isinstance(metrics, str) else metrics
    try:
        ranking = bool({"ranking_accuracy", "ideal_ranking_accuracy"} & set(asked))
    except TypeError:  # not a sequence of names: select_metrics says so
        ranking = False
    return REFERENCE_PAIRS if env.n_responses <= _RANKING_MAX_K or ranking else None


def _metric_plan(env: Bandit, objective: Objective, data, eval_data, metrics):
    """``(eval_data, metric names)`` for a run, checked before any training step is taken."""
    eval_data = _default_eval_data(env, eval_data, metrics)
    names = select_metrics(metrics, beta=objective.beta, data=data, eval_data=eval_data,
                           proxy_reward=objective.params.get("reward"))
    return eval_data, names


def _check_diverged(objective, theta, out_lp, out_loss, rec, optimizer, lr) -> None:
    """FloatingPointError if the run produced NaN, an infinite loss or a loss that grew by orders of
    magnitude (a finite blow-up is as wrong as a NaN, only quieter)."""
    nan_lp = np.isnan(out_lp).any(axis=(1, 2))
    bad_loss = ~np.isfinite(out_loss)
    grown = np.zeros_like(bad_loss)
    if out_loss.size and np.isfinite(out_loss[0]):
        with np.errstate(invalid="ignore"):
            grown = out_loss > out_loss[0] + _DIVERGED * max(abs(out_loss[0]), 1.0)
    bad = np.flatnonzero(nan_lp | bad_loss | grown)
    if not (bad.size or np.isnan(theta).any()):
        return
    if not bad.size:
        where = "NaN at the end"
    elif grown[bad[0]]:
        where = (f"its loss grew from {out_loss[0]:.4g} to {out_loss[bad[0]]:.4g} by recorded step "
                 f"{rec[bad[0]]}")
    else:
        what = "NaN" if nan_lp[bad[0]] or np.isnan(out_loss[bad[0]]) else "an infinite loss"
        where = f"first {what} at recorded step {rec[bad[0]]}"
    raise FloatingPointError(
        f"training {objective.name!r} diverged ({where}) with optimizer="
        f"{optimizer!r}, lr={lr}; lower lr (natural policy gradient divides "
        "by pi, so it needs small steps on objectives that push probabilities towards 0)")


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


def _finish(env, objective, policy, theta, out_lp, out_loss, rec, data, plan, config,
            extra=None, out_rlp=None) -> Run:
    _check_diverged(objective, theta, out_lp, out_loss, rec, config["optimizer"], config["lr"])
    shaped = np.exp(out_lp).reshape((len(rec),) + env.shape)
    eval_data, names = plan
    metrics = policy_metrics(env, shaped, beta=objective.beta, data=data, eval_data=eval_data,
                             proxy_reward=objective.params.get("reward"),
                             log_policies=out_lp.reshape(shaped.shape), metrics=names)
    if out_rlp is not None and names:
        metrics.update(_reference_metrics(env, objective, shaped, out_rlp))
    # extra: the sampled mode's cumulative `samples` and `queries` columns
    history = pd.DataFrame({"step": rec, "loss": out_loss, **(extra or {}), **metrics})
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


def _config(env, objective, policy, steps, lr, optimizer, seed, adam, rec, data,
            sampled=(None, 1, None)):
    params = {k: ("<array>" if isinstance(v, np.ndarray) else v)
              for k, v in objective.params.items()}
    batch_size, reuse, est = sampled
    return {"env": env.name, "shape": list(env.shape), "objective": objective.name,
            "params": params, "policy": repr(policy), "steps": steps, "lr": lr,
            "optimizer": optimizer, "adam": list(adam), "seed": seed,
            "record_steps": rec.tolist(),
            "data": None if data is None else {"source": data.source, "labels": data.labels,
                                               "n": data.n},
            "batch_size": batch_size, "reuse": reuse,
            "estimator": None if est is None else est.as_dict(),
            "versions": package_versions()}


def train(env: Bandit, objective, data: PairData | None = None, *, steps: int, lr: float,
          optimizer: str = "adam", seed: int = 0, policy: Policy | None = None, record=None,
          eval_data: PairData | str | None = None, adam=_ADAM_DEFAULTS,
          parallel: bool | None = None, metrics: Sequence[str] | None = None,
          progress: bool | None = None, batch_size: int | None = None, reuse: int = 1,
          estimator=None) -> Run:
    """Optimise ``objective`` on ``env`` with exact (population) or sampled gradients.

    Args:
      env: the bandit.
      objective: an :class:`~coverage_sim.objectives.Objective` or its name.
      data: offline pairs (:func:`coverage_sim.offline_pairs`), or unpaired examples
        (:func:`coverage_sim.unpaired_data`, KTO), for objectives that need them (an objective
        that does not use data refuses it rather than ignore it).
      steps: number of parameter updates.
      lr: step size.
      optimizer: ``"adam"``, ``"gd"`` (plain gradient descent) or ``"npg"`` (natural policy
        gradient: mirror descent on each context's simplex for tabular policies, Fisher-preconditioned
        for log-linear ones). npg converges fastest on online objectives (RLHF, online DPO/IPO) but
        its 1/pi preconditioner makes offline objectives that push probabilities to 0 unstable;
        a run that diverges (NaN, an infinite loss, or a loss that grows by four orders of
        magnitude) raises ``FloatingPointError`` rather than returning it.
      seed: seeds ``numpy.random.default_rng`` for random initialisations (an integer >= 0);
        recorded in the config.
      policy: parameterisation; default :class:`~coverage_sim.policies.TabularSoftmax` at ``pi_ref``.
      record: record schedule: ``None`` (about 50 log-spaced steps), a number of points, or a list
        of steps.
      eval_data: held-out pairs for ranking accuracy; default ``"reference"``, the exact
        ``pi_ref x pi_ref`` pairs with gold Bradley-Terry labels (formed pair by pair, never
        stored), up to 1000 responses (above, only when ``metrics`` asks for a ranking metric).
      adam: ``(beta1, beta2, eps)`` for Adam, betas in ``[0, 1)``, ``eps > 0``.
      parallel: split one large problem's pair rows over threads (exact mode); default when
        K >= 512 and more than one core is free at the start of the call (see the README's notes on threads;
        ``COVERAGE_SIM_THREADS`` fixes the count).
      metrics: the history's metric columns (:data:`coverage_sim.metrics.METRICS` names, in that
        order after ``step`` and ``loss``); default every metric the objective, ``data`` and
        ``eval_data`` allow (see :func:`coverage_sim.metrics.policy_metrics`). The ranking metrics
        are the only ones that cost O(K^2) per recorded step; ``metrics=[]`` records the loss only.
      progress: show a progress bar; default (``None``) when the call is estimated to take more
        than a few seconds, unless ``COVERAGE_SIM_PROGRESS=0``.
      batch_size: ``None`` (exact population gradients) or an integer: train on sampled batches of
        that size (pairs offline, groups online and for rlhf, responses for best_of_n/awr; see
        :mod:`coverage_sim.sampling`). Metrics stay exact (computed from pi itself); the history's
        ``loss`` is the batch's plug-in estimate, and two more columns count the cumulative
        ``samples`` (responses drawn) and ``queries`` (reward/label evaluations) of the batches
        that produced each recorded policy. The sampling stream is the first child of
        ``SeedSequence(seed)``.
      reuse: gradient steps per drawn batch (sampled mode), >= 1.
      estimator: a :class:`~coverage_sim.sampling.Estimator`, a dict of its fields, or ``None``
        for the objective's (unbiased) defaults.

    With ``sync_ref_model=True`` in the objective (TR-DPO, Gorbatovski et al. 2024,
    arXiv:2404.09656) the reference moves: after every ``ref_model_sync_steps``-th update it becomes
    the geometric mixture normalise(pi^alpha pi_ref^(1-alpha)), alpha = ``ref_model_mixup_alpha``
    (TRL mixes parameters; for the engine's policies, whose logits are affine in their parameters,
    that is this mixture, starting from ``env.ref``), with the Adam state kept, in exact and sampled
    mode alike, whole or in the chunks a progress bar runs (the reference carries over). The run
    then records the reference trajectory (:attr:`Run.references`) and, unless ``metrics=[]``, the
    history gains ``kl_current_ref`` (E_x KL(pi_t || pi_ref_t)) and ``coverage_current_ref`` (C* of
    pi*_beta under pi_ref_t); ``kl`` stays the KL to the original ``env.ref``.

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
    _check_data(env, data, objective)
    seed = check_int(seed, "seed", minimum=0)
    sampled = sampling.check_training_options(objective, data, batch_size, reuse, estimator)
    plan = _metric_plan(env, objective, data, eval_data, metrics)
    engine = _is_engine_policy(policy)
    if not engine and opt == _engine.NPG:
        raise ValueError(f"optimizer='npg' is only available for engine policies (TabularSoftmax, "
                         f"LogLinear), got policy {policy!r}; use 'adam' or 'gd'")
    b1, b2, eps = _check_adam(adam)
    rng = np.random.default_rng(seed)
    theta = _engine.kernel_array(policy.init_params(env, rng))
    rlp = _engine.kernel_array(env.ref_logp2d)
    if objective.ref_sync is not None and not engine:
        raise ValueError(f"sync_ref_model=True (TR-DPO) needs an engine policy (TabularSoftmax, "
                         f"LogLinear), whose parameter mixing is a geometric mixture of the "
                         f"distributions; got policy {policy!r}")
    if sampled[0] is not None:
        out_lp, out_loss, n_samples, n_queries, out_rlp = sampling.train_sampled(
            env, objective, data, policy, theta, opt, lr, (b1, b2, eps), steps, rec, *sampled,
            seed)
        config = _config(env, objective, policy, steps, lr, optimizer, seed, (b1, b2, eps), rec,
                         data, sampled)
        return _finish(env, objective, policy, theta, out_lp, out_loss, rec, data, plan, config,
                       extra={"samples": n_samples, "queries": n_queries}, out_rlp=out_rlp)
    parallel, threads = _row_threads(parallel, env.n_responses)
    desc = f"train {objective.name} (K={env.n_responses})"
    out_rlp = None
    with _threads.numba_threads(threads) if threads else contextlib.nullcontext():
        if not engine:
            work = _Work(progress, desc, _generic_step_ns(env), 0.0, _finish_ns(env, plan), steps,
                         rec.size, 1)
            out_lp, out_loss = _run_generic(env, objective, data, policy, theta, rlp, opt, lr,
                                            (b1, b2, eps), steps, rec, bool(parallel), work)
        else:
            out_lp, out_loss, out_rlp, work = _run_engine(
                env, objective, data, policy, theta, rlp, opt, lr, (b1, b2, eps), steps, rec,
                parallel, plan, progress, desc, threads or 1)
        config = _config(env, objective, policy, steps, lr, optimizer, seed, (b1, b2, eps), rec,
                         data)
        with work:
            return work.finish(_finish(env, objective, policy, theta, out_lp, out_loss, rec, data,
                                       plan, config, out_rlp=out_rlp))


def _row_threads(parallel, k: int) -> tuple[bool, int | None]:
    """``(parallel rows, numba threads)`` for one problem; ``None`` threads: leave numba's count.

    By default one problem's pair rows are split over threads only when K >= 512 and more than
    one core is free right now (:func:`coverage_sim._threads.thread_budget`): a step is a few
    hundred microseconds, and on a busy machine two threads that wait for each other at every step
    are slower than one.
    """
    if parallel is not None:
        return bool(parallel), None
    if k < _PARALLEL_ROWS_MIN_K:
        return False, None
    threads = _threads.thread_budget()
    return threads > 1, threads


def _run_engine(env, objective, data, policy, theta, rlp, opt, lr, adam, steps, rec, parallel,
                plan, progress, desc, threads):
    """The fused numba loop over iterative DPO's segments (one segment otherwise); returns the
    record buffers ``(out_lp, out_loss, out_rlp)`` (``out_rlp``: TR-DPO's recorded reference, else
    None) and the run's :class:`_Work`."""
    b1, b2, eps = adam
    features, base = policy.features_for(env), policy.base_for(env)
    n_ctx, k = env.n_contexts, env.n_responses
    out_lp = np.empty((rec.size, n_ctx, k))
    out_loss = np.empty(rec.size)
    sync = objective.ref_sync
    out_rlp = None if sync is None else np.empty((rec.size, n_ctx, k))
    # Iterative DPO rebuilds its pairs from the current policy at every iteration boundary.
    period = objective.refresh_every or max(steps, 1)
    start, work = 0, None
    while True:
        stop = min(start + period, steps)
        lp = _engine.policy_logp(policy.kind, theta, features, base, n_ctx, k)
        terms = objective.terms(env, data, lp)
        if work is None:
            step_ns, record_ns = _step_ns(terms, env, features, plan)
            work = _Work(progress, desc, step_ns, record_ns, _finish_ns(env, plan), steps,
                         rec.size, threads if parallel else 1)
        local = np.flatnonzero((rec >= start) & ((rec < stop) | (stop == steps)))
        seg_lp = np.empty((local.size, n_ctx, k))
        seg_loss = np.empty(local.size)
        seg_rlp = None if sync is None else np.empty((local.size, n_ctx, k))
        _run_segment(work, theta, policy.kind, features, base, rlp, terms, opt, lr, b1, b2, eps,
                     stop - start, rec[local] - start, seg_lp, seg_loss,
                     _engine.row_mode(parallel), sync, seg_rlp)
        out_lp[local], out_loss[local] = seg_lp, seg_loss
        if sync is not None:
            out_rlp[local] = seg_rlp
        if stop == steps:
            break
        start = stop
    return out_lp, out_loss, out_rlp, work


def _run_segment(work, theta, kind, features, base, rlp, terms, opt, lr, b1, b2, eps, steps,
                 rec, out_lp, out_loss, parallel_rows, sync=None, out_rlp=None):
    """:func:`coverage_sim._engine.run_one` (one optimiser segment), in chunks of about
    :data:`_CHUNK_SECONDS` of estimated work when a progress bar is shown. Chunks carry Adam's
    state (and TR-DPO's moving reference, when ``sync`` = ``(tau, alpha)``, recorded into
    ``out_rlp``), so they give the same bits as one call."""
    if sync is None and work.chunk >= steps:
        _engine.run_one(theta, kind, features, base, rlp, terms, opt, lr, b1, b2, eps, steps, rec,
                        out_lp, out_loss, parallel_rows)
        work.advance(steps, rec.size)
        return
    m, v = np.zeros(theta.size), np.zeros(theta.size)
    n_ctx, k = rlp.shape
    if sync is None:
        ref, tau, alpha, no_record = rlp, 0, 1.0, np.empty((0, n_ctx, k))
    else:
        ref, (tau, alpha) = rlp.copy(), sync
    first = 0
    while first < steps:
        stop = min(first + work.chunk, steps)
        last = stop == steps
        i0 = np.searchsorted(rec, first)
        i1 = np.searchsorted(rec, stop, "right" if last else "left")
        rlp_chunk = no_record if sync is None else out_rlp[i0:i1]
        _engine.run_chunk(theta, kind, features, base, rlp, terms, opt, lr, b1, b2, eps,
                          stop - first, last, rec[i0:i1] - first, out_lp[i0:i1], out_loss[i0:i1],
                          parallel_rows, m, v, first, ref, int(tau), float(alpha), rlp_chunk)
        work.advance(stop - first, i1 - i0)
        first = stop


#: A progress bar advances after about this much estimated work (a fused loop runs in chunks).
_CHUNK_SECONDS = 0.25


class _Work:
    """A run's estimated cost (from a cost model in nanoseconds of one serial core) and its bar.

    The estimate decides whether an automatic bar is shown (``progress=None``); the bar advances
    by estimated work, so its remaining time is right even where recorded steps (loss and metrics)
    crowd together early in a log-spaced schedule.
    """

    def __init__(self, progress, desc, step_ns, record_ns, finish_ns, steps, records, threads):
        self.step_ns, self.record_ns, self.finish_ns = step_ns, record_ns, finish_ns
        total = steps * step_ns + records * record_ns + finish_ns
        expected = 1e-9 * (steps * step_ns / max(threads, 1) + records * record_ns + finish_ns)
        self.bar = progress_bar(wants_progress(progress, expected), total, desc)
        self.chunk = (max(steps, 1) if self.bar.disable
                      else max(1, int(_CHUNK_SECONDS * 1e9 * max(threads, 1) / max(step_ns, 1.0))))

    def advance(self, steps: int, records: int) -> None:
        self.bar.update(steps * self.step_ns + records * self.record_ns)

    def finish(self, result):
        self.bar.update(self.finish_ns)
        return result

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()
        return False


def _finish_ns(env: Bandit, plan) -> float:
    """Estimated cost of a run's once-per-call metric work: the O(K^2) win-rate vector and R*."""
    n_pairs = env.n_contexts * env.n_responses ** 2 / 2
    names = plan[1]
    return 1e6 + n_pairs * (("win_rate" in names) + 2.0 * ("ideal_ranking_accuracy" in names))


def _metric_record_ns(env: Bandit, plan) -> float:
    """Estimated metric cost per recorded policy."""
    eval_data, names = plan
    per_record = 100.0 * env.n_contexts * env.n_responses
    if "ranking_accuracy" in names:
        n = env.n_responses
        per_record += env.n_contexts * n * n * (0.5 if isinstance(eval_data, str) else 0.4)
    return per_record


def _step_ns(terms, env: Bandit, features, plan) -> tuple[float, float]:
    """``(per step, per recorded step)`` estimated nanoseconds of the fused loop on these terms
    (one core, measured on the project's machine; only their ratios matter for the bar)."""
    codes, source, fast = terms[0], terms[2], terms[5]
    n_ctx, k = env.n_contexts, env.n_responses
    full = n_ctx * k * k
    upper = n_ctx * k * (k + 1) / 2
    dim = features.shape[2] if features.ndim == 3 else 1
    step = 500.0 + n_ctx * k * (10.0 + 2.0 * dim)
    if terms[19] == _engine.NASH_MD:
        step += 5.0 * full    # P(y > pi_mix): one K x K product per context
    if len(codes) == 0:
        record = step
    elif source in (_engine.ONLINE, _engine.ONLINE_REF):
        step += 20.0 * len(codes) * full
        record = step
    elif fast in (FACTORED, DENSE):
        step += (0.35 if fast == FACTORED else 0.6) * upper
        record = step + 2.5 * upper + 0.3 * full
    else:
        step += 15.0 * len(codes) * full
        record = step
    return step, record + _metric_record_ns(env, plan)


def _generic_step_ns(env: Bandit) -> float:
    """Estimated nanoseconds of one step of the numpy loop for policies outside the engine."""
    return 2e4 + 50.0 * env.n_contexts * env.n_responses


def _run_generic(env, objective, data, policy, theta, rlp, opt, lr, adam, steps, rec, parallel,
                 work):
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
        loss = _engine.objective_grad(terms, lp, rlp, grad_lp, recording,
                                      _engine.row_mode(parallel), wbuf)
        if recording:
            out_lp[nxt], out_loss[nxt] = lp, loss
            nxt += 1
        work.advance(s < steps, recording)
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


@dataclass(frozen=True, eq=False)
class _Batch:
    """A trained batch: its problems, their metric plans and the engine's raw outputs."""

    envs: list
    objectives: list
    datas: list
    policies: list
    plans: list               # (eval_data, metric names) per problem; None when not asked for
    sampled: list             # (batch_size, reuse, estimator) per problem
    steps: int
    record: np.ndarray
    lrs: np.ndarray
    adam: tuple
    thetas: np.ndarray        # (B, P) final parameters
    log_policies: np.ndarray  # (B, R, X, K)
    losses: np.ndarray        # (B, R)
    extra: list               # per problem: the sampled mode's `samples`/`queries` columns, or None
    references: np.ndarray | None  # (B, R, X, K) TR-DPO's recorded log-references, or None

    @property
    def size(self) -> int:
        return len(self.envs)


def _train_batch(envs, objectives, datas, steps, lr, optimizer, seed, policy, record, adam, *,
                 eval_data=None, metrics=None, plans=True, progress=None, batch_size=None, reuse=1,
                 estimator=None) -> _Batch:
    """Validate a batch of problems (and, when ``plans``, their metric requests: before any step is
    taken), compile their objectives and run them on the engine, exact or sampled."""
    sizes = [len(v) for v in (envs, objectives, datas, lr, policy) if isinstance(v, (list, tuple))]
    n = max(sizes, default=1)
    if n == 0:
        raise ValueError("envs, objectives, datas, lr and policy lists must not be empty "
                         "(train_many needs at least one problem)")
    env_list = _as_list(envs, n, "envs")
    obj_list = _as_list(objectives, n, "objectives")
    data_list = _as_list(datas, n, "datas")
    lr_list = _as_list(lr, n, "lr")
    policy_list = _as_list(policy, n, "policy")
    checked = [_common_args(e, o, steps, lr_b, optimizer, pol, record)
               for e, o, lr_b, pol in zip(env_list, obj_list, lr_list, policy_list)]
    obj_list = [c[0] for c in checked]
    policy_list = [c[4] for c in checked]
    steps, opt, policy, rec = checked[0][1], checked[0][3], checked[0][4], checked[0][5]
    for pol in policy_list:
        if not _is_engine_policy(pol):
            raise ValueError(f"train_many batches engine policies only (TabularSoftmax, "
                             f"LogLinear), got policy {pol!r}; train it problem by problem with "
                             f"train")
        if pol.kind != policy.kind:
            raise ValueError(f"all policies of a batch must be of one kind, got {policy!r} and "
                             f"{pol!r}")
    sampled = [sampling.check_training_options(o, d, batch_size, reuse, estimator)
               for o, d in zip(obj_list, data_list)]
    shape = env_list[0].shape
    for e, o, d in zip(env_list, obj_list, data_list):
        if e.shape != shape:
            raise ValueError(f"all envs must have the same shape, got {shape} and {e.shape}")
        if o.name != obj_list[0].name or o.needs_data != obj_list[0].needs_data:
            raise ValueError(f"all objectives must share one name (and vpo one mode), got "
                             f"{obj_list[0]!r} and {o!r}")
        if o.refresh_every is not None and batch_size is None:
            raise ValueError("exact iterative_dpo is not supported by train_many; use train, or "
                             "pass batch_size for sampled iterative DPO")
        _check_data(e, d, o)
    seed = check_int(seed, "seed", minimum=0)
    plan_list = ([_metric_plan(e, o, d, eval_data, metrics)
                  for e, o, d in zip(env_list, obj_list, data_list)] if plans else [None] * n)
    b1, b2, eps = _check_adam(adam)
    thetas = [np.asarray(pol.init_params(e, np.random.default_rng(seed + b)), dtype=np.float64)
              for b, (e, pol) in enumerate(zip(env_list, policy_list))]
    if len({t.size for t in thetas}) > 1:
        raise ValueError(f"all policies of a batch must have the same number of parameters, got "
                         f"{sorted({t.size for t in thetas})}")
    thetas = np.stack(thetas)
    features = np.stack([pol.features_for(e) for e, pol in zip(env_list, policy_list)])
    bases = np.stack([pol.base_for(e) for e, pol in zip(env_list, policy_list)])
    rlps = np.stack([e.ref_logp2d for e in env_list])
    lrs = np.array([c[2] for c in checked])

    def batch(log_policies, losses, extra, references):
        return _Batch(envs=env_list, objectives=obj_list, datas=data_list, policies=policy_list,
                      plans=plan_list, sampled=sampled, steps=steps, record=rec, lrs=lrs,
                      adam=(b1, b2, eps), thetas=thetas, log_policies=log_policies, losses=losses,
                      extra=extra, references=references)

    # TR-DPO's moving reference, per problem: (sync every tau updates, mixing alpha); tau = 0 fixed
    syncs = [o.ref_sync or (0, 1.0) for o in obj_list]
    moving = any(o.ref_sync is not None for o in obj_list)
    ref_taus = np.array([s_[0] for s_ in syncs], dtype=np.int64)
    ref_alphas = np.array([s_[1] for s_ in syncs], dtype=np.float64)
    n_ctx, k = env_list[0].n_contexts, env_list[0].n_responses
    out_rlp = np.empty((n, rec.size if moving else 0, n_ctx, k))
    threads = min(n, numba.get_num_threads())   # whole problems per thread
    if batch_size is not None:
        out_lp, out_loss, n_samples, n_queries = sampling.train_many_sampled(
            env_list, obj_list, data_list, policy, thetas, features, bases, rlps, opt, lrs,
            (b1, b2, eps), steps, rec, sampled[0][0], sampled[0][1], [t[2] for t in sampled],
            seed, ref_taus, ref_alphas, out_rlp, threads)
        return batch(out_lp, out_loss, [{"samples": n_samples[b], "queries": n_queries[b]}
                                        for b in range(n)], out_rlp if moving else None)
    all_terms = [o.terms(e, d) for o, e, d in zip(obj_list, env_list, data_list)]
    if len({t[5] for t in all_terms}) > 1:
        # Some pair matrices are rank one and some are not: one batch runs one kernel, the dense one.
        all_terms = [o.terms(e, d, factored=False)
                     for o, e, d in zip(obj_list, env_list, data_list)]
    stacked = _engine.stack_terms(all_terms)
    out_lp = np.empty((n, rec.size, n_ctx, k))
    out_loss = np.empty((n, rec.size))
    cost_plan = plan_list[0] if plans else (None, ())
    step_ns, record_ns = _step_ns(all_terms[0], env_list[0], features[0], cost_plan)
    work = _Work(progress, f"train_many {obj_list[0].name} (B={n}, K={k})", n * step_ns,
                 n * record_ns, n * _finish_ns(env_list[0], cost_plan), steps, rec.size, threads)
    with work:
        # One pass of the threads over the whole batch (per chunk when a bar is shown): each
        # thread runs whole problems, so a busy machine slows it down but never makes threads
        # wait per step.
        m, v = np.zeros(thetas.shape), np.zeros(thetas.shape)
        refs = rlps.copy()   # the current references, moved in place by TR-DPO's problems
        first = 0
        while True:
            stop = min(first + work.chunk, steps)
            last = stop == steps
            i0 = np.searchsorted(rec, first)
            i1 = np.searchsorted(rec, stop, "right" if last else "left")
            whole = i0 == 0 and i1 == rec.size
            if whole:
                lp_chunk, loss_chunk, rlp_chunk = out_lp, out_loss, out_rlp
            else:
                lp_chunk, loss_chunk = np.empty((n, i1 - i0, n_ctx, k)), np.empty((n, i1 - i0))
                rlp_chunk = np.empty((n, i1 - i0 if moving else 0, n_ctx, k))
            _engine.run_batch_chunk(
                thetas, policy.kind, features, bases, rlps, stacked, opt, lrs, b1, b2, eps,
                stop - first, last, rec[i0:i1] - first, lp_chunk, loss_chunk, m, v, first, refs,
                ref_taus, ref_alphas, rlp_chunk, threads)
            if not whole:
                out_lp[:, i0:i1], out_loss[:, i0:i1] = lp_chunk, loss_chunk
                if moving:
                    out_rlp[:, i0:i1] = rlp_chunk
            work.advance(stop - first, i1 - i0)
            if last:
                break
            first = stop
        work.finish(None)
    return batch(out_lp, out_loss, [None] * n, out_rlp if moving else None)


def train_many(envs: Bandit | Sequence[Bandit], objectives, datas=None, *, steps: int, lr,
               optimizer: str = "adam", seed: int = 0,
               policy: Policy | Sequence[Policy] | None = None, record=None,
               eval_data: PairData | str | None = None, adam=_ADAM_DEFAULTS,
               metrics: Sequence[str] | None = None, progress: bool | None = None,
               batch_size: int | None = None, reuse: int = 1, estimator=None) -> list[Run]:
    """Train many independent problems at once, whole problems spread over threads.

    Any of ``envs``, ``objectives``, ``datas``, ``lr`` and ``policy`` may be a single value (shared)
    or a list (one per problem); lists must have one common length B. All problems must have the
    same shape and the same objective name (parameters such as ``beta`` may differ), and their
    policies one kind and one parameter count (e.g. log-linear policies with each instance's own
    features of one dimension). Exact iterative DPO is not batched (its pairs are rebuilt in Python
    between iterations); sampled iterative DPO is. ``record``, ``eval_data``, ``metrics`` and
    ``progress`` are as in :func:`train`. The batch is split over as many threads as numba's
    (``numba.get_num_threads()``), each running the compiled training loop of :func:`train` on
    whole problems with the GIL released, so a busy machine slows it down without making threads
    wait for each other at every step.

    ``batch_size``, ``reuse`` and ``estimator`` (shared by all problems) select sampled training as
    in :func:`train`; problem ``b`` draws from the sampling stream of ``seed + b``, so it equals
    ``train(..., seed=seed + b)`` bit for bit, whatever the thread count.

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
    batch = _train_batch(envs, objectives, datas, steps, lr, optimizer, seed, policy, record, adam,
                         eval_data=eval_data, metrics=metrics, progress=progress,
                         batch_size=batch_size, reuse=reuse, estimator=estimator)
    runs = []
    for b in range(batch.size):
        env, obj, data, pol = (batch.envs[b], batch.objectives[b], batch.datas[b],
                               batch.policies[b])
        config = _config(env, obj, pol, batch.steps, float(batch.lrs[b]), optimizer, seed + b,
                         batch.adam, batch.record, data, batch.sampled[b])
        out_rlp = None
        if batch.references is not None and obj.ref_sync is not None:
            out_rlp = batch.references[b]
        runs.append(_finish(env, obj, pol, batch.thetas[b], batch.log_policies[b],
                            batch.losses[b], batch.record, data, batch.plans[b], config,
                            extra=batch.extra[b], out_rlp=out_rlp))
    return runs


def train_policies(envs: Bandit | Sequence[Bandit], objectives, datas=None, *, steps: int, lr,
                   optimizer: str = "adam", seed: int = 0,
                   policy: Policy | Sequence[Policy] | None = None, record=None,
                   adam=_ADAM_DEFAULTS, progress: bool | None = None,
                   batch_size: int | None = None, reuse: int = 1,
                   estimator=None) -> np.ndarray:
    """:func:`train_many` without the per-problem results: only the recorded log-policies.

    The lean batched path for sweeps of many small problems (e.g. the gap atlas trains tens of
    thousands): the same batch of problems, seeds and threaded engine as :func:`train_many`,
    but no :class:`Run`, history ``DataFrame``, metrics or config per problem, so the Python cost per
    problem is only compiling its objective. Compute the metrics you need on the returned array
    (:mod:`coverage_sim.metrics` takes leading batch axes).

    Args:
      envs, objectives, datas, steps, lr, optimizer, seed, policy: as :func:`train_many`.
      adam, progress, batch_size, reuse, estimator: as :func:`train_many`.
      record: record schedule as in :func:`train` (default about 50 log-spaced steps); pass
        ``[steps]`` to keep only the final policy.

    Returns:
      ``log pi`` at the recorded steps, shape ``(B, R) + env.shape`` (``R`` recorded steps, in
      increasing order). ``FloatingPointError`` if a problem diverged, as in :func:`train`.

    Examples:
      >>> import numpy as np, coverage_sim as cs
      >>> env = cs.Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5])
      >>> logp = cs.train_policies(env, [cs.objective("rlhf", beta=b) for b in (0.5, 1.0)],
      ...                          steps=500, lr=0.1, record=[500])
      >>> logp.shape, np.exp(logp[:, -1, 0]).round(4).tolist()
      ((2, 1, 2), [0.8808, 0.7311])
    """
    batch = _train_batch(envs, objectives, datas, steps, lr, optimizer, seed, policy, record, adam,
                         plans=False, progress=progress, batch_size=batch_size, reuse=reuse,
                         estimator=estimator)
    for b in range(batch.size):
        _check_diverged(batch.objectives[b], batch.thetas[b], batch.log_policies[b],
                        batch.losses[b], batch.record, optimizer, float(batch.lrs[b]))
    shape = (batch.size, batch.record.size) + batch.envs[0].shape
    return batch.log_policies.reshape(shape)
