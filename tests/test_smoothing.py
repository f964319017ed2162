"""MultiGuard's smoothing certificate (tkmia.defences.smoothing) against slow definitions written from
the theorem, scipy's Beta quantiles, and the guarantee itself on a model whose smoothed probabilities
are known (near-)exactly."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import beta, norm
from torch import nn

from tkmia.defences.smoothing import (
    SmoothedClassifier,
    certified_radius,
    certified_size,
    certify,
    clopper_pearson_lower,
    clopper_pearson_upper,
)

# ----------------------------------------------------------------------------- slow oracles


def _term(total: float, size: int, k_base: int, shift: float) -> float:
    """(k'/|T|) Φ(Φ⁻¹(min(1, Σ_T / k')) + shift), the theorem's bound for one set T of labels."""
    return k_base / size * float(norm.cdf(norm.ppf(min(1.0, total / k_base)) + shift))


def slow_certified(lower, upper, truth, k, k_base, sigma, radius, slack=0.0) -> int:
    """The largest e whose condition holds, written over subsets as in the theorem's proof.

    For e, an attacker keeps at most e - 1 true labels in the top k when some set A* of t - e + 1
    true labels all fall below some set B* of k - e + 1 other labels. Every non-empty T ⊆ A* bounds
    max_{A*} p(x+δ) from below and every T ⊆ B* bounds min_{B*} p(x+δ) from above, and so does each
    single label alone by Φ(Φ⁻¹(p) ∓ R/σ) (MultiGuard's theorem keeps both kinds); e is certified when
    the weakest A* still beats the strongest B*. ``slack`` > 0 demands a margin, < 0 grants one.
    """
    true = [j for j in range(len(truth)) if truth[j]]
    other = [j for j in range(len(truth)) if not truth[j]]
    best = 0
    for e in range(1, min(k, len(true)) + 1):
        if k - e + 1 > len(other):
            best = e
            continue
        left = min(
            max(
                *(_term(sum(lower[j] for j in sub), len(sub), k_base, -radius / sigma)
                  for size in range(1, len(group) + 1)
                  for sub in itertools.combinations(group, size)),
                *(_term(lower[j], 1, 1, -radius / sigma) for j in group),  # one label: Cohen's bound
            )
            for group in itertools.combinations(true, len(true) - e + 1)
        )
        right = max(
            min(
                *(_term(sum(upper[j] for j in sub), len(sub), k_base, radius / sigma)
                  for size in range(1, len(group) + 1)
                  for sub in itertools.combinations(group, size)),
                *(_term(upper[j], 1, 1, radius / sigma) for j in group),
            )
            for group in itertools.combinations(other, k - e + 1)
        )
        if left > right + slack:
            best = e
    return best


def slow_top_one(lower_true: float, upper_others: list[float], k: int, sigma: float, radius: float) -> bool:
    """Jia et al. (ICLR 2020), Theorem 1: label l stays in the top k of a k' = 1 smoothed classifier
    when Φ(Φ⁻¹(p̲_l) - R/σ) > min_{t=1..k} (1/t) Φ(Φ⁻¹(Σ of the t smallest of the k largest p̄) + R/σ)."""
    others = sorted(upper_others, reverse=True)[:k]
    left = float(norm.cdf(norm.ppf(lower_true) - radius / sigma))
    right = min(
        float(norm.cdf(norm.ppf(min(1.0, sum(others[k - t :]))) + radius / sigma)) / t
        for t in range(1, k + 1)
    )
    return left > right


