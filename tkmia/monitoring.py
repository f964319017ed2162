"""Victims that watch their own outputs (book chapter "Measure monitoring").

A monitor computes one statistic per image, "higher is healthier", and flags the image when the
statistic falls below a threshold chosen on clean images so that at most ``alpha`` of them are
flagged. The paper's victim watches its top-k measures (P@k, mAP@k, NDCG@k); the smarter victims
here, which the paper does not consider, watch the whole ranking (average precision over all C
labels) or the score margin at the top-k boundary.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from tkmia.experiments import records_tensors
from tkmia.metrics import measures, ranking

__all__ = ["STATISTICS", "DETECTION_FACTOR", "statistics", "ranking_average_precision", "topk_margin",
           "threshold", "detection_table", "detects", "detection_excess"]

#: An attack is *detected* by a statistic when its detection rate exceeds this many times the
#: statistic's **realised** false-alarm rate on clean images (not the budget alpha: the top-k
#: measures take few values, so their realised rate can be far below alpha).
DETECTION_FACTOR = 2

#: statistic name -> what it watches
STATISTICS = {
    "precision_at_k": "P@k (the paper's victim)",
    "map_at_k": "mAP@k (the paper's victim)",
    "ndcg_at_k": "NDCG@k (the paper's victim)",
    "average_precision": "average precision over the whole ranking",
    "topk_margin": "score gap f_[k] − f_[k+1] at the top-k boundary",
}


def ranking_average_precision(scores: Tensor, labels: Tensor) -> Tensor:
    """AP over the whole ranking: (1/|Y|) Σ_{j: rank-j label ∈ Y} P@j; 0 when Y is empty.

    Shape: (N, C) -> (N,).
    """
    rel = labels.bool().gather(1, ranking(scores)).to(scores.dtype)
    positions = torch.arange(1, scores.shape[1] + 1, dtype=scores.dtype, device=scores.device)
    total = (rel.cumsum(1) / positions * rel).sum(1)
    count = rel.sum(1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))


def topk_margin(scores: Tensor, k: int) -> Tensor:
    """f_[k] − f_[k+1], the gap between the last label in and the first label out. Shape: (N,)."""
    top = torch.topk(scores, k + 1, dim=1).values
    return top[:, k - 1] - top[:, k]


def statistics(scores: Tensor, labels: Tensor, k: int) -> dict[str, Tensor]:
    """Every statistic of :data:`STATISTICS` per sample. Shape: (N, C) -> dict of (N,)."""
    out = dict(measures(scores, labels, k))
    out.pop("topk_accuracy")
    out["average_precision"] = ranking_average_precision(scores, labels)
    out["topk_margin"] = topk_margin(scores, k)
    return out


def threshold(clean_values: np.ndarray, alpha: float) -> float:
    """The largest τ among the clean values with mean(clean < τ) ≤ alpha (flag iff value < τ)."""
    if not 0 <= alpha < 1:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    values = np.sort(np.asarray(clean_values, dtype=float))
    if values.size == 0:
        raise ValueError("clean_values must not be empty")
    best = values[0]
    for candidate in np.unique(values):
        if np.mean(values < candidate) <= alpha:
            best = candidate
    return float(best)


def _stats_of(records: pd.DataFrame, which: str) -> dict[str, np.ndarray]:
    tensors = records_tensors(records[[f"{which}_scores", "labels"]])
    scores, labels = tensors[f"{which}_scores"], tensors["labels"]
    k = int(records["k"].iloc[0])
    return {name: value.numpy() for name, value in statistics(scores, labels, k).items()}


def detection_table(records: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per (method, statistic): the clean false-alarm rate and the detection rate of successful attacks.

    Thresholds are set on the clean images of ``records`` (eligible samples; one k), one per
    statistic. Returns columns method, statistic, threshold, false_alarm, detection, n_attacks.
    """
    data = records[records["eligible"]]
    if data["k"].nunique() != 1:
        raise ValueError(f"records must hold one k, got {sorted(data['k'].unique())}")
    clean = data.drop_duplicates("sample")
    clean_stats = _stats_of(clean, "clean")
    taus = {name: threshold(values, alpha) for name, values in clean_stats.items()}
    rows = []
    for method, group in data.groupby("method", sort=False):
        won = group[group["success"]]
        adv_stats = _stats_of(won, "adv") if len(won) else None
        for name, tau in taus.items():
            rows.append({
                "method": method,
                "statistic": name,
                "threshold": tau,
                "false_alarm": float(np.mean(clean_stats[name] < tau)),
                "detection": float(np.mean(adv_stats[name] < tau)) if adv_stats else float("nan"),
                "n_attacks": len(won),
            })
    return pd.DataFrame(rows)


def detects(detection, false_alarm):
    """The detection rule: ``detection > DETECTION_FACTOR * false_alarm`` (elementwise on arrays;
    a NaN rate, e.g. no successful attack, detects nothing)."""
    return np.asarray(detection, dtype=float) > DETECTION_FACTOR * np.asarray(false_alarm, dtype=float)


def detection_excess(detection, false_alarm):
    """How far a detection rate is above the rule's bar: ``detection − DETECTION_FACTOR ·
    false_alarm`` (> 0 exactly where :func:`detects`)."""
    return np.asarray(detection, dtype=float) - DETECTION_FACTOR * np.asarray(false_alarm, dtype=float)
