"""Shared experiment helpers: the torch guard registers the transformer experiments only when torch
imports, and the package imports without it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")


def test_registered_with_torch_and_importable_without():
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
