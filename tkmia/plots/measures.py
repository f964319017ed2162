"""Figures of the book, and the small tables they are drawn from.

Each ``*_frame`` function computes a tidy :class:`pandas.DataFrame` from tkmia's measures; each
``plot_*`` function draws one with seaborn and returns the matplotlib figure, so the notebooks stay
thin: one call computes, one call draws.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import Tensor

from tkmia._checks import check_k, check_labels, check_scores
from tkmia.metrics import MEASURES, measures, ranking

__all__ = ["MEASURE_NAMES", "REPLACEMENTS", "swap_at_each_rank", "swap_frame", "plot_swap_frame"]

#: How the book writes each measure of :data:`tkmia.metrics.MEASURES`.
MEASURE_NAMES = {
    "topk_accuracy": "top-k accuracy",
    "precision_at_k": "P@k",
    "map_at_k": "mAP@k",
    "ndcg_at_k": "NDCG@k",
}

#: What may take the place of a label removed from the top-k (see :func:`swap_at_each_rank`).
REPLACEMENTS = ("false", "true")


def swap_at_each_rank(scores: Tensor, labels: Tensor, k: int, replacement: str = "false") -> Tensor:
    """One sample's scores with the label at rank j pushed out of the top-k, for j = 1..k.

    Row j − 1 exchanges the score of the label ranked j with that of the best-ranked label outside
    the top-k whose truth is ``replacement`` (``"false"``: a wrong label enters the top-k;
    ``"true"``: another true label takes the freed place, as TkMIA intends). Book chapter
    "Top-k multi-label learning and its measures".

    Shape: scores, labels (1, C) -> (k, C).

    Example:
        >>> swap_at_each_rank(torch.tensor([[3.0, 2.0, 1.0]]), torch.tensor([[1.0, 1.0, 0.0]]), 2)
        tensor([[1., 2., 3.], [3., 1., 2.]])
    """
    check_scores(scores)
    truth = check_labels(labels, scores)
    if scores.shape[0] != 1:
        raise ValueError(f"scores must hold one sample, shape (1, C), got {tuple(scores.shape)}")
    check_k(k, scores.shape[1], scores.shape[1] - 1)
    if replacement not in REPLACEMENTS:
        raise ValueError(f"replacement must be one of {REPLACEMENTS}, got {replacement!r}")
    order = ranking(scores)[0]
    outside = order[k:]
    candidates = outside[truth[0, outside] == (replacement == "true")]
    if candidates.numel() == 0:
        raise ValueError(f"the sample has no {replacement} label outside its top-{k} to swap in")
    incoming, outgoing, rows = candidates[0], order[:k], torch.arange(k, device=scores.device)
    swapped = scores.repeat(k, 1)
    swapped[rows, outgoing] = scores[0, incoming]
    swapped[rows, incoming] = scores[0, outgoing]
    return swapped


def swap_frame(scores: Tensor, labels: Tensor, k: int) -> pd.DataFrame:
    """Every measure after :func:`swap_at_each_rank`, for both replacements, as a tidy table.

    Columns: ``rank`` (1..k, the rank of the removed label), ``replaced by`` ("a false label" or
    "a true label"), ``measure`` (as in :data:`MEASURE_NAMES`), ``value``, ``clean`` (the value
    before the swap). Shape: scores, labels (1, C) -> 2·4·k rows.
    """
    clean = measures(scores, labels, k)
    rows = []
    for replacement in REPLACEMENTS:
        swapped = swap_at_each_rank(scores, labels, k, replacement)
        values = measures(swapped, labels.expand_as(swapped), k)
        for name in MEASURES:
            for rank, value in enumerate(values[name].tolist(), start=1):
                rows.append(
                    {
                        "rank": rank,
                        "replaced by": f"a {replacement} label",
                        "measure": MEASURE_NAMES[name],
                        "value": value,
                        "clean": clean[name].item(),
                    }
                )
    return pd.DataFrame(rows)


def plot_swap_frame(frame: pd.DataFrame):
    """Draw :func:`swap_frame`: each measure against the removed label's rank, one panel per
    replacement. Returns the matplotlib figure."""
    import seaborn as sns

    from tkmia.plots.theme import panel_grid, style

    style()
    _, cols, (width, _) = panel_grid(frame["replaced by"].nunique())
    height = 0.8 * width / cols
    grid = sns.relplot(
        data=frame, x="rank", y="value", hue="measure", style="measure", col="replaced by",
        kind="line", markers=True, dashes=False, height=height, aspect=width / cols / height,
    )
    grid.set_axis_labels("rank of the removed true label", "measure after the swap (0–1)")
    grid.set(xticks=sorted(frame["rank"].unique()), ylim=(-0.05, 1.05))
    grid.set_titles("replaced by {col_name}")
    if grid.legend is not None:
        sns.move_legend(grid, "lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, title=None, frameon=False)
    grid.figure.tight_layout()
    return grid.figure
