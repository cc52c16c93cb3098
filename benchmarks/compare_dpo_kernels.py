"""Before/after timing of the fast DPO gradient kernel: this tree's ``_dpo_fast`` vs a git ref's.

    python benchmarks/compare_dpo_kernels.py                 # against main
    python benchmarks/compare_dpo_kernels.py --ref HEAD~1 --sizes 1000,4000 --repeats 30

Both kernels run in one process on the same problems (exact mu x mu pairs: the factored kernel;
sampled pairs: the dense one), serial and parallel, interleaved five times; the table shows the
best time of each and their ratio. Run it on a quiet machine: ratios are what it is for.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import coverage_sim as cs  # noqa: E402
from coverage_sim import _dpo_fast as new  # noqa: E402


def load_ref(ref: str, folder: Path):
    """``coverage_sim/_dpo_fast.py`` at git ``ref``, imported as a standalone module."""
    source = subprocess.run(["git", "show", f"{ref}:coverage_sim/_dpo_fast.py"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    path = folder / "dpo_fast_ref.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("dpo_fast_ref", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def problem(k: int, factored: bool):
    env = cs.random_bandit(k, seed=0, min_ref=0.1 / k)
    data = (cs.offline_pairs(env, env.ref) if factored
            else cs.offline_pairs(env, env.ref, n=20 * k, seed=0))
    u = np.random.default_rng(0).normal(size=(1, k))
    return np.ascontiguousarray(data.weights), np.ascontiguousarray(u)


def best_time(module, weights, u, parallel: bool, repeats: int) -> float:
    sym, d, act, kernel = module.dpo_fast_precompute(weights, 0.0, False, 0.1)
    grad = np.zeros_like(u)
    step = module.dpo_fast_grad_parallel if parallel else module.dpo_fast_grad
    step(sym, d, act, u, 0.1, grad, kernel)            # compile / warm up
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        step(sym, d, act, u, 0.1, grad, kernel)
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default="main", help="git ref of the 'before' kernel")
    ap.add_argument("--sizes", default="1000,4000")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        old = load_ref(args.ref, Path(tmp))
        print(f"{'K':>5} {'pairs':9} {'threads':9} {args.ref + ' (us)':>12} {'this (us)':>10} "
              f"{'this/ref':>8}")
        for k in map(int, args.sizes.split(",")):
            for factored in (True, False):
                weights, u = problem(k, factored)
                for parallel in (False, True):
                    t_old, t_new = [], []
                    for _ in range(5):
                        t_old.append(best_time(old, weights, u, parallel, args.repeats))
                        t_new.append(best_time(new, weights, u, parallel, args.repeats))
                    print(f"{k:>5} {'factored' if factored else 'dense':9} "
                          f"{'parallel' if parallel else 'serial':9} {min(t_old) * 1e6:12.1f} "
                          f"{min(t_new) * 1e6:10.1f} {min(t_new) / min(t_old):8.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
