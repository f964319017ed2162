"""The victim card of a photos victim: test mAP, per-class AP and P@k, computed from its scores.

Example:
    >>> model, meta = load_victim("photos")  # doctest: +SKIP
    >>> card = victim_card(model, load_dataset("photos", "test"), k=3)  # doctest: +SKIP
    >>> card["map"], card["per_class"].head()  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from tkmia.metrics import topk_mask
from tkmia.training import average_precision, predict, score_summary


def victim_card(
    model: nn.Module,
    dataset: Dataset,
    k: int = 3,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Test mAP, mean P@k and per-class AP of ``model`` on ``dataset`` (a photos split).

    Args:
        model: maps images (N, 3, S, S) in [0, 1] to scores (N, C).
        dataset: yields ``(image, multi-hot labels)``; its ``classes`` (C names) label the rows
            (``class 0``, ``class 1``, ... when it has none).
        k: the P@k cut-off (the profile's ``attack.k``).
        batch_size, device: as in :func:`tkmia.training.predict`.

    Returns:
        ``{"map", "precision_at_k", "k", "n_images", "per_class"}``; ``per_class`` is a pandas
        DataFrame with one row per class: ``class``, ``AP`` (NaN without a positive image),
        ``positives`` (images holding the class) and ``P@k share`` (how often the class is in the
        top-k of an image holding it). ``map`` is the mean of the defined APs.
    """
    import pandas as pd

    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k={k!r}; expected a positive int (the profile's attack.k)")
    if len(dataset) == 0:
        raise ValueError("dataset is empty; pass a split with at least one image")
    scores, labels = predict(model, dataset, batch_size, device)
    n_classes = scores.shape[1]
    if k > n_classes:
        raise ValueError(f"k={k!r}; expected <= the number of classes ({n_classes})")
    classes = list(getattr(dataset, "classes", [f"class {c}" for c in range(n_classes)]))
    if len(classes) != n_classes:
        raise ValueError(f"dataset.classes has {len(classes)} names, the model gives {n_classes} scores")
    labels = labels.float()
    ap = average_precision(scores, labels)
    top = topk_mask(scores, k).float()
    positives = labels.sum(0)
    hit = (top * labels).sum(0) / positives.clamp(min=1)
    per_class = pd.DataFrame({
        "class": classes,
        "AP": ap.tolist(),
        "positives": positives.long().tolist(),
        f"P@{k} share": [float(h) if p > 0 else float("nan") for h, p in zip(hit, positives)],
    })  # fmt: skip
    return {**score_summary(scores, labels, k), "per_class": per_class}
