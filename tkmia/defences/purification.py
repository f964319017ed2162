"""Input purification against top-k multi-label attacks, its adaptive evaluation, and detection.

A *purifier* maps images (N, 3, H, W) in a box to images of the same shape in that box: JPEG
re-encoding (Dziugaite et al. 2016; Guo et al. 2018), bit-depth reduction and a median filter (the
"squeezers" of Xu, Evans and Qi 2018), and a randomised JPEG whose quality is drawn per image (a
defence that expectation over transformation is meaningful against). :class:`Purified` wraps a
model as ``model(purifier(x))`` with a chosen gradient: BPDA (the straight-through estimator of
Athalye, Carlini and Wagner 2018), the exact gradient of a differentiable purifier, or EOT (logits
averaged over draws of a randomised purifier, BPDA inside). A ``Purified`` is a model the attacks
of :mod:`tkmia.attacks` take as is.

:func:`evaluate_purifier` measures a purifier three ways on the same images: the attack against
the undefended model, the same adversarial images after purification (non-adaptive, a transfer),
and an adaptive attack on :class:`Purified` itself, every success judged by the selection scheme's
rule ΔN ≥ required (:meth:`tkmia.selection.Specification.success`). :func:`detect` flags an input
whose top-k moves under purification (feature squeezing), :func:`detection_rates` counts it.
"""

from __future__ import annotations

import contextlib
import io
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from tkmia._checks import as_int, int_in
from tkmia.attacks import Attack, AttackResult
from tkmia.metrics import delta_n, measures, measures_unchanged, topk_mask
from tkmia.selection import Specification, sample_ids

__all__ = ["Purifier", "JPEG", "BitDepth", "MedianFilter", "RandomJPEG", "Purified", "GRADIENTS",
           "PurificationResult", "evaluate_purifier", "top_k_changes", "detect", "DetectionRates",
           "detection_rates"]

#: the gradients :class:`Purified` offers: ``"bpda"`` (straight-through), ``"exact"`` (through the
#: purifier, differentiable purifiers only), ``"eot"`` (logits averaged over draws, BPDA inside)
GRADIENTS = ("bpda", "exact", "eot")


def _check_box(box) -> tuple[float, float]:
    if (
        not isinstance(box, tuple | list | np.ndarray)
        or len(box) != 2
        or not all(isinstance(b, numbers.Real) and not isinstance(b, bool) for b in box)
        or not all(math.isfinite(b) for b in box)
        or not box[0] < box[1]
    ):
        raise ValueError(f"box must be a pair of finite numbers (low, high) with low < high, got {box!r}")
    return float(box[0]), float(box[1])


class Purifier:
    """Base class: a map of images (N, 3, H, W) in ``box`` to images of the same shape, dtype and
    device in ``box``; subclasses fill :meth:`purify`. Calling one checks the images first.

    Class attributes: ``differentiable`` (whether autograd through it gives a useful gradient,
    what ``Purified(..., gradient="exact")`` needs) and ``randomised`` (whether two calls may
    differ; such a purifier has :meth:`reset`).
    """

    differentiable: ClassVar[bool] = False
    randomised: ClassVar[bool] = False

    def __init__(self, box: tuple[float, float] = (0.0, 1.0)):
        self.box = _check_box(box)

    def _params(self) -> dict:
        return {}

    def __repr__(self) -> str:
        inner = ", ".join(f"{key}={value!r}" for key, value in {**self._params(), "box": self.box}.items())
        return f"{type(self).__name__}({inner})"

    def __call__(self, images: Tensor) -> Tensor:
        """The purified images. Shape: (N, 3, H, W) -> (N, 3, H, W), in ``box``."""
        self.check(images)
        return self.purify(images)

    def purify(self, images: Tensor) -> Tensor:
        """The transformation itself, on checked images."""
        raise NotImplementedError

    def check(self, images: Tensor) -> None:
        """Raise unless ``images`` is a finite floating (N, 3, H, W) tensor in ``box``."""
        if not isinstance(images, Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"images must be a floating-point tensor, got dtype {images.dtype}")
        if not torch.isfinite(images).all():
            raise ValueError("images must be finite (found NaN or Inf)")
        low, high = self.box
        if images.numel() and (images.min() < low or images.max() > high):
            raise ValueError(
                f"images must lie in box = {self.box} of {self!r}, got values in "
                f"[{images.min().item():.4g}, {images.max().item():.4g}]; build the purifier with "
                "the box of the images (box=(low, high))"
            )


