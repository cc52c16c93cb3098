"""Sphinx configuration of the coverage_sim documentation.

Build (from the repository root, with the ``docs`` extra installed)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The teaching notebooks (``notebooks/*.py``, jupytext py:percent) are executed at build time by
myst-nb; ``COVERAGE_SIM_DOCS_EXECUTE=0`` builds without executing them (the test suite does this:
it executes the notebooks in tests/test_notebooks.py already). Generated pages go to
``docs/_generated/`` (not committed): the notebooks, the figure gallery (``figures/README.md`` with
its pictures, written by ``coverage-sim reproduce``) and the objective catalogue.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS))
# The notebook kernels inherit this environment: this checkout importable without an install,
# no progress bars, and a plain parameter cell instead of sliders (coverage_sim.notebook).
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
os.environ.setdefault("COVERAGE_SIM_PROGRESS", "0")
os.environ["COVERAGE_SIM_HEADLESS"] = "1"
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import _generate  # noqa: E402  (docs/_generate.py)

import coverage_sim  # noqa: E402

_generate.generate_all(ROOT, DOCS / "_generated")

project = "coverage_sim"
author = "coverage_sim developers"
copyright = "2026, coverage_sim developers"
release = version = coverage_sim.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "myst-nb", ".rst": "restructuredtext", ".py": "myst-nb"}
# Only the notebooks are .py pages; this file and the generator are not.
exclude_patterns = ["_build", "README.md", "**/.ipynb_checkpoints", "_generated/notebooks/*.ipynb",
                    "conf.py", "_generate.py"]
root_doc = "index"

# MyST: $...$ maths, (label)= targets, heading anchors for the gallery's in-page links.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
myst_url_schemes = ["http", "https", "mailto"]

# myst-nb: the jupytext sources are the notebooks; execute them unless told not to.
nb_custom_formats = {".py": ["jupytext.reads", {"fmt": "py:percent"}]}
nb_execution_mode = "off" if os.environ.get("COVERAGE_SIM_DOCS_EXECUTE") == "0" else "force"
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
nb_execution_excludepatterns = []

# API reference from the docstrings (Google style: Args / Returns / Examples).
autodoc_default_options = {}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_custom_sections = [("Attributes", "params_style")]
add_module_names = False
nitpicky = False

html_theme = "furo"
html_title = f"coverage_sim {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = True
suppress_warnings = ["mystnb.unknown_mime_type"]
