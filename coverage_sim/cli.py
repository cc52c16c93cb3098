"""Command line: ``coverage-sim list | config | run | plot | reproduce | objectives | instances | train``.

- ``list``: the registered experiments (figure id, paper, one line each).
- ``config ID``: an experiment's config fields, their defaults (full and ``--quick``) and meaning:
  the keys ``run --set`` accepts.
- ``run ID [--set key=value ...] [--seeds N] --out DIR``: run one experiment's seeds into DIR
  (config, seeds, versions and the tidy table; resumable), and check its claim.
- ``plot DIR``: draw a finished run's figure into DIR (PNG and PDF).
- ``reproduce [ID ...] [--quick]``: run, draw and check every figure into ``figures/`` (with
  ``--quick``, into ``runs/quick/figures/`` unless ``--figures`` says otherwise, so that a quick
  run never overwrites the committed full-size figures; PNG and PDF, a quick run PNG only, or the
  ``--formats`` given).
- ``objectives`` / ``instances``: the objective catalogue and the built-in instances.
- ``train INSTANCE -o NAME [-o NAME ...]``: train objectives on an instance with exact gradients and
  print their final metrics side by side (``--out DIR``: history.csv and config.json per objective).

Every file is written atomically, with the permissions the umask gives. ``--help``, ``list``,
``objectives``, ``instances`` and usage errors answer at once: they read the static
:mod:`coverage_sim.catalogue`, and numba, pandas, torch and the experiments are imported only by the
commands that run something. Every error is one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path

from coverage_sim import catalogue


#: The label models of offline pairs (``coverage_sim.preferences.LABEL_MODELS``; a test keeps the
#: two equal), spelled out so that ``--help`` needs no numpy import.
LABEL_MODELS = ("bradley_terry", "deterministic")


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
    from coverage_sim._files import atomic_write_text
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
    entries = sorted(catalogue.EXPERIMENTS, key=lambda e: catalogue.figure_key(e.figure, e.id))
    fig_width = max(len(e.figure) for e in entries)
    id_width = max(len(e.id) for e in entries)
    arxiv_width = max(len(e.arxiv) for e in entries) + len("arXiv:")
    for e in entries:
        print(f"{e.figure:<{fig_width}}  {e.id:<{id_width}}  {'arXiv:' + e.arxiv:<{arxiv_width}}  "
              f"{e.title}")
    return 0


def _field_docs(config_class) -> dict[str, str]:
    """``{field: text}`` from the ``Attributes:`` sections of a config class's docstring and of its
    bases' (a field documented on a base keeps that text unless the subclass documents it)."""
    import inspect
    import re

    docs = {}
    for klass in reversed(config_class.__mro__):
        doc = inspect.cleandoc(klass.__dict__.get("__doc__") or "")
        if "Attributes:" not in doc:
            continue
        names, indent = [], 0
        for line in doc.split("Attributes:", 1)[1].splitlines():
            match = re.match(r"^( {1,4})(\w+(?:, \w+)*)(?: \([^)]*\))?: (.*)$", line)
            if match and (not names or len(match.group(1)) == indent):
                indent, names = len(match.group(1)), match.group(2).split(", ")
                for name in names:
                    docs[name] = match.group(3).strip()
            elif names and re.match(rf"^ {{{indent + 1},}}\S", line):
                for name in names:
                    docs[name] += " " + line.strip()
            elif line.strip() and not line.startswith(" "):
                break   # the next section
    # Plain text for a terminal: ``code`` -> code, :data:`NAME` -> NAME.
    return {k: re.sub(r":\w+:`~?([^`]+)`", r"\1", v.replace("``", "")) for k, v in docs.items()}


def _cmd_config(args) -> int:
    import dataclasses

    from coverage_sim.experiments import get_experiment

    experiment = get_experiment(args.experiment)
    full, quick = experiment.default_config(False), experiment.default_config(True)
    docs = _field_docs(experiment.config)
    print(f"{experiment.id} ({experiment.figure}): {experiment.title}")
    print(f"config {experiment.config.__name__}; set a field with "
          f"`coverage-sim run {experiment.id} --set KEY=VALUE` (VALUE as JSON)\n")
    for field in dataclasses.fields(full):
        default = json.dumps(_jsonable(getattr(full, field.name)))
        quick_value = json.dumps(_jsonable(getattr(quick, field.name)))
        kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__",
                                                                      str(field.type))
        line = f"{field.name} ({kind}) = {default}"
        if quick_value != default:
            line += f"   [--quick: {quick_value}]"
        print(line)
        text = docs.get(field.name)
        if text:
            print(textwrap.fill(text, width=96, initial_indent="    ", subsequent_indent="    "))
    return 0


