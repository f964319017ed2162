"""Victim models: output shapes per profile, normalisation inside, offline ImageNet weights."""

from __future__ import annotations

import pytest
import torch
import torchvision

from tkmia.data import NUM_CLASSES
from tkmia.models import CompactCNN, MultiLabelResNet, Normalize, build_model, resnet50
from tkmia.profiles import list_profiles, load_profile


@pytest.mark.parametrize("name", list_profiles())
def test_each_profile_builds_a_model_with_the_right_output_shape(name):
    profile = load_profile(name)
    model = build_model(profile).eval()
    size = 48 if profile.model.arch == "compact_cnn" else 32
    with torch.no_grad():
        scores = model(torch.rand(2, 3, size, size))
    assert scores.shape == (2, NUM_CLASSES[profile.dataset.name])
    assert scores.dtype == torch.float32 and bool(torch.isfinite(scores).all())


def test_compact_cnn_normalises_inside():
    model = CompactCNN(num_classes=5, width=4)
    assert isinstance(model.normalize, Normalize)
    assert "normalize.mean" in model.state_dict() and "normalize.std" in model.state_dict()
    x = torch.full((1, 3, 2, 2), 0.75)
    assert torch.allclose(model.normalize(x), torch.ones_like(x))
    images = torch.rand(3, 3, 40, 40, requires_grad=True)
    model(images).sum().backward()
    assert images.grad is not None and images.grad.shape == images.shape


def test_normalize_rejects_bad_std():
    with pytest.raises(ValueError, match="std"):
        Normalize((0.5, 0.5, 0.5), (0.2, 0.0, 0.2))


@pytest.mark.parametrize("kwargs, word", [({"num_classes": 0}, "num_classes"),
                                          ({"width": 1.5}, "width")])  # fmt: skip
def test_compact_cnn_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        CompactCNN(**kwargs)


def test_resnet_loads_a_local_imagenet_checkpoint(tmp_path):
    reference = torchvision.models.resnet50(weights=None)
    path = tmp_path / "resnet50-imagenet.pth"
    torch.save(reference.state_dict(), path)
    model = resnet50(7, weights=path)
    assert isinstance(model, MultiLabelResNet) and model.backbone.fc.out_features == 7
    assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)
    assert torch.equal(model.normalize.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        resnet50(3, weights=tmp_path / "nope.pth")


def test_compact_cnn_refuses_weights():
    profile = load_profile("default", model={"weights": "/some/file.pth"})
    with pytest.raises(ValueError, match="model.weights"):
        build_model(profile)


def test_a_profile_name_is_resolved_by_the_caller():
    with pytest.raises(TypeError, match=r"pass load_profile\('default'\)"):
        build_model("default")
