"""Throughput of the gap atlas: problems trained per second on this machine's cores, exact path.

Two numbers, measured in one run:

* **atlas**: the whole default atlas (``coverage-sim run gap-atlas``: data, reward models, training,
  metrics, one CSV per cell) through the sweep's local worker processes (one numba thread each),
  into a fresh temporary folder; problems per second of wall time.
* **engine**: one batch of ``--batch`` problems per method at the atlas's size (K = 10, 1000 Adam
  steps, exact mu x mu data) through ``cs.train_policies`` in this process, numba's threads on the
  cores; problems per second, compilation excluded.

Usage::

    python benchmarks/bench_atlas.py                 # default atlas, 2 workers (about 2-3 min)
    python benchmarks/bench_atlas.py --quick         # the quick atlas (about 15-30 s)
    python benchmarks/bench_atlas.py --workers 1 --no-atlas

Run it on an idle machine: on 2 shared cores every other process slows both numbers. The load average
is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))



def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def bench_atlas(quick: bool, workers: int) -> tuple[int, int, float]:
    """``(cells, problems, seconds)`` of one full atlas run into a fresh folder."""
    from coverage_sim.experiments.atlas import gap
    from coverage_sim.sweep import run_sweep

    config = gap.GapAtlasConfig.quick() if quick else gap.GapAtlasConfig()
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        table = run_sweep(gap.GAP_ATLAS, config, [0], out=out, workers=workers, progress=False)
        seconds = time.perf_counter() - start
    runs = table[table["method"].isin(list(gap.METHODS)) & (table["metric"] == "kl")]
    return len(gap.cell_names(config)), len(runs), seconds


def bench_engine(batch: int, threads: int) -> dict[str, float]:
    """Problems per second of ``cs.train_policies`` per method at the atlas's size."""
    import numba

    import coverage_sim as cs
    from coverage_sim.experiments.atlas import gap

    numba.set_num_threads(threads)
    config = gap.GapAtlasConfig()
    envs = [gap.atlas_instance(config, 0, i)[0] for i in range(batch)]
    datas = [cs.offline_pairs(e, e.ref) for e in envs]
    out = {}
    for name in ("sigmoid", "ipo", "rlhf", "online_dpo", "online_ipo"):
        obj = cs.objective(name, beta=0.1)
        data = datas if obj.needs_data else None
        cs.train_policies(envs[:2], obj, None if data is None else data[:2], steps=2,
                          lr=config.lr, record=[2])                       # compile / load cache
        start = time.perf_counter()
        cs.train_policies(envs, obj, data, steps=config.steps, lr=config.lr,
                          record=[config.steps])
        out[name] = batch / (time.perf_counter() - start)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick atlas")
    parser.add_argument("--workers", type=int, default=2, help="local worker processes / threads")
    parser.add_argument("--batch", type=int, default=1024, help="problems per engine batch")
    parser.add_argument("--no-atlas", action="store_true", help="only the engine numbers")
    args = parser.parse_args(argv)
    print(f"load average at start: {_load()}  (cores: {os.cpu_count()})")
    engine = bench_engine(args.batch, args.workers)
    print(f"engine, K = 10, 1000 Adam steps, {args.workers} thread(s), problems/s:")
    for name, rate in engine.items():
        print(f"  {name:<11} {rate:8.0f}")
    if not args.no_atlas:
        cells, problems, seconds = bench_atlas(args.quick, args.workers)
        label = "quick" if args.quick else "default"
        print(f"atlas ({label}): {cells} cells, {problems} problems in {seconds:.1f} s on "
              f"{args.workers} worker(s): {problems / seconds:.0f} problems/s end to end")
    print(f"load average at end: {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
