"""The attack engine every method shares (book chapter "The algorithm on one image").

One loop for all methods: the box parametrisation x = mid + half·tanh(w), SGD with momentum on
w − w0 with an L2 penalty (weight decay), the selection scheme's success rule checked on every
iterate *before* each step, and per-sample freezing: a sample leaves the forward/backward pass
at its first successful iterate. A method fills one hook: :meth:`Attack.loss` (a measure loss
of the scores, minimised) or, for non-gradient-descent methods, :meth:`Attack.step`.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, fields
from typing import ClassVar

import torch
from torch import Tensor, nn

from tkmia.metrics import _check_k, _check_labels, delta_n, measures
from tkmia.selection import GlobalSelection, RandomSelection, Specification

__all__ = ["Attack", "AttackResult", "PARAMETRISATIONS"]

#: ``"exact"``: w0 = artanh of the clean image, so step 0 reproduces it exactly.
#: ``"reference"``: the reference code's w0 = the clean image itself, so its "clean" point is
#: mid + half·tanh((x − mid)/half) ≠ x (kept only to measure how much that changes the numbers).
PARAMETRISATIONS = ("exact", "reference")

_EPS = 1e-6  # artanh is evaluated on [-1 + _EPS, 1 - _EPS]


@dataclass
class AttackResult:
    """What an attack returns for a batch of N images.

    Attributes:
        adv_images: x_adv in the box, (N, 3, H, W); the clean image where not eligible; the
            first successful iterate where successful; the last iterate otherwise.
        success: eligible and ΔN ≥ required (the scheme's rule), (N,) bool.
        imperceptible: success with P@k, mAP@k and NDCG@k all unchanged, (N,) bool.
        eligible, specified, required: the :class:`~tkmia.selection.Specification` used.
        iterations: gradient steps taken before the returned iterate, (N,) long.
        perturbation_l2: ‖x_adv − x‖₂ in [0, 1] pixel units, (N,); see ``perturbation_l2_255``.
        tanh_space_l2: ‖w − w0‖₂ in the tanh space (what the reference reports as "Pert"), (N,).
        clean_scores, adv_scores: logits at the clean point and at x_adv, (N, C).
        delta_n: ΔN, specified labels pushed out of the top-k, (N,) long.
        k: the top-k size.
        history: per-iteration records when the attack was built with ``record_history=True``:
            ``"loss"`` (T, N) and ``"scores"`` (T, N, C), NaN once a sample is frozen.
    """

    adv_images: Tensor
    success: Tensor
    imperceptible: Tensor
    eligible: Tensor
    specified: Tensor
    required: Tensor
    iterations: Tensor
    perturbation_l2: Tensor
    tanh_space_l2: Tensor
    clean_scores: Tensor
    adv_scores: Tensor
    delta_n: Tensor
    k: int
    labels: Tensor
    history: dict[str, Tensor] = field(default_factory=dict)

    @property
    def perturbation_l2_255(self) -> Tensor:
        """‖x_adv − x‖₂ in 0–255 pixel units, (N,)."""
        return self.perturbation_l2 * 255.0

    def clean_measures(self) -> dict[str, Tensor]:
        """Top-k accuracy, P@k, mAP@k, NDCG@k of the clean scores, each (N,)."""
        return measures(self.clean_scores, self.labels.to(self.clean_scores.dtype), self.k)

    def adv_measures(self) -> dict[str, Tensor]:
        """The same measures of the adversarial scores, each (N,)."""
        return measures(self.adv_scores, self.labels.to(self.adv_scores.dtype), self.k)

    def __len__(self) -> int:
        return self.success.shape[0]

    def to(self, device: str | torch.device) -> AttackResult:
        """A copy with every tensor on ``device``."""
        values = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                v = v.to(device)
            elif isinstance(v, dict):
                v = {key: t.to(device) for key, t in v.items()}
            values[f.name] = v
        return AttackResult(**values)


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _check_number(name: str, value, low: float, *, integer: bool = False, strict: bool = False):
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {'an int' if integer else 'a number'}, got {value!r}")
    if not math.isfinite(value) or (value <= low if strict else value < low):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {low}, got {value!r}")


class Attack:
    """Base class of the batched attacks; subclasses set ``name`` and fill :meth:`loss`.

    Args:
        model: maps images (N, 3, H, W) in ``box`` to logits (N, C); it normalises inside.
        k: the top-k size, 1 ≤ k ≤ C − 1.
        lr: SGD learning rate on the tanh-space variable.
        max_iter: the iteration budget (gradient steps).
        weight_decay: the L2 penalty weight: objective = loss + (weight_decay/2)·‖w − w0‖².
        momentum: SGD momentum.
        box: (low, high) pixel bounds of the images.
        parametrisation: ``"exact"`` or ``"reference"`` (see :data:`PARAMETRISATIONS`).
        record_history: keep every iterate's loss and scores in ``result.history``.

    Call ``attack(images, labels, specified)``: ``specified`` is an (N, C) {0, 1} mask (judged
    by the global rule), a :class:`~tkmia.selection.Specification`, or a selection scheme
    (:class:`~tkmia.selection.GlobalSelection`, :class:`~tkmia.selection.RandomSelection`)
    applied to the clean scores. Returns an :class:`AttackResult`.
    """

    name: ClassVar[str] = "attack"
    #: learning rate of the auxiliary per-sample variables (see :meth:`init_aux`)
    aux_lr: float = 0.0

    def __init__(
        self,
        model: nn.Module,
        k: int,
        *,
        lr: float = 5e-4,
        max_iter: int = 300,
        weight_decay: float = 1e-4,
        momentum: float = 0.9,
        box: tuple[float, float] = (0.0, 1.0),
        parametrisation: str = "exact",
        record_history: bool = False,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        _check_number("lr", lr, 0.0, strict=True)
        _check_number("max_iter", max_iter, 0, integer=True)
        _check_number("weight_decay", weight_decay, 0.0)
        _check_number("momentum", momentum, 0.0)
        if momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if (
            not isinstance(box, tuple | list)
            or len(box) != 2
            or not all(isinstance(b, int | float) for b in box)
            or not box[0] < box[1]
        ):
            raise ValueError(f"box must be a pair (low, high) with low < high, got {box!r}")
        if parametrisation not in PARAMETRISATIONS:
            raise ValueError(
                f"parametrisation must be one of {PARAMETRISATIONS}, got {parametrisation!r}"
            )
        self.model, self.k = model, k
        self.lr, self.max_iter, self.weight_decay, self.momentum = lr, max_iter, weight_decay, momentum
        self.box = (float(box[0]), float(box[1]))
        self.parametrisation = parametrisation
        self.record_history = bool(record_history)

    def _hyper(self) -> dict:
        return {
            "k": self.k,
            "lr": self.lr,
            "max_iter": self.max_iter,
            "weight_decay": self.weight_decay,
            "box": self.box,
            "parametrisation": self.parametrisation,
        }

    def __repr__(self) -> str:
        inner = ", ".join(f"{key}={value!r}" for key, value in self._hyper().items())
        return f"{type(self).__name__}({inner})"

    # ------------------------------------------------------------------ hooks
    def loss(self, scores: Tensor, labels: Tensor, specified: Tensor, aux: dict[str, Tensor]):
        """The measure loss to minimise, per sample. Shape: (N, C) -> (N,)."""
        raise NotImplementedError

    def init_aux(self, scores: Tensor, labels: Tensor, specified: Tensor) -> dict[str, Tensor]:
        """Auxiliary per-sample variables (each (N, ...)) optimised beside w, by gradient
        descent with :attr:`aux_lr`; none by default."""
        return {}

    def step(self, scores: Tensor, delta: Tensor, velocity: Tensor, batch: dict):
        """One update of the n rows still attacked; returns (delta, velocity), each (n, 3, H, W).

        ``scores`` (n, C) are the logits of those rows, still attached to the graph of
        ``batch["w"]`` and of the images ``batch["x"]`` = x(w) (both the whole current batch;
        ``batch["keep"]`` picks the n rows in it).
        Default: SGD with momentum on delta = w − w0 for loss + (wd/2)·‖delta‖², the
        reference's loop (torch.optim.SGD's update, weight decay included).
        """
        loss = self.loss(scores, batch["labels"], batch["specified"], batch["aux"])
        aux = list(batch["aux"].values())
        grads = torch.autograd.grad(loss.sum(), [batch["w"], *aux])
        grad = grads[0][batch["keep"]] + self.weight_decay * delta
        velocity = self.momentum * velocity + grad
        with torch.no_grad():
            for value, g in zip(aux, grads[1:]):
                value -= self.aux_lr * g
        batch["loss"] = loss.detach()
        return delta - self.lr * velocity, velocity

    # ------------------------------------------------------------------ validation
    def _validate(self, images: Tensor, labels: Tensor) -> None:
        if not isinstance(images, Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.dim() != 4:
            raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"images must be a floating-point tensor, got {images.dtype}")
        if not torch.isfinite(images).all():
            raise ValueError("images must be finite (found NaN or Inf)")
        low, high = self.box
        if images.numel() and (images.min() < low or images.max() > high):
            raise ValueError(
                f"images must lie in box = {self.box}, got values in "
                f"[{images.min().item():.4g}, {images.max().item():.4g}]"
            )
        if not isinstance(labels, Tensor):
            raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
        if labels.dim() != 2 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"labels must have shape (N, C) with N = {images.shape[0]} images, "
                f"got {tuple(labels.shape)}"
            )
        if labels.device != images.device:
            raise ValueError(f"labels is on {labels.device} but images is on {images.device}")
        param = next(self.model.parameters(), None)
        if param is not None and param.device != images.device:
            raise ValueError(f"images is on {images.device} but model is on {param.device}")

    def _specify(self, specified, clean_scores: Tensor, labels: Tensor, ids) -> Specification:
        truth = _check_labels(labels.to(clean_scores.dtype), clean_scores)
        if isinstance(specified, GlobalSelection | RandomSelection):
            spec = specified.select(clean_scores, truth.to(clean_scores.dtype), self.k, ids=ids)
        elif isinstance(specified, Specification):
            spec = specified
        elif isinstance(specified, Tensor):
            _check_labels(specified.to(clean_scores.dtype), clean_scores, "specified")
            spec = Specification.from_mask(specified, clean_scores, self.k)
        else:
            raise TypeError(
                "specified must be an (N, C) {0, 1} tensor, a Specification or a selection "
                f"scheme (GlobalSelection, RandomSelection), got {type(specified).__name__}"
            )
        n = clean_scores.shape[0]
        if spec.specified.shape != clean_scores.shape or spec.eligible.shape != (n,):
            raise ValueError(
                f"specified must have shape {tuple(clean_scores.shape)} and eligible ({n},), got "
                f"{tuple(spec.specified.shape)} and {tuple(spec.eligible.shape)}"
            )
        spec = Specification(
            spec.specified.bool().to(clean_scores.device),
            spec.eligible.bool().to(clean_scores.device),
            spec.required.long().to(clean_scores.device),
        )
        stray = spec.specified & ~truth
        if stray.any():
            row = int(stray.any(1).nonzero()[0])
            raise ValueError(
                f"specified labels must be true labels of their sample: sample {row} specifies "
                f"{stray[row].nonzero().flatten().tolist()}, not in its labels"
            )
        empty = spec.eligible & ~spec.specified.any(1)
        if empty.any():
            raise ValueError(
                "an eligible sample must have a non-empty specified set: samples "
                f"{empty.nonzero().flatten().tolist()[:10]} have none"
            )
        return spec

    # ------------------------------------------------------------------ the loop
    def _forward(self, w: Tensor, offset: Tensor) -> Tensor:
        low, high = self.box
        mid, half = (low + high) / 2, (high - low) / 2
        return (mid + half * torch.tanh(w) + offset).clamp(low, high)

    def __call__(self, images: Tensor, labels: Tensor, specified, ids=None) -> AttackResult:
        """Attack a batch. Shapes: images (N, 3, H, W) in ``box``, labels (N, C) in {0, 1}.

        ``ids`` (N,) names the samples for a random selection's per-sample draws.
        """
        self._validate(images, labels)
        low, high = self.box
        mid, half = (low + high) / 2, (high - low) / 2
        x = images.detach()
        scaled = (x - mid) / half
        if self.parametrisation == "exact":
            w0 = torch.atanh(scaled.clamp(-1 + _EPS, 1 - _EPS))
            offset = x - (mid + half * torch.tanh(w0))  # |offset| ≤ half·_EPS: step 0 is x
        else:
            w0, offset = scaled, torch.zeros_like(x)
        start = self._forward(w0, offset)

        with _eval_mode(self.model):
            with torch.no_grad():
                clean_scores = self.model(start)
            num_classes = clean_scores.shape[1]
            _check_k(self.k, num_classes, num_classes - 1)
            spec = self._specify(specified, clean_scores, labels, ids)
            truth = labels.to(clean_scores.dtype)
            adv, adv_scores, delta, iterations, success, history = self._run(
                w0, offset, start, clean_scores, truth, spec
            )

        perturbation = (adv - x).flatten(1).norm(dim=1)
        tanh_l2 = delta.flatten(1).norm(dim=1)
        clean_m = measures(clean_scores, truth, self.k)
        adv_m = measures(adv_scores, truth, self.k)
        unchanged = torch.ones_like(success)
        for key in ("precision_at_k", "map_at_k", "ndcg_at_k"):
            unchanged &= torch.isclose(clean_m[key], adv_m[key], atol=1e-6, rtol=0)
        return AttackResult(
            adv_images=adv,
            success=success,
            imperceptible=success & unchanged,
            eligible=spec.eligible,
            specified=spec.specified,
            required=spec.required,
            iterations=iterations,
            perturbation_l2=perturbation,
            tanh_space_l2=tanh_l2,
            clean_scores=clean_scores,
            adv_scores=adv_scores,
            delta_n=delta_n(clean_scores, adv_scores, spec.specified, self.k),
            k=self.k,
            labels=labels.detach(),
            history=history,
        )

    def _run(self, w0, offset, start, clean_scores, truth, spec):
        n = w0.shape[0]
        device = w0.device
        adv = start.clone()
        adv_scores = clean_scores.clone()
        delta = torch.zeros_like(w0)
        velocity = torch.zeros_like(w0)
        iterations = torch.zeros(n, dtype=torch.long, device=device)
        success = torch.zeros(n, dtype=torch.bool, device=device)
        aux_all = self.init_aux(clean_scores, truth, spec.specified)
        active = spec.eligible.nonzero().flatten()
        records: list[tuple[Tensor, Tensor, Tensor]] = []

        for it in range(self.max_iter + 1):
            if active.numel() == 0:
                break
            w = (w0[active] + delta[active]).requires_grad_(True)
            x_it = self._forward(w, offset[active])
            scores = self.model(x_it)
            with torch.no_grad():
                adv[active] = x_it.detach()
                adv_scores[active] = scores.detach()
                iterations[active] = it
                ok = (
                    delta_n(clean_scores[active], scores.detach(), spec.specified[active], self.k)
                    >= spec.required[active]
                )
                success[active[ok]] = True
            if it == self.max_iter or ok.all():
                break
            keep = (~ok).nonzero().flatten()
            rows = active[keep]
            aux = {key: value[rows].clone().requires_grad_(True) for key, value in aux_all.items()}
            batch = {
                "w": w,
                "x": x_it,
                "keep": keep,
                "rows": rows,
                "w0": w0[rows],
                "offset": offset[rows],
                "labels": truth[rows],
                "specified": spec.specified[rows],
                "clean_scores": clean_scores[rows],
                "aux": aux,
            }
            new_delta, new_velocity = self.step(scores[keep], delta[rows], velocity[rows], batch)
            with torch.no_grad():
                delta[rows] = new_delta.detach()
                velocity[rows] = new_velocity.detach()
                for key, value in aux.items():
                    aux_all[key][rows] = value.detach()
            if self.record_history:
                records.append((rows, batch.get("loss"), scores.detach()[keep]))
            active = rows

        history = {}
        if self.record_history:
            history = self._history(records, n, clean_scores.shape[1], device)
        return adv, adv_scores, delta, iterations, success, history

    @staticmethod
    def _history(records, n, num_classes, device):
        steps = len(records)
        loss = torch.full((steps, n), float("nan"), device=device)
        scores = torch.full((steps, n, num_classes), float("nan"), device=device)
        for t, (rows, value, s) in enumerate(records):
            if value is not None:
                loss[t, rows] = value
            scores[t, rows] = s
        return {"loss": loss, "scores": scores}