def exact_probabilities(x: torch.Tensor, sigma: float, k_base: int, nodes: int = 121) -> torch.Tensor:
    """p_j(x) = P(j ∈ top-k'(x + ε)) for the identity model (the scores are the input coordinates).

    p_j = ∫ φ(z) P(at most k' - 1 of the others exceed x_j + σz) dz: the others exceed independently
    with probability Φ((x_i - x_j)/σ - z); the count's law by a Poisson-binomial recursion, the
    integral by the trapezoid rule on [-8.5, 8.5] (spectrally accurate for this smooth integrand).
    Differentiable in x. Shape: (B, C) float64 -> (B, C).
    """
    z = torch.linspace(-8.5, 8.5, nodes, dtype=torch.float64)
    weights = torch.full_like(z, float(z[1] - z[0]))
    weights[[0, -1]] /= 2
    weights = weights * torch.exp(-(z**2) / 2) / math.sqrt(2 * math.pi)
    num_classes = x.shape[1]
    gap = (x[:, None, :] - x[:, :, None]) / sigma  # (B, j, i): (x_i - x_j) / σ
    exceed = torch.special.ndtr(gap[:, :, None, :] - z[None, None, :, None])  # (B, j, G, i)
    exceed = exceed * (1 - torch.eye(num_classes, dtype=x.dtype))[:, None, :]
    law = torch.zeros(*exceed.shape[:3], k_base, dtype=x.dtype)
    law[..., 0] = 1
    for i in range(num_classes):
        q = exceed[..., i : i + 1]
        law = law * (1 - q) + torch.cat([torch.zeros_like(law[..., :1]), law[..., :-1]], -1) * q
    return (law.sum(-1) * weights).sum(-1)


def kept(p: torch.Tensor, truth: torch.Tensor, k: int) -> torch.Tensor:
    """|L ∩ top-k(p)| per row. Shape: (B, C), (B, C) bool -> (B,) long."""
    top = torch.topk(p, k, dim=1).indices
    return truth.gather(1, top).sum(1)


# ----------------------------------------------------------------------------- 1. the theorem


bounds = st.integers(2, 6).flatmap(
    lambda c: st.tuples(
        st.lists(st.floats(0, 1), min_size=c, max_size=c),
        st.lists(st.floats(0, 1), min_size=c, max_size=c),
        st.lists(st.booleans(), min_size=c, max_size=c),
        st.integers(1, c),
        st.integers(1, c),
    )
)


@settings(max_examples=300, deadline=None)
@given(bounds, st.floats(0.05, 1.0), st.floats(0, 1.5))
def test_certified_size_matches_the_theorem_over_subsets(case, sigma, radius):
    lower, upper, truth, k, k_base = case
    mine = certified_size(
        torch.tensor([lower], dtype=torch.float64),
        torch.tensor([upper], dtype=torch.float64),
        torch.tensor([truth]).long(),
        k=k,
        k_base=k_base,
        sigma=sigma,
        radii=[radius],
    )
    strict = slow_certified(lower, upper, truth, k, k_base, sigma, radius, slack=1e-9)
    loose = slow_certified(lower, upper, truth, k, k_base, sigma, radius, slack=-1e-9)
    assert strict <= int(mine[0, 0]) <= loose


