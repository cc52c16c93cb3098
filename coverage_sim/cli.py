"""Command line: ``coverage-sim list | run | plot | reproduce | objectives | instances | train``.

- ``list``: the registered experiments (figure id, paper, one line each).
- ``run ID [--set key=value ...] [--seeds N] --out DIR``: run one experiment's seeds into DIR
  (config, seeds, versions and the tidy table; resumable), and check its claim.
- ``plot DIR``: draw a finished run's figure into DIR (PNG and PDF).
- ``reproduce [ID ...] [--quick]``: run, draw and check every figure into ``figures/``.
- ``objectives`` / ``instances``: the objective catalogue and the built-in instances.
- ``train INSTANCE -o NAME [-o NAME ...]``: train objectives on an instance with exact gradients and
  print their final metrics side by side (``--out DIR``: history.csv and config.json per objective).

Every file is written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from coverage_sim.behavior import restrict_support
from coverage_sim._validation import check_choice, check_in_range
from coverage_sim.data import offline_pairs
from coverage_sim.instances import INSTANCES, make_instance
from coverage_sim.objectives import OBJECTIVES, objective
from coverage_sim.sweep import atomic_write_text
from coverage_sim.train import train


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parse_settings(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        out[key] = _parse_value(value)
    return out


def _cmd_objectives(_args) -> int:
    width = max(map(len, OBJECTIVES))
    for name, spec in OBJECTIVES.items():
        print(f"{name:<{width}}  {spec.family:<17}  arXiv:{spec.arxiv or '-':<10}  {spec.paper}")
    return 0


def _cmd_instances(_args) -> int:
    width = max(map(len, INSTANCES))
    for name, (_factory, summary) in INSTANCES.items():
        print(f"{name:<{width}}  {summary}")
    return 0


def _cmd_train(args) -> int:
    env = make_instance(args.instance)
    settings = _parse_settings(args.set)
    for name in args.objective:
        check_choice(name, "objective", OBJECTIVES)
    accepted = set().union(*(OBJECTIVES[name].defaults for name in args.objective))
    unused = sorted(set(settings) - accepted)
    if unused:
        raise ValueError(f"--set {unused[0]!r} is not a parameter of {', '.join(args.objective)}; "
                         f"their parameters: {', '.join(sorted(accepted))}")
    behavior = env.ref if args.coverage is None else _truncate(env.ref, args.coverage)
    data = offline_pairs(env, behavior, labels=args.labels, n=args.n, seed=args.seed)
    rows = {}
    for name in args.objective:
        params = {k: v for k, v in settings.items() if k in OBJECTIVES[name].defaults}
        obj = objective(name, **params)
        run = train(env, obj, data if obj.needs_data else None, steps=args.steps, lr=args.lr,
                    optimizer=args.optimizer, seed=args.seed)
        rows[name] = run.history.iloc[-1]
        if args.out is not None:
            folder = Path(args.out) / name
            atomic_write_text(folder / "history.csv", run.history.to_csv(index=False))
            atomic_write_text(folder / "config.json", json.dumps(run.config, indent=2, default=str))
    table = pd.DataFrame(rows).drop(index="step")
    with pd.option_context("display.float_format", "{:.4g}".format, "display.width", 120):
        print(f"{env.name}: {args.steps} steps of {args.optimizer}, lr={args.lr}, offline data: "
              f"{data.source}")
        print(table.to_string())
    return 0


def _cmd_list(_args) -> int:
    from coverage_sim.experiments import EXPERIMENTS
    from coverage_sim.figures import _figure_key

    width = max(map(len, EXPERIMENTS))
    for exp in sorted(EXPERIMENTS.values(), key=_figure_key):
        print(f"{exp.figure:<4} {exp.id:<{width}}  arXiv:{exp.arxiv:<10}  {exp.title}")
    return 0


def _check_verdict(experiment, table, config) -> int:
    """Print the verdict; exit status 0 when it is the expected one (see ``expected_to_agree``)."""
    try:
        experiment.check(table, config)
    except AssertionError as err:
        print(f"{experiment.id}: does NOT reproduce the paper's claim: {err}"
              + ("" if experiment.expected_to_agree else " (expected: the finding does not carry "
                 "over, see the experiment's differences)"))
        return int(experiment.expected_to_agree)
    print(f"{experiment.id}: reproduces the paper's claim ({experiment.figure}).")
    return int(not experiment.expected_to_agree)


def _cmd_run(args) -> int:
    from coverage_sim.experiments import config_from_overrides, get_experiment
    from coverage_sim.sweep import run_sweep

    experiment = get_experiment(args.experiment)
    settings = _parse_settings(args.set)
    if args.device is not None:
        settings["device"] = args.device
    config = config_from_overrides(experiment, settings, quick=args.quick)
    seeds = experiment.default_seeds(args.quick) if args.seeds is None else range(args.seeds)
    table = run_sweep(experiment, config, seeds, out=args.out, workers=args.workers,
                      scheduler=args.scheduler, progress=not args.no_progress)
    print(f"wrote {len(table)} rows to {Path(args.out) / 'results.csv'}")
    return _check_verdict(experiment, table, config)


def _cmd_plot(args) -> int:
    from coverage_sim.plotting import save_figure
    from coverage_sim.sweep import load_run

    experiment, config, table = load_run(args.folder)
    paths = save_figure(experiment.plot(table, config), Path(args.folder) / "figure")
    print("wrote " + ", ".join(map(str, paths)))
    return _check_verdict(experiment, table, config)


def _cmd_reproduce(args) -> int:
    from coverage_sim.experiments import get_experiment
    from coverage_sim.figures import reproduce

    verdicts = reproduce(args.ids or None, quick=args.quick, figures_dir=args.figures,
                         runs_dir=args.runs, workers=args.workers, scheduler=args.scheduler,
                         progress=not args.no_progress, device=args.device)
    unexpected = 0
    for verdict in verdicts:
        expected = get_experiment(verdict.experiment).expected_to_agree
        status = "agrees" if verdict.agrees else "DOES NOT AGREE"
        if verdict.agrees != expected:
            unexpected += 1
        elif not expected:
            status += " (as expected: the finding does not carry over)"
        print(f"{verdict.experiment:<28} {status}: {verdict.message}")
    print(f"figures, data and index in {args.figures}/")
    return 0 if unexpected == 0 else 1


def _truncate(ref: np.ndarray, keep: float) -> np.ndarray:
    """Keep the most likely responses holding a ``keep`` fraction of ``pi_ref``'s mass (partial coverage)."""
    keep = check_in_range(keep, "coverage", 0.0, 1.0, low_open=True)
    ref2 = np.atleast_2d(ref)
    mask = np.zeros(ref2.shape, dtype=bool)
    for x, row in enumerate(ref2):
        order = np.argsort(-row)
        n_keep = int(np.searchsorted(np.cumsum(row[order]), keep) + 1)
        mask[x, order[:n_keep]] = True
    return restrict_support(ref, mask.reshape(ref.shape))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coverage-sim", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the registered experiments (figures)").set_defaults(
        func=_cmd_list)

    def parallel_options(p):
        p.add_argument("--workers", type=int, default=None,
                       help="local processes (default: one per core)")
        p.add_argument("--scheduler", default=None,
                       help="dask.distributed scheduler address, e.g. tcp://host:8786")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    run = sub.add_parser("run", help="run one experiment's seeds into a folder")
    run.add_argument("experiment", help="experiment id (see `coverage-sim list`)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="config field, value as JSON, e.g. --set taus=[0.1,1]")
    run.add_argument("--seeds", type=int, default=None,
                     help="number of seeds (default: the experiment's; at most 2 with --quick)")
    run.add_argument("--quick", action="store_true", help="start from the quick config")
    run.add_argument("--out", required=True, help="run folder (resumed if it exists)")
    run.add_argument("--device", default=None,
                     help="torch device of a transformer experiment, e.g. cuda (sets its config's "
                          "device field)")
    parallel_options(run)
    run.set_defaults(func=_cmd_run)
    plot = sub.add_parser("plot", help="draw a finished run folder's figure")
    plot.add_argument("folder")
    plot.set_defaults(func=_cmd_plot)
    rep = sub.add_parser("reproduce", help="run, draw and check every figure into figures/")
    rep.add_argument("ids", nargs="*", help="experiment ids (default: all)")
    rep.add_argument("--quick", action="store_true", help="small versions (under 2 minutes)")
    rep.add_argument("--figures", default="figures", help="output folder for figures")
    rep.add_argument("--runs", default="runs", help="folder for resumable runs")
    rep.add_argument("--device", default=None,
                     help="torch device of the transformer experiments, e.g. cuda (the others run "
                          "on the CPU as usual)")
    parallel_options(rep)
    rep.set_defaults(func=_cmd_reproduce)
    sub.add_parser("objectives", help="list the objective catalogue").set_defaults(
        func=_cmd_objectives)
    sub.add_parser("instances", help="list the built-in instances").set_defaults(
        func=_cmd_instances)
    tr = sub.add_parser("train", help="train objectives on an instance and compare them")
    tr.add_argument("instance", help="instance name (see `coverage-sim instances`)")
    tr.add_argument("-o", "--objective", action="append", required=True,
                    help="objective name; repeat to compare several")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="objective parameter, e.g. beta=0.1 (applied where the objective has it)")
    tr.add_argument("--steps", type=int, default=2000)
    tr.add_argument("--lr", type=float, default=0.01)
    tr.add_argument("--optimizer", default="adam", choices=["adam", "gd", "npg"])
    tr.add_argument("--labels", default="bradley_terry", help="offline labels")
    tr.add_argument("--n", type=int, default=None, help="offline pairs to sample (default exact)")
    tr.add_argument("--coverage", type=float, default=None,
                    help="offline data covers only the top fraction of pi_ref's mass")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--out", default=None, help="folder for history.csv and config.json")
    tr.set_defaults(func=_cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"coverage-sim: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
