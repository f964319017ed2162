"""MS COCO 2014 as a multi-label dataset (80 classes in category-id order).

Expected layout: ``root/annotations/instances_{train,val}2014.json`` and the images in
``root/train2014/`` and ``root/val2014/``. A label is the union over all annotations of the image
(every object size: small, medium, large).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch
from torch.utils.data import Dataset

from tkmia.data._images import check_size, labels_checksum, load_image, missing

SPLITS = ("train", "val")

_HOW = (
    "Download train2014.zip, val2014.zip and annotations_trainval2014.zip from "
    "https://cocodataset.org/#download and extract them there (annotations/, train2014/, "
    "val2014/), or pass --data-root / root= pointing at that folder."
)


class COCO2014(Dataset):
    """MS COCO 2014: ``dataset[i] -> (image (3, S, S) in [0, 1], labels (80,))``.

    Args:
        root: folder with ``annotations/``, ``train2014/``, ``val2014/``.
        split: ``"train"`` or ``"val"``.
        image_size: images are resized to ``image_size`` x ``image_size``.

    Attributes:
        ids: COCO image ids (sorted); files: image file names; labels: (N, 80) float tensor;
        classes: category names in category-id order; category_ids: the COCO ids of the classes.
    """

    name = "coco2014"

    def __init__(self, root: str | Path, split: str = "train", image_size: int = 448) -> None:
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not a COCO 2014 split; allowed: {SPLITS}")
        check_size(image_size)
        try:
            from pycocotools.coco import COCO
        except ImportError:
            raise ImportError(
                "MS COCO's annotations are read with pycocotools, tkmia's coco extra; install it with "
                "`pip install 'tkmia[coco]'`"
            ) from None

        self.root = Path(root).expanduser()
        ann_file = self.root / "annotations" / f"instances_{split}2014.json"
        if not ann_file.is_file():
            raise missing(ann_file, "MS COCO 2014 annotations", _HOW)
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco = COCO(str(ann_file))
        self.category_ids = sorted(coco.getCatIds())
        index = {c: i for i, c in enumerate(self.category_ids)}
        cats = coco.loadCats(self.category_ids)
        self.classes = tuple(c["name"] for c in cats)
        self.ids = sorted(coco.getImgIds())
        self.files = [coco.imgs[i]["file_name"] for i in self.ids]
        labels = torch.zeros(len(self.ids), len(self.category_ids))
        for row, image_id in enumerate(self.ids):
            for ann in coco.imgToAnns.get(image_id, []):
                labels[row, index[ann["category_id"]]] = 1.0
        self.labels = labels
        self.split = split
        self.image_size = image_size
        self.image_dir = self.root / f"{split}2014"
        self.checksum = labels_checksum([str(i) for i in self.ids], labels)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return load_image(self.image_dir / self.files[index], self.image_size), self.labels[index]

    def __repr__(self) -> str:
        return f"COCO2014(split={self.split!r}, n_images={len(self)}, image_size={self.image_size})"
