"""A grid of dataset samples with their label names, for the book and ``tkmia data show``."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from matplotlib.figure import Figure
from torch.utils.data import Dataset
from tkmia._checks import int_in


def show_samples(
    dataset: Dataset,
    n: int = 16,
    *,
    indices: Sequence[int] | None = None,
    ncols: int | None = None,
    scores: torch.Tensor | None = None,
    panel_size: float = 1.8,
) -> Figure:
    """Draw the first ``n`` samples (or ``indices``) with their label names as titles.

    Args:
        dataset: a dataset of (image (3, H, W) in [0, 1], labels (C,)) with ``classes``.
        n: number of samples (ignored when ``indices`` is given).
        indices: which samples to show.
        ncols: columns of the grid (default about sqrt(n)).
        scores: optional (N, C) scores; then the titles list the labels by decreasing score.
        panel_size: inches per panel.

    Returns:
        A matplotlib Figure (not shown; ``fig.savefig(path)`` writes it).

    Example:
        >>> fig = show_samples(load_dataset("multishapes", "test"), n=8)
    """
    if indices is None:
        n = int_in(n, "n", 1)
        indices = list(range(min(n, len(dataset))))
    indices = list(indices)
    if not indices:
        raise ValueError("indices is empty; nothing to show")
    classes = getattr(dataset, "classes", None)
    count = len(indices)
    ncols = ncols or math.ceil(math.sqrt(count))
    nrows = math.ceil(count / ncols)
    fig = Figure(figsize=(panel_size * ncols, panel_size * nrows * 1.12), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, indices):
        image, labels = dataset[index]
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
        present = torch.nonzero(labels > 0.5).flatten().tolist()
        if scores is not None:
            present.sort(key=lambda j: -float(scores[index, j]))
        names = [classes[j] if classes else str(j) for j in present]
        lines = [", ".join(names[i : i + 3]) for i in range(0, len(names), 3)]
        ax.set_title("\n".join(lines), fontsize=7)
    return fig