def _jpeg(images: Tensor, qualities: Sequence[int], box: tuple[float, float]) -> Tensor:
    """Each image i rounded to uint8 (0–255 over the box), JPEG-encoded in memory by Pillow at
    quality ``qualities[i]`` (Pillow's other defaults, 4:2:0 chroma subsampling), decoded, and
    mapped back to the box in the dtype and on the device of ``images``."""
    low, high = box
    scale = 255.0 / (high - low)
    pixels = ((images.detach() - low) * scale).round().clamp(0, 255).to(torch.uint8)
    pixels = pixels.permute(0, 2, 3, 1).cpu().numpy()
    out = np.empty_like(pixels)
    for i, (image, quality) in enumerate(zip(pixels, qualities, strict=True)):
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="JPEG", quality=int(quality))
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out[i] = np.asarray(decoded.convert("RGB"))
    back = torch.from_numpy(out).permute(0, 3, 1, 2).to(device=images.device, dtype=images.dtype)
    return back / scale + low


class JPEG(Purifier):
    """JPEG re-encoding at a fixed quality (Dziugaite et al. 2016; Guo et al. 2018).

    Each image is rounded to 8 bits (0–255 over the box, half to even), encoded as JPEG in memory
    by Pillow at ``quality`` and decoded; not differentiable (it leaves torch).

    Args:
        quality: Pillow's JPEG quality, an int in [1, 95].
        box: (low, high) pixel bounds of the images.

    Example:
        >>> JPEG(75)(images).shape == images.shape
        True
    """

    def __init__(self, quality: int = 75, *, box: tuple[float, float] = (0.0, 1.0)):
        super().__init__(box)
        self.quality = int_in(quality, "quality", 1, 95,
                              " (Pillow's JPEG quality; above 95 it stops compressing)")

    def _params(self) -> dict:
        return {"quality": self.quality}

    def purify(self, images: Tensor) -> Tensor:
        return _jpeg(images, [self.quality] * images.shape[0], self.box)


class BitDepth(Purifier):
    """Bit-depth reduction: each pixel rounded to the nearest of 2**bits evenly spaced levels of
    the box (low and high included), x ↦ low + round((x − low)/(high − low) · L) / L · (high − low)
    with L = 2**bits − 1 (Xu et al. 2018). Its gradient is zero almost everywhere.

    Args:
        bits: an int in [1, 8]; 8 is the rounding to uint8.
        box: (low, high) pixel bounds of the images.
    """

    def __init__(self, bits: int = 4, *, box: tuple[float, float] = (0.0, 1.0)):
        super().__init__(box)
        self.bits = int_in(bits, "bits", 1, 8)

    def _params(self) -> dict:
        return {"bits": self.bits}

    def purify(self, images: Tensor) -> Tensor:
        low, high = self.box
        levels = 2**self.bits - 1
        steps = torch.round((images - low) / (high - low) * levels)
        return (low + steps / levels * (high - low)).clamp(low, high)


class MedianFilter(Purifier):
    """A size × size median per channel, reflect padding (the edge pixel is not repeated), in
    torch: differentiable almost everywhere (the gradient goes to each window's median pixel).

    Args:
        size: the window's side, an odd int ≥ 3; the images need H, W > size // 2.
        box: (low, high) pixel bounds of the images.
    """

    differentiable = True

    def __init__(self, size: int = 3, *, box: tuple[float, float] = (0.0, 1.0)):
        super().__init__(box)
        size = int_in(size, "size", 3, None, " and odd (the window is centred on its pixel)")
        if size % 2 == 0:
            raise ValueError(f"size={size}; expected an odd int >= 3 (the window is centred on its pixel)")
        self.size = size

    def _params(self) -> dict:
        return {"size": self.size}

    def purify(self, images: Tensor) -> Tensor:
        r = self.size // 2
        if min(images.shape[2:]) <= r:
            raise ValueError(
                f"images of shape {tuple(images.shape)} are too small for size={self.size}: reflect "
                f"padding needs H and W > {r}; use a smaller size"
            )
        padded = F.pad(images, (r, r, r, r), mode="reflect")
        windows = padded.unfold(2, self.size, 1).unfold(3, self.size, 1)  # (N, 3, H, W, s, s)
        return windows.reshape(*windows.shape[:4], -1).median(dim=-1).values