def test_certified_size_matches_the_theorem_on_many_random_bound_vectors():
    gen = torch.Generator().manual_seed(0)
    num, num_classes = 500, 6
    p = torch.rand(num, num_classes, generator=gen, dtype=torch.float64)
    lower = p * torch.rand(num, num_classes, generator=gen, dtype=torch.float64).sqrt()
    upper = (p + 0.1 * torch.rand(num, num_classes, generator=gen, dtype=torch.float64)).clamp_max(1)
    truth = torch.rand(num, num_classes, generator=gen) < 0.5
    k, k_base = torch.randint(1, 5, (num,), generator=gen), torch.randint(1, 4, (num,), generator=gen)
    exact, checked, positive = 0, 0, 0
    for kk, kb in itertools.product(range(1, 5), range(1, 4)):
        rows = ((k == kk) & (k_base == kb)).nonzero().flatten()
        radii = [0.0, 0.1, 0.3]
        mine = certified_size(
            lower[rows], upper[rows], truth[rows].long(), k=kk, k_base=kb, sigma=0.5, radii=radii
        )
        for r, row in enumerate(rows.tolist()):
            for q, radius in enumerate(radii):
                args = (lower[row].tolist(), upper[row].tolist(), truth[row].tolist(), kk, kb, 0.5, radius)
                strict, loose = slow_certified(*args, slack=1e-9), slow_certified(*args, slack=-1e-9)
                assert strict <= int(mine[r, q]) <= loose
                exact += strict == loose  # no near-tie: the two must agree exactly
                checked += 1
                positive += int(mine[r, q]) > 0
    assert exact > 0.98 * checked and positive > checked // 4


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0.001, 0.999), min_size=2, max_size=7),
    st.integers(1, 6),
    st.floats(0.1, 1.0),
    st.floats(0, 1),
)
def test_one_true_label_and_k_base_1_is_jia_et_al_2020(values, k, sigma, radius):
    k = min(k, len(values) - 1)
    truth = [True] + [False] * (len(values) - 1)
    p = torch.tensor([values], dtype=torch.float64)
    mine = int(certified_size(p, p, torch.tensor([truth]).long(), k=k, k_base=1, sigma=sigma, radii=[radius]))
    near = [slow_top_one(values[0] + d, values[1:], k, sigma, radius) for d in (-1e-9, 1e-9)]
    if near[0] == near[1]:
        assert mine == int(near[0])


# ----------------------------------------------------------------------------- 2. Clopper–Pearson


@pytest.mark.parametrize("n", [1, 2, 7, 100, 1000, 100_000])
@pytest.mark.parametrize("alpha", [0.5, 0.05, 1e-3, 1e-6])
def test_clopper_pearson_matches_scipy_beta_quantiles(n, alpha):
    counts = torch.unique(
        torch.cat(
            [
                torch.arange(min(n, 12) + 1),
                n - torch.arange(min(n, 12) + 1),
                torch.randint(0, n + 1, (50,), generator=torch.Generator().manual_seed(n)),
            ]
        )
    )
    x = counts.numpy()
    lower = np.where(x > 0, beta.ppf(alpha, np.maximum(x, 1), n - x + 1), 0.0)
    upper = np.where(x < n, beta.ppf(1 - alpha, x + 1, np.maximum(n - x, 1)), 1.0)
    np.testing.assert_allclose(clopper_pearson_lower(counts, n, alpha).numpy(), lower, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(clopper_pearson_upper(counts, n, alpha).numpy(), upper, rtol=1e-9, atol=1e-13)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 5000).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))), st.floats(1e-8, 0.4))
def test_clopper_pearson_bounds_cover_the_count_with_the_stated_tail(case, alpha):
    n, x = case
    lo = float(clopper_pearson_lower(torch.tensor([x]), n, alpha))
    hi = float(clopper_pearson_upper(torch.tensor([x]), n, alpha))
    assert 0 <= lo <= x / n <= hi <= 1
    if x > 0:  # P(X ≥ x | p = lower) = alpha, the defining equation
        assert beta.cdf(lo, x, n - x + 1) == pytest.approx(alpha, rel=1e-7)


# ----------------------------------------------------------------------------- 3. monotonicity, radius 0


@settings(max_examples=200, deadline=None)
@given(bounds, st.floats(0.05, 1.0))
def test_certified_size_never_increases_with_the_radius(case, sigma):
    lower, upper, truth, k, k_base = case
    radii = torch.linspace(0, 2, 41)
    sizes = certified_size(
        torch.tensor([lower], dtype=torch.float64),
        torch.tensor([upper], dtype=torch.float64),
        torch.tensor([truth]).long(),
        k=k,
        k_base=k_base,
        sigma=sigma,
        radii=radii,
    )[0]
    assert (sizes[1:] <= sizes[:-1]).all()


def test_at_radius_0_exact_probabilities_certify_the_true_labels_in_the_top_k():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(300, 8, generator=gen, dtype=torch.float64)
    truth = torch.rand(300, 8, generator=gen) < 0.4
    for k_base in (1, 2, 4):
        p = exact_probabilities(x, 0.3, k_base)  # genuine probabilities: Σ_j p_j = k'
        for k in (1, 3, 5):
            sizes = certified_size(p, p, truth.long(), k=k, k_base=k_base, sigma=0.3, radii=[0.0])[:, 0]
            assert torch.equal(sizes, kept(p, truth, k))