def _jsonable(value):
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


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
    figures = args.figures
    if figures is None:
        # A quick run must not overwrite the committed full-size figures and their index.
        figures = str(Path(args.runs) / "quick" / "figures") if args.quick else "figures"
    _output_folder(args.runs, "--runs")
    _output_folder(figures, "--figures")
    verdicts = reproduce(args.ids or None, quick=args.quick, figures_dir=figures,
                         runs_dir=args.runs, workers=args.workers, scheduler=args.scheduler,
                         progress=not args.no_progress, device=args.device,
                         formats=None if args.formats is None else args.formats.split(","))
    unexpected = 0
    for verdict in verdicts:
        expected = get_experiment(verdict.experiment).expected(quick=args.quick)[0]
        note = ""
        if verdict.verdict != expected:
            unexpected += 1
            note = f"  [UNEXPECTED: the registered verdict is {expected!r}]"
        print(f"{verdict.experiment:<28} {verdict.message}{note}")
    print(f"figures, data and index in {figures}/")
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


_DESCRIPTION = """\
Exact simulator of online vs offline preference optimisation (RLHF, DPO, IPO, ...) under
controllable data coverage.

commands:
  list         the registered experiments: figure, id, arXiv id, title
  config ID    an experiment's config fields (the keys of `run --set`), defaults, meaning
  run ID       run one experiment's seeds into a folder and check its claim (resumable)
  plot DIR     draw a finished run folder's figure
  reproduce    run, draw and check every figure into figures/
  objectives   the objective catalogue: name, family, arXiv id, paper
  instances    the built-in bandit instances
  train        train objectives on an instance and compare their final metrics

`coverage-sim COMMAND --help` describes a command's options."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keeps the descriptions' line breaks and appends each option's default, except where the
    default is "nothing" (None, False, an empty list) or the help text states it already."""

    def __init__(self, prog, **kwargs):
        kwargs.setdefault("max_help_position", 24)
        super().__init__(prog, **kwargs)

    def _get_help_string(self, action):
        nothing = action.default is None or action.default is False or action.default == []
        if nothing or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="coverage-sim", usage="coverage-sim [-h] COMMAND ...",
                     description=_DESCRIPTION, formatter_class=_HelpFormatter)
    # The commands are listed in the description, with their arguments; argparse's own list
    # would repeat them.
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help=argparse.SUPPRESS)

    def command(name, help_text, description=None):
        text = textwrap.fill(description or help_text[0].upper() + help_text[1:] + ".", 88)
        return sub.add_parser(name, help=help_text, description=text,
                              formatter_class=_HelpFormatter)

    command("list", "list the registered experiments (figure, id, arXiv id, title)").set_defaults(
        func=_cmd_list)
    cfg = command("config", "show an experiment's config fields: the keys of `run --set`",
                  "Print an experiment's config fields with their type, default, quick default "
                  "and meaning. These are the keys `coverage-sim run ID --set KEY=VALUE` accepts.")
    cfg.add_argument("experiment", help="experiment id (see `coverage-sim list`)")
    cfg.set_defaults(func=_cmd_config)

    def parallel_options(p):
        p.add_argument("--workers", type=_int_at_least(1), default=None,
                       help="local worker processes (default: one per core)")
        p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="run on a dask.distributed cluster at ADDRESS, e.g. tcp://host:8786 "
                            "(needs the cluster extra)")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    run = command("run", "run one experiment's seeds into a folder and check its claim",
                  "Run one experiment's seeds into a run folder (config.json, one CSV per seed, "
                  "results.csv), then check the paper's claim on the table; the exit status is 0 "
                  "when the verdict is the registered one. Re-running into the same folder "
                  "resumes it. List the config keys of --set with `coverage-sim config ID`.")
    run.add_argument("experiment", help="experiment id (see `coverage-sim list`)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field, value as JSON, e.g. --set taus=[0.1,1]; "
                          "repeatable; `coverage-sim config ID` lists the keys")
    run.add_argument("--seeds", type=_int_at_least(1), default=None, metavar="N",
                     help="run seeds 0..N-1 (default: the experiment's own seeds)")
    run.add_argument("--quick", action="store_true",
                     help="start from the experiment's quick config (seconds, not minutes)")
    run.add_argument("--out", required=True, metavar="DIR",
                     help="run folder (created; resumed if it holds this run)")
    run.add_argument("--device", default=None,
                     help="torch device of a transformer experiment, e.g. cuda (sets its config's "
                          "device field)")
    parallel_options(run)
    run.set_defaults(func=_cmd_run)
    plot = command("plot", "draw a finished run folder's figure",
                   "Draw the figure of a finished run folder (written by `coverage-sim run`) into "
                   "DIR/figure.png and DIR/figure.pdf, and print the check's verdict.")
    plot.add_argument("folder", metavar="DIR",
                      help="a finished run folder: holds config.json and results.csv")
    plot.set_defaults(func=_cmd_plot)
    rep = command("reproduce", "run, draw and check every figure into figures/",
                  "Run, draw and check the registered experiments (default: all) and write each "
                  "figure (PNG and PDF; PNG only with --quick), its data (CSV), its config and "
                  "verdict (JSON) and the illustrated index README.md into the figures folder. "
                  "Runs are resumable under --runs.")
    rep.add_argument("ids", nargs="*", metavar="ID", help="experiment ids (default: all)")
    rep.add_argument("--quick", action="store_true",
                     help="small versions, one seed each, PNG previews (1-1.5 minutes for all "
                          "once numba's kernels are cached, about 2 in a fresh clone), written "
                          "to RUNS/quick/figures unless --figures is given")
    rep.add_argument("--figures", default=None, metavar="DIR",
                     help="output folder for figures, data and index (default: figures, or "
                          "RUNS/quick/figures with --quick)")
    rep.add_argument("--runs", default="runs", metavar="DIR", help="folder for resumable runs")
    rep.add_argument("--formats", default=None, metavar="LIST",
                     help="comma-separated image formats of each figure (default: png,pdf; "
                          "png with --quick)")
    rep.add_argument("--device", default=None,
                     help="torch device of the transformer experiments, e.g. cuda (the others run "
                          "on the CPU as usual)")
    parallel_options(rep)
    rep.set_defaults(func=_cmd_reproduce)
    command("objectives", "list the objective catalogue (name, family, arXiv id, paper)"
            ).set_defaults(func=_cmd_objectives)
    command("instances", "list the built-in instances").set_defaults(func=_cmd_instances)
    tr = command("train", "train objectives on an instance and compare their final metrics",
                 "Train one or more objectives on a built-in instance with exact gradients and "
                 "print their final metrics side by side.")
    tr.add_argument("instance", help="instance name (see `coverage-sim instances`)")
    tr.add_argument("-o", "--objective", action="append", required=True, metavar="NAME",
                    help="objective name (see `coverage-sim objectives`); repeat to compare "
                         "several")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="objective parameter, e.g. beta=0.1 (applied where the objective has it)")
    tr.add_argument("--steps", type=int, default=2000, help="optimiser steps")
    tr.add_argument("--lr", type=float, default=0.01, help="step size")
    tr.add_argument("--optimizer", default="adam", choices=["adam", "gd", "npg"],
                    help="Adam, plain gradient descent or natural policy gradient")
    tr.add_argument("--labels", default="bradley_terry", choices=list(LABEL_MODELS),
                    help="label model of the offline pairs")
    tr.add_argument("--n", type=int, default=None,
                    help="offline pairs to sample (default: exact mu x mu population)")
    tr.add_argument("--coverage", type=float, default=None, metavar="FRACTION",
                    help="offline data covers only the most likely responses holding this "
                         "fraction of pi_ref's mass (default: full coverage)")
    tr.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of every draw")
    tr.add_argument("--out", default=None, metavar="DIR",
                    help="folder for each objective's history.csv and config.json")
    tr.add_argument("--no-progress", action="store_true",
                    help="hide the progress bar (shown for runs longer than a few seconds)")
    tr.set_defaults(func=_cmd_train)
    return parser


