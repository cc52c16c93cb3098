"""Benchmark of the exact population DPO step: ours (fused numba loop) vs torch autograd vs numpy.

One step = the gradient of the sigmoid DPO loss ``L = sum_ij W_ij * -log sigma(beta (u_i - u_j))``
(``u = log pi - log pi_ref``) over the exact ``mu x mu`` Bradley-Terry pair weights ``W`` (one context,
K x K), pulled back to the tabular softmax logits, plus one Adam update of the logits.

    python benchmarks/bench_dpo.py                       # full run (a few minutes)
    python benchmarks/bench_dpo.py --quick               # fewer repeats, long runs extrapolated
    python benchmarks/bench_dpo.py --sizes 10,100,1000,4000
    python benchmarks/bench_dpo.py --user-only           # only what a user's call costs

Everything in the printed tables is measured in the same process; see benchmarks/README.md.

The second part times what a user runs: the whole ``cs.train(...)`` call with default arguments
(loss and metrics at about 50 log-spaced recorded steps, fixed per-call work) against a plain
torch-autograd Adam loop of the same objective on the same data, and against the fused loop alone;
then both again while two other processes spin on every core; then ``coverage-sim list`` and
``coverage-sim --help`` as subprocesses.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numba
from numba import njit, prange

import coverage_sim as cs
from coverage_sim import _dpo_fast, _engine

try:
    import torch
    import torch.nn.functional as tF
except ImportError:  # pragma: no cover - torch is the [test] extra
    torch = None

BETA = 0.1
LR = 0.01
ADAM = (0.9, 0.999, 1e-8)
RUN_STEPS = 10_000
BATCH, BATCH_K = 256, 100
PARALLEL_ROWS_MIN_K = 512  # as coverage_sim.train._PARALLEL_ROWS_MIN_K

TARGET_TORCH_K, TARGET_TORCH_SPEEDUP = 1000, 100.0
TARGET_FLOOR_K, TARGET_FLOOR_PCT = 4000, 80.0
TARGET_BATCH_S = 5.0


# ----------------------------------------------------------------------------------------------
# problem
# ----------------------------------------------------------------------------------------------

class Problem:
    """Random bandit with K responses, exact mu x mu = pi_ref x pi_ref Bradley-Terry pairs."""

    def __init__(self, k: int, seed: int = 0, factored: bool = True):
        self.k = k
        self.env = cs.random_bandit(k, seed=seed, min_ref=0.1 / k)
        self.data = cs.offline_pairs(self.env, self.env.ref, labels="bradley_terry")
        self.objective = cs.objective("sigmoid", beta=BETA)
        # train() takes the factored kernel here (exact mu x mu pairs make S = W + W^T rank one);
        # factored=False forces the dense kernel that any pair matrix (samples, lists) takes.
        self.terms = self.objective.terms(self.env, self.data, factored=factored)
        expected = _dpo_fast.FACTORED if factored else _dpo_fast.DENSE
        assert self.terms[5] == expected, "the expected fast DPO kernel must be selected"
        self.policy = cs.TabularSoftmax()
        self.features = self.policy.features_for(self.env)
        self.base = self.policy.base_for(self.env)
        self.rlp = np.ascontiguousarray(self.env.ref_logp2d)
        self.theta0 = np.ascontiguousarray(
            self.policy.init_params(self.env, np.random.default_rng(seed)), dtype=np.float64)
        self.W = np.ascontiguousarray(self.data.weights[0])  # (K, K), winner i, loser j
        self.parallel = k >= PARALLEL_ROWS_MIN_K

    # ---- ours ------------------------------------------------------------------------------
    def ours_run(self, steps: int, theta=None) -> tuple[np.ndarray, float]:
        """Fused ``steps``-step run from ``theta`` (default theta0), no recording; (theta, seconds)."""
        theta = (self.theta0 if theta is None else theta).copy()
        rec = np.zeros(0, dtype=np.int64)
        out_lp = np.empty((0, 1, self.k))
        out_loss = np.empty(0)
        t0 = time.perf_counter()
        _engine.run_one(theta, self.policy.kind, self.features, self.base, self.rlp, self.terms,
                        _engine.ADAM, LR, *ADAM, steps, rec, out_lp, out_loss, self.parallel)
        return theta, time.perf_counter() - t0

    def ours_grad(self, theta) -> tuple[float, np.ndarray]:
        """(loss, dL/dlogits) from the engine's fast-path objective_grad + softmax backprop."""
        lp = _engine.policy_logp(self.policy.kind, theta, self.features, self.base, 1, self.k)
        g_lp = np.zeros((1, self.k))
        wbuf = np.zeros((0, 0, 0))
        _engine.objective_grad(self.terms, lp, self.rlp, g_lp, False, self.parallel, wbuf)
        loss = _engine.objective_grad(self.terms, lp, self.rlp, np.zeros((1, self.k)), True,
                                      False, wbuf)
        return loss, _engine.policy_backprop(self.policy.kind, self.features, lp, g_lp)


