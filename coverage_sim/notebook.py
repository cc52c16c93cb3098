"""Knobs for the teaching notebooks: sliders in a live kernel, a plain parameter cell headless.

Each notebook sets its knob in a cell tagged ``parameters`` (papermill's convention, which the tests
and the documentation build use to run it with other values). :func:`explore` then draws the
notebook's figure for that value; when a person runs the notebook in Jupyter with ipywidgets
installed, the same call shows a slider (or a drop-down) per knob, starting at the parameter cell's
value, and redraws the figure as it moves. Executed headless (tests, the docs build, a script) it
is one plain call, so the outputs and assertions are those of the parameter cell.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Sequence

__all__ = ["explore", "interactive_session"]


def interactive_session() -> bool:
    """Whether sliders can be shown: a Jupyter kernel with ipywidgets installed, and not a
    headless run (``COVERAGE_SIM_HEADLESS=1``, which the tests and the docs build set).

    Examples:
      >>> interactive_session()      # a doctest runs without a kernel
      False
    """
    if os.environ.get("COVERAGE_SIM_HEADLESS", "0") not in ("", "0"):
        return False
    if "ipykernel" not in sys.modules:
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _control(name: str, value: Any, choices: Sequence):
    import ipywidgets as widgets

    options = list(choices)
    if value not in options:    # a value set in the parameter cell stays selectable
        options.append(value)
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in options):
            options.sort()
    style = {"description_width": "initial"}
    layout = widgets.Layout(width="28em")
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in options):
        return widgets.SelectionSlider(options=options, value=value, description=name,
                                       continuous_update=False, style=style, layout=layout)
    return widgets.Dropdown(options=options, value=value, description=name, style=style)


def explore(show: Callable[..., Any], **knobs: tuple[Any, Sequence]) -> None:
    """Call ``show(**values)`` once with each knob's current value; in a live kernel, as widgets.

    Args:
      show: draws (and may check) the notebook's figure for the given knob values; called with
        one keyword argument per knob.
      **knobs: ``name=(value, choices)``: the value from the parameter cell and the values the
        slider (numbers) or drop-down (anything else) offers. ``value`` need not be among
        ``choices``: it is added.

    Returns ``None`` (so that a cell ending in the call does not display anything twice); ``show``
    displays its own output (a figure, a printed table).

    Examples:
      >>> explore(lambda beta: print(f"beta = {beta}"), beta=(0.5, [0.1, 1.0]))
      beta = 0.5
    """
    if not knobs:
        raise ValueError("explore needs at least one knob, e.g. beta=(beta, [0.1, 1.0])")
    for name, spec in knobs.items():
        if not (isinstance(spec, tuple) and len(spec) == 2):
            raise ValueError(f"knob {name!r} must be (value, choices), got {spec!r}")
    values = {name: value for name, (value, _) in knobs.items()}
    if not interactive_session():
        show(**values)
        return
    from ipywidgets import interact

    interact(show, **{name: _control(name, value, choices)
                      for name, (value, choices) in knobs.items()})
