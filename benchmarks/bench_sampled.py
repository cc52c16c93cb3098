"""Benchmark of the sampled step: ours (fused numba loop) vs a plain torch implementation of it.

One step = draw a batch, evaluate the objective on it, take the gradient with respect to the tabular
softmax logits and make one Adam update (lr 0.01, float64), for three estimators:

* ``dpo-offline``: a minibatch of B pairs drawn i.i.d. from the exact ``mu x mu`` Bradley-Terry pair
  weights (K x K), sigmoid DPO loss (beta 0.1);
* ``dpo-online``: B groups of 2 responses from the current policy, each pair labelled by one
  Bradley-Terry Bernoulli draw, sigmoid DPO loss;
* ``rlhf-rloo``: B groups of 2 responses from the current policy, REINFORCE with the leave-one-out
  baseline and the k1 KL estimate in the reward (beta 0.1).

    python benchmarks/bench_sampled.py            # about a minute
    python benchmarks/bench_sampled.py --quick    # fewer repeats

Both sides run on ONE thread (numba.set_num_threads(1), torch.set_num_threads(1)), measured in the
same process as CPU time (time.process_time), so that other load on a shared machine distorts the
ratio less than wall time would; the batched row uses numba's threads over 256 problems and is wall
time. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numba  # noqa: E402

import coverage_sim as cs  # noqa: E402
from coverage_sim import _engine, _sampled, sampling  # noqa: E402

try:
    import torch
    import torch.nn.functional as tF
except ImportError:  # pragma: no cover - torch is the [test] extra
    torch = None

BETA = 0.1
LR = 0.01
ADAM = (0.9, 0.999, 1e-8)
METHODS = ("dpo-offline", "dpo-online", "rlhf-rloo")
TARGET_K, TARGET_B, TARGET_SPEEDUP = 1000, 256, 20.0
BATCHED_PROBLEMS, BATCHED_K, BATCHED_B, BATCHED_STEPS = 256, 100, 16, 1000


class Problem:
    """One method at one (K, B): the environment, the objective and its compiled plan."""

    def __init__(self, method: str, k: int, batch: int, seed: int = 0):
        self.method, self.k, self.batch = method, k, batch
        self.env = cs.random_bandit(k, seed=seed, min_ref=0.1 / k)
        self.data = None
        if method == "dpo-offline":
            self.data = cs.offline_pairs(self.env, self.env.ref, labels="bradley_terry")
            self.objective = cs.objective("sigmoid", beta=BETA)
        elif method == "dpo-online":
            self.objective = cs.objective("online_dpo", beta=BETA)
        else:
            self.objective = cs.objective("rlhf", beta=BETA)
        obj, b, est = sampling.prepare(self.env, self.objective, self.data, batch, None)
        self.estimator = est
        self.terms, self.plan = sampling.compile_plan(self.env, obj, self.data, est, b)
        self.rlp = np.ascontiguousarray(self.env.ref_logp2d)
        self.theta0 = np.ascontiguousarray(np.log(self.env.ref).ravel())
        self.samples_per_step = 2 * batch  # two responses per pair or group

    # ---- ours ------------------------------------------------------------------------------
    def ours_run(self, steps: int, seed: int = 0):
        """``steps`` fused sampled steps from pi_ref, nothing recorded: (theta, seconds)."""
        theta = self.theta0.copy()
        k = self.k
        empty = np.zeros(0, dtype=np.int64)
        args = (theta, _engine.TABULAR, np.zeros((1, k, 0)), np.zeros((1, k)), self.rlp,
                self.terms, self.plan, sampling.sampling_stream(seed), _engine.ADAM, LR, *ADAM,
                steps, 1, False, empty, np.zeros((0, 1, k)), np.zeros(0), empty.copy(),
                empty.copy(), 0, 1.0, np.zeros((0, 1, k)))
        t0 = time.process_time()
        _sampled.run_one_sampled(*args)
        return theta, time.process_time() - t0

    # ---- torch -----------------------------------------------------------------------------
    def torch_setup(self, seed: int = 0):
        self.gen = torch.Generator().manual_seed(seed)
        self.logits = torch.tensor(self.theta0, requires_grad=True)
        self.opt = torch.optim.Adam([self.logits], lr=LR, betas=ADAM[:2], eps=ADAM[2])
        self.t_rlp = torch.tensor(self.rlp[0])
        self.t_reward = torch.tensor(self.env.reward)
        if self.data is not None:
            self.t_pairs = torch.tensor(self.data.weights[0].ravel())

    def torch_loss(self, indices=None):
        """The batch loss in torch; ``indices`` (a batch drawn by ours) replaces torch's own draw."""
        lp = torch.log_softmax(self.logits, dim=0)
        k, b = self.k, self.batch
        if self.method == "dpo-offline":
            if indices is None:
                flat = torch.multinomial(self.t_pairs, b, replacement=True, generator=self.gen)
                w, l = flat // k, flat % k
            else:
                w, l = indices
            u = lp - self.t_rlp
            return -tF.logsigmoid(BETA * (u[w] - u[l])).mean()
        probs = lp.detach().exp()
        if indices is None:
            y = torch.multinomial(probs, 2 * b, replacement=True, generator=self.gen).view(b, 2)
        if self.method == "dpo-online":
            if indices is None:
                r = self.t_reward[y]
                first_wins = torch.rand(b, generator=self.gen, dtype=torch.float64) < torch.sigmoid(
                    r[:, 0] - r[:, 1])
                w = torch.where(first_wins, y[:, 0], y[:, 1])
                l = torch.where(first_wins, y[:, 1], y[:, 0])
            else:
                w, l = indices
            u = lp - self.t_rlp
            return -tF.logsigmoid(BETA * (u[w] - u[l])).mean()
        if indices is not None:
            y = indices[0].view(b, 2)
        ret = self.t_reward[y] - BETA * (lp.detach()[y] - self.t_rlp[y])  # k1 in the reward
        adv = ret - ret.flip(1)  # leave-one-out at G = 2: r_i - r_j
        return -(adv * lp[y]).mean()

    def torch_step(self):
        self.opt.zero_grad()
        self.torch_loss().backward()
        self.opt.step()

    def torch_run(self, steps: int):
        self.torch_setup()
        t0 = time.process_time()
        for _ in range(steps):
            self.torch_step()
        return time.process_time() - t0

    # ---- correctness -----------------------------------------------------------------------
    def check(self) -> float:
        """Ours vs torch autograd on one batch drawn by ours: relative max-norm of the gradient."""
        logits = np.log(self.env.ref) + np.random.default_rng(1).normal(size=self.k)
        batch = cs.draw_batch(self.env, self.objective, logits, self.data, batch_size=self.batch,
                              seed=5)
        _, ours = cs.batch_gradient(self.env, self.objective, logits, batch)
        self.torch_setup()
        with torch.no_grad():
            self.logits.copy_(torch.tensor(logits))
        if self.method == "rlhf-rloo":
            indices = (torch.tensor(batch.sample),)
        else:
            indices = (torch.tensor(batch.pair_winner), torch.tensor(batch.pair_loser))
        self.torch_loss(indices).backward()
        ref = self.logits.grad.numpy()
        return float(np.abs(ours - ref).max() / np.abs(ref).max())


