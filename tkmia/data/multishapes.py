"""MultiShapes: the embedded, procedurally generated multi-label dataset of the default profile.

Each image shows 1 to 6 objects of distinct classes; each of the 20 classes is a shape (circle,
square, triangle, star, ...) drawn in a random colour, size, position and rotation over a textured
background, objects sometimes overlapping (never hiding one another). Images are rendered with numpy
from analytic masks (2x2 super-sampling), quantised to 8 bits, and cached under
``tkmia._paths.home() / "multishapes"``; the same parameters give bit-identical tensors.

Image ``i`` of a split depends only on ``(seed, split, i)``, so a smaller split is a prefix of a
larger one (first-n deterministic subsets). ``mean_labels = m`` draws the number of objects
uniformly from m − 1, m, m + 1 instead of :data:`N_OBJECTS_PROBS` (mean |Y| = m): the label
cardinality variants of the chapter "Label cardinality against k", cached like the default.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tkmia import _paths
from tkmia._io import atomic_write

#: Bump when the rendering changes, so that old caches are not reused.
GENERATOR_VERSION = 1

#: The 20 class names, in label-index order.
CLASSES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon", "crescent",
    "arrow", "semicircle", "ell", "tee", "frame", "bar", "heart", "hourglass", "chevron", "trio",
    "trapezoid",
)  # fmt: skip

#: Default split sizes of the default profile.
DEFAULT_SIZES: dict[str, int] = {"train": 16000, "val": 500, "test": 1000}

SPLITS = ("train", "val", "test")

#: Probability of 1, 2, ..., 6 objects (distinct classes) in an image.
N_OBJECTS_PROBS = (0.06, 0.12, 0.17, 0.23, 0.23, 0.19)


def _regular(n: int, radius: float = 0.95, phase: float = 0.0) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _star(points: int = 5, outer: float = 0.98, inner: float = 0.42) -> np.ndarray:
    angles = np.pi / 2 + np.pi * np.arange(2 * points) / points
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


# Polygons in unit coordinates (every vertex inside the unit disk).
_POLYGONS: dict[str, np.ndarray] = {
    "triangle": _regular(3, 0.97, np.pi / 2),
    "star": _star(),
    "hexagon": _regular(6, 0.92),
    "arrow": np.array(
        [[-0.9, -0.22], [0.15, -0.22], [0.15, -0.6], [0.92, 0.0], [0.15, 0.6], [0.15, 0.22],
         [-0.9, 0.22]]
    ),  # fmt: skip
    "ell": np.array([[-0.6, -0.7], [-0.2, -0.7], [-0.2, 0.3], [0.6, 0.3], [0.6, 0.7], [-0.6, 0.7]]),
    "tee": np.array(
        [[-0.7, -0.68], [0.7, -0.68], [0.7, -0.3], [0.2, -0.3], [0.2, 0.68], [-0.2, 0.68],
         [-0.2, -0.3], [-0.7, -0.3]]
    ),  # fmt: skip
    "hourglass": np.array([[-0.6, -0.75], [0.6, -0.75], [0.0, 0.0], [0.6, 0.75], [-0.6, 0.75],
                           [0.0, 0.0]]),  # fmt: skip
    "chevron": np.array([[-0.85, -0.6], [0.0, 0.2], [0.85, -0.6], [0.85, 0.0], [0.0, 0.8],
                         [-0.85, 0.0]]),  # fmt: skip
    "trapezoid": np.array([[-0.9, -0.45], [0.9, -0.45], [0.45, 0.45], [-0.45, 0.45]]),
}


def _in_polygon(u: np.ndarray, v: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule point-in-polygon test, vectorised over points."""
    inside = np.zeros(u.shape, dtype=bool)
    xs, ys = poly[:, 0], poly[:, 1]
    for i in range(len(poly)):
        x1, y1, x2, y2 = xs[i], ys[i], xs[i - 1], ys[i - 1]
        if y1 == y2:
            continue
        crosses = (y1 > v) != (y2 > v)
        x_at = x1 + (v - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (u < x_at)
    return inside


def _shape_mask(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of local unit coordinates ``(u, v)`` in the shape ``name``."""
    r2 = u * u + v * v
    if name in _POLYGONS:
        return _in_polygon(u, v, _POLYGONS[name])
    if name == "circle":
        return r2 <= 0.9**2
    if name == "square":
        return (np.abs(u) <= 0.66) & (np.abs(v) <= 0.66)
    if name == "cross":
        return ((np.abs(u) <= 0.92) & (np.abs(v) <= 0.28)) | ((np.abs(v) <= 0.92) & (np.abs(u) <= 0.28))
    if name == "ring":
        return (r2 <= 0.95**2) & (r2 >= 0.55**2)
    if name == "diamond":
        return np.abs(u) / 0.97 + np.abs(v) / 0.5 <= 1
    if name == "crescent":
        return (r2 <= 0.92**2) & ((u - 0.42) ** 2 + v**2 > 0.72**2)
    if name == "semicircle":
        return (u * u + (v + 0.35) ** 2 <= 0.9**2) & (v >= -0.35)
    if name == "frame":
        a, b = np.abs(u), np.abs(v)
        return (a <= 0.7) & (b <= 0.7) & ~((a <= 0.38) & (b <= 0.38))
    if name == "bar":
        return (np.abs(u) <= 0.95) & (np.abs(v) <= 0.24)
    if name == "heart":
        x, y = u / 0.85, v / 0.85 + 0.1
        return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0
    if name == "trio":
        out = np.zeros(u.shape, dtype=bool)
        for cx, cy in _regular(3, 0.55, np.pi / 2):
            out |= (u - cx) ** 2 + (v - cy) ** 2 <= 0.36**2
        return out
    raise ValueError(f"unknown shape {name!r}; allowed: {CLASSES}")


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A textured background (3, S, S) in [0, 1] and its mean colour."""
    base = rng.uniform(0.2, 0.8, size=3)
    grid = rng.uniform(-1.0, 1.0, size=(3, 5, 5))
    # Bilinear up-sampling of the coarse noise grid.
    t = np.linspace(0.0, 4.0, size)
    i0 = np.minimum(np.floor(t).astype(int), 3)
    f = t - i0
    rows = grid[:, i0, :] * (1 - f)[None, :, None] + grid[:, i0 + 1, :] * f[None, :, None]
    noise = rows[:, :, i0] * (1 - f)[None, None, :] + rows[:, :, i0 + 1] * f[None, None, :]
    amp = rng.uniform(0.05, 0.15)
    yy, xx = np.mgrid[0:size, 0:size] / size
    phi, freq, phase = rng.uniform(0, np.pi), rng.uniform(3.0, 9.0), rng.uniform(0, 2 * np.pi)
    stripes = np.sin(2 * np.pi * freq * (xx * np.cos(phi) + yy * np.sin(phi)) + phase)
    stripe_amp = rng.uniform(0.0, 0.07)
    img = base[:, None, None] + amp * noise + stripe_amp * stripes[None]
    grain = rng.normal(0.0, 0.02, size=(3, size, size))
    return np.clip(img + grain, 0.0, 1.0), base


def render_image(
    rng: np.random.Generator, size: int, n_classes: int = len(CLASSES), mean_labels: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Render one MultiShapes image with the random stream ``rng``.

    Args:
        rng: the numpy generator that makes every random choice.
        size: image side in pixels.
        n_classes: draw classes from the first ``n_classes`` names of :data:`CLASSES`.
        mean_labels: None (object counts from :data:`N_OBJECTS_PROBS`) or m: a count drawn
            uniformly from m − 1, m, m + 1.

    Returns:
        ``(image, labels)``: uint8 array (3, size, size) and float32 multi-hot (n_classes,).
    """
    img, base = _background(rng, size)
    if mean_labels is None:
        n_obj = int(rng.choice(len(N_OBJECTS_PROBS), p=N_OBJECTS_PROBS)) + 1
    else:
        n_obj = int(mean_labels) - 1 + int(rng.integers(3))
    n_obj = min(n_obj, n_classes)
    classes = rng.choice(n_classes, size=n_obj, replace=False)
    placed: list[tuple[float, float, float]] = []
    for c in classes:
        radius = rng.uniform(0.13, 0.22) * size
        for _attempt in range(60):
            cx, cy = rng.uniform(radius, size - radius, size=2)
            if all(math.hypot(cx - x, cy - y) >= 0.8 * (radius + r) for x, y, r in placed):
                break
            if _attempt % 10 == 9:
                radius *= 0.9
        placed.append((cx, cy, radius))
        theta = rng.uniform(0, 2 * np.pi)
        colour = rng.uniform(0, 1, size=3)
        for _ in range(20):
            if np.abs(colour - base).mean() >= 0.3:
                break
            colour = rng.uniform(0, 1, size=3)
        # Bounding box and 2x2 super-sampled coverage.
        x0, x1 = max(int(cx - radius) - 1, 0), min(int(cx + radius) + 2, size)
        y0, y1 = max(int(cy - radius) - 1, 0), min(int(cy + radius) + 2, size)
        sub = (np.arange(2) + 0.5) / 2
        ys = (np.arange(y0, y1)[:, None] + sub[None, :]).reshape(-1)
        xs = (np.arange(x0, x1)[:, None] + sub[None, :]).reshape(-1)
        py, px = np.meshgrid(ys - cy, xs - cx, indexing="ij")
        cos_t, sin_t = math.cos(theta), math.sin(theta)
        u = (cos_t * px + sin_t * py) / radius
        v = (-sin_t * px + cos_t * py) / radius
        mask = _shape_mask(CLASSES[int(c)], u, -v).astype(np.float64)
        alpha = mask.reshape(y1 - y0, 2, x1 - x0, 2).mean(axis=(1, 3))
        shade = 1.0 + 0.12 * (py.reshape(y1 - y0, 2, x1 - x0, 2).mean(axis=(1, 3)) / radius)
        patch = img[:, y0:y1, x0:x1]
        fill = np.clip(colour[:, None, None] * shade[None], 0, 1)
        img[:, y0:y1, x0:x1] = patch * (1 - alpha[None]) + fill * alpha[None]
    labels = np.zeros(n_classes, dtype=np.float32)
    labels[classes] = 1.0
    return np.round(img * 255.0).astype(np.uint8), labels


def _params(split: str, n_images: int, image_size: int, seed: int, mean_labels: int | None = None) -> dict:
    params = {
        "generator_version": GENERATOR_VERSION,
        "split": split,
        "n_images": int(n_images),
        "image_size": int(image_size),
        "seed": int(seed),
        "classes": list(CLASSES),
    }
    if mean_labels is not None:  # absent by default: the default's checksum stays what it was
        params["mean_labels"] = int(mean_labels)
    return params


def params_checksum(
    split: str, n_images: int, image_size: int, seed: int, mean_labels: int | None = None
) -> str:
    """A 16-hex-digit checksum of the generation parameters (the cache key)."""
    text = json.dumps(_params(split, n_images, image_size, seed, mean_labels), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def generate(
    split: str, n_images: int, image_size: int = 64, seed: int = 0, mean_labels: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render a MultiShapes split (no cache).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (each has its own random streams).
        n_images: number of images.
        image_size: image side in pixels (at least 24).
        seed: the dataset seed.
        mean_labels: None (the default label counts) or the mean number of labels per image, an
            int in 2 .. 19 (counts uniform on mean_labels − 1 .. mean_labels + 1).

    Returns:
        ``(images, labels)``: uint8 (N, 3, S, S) and float32 multi-hot (N, 20).

    Example:
        >>> images, labels = generate("test", 4, image_size=32)
        >>> images.shape, labels.shape
        (torch.Size([4, 3, 32, 32]), torch.Size([4, 20]))
    """
    n_images, image_size, seed = _check(split, n_images, image_size, seed)
    mean_labels = _check_mean_labels(mean_labels)
    split_id = SPLITS.index(split)
    images = np.empty((n_images, 3, image_size, image_size), dtype=np.uint8)
    labels = np.empty((n_images, len(CLASSES)), dtype=np.float32)
    for i in range(n_images):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, split_id, i])))
        images[i], labels[i] = render_image(rng, image_size, mean_labels=mean_labels)
    return torch.from_numpy(images), torch.from_numpy(labels)


