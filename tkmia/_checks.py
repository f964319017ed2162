"""The argument checks the core shares: one home for "an int but not a bool", "a finite number at
least ...", and the shape checks of scores, labels and k. Each raises naming the argument, the value
and what was expected.

A private module of :mod:`tkmia` (its parent), imported by the modules of the package; its names
are public to them.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["as_int", "as_float", "check_number", "int_in", "check_scores", "check_k", "check_labels",
           "check_loss_inputs", "check_subset"]


def _scalar(value: Any) -> Any:
    """A 0-d tensor or array as its Python scalar; anything else unchanged."""
    if isinstance(value, Tensor | np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def as_int(value: Any, name: str) -> int:
    """``value`` as a Python int: an int, a NumPy integer or a 0-d integer tensor/array (never a
    bool or a float, even an integral one); a ``TypeError`` naming ``name`` otherwise."""
    value = _scalar(value)
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    return int(value)


def as_float(value: Any, name: str) -> float:
    """``value`` as a finite Python float (ints, NumPy scalars, 0-d tensors pass; bools never)."""
    value = _scalar(value)
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


def check_number(name: str, value: Any, low: float, *, integer: bool = False, strict: bool = False):
    """``value`` as a finite int (``integer``) or float, > low (``strict``) or ≥ low; NumPy
    scalars and 0-d tensors are accepted, bools never."""
    value = _scalar(value)
    if integer:
        value = as_int(value, name)
    elif isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    else:
        value = float(value)
    if not math.isfinite(value) or (value <= low if strict else value < low):
        kind = "an int" if integer else "a finite number"
        raise ValueError(f"{name} must be {kind} {'>' if strict else '>='} {low}, got {value!r}")
    return value


def int_in(value: Any, name: str, low: int, high: int | None = None, why: str = "") -> int:
    """``value`` as a Python int in [low, high] (no upper bound when ``high`` is None); NumPy integers
    and 0-d integer tensors pass, bools and floats never. Every refusal is a ``ValueError``; ``why``
    (e.g. where the bound comes from) is appended to its message."""
    span = (f"an int >= {low}" if high is None else f"an int in [{low}, {high}]") + why
    try:
        number = as_int(value, name)
    except TypeError:
        raise ValueError(f"{name}={value!r}; expected {span}") from None
    if number < low or (high is not None and number > high):
        raise ValueError(f"{name}={value!r}; expected {span}")
    return number


def check_scores(scores: Tensor, name: str = "scores") -> None:
    """``scores`` is a floating (N, C) tensor without NaN (a NaN cannot be ranked)."""
    if not isinstance(scores, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(scores).__name__}")
    if scores.dim() != 2:
        raise ValueError(f"{name} must have shape (N, C), got shape {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {scores.dtype}")
    nan = torch.isnan(scores)
    if nan.any():
        rows = nan.any(1).nonzero().flatten().tolist()
        raise ValueError(
            f"{name} must not contain NaN (a NaN score cannot be ranked): samples {rows[:10]}"
            f"{' …' if len(rows) > 10 else ''} of {scores.shape[0]} have NaN scores"
        )


def check_k(k: int, num_classes: int, upper: int | None = None) -> int:
    """``k`` as an int in [1, upper] (default C); raises naming k otherwise."""
    upper = num_classes if upper is None else upper
    k = as_int(k, "k")
    if not 1 <= k <= upper:
        raise ValueError(f"k must be in [1, {upper}] for C = {num_classes} labels, got k = {k}")
    return k


def check_labels(labels: Tensor, scores: Tensor, name: str = "labels") -> Tensor:
    """``labels`` of the shape and device of ``scores``, holding only 0 and 1; returned as bool."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.shape != scores.shape:
        raise ValueError(
            f"{name} must have the shape of scores {tuple(scores.shape)}, got {tuple(labels.shape)}"
        )
    if labels.device != scores.device:
        raise ValueError(f"{name} is on {labels.device} but scores is on {scores.device}")
    binary = labels.bool()
    if not torch.equal(binary.to(labels.dtype), labels):
        raise ValueError(f"{name} must hold only 0 and 1")
    return binary


def check_loss_inputs(scores: Tensor, **masks: Tensor) -> None:
    """Shapes of a loss's inputs: scores (N, C) floating, every mask the same shape (no sync)."""
    if not isinstance(scores, Tensor) or scores.dim() != 2 or not scores.is_floating_point():
        raise ValueError(
            f"scores must be a floating (N, C) tensor of logits, got "
            f"{getattr(scores, 'shape', type(scores).__name__)}"
        )
    for name, mask in masks.items():
        if not isinstance(mask, Tensor) or mask.shape != scores.shape:
            raise ValueError(
                f"{name} must be a tensor of the shape of scores {tuple(scores.shape)}, got "
                f"{tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__}"
            )


def check_subset(specified: Tensor, labels: Tensor) -> None:
    """``specified`` and ``labels`` hold only 0 and 1, and every specified label is a true label
    (S ⊆ Y per sample). Reads the tensors back (a device sync on a GPU)."""
    for name, mask in (("labels", labels), ("specified", specified)):
        if not torch.equal(mask.bool().to(mask.dtype), mask):
            raise ValueError(f"{name} must hold only 0 and 1")
    outside = (specified.bool() & ~labels.bool()).reshape(-1, specified.shape[-1]).any(-1)
    if outside.any():
        rows = outside.nonzero().flatten().tolist()
        raise ValueError(f"specified holds labels that are not true labels in samples {rows[:10]} of "
                         f"{outside.numel()}: S must be a subset of Y (specified <= labels)")
