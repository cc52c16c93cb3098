"""Shared experiment helpers: the torch guard registers the transformer experiments only when torch
imports, and the package imports without it; the peak-family validation rejects every bad field
with a message naming it."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

from coverage_sim.experiments.common import check_peak_family


def test_registered_with_torch_and_importable_without():
    pytest.importorskip("torch")
    from coverage_sim.experiments import EXPERIMENTS
    for exp_id in ("tajwar-tokens", "tang-transformer", "drpo-transformer"):
        assert EXPERIMENTS[exp_id].config.__doc__
    code = textwrap.dedent("""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch blocked")
        sys.meta_path.insert(0, Block())
        import coverage_sim.experiments as e
        from coverage_sim.experiments import common
        assert not common.HAVE_TORCH and "drpo-resets" in e.EXPERIMENTS
        assert not {"tajwar-tokens", "tang-transformer", "drpo-transformer"} & set(e.EXPERIMENTS)
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_registry_and_its_default_configs_do_not_import_torch():
    # reproduce's parent process and every CLI command import the registry and build configs;
    # torch (about 2 s) is imported only by the functions that run a transformer.
    pytest.importorskip("torch")
    code = textwrap.dedent("""
        import sys
        from coverage_sim.experiments import EXPERIMENTS
        for exp in EXPERIMENTS.values():
            exp.default_config(True), exp.default_config(False)
        assert "tajwar-tokens" in EXPERIMENTS and "torch" not in sys.modules, sorted(
            m for m in sys.modules if m.startswith("torch"))[:5]
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_check_peak_family_accepts_the_edges_of_the_bandit():
    assert check_peak_family((70.0, 20.0), (-4, -3, 0, 4)) is None
    assert check_peak_family(4.0, (-4, 95), name="peak", single=True) is None   # peaks 0 and 99
    assert check_peak_family((2.0,), (0, 7), arms=10) is None          # peak 9 of 10 arms


@pytest.mark.parametrize("peaks, offsets, name, arms, single, message", [
    ((70.0, 100.0), (0,), "peaks", 100, False, "peaks must lie in [0.0, 99.0], got 100.0"),
    (70.0, (0,), "peaks", 100, False, "peaks must be a non-empty tuple, got 70.0"),
    ((), (0,), "peaks", 100, False, "peaks must be a non-empty tuple"),
    (-1.0, (0,), "peak", 100, True, "peak must lie in [0.0, 99.0], got -1.0"),
    (70.0, [0, 1], "peak", 100, True, "offsets must be a non-empty tuple"),
    (70.0, (0, 1.5), "peak", 100, True, "offsets must be an integer >= -99"),
    (70.0, (-100,), "peak", 100, True, "offsets must be an integer >= -99"),
    ((70.0, 20.0), (-21,), "peaks", 100, False,
     "peaks + offsets must lie in [0.0, 99.0], got -1.0"),
    (98.0, (0, 2), "peak", 100, True, "peak + offsets must lie in [0.0, 99.0], got 100.0"),
    ((5.0,), (5,), "modes", 10, False, "modes + offsets must lie in [0.0, 9.0], got 10.0"),
])
def test_check_peak_family_names_the_bad_field(peaks, offsets, name, arms, single, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check_peak_family(peaks, offsets, name=name, arms=arms, single=single)