def test_certified_radius_brackets_where_the_size_drops():
    gen = torch.Generator().manual_seed(2)
    p = exact_probabilities(torch.rand(200, 6, generator=gen, dtype=torch.float64), 0.3, 2)
    lower, upper = p * 0.97, (p * 1.03).clamp_max(1)
    truth = (torch.rand(200, 6, generator=gen) < 0.5).long()
    radius = certified_radius(lower, upper, truth, k=3, k_base=2, sigma=0.4)  # (N, 3)
    assert (radius[:, 1:] <= radius[:, :-1]).all()
    others = (1 - truth).sum(1)
    for e in range(1, 4):
        r = radius[:, e - 1]
        assert torch.equal(torch.isinf(r), e <= 3 - others)  # only when fewer than k - e + 1 others exist
        r = torch.where(torch.isinf(r), 0.0, r)
        inside = certified_size(lower, upper, truth, k=3, k_base=2, sigma=0.4, radii=[0.0])[:, 0] >= e
        assert torch.equal((r > 0) | (e <= 3 - others), inside)
        for row in (r > 0).nonzero().flatten().tolist()[:40]:
            below = certified_size(
                lower[row : row + 1],
                upper[row : row + 1],
                truth[row : row + 1],
                k=3,
                k_base=2,
                sigma=0.4,
                radii=[float(r[row]) * (1 - 1e-6), float(r[row]) * (1 + 1e-6)],
            )
            assert below[0, 0] >= e > below[0, 1]


# ----------------------------------------------------------------------------- 4. the guarantee, checked


def test_exact_probabilities_agree_with_monte_carlo():
    x = torch.rand(8, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    p = exact_probabilities(x, 0.3, 2)
    torch.testing.assert_close(p.sum(1), torch.full((8,), 2.0, dtype=torch.float64), atol=1e-9, rtol=0)
    counts = SmoothedClassifier(nn.Identity(), 0.3, 2, 3).counts(x, 40_000, 0)
    assert ((counts / 40_000 - p).abs() < 5 * (p * (1 - p) / 40_000).sqrt() + 1e-4).all()


def _attack(x, truth, e, k, k_base, sigma, radius, steps=20):
    """Gradient steps on the smoothed probabilities within ‖δ‖₂ ≤ radius that try to keep fewer than e
    true labels in the top k: push the e-th true probability below the (k-e+1)-th other one. Returns
    the smallest number of true labels kept over the steps. Shape: x (B, C), e (B,) -> (B,) long."""
    delta = torch.zeros_like(x, requires_grad=True)
    fewest = kept(exact_probabilities(x, sigma, k_base), truth, k)
    for _ in range(steps):
        p = exact_probabilities(x + delta, sigma, k_base)
        true = torch.sort(torch.where(truth, p, -1.0), 1, descending=True).values
        other = torch.sort(torch.where(truth, -1.0, p), 1, descending=True).values
        margin = true.gather(1, (e - 1)[:, None]) - other.gather(1, (k - e).clamp(0, x.shape[1] - 1)[:, None])
        (grad,) = torch.autograd.grad(margin.sum(), delta)
        with torch.no_grad():
            delta -= 2.5 * radius / steps * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-30)
            delta *= (radius / delta.norm(dim=1, keepdim=True).clamp_min(1e-30)).clamp_max(1)
            fewest = torch.minimum(fewest, kept(exact_probabilities(x + delta, sigma, k_base), truth, k))
    return fewest


