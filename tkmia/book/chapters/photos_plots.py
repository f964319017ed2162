"""Figures of the chapter "Real photographs": test scenes with their labels, the victims' AP per
class, the main claim side by side, and the mechanism (where the spare true label was, against what
came of the attack). Each function draws a frame computed by :mod:`tkmia.book.chapters.photos` (or a
dataset) and returns the figure; it computes nothing but the layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from torch import Tensor

from tkmia.plots.experiments import method_label
from tkmia.plots.theme import PAGE_WIDTH_IN, method_palette, panel_grid, style

__all__ = ["plot_scenes", "plot_victims_ap", "plot_claim", "plot_mechanism"]

#: Colours of the outcomes of :data:`tkmia.book.chapters.photos.OUTCOMES` (imperceptible, moved, failed).
OUTCOME_COLORS = ("#029e73", "#de8f05", "#949494")


def _require(frame: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in frame]
    if missing:
        raise ValueError(f"{what} needs the columns {missing}; got {list(frame.columns)}")
    if frame.empty:
        raise ValueError(f"{what}: the frame is empty; nothing to draw")


def plot_scenes(
    images: Tensor,
    labels: Tensor,
    classes: Sequence[str],
    *,
    columns: int = 3,
    titles: Sequence[str] | None = None,
):
    """Scenes with the names of their labels under each.

    Args:
        images: (n, 3, H, W) in [0, 1].
        labels: (n, C) in {0, 1}; ``classes``: the C names.
        columns: panels per row (at most 3 keeps the labels readable).
        titles: one title per image (default "scene i").

    Returns:
        A figure of n panels.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (n, 3, H, W), got shape {tuple(images.shape)}")
    if labels.shape != (images.shape[0], len(classes)):
        raise ValueError(f"labels must be (n, C) = ({images.shape[0]}, {len(classes)}), "
                         f"got {tuple(labels.shape)}")
    if not 1 <= columns <= 3:
        raise ValueError(f"columns={columns!r}; expected 1, 2 or 3")
    n = images.shape[0]
    if n == 0:
        raise ValueError("images is empty; pass at least one scene")
    titles = list(titles) if titles is not None else [f"scene {i}" for i in range(n)]
    if len(titles) != n:
        raise ValueError(f"titles has {len(titles)} entries for {n} images")
    style()
    rows, cols, size = panel_grid(n, aspect=1.2, max_columns=columns)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:n]):
        ax.imshow(images[i].permute(1, 2, 0).clamp(0, 1).cpu().numpy(), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        ax.set_title(titles[i], fontsize=10)
        names = [classes[j] for j in labels[i].nonzero().flatten().tolist()]
        ax.set_xlabel(", ".join(names) if names else "(no label)", fontsize=10, wrap=True)
    fig.tight_layout()
    return fig


def plot_victims_ap(frame: pd.DataFrame):
    """AP per class of each victim, grouped bars (:func:`tkmia.book.chapters.photos.per_class_frame`)."""
    _require(frame, ("victim", "class", "AP"), "plot_victims_ap")
    style()
    classes = list(dict.fromkeys(frame["class"]))
    victims = list(dict.fromkeys(frame["victim"]))
    palette = method_palette(victims)
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH_IN, 3.8))
    width = 0.8 / len(victims)
    x = np.arange(len(classes))
    for i, victim in enumerate(victims):
        ap = frame[frame["victim"] == victim].set_index("class")["AP"].reindex(classes).to_numpy(float)
        ax.bar(x + (i - (len(victims) - 1) / 2) * width, np.nan_to_num(ap), width, label=victim,
               color=palette[victim])
    ax.set_xticks(x, classes, rotation=45, ha="right")
    ax.set(ylabel="test AP (0–1)", ylim=(0, 1.02), xlabel="")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=len(victims), fontsize=10)
    fig.tight_layout()
    return fig


_CLAIM_PANELS = (("success_rate", "success"), ("imperceptible_rate", "imperceptible success"),
                 ("delta_precision_at_k", "mean ΔP@k"), ("delta_map_at_k", "mean ΔmAP@k"),
                 ("delta_ndcg_at_k", "mean ΔNDCG@k"), ("pert_l2_255", "mean Pert (×255)"))


def plot_claim(claim: pd.DataFrame):
    """The main claim side by side (:func:`tkmia.book.chapters.photos.claim_table`): one panel per
    quantity, one group of bars per setting, one bar per method."""
    _require(claim, ("setting", "method", *(c for c, _ in _CLAIM_PANELS)), "plot_claim")
    style()
    settings = list(dict.fromkeys(claim["setting"]))
    methods = list(dict.fromkeys(claim["method"]))
    palette = method_palette(methods)
    rows, cols, size = panel_grid(len(_CLAIM_PANELS), aspect=0.8)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    width = 0.8 / len(methods)
    x = np.arange(len(settings))
    for ax, (column, title) in zip(axes.flat, _CLAIM_PANELS):
        for i, method in enumerate(methods):
            values = (claim[claim["method"] == method].set_index("setting")[column]
                      .reindex(settings).to_numpy(float))
            ax.bar(x + (i - (len(methods) - 1) / 2) * width, np.nan_to_num(values), width,
                   color=palette[method], label=method_label(method))
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(x, settings, rotation=30, ha="right", rotation_mode="anchor")
        ax.set_title(title, fontsize=10)
        if column.endswith("_rate"):
            ax.set_ylim(0, 1.02)
        elif column.startswith("delta_"):
            ax.set_ylim(min(-0.05, float(np.nanmin(claim[column])) * 1.1), 0.05)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncols=len(methods), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    return fig


def plot_mechanism(frame: pd.DataFrame, cap: int = 8):
    """Per setting, the attacked images by the position of their spare true label (places below
    the top-k, :func:`tkmia.book.chapters.photos.mechanism_frame`'s ``below``; ``cap`` and beyond in
    one bar), stacked by outcome: imperceptible success, success with a measure moved, failure."""
    from tkmia.book.chapters.photos import OUTCOMES

    _require(frame, ("setting", "below", "outcome"), "plot_mechanism")
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 2:
        raise ValueError(f"cap={cap!r}; expected an int >= 2")
    style()
    settings = list(dict.fromkeys(frame["setting"]))
    rows, cols, size = panel_grid(len(settings), aspect=0.9)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    for ax in axes.flat[len(settings):]:
        ax.axis("off")
    positions = list(range(1, cap + 1))
    for ax, setting in zip(axes.flat, settings):
        part = frame[(frame["setting"] == setting) & frame["below"].notna()]
        below = part["below"].clip(upper=cap).astype(int)
        bottom = np.zeros(len(positions))
        for outcome, color in zip(OUTCOMES, OUTCOME_COLORS):
            counts = np.array([int(((below == p) & (part["outcome"] == outcome)).sum()) for p in positions])
            ax.bar(positions, counts, bottom=bottom, color=color, label=outcome, width=0.8)
            bottom += counts
        ax.set_xticks(positions, [str(p) for p in positions[:-1]] + [f"≥{cap}"])
        ax.set(xlabel="", ylabel="attacked images")
        ax.set_title(f"{setting} (n = {len(part)})", fontsize=10)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncols=len(OUTCOMES), fontsize=10)
    fig.supxlabel("places the spare true label sat below the top-k (1: just below)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    return fig
