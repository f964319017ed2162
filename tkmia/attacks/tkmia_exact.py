"""TkMIA without the convex relaxation: the hinge on the k-th-largest conditions themselves.

Book chapter "Does the convex relaxation cost anything?".
"""

from __future__ import annotations

import torch
from torch import Tensor

from tkmia._checks import as_int, check_loss_inputs, check_number
from tkmia.attacks.engine import Attack
from tkmia.relaxation import tkmia_terms

__all__ = ["TkMIAExact", "ranked_range_mean", "tkmia_exact_loss"]


def ranked_range_mean(v: Tensor, m: int, width: int) -> Tensor:
    """The mean of v_[m − width + 1], …, v_[m]: the ``width`` entries ranked just above v_[m].

    ``width = 1`` is the m-th largest entry v_[m] itself (not convex); ``width = m`` is ATk_m(v),
    its convex upper bound. Every width gives an upper bound of v_[m] (a mean of entries ≥ it).
    Shape: (..., C) -> (...).

    Example:
        >>> ranked_range_mean(torch.tensor([4.0, 1.0, 3.0, 2.0]), 3, 2)
        tensor(2.5000)
    """
    m, width = as_int(m, "m"), as_int(width, "width")
    if not 1 <= m <= v.shape[-1]:
        raise ValueError(f"m must be in [1, {v.shape[-1]}] (the last dimension), got m = {m}")
    if not 1 <= width <= m:
        raise ValueError(f"width must be in [1, m = {m}], got width = {width}")
    return torch.topk(v, m, dim=-1).values[..., m - width :].mean(-1)


def tkmia_exact_loss(scores: Tensor, labels: Tensor, specified: Tensor, k: int, width: int = 1) -> Tensor:
    """[a_[C−k]]_+ + [b_[k]]_+ per sample: TkMIA's two ranking conditions, unrelaxed.

    a_[C−k] = max_S f − f_[k+1] ≤ 0 iff no specified label is in the top-k, b_[k] = f_[k] −
    min_{Y'} f ≤ 0 iff every label of Y' = Y \\ S is (book/reference.md and chapter 5; a, b from
    :func:`tkmia.relaxation.tkmia_terms`). With ``width`` > 1 each condition is replaced by the
    mean of the ``width`` entries ranked just above it (:func:`ranked_range_mean`, at most C − k
    and k entries): ``width ≥ C − k`` gives ATk_{C−k}(a) + ATk_k(b), TkMIA's loss, wherever that
    is positive. Non-convex in the scores for every width below that.

    Args:
        scores: logits f(x), shape (N, C).
        labels: ground truth y in {0, 1}, shape (N, C).
        specified: S ⊆ Y in {0, 1}, shape (N, C).
        k: the top-k size, 1 ≤ k ≤ C − 1.
        width: how many ranked entries each term averages, ≥ 1 (1: the exact conditions).
    Returns: shape (N,).

    Example:
        >>> f = torch.tensor([[3.0, 2.0, 1.0, 0.0]]); y = torch.tensor([[1.0, 0, 1, 1]])
        >>> tkmia_exact_loss(f, y, torch.tensor([[1.0, 0, 0, 0]]), k=2)
        tensor([3.])
    """
    check_loss_inputs(scores, labels=labels, specified=specified)
    num_classes = scores.shape[-1]
    k = as_int(k, "k")
    if not 1 <= k <= num_classes - 1:
        raise ValueError(f"k must be in [1, {num_classes - 1}] for C = {num_classes}, got {k}")
    width = as_int(width, "width")
    if width < 1:
        raise ValueError(f"width must be an int >= 1, got {width}")
    a, b = tkmia_terms(scores, labels, specified, k)
    term_a = ranked_range_mean(a, num_classes - k, min(width, num_classes - k))
    term_b = ranked_range_mean(b, k, min(width, k))
    return torch.relu(term_a) + torch.relu(term_b)


class TkMIAExact(Attack):
    """TkMIA's goal without its relaxation: minimise [a_[C−k]]_+ + [b_[k]]_+ in TkMIA's loop.

    Takes every argument of :class:`~tkmia.attacks.engine.Attack`, and one more.

    Args:
        width: each condition is averaged over the ``width`` entries ranked just above it
            (1, the default: the exact conditions; ≥ C − k: TkMIA's ATk relaxation), an int ≥ 1.
            The widths in between are the family between the two (see :func:`tkmia_exact_loss`).

    Example:
        >>> attack = TkMIAExact(model, k=3, lr=5e-4, max_iter=300)
        >>> result = attack(images, labels, GlobalSelection([0, 1, 3]))
    """

    name = "tkmia_exact"

    def __init__(self, model, k, *, width: int = 1, **kw):
        super().__init__(model, k, **kw)
        self.width = int(check_number("width", width, 1, integer=True))

    def _hyper(self) -> dict:
        return {**super()._hyper(), "width": self.width}

    def loss(self, scores: Tensor, labels: Tensor, specified: Tensor, aux: dict[str, Tensor]):
        return tkmia_exact_loss(scores, labels, specified, self.k, self.width)
