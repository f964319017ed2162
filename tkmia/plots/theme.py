"""One look for every figure and table of the book: the seaborn theme, one colour per method, a
page-width layout of at most three panels a row, and number formats that keep distinct values
distinct.

Every ``plot_*`` function of :mod:`tkmia.plots` calls :func:`style` first and lays its panels out with
:func:`panel_grid`, so that no text of a figure renders smaller than :data:`MIN_FONT_PX` pixels in the
book's content column (:data:`COLUMN_PX` pixels wide). :func:`smallest_font_px` measures it, the way
the book's browser check does: font size in pt × dpi / 72 × displayed width / natural width.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

__all__ = [
    "DPI",
    "PAGE_WIDTH_IN",
    "COLUMN_PX",
    "MIN_FONT_PX",
    "MAX_COLUMNS",
    "METHOD_COLORS",
    "style",
    "method_palette",
    "panel_grid",
    "figure_fonts",
    "natural_width_px",
    "smallest_font_px",
    "panels_per_row",
    "format_number",
    "format_signed",
    "format_percent",
    "distinct_numbers",
    "column_formats",
    "tidy_table",
]

#: Resolution of the book's figures (dots per inch): a figure of PAGE_WIDTH_IN inches is displayed at
#: its natural size in the content column.
DPI = 100
#: Width of a full-column figure, inches (7.2 in × 100 dpi = 720 px, the book's content column).
PAGE_WIDTH_IN = 7.2
#: The narrowest content column the book is read in, pixels (figures wider than it are scaled down).
COLUMN_PX = 700
#: No text of a figure may render smaller than this, pixels, at COLUMN_PX.
MIN_FONT_PX = 10.0
#: Panels per row, at most.
MAX_COLUMNS = 3

# seaborn's "colorblind" palette; each method of tkmia.attacks.METHODS has its own colour (written
# out so that a method keeps its colour whichever subset a figure shows).
_COLORBLIND = ["#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#949494"]
#: The colour of each method, by its code name and by the book's name (the same colour for both).
METHOD_COLORS = {
    "tkmia": _COLORBLIND[0], "TkMIA": _COLORBLIND[0],
    "tkml_ap_u": _COLORBLIND[1], "TkML-AP-U": _COLORBLIND[1],
    "ml_cw_u": _COLORBLIND[2], "ML-CW-U": _COLORBLIND[2],
    "kfool": _COLORBLIND[4], "kFool": _COLORBLIND[4],
    "tkmia_exact": _COLORBLIND[3], "TkMIA-exact": _COLORBLIND[3],
    "tkmia_margin": _COLORBLIND[5], "TkMIA-margin": _COLORBLIND[5],
}


def style() -> None:
    """Apply the book's figure style: seaborn's "notebook" context scaled to 0.9 (ticks ≈ 9.9 pt),
    white grid, the colour-blind palette, :data:`DPI` dots per inch. Idempotent; every ``plot_*``
    function calls it, so a notebook need not."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette=_COLORBLIND, font_scale=0.9,
                  rc={"figure.dpi": DPI, "savefig.dpi": DPI, "legend.frameon": False,
                      "axes.titleweight": "regular", "figure.constrained_layout.use": False})
    mpl.rcParams["svg.fonttype"] = "none"  # text stays text in SVG (searchable, measurable)


def method_palette(names: Iterable[str]) -> dict[str, str]:
    """The colour of each of ``names`` (code or book names of methods, as in :data:`METHOD_COLORS`);
    other names get the palette's colours that no method uses, in order."""
    names = list(dict.fromkeys(names))
    spare = iter(c for c in _COLORBLIND if c not in set(METHOD_COLORS.values()))
    out = {}
    for name in names:
        out[name] = METHOD_COLORS.get(name) or next(spare, "#333333")
    return out


def panel_grid(n: int, *, aspect: float = 0.85, max_columns: int = MAX_COLUMNS, width: float = PAGE_WIDTH_IN,
               extra_width: float = 0.0) -> tuple[int, int, tuple[float, float]]:
    """Rows, columns and figure size (inches) for ``n`` panels: at most ``max_columns`` a row, the
    figure :data:`PAGE_WIDTH_IN` wide (``extra_width`` inches of it kept for a side legend), each
    panel ``aspect`` times as high as wide.

    Example:
        >>> panel_grid(4)[:2]
        (2, 2)
    """
    if n < 1:
        raise ValueError(f"n must be >= 1 panels, got {n}")
    cols = min(n, max_columns)
    if n == 4 and max_columns >= 2:
        cols = 2
    rows = math.ceil(n / cols)
    panel_w = (width - extra_width) / cols
    panel_w = min(panel_w, 3.6)  # a lone panel need not fill the page
    height = rows * panel_w * aspect + 0.3
    return rows, cols, (panel_w * cols + extra_width, height)


