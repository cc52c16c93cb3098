"""Benchmark of the torch backend's sampled mode: training throughput in tokens per second.

One training step of :func:`coverage_sim.torch_backend.train_sampled` = draw a minibatch
(``draw_batch``: prompts, responses from the sampler, gold rewards, reference log-probs, labels),
then ``sampled_backward`` (forward + backward of the policy on every drawn response) and one
``torch.optim.Adam`` step. Throughput = response tokens trained on per second
(``batch x group_size x length / time per step``).

    python benchmarks/bench_torch.py                 # full run (a few minutes)
    python benchmarks/bench_torch.py --quick         # fewer steps and cases
    python benchmarks/bench_torch.py --threads 1,2 --steps 20

Cases: Tajwar et al.'s token task (arXiv:2404.14367: vocab 100, 9 tokens, one prompt) with minGPT's
gpt-nano (3 layers, 3 heads, 48 dims) and gpt-micro (4, 4, 128); offline DPO (pairs from pi_ref),
online DPO (pairs from the current policy) and RLHF (REINFORCE, 2 responses per prompt); float32 and
float64; torch intra-op threads. Everything in the printed table is measured in this run; see
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

import coverage_sim as cs
from coverage_sim.sequences import tajwar_token_env
from coverage_sim.torch_backend import draw_batch, sampled_backward, sampled_loss
from coverage_sim.transformer import CausalTransformer, TransformerConfig

MODELS = {"gpt-nano": dict(n_layer=3, n_head=3, n_embd=48),
          "gpt-micro": dict(n_layer=4, n_head=4, n_embd=128)}
MODES = {"offline_dpo": cs.objective("sigmoid", beta=0.1),
         "online_dpo": cs.objective("online_dpo", beta=0.1),
         "rlhf": cs.objective("rlhf", beta=0.1)}


class _Case:
    """One model being trained, with its own generator and optimiser."""

    def __init__(self, cfg, dtype, env, loss, batch):
        self.model = CausalTransformer(cfg, seed=0, dtype=dtype)
        self.env, self.loss, self.batch = env, loss, batch
        self.gen = torch.Generator().manual_seed(0)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.draw, self.update = [], []

    def step(self):
        t0 = time.perf_counter()
        b = draw_batch(self.model, self.env, self.loss, self.batch, self.gen)
        t1 = time.perf_counter()
        self.opt.zero_grad()
        sampled_backward(self.model, self.loss, b)
        self.opt.step()
        t2 = time.perf_counter()
        self.draw.append(t1 - t0)
        self.update.append(t2 - t1)


def _time_pair(cfg, env, loss, batch, steps):
    """Median draw and update time per step for float32 and float64, steps interleaved.

    Interleaving the two dtypes step by step exposes both to the same machine load, and the
    median ignores steps stalled by another process; 2 warm-up steps each are dropped.
    """
    cases = {dt: _Case(cfg, dt, env, loss, batch) for dt in (torch.float32, torch.float64)}
    for _ in range(steps + 2):
        for case in cases.values():
            case.step()
    return {dt: (statistics.median(c.draw[2:]), statistics.median(c.update[2:]))
            for dt, c in cases.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps, gpt-nano only")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per case")
    ap.add_argument("--batch", type=int, default=64, help="prompts per step (pairs for DPO)")
    ap.add_argument("--threads", default="1,2", help="torch intra-op thread counts to try")
    args = ap.parse_args(argv)
    steps = args.steps or (6 if args.quick else 20)
    models = ["gpt-nano"] if args.quick else list(MODELS)
    threads = [int(t) for t in args.threads.split(",")]
    env = tajwar_token_env(length=9, vocab=100)
    print(f"# torch backend, sampled mode: {env.name}, batch {args.batch} prompts, median of "
          f"{steps} steps per case (float32/float64 interleaved)")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, torch {torch.__version__}; load average at start: "
          f"{os.getloadavg()[0]:.2f}")
    print()
    print("| model | params | dtype | threads | mode | responses/step | draw ms | update ms "
          "| step ms | tokens/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    old_threads = torch.get_num_threads()
    results = {}
    for name in models:
        cfg = TransformerConfig(vocab=env.vocab, n_prompts=env.n_prompts, length=env.length,
                                **MODELS[name])
        n_par = sum(p.numel() for p in CausalTransformer(cfg).parameters())
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            for mode, obj in MODES.items():
                loss = sampled_loss(obj)
                timed = _time_pair(cfg, env, loss, args.batch, steps)
                n_resp = args.batch * loss.group_size
                for dtype, (draw, update) in timed.items():
                    tok_s = n_resp * env.length / (draw + update)
                    results[(name, dtype, n_threads, mode)] = tok_s
                    print(f"| {name} | {n_par} | {str(dtype)[6:]} | {n_threads} | {mode} "
                          f"| {n_resp} | {1e3 * draw:.1f} | {1e3 * update:.1f} "
                          f"| {1e3 * (draw + update):.1f} | {tok_s:,.0f} |", flush=True)
    torch.set_num_threads(old_threads)
    print()
    print("float64 / float32 time per step (same model, threads, mode):")
    for (name, dtype, n_threads, mode), tok_s in results.items():
        if dtype == torch.float64:
            ratio = results[(name, torch.float32, n_threads, mode)] / tok_s
            print(f"  {name:9s} threads={n_threads} {mode:11s}: {ratio:.2f}x")
    print(f"# load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
