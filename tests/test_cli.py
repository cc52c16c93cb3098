"""Command line: ``coverage_sim.cli.main([...])`` for objectives, instances and train."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import coverage_sim as cs
from coverage_sim import instances
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
    (["train", "azar", "-o", "sigmoid", "--labels", "thurstone"], "labels"),
    (["train", "azar", "-o", "sigmoid", "--coverage", "1.5"], "coverage"),
    (["train", "azar", "-o", "sigmoid", "-o", "rlhf", "--set", "bta=0.1"], "'bta'"),
    (["train", "azar", "-o", "rlhf", "--set", "beta=0.1abc"], "beta"),
    (["train", "azar", "-o", "sigmoid", "--out", "{file}"], "--out"),
    (["train", "azar", "-o", "sigmoid", "--out", "{file}/sub"], "--out"),
    (["run", "azar-ipo-vs-dpo", "--out", "{file}"], "--out"),
    (["reproduce", "azar-ipo-vs-dpo", "--quick", "--figures", "{file}"], "--figures"),
    (["reproduce", "azar-ipo-vs-dpo", "--quick", "--runs", "{file}/runs"], "--runs"),
    (["run", "no-such-experiment", "--out", "{tmp}/x"], "no-such-experiment"),
], ids=["beta", "set-syntax", "objective", "instance", "steps", "lr", "n", "labels", "coverage",
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
], ids=["no-objective", "command", "optimizer", "seed-negative", "seed-text", "workers-0",
        "workers-negative", "reproduce-workers-0", "seeds-0"])
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
