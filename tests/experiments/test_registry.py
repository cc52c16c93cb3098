"""Every registered experiment: metadata, and `reproduce --quick` shows each paper's claim."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from coverage_sim.cli import main
from coverage_sim.experiments import EXPERIMENTS
from coverage_sim.experiments.registry import TABLE_COLUMNS
from coverage_sim.figures import reproduce

IDS = sorted(EXPERIMENTS)


@pytest.fixture(scope="module")
def quick_figures(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    verdicts = reproduce(quick=True, figures_dir=root / "figures", runs_dir=root / "runs",
                         progress=False)
    return root / "figures", {v.experiment: v for v in verdicts}


@pytest.mark.parametrize("experiment_id", IDS)
def test_metadata_names_paper_claim_and_differences(experiment_id):
    exp = EXPERIMENTS[experiment_id]
    # "F<n>": a paper's figure; "A<n>": an experiment of this project's own (the gap atlas)
    assert exp.figure[0] in "FA" and exp.arxiv and exp.paper
    assert len(exp.claim) > 20 and len(exp.differences) > 20
    quick = exp.config.quick()
    assert dataclasses.is_dataclass(quick) and type(quick) is exp.config
    assert exp.config.__doc__ and "Attributes" in exp.config.__doc__


def test_figure_ids_are_unique():
    figures = [exp.figure for exp in EXPERIMENTS.values()]
    assert len(figures) == len(set(figures))


@pytest.mark.parametrize("experiment_id", IDS)
def test_quick_reproduction_agrees_with_the_paper(quick_figures, experiment_id):
    folder, verdicts = quick_figures
    verdict = verdicts[experiment_id]
    exp = EXPERIMENTS[experiment_id]
    # A reproduction whose finding does not (fully) carry over keeps testing the paper's claim rather
    # than being tuned until it passes: its verdict and the clauses that fail are pinned (for the
    # quick config where it differs from the full run's).
    expected_verdict, expected_failing = exp.expected(quick=True)
    assert verdict.verdict == expected_verdict, verdict.message
    assert set(verdict.result.failing) == set(expected_failing), verdict.message
    for suffix in (".png", ".csv", ".json"):
        path = folder / f"{experiment_id}{suffix}"
        assert path.exists() and path.stat().st_size > 0, path
    assert not (folder / f"{experiment_id}.pdf").exists()   # a quick run's figures: PNG only
    table = pd.read_csv(folder / f"{experiment_id}.csv")
    assert list(table.columns[-len(TABLE_COLUMNS):]) == list(TABLE_COLUMNS)
    assert table["value"].notna().all()
    manifest = json.loads((folder / f"{experiment_id}.json").read_text())
    assert manifest["verdict"] == expected_verdict
    assert manifest["check"]["clauses"] and manifest["check"]["mode"] in ("exact", "sampled",
                                                                          "exact+sampled")
    assert manifest["quick"] and "numpy" in manifest["versions"]


def test_index_lists_every_figure(quick_figures):
    folder, _ = quick_figures
    index = (folder / "README.md").read_text()
    for exp in EXPERIMENTS.values():
        assert f"]({exp.id}.png)" in index
        assert exp.claim in index


def test_cli_list_and_reproduce_one(tmp_path, capsys):
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert all(exp_id in listed for exp_id in IDS)
    assert main(["reproduce", "azar-ipo-vs-dpo", "--quick", "--figures", str(tmp_path / "f"),
                 "--runs", str(tmp_path / "r"), "--no-progress", "--workers", "1",
                 "--formats", "pdf,svg"]) == 0
    written = {p.suffix for p in (tmp_path / "f").glob("azar-ipo-vs-dpo.*")}
    assert written == {".pdf", ".svg", ".csv", ".json"}
    assert main(["plot", str(tmp_path / "r" / "quick" / "azar-ipo-vs-dpo")]) == 0
    assert (tmp_path / "r" / "quick" / "azar-ipo-vs-dpo" / "figure.png").exists()


def test_index_marks_a_manifest_from_an_earlier_version_as_stale(tmp_path):
    # Figures folders written before checks had clauses hold the check as a sentence; a partial
    # reproduce must still write the index, listing such a figure as stale instead of crashing.
    from coverage_sim.figures import write_index

    (tmp_path / "tang-scaling.json").write_text(json.dumps(
        {"experiment": "tang-scaling", "agrees": False, "check": "a sentence: does not agree"}))
    index = write_index(tmp_path).read_text()
    assert "stale: rerun `coverage-sim reproduce tang-scaling`" in index
    assert "](tang-scaling.png)" not in index


@pytest.mark.parametrize("paper, short", [
    ("Azar et al. 2023, A General Theoretical Paradigm", "Azar et al. 2023"),
    ("Gao, Schulman, Hilton 2022, Scaling Laws for Reward Model Overoptimization", "Gao et al. 2022"),
    ("Schulman 2020, Approximating KL divergence (note)", "Schulman 2020"),
    ("Ahmadian et al. 2024 (RLOO); Shao et al. 2024 (GRPO, arXiv:2402.03300)",
     "Ahmadian et al. 2024"),
    ("An anonymous note", "An anonymous note"),
])
def test_short_citation_is_first_author_and_year(paper, short):
    from coverage_sim.figures import short_citation

    assert short_citation(paper) == short


def test_reproduce_shares_a_seeds_expected_cost_among_its_cells(monkeypatch, tmp_path):
    # The catalogue's seconds are per seed; an experiment split into cells (the atlas: 58) must
    # not weigh each cell as a whole seed, or it would start first and swamp the bar's estimate.
    import coverage_sim.figures as figures
    from coverage_sim.catalogue import EXPERIMENTS as CATALOGUE
    from coverage_sim.sweep import experiment_cells

    seen = {}

    def fake_pool(plans, units, costs, *args):
        seen["units"], seen["costs"] = units, costs
        raise StopIteration

    monkeypatch.setattr(figures, "_reproduce_locally", fake_pool)
    with pytest.raises(StopIteration):
        figures.reproduce(["gap-atlas", "azar-ipo-vs-dpo"], quick=True,
                          figures_dir=tmp_path / "f", runs_dir=tmp_path / "r", progress=False)
    seconds = {e.id: e.quick_seconds for e in CATALOGUE}
    exp = EXPERIMENTS["gap-atlas"]
    n_cells = len(experiment_cells(exp, exp.config.quick()))
    assert n_cells > 1
    for unit, cost in zip(seen["units"], seen["costs"]):
        expected = seconds[unit[0]] / (n_cells if unit[0] == "gap-atlas" else 1)
        assert cost == pytest.approx(expected)


def test_a_full_reproduction_saves_png_and_pdf(tmp_path):
    (verdict,) = reproduce(["azar-ipo-vs-dpo"], figures_dir=tmp_path / "f",
                           runs_dir=tmp_path / "r", workers=1, progress=False)
    assert verdict.verdict == EXPERIMENTS["azar-ipo-vs-dpo"].expected(quick=False)[0]
    written = {p.suffix for p in (tmp_path / "f").glob("azar-ipo-vs-dpo.*")}
    assert written == {".png", ".pdf", ".csv", ".json"}


@pytest.mark.parametrize("formats", [(), ("png", "docx"), "png,pdf"])
def test_unknown_or_no_image_formats_are_refused_before_any_run(tmp_path, formats):
    with pytest.raises(ValueError, match="formats must be a non-empty list"):
        reproduce(["azar-ipo-vs-dpo"], quick=True, figures_dir=tmp_path / "f",
                  runs_dir=tmp_path / "r", workers=1, progress=False, formats=formats)
    assert not (tmp_path / "r").exists()


def test_one_format_may_be_given_as_a_string():
    from coverage_sim.figures import check_formats

    assert check_formats("svg") == ("svg",) and check_formats(["png", "pdf"]) == ("png", "pdf")


#: Small configs of the experiments marked ``needs_kernels=False`` (the quick ones, shortened).
_KERNEL_FREE_SMALL = {"tajwar-token-peak": dict(steps=4, sft_steps=4, eval_every=2, n_eval=16),
                      "tajwar-tokens": dict(steps=4, sft_steps=4, n_eval=16),
                      "drpo-transformer": dict(max_steps=10, record_points=3)}

_NO_KERNEL_SCRIPT = """
import dataclasses, json, sys
import numba.core.registry
import coverage_sim as cs
from coverage_sim.experiments import EXPERIMENTS
from coverage_sim.experiments.registry import assess

