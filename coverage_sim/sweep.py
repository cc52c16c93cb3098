"""Running experiments over seeds: locally in parallel or on a Dask cluster, resumable, atomic.

A run folder holds::

    config.json        experiment id, figure, paper, config, seeds, package versions and the
                       source's git commit (``"source"``: commit, dirty)
    seeds/seed-<s>.csv one tidy table per finished seed (written atomically as each finishes)
    results.csv        all seeds' tables, concatenated in seed order (written atomically)

An experiment that splits a seed into cells (``Experiment.cells``, e.g. the gap atlas) stores one
table per finished cell instead, ``seeds/seed-<s>/<cell>.csv``, and ``results.csv`` concatenates them
seed by seed in the order of ``cells(config)``.

Re-running into the same folder skips the units (seeds, or cells) already on disk, so an interrupted
sweep (Ctrl-C, kill) loses at most the units in flight, and the final table equals an uninterrupted
run's.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import json
import multiprocessing
import os
from pathlib import Path
from typing import Iterable

import pandas as pd
from tqdm.auto import tqdm

from coverage_sim._files import atomic_write_text
from coverage_sim._progress import ENV_PROGRESS
from coverage_sim.experiments.registry import (TABLE_COLUMNS, Experiment, config_from_overrides,
                                               config_to_dict, get_experiment)
from coverage_sim.provenance import source_revision
from coverage_sim.train import package_versions

__all__ = ["atomic_write_text", "run_sweep", "prepare", "execute", "collect", "load_run",
           "seed_table", "experiment_cells", "run_local", "run_queue", "unit_args",
           "UnitRecorder"]


def seed_table(experiment_id: str, config: dict, seed: int, cell: str | None = None
               ) -> pd.DataFrame:
    """Run one seed (or one cell of a seed) of an experiment from a JSON-ready config: the unit
    of work of a sweep."""
    experiment = get_experiment(experiment_id)
    cfg = config_from_overrides(experiment, config)
    table = experiment.run(cfg, seed) if cell is None else experiment.run_cell(cfg, seed, cell)
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"experiment {experiment_id!r} returned a table without columns {missing}")
    return table


def _worker_init():
    # One thread per worker process for every inner pool (numba, a training call's own choice,
    # BLAS): the pool already uses every core.
    os.environ["COVERAGE_SIM_THREADS"] = "1"
    # The sweep's own bar reports progress; a training call's bar in a worker would interleave
    # with it (and ignore --no-progress).
    os.environ[ENV_PROGRESS] = "0"
    import numba
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(1)
    threadpool_limits(1)


def run_local(fn, jobs: list, workers: int, on_done, args=tuple) -> None:
    """Call ``fn(*args(job))`` for every job in ``workers`` spawned processes (in this process
    when ``workers <= 1``), and ``on_done(job, result)`` here as each one finishes.

    The workers run every inner pool (numba, BLAS, a training call's own choice) on one thread,
    and no training call inside a job shows its own progress bar (nor does one in this process):
    the caller reports progress in ``on_done``.
    """
    def done(job, result):
        on_done(job, result)
        return ()

    run_queue([(fn, args(job), job) for job in jobs], workers, done)


def run_queue(tasks: Iterable[tuple], workers: int, on_done) -> None:
    """Run ``(fn, args, key)`` tasks as :func:`run_local` does, with follow-ups.

    ``on_done(key, result)`` runs here as each task finishes and returns the tasks that finished
    one makes ready (e.g. an experiment's figure once its last unit is in); they run before the
    tasks still queued. Only ``workers`` tasks are in flight at a time, so that a follow-up does not
    wait behind the whole queue.
    """
    queue = collections.deque(tasks)

    def follow(key, result):
        queue.extendleft(reversed(list(on_done(key, result))))

    if workers <= 1:
        with _inner_bars_hidden():
            while queue:
                fn, fn_args, key = queue.popleft()
                follow(key, fn(*fn_args))
        return
    with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                initializer=_worker_init) as pool:
        running = {}
        while queue or running:
            while queue and len(running) < workers:
                fn, fn_args, key = queue.popleft()
                running[pool.submit(fn, *fn_args)] = key
            finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in finished:
                follow(running.pop(future), future.result())


@contextlib.contextmanager
def _inner_bars_hidden():
    """Hide the automatic bars of the training calls inside a unit (the sweep has its own)."""
    before = os.environ.get(ENV_PROGRESS)
    os.environ[ENV_PROGRESS] = "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ[ENV_PROGRESS]
        else:
            os.environ[ENV_PROGRESS] = before


def experiment_cells(experiment: Experiment, config) -> list[str] | None:
    """The cells a seed of ``experiment`` is split into (``None``: the seed is one unit)."""
    return None if experiment.cells is None else list(experiment.cells(config))


def _unit_path(folder: Path, seed: int, cell: str | None = None) -> Path:
    if cell is None:
        return folder / "seeds" / f"seed-{seed}.csv"
    return folder / "seeds" / f"seed-{seed}" / f"{cell}.csv"


def _manifest(experiment: Experiment, config: dict, seeds: list[int]) -> dict:
    return {"experiment": experiment.id, "figure": experiment.figure, "paper": experiment.paper,
            "arxiv": experiment.arxiv, "config": config, "seeds": seeds,
            "versions": package_versions(), "source": source_revision()}


def _check_folder(folder: Path, experiment: Experiment, config: dict) -> None:
    path = folder / "config.json"
    if not path.exists():
        return
    old = json.loads(path.read_text())
    if old.get("experiment") != experiment.id or old.get("config") != config:
        raise ValueError(f"out folder {str(folder)!r} already holds a different run "
                         f"({old.get('experiment')!r} with another config); choose another --out")


def prepare(experiment: Experiment, config, seeds, out) -> tuple[Path, dict, list[int], list]:
    """Validate and open a run folder; returns ``(folder, config dict, seeds, pending units)``.

    A unit is ``(experiment id, config dict, seed, folder, cell)``, ``cell`` ``None`` unless the
    experiment splits its seeds into cells.
    """
    cfg = config_to_dict(config)
    seeds = sorted({int(s) for s in seeds})
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    folder = Path(out)
    _check_folder(folder, experiment, cfg)
    atomic_write_text(folder / "config.json",
                      json.dumps(_manifest(experiment, cfg, seeds), indent=2))
    cells = experiment_cells(experiment, config) or [None]
    pending = [(experiment.id, cfg, s, folder, c) for s in seeds for c in cells
               if not _unit_path(folder, s, c).exists()]
    return folder, cfg, seeds, pending


def execute(units: list, *, workers: int | None = None, scheduler: str | None = None,
            progress: bool = True, desc: str = "seeds", costs: list[float] | None = None) -> None:
    """Run ``(experiment id, config dict, seed, folder, cell)`` units (see :func:`prepare`), writing
    each unit's table on arrival.

    Locally the units run in ``workers`` spawned processes (default one per core); with a
    ``dask.distributed`` scheduler address they run on that cluster and come back here to be written.
    ``costs`` (expected seconds per unit, e.g. from :mod:`coverage_sim.catalogue`) start the most
    expensive units first, so that the pool's last minutes are not one long unit alone, and weight
    the progress bar, so that its remaining time is the expected cost left, not a count of seeds.
    A scheduler that cannot be reached is a ``ValueError`` naming it.
    """
    with UnitRecorder(units, costs, progress=progress, desc=desc) as record:
        if scheduler is not None:
            from distributed import Client, as_completed

            try:
                client = Client(scheduler)
            except (OSError, TimeoutError) as exc:
                raise ValueError(f"scheduler {scheduler!r}: cannot connect ({exc})") from exc
            with client:
                futures = {client.submit(seed_table, *unit_args(u), pure=False): u
                           for u in record.units}
                for future in as_completed(futures):
                    record.finish(futures[future], future.result())
            return
        workers = min(workers or os.cpu_count() or 1, max(len(units), 1))
        run_local(seed_table, record.units, workers, record.finish, args=unit_args)


def unit_args(unit) -> tuple:
    """The :func:`seed_table` arguments of a unit of :func:`prepare`."""
    return unit[0], unit[1], unit[2], unit[4]


class UnitRecorder:
    """A sweep's units, most expensive first, and its progress bar (a context manager).

    :meth:`finish` writes a finished unit's table atomically and advances the bar by the unit's
    expected cost (``costs``, default 1 each), so that the bar's remaining time is the expected cost
    left; ``extra`` adds the cost of other work reported with :meth:`advance` (e.g. reproduce's
    figures).
    """

    def __init__(self, units: list, costs: list[float] | None = None, *, progress: bool = True,
                 desc: str = "seeds", extra: float = 0.0):
        if costs is None:
            costs = [1.0] * len(units)
        if len(costs) != len(units):
            raise ValueError(f"costs must have one entry per unit ({len(units)}), "
                             f"got {len(costs)}")
        order = sorted(range(len(units)), key=lambda i: -costs[i])
        self.units = [units[i] for i in order]
        self._weight = {self._key(units[i]): float(costs[i]) for i in order}
        self._done = 0
        self.bar = tqdm(total=sum(self._weight.values()) + extra, disable=not progress,
                        desc=desc, bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix} "
                                              "[{elapsed}<{remaining}]")

    @staticmethod
    def _key(unit) -> tuple:
        return unit[0], unit[2], str(unit[3]), unit[4]

    def finish(self, unit, table: pd.DataFrame) -> None:
        """Write ``unit``'s table and advance the bar."""
        atomic_write_text(_unit_path(unit[3], unit[2], unit[4]), table.to_csv(index=False))
        self._done += 1
        self.advance(self._weight[self._key(unit)],
                     f"{self._done}/{len(self.units)} units, last {unit[0]}")

    def advance(self, cost: float, note: str) -> None:
        """Advance the bar by ``cost`` and show ``note`` beside it (at once when ``cost`` is 0:
        the bar then has no update to redraw it)."""
        self.bar.set_postfix_str(note, refresh=cost == 0)
        # The costs arrive in another order than the one that summed the total, so rounding can
        # put their sum a few ulps past it (tqdm then warns and shows a negative remaining time):
        # the bar stops at its total.
        self.bar.update(max(min(cost, self.bar.total - self.bar.n), 0.0))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()


def collect(folder: Path, seeds: list[int], cells: list[str] | None = None) -> pd.DataFrame:
    """Concatenate the unit tables of a run folder (seed by seed, and ``cells`` in order within a
    seed for an experiment split into cells) and write ``results.csv`` atomically."""
    table = pd.concat([pd.read_csv(_unit_path(folder, s, c)) for s in seeds
                       for c in (cells or [None])], ignore_index=True)
    atomic_write_text(folder / "results.csv", table.to_csv(index=False))
    return table


def run_sweep(experiment: Experiment | str, config=None, seeds: Iterable[int] = (0,), *,
              out: str | Path, workers: int | None = None, scheduler: str | None = None,
              progress: bool = True) -> pd.DataFrame:
    """Run ``experiment`` for every seed into the folder ``out`` and return the tidy table.

    Args:
      experiment: an :class:`~coverage_sim.experiments.registry.Experiment` or its id.
      config: a config instance (default: the experiment's default config).
      seeds: the seeds; each seed (or each cell of a seed, for an experiment split into cells) is
        one independent unit of work.
      out: the run folder (created; resumed when it already holds this experiment and config).
      workers: local processes (default: one per core, at most one per pending seed); 1 runs in
        this process.
      scheduler: address of a ``dask.distributed`` scheduler (``tcp://host:port``); the seeds then
        run on that cluster and their tables come back here to be written.
      progress: show a progress bar.

    Returns:
      The concatenated table of all seeds, sorted by seed.
    """
    if isinstance(experiment, str):
        experiment = get_experiment(experiment)
    config = experiment.default_config() if config is None else config
    folder, _cfg, seeds, pending = prepare(experiment, config, seeds, out)
    execute(pending, workers=workers, scheduler=scheduler, progress=progress, desc=experiment.id)
    return collect(folder, seeds, experiment_cells(experiment, config))


def load_run(folder: str | Path):
    """``(experiment, config, table)`` of a finished run folder."""
    folder = Path(folder)
    manifest_path = folder / "config.json"
    results_path = folder / "results.csv"
    if not manifest_path.exists() or not results_path.exists():
        raise ValueError(f"{str(folder)!r} is not a finished run folder (needs config.json and "
                         "results.csv; run `coverage-sim run` first)")
    manifest = json.loads(manifest_path.read_text())
    experiment = get_experiment(manifest["experiment"])
    config = config_from_overrides(experiment, manifest["config"])
    return experiment, config, pd.read_csv(results_path)
