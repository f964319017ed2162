"""The convex relaxation of TkMIA's ranking constraints (book chapter "The convex relaxation").

The k-th largest score is not convex in the scores; the average of the top-m entries (ATk) is,
and bounds it from above:

    v_[m]  ≤  ATk_m(v) = (1/m) Σ_{i≤m} v_[i] = min_λ { λ + (1/m) Σ_j [v_j − λ]_+ },

with minimiser λ* = v_[m]. All functions act along the last dimension and keep the others.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tkmia._checks import as_int, check_loss_inputs, check_subset

__all__ = [
    "kth_largest",
    "average_top_k",
    "atk_variational",
    "atk_minimiser",
    "tkmia_terms",
    "tkmia_loss",
    "masked_amax",
    "masked_amin",
]


def _check_m(v: Tensor, m: int) -> int:
    if not isinstance(v, Tensor):
        raise TypeError(f"v must be a torch.Tensor, got {type(v).__name__}")
    m = as_int(m, "m")
    if not 1 <= m <= v.shape[-1]:
        raise ValueError(f"m must be in [1, {v.shape[-1]}] (the last dimension), got m = {m}")
    return m


def masked_amax(values: Tensor, mask: Tensor, keepdim: bool = False) -> Tensor:
    """The largest entry of ``values`` where ``mask`` is true, along the last dimension.

    The masked-out entries are replaced by the lowest finite value of ``values``' own dtype
    (``torch.finfo(dtype).min``), so nothing overflows in float16 or bfloat16; a row with an
    empty mask gets that lowest value (guard such rows, e.g. with ``torch.where``).
    Shape: values, mask (..., C) -> (...) (or (..., 1) with ``keepdim``).
    """
    low = torch.finfo(values.dtype).min
    return torch.where(mask.bool(), values, values.new_tensor(low)).amax(-1, keepdim=keepdim)


def masked_amin(values: Tensor, mask: Tensor, keepdim: bool = False) -> Tensor:
    """The smallest entry of ``values`` where ``mask`` is true, along the last dimension; the
    mirror of :func:`masked_amax` (an empty row gets ``torch.finfo(dtype).max``)."""
    high = torch.finfo(values.dtype).max
    return torch.where(mask.bool(), values, values.new_tensor(high)).amin(-1, keepdim=keepdim)


def kth_largest(v: Tensor, m: int) -> Tensor:
    """v_[m], the m-th largest entry along the last dimension.

    Shape: (..., C) -> (...).

    Example:
        >>> kth_largest(torch.tensor([1.0, 4.0, 2.0]), 2)
        tensor(2.)
    """
    m = _check_m(v, m)
    return torch.topk(v, m, dim=-1).values[..., -1]


def average_top_k(v: Tensor, m: int) -> Tensor:
    """ATk_m(v) = (1/m) Σ_{i≤m} v_[i], the mean of the m largest entries (convex in v).

    Shape: (..., C) -> (...).

    Example:
        >>> average_top_k(torch.tensor([1.0, 4.0, 2.0]), 2)
        tensor(3.)
    """
    m = _check_m(v, m)
    return torch.topk(v, m, dim=-1).values.mean(-1)


def atk_variational(v: Tensor, m: int, lam: Tensor | float) -> Tensor:
    """The variational form λ + (1/m) Σ_j [v_j − λ]_+ of ATk_m (Lemma: its minimum over λ is ATk_m).

    Args:
        v: values, shape (..., C).
        m: how many of the largest entries ATk averages, 1 ≤ m ≤ C.
        lam: λ, a float or a tensor of shape (...).
    Returns: shape (...); ≥ ATk_m(v) for every λ, with equality at λ = :func:`atk_minimiser`.
    """
    m = _check_m(v, m)
    lam = torch.as_tensor(lam, dtype=v.dtype, device=v.device)
    if lam.shape not in (torch.Size(), v.shape[:-1]):  # (N, 1) would broadcast to (N, N) silently
        raise ValueError(f"lam must be a number or of shape {tuple(v.shape[:-1])} (v's shape without "
                         f"its last dimension), got shape {tuple(lam.shape)}")
    return lam + torch.relu(v - lam.unsqueeze(-1)).sum(-1) / m


def atk_minimiser(v: Tensor, m: int) -> Tensor:
    """λ* = v_[m], a minimiser of :func:`atk_variational` over λ. Shape: (..., C) -> (...)."""
    return kth_largest(v, m)


def tkmia_terms(scores: Tensor, labels: Tensor, specified: Tensor, k: int, *,
                validate: bool = True) -> tuple[Tensor, Tensor]:
    """The two vectors of TkMIA's sub-goals, a and b (book/reference.md).

    a_j = max_{s∈S} f_s − f_j   (a_[C−k] ≤ 0  ⇔  no specified label in the top-k),
    b_j = f_j − min_{y∈Y'} f_y  (b_[k] ≤ 0    ⇔  every label of Y' = Y \\ S in the top-k).

    A row with an empty S (or an empty Y') has nothing to push out (or pull in): its a (or b)
    is all zeros, so that term of :func:`tkmia_loss` is 0.
    Shape: scores, labels, specified (N, C) -> a, b (N, C). ``validate=False`` skips the check
    that S ⊆ Y (a device sync; the attacks check their specification once, before the loop).
    """
    if validate:
        check_loss_inputs(scores, labels=labels, specified=specified)
        check_subset(specified, labels)
    spec = specified.bool()
    rest = labels.bool() & ~spec
    has_spec, has_rest = spec.any(-1, keepdim=True), rest.any(-1, keepdim=True)
    # an empty row's max/min is replaced by 0 before the subtraction: no overflow in fp16
    max_spec = torch.where(has_spec, masked_amax(scores, spec, keepdim=True), 0.0)
    min_rest = torch.where(has_rest, masked_amin(scores, rest, keepdim=True), 0.0)
    a = torch.where(has_spec, max_spec - scores, torch.zeros_like(scores))
    b = torch.where(has_rest, scores - min_rest, torch.zeros_like(scores))
    return a, b


def tkmia_loss(
    scores: Tensor,
    labels: Tensor,
    specified: Tensor,
    k: int,
    lambdas: tuple[Tensor, Tensor] | None = None,
    *,
    validate: bool = True,
) -> Tensor:
    """TkMIA's measure loss L(f) = ATk_{C−k}(a) + ATk_k(b), per sample (convex in the scores).

    With ``lambdas = (λ_a, λ_b)`` each ATk is replaced by its variational form at those λ's
    (Algorithm 1's form); at λ* = (a_[C−k], b_[k]) both forms are equal.

    Args:
        scores: logits f(x), shape (N, C).
        labels: ground truth y in {0, 1}, shape (N, C).
        specified: S ⊆ Y in {0, 1}, shape (N, C).
        k: the top-k size, 1 ≤ k ≤ C − 1.
        lambdas: optional (λ_a, λ_b), each of shape (N,).
        validate: check that labels and specified are {0, 1} with S ⊆ Y (reads them back: the
            attacks, which check their specification once, pass False inside their loop).
    Returns: shape (N,).

    Example:
        >>> f = torch.tensor([[3.0, 2.0, 1.0, 0.0]]); y = torch.tensor([[1.0, 0, 1, 1]])
        >>> tkmia_loss(f, y, torch.tensor([[1.0, 0, 0, 0]]), k=2)
        tensor([5.])
    """
    check_loss_inputs(scores, labels=labels, specified=specified)
    num_classes = scores.shape[-1]
    k = as_int(k, "k")
    if not 1 <= k <= num_classes - 1:
        raise ValueError(f"k must be in [1, {num_classes - 1}] for C = {num_classes}, got {k}")
    a, b = tkmia_terms(scores, labels, specified, k, validate=validate)
    if lambdas is None:
        return average_top_k(a, num_classes - k) + average_top_k(b, k)
    if not isinstance(lambdas, tuple | list) or len(lambdas) != 2:
        length = f" of length {len(lambdas)}" if isinstance(lambdas, tuple | list) else ""
        raise ValueError(f"lambdas must be a pair (lam_a, lam_b) of (N,) tensors, got "
                         f"{type(lambdas).__name__}{length}")
    lam_a, lam_b = lambdas
    return atk_variational(a, num_classes - k, lam_a) + atk_variational(b, k, lam_b)
