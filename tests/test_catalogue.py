"""The static catalogue the command line lists from equals the live registries, and the commands
that only list things import none of the heavy modules."""

from __future__ import annotations

import subprocess
import sys

import pytest

from coverage_sim import _catalogue_render, catalogue

HEAVY = ("numba", "scipy", "pandas", "matplotlib", "torch", "coverage_sim.experiments",
         "coverage_sim.train")


def test_catalogue_equals_the_registries():
    """Fails after an experiment, objective or instance is added or renamed: regenerate with
    ``python -m coverage_sim._catalogue_render``."""
    experiments, objectives, instances = _catalogue_render.rows_from_registries()
    assert [tuple(e) for e in catalogue.OBJECTIVES] == objectives
    assert [tuple(i) for i in catalogue.INSTANCES] == instances
    assert [tuple(e) for e in catalogue.EXPERIMENTS] == experiments
    pytest.importorskip("torch")  # without torch the transformer experiments are not registered
    assert len(catalogue.EXPERIMENTS) == len(experiments)


def test_rendering_the_catalogue_reproduces_the_file():
    with open(catalogue.__file__) as fh:
        assert _catalogue_render.render() == fh.read()


def test_expected_seconds_are_positive():
    for e in catalogue.EXPERIMENTS:
        assert e.seconds > 0 and e.quick_seconds > 0, e.id


@pytest.mark.parametrize("argv", [["list"], ["objectives"], ["instances"], ["--help"],
                                  ["train"], ["no-such-command"]])
def test_listing_and_usage_errors_import_nothing_heavy(argv):
    """The fast commands read the catalogue only (timed in benchmarks/bench_dpo.py)."""
    code = ("import sys\n"
            "from coverage_sim.cli import main\n"
            "try:\n"
            f"    main({argv!r})\n"
            "except SystemExit:\n"
            "    pass\n"
            f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_list_prints_every_experiment_in_figure_order(capsys):
    from coverage_sim.cli import main

    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    order = sorted(catalogue.EXPERIMENTS, key=lambda e: catalogue.figure_key(e.figure, e.id))
    assert len(lines) == len(order)
    for line, entry in zip(lines, order):
        assert line.startswith(entry.figure) and f" {entry.id} " in line and entry.title in line
