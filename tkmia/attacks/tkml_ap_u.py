"""TkML-AP-U (Hu et al., ICCV 2021): push every true label out of the top-k (a baseline).

Book chapter "The baselines".
"""

from __future__ import annotations

import torch
from torch import Tensor

from tkmia._checks import as_int, check_loss_inputs
from tkmia.attacks.engine import Attack
from tkmia.relaxation import average_top_k, masked_amax

__all__ = ["TkMLAPU", "tkml_ap_u_loss"]

def tkml_ap_u_loss(scores: Tensor, labels: Tensor, k: int) -> Tensor:
    """TkML-AP-U's loss ATk_{C−k}(max_{y∈Y} f_y − f), per sample (book/reference.md).

    With v_j = max_{y∈Y} f_y − f_j, v_[C−k] = max_Y f − f_[k+1] ≤ 0 exactly when no true label
    is in the top-k; ATk_{C−k}(v) is its convex upper bound. A row with no true label scores 0.

    Args:
        scores: logits f(x), shape (N, C).
        labels: ground truth y in {0, 1}, shape (N, C).
        k: the top-k size, 1 ≤ k ≤ C − 1.
    Returns: shape (N,).

    Example:
        >>> tkml_ap_u_loss(torch.tensor([[3.0, 2.0, 1.0]]), torch.tensor([[0.0, 1.0, 0.0]]), k=1)
        tensor([0.5000])
    """
    check_loss_inputs(scores, labels=labels)
    num_classes = scores.shape[-1]
    k = as_int(k, "k")
    if not 1 <= k <= num_classes - 1:
        raise ValueError(f"k must be an int in [1, {num_classes - 1}] for C = {num_classes}, got {k!r}")
    truth = labels.bool()
    has = truth.any(-1, keepdim=True)
    max_true = torch.where(has, masked_amax(scores, truth, keepdim=True), 0.0)
    loss = average_top_k(max_true - scores, num_classes - k)
    return torch.where(has.squeeze(-1), loss, torch.zeros_like(loss))


class TkMLAPU(Attack):
    """The TkML-AP-U attack: minimise ATk_{C−k}(max_{y∈Y} f_y − f) in TkMIA's loop.

    Untargeted: it pushes *every* true label out of the top-k, whatever ``specified`` says;
    success is still judged by the selection scheme's rule, so it attacks the same samples as
    :class:`~tkmia.attacks.TkMIA`. Hyper-parameters: those of
    :class:`~tkmia.attacks.engine.Attack` (lr, max_iter, weight_decay, momentum, box, ...).

    Example:
        >>> attack = TkMLAPU(model, k=3, lr=5e-4, max_iter=300)
        >>> result = attack(images, labels, GlobalSelection([0, 1, 3]))
    """

    name = "tkml_ap_u"

    def loss(self, scores: Tensor, labels: Tensor, specified: Tensor, aux: dict[str, Tensor]):
        return tkml_ap_u_loss(scores, labels, self.k)
