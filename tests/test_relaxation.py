"""The ATk relaxation and TkMIA's loss: slow definitions and the properties the paper states."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tkmia import relaxation as rx
from tkmia.metrics import topk_mask

finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def vectors(draw, min_size=1, max_size=12):
    values = draw(st.lists(finite, min_size=min_size, max_size=max_size))
    m = draw(st.integers(1, len(values)))
    return torch.tensor(values, dtype=torch.float64), m


def slow_kth_largest(v, m):
    return sorted(v.tolist(), reverse=True)[m - 1]


def slow_atk(v, m):
    return sum(sorted(v.tolist(), reverse=True)[:m]) / m


@settings(max_examples=200, deadline=None)
@given(vectors())
def test_kth_largest_and_atk_match_sorted_definitions(case):
    v, m = case
    assert rx.kth_largest(v, m).item() == pytest.approx(slow_kth_largest(v, m))
    assert rx.average_top_k(v, m).item() == pytest.approx(slow_atk(v, m), abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(vectors())
def test_kth_largest_bounded_by_atk(case):
    v, m = case
    assert rx.kth_largest(v, m) <= rx.average_top_k(v, m) + 1e-9


@settings(max_examples=200, deadline=None)
@given(vectors(), st.lists(finite, min_size=1, max_size=20))
def test_atk_is_the_minimum_of_the_variational_form(case, lambdas):
    v, m = case
    atk = rx.average_top_k(v, m)
    lam_star = rx.atk_minimiser(v, m)
    assert rx.atk_variational(v, m, lam_star).item() == pytest.approx(atk.item(), abs=1e-9)
    for lam in lambdas:  # every other λ gives an upper bound
        assert rx.atk_variational(v, m, lam) >= atk - 1e-9
    # and a fine grid over the range of v attains no lower value
    grid = torch.linspace(float(v.min()) - 1, float(v.max()) + 1, 2001, dtype=torch.float64)
    on_grid = rx.atk_variational(v.expand(len(grid), -1), m, grid)
    assert on_grid.min() >= atk - 1e-9


def test_atk_batched_over_leading_dimensions():
    v = torch.randn(4, 5, 7, generator=torch.Generator().manual_seed(0))
    out = rx.average_top_k(v, 3)
    assert out.shape == (4, 5)
    assert out[2, 1].item() == pytest.approx(slow_atk(v[2, 1], 3))


# ----------------------------------------------------------------------------- TkMIA's loss


def slow_tkmia_loss(f, y, s, k):
    """Direct transcription of the paper: ATk_{C−k}(a) + ATk_k(b), per sample."""
    c = len(f)
    spec = [j for j in range(c) if s[j]]
    rest = [j for j in range(c) if y[j] and not s[j]]
    a = [max(f[i] for i in spec) - f[j] for j in range(c)] if spec else [0.0] * c
    b = [f[j] - min(f[i] for i in rest) for j in range(c)] if rest else [0.0] * c
    return sum(sorted(a, reverse=True)[: c - k]) / (c - k) + sum(sorted(b, reverse=True)[:k]) / k


@st.composite
def loss_cases(draw):
    c = draw(st.integers(3, 10))
    n = draw(st.integers(1, 5))
    k = draw(st.integers(1, c - 1))
    rows = []
    for _ in range(n):
        f = draw(st.lists(finite, min_size=c, max_size=c))
        y = draw(st.lists(st.integers(0, 1), min_size=c, max_size=c))
        s = [yi * draw(st.integers(0, 1)) for yi in y]
        rows.append((f, y, s))
    f, y, s = (torch.tensor([r[i] for r in rows], dtype=torch.float64) for i in range(3))
    return f, y, s, k


@settings(max_examples=200, deadline=None)
@given(loss_cases())
def test_tkmia_loss_matches_slow_definition(case):
    f, y, s, k = case
    fast = rx.tkmia_loss(f, y, s, k)
    slow = [slow_tkmia_loss(fi.tolist(), yi.tolist(), si.tolist(), k) for fi, yi, si in zip(f, y, s)]
    torch.testing.assert_close(fast, torch.tensor(slow, dtype=torch.float64), atol=1e-6, rtol=1e-9)


@settings(max_examples=200, deadline=None)
@given(loss_cases(), st.floats(0, 1), st.integers(0, 2**16))
def test_tkmia_loss_convex_in_the_scores(case, t, seed):
    """Midpoint (and any-point) inequality L(t f + (1−t) g) ≤ t L(f) + (1−t) L(g)."""
    f, y, s, k = case
    g = torch.randn(f.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 10
    mix = rx.tkmia_loss(t * f + (1 - t) * g, y, s, k)
    bound = t * rx.tkmia_loss(f, y, s, k) + (1 - t) * rx.tkmia_loss(g, y, s, k)
    assert (mix <= bound + 1e-6).all()


@settings(max_examples=200, deadline=None)
@given(loss_cases())
def test_sub_goal_terms_bound_the_rank_conditions(case):
    """a_[C−k] ≤ ATk_{C−k}(a) and a_[C−k] ≤ 0 ⇔ max_S f ≤ f_[k+1] (no S label strictly above T_k's edge)."""
    f, y, s, k = case
    a, b = rx.tkmia_terms(f, y, s, k)
    c = f.shape[1]
    assert (rx.kth_largest(a, c - k) <= rx.average_top_k(a, c - k) + 1e-9).all()
    assert (rx.kth_largest(b, k) <= rx.average_top_k(b, k) + 1e-9).all()
    has_spec = s.bool().any(1)
    f_k1 = torch.sort(f, dim=1, descending=True).values[:, k]
    max_spec = f.masked_fill(~s.bool(), -1e300).amax(1)
    expected = torch.where(has_spec, max_spec - f_k1, torch.zeros_like(f_k1))
    torch.testing.assert_close(rx.kth_largest(a, c - k), expected)


def test_loss_zero_term_means_goal_reached_on_tie_free_scores():
    """When S is out of the top-k by a margin, a_[C−k] < 0; when it is in, a_[C−k] > 0."""
    f = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    y = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    s_out = torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0]])  # label 3 is 4th: out of the top-2
    s_in = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0]])
    a_out, _ = rx.tkmia_terms(f, y, s_out, 2)
    a_in, _ = rx.tkmia_terms(f, y, s_in, 2)
    assert rx.kth_largest(a_out, 3).item() < 0
    assert rx.kth_largest(a_in, 3).item() > 0
    assert not (topk_mask(f, 2) & s_out.bool()).any()


