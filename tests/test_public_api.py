"""The public API: exported names, docstrings, registry metadata and the docstring Examples."""

from __future__ import annotations

import doctest
import importlib
import inspect
import re
from collections.abc import Mapping

import pytest

import coverage_sim as cs

PUBLIC_MODULES = ["coverage_sim", "coverage_sim.env", "coverage_sim.policies",
                  "coverage_sim.metrics", "coverage_sim.train", "coverage_sim.objectives",
                  "coverage_sim.data", "coverage_sim.behavior", "coverage_sim.instances",
                  "coverage_sim.best_of_n", "coverage_sim.losses", "coverage_sim.preferences",
                  "coverage_sim.coverage", "coverage_sim.reward_model", "coverage_sim.cli",
                  "coverage_sim.sequences", "coverage_sim.transformer",
                  "coverage_sim.torch_backend", "coverage_sim.sampling", "coverage_sim.gradients",
                  "coverage_sim.transformer_stack", "coverage_sim.mlp", "coverage_sim.notebook",
                  "coverage_sim.provenance"]
ARXIV_ID = re.compile(r"^\d{4}\.\d{4,5}$")


def _documentable(obj) -> bool:
    return inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isroutine(obj)


def test_all_names_are_importable_and_unique():
    assert len(cs.__all__) == len(set(cs.__all__))
    namespace = {}
    exec(f"from coverage_sim import {', '.join(cs.__all__)}", namespace)   # noqa: S102
    for name in cs.__all__:
        assert namespace[name] is getattr(cs, name)


@pytest.mark.parametrize("name", cs.__all__)
def test_exported_name_has_its_own_docstring(name):
    obj = getattr(cs, name)
    if _documentable(obj):
        assert (obj.__doc__ or "").strip(), f"coverage_sim.{name} has no docstring"
    else:   # registries: mappings of documented specs
        assert isinstance(obj, Mapping) and len(obj) > 0


@pytest.mark.parametrize("module", PUBLIC_MODULES[1:])
def test_submodule_public_names_have_docstrings(module):
    mod = importlib.import_module(module)
    assert (mod.__doc__ or "").strip()
    for name in getattr(mod, "__all__", []):
        obj = getattr(mod, name)
        if _documentable(obj):
            assert (obj.__doc__ or "").strip(), f"{module}.{name} has no docstring"


def test_package_has_a_version():
    assert re.match(r"^\d+\.\d+\.\d+", cs.__version__)


@pytest.mark.parametrize("name", sorted(cs.OBJECTIVES))
def test_objective_registry_entry_cites_a_paper_and_states_a_convention(name):
    spec = cs.OBJECTIVES[name]
    assert spec.name == name
    assert spec.paper.strip() and spec.convention.strip()
    assert spec.family in {"offline pairwise", "offline pointwise", "online", "hybrid"}
    if spec.arxiv is None:   # only allowed for work that has no arXiv paper, and it must say so
        assert "no arxiv" in spec.paper.lower()
    else:
        assert ARXIV_ID.match(spec.arxiv), spec.arxiv
    # the defaults build, and every pairwise objective names a registered per-pair loss
    obj = cs.objective(name)
    assert obj.needs_data == spec.needs_data or name == "vpo"
    if spec.family == "offline pairwise":
        assert obj.loss_types and all(n in cs.PAIR_LOSSES for n in obj.loss_types)
        assert len(obj.loss_weights) == len(obj.loss_types)


@pytest.mark.parametrize("name", sorted(cs.PAIR_LOSSES))
def test_pair_loss_registry_entry_cites_a_paper(name):
    spec = cs.PAIR_LOSSES[name]
    assert spec.paper.strip() and spec.convention.strip()
    assert spec.arxiv is None or ARXIV_ID.match(spec.arxiv)
    assert name in cs.OBJECTIVES


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_docstring_examples_are_true(module):
    mod = importlib.import_module(module)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(mod, module) if t.examples]
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} doctest example(s) failed in {module}"


def test_the_documented_modules_do_have_examples():
    # guard against the doctest test passing vacuously
    counted = 0
    for module in ("coverage_sim.env", "coverage_sim.policies", "coverage_sim.train",
                   "coverage_sim.objectives", "coverage_sim.data"):
        mod = importlib.import_module(module)
        counted += sum(len(t.examples) for t in doctest.DocTestFinder().find(mod, module))
    assert counted >= 20
