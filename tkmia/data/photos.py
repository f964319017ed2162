"""Photos: multi-label scenes composed of real photo cut-outs on real background photos.

The objects are the real-photograph stamps of Debian's ``tuxpaint-stamps-default`` (PNG with an
alpha channel under ``usr/share/tuxpaint/stamps/<category>/<subcategory>/``, GPL-2); the
backgrounds are the photos of Debian's ``scratch`` (``usr/share/scratch/Media/Backgrounds/
{Indoors,Nature,Outdoors,Sports}``, 480x360, CC-BY-SA-3.0). Only the files are needed::

    apt-get download tuxpaint-stamps-default scratch
    dpkg -x tuxpaint-stamps-default_*.deb data/sources && dpkg -x scratch_*.deb data/sources

(``make photos-data`` does this); any folder holding the same files in their upstream layout
(``/`` where both packages are installed) is accepted as ``root``.

Which stamps are used (:func:`find_cutouts`):

1. a class is a fixed list of stamp folders (:data:`CLASS_FOLDERS`); their files are read, not
   their subfolders, so ``cartoon/``, ``toys/`` and ``plastic/`` subfolders are never read;
2. drawings are left out by a colour statistic: a photograph has thousands of distinct colours, a
   drawing a few flat ones. :func:`flat_colour_share` is the share of opaque pixels (or, for a
   background, of all pixels) covered by the 16 most frequent exact colours of the image reduced to
   at most 128 px; a file is a drawing when it is >= :data:`FLAT_THRESHOLD` (0.3).

A scene (:func:`compose`) pastes n = 1-5 cut-outs of different classes on a random square crop of
a background, n drawn with probability n / 15 (:data:`OBJECT_COUNT_WEIGHTS`: the attacks need
scenes with many labels, |Y| >= k + |S|), each at a random scale (by opaque area), position and
horizontal flip. A placement is accepted only when every object already pasted keeps
>= :data:`MIN_VISIBLE` of its opaque pixels visible; an object that finds no such place in 30
tries is not pasted. The label set is exactly the set of classes pasted (``dataset.objects``
lists them with their cut-outs). A scene draws its classes (:func:`object_count` of them), then for
each class an object (family) uniformly and one of that object's cut-outs, so an object with many
variants is not shown more often than one with a single photo.

Splits (``setting``):

* ``"novel_objects"``: train and test use disjoint cut-outs *and* disjoint backgrounds. Cut-outs of
  one object (mirror copies, numbered variants, names containing another's name: see
  :func:`object_family`) stay on one side. Per class, 40% of the objects (families, drawn at
  random from the seed) go to test, the others to train; the same for the backgrounds of each
  category.
* ``"novel_scenes"``: every cut-out is shared; backgrounds and compositions are disjoint.

``val`` is composed from the train sources (it monitors training, it does not measure novelty).

Example:
    >>> train = Photos("train", root="data/sources")  # doctest: +SKIP
    >>> train.images.shape, train.classes[:3]  # doctest: +SKIP
    (torch.Size([3000, 3, 128, 128]), ('bird', 'fish', 'insect'))
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from tkmia import _paths
from tkmia.data._images import open_image

STAMPS_DIR = "usr/share/tuxpaint/stamps"
BACKGROUNDS_DIR = "usr/share/scratch/Media/Backgrounds"
BACKGROUND_CATEGORIES = ("Indoors", "Nature", "Outdoors", "Sports")

#: Label order and the stamp folders (relative to :data:`STAMPS_DIR`) of each class.
CLASS_FOLDERS: dict[str, tuple[str, ...]] = {
    "bird": ("animals/birds",),
    "fish": ("animals/fish",),
    "insect": ("animals/insects",),
    "bovine": ("animals/mammals/bovines",),
    "rodent": ("animals/mammals/rodents",),
    "fruit": ("food/fruit",),
    "vegetable": ("food/vegetables",),
    "flower": ("plants/flowers",),
    "tool": ("household/tools",),
    "instrument": ("hobbies/music/brass", "hobbies/music/percussion", "hobbies/music/string",
                   "hobbies/music/wind"),
    "sport": ("sports",),
    "coin": ("symbols/money/canadian/coins", "symbols/money/euro/coins", "symbols/money/japanese",
             "symbols/money/us/coins"),
    "vehicle": ("vehicles/auto", "vehicles/construction", "vehicles/cycle", "vehicles/emergency",
                "vehicles/flight", "vehicles/flight/planes", "vehicles/masstransit",
                "vehicles/race", "vehicles/ship", "military/vehicles"),
    "household": ("household", "household/dishes", "household/dishes/utensils",
                  "household/arttools"),
}  # fmt: skip
CLASSES: tuple[str, ...] = tuple(CLASS_FOLDERS)

#: The Debian packages the files come from, with their licences.
PACKAGES: dict[str, dict[str, str]] = {
    "tuxpaint-stamps-default": {"doc": "usr/share/doc/tuxpaint-stamps-default",
                                "licence": "GPL-2", "used": "stamps (objects)"},
    "scratch": {"doc": "usr/share/doc/scratch", "licence": "CC-BY-SA-3.0",
                "used": "Media/Backgrounds (backgrounds)"},
}  # fmt: skip

SETTINGS = ("novel_objects", "novel_scenes")
SPLITS = ("train", "val", "test")
FLAT_THRESHOLD = 0.3
MIN_VISIBLE = 0.6
#: Range of an object's opaque area, as a share of the scene (times 0.6 with more than 2 objects).
AREA_RANGE = (0.10, 0.30)
#: Relative probability of drawing n = 1, 2, ... 5 objects for a scene (before visibility checks).
OBJECT_COUNT_WEIGHTS = (1, 2, 3, 4, 5)
_WORK_SIZE = 256  # cut-outs and backgrounds are kept at most this large in memory

#: how to mend a damaged photo file: unpack the packages again (dpkg -x rewrites every file)
_REPAIR = ("delete data/sources/.photos-sources and run `make photos-data` to unpack the packages "
           "again (or replace the file in your --data-root)")
_FETCH = (
    "get them with `make photos-data` (runs `apt-get download tuxpaint-stamps-default scratch` "
    "and `dpkg -x <package>.deb data/sources`), or pass --data-root / root= a folder holding "
    f"{STAMPS_DIR}/... and {BACKGROUNDS_DIR}/... (for example / where both Debian packages "
    "are installed)"
)


def default_root() -> Path:
    """Where the Debian files are looked for by default: ``tkmia home / "sources"``."""
    return _paths.home() / "sources"


def flat_colour_share(image: Image.Image) -> float:
    """Share of opaque pixels covered by the 16 most frequent exact colours (drawings: >= 0.3).

    The image is first reduced to at most 128 px; pixels with alpha < 128 are ignored. A photo
    scores near 0, a flat-coloured drawing or symbol near 1.
    """
    im = image.convert("RGBA")
    im.thumbnail((128, 128))
    a = np.asarray(im)
    pixels = a[..., :3][a[..., 3] >= 128]
    if len(pixels) == 0:
        return 1.0
    _, counts = np.unique(pixels, axis=0, return_counts=True)
    return float(np.sort(counts)[::-1][:16].sum() / len(pixels))


def object_family(stem: str, others: set[str] | None = None) -> str:
    """The object a stamp shows, so that its variants stay on one side of a split.

    ``measuring_tape_mirror`` -> ``measuring``; ``Strawberry2`` -> ``strawberry``; ``gnu-sitting``
    -> ``gnu``; with ``others`` (the families of the class), a name containing another family of
    >= 5 letters joins it: ``yellowpepper`` -> ``pepper``, ``little-penguin`` -> ``penguin``.
    """
    s = stem.lower().removesuffix("_mirror")
    s = re.sub(r"[-_]?\d+$", "", s) or s
    first = re.split(r"[-_]", s)[0] or s
    for other in sorted(others or (), key=lambda o: (-len(o), o)):
        if len(other) >= 5 and other != first and other in s:
            return other
    return first


@dataclass(frozen=True)
class Cutout:
    """One stamp: ``name`` (path under the stamps folder, no suffix), class index, family."""

    name: str
    label: int
    family: str


def _check_root(root: Path) -> None:
    missing = [d for d in (STAMPS_DIR, BACKGROUNDS_DIR) if not (root / d).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"root={str(root)!r} has no {' and no '.join(missing)}: the photos dataset needs the "
            f"files of Debian's tuxpaint-stamps-default and scratch; {_FETCH}"
        )


@lru_cache(maxsize=4)
def _scan(root: str) -> tuple[tuple[Cutout, ...], tuple[str, ...], dict[str, Any]]:
    """The usable cut-outs, the background photos (sorted) and the exclusion record."""
    base = Path(root)
    _check_root(base)
    stamps = base / STAMPS_DIR
    cutouts: list[Cutout] = []
    excluded: list[str] = []
    for label, folders in enumerate(CLASS_FOLDERS.values()):
        names = []
        for folder in folders:
            for path in sorted((stamps / folder).glob("*.png")):
                name = str(path.relative_to(stamps).with_suffix(""))
                if flat_colour_share(open_image(path, "RGBA", _REPAIR)) >= FLAT_THRESHOLD:
                    excluded.append(name)
                else:
                    names.append(name)
        stems = [n.rsplit("/", 1)[-1] for n in names]
        firsts = {object_family(s) for s in stems}
        cutouts += [Cutout(n, label, object_family(s, firsts)) for n, s in zip(names, stems)]
    counts = np.bincount([c.label for c in cutouts], minlength=len(CLASSES))
    empty = [CLASSES[i] for i in np.flatnonzero(counts < 2)]
    if empty:
        raise FileNotFoundError(
            f"root={root!r}: classes {empty} have fewer than 2 usable photo stamps under "
            f"{stamps} (folders {[CLASS_FOLDERS[c] for c in empty]}); {_FETCH}"
        )
    backgrounds = []
    for category in BACKGROUND_CATEGORIES:
        for path in sorted((base / BACKGROUNDS_DIR / category).glob("*")):
            if path.suffix.lower() not in (".jpg", ".jpeg", ".png", ".gif"):
                continue
            name = str(path.relative_to(base / BACKGROUNDS_DIR))
            if flat_colour_share(open_image(path, "RGBA", _REPAIR)) >= FLAT_THRESHOLD:
                excluded.append(f"Backgrounds/{name}")
            else:
                backgrounds.append(name)
    if len(backgrounds) < 2:
        raise FileNotFoundError(
            f"root={root!r}: fewer than 2 background photos under {base / BACKGROUNDS_DIR}; {_FETCH}"
        )
    return tuple(cutouts), tuple(backgrounds), {"excluded_as_drawings": excluded}


def package_versions(root: str | Path) -> dict[str, dict[str, str]]:
    """Each source package's version (from its Debian changelog; ``"unknown"`` if absent) and licence."""
    out = {}
    for package, info in PACKAGES.items():
        log = Path(root) / info["doc"] / "changelog.Debian.gz"
        version = "unknown"
        if log.is_file():
            first = gzip.open(log, "rt", errors="replace").readline()
            match = re.search(r"\(([^)]+)\)", first)
            version = match.group(1) if match else version
        out[package] = {"version": version, "licence": info["licence"], "used": info["used"]}
    return out


