"""The teaching notebooks in ``notebooks/``: they run headless, assert their claim, and stay paired.

Every ``notebooks/*.py`` (jupytext py:percent, paired with an ``.ipynb``) is picked up
automatically. Each runs in a fresh ``python3`` kernel under nbclient, with the kernel's working
directory in ``tmp_path``, ``MPLBACKEND=Agg`` and ``COVERAGE_SIM_HEADLESS=1`` (its knob is the plain
parameter cell, not a slider). Each notebook asserts its
paper's claim on the numbers it computes, so a notebook that runs but shows the wrong thing fails
here, and a parameter that breaks a claim's premise must make that assertion fail. The ``.ipynb``
must hold exactly the cells of the ``.py`` (regenerate with ``jupytext --to ipynb
notebooks/*.py``) and no outputs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))
IDS = [p.stem for p in NOTEBOOKS]
#: Per-cell limit. A cold numba compile of the engine (first notebook in a fresh clone) takes a
#: minute or two on 2 busy cores; a warm notebook cell takes seconds.
CELL_TIMEOUT = 900


@pytest.fixture
def kernel_env(monkeypatch):
    """Environment inherited by the kernel: headless matplotlib, and this checkout importable
    from the kernel's working directory even without an (editable) install."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("COVERAGE_SIM_HEADLESS", "1")
    # The notebooks' linear algebra is tiny (K <= 200). On a busy 2-core machine (pytest -n 2)
    # OpenBLAS's second thread spin-waits and a 200x200 solve becomes ~500x slower (measured:
    # notebook 05 took 52 s instead of 5 s).
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + (os.pathsep + path if path else ""))


def _execute(nb, cwd: Path) -> None:
    NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()


def _tags(cell) -> list:
    return list(cell.get("metadata", {}).get("tags", []))


def _inject_parameters(nb, **params):
    """Insert a cell assigning ``params`` right after the ``parameters`` cell (papermill style)."""
    index = next(i for i, cell in enumerate(nb.cells) if "parameters" in _tags(cell))
    source = "\n".join(f"{name} = {value!r}" for name, value in params.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(index + 1, cell)
    return nb


def test_notebooks_found():
    assert len(NOTEBOOKS) >= 5, f"expected the teaching notebooks in notebooks/, found {IDS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_executes(path, tmp_path, kernel_env):
    nb = jupytext.read(path)
    _execute(nb, tmp_path)
    errors = [out for cell in nb.cells if cell.cell_type == "code"
              for out in cell.outputs if out.output_type == "error"]
    assert not errors, f"{path.name} produced error outputs: {errors}"
    executed = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in executed), f"{path.name}: a cell never ran"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_ipynb_paired_and_stripped(path):
    ipynb = path.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} missing: run jupytext --to ipynb {path.name}"
    paired = nbformat.read(ipynb, as_version=4)
    nbformat.validate(paired)
    source = jupytext.read(path)
    got = [(c.cell_type, c.source, _tags(c)) for c in paired.cells]
    want = [(c.cell_type, c.source, _tags(c)) for c in source.cells]
    assert got == want, f"{ipynb.name} is out of sync with {path.name}: regenerate with jupytext"
    for cell in paired.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{ipynb.name} has outputs or execution counts: strip them")
    assert paired.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_structure(path):
    """Question and paper first, a tagged parameter cell near the top, a claim assertion, and
    2-4 exercises at the end."""
    cells = jupytext.read(path).cells
    first = cells[0]
    assert first.cell_type == "markdown" and re.search(r"arXiv:\d{4}\.\d{4,5}", first.source), (
        f"{path.name} must open with a markdown cell naming its paper's arXiv id")
    params = [i for i, c in enumerate(cells) if "parameters" in _tags(c)]
    assert len(params) == 1 and params[0] <= 3 and cells[params[0]].cell_type == "code", (
        f"{path.name} needs one code cell tagged 'parameters' among its first four cells")
    code = "\n".join(c.source for c in cells if c.cell_type == "code")
    assert re.search(r"^\s*assert ", code, flags=re.MULTILINE), f"{path.name} asserts nothing"
    # the knob drives a widget in a live kernel: explore(show, <knob>=(<knob>, choices))
    knobs = [m.group(1) for m in re.finditer(r"^(\w+) = .*$", cells[params[0]].source,
                                             flags=re.MULTILINE) if "not a slider" not in m.group(0)]
    calls = re.findall(r"^explore\(show,(.*?)\)$", code, flags=re.MULTILINE | re.DOTALL)
    assert calls, f"{path.name} never calls coverage_sim.notebook.explore on its knob"
    for knob in knobs:
        assert re.search(rf"\b{knob}=\({knob},", calls[0]), (
            f"{path.name}: the knob {knob!r} of the parameter cell has no control in explore()")
    last = cells[-1]
    assert last.cell_type == "markdown" and "## Exercises" in last.source, (
        f"{path.name} must end with an '## Exercises' markdown cell")
    exercises = re.findall(r"^\d+\. ", last.source.split("## Exercises", 1)[1], flags=re.MULTILINE)
    assert 2 <= len(exercises) <= 4, f"{path.name} has {len(exercises)} exercises, expected 2-4"


def test_claim_assertion_bites(tmp_path, kernel_env):
    """A proxy fitted on plenty of data finds the gold-best response, so there is no
    over-optimisation: notebook 05's claim check must fail rather than plot a flat curve."""
    nb = _inject_parameters(jupytext.read(ROOT / "notebooks" / "05_overoptimisation.py"),
                            n_pairs=100_000)
    with pytest.raises(CellExecutionError) as info:
        _execute(nb, tmp_path)
    assert info.value.ename == "AssertionError"
    assert "no over-optimisation" in info.value.evalue
