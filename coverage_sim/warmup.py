"""Compiling the numba kernels ahead of use, in groups that separate processes compile at once.

numba compiles a kernel on its first call and caches the machine code beside the source
(``cache=True``), so only a fresh clone (or a changed source file) pays: about 80 s of one core,
most of it in two kernels, the exact training loop (:func:`coverage_sim._engine.run_chunk`)
and the sampled one (:func:`coverage_sim._sampled.run_one_sampled`), each compiling the objectives
inlined under it. Processes that start cold at the same time each compile the same kernels, so
``coverage-sim reproduce`` first compiles :data:`GROUPS`, each in one worker process (about 45 s
of wall time on two cores) and starts the experiments once every group is in the cache; a
worker done with its group while another still compiles runs the units of the experiments that
call no kernel meanwhile (the torch-only ones, ``Experiment.needs_kernels``), or else imports the
experiments (:func:`import_experiments`).
With a warm cache a group only loads the cached code (about a second).

Each group calls the public functions on a tiny bandit with the argument types every call uses
(the engine takes one layout of arrays: contiguous float64), so the kernels it compiles are the
ones the experiments load.
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["GROUPS", "import_experiments", "warm_up"]

#: The kernel groups, in the order a pool should start them (measured 2026-12-04, one core, cold):
#: ``"exact"`` the exact training loop and the exact gradient, which shares the objective with it
#: (42-44 s, since a serial run no longer compiles the parallel DPO kernels, see
#: :func:`coverage_sim._engine.row_mode`, and the online pair buffer reaches the pairwise kernels
#: typed as the offline weights are; it was about 57 s); ``"metrics"`` the metrics and the
#: sampler's single batches (18-20 s since the ranking passes of one thread have serial kernels;
#: about 30 s before), which share no kernel with it; ``"sampled"`` the sampled training loop and
#: the sampled gradients (about 18 s once the other two are cached), which share the per-pair
#: losses with the exact loop and so start last, when the process compiling the exact loop has
#: cached most of them. Two processes compile the three in about 45 s, finishing within a few
#: seconds of each other; a worker that finishes first runs kernel-free units meanwhile.
GROUPS = ("exact", "metrics", "sampled")


def warm_up(group: str) -> float:
    """Compile (or load from numba's cache) the kernels of ``group``; returns the seconds taken.

    Raises:
      ValueError: ``group`` is not one of :data:`GROUPS`.
    """
    if group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
    import coverage_sim as cs

    start = time.perf_counter()
    env = cs.tajwar_bandit(n_actions=6)
    data = cs.offline_pairs(env, env.ref)
    if group == "exact":
        cs.train(env, "dpo", data, steps=2, lr=0.1, metrics=[], progress=False)
        cs.gradient(env, "dpo", np.zeros(env.n_responses), data)
    elif group == "metrics":
        # the metrics a training call records, on a stack of recorded policies (not through a
        # training call: that would compile the exact loop beside the "exact" group)
        log_policies = np.stack([env.ref_logp2d.reshape(env.ref.shape)] * 3)
        for eval_data in (data, "reference"):
            cs.metrics.policy_metrics(env, np.exp(log_policies), beta=0.1, data=data,
                                      eval_data=eval_data, log_policies=log_policies)
        cs.metrics.ideal_ranking_accuracy(env, "reference", beta=0.1)
        cs.draw_batch(env, "online_dpo", np.zeros(env.n_responses), batch_size=2)
    else:
        logits = np.zeros(env.n_responses)
        cs.train(env, "dpo", data, steps=2, lr=0.1, batch_size=2, metrics=[], progress=False)
        cs.sampled_gradients(env, "rlhf", logits, batch_size=2, draws=1)
        options = dict(group_size=2, kl_estimator="k3", kl_in="reward")
        cs.batch_gradient(env, "rlhf", logits,
                          cs.population_batch(env, "rlhf", logits, **options))
    return time.perf_counter() - start


def import_experiments(with_torch: bool) -> float:
    """Import the experiment registry into this process, and with ``with_torch`` torch and the
    compiler machinery its optimisers load on first use; returns the seconds taken (about 6 s in
    a fresh process with torch).

    ``coverage-sim reproduce`` gives this to a worker that has compiled its kernel group while
    another still compiles: the worker would otherwise wait idle, and its first unit imports the
    same modules anyway.
    """
    start = time.perf_counter()
    import coverage_sim.experiments  # noqa: F401
    if with_torch:
        import torch  # noqa: F401
        import torch._dynamo  # noqa: F401  (torch.optim imports it on first use: about 2 s)
    return time.perf_counter() - start
