"""A table of contracts every registered attack keeps (parametrised over the registry)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tkmia.attacks import REGISTRY, Attack, AttackResult, get
from tkmia.metrics import delta_n, ranking
from tkmia.selection import GlobalSelection, RandomSelection

K = 2
NUM_CLASSES = 10
#: per-method options (kFool takes no lr); every other hyper-parameter is the method's default
OPTIONS = {"tkmia": {"lr": 0.01}, "tkml_ap_u": {"lr": 0.01}, "ml_cw_u": {"lr": 0.01}, "kfool": {},
           "tkmia_exact": {"lr": 0.01}, "tkmia_margin": {"lr": 0.01}}
#: every registered method: the paper's and the book's variants
METHODS = tuple(REGISTRY)
SELECTIONS = [GlobalSelection([0, 1, 2, 3]), RandomSelection(1, 1, seed=3)]


@pytest.fixture(scope="module")
def problem():
    """A tiny deterministic conv net on 3×8×8 images; labels = its top-2 + 3 random labels
    (the last two samples: only their top-2)."""
    gen = torch.Generator().manual_seed(11)
    torch.manual_seed(11)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(),
                          nn.Linear(256, NUM_CLASSES))
    with torch.no_grad():
        model[3].weight.mul_(6.0)
    images = torch.rand(12, 3, 8, 8, generator=gen)
    images[0, :, :2] = 0.0  # pixels on the box's edges
    images[1, :, :2] = 1.0
    with torch.no_grad():
        order = ranking(model(images))
    picks = torch.stack([torch.randperm(NUM_CLASSES - 2, generator=gen)[:3] for _ in range(12)])
    labels = torch.zeros(12, NUM_CLASSES).scatter_(1, order[:, :2], 1.0)
    labels.scatter_(1, order[:, 2:].gather(1, picks), 1.0)
    labels[-2:] = 0.0  # too few true labels (|Y| = 2 < k + |S|): not eligible in either scheme
    labels[-2:].scatter_(1, order[-2:, :2], 1.0)
    return model, images, labels


def _attack(name, model, **extra):
    return get(name)(model, K, **{"max_iter": 40, **OPTIONS[name], **extra})


@pytest.fixture(scope="module")
def runs(problem):
    model, images, labels = problem
    return {(name, i): _attack(name, model)(images, labels, sel)
            for name in METHODS for i, sel in enumerate(SELECTIONS)}


CASES = [(name, i) for name in METHODS for i in range(len(SELECTIONS))]


@pytest.mark.parametrize(("name", "sel"), CASES)
def test_result_shapes_device_dtype(problem, runs, name, sel):
    _, images, labels = problem
    r = runs[name, sel]
    n = images.shape[0]
    assert isinstance(r, AttackResult) and len(r) == n
    assert r.adv_images.shape == images.shape
    assert r.adv_images.dtype == images.dtype and r.adv_images.device == images.device
    for value, shape, dtype in [
        (r.success, (n,), torch.bool), (r.imperceptible, (n,), torch.bool),
        (r.eligible, (n,), torch.bool), (r.iterations, (n,), torch.long),
        (r.perturbation_l2, (n,), images.dtype), (r.delta_n, (n,), torch.long),
        (r.clean_scores, (n, NUM_CLASSES), images.dtype), (r.adv_scores, (n, NUM_CLASSES), images.dtype),
    ]:
        assert value.shape == shape and value.dtype == dtype and value.device == images.device
    assert torch.allclose(r.perturbation_l2_255, r.perturbation_l2 * 255)


@pytest.mark.parametrize(("name", "sel"), CASES)
def test_box_respected(runs, name, sel):
    adv = runs[name, sel].adv_images
    assert adv.min() >= 0.0 and adv.max() <= 1.0


@pytest.mark.parametrize(("name", "sel"), CASES)
def test_success_reverified_from_adv_images(problem, runs, name, sel):
    model, images, _ = problem
    r = runs[name, sel]
    with torch.no_grad():
        scores = model(r.adv_images)
        clean = model(images)
    assert torch.allclose(scores, r.adv_scores, atol=1e-5)
    recomputed = r.eligible & (delta_n(clean, scores, r.specified, K) >= r.required)
    assert torch.equal(recomputed, r.success)
    assert r.success.any(), f"{name} should succeed somewhere on the small problem"
    expected_l2 = (r.adv_images - images).flatten(1).norm(dim=1)
    assert torch.allclose(expected_l2, r.perturbation_l2)


@pytest.mark.parametrize(("name", "sel"), CASES)
def test_non_eligible_samples_unchanged(problem, runs, name, sel):
    _, images, _ = problem
    r = runs[name, sel]
    out = ~r.eligible
    assert out.any(), "the problem should hold non-eligible samples"
    torch.testing.assert_close(r.adv_images[out], images[out], atol=1e-6, rtol=0)
    assert (r.iterations[out] == 0).all() and not r.success[out].any()


@pytest.mark.parametrize("name", METHODS)
def test_deterministic(problem, name):
    model, images, labels = problem
    first = _attack(name, model)(images, labels, SELECTIONS[1])
    second = _attack(name, model)(images, labels, SELECTIONS[1])
    assert torch.equal(first.adv_images, second.adv_images)
    assert torch.equal(first.success, second.success)
    assert torch.equal(first.iterations, second.iterations)


@pytest.mark.parametrize("name", METHODS)
def test_repr_names_hyper_parameters(problem, name):
    attack = _attack(name, problem[0])
    text = repr(attack)
    assert text.startswith(type(attack).__name__ + "(")
    for key in ("k=2", "max_iter=40", "box="):
        assert key in text
    for key, value in OPTIONS[name].items():
        assert f"{key}={value!r}" in text


@pytest.mark.parametrize("name", METHODS)
def test_history_records(problem, name):
    model, images, labels = problem
    r = _attack(name, model, record_history=True)(images, labels, SELECTIONS[0])
    assert r.history["scores"].shape[1:] == (images.shape[0], NUM_CLASSES)


# ----------------------------------------------------------------------------- the budget


@pytest.mark.parametrize("name", METHODS)
def test_max_iter_counts_the_iterates_examined(problem, runs, name):
    """The reference's convention: iterates 0 … max_iter − 1 are checked, so a sample whose first
    successful iterate is j (j steps) succeeds iff max_iter > j, and a sample that does not
    returns iterate max_iter − 1. (The old engine examined 0 … max_iter: success iff j ≤ max_iter.)
    A method with an extra stopping condition (:meth:`Attack.accept`, e.g. TkMIA-margin) stops at
    its first successful *and* accepted iterate j, the same at every budget above j; below it, the
    sample returns iterate max_iter − 1, successful or not by the scheme's rule."""
    model, images, labels = problem
    long = runs[name, 0]  # max_iter = 40
    accepts = type(long_attack := _attack(name, model)).accept is not Attack.accept
    won = long.success
    steps = long.iterations[won]
    assert (steps > 0).any(), "the problem should hold samples that need steps"
    some = steps.unique()[[0, -1]].tolist()  # the quickest and the slowest success: j and j + 1
    budgets = sorted({1, *some, *(j + 1 for j in some)})
    for b in budgets:
        r = _attack(name, model, max_iter=b)(images, labels, SELECTIONS[0])
        within = won & (long.iterations < b)
        if accepts and b < long_attack.max_iter:  # the last iterate was returned, not accepted
            within &= long.iterations < long_attack.max_iter - 1
        if accepts:
            assert r.success[within].all(), f"max_iter={b}"
        else:
            assert torch.equal(r.success, within), f"max_iter={b}"
        expected = torch.where(within, long.iterations, torch.full_like(long.iterations, b - 1))
        assert torch.equal(r.iterations[r.eligible], expected[r.eligible]), f"max_iter={b}"
        assert torch.equal(r.adv_images[within], long.adv_images[within])
    short = int(steps.max())  # at this budget the slowest success has not happened yet
    r = _attack(name, model, max_iter=short, record_history=True)(images, labels, SELECTIONS[0])
    assert not r.success.all() and int(r.iterations.max()) == short - 1
    assert r.history["loss"].shape[0] == r.history["scores"].shape[0] == short - 1


