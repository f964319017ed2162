"""Shared helpers of the real-dataset loaders: image decoding and the missing-data error."""

from __future__ import annotations

import hashlib
import numbers
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tkmia._checks import int_in


def open_image(path: str | Path, mode: str, how: str = "replace it with a good copy") -> Image.Image:
    """The image at ``path``, decoded in full and converted to ``mode`` ("RGB", "RGBA", ...).

    A truncated or corrupt file is a ``ValueError`` of one line naming the file and ``how`` to
    mend it, never a PIL traceback half-way through a dataset.
    """
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert(mode)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise ValueError(f"{str(path)!r} is not a readable image ({error}): the file is truncated "
                         f"or corrupt; {how}") from None


def load_image(path: str | Path, image_size: int) -> torch.Tensor:
    """Read an image as RGB, resize it to ``image_size`` x ``image_size`` (bilinear), scale to [0, 1].

    Returns:
        Float tensor (3, image_size, image_size) in [0, 1].
    """
    img = open_image(path, "RGB").resize((image_size, image_size), Image.BILINEAR)
    array = np.asarray(img, dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1).float() / 255.0


def missing(path: Path, what: str, how: str) -> FileNotFoundError:
    """The error of a missing dataset: the path looked in, what to download and where to put it."""
    return FileNotFoundError(f"{what} not found: looked in {str(path)!r}. {how}")


def labels_checksum(ids: list[str], labels: torch.Tensor) -> str:
    """A 16-hex-digit checksum of image ids and their label matrix."""
    h = hashlib.sha256()
    h.update("\n".join(ids).encode())
    h.update(labels.to(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def check_size(image_size: int) -> None:
    int_in(image_size, "image_size", 1)
