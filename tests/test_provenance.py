"""The source revision recorded beside every result."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from coverage_sim.provenance import source_revision

ROOT = Path(__file__).resolve().parents[1]


def _git(*args) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_checkout_records_its_commit_and_dirty_state():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    revision = source_revision()
    assert revision["commit"] == _git("rev-parse", "HEAD")
    changed = _git("status", "--porcelain", "--", "coverage_sim", "pyproject.toml")
    assert revision["dirty"] is bool(changed)


def test_a_copy_outside_a_checkout_records_no_commit(tmp_path):
    """An installed copy (no .git of its own) must not report a commit of some other repository:
    here the copy sits inside a fresh repository whose top level is not the package's parent."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    shutil.copytree(ROOT / "coverage_sim", tmp_path / "site" / "coverage_sim",
                    ignore=shutil.ignore_patterns("__pycache__", "experiments"))
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('prov', "
            f"{str(tmp_path / 'site' / 'coverage_sim' / 'provenance.py')!r})\n"
            "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
            "print(mod.source_revision())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tmp_path).stdout
    assert out.strip() == "{'commit': None, 'dirty': None}"


def test_dirty_tracks_source_changes_only(tmp_path):
    """A fresh commit is clean; an edited or new module makes it dirty; an edited README, figure
    or notebook does not (they do not change what the code computes)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "project"
    (repo / "coverage_sim").mkdir(parents=True)
    (repo / "figures").mkdir()
    shutil.copy(ROOT / "coverage_sim" / "provenance.py", repo / "coverage_sim")
    (repo / "coverage_sim" / "__init__.py").write_text("")
    (repo / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (repo / "README.md").write_text("readme")
    (repo / "figures" / "a.csv").write_text("1")

    def git(*args):
        subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                        *args], check=True, capture_output=True)

    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "init")

    def revision():
        code = ("import sys; sys.path.insert(0, '.')\n"
                "from coverage_sim.provenance import source_revision\n"
                "print(source_revision())\n")
        return eval(subprocess.run([sys.executable, "-c", code], capture_output=True,   # noqa: S307
                                   text=True, check=True, cwd=repo).stdout)

    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert revision() == {"commit": head, "dirty": False}
    (repo / "README.md").write_text("edited")
    (repo / "figures" / "a.csv").write_text("2")
    assert revision() == {"commit": head, "dirty": False}
    (repo / "coverage_sim" / "new.py").write_text("x = 1\n")
    assert revision() == {"commit": head, "dirty": True}
    (repo / "coverage_sim" / "new.py").unlink()
    (repo / "pyproject.toml").write_text("[project]\nname = 'y'\n")
    assert revision() == {"commit": head, "dirty": True}
