"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest

import hypothesis_profiles  # noqa: F401  (registers and loads the hypothesis profile)


@pytest.fixture(scope="module")
def torch_one_thread():
    """Run a module's tiny torch ops on one thread: faster, and two threads per xdist worker
    would oversubscribe 2 cores."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
