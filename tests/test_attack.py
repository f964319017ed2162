"""The batched engine through TkMIA: success re-verified, freezing, determinism, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tkmia.attacks import TkMIA
from tkmia.metrics import delta_n, topk_mask
from tkmia.relaxation import tkmia_loss
from tkmia.selection import GlobalSelection, RandomSelection, Specification

C = 8


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, C),
    )
    return model.eval()


@pytest.fixture(scope="module")
def case():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(24, 3, 8, 8, generator=gen)
    labels = (torch.rand(24, C, generator=gen) < 0.6).float()
    return small_model(), images, labels


@pytest.fixture(scope="module")
def result(case):
    model, images, labels = case
    return TkMIA(model, 3, lr=0.05, max_iter=60)(images, labels, GlobalSelection([0, 1, 2, 3]))


def test_some_samples_are_eligible_and_succeed(result):
    assert result.eligible.sum() >= 5
    assert result.success.sum() >= 3
    assert not (result.success & ~result.eligible).any()


def test_every_success_reverified_from_adv_images(case, result):
    model, images, labels = case
    with torch.no_grad():
        scores = model(result.adv_images)
    torch.testing.assert_close(scores, result.adv_scores, atol=1e-5, rtol=1e-5)
    dn = delta_n(result.clean_scores, scores, result.specified.float(), 3)
    assert torch.equal(result.success, result.eligible & (dn >= result.required))
    in_top_after = topk_mask(scores, 3) & result.specified
    assert not in_top_after[result.success].any()  # global rule: every specified label left


def test_adv_images_in_box_and_clean_where_not_attacked(case, result):
    _, images, _ = case
    assert result.adv_images.shape == images.shape
    assert result.adv_images.min() >= 0 and result.adv_images.max() <= 1
    untouched = ~result.eligible
    assert torch.equal(result.adv_images[untouched], images[untouched])
    assert (result.iterations[untouched] == 0).all()
    assert (result.perturbation_l2[untouched] == 0).all()


def test_perturbation_units(case, result):
    _, images, _ = case
    l2 = (result.adv_images - images).flatten(1).norm(dim=1)
    torch.testing.assert_close(result.perturbation_l2, l2)
    torch.testing.assert_close(result.perturbation_l2_255, l2 * 255)


def test_imperceptible_means_success_and_unchanged_measures(result):
    clean, adv = result.clean_measures(), result.adv_measures()
    same = torch.ones_like(result.success)
    for key in ("precision_at_k", "map_at_k", "ndcg_at_k"):
        same &= (clean[key] - adv[key]).abs() < 1e-6
    assert torch.equal(result.imperceptible, result.success & same)


def test_exact_parametrisation_reproduces_the_clean_image(case, result):
    model, images, _ = case
    with torch.no_grad():
        torch.testing.assert_close(result.clean_scores, model(images), atol=1e-5, rtol=1e-5)


def test_reference_parametrisation_distorts_the_clean_image(case):
    model, images, labels = case
    ref = TkMIA(model, 3, lr=0.05, max_iter=1, parametrisation="reference")
    out = ref(images, labels, GlobalSelection([0, 1, 2, 3]))
    with torch.no_grad():
        distorted = model(0.5 + 0.5 * torch.tanh(2 * images - 1))
    torch.testing.assert_close(out.clean_scores, distorted, atol=1e-5, rtol=1e-5)
    assert (out.clean_scores - model(images)).abs().max() > 1e-3


def test_starting_point_is_the_iterate_zero(case):
    model, images, labels = case
    exact = TkMIA(model, 3, lr=0.05, max_iter=1)
    assert torch.equal(exact.starting_point(images), images)
    ref = TkMIA(model, 3, lr=0.05, max_iter=1, parametrisation="reference")
    start = ref.starting_point(images)
    torch.testing.assert_close(start, 0.5 + 0.5 * torch.tanh(2 * images - 1))
    out = ref(images, labels, GlobalSelection([0, 1, 2, 3]))
    with torch.no_grad():
        torch.testing.assert_close(out.clean_scores, model(start), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="images must lie in box"):
        ref.starting_point(images + 2)


def test_mask_of_labels_outside_the_top_k_is_not_eligible(case):
    """A plain mask is judged by the global rule: a row whose specified label is already outside
    the clean top-k is not attacked and not a success (it used to succeed at iteration 0)."""
    model, images, labels = case
    with torch.no_grad():
        scores = model(images)
    outside = (labels.bool() & ~topk_mask(scores, 3)).float()
    first = torch.zeros_like(outside)
    has = outside.sum(1) > 0
    first[has, outside[has].argmax(1)] = 1
    out = TkMIA(model, 3, lr=0.05, max_iter=50)(images[has], labels[has], first[has])
    assert not out.eligible.any() and not out.success.any()
    assert (out.iterations == 0).all() and (out.perturbation_l2 == 0).all()
    assert torch.equal(out.adv_images, images[has])


def test_mask_rows_follow_the_global_rule(case):
    """Per row: eligible iff S ∩ T_k ≠ ∅ and |Y| ≥ k + |S|; required = |S ∩ T_k| (as GlobalSelection)."""
    model, images, labels = case
    with torch.no_grad():
        scores = model(images)
    mask = labels * (torch.arange(C) < 4)  # S = Y ∩ {0, 1, 2, 3}
    attack = TkMIA(model, 3, lr=0.05, max_iter=60)
    by_mask = attack(images, labels, mask)
    by_scheme = attack(images, labels, GlobalSelection([0, 1, 2, 3]))
    for name in ("eligible", "specified", "required", "success", "iterations", "adv_images"):
        assert torch.equal(getattr(by_mask, name), getattr(by_scheme, name)), name
    top = topk_mask(scores, 3)
    in_top = (top & mask.bool()).sum(1)
    expected = (in_top > 0) & (labels.sum(1) >= 3 + mask.sum(1))
    assert torch.equal(by_mask.eligible, expected) and 0 < expected.sum() < len(expected)
    assert torch.equal(by_mask.required[expected], in_top[expected])


def test_frozen_samples_do_not_change_afterwards(case, result):
    model, images, labels = case
    longer = TkMIA(model, 3, lr=0.05, max_iter=120, record_history=True)(
        images, labels, GlobalSelection([0, 1, 2, 3])
    )
    done = result.success
    assert torch.equal(longer.adv_images[done], result.adv_images[done])
    assert torch.equal(longer.iterations[done], result.iterations[done])
    # after its success iteration a sample is no longer in the forward pass: NaN in the history
    for row in done.nonzero().flatten().tolist():
        it = int(longer.iterations[row])
        assert torch.isnan(longer.history["scores"][it:, row]).all()
        if it > 0:
            assert torch.isfinite(longer.history["scores"][it - 1, row]).all()


def test_batched_equals_one_sample_at_a_time(case, result):
    model, images, labels = case
    attack = TkMIA(model, 3, lr=0.05, max_iter=60)
    for row in result.eligible.nonzero().flatten()[:4].tolist():
        single = attack(images[row : row + 1], labels[row : row + 1], GlobalSelection([0, 1, 2, 3]))
        assert single.success.item() == result.success[row].item()
        assert single.iterations.item() == result.iterations[row].item()
        torch.testing.assert_close(single.adv_images[0], result.adv_images[row], atol=1e-5, rtol=0)


def test_two_runs_with_one_seed_are_identical(case):
    model, images, labels = case
    runs = [
        TkMIA(model, 3, lr=0.05, max_iter=30)(images, labels, RandomSelection(2, 1, seed=7))
        for _ in range(2)
    ]
    assert torch.equal(runs[0].adv_images, runs[1].adv_images)
    assert torch.equal(runs[0].specified, runs[1].specified)
    assert torch.equal(runs[0].iterations, runs[1].iterations)


def test_update_is_torch_sgd_with_momentum_and_weight_decay(case):
    """Three steps of the engine equal torch.optim.SGD on w − w0 with weight decay."""
    model, images, labels = case
    x, y = images[:2], labels[:2]
    spec = Specification(
        specified=y.bool() & (torch.arange(C) < 4),
        eligible=torch.tensor([True, True]),
        required=torch.tensor([99, 99]),  # unreachable: no sample freezes
    )
    out = TkMIA(model, 3, lr=0.03, max_iter=4, weight_decay=0.5)(x, y, spec)  # iterates 0..3
    w0 = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))
    offset = x - (0.5 + 0.5 * torch.tanh(w0))
    delta = torch.zeros_like(x, requires_grad=True)
    opt = torch.optim.SGD([delta], lr=0.03, momentum=0.9, weight_decay=0.5)
    for _ in range(3):
        opt.zero_grad()
        adv = (0.5 + 0.5 * torch.tanh(w0 + delta) + offset).clamp(0, 1)
        tkmia_loss(model(adv), y, spec.specified.float(), 3).sum().backward()
        opt.step()
    expected = (0.5 + 0.5 * torch.tanh(w0 + delta.detach()) + offset).clamp(0, 1)
    torch.testing.assert_close(out.adv_images, expected, atol=1e-6, rtol=0)
    assert (out.iterations == 3).all() and not out.success.any()
    torch.testing.assert_close(out.tanh_space_l2, delta.detach().flatten(1).norm(dim=1))


def test_gradient_lambda_mode_starts_from_the_closed_form(case):
    model, images, labels = case
    sel = GlobalSelection([0, 1, 2, 3])
    closed = TkMIA(model, 3, lr=0.05, max_iter=20, record_history=True)(images, labels, sel)
    grad = TkMIA(model, 3, lr=0.05, max_iter=20, record_history=True, lambda_mode="gradient")(
        images, labels, sel
    )
    rows = closed.eligible & (closed.iterations > 0)
    torch.testing.assert_close(grad.history["loss"][0, rows], closed.history["loss"][0, rows])
    assert grad.success.sum() > 0


def test_model_mode_restored(case):
    model, images, labels = case
    model.train()
    TkMIA(model, 3, lr=0.05, max_iter=2)(images, labels, GlobalSelection([0]))
    assert model.training
    model.eval()


# ----------------------------------------------------------------------------- bad input


def _call(images=None, labels=None, specified=None, ids=None, **kw):
    model = small_model()
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(4, 3, 8, 8, generator=gen) if images is None else images
    labels = torch.ones(4, C) if labels is None else labels
    specified = GlobalSelection([0, 1]) if specified is None else specified
    params = {"lr": 0.01, "max_iter": 2, **kw}
    k = params.pop("k", 3)
    return TkMIA(model, k, **params)(images, labels, specified, ids=ids)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 0}, "k must be"),
        ({"k": C}, "k must be in"),
        ({"lr": 0.0}, "lr must be a finite number > 0"),
        ({"max_iter": -1}, "max_iter must be an int >= 1"),
        ({"max_iter": 0}, "max_iter must be an int >= 1"),
        ({"max_iter": 2.5}, "max_iter must be an int"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"box": (1.0, 0.0)}, "box must be a pair"),
        ({"lambda_mode": "adam"}, "lambda_mode must be one of"),
        ({"parametrisation": "tanh"}, "parametrisation must be one of"),
        ({"labels": torch.ones(3, C)}, "labels must have shape"),
        ({"labels": torch.full((4, C), 0.5)}, "only 0 and 1"),
        ({"images": torch.rand(4, 8, 8)}, r"images must have shape \(N, 3, H, W\)"),
        ({"images": torch.rand(4, 3, 8, 8) + 1.0}, "images must lie in box"),
        ({"images": torch.full((4, 3, 8, 8), float("nan"))}, "finite"),
        ({"specified": torch.ones(4, C + 1)}, "specified must have the shape"),
        ({"specified": "vehicles"}, "specified must be an"),
        ({"record_history": "yes"}, "record_history must be True or False"),
        ({"box": (0.0, float("nan"))}, "box must be a pair of finite numbers"),
        ({"lr": "5e-4"}, "lr must be a number, got '5e-4'"),
        ({"k": 3.0}, r"k must be an int, got 3\.0"),
        ({"images": torch.rand(4, 1, 8, 8)}, r"must have 3 \(RGB\) channels, shape \(N, 3, H, W\), got 1"),
        ({"specified": Specification(torch.full((4, C), 0.5), torch.ones(4, dtype=torch.bool),
                                     torch.ones(4, dtype=torch.long))}, "specified.specified must hold"),
        ({"specified": Specification(torch.ones(4, C, dtype=torch.bool), torch.ones(4, dtype=torch.bool),
                                     torch.zeros(4, dtype=torch.long))}, r"required >= 1"),
    ],
)
def test_bad_input_raises_named_error(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _call(**kwargs)


def test_specified_label_not_in_labels_is_an_error():
    labels = torch.zeros(4, C)
    labels[:, :4] = 1
    specified = torch.zeros(4, C)
    specified[2, 6] = 1
    with pytest.raises(ValueError, match="sample 2 specifies \\[6\\]"):
        _call(labels=labels, specified=specified)


def test_eligible_sample_with_empty_specified_set_is_an_error():
    spec = Specification(torch.zeros(4, C, dtype=torch.bool), torch.ones(4, dtype=torch.bool),
                         torch.ones(4, dtype=torch.long))
    with pytest.raises(ValueError, match="non-empty specified set"):
        _call(specified=spec)


def test_model_on_another_device_is_an_error():
    model = small_model().to("meta")  # a device other than the images' one, testable without a GPU
    with pytest.raises(ValueError, match="model is on the meta device"):
        TkMIA(model, 3, lr=0.01, max_iter=1)(torch.rand(2, 3, 8, 8), torch.ones(2, C), GlobalSelection([0]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_images_with_cpu_model_is_an_error_and_cuda_runs():
    model = small_model()
    images, labels = torch.rand(4, 3, 8, 8).cuda(), torch.ones(4, C).cuda()
    with pytest.raises(ValueError, match="model is on"):
        TkMIA(model, 3, lr=0.01, max_iter=1)(images, labels, GlobalSelection([0]))
    out = TkMIA(model.cuda(), 3, lr=0.01, max_iter=5)(images, labels, GlobalSelection([0]))
    assert out.adv_images.is_cuda


# ----------------------------------------------------------------------------- units and boxes


class InBox(nn.Module):
    """The small model seeing images of ``box`` as its own [0, 1] images."""

    def __init__(self, box):
        super().__init__()
        self.inner, self.box = small_model(), box

    def forward(self, x):
        low, high = self.box
        return self.inner((x - low) / (high - low))


@pytest.mark.parametrize("box", [(0.0, 255.0), (-1.0, 1.0)])
def test_perturbation_l2_255_is_scaled_by_the_box(case, result, box):
    """‖δ‖·255/(high − low): the same attack in another box gives the same 0–255 value (it used
    to be 255·‖δ‖ whatever the box: 255× too large for a (0, 255) box)."""
    _, images, labels = case
    low, high = box
    scaled = low + images * (high - low)
    out = TkMIA(InBox(box), 3, lr=0.05, max_iter=60, box=box)(scaled, labels, GlobalSelection([0, 1, 2, 3]))
    l2 = (out.adv_images - scaled).flatten(1).norm(dim=1)
    torch.testing.assert_close(out.perturbation_l2, l2)
    torch.testing.assert_close(out.perturbation_l2_255, l2 * 255 / (high - low))
    same = out.success & result.success & (out.iterations == result.iterations)
    assert same.sum() >= 3
    torch.testing.assert_close(out.perturbation_l2_255[same], result.perturbation_l2_255[same],
                               atol=1e-2, rtol=1e-3)
    assert out.box == box and result.box == (0.0, 1.0)


# ----------------------------------------------------------------------------- NaN never passes


class NaNAt(nn.Module):
    """The small model, with NaN in the logits of row ``row`` of its ``call``-th forward pass."""

    def __init__(self, call, row=1, value=float("nan")):
        super().__init__()
        self.inner, self.call, self.row, self.value, self.calls = small_model(), call, row, value, 0

    def forward(self, x):
        out = self.inner(x)
        self.calls += 1
        if self.calls == self.call:
            out = out.clone()
            out[self.row] = self.value
        return out


def _unreachable(labels):
    n = labels.shape[0]
    return Specification(labels.bool() & (torch.arange(C) < 4), torch.ones(n, dtype=torch.bool),
                         torch.full((n,), 99))


def test_nan_model_output_at_the_start_is_an_error(case):
    _, images, labels = case
    with pytest.raises(ValueError, match=r"not finite \(NaN or Inf\) for batch sample\(s\) \[1\] "
                                         r"at the start point \(iteration 0\)"):
        TkMIA(NaNAt(1), 3, lr=0.05, max_iter=5)(images[:4], labels[:4], GlobalSelection([0, 1]))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_model_output_during_the_loop_is_an_error(case, value):
    _, images, labels = case
    labels = labels[:4].clone()
    labels[:, 0] = 1
    # forward passes: the clean scores (also iterate 0's when every sample is eligible), then
    # iterates 1, 2: the 3rd is iteration 2
    with pytest.raises(ValueError, match=r"not finite \(NaN or Inf\) for batch sample\(s\) \[1\] "
                                         r"\(ids \[11\]\) at iteration 2"):
        TkMIA(NaNAt(3, value=value), 3, lr=0.05, max_iter=10)(
            images[:4], labels, _unreachable(labels), ids=[10, 11, 12, 13]
        )


def test_non_finite_step_is_an_error_not_a_nan_image(case):
    """A model that hides a NaN image (nan_to_num) still cannot return NaN images or norms."""
    _, images, labels = case

    class Hides(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = small_model()

        def forward(self, x):
            return self.inner(torch.nan_to_num(x))

    class Explodes(TkMIA):
        def step(self, state, x, scores, keep):
            super().step(state, x, scores, keep)
            state.w = state.w * float("nan")

    labels = labels[:4]
    with pytest.raises(ValueError, match="non-finite image for batch sample"):
        Explodes(Hides(), 3, lr=0.05, max_iter=3)(images[:4], labels, _unreachable(labels))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, 0.0, "0.1"])
def test_lambda_lr_must_be_finite_and_positive(bad):
    with pytest.raises((ValueError, TypeError), match="lambda_lr must be a"):
        TkMIA(small_model(), 3, lambda_mode="gradient", lambda_lr=bad)


# ----------------------------------------------------------------------------- NumPy numbers, ids


def test_numpy_integers_and_arrays_are_accepted(case, result):
    model, images, labels = case
    np = pytest.importorskip("numpy")
    attack = TkMIA(model, np.int64(3), lr=np.float32(0.05), max_iter=np.int32(60),
                   weight_decay=np.float64(1e-4), box=np.array([0.0, 1.0]))
    out = attack(images, labels, GlobalSelection(np.array([0, 1, 2, 3])))
    assert torch.equal(out.adv_images, result.adv_images)
    sel = RandomSelection(np.int64(2), np.int64(1), seed=np.int64(7))
    ids = np.arange(100, 124)
    by_array = attack(images, labels, sel, ids=ids)
    for other in (ids.tolist(), torch.from_numpy(ids)):
        assert torch.equal(attack(images, labels, sel, ids=other).specified, by_array.specified)


def test_random_draw_without_ids_does_not_depend_on_the_batch(case):
    """Without ids the engine names each image by a hash of its pixels: a sample gets the same
    draw alone, in another batch, or at another position."""
    model, images, labels = case
    attack = TkMIA(model, 3, lr=0.05, max_iter=1)
    sel = RandomSelection(1, 1, seed=5)
    whole = attack(images, labels, sel)
    assert whole.eligible.sum() >= 5
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(2))
    shuffled = attack(images[perm], labels[perm], sel)
    assert torch.equal(shuffled.specified, whole.specified[perm])
    for row in whole.eligible.nonzero().flatten()[:5].tolist():
        alone = attack(images[row : row + 1], labels[row : row + 1], sel)
        assert torch.equal(alone.specified[0], whole.specified[row])


@pytest.mark.parametrize(
    "ids, error, match",
    [
        ([0, 1], ValueError, r"ids must have shape \(4,\)"),
        ([0.0, 1.0, 2.0, 3.0], TypeError, "ids must be an int"),
        (torch.zeros(4), TypeError, "ids must hold integers"),
        (torch.zeros(2, 2, dtype=torch.long), ValueError, "ids must be one-dimensional"),
        ("0123", TypeError, "ids must be a sequence of ints"),
    ],
)
def test_bad_ids_are_named(ids, error, match):
    with pytest.raises(error, match=match):
        _call(specified=RandomSelection(1, 1), ids=ids)


class Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner, self.calls = small_model(), 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


@pytest.mark.parametrize(
    "specified, ids, match",
    [
        ("vehicles", None, "specified must be an"),
        (RandomSelection(3, 1), [0, 1, 2, 3], "n_pert must be <= k = 2"),
        (RandomSelection(1, 1), [0, 1], r"ids must have shape \(4,\)"),
        (GlobalSelection([0]), [0.5, 1, 2, 3], "ids must be an int"),
    ],
)
def test_bad_input_is_refused_before_the_model_runs(specified, ids, match):
    model = Counting()
    with pytest.raises((ValueError, TypeError), match=match):
        TkMIA(model, 2, lr=0.01, max_iter=2)(torch.rand(4, 3, 8, 8), torch.ones(4, C), specified, ids=ids)
    assert model.calls == 0
