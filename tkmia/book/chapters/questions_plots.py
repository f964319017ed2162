"""Figures of the book's part "Open questions" (questions 1, 5 and 6; tables from
:mod:`tkmia.book.chapters.questions`)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from tkmia.plots.experiments import method_label
from tkmia.plots.theme import PAGE_WIDTH_IN, method_palette, panel_grid, style

__all__ = ["plot_variant_bars", "plot_bound_gaps", "plot_monitors", "MONITOR_NAMES"]

#: How the book writes each statistic of :func:`tkmia.book.chapters.questions.monitor_table`.
MONITOR_NAMES = {
    "precision_at_k": "P@k", "map_at_k": "mAP@k", "ndcg_at_k": "NDCG@k",
    "average_precision": "AP (all)", "topk_margin": "margin k|k+1", "next_margin": "margin k+1|k+2",
    "kth_score": "k-th score", "positives": "# positive",
}


def _require(frame: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in frame]
    if missing:
        raise ValueError(f"{what} lacks the columns {missing}")


def plot_variant_bars(table: pd.DataFrame, panels: dict[str, str], *, colors: dict[str, str] | None = None
                      ) -> Figure:
    """One bar per variant of a :func:`tkmia.book.chapters.questions.comparison_table` (or any frame with a
    ``variant`` column) in each panel; ``panels`` maps a column to its axis label (with its unit).
    At most three panels a row (:func:`tkmia.plots.theme.panel_grid`)."""
    _require(table, ["variant", *panels], "table")
    style()
    rows, cols, size = panel_grid(len(panels), aspect=0.95)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    names = list(table["variant"])
    palette = colors or method_palette(names)
    for ax, (column, label) in zip(axes.flat, panels.items()):
        ax.bar(range(len(names)), table[column], color=[palette.get(n, "#949494") for n in names])
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right")
        ax.set_ylabel(label)
    for ax in list(axes.flat)[len(panels):]:
        fig.delaxes(ax)
    fig.tight_layout()
    return fig


def plot_bound_gaps(gaps: pd.DataFrame) -> Figure:
    """How loose each ATk bound is along the attack's path
    (:func:`tkmia.book.chapters.questions.bound_gaps`): per term, the median over samples of the gap
    ATk − exact (solid, with the band of the middle half of the samples) and of the exact value
    itself (dashed), against the iteration."""
    _require(gaps, ["iteration", "sample", "term", "gap", "exact"], "gaps")
    style()
    terms = sorted(gaps["term"].unique())
    rows, cols, size = panel_grid(len(terms), aspect=0.8)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0], size[1] + 0.4), squeeze=False)
    titles = {"a": r"push out: ATk$_{C-k}(a)$ vs $a_{[C-k]}$", "b": r"pull in: ATk$_k(b)$ vs $b_{[k]}$"}
    for ax, term in zip(axes.flat, terms):
        part = gaps[gaps["term"] == term].groupby("iteration")
        q = part["gap"].quantile([0.25, 0.5, 0.75]).unstack()
        exact = part["exact"].median()
        ax.fill_between(q.index, q[0.25], q[0.75], alpha=0.25, color="#0173b2", lw=0)
        ax.plot(q.index, q[0.5], color="#0173b2", label="gap ATk − exact (median)")
        ax.plot(exact.index, exact, color="#d55e00", ls="--", label="exact value (median)")
        ax.axhline(0, color="black", lw=0.8)
        ax.set(title=titles.get(term, term), xlabel="iteration", ylabel="logits")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=2, frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    return fig


def plot_monitors(table: pd.DataFrame) -> Figure:
    """Heatmap of :func:`tkmia.book.chapters.questions.monitor_table`: detection rate per method (rows) and
    watched statistic (columns), with each statistic's realised false-alarm rate on clean images
    as a last row."""
    _require(table, ["method", "statistic", "detection", "false_alarm"], "table")
    grid = table.pivot(index="method", columns="statistic", values="detection")
    order = [s for s in MONITOR_NAMES if s in grid.columns]
    order += [s for s in grid.columns if s not in MONITOR_NAMES]
    grid = grid[order]
    alarms = table.drop_duplicates("statistic").set_index("statistic")["false_alarm"].reindex(order)
    grid = grid.rename(index=method_label)
    grid.loc["clean (false alarms)"] = alarms.to_numpy()
    grid = grid.rename(columns=lambda s: MONITOR_NAMES.get(s, s))
    style()
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH_IN, 0.55 * len(grid) + 2.2))
    sns.heatmap(grid, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="rocket_r", ax=ax,
                cbar_kws={"label": "rate (fraction of images)"})
    ax.set(xlabel="statistic the victim watches", ylabel="")
    ax.set_xticklabels(ax.get_xticklabels(), rotation=35, ha="right", rotation_mode="anchor")
    ax.tick_params(axis="y", rotation=0)
    fig.tight_layout()
    return fig