def _integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_mean_labels(mean_labels) -> int | None:
    """``mean_labels`` as an int in 2 .. C − 1, or None."""
    if mean_labels is None:
        return None
    if not _integer(mean_labels) or not 2 <= mean_labels <= len(CLASSES) - 1:
        raise ValueError(f"mean_labels={mean_labels!r}; expected None or an int in 2..{len(CLASSES) - 1} "
                         "(the counts are drawn from mean_labels - 1 .. mean_labels + 1)")
    return int(mean_labels)


def _check(split: str, n_images: int, image_size: int, seed: int) -> tuple[int, int, int]:
    """Validate the generation parameters; numpy integers become ints."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not a MultiShapes split; allowed: {SPLITS}")
    if not _integer(n_images) or n_images < 1:
        raise ValueError(f"n_images={n_images!r}; expected a positive int")
    if not _integer(image_size) or image_size < 24:
        raise ValueError(f"image_size={image_size!r}; expected an int >= 24")
    if not _integer(seed) or seed < 0:
        raise ValueError(f"seed={seed!r}; expected a non-negative int")
    return int(n_images), int(image_size), int(seed)


def load_split(
    split: str,
    n_images: int,
    image_size: int = 64,
    seed: int = 0,
    root: str | Path | None = None,
    mean_labels: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Load a MultiShapes split from the cache, generating and caching it on first use.

    Args:
        split, n_images, image_size, seed, mean_labels: as in :func:`generate`.
        root: cache folder; default ``tkmia._paths.home() / "multishapes"``.

    Returns:
        ``(images, labels, checksum)`` with uint8 images (N, 3, S, S), float labels (N, 20), and the
        parameter checksum that names the cache file.
    """
    n_images, image_size, seed = _check(split, n_images, image_size, seed)
    mean_labels = _check_mean_labels(mean_labels)
    checksum = params_checksum(split, n_images, image_size, seed, mean_labels)
    folder = Path(root) if root is not None else _paths.home() / "multishapes"
    path = folder / f"{checksum}.pt"
    if path.exists():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            return blob["images"], blob["labels"], checksum
        except Exception as err:  # a truncated or damaged cache file: rebuilt, it is derived data
            warnings.warn(f"dataset cache {path} is unreadable ({type(err).__name__}); rebuilding it",
                          stacklevel=2)
    images, labels = generate(split, n_images, image_size, seed, mean_labels)
    blob = {"images": images, "labels": labels}
    atomic_write(path, lambda p: torch.save(blob, p))
    return images, labels, checksum


