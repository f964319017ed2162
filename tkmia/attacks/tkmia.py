"""TkMIA: remove the specified labels from the top-k, keep the measures (book chapter 6)."""

from __future__ import annotations

from torch import Tensor

from tkmia._checks import check_number
from tkmia.attacks.engine import Attack
from tkmia.relaxation import atk_minimiser, tkmia_loss, tkmia_terms

#: ``"closed_form"``: λ = its exact minimiser at every step (the reference);
#: ``"gradient"``: the two λ's are updated by gradient steps (the paper's Algorithm 1).
LAMBDA_MODES = ("closed_form", "gradient")


class TkMIA(Attack):
    """The TkMIA attack: minimise ATk_{C−k}(a) + ATk_k(b) (book chapter 5, the convex relaxation).

    Takes every argument of :class:`~tkmia.attacks.engine.Attack`, and two more.

    Args:
        lambda_mode: one of :data:`LAMBDA_MODES`.
        lambda_lr: step size of the λ updates when ``lambda_mode="gradient"``, a finite number > 0;
            the λ's of every step are in ``result.history`` (``"lam_a"``, ``"lam_b"``) when the
            attack records its history.

    Example:
        >>> attack = TkMIA(model, k=3, lr=5e-4, max_iter=300)
        >>> result = attack(images, labels, GlobalSelection([0, 1, 3]))
    """

    name = "tkmia"

    def __init__(self, model, k, *, lambda_mode: str = "closed_form", lambda_lr: float = 1e-2, **kw):
        super().__init__(model, k, **kw)
        if lambda_mode not in LAMBDA_MODES:
            raise ValueError(f"lambda_mode must be one of {LAMBDA_MODES}, got {lambda_mode!r}")
        lambda_lr = check_number("lambda_lr", lambda_lr, 0.0, strict=True)
        self.lambda_mode, self.aux_lr = lambda_mode, lambda_lr

    def _hyper(self) -> dict:
        return {**super()._hyper(), "lambda_mode": self.lambda_mode}

    def init_aux(self, scores: Tensor, labels: Tensor, specified: Tensor) -> dict[str, Tensor]:
        if self.lambda_mode == "closed_form":
            return {}
        a, b = tkmia_terms(scores, labels, specified, self.k, validate=False)
        num_classes = scores.shape[1]
        return {"lam_a": atk_minimiser(a, num_classes - self.k), "lam_b": atk_minimiser(b, self.k)}

    def loss(self, scores: Tensor, labels: Tensor, specified: Tensor, aux: dict[str, Tensor]):
        lambdas = (aux["lam_a"], aux["lam_b"]) if aux else None
        return tkmia_loss(scores, labels, specified, self.k, lambdas, validate=False)
