"""PASCAL VOC 2012 as a multi-label dataset (20 classes, alphabetical; ``difficult`` ignored).

Expected layout (torchvision's): ``root/VOCdevkit/VOC2012/{Annotations,JPEGImages,ImageSets/Main}``;
``root`` may also be the ``VOC2012`` folder itself.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import torch
from torch.utils.data import Dataset

from tkmia.data._images import check_size, labels_checksum, load_image, missing

CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip

SPLITS = ("train", "val", "trainval")

_HOW = (
    "Download VOCtrainval_11-May-2012.tar from http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ and "
    "extract it there so that VOCdevkit/VOC2012/Annotations exists (with internet, "
    "torchvision.datasets.VOCDetection(root, year='2012', download=True) does this), or pass "
    "--data-root / root= pointing at the folder that holds VOCdevkit."
)


def find_voc_dir(root: str | Path) -> Path:
    """The ``VOC2012`` folder under ``root`` (``root/VOCdevkit/VOC2012`` or ``root`` itself)."""
    root = Path(root).expanduser()
    for candidate in (root / "VOCdevkit" / "VOC2012", root):
        if (candidate / "Annotations").is_dir():
            return candidate
    raise missing(root / "VOCdevkit" / "VOC2012", "PASCAL VOC 2012", _HOW)


def parse_annotation(path: str | Path) -> torch.Tensor:
    """Multi-hot labels (20,) of one VOC XML annotation; objects flagged ``difficult`` are ignored."""
    labels = torch.zeros(len(CLASSES))
    for obj in ET.parse(path).getroot().iter("object"):
        difficult = obj.findtext("difficult", default="0").strip()
        if difficult == "1":
            continue
        name = obj.findtext("name", default="").strip()
        if name not in CLASSES:
            raise ValueError(f"{path}: unknown VOC class {name!r}")
        labels[CLASSES.index(name)] = 1.0
    return labels


class VOC2012(Dataset):
    """PASCAL VOC 2012 classification: ``dataset[i] -> (image (3, S, S) in [0, 1], labels (20,))``.

    Args:
        root: folder holding ``VOCdevkit/VOC2012`` (or the ``VOC2012`` folder).
        split: ``"train"``, ``"val"`` or ``"trainval"`` (``ImageSets/Main/<split>.txt``).
        image_size: images are resized to ``image_size`` x ``image_size``.

    Attributes:
        ids: image ids; labels: (N, 20) float tensor; classes: names in label order.
    """

    name = "voc2012"

    def __init__(self, root: str | Path, split: str = "train", image_size: int = 300) -> None:
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not a VOC 2012 split; allowed: {SPLITS}")
        check_size(image_size)
        self.dir = find_voc_dir(root)
        list_file = self.dir / "ImageSets" / "Main" / f"{split}.txt"
        if not list_file.is_file():
            raise missing(list_file, f"VOC 2012 image list of split {split!r}", _HOW)
        self.ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
        self.labels = torch.stack(
            [parse_annotation(self.dir / "Annotations" / f"{i}.xml") for i in self.ids]
        ) if self.ids else torch.zeros(0, len(CLASSES))  # fmt: skip
        self.split = split
        self.image_size = image_size
        self.classes = CLASSES
        self.checksum = labels_checksum(self.ids, self.labels)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.dir / "JPEGImages" / f"{self.ids[index]}.jpg"
        return load_image(path, self.image_size), self.labels[index]

    def __repr__(self) -> str:
        return f"VOC2012(split={self.split!r}, n_images={len(self)}, image_size={self.image_size})"