def figure_fonts(fig) -> list[float]:
    """Font sizes (pt) of every visible, non-empty text of ``fig`` (titles, labels, ticks, legends,
    annotations)."""
    fig.canvas.draw()
    sizes = []
    for text in fig.findobj(lambda a: hasattr(a, "get_fontsize") and hasattr(a, "get_text")):
        if text.get_visible() and str(text.get_text()).strip() and _drawn(text):
            sizes.append(float(text.get_fontsize()))
    return sizes


def _drawn(text) -> bool:
    # tick labels outside the axis range are not drawn; neither are those of hidden axes
    axes = text.axes
    if axes is not None and not axes.get_visible():
        return False
    parent = getattr(text, "figure", None)
    return parent is not None


def natural_width_px(fig) -> float:
    """Width (pixels) of ``fig`` as Jupyter saves it (``bbox_inches="tight"`` at ``fig.dpi``)."""
    fig.canvas.draw()
    bbox = fig.get_tightbbox(fig.canvas.get_renderer())
    return float(bbox.width * fig.dpi)


def smallest_font_px(fig, column_px: float = COLUMN_PX) -> float:
    """The smallest text of ``fig`` in pixels once displayed in a column ``column_px`` wide:
    size in pt × dpi / 72 × min(1, column_px / natural width)."""
    sizes = figure_fonts(fig)
    if not sizes:
        raise ValueError("the figure has no visible text")
    scale = min(1.0, column_px / natural_width_px(fig))
    return min(sizes) * fig.dpi / 72 * scale


def panels_per_row(fig) -> int:
    """The largest number of data panels (axes, colour bars excepted) that share a row of ``fig``."""
    rows: dict[float, int] = {}
    for ax in fig.axes:
        if not ax.get_visible() or not ax.axison or ax.get_label() == "<colorbar>":
            continue
        top = round(ax.get_position().y1, 2)
        rows[top] = rows.get(top, 0) + 1
    return max(rows.values(), default=0)


# ---------------------------------------------------------------------------------- tables
def format_number(value, digits: int = 3) -> str:
    """One table cell as the book prints it: integers (and integral floats) without decimals, other
    numbers to ``digits`` significant digits (``%.3g``: 2e-4 and 5e-4 stay distinct), missing
    values as "–", booleans as yes / no, sequences and mappings as short comma lists.

    Example:
        >>> [format_number(v) for v in (465.0, 0.00021, 3.14159, float("nan"), True, {"lr": 0.001})]
        ['465', '0.00021', '3.14', '–', 'yes', 'lr = 0.001']
    """
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} = {format_number(v, digits)}" for k, v in value.items()) or "–"
    if isinstance(value, (list, tuple, set, np.ndarray)):
        items = sorted(value) if isinstance(value, set) else list(value)
        return ", ".join(format_number(v, digits) for v in items) or "–"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):d}"
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return "–" if np.isnan(value) else ("∞" if value > 0 else "−∞")
        if float(value).is_integer() and abs(value) < 1e15:
            return f"{int(value):d}"
        return f"{value:.{digits}g}"
    return str(value)


def format_signed(value, digits: int = 3) -> str:
    """A change as the book prints it: "0" for no change, otherwise a sign (+ or −) and
    :func:`format_number` of its size (``%.3g``, so that −0.0004 does not read as −0.000).

    Example:
        >>> [format_signed(v) for v in (0.0, -0.00042, 0.125, float("nan"))]
        ['0', '−0.00042', '+0.125', '–']
    """
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return "–"
    value = float(value)
    if value == 0:
        return "0"
    return ("+" if value > 0 else "−") + format_number(abs(value), digits)