# ---- torch autograd -------------------------------------------------------------------------

class TorchDPO:
    """Plain torch autograd: float64, loss = sum W * -logsigmoid(beta (u_i - u_j)), Adam."""

    def __init__(self, prob: Problem, theta=None):
        self.theta = torch.tensor(prob.theta0 if theta is None else theta, dtype=torch.float64,
                                  requires_grad=True)
        self.W = torch.tensor(prob.W, dtype=torch.float64)
        self.rlp = torch.from_numpy(prob.rlp[0].copy())
        self.opt = torch.optim.Adam([self.theta], lr=LR, betas=ADAM[:2], eps=ADAM[2])

    def loss(self):
        u = torch.log_softmax(self.theta, dim=0) - self.rlp
        z = BETA * (u[:, None] - u[None, :])
        return (self.W * -tF.logsigmoid(z)).sum()

    def grad(self):
        self.theta.grad = None
        loss = self.loss()
        loss.backward()
        return float(loss.detach()), self.theta.grad.numpy().copy()

    def step(self):
        self.opt.zero_grad(set_to_none=True)
        self.loss().backward()
        self.opt.step()


# ---- numpy -----------------------------------------------------------------------------------

class NumpyDPO:
    """Plain vectorised numpy: G = W * sigma(-z), dL/du = beta (G^T 1 - G 1), softmax pull-back, Adam."""

    def __init__(self, prob: Problem, theta=None):
        self.theta = (prob.theta0 if theta is None else theta).copy()
        self.W = prob.W
        self.rlp = prob.rlp[0]
        self.m = np.zeros_like(self.theta)
        self.v = np.zeros_like(self.theta)
        self.t = 0

    def grad(self):
        th = self.theta
        mx = th.max()
        lp = th - (mx + np.log(np.exp(th - mx).sum()))
        u = lp - self.rlp
        z = np.subtract.outer(u, u)
        z *= BETA
        with np.errstate(over="ignore"):
            np.exp(z, out=z)            # e^{z}
        z += 1.0
        np.divide(self.W, z, out=z)     # G = W sigma(-z)
        g_u = BETA * (z.sum(axis=0) - z.sum(axis=1))
        return g_u - np.exp(lp) * g_u.sum()

    def step(self):
        g = self.grad()
        b1, b2, eps = ADAM
        self.t += 1
        self.m *= b1
        self.m += (1.0 - b1) * g
        self.v *= b2
        self.v += (1.0 - b2) * g * g
        self.theta -= LR * (self.m / (1.0 - b1 ** self.t)) / (
            np.sqrt(self.v / (1.0 - b2 ** self.t)) + eps)


# ----------------------------------------------------------------------------------------------
# memory bandwidth
# ----------------------------------------------------------------------------------------------