def test_variational_loss_at_minimisers_equals_closed_form():
    gen = torch.Generator().manual_seed(1)
    f = torch.randn(8, 10, generator=gen, dtype=torch.float64)
    y = (torch.rand(8, 10, generator=gen) < 0.6).double()
    s = y * (torch.rand(8, 10, generator=gen) < 0.4).double()
    k = 3
    a, b = rx.tkmia_terms(f, y, s, k)
    lambdas = (rx.atk_minimiser(a, 10 - k), rx.atk_minimiser(b, k))
    torch.testing.assert_close(rx.tkmia_loss(f, y, s, k, lambdas), rx.tkmia_loss(f, y, s, k))
    shifted = (lambdas[0] + 0.5, lambdas[1] - 0.5)
    assert (rx.tkmia_loss(f, y, s, k, shifted) >= rx.tkmia_loss(f, y, s, k) - 1e-12).all()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: rx.average_top_k(torch.zeros(4), 0), "m must be in"),
        (lambda: rx.kth_largest(torch.zeros(4), 5), "m must be in"),
        (lambda: rx.average_top_k([1.0, 2.0], 1), "must be a torch.Tensor"),
        (lambda: rx.tkmia_loss(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(2, 4), 4), "k must be in"),
        # a (N, 1) λ used to broadcast against (N, C) into an (N, N) answer
        (lambda: rx.atk_variational(torch.zeros(3, 5), 2, torch.zeros(3, 1)), r"lam must be .* shape \(3,\)"),
        (lambda: rx.atk_variational(torch.zeros(3, 5), 2, torch.zeros(5)), r"got shape \(5,\)"),
        (lambda: rx.tkmia_loss(torch.zeros(2, 4), torch.ones(2, 4), torch.eye(2, 4), 2, torch.zeros(2)),
         "lambdas must be a pair"),
        (lambda: rx.tkmia_loss(torch.zeros(2, 4), torch.ones(2, 4), torch.eye(2, 4), 2, (torch.ones(2),) * 3),
         "of length 3"),
    ],
)
def test_bad_input_raises_named_error(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# ----------------------------------------------------------------------------- half precision


def _loss_case():
    gen = torch.Generator().manual_seed(4)
    scores = torch.randn(6, 10, generator=gen) * 8
    labels = (torch.rand(6, 10, generator=gen) < 0.5).float()
    labels[0] = 0  # no true label
    labels[1] = 1  # every label true
    specified = labels * (torch.arange(10) < 4)
    specified[2] = 0  # empty S
    return scores, labels, specified


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_losses_in_half_precision_are_finite_and_match_float32(dtype):
    """The old 1e30 sentinel overflowed float16 (masked_fill raised); the dtype's own limits do not."""
    from tkmia.attacks.ml_cw_u import ml_cw_u_loss
    from tkmia.attacks.tkml_ap_u import tkml_ap_u_loss

    scores, labels, specified = _loss_case()
    low = scores.to(dtype)
    pairs = [
        (rx.tkmia_loss(low, labels, specified, 3), rx.tkmia_loss(low.float(), labels, specified, 3)),
        (tkml_ap_u_loss(low, labels, 3), tkml_ap_u_loss(low.float(), labels, 3)),
        (ml_cw_u_loss(low, labels), ml_cw_u_loss(low.float(), labels)),
    ]
    for half, full in pairs:
        assert half.dtype == dtype and torch.isfinite(half).all()
        torch.testing.assert_close(half.float(), full, atol=0.1, rtol=1e-2)
    grad_scores = low.clone().requires_grad_(True)
    rx.tkmia_loss(grad_scores, labels, specified, 3).sum().backward()
    assert torch.isfinite(grad_scores.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_masked_amax_and_amin(dtype):
    values = torch.tensor([[3.0, -2.0, 5.0], [1.0, 2.0, 3.0]], dtype=dtype)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    top, bottom = rx.masked_amax(values, mask), rx.masked_amin(values, mask)
    assert top.tolist() == [3.0, torch.finfo(dtype).min] and top.dtype == dtype
    assert bottom.tolist() == [-2.0, torch.finfo(dtype).max]
    assert rx.masked_amax(values, mask, keepdim=True).shape == (2, 1)


def test_loss_inputs_of_the_wrong_shape_are_named():
    from tkmia.attacks.ml_cw_u import ml_cw_u_loss
    from tkmia.attacks.tkml_ap_u import tkml_ap_u_loss

    scores = torch.rand(2, 4)
    with pytest.raises(ValueError, match=r"labels must be a tensor of the shape of scores \(2, 4\)"):
        rx.tkmia_loss(scores, torch.ones(2, 5), torch.ones(2, 4), 2)
    with pytest.raises(ValueError, match="specified must be a tensor of the shape of scores"):
        rx.tkmia_loss(scores, torch.ones(2, 4), torch.ones(4), 2)
    with pytest.raises(ValueError, match=r"scores must be a floating \(N, C\) tensor"):
        tkml_ap_u_loss(torch.rand(4), torch.ones(4), 2)
    with pytest.raises(ValueError, match="labels must be a tensor"):
        ml_cw_u_loss(scores, [[1, 0, 0, 0]] * 2)


def test_the_loss_refuses_a_specified_set_outside_the_labels():
    """S ⊆ Y: a specified label that is not a true label is named, not silently turned into a loss."""
    scores = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    labels = torch.tensor([[1.0, 0, 1, 1], [1.0, 1, 0, 0]])
    outside = torch.tensor([[0.0, 0, 0, 1], [0.0, 0, 1, 0]])  # row 1 specifies label 2, not a true one
    with pytest.raises(ValueError, match=r"not true labels in samples \[1\] of 2: S must be a subset of Y"):
        rx.tkmia_loss(scores, labels, outside, k=2)
    with pytest.raises(ValueError, match="not true labels"):
        rx.tkmia_terms(scores, labels, outside, k=2)
    with pytest.raises(ValueError, match="specified must hold only 0 and 1"):
        rx.tkmia_loss(scores, labels, outside * 0.5, k=2)
    rx.tkmia_loss(scores, labels, outside, k=2, validate=False)  # the attacks' inner loop
