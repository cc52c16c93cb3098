"""Benchmark of the torch backend: training throughput (tokens per second) per device and model size.

Three kinds of step, each timed per device (CPU, and CUDA when ``torch.cuda.is_available()``):

* **sampled** -- one step of :func:`coverage_sim.torch_backend.train_sampled` on Tajwar et al.'s
  token task (arXiv:2404.14367: vocab 100, 9 tokens, one prompt): ``draw_batch`` (prompts, responses
  from the sampler, gold rewards, reference log-probs, labels), ``sampled_backward`` (forward and
  backward over every drawn response) and one Adam step. Throughput = response tokens trained on per
  second (``batch x group_size x length / step time``). Modes: offline DPO (pairs from pi_ref), online
  DPO (pairs from the current policy) and RLHF (REINFORCE with a leave-one-out baseline, 2 responses
  per prompt).
* **exact** -- one step of :func:`coverage_sim.torch_backend.train_exact` (forward and backward over
  every sequence, the core's exact online-IPO gradient, one Adam step) on the token task of the
  scaling experiment (``tang-scaling``); throughput = ``V**L x L`` tokens per step / step time.
  The "stack of 8" rows train 8 independent models in one batched step
  (:func:`coverage_sim.transformer_stack.train_exact_stack`, as ``tang-scaling`` and
  ``tang-transformer`` do): ``8 x V**L x L`` tokens per step.
* **mlp** -- one step of :func:`coverage_sim.train` with Tajwar's bandit MLP
  (:class:`coverage_sim.mlp.MLPPolicy`, K = 100 arms, exact online IPO): forward, the core's
  gradient, the vector-Jacobian product and the numpy Adam update; reported as steps per second.

Models: minGPT's gpt-nano (3 layers, 3 heads, 48), gpt-micro (4, 4, 128), gpt-mini (6, 6, 192) and
the sizes of the scaling experiment. float32 and float64 are timed with their steps interleaved (both
see the same machine load); each time is the median over the timed steps after 2 warm-up steps; CUDA
times are taken after ``torch.cuda.synchronize()``.

    python benchmarks/bench_torch.py                  # every case on every available device
    python benchmarks/bench_torch.py --quick          # fewer steps and cases (about a minute)
    python benchmarks/bench_torch.py --device cuda --kinds exact,sampled --threads 1

Everything printed is measured in this run; see benchmarks/README.md.
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
from coverage_sim.experiments.tang.scaling import SIZES, ScalingConfig, scaling_env
from coverage_sim.mlp import MLPPolicy
from coverage_sim.sequences import tajwar_token_env
from coverage_sim.torch_backend import (draw_batch, exact_backward, reproducible,
                                        sampled_backward, sampled_loss)
from coverage_sim.transformer import CausalTransformer, TransformerConfig
from coverage_sim.transformer_stack import TransformerStack, train_exact_stack

GPT = {"gpt-nano": dict(n_layer=3, n_head=3, n_embd=48),
       "gpt-micro": dict(n_layer=4, n_head=4, n_embd=128),
       "gpt-mini": dict(n_layer=6, n_head=6, n_embd=192)}
SAMPLED_MODES = {"offline_dpo": cs.objective("sigmoid", beta=0.1),
                 "online_dpo": cs.objective("online_dpo", beta=0.1),
                 "rlhf": cs.objective("rlhf", beta=0.1)}
DTYPES = (torch.float32, torch.float64)


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _SampledCase:
    """One model trained by sampled steps, with its own generator and optimiser."""

    def __init__(self, cfg, dtype, device, env, loss, batch):
        self.model = CausalTransformer(cfg, seed=0, dtype=dtype, device=device)
        self.env, self.loss, self.batch, self.device = env, loss, batch, device
        self.gen = torch.Generator(device=device).manual_seed(0)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.times = []
        self.tokens = batch * loss.group_size * env.length

    def step(self):
        _sync(self.device)
        t0 = time.perf_counter()
        b = draw_batch(self.model, self.env, self.loss, self.batch, self.gen)
        self.opt.zero_grad()
        sampled_backward(self.model, self.loss, b)
        self.opt.step()
        _sync(self.device)
        self.times.append(time.perf_counter() - t0)


class _ExactCase:
    """One model (``stack=None``) or a stack of independent models trained by exact steps (every
    sequence enumerated); a stack step is one :func:`train_exact_stack` step."""

    def __init__(self, cfg, dtype, device, env, objective, stack=None):
        self.env, self.objective, self.device = env, objective, device
        self.times = []
        self.tokens = env.n_prompts * env.n_sequences * env.length * (stack or 1)
        if stack is None:
            self.model = CausalTransformer(cfg, seed=0, dtype=dtype, device=device)
            self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        else:
            self.stack = TransformerStack([CausalTransformer(cfg, seed=s, dtype=dtype,
                                                             device=device)
                                           for s in range(stack)])
        self.is_stack = stack is not None

    def step(self):
        _sync(self.device)
        t0 = time.perf_counter()
        if self.is_stack:
            # 10 steps per call (one extra forward and the metrics at the end), time / 10
            train_exact_stack(self.env, self.objective, stack=self.stack, steps=10, lr=1e-4,
                              record=[10])
        else:
            self.opt.zero_grad()
            exact_backward(self.model, self.env, self.objective)
            self.opt.step()
        _sync(self.device)
        self.times.append((time.perf_counter() - t0) / (10 if self.is_stack else 1))


def _median_pair(cases: dict, steps: int) -> dict:
    """Median step time per dtype, the two dtypes' steps interleaved after 2 warm-up steps."""
    for _ in range(steps + 2):
        for case in cases.values():
            case.step()
    return {dt: statistics.median(c.times[2:]) for dt, c in cases.items()}


