"""coverage_sim.notebook: a knob is a widget in a live kernel and a plain call headless."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from coverage_sim.notebook import explore, interactive_session

ROOT = Path(__file__).resolve().parents[1]
WIDGET = "application/vnd.jupyter.widget-view+json"


def test_headless_is_one_plain_call_with_the_parameter_values():
    calls = []
    explore(lambda beta, labels: calls.append((beta, labels)), beta=(0.7, [0.1, 1.0]),
            labels=("gold", ["gold", "proxy"]))
    assert calls == [(0.7, "gold")]
    assert not interactive_session()       # no kernel in a pytest process


@pytest.mark.parametrize("knobs,word", [({}, "at least one knob"),
                                        ({"beta": 0.5}, "(value, choices)"),
                                        ({"beta": (0.5, [1], 2)}, "(value, choices)")])
def test_malformed_knobs_are_refused(knobs, word):
    with pytest.raises(ValueError, match=word.replace("(", r"\(").replace(")", r"\)")):
        explore(lambda **kw: None, **knobs)


def _run_in_kernel(tmp_path, monkeypatch, headless: bool):
    pytest.importorskip("ipywidgets")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT),
                                                                   os.environ.get("PYTHONPATH")])))
    if headless:
        monkeypatch.setenv("COVERAGE_SIM_HEADLESS", "1")
    else:
        monkeypatch.delenv("COVERAGE_SIM_HEADLESS", raising=False)
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(
        "from coverage_sim.notebook import explore\n"
        "explore(lambda beta: print('beta', beta), beta=(0.5, [0.1, 1.0]))"))
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    models = {key: (m["model_name"], m["state"]) for key, m in state.get("state", {}).items()}
    return nb.cells[0].outputs, models


def test_a_live_kernel_gets_a_slider_that_starts_at_the_parameter_value(tmp_path, monkeypatch):
    outputs, models = _run_in_kernel(tmp_path, monkeypatch, headless=False)
    assert len([o for o in outputs if WIDGET in o.get("data", {})]) == 1, outputs
    [slider] = [state for name, state in models.values() if name == "SelectionSliderModel"]
    assert slider["description"] == "beta"
    # the parameter value joins the choices and is the slider's starting point
    assert slider["_options_labels"] == ["0.1", "0.5", "1.0"] and slider["index"] == 1
    [output] = [state for name, state in models.values() if name == "OutputModel"]
    assert [o["text"] for o in output["outputs"]] == ["beta 0.5\n"]


def test_headless_kernel_runs_the_parameter_value_without_widgets(tmp_path, monkeypatch):
    outputs, _ = _run_in_kernel(tmp_path, monkeypatch, headless=True)
    assert not [o for o in outputs if WIDGET in o.get("data", {})]
    assert [o.text for o in outputs if o.output_type == "stream"] == ["beta 0.5\n"]