@njit(parallel=True, fastmath=True, error_model="numpy", cache=False)
def _chunked_sum(a, n_chunks):
    n = a.size
    part = np.zeros(n_chunks)
    size = (n + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        # Index a slice from 0: an index that might be negative (c * size + i) makes numba emit
        # wraparound code that LLVM turns into gathers (4.4 instead of ~25 GB/s on one core).
        chunk = a[c * size:min(n, (c + 1) * size)]
        s = 0.0
        for i in range(chunk.size):
            s += chunk[i]
        part[c] = s
    return part.sum()


def read_bandwidth(n_bytes: int, repeats: int) -> float:
    """Best-of-``repeats`` read bandwidth (bytes/s) of a parallel sum over an array > L3."""
    a = np.random.default_rng(0).random(n_bytes // 8)
    threads = numba.get_num_threads()
    _chunked_sum(a[:1024], threads)  # compile
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        _chunked_sum(a, threads)
        best = min(best, time.perf_counter() - t0)
    return a.nbytes / best


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

def best_of(fn, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def per_step(step, n: int, repeats: int) -> float:
    def loop():
        for _ in range(n):
            step()
    return best_of(loop, repeats) / n


def rel(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(np.max(np.abs(b)), 1e-300))


def fmt_t(sec: float) -> str:
    if sec < 1e-3:
        return f"{sec * 1e6:.3g} us"
    if sec < 1.0:
        return f"{sec * 1e3:.3g} ms"
    return f"{sec:.3g} s"


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# ----------------------------------------------------------------------------------------------
# the benchmark
# ----------------------------------------------------------------------------------------------

def read_bytes(k: int) -> int:
    """Bytes of S the exp-free kernel reads per step: the upper triangle with the diagonal
    (coverage_sim._dpo_fast._triangle_rows)."""
    return 8 * k * (k + 1) // 2


def check_correctness(prob: Problem, tol: float = 1e-10) -> dict:
    """One step: ours vs torch autograd gradient (w.r.t. logits) and loss; numpy vs torch; Adam."""
    loss_o, g_o = prob.ours_grad(prob.theta0)
    tdpo = TorchDPO(prob)
    loss_t, g_t = tdpo.grad()
    g_n = NumpyDPO(prob).grad()
    # Three Adam steps in each implementation, compared on the logits.
    th_o, _ = prob.ours_run(3)
    tdpo = TorchDPO(prob)
    ndpo = NumpyDPO(prob)
    for _ in range(3):
        tdpo.step()
        ndpo.step()
    th_t = tdpo.theta.detach().numpy()
    out = {"grad ours~torch": rel(g_o, g_t), "grad numpy~torch": rel(g_n, g_t),
           "loss ours~torch": abs(loss_o - loss_t) / abs(loss_t),
           "3 Adam steps ours~torch (abs, logits)": float(np.max(np.abs(th_o - th_t))),
           "3 Adam steps numpy~torch (abs, logits)": float(np.max(np.abs(ndpo.theta - th_t)))}
    bad = {k: v for k, v in out.items() if not v <= tol}
    if bad:
        raise AssertionError(f"K={prob.k}: implementations disagree beyond {tol:g}: {bad}")
    return out


def time_ours(prob: Problem, quick: bool) -> dict:
    """Per-step time of the fused loop (``""``), and a 10,000-step run (``"_run"``), measured when
    that takes a few seconds at most, else extrapolated (``"_run_measured"`` says which)."""
    n_est = 200 if prob.k < 1000 else 5
    est = prob.ours_run(n_est)[1] / n_est
    out = {}
    if est * RUN_STEPS <= (1.5 if quick else 4.0):
        out["_run"] = min(prob.ours_run(RUN_STEPS)[1] for _ in range(2 if quick else 3))
        out[""], out["_run_measured"] = out["_run"] / RUN_STEPS, True
    else:
        n = max(5, int((0.3 if quick else 1.0) / est))
        out[""] = min(prob.ours_run(n)[1] for _ in range(2 if quick else 3)) / n
        if quick:
            out["_run"], out["_run_measured"] = out[""] * RUN_STEPS, False
        else:
            out["_run"], out["_run_measured"] = prob.ours_run(RUN_STEPS)[1], True
    return out


def bench_size(k: int, quick: bool, bandwidth: float) -> dict:
    prob = Problem(k)
    t_setup = time.perf_counter()
    prob.ours_run(1)  # compile / load from cache outside the timed region
    compile_s = time.perf_counter() - t_setup
    checks = check_correctness(prob)
    row = {"K": k, "checks": checks, "compile_s": compile_s}

    # ---- ours: per step from fused n-step runs (best of R), and a measured 10,000-step run; for
    # the factored kernel train() takes on these exact mu x mu pairs, and for the dense one.
    dense = Problem(k, factored=False)
    err = rel(dense.ours_grad(prob.theta0)[1], TorchDPO(prob).grad()[1])
    if not err <= 1e-10:
        raise AssertionError(f"K={k}: the dense kernel's gradient differs from torch by {err:g}")
    row["checks"]["grad dense~torch"] = err
    for name, p in (("ours", prob), ("dense", dense)):
        p.ours_run(1)
        row.update({name + key: v for key, v in time_ours(p, quick).items()})

    # ---- baselines: per step, best of R over n steps (few at large K).
    for name, cls in (("torch", TorchDPO), ("numpy", NumpyDPO)):
        impl = cls(prob)
        impl.step()  # warm-up
        t1 = best_of(impl.step, 1)
        n = max(1, min(500, int((0.15 if quick else 0.5) / t1)))
        reps = 2 if (quick or t1 > 0.2) else 5
        t = per_step(impl.step, n, reps)
        row[name] = t
        budget = 1.0 if quick else 3.0
        if t * RUN_STEPS <= budget:
            fresh = cls(prob)
            row[name + "_run"] = best_of(lambda fresh=fresh: [fresh.step() for _ in range(RUN_STEPS)],
                                         1)
            row[name + "_run_measured"] = True
        else:
            row[name + "_run"], row[name + "_run_measured"] = t * RUN_STEPS, False

    # Memory floors: the whole S = W + W^T (8 K^2 bytes, X = 1, float64), and what the kernel
    # actually reads per step: S is symmetric and only its upper triangle is read.
    row["full_bytes"] = 8 * k * k
    row["read_bytes"] = read_bytes(k)
    row["floor_full"] = row["full_bytes"] / bandwidth
    row["floor_read"] = row["read_bytes"] / bandwidth
    row["pct_full"] = 100.0 * row["floor_full"] / row["dense"]
    row["pct_read"] = 100.0 * row["floor_read"] / row["dense"]
    return row


def bench_batch(quick: bool) -> dict:
    """256 independent problems x 10,000 steps at K = 100 through _engine.run_batch."""
    probs = [Problem(BATCH_K, seed=s) for s in range(BATCH)]
    p0 = probs[0]
    stacked = _engine.stack_terms([p.terms for p in probs])
    thetas0 = np.stack([p.theta0 for p in probs])
    features = np.stack([p.features for p in probs])
    bases = np.stack([p.base for p in probs])
    rlps = np.stack([p.rlp for p in probs])
    lrs = np.full(BATCH, LR)
    rec = np.zeros(0, dtype=np.int64)
    out_lp = np.empty((BATCH, 0, 1, BATCH_K))
    out_loss = np.empty((BATCH, 0))
    no_sync, no_mix = np.zeros(BATCH, dtype=np.int64), np.ones(BATCH)   # a fixed reference
    no_refs = np.empty((BATCH, 0, 1, BATCH_K))

    def run(steps):
        th = thetas0.copy()
        t0 = time.perf_counter()
        _engine.run_batch(th, p0.policy.kind, features, bases, rlps, stacked, _engine.ADAM, lrs,
                          *ADAM, steps, rec, out_lp, out_loss, no_sync, no_mix, no_refs,
                          numba.get_num_threads())
        return th, time.perf_counter() - t0

    run(1)  # compile / load from cache
    # the batch must reproduce independent single runs
    th_b, _ = run(50)
    err = max(float(np.max(np.abs(th_b[b] - probs[b].ours_run(50)[0]))) for b in sorted({0, BATCH // 2, BATCH - 1}))
    if not err <= 1e-12:
        raise AssertionError(f"run_batch disagrees with run_one: {err:g}")
    seconds = min(run(RUN_STEPS)[1] for _ in range(1 if quick else 2))
    return {"seconds": seconds, "batch_vs_single_err": err}


# ----------------------------------------------------------------------------------------------
# what a user runs: the whole cs.train() call
# ----------------------------------------------------------------------------------------------

USER_BETA, USER_LR = 0.5, 0.05


class UserProblem:
    """``cs.train(env, cs.objective("sigmoid", beta=0.5), data=cs.offline_pairs(env, mu), steps=S,
    lr=0.05)`` with ``mu = pi_ref`` on ``cs.random_bandit(K, min_ref=0.1/K)``, and the same run as a
    plain torch loop and as the fused numba loop alone (no recording)."""

    def __init__(self, k: int):
        self.k = k
        self.env = cs.random_bandit(k, seed=0, min_ref=0.1 / k)
        self.data = cs.offline_pairs(self.env, self.env.ref)
        self.objective = cs.objective("sigmoid", beta=USER_BETA)

    def train(self, steps: int, **kw):
        t0 = time.perf_counter()
        run = cs.train(self.env, self.objective, data=self.data, steps=steps, lr=USER_LR, **kw)
        return run, time.perf_counter() - t0

    def fused_loop(self, steps: int, parallel: bool) -> float:
        """The engine loop alone on train()'s terms, nothing recorded; seconds."""
        from coverage_sim import _engine
        policy = cs.TabularSoftmax()
        theta = np.ascontiguousarray(policy.init_params(self.env, np.random.default_rng(0)))
        terms = self.objective.terms(self.env, self.data)
        rec = np.zeros(0, dtype=np.int64)
        t0 = time.perf_counter()
        _engine.run_one(theta, policy.kind, policy.features_for(self.env),
                        policy.base_for(self.env), np.ascontiguousarray(self.env.ref_logp2d),
                        terms, _engine.ADAM, USER_LR, *ADAM, steps, rec, np.empty((0, 1, self.k)),
                        np.empty(0), parallel)
        return time.perf_counter() - t0

    def torch_loop(self, steps: int) -> tuple[np.ndarray, float]:
        """Plain torch autograd, float64, torch's default threads: each step is the loss
        sum W * -logsigmoid(beta (u_i - u_j)), backward, Adam; returns (final policy, seconds)."""
        theta = torch.tensor(self.env.ref_logp2d[0], dtype=torch.float64, requires_grad=True)
        w = torch.tensor(np.asarray(self.data.weights[0]))
        rlp = torch.tensor(self.env.ref_logp2d[0])
        opt = torch.optim.Adam([theta], lr=USER_LR, betas=ADAM[:2], eps=ADAM[2])
        t0 = time.perf_counter()
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            u = torch.log_softmax(theta, dim=0) - rlp
            loss = (w * -tF.logsigmoid(USER_BETA * (u[:, None] - u[None, :]))).sum()
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - t0
        return torch.softmax(theta.detach(), dim=0).numpy(), seconds


@contextlib.contextmanager
def spinning(n: int):
    """``n`` other processes each spinning one core for the duration of the block."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5)
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def cli_seconds(args: list[str], repeats: int = 3) -> float:
    """Best wall time of ``python -m coverage_sim.cli ARGS`` (after one warm-up run)."""
    cmd = [sys.executable, "-m", "coverage_sim.cli", *args]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run(cmd, capture_output=True, env=env, check=False)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, env=env, check=False)
        best = min(best, time.perf_counter() - t0)
    return best


def bench_user(quick: bool) -> dict:
    """The whole train() call vs torch and vs the fused loop, idle and with every core busy."""
    from coverage_sim.train import _row_threads

    out = {}
    reps = 2 if quick else 3
    p1 = UserProblem(1000)
    p1.train(2)  # compile / load every kernel outside the timed region
    out["threads"] = numba.get_num_threads()
    for steps in (200, 2000):
        out[f"train_{steps}"] = min(p1.train(steps)[1] for _ in range(reps))
        parallel = _row_threads(None, p1.k)[0]
        out[f"loop_{steps}"] = min(p1.fused_loop(steps, parallel) for _ in range(reps))
    run, _ = p1.train(200)
    torch_steps = 200 if not quick else 50
    policy_t, t = p1.torch_loop(torch_steps)
    out["torch_step"] = t / torch_steps
    if torch_steps == 200:
        out["agree_200"] = float(np.max(np.abs(policy_t - run.policy)))
    out["torch_200"] = out["torch_step"] * 200
    out["torch_2000"] = out["torch_step"] * 2000
    p4 = UserProblem(4000)
    p4.train(2)
    out["train_4000"] = min(p4.train(1000)[1] for _ in range(1 if quick else 2))
    out["loop_4000"] = min(p4.fused_loop(1000, _row_threads(None, 4000)[0])
                           for _ in range(1 if quick else 2))
    out["loop_4000_parallel"] = p4.fused_loop(1000, True)
    # Busy: two other processes spin on the cores during every measurement below.
    with spinning(os.cpu_count() or 2):
        out["busy_load"] = loadavg()
        out["busy_train_200"] = min(p1.train(200)[1] for _ in range(reps))
        out["busy_serial_200"] = min(p1.train(200, parallel=False)[1] for _ in range(reps))
        out["busy_threads_200"] = min(p1.train(200, parallel=True)[1] for _ in range(reps))
        _, t = p1.torch_loop(torch_steps)
        out["busy_torch_200"] = t / torch_steps * 200
        envs = [cs.random_bandit(100, seed=s) for s in range(32)]
        datas = [cs.offline_pairs(e, e.ref) for e in envs]
        cs.train_many(envs, p1.objective, datas, steps=2, lr=USER_LR)
        t0 = time.perf_counter()
        cs.train_many(envs, p1.objective, datas, steps=2000, lr=USER_LR)
        out["busy_many_threads"] = time.perf_counter() - t0
        before = numba.get_num_threads()
        numba.set_num_threads(1)
        t0 = time.perf_counter()
        cs.train_many(envs, p1.objective, datas, steps=2000, lr=USER_LR)
        out["busy_many_serial"] = time.perf_counter() - t0
        numba.set_num_threads(before)
    out["cli_list"] = cli_seconds(["list"])
    out["cli_help"] = cli_seconds(["--help"])
    return out


def print_user(u: dict) -> bool:
    """Print the user-facing table and its targets; True when every target passes."""
    print()
    print("## The whole cs.train() call (default arguments) vs torch autograd and the fused loop")
    print(f"# cs.train(env, cs.objective('sigmoid', beta={USER_BETA}), data=cs.offline_pairs(env, "
          f"mu), steps=S, lr={USER_LR}), mu = pi_ref, cs.random_bandit(K, min_ref=0.1/K); "
          f"numba threads available: {u['threads']}")
    rows = [("1000", "200", u["train_200"], u["loop_200"], u["torch_200"]),
            ("1000", "2000", u["train_2000"], u["loop_2000"], u["torch_2000"]),
            ("4000", "1000", u["train_4000"], u["loop_4000"], None)]
    print("| K | steps | cs.train() | fused loop alone | train / loop | torch autograd loop "
          "| torch / train |")
    print("|---|---|---|---|---|---|---|")
    for k, steps, tr, loop, tor in rows:
        print(f"| {k} | {steps} | {fmt_t(tr)} | {fmt_t(loop)} | {tr / loop:.2f} | "
              + ("-" if tor is None else fmt_t(tor)) + " | "
              + ("-" if tor is None else f"{tor / tr:.0f}x") + " |")
    print(f"torch per step {fmt_t(u['torch_step'])} (2000 steps: per-step time x 2000); "
          + (f"final policies after 200 steps agree to {u['agree_200']:.1e}"
             if "agree_200" in u else "agreement checked in the full run"))
    print(f"K=4000 fused loop with threads forced on: {fmt_t(u['loop_4000_parallel'])}")
    print()
    print(f"## Busy machine: {os.cpu_count()} other processes spinning (load average "
          f"{u['busy_load']})")
    busy = [("cs.train() K=1000 200 steps, default", "busy_train_200"),
            ("same, parallel=False", "busy_serial_200"),
            ("same, parallel=True", "busy_threads_200"),
            ("torch loop 200 steps", "busy_torch_200"),
            ("train_many 32 x K=100 x 2000 steps, all threads", "busy_many_threads"),
            ("same, 1 thread", "busy_many_serial")]
    print("| call | time |\n|---|---|")
    for label, key in busy:
        print(f"| {label} | {fmt_t(u[key])} |")
    print(f"torch / train under load: {u['busy_torch_200'] / u['busy_train_200']:.0f}x")
    print()
    print(f"CLI (subprocess, warm, best of 3): coverage-sim list {fmt_t(u['cli_list'])}, "
          f"coverage-sim --help {fmt_t(u['cli_help'])}")
    print()
    print("targets:")
    checks = [
        ("cs.train() >= 50x torch at K=1000, 200 steps, idle", u["torch_200"] / u["train_200"], 50),
        ("cs.train() >= 50x torch at K=1000, 200 steps, busy",
         u["busy_torch_200"] / u["busy_train_200"], 50),
        ("cs.train() >= 100x torch at K=1000, 2000 steps, idle", u["torch_2000"] / u["train_2000"],
         100),
    ]
    ok = True
    for name, value, target in checks:
        ok &= value >= target
        print(f"  {'PASS' if value >= target else 'FAIL'} {name}: {value:.0f}x")
    ratio = u["train_4000"] / u["loop_4000"]
    ok &= ratio <= 2.0
    print(f"  {'PASS' if ratio <= 2 else 'FAIL'} K=4000, 1000 steps: whole call within 2x of the "
          f"fused loop: {ratio:.2f}x")
    slower = u["busy_train_200"] / u["busy_serial_200"]
    ok &= slower <= 1.15
    print(f"  {'PASS' if slower <= 1.15 else 'FAIL'} busy machine: the default call is not slower "
          f"than one thread: default / parallel=False = {slower:.2f}")
    for name, t in (("list", u["cli_list"]), ("--help", u["cli_help"])):
        ok &= t < 1.0
        print(f"  {'PASS' if t < 1.0 else 'FAIL'} coverage-sim {name} < 1 s: {fmt_t(t)}")
    return ok


def system_info() -> list[str]:
    # A parallel function must have run before the threading layer is known.
    _chunked_sum(np.ones(16), max(1, numba.get_num_threads()))
    versions = (f"python {platform.python_version()}, numpy {np.__version__}, "
                f"numba {numba.__version__}")
    if torch is not None:
        versions += f", torch {torch.__version__}"
    threads = f"numba threading layer: {numba.threading_layer()}, threads: {numba.get_num_threads()}"
    if torch is not None:
        threads += f"; torch threads: {torch.get_num_threads()}"
    cpu = f"CPU: {_cpu_model()} ({os.cpu_count()} logical CPUs; llvm target {_llvm_cpu()})"
    lines = [versions, cpu, threads]
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except (KeyError, TypeError, ValueError):  # informational only
        blas = None
    if blas:
        lines.append(f"numpy BLAS: {blas.get('name')} {blas.get('version', '')}".rstrip())
    return lines


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _llvm_cpu() -> str:
    import llvmlite.binding as ll
    return ll.get_host_cpu_name()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats; long runs extrapolated")
    ap.add_argument("--sizes", default="10,100,1000,4000", help="comma-separated K values")
    ap.add_argument("--no-batch", action="store_true", help="skip the 256 x 10,000 batched run")
    ap.add_argument("--user-only", action="store_true",
                    help="only the whole cs.train() call, the busy-machine runs and the CLI")
    ap.add_argument("--no-user", action="store_true", help="only the kernel table")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if torch is None:
        print("torch is required (pip install -e '.[torch]')", file=sys.stderr)
        return 2

    t_start = time.perf_counter()
    print("# Exact population DPO step benchmark (benchmarks/bench_dpo.py"
          + (" --quick" if args.quick else "") + ")")
    for line in system_info():
        print("#", line)
    print(f"# load average at start: {loadavg()}")
    if os.getloadavg()[0] > 0.5:
        print("# WARNING: other processes are running. With 2 cores, a parallel region (numba or torch) "
              "waits for its descheduled thread: 2-thread times and the bandwidth can be off by 10-100x.")
    print(f"# step: sigmoid DPO loss, beta={BETA}, exact mu x mu Bradley-Terry pairs (X=1), "
          f"tabular softmax logits, Adam lr={LR}; float64")

    if args.user_only:
        ok = print_user(bench_user(args.quick))
        print(f"\n# load average at end: {loadavg()}; total wall time "
              f"{time.perf_counter() - t_start:.0f} s")
        return 0 if ok else 1

    bw = read_bandwidth(512 * 2**20, 5 if args.quick else 10)
    print(f"# read bandwidth: {bw / 1e9:.1f} GB/s (best of parallel sums over 512 MiB, "
          f"{numba.get_num_threads()} threads)")
    print()

    rows = []
    for k in sizes:
        row = bench_size(k, args.quick, bw)
        rows.append(row)
        c = row["checks"]
        print(f"# K={k}: checks vs torch autograd: " + ", ".join(f"{n} {v:.1e}" for n, v in c.items())
              + f"; ours compile/load {row['compile_s']:.2f} s", flush=True)

    def run_cell(r, name):
        return fmt_t(r[name + "_run"]) + ("" if r[name + "_run_measured"] else " (extrapolated)")

    print()
    hdr = ["K", "ours / step", "dense / step", "torch / step", "numpy / step", "torch / ours",
           "torch / dense", "numpy / ours", "ours 10k-step run", "dense 10k-step run",
           "torch 10k-step run", "numpy 10k-step run",
           "floor: full S 8K^2 B", "dense % of it", "floor: bytes read 4K(K+1) B", "dense % of it"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for r in rows:
        cells = [str(r["K"]), fmt_t(r["ours"]), fmt_t(r["dense"]), fmt_t(r["torch"]),
                 fmt_t(r["numpy"]), f"{r['torch'] / r['ours']:.0f}x",
                 f"{r['torch'] / r['dense']:.0f}x", f"{r['numpy'] / r['ours']:.0f}x",
                 run_cell(r, "ours"), run_cell(r, "dense"), run_cell(r, "torch"),
                 run_cell(r, "numpy"),
                 f"{fmt_t(r['floor_full'])} ({r['full_bytes'] / 1e6:.3g} MB)", f"{r['pct_full']:.0f}%",
                 f"{fmt_t(r['floor_read'])} ({r['read_bytes'] / 1e6:.3g} MB)", f"{r['pct_read']:.0f}%"]
        print("| " + " | ".join(cells) + " |")
    print()
    print("ratios are speedups: torch / ours = (torch time per step) / (ours time per step).")
    print("ours = the kernel train() takes on these exact mu x mu pairs: S = W + W^T = 2 mu mu^T is "
          "rank one, so a step reads no K x K matrix (compute-bound). dense = the kernel any other "
          "pair matrix (sampled pairs, lists) takes: it reads S's upper triangle every step.")
    print("floor = bytes / measured read bandwidth; % = floor / (dense per step). The dense kernel "
          "reads only the upper triangle of the symmetric S, so its own floor is the 4K(K+1) B one; "
          "at small K, S sits in cache and the floor means nothing.")

    batch = None
    if not args.no_batch:
        batch = bench_batch(args.quick)
        print(f"batched: {BATCH} independent problems x {RUN_STEPS:,} steps at K={BATCH_K} "
              f"(_engine.run_batch, whole problems per thread, {numba.get_num_threads()} threads): "
              f"{batch['seconds']:.2f} s (compile excluded; matches run_one to "
              f"{batch['batch_vs_single_err']:.0e})")

    print()
    print("targets:")
    by_k = {r["K"]: r for r in rows}
    ok_all = True

    def verdict(name, ok, detail):
        nonlocal ok_all
        if ok is None:
            print(f"  n/a  {name}: {detail}")
            return
        ok_all &= ok
        print(f"  {'PASS' if ok else 'FAIL'} {name}: {detail}")

    r = by_k.get(TARGET_TORCH_K)
    verdict(f">= {TARGET_TORCH_SPEEDUP:.0f}x torch autograd at K={TARGET_TORCH_K}",
            None if r is None else r["torch"] / r["ours"] >= TARGET_TORCH_SPEEDUP,
            "K not measured" if r is None else f"{r['torch'] / r['ours']:.0f}x "
            f"(the dense kernel, for other pair matrices: {r['torch'] / r['dense']:.0f}x)")
    r = by_k.get(TARGET_FLOOR_K)
    # The target was set for a kernel that reads all of S (8K^2 B). Ours reads only the upper
    # triangle, so the floor of the bytes it actually reads is half that; report both.
    verdict(f">= {TARGET_FLOOR_PCT:.0f}% of the memory floor at K={TARGET_FLOOR_K} (dense kernel), floor = whole S "
            "(8K^2 B, as specified)",
            None if r is None else r["pct_full"] >= TARGET_FLOOR_PCT,
            "K not measured" if r is None else f"{r['pct_full']:.0f}% "
            f"(dense {fmt_t(r['dense'])} vs floor {fmt_t(r['floor_full'])})")
    verdict(f">= {TARGET_FLOOR_PCT:.0f}% of the memory floor at K={TARGET_FLOOR_K} (dense kernel), floor = the bytes "
            "the kernel reads (upper triangle, 4K(K+1) B)",
            None if r is None else r["pct_read"] >= TARGET_FLOOR_PCT,
            "K not measured" if r is None else f"{r['pct_read']:.0f}% "
            f"(dense {fmt_t(r['dense'])} vs floor {fmt_t(r['floor_read'])})")
    verdict(f"{BATCH} x {RUN_STEPS:,} steps at K={BATCH_K} in <= {TARGET_BATCH_S:.0f} s",
            None if batch is None else batch["seconds"] <= TARGET_BATCH_S,
            "skipped" if batch is None else f"{batch['seconds']:.2f} s")
    if not args.no_user:
        ok_all &= print_user(bench_user(args.quick))
    print(f"\n# load average at end: {loadavg()}; total wall time {time.perf_counter() - t_start:.0f} s")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
