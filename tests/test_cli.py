"""Command line: ``coverage_sim.cli.main([...])`` for objectives, instances and train."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import coverage_sim as cs
from coverage_sim import instances
from coverage_sim.objectives import OBJECTIVES

HAS_INSTANCES = hasattr(instances, "INSTANCES") and hasattr(instances, "make_instance")
needs_instances = pytest.mark.skipif(
    not HAS_INSTANCES, reason="coverage_sim.instances.INSTANCES / make_instance not added yet")


@pytest.fixture
def main():
    if not HAS_INSTANCES:
        pytest.skip("coverage_sim.cli imports INSTANCES / make_instance, not added yet")
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


@needs_instances
def test_instances_lists_the_registry(main, capsys):
    assert main(["instances"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == list(instances.INSTANCES)
    for name in instances.INSTANCES:
        assert isinstance(instances.make_instance(name), cs.Bandit)


@needs_instances
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


@needs_instances
def test_train_partial_coverage(main, tmp_path):
    assert main(["train", "random-k10", "-o", "sigmoid", "--steps", "10", "--coverage", "0.5",
                 "--out", str(tmp_path)]) == 0
    hist = pd.read_csv(tmp_path / "sigmoid" / "history.csv")
    assert 0 < hist["mass_off_support"].iloc[0] < 1


@needs_instances
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
], ids=["beta", "set-syntax", "objective", "instance", "steps", "lr", "n", "labels", "coverage",
        "set-typo"])
def test_bad_input_returns_exit_code_2_with_a_message(main, capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("coverage-sim: error:")
    assert needle in err


def test_argparse_errors_exit_with_code_2(main, capsys):
    for argv in (["train", "azar"], ["no-such-command"], ["train", "azar", "-o", "sigmoid",
                                                          "--optimizer", "sgd"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert capsys.readouterr().err
