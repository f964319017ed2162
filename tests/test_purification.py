"""Input purification (tkmia.defences.purification): the purifiers against slow definitions and an
independent JPEG route, BPDA / exact / EOT gradients, the non-adaptive and adaptive evaluation on a
constructed model where the purifier breaks the non-adaptive attack, and detection against hand
counts."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

from tkmia.attacks import TkMIA
from tkmia.defences.purification import (
    JPEG,
    BitDepth,
    MedianFilter,
    Purified,
    RandomJPEG,
    detect,
    detection_rates,
    evaluate_purifier,
    top_k_changes,
)
from tkmia.metrics import map_at_k, precision_at_k, ranking
from tkmia.selection import Specification

C, K = 6, 2


def _conv_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 8 * 8, C)]
    return nn.Sequential(*layers).eval()


def _images(n: int = 3, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- purifiers
@pytest.mark.parametrize("quality", [10, 50, 95])
def test_jpeg_equals_pillow_through_a_file(tmp_path, quality):
    gen = torch.Generator().manual_seed(quality)
    pixels = torch.randint(0, 256, (3, 3, 16, 12), generator=gen, dtype=torch.uint8)
    images = pixels.double() / 255.0  # on the uint8 grid: the route's rounding is exact
    out = JPEG(quality)(images)
    assert out.shape == images.shape and out.dtype == torch.float64
    for i in range(images.shape[0]):
        path = tmp_path / f"{i}.jpg"
        Image.fromarray(pixels[i].permute(1, 2, 0).numpy()).save(path, quality=quality)
        with Image.open(path) as decoded:
            expected = np.asarray(decoded.convert("RGB"))
        got = (out[i] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(got, expected)
        assert torch.equal(out[i], torch.from_numpy(expected.copy()).permute(2, 0, 1).double() / 255.0)
    # another box: the same pixels mapped to (-1, 1)
    other = JPEG(quality, box=(-1.0, 1.0))(images * 2 - 1)
    assert torch.allclose(other, out * 2 - 1, atol=1e-12)


def test_jpeg_rounds_off_grid_pixels_and_changes_the_image():
    ramp = torch.linspace(0.1, 0.9, 16)
    images = torch.stack([ramp.expand(16, 16), ramp.expand(16, 16).T, torch.full((16, 16), 0.5)])
    images = (images + 0.001 * _images(1, 16)[0]).unsqueeze(0)  # smooth, off the uint8 grid
    out = JPEG(95)(images)
    rounded = JPEG(95)((images * 255).round() / 255)
    assert torch.equal(out, rounded)
    assert 0 < (out - images).abs().max() < 0.05 and out.min() >= 0 and out.max() <= 1
    assert not torch.equal(JPEG(10)(images), out)


@settings(max_examples=30, deadline=None)
@given(bits=st.integers(1, 8), seed=st.integers(0, 10**6))
def test_bit_depth_is_idempotent_on_its_grid_and_within_half_a_step(bits, seed):
    images = _images(2, 4, seed)
    purifier = BitDepth(bits)
    once = purifier(images)
    levels = 2**bits - 1
    assert torch.equal(purifier(once), once)
    assert torch.allclose(once * levels, (once * levels).round(), atol=1e-5)
    assert (once - images).abs().max() <= 0.5 / levels + 1e-6
    if bits == 8:
        assert torch.equal(once, (images * 255).round() / 255)


@settings(max_examples=20, deadline=None)
@given(value=st.floats(0.0, 1.0), size=st.sampled_from([3, 5, 7]))
def test_median_of_a_constant_image_is_the_image(value, size):
    images = torch.full((1, 3, 7, 9), value)
    assert torch.equal(MedianFilter(size)(images), images)


def _reflect(i: int, n: int) -> int:
    return -i if i < 0 else (2 * (n - 1) - i if i > n - 1 else i)


def _slow_median(images: torch.Tensor, size: int) -> tuple[torch.Tensor, dict]:
    """Per-pixel statistics.median over the reflect-padded window, and each output pixel's source."""
    r = size // 2
    n, c, h, w = images.shape
    out = torch.empty_like(images)
    source = {}
    for a in range(n):
        for ch in range(c):
            for i in range(h):
                for j in range(w):
                    window = [((_reflect(i + di, h), _reflect(j + dj, w)))
                              for di in range(-r, r + 1) for dj in range(-r, r + 1)]
                    values = [images[a, ch, p, q].item() for p, q in window]
                    med = statistics.median(values)  # odd count: the middle value itself
                    out[a, ch, i, j] = med
                    source[a, ch, i, j] = window[values.index(med)]
    return out, source


