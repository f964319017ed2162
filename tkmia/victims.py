"""The victim cache: a trained model per training configuration, trained once, then loaded.

The cache key is a hash of the profile's ``dataset`` (without ``root`` and ``eval_split``),
``model`` and ``train`` sections, so any change of data, architecture or training retrains; the
entries live in ``tkmia._paths.home() / "victims" / "<profile name>-<key>"`` as ``model.pt`` plus
``metadata.json`` (config, dataset checksum, metrics, tkmia version, training seconds) and, for
victims trained end to end, the weights after each epoch (``epoch-001.pt`` ...; :func:`load_snapshot`).

A profile with ``train.init`` names another profile whose victim gives the initial weights
(fine-tuning); that victim's own key joins the cache key, so retraining it retrains this one.

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
from tkmia._checks import int_in
from tkmia._io import atomic_write
from tkmia.data import load_dataset
from tkmia.finetune import finetune_frozen
from tkmia.models import build_model
from tkmia.profiles import Profile, load_profile
from tkmia.training import (
    check_device,
    evaluate,
    load_checkpoint,
    predict,
    save_checkpoint,
    score_summary,
    train_model,
)


def training_config(profile: Profile) -> dict[str, Any]:
    """The part of a profile that determines the trained victim (the cache key's input).

    ``train.init`` (fine-tuning) is replaced by the starting victim's folder name, profile and key;
    it is left out when None, so the keys of victims trained from random weights do not depend on it.
    """
    data = profile.to_dict()
    dataset = {k: v for k, v in data["dataset"].items() if k not in ("root", "eval_split")}
    train = dict(data["train"])
    if profile.train.init is not None:
        train["init"] = victim_dir(init_profile(profile)).name
    return {"dataset": dataset, "model": data["model"], "train": train}


def init_profile(profile: Profile) -> Profile:
    """The profile named by ``profile.train.init``, whose victim gives the starting weights.

    Raises:
        ValueError: ``train.init`` is None, unknown, or itself fine-tuned (one level only).
    """
    name = profile.train.init
    if name is None:
        raise ValueError(f"profile {profile.name!r} has train.init=None: "
                         "its victim starts from random weights")
    try:
        start = load_profile(name)
    except (FileNotFoundError, ValueError, TypeError) as err:
        raise ValueError(f"train.init={name!r} of profile {profile.name!r} is not a loadable profile "
                         f"({err}); name a profile of tkmia/profiles or a YAML file") from None
    if start.train.init is not None:
        raise ValueError(f"train.init={name!r}: that profile's victim is itself fine-tuned "
                         f"(train.init={start.train.init!r}); "
                         "start from a victim trained from random weights")
    return start


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
    if cfg.init is not None:
        start, start_meta = load_victim(init_profile(profile), device="cpu", progress=progress)
        try:
            model.load_state_dict(start.state_dict())
        except RuntimeError as err:
            raise ValueError(f"train.init={cfg.init!r}: its victim ({start_meta.get('key')}) does not "
                             f"fit the model of profile {profile.name!r} ({str(err).splitlines()[0]}); "
                             "fine-tune from a victim of the same architecture and classes") from None
    # a pretrained victim with a frozen bottom trains its top on cached features (tkmia.finetune)
    fit = finetune_frozen if getattr(model, "frozen_blocks", 0) else train_model
    result = fit(
        model, train_set, val_set,
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer,
        schedule=cfg.schedule, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
        flip=cfg.flip, seed=cfg.seed, k=profile.attack.k, device=device,
        num_workers=cfg.num_workers, progress=progress,
        **({"snapshots": True} if fit is train_model else {}),
    )  # fmt: skip
    if profile.dataset.eval_split == profile.dataset.val_split:
        eval_set = val_set
    else:
        eval_set = load_dataset(profile, profile.dataset.eval_split, data_root)
    start = time.perf_counter()
    scores, labels = predict(model, eval_set, device=device)
    metrics = score_summary(scores, labels, profile.attack.k)
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
        "snapshots": sorted(result.snapshots),
        "eval": metrics,
        "training_seconds": result.seconds,
        "eval_seconds": time.perf_counter() - start,
        "device": str(device),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    model.cpu()
    folder = victim_dir(profile)
    folder.mkdir(parents=True, exist_ok=True)
    for epoch, state in result.snapshots.items():  # before metadata.json, which marks the entry complete
        atomic_write(folder / _snapshot_name(epoch), lambda p, state=state: torch.save(state, p))
    payload = {"scores": scores, "labels": labels, "checksum": eval_set.checksum}
    atomic_write(folder / _EVAL_SCORES, lambda p: torch.save(payload, p))
    save_checkpoint(model, folder, metadata)
    model.to(device)
    return model.eval(), json.loads((victim_dir(profile) / "metadata.json").read_text())


_EVAL_SCORES = "eval_scores.pt"


def eval_scores(profile: Profile | str, dataset) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The scores and labels, (N, C) each on the CPU, that the victim's training computed on its
    evaluation split, when ``dataset`` is that split (same ``checksum``); else None (then score it).

    They are :func:`tkmia.training.predict`'s at its default batch size, so whoever needs the
    victim's scores on its test split (a victim card, a per-class table) need not compute them again.
    """
    if not isinstance(profile, Profile):
        profile = load_profile(profile)
    path = victim_dir(profile) / _EVAL_SCORES
    checksum = getattr(dataset, "checksum", None)
    if checksum is None or not path.is_file():
        return None
    try:
        payload = torch.load(path, weights_only=True)
        scores, labels = payload["scores"], payload["labels"]
        ok = (payload["checksum"] == checksum and scores.shape == labels.shape
              and scores.shape[0] == len(dataset) and bool(torch.isfinite(scores).all()))
    except Exception:  # a damaged file: the caller scores the split itself  # noqa: BLE001
        return None
    return (scores, labels) if ok else None


def _snapshot_name(epoch: int) -> str:
    return f"epoch-{int(epoch):03d}.pt"


def load_snapshot(
    profile: Profile | str, epoch: int, data_root: str | Path | None = None, device: str = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """The profile's victim as it was after ``epoch`` epochs of its training run (trained now if
    not cached), evaluated on ``dataset.eval_split``.

    Returns:
        ``(model in eval mode on device, metadata)``: the victim's metadata with ``epoch`` and
        ``eval`` (mAP, P@k of this snapshot).

    Raises:
        ValueError: ``epoch`` outside 1 … ``train.epochs``, or a cached victim without snapshots.
    """
    if not isinstance(profile, Profile):
        profile = load_profile(profile)
    epochs = profile.train.epochs
    epoch = int_in(epoch, "epoch", 1, epochs, why=f" (train.epochs of profile {profile.name!r})")
    _, meta = load_victim(profile, data_root=data_root, device="cpu", progress=False)
    folder = victim_dir(profile)
    path = folder / _snapshot_name(epoch)
    if not path.is_file():
        raise ValueError(f"victim {folder} has no weights after epoch {epoch} "
                         f"(kept: {meta.get('snapshots')}; victims trained by an older tkmia or fine-tuned "
                         "on cached features keep none); "
                         "retrain it with `tkmia train --force`")
    bare = profile.replace(model={"weights": None})
    model = build_model(bare, len(meta["classes"]))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.to(device).eval()
    eval_set = load_dataset(profile, profile.dataset.eval_split, data_root)
    metrics = evaluate(model, eval_set, k=profile.attack.k, device=device)
    return model, {**meta, "epoch": epoch, "eval": metrics}


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