class RandomJPEG(Purifier):
    """JPEG re-encoding at a quality drawn uniformly from ``qualities`` per image and per call: a
    randomised defence, for EOT. The draws come from a ``torch.Generator`` seeded with ``seed``:
    the sequence of outputs is fixed by the seed and the sequence of calls; :meth:`reset` starts it
    again.

    Args:
        qualities: the Pillow qualities to draw from, ints in [1, 95] (at least one).
        seed: an int ≥ 0.
        box: (low, high) pixel bounds of the images.
    """

    randomised = True

    def __init__(self, qualities: Sequence[int] = (30, 50, 70, 90), seed: int = 0, *,
                 box: tuple[float, float] = (0.0, 1.0)):
        super().__init__(box)
        if isinstance(qualities, str | bytes) or not isinstance(qualities, Sequence) or not qualities:
            raise ValueError(f"qualities must be a non-empty sequence of ints in [1, 95], got {qualities!r}")
        self.qualities = tuple(int_in(q, "qualities", 1, 95, " (Pillow's JPEG quality)") for q in qualities)
        self.seed = int_in(seed, "seed", 0)
        self.generator = torch.Generator()
        self.reset()

    def _params(self) -> dict:
        return {"qualities": self.qualities, "seed": self.seed}

    def reset(self) -> None:
        """Restart the draws from ``seed``."""
        self.generator.manual_seed(self.seed)

    def draw(self, n: int) -> list[int]:
        """The qualities of the next n images (advances the generator)."""
        picks = torch.randint(len(self.qualities), (n,), generator=self.generator)
        return [self.qualities[i] for i in picks.tolist()]

    def purify(self, images: Tensor) -> Tensor:
        return _jpeg(images, self.draw(images.shape[0]), self.box)


def _straight_through(images: Tensor, purifier: Purifier) -> Tensor:
    """purifier(x) forward, the identity backward (BPDA). Written p + (x − x.detach()) rather than
    x + (p − x).detach() so the forward value is p(x) bit for bit (x − x = 0 exactly)."""
    return purifier(images.detach()) + (images - images.detach())


class Purified(nn.Module):
    """A model defended by a purifier: forward = model(purifier(x)), with a chosen gradient.

    Args:
        model: maps images (N, 3, H, W) in the purifier's box to logits (N, C).
        purifier: a :class:`Purifier`.
        gradient: ``"bpda"``: the backward pass takes the purifier as the identity, so the
            gradient at x is the model's gradient at purifier(x) (Athalye et al. 2018);
            ``"exact"``: autograd through the purifier (a differentiable one only, e.g.
            :class:`MedianFilter`); ``"eot"``: the logits averaged over ``eot_samples`` draws of a
            randomised purifier, each with BPDA (expectation over transformation).
        eot_samples: the number of draws per forward pass for ``"eot"``, an int ≥ 1.

    Example:
        >>> defended = Purified(model, BitDepth(3), "bpda")
        >>> result = TkMIA(defended, k=3)(images, labels, GlobalSelection([0, 1]))
    """

    def __init__(self, model: nn.Module, purifier: Purifier, gradient: str = "bpda", *, eot_samples: int = 8):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(purifier, Purifier):
            raise TypeError(f"purifier must be a Purifier (JPEG, BitDepth, MedianFilter, RandomJPEG), "
                            f"got {type(purifier).__name__}")
        if gradient not in GRADIENTS:
            raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
        if gradient == "exact" and not purifier.differentiable:
            raise ValueError(
                f"gradient='exact' needs a differentiable purifier, got {purifier!r} (its gradient is "
                "zero almost everywhere or it leaves torch); use gradient='bpda'"
            )
        if gradient == "eot" and not purifier.randomised:
            raise ValueError(
                f"gradient='eot' averages over draws of a randomised purifier, but {purifier!r} is "
                "deterministic (every draw is the same); use gradient='bpda', or a RandomJPEG"
            )
        self.model, self.purifier, self.gradient = model, purifier, gradient
        self.eot_samples = int_in(eot_samples, "eot_samples", 1)

    def extra_repr(self) -> str:
        eot = f", eot_samples={self.eot_samples}" if self.gradient == "eot" else ""
        return f"purifier={self.purifier!r}, gradient={self.gradient!r}{eot}"

    def forward(self, images: Tensor) -> Tensor:
        """Logits (N, C) of the purified images (N, 3, H, W)."""
        if self.gradient == "exact":
            return self.model(self.purifier(images))
        if self.gradient == "bpda":
            return self.model(_straight_through(images, self.purifier))
        total = self.model(_straight_through(images, self.purifier))
        for _ in range(self.eot_samples - 1):
            total = total + self.model(_straight_through(images, self.purifier))
        return total / self.eot_samples


