"""Atomic file writes with ordinary permissions.

Every file the package writes (run folders, figures, their data) goes through a temporary file in
the target folder and an atomic rename, so a reader never sees half a file and an interrupted run
leaves the previous file intact. ``tempfile.mkstemp`` creates its file with mode 0600, which would
make results unreadable to other users and web servers after the rename; the temporary file gets
the mode an ordinary ``open(path, "w")`` would give, ``0o666`` less the process umask.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_text", "file_mode"]

_UMASK_LOCK = threading.Lock()


def file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666 & ~umask``."""
    # os.umask can only be read by setting it; hold a lock so that no other thread of ours
    # creates a file while the mask is briefly 0o022.
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp"):
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path`` with the
    umask's permissions, on any error it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