@pytest.mark.parametrize("size", [3, 5])
def test_median_matches_a_per_pixel_loop(size):
    images = _images(2, 6)[:, :, :, :5]
    fast = MedianFilter(size)(images)
    slow, _ = _slow_median(images, size)
    assert torch.equal(fast, slow)


def test_purifiers_keep_shape_dtype_and_leave_the_input_alone():
    images = _images(2, 8).double()
    copy = images.clone()
    for purifier in (JPEG(50), BitDepth(3), MedianFilter(3), RandomJPEG((20, 80), seed=1)):
        out = purifier(images)
        assert out.shape == images.shape and out.dtype == images.dtype
        assert out.min() >= 0 and out.max() <= 1
        assert torch.equal(images, copy)


# ---------------------------------------------------------------- refusals
@pytest.mark.parametrize(("build", "message"), [
    (lambda: JPEG(0), "quality"), (lambda: JPEG(96), "quality"), (lambda: JPEG(50.0), "quality"),
    (lambda: BitDepth(0), "bits"), (lambda: BitDepth(9), "bits"), (lambda: BitDepth(True), "bits"),
    (lambda: MedianFilter(4), "odd"), (lambda: MedianFilter(1), "size"),
    (lambda: RandomJPEG(()), "qualities"), (lambda: RandomJPEG((50, 100)), "qualities"),
    (lambda: RandomJPEG((50,), seed=-1), "seed"), (lambda: JPEG(50, box=(1.0, 0.0)), "box"),
])
def test_bad_purifier_settings_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_bad_images_are_refused():
    with pytest.raises(ValueError, match=r"box = \(0.0, 1.0\)"):
        BitDepth(3)(torch.full((1, 3, 4, 4), 1.5))
    with pytest.raises(ValueError, match="box"):
        JPEG(50, box=(0.0, 1.0))(torch.full((1, 3, 4, 4), 200.0))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        JPEG(50)(torch.rand(3, 4, 4))
    with pytest.raises(TypeError, match="floating"):
        BitDepth(2)(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="too small"):
        MedianFilter(5)(torch.rand(1, 3, 2, 8))


def test_bad_purified_settings_are_refused():
    model = _conv_model()
    with pytest.raises(ValueError, match="differentiable"):
        Purified(model, BitDepth(3), "exact")
    with pytest.raises(ValueError, match="differentiable"):
        Purified(model, JPEG(50), "exact")
    with pytest.raises(ValueError, match="randomised"):
        Purified(model, MedianFilter(3), "eot")
    with pytest.raises(ValueError, match="gradient must be one of"):
        Purified(model, BitDepth(3), "straight")
    with pytest.raises(ValueError, match="eot_samples"):
        Purified(model, RandomJPEG(), "eot", eot_samples=0)
    with pytest.raises(TypeError, match="purifier"):
        Purified(model, lambda x: x)
    with pytest.raises(ValueError, match="box"):
        evaluate_purifier(model, BitDepth(3), TkMIA, _images(), torch.ones(3, C), torch.ones(3, C), k=K,
                          attack_kwargs={"box": (0.0, 255.0)})
    with pytest.raises(TypeError, match="attack_cls"):
        evaluate_purifier(model, BitDepth(3), nn.Linear, _images(), torch.ones(3, C), torch.ones(3, C), k=K)
    with pytest.raises(ValueError, match="threshold"):
        detect(model, BitDepth(3), _images(), k=K, threshold=K + 1)


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("purifier", [BitDepth(2), JPEG(30), MedianFilter(3)], ids=repr)
def test_bpda_forward_is_exact_and_its_gradient_is_the_model_gradient_at_the_purified_point(purifier):
    model = _conv_model()
    images = _images()
    weights = torch.randn(3, C, generator=torch.Generator().manual_seed(5))
    x = images.clone().requires_grad_(True)
    out = Purified(model, purifier, "bpda")(x)
    assert torch.equal(out.detach(), model(purifier(images)).detach())
    (grad,) = torch.autograd.grad((out * weights).sum(), x)
    at = purifier(images).requires_grad_(True)
    (expected,) = torch.autograd.grad((model(at) * weights).sum(), at)
    assert torch.allclose(grad, expected, atol=1e-7)
    (at_clean,) = torch.autograd.grad((model(x) * weights).sum(), x)
    assert not torch.allclose(grad, at_clean, atol=1e-4)  # the purified point is not the clean one


