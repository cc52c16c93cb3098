"""Fixtures shared by several test modules, and the test session's thread and progress settings.

- No progress bars: ``COVERAGE_SIM_PROGRESS=0`` (a test that checks bars passes ``progress=True``).
- Under pytest-xdist every worker is one process per core already, so each worker's inner pools
  (numba, torch, BLAS) get one thread: ``-n 2`` on 2 cores runs 2 threads, not 2 x 2 x 3.
"""

from __future__ import annotations

import os

import pytest

os.environ["COVERAGE_SIM_PROGRESS"] = "0"
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Set before numba, torch or a BLAS is imported by any test module (they read these once).
    for _var in ("COVERAGE_SIM_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS",
                 "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"


@pytest.fixture(scope="module")
def torch_one_thread():
    """Run a module's tiny torch ops on one thread: faster, and two threads per xdist worker
    would oversubscribe 2 cores."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
