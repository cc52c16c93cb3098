"""Reproduce the registered figures: run every experiment, draw it, check its claim, index it.

:func:`reproduce` runs the experiments' seeds as one pool of work (so single-seed experiments still
use every core), and as each experiment's last seed comes in writes into the figures folder::

    <id>.png, <id>.pdf   the figure (the PNG only with ``quick``, unless ``formats`` says otherwise)
    <id>.csv             the tidy table behind it (or its summary, ``Experiment.figure_table``)
    <id>.json            experiment, config, seeds, package versions and the check's result

and regenerates ``README.md`` there: a summary table (figure, paper, verdict, fraction of instances
on which the paper's claim passes, effect size with its 95% confidence interval, exact or sampled),
then one entry per figure with the paper's claim, the picture, each clause of the check with its
pass fraction, and where our setting differs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from coverage_sim import _catalogue_render, catalogue
from coverage_sim.catalogue import figure_key
from coverage_sim.experiments import EXPERIMENTS, get_experiment
from coverage_sim.experiments.registry import Experiment, assess, config_from_overrides
from coverage_sim.experiments.verdict import AGREES, CheckResult
from coverage_sim.plotting import FORMATS, check_formats, save_figure
from coverage_sim.provenance import source_revision
from coverage_sim.sweep import (UnitRecorder, atomic_write_text, collect, execute,
                                experiment_cells, prepare, run_local, run_queue, seed_table,
                                unit_args)
from coverage_sim.train import package_versions
from coverage_sim.warmup import GROUPS, import_experiments, warm_up

__all__ = ["FORMATS", "QUICK_FORMATS", "Verdict", "check_formats", "reproduce", "write_figure",
           "write_index", "short_citation"]


@dataclass(frozen=True)
class Verdict:
    """How far a reproduced figure shows its paper's claim.

    Attributes:
      experiment: the experiment id.
      result: the check's :class:`~coverage_sim.experiments.verdict.CheckResult`.
    """

    experiment: str
    result: CheckResult

    @property
    def verdict(self) -> str:
        """``"agrees"``, ``"partly"`` or ``"does not agree"``."""
        return self.result.verdict

    @property
    def agrees(self) -> bool:
        return self.result.verdict == AGREES

    @property
    def message(self) -> str:
        return self.result.summary()


def _figure_key(experiment: Experiment):
    return figure_key(experiment.figure, experiment.id)


#: Expected seconds to draw, check and save one figure (the progress bar's weight for it).
FIGURE_SECONDS = 1.5

#: The formats a quick run saves a figure in: its figures are previews, so the PNG only
#: (the PDF pass is about 40% of drawing a figure: 16 of the 27 quick figures' 40 CPU-seconds,
#: measured 2026-12-04); the full run saves :data:`coverage_sim.plotting.FORMATS` (PNG and PDF).
QUICK_FORMATS = ("png",)


def reproduce(ids: Iterable[str] | None = None, *, quick: bool = False,
              figures_dir: str | Path = "figures", runs_dir: str | Path = "runs",
              workers: int | None = None, scheduler: str | None = None,
              progress: bool = True, device: str | None = None,
              formats: Iterable[str] | None = None) -> list[Verdict]:
    """Run, plot, save and check the experiments ``ids`` (default: all).

    Runs go to ``runs_dir/<id>`` (``runs_dir/quick/<id>`` with ``quick``) and resume from there;
    figures, their data and the index go to ``figures_dir``. ``device`` (e.g. ``"cuda"``) is set in
    the config of every experiment that has a ``device`` field (the torch experiments); the others
    run as usual. ``formats``: the image formats of each figure (default :data:`FORMATS`, with
    ``quick`` :data:`QUICK_FORMATS`).

    Locally one pool of ``workers`` processes (default one per core) does everything: for more
    than one experiment it first compiles numba's kernels, one group per process
    (:mod:`coverage_sim.warmup`; a fresh clone would otherwise compile the same kernels in every
    process at once), then runs the units, most expensive first, and draws each experiment's
    figure as soon as its last unit is in. With a ``scheduler`` the units run on that dask cluster
    and the figures here afterwards.

    Returns:
      One :class:`Verdict` per experiment, in figure order.
    """
    selected = sorted((get_experiment(i) for i in (ids or EXPERIMENTS)), key=_figure_key)
    formats = check_formats((QUICK_FORMATS if quick else FORMATS) if formats is None else formats)
    runs = Path(runs_dir) / "quick" if quick else Path(runs_dir)
    figures = Path(figures_dir)
    expected = {e.id: (e.quick_seconds if quick else e.seconds) for e in catalogue.EXPERIMENTS}
    plans, units, costs = [], [], []
    for exp in selected:
        config = exp.default_config(quick)
        if device is not None and "device" in {f.name for f in dataclasses.fields(config)}:
            config = dataclasses.replace(config, device=device)
        folder, cfg, seeds, pending = prepare(exp, config, exp.default_seeds(quick), runs / exp.id)
        plans.append((exp.id, cfg, str(folder), seeds, str(figures), quick, formats))
        units += pending
        # Expected seconds per seed from the catalogue, shared by a seed's cells: the longest
        # units start first and the bar's remaining time counts cost, not units (they differ in
        # cost by a factor of about 1000).
        per_unit = (expected.get(exp.id, _catalogue_render.DEFAULT_SECONDS)
                    / len(experiment_cells(exp, config) or [None]))
        costs += [per_unit] * len(pending)
    results = {}
    if scheduler is not None:
        execute(units, scheduler=scheduler, progress=progress, desc="reproduce", costs=costs)
        with UnitRecorder([], progress=progress, desc="figures",
                          extra=FIGURE_SECONDS * len(plans)) as record:
            def done(job, verdict: Verdict) -> None:
                results[job[0]] = verdict
                record.advance(FIGURE_SECONDS, f"figure {job[0]}")

            run_local(write_figure, plans, min(workers or os.cpu_count() or 1, len(plans)), done)
    else:
        kernel_free = {exp.id for exp in selected if not exp.needs_kernels}
        _reproduce_locally(plans, units, costs, workers, progress, results, kernel_free)
    write_index(figures, quick=quick)
    return [results[job[0]] for job in plans]


def _reproduce_locally(plans: list, units: list, costs: list, workers: int | None,
                       progress: bool, results: dict, kernel_free: set = frozenset()) -> None:
    """:func:`reproduce`'s one local pool: kernel warm-up, units, and each figure (``plans``, the
    :func:`write_figure` arguments) once its experiment's units are in; verdicts into
    ``results``. The experiments in ``kernel_free`` call no numba kernel: their units may run
    during the warm-up."""
    workers = min(workers or os.cpu_count() or 1, max(len(units) + len(plans), 1))
    left = {job[0]: 0 for job in plans}
    for unit in units:
        left[unit[0]] += 1
    figure_task = {job[0]: (write_figure, job, ("figure", job[0])) for job in plans}
    complete = [i for i, n in left.items() if n == 0]   # resumed: only the figure is left
    # Compiling every kernel group up front pays where several processes would each compile the
    # same kernels (several experiments, most of them on the engine); one experiment compiles only
    # what it uses, in at most as many processes as it has units.
    groups = GROUPS if workers > 1 and len(units) > 1 and len(plans) > 1 else ()
    warming = len(groups)
    with_torch = any("device" in job[1] for job in plans)   # the transformer experiments
    record = UnitRecorder(units, costs, progress=progress, desc="reproduce",
                          extra=FIGURE_SECONDS * len(plans))
    pending = list(record.units)   # not handed out yet, most expensive first

    def unit_task(unit) -> tuple:
        return seed_table, unit_args(unit), ("unit", unit)

    def main_work() -> list:
        return [figure_task[i] for i in complete] + [unit_task(u) for u in pending]

    def while_warming() -> list:
        """For a worker that would wait for the others' kernel groups: the most expensive unit
        still pending of an experiment that calls no kernel, if any."""
        unit = next((u for u in pending if u[0] in kernel_free), None) if warming else None
        if unit is None:
            return []
        pending.remove(unit)
        return [unit_task(unit)]

    def on_done(key, result) -> list:
        nonlocal warming
        kind, item = key
        if kind == "preload":
            return []
        if kind == "warm":
            warming -= 1
            record.advance(0.0, f"compiled kernels: {item}")
            if warming == 0:
                return main_work()
            # Fewer groups left than workers: this worker would wait for the others; it runs a
            # unit that needs no kernel, or else imports what its first unit needs (the groups
            # still queued are already taken).
            if warming >= workers:
                return []
            return while_warming() or [(import_experiments, (with_torch,), ("preload", item))]
        if kind == "unit":
            record.finish(item, result)
            left[item[0]] -= 1
            figure = [figure_task[item[0]]] if left[item[0]] == 0 else []
            return figure + while_warming()
        results[item] = result
        record.advance(FIGURE_SECONDS, f"figure {item}")
        return while_warming()

    if groups:
        record.advance(0.0, "compiling numba kernels")
    with record:
        run_queue([(warm_up, (g,), ("warm", g)) for g in groups] or main_work(), workers, on_done)


def write_figure(experiment_id: str, config: dict, folder: str | Path, seeds: list[int],
                 figures_dir: str | Path, quick: bool = False,
                 formats: Iterable[str] = FORMATS) -> Verdict:
    """Collect a finished run folder, check it, and write the figure (``formats``: PNG and PDF by
    default), its data (CSV) and its manifest (config, seeds, verdict, full check, versions,
    source) into ``figures_dir``.

    Args:
      experiment_id: the registered experiment.
      config: its config as a JSON-ready dict (as in the run folder's ``config.json``).
      folder: the run folder, every unit of ``seeds`` finished.
      seeds: the seeds to collect.
      figures_dir: output folder.
      quick: whether the config is the quick one (recorded in the manifest).
      formats: the image formats of the figure
        (:func:`coverage_sim.plotting.check_formats`).
    """
    exp = get_experiment(experiment_id)
    cfg = config_from_overrides(exp, config)
    figures = Path(figures_dir)
    table = collect(Path(folder), seeds, experiment_cells(exp, cfg))
    verdict = Verdict(exp.id, assess(exp, table, cfg))
    save_figure(exp.plot(table, cfg), figures / exp.id, formats=formats)
    data = table if exp.figure_table is None else exp.figure_table(table, cfg)
    atomic_write_text(figures / f"{exp.id}.csv", data.to_csv(index=False))
    manifest = {"experiment": exp.id, "figure": exp.figure, "paper": exp.paper,
                "arxiv": exp.arxiv, "quick": quick, "config": config, "seeds": seeds,
                "verdict": verdict.verdict, "check": verdict.result.to_dict(),
                "versions": package_versions(), "source": source_revision()}
    if exp.summary is not None:
        manifest["summary"] = exp.summary(table, cfg)
    atomic_write_text(figures / f"{exp.id}.json", json.dumps(manifest, indent=2))
    return verdict


def _effect_cell(check: dict) -> str:
    effect = check.get("effect")
    if not effect:
        return "—"
    lo, hi = effect["ci95"]
    interval = "" if lo is None or lo != lo else f" [{lo:.3g}, {hi:.3g}]"
    return f"{effect['name']}: {effect['mean']:.3g}{interval}"


def _clause_lines(check: dict) -> list[str]:
    lines = []
    for c in check["clauses"]:
        kind = "" if c["paper"] else " *(substitute variant, not the paper's claim)*"
        mark = "holds" if c["holds"] else "does not hold"
        detail = f" {c['detail']}" if c["detail"] else ""
        lines.append(f"- `{c['name']}` — {c['statement']}{kind}: **{mark}** "
                     f"({c['passes']}/{c['instances']} instances).{detail}")
    return lines


def write_index(figures_dir: str | Path, *, quick: bool = False) -> Path:
    """Regenerate ``figures_dir/README.md`` from the registry and the saved check results."""
    figures = Path(figures_dir)
    entries, stale = [], []
    for exp in sorted(EXPERIMENTS.values(), key=_figure_key):
        manifest_path = figures / f"{exp.id}.json"
        if manifest_path.exists():
            manifest = json.loads(manifest_path.read_text())
            # A manifest written by an earlier version (its check a sentence, not clauses) is
            # listed as stale rather than guessed at, so a partial reproduce still writes the index.
            if isinstance(manifest.get("check"), dict):
                entries.append((exp, manifest))
            else:
                stale.append(exp)
    lines = ["# Reproduced figures", "",
             "Generated by `coverage-sim reproduce`" + (" --quick" if quick else "") + "; do not "
             "edit by hand. Each check splits the paper's claim into clauses and tests each on "
             "every instance of the setting (random instances, or a family of perturbations); a "
             "clause holds when it passes on at least 80% of them. The verdict is *agrees* when "
             "every clause of the paper's claim holds, *partly* when some do, *does not agree* "
             "when none does; substitute variants our setting needed are reported beside the "
             "paper's clauses and never replace them. The effect size is a paired difference per "
             "instance, its mean and 95% t-interval. Data in `<id>.csv`; config, seeds, versions "
             "and the full check in `<id>.json`.", "",
             "| figure | experiment | paper | verdict | passes on | effect (mean [95% CI]) | mode |",
             "|---|---|---|---|---|---|---|"]
    for exp, manifest in entries:
        check = manifest["check"]
        lines.append(f"| {exp.figure} | [`{exp.id}`](#{_anchor(exp)}) | {short_citation(exp.paper)} "
                     f"(arXiv:{exp.arxiv}) | **{check['verdict']}** | "
                     f"{check['pass_fraction']:.0%} of {check['instances']} | "
                     f"{_effect_cell(check)} | {check['mode']} |")
    for exp in stale:
        lines.append(f"| {exp.figure} | `{exp.id}` | {short_citation(exp.paper)} "
                     f"(arXiv:{exp.arxiv}) | stale: rerun `coverage-sim reproduce {exp.id}` "
                     f"| — | — | — |")
    lines.append("")
    for exp, manifest in entries:
        check = manifest["check"]
        lines += [f"## {exp.figure} — {exp.title}", "",
                  f"*{exp.paper}* (arXiv:{exp.arxiv}). Experiment id `{exp.id}`.", "",
                  f"**Paper's claim.** {exp.claim}", "",
                  f"![{exp.figure}]({exp.id}.png)", "",
                  f"**Verdict: {check['verdict']}.** The check's clauses:", "",
                  *_clause_lines(check), "",
                  f"**Our setting.** {exp.differences}", ""]
        if manifest.get("summary"):
            lines += [manifest["summary"], ""]
    path = figures / "README.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def short_citation(paper: str) -> str:
    """The first author and year of an experiment's ``paper`` string: ``"Azar et al. 2023"`` from
    ``"Azar et al. 2023, A General ..."`` or ``"Gao et al. 2022"`` from ``"Gao, Schulman, Hilton
    2022, ..."``; a single author stays alone (``"Schulman 2020"``). The string itself when it
    names no year."""
    match = re.match(r"\s*([^\W\d][\w'-]*)(.*?)\b((?:19|20)\d\d)\b", paper)
    if match is None:
        return paper
    author, between, year = match.groups()
    several = "et al." in between or "," in between
    return f"{author} et al. {year}" if several else f"{author} {year}"


def _anchor(exp: Experiment) -> str:
    """GitHub's anchor for an entry's heading ``## <figure> — <title>``."""
    text = f"{exp.figure} — {exp.title}".lower()
    kept = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")
