"""Datasets: the embedded MultiShapes and loaders of PASCAL VOC 2012, MS COCO 2014, NUS-WIDE.

Every dataset maps ``dataset[i] -> (image, labels)`` with the image a float tensor (3, S, S) in
[0, 1] and labels a float multi-hot tensor (C,), and has ``classes`` (names in label order),
``labels`` (N, C) and ``checksum``. MultiShapes also holds all its ``images`` (N, 3, S, S) in
memory so that experiments can slice them.

Example:
    >>> from tkmia.profiles import load_profile
    >>> test = load_dataset(load_profile("default"), "test")
    >>> test.images.shape
    torch.Size([1000, 3, 48, 48])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from tkmia import _paths
from tkmia.data.coco import COCO2014
from tkmia.data.multishapes import CLASSES as MULTISHAPES_CLASSES
from tkmia.data.multishapes import MultiShapes, generate, label_statistics, render_image
from tkmia.data.nuswide import NUSWIDE
from tkmia.data.photos import CLASSES as PHOTOS_CLASSES
from tkmia.data.photos import Photos
from tkmia.data.show import show_samples
from tkmia.data.voc import VOC2012

#: Number of labels C of each dataset name.
NUM_CLASSES: dict[str, int] = {
    "multishapes": 20, "voc2012": 20, "coco2014": 80, "nuswide": 81, "photos": len(PHOTOS_CLASSES)
}

DATASETS = tuple(NUM_CLASSES)


def default_root(name: str) -> Path:
    """Where a dataset is looked for when no root is given: ``tkmia._paths.home() / name``."""
    return _paths.home() / name


def load_dataset(
    profile_or_name: Any,
    split: str,
    root: str | Path | None = None,
    *,
    image_size: int | None = None,
    n_images: int | None = None,
) -> Dataset:
    """The ``split`` of the dataset a profile (or a dataset name) names.

    Args:
        profile_or_name: a :class:`tkmia.profiles.Profile` (``load_profile("default")``; a profile
            name is resolved by the caller, this layer sits below the profiles) or a dataset name
            in :data:`DATASETS`.
        split: a split of that dataset (MultiShapes: train/val/test; VOC: train/val/trainval;
            COCO: train/val; NUS-WIDE: train/test).
        root: data folder; default the profile's ``dataset.root``, else ``tkmia home / <name>``
            (for MultiShapes: the generation cache folder).
        image_size: override of the profile's image size.
        n_images: MultiShapes only: number of images (default the profile's ``dataset.sizes``).

    Returns:
        A :class:`torch.utils.data.Dataset` of (image, labels) pairs.

    Raises:
        FileNotFoundError: a real dataset that is not at ``root`` (the message says what to get).
    """
    if isinstance(profile_or_name, str) and profile_or_name in DATASETS:
        profile = None
    elif isinstance(profile_or_name, str | Path):
        raise ValueError(
            f"profile_or_name={str(profile_or_name)!r} is not a dataset name {DATASETS}; for a profile's "
            f"dataset pass the profile itself: load_dataset(load_profile({str(profile_or_name)!r}), split) "
            "(load_profile from tkmia.profiles)"
        )
    elif hasattr(profile_or_name, "dataset"):  # a tkmia.profiles.Profile
        profile = profile_or_name
    else:
        raise TypeError(
            f"profile_or_name={profile_or_name!r}; expected a tkmia.profiles.Profile or a dataset name "
            f"{DATASETS}"
        )
    if profile is not None:
        cfg = profile.dataset
        name = cfg.name
        root = root if root is not None else cfg.root
        image_size = image_size if image_size is not None else cfg.image_size
        seed = cfg.seed
        sizes = cfg.sizes or {}
    else:
        name, seed, sizes = profile_or_name, 0, {}
    if name == "photos":
        setting = profile.dataset.setting if profile is not None else None
        return Photos(
            split, n_images=n_images if n_images is not None else sizes.get(split),
            image_size=image_size or 128, setting=setting or "novel_objects", seed=seed, root=root,
        )  # fmt: skip
    if name == "multishapes":
        if n_images is None:
            n_images = sizes.get(split)
        mean_labels = profile.dataset.mean_labels if profile is not None else None
        return MultiShapes(
            split, n_images=n_images, image_size=image_size or 48, seed=seed, root=root,
            mean_labels=mean_labels,
        )
    if n_images is not None:
        raise ValueError(f"n_images={n_images!r} applies to multishapes only, not {name!r}")
    root = Path(root).expanduser() if root is not None else default_root(name)
    if name == "voc2012":
        return VOC2012(root, split, image_size or 300)
    if name == "coco2014":
        return COCO2014(root, split, image_size or 448)
    return NUSWIDE(root, split, image_size or 224)


__all__ = [
    "COCO2014",
    "DATASETS",
    "MULTISHAPES_CLASSES",
    "NUM_CLASSES",
    "NUSWIDE",
    "PHOTOS_CLASSES",
    "Photos",
    "VOC2012",
    "MultiShapes",
    "default_root",
    "generate",
    "label_statistics",
    "load_dataset",
    "render_image",
    "show_samples",
]