# ----------------------------------------------------------------------------- half precision


class Cast(nn.Module):
    """A model held in ``dtype``: its inputs are cast to it, its logits stay in it."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.inner, self.dtype = copy.deepcopy(model).to(dtype), dtype

    def forward(self, x):
        return self.inner(x.to(self.dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", METHODS)
def test_half_precision_model(problem, name, dtype):
    """An fp16 or bf16 model on the CPU: finite results, success re-verified in its own dtype."""
    model, images, labels = problem
    half = Cast(model, dtype)
    r = _attack(name, half)(images, labels, SELECTIONS[0])
    assert r.clean_scores.dtype == dtype and r.adv_images.dtype == images.dtype
    for value in (r.adv_images, r.perturbation_l2, r.tanh_space_l2, r.adv_scores):
        assert torch.isfinite(value).all()
    assert r.adv_images.min() >= 0 and r.adv_images.max() <= 1
    with torch.no_grad():
        clean, adv = half(images), half(r.adv_images)
    assert torch.equal(adv, r.adv_scores)
    assert torch.equal(r.success, r.eligible & (delta_n(clean, adv, r.specified, K) >= r.required))
    assert r.success.any(), f"{name} should succeed somewhere in {dtype}"


# ----------------------------------------------------------------------------- the model's output


class Returns(nn.Module):
    def __init__(self, model, how):
        super().__init__()
        self.model, self.how = model, how

    def forward(self, x):
        out = self.model(x)
        return {"tuple": lambda: (out, out), "dict": lambda: {"logits": out},
                "flat": lambda: out.flatten(), "rows": lambda: out[:-1],
                "int": lambda: out.long()}[self.how]()


@pytest.mark.parametrize(("how", "error", "match"), [
    ("tuple", TypeError, r"tensor of logits of shape \(N, C\).*got a tuple"),
    ("dict", TypeError, r"tensor of logits of shape \(N, C\).*got a dict"),
    ("flat", ValueError, r"logits of shape \(N, C\) with N = 12 images, got shape \(120,\)"),
    ("rows", ValueError, r"logits of shape \(N, C\) with N = 12 images, got shape \(11, 10\)"),
    ("int", TypeError, "floating-point logits"),
])
def test_model_output_must_be_n_by_c_logits(problem, how, error, match):
    model, images, labels = problem
    with pytest.raises(error, match=match):
        _attack("tkmia", Returns(model, how))(images, labels, SELECTIONS[0])