def _source_bytes(root: Path, side: dict[str, list]) -> int:
    """Total size of the files a side uses (part of the cache key, with their names)."""
    paths = [root / STAMPS_DIR / f"{c.name}.png" for c in side["cutouts"]]
    paths += [root / BACKGROUNDS_DIR / b for b in side["backgrounds"]]
    return sum(p.stat().st_size for p in paths)


def _split_by_family(
    items: list[Any], family: list[str], test_fraction: float, rng: np.random.Generator
) -> tuple[list[Any], list[Any]]:
    """Whole families to test, in seeded random order, until test holds ``test_fraction`` of the families.

    Families, not files, are counted: both sides then get about their share of distinct objects,
    whatever the number of variants of each (a family of 11 numbered flowers counts once). Test
    gets at least one family, train keeps at least one.
    """
    families = sorted(set(family))
    rng.shuffle(families)
    n_test = min(max(1, round(test_fraction * len(families))), len(families) - 1)
    test_families = set(families[:n_test])
    train = [x for x, f in zip(items, family) if f not in test_families]
    test = [x for x, f in zip(items, family) if f in test_families]
    return train, test


def split_sources(
    root: str | Path, setting: str = "novel_objects", seed: int = 0, test_fraction: float = 0.4
) -> dict[str, dict[str, list]]:
    """Which cut-outs and backgrounds each side uses.

    Returns:
        ``{"train": {"cutouts": [Cutout...], "backgrounds": [name...]}, "test": {...}}``; in
        ``novel_objects`` no cut-out family and no background is on both sides, in
        ``novel_scenes`` the cut-outs are shared and the backgrounds disjoint.
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting={setting!r}; allowed: {SETTINGS}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction!r}; expected 0 < test_fraction < 1")
    cutouts, backgrounds, _ = _scan(str(Path(root).expanduser().resolve()))
    rng = np.random.default_rng([seed, 7])
    sides: dict[str, dict[str, list]] = {"train": {"cutouts": [], "backgrounds": []},
                                         "test": {"cutouts": [], "backgrounds": []}}  # fmt: skip
    for label in range(len(CLASSES)):
        group = [c for c in cutouts if c.label == label]
        if setting == "novel_objects":
            train, test = _split_by_family(group, [c.family for c in group], test_fraction, rng)
        else:
            train, test = group, group
        sides["train"]["cutouts"] += train
        sides["test"]["cutouts"] += test
    for category in BACKGROUND_CATEGORIES:
        group = [b for b in backgrounds if b.startswith(category + "/")]
        if len(group) >= 2:
            train, test = _split_by_family(group, group, test_fraction, rng)
        else:
            train, test = group, []
        sides["train"]["backgrounds"] += train
        sides["test"]["backgrounds"] += test
    if not sides["test"]["backgrounds"]:
        sides["test"]["backgrounds"].append(sides["train"]["backgrounds"].pop())
    return sides


@lru_cache(maxsize=512)
def _load_rgba(path: str) -> Image.Image:
    """A stamp cropped to its opaque box, at most ``_WORK_SIZE`` px (RGBA)."""
    im = open_image(path, "RGBA", _REPAIR)
    box = im.getchannel("A").point(lambda v: 255 if v >= 16 else 0).getbbox()
    if box is not None:
        im = im.crop(box)
    im.thumbnail((_WORK_SIZE, _WORK_SIZE), Image.Resampling.LANCZOS)
    return im


@lru_cache(maxsize=128)
def _load_rgb(path: str) -> Image.Image:
    im = open_image(path, "RGB", _REPAIR)
    im.thumbnail((_WORK_SIZE * 4 // 3, _WORK_SIZE), Image.Resampling.LANCZOS)
    return im


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32) / 255.0


def object_count(rng: np.random.Generator, n_classes: int) -> int:
    """How many objects a scene draws: n in 1..min(5, n_classes) with probability proportional to
    :data:`OBJECT_COUNT_WEIGHTS` (n / 15 with all 14 classes available)."""
    if n_classes < 1:
        raise ValueError(f"n_classes={n_classes!r}; a scene needs at least one class with cut-outs")
    weights = np.asarray(OBJECT_COUNT_WEIGHTS[:n_classes], dtype=float)
    return int(rng.choice(np.arange(1, len(weights) + 1), p=weights / weights.sum()))


def compose(
    background: Image.Image,
    objects: list[tuple[int, Image.Image]],
    image_size: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[int], list[float]]:
    """Paste cut-outs on a random square crop of a background.

    Args:
        background: an RGB image.
        objects: ``(class index, RGBA cut-out)`` in pasting order.
        image_size: side S of the scene.
        rng: the random source (crop, scale, position, flip).

    Returns:
        ``(scene (S, S, 3) float32 in [0, 1], indices into objects of those pasted, the visible
        share of each pasted object's opaque pixels)``; every share is >= :data:`MIN_VISIBLE`.
    """
    s = image_size
    w, h = background.size
    side = int(min(h, w) * rng.uniform(0.6, 1.0))
    y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    box = (x0, y0, x0 + side, y0 + side)
    scene = _pixels(background.resize((s, s), Image.Resampling.BILINEAR, box=box))
    if rng.random() < 0.5:
        scene = scene[:, ::-1]
    scene = np.ascontiguousarray(scene)
    owner = np.full((s, s), -1, dtype=np.int64)
    areas: list[int] = []
    pasted: list[int] = []
    crowd = 1.0 if len(objects) <= 2 else 0.6
    for i, (_, cutout) in enumerate(objects):
        opaque = float((np.asarray(cutout.getchannel("A")) >= 128).sum())
        target = rng.uniform(*AREA_RANGE) * crowd * s * s  # opaque area in pixels
        scale = np.sqrt(target / max(opaque, 1.0))
        scale = min(scale, 0.8 * s / max(cutout.size))
        ow = max(4, round(cutout.size[0] * scale))
        oh = max(4, round(cutout.size[1] * scale))
        patch = _pixels(cutout.resize((ow, oh), Image.Resampling.BILINEAR))
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        mask = patch[..., 3] >= 0.5
        if mask.sum() < 16:
            continue
        for _ in range(30):
            y, x = int(rng.integers(0, s - oh + 1)), int(rng.integers(0, s - ow + 1))
            region = owner[y : y + oh, x : x + ow]
            covered = np.bincount(region[mask][region[mask] >= 0], minlength=len(areas))
            visible = [(owner == j).sum() - covered[j] for j in range(len(areas))]
            if all(v >= MIN_VISIBLE * a for v, a in zip(visible, areas) if a > 0):
                alpha = patch[..., 3:4]
                view = scene[y : y + oh, x : x + ow]
                view[:] = alpha * patch[..., :3] + (1 - alpha) * view
                region[mask] = len(areas)
                areas.append(int(mask.sum()))
                pasted.append(i)
                break
        else:
            areas.append(0)  # not pasted: keeps the owner indices aligned
    shown = np.bincount(owner[owner >= 0], minlength=len(areas))
    visible = [float(shown[j] / areas[j]) for j in range(len(areas)) if areas[j] > 0]
    return np.clip(scene, 0.0, 1.0), pasted, visible


class Photos(Dataset):
    """The photos dataset: scenes of real photo cut-outs on real backgrounds (see module doc).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        n_images: number of scenes (default 3000 / 300 / 2000).
        image_size: side S in pixels.
        setting: ``"novel_objects"`` or ``"novel_scenes"``.
        seed: the seed of the source split and of every scene.
        root: folder holding the Debian files in their upstream layout (default
            :func:`default_root`).
        cache: folder of generated datasets (default ``tkmia home / "photos"``); None disables.
            The file name holds a hash of every parameter, the source files' names, total size
            and package versions.

    Attributes:
        images: (N, 3, S, S) float in [0, 1]; labels: (N, C) float multi-hot.
        classes: the C class names; objects: per scene, ``{"background": name, "pasted":
            [[class, cut-out name], ...]}``.
        checksum: sha256 of the images and labels; metadata: sources, packages, licences.
    """

    DEFAULT_SIZES = {"train": 3000, "val": 300, "test": 2000}

    def __init__(
        self,
        split: str,
        n_images: int | None = None,
        image_size: int = 128,
        setting: str = "novel_objects",
        seed: int = 0,
        root: str | Path | None = None,
        cache: str | Path | None = "default",
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split={split!r}; allowed for photos: {SPLITS}")
        if setting not in SETTINGS:
            raise ValueError(f"setting={setting!r}; allowed: {SETTINGS}")
        n_images = self.DEFAULT_SIZES[split] if n_images is None else n_images
        if not isinstance(n_images, int) or n_images < 1:
            raise ValueError(f"n_images={n_images!r}; expected a positive int")
        if not isinstance(image_size, int) or image_size < 32:
            raise ValueError(f"image_size={image_size!r}; expected an int >= 32")
        root = Path(root if root is not None else default_root()).expanduser().resolve()
        _check_root(root)
        self.split, self.setting, self.seed, self.image_size = split, setting, seed, image_size
        self.classes = CLASSES
        sides = split_sources(root, setting, seed)
        side = sides["test" if split == "test" else "train"]
        params = {
            "split": split, "n": n_images, "size": image_size, "setting": setting, "seed": seed,
            "cutouts": [c.name for c in side["cutouts"]], "backgrounds": side["backgrounds"],
            "packages": package_versions(root), "bytes": _source_bytes(root, side),
            "area": list(AREA_RANGE), "counts": list(OBJECT_COUNT_WEIGHTS), "version": 4,
        }  # fmt: skip
        key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
        if cache == "default":
            cache = _paths.home() / "photos"
        path = None if cache is None else Path(cache) / f"{setting}-{split}-{key}.pt"
        if path is not None and path.is_file():
            stored = torch.load(path, weights_only=False)
            images, self.labels, self.objects = stored["images"], stored["labels"], stored["objects"]
        else:
            images, self.labels, self.objects = self._generate(root, side, n_images)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                torch.save({"images": images, "labels": self.labels, "objects": self.objects}, tmp)
                tmp.replace(path)
        self.images = images.float() / 255.0
        digest = hashlib.sha256(images.numpy().tobytes())
        digest.update(self.labels.numpy().tobytes())
        self.checksum = digest.hexdigest()
        cutouts, backgrounds, excluded = _scan(str(root))
        self.metadata = {
            "setting": setting, "split": split, "seed": seed, "image_size": image_size,
            "packages": package_versions(root), "root": str(root),
            "cutouts": {c: [o.name for o in side["cutouts"] if o.label == i]
                        for i, c in enumerate(CLASSES)},
            "backgrounds": list(side["backgrounds"]), **excluded,
        }  # fmt: skip

    def _generate(
        self, root: Path, side: dict[str, list], n_images: int
    ) -> tuple[torch.Tensor, torch.Tensor, list]:
        pools: dict[int, dict[str, list[Cutout]]] = {}  # class -> family -> cut-outs
        for c in side["cutouts"]:
            pools.setdefault(c.label, {}).setdefault(c.family, []).append(c)
        labels_avail = sorted(pools)
        split_code = SPLITS.index(self.split)
        images = torch.empty(n_images, 3, self.image_size, self.image_size, dtype=torch.uint8)
        labels = torch.zeros(n_images, len(CLASSES))
        objects = []
        for i in range(n_images):
            rng = np.random.default_rng([self.seed, split_code, i])
            n = object_count(rng, len(labels_avail))
            chosen = rng.choice(labels_avail, size=n, replace=False)
            picks = []
            for c in chosen:  # an object (family) uniformly, then one of its cut-outs
                families = pools[int(c)]
                members = families[sorted(families)[int(rng.integers(len(families)))]]
                picks.append(members[int(rng.integers(len(members)))])
            bg = side["backgrounds"][int(rng.integers(len(side["backgrounds"])))]
            scene, pasted, _ = compose(
                _load_rgb(str(root / BACKGROUNDS_DIR / bg)),
                [(p.label, _load_rgba(str(root / STAMPS_DIR / p.name) + ".png")) for p in picks],
                self.image_size, rng,
            )  # fmt: skip
            images[i] = torch.from_numpy(np.round(scene * 255).astype(np.uint8)).permute(2, 0, 1)
            for j in pasted:
                labels[i, picks[j].label] = 1.0
            objects.append(
                {"background": bg, "pasted": [[CLASSES[picks[j].label], picks[j].name] for j in pasted]}
            )
        return images, labels, objects

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def __repr__(self) -> str:
        return (f"Photos(split={self.split!r}, setting={self.setting!r}, n={len(self)}, "
                f"image_size={self.image_size}, classes={len(self.classes)})")  # fmt: skip


def source_table(root: str | Path | None = None, setting: str = "novel_objects", seed: int = 0):
    """Per class: cut-outs on each side (and backgrounds per category), as a pandas DataFrame."""
    import pandas as pd

    root = Path(root if root is not None else default_root()).expanduser().resolve()
    sides = split_sources(root, setting, seed)
    rows = []
    for i, cls in enumerate(CLASSES):
        row: dict[str, Any] = {"class": cls}
        for name, side in sides.items():
            members = [c for c in side["cutouts"] if c.label == i]
            row[f"{name} cut-outs"] = len(members)
            row[f"{name} objects"] = len({c.family for c in members})
        rows.append(row)
    for category in BACKGROUND_CATEGORIES:
        row = {"class": f"background: {category}"}
        for name, side in sides.items():
            row[f"{name} cut-outs"] = sum(b.startswith(category + "/") for b in side["backgrounds"])
            row[f"{name} objects"] = row[f"{name} cut-outs"]
        rows.append(row)
    return pd.DataFrame(rows)