def _row(device, name, n_par, dtype, threads, kind, tokens, seconds):
    tok_s = tokens / seconds
    print(f"| {device} | {name} | {n_par:,} | {str(dtype)[6:]} | {threads} | {kind} | {tokens:,} "
          f"| {1e3 * seconds:.1f} | {tok_s:,.0f} |", flush=True)
    return tok_s


def bench_sampled(device, models, threads, steps, batch):
    env = tajwar_token_env(length=9, vocab=100)
    out = {}
    for name in models:
        cfg = TransformerConfig(vocab=env.vocab, n_prompts=1, length=env.length, **GPT[name])
        n_par = sum(p.numel() for p in CausalTransformer(cfg).parameters())
        for mode, obj in SAMPLED_MODES.items():
            loss = sampled_loss(obj)
            cases = {dt: _SampledCase(cfg, dt, device, env, loss, batch) for dt in DTYPES}
            for dt, sec in _median_pair(cases, steps).items():
                out[(device.type, name, dt, f"sampled {mode}")] = _row(
                    device.type, name, n_par, dt, threads, f"sampled {mode}",
                    cases[dt].tokens, sec)
    return out


def bench_exact(device, models, threads, steps, stack):
    config = ScalingConfig()
    env = scaling_env(config)
    obj = cs.objective("online_ipo", beta=0.03, reward=env.bandit.reward)
    sizes = {**{f"scaling {k}": v for k, v in SIZES.items() if k in config.sizes},
             **{k: GPT[k] for k in models}}
    out = {}
    for name, kw in sizes.items():
        cfg = TransformerConfig(vocab=env.vocab, n_prompts=1, length=env.length, **kw)
        n_par = sum(p.numel() for p in CausalTransformer(cfg).parameters())
        for n_stack in (None, stack):
            cases = {dt: _ExactCase(cfg, dt, device, env, obj, n_stack) for dt in DTYPES}
            label = f"exact V={env.vocab} L={env.length}" + (
                f", stack of {n_stack}" if n_stack else "")
            for dt, sec in _median_pair(cases, steps).items():
                out[(device.type, name, dt, label)] = _row(device.type, name, n_par, dt, threads,
                                                           label, cases[dt].tokens, sec)
    return out


def bench_mlp(steps):
    """Steps per second of cs.train with Tajwar's MLP (CPU, one thread: the policy's default)."""
    env = cs.tajwar_bandit(peak=70.0)
    obj = cs.objective("online_ipo", beta=0.05, labels="deterministic")
    out = {}
    for dtype in ("float32", "float64"):
        pol = MLPPolicy(sft_steps=0, dtype=dtype)
        cs.train(env, obj, steps=2, lr=0.01, policy=pol, record=[0])          # warm-up
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            cs.train(env, obj, steps=steps, lr=0.01, policy=pol, record=[0])
            times.append((time.perf_counter() - t0) / steps)
        sec = statistics.median(times)
        out[dtype] = 1.0 / sec
        print(f"| cpu | Tajwar MLP (K=100) | {pol.n_params(100):,} | {dtype} | 1 | cs.train "
              f"exact online IPO | - | {1e3 * sec:.2f} | {1.0 / sec:,.0f} steps/s |", flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps; gpt-nano only")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per case")
    ap.add_argument("--batch", type=int, default=64, help="prompts per sampled step")
    ap.add_argument("--threads", default="1", help="torch intra-op thread counts to try (CPU)")
    ap.add_argument("--device", default=None,
                    help="comma-separated devices (default: cpu, and cuda when available)")
    ap.add_argument("--kinds", default="sampled,exact,mlp", help="subset of sampled,exact,mlp")
    ap.add_argument("--stack", type=int, default=8,
                    help="models per stack in the stacked exact rows (the experiments' 8 seeds)")
    args = ap.parse_args(argv)
    steps = args.steps or (5 if args.quick else 20)
    models = ["gpt-nano"] if args.quick else list(GPT)
    threads = [int(t) for t in args.threads.split(",")]
    kinds = set(args.kinds.split(","))
    devices = (args.device.split(",") if args.device
               else ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    print(f"# torch backend throughput: median of {steps} steps per case (float32/float64 "
          "interleaved)")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, torch {torch.__version__}"
          + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "")
          + f"; load average at start: {os.getloadavg()[0]:.2f}")
    print()
    print("| device | model | params | dtype | threads | step | tokens/step | step ms "
          "| tokens/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for dev in devices:
        device = torch.device(dev)
        for n_threads in (threads if device.type == "cpu" else [threads[0]]):
            with reproducible(threads=n_threads, deterministic=None):
                if "exact" in kinds:
                    bench_exact(device, models, n_threads, steps, args.stack)
                if "sampled" in kinds:
                    bench_sampled(device, models, n_threads, steps, args.batch)
    if "mlp" in kinds:
        bench_mlp(20 if args.quick else 100)
    print(f"# load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
