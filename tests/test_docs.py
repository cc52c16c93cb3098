"""The documentation: every public name in the API reference, every claim id and test reference
resolving, nothing pointing outside the repository, and the site building with warnings as errors.

The build test runs Sphinx on ``docs/`` without executing the notebooks
(``COVERAGE_SIM_DOCS_EXECUTE=0``): tests/test_notebooks.py executes them already. The README's
docs command executes them too.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import coverage_sim as cs

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API = (DOCS / "api.md").read_text()
#: Submodules the API reference documents whole, beyond the names of ``coverage_sim.__all__``.
SUBMODULES = ["coverage_sim.metrics", "coverage_sim.preferences", "coverage_sim.sampling",
              "coverage_sim.torch_backend", "coverage_sim.transformer",
              "coverage_sim.transformer_stack", "coverage_sim.mlp", "coverage_sim.notebook",
              "coverage_sim.provenance"]
#: A claim id in text: C and one or two digits, not inside a quoted colour name such as "C0"
#: (matplotlib).
CLAIM_ID = re.compile(r"""(?<!["'\w])C(\d{1,2})(?!["'\w])""")
TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _documented_names() -> set[str]:
    """Names the API page documents under ``coverage_sim``: autodoc and plain directives."""
    names = set(re.findall(r"^\.\. (?:autofunction|autoclass|data|function|class):: (\w+)\s*$",
                           API, flags=re.MULTILINE))
    modules = set(re.findall(r"^\.\. automodule:: ([\w.]+)\s*$", API, flags=re.MULTILINE))
    return names | {m.removeprefix("coverage_sim.") for m in modules}


@pytest.mark.parametrize("name", cs.__all__)
def test_every_public_name_has_a_docstring_and_is_in_the_api_reference(name):
    """The rlax-style coverage check: a name added to ``__all__`` must be added to docs/api.md."""
    obj = getattr(cs, name)
    if not isinstance(obj, dict | type(cs.PAIR_LOSSES)):
        assert (obj.__doc__ or "").strip(), f"coverage_sim.{name} has no docstring"
    assert name in _documented_names(), f"coverage_sim.{name} is missing from docs/api.md"


@pytest.mark.parametrize("module", SUBMODULES)
def test_submodules_are_in_the_api_reference(module):
    assert f".. automodule:: {module}" in API


def test_the_api_reference_documents_nothing_that_is_not_public():
    public = set(cs.__all__)
    extra = {n for n in _documented_names() if "." not in n} - public - {
        m.removeprefix("coverage_sim.") for m in SUBMODULES}
    assert not extra, f"docs/api.md documents names outside coverage_sim.__all__: {extra}"


def _claim_sources() -> list[Path]:
    files = [*ROOT.glob("coverage_sim/**/*.py"), *ROOT.glob("tests/**/*.py"),
             *ROOT.glob("notebooks/*.py"), *DOCS.glob("*.md"), ROOT / "README.md"]
    return [p for p in files if p.is_file()]


def test_every_claim_id_used_anywhere_resolves_to_a_section_of_the_docs():
    """A claim id in a test, docstring, notebook or doc page must have its section in
    docs/claims.md, with the label ``(claim-cN)=``."""
    claims = (DOCS / "claims.md").read_text()
    defined = {int(n) for n in re.findall(r"^\(claim-c(\d+)\)=$", claims, flags=re.MULTILINE)}
    assert defined == set(range(1, max(defined) + 1)), "claim sections must be C1..Cn"
    missing = {}
    for path in _claim_sources():
        for match in CLAIM_ID.finditer(path.read_text()):
            if int(match.group(1)) not in defined:
                missing.setdefault(f"C{match.group(1)}", []).append(str(path.relative_to(ROOT)))
    assert not missing, f"claim ids without a section in docs/claims.md: {missing}"


def test_every_claim_section_names_its_status_and_an_existing_test():
    text = (DOCS / "claims.md").read_text()
    sections = re.split(r"^\(claim-c\d+\)=$", text, flags=re.MULTILINE)[1:]
    for number, section in enumerate(sections, start=1):
        assert re.search(r"\*\*Status:\*\* (theorem|derived here|empirical)", section), (
            f"C{number} states no status")
        assert TEST_REF.search(section), f"C{number} names no test"


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test")}


def test_every_test_the_docs_name_exists():
    """``tests/x.py::test_y`` in the guide must name a test that exists (renaming a test means
    updating the guide)."""
    stale = []
    for page in DOCS.glob("*.md"):
        for file, name in TEST_REF.findall(page.read_text()):
            path = ROOT / file
            if not path.exists() or name not in _test_functions(path):
                stale.append(f"{page.name}: {file}::{name}")
    assert not stale, "the docs name tests that do not exist:\n" + "\n".join(stale)


def test_figure_sections_cover_every_registered_experiment():
    """Each registered experiment id has its section (``(experiment-<id>)=``) in docs/figures.md."""
    from coverage_sim import catalogue

    figures = (DOCS / "figures.md").read_text()
    missing = [e.id for e in catalogue.EXPERIMENTS if f"(experiment-{e.id})=" not in figures]
    assert not missing, f"experiments without a section in docs/figures.md: {missing}"


def test_nothing_in_the_repository_points_outside_it():
    """No file cites the internal notes the theory guide replaces or a path outside the
    checkout."""
    outside = re.compile(r"science\.md|engineering\.md|layout\.md|\.\./shared|shared/docs")
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True,
                             text=True, check=False).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    citing = set()
    for name in tracked:
        path = ROOT / name
        if path.suffix in {".py", ".md", ".ipynb", ".toml", ".cff", ".txt", ".json"} and \
                path.is_file() and outside.search(path.read_text(errors="ignore")):
            citing.add(name)
    this_file = str(Path(__file__).relative_to(ROOT))
    citing.discard(this_file)
    assert not citing, sorted(citing)


def test_docs_build_with_warnings_as_errors(tmp_path):
    """The site builds with ``-W`` (broken references, bad docstring markup and unlisted pages are
    errors). Notebooks are not executed here; the README's docs command executes them."""
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_nb")
    pytest.importorskip("furo")
    env = dict(os.environ, COVERAGE_SIM_DOCS_EXECUTE="0", PYTHONWARNINGS="ignore")
    done = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                           "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    html = tmp_path / "html"
    for page in ("index.html", "theory.html", "claims.html", "figures.html", "api.html",
                 "_generated/objectives.html", "_generated/gallery/index.html"):
        assert (html / page).exists(), page
    api = (html / "api.html").read_text()
    for name in ("optimal_policy", "train", "Estimator", "explore", "source_revision"):
        assert f'id="coverage_sim.{name}"' in api or f'id="coverage_sim.notebook.{name}"' in api \
            or f'id="coverage_sim.provenance.{name}"' in api, name
