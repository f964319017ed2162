"""kFool (Tursynbek et al. 2020): the top-k DeepFool step (a baseline). Book chapter "The baselines".

kFool does not descend a loss; it fills the engine's :meth:`~tkmia.attacks.engine.Attack.step`
hook with a geometric step in image space, then maps the new image back into the engine's box
parametrisation, so per-sample freezing and the success rule are the engine's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tkmia._checks import check_number
from tkmia.attacks.engine import ATANH_EPS, Attack, State
from tkmia.metrics import ranking

__all__ = ["KFool", "kfool_anchor"]

_NOT_USED = ("lr", "momentum", "weight_decay")


def kfool_anchor(clean_scores: Tensor, labels: Tensor) -> Tensor:
    """m, the true label with the highest clean score (ties: lower index). Shape: (N, C) -> (N,)."""
    masked = clean_scores.masked_fill(~labels.bool(), -math.inf)
    return ranking(masked)[:, 0]


class KFool(Attack):
    """The kFool attack: top-k DeepFool steps in image space (book/reference.md).

    At every step, with m the true label of highest *clean* score and J the k + 1 labels of
    highest *current* score (m left out when it is among them),

        w = Σ_{j∈J} (∇f_j − ∇f_m) / ‖∇f_j − ∇f_m‖,   g = Σ_{j∈J} (f_j − f_m) / ‖∇f_j − ∇f_m‖,
        x ← clamp(x + (1 + overshoot) · |g| · w / ‖w‖, box),

    gradients with respect to the image x. A pair whose gradient difference vanishes is skipped
    (as in the reference); a zero w gives a zero step. The new image is mapped back to the tanh
    variable, w = artanh((x − mid)/half) − w0 (clamped like the engine), so the engine's
    per-sample freezing and the selection scheme's success rule apply unchanged. Like the
    reference it is untargeted (it pushes m down), whatever ``specified`` says.

    Cost: k + 1 backward passes a step over the whole batch (each the gradient of f_j − f_m,
    which gives both the direction and its norm; the k + 2 separate gradients ∇f_j, ∇f_m are
    never formed), one forward pass (the engine's).

    Args:
        model, k, box, parametrisation, record_history: as in :class:`~tkmia.attacks.engine.Attack`.
        max_iter: the iteration budget in the engine's convention (iterates 0 … max_iter − 1
            examined, so at most max_iter − 1 steps); default 50 (the reference takes it from its
            command line).
        overshoot: the step is scaled by 1 + overshoot; default 0.02 as in DeepFool (the
            reference uses none: ``overshoot=0``). Equivalent to DeepFool's x0 + (1 + η)·r_tot.

    ``lr``, ``momentum`` and ``weight_decay`` do not apply (the step size is DeepFool's and there
    is no penalty); passing them raises ``TypeError``.

    Example:
        >>> attack = KFool(model, k=3, max_iter=50)
        >>> result = attack(images, labels, GlobalSelection([4, 8, 10]))
    """

    name = "kfool"
    uses_optimiser = False

    def __init__(self, model, k, *, max_iter: int = 50, overshoot: float = 0.02, **kw):
        given = [key for key in _NOT_USED if key in kw]
        if given:
            raise TypeError(
                f"KFool takes no {given[0]} (got {given[0]}={kw[given[0]]!r}): kFool steps by the "
                f"DeepFool rule, so {', '.join(_NOT_USED)} do not apply"
            )
        super().__init__(model, k, max_iter=max_iter, **kw)
        self.overshoot = check_number("overshoot", overshoot, 0.0)
        self.lr = self.momentum = self.weight_decay = None

    def _hyper(self) -> dict:
        hyper = {key: v for key, v in super()._hyper().items() if key not in _NOT_USED}
        return {**hyper, "overshoot": self.overshoot}

    def step(self, state: State, x: Tensor, scores: Tensor, keep: Tensor | slice) -> None:
        """One kFool step for the rows of ``state`` (see the class docstring and
        :meth:`~tkmia.attacks.engine.Attack.step`); sets ``state.w``, leaves the velocity alone."""
        scores = scores[keep]
        anchor = kfool_anchor(state.clean_scores, state.labels).unsqueeze(1)  # (n, 1)
        top = ranking(scores.detach())[:, : self.k + 1]  # (n, k + 1)
        f_anchor = scores.gather(1, anchor).squeeze(1)
        x_now = x.detach()[keep]
        direction = torch.zeros_like(x_now)
        gap = scores.new_zeros(scores.shape[0])
        for r in range(self.k + 1):
            j = top[:, r : r + 1]
            diff = scores.gather(1, j).squeeze(1) - f_anchor  # f_j − f_m, (n,)
            (grad,) = torch.autograd.grad(diff.sum(), x, retain_graph=r < self.k)
            grad = grad[keep]  # ∇f_j − ∇f_m per sample: the model treats samples independently
            norm = grad.flatten(1).norm(dim=1)
            use = (j.squeeze(1) != anchor.squeeze(1)) & (norm > 0)
            scale = torch.where(use, 1.0 / norm.clamp_min(torch.finfo(norm.dtype).tiny), 0.0)
            direction += grad * scale.view(-1, 1, 1, 1)
            gap += diff.detach() * scale
        size = direction.flatten(1).norm(dim=1)
        tiny = torch.finfo(size.dtype).tiny
        factor = torch.where(size > 0, (1 + self.overshoot) * gap.abs() / size.clamp_min(tiny), 0.0)
        low, high = self.box
        half = (high - low) / 2
        with torch.no_grad():
            x_new = (x_now + factor.view(-1, 1, 1, 1) * direction).clamp(low, high)
            if self.parametrisation == "pixel":  # the variable is the image
                state.w = x_new
            else:
                scaled = (x_new - state.base) / half
                state.w = torch.atanh(scaled.clamp(-1 + ATANH_EPS, 1 - ATANH_EPS))
        state.tanh_w = None
        state.loss = gap.abs()
