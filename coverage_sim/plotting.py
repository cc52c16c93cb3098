"""Shared figure style and small plotting helpers for the experiments.

Every helper takes a tidy table and an ``Axes`` and draws on it; :func:`new_figure` applies the one
shared style, :func:`figure_legend` puts a legend below the panels that fits the figure's width, and
:func:`save_figure` writes PNG and PDF (or the formats given) atomically, with every artist inside
the image.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

# Figures are files: never open a window (CI and headless runs). Inside a Jupyter kernel the
# inline backend is kept, so that a notebook that imports an experiment still shows its plots.
if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from matplotlib.backend_bases import FigureCanvasBase  # noqa: E402

from coverage_sim._files import atomic_path  # noqa: E402

__all__ = ["STYLE", "FORMATS", "new_figure", "figure_legend", "check_formats", "save_figure",
           "mean_band", "metric_frame", "effect_axes"]

#: The image formats :func:`save_figure` writes by default.
FORMATS = ("png", "pdf")

#: One style for every figure: readable at README size (about 700 px wide).
STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.6,
}


def new_figure(ncols: int = 1, nrows: int = 1, *, width: float = 3.4, height: float = 2.8,
               **kwargs):
    """A figure with ``nrows x ncols`` axes in the shared style; returns ``(fig, axes)``."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows),
                                 squeeze=False, layout="constrained", **kwargs)
    for ax in axes.flat:
        ax.set_prop_cycle(plt.rcParams["axes.prop_cycle"])
    return fig, axes


def figure_legend(fig, handles, labels, *, ncol: int | None = None, **kwargs):
    """A legend below the panels (``loc="outside lower center"``) in the shared style.

    ``ncol=None`` picks the most columns (at most 4) whose widest row still fits the figure's
    width, so that long labels wrap onto more rows instead of running off the image.
    """
    if ncol is None:
        ncol = _fitting_columns(fig, labels, kwargs.get("fontsize", STYLE["legend.fontsize"]))
    with plt.rc_context(STYLE):
        return fig.legend(handles, labels, loc="outside lower center", ncol=ncol, **kwargs)


def _fitting_columns(fig, labels, fontsize) -> int:
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    font = FontProperties(size=fontsize)
    # A legend entry: handle (2 em) + gap (0.8 em) + text; columns are 2 em apart.
    widths = [TextPath((0, 0), str(label), prop=font).get_extents().width / 72.0
              + 4.8 * fontsize / 72.0 for label in labels]
    available = fig.get_figwidth() * 0.95
    for ncol in range(min(4, max(len(labels), 1)), 1, -1):
        rows = [widths[i:i + ncol] for i in range(0, len(widths), ncol)]
        columns = [max(row[c] for row in rows if c < len(row)) for c in range(ncol)]
        if sum(columns) <= available:
            return ncol
    return 1


def check_formats(formats) -> tuple[str, ...]:
    """``formats`` (one format or several) as a tuple of image formats matplotlib writes
    (``"png"``, ``"pdf"``, ``"svg"``, ...); raises ValueError naming the parameter when it is empty
    or names an unknown format."""
    supported = FigureCanvasBase.get_supported_filetypes()
    out = (formats,) if isinstance(formats, str) else tuple(formats)
    bad = [f for f in out if f not in supported]
    if not out or bad:
        raise ValueError(f"formats must be a non-empty list of image formats matplotlib writes "
                         f"({', '.join(sorted(supported))}), got {list(out)!r}")
    return out


def save_figure(fig, stem: str | Path, formats=FORMATS) -> list[Path]:
    """Write ``stem.<format>`` for each of ``formats`` (:func:`check_formats`; PNG and PDF by
    default) atomically (temporary file + rename); returns the paths.

    The saved image is cropped to the artists (``bbox_inches="tight"``), so a legend or label that
    reaches past the figure's edge is enlarged into the image rather than cut off, and legends
    added to the figure after :func:`new_figure` follow the shared style (no frame).
    """
    formats = check_formats(formats)
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    for legend in fig.legends:
        legend.set_frame_on(STYLE["legend.frameon"])
    paths = []
    with plt.rc_context(STYLE):
        for fmt in formats:
            path = stem.with_suffix(f".{fmt}")
            with atomic_path(path, suffix=f".{fmt}") as tmp:
                # No creation date: the same figure gives the same bytes (clean diffs in git).
                metadata = {"CreationDate": None} if fmt == "pdf" else None
                fig.savefig(tmp, format=fmt, metadata=metadata, bbox_inches="tight",
                            pad_inches=0.04)
            paths.append(path)
    plt.close(fig)
    return paths


def metric_frame(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows of one metric, with ``value`` renamed to the metric's name."""
    rows = table[table["metric"] == metric]
    if rows.empty:
        raise ValueError(f"metric {metric!r} is not in the table; it has "
                         f"{sorted(table['metric'].unique())}")
    return rows.rename(columns={"value": metric}).drop(columns="metric")


def mean_band(ax, frame: pd.DataFrame, x: str, y: str, label=None, color=None, band=True,
              **line_kwargs):
    """Plot the mean of ``y`` over seeds against ``x``, with a ±1 standard-error band."""
    grouped = frame.groupby(x)[y]
    mean = grouped.mean()
    line, = ax.plot(mean.index, mean.values, label=label, color=color, **line_kwargs)
    count = grouped.count()
    if band and (count > 1).any():
        sem = grouped.std(ddof=1) / np.sqrt(count)
        ax.fill_between(mean.index, mean - sem, mean + sem, color=line.get_color(), alpha=0.2,
                        linewidth=0)
    return line


def effect_axes(ax, effects, xlabel: str, labels=None):
    """Paired effects, one row each: every unit's value (dots) and the mean with its 95% CI (bar).

    ``effects`` is a list of objects with ``values``, ``mean``, ``ci`` and ``name`` (a
    :class:`~coverage_sim.experiments.verdict.Effect`); ``labels`` (default the names) label the
    rows. The zero line marks no effect.
    """
    for i, effect in enumerate(effects):
        values = np.asarray(effect.values)
        jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
        ax.plot(values, i + jitter, "o", ms=3, color="0.55", alpha=0.8)
        lo, hi = effect.ci
        if np.isfinite(lo):
            ax.plot([lo, hi], [i, i], color="k", linewidth=2)
        ax.plot(effect.mean, i, "D", ms=5, color="k")
    ax.axvline(0.0, color="C3", linewidth=0.9)
    ax.set_yticks(range(len(effects)))
    ax.set_yticklabels(labels if labels is not None else [e.name for e in effects], fontsize=7.5)
    ax.set_ylim(len(effects) - 0.5, -0.5)
    ax.set_xlabel(xlabel)