def format_percent(value, decimals: int = 1) -> str:
    """A fraction in [0, 1] as a percentage with ``decimals`` decimals, with more decimals where
    rounding would make a value that is not 0 or 1 read as 0% or 100%.

    Example:
        >>> [format_percent(v) for v in (0.4567, 0.99996, 1.0, float("nan"))]
        ['45.7%', '99.996%', '100%', '–']
    """
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return "–"
    value = float(value)
    if value in (0.0, 1.0):
        return f"{value:.0%}"
    for d in range(decimals, decimals + 8):
        text = f"{value:.{d}%}"
        if text not in (f"{0:.{d}%}", f"{1:.{d}%}"):
            return text
    return text


_FORMATS = {"plain": format_number, "signed": format_signed, "percent": format_percent}


def distinct_numbers(values, kind: str = "plain", digits: int | None = None) -> list[str]:
    """``values`` formatted together for prose, with the fewest digits (at least ``digits``:
    3 significant for "plain" and "signed", 1 decimal for "percent") that keep distinct values
    distinct, so that a sentence comparing two of them never shows them equal when they are not.

    Args:
        values: numbers (NaN reads "–").
        kind: "plain" (:func:`format_number`), "signed" (:func:`format_signed`, changes) or
            "percent" (:func:`format_percent`, fractions).
    Example:
        >>> distinct_numbers([0.01231, 0.01234])
        ['0.01231', '0.01234']
    """
    if kind not in _FORMATS:
        raise ValueError(f"kind must be one of {sorted(_FORMATS)}, got {kind!r}")
    fmt = _FORMATS[kind]
    values = [float(v) for v in values]
    start = digits if digits is not None else (1 if kind == "percent" else 3)
    finite = sorted({v for v in values if np.isfinite(v)})
    for d in range(start, start + 10):
        texts = [fmt(v, d) for v in values]
        if len({fmt(v, d) for v in finite}) == len(finite):
            return texts
    return texts


def column_formats(frame: pd.DataFrame, digits: int = 3, percent: Iterable[str] = (),
                   signed: Iterable[str] = ()) -> dict:
    """A formatter per column of ``frame`` for :meth:`pandas.io.formats.style.Styler.format`: counts
    as integers, other numbers with ``digits`` significant digits, ``percent`` columns as
    percentages (one decimal), ``signed`` columns with a sign."""
    percent, signed = set(percent), set(signed)
    out = {}
    for column in frame.columns:
        if column in percent:
            out[column] = lambda v: "–" if pd.isna(v) else f"{v:.1%}"
        elif column in signed:
            out[column] = lambda v, d=digits: "–" if pd.isna(v) else (
                "0" if v == 0 else ("+" if v > 0 else "−") + format_number(abs(float(v)), d))
        else:
            out[column] = lambda v, d=digits: format_number(v, d)
    return out


def tidy_table(frame: pd.DataFrame, caption: str, *, digits: int = 3, percent: Iterable[str] = (),
               signed: Iterable[str] = (), names: Mapping[str, str] | None = None, index: bool = False):
    """``frame`` as the book shows a table: a caption saying what the columns are, numbers formatted
    by :func:`column_formats` (no 17-digit floats, no ``465.0``, no ``NaN``), dicts and lists as
    short text, columns renamed by ``names``, and a box that scrolls sideways when the table is
    wider than the page. Returns a pandas Styler (the last expression of a notebook cell).

    Example:
        >>> tidy_table(pd.DataFrame({"lr": [2e-4, 5e-4]}), "learning rates").to_html().count("0.0002")
        1
    """
    if not caption or not str(caption).strip():
        raise ValueError("caption must say what the table's columns are, got an empty caption")
    names = dict(names or {})
    shown = frame.rename(columns=names)
    rename = lambda cols: {names.get(c, c) for c in cols}  # noqa: E731
    formats = column_formats(shown, digits, percent=rename(percent), signed=rename(signed))
    styler = shown.style.format(formats)
    if index:
        styler = styler.format_index(lambda v: format_number(v, digits))
    else:
        styler = styler.hide(axis="index")
    return (styler.set_caption(caption)
            .set_table_styles([
                {"selector": "", "props": "display: block; overflow-x: auto; max-width: 100%;"},
                {"selector": "caption", "props": "caption-side: top; text-align: left; padding: 0.3em 0;"},
                {"selector": "td, th", "props": "white-space: nowrap; padding: 0.2em 0.6em;"},
            ], overwrite=False))
