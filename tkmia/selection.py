"""Selection schemes: which labels are specified, who is eligible, what counts as success.

A scheme looks at the clean scores and the labels and returns a :class:`Specification`: the
specified set S of every sample, whether the sample is eligible for the attack, and how many
specified labels must leave the top-k for the attack to succeed (success iff ΔN ≥ required).
Book chapters "Global selection scheme" and "Random selection scheme".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tkmia._checks import as_int, check_k, check_labels, check_scores, int_in
from tkmia.metrics import delta_n, ranks, topk_mask

__all__ = ["Specification", "GlobalSelection", "RandomSelection", "make_selection", "sample_ids", "SCHEMES",
           "spare_rank"]

#: Names accepted by :func:`make_selection`.
SCHEMES = ("global", "random")


@dataclass(frozen=True)
class Specification:
    """Per-sample attack goal.

    Attributes:
        specified: S, the labels to remove from the top-k, (N, C) bool; S ⊆ Y.
        eligible: whether the sample is attacked, (N,) bool.
        required: how many labels of S must leave the top-k, (N,) long; success iff
            ΔN ≥ required (global scheme: |S ∩ T_k(x)|; random scheme: ``del_n``).
    """

    specified: Tensor
    eligible: Tensor
    required: Tensor

    def __len__(self) -> int:
        return self.specified.shape[0]

    def success(self, clean_scores: Tensor, adv_scores: Tensor, k: int) -> Tensor:
        """Eligible and ΔN ≥ required. Shape: scores (N, C) -> (N,) bool."""
        return self.eligible & (delta_n(clean_scores, adv_scores, self.specified, k) >= self.required)

    def index(self, rows: Tensor) -> Specification:
        """The specification of a subset of samples (``rows``: indices or a bool mask)."""
        return Specification(self.specified[rows], self.eligible[rows], self.required[rows])

    @classmethod
    def from_mask(cls, specified: Tensor, clean_scores: Tensor, labels: Tensor, k: int) -> Specification:
        """A given S per sample (``specified``, (N, C) in {0, 1}, S ⊆ Y), judged by the global rule.

        A mask row is the S of its sample, as :class:`GlobalSelection` would have made it: the
        row is eligible iff S ∩ T_k(x) ≠ ∅ and |Y| ≥ k + |S|, and success requires every
        specified label that was in the clean top-k to leave it (required = |S ∩ T_k(x)|).
        A specified label already outside the clean top-k is not attacked; a row with nothing
        of S in the top-k (an empty S included) is not eligible.
        Shape: specified, clean_scores, labels (N, C) -> :class:`Specification` of N.
        """
        check_scores(clean_scores, "clean_scores")
        truth = check_labels(labels, clean_scores)
        spec = check_labels(specified, clean_scores, "specified")
        num_classes = clean_scores.shape[1]
        k = check_k(k, num_classes, num_classes - 1)
        required = (topk_mask(clean_scores, k) & spec).sum(1)
        eligible = (required > 0) & (truth.sum(1) >= k + spec.sum(1))
        return cls(spec, eligible, required)


def _as_class_list(classes: Sequence[int], name: str = "classes") -> list[int]:
    """Integer class indices from a sequence, a NumPy array or a 1-D tensor; floats are refused
    (``[0.7, 1.2]`` is an error, never the classes [0, 1])."""
    if isinstance(classes, Tensor | np.ndarray):
        if classes.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional, got shape {tuple(classes.shape)}")
        classes = classes.tolist()
    if isinstance(classes, str | bytes) or not isinstance(classes, Sequence):
        raise TypeError(f"{name} must be a sequence of class indices (ints), got {classes!r}")
    out = []
    for c in classes:
        try:
            out.append(as_int(c, name))
        except TypeError:
            raise TypeError(
                f"{name} must hold integer class indices, got {c!r} ({type(c).__name__}) in "
                f"{list(classes)!r}"
            ) from None
    if not out:
        raise ValueError(f"{name} must name at least one class index, got an empty list")
    return out


class GlobalSelection:
    """A fixed set S_g of classes for the whole dataset; per sample S = S_g ∩ Y.

    Eligible iff S ∩ T_k(x) ≠ ∅ and |Y| ≥ k + |S|; success iff every specified label that was
    in the top-k has left it (ΔN ≥ |S ∩ T_k(x)|).

    Example:
        >>> spec = GlobalSelection([0, 1]).select(scores, labels, k=3)
    """

    scheme = "global"

    def __init__(self, classes: Sequence[int]):
        self.classes = _as_class_list(classes)

    def __repr__(self) -> str:
        return f"GlobalSelection(classes={self.classes})"

    def select(self, clean_scores: Tensor, labels: Tensor, k: int, ids: Tensor | None = None):
        """The specification of each sample. Shape: (N, C) -> :class:`Specification` of N."""
        check_scores(clean_scores, "clean_scores")
        truth = check_labels(labels, clean_scores)
        num_classes = clean_scores.shape[1]
        k = check_k(k, num_classes, num_classes - 1)
        bad = [c for c in self.classes if not 0 <= c < num_classes]
        if bad:
            raise ValueError(f"classes must be in [0, {num_classes - 1}], got {bad}")
        chosen = torch.zeros(num_classes, dtype=torch.bool, device=clean_scores.device)
        chosen[self.classes] = True
        spec = truth & chosen
        in_top = (topk_mask(clean_scores, k) & spec).sum(1)
        eligible = (in_top > 0) & (truth.sum(1) >= k + spec.sum(1))
        return Specification(spec, eligible, in_top)


class RandomSelection:
    """Per sample, ``n_pert`` labels drawn uniformly from Y ∩ T_k(x); success iff ΔN ≥ ``del_n``.

    Eligible iff Y ∩ T_k(x) holds at least ``n_pert`` labels and |Y| ≥ k + n_pert. The draw of
    sample ``ids[n]`` depends only on (seed, ids[n]), never on the batch it arrives in, nor its
    position there: :meth:`select` therefore requires ``ids``. (An :class:`~tkmia.attacks.engine.Attack`
    called without ids names each image by a hash of its pixels instead.)

    Args:
        n_pert: how many labels to specify, 1 ≤ n_pert ≤ k.
        del_n: how many of them must leave the top-k, 1 ≤ del_n ≤ n_pert.
        seed: seed of the draws, an int ≥ 0.
    """

    scheme = "random"

    def __init__(self, n_pert: int, del_n: int, seed: int = 0):
        n_pert, del_n, seed = as_int(n_pert, "n_pert"), as_int(del_n, "del_n"), as_int(seed, "seed")
        if n_pert < 1:
            raise ValueError(f"n_pert must be >= 1, got {n_pert}")
        if not 1 <= del_n <= n_pert:
            raise ValueError(f"del_n must be in [1, n_pert = {n_pert}], got {del_n}")
        if seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed}")
        self.n_pert, self.del_n, self.seed = n_pert, del_n, seed

    def __repr__(self) -> str:
        return f"RandomSelection(n_pert={self.n_pert}, del_n={self.del_n}, seed={self.seed})"

    def _keys(self, ids: list[int], num_classes: int) -> Tensor:
        """Uniform keys (N, C) on the CPU, one generator per sample id."""
        keys = torch.empty(len(ids), num_classes)
        gen = torch.Generator()
        for row, sample_id in enumerate(ids):
            gen.manual_seed((self.seed * 1_000_003 + sample_id) % 2**63)
            keys[row] = torch.rand(num_classes, generator=gen)
        return keys

    def select(self, clean_scores: Tensor, labels: Tensor, k: int, ids=None) -> Specification:
        """The specification of each sample. Shape: (N, C) -> :class:`Specification` of N.

        ``ids`` (N,) integers (a tensor, a NumPy array or a list) name the samples, e.g. their
        dataset indices; required, so that a sample's draw never depends on its batch.
        """
        check_scores(clean_scores, "clean_scores")
        truth = check_labels(labels, clean_scores)
        num, num_classes = clean_scores.shape
        k = check_k(k, num_classes, num_classes - 1)
        if self.n_pert > k:
            raise ValueError(f"n_pert must be <= k = {k}, got n_pert = {self.n_pert}")
        ids = sample_ids(ids, num)
        candidates = truth & topk_mask(clean_scores, k)
        keys = self._keys(ids, num_classes).to(clean_scores.device)
        keys = keys.masked_fill(~candidates, -1.0)
        picked = torch.topk(keys, self.n_pert, dim=1).indices
        spec = torch.zeros_like(truth).scatter_(1, picked, True) & candidates
        eligible = (candidates.sum(1) >= self.n_pert) & (truth.sum(1) >= k + self.n_pert)
        spec &= eligible.unsqueeze(1)
        required = torch.full((num,), self.del_n, dtype=torch.long, device=clean_scores.device)
        return Specification(spec, eligible, required)


def sample_ids(ids, num: int) -> list[int]:
    """``ids`` — N integer sample names as a tensor, a NumPy array or a sequence — as a list of
    N Python ints; raises naming ``ids`` when they are missing, not integers or not N of them."""
    if ids is None:
        raise ValueError(
            "ids is required by RandomSelection.select: pass each sample's id (e.g. its dataset "
            "index), so that its draw does not depend on its batch; got ids=None"
        )
    if isinstance(ids, Tensor | np.ndarray):
        if ids.ndim != 1:
            raise ValueError(f"ids must be one-dimensional ({num},), got shape {tuple(ids.shape)}")
        if ids.dtype == torch.bool or ids.dtype == np.bool_ or (
            ids.is_floating_point() if isinstance(ids, Tensor) else not np.issubdtype(ids.dtype, np.integer)
        ):
            raise TypeError(f"ids must hold integers, got dtype {ids.dtype}")
        ids = ids.tolist()
    if isinstance(ids, str | bytes) or not isinstance(ids, Sequence):
        raise TypeError(f"ids must be a sequence of ints (list, NumPy array or tensor), got {ids!r}")
    out = [as_int(i, "ids") for i in ids]
    if len(out) != num:
        raise ValueError(f"ids must have shape ({num},), one per sample, got {len(out)} ids")
    return out


def make_selection(scheme: str, **params) -> GlobalSelection | RandomSelection:
    """A scheme by name: ``"global"`` (``classes``) or ``"random"`` (``n_pert``, ``del_n``, ``seed``)."""
    if scheme == "global":
        return GlobalSelection(**params)
    if scheme == "random":
        return RandomSelection(**params)
    raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")


def spare_rank(clean_scores: Tensor, labels: Tensor, specified: Tensor, k: int) -> Tensor:
    """Rank (1 = top) of the best unspecified true label outside the clean top-k: the label of
    Y \\ S \\ T_k(x) the victim ranks highest, the first candidate for a place that a specified
    label frees. Ties by the project's rule (:func:`tkmia.metrics.ranks`).

    Args:
        clean_scores: (N, C) logits of the clean images.
        labels: Y, (N, C) in {0, 1}; specified: S ⊆ Y, (N, C) in {0, 1}.
        k: the top-k size, 1 ≤ k < C.

    Returns:
        (N,) float64: a rank in k+1 … C, NaN where every label of Y \\ S is in the top-k.

    Example:
        >>> spare_rank(torch.tensor([[4., 3, 2, 1]]), torch.tensor([[1., 0, 0, 1]]),
        ...            torch.tensor([[1., 0, 0, 0]]), 2)
        tensor([4.], dtype=torch.float64)
    """
    if clean_scores.dim() != 2:
        raise ValueError(f"clean_scores must be (N, C), got shape {tuple(clean_scores.shape)}")
    for name, mask in (("labels", labels), ("specified", specified)):
        if mask.shape != clean_scores.shape:
            raise ValueError(f"{name} has shape {tuple(mask.shape)}; expected {tuple(clean_scores.shape)} "
                             "like clean_scores")
    n_classes = clean_scores.shape[1]
    k = int_in(k, "k", 1, n_classes - 1)
    truth, chosen = labels.bool(), specified.bool()
    if bool((chosen & ~truth).any()):
        raise ValueError("specified holds labels outside labels; S must be a subset of Y")
    rank = ranks(clean_scores).double()
    spare = truth & ~chosen & ~topk_mask(clean_scores, int(k))
    best = torch.where(spare, rank, torch.full_like(rank, math.inf)).min(dim=1).values
    return torch.where(torch.isinf(best), torch.full_like(best, math.nan), best)
