"""Victim models: every model takes pixels in [0, 1] and normalises inside itself.

* :class:`CompactCNN` -- the small CNN of the default profile (cheap to attack on a CPU).
* :func:`resnet50`, :func:`resnet101` -- torchvision ResNets with a multi-label head, as in the
  paper's VOC 2012 / MS COCO 2014 / NUS-WIDE settings; random initialisation by default, or
  ImageNet weights read from a local checkpoint file (nothing is downloaded).
* :func:`build_model` -- the model a profile asks for.

All models map images (N, 3, H, W) in [0, 1] to scores (N, C) (logits).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: ImageNet channel statistics (the reference normalises with these).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ARCHS = ("compact_cnn", "resnet50", "resnet101")


class Normalize(nn.Module):
    """``(images - mean) / std`` per channel, with mean and std stored as buffers.

    Args:
        mean, std: per-channel statistics (3 values each; std > 0).

    Shape:
        (N, 3, H, W) -> (N, 3, H, W).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if mean_t.numel() != std_t.numel():
            raise ValueError(f"mean has {mean_t.numel()} values but std has {std_t.numel()}")
        if bool((std_t <= 0).any()):
            raise ValueError(f"std={tuple(std)}; every value must be > 0")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class CompactCNN(nn.Module):
    """A five-layer CNN with global max pooling: the default victim.

    Strides 2, 2, 1, 2, 1 with widths ``w, 2w, 2w, 4w, 4w``; each convolution is 3x3 with batch
    norm and ReLU; global max pooling (is the class anywhere?) then a linear layer of ``num_classes``
    scores. About 0.28 M parameters at ``width=32``.

    Args:
        num_classes: number of labels C.
        width: channels of the first layer.
        mean, std: normalisation statistics applied inside the model.

    Shape:
        images (N, 3, H, W) in [0, 1] -> scores (N, C).

    Example:
        >>> model = CompactCNN(num_classes=20)
        >>> model(torch.rand(2, 3, 48, 48)).shape
        torch.Size([2, 20])
    """

    def __init__(
        self,
        num_classes: int = 20,
        width: int = 32,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.25, 0.25, 0.25),
    ) -> None:
        super().__init__()
        _check_positive("num_classes", num_classes)
        _check_positive("width", width)
        self.num_classes = num_classes
        self.width = width
        w = width
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(
            _conv(3, w, 2), _conv(w, 2 * w, 2), _conv(2 * w, 2 * w),
            _conv(2 * w, 4 * w, 2), _conv(4 * w, 4 * w),
        )  # fmt: skip
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.features(self.normalize(images))
        return self.head(torch.flatten(self.pool(x), 1))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, width={self.width}"


class MultiLabelResNet(nn.Module):
    """A torchvision ResNet whose ``fc`` gives C multi-label scores, normalising inside.

    Attributes:
        normalize: the :class:`Normalize` module (ImageNet statistics).
        backbone: the torchvision ResNet with ``fc = Linear(features, num_classes)``.

    Shape:
        images (N, 3, H, W) in [0, 1] -> scores (N, C).
    """

    def __init__(self, backbone: nn.Module, arch: str) -> None:
        super().__init__()
        self.arch = arch
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(images))

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}"


def _check_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r}; expected a positive int")


def load_imagenet_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a local torchvision ImageNet checkpoint (a state dict, or ``{"state_dict": ...}``).

    Args:
        path: the ``.pth`` file, e.g. ``resnet50-11ad3fa6.pth`` from torchvision's model zoo.

    Returns:
        The state dict, with any ``module.`` prefix removed.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"weights={str(path)!r}: no such file. Put torchvision's ImageNet checkpoint there "
            "(for example resnet50-11ad3fa6.pth, which torchvision caches under "
            "~/.cache/torch/hub/checkpoints/ on a machine with internet), or set weights: null."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise TypeError(f"weights={str(path)!r} holds a {type(state).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _resnet(arch: str, num_classes: int, weights: str | Path | None) -> MultiLabelResNet:
    import torchvision

    _check_positive("num_classes", num_classes)
    backbone = getattr(torchvision.models, arch)(weights=None)
    if weights is not None:
        state = load_imagenet_state(weights)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = backbone.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise ValueError(
                f"weights={str(weights)!r} does not fit {arch}: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
    backbone.fc = nn.Linear(backbone.fc.in_features, num_classes)
    return MultiLabelResNet(backbone, arch)


def resnet50(num_classes: int, weights: str | Path | None = None) -> MultiLabelResNet:
    """ResNet-50 with a ``num_classes`` multi-label head (the paper's VOC 2012 victim).

    Args:
        num_classes: number of labels C.
        weights: None (random initialisation) or a local ImageNet checkpoint path.

    Example:
        >>> resnet50(20)(torch.rand(1, 3, 64, 64)).shape
        torch.Size([1, 20])
    """
    return _resnet("resnet50", num_classes, weights)


def resnet101(num_classes: int, weights: str | Path | None = None) -> MultiLabelResNet:
    """ResNet-101 with a ``num_classes`` multi-label head (the paper's COCO / NUS-WIDE victim).

    Args:
        num_classes: number of labels C.
        weights: None (random initialisation) or a local ImageNet checkpoint path.
    """
    return _resnet("resnet101", num_classes, weights)


def build_model(profile: Any, num_classes: int | None = None) -> nn.Module:
    """The victim architecture a profile asks for, untrained (ImageNet weights if given).

    Args:
        profile: a :class:`tkmia.profiles.Profile` or a profile name.
        num_classes: number of labels; default that of the profile's dataset.

    Returns:
        A model mapping images (N, 3, H, W) in [0, 1] to scores (N, C).
    """
    from tkmia.data import NUM_CLASSES
    from tkmia.profiles import Profile, load_profile

    if not isinstance(profile, Profile):
        profile = load_profile(profile)
    if num_classes is None:
        num_classes = NUM_CLASSES[profile.dataset.name]
    arch = profile.model.arch
    if arch == "compact_cnn":
        if profile.model.weights is not None:
            raise ValueError("model.weights must be null for arch 'compact_cnn' (no pretraining)")
        return CompactCNN(num_classes=num_classes, width=profile.model.width)
    if arch == "resnet50":
        return resnet50(num_classes, profile.model.weights)
    if arch == "resnet101":
        return resnet101(num_classes, profile.model.weights)
    raise ValueError(f"model.arch={arch!r}; allowed: {ARCHS}")
