"""Where a result came from: the git commit of the source that produced it, and whether that
source had uncommitted changes.

Package versions (:func:`coverage_sim.package_versions`) do not tell two results apart when both
come from version 0.1.0 of a checkout at different commits; the commit does. Every run folder's
``config.json`` and every figure's JSON record :func:`source_revision` under ``"source"``.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

__all__ = ["source_revision"]

#: The paths whose changes make a result differ from its commit: the package and its pins.
#: Notebooks, tests, docs and the figures a command writes do not change what the code computes.
_SOURCE_PATHS = ("coverage_sim", "pyproject.toml")


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def _revision() -> tuple[str | None, bool | None]:
    package = Path(__file__).resolve().parent
    root = package.parent
    top = _git(root, "rev-parse", "--show-toplevel")
    # Only a checkout of this project counts: an installed copy may sit inside some other
    # repository (a virtual environment in a project folder), whose commit says nothing here.
    if top is None or Path(top).resolve() != root or not (root / "pyproject.toml").exists():
        return None, None
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = _git(root, "status", "--porcelain", "--untracked-files=normal", "--",
                  *_SOURCE_PATHS)
    return commit, None if status is None else bool(status)


def source_revision() -> dict:
    """The git commit of the running ``coverage_sim`` source and whether it was modified.

    Read once per process, at the first call: the code that runs is the code imported then, and
    later edits to the files do not change it.

    Returns:
      ``{"commit": "<40 hex digits>", "dirty": bool}`` for a git checkout of the project, where
      ``dirty`` is true when ``coverage_sim/`` or ``pyproject.toml`` differ from the commit
      (tracked changes or new files); ``{"commit": None, "dirty": None}`` for an installed copy
      or when git is not available.

    Examples:
      >>> sorted(source_revision())
      ['commit', 'dirty']
    """
    commit, dirty = _revision()
    return {"commit": commit, "dirty": dirty}
