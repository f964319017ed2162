"""Certified top-k multi-label robustness by randomised smoothing (MultiGuard).

The base classifier returns the top-k' labels of ``model(x + ε)``, ε ~ N(0, σ²I) in the units of the
images ([0, 1]). The smoothed classifier g returns the k labels with the largest
p_j(x) = P(j ∈ top-k'(x + ε)). MultiGuard (Jia, Qu and Gong, NeurIPS 2022, Theorem 1; the top-k
case k' = 1 is Jia, Cao, Wang and Gong, ICLR 2020) certifies how many true labels stay in g's top k
for every perturbation of ℓ2 norm at most R.

The theorem, as this module computes it. Sort the lower bounds of the t true labels,
p̲_{a_1} ≥ … ≥ p̲_{a_t}, and the upper bounds of the m = C - t other labels, p̄_{b_1} ≥ … ≥ p̄_{b_m}.
Then |L(x) ∩ g(x + δ)| ≥ e for every ‖δ‖₂ ≤ R when

    max{Φ(Φ⁻¹(p̲_{a_e}) - R/σ), max_{u=1..t-e+1} (k'/u) Φ(Φ⁻¹(A_u / k') - R/σ)}
        >  min{Φ(Φ⁻¹(p̄_{b_{k-e+1}}) + R/σ), min_{v=1..k-e+1} (k'/v) Φ(Φ⁻¹(B_v / k') + R/σ)},

with A_u = p̲_{a_e} + … + p̲_{a_{e+u-1}} and B_v = p̄_{b_{k-e+2-v}} + … + p̄_{b_{k-e+1}} (arguments of
Φ⁻¹ clipped to [0, 1]); the one-label terms are the bound of a single label's probability (Cohen,
Rosenfeld and Kolter 2019). With k' > 1 both are tighter than the u = 1 and v = 1 terms: x ↦ Φ(Φ⁻¹(x) -
c) is convex and x ↦ Φ(Φ⁻¹(x) + c) concave for c > 0, both 0 at 0. When k - e + 1 > m the right side is
empty (-∞): k - m true labels are in every top-k set. The certified intersection size is the largest such
e ≤ min(k, t), 0 when there is none (the search over e). The bounds are one-sided Clopper–Pearson bounds
at level α/C each (Bonferroni over the C labels: the certificate uses one bound per label), so all of
them hold together with probability ≥ 1 - α.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from tkmia._checks import as_float, check_labels, int_in
from tkmia.metrics import topk_indices

__all__ = ["SmoothedClassifier", "Certificate", "certify", "certified_size", "certified_radius",
           "clopper_pearson_lower", "clopper_pearson_upper"]


# --- one-sided Clopper–Pearson bounds (no scipy in the core) ------------------------------------------

def _betainc(a: Tensor, b: Tensor, x: Tensor, iterations: int = 20000) -> Tensor:
    """The regularised incomplete beta function I_x(a, b), float64, elementwise (a, b > 0).

    Its continued fraction (DLMF 8.17.22) evaluated by the modified Lentz method, on the side of
    x < (a + 1) / (a + b + 2) where it converges fast; I_x(a, b) = 1 - I_{1-x}(b, a) on the other.
    Each element stops at its own convergence (a converged element is frozen).
    """
    flip = x > (a + 1) / (a + b + 2)
    a, b, x = torch.where(flip, b, a), torch.where(flip, a, b), torch.where(flip, 1 - x, x)
    tiny = 1e-300
    log_front = (a * torch.log(x.clamp_min(tiny)) + b * torch.log1p(-x)
                 - torch.lgamma(a) - torch.lgamma(b) + torch.lgamma(a + b) - torch.log(a))
    c = torch.ones_like(x)
    d = 1 - (a + b) * x / (a + 1)
    d = torch.where(d.abs() < tiny, torch.full_like(d, tiny), d).reciprocal()
    fraction = d.clone()
    active = torch.ones_like(x, dtype=torch.bool)
    for m in range(1, iterations + 1):
        change = torch.ones_like(x)
        for step in (0, 1):
            if step == 0:
                num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
            else:
                num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
            d = 1 + num * d
            d = torch.where(d.abs() < tiny, torch.full_like(d, tiny), d).reciprocal()
            c = 1 + num / c
            c = torch.where(c.abs() < tiny, torch.full_like(c, tiny), c)
            change = c * d
            fraction = torch.where(active, fraction * change, fraction)
        active = active & ((change - 1).abs() >= 1e-15)
        if not bool(active.any()):
            break
    value = torch.exp(log_front) * fraction
    value = torch.where(x <= 0, torch.zeros_like(value), value)
    return torch.where(flip, 1 - value, value)


def _beta_quantile(q: float, a: Tensor, b: Tensor) -> Tensor:
    """The q-quantile of Beta(a, b), elementwise, by Newton steps kept inside a bisection bracket.

    Starts from the normal approximation; stops when every step is below 1e-13 of its point.
    """
    lo, hi = torch.zeros_like(a), torch.ones_like(a)
    mean, var = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
    z = torch.special.ndtri(torch.tensor(q, dtype=torch.float64))
    x = (mean + z * var.sqrt()).clamp(1e-12, 1 - 1e-12)
    log_norm = torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
    for _ in range(200):
        f = _betainc(a, b, x) - q
        lo, hi = torch.where(f < 0, x, lo), torch.where(f < 0, hi, x)
        density = torch.exp((a - 1) * torch.log(x.clamp_min(1e-300)) + (b - 1) * torch.log1p(-x) - log_norm)
        newton = x - f / density
        inside = (newton >= lo) & (newton <= hi) & torch.isfinite(newton)
        new = torch.where(f == 0, x, torch.where(inside, newton, (lo + hi) / 2))
        done = (new - x).abs() <= 1e-13 * new.abs()
        x = new
        if bool(done.all()):
            break
    return x


def _check_counts(counts: Tensor, n: int, alpha: float) -> tuple[Tensor, int, float]:
    n = int_in(n, "n", 1)
    alpha = as_float(alpha, "alpha")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r}; expected a failure probability strictly between 0 and 1")
    counts = torch.as_tensor(counts)
    if counts.is_floating_point() or counts.is_complex() or counts.dtype == torch.bool:
        raise ValueError(f"counts must be an integer tensor of successes, got dtype {counts.dtype}")
    if counts.numel() and (counts.min() < 0 or counts.max() > n):
        raise ValueError(f"counts must lie in [0, n={n}], got values in [{int(counts.min())}, "
                         f"{int(counts.max())}]")
    return counts.to(torch.float64), n, alpha


def clopper_pearson_lower(counts: Tensor, n: int, alpha: float) -> Tensor:
    """One-sided Clopper–Pearson lower bound: P(p ≥ bound) ≥ 1 - alpha for x ~ Binomial(n, p).

    The alpha-quantile of Beta(x, n - x + 1); 0 where x = 0. Shape: counts (...) long -> (...) float64.

    Example:
        >>> clopper_pearson_lower(torch.tensor([90]), 100, 0.05)  # about 0.836
    """
    x, n, alpha = _check_counts(counts, n, alpha)
    safe = x.clamp_min(1)
    bound = _beta_quantile(alpha, safe, n - safe + 1) if x.numel() else x.clone()
    return torch.where(x > 0, bound, torch.zeros_like(x))


def clopper_pearson_upper(counts: Tensor, n: int, alpha: float) -> Tensor:
    """One-sided Clopper–Pearson upper bound: P(p ≤ bound) ≥ 1 - alpha for x ~ Binomial(n, p).

    The (1 - alpha)-quantile of Beta(x + 1, n - x); 1 where x = n. Shape: (...) long -> (...) float64.
    """
    x, n, alpha = _check_counts(counts, n, alpha)
    safe = x.clamp_max(n - 1)
    bound = _beta_quantile(1 - alpha, safe + 1, n - safe) if x.numel() else x.clone()
    return torch.where(x < n, bound, torch.ones_like(x))


# --- the theorem ------------------------------------------------------------------------------------

def _check_bounds(lower: Tensor, upper: Tensor, labels: Tensor, k: int, k_base: int,
                  sigma: float) -> tuple[Tensor, Tensor, Tensor, int, int, float]:
    for name, value in (("lower", lower), ("upper", upper)):
        if not isinstance(value, Tensor) or value.dim() != 2 or not value.is_floating_point():
            raise ValueError(f"{name} must be a floating (N, C) tensor of probability bounds, got "
                             f"{getattr(value, 'shape', type(value).__name__)}")
        if value.numel() and (torch.isnan(value).any() or value.min() < 0 or value.max() > 1):
            raise ValueError(f"{name} must hold probabilities in [0, 1] (no NaN)")
    if upper.shape != lower.shape:
        raise ValueError(f"upper must have the shape of lower {tuple(lower.shape)}, got {tuple(upper.shape)}")
    truth = check_labels(labels, lower)
    num_classes = lower.shape[1]
    k = int_in(k, "k", 1, num_classes, f" (C = {num_classes} labels)")
    k_base = int_in(k_base, "k_base", 1, num_classes, f" (C = {num_classes} labels)")
    sigma = _check_sigma(sigma)
    return lower.to(torch.float64), upper.to(torch.float64), truth, k, k_base, sigma


def _check_sigma(sigma: Any) -> float:
    try:
        value = as_float(sigma, "sigma")
    except (TypeError, ValueError):
        value = None
    if value is None or value <= 0:
        raise ValueError(f"sigma={sigma!r}; expected the noise standard deviation, a number > 0 in the units "
                         f"of the images ([0, 1])")
    return value


def _check_radii(radii: Any) -> Tensor:
    values = torch.as_tensor(radii, dtype=torch.float64).reshape(-1)
    if values.numel() == 0 or not torch.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"radii={radii!r}; expected one or more finite l2 radii >= 0 in the units of the "
                         f"images ([0, 1])")
    return values


class _Sides:
    """The theorem's Φ⁻¹ terms for one set of bounds, for e = 1..k (precomputed once).

    za (N, k, C): Φ⁻¹(A_u / k') for u = 1..C (valid where ``ua``); zb (N, k, k): Φ⁻¹(B_v / k') for
    v = 1..k (valid where ``vb``); ``free`` (N, k): no right side (k - e + 1 > m); ``possible``
    (N, k): e ≤ t.
    """

    def __init__(self, lower: Tensor, upper: Tensor, truth: Tensor, k: int, k_base: int):
        num, num_classes = lower.shape
        t, m = truth.sum(1), (~truth).sum(1)
        a = torch.sort(torch.where(truth, lower, -1.0), dim=1, descending=True).values.clamp_min(0)
        b = torch.sort(torch.where(truth, -1.0, upper), dim=1, descending=True).values.clamp_min(0)
        zero = lower.new_zeros(num, 1)
        ca, cb = torch.cat([zero, a.cumsum(1)], 1), torch.cat([zero, b.cumsum(1)], 1)   # (N, C + 1)
        e = torch.arange(1, k + 1)                                                      # (k,)
        u = torch.arange(1, num_classes + 1)                                            # (C,)
        end_a = (e[:, None] - 1 + u[None, :]).clamp_max(num_classes)                    # (k, C)
        sum_a = ca[:, end_a] - ca[:, (e - 1)][:, :, None]                               # (N, k, C)
        self.ua = (e[None, :, None] - 1 + u[None, None, :]) <= t[:, None, None]
        top = k - e + 1                                                                 # (k,) index k-e+1
        v = torch.arange(1, k + 1)
        start_b = (top[:, None] - v[None, :]).clamp_min(0)                              # (k, k)
        sum_b = cb[:, top.clamp_max(num_classes)][:, :, None] - cb[:, start_b]         # (N, k, k)
        self.free = top[None, :] > m[:, None]                                           # (N, k)
        self.vb = (v[None, :] <= top[:, None])[None] & ~self.free[:, :, None]           # (N, k, k)
        self.possible = e[None, :] <= t[:, None]
        self.za = torch.special.ndtri((sum_a / k_base).clamp(0, 1))
        self.zb = torch.special.ndtri((sum_b / k_base).clamp(0, 1))
        # the one-label terms Φ(Φ⁻¹(p̲_{a_e}) − R/σ) and Φ(Φ⁻¹(p̄_{b_{k−e+1}}) + R/σ) (Cohen et al.'s bound
        # of one label's probability), tighter than the u = 1 and v = 1 terms when k' > 1
        self.za1 = torch.special.ndtri(a[:, (e - 1).clamp_max(num_classes - 1)].clamp(0, 1))       # (N, k)
        self.zb1 = torch.special.ndtri(b[:, (top - 1).clamp_max(num_classes - 1)].clamp(0, 1))     # (N, k)
        self.scale_u = k_base / u.to(torch.float64)
        self.scale_v = k_base / v.to(torch.float64)

    def holds(self, shift: Tensor) -> Tensor:
        """Whether the condition holds for e = 1..k at R/σ = ``shift`` (N or 1, k or 1, Q) -> (N, k, Q)."""
        left = self.scale_u * torch.special.ndtr(self.za[:, :, None, :] - shift[..., None])
        left = torch.where(self.ua[:, :, None, :], left, -math.inf).amax(-1)          # (N, k, Q)
        left = torch.maximum(left, torch.special.ndtr(self.za1[:, :, None] - shift))
        right = self.scale_v * torch.special.ndtr(self.zb[:, :, None, :] + shift[..., None])
        right = torch.where(self.vb[:, :, None, :], right, math.inf).amin(-1)
        right = torch.minimum(right, torch.special.ndtr(self.zb1[:, :, None] + shift))
        right = torch.where(self.free[:, :, None], -math.inf, right)
        return (left > right) & self.possible[:, :, None]


def _largest_e(holds: Tensor) -> Tensor:
    """(N, k, Q) bool -> (N, Q) long: the largest e whose condition holds, 0 for none."""
    e = torch.arange(1, holds.shape[1] + 1)[None, :, None]
    return torch.where(holds, e, 0).amax(1)


def certified_size(lower: Tensor, upper: Tensor, labels: Tensor, *, k: int, k_base: int, sigma: float,
                   radii: Sequence[float] | Tensor) -> Tensor:
    """The certified intersection size (MultiGuard, Theorem 1) from probability bounds.

    Args:
        lower, upper: (N, C) bounds on p_j (only ``lower`` of true labels and ``upper`` of the others
            are read).
        labels: (N, C) in {0, 1}, the true labels L(x).
        k: size of the smoothed classifier's prediction; k_base: k' of the base classifier.
        sigma: noise standard deviation; radii: (R,) l2 radii, both in the units of the images.

    Returns:
        (N, R) long: the number of true labels certified to stay in the top k at each radius.

    Example:
        >>> certified_size(p, p, labels, k=3, k_base=1, sigma=0.25, radii=[0.0, 0.1])
    """
    lower, upper, truth, k, k_base, sigma = _check_bounds(lower, upper, labels, k, k_base, sigma)
    radii = _check_radii(radii)
    sides = _Sides(lower, upper, truth, k, k_base)
    return _largest_e(sides.holds((radii / sigma)[None, None, :]))


def certified_radius(lower: Tensor, upper: Tensor, labels: Tensor, *, k: int, k_base: int, sigma: float,
                     steps: int = 60) -> Tensor:
    """Per image and e = 1..k, the largest l2 radius at which ≥ e true labels are certified.

    The condition of the theorem is strict and continuous in R, so a certified e is certified on
    [0, radius) with radius > 0; 0 means e is not certified at all, ``inf`` that it holds at every
    radius (e.g. p_j = 1 exactly). Found by bisection on R over [0, 40 σ] (``steps`` halvings; the
    value returned is one where the condition holds).

    Shape: lower, upper, labels (N, C) -> (N, k) float64, in the units of the images.
    """
    lower, upper, truth, k, k_base, sigma = _check_bounds(lower, upper, labels, k, k_base, sigma)
    steps = int_in(steps, "steps", 1)
    sides = _Sides(lower, upper, truth, k, k_base)
    num = lower.shape[0]
    at_zero = sides.holds(lower.new_zeros(1, 1, 1))[..., 0]
    top = 40.0
    at_top = sides.holds(lower.new_full((1, 1, 1), top))[..., 0]
    lo, hi = lower.new_zeros(num, k), lower.new_full((num, k), top)
    for _ in range(steps):
        mid = (lo + hi) / 2
        ok = sides.holds(mid[..., None])[..., 0]
        lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
    radius = torch.where(at_zero, lo * sigma, 0.0)
    return torch.where(at_top, math.inf, radius)


# --- Monte Carlo ------------------------------------------------------------------------------------

class SmoothedClassifier:
    """The smoothed top-k classifier g of a model: top-k labels of p_j(x) = P(j ∈ top-k'(x + ε)).

    Args:
        model: maps images (B, ...) to scores (B, C); called as it is (put it in eval mode).
        sigma: standard deviation of ε ~ N(0, σ²I), in the units of the images ([0, 1]).
        k_base: k', the number of labels the base classifier returns per noisy copy.
        k: the number of labels g returns.
        batch_size: noisy copies per call of the model.

    Example:
        >>> g = SmoothedClassifier(model, sigma=0.25, k_base=1, k=3)
        >>> g.predict(images, n=100, seed=0)  # (N, 3) labels
    """

    def __init__(self, model: nn.Module, sigma: float, k_base: int, k: int, *, batch_size: int = 1000):
        if not callable(model):
            raise TypeError(f"model must be callable (an nn.Module), got {type(model).__name__}")
        self.model = model
        self.sigma = _check_sigma(sigma)
        self.k_base = int_in(k_base, "k_base", 1)
        self.k = int_in(k, "k", 1)
        self.batch_size = int_in(batch_size, "batch_size", 1)

    def __repr__(self) -> str:
        return (f"SmoothedClassifier(sigma={self.sigma}, k_base={self.k_base}, k={self.k}, "
                f"batch_size={self.batch_size})")

    def counts(self, images: Tensor, n: int, generator: torch.Generator | int = 0, *,
               progress: bool = False) -> Tensor:
        """How often each label is in the base classifier's top-k' over n noisy copies of each image.

        Noise is drawn in batches of ``batch_size`` from ``generator`` (a seed makes one on the images'
        device): the same seed gives the same counts. Shape: images (N, ...) -> (N, C) long.
        """
        _check_images(images)
        n = int_in(n, "n", 1)
        if not isinstance(generator, torch.Generator):
            generator = torch.Generator(device=images.device).manual_seed(int_in(generator, "seed", 0))
        rows = []
        with torch.no_grad():
            for image in tqdm(images, disable=not progress, desc="smoothing", unit="image", leave=False):
                total = None
                for start in range(0, n, self.batch_size):
                    size = min(self.batch_size, n - start)
                    noise = torch.randn((size, *image.shape), generator=generator, device=image.device,
                                        dtype=image.dtype)
                    scores = self.model(image[None] + self.sigma * noise)
                    num_classes = self._check_scores(scores, size)
                    hits = torch.zeros(num_classes, dtype=torch.long, device=scores.device)
                    hits.index_add_(0, topk_indices(scores, self.k_base).reshape(-1),
                                    torch.ones(size * self.k_base, dtype=torch.long, device=scores.device))
                    total = hits if total is None else total + hits
                rows.append(total)
        if not rows:
            raise ValueError("images holds no image (N = 0)")
        return torch.stack(rows)

    def _check_scores(self, scores: Tensor, size: int) -> int:
        if not isinstance(scores, Tensor) or scores.dim() != 2 or scores.shape[0] != size:
            raise ValueError(f"model must return scores of shape (B, C) for B = {size} images, got "
                             f"{getattr(scores, 'shape', type(scores).__name__)}")
        num_classes = scores.shape[1]
        for name, value in (("k_base", self.k_base), ("k", self.k)):
            if value > num_classes:
                raise ValueError(f"{name}={value}; expected an int in [1, {num_classes}] (the model returns "
                                 f"C = {num_classes} labels)")
        return num_classes

    def probabilities(self, images: Tensor, n: int, generator: torch.Generator | int = 0, *,
                      progress: bool = False) -> Tensor:
        """Monte-Carlo estimates of p_j (counts / n). Shape: images (N, ...) -> (N, C) float64."""
        return self.counts(images, n, generator, progress=progress).to(torch.float64) / n

    def predict(self, images: Tensor, n: int, generator: torch.Generator | int = 0, *,
                progress: bool = False) -> Tensor:
        """The smoothed top-k: the k labels of largest estimated p (ties to the lower index first).

        Shape: images (N, ...) -> (N, k) long, best first.
        """
        return topk_indices(self.probabilities(images, n, generator, progress=progress), self.k)


def _check_images(images: Any) -> None:
    if not isinstance(images, Tensor) or not images.is_floating_point() or images.dim() < 2:
        raise ValueError(f"images must be a floating tensor (N, ...) in [0, 1], got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    if images.numel() and (torch.isnan(images).any() or images.min() < 0 or images.max() > 1):
        raise ValueError(f"images must lie in the box [0, 1] (no NaN), got values in "
                         f"[{float(images.min()):.4g}, {float(images.max()):.4g}]: scale them to [0, 1] "
                         f"before smoothing (sigma and the radii are in those units)")


@dataclass(frozen=True)
class Certificate:
    """What :func:`certify` returns, per image (N) and radius (R); radii and sigma in [0, 1] units.

    Attributes:
        certified: (N, R) long, true labels certified in the smoothed top-k at each radius
            (0 where ``abstained``).
        radii: (R,) float64, the l2 radii.
        top_k: (N, k) long, the clean smoothed top-k from the n0 selection samples, best first.
        abstained: (N,) bool, the bounds certify no true label even at radius 0.
        lower, upper: (N, C) float64, one-sided Clopper–Pearson bounds on p_j at level alpha / C.
        counts: (N, C) long, the n estimation samples' counts.
        n, alpha: the estimation samples and the overall failure probability.
    """

    certified: Tensor
    radii: Tensor
    top_k: Tensor
    abstained: Tensor
    lower: Tensor
    upper: Tensor
    counts: Tensor
    n: int
    alpha: float


def certify(model: nn.Module, images: Tensor, labels: Tensor, *, sigma: float, k_base: int, k: int,
            radii: Sequence[float] | Tensor, n0: int = 100, n: int = 1000, alpha: float = 0.001,
            seed: int = 0, batch_size: int = 1000, progress: bool = False) -> Certificate:
    """MultiGuard's certificate: per image and radius, true labels provably kept in the smoothed top-k.

    n0 noisy copies select the clean smoothed top-k (``top_k``); n further copies (drawn after them
    from the same seeded generator) give the counts, hence Clopper–Pearson bounds at alpha / C per
    label (Bonferroni), and the theorem (module docstring) gives the certified size at each radius.
    With probability ≥ 1 - alpha over the noise, every certified size is true. Where the bounds
    certify nothing even at radius 0 the image abstains: ``certified`` is 0 and ``abstained`` True.

    Shape: images (N, ...) in [0, 1], labels (N, C) in {0, 1}; see :class:`Certificate`.

    Example:
        >>> cert = certify(model, images, labels, sigma=0.25, k_base=1, k=3, radii=[0.0, 0.25, 0.5])
        >>> cert.certified  # (N, 3)
    """
    _check_images(images)
    if not isinstance(labels, Tensor) or labels.dim() != 2 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels must be an (N, C) tensor with N = {images.shape[0]} rows like images, got "
                         f"{getattr(labels, 'shape', type(labels).__name__)}")
    if not torch.equal(labels.bool().to(labels.dtype), labels):
        raise ValueError("labels must hold only 0 and 1 (the true labels L(x) of each image)")
    num_classes = labels.shape[1]
    k = int_in(k, "k", 1, num_classes, f" (C = {num_classes} labels)")
    k_base = int_in(k_base, "k_base", 1, num_classes, f" (C = {num_classes} labels)")
    n0, n = int_in(n0, "n0", 1), int_in(n, "n", 1)
    alpha = as_float(alpha, "alpha")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r}; expected a failure probability strictly between 0 and 1")
    radii = _check_radii(radii)
    smoothed = SmoothedClassifier(model, sigma, k_base, k, batch_size=batch_size)
    generator = torch.Generator(device=images.device).manual_seed(int_in(seed, "seed", 0))
    top_k = topk_indices(smoothed.probabilities(images, n0, generator, progress=progress), k).cpu()
    counts = smoothed.counts(images, n, generator, progress=progress).cpu()
    if counts.shape[1] != num_classes:
        raise ValueError(f"labels has C = {num_classes} columns but the model returns {counts.shape[1]} "
                         f"scores per image")
    lower = clopper_pearson_lower(counts, n, alpha / num_classes)
    upper = clopper_pearson_upper(counts, n, alpha / num_classes)
    labels = labels.cpu()
    certified = certified_size(lower, upper, labels, k=k, k_base=k_base, sigma=smoothed.sigma, radii=radii)
    at_zero = certified_size(lower, upper, labels, k=k, k_base=k_base, sigma=smoothed.sigma, radii=[0.0])
    abstained = at_zero[:, 0] == 0
    certified = torch.where(abstained[:, None], 0, certified)
    return Certificate(certified=certified, radii=radii, top_k=top_k, abstained=abstained, lower=lower,
                       upper=upper, counts=counts, n=n, alpha=alpha)
