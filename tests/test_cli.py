"""Command line: ``coverage_sim.cli.main([...])`` for objectives, instances and train."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import coverage_sim as cs
from coverage_sim import catalogue, cli, instances
from coverage_sim.objectives import OBJECTIVES



@pytest.fixture
def main():
    from coverage_sim.cli import main
    return main


def test_objectives_lists_every_objective_with_its_arxiv_id(main, capsys):
    assert main(["objectives"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(OBJECTIVES)
    for line, (name, spec) in zip(out, OBJECTIVES.items()):
        assert line.split()[0] == name
        assert spec.family in line
        assert (spec.arxiv or "-") in line


def test_instances_lists_the_registry(main, capsys):
    assert main(["instances"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == list(instances.INSTANCES)
    for name in instances.INSTANCES:
        assert isinstance(instances.make_instance(name), cs.Bandit)


def test_train_writes_history_and_config(main, tmp_path, capsys):
    code = main(["train", "azar", "-o", "sigmoid", "-o", "rlhf", "--steps", "30", "--lr", "0.1",
                 "--set", "beta=0.5", "--seed", "7", "--out", str(tmp_path)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "sigmoid" in printed and "rlhf" in printed
    env = instances.make_instance("azar")
    for name in ("sigmoid", "rlhf"):
        hist = pd.read_csv(tmp_path / name / "history.csv")
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert config["seed"] == 7
        assert config["objective"] == name
        assert config["params"]["beta"] == 0.5
        assert config["steps"] == 30 and config["lr"] == 0.1
        assert {"numpy", "numba", "python"} <= set(config["versions"])
        assert hist["step"].tolist() == config["record_steps"] == cs.log_schedule(30).tolist()
        # the CLI run is the library run
        obj = cs.objective(name, beta=0.5)
        data = cs.offline_pairs(env, env.ref, n=None, seed=7) if obj.needs_data else None
        run = cs.train(env, obj, data, steps=30, lr=0.1, seed=7)
        np.testing.assert_allclose(hist["reward"], run.history["reward"], rtol=1e-12)
        np.testing.assert_allclose(hist["loss"], run.history["loss"], rtol=1e-12)
    assert not list(tmp_path.rglob("*.tmp"))          # atomic writes leave no temporaries


def test_train_partial_coverage(main, tmp_path):
    assert main(["train", "random-k10", "-o", "sigmoid", "--steps", "10", "--coverage", "0.5",
                 "--out", str(tmp_path)]) == 0
    hist = pd.read_csv(tmp_path / "sigmoid" / "history.csv")
    assert 0 < hist["mass_off_support"].iloc[0] < 1


@pytest.mark.parametrize("argv,needle", [
    (["train", "azar", "-o", "sigmoid", "--set", "beta=-1"], "beta"),
    (["train", "azar", "-o", "sigmoid", "--set", "beta"], "--set"),
    (["train", "azar", "-o", "no_such_objective"], "objective"),
    (["train", "no_such_instance", "-o", "sigmoid"], "instance"),
    (["train", "azar", "-o", "sigmoid", "--steps", "-5"], "steps"),
    (["train", "azar", "-o", "sigmoid", "--lr", "0"], "lr"),
    (["train", "azar", "-o", "sigmoid", "--n", "0"], "n must be"),
    (["train", "azar", "-o", "sigmoid", "--coverage", "1.5"], "coverage"),
    (["train", "azar", "-o", "sigmoid", "-o", "rlhf", "--set", "bta=0.1"], "'bta'"),
    (["train", "azar", "-o", "rlhf", "--set", "beta=0.1abc"], "beta"),
    (["train", "azar", "-o", "sigmoid", "--out", "{file}"], "--out"),
    (["train", "azar", "-o", "sigmoid", "--out", "{file}/sub"], "--out"),
    (["run", "azar-ipo-vs-dpo", "--out", "{file}"], "--out"),
    (["reproduce", "azar-ipo-vs-dpo", "--quick", "--figures", "{file}"], "--figures"),
    (["reproduce", "azar-ipo-vs-dpo", "--quick", "--runs", "{file}/runs"], "--runs"),
    (["run", "no-such-experiment", "--out", "{tmp}/x"], "no-such-experiment"),
], ids=["beta", "set-syntax", "objective", "instance", "steps", "lr", "n", "coverage",
        "set-typo", "beta-string", "out-is-a-file", "out-under-a-file", "run-out-is-a-file",
        "figures-is-a-file", "runs-under-a-file", "run-unknown-experiment"])
def test_bad_input_returns_exit_code_2_with_one_line(main, capsys, tmp_path, argv, needle):
    """Bad input: one line on stderr naming the option or value, exit status 2, nothing written."""
    existing = tmp_path / "existing.txt"
    existing.write_text("keep me")
    argv = [a.format(file=existing, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("coverage-sim: error:")
    assert len(err.strip().splitlines()) == 1
    assert needle in err
    assert existing.read_text() == "keep me"


@pytest.mark.parametrize("argv,needle", [
    (["train", "azar"], "--objective"),
    (["no-such-command"], "no-such-command"),
    (["train", "azar", "-o", "sigmoid", "--optimizer", "sgd"], "--optimizer"),
    (["train", "azar", "-o", "sigmoid", "--seed", "-1"], "--seed"),
    (["train", "azar", "-o", "sigmoid", "--seed", "x"], "--seed"),
    (["run", "azar-ipo-vs-dpo", "--out", "o", "--workers", "0"], "--workers"),
    (["run", "azar-ipo-vs-dpo", "--out", "o", "--workers", "-3"], "--workers"),
    (["reproduce", "--workers", "0"], "--workers"),
    (["run", "azar-ipo-vs-dpo", "--out", "o", "--seeds", "0"], "--seeds"),
    (["train", "azar", "-o", "sigmoid", "--labels", "thurstone"], "--labels"),
    (["config"], "experiment"),
    (["plot"], "DIR"),
    ([], "COMMAND"),
], ids=["no-objective", "command", "optimizer", "seed-negative", "seed-text", "workers-0",
        "workers-negative", "reproduce-workers-0", "seeds-0", "labels", "config-no-id",
        "plot-no-folder", "no-command"])
def test_argument_errors_exit_2_with_one_line_naming_the_option(main, capsys, argv, needle):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "error:" in err and needle in err


def test_a_diverging_run_is_one_line_and_exit_1(main, capsys):
    """npg at lr 100 on DPO blows the loss up to ~1e215: reported, not printed as a result."""
    assert main(["train", "tajwar-peak70", "-o", "sigmoid", "--optimizer", "npg", "--lr", "100",
                 "--steps", "200"]) == 1
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1
    assert "diverged" in captured.err and "lr" in captured.err
    assert "Traceback" not in captured.err


def test_unreachable_scheduler_is_one_line_naming_it(main, capsys, tmp_path):
    dask = pytest.importorskip("dask")
    pytest.importorskip("distributed")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        code = main(["run", "azar-ipo-vs-dpo", "--quick", "--out", str(tmp_path / "run"),
                     "--scheduler", "tcp://127.0.0.1:9", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "scheduler" in err and "tcp://127.0.0.1:9" in err


# --- the command line a new user meets: help, listings, errors, pipes, quick runs -------------

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["list", "config", "run", "plot", "reproduce", "objectives", "instances", "train"]


def _help(main, capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv + ["--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", [None] + COMMANDS)
def test_help_is_plain_text(main, capsys, command):
    """No reStructuredText markup (``code``, :role:`x`) in any --help."""
    text = _help(main, capsys, [] if command is None else [command])
    assert "``" not in text and not re.search(r":\w+:`", text), text
    if command is None:   # the top-level help lists every command
        for name in COMMANDS:
            assert re.search(rf"^  {name}\b", text, flags=re.MULTILINE), name


def test_help_shows_defaults_choices_and_how_to_find_config_keys(main, capsys):
    train = " ".join(_help(main, capsys, ["train"]).split())
    assert "{bradley_terry,deterministic}" in train
    assert "(default: 2000)" in train and "(default: 0.01)" in train
    assert "(default: adam)" in train and "(default: 0)" in train
    run = " ".join(_help(main, capsys, ["run"]).split())
    assert "coverage-sim config ID" in run
    plot = " ".join(_help(main, capsys, ["plot"]).split())
    assert "config.json and results.csv" in plot        # plot's argument is documented
    rep = " ".join(_help(main, capsys, ["reproduce"]).split())
    assert "(default: runs)" in rep and "quick/figures" in rep


def test_label_choices_are_the_label_models():
    from coverage_sim import cli, preferences

    assert tuple(cli.LABEL_MODELS) == tuple(preferences.LABEL_MODELS)


@pytest.mark.parametrize("ident", sorted(e.id for e in catalogue.EXPERIMENTS))
def test_config_lists_every_field_with_its_default_and_meaning(main, capsys, ident):
    """`coverage-sim config ID` shows the keys that `run --set` accepts, each with its doc."""
    experiments = pytest.importorskip("coverage_sim.experiments")
    if ident not in experiments.EXPERIMENTS:
        pytest.skip(f"{ident} needs the torch extra")
    assert main(["config", ident]) == 0
    out = capsys.readouterr().out
    experiment = experiments.get_experiment(ident)
    config = experiment.default_config()
    lines = out.splitlines()
    for field in dataclasses.fields(config):
        [line] = [i for i, text in enumerate(lines) if text.startswith(f"{field.name} (")]
        assert f"= {json.dumps(cli._jsonable(getattr(config, field.name)))}" in lines[line]
        assert lines[line + 1].startswith("    "), f"{ident}.{field.name} has no description"
    # every shown key is accepted by --set (the same parser `run` uses)
    field = dataclasses.fields(config)[0]
    experiments.config_from_overrides(experiment, {field.name: cli._jsonable(getattr(config,
                                                                                   field.name))})


def test_list_columns_are_aligned_for_every_experiment(main, capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for entry, line in zip(sorted(catalogue.EXPERIMENTS,
                                  key=lambda e: catalogue.figure_key(e.figure, e.id)), lines):
        assert line.startswith(entry.figure)
    id_columns = {line.index(e.id) for e, line in zip(
        sorted(catalogue.EXPERIMENTS, key=lambda e: catalogue.figure_key(e.figure, e.id)), lines)}
    arxiv_columns = {line.index("arXiv:") for line in lines}
    assert len(id_columns) == 1 and len(arxiv_columns) == 1, lines


@pytest.mark.parametrize("command", ["objectives", "list", "instances"])
def test_output_into_a_closed_pipe_is_quiet(command):
    """`coverage-sim objectives | head`: no BrokenPipeError traceback, SIGPIPE's exit status."""
    proc = subprocess.Popen([sys.executable, "-m", "coverage_sim.cli", command],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdout.close()          # the reader is gone before the first line is written
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 141
    assert err == ""


@pytest.mark.parametrize("error,status,needle", [
    (OSError(28, "No space left on device", "figures/x.png"), 1, "No space left on device"),
    (PermissionError(13, "Permission denied", "runs/x"), 1, "Permission denied: runs/x"),
    (KeyboardInterrupt(), 130, "interrupted"),
    (ModuleNotFoundError("No module named 'torch'", name="torch"), 1, "coverage-sim[torch]"),
    (ValueError("bad\nvalue"), 2, "bad value"),
    (FloatingPointError("diverged"), 1, "diverged"),
], ids=["disk-full", "permission", "ctrl-c", "no-torch", "multi-line-value-error", "diverged"])
def test_every_error_is_one_line_without_traceback(main, capsys, monkeypatch, error, status,
                                                   needle):
    from coverage_sim import cli

    def fail(_args):
        raise error

    monkeypatch.setattr(cli, "_cmd_list", fail)
    assert main(["list"]) == status
    captured = capsys.readouterr()
    assert captured.err.startswith("coverage-sim: error:")
    assert len(captured.err.strip().splitlines()) == 1 and needle in captured.err
    assert "Traceback" not in captured.err


@pytest.mark.parametrize("argv,needle", [
    (["config", "no-such-experiment"], "no-such-experiment"),
    (["plot", "{tmp}/missing"], "not a finished run folder"),
    (["plot", "{tmp}"], "not a finished run folder"),
    (["reproduce", "no-such-experiment", "--quick"], "no-such-experiment"),
    (["reproduce", "azar-ipo-vs-dpo", "--quick", "--figures", "{tmp}/f", "--formats", "png,docx"],
     "formats"),
    (["reproduce", "azar-ipo-vs-dpo", "--quick", "--figures", "{tmp}/f", "--formats", ""],
     "formats"),
], ids=["config-unknown", "plot-missing", "plot-not-a-run", "reproduce-unknown",
        "reproduce-format-unknown", "reproduce-formats-empty"])
def test_more_bad_input_is_one_line_and_exit_2(main, capsys, tmp_path, argv, needle):
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err


def test_reproduce_quick_leaves_the_committed_figures_untouched(main, capsys, tmp_path,
                                                                monkeypatch):
    """A README example: `coverage-sim reproduce ID --quick` in a checkout must not overwrite the
    committed full-size figure, data, JSON or retitle the index."""
    committed = tmp_path / "figures"
    committed.mkdir()
    for name in ("README.md", "azar-ipo-vs-dpo.png", "azar-ipo-vs-dpo.csv",
                 "azar-ipo-vs-dpo.json"):
        (committed / name).write_text(f"committed {name}")
    before = {p.name: p.read_bytes() for p in committed.iterdir()}
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", "azar-ipo-vs-dpo", "--quick", "--workers", "1",
                 "--no-progress"]) == 0
    assert {p.name: p.read_bytes() for p in committed.iterdir()} == before
    quick = tmp_path / "runs" / "quick" / "figures"
    assert "runs/quick/figures" in capsys.readouterr().out
    manifest = json.loads((quick / "azar-ipo-vs-dpo.json").read_text())
    assert manifest["quick"] is True and set(manifest["source"]) == {"commit", "dirty"}
    assert "--quick" in (quick / "README.md").read_text().splitlines()[2]
    # an explicit --figures is obeyed, quick or not
    assert main(["reproduce", "azar-ipo-vs-dpo", "--quick", "--workers", "1", "--no-progress",
                 "--figures", str(tmp_path / "mine")]) == 0
    assert (tmp_path / "mine" / "azar-ipo-vs-dpo.png").exists()