def best_of(fn, repeats: int) -> float:
    return min(fn() for _ in range(repeats))


def fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def batched(repeats: int) -> tuple[float, float]:
    """256 independent RLHF-RLOO problems x 1000 steps at K = 100, B = 16 through train_many's kernel
    (whole problems per thread): (seconds, max |theta - run_one_sampled| over 3 problems)."""
    env = cs.random_bandit(BATCHED_K, seed=0, min_ref=0.1 / BATCHED_K)
    obj = cs.objective("rlhf", beta=BETA)
    est = sampling.Estimator().resolve(obj)
    terms, plan = sampling.compile_plan(env, obj, None, est, BATCHED_B)
    n, k = BATCHED_PROBLEMS, BATCHED_K
    stack = lambda a: np.ascontiguousarray(np.stack([a] * n))  # noqa: E731
    theta0 = np.log(env.ref).ravel()
    empty = np.zeros(0, dtype=np.int64)

    def run():
        thetas = stack(theta0)
        states = np.stack([sampling.sampling_stream(s) for s in range(n)])
        t0 = time.perf_counter()
        _sampled.run_batch_sampled(
            thetas, _engine.TABULAR, np.zeros((n, 1, k, 0)), np.zeros((n, 1, k)),
            stack(env.ref_logp2d), _engine.stack_terms([terms] * n), *(stack(p) for p in plan),
            states, _engine.ADAM, np.full(n, LR), *ADAM, BATCHED_STEPS, 1, False, empty,
            np.zeros((n, 0, 1, k)), np.zeros((n, 0)), np.zeros((n, 0), np.int64),
            np.zeros((n, 0), np.int64), np.zeros(n, np.int64), np.ones(n),
            np.zeros((n, 0, 1, k)), numba.get_num_threads())
        return time.perf_counter() - t0, thetas

    run()  # compile / load
    best, thetas = min((run() for _ in range(repeats)), key=lambda t: t[0])
    err = 0.0
    for b in (0, 1, n - 1):
        theta = theta0.copy()
        _sampled.run_one_sampled(theta, _engine.TABULAR, np.zeros((1, k, 0)), np.zeros((1, k)),
                                 env.ref_logp2d, terms, plan, sampling.sampling_stream(b),
                                 _engine.ADAM, LR, *ADAM, BATCHED_STEPS, 1, False, empty,
                                 np.zeros((0, 1, k)), np.zeros(0), empty.copy(), empty.copy(), 0,
                                 1.0, np.zeros((0, 1, k)))
        err = max(err, float(np.abs(theta - thetas[b]).max()))
    return best, err


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args(argv)
    if torch is None:
        print("torch is required (pip install -e .[test])", file=sys.stderr)
        return 2
    repeats = 2 if args.quick else 5
    numba.set_num_threads(1)
    torch.set_num_threads(1)
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"numpy {np.__version__}, numba {numba.__version__}, torch {torch.__version__}; "
          f"load average {load0:.2f} at the start")
    rows, failures = [], []
    for method in METHODS:
        for k in (100, 1000):
            for b in (16, 256):
                prob = Problem(method, k, b)
                err = prob.check()
                if err > 1e-10:
                    print(f"FAIL correctness {method} K={k} B={b}: {err:.2e}", file=sys.stderr)
                    return 1
                prob.ours_run(3)  # compile / load from the cache
                # per step = (time of 2n steps - time of n steps) / n: the one-time tables of the
                # fixed laws (the offline pairs' alias table: 10^6 entries at K = 1000) are left
                # out, as torch's normalised pair weights are
                n = 4000 if b == 16 else 1000
                ours = (best_of(lambda: prob.ours_run(2 * n)[1], repeats)
                        - best_of(lambda: prob.ours_run(n)[1], repeats)) / n
                torch_steps = 300 if b == 16 else 100
                prob.torch_run(5)
                tor = best_of(lambda: prob.torch_run(torch_steps), repeats) / torch_steps
                speedup = tor / ours
                rows.append((method, k, b, ours, tor, speedup, prob.samples_per_step, err))
                if k == TARGET_K and b == TARGET_B and speedup < TARGET_SPEEDUP:
                    failures.append(f"{method}: {speedup:.0f}x")
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    batch_s, batch_err = batched(repeats)
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print()
    print("| method | K | B | ours / step | torch / step | torch / ours | ours samples/s | "
          "torch samples/s | grad check |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method, k, b, ours, tor, speedup, per_step, err in rows:
        print(f"| {method} | {k} | {b} | {fmt_time(ours)} | {fmt_time(tor)} | {speedup:.0f}x | "
              f"{per_step / ours:.3g} | {per_step / tor:.3g} | {err:.0e} |")
    print()
    print(f"batched: {BATCHED_PROBLEMS} rlhf-rloo problems x {BATCHED_STEPS} steps at "
          f"K={BATCHED_K}, B={BATCHED_B} (run_batch_sampled, whole problems per thread, "
          f"{numba.config.NUMBA_NUM_THREADS} threads): {fmt_time(batch_s)} = "
          f"{fmt_time(batch_s / (BATCHED_PROBLEMS * BATCHED_STEPS))} per problem-step "
          f"(matches run_one_sampled to {batch_err:.0e})")
    print(f"load average {load1:.2f} at the end")
    print()
    ok = not failures and batch_err == 0.0
    status = "PASS" if not failures else "FAIL " + ", ".join(failures)
    print(f"target: ours >= {TARGET_SPEEDUP:.0f}x torch at K={TARGET_K}, B={TARGET_B} (one "
          f"thread each): {status}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