def used():
    # every kernel a process calls (compiled, or loaded from numba's cache) gains a signature
    return sorted(f"{name}.{attr}" for name, module in list(sys.modules.items())
                  if name.startswith("coverage_sim") for attr, value in vars(module).items()
                  if isinstance(value, numba.core.registry.CPUDispatcher) and value.signatures)

for eid, small in json.loads(sys.argv[1]).items():
    exp = EXPERIMENTS[eid]
    cfg = dataclasses.replace(exp.config.quick(), **small)
    table = exp.run(cfg, 0)
    assess(exp, table, cfg)
    exp.plot(table, cfg)
    if exp.figure_table is not None:
        exp.figure_table(table, cfg)
    if exp.summary is not None:
        exp.summary(table, cfg)
    print(eid, used())
env = cs.tajwar_bandit(n_actions=4)   # the control: a training call uses kernels
cs.train(env, "dpo", cs.offline_pairs(env, env.ref), steps=2, lr=0.1, metrics=[], progress=False)
print("control", used())
"""


def test_experiments_marked_kernel_free_call_no_numba_kernel():
    """`reproduce` runs them while the numba kernels compile (``needs_kernels=False``): in a fresh
    process their run, check and figure call no kernel, while a training call (the control)
    does."""
    pytest.importorskip("torch")
    flagged = sorted(e.id for e in EXPERIMENTS.values() if not e.needs_kernels)
    assert flagged == sorted(_KERNEL_FREE_SMALL)
    out = subprocess.run([sys.executable, "-c", _NO_KERNEL_SCRIPT, json.dumps(_KERNEL_FREE_SMALL)],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "COVERAGE_SIM_PROGRESS": "0"}).stdout
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines())
    assert {eid: lines[eid] for eid in flagged} == {eid: "[]" for eid in flagged}
    assert "_engine.run_chunk" in lines["control"]