@contextlib.contextmanager
def _evaluating(model: nn.Module):
    """Eval mode and no graph, the mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _reset(purifier: Purifier) -> None:
    if purifier.randomised:
        purifier.reset()


@dataclass
class PurificationResult:
    """:func:`evaluate_purifier`'s answer for N images; every tensor (N,) unless stated.

    "Defended" means judged on ``Purified(model, purifier)``: its clean scores are the reference
    and its own specification (the selection applied to them) the goal; see
    :func:`evaluate_purifier`.

    Attributes:
        k: the top-k size; gradient: the adaptive attack's gradient (None: not run).
        eligible: eligible against the undefended model, bool.
        eligible_defended: eligible against the defended model, bool.
        success_undefended, imperceptible_undefended: the attack on the plain model, bool.
        success_purified, imperceptible_purified: the same adversarial images after
            purification, judged on the defended model (non-adaptive), bool.
        success_adaptive, imperceptible_adaptive: the attack run on the defended model itself,
            judged on it, bool; None when not adaptive.
        delta_n_purified, delta_n_adaptive: ΔN on the defended model, long (None: not adaptive).
        perturbation_l2_255, perturbation_l2_255_adaptive: ‖x_adv − x‖₂ in 0–255 pixel units.
        adv_images, adv_images_adaptive: the two attacks' x_adv, (N, 3, H, W).
        clean_precision_at_k, clean_map_at_k: the plain model's P@k, mAP@k on the clean images.
        defended_precision_at_k, defended_map_at_k: the defended model's (the defence's cost).
    """

    k: int
    gradient: str | None
    eligible: Tensor
    eligible_defended: Tensor
    success_undefended: Tensor
    imperceptible_undefended: Tensor
    success_purified: Tensor
    imperceptible_purified: Tensor
    delta_n_purified: Tensor
    perturbation_l2_255: Tensor
    adv_images: Tensor
    clean_precision_at_k: Tensor
    clean_map_at_k: Tensor
    defended_precision_at_k: Tensor
    defended_map_at_k: Tensor
    success_adaptive: Tensor | None = None
    imperceptible_adaptive: Tensor | None = None
    delta_n_adaptive: Tensor | None = None
    perturbation_l2_255_adaptive: Tensor | None = None
    adv_images_adaptive: Tensor | None = None

    def __len__(self) -> int:
        return self.eligible.shape[0]

    def rates(self) -> dict[str, float]:
        """Success rates, each over the samples eligible against both models (so the three are
        comparable; NaN when there are none), and the mean clean P@k and mAP@k of both models
        over every sample."""
        both = self.eligible & self.eligible_defended
        n = int(both.sum())

        def rate(flags: Tensor | None) -> float:
            return float("nan") if flags is None or n == 0 else float(flags[both].sum()) / n

        return {
            "n_eligible": float(n),
            "success_undefended": rate(self.success_undefended),
            "success_purified": rate(self.success_purified),
            "success_adaptive": rate(self.success_adaptive),
            "imperceptible_undefended": rate(self.imperceptible_undefended),
            "imperceptible_purified": rate(self.imperceptible_purified),
            "imperceptible_adaptive": rate(self.imperceptible_adaptive),
            "clean_precision_at_k": float(self.clean_precision_at_k.mean()),
            "clean_map_at_k": float(self.clean_map_at_k.mean()),
            "defended_precision_at_k": float(self.defended_precision_at_k.mean()),
            "defended_map_at_k": float(self.defended_map_at_k.mean()),
        }


def _rows(selection, lo: int, hi: int):
    """The part of ``selection`` for the batch of samples lo … hi − 1: a mask's or a
    Specification's rows; a scheme (one rule for every sample) as it is."""
    if isinstance(selection, Tensor):
        return selection[lo:hi]
    if isinstance(selection, Specification):
        return selection.index(torch.arange(lo, min(hi, len(selection)), device=selection.eligible.device))
    return selection