def _stdout_closed() -> int:
    """The reader of our output went away (``coverage-sim objectives | head``): stop quietly.

    Python's advice for SIGPIPE: point stdout at devnull so that the interpreter's final flush
    does not raise a second BrokenPipeError, and exit with the shell's status for SIGPIPE."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141


def _error(message, status: int) -> int:
    text = " ".join(str(message).split()) or "unknown error"
    print(f"coverage-sim: error: {text}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    """Run the command line. Bad input is one line on stderr and exit status 2; a run that
    diverges, a file that cannot be written or a missing optional dependency one line and exit
    status 1; Ctrl-C one line and 130. Never a traceback."""
    try:
        args = build_parser().parse_args(argv)
        status = args.func(args)
        sys.stdout.flush()   # a closed pipe raises here, inside the handler, not at exit
        return status
    except BrokenPipeError:
        return _stdout_closed()
    except ValueError as exc:
        return _error(exc, 2)
    except FloatingPointError as exc:
        return _error(exc, 1)
    except ModuleNotFoundError as exc:
        extra = " (pip install 'coverage-sim[torch]')" if exc.name == "torch" else ""
        return _error(f"this command needs the package {exc.name!r}{extra}", 1)
    except OSError as exc:
        where = f" {exc.filename!s}" if exc.filename else ""
        return _error(f"{exc.strerror or exc}:{where}" if where else (exc.strerror or exc), 1)
    except KeyboardInterrupt:
        return _error("interrupted (a resumable run continues where it stopped when run again)",
                      130)


if __name__ == "__main__":
    sys.exit(main())