class MultiShapes(Dataset):
    """The embedded multi-label dataset: ``dataset[i] -> (image, labels)``.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        n_images: number of images; default :data:`DEFAULT_SIZES` of the split.
        image_size: image side in pixels.
        seed: dataset seed.
        root: cache folder (default ``tkmia._paths.home() / "multishapes"``).
        mean_labels: None (the default label counts) or the mean number of labels per image.

    Attributes:
        images: float tensor (N, 3, S, S) in [0, 1] (8-bit values divided by 255).
        labels: float tensor (N, 20) in {0, 1}.
        classes: the class names, in label order.
        checksum: the checksum of the generation parameters.

    Example:
        >>> test = MultiShapes("test", n_images=8, image_size=32)
        >>> test.images.shape, test.classes[:3]
        (torch.Size([8, 3, 32, 32]), ('circle', 'square', 'triangle'))
    """

    name = "multishapes"

    def __init__(
        self,
        split: str = "train",
        n_images: int | None = None,
        image_size: int = 64,
        seed: int = 0,
        root: str | Path | None = None,
        mean_labels: int | None = None,
    ) -> None:
        if n_images is None:
            if split not in DEFAULT_SIZES:
                raise ValueError(f"split={split!r} is not a MultiShapes split; allowed: {SPLITS}")
            n_images = DEFAULT_SIZES[split]
        raw, labels, checksum = load_split(split, n_images, image_size, seed, root, mean_labels)
        self.mean_labels = mean_labels
        self.split = split
        self.image_size = int(image_size)
        seed = int(seed)
        self.seed = seed
        self.images = raw.float() / 255.0
        self.labels = labels
        self.classes = CLASSES
        self.checksum = checksum

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def __repr__(self) -> str:
        return (
            f"MultiShapes(split={self.split!r}, n_images={len(self)}, "
            f"image_size={self.image_size}, seed={self.seed}"
            + (f", mean_labels={self.mean_labels})" if self.mean_labels is not None else ")")
        )


def label_statistics(labels: torch.Tensor) -> Mapping[str, float]:
    """Summary of a multi-hot label matrix: labels per image (min, mean, max), share with >= 4.

    Args:
        labels: (N, C) in {0, 1}.
    """
    counts = labels.sum(1)
    return {
        "min_labels": float(counts.min()),
        "mean_labels": float(counts.mean()),
        "max_labels": float(counts.max()),
        "share_4_or_more": float((counts >= 4).float().mean()),
    }
