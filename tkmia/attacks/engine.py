"""The attack engine every method shares (book chapter "The algorithm on one image").

One loop for all methods: the box parametrisation x = mid + half·tanh(w), SGD with momentum on
w − w0 with an L2 penalty (weight decay), the selection scheme's success rule checked on every
iterate *before* each step, and per-sample freezing: a sample leaves the forward/backward pass
at its first successful iterate. A method fills one hook: :meth:`Attack.loss` (a measure loss
of the scores, minimised) or, for non-gradient-descent methods, :meth:`Attack.step`.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import numbers
from dataclasses import dataclass, field, fields
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from tkmia._checks import as_int, check_k, check_labels, check_number
from tkmia.metrics import delta_n, measures, measures_unchanged, topk_mask
from tkmia.selection import GlobalSelection, RandomSelection, Specification, sample_ids

__all__ = ["Attack", "AttackResult", "State", "PARAMETRISATIONS", "ATANH_EPS"]

#: ``"exact"``: w0 = artanh of the clean image, so step 0 reproduces it exactly.
#: ``"reference"``: the reference code's w0 = the clean image itself, so its "clean" point is
#: mid + half·tanh((x − mid)/half) ≠ x (kept only to measure how much that changes the numbers).
#: ``"pixel"``: no tanh: the variable is the image itself, w0 = x, and every iterate is projected
#: onto the box (projected SGD on δ = w − w0; book chapter "The box parametrisation").
PARAMETRISATIONS = ("exact", "reference", "pixel")

#: artanh is evaluated on [-1 + ATANH_EPS, 1 - ATANH_EPS] (shared with kFool's step)
ATANH_EPS = 1e-6


@dataclass
class AttackResult:
    """What an attack returns for a batch of N images.

    Attributes:
        adv_images: x_adv in the box, (N, 3, H, W); the clean image where not eligible; the
            first successful iterate where successful; the last iterate otherwise.
        success: eligible and ΔN ≥ required (the scheme's rule), (N,) bool.
        imperceptible: success with P@k, mAP@k and NDCG@k all unchanged, (N,) bool.
        eligible, specified, required: the :class:`~tkmia.selection.Specification` used.
        iterations: gradient steps taken before the returned iterate, (N,) long: the index of
            that iterate, at most ``max_iter − 1`` (see :class:`Attack`).
        perturbation_l2: ‖x_adv − x‖₂ in the units of ``box``, (N,); see ``perturbation_l2_255``.
        tanh_space_l2: ‖w − w0‖₂ in the tanh space (what the reference reports as "Pert"), (N,);
            for ``parametrisation="pixel"`` the variable is the image, so it equals
            ``perturbation_l2``.
        clean_scores, adv_scores: logits at the clean point and at x_adv, (N, C).
        delta_n: ΔN, specified labels pushed out of the top-k, (N,) long.
        k: the top-k size.
        labels: the ground truth y, (N, C).
        box: the (low, high) pixel bounds the attack ran in.
        history: per-step records when the attack was built with ``record_history=True``; entry
            t is iterate t of every sample that took a step from it (T = the most steps any
            sample took, ≤ max_iter − 1): ``"loss"`` (T, N), ``"scores"`` (T, N, C) and, for
            methods with per-sample auxiliary variables, each of them (e.g. TkMIA's ``"lam_a"``,
            ``"lam_b"`` in ``lambda_mode="gradient"``), (T, N); NaN where a sample took no step.
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
    box: tuple[float, float]
    history: dict[str, Tensor] = field(default_factory=dict)

    @property
    def perturbation_l2_255(self) -> Tensor:
        """‖x_adv − x‖₂ in 0–255 pixel units, (N,): ``perturbation_l2 · 255 / (high − low)``, so
        the box's full range maps to 255 whatever the box ((0, 1), (0, 255), (−1, 1), ...)."""
        low, high = self.box
        return self.perturbation_l2 * (255.0 / (high - low))

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


@dataclass
class State:
    """The rows still attacked, compact: n rows, each tensor's first dimension.

    Attributes:
        rows: their indices in the batch, (n,) long.
        w, w0: the tanh-space variable and its start, (n, 3, H, W); x = clamp(base + half·tanh(w)).
        base: mid + the tiny offset that makes step 0 exact, (n, 3, H, W).
        velocity: SGD momentum buffer, (n, 3, H, W).
        labels, specified: (n, C); required: (n,); clean_scores: (n, C).
        clean_in_top: |S ∩ T_k(x)| of the clean point, (n,) (ΔN = it − |S ∩ T_k(x_it)|).
        aux: auxiliary per-sample variables of the method (see :meth:`Attack.init_aux`).
        loss: the per-sample loss of the last step, (n,), when the method reports one.
        tanh_w: tanh(w) of the last :meth:`Attack.image` call (None once w has moved).
    """

    rows: Tensor
    w: Tensor
    w0: Tensor
    base: Tensor
    velocity: Tensor
    labels: Tensor
    specified: Tensor
    required: Tensor
    clean_scores: Tensor
    clean_in_top: Tensor
    aux: dict[str, Tensor]
    loss: Tensor | None = None
    tanh_w: Tensor | None = None

    def select(self, keep: Tensor) -> State:
        """The state of the rows ``keep`` (bool mask or indices) only."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        out = {}
        for name, value in values.items():
            if isinstance(value, Tensor):
                value = value[keep]
            elif isinstance(value, dict):
                value = {key: v[keep] for key, v in value.items()}
            out[name] = value
        return State(**out)


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


#: the error of a model whose forward edits its input (the clean pass sees it; the loop's leaf refuses it)
_IN_PLACE = ("model modifies its input in place (e.g. x.sub_(mean) in its forward), which would "
             "corrupt the images and the reported perturbation, and the attack differentiates "
             "through the input; use out-of-place operations (x = x - mean)")


def _content_ids(images: Tensor) -> list[int]:
    """One 63-bit id per image from a hash of its pixel bytes (dtype included): a name that
    does not depend on the batch the image arrives in or on its position there."""
    data = images.detach().flatten(1).contiguous().cpu().view(torch.uint8).numpy()
    return [
        int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little") >> 1
        for row in data
    ]


class Attack:
    """Base class of the batched attacks; subclasses set ``name`` and fill :meth:`loss`.

    Args:
        model: maps images (N, 3, H, W) in ``box`` to logits (N, C), a tensor (not a tuple or a
            dict); it normalises inside.
        k: the top-k size, 1 ≤ k ≤ C − 1.
        lr: SGD learning rate on the tanh-space variable.
        max_iter: the iteration budget, the reference's convention: the number of iterates
            examined, the clean start included. Iterates 0 … max_iter − 1 are checked for
            success, so at most max_iter − 1 steps are taken; a sample that never succeeds
            returns iterate max_iter − 1. ``max_iter=1`` examines only the start; the reference's
            ``maxiter = 300`` is ``max_iter=300``.
        weight_decay: the L2 penalty weight: objective = loss + (weight_decay/2)·‖w − w0‖².
        momentum: SGD momentum.
        box: (low, high) pixel bounds of the images.
        parametrisation: ``"exact"``, ``"reference"`` or ``"pixel"`` (see :data:`PARAMETRISATIONS`).
        record_history: keep every iterate's loss and scores in ``result.history``.

    Call ``attack(images, labels, specified)``: ``specified`` is an (N, C) {0, 1} mask, each
    row the S of its sample (S ⊆ Y), judged by the global rule (see
    :meth:`~tkmia.selection.Specification.from_mask`: eligible iff something of S is in the
    start's top-k and |Y| ≥ k + |S|); a :class:`~tkmia.selection.Specification`, used as given;
    or a selection scheme (:class:`~tkmia.selection.GlobalSelection`,
    :class:`~tkmia.selection.RandomSelection`) applied to the scores of the start point.
    Returns an :class:`AttackResult`.

    Cost: one forward pass per iterate examined, the start point's also giving the clean scores
    when every sample is eligible (otherwise one pass more), the last one's without a graph; one
    backward pass per step (kFool's :meth:`step` takes k + 1); each over the rows not yet frozen.

    Every setting is checked when the attack is built, and every input before any work, with a
    ``TypeError``/``ValueError`` naming the argument. A model output that is not finite stops the
    attack with a ``ValueError`` naming the sample and the iteration: no NaN is ever returned.
    """

    name: ClassVar[str] = "attack"
    #: whether ``lr``, ``momentum`` and ``weight_decay`` apply (False for kFool's geometric step)
    uses_optimiser: ClassVar[bool] = True
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
        k = as_int(k, "k")
        if k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        lr = check_number("lr", lr, 0.0, strict=True)
        max_iter = check_number("max_iter", max_iter, 1, integer=True)
        weight_decay = check_number("weight_decay", weight_decay, 0.0)
        momentum = check_number("momentum", momentum, 0.0)
        if momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if (
            not isinstance(box, tuple | list | np.ndarray)
            or len(box) != 2
            or not all(isinstance(b, numbers.Real) and not isinstance(b, bool) for b in box)
            or not all(math.isfinite(b) for b in box)
            or not box[0] < box[1]
        ):
            raise ValueError(f"box must be a pair of finite numbers (low, high) with low < high, got {box!r}")
        if parametrisation not in PARAMETRISATIONS:
            raise ValueError(
                f"parametrisation must be one of {PARAMETRISATIONS}, got {parametrisation!r}"
            )
        self.model, self.k = model, k
        self.lr, self.max_iter, self.weight_decay, self.momentum = lr, max_iter, weight_decay, momentum
        self.box = (float(box[0]), float(box[1]))
        self.parametrisation = parametrisation
        if not isinstance(record_history, bool | np.bool_):
            raise TypeError(f"record_history must be True or False, got {record_history!r}")
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

    def accept(self, scores: Tensor, state: State) -> Tensor | None:
        """An extra condition, on top of the scheme's success rule, for the attack to stop at an
        iterate (e.g. an adaptive attack that also wants its top-k margin back); ``None`` (the
        default): stop at the first successful iterate. ``scores`` (n, C) are the current
        iterate's, detached, for the rows of ``state``; returns (n,) bool. ``result.success``
        stays the scheme's rule: a sample that is successful but never accepted returns its
        last iterate, with success judged on it."""
        return None

    def init_aux(self, scores: Tensor, labels: Tensor, specified: Tensor) -> dict[str, Tensor]:
        """Auxiliary per-sample variables (each (N, ...)) optimised beside w, by gradient
        descent with :attr:`aux_lr`; none by default."""
        return {}

    def step(self, state: State, x: Tensor, scores: Tensor, keep: Tensor | slice) -> None:
        """Update ``state`` (the rows still attacked) in place by one step.

        ``x`` (n, 3, H, W) is the current iterate of every row of the last forward pass, a leaf
        requiring grad, and ``scores`` (n, C) = model(x) is attached to it; ``keep`` (a (n,) bool
        mask, or ``slice(None)`` when every row goes on) picks the rows still attacked, which are
        the rows of ``state``.
        Default: SGD with momentum on w for loss + (wd/2)·‖w − w0‖², the reference's loop
        (torch.optim.SGD's update, weight decay included), with ∂x/∂w applied by hand.
        """
        aux = {key: value.detach().requires_grad_(True) for key, value in state.aux.items()}
        loss = self.loss(scores[keep], state.labels, state.specified, aux)
        grads = torch.autograd.grad(loss.sum(), [x, *aux.values()])
        with torch.no_grad():  # in place, few passes over the images: this is the hot loop
            grad = self.grad_w(state, grads[0][keep])
            if self.weight_decay:
                grad.add_(state.w, alpha=self.weight_decay).add_(state.w0, alpha=-self.weight_decay)
            torch.add(grad, state.velocity, alpha=self.momentum, out=state.velocity)
            state.w.add_(state.velocity, alpha=-self.lr)
            state.aux = {key: value - self.aux_lr * g for (key, value), g in zip(aux.items(), grads[1:])}
        state.tanh_w = None
        state.loss = loss.detach()

    def grad_w(self, state: State, grad_x: Tensor) -> Tensor:
        """∂L/∂w = ∂L/∂x · half·(1 − tanh²w) for x = base + half·tanh(w), shape (n, 3, H, W).

        The clamp of :meth:`image` only absorbs the rounding of the ≤ 1e-6 offset, where
        tanh' ≈ 0: its derivative is taken as 1.
        """
        if self.parametrisation == "pixel":  # x = w: the identity
            return grad_x
        half = (self.box[1] - self.box[0]) / 2
        t = state.tanh_w if state.tanh_w is not None else torch.tanh(state.w)
        state.tanh_w = None  # used up: tanh' is written over it (one image-sized buffer less a step)
        return grad_x.mul_(torch.addcmul(t.new_tensor(half), t, t, value=-half, out=t))

    def image(self, state: State) -> Tensor:
        """The current iterate x = clamp(base + half·tanh(w), box) of the rows of ``state``;
        for ``parametrisation="pixel"``, w itself projected onto the box (w is projected too)."""
        low, high = self.box
        if self.parametrisation == "pixel":
            return state.w.clamp_(low, high).clone()
        state.tanh_w = torch.tanh(state.w)
        return torch.add(state.base, state.tanh_w, alpha=(high - low) / 2).clamp_(low, high)

    # ------------------------------------------------------------------ validation
    def _validate_images(self, images) -> None:
        if not isinstance(images, Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.dim() != 4:
            raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
        if images.shape[1] != 3:
            raise ValueError(
                f"images must have 3 (RGB) channels, shape (N, 3, H, W), got {images.shape[1]} "
                f"(shape {tuple(images.shape)}); for grayscale, repeat the channel "
                "(images.expand(-1, 3, -1, -1)) and let the model reduce it"
            )
        if not images.is_floating_point():
            raise TypeError(f"images must be a floating-point tensor, got {images.dtype}")
        if images.device.type == "meta":
            raise ValueError("images is on the meta device, which holds no values; "
                             "put images and model on cpu or cuda")
        if not torch.isfinite(images).all():
            raise ValueError("images must be finite (found NaN or Inf)")
        low, high = self.box
        if images.numel() and (images.min() < low or images.max() > high):
            raise ValueError(
                f"images must lie in box = {self.box}, got values in "
                f"[{images.min().item():.4g}, {images.max().item():.4g}]"
            )

    def _validate(self, images: Tensor, labels: Tensor) -> None:
        self._validate_images(images)
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
        if param is not None and param.device.type == "meta":
            raise ValueError("model is on the meta device, which holds no weights; "
                             "load its weights on cpu or cuda (model.to_empty(...) then load_state_dict)")
        if param is not None and param.device != images.device:
            raise ValueError(f"images is on {images.device} but model is on {param.device}")
        largest = torch.finfo(images.dtype).max
        for name, value in (("lr", self.lr), ("weight_decay", self.weight_decay), ("lambda_lr", self.aux_lr)):
            if isinstance(value, float) and value > largest:
                raise ValueError(
                    f"{name} = {value!r} overflows {images.dtype} (largest {largest:.4g}); "
                    f"use a smaller {name} (the paper's lr is 5e-4 to 1e-3)"
                )

    def _specify(self, specified, clean_scores: Tensor, labels: Tensor, ids) -> Specification:
        truth = check_labels(labels.to(clean_scores.dtype), clean_scores)
        if isinstance(specified, GlobalSelection | RandomSelection):
            spec = specified.select(clean_scores, truth.to(clean_scores.dtype), self.k, ids=ids)
        elif isinstance(specified, Specification):
            spec = specified
            if not isinstance(spec.specified, Tensor) or spec.specified.shape != clean_scores.shape:
                raise ValueError(
                    f"specified.specified must be an (N, C) = {tuple(clean_scores.shape)} tensor, got "
                    f"{getattr(spec.specified, 'shape', type(spec.specified).__name__)}"
                )
            check_labels(spec.specified.to(clean_scores.dtype), clean_scores, "specified.specified")
        elif isinstance(specified, Tensor):
            spec = Specification.from_mask(
                specified.to(clean_scores.dtype), clean_scores, truth.to(clean_scores.dtype), self.k
            )
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
        free = spec.eligible & (spec.required < 1)
        if free.any():
            raise ValueError(
                "an eligible sample must require at least one label to leave the top-k "
                f"(required >= 1), or it succeeds with no attack: samples "
                f"{free.nonzero().flatten().tolist()[:10]} have required = 0"
            )
        return spec

    def _scores(self, x: Tensor, it: int, rows: Tensor | None, ids: list[int] | None) -> Tensor:
        """model(x), checked: a floating (n, C) tensor with every value finite.

        ``rows`` (n,) are the batch rows of x (None: all); the errors name them (and their ids).
        """
        try:
            out = self.model(x)
        except RuntimeError as error:
            if x.requires_grad and "in-place operation" in str(error):
                raise ValueError(f"{_IN_PLACE}: {error}") from error
            raise
        n = x.shape[0]
        if not isinstance(out, Tensor):
            hint = " (return only the logits, e.g. wrap the model)" if isinstance(out, tuple | dict) else ""
            raise TypeError(
                f"model must return a tensor of logits of shape (N, C) = ({n}, C), got a "
                f"{type(out).__name__}{hint}"
            )
        if out.dim() != 2 or out.shape[0] != n:
            raise ValueError(
                f"model must return logits of shape (N, C) with N = {n} images, got shape "
                f"{tuple(out.shape)}"
            )
        if not out.is_floating_point():
            raise TypeError(f"model must return floating-point logits, got dtype {out.dtype}")
        if x.requires_grad and torch.is_grad_enabled() and not out.requires_grad:
            raise ValueError(
                "model output does not depend on its input through autograd: its forward runs "
                "under torch.no_grad() (or detaches, or leaves torch); the attack needs the "
                "gradient of the logits with respect to the images"
            )
        bad = ~torch.isfinite(out.detach()).all(1)
        if bad.any():
            local = bad.nonzero().flatten()
            batch_rows = (local if rows is None else rows[local]).tolist()
            named = f" (ids {[ids[r] for r in batch_rows[:10]]})" if ids is not None else ""
            where = "at the start point (iteration 0)" if it == 0 else f"at iteration {it}"
            cause = ""
            if it > 0 and not torch.isfinite(x.detach()[local]).all():
                cause = "; the iterate itself is not finite: the step overflowed (lower lr)"
            raise ValueError(
                f"model output is not finite (NaN or Inf) for batch sample(s) "
                f"{batch_rows[:10]}{named} {where}{cause}; the attack stops rather than return NaN"
            )
        return out

    # ------------------------------------------------------------------ the start point
    def _decode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(w0, base, start) of the box parametrisation for images x (N, 3, H, W) in the box."""
        low, high = self.box
        mid, half = (low + high) / 2, (high - low) / 2
        scaled = (x - mid) / half
        if self.parametrisation == "pixel":
            return x, torch.zeros_like(x), x
        if self.parametrisation == "exact":
            w0 = torch.atanh(scaled.clamp(-1 + ATANH_EPS, 1 - ATANH_EPS))
            base = x - half * torch.tanh(w0)  # mid + offset, |offset| ≤ half·ATANH_EPS
            return w0, base, x  # step 0 is the clean image itself
        w0, base = scaled, torch.full_like(x, mid)
        return w0, base, (mid + half * torch.tanh(w0)).clamp(low, high)

    def starting_point(self, images: Tensor) -> Tensor:
        """The iterate 0 the attack starts from, and on which eligibility is judged.

        ``images`` itself for ``parametrisation="exact"`` and ``"pixel"``; the reference's tanh-distorted
        mid + half·tanh((x − mid)/half) for ``"reference"``. Shape (N, 3, H, W) -> (N, 3, H, W),
        in ``box``.
        """
        self._validate_images(images)
        return self._decode(images.detach())[2]

    # ------------------------------------------------------------------ the loop
    def __call__(self, images: Tensor, labels: Tensor, specified, ids=None) -> AttackResult:
        """Attack a batch. Shapes: images (N, 3, H, W) in ``box``, labels (N, C) in {0, 1}.

        ``ids`` (N,) integers (tensor, NumPy array or list) name the samples, e.g. their
        dataset indices: a random selection's per-sample draws depend on them and the errors
        name them. Without ids, a random selection names each image by a hash of its pixels,
        so its draw still does not depend on the batch.
        """
        self._validate(images, labels)
        if not isinstance(specified, GlobalSelection | RandomSelection | Specification | Tensor):
            raise TypeError(
                "specified must be an (N, C) {0, 1} tensor, a Specification or a selection "
                f"scheme (GlobalSelection, RandomSelection), got {type(specified).__name__}"
            )
        if isinstance(specified, RandomSelection) and specified.n_pert > self.k:
            raise ValueError(f"n_pert must be <= k = {self.k}, got n_pert = {specified.n_pert}")
        if ids is not None:
            ids = sample_ids(ids, images.shape[0])
        elif isinstance(specified, RandomSelection):
            ids = _content_ids(images)
        x = images.detach()
        w0, base, start = self._decode(x)

        with _eval_mode(self.model):
            # The start point's forward pass gives the clean scores and, when every sample is
            # eligible, is also iteration 0's: it keeps its graph (a step follows it unless
            # max_iter = 1), so the loop takes its first step without a second pass. The model
            # sees a copy, never the caller's tensor.
            steps = self.max_iter > 1
            x0 = start.clone().requires_grad_(steps)
            with torch.set_grad_enabled(steps):
                try:
                    scores0 = self._scores(x0, 0, None, ids)
                except RuntimeError as error:  # e.g. a shape the model cannot take
                    raise ValueError(
                        f"model failed on images of shape {tuple(images.shape)} (box {self.box}): "
                        f"{error}"
                    ) from error
            if not torch.equal(x0.detach(), start):
                raise ValueError(_IN_PLACE)
            clean_scores = scores0.detach()
            num_classes = clean_scores.shape[1]
            check_k(self.k, num_classes, num_classes - 1)
            spec = self._specify(specified, clean_scores, labels, ids)
            truth = labels.to(clean_scores.dtype)
            first = (x0, scores0) if bool(spec.eligible.all()) else None
            del x0, scores0  # with some sample not eligible the graph goes now; _run scores the others
            adv, adv_scores, tanh_l2, iterations, success, history = self._run(
                w0, base, start, clean_scores, truth, spec, ids, first
            )

        perturbation = (adv - x).flatten(1).norm(dim=1)
        bad = ~(torch.isfinite(adv).flatten(1).all(1) & torch.isfinite(perturbation))
        if bad.any():  # a model that maps a NaN image to finite scores
            raise ValueError(
                f"the attack produced a non-finite image for batch sample(s) "
                f"{bad.nonzero().flatten().tolist()[:10]}; the step overflowed (lower lr)"
            )
        clean_m = measures(clean_scores, truth, self.k)
        adv_m = measures(adv_scores, truth, self.k)
        unchanged = measures_unchanged(clean_m, adv_m)
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
            box=self.box,
            history=history,
        )

    def _run(self, w0, base, start, clean_scores, truth, spec, ids=None, first=None):
        """The loop. ``first``: ``(x, scores)`` of the start point's forward pass over the whole
        batch, graph attached, to serve as iteration 0's when every row is attacked (None: run
        iteration 0's forward pass here, on the eligible rows)."""
        n = w0.shape[0]
        device = w0.device
        adv = start.clone()
        adv_scores = clean_scores.clone()
        tanh_l2 = torch.zeros(n, dtype=w0.dtype, device=device)
        iterations = torch.zeros(n, dtype=torch.long, device=device)
        success = torch.zeros(n, dtype=torch.bool, device=device)
        rows = spec.eligible.nonzero().flatten()
        every = rows.numel() == n  # then the images themselves, not copies of all their rows
        w0_rows, base_rows = (w0, base) if every else (w0[rows], base[rows])
        state = State(
            rows=rows,
            w=w0_rows.clone(),
            w0=w0_rows,
            base=base_rows,
            velocity=torch.zeros_like(w0_rows),
            labels=truth[rows],
            specified=spec.specified[rows],
            required=spec.required[rows],
            clean_scores=clean_scores[rows],
            clean_in_top=(topk_mask(clean_scores, self.k) & spec.specified).sum(1)[rows],
            aux={key: v[rows] for key, v in self.init_aux(clean_scores, truth, spec.specified).items()},
        )
        records: list[tuple[Tensor, Tensor | None, Tensor, dict[str, Tensor]]] = []

        for it in range(self.max_iter):  # iterates 0 … max_iter − 1 are examined
            if state.rows.numel() == 0:
                break
            last = it == self.max_iter - 1
            if it == 0 and first is not None:
                x_it, scores = first
                first = None
            else:  # no step follows the last iterate: its forward pass builds no graph
                x_it = (start[state.rows] if it == 0 else self.image(state)).requires_grad_(not last)
                with torch.set_grad_enabled(not last):
                    scores = self._scores(x_it, it, state.rows, ids)
            with torch.no_grad():
                detached = scores.detach()
                still_in = (topk_mask(detached, self.k) & state.specified).sum(1)
                won = state.clean_in_top - still_in >= state.required  # ΔN ≥ required
                accepted = self.accept(detached, state)
                ok = won if accepted is None else won & accepted
                finished = last or bool(ok.all())  # every row stops at this iterate
                if finished or ok.any():  # freeze: keep this iterate of the rows that are done
                    done = slice(None) if finished else ok  # a slice: views, not copies
                    out = state.rows[done]
                    adv[out] = x_it.detach()[done]
                    adv_scores[out] = detached[done]
                    iterations[out] = it
                    success[out] = won[done]
                    tanh_l2[out] = (state.w[done] - state.w0[done]).flatten(1).norm(dim=1)
            if finished:
                break
            keep = slice(None)  # a view: no copy while no row froze
            if ok.any():
                keep = ~ok
                state = state.select(keep)
            aux_before = state.aux
            try:
                self.step(state, x_it, scores, keep)
            except RuntimeError as error:
                if "not have been used in the graph" not in str(error):
                    raise
                raise ValueError(
                    "the model's logits do not depend on its input through autograd (its forward "
                    "detaches the input, or runs its first layers under torch.no_grad()); the attack "
                    "needs the gradient of the logits with respect to the images"
                ) from error
            if self.record_history:
                records.append((state.rows, state.loss, detached[keep], aux_before))

        history = {}
        if self.record_history:
            history = self._history(records, n, clean_scores.shape[1], device)
        return adv, adv_scores, tanh_l2, iterations, success, history

    @staticmethod
    def _history(records, n, num_classes, device):
        steps = len(records)
        loss = torch.full((steps, n), float("nan"), device=device)
        scores = torch.full((steps, n, num_classes), float("nan"), device=device)
        aux: dict[str, Tensor] = {}
        for t, (rows, value, s, variables) in enumerate(records):
            if value is not None:
                loss[t, rows] = value.float()
            scores[t, rows] = s.float()
            for key, v in variables.items():
                if v.dim() == 1:  # one value per sample, e.g. TkMIA's λ's
                    aux.setdefault(key, torch.full((steps, n), float("nan"), device=device))
                    aux[key][t, rows] = v.detach().float()
        return {"loss": loss, "scores": scores, **aux}
