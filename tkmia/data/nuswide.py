"""NUS-WIDE as a multi-label dataset (81 concepts, in the order of ``Concepts81.txt``).

Expected layout (as distributed by NUS; the images from the NUS-WIDE image archive)::

    root/Concepts81.txt                                  # one concept name per line
    root/ImageList/TrainImagelist.txt, TestImagelist.txt # e.g. "actor\\0001_2124494179.jpg"
    root/Groundtruth/TrainTestLabels/Labels_<concept>_Train.txt, ..._Test.txt  # one 0/1 a line
    root/Flickr/<folder>/<file>.jpg                      # the images named in the lists

Images listed but absent on disk (many Flickr images are gone) are skipped when
``skip_missing=True`` (the default).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from tkmia.data._images import check_size, labels_checksum, load_image, missing

SPLITS = ("train", "test")

_HOW = (
    "Get NUS-WIDE from https://lms.comp.nus.edu.sg/wp-content/uploads/2019/research/nuswide/"
    "NUS-WIDE.html: put Concepts81.txt, ImageList/ (NUS_WID_ImageList), Groundtruth/ "
    "(NUS_WID_Groundtruth) and the images under Flickr/ in that folder, or pass --data-root / "
    "root= pointing at it."
)


class NUSWIDE(Dataset):
    """NUS-WIDE: ``dataset[i] -> (image (3, S, S) in [0, 1], labels (81,))``.

    Args:
        root: folder of the layout above.
        split: ``"train"`` or ``"test"``.
        image_size: images are resized to ``image_size`` x ``image_size``.
        skip_missing: drop listed images whose file is missing (else keep them: reading fails).

    Attributes:
        files: image paths relative to ``root/Flickr``; labels: (N, 81) float tensor;
        classes: concept names.
    """

    name = "nuswide"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        image_size: int = 224,
        skip_missing: bool = True,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not a NUS-WIDE split; allowed: {SPLITS}")
        check_size(image_size)
        self.root = Path(root).expanduser()
        concepts = self.root / "Concepts81.txt"
        if not concepts.is_file():
            raise missing(concepts, "NUS-WIDE (Concepts81.txt)", _HOW)
        self.classes = tuple(line.strip() for line in concepts.read_text().splitlines() if line.strip())
        tag = split.capitalize()
        list_file = self.root / "ImageList" / f"{tag}Imagelist.txt"
        if not list_file.is_file():
            raise missing(list_file, f"NUS-WIDE image list of split {split!r}", _HOW)
        files = [
            line.strip().replace("\\", "/")
            for line in list_file.read_text().splitlines()
            if line.strip()
        ]
        columns = []
        for concept in self.classes:
            path = self.root / "Groundtruth" / "TrainTestLabels" / f"Labels_{concept}_{tag}.txt"
            if not path.is_file():
                raise missing(path, f"NUS-WIDE labels of concept {concept!r}", _HOW)
            values = [int(v) for v in path.read_text().split()]
            if len(values) != len(files):
                raise ValueError(f"{path} has {len(values)} labels but {list_file} lists {len(files)}")
            columns.append(torch.tensor(values, dtype=torch.float32))
        labels = torch.stack(columns, dim=1) if columns else torch.zeros(len(files), 0)
        if skip_missing:
            keep = [i for i, f in enumerate(files) if (self.root / "Flickr" / f).is_file()]
            files = [files[i] for i in keep]
            labels = labels[keep]
        self.files = files
        self.labels = labels
        self.split = split
        self.image_size = image_size
        self.checksum = labels_checksum(files, labels)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.root / "Flickr" / self.files[index]
        return load_image(path, self.image_size), self.labels[index]

    def __repr__(self) -> str:
        return f"NUSWIDE(split={self.split!r}, n_images={len(self)}, image_size={self.image_size})"
