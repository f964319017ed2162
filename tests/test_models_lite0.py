"""EfficientNet-Lite0: architecture, the packaged ImageNet weights, frozen fine-tuning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tkmia.data import photos as ph
from tkmia.finetune import finetune_frozen
from tkmia.models import EfficientNetLite0, SameConv2d, build_model, lite0_weights_path

STAMPS = ph.default_root() / ph.STAMPS_DIR

#: Stamps whose ImageNet class is unambiguous, with that class (index, name in torchvision's list).
IMAGENET_STAMPS = {
    "food/fruit/orange": (950, "orange"),
    "food/fruit/pineapple": (953, "pineapple"),
    "vehicles/emergency/firetruck": (555, "fire engine"),
    "food/vegetables/broccoli": (937, "broccoli"),
    "sports/basketball": (430, "basketball"),
    "hobbies/music/string/violin": (889, "violin"),
}


@pytest.fixture(scope="module")
def imagenet_model() -> EfficientNetLite0:
    return EfficientNetLite0(1000, "imagenet").eval()


def test_weights_ship_in_the_package() -> None:
    path = lite0_weights_path()
    assert path.name == "efficientnet-lite0-57934424.pth" and path.stat().st_size > 10_000_000


def test_every_checkpoint_tensor_is_loaded(imagenet_model: EfficientNetLite0) -> None:
    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    mine = imagenet_model.state_dict()
    assert set(state) == set(mine)
    assert all(torch.equal(state[k], mine[k]) for k in state)
    assert sum(p.numel() for p in imagenet_model.parameters()) == 4_652_008


def test_imagenet_indices_match_torchvision_names() -> None:
    from torchvision.models import ResNet50_Weights

    categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    for index, name in IMAGENET_STAMPS.values():
        assert categories[index] == name


@pytest.mark.skipif(
    not STAMPS.is_dir(),
    reason=f"the tuxpaint stamps are not in {STAMPS} (run `make photos-data` to test the weights on them)",
)
@pytest.mark.parametrize("stamp", sorted(IMAGENET_STAMPS))
def test_pretrained_model_recognises_real_photos(imagenet_model: EfficientNetLite0, stamp: str) -> None:
    """The 1000-class model puts the stamp's ImageNet class in its top 5 (on white, 224 px)."""
    im = Image.open(STAMPS / f"{stamp}.png").convert("RGBA")
    im.thumbnail((200, 200))
    canvas = Image.new("RGBA", (224, 224), (255, 255, 255, 255))
    canvas.paste(im, ((224 - im.width) // 2, (224 - im.height) // 2), im)
    x = torch.from_numpy(np.asarray(canvas.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
    with torch.no_grad():
        top5 = imagenet_model(x[None])[0].topk(5).indices.tolist()
    assert IMAGENET_STAMPS[stamp][0] in top5


def test_preprocessing_is_inside_the_model() -> None:
    model = EfficientNetLite0(3)
    x = torch.tensor([0.0, 127 / 255, 1.0]).reshape(1, 3, 1, 1)
    assert torch.allclose(model.preprocess(x).flatten(), torch.tensor([-127 / 128, 0.0, 1.0]))


@pytest.mark.parametrize(("size", "kernel"), [(8, 3), (8, 5), (7, 3), (7, 5)])
def test_same_padding_is_tensorflow_s(size: int, kernel: int) -> None:
    """Output ceil(size / stride); at stride 2 the extra padding goes to the bottom and right."""
    conv = SameConv2d(1, 1, kernel, stride=2)
    torch.nn.init.zeros_(conv.weight)
    conv.weight.data[0, 0, kernel // 2, kernel // 2] = 1.0  # the identity tap
    x = torch.arange(size * size, dtype=torch.float32).reshape(1, 1, size, size)
    y = conv(x)
    assert y.shape[-1] == -(-size // 2)
    total = max((y.shape[-1] - 1) * 2 + kernel - size, 0)
    first = kernel // 2 - total // 2  # the input index the first output's centre tap reads
    assert torch.equal(y[0, 0], x[0, 0, first::2, first::2][: y.shape[-2], : y.shape[-1]])


def test_frozen_blocks_keep_their_weights_and_statistics() -> None:
    torch.manual_seed(0)
    model = EfficientNetLite0(4, frozen_blocks=15)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prefixes = ("_conv_stem", "_bn0", *(f"_blocks.{i}." for i in range(15)))
    frozen = [k for k in before if k.startswith(prefixes)]
    images = torch.rand(16, 3, 32, 32)
    labels = (torch.rand(16, 4) < 0.4).float()

    class Data:
        def __init__(self) -> None:
            self.images, self.labels = images, labels

        def __len__(self) -> int:
            return len(self.images)

    result = finetune_frozen(model, Data(), Data(), epochs=3, batch_size=8, lr=1e-2, flip=True,
                             progress=False)  # fmt: skip
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in frozen)  # weights and BN statistics
    for k in ("_blocks.15._project_conv.weight", "_conv_head.weight", "_fc.weight", "_bn1.running_mean"):
        assert not torch.equal(after[k], before[k])
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert 0 <= result.history[-1]["val_map"] <= 1
    assert not model.training
    model.train()
    assert not model._blocks[14].training and model._blocks[15].training


def test_finetune_needs_a_frozen_bottom() -> None:
    with pytest.raises(ValueError, match="frozen_blocks=0"):
        finetune_frozen(EfficientNetLite0(2), None, epochs=1, batch_size=1, lr=1.0)


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="frozen_blocks=17"):
        EfficientNetLite0(3, frozen_blocks=17)
    bad = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(ValueError, match="does not fit EfficientNet-Lite0"):
        EfficientNetLite0(3, weights=bad)


def test_profile_builds_the_photos_victim() -> None:
    from tkmia.profiles import load_profile

    model = build_model(load_profile("photos").replace(model={"weights": None}))
    assert isinstance(model, EfficientNetLite0)
    assert model.num_classes == len(ph.CLASSES) and model.frozen_blocks == 15
    assert model(torch.rand(2, 3, 128, 128)).shape == (2, len(ph.CLASSES))
