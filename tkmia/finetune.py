"""Fine-tuning a pretrained victim whose bottom is frozen, on cached features (CPU-friendly).

The photos victim (:class:`tkmia.models.EfficientNetLite0` with ``frozen_blocks = b``) spends
most of its compute in the stem and first blocks, at high resolution. Those are frozen, so their
output is computed once per training image (:func:`frozen_features`) and only the top of the
network is trained, from those feature maps, with horizontally flipped copies as augmentation.
The result is the same model as training end to end with a frozen bottom and flipped images
(up to the asymmetric padding of the stride-2 convolutions, which a flip does not commute with).

Example:
    >>> finetune_frozen(model, train, val, epochs=4, batch_size=64, lr=1e-3)  # doctest: +SKIP
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from tkmia.training import TrainResult, frozen_features, train_model

__all__ = ["finetune_frozen", "frozen_features"]


def finetune_frozen(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None = None,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    optimizer: str = "adam",
    schedule: str = "constant",
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    flip: bool = False,
    seed: int = 0,
    k: int = 3,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Train the unfrozen top of ``model`` with BCE-with-logits (sum), as :func:`tkmia.training.train_model`.

    ``train_model(..., cached_features=True)``: the arguments not listed below (the datasets,
    ``epochs``, ``batch_size``, ``lr``, ``optimizer``, ``schedule``, ``weight_decay``, ``momentum``,
    ``seed``, ``k``, ``device``, ``progress``) are those of :func:`tkmia.training.train_model`.

    Args:
        model: has ``frozen_blocks`` (>= 1), ``stem_and_blocks(images, stop)`` and
            ``head(features, start)`` (see :class:`tkmia.models.EfficientNetLite0`).
        flip: flip half of each batch's feature maps horizontally.
        num_workers: unused (the features are in memory); accepted for the same signature.

    Returns:
        A :class:`tkmia.training.TrainResult`; its history also records ``feature_seconds``.
    """
    return train_model(model, train_set, val_set, epochs=epochs, batch_size=batch_size, lr=lr,
                       optimizer=optimizer, schedule=schedule, weight_decay=weight_decay, momentum=momentum,
                       flip=flip, seed=seed, k=k, device=device, num_workers=num_workers, progress=progress,
                       cached_features=True)  # fmt: skip