def test_exact_median_gradient_goes_to_each_window_median_pixel():
    model = _conv_model(1)
    images = _images(1, 8, seed=3)  # distinct values: every window's median is one pixel
    weights = torch.randn(1, C, generator=torch.Generator().manual_seed(2))
    x = images.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((Purified(model, MedianFilter(3), "exact")(x) * weights).sum(), x)
    filtered, source = _slow_median(images, 3)
    at = filtered.clone().requires_grad_(True)
    (g_out,) = torch.autograd.grad((model(at) * weights).sum(), at)
    expected = torch.zeros_like(images)
    for (a, ch, i, j), (p, q) in source.items():
        expected[a, ch, p, q] += g_out[a, ch, i, j]
    assert torch.allclose(grad, expected, atol=1e-7)
    bpda = torch.autograd.grad((Purified(model, MedianFilter(3), "bpda")(x) * weights).sum(), x)[0]
    assert not torch.allclose(grad, bpda, atol=1e-4)


def test_eot_averages_the_draws_and_is_fixed_by_the_seed():
    model = _conv_model()
    images = _images()
    qualities = (10, 40, 90)
    x = images.clone().requires_grad_(True)
    out = Purified(model, RandomJPEG(qualities, seed=3), "eot", eot_samples=4)(x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    draws = RandomJPEG(qualities, seed=3)
    total, expected_grad = 0, torch.zeros_like(images)
    for _ in range(4):
        at = draws(images).requires_grad_(True)
        scores = model(at)
        total = total + scores.detach()
        expected_grad += torch.autograd.grad(scores.sum(), at)[0] / 4
    assert torch.equal(out.detach(), total / 4)
    assert torch.allclose(grad, expected_grad, atol=1e-7)
    again = Purified(model, RandomJPEG(qualities, seed=3), "eot", eot_samples=4)(images)
    assert torch.equal(again, out.detach())
    one = Purified(model, RandomJPEG(qualities, seed=3), "bpda")(images)
    assert not torch.equal(one, out.detach())  # one draw is not the average of four
    purifier = RandomJPEG(qualities, seed=3)
    first = purifier.draw(8)
    assert purifier.draw(8) != first  # the stream moves on ...
    purifier.reset()
    assert purifier.draw(8) == first  # ... and restarts from its seed
    assert RandomJPEG(qualities, seed=4).draw(8) != first


# ---------------------------------------------------------------- evaluation
@pytest.fixture(scope="module")
def grid_problem():
    """A linear model on 3×16×16 images whose pixels lie on BitDepth(2)'s grid {1/3, 2/3}: the
    plain attack succeeds with a change far below half a grid step (1/6), which BitDepth(2) undoes;
    S = each sample's top-1 label, Y = its top 3."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, C)).eval()
    with torch.no_grad():
        model[1].weight.mul_(20.0)
    images = torch.randint(1, 3, (12, 3, 16, 16), generator=torch.Generator().manual_seed(0)) / 3.0
    with torch.no_grad():
        order = ranking(model(images))
    labels = torch.zeros(12, C).scatter_(1, order[:, :3], 1.0)
    specified = torch.zeros(12, C).scatter_(1, order[:, :1], 1.0)
    return model, images, labels, specified


ATTACK = {"lr": 0.01, "max_iter": 100}


def test_the_adaptive_attack_beats_the_purifier_the_non_adaptive_one_does_not(grid_problem):
    model, images, labels, specified = grid_problem
    purifier = BitDepth(2)
    assert torch.equal(purifier(images), images)
    out = evaluate_purifier(model, purifier, TkMIA, images, labels, specified, k=K, adaptive=True,
                            attack_kwargs=ATTACK)
    assert out.gradient == "bpda" and len(out) == 12
    assert out.eligible.all() and out.eligible_defended.all()
    assert out.success_undefended.all()
    assert (out.adv_images - images).abs().max() < 1 / 6  # below half a step: purified back to x
    assert torch.equal(purifier(out.adv_images), images)
    assert not out.success_purified.any() and not out.imperceptible_purified.any()
    assert (out.delta_n_purified == 0).all()
    assert out.success_adaptive.float().mean() >= 0.9
    rates = out.rates()
    assert rates["success_adaptive"] >= 0.9 > 0.0 == rates["success_purified"]
    assert rates["success_undefended"] == 1.0 and rates["n_eligible"] == 12
    # the adaptive attack needs a larger perturbation: at least one pixel across a half step
    assert (out.perturbation_l2_255_adaptive[out.success_adaptive] >= 255 / 6).all()
    # judged on the defended model, the adaptive success is the engine's own on Purified
    direct = TkMIA(Purified(model, purifier, "bpda"), K, **ATTACK)(images, labels, specified)
    assert torch.equal(direct.success, out.success_adaptive)
    assert torch.equal(direct.imperceptible, out.imperceptible_adaptive)
    assert torch.equal(direct.perturbation_l2_255, out.perturbation_l2_255_adaptive)


def test_the_non_adaptive_judgement_matches_its_definition(grid_problem):
    """A purifier that changes the clean images too (a median): each sample's success after
    purification from the formula, with Python sets, against D(x) = model(median(x))."""
    model, images, labels, specified = grid_problem
    purifier = MedianFilter(3)
    out = evaluate_purifier(model, purifier, TkMIA, images, labels, specified, k=K, adaptive=False,
                            attack_kwargs=ATTACK, batch_size=5)
    assert out.success_adaptive is None and out.gradient is None
    with torch.no_grad():
        clean = model(purifier(images))
        adv = model(purifier(out.adv_images))
    flags = []
    for n in range(12):
        top_clean = set(ranking(clean[n:n + 1])[0, :K].tolist())
        top_adv = set(ranking(adv[n:n + 1])[0, :K].tolist())
        chosen = set(specified[n].nonzero().flatten().tolist())
        required = len(chosen & top_clean)
        eligible = required > 0 and labels[n].sum() >= K + len(chosen)
        assert eligible == bool(out.eligible_defended[n])
        flags.append(eligible and len(chosen & top_clean) - len(chosen & top_adv) >= required)
    assert out.success_purified.tolist() == flags
    assert 0 < sum(flags) < int(out.eligible_defended.sum())  # a mix: the judgement can be wrong both ways
    truth = labels
    assert torch.equal(out.defended_precision_at_k, precision_at_k(clean, truth, K))
    assert torch.equal(out.defended_map_at_k, map_at_k(clean, truth, K))
    assert torch.equal(out.clean_map_at_k, map_at_k(model(images).detach(), truth, K))
    whole = evaluate_purifier(model, purifier, TkMIA, images, labels, specified, k=K, adaptive=False,
                              attack_kwargs=ATTACK)
    assert torch.equal(whole.success_purified, out.success_purified)  # batches change nothing
    assert torch.equal(whole.success_undefended, out.success_undefended)
    start = TkMIA(model, K, max_iter=1)(images, labels, specified)  # the same goal as a Specification
    spec = Specification(start.specified, start.eligible, start.required)
    given = evaluate_purifier(model, purifier, TkMIA, images, labels, spec, k=K, adaptive=False,
                              attack_kwargs=ATTACK, batch_size=5)
    assert torch.equal(given.success_undefended, out.success_undefended)


def test_evaluation_with_a_randomised_purifier_uses_eot_and_is_reproducible(grid_problem):
    model, images, labels, specified = grid_problem
    images, labels, specified = images[:4], labels[:4], specified[:4]
    runs = [evaluate_purifier(model, RandomJPEG((30, 70), seed=2), TkMIA, images, labels, specified, k=K,
                              attack_kwargs={"lr": 0.01, "max_iter": 6}, eot_samples=2) for _ in range(2)]
    assert runs[0].gradient == "eot"
    for name in ("success_purified", "success_adaptive", "perturbation_l2_255_adaptive", "defended_map_at_k"):
        assert torch.equal(getattr(runs[0], name), getattr(runs[1], name)), name


# ---------------------------------------------------------------- detection
class ChannelMeans(nn.Module):
    """Logits (N, 4): the three channel means and a constant 0.5."""

    def forward(self, images):
        return torch.cat([images.mean((2, 3)), torch.full((images.shape[0], 1), 0.5)], 1)


def _hand_images() -> torch.Tensor:
    """Four 4×4 images; with BitDepth(1) (pixels to 0 or 1) and k = 1 the top label moves for the
    last two only (worked out by hand in the comments)."""
    images = torch.zeros(4, 3, 4, 4)
    images[0, 0], images[0, 1:] = 0.9, 0.1  # (.9, .1, .1, .5) -> top 0; (1, 0, 0, .5) -> 0
    images[1] = 0.45  # (.45, .45, .45, .5) -> 3; (0, 0, 0, .5) -> 3
    # (.55, .52, 0, .5) -> 0; (.5, 1, 0, .5) -> 1
    images[2, 0, :2], images[2, 0, 2:], images[2, 1] = 0.9, 0.2, 0.52
    images[3, 1], images[3, 1, 0] = 0.45, 1.0  # (0, .5875, 0, .5) -> 1; (0, .25, 0, .5) -> 3
    return images


def test_detection_against_a_hand_count():
    model, purifier, images = ChannelMeans(), BitDepth(1), _hand_images()
    assert detect(model, purifier, images, k=1).tolist() == [False, False, True, True]
    assert top_k_changes(model, purifier, images, k=1).tolist() == [0, 0, 1, 1]
    rates = detection_rates(model, purifier, images, images, torch.tensor([True, True, True, False]), k=1)
    assert rates.false_alarm_rate == 2 / 4 and rates.n_clean == 4
    assert rates.detection_rate == 1 / 3 and rates.n_adversarial == 3
    rates = detection_rates(model, purifier, images[:2], images, torch.zeros(4, dtype=torch.bool), k=1)
    assert rates.false_alarm_rate == 0.0 and np.isnan(rates.detection_rate)


def test_detection_matches_top_k_sets_on_a_conv_model():
    model, purifier = _conv_model(), MedianFilter(3)
    images = _images(20, 8, seed=7)
    with torch.no_grad():
        plain, purified = model(images), model(purifier(images))
    changes = [K - len(set(ranking(plain)[n, :K].tolist()) & set(ranking(purified)[n, :K].tolist()))
               for n in range(20)]
    assert top_k_changes(model, purifier, images, K, batch_size=6).tolist() == changes
    for threshold in (1, 2):
        flags = detect(model, purifier, images, K, threshold, batch_size=7)
        assert flags.tolist() == [c >= threshold for c in changes]
        rate = detection_rates(model, purifier, images, images, torch.ones(20, dtype=torch.bool), k=K,
                               threshold=threshold).false_alarm_rate
        assert rate == sum(c >= threshold for c in changes) / 20
    assert 0 < sum(c >= 1 for c in changes) < 20  # both kinds occur: the count can be wrong
