"""Shared figure helpers: nothing clipped at the image's edges, legends that fit."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
from PIL import Image

from coverage_sim.plotting import STYLE, figure_legend, new_figure, save_figure


def _figure_with_wide_legend(labels):
    fig, axes = new_figure(ncols=2, width=3.0, height=2.5)
    for i, label in enumerate(labels):
        axes[0, 0].plot([0, 1], [0, i], label=label)
    return fig, axes


def test_a_legend_wider_than_the_figure_is_kept_whole(tmp_path):
    """matplotlib's default save crops the canvas at the figure's size, cutting a legend that is
    wider than the panels; save_figure grows the image to hold it."""
    labels = [f"a rather long legend label number {i}" for i in range(3)]
    fig, axes = _figure_with_wide_legend(labels)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncol=3)
    fig.canvas.draw()
    legend_px = fig.legends[0].get_window_extent().width
    assert legend_px > fig.bbox.width          # the fault: wider than the figure
    png = save_figure(fig, tmp_path / "wide")[0]
    width = Image.open(png).size[0]
    # the saved image (at savefig.dpi) holds the legend's whole width
    assert width >= legend_px * STYLE["savefig.dpi"] / fig.dpi


def test_figure_legends_follow_the_shared_style(tmp_path):
    fig, axes = _figure_with_wide_legend(["a", "b"])
    legend = fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center")
    assert legend.get_frame_on() == plt.rcParamsDefault["legend.frameon"]
    save_figure(fig, tmp_path / "style")
    assert legend.get_frame_on() is STYLE["legend.frameon"]


def test_figure_legend_wraps_long_labels_onto_rows():
    short = ["a", "b", "c", "d"]
    fig, axes = _figure_with_wide_legend(short)
    assert figure_legend(fig, *axes[0, 0].get_legend_handles_labels())._ncols == 4
    plt.close(fig)
    long = [f"a long label that takes most of a panel's width {i}" for i in range(4)]
    fig, axes = _figure_with_wide_legend(long)
    legend = figure_legend(fig, *axes[0, 0].get_legend_handles_labels())
    assert legend._ncols < 4
    fig.canvas.draw()
    assert legend.get_window_extent().width <= fig.bbox.width
    plt.close(fig)


def test_save_figure_refuses_an_unknown_format_and_writes_nothing(tmp_path):
    fig, _ = new_figure(1, 1)
    with pytest.raises(ValueError, match="formats must be a non-empty list"):
        save_figure(fig, tmp_path / "fig", formats=("png", "docx"))
    assert list(tmp_path.iterdir()) == []
    assert [p.suffix for p in save_figure(fig, tmp_path / "fig", formats="svg")] == [".svg"]
