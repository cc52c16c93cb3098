"""Pages of the documentation generated at build time from the repository (``docs/_generated/``).

- ``notebooks/``: the teaching notebooks' jupytext sources, executed by myst-nb.
- ``gallery/``: ``figures/README.md`` (written by ``coverage-sim reproduce`` from ``figures/*.json``:
  the summary table of verdicts and one entry per figure) with its pictures.
- ``objectives.md``: the objective catalogue, one entry per ``coverage_sim.OBJECTIVES`` name with its
  family, paper, parameters and the convention its docstring states.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path


def _write_if_changed(path: Path, text: str) -> None:
    # Sphinx rebuilds a page whose file changed: leave unchanged pages alone.
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _copy_if_changed(src: Path, dst: Path) -> None:
    if not dst.exists() or dst.read_bytes() != src.read_bytes():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


def notebooks(root: Path, out: Path) -> list[str]:
    names = []
    for src in sorted((root / "notebooks").glob("[0-9]*.py")):
        # Links into the guide are relative to notebooks/ in the repository (they work on a code
        # host and in Jupyter); here the page sits in docs/_generated/notebooks/.
        text = src.read_text().replace("](../docs/", "](../../")
        _write_if_changed(out / "notebooks" / src.name, text)
        names.append(src.stem)
    for stale in (out / "notebooks").glob("*.py"):
        if stale.stem not in names:
            stale.unlink()
    return names


def gallery(root: Path, out: Path) -> None:
    figures = root / "figures"
    target = out / "gallery"
    text = (figures / "README.md").read_text()
    # The index links its own headings (GitHub anchors); in the docs it is one page too.
    header = ("(gallery)=\n\n")
    _write_if_changed(target / "index.md", header + text)
    for png in figures.glob("*.png"):
        _copy_if_changed(png, target / png.name)


def objectives(out: Path) -> None:
    import coverage_sim as cs

    lines = ["(objective-catalogue)=", "# The objective catalogue", "",
             "Generated from `coverage_sim.OBJECTIVES` (`coverage-sim objectives` lists the same "
             "names). Each entry: the family, the paper, the parameters with their defaults, and the "
             "convention the objective follows, as its registry entry states it. Notation: "
             "{ref}`conventions`.", ""]
    aliases = {}
    for name, spec in cs.OBJECTIVES.items():
        match = re.match(r"Alias of '(\w+)'", spec.convention)
        if match:
            aliases.setdefault(match.group(1), []).append(name)
    for family in ("offline pairwise", "offline pointwise", "online", "hybrid"):
        lines += [f"## {family[0].upper() + family[1:]}", ""]
        for name, spec in cs.OBJECTIVES.items():
            if spec.family != family or re.match(r"Alias of '", spec.convention):
                continue
            title = f"`{name}`" + "".join(f" = `{a}`" for a in aliases.get(name, []))
            paper = spec.paper
            if spec.arxiv:
                paper += f" ([arXiv:{spec.arxiv}](https://arxiv.org/abs/{spec.arxiv}))"
            params = ", ".join(f"`{k}` = {v!r}" for k, v in spec.defaults.items()) or "none"
            lines += [f"(objective-{name.replace('_', '-')})=", f"### {title}", "",
                      f"*{paper}*", "", f"Parameters (defaults): {params}.", "",
                      "Needs offline data." if spec.needs_data else "Needs no offline data.", "",
                      _plain(spec.convention), ""]
    _write_if_changed(out / "objectives.md", "\n".join(lines))


def _plain(text: str) -> str:
    """A registry convention string as Markdown: keep it verbatim, but escape what Markdown
    would read as emphasis (``*``, ``_`` between words) or as a raw HTML tag."""
    text = text.replace("\\", "\\\\").replace("*", "\\*").replace("<", "&lt;")
    return re.sub(r"(?<=\w)_(?=\w)", r"\\_", text)


def generate_all(root: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    notebooks(root, out)
    gallery(root, out)
    objectives(out)
