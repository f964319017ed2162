"""The victim cache: a trained model per training configuration, trained once, then loaded.

The cache key is a hash of the profile's ``dataset`` (without ``root`` and ``eval_split``),
``model`` and ``train`` sections, so any change of data, architecture or training retrains; the
entries live in ``tkmia._paths.home() / "victims" / "<profile name>-<key>"`` as ``model.pt`` plus
``metadata.json`` (config, dataset checksum, metrics, tkmia version, training seconds).

Example:
    >>> model, meta = load_victim("default")
    >>> meta["test"]["map"] > 0.9
    True
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tkmia import _paths
from tkmia.data import load_dataset
from tkmia.finetune import finetune_frozen
from tkmia.models import build_model
from tkmia.profiles import Profile, load_profile
from tkmia.training import check_device, evaluate, load_checkpoint, save_checkpoint, train_model


def training_config(profile: Profile) -> dict[str, Any]:
    """The part of a profile that determines the trained victim (the cache key's input)."""
    data = profile.to_dict()
    dataset = {k: v for k, v in data["dataset"].items() if k not in ("root", "eval_split")}
    return {"dataset": dataset, "model": data["model"], "train": data["train"]}


def victim_key(profile: Profile) -> str:
    """A 12-hex-digit hash of :func:`training_config`."""
    text = json.dumps(training_config(profile), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def victim_dir(profile: Profile) -> Path:
    """The cache folder of the profile's victim."""
    return _paths.home() / "victims" / f"{profile.name}-{victim_key(profile)}"


def train_victim(
    profile: Profile,
    data_root: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train the profile's victim, evaluate it on ``dataset.eval_split`` and store it in the cache.

    Returns:
        ``(model in eval mode, metadata)``.
    """
    train_set = load_dataset(profile, "train", data_root)
    val_set = load_dataset(profile, profile.dataset.val_split, data_root)
    cfg = profile.train
    torch.manual_seed(cfg.seed)  # the initial weights
    model = build_model(profile, num_classes=len(train_set.classes))
    # a pretrained victim with a frozen bottom trains its top on cached features (tkmia.finetune)
    fit = finetune_frozen if getattr(model, "frozen_blocks", 0) else train_model
    result = fit(
        model, train_set, val_set,
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer,
        schedule=cfg.schedule, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
        flip=cfg.flip, seed=cfg.seed, k=profile.attack.k, device=device,
        num_workers=cfg.num_workers, progress=progress,
    )  # fmt: skip
    if profile.dataset.eval_split == profile.dataset.val_split:
        eval_set = val_set
    else:
        eval_set = load_dataset(profile, profile.dataset.eval_split, data_root)
    start = time.perf_counter()
    metrics = evaluate(model, eval_set, k=profile.attack.k, device=device)
    metadata = {
        "profile": profile.name,
        "key": victim_key(profile),
        "config": training_config(profile),
        "classes": list(train_set.classes),
        "dataset_checksum": {
            "train": train_set.checksum,
            "val": val_set.checksum,
            "eval": eval_set.checksum,
        },
        "eval_split": profile.dataset.eval_split,
        "history": result.history,
        "eval": metrics,
        "training_seconds": result.seconds,
        "eval_seconds": time.perf_counter() - start,
        "device": str(device),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    model.cpu()
    save_checkpoint(model, victim_dir(profile), metadata)
    model.to(device)
    return model.eval(), json.loads((victim_dir(profile) / "metadata.json").read_text())


def load_victim(
    profile: Profile | str,
    data_root: str | Path | None = None,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """The trained victim of a profile: from the cache, or trained now (and cached).

    Args:
        profile: a Profile or a profile name / path.
        data_root: data folder for training (real datasets); default the profile's.
        device: where the model is put (and trained).
        force: retrain even if cached.
        progress: show training progress.

    Returns:
        ``(model in eval mode on device, metadata dict)``; ``metadata["eval"]`` holds the mAP and
        P@k on ``dataset.eval_split``, ``metadata["training_seconds"]`` the training time.
    """
    if not isinstance(profile, Profile):
        profile = load_profile(profile)
    check_device(device)
    folder = victim_dir(profile)
    if not force and (folder / "metadata.json").is_file():
        from tkmia.data import NUM_CLASSES

        try:
            meta = json.loads((folder / "metadata.json").read_text())
        except ValueError:
            raise ValueError(f"victim metadata {folder / 'metadata.json'} is unreadable; delete the folder "
                             f"{folder} (or retrain with `tkmia train --force`)") from None
        n_classes = len(meta.get("classes", [])) or NUM_CLASSES[profile.dataset.name]
        bare = profile.replace(model={"weights": None})  # the checkpoint has all the weights
        model, meta = load_checkpoint(build_model(bare, n_classes), folder)
        return model.to(device).eval(), meta
    return train_victim(profile, data_root, device, progress)
