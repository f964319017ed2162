"""TkMIA against a margin monitor: keep the top-k margin f_[k] − f_[k+1] near its clean value.

An adaptive attack, not in the paper. Book chapter "The arms race".
"""

from __future__ import annotations

import torch
from torch import Tensor

from tkmia._checks import check_number
from tkmia.attacks.engine import Attack, State
from tkmia.relaxation import tkmia_loss

__all__ = ["TkMIAMargin", "topk_gap"]


def topk_gap(scores: Tensor, k: int) -> Tensor:
    """f_[k] − f_[k+1], the score gap at the top-k boundary. Shape: (N, C) -> (N,)."""
    top = torch.topk(scores, k + 1, dim=-1).values
    return top[..., k - 1] - top[..., k]


class TkMIAMargin(Attack):
    """TkMIA plus a margin penalty: minimise L_TkMIA(f) + weight · [keep · m0 − m(f)]_+.

    m(f) = f_[k] − f_[k+1] is the top-k margin a monitoring victim watches (chapter "Measure
    monitoring"), m0 its value at the clean image. The attack goes on past the first successful
    iterate until the margin is back to at least ``keep · m0`` (:meth:`accept`), so it returns
    the first iterate that is both successful and has its margin back (or, at the budget, the
    last one; ``success`` is the scheme's rule as for every method). The target keep · m0 of
    each sample is in ``result.history["target"]`` when the attack records its history.

    Takes every argument of :class:`~tkmia.attacks.engine.Attack`, and two more.

    Args:
        weight: weight of the margin penalty, a finite number ≥ 0 (0: TkMIA's loss, but still
            the margin's stopping rule).
        keep: the fraction of the clean margin to restore, in [0, 1] (0: TkMIA's stopping rule).

    Example:
        >>> attack = TkMIAMargin(model, k=3, lr=5e-4, max_iter=300, weight=1.0, keep=0.5)
        >>> result = attack(images, labels, GlobalSelection([0, 1, 3]))
    """

    name = "tkmia_margin"

    def __init__(self, model, k, *, weight: float = 1.0, keep: float = 0.5, **kw):
        super().__init__(model, k, **kw)
        self.margin_weight = check_number("weight", weight, 0.0)
        keep = check_number("keep", keep, 0.0)
        if keep > 1:
            raise ValueError(f"keep must be in [0, 1] (a fraction of the clean margin), got {keep}")
        self.keep = keep

    def _hyper(self) -> dict:
        return {**super()._hyper(), "weight": self.margin_weight, "keep": self.keep}

    def init_aux(self, scores: Tensor, labels: Tensor, specified: Tensor) -> dict[str, Tensor]:
        """``"target"``: keep · m0 per sample, (N,); a constant (the class's ``aux_lr`` is 0), kept
        beside the rows so that it follows them when rows freeze."""
        return {"target": self.keep * topk_gap(scores, self.k)}

    def loss(self, scores: Tensor, labels: Tensor, specified: Tensor, aux: dict[str, Tensor]):
        penalty = torch.relu(aux["target"] - topk_gap(scores, self.k))
        return tkmia_loss(scores, labels, specified, self.k, validate=False) + self.margin_weight * penalty

    def accept(self, scores: Tensor, state: State) -> Tensor:
        """Whether the margin is back to ``keep`` × its clean value, (n,) bool."""
        return topk_gap(scores, self.k) >= state.aux["target"]
