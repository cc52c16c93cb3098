"""Files the package writes: atomic, and readable as the umask allows (not mkstemp's 0600)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from coverage_sim._files import atomic_path, atomic_write_text, file_mode


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=["umask022", "umask077", "umask002"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_text_honours_the_umask(tmp_path, umask):
    path = tmp_path / "sub" / "a.csv"
    atomic_write_text(path, "x,y\n")
    assert path.read_text() == "x,y\n"
    assert _mode(path) == 0o666 & ~umask
    if umask == 0o022:
        assert _mode(path) & stat.S_IROTH, "other users must be able to read results"
    assert file_mode() == 0o666 & ~umask      # reading the umask leaves it as it was
    assert os.umask(umask) == umask


def test_save_figure_honours_the_umask(tmp_path, umask):
    from coverage_sim.plotting import new_figure, save_figure

    fig, axes = new_figure()
    axes[0, 0].plot([0, 1], [0, 1])
    for path in save_figure(fig, tmp_path / "fig"):
        assert _mode(path) == 0o666 & ~umask


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_run_folder_files_are_world_readable_under_umask_022(tmp_path):
    from coverage_sim.sweep import run_sweep

    old = os.umask(0o022)
    try:
        run_sweep("azar-ipo-vs-dpo", None, seeds=[0], out=tmp_path, workers=1, progress=False)
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"config.json", "results.csv", "seed-0.csv"}
    for path in files:
        assert _mode(path) == 0o644, path
    assert set(json.loads((tmp_path / "config.json").read_text())["source"]) == {"commit",
                                                                                  "dirty"}