def _judged(reference: AttackResult, adv_scores: Tensor, labels: Tensor, k: int):
    """Success, imperceptible and ΔN of ``adv_scores`` against the clean scores and the
    specification of ``reference`` (a start-only attack on the defended model)."""
    spec = Specification(reference.specified, reference.eligible, reference.required)
    success = spec.success(reference.clean_scores, adv_scores, k)
    truth = labels.to(adv_scores.dtype)
    unchanged = measures_unchanged(measures(reference.clean_scores, truth, k), measures(adv_scores, truth, k))
    return success, success & unchanged, delta_n(reference.clean_scores, adv_scores, reference.specified, k)


def evaluate_purifier(model: nn.Module, purifier: Purifier, attack_cls: type[Attack], images: Tensor,
                      labels: Tensor, selection, *, k: int, adaptive: bool = True,
                      attack_kwargs: dict | None = None, gradient: str | None = None, eot_samples: int = 8,
                      ids=None, batch_size: int | None = None, progress: bool = False) -> PurificationResult:
    """Attack a model with and without a purifier, non-adaptively and adaptively.

    Per batch: (1) ``attack_cls(model, k, **attack_kwargs)`` on the plain model; (2) its x_adv
    purified and judged on the defended model D = ``Purified(model, purifier)``; (3) with
    ``adaptive``, ``attack_cls(D, k, **attack_kwargs)`` run on D itself and judged the same way.
    Judged on D means the scheme's rule ΔN ≥ required (:meth:`~tkmia.selection.Specification.success`)
    with D's clean scores D(x) as the reference and ``selection`` applied to them as the goal: what
    the adaptive attack's engine itself uses, so (2) and (3) answer one question (does the defended
    system's top-k lose the specified labels it shows on the clean image?) and a label that
    purification alone already drops from the clean top-k is not counted as the attack's. They
    are read from a start-only run (``max_iter=1``) of the attack on D.

    Args:
        model: the undefended model, images in the purifier's box -> logits (N, C).
        purifier: a :class:`Purifier`; its box must be the attack's.
        attack_cls: an :class:`~tkmia.attacks.engine.Attack` subclass, e.g. ``TkMIA``.
        images, labels: (N, 3, H, W) in the box and (N, C) in {0, 1}.
        selection: what the attack takes as ``specified`` (a scheme, a Specification or a mask).
        k: the top-k size.
        adaptive: also run the adaptive attack.
        attack_kwargs: the attack's other keyword arguments (lr, max_iter, box, ...).
        gradient: D's gradient, one of :data:`GRADIENTS`; default ``"eot"`` for a randomised
            purifier, ``"bpda"`` otherwise. A randomised purifier is reset before every judgement
            (so clean and adversarial images see the same draws) and judged with EOT averaging.
        eot_samples: draws per forward pass with ``"eot"``.
        ids: (N,) sample ids for a random selection (default: a hash of each image).
        batch_size: images per batch (None: one batch); progress: a tqdm bar over batches.

    Returns:
        a :class:`PurificationResult`.

    Example:
        >>> out = evaluate_purifier(model, BitDepth(3), TkMIA, images, labels, GlobalSelection([0]), k=3)
        >>> out.rates()["success_adaptive"]
    """
    if not isinstance(attack_cls, type) or not issubclass(attack_cls, Attack):
        raise TypeError(
            f"attack_cls must be a subclass of tkmia.attacks.Attack (e.g. TkMIA), got {attack_cls!r}"
        )
    if not isinstance(purifier, Purifier):
        raise TypeError(f"purifier must be a Purifier, got {type(purifier).__name__}")
    kwargs = dict(attack_kwargs or {})
    if "k" in kwargs:
        raise ValueError("attack_kwargs must not hold 'k': pass k=... to evaluate_purifier itself")
    box = _check_box(kwargs.get("box", (0.0, 1.0)))
    if box != purifier.box:
        raise ValueError(f"the attack's box {box} differs from the purifier's {purifier.box}; build both on "
                         "the box of the images")
    if not isinstance(adaptive, bool):
        raise TypeError(f"adaptive must be True or False, got {adaptive!r}")
    if gradient is None:
        gradient = "eot" if purifier.randomised else "bpda"
    judge = Purified(model, purifier, gradient, eot_samples=eot_samples)
    plain = attack_cls(model, k, **kwargs)
    start_only = attack_cls(judge, k, **{**kwargs, "max_iter": 1})
    on_defended = attack_cls(judge, k, **kwargs)
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a tensor (N, 3, H, W), got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    n = images.shape[0]
    if ids is not None:
        ids = sample_ids(ids, n)
    size = n if batch_size is None else int_in(batch_size, "batch_size", 1)
    parts: dict[str, list[Tensor]] = {}

    def keep(**values: Tensor) -> None:
        for key, value in values.items():
            parts.setdefault(key, []).append(value)

    for lo in tqdm(range(0, n, max(size, 1)), desc=f"purification {attack_cls.name}", disable=not progress,
                   unit="batch"):
        x, y = images[lo:lo + size], labels[lo:lo + size]
        batch_ids = None if ids is None else ids[lo:lo + size]
        chosen = _rows(selection, lo, lo + size)
        plain_result = plain(x, y, chosen, batch_ids)
        _reset(purifier)
        reference = start_only(x, y, chosen, batch_ids)
        with _evaluating(judge):
            _reset(purifier)
            adv_scores = judge(plain_result.adv_images)
        success, imperceptible, dn = _judged(reference, adv_scores, y, k)
        clean_m, defended_m = plain_result.clean_measures(), measures(reference.clean_scores, y.to(
            reference.clean_scores.dtype), k)
        keep(eligible=plain_result.eligible, eligible_defended=reference.eligible,
             success_undefended=plain_result.success, imperceptible_undefended=plain_result.imperceptible,
             success_purified=success, imperceptible_purified=imperceptible, delta_n_purified=dn,
             perturbation_l2_255=plain_result.perturbation_l2_255, adv_images=plain_result.adv_images,
             clean_precision_at_k=clean_m["precision_at_k"], clean_map_at_k=clean_m["map_at_k"],
             defended_precision_at_k=defended_m["precision_at_k"], defended_map_at_k=defended_m["map_at_k"])
        if adaptive:
            _reset(purifier)
            result = on_defended(x, y, chosen, batch_ids)
            with _evaluating(judge):
                _reset(purifier)
                adv_scores = judge(result.adv_images)
            success, imperceptible, dn = _judged(reference, adv_scores, y, k)
            keep(success_adaptive=success, imperceptible_adaptive=imperceptible, delta_n_adaptive=dn,
                 perturbation_l2_255_adaptive=result.perturbation_l2_255,
                 adv_images_adaptive=result.adv_images)
    joined = {key: torch.cat(values) for key, values in parts.items()}
    return PurificationResult(k=k, gradient=gradient if adaptive else None, **joined)


