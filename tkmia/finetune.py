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

import time

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from tkmia.metrics import precision_at_k
from tkmia.training import (
    TrainResult,
    batches,
    check_settings,
    make_optimizer,
    mean_average_precision,
)


@torch.no_grad()
def frozen_features(model: nn.Module, dataset: Dataset, batch_size: int = 64,
                    device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``(features (N, c, h, w) after the frozen blocks, labels (N, C))`` of a whole dataset."""  # fmt: skip
    model.eval()
    feats, labels = [], []
    for images, y in batches(dataset, batch_size, shuffle=False, generator=None):
        feats.append(model.stem_and_blocks(images.to(device), model.frozen_blocks).cpu())
        labels.append(y.float())
    return torch.cat(feats), torch.cat(labels)


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

    The arguments not listed below (the datasets, ``epochs``, ``batch_size``, ``lr``, ``optimizer``,
    ``schedule``, ``weight_decay``, ``momentum``, ``seed``, ``k``, ``device``, ``progress``) are those
    of :func:`tkmia.training.train_model`.

    Args:
        model: has ``frozen_blocks`` (>= 1), ``stem_and_blocks(images, stop)`` and
            ``head(features, start)`` (see :class:`tkmia.models.EfficientNetLite0`).
        flip: flip half of each batch's feature maps horizontally.
        num_workers: unused (the features are in memory); accepted for the same signature.

    Returns:
        A :class:`tkmia.training.TrainResult`; its history also records ``feature_seconds``.
    """
    start_block = getattr(model, "frozen_blocks", 0)
    if not isinstance(start_block, int) or start_block < 1:
        raise ValueError(f"model.frozen_blocks={start_block!r}; finetune_frozen needs >= 1 frozen block")
    epochs, batch_size = check_settings(epochs, batch_size, lr, optimizer, schedule)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model.to(device)
    begin = time.perf_counter()
    x_train, y_train = frozen_features(model, train_set, batch_size, device)
    x_val, y_val = None, None
    if val_set is not None:
        x_val, y_val = frozen_features(model, val_set, batch_size, device)
    feature_seconds = time.perf_counter() - begin
    steps = -(-len(x_train) // batch_size)
    opt, scheduler = make_optimizer(model, optimizer, lr, weight_decay, momentum, schedule, epochs * steps)
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
    result = TrainResult()
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        total = 0.0
        bar = tqdm(range(0, len(order), batch_size), desc=f"epoch {epoch}/{epochs}",
                   disable=not progress, leave=False, unit="batch")  # fmt: skip
        for i in bar:
            idx = order[i : i + batch_size]
            x, y = x_train[idx].to(device), y_train[idx].to(device)
            if flip:
                mask = torch.rand(len(idx), generator=generator) < 0.5
                x = torch.where(mask.to(device)[:, None, None, None], x.flip(3), x)
            loss = loss_fn(model.head(x, start_block), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if scheduler is not None:
                scheduler.step()
            total += float(loss.detach())
        record = {"epoch": epoch, "loss": total / len(x_train)}
        if x_val is not None:
            model.eval()
            with torch.no_grad():
                scores = torch.cat([model.head(x_val[j : j + 256].to(device), start_block).cpu()
                                    for j in range(0, len(x_val), 256)])  # fmt: skip
            record["val_map"] = mean_average_precision(scores, y_val)
            record["val_precision_at_k"] = float(precision_at_k(scores, y_val, k).mean())
        record["seconds"] = time.perf_counter() - begin
        record["feature_seconds"] = feature_seconds
        result.history.append(record)
        if progress:
            extra = f" val mAP {record['val_map']:.4f}" if x_val is not None else ""
            tqdm.write(f"epoch {epoch}/{epochs}: loss {record['loss']:.4f}{extra}")
    result.seconds = time.perf_counter() - begin
    model.eval()
    return result
