"""Top-k multi-label measures, batched over samples (book chapter "Measures").

Every function takes ``scores`` (N, C) real-valued (logits) and, where needed, ``labels`` (N, C)
in {0, 1}, and returns one value per sample, shape (N,); averaging is the caller's choice. No
function loops over samples in Python; all run on the device of their inputs.

Tie rule (used everywhere in tkmia): labels are ranked by descending score with a *stable* sort,
so among equal scores the lower label index ranks first. :func:`ranking` is the single place
that implements it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tkmia._checks import check_k, check_labels, check_scores

__all__ = [
    "ranking",
    "topk_indices",
    "topk_mask",
    "ranks",
    "precision_at_k",
    "map_at_k",
    "ndcg_at_k",
    "topk_accuracy",
    "delta_n",
    "measures",
    "measures_unchanged",
    "MEASURES",
    "WATCHED_MEASURES",
]

#: Names of the per-sample measures returned by :func:`measures`.
MEASURES = ("topk_accuracy", "precision_at_k", "map_at_k", "ndcg_at_k")

#: The measures a successful attack must leave unchanged to be *imperceptible* (the paper's claim).
WATCHED_MEASURES = ("precision_at_k", "map_at_k", "ndcg_at_k")


def ranking(scores: Tensor) -> Tensor:
    """Label indices sorted by descending score, ties broken by lower label index first.

    Shape: scores (N, C) -> (N, C) long; ``ranking(scores)[n, 0]`` is sample n's top label.
    """
    check_scores(scores)
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices


def topk_indices(scores: Tensor, k: int) -> Tensor:
    """The k highest-scoring labels of each sample, best first (tie rule of :func:`ranking`).

    Shape: scores (N, C) -> (N, k) long.

    Example:
        >>> topk_indices(torch.tensor([[0.1, 0.9, 0.9, 0.3]]), 2)
        tensor([[1, 2]])
    """
    check_scores(scores)
    k = check_k(k, scores.shape[1])
    return ranking(scores)[:, :k]


def topk_mask(scores: Tensor, k: int) -> Tensor:
    """Boolean membership of the top-k set T_k. Shape: (N, C) -> (N, C) bool."""
    idx = topk_indices(scores, k)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    return mask.scatter_(1, idx, True)


def ranks(scores: Tensor) -> Tensor:
    """Rank of every label, 1 for the top label (tie rule of :func:`ranking`).

    Shape: (N, C) -> (N, C) long.
    """
    order = ranking(scores)
    positions = torch.arange(1, scores.shape[1] + 1, device=scores.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def _relevance_at_top(scores: Tensor, labels: Tensor, k: int) -> tuple[Tensor, Tensor, int]:
    """Relevance (N, k) float of the labels ranked 1..k, |Y| (N,) float, and k as an int."""
    check_scores(scores)
    k = check_k(k, scores.shape[1])
    truth = check_labels(labels, scores)
    rel = truth.gather(1, ranking(scores)[:, :k]).to(scores.dtype)
    return rel, truth.sum(1).to(scores.dtype), k


def _precision(rel: Tensor, k: int) -> Tensor:
    return rel.sum(1) / k


def _average_precision(rel: Tensor, num_true: Tensor, k: int) -> Tensor:
    positions = torch.arange(1, k + 1, device=rel.device, dtype=rel.dtype)
    precision_at_j = rel.cumsum(1) / positions
    denom = num_true.clamp(max=k)
    total = (precision_at_j * rel).sum(1)
    return torch.where(denom > 0, total / denom.clamp(min=1), torch.zeros_like(total))


def _ndcg(rel: Tensor, num_true: Tensor, k: int) -> Tensor:
    positions = torch.arange(1, k + 1, device=rel.device, dtype=rel.dtype)
    discount = 1.0 / torch.log2(positions + 1.0)
    dcg = (rel * discount).sum(1)
    ideal_count = num_true.clamp(max=k).long()
    cumulative = torch.cat([discount.new_zeros(1), discount.cumsum(0)])
    idcg = cumulative[ideal_count]
    return torch.where(idcg > 0, dcg / idcg.clamp(min=torch.finfo(idcg.dtype).tiny), torch.zeros_like(dcg))


def _accuracy(rel: Tensor, num_true: Tensor, k: int) -> Tensor:
    hits = rel.sum(1)  # |T_k ∩ Y|
    # |Y| < k: Y ⊆ T_k  ⇔  hits = |Y|;   |Y| ≥ k: T_k ⊆ Y  ⇔  hits = k
    return torch.where(num_true < k, hits == num_true, hits == k).to(rel.dtype)


def precision_at_k(scores: Tensor, labels: Tensor, k: int) -> Tensor:
    """P@k = |T_k ∩ Y| / k per sample.

    Shape: scores, labels (N, C) -> (N,).

    Example:
        >>> precision_at_k(torch.tensor([[3.0, 2.0, 1.0]]), torch.tensor([[1.0, 0.0, 1.0]]), 2)
        tensor([0.5000])
    """
    rel, _, k = _relevance_at_top(scores, labels, k)
    return _precision(rel, k)


def map_at_k(scores: Tensor, labels: Tensor, k: int) -> Tensor:
    """mAP@k = (1 / min(|Y|, k)) Σ_{j≤k} P@j · 1[rank-j label ∈ Y] (the reference's definition).

    A sample with no true label scores 0. Shape: (N, C) -> (N,).
    """
    rel, num_true, k = _relevance_at_top(scores, labels, k)
    return _average_precision(rel, num_true, k)


def ndcg_at_k(scores: Tensor, labels: Tensor, k: int) -> Tensor:
    """NDCG@k with binary gains, discount 1/log2(j + 1) and ideal DCG over min(|Y|, k) labels.

    Ties follow :func:`ranking` (sklearn's ``ndcg_score`` averages gains over tied scores
    instead; the two agree on tie-free scores). A sample with no true label scores 0.
    Shape: (N, C) -> (N,).
    """
    rel, num_true, k = _relevance_at_top(scores, labels, k)
    return _ndcg(rel, num_true, k)


def topk_accuracy(scores: Tensor, labels: Tensor, k: int) -> Tensor:
    """Top-k accuracy of the reference: 1[Y ⊆ T_k] if k > |Y|, else 1[T_k ⊆ Y].

    Shape: (N, C) -> (N,) float in {0, 1}.
    """
    rel, num_true, k = _relevance_at_top(scores, labels, k)
    return _accuracy(rel, num_true, k)


def delta_n(clean_scores: Tensor, adv_scores: Tensor, specified: Tensor, k: int) -> Tensor:
    """ΔN = |S ∩ T_k(x)| − |S ∩ T_k(x + ε)|: specified labels pushed out of the top-k.

    Shape: clean_scores, adv_scores, specified (N, C) -> (N,) long.
    """
    check_scores(clean_scores, "clean_scores")
    check_scores(adv_scores, "adv_scores")
    if adv_scores.shape != clean_scores.shape:
        raise ValueError(
            f"adv_scores must have the shape of clean_scores {tuple(clean_scores.shape)}, "
            f"got {tuple(adv_scores.shape)}"
        )
    k = check_k(k, clean_scores.shape[1])
    spec = check_labels(specified, clean_scores, "specified")
    before = (topk_mask(clean_scores, k) & spec).sum(1)
    after = (topk_mask(adv_scores, k) & spec).sum(1)
    return before - after


def measures(scores: Tensor, labels: Tensor, k: int) -> dict[str, Tensor]:
    """All four measures of :data:`MEASURES` at once, sharing one sort.

    Returns a dict name -> (N,) tensor.
    """
    rel, num_true, k = _relevance_at_top(scores, labels, k)
    return {
        "topk_accuracy": _accuracy(rel, num_true, k),
        "precision_at_k": _precision(rel, k),
        "map_at_k": _average_precision(rel, num_true, k),
        "ndcg_at_k": _ndcg(rel, num_true, k),
    }


def measures_unchanged(before: dict[str, Tensor], after: dict[str, Tensor]) -> Tensor:
    """Whether every measure of :data:`WATCHED_MEASURES` is unchanged (to 1e-6) from ``before`` to
    ``after``, two outputs of :func:`measures`; (N,) bool."""
    unchanged = torch.ones_like(before[WATCHED_MEASURES[0]], dtype=torch.bool)
    for key in WATCHED_MEASURES:
        unchanged &= torch.isclose(before[key], after[key], atol=1e-6, rtol=0)
    return unchanged