def _scores(model: nn.Module, images: Tensor, size: int, progress: bool, purifier: Purifier | None):
    out = []
    with _evaluating(model):
        for lo in tqdm(range(0, images.shape[0], size), desc="detection", disable=not progress, unit="batch"):
            x = images[lo:lo + size]
            out.append(model(x if purifier is None else purifier(x)))
    return torch.cat(out)


def top_k_changes(model: nn.Module, purifier: Purifier, images: Tensor, k: int, *,
                  batch_size: int | None = None, progress: bool = False) -> Tensor:
    """How many labels of the input's top-k leave it under purification:
    k − |T_k(model(x)) ∩ T_k(model(purifier(x)))|. Shape: (N, 3, H, W) -> (N,) long in [0, k].

    A randomised purifier draws as it is called (no reset here)."""
    if not isinstance(purifier, Purifier):
        raise TypeError(f"purifier must be a Purifier, got {type(purifier).__name__}")
    purifier.check(images)
    size = images.shape[0] if batch_size is None else int_in(batch_size, "batch_size", 1)
    size = max(size, 1)
    plain = _scores(model, images, size, progress, None)
    purified = _scores(model, images, size, progress, purifier)
    k = int_in(k, "k", 1, plain.shape[1])
    return k - (topk_mask(plain, k) & topk_mask(purified, k)).sum(1)


