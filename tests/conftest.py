"""Fixtures shared by several test modules, the test session's thread and progress settings, and
the hygiene every test gets.

- No progress bars: ``COVERAGE_SIM_PROGRESS=0`` (a test that checks bars passes ``progress=True``).
- Under pytest-xdist every worker is one process per core already, so each worker's inner pools
  (numba, torch, BLAS) get one thread: ``-n 2`` on 2 cores runs 2 threads, not 2 x 2 x 3.
- The experiment registry is restored after each test (a test may register a toy experiment).
- At the end of the session the repository's working tree must be as the session found it:
  tests write under ``tmp_path``, never into the checkout.
- ``CS_TEST_ORDER=reverse`` runs the collected tests in reverse order, to check that no test
  depends on another having run first (``python -m pytest -p no:randomly`` is the plain order).
- Hypothesis profiles: see tests/hypothesis_profiles.py (``HYPOTHESIS_PROFILE=ci|nightly``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["COVERAGE_SIM_PROGRESS"] = "0"
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Set before numba, torch or a BLAS is imported by any test module (they read these once).
    for _var in ("COVERAGE_SIM_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS",
                 "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"

import hypothesis_profiles  # noqa: F401  (registers and loads the hypothesis profile)

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    order = os.environ.get("CS_TEST_ORDER", "")
    if order == "reverse":
        items.reverse()
    elif order:
        raise pytest.UsageError(f"CS_TEST_ORDER must be 'reverse' or unset, got {order!r}")


_REGISTRY = "coverage_sim.experiments.registry"


@pytest.fixture(autouse=True)
def _restore_experiment_registry():
    """Whatever a test registers or removes, the next test sees the built-in registry.

    The registry is not imported here (importing every experiment costs seconds per process): if a
    test imports it first, the package's own experiments are what the next test sees."""
    registry = sys.modules.get(_REGISTRY)
    saved = None if registry is None else dict(registry.EXPERIMENTS)
    yield
    registry = sys.modules.get(_REGISTRY)
    if registry is None:
        return
    if saved is None:
        saved = {key: exp for key, exp in registry.EXPERIMENTS.items()
                 if getattr(exp.run, "__module__", "").startswith("coverage_sim.")}
    registry.EXPERIMENTS.clear()
    registry.EXPERIMENTS.update(saved)


def _untracked_and_modified() -> set[str] | None:
    """``git status`` of the checkout (untracked files included), or None outside a git tree."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return None
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                         capture_output=True, text=True)
    return set(out.stdout.splitlines()) if out.returncode == 0 else None


@pytest.fixture(scope="session", autouse=True)
def _checkout_left_as_found():
    """Fail the session if the tests created or changed files in the checkout."""
    before = _untracked_and_modified()
    yield
    after = _untracked_and_modified()
    if before is not None and after is not None and after - before:
        pytest.fail(f"tests changed the checkout: {sorted(after - before)}", pytrace=False)


@pytest.fixture(scope="module")
def torch_one_thread():
    """Run a module's tiny torch ops on one thread: faster, and two threads per xdist worker
    would oversubscribe 2 cores."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def float64_default_dtype():
    """torch tensors default to float64 for one test, then torch's own default again: a module
    that set it at import changed every later test of its worker process (the transformer's runs
    among them), which users' runs never see."""
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
