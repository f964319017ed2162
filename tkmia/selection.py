"""Selection schemes: which labels are specified, who is eligible, what counts as success.

A scheme looks at the clean scores and the labels and returns a :class:`Specification`: the
specified set S of every sample, whether the sample is eligible for the attack, and how many
specified labels must leave the top-k for the attack to succeed (success iff ΔN ≥ required).
Book chapters "Global selection scheme" and "Random selection scheme".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from tkmia.metrics import _check_k, _check_labels, _check_scores, delta_n, topk_mask

__all__ = ["Specification", "GlobalSelection", "RandomSelection", "make_selection", "SCHEMES"]

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
    def from_mask(cls, specified: Tensor, clean_scores: Tensor, k: int) -> Specification:
        """A given S for every sample, judged by the global rule (required = |S ∩ T_k(x)|).

        Every row with a non-empty S is eligible; a row with an empty S is not attacked.
        """
        spec = specified.bool()
        required = (topk_mask(clean_scores, k) & spec).sum(1)
        return cls(spec, spec.any(1), required)


def _as_class_list(classes: Sequence[int], name: str = "classes") -> list[int]:
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence | Tensor):
        raise TypeError(f"{name} must be a sequence of class indices, got {classes!r}")
    out = [int(c) for c in classes]
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
        _check_scores(clean_scores, "clean_scores")
        truth = _check_labels(labels, clean_scores)
        num_classes = clean_scores.shape[1]
        _check_k(k, num_classes, num_classes - 1)
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
    sample ``ids[n]`` depends only on (seed, ids[n]), never on the batch it arrives in.

    Args:
        n_pert: how many labels to specify, 1 ≤ n_pert ≤ k.
        del_n: how many of them must leave the top-k, 1 ≤ del_n ≤ n_pert.
        seed: seed of the draws.
    """

    scheme = "random"

    def __init__(self, n_pert: int, del_n: int, seed: int = 0):
        for name, value in (("n_pert", n_pert), ("del_n", del_n), ("seed", seed)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if n_pert < 1:
            raise ValueError(f"n_pert must be >= 1, got {n_pert}")
        if not 1 <= del_n <= n_pert:
            raise ValueError(f"del_n must be in [1, n_pert = {n_pert}], got {del_n}")
        self.n_pert, self.del_n, self.seed = n_pert, del_n, seed

    def __repr__(self) -> str:
        return f"RandomSelection(n_pert={self.n_pert}, del_n={self.del_n}, seed={self.seed})"

    def _keys(self, ids: Tensor, num_classes: int) -> Tensor:
        """Uniform keys (N, C) on the CPU, one generator per sample id."""
        keys = torch.empty(len(ids), num_classes)
        gen = torch.Generator()
        for row, sample_id in enumerate(ids.tolist()):
            gen.manual_seed(self.seed * 1_000_003 + int(sample_id))
            keys[row] = torch.rand(num_classes, generator=gen)
        return keys

    def select(self, clean_scores: Tensor, labels: Tensor, k: int, ids: Tensor | None = None):
        """The specification of each sample; ``ids`` (N,) names the samples (default 0..N−1)."""
        _check_scores(clean_scores, "clean_scores")
        truth = _check_labels(labels, clean_scores)
        num, num_classes = clean_scores.shape
        _check_k(k, num_classes, num_classes - 1)
        if self.n_pert > k:
            raise ValueError(f"n_pert must be <= k = {k}, got n_pert = {self.n_pert}")
        ids = torch.arange(num) if ids is None else torch.as_tensor(ids).cpu()
        if ids.shape != (num,):
            raise ValueError(f"ids must have shape ({num},), got {tuple(ids.shape)}")
        candidates = truth & topk_mask(clean_scores, k)
        keys = self._keys(ids, num_classes).to(clean_scores.device)
        keys = keys.masked_fill(~candidates, -1.0)
        picked = torch.topk(keys, self.n_pert, dim=1).indices
        spec = torch.zeros_like(truth).scatter_(1, picked, True) & candidates
        eligible = (candidates.sum(1) >= self.n_pert) & (truth.sum(1) >= k + self.n_pert)
        spec &= eligible.unsqueeze(1)
        required = torch.full((num,), self.del_n, dtype=torch.long, device=clean_scores.device)
        return Specification(spec, eligible, required)


def make_selection(scheme: str, **params) -> GlobalSelection | RandomSelection:
    """A scheme by name: ``"global"`` (``classes``) or ``"random"`` (``n_pert``, ``del_n``, ``seed``)."""
    if scheme == "global":
        return GlobalSelection(**params)
    if scheme == "random":
        return RandomSelection(**params)
    raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
