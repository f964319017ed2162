"""ML-CW-U (after Song et al. 2018): a C&W-style ranking hinge (a baseline).

The public code of this baseline is not in the reference repository; tkmia *defines* it as the
hinge [max_{y∈Y} f_y − min_{j∉Y} f_j]_+ (every true label driven below every other label),
minimised in TkMIA's loop. Book chapter "The baselines".
"""

from __future__ import annotations

import torch
from torch import Tensor

from tkmia._checks import check_loss_inputs
from tkmia.attacks.engine import Attack
from tkmia.relaxation import masked_amax, masked_amin

__all__ = ["MLCWU", "ml_cw_u_loss"]

def ml_cw_u_loss(scores: Tensor, labels: Tensor) -> Tensor:
    """[max_{y∈Y} f_y − min_{j∉Y} f_j]_+ per sample (tkmia's definition of ML-CW-U's loss).

    Zero exactly when every true label scores at most every other label. A row with no true
    label, or with every label true, scores 0.

    Args:
        scores: logits f(x), shape (N, C).
        labels: ground truth y in {0, 1}, shape (N, C).
    Returns: shape (N,).

    Example:
        >>> ml_cw_u_loss(torch.tensor([[3.0, 2.0, 1.0]]), torch.tensor([[0.0, 1.0, 0.0]]))
        tensor([1.])
    """
    check_loss_inputs(scores, labels=labels)
    truth = labels.bool()
    defined = truth.any(-1) & ~truth.all(-1)
    # undefined rows compare 0 with 0 (no overflow of the dtype's extremes in fp16)
    max_true = torch.where(defined, masked_amax(scores, truth), 0.0)
    min_other = torch.where(defined, masked_amin(scores, ~truth), 0.0)
    hinge = torch.relu(max_true - min_other)
    return torch.where(defined, hinge, torch.zeros_like(hinge))


class MLCWU(Attack):
    """The ML-CW-U attack: minimise [max_{y∈Y} f_y − min_{j∉Y} f_j]_+ in TkMIA's loop.

    Untargeted (all true labels), judged by the selection scheme's success rule like every
    method. Hyper-parameters: those of :class:`~tkmia.attacks.engine.Attack`.

    Example:
        >>> attack = MLCWU(model, k=3, lr=5e-4, max_iter=300)
        >>> result = attack(images, labels, GlobalSelection([14]))
    """

    name = "ml_cw_u"

    def loss(self, scores: Tensor, labels: Tensor, specified: Tensor, aux: dict[str, Tensor]):
        return ml_cw_u_loss(scores, labels)
