"""Reproducible torch runs: reproducible() fixes and restores threads and deterministic algorithms;
a transformer experiment's --quick run twice on one machine gives byte-identical CSVs; device
placement on the CPU and the CUDA default when torch reports a GPU (mocked)."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")

from coverage_sim.cli import main  # noqa: E402
from coverage_sim.experiments import EXPERIMENTS  # noqa: E402
from coverage_sim.experiments.common import check_device  # noqa: E402
from coverage_sim.mlp import MLPPolicy  # noqa: E402
from coverage_sim.torch_backend import default_device, reproducible  # noqa: E402

TORCH_EXPERIMENTS = ("tajwar-tokens", "tajwar-token-peak", "tang-transformer", "tang-scaling",
                     "drpo-transformer")


def test_reproducible_sets_and_restores():
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    with reproducible(threads=1, deterministic=True):
        assert torch.get_num_threads() == 1
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == det
    with pytest.raises(RuntimeError):
        with reproducible(threads=1):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == threads              # restored on error too
    with pytest.raises(ValueError, match="threads"):
        with reproducible(threads=0):
            pass
    with pytest.raises(ValueError, match="deterministic"):
        with reproducible(deterministic="yes"):
            pass


def test_quick_run_twice_gives_byte_identical_csv(tmp_path, capsys):
    """The whole CLI path (config, seeds, run, table written to disk), twice, in fresh folders."""
    args = ["run", "tang-transformer", "--quick", "--seeds", "1", "--workers", "1",
            "--no-progress", "--set", "steps=6", "--set", "sft_steps=6",
            "--set", "tabular_steps=6", "--set", "record_points=2"]
    outs = []
    for name in ("a", "b"):
        main(args + ["--out", str(tmp_path / name)])
        outs.append((tmp_path / name / "results.csv").read_bytes())
    capsys.readouterr()
    assert len(outs[0]) > 1000 and outs[0] == outs[1]


@pytest.mark.parametrize("exp_id", TORCH_EXPERIMENTS)
def test_torch_experiments_default_to_the_cpu_and_take_a_device(exp_id):
    cfg = EXPERIMENTS[exp_id].config()
    assert cfg.device == "cpu"
    assert dataclasses.replace(cfg, device="cpu").device == "cpu"
    with pytest.raises(ValueError, match="device"):
        dataclasses.replace(cfg, device="tpu:0")


def test_device_placement_on_cpu():
    from coverage_sim.experiments.tang.token_task import TokenTaskConfig, sft_stack, token_task_env
    cfg = TokenTaskConfig(sft_steps=1, device="cpu")
    stack, _ = sft_stack(token_task_env(cfg), "w4", cfg, [0, 1])
    assert all(p.device == torch.device("cpu") for p in stack.params.values())
    pol = MLPPolicy(device="cpu")
    assert pol.device == torch.device("cpu")


def test_cuda_device_checked_and_default_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA device"):
        check_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert check_device("cuda:0") == "cuda:0"
    assert default_device() == torch.device("cuda")          # the default when a GPU is there
    cfg = EXPERIMENTS["tang-scaling"].config(device="cuda")
    assert cfg.device == "cuda"


def test_reproduce_sets_the_device_of_torch_experiments_only(monkeypatch, tmp_path):
    """reproduce(device=...) changes the config of experiments with a device field and no
    other (their runs are intercepted: nothing is trained here)."""
    import coverage_sim.figures as figures
    seen = {}

    def fake_prepare(exp, config, seeds, folder):
        seen[exp.id] = config
        raise StopIteration

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(figures, "prepare", fake_prepare)
    for exp_id in ("tang-scaling", "azar-ipo-vs-dpo"):
        with pytest.raises(StopIteration):
            figures.reproduce([exp_id], quick=True, figures_dir=tmp_path, runs_dir=tmp_path,
                              device="cuda", progress=False)
    assert seen["tang-scaling"].device == "cuda"
    assert not hasattr(seen["azar-ipo-vs-dpo"], "device")