def detect(model: nn.Module, purifier: Purifier, images: Tensor, k: int, threshold: int = 1, *,
           batch_size: int | None = None, progress: bool = False) -> Tensor:
    """Feature-squeezing-style detection (Xu et al. 2018) on the top-k set: flag an input when at
    least ``threshold`` labels of its top-k leave the top-k of its purified version
    (:func:`top_k_changes` ≥ threshold, 1 ≤ threshold ≤ k). Shape: (N, 3, H, W) -> (N,) bool.

    Example:
        >>> flags = detect(model, MedianFilter(3), images, k=3, threshold=1)
    """
    k = as_int(k, "k")
    threshold = int_in(threshold, "threshold", 1, max(k, 1), f" (at most k = {k} labels can leave the top-k)")
    return top_k_changes(model, purifier, images, k, batch_size=batch_size, progress=progress) >= threshold


@dataclass
class DetectionRates:
    """:func:`detection_rates`' answer.

    Attributes:
        detection_rate: the fraction of successful adversarial images flagged (NaN: none).
        false_alarm_rate: the fraction of clean images flagged (NaN: none).
        n_adversarial, n_clean: the two denominators.
        detected: the flags of the adversarial images, (N,) bool (all N, successful or not).
        false_alarms: the flags of the clean images, (M,) bool.
    """

    detection_rate: float
    false_alarm_rate: float
    n_adversarial: int
    n_clean: int
    detected: Tensor
    false_alarms: Tensor


def detection_rates(model: nn.Module, purifier: Purifier, images: Tensor, adv_images: Tensor, success: Tensor,
                    *, k: int, threshold: int = 1, batch_size: int | None = None,
                    progress: bool = False) -> DetectionRates:
    """The detector of :func:`detect` on clean ``images`` (M, 3, H, W) (false alarms) and on
    ``adv_images`` (N, 3, H, W), counted where ``success`` (N,) bool holds (e.g. an
    :class:`~tkmia.attacks.engine.AttackResult`'s ``adv_images`` and ``success``)."""
    n = adv_images.shape[0]
    if not isinstance(success, Tensor) or success.dtype != torch.bool or success.shape != (n,):
        raise ValueError(f"success must be a bool tensor of shape ({adv_images.shape[0]},), one flag per "
                         f"adversarial image, got {getattr(success, 'shape', type(success).__name__)}")
    options = {"batch_size": batch_size, "progress": progress}
    detected = detect(model, purifier, adv_images, k, threshold, **options)
    alarms = detect(model, purifier, images, k, threshold, **options)
    n_adv, n_clean = int(success.sum()), alarms.shape[0]
    return DetectionRates(
        detection_rate=float(detected[success].sum()) / n_adv if n_adv else float("nan"),
        false_alarm_rate=float(alarms.sum()) / n_clean if n_clean else float("nan"),
        n_adversarial=n_adv,
        n_clean=n_clean,
        detected=detected,
        false_alarms=alarms,
    )
