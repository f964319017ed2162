"""Figures of the book: each ``plot_*`` function returns a matplotlib Figure (save it with
:func:`save`), each ``*_frame`` function the tidy table it is drawn from.

:mod:`~tkmia.plots.measures` (the measures), :mod:`~tkmia.plots.theory` (the ATk, the relaxation
and an attack's path), :mod:`~tkmia.plots.experiments` (tables, distributions and the gallery), and
:mod:`~tkmia.plots.theme`, the one look they share (theme, method colours, page-width layout, table
formats). All their public names are available from ``tkmia.plots``. The figures of single chapters
live with those chapters, in :mod:`tkmia.book.chapters`.
"""

from __future__ import annotations

from pathlib import Path

from tkmia.plots.experiments import *  # noqa: F403
from tkmia.plots.measures import *  # noqa: F403
from tkmia.plots.theme import *  # noqa: F403
from tkmia.plots.theme import DPI
from tkmia.plots.theory import *  # noqa: F403


def save(fig, path: str | Path, formats: tuple[str, ...] = ("png", "svg"), dpi: int = DPI) -> list[Path]:
    """Save ``fig`` as ``path`` with each suffix of ``formats`` (e.g. PNG and SVG); returns the paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for fmt in formats:
        target = path.with_suffix(f".{fmt}")
        fig.savefig(target, dpi=dpi, bbox_inches="tight")
        out.append(target)
    return out
