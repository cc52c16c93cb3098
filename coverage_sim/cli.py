"""Command line: ``coverage-sim list | run | plot | reproduce | objectives | instances | train``.

- ``list``: the registered experiments (figure id, paper, one line each).
- ``run ID [--set key=value ...] [--seeds N] --out DIR``: run one experiment's seeds into DIR
  (config, seeds, versions and the tidy table; resumable), and check its claim.
- ``plot DIR``: draw a finished run's figure into DIR (PNG and PDF).
- ``reproduce [ID ...] [--quick]``: run, draw and check every figure into ``figures/``.
- ``objectives`` / ``instances``: the objective catalogue and the built-in instances.
- ``train INSTANCE -o NAME [-o NAME ...]``: train objectives on an instance with exact gradients and
  print their final metrics side by side (``--out DIR``: history.csv and config.json per objective).

Every file is written atomically. ``--help``, ``list``, ``objectives``, ``instances`` and usage
errors answer at once: they read the static :mod:`coverage_sim.catalogue`, and numba, pandas,
torch and the experiments are imported only by the commands that run something.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from coverage_sim import catalogue


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (``coverage-sim ...: error: ...``), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum`` (the message names the value)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value
    return parse


def _output_folder(path, option: str) -> Path:
    """``path`` as a folder that exists (created if needed) and can be written, or a ValueError
    naming ``option``."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{option} {str(path)!r} is an existing file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{option} {str(path)!r} cannot be created: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {str(path)!r} is not writable")
    return folder


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
    width = max(len(o.name) for o in catalogue.OBJECTIVES)
    for o in catalogue.OBJECTIVES:
        print(f"{o.name:<{width}}  {o.family:<17}  arXiv:{o.arxiv or '-':<10}  {o.paper}")
    return 0


def _cmd_instances(_args) -> int:
    width = max(len(i.name) for i in catalogue.INSTANCES)
    for i in catalogue.INSTANCES:
        print(f"{i.name:<{width}}  {i.summary}")
    return 0


def _check_name(value: str, name: str, entries) -> None:
    """ValueError unless ``value`` is one of the catalogue's names (checked before any heavy
    import; the message is :func:`coverage_sim._validation.check_choice`'s)."""
    allowed = [e[0] for e in entries]
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; valid names: {', '.join(sorted(allowed))}")


def _cmd_train(args) -> int:
    _check_name(args.instance, "instance", catalogue.INSTANCES)
    for name in args.objective:
        _check_name(name, "objective", catalogue.OBJECTIVES)
    import pandas as pd

    from coverage_sim.data import offline_pairs
    from coverage_sim.instances import make_instance
    from coverage_sim.objectives import OBJECTIVES, objective
    from coverage_sim.sweep import atomic_write_text
    from coverage_sim.train import train

    env = make_instance(args.instance)
    settings = _parse_settings(args.set)
    accepted = set().union(*(OBJECTIVES[name].defaults for name in args.objective))
    unused = sorted(set(settings) - accepted)
    if unused:
        raise ValueError(f"--set {unused[0]!r} is not a parameter of {', '.join(args.objective)}; "
                         f"their parameters: {', '.join(sorted(accepted))}")
    if args.out is not None:
        _output_folder(args.out, "--out")
    behavior = env.ref if args.coverage is None else _truncate(env.ref, args.coverage)
    data = offline_pairs(env, behavior, labels=args.labels, n=args.n, seed=args.seed)
    rows = {}
    for name in args.objective:
        params = {k: v for k, v in settings.items() if k in OBJECTIVES[name].defaults}
        obj = objective(name, **params)
        run = train(env, obj, data if obj.needs_data else None, steps=args.steps, lr=args.lr,
                    optimizer=args.optimizer, seed=args.seed,
                    progress=False if args.no_progress else None)
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
    width = max(len(e.id) for e in catalogue.EXPERIMENTS)
    for e in sorted(catalogue.EXPERIMENTS, key=lambda e: catalogue.figure_key(e.figure, e.id)):
        print(f"{e.figure:<4} {e.id:<{width}}  arXiv:{e.arxiv:<10}  {e.title}")
    return 0