def _guarantee_cases(k, k_base, sigma, radii, num=150, directions=12, seed=0):
    """For num images and each radius: the certificate from the exact probabilities, the fewest true
    labels kept over random directions on the sphere, a pushing direction and the gradient attack,
    and the same attack against the over-claims (certificate + 1 at R, certificate at 2R)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(num, 6, generator=gen, dtype=torch.float64)
    truth = torch.rand(num, 6, generator=gen) < 0.5
    truth[:, 0] = True
    p = exact_probabilities(x, sigma, k_base)
    sizes = certified_size(p, p, truth.long(), k=k, k_base=k_base, sigma=sigma, radii=radii)
    results = []
    for q, radius in enumerate(radii):
        size = sizes[:, q]
        sphere = torch.randn(num, directions, 6, generator=gen, dtype=torch.float64)
        sphere = radius * sphere / sphere.norm(dim=2, keepdim=True)
        push = torch.where(truth, -1.0, 1.0).to(torch.float64)
        push = radius * push / push.norm(dim=1, keepdim=True)
        moved = torch.cat([x[:, None] + sphere, (x + push)[:, None]], 1).reshape(-1, 6)
        fewest = kept(
            exact_probabilities(moved, sigma, k_base), truth.repeat_interleave(directions + 1, 0), k
        )
        fewest = fewest.reshape(num, -1).min(1).values
        rows = (size > 0).nonzero().flatten()
        fewest[rows] = torch.minimum(
            fewest[rows], _attack(x[rows], truth[rows], size[rows], k, k_base, sigma, radius)
        )
        over = (size + 1 <= torch.minimum(truth.sum(1), torch.tensor(k))).nonzero().flatten()
        broken_plus = _attack(x[over], truth[over], size[over] + 1, k, k_base, sigma, radius) < size[over] + 1
        broken_double = _attack(x[rows], truth[rows], size[rows], k, k_base, sigma, 2 * radius) < size[rows]
        results.append((size, fewest, broken_plus, broken_double))
    return results


@pytest.mark.parametrize(
    ("k", "k_base"),
    [(2, 2), pytest.param(3, 1, marks=pytest.mark.slow), pytest.param(3, 2, marks=pytest.mark.slow)],
)
def test_no_perturbation_within_the_radius_beats_the_certificate(k, k_base):
    cases = _guarantee_cases(k, k_base, 0.25, [0.05, 0.15, 0.3])
    plus, double = 0, 0
    for size, fewest, broken_plus, broken_double in cases:
        assert (fewest >= size).all(), "a perturbation within the certified radius kept fewer true labels"
        plus += int(broken_plus.sum())
        double += int(broken_double.sum())
    assert sum(int((size > 0).sum()) for size, *_ in cases) > 100  # the certificates say something
    assert plus > 0 and double > 0  # the check can fail: over-claims are broken on some cases


def test_certify_on_the_identity_model_is_sound_and_below_the_exact_certificate():
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(40, 6, generator=gen, dtype=torch.float64)
    truth = torch.rand(40, 6, generator=gen) < 0.5
    truth[:, 0] = True
    radii = [0.0, 0.05, 0.15, 0.3]
    cert = certify(
        nn.Identity(),
        x,
        truth.long(),
        sigma=0.25,
        k_base=1,
        k=3,
        radii=radii,
        n0=200,
        n=4000,
        alpha=0.001,
        seed=0,
    )
    p = exact_probabilities(x, 0.25, 1)
    assert (cert.lower <= p).all() and (p <= cert.upper).all()
    exact = certified_size(p, p, truth.long(), k=3, k_base=1, sigma=0.25, radii=radii)
    assert (cert.certified <= exact).all() and cert.certified.sum() > 0
    assert torch.equal(cert.abstained, cert.certified[:, 0] == 0)
    assert (cert.certified[:, 0] <= kept(cert.counts.double(), truth, 3)).all()
    assert (cert.top_k[:, 0] == torch.topk(p, 1).indices[:, 0]).float().mean() > 0.8
    assert cert.certified.dtype == torch.long and cert.certified.shape == (40, 4)


# ----------------------------------------------------------------------------- 5. determinism


def test_same_seed_same_numbers_different_seeds_differ():
    x = torch.rand(5, 6, generator=torch.Generator().manual_seed(6))
    smoothed = SmoothedClassifier(nn.Identity(), 0.3, 2, 3, batch_size=128)
    first, again = smoothed.counts(x, 1000, 7), smoothed.counts(x, 1000, 7)
    assert torch.equal(first, again) and not torch.equal(first, smoothed.counts(x, 1000, 8))
    assert (first.sum(1) == 2 * 1000).all()
    kwargs = dict(sigma=0.3, k_base=2, k=3, radii=[0.0, 0.1], n0=50, n=500, batch_size=128)
    labels = (x > 0.5).long()
    one, two = (
        certify(nn.Identity(), x, labels, seed=1, **kwargs),
        certify(nn.Identity(), x, labels, seed=1, **kwargs),
    )
    assert all(
        torch.equal(getattr(one, f), getattr(two, f)) for f in ("certified", "top_k", "lower", "counts")
    )
    assert not torch.equal(one.counts, certify(nn.Identity(), x, labels, seed=2, **kwargs).counts)


# ----------------------------------------------------------------------------- 6. refusals


BASE = dict(sigma=0.25, k_base=1, k=2, radii=[0.0, 0.1], n0=10, n=20, alpha=0.01)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(sigma=0.0), r"sigma=0.0; expected the noise standard deviation, a number > 0"),
        (dict(sigma=-1), r"sigma=-1; expected"),
        (dict(k_base=0), r"k_base=0; expected an int in \[1, 4\]"),
        (dict(k=0), r"k=0; expected an int in \[1, 4\]"),
        (dict(k=5), r"k=5; expected an int in \[1, 4\] \(C = 4 labels\)"),
        (dict(n=0), r"n=0; expected an int >= 1"),
        (dict(n0=0), r"n0=0; expected an int >= 1"),
        (dict(alpha=0.0), r"alpha=0.0; expected a failure probability strictly between 0 and 1"),
        (dict(alpha=1.5), r"alpha=1.5; expected"),
        (dict(radii=[0.1, -0.2]), r"radii=\[0.1, -0.2\]; expected one or more finite l2 radii >= 0"),
        (dict(radii=[]), r"radii=\[\]; expected"),
    ],
)
def test_certify_refuses_bad_settings_naming_them(change, message):
    images, labels = torch.full((3, 4), 0.5), torch.ones(3, 4).long()
    with pytest.raises(ValueError, match=message):
        certify(nn.Identity(), images, labels, **{**BASE, **change})


def test_certify_refuses_images_outside_the_box_and_mismatched_labels():
    labels = torch.ones(3, 4).long()
    with pytest.raises(ValueError, match=r"images must lie in the box \[0, 1\].*got values in \[0, 255\]"):
        certify(nn.Identity(), torch.linspace(0, 255, 12).reshape(3, 4), labels, **BASE)
    with pytest.raises(ValueError, match=r"labels must be an \(N, C\) tensor with N = 3 rows"):
        certify(nn.Identity(), torch.full((3, 4), 0.5), torch.ones(2, 4).long(), **BASE)
    with pytest.raises(ValueError, match=r"labels has C = 5 columns but the model returns 4"):
        certify(nn.Identity(), torch.full((3, 4), 0.5), torch.ones(3, 5).long(), **BASE)
    with pytest.raises(ValueError, match=r"labels must hold only 0 and 1"):
        certify(nn.Identity(), torch.full((3, 4), 0.5), torch.full((3, 4), 2).long(), **BASE)


def test_clopper_pearson_refuses_counts_outside_0_to_n():
    with pytest.raises(ValueError, match=r"counts must lie in \[0, n=10\], got values in \[0, 11\]"):
        clopper_pearson_lower(torch.tensor([0, 11]), 10, 0.05)
    with pytest.raises(ValueError, match=r"alpha=0(\.0)?; expected a failure probability"):
        clopper_pearson_upper(torch.tensor([3]), 10, 0)
