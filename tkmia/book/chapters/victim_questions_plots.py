"""Figures of the open questions about victims and data (:mod:`tkmia.book.chapters.victim_questions`):
transfer matrices, label cardinality, an attacker without ground truth, victim quality. Each
function draws a frame computed by :mod:`tkmia.book.chapters.victim_questions` and returns the figure; it
computes nothing but the layout.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tkmia.plots.experiments import method_label
from tkmia.plots.theme import METHOD_COLORS, format_number, panel_grid, style

__all__ = ["plot_transfer", "plot_cardinality", "plot_no_truth", "plot_quality"]


def _require(frame: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in frame]
    if missing:
        raise ValueError(f"{what} needs the columns {missing}; got {list(frame.columns)}")


def plot_transfer(frame: pd.DataFrame, names: dict[str, str] | None = None):
    """Source × target matrices of success rate and mean ΔP@k, one row of panels per method.

    Args:
        frame: :func:`tkmia.book.chapters.victim_questions.transfer_frame`.
        names: display names of the victims.
    """
    _require(frame, ("method", "source", "target", "success_rate", "delta_precision_at_k"), "plot_transfer")
    style()
    names = dict(names or {})
    methods = list(dict.fromkeys(frame["method"]))
    victims = list(dict.fromkeys(frame["source"]))
    panels = [(m, col) for m in methods for col in ("success_rate", "delta_precision_at_k")]
    rows, cols, size = panel_grid(len(panels), aspect=0.9, max_columns=2)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    for ax, (method, column) in zip(axes.flat, panels):
        part = frame[frame["method"] == method].pivot(index="source", columns="target", values=column)
        part = part.reindex(index=victims, columns=victims)
        values = part.to_numpy(dtype=float)
        if column == "success_rate":
            image = ax.imshow(values, vmin=0, vmax=1, cmap="Blues")
            title = f"{method_label(method)}: success"
        else:
            image = ax.imshow(values, vmin=-1, vmax=1, cmap="RdBu")
            title = f"{method_label(method)}: mean ΔP@k"
        for (i, j), v in np.ndenumerate(values):
            text = "–" if np.isnan(v) else (f"{v:.0%}" if column == "success_rate" else format_number(v, 2))
            dark = not np.isnan(v) and (v > 0.6 if column == "success_rate" else abs(v) > 0.6)
            ax.text(j, i, text, ha="center", va="center", fontsize=10, color="white" if dark else "black")
        labels = [names.get(v, v) for v in victims]
        ax.set_xticks(range(len(victims)), labels, rotation=20)
        ax.set_yticks(range(len(victims)), labels)
        ax.set_xlabel("target (scored)")
        ax.set_ylabel("source (attacked)")
        ax.set_title(title)
        ax.grid(False)
        del image
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def plot_cardinality(frame: pd.DataFrame):
    """Eligible share, success and imperceptible success, and Pert against the room |Y| − k,
    one line per dataset variant (mean labels per image).

    Args:
        frame: the concatenated :func:`tkmia.book.chapters.victim_questions.cardinality_frame` of the
            variants.
    """
    _require(frame, ("mean_labels", "room", "eligible", "success_rate", "imperceptible_rate", "pert_l2_255"),
             "plot_cardinality")
    style()
    rows, cols, size = panel_grid(3, aspect=1.0)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    ax_e, ax_s, ax_p = axes.flat
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (m, part) in enumerate(frame.groupby("mean_labels")):
        colour = colours[i % len(colours)]
        ax_e.plot(part["room"], part["eligible"], "o-", color=colour, label=f"mean |Y| = {m}")
        ax_s.plot(part["room"], part["success_rate"], "o-", color=colour)
        ax_s.plot(part["room"], part["imperceptible_rate"], "s--", color=colour, alpha=0.8)
        ax_p.plot(part["room"], part["pert_l2_255"], "o-", color=colour)
    ax_e.set_title("eligible share")
    ax_s.set_title("success (—), imperceptible (--)")
    ax_p.set_title("Pert ×255 (successful)")
    for ax in (ax_e, ax_s, ax_p):
        ax.set_xlabel("room |Y| − k")
    ax_e.set_ylim(-0.03, 1.03)
    ax_s.set_ylim(-0.03, 1.03)
    fig.legend(*ax_e.get_legend_handles_labels(), loc="upper center", ncol=3, bbox_to_anchor=(0.5, 1.02))
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return fig


def plot_quality(frame: pd.DataFrame):
    """Against the victim's test mAP: TkMIA's success and imperceptible success, its mean ΔP@k,
    and the share of attacked samples with a spare true label ready at rank k+1 … k+|S|.

    Args:
        frame: the summary of :func:`tkmia.book.chapters.victim_questions.quality_frame`.
    """
    _require(frame, ("map", "success_rate", "imperceptible_rate", "delta_precision_at_k", "ready"),
             "plot_quality")
    style()
    data = frame.sort_values("map")
    rows, cols, size = panel_grid(3, aspect=1.0)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    ax_s, ax_d, ax_r = axes.flat
    colour = METHOD_COLORS["tkmia"]
    ax_s.plot(data["map"], data["success_rate"], "o-", color=colour, label="success")
    ax_s.plot(data["map"], data["imperceptible_rate"], "s--", color=colour, label="imperceptible")
    ax_s.set_title("TkMIA success")
    ax_s.set_ylim(-0.03, 1.03)

    ax_d.plot(data["map"], data["delta_precision_at_k"], "o-", color=colour)
    ax_d.axhline(0, color="0.4", lw=0.8)
    ax_d.set_title("mean ΔP@k")
    ax_r.plot(data["map"], data["ready"], "o-", color="0.3")
    ax_r.set_title("spare label ready")
    ax_r.set_ylim(-0.03, 1.03)
    for ax in axes.flat:
        ax.set_xlabel("victim mAP (test)")
    # above the panels: the two success curves fill the first panel from top to bottom
    fig.legend(*ax_s.get_legend_handles_labels(), loc="upper center", ncol=2, bbox_to_anchor=(0.5, 1.02))
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return fig


#: The bars of :func:`plot_no_truth`: summary column -> legend label.
NO_TRUTH_BARS = {
    "believed_success": "success as the attacker sees it",
    "success_rate": "true success (truly eligible)",
    "imperceptible_rate": "true imperceptible (truly eligible)",
    "imperceptible_yield": "true imperceptible (all attacked)",
}


def plot_no_truth(frame: pd.DataFrame):
    """Per attacker's labels (true labels, top-m, threshold): the success the attacker believes,
    the true success and imperceptible success over the truly eligible images, and the true
    imperceptible successes over all attacked images, as grouped bars (fractions).

    Args:
        frame: the summary of :func:`tkmia.book.chapters.victim_questions.no_truth_frame`; a rule that
            attacked nothing shows no bars.
    """
    _require(frame, ("attacker_labels", *NO_TRUTH_BARS), "plot_no_truth")
    style()
    rules = list(frame["attacker_labels"])
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(rules) + 2.5), 3.8))
    width = 0.8 / len(NO_TRUTH_BARS)
    shades = ("0.75", METHOD_COLORS["tkmia"], "#f4a261", "#2a9d8f")
    x = np.arange(len(rules))
    for i, (column, label) in enumerate(NO_TRUTH_BARS.items()):
        values = frame[column].to_numpy(dtype=float)
        ax.bar(x + (i - (len(NO_TRUTH_BARS) - 1) / 2) * width, np.nan_to_num(values), width,
               color=shades[i], label=label)
    ax.set_xticks(x, rules)
    ax.set_xlabel("the attacker's labels")
    ax.set_ylabel("fraction")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="upper center", ncol=2, bbox_to_anchor=(0.5, -0.22))
    fig.tight_layout()
    return fig