def _check_verdict(experiment, table, config) -> int:
    """Print the check's result; exit status 0 when its verdict is the expected one."""
    from coverage_sim.experiments.registry import assess

    result = assess(experiment, table, config)
    expected = experiment.expected(quick=config == experiment.default_config(quick=True))[0]
    note = "" if result.verdict == expected else f" (expected: {expected})"
    print(f"{experiment.id} ({experiment.figure}): {result.summary()}{note}")
    return int(result.verdict != expected)


def _cmd_run(args) -> int:
    from coverage_sim.experiments import config_from_overrides, get_experiment
    from coverage_sim.sweep import run_sweep

    experiment = get_experiment(args.experiment)
    settings = _parse_settings(args.set)
    if args.device is not None:
        settings["device"] = args.device
    config = config_from_overrides(experiment, settings, quick=args.quick)
    _output_folder(args.out, "--out")
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

    for ident in args.ids:
        get_experiment(ident)
    _output_folder(args.figures, "--figures")
    _output_folder(args.runs, "--runs")
    verdicts = reproduce(args.ids or None, quick=args.quick, figures_dir=args.figures,
                         runs_dir=args.runs, workers=args.workers, scheduler=args.scheduler,
                         progress=not args.no_progress, device=args.device)
    unexpected = 0
    for verdict in verdicts:
        expected = get_experiment(verdict.experiment).expected(quick=args.quick)[0]
        note = ""
        if verdict.verdict != expected:
            unexpected += 1
            note = f"  [UNEXPECTED: the registered verdict is {expected!r}]"
        print(f"{verdict.experiment:<28} {verdict.message}{note}")
    print(f"figures, data and index in {args.figures}/")
    return 0 if unexpected == 0 else 1


def _truncate(ref, keep: float):
    """Keep the most likely responses holding a ``keep`` fraction of ``pi_ref``'s mass (partial coverage)."""
    import numpy as np

    from coverage_sim._validation import check_in_range
    from coverage_sim.behavior import restrict_support

    keep = check_in_range(keep, "coverage", 0.0, 1.0, low_open=True)
    ref2 = np.atleast_2d(ref)
    mask = np.zeros(ref2.shape, dtype=bool)
    for x, row in enumerate(ref2):
        order = np.argsort(-row)
        n_keep = int(np.searchsorted(np.cumsum(row[order]), keep) + 1)
        mask[x, order[:n_keep]] = True
    return restrict_support(ref, mask.reshape(ref.shape))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="coverage-sim", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the registered experiments (figures)").set_defaults(
        func=_cmd_list)

    def parallel_options(p):
        p.add_argument("--workers", type=_int_at_least(1), default=None,
                       help="local processes (default: one per core)")
        p.add_argument("--scheduler", default=None,
                       help="dask.distributed scheduler address, e.g. tcp://host:8786")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    run = sub.add_parser("run", help="run one experiment's seeds into a folder")
    run.add_argument("experiment", help="experiment id (see `coverage-sim list`)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="config field, value as JSON, e.g. --set taus=[0.1,1]")
    run.add_argument("--seeds", type=_int_at_least(1), default=None,
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
    tr.add_argument("--seed", type=_int_at_least(0), default=0)
    tr.add_argument("--out", default=None, help="folder for history.csv and config.json")
    tr.add_argument("--no-progress", action="store_true",
                    help="hide the progress bar (shown for runs longer than a few seconds)")
    tr.set_defaults(func=_cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; bad input is one line on stderr and exit status 2, a run that
    diverges one line and exit status 1 (never a traceback)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"coverage-sim: error: {exc}", file=sys.stderr)
        return 2
    except FloatingPointError as exc:
        print(f"coverage-sim: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
