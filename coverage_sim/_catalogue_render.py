"""Regenerate :mod:`coverage_sim.catalogue` from the live registries.

    python -m coverage_sim._catalogue_render            # rewrite coverage_sim/catalogue.py

Run it after registering or renaming an experiment, objective or instance (tests/test_catalogue.py
fails until the catalogue matches). Expected seconds per seed are kept from the current catalogue
(they are measurements, not derived from the registries); a new experiment gets the default.
"""

from __future__ import annotations

import sys
from pathlib import Path

#: Expected seconds per seed of a new experiment until it is measured.
DEFAULT_SECONDS = 30.0


def rows_from_registries():
    """``(experiments, objectives, instances)`` as the catalogue stores them."""
    from coverage_sim import catalogue
    from coverage_sim.experiments import EXPERIMENTS
    from coverage_sim.instances import INSTANCES
    from coverage_sim.objectives import OBJECTIVES

    seconds = {e.id: (e.seconds, e.quick_seconds) for e in catalogue.EXPERIMENTS}
    experiments = [(e.id, e.figure, e.arxiv, e.title, e.run.__module__,
                    *seconds.get(e.id, (DEFAULT_SECONDS, DEFAULT_SECONDS)))
                   for e in EXPERIMENTS.values()]
    objectives = [(name, spec.family, spec.arxiv, spec.paper) for name, spec in OBJECTIVES.items()]
    instances = [(name, summary) for name, (_factory, summary) in INSTANCES.items()]
    return experiments, objectives, instances


def _pieces(value, room: int) -> list[str]:
    """``repr(value)``, or for a long string, adjacent literals of at most ``room`` characters
    split at spaces (Python joins them back)."""
    text = repr(value)
    if not isinstance(value, str) or len(text) <= room:
        return [text]
    words, pieces, current = value.split(" "), [], ""
    for word in words:
        candidate = word if not current else current + " " + word
        if current and len(repr(candidate)) > room:
            pieces.append(repr(current + " "))
            current = word
        else:
            current = candidate
    pieces.append(repr(current))
    return pieces


def _entry(kind: str, row) -> list[str]:
    """``Kind(field, ...),`` with one field per line, long strings split, within 100 columns."""
    lines = [f"    {kind}("]
    for i, value in enumerate(row):
        end = "," if i + 1 < len(row) else "),"
        pieces = _pieces(value, 99 - 8 - len(end))
        for j, piece in enumerate(pieces):
            lines.append("        " + piece + (end if j + 1 == len(pieces) else ""))
    return lines


def render() -> str:
    """The source of ``coverage_sim/catalogue.py``."""
    from coverage_sim import catalogue

    experiments, objectives, instances = rows_from_registries()
    head = Path(catalogue.__file__).read_text().split("# --- generated below", 1)[0]
    marker = "# --- generated below by `python -m coverage_sim._catalogue_render`; do not edit"
    lines = [head + marker, "", "EXPERIMENTS = ("]
    lines += [ln for row in experiments for ln in _entry("ExperimentEntry", row)]
    lines += [")", "", "OBJECTIVES = ("]
    lines += [ln for row in objectives for ln in _entry("ObjectiveEntry", row)]
    lines += [")", "", "INSTANCES = ("]
    lines += [ln for row in instances for ln in _entry("InstanceEntry", row)]
    lines += [")", ""]
    return "\n".join(lines)


def main() -> int:
    from coverage_sim import catalogue

    Path(catalogue.__file__).write_text(render())
    print(f"wrote {catalogue.__file__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
