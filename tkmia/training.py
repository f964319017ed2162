"""Victim training: BCE-with-logits (sum, as the reference), Adam or SGD, per-epoch validation.

:func:`train_model` fits a model on a dataset and returns a :class:`TrainResult` (per-epoch history,
seconds); :func:`evaluate` gives mAP and P@k of a model on a dataset; :func:`save_checkpoint` writes
the weights and a JSON metadata file side by side. The victim cache (:mod:`tkmia.victims`) builds on
these. An :class:`Adversary` given to :func:`train_model` makes it adversarial training: part of
each batch is replaced by examples an attack crafts against the current weights.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

import tkmia
from tkmia import attacks
from tkmia._checks import int_in
from tkmia._io import atomic_write, write_json
from tkmia.selection import GlobalSelection, RandomSelection

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "onecycle")


def class_average_precision(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Average precision of each class (column), as ``sklearn.metrics.average_precision_score``.

    AP = sum_n (R_n - R_{n-1}) P_n over the distinct score thresholds (tied scores form one
    threshold). A class with no positive sample gets NaN.

    Args:
        scores: (N, C) real scores.
        labels: (N, C) in {0, 1}.

    Returns:
        (C,) float64 tensor.
    """
    if scores.shape != labels.shape or scores.dim() != 2:
        raise ValueError(
            f"scores {tuple(scores.shape)} and labels {tuple(labels.shape)} must both be (N, C)"
        )
    scores = scores.detach().double().cpu()
    labels = labels.detach().double().cpu()
    order = torch.argsort(scores, dim=0, descending=True, stable=True)
    s = torch.gather(scores, 0, order)
    y = torch.gather(labels, 0, order)
    tp = torch.cumsum(y, 0)
    fp = torch.cumsum(1 - y, 0)
    # The last row of each run of tied scores closes a threshold.
    last = torch.ones_like(s, dtype=torch.bool)
    last[:-1] = s[:-1] != s[1:]
    n_pos = tp[-1]
    precision = tp / (tp + fp)
    recall = tp / n_pos
    out = torch.empty(scores.shape[1], dtype=torch.float64)
    for c in range(scores.shape[1]):
        keep = last[:, c]
        r = recall[keep, c]
        p = precision[keep, c]
        steps = torch.diff(r, prepend=r.new_zeros(1))
        out[c] = (steps * p).sum() if n_pos[c] > 0 else float("nan")
    return out


def mean_average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """mAP: the mean over classes with at least one positive of :func:`class_average_precision`.

    Args:
        scores: (N, C) real scores.
        labels: (N, C) in {0, 1}.
    """
    ap = class_average_precision(scores, labels)
    ap = ap[~torch.isnan(ap)]
    return float(ap.mean()) if len(ap) else float("nan")


def _precision_at_k(scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    try:
        from tkmia.metrics import precision_at_k
    except ImportError:  # the metrics module is not there yet
        top = torch.topk(scores, k, dim=1).indices
        return torch.gather(labels, 1, top).sum(1) / k
    return precision_at_k(scores, labels, k)


@dataclass
class TrainResult:
    """What :func:`train_model` returns.

    Attributes:
        history: one dict per epoch: ``epoch``, ``loss`` (mean BCE sum per image), ``val_map``,
            ``val_precision_at_k``, ``seconds`` (since the start); with an :class:`Adversary`, also
            ``adv_fraction`` and ``adv_success`` (see :func:`train_model`).
        seconds: wall-clock training time, validation included.
        snapshots: ``epoch -> state dict`` (CPU copies) after each epoch, when
            :func:`train_model` was asked to keep them.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    snapshots: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)


def batches(
    dataset: Dataset, batch_size: int, shuffle: bool, generator: torch.Generator | None,
    num_workers: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """(images, labels) batches; in-memory datasets (with ``.images``) are sliced directly."""
    n = len(dataset)
    if hasattr(dataset, "images") and hasattr(dataset, "labels"):
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield dataset.images[idx], dataset.labels[idx]
        return
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=num_workers
    )
    yield from loader


@torch.no_grad()
def predict(
    model: nn.Module, dataset: Dataset, batch_size: int = 256, device: str | torch.device = "cpu",
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Scores of ``model`` (in eval mode) on every sample of ``dataset``.

    ``forward`` (default ``model``) maps a batch of the dataset's inputs to scores (N, C), e.g.
    the top of a model on cached features.

    Returns:
        ``(scores, labels)``, both (N, C) on the CPU.
    """
    was_training = model.training
    model.eval()
    forward = model if forward is None else forward
    scores, labels = [], []
    for images, y in batches(dataset, batch_size, shuffle=False, generator=None):
        scores.append(forward(images.to(device)).float().cpu())
        labels.append(y.float())
    model.train(was_training)
    return torch.cat(scores), torch.cat(labels)


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    k: int = 3,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """mAP (over classes) and mean P@k of a model on a dataset (``forward`` as :func:`predict`).

    Returns:
        ``{"map": ..., "precision_at_k": ..., "k": k, "n_images": N}``.
    """
    scores, labels = predict(model, dataset, batch_size, device, forward)
    return score_summary(scores, labels, k)


def score_summary(scores: torch.Tensor, labels: torch.Tensor, k: int = 3) -> dict[str, float]:
    """mAP (over classes) and mean P@k of scores (N, C) against labels (N, C) in {0, 1}.

    Returns:
        ``{"map": ..., "precision_at_k": ..., "k": k, "n_images": N}`` (what :func:`evaluate` reports).
    """
    return {
        "map": mean_average_precision(scores, labels),
        "precision_at_k": float(_precision_at_k(scores, labels, k).float().mean()),
        "k": k,
        "n_images": len(labels),
    }


@torch.no_grad()
def frozen_features(model: nn.Module, dataset: Dataset, batch_size: int = 64,
                    device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``(features (N, c, h, w) after the frozen blocks, labels (N, C))`` of a whole dataset, on the CPU.

    ``model`` has ``frozen_blocks`` and ``stem_and_blocks(images, stop)`` (see
    :class:`tkmia.models.EfficientNetLite0`); it is left in eval mode.
    """  # fmt: skip
    model.eval()
    feats, labels = [], []
    for images, y in batches(dataset, batch_size, shuffle=False, generator=None):
        feats.append(model.stem_and_blocks(images.to(device), model.frozen_blocks).cpu())
        labels.append(y.float())
    return torch.cat(feats), torch.cat(labels)


class _Features:
    """Cached features (N, c, h, w) and labels (N, C) as an in-memory dataset for :func:`batches`."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)


def check_settings(epochs, batch_size, lr, optimizer: str, schedule: str) -> tuple[int, int]:
    """Validate training settings (a ``ValueError`` naming the bad one); ``(epochs, batch_size)`` as ints."""
    epochs, batch_size = int_in(epochs, "epochs", 1), int_in(batch_size, "batch_size", 1)
    if not lr > 0:
        raise ValueError(f"lr={lr!r}; expected > 0")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r}; allowed: {OPTIMIZERS}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r}; allowed: {SCHEDULES}")
    return epochs, batch_size


def make_optimizer(model: nn.Module, optimizer: str, lr: float, weight_decay: float, momentum: float,
                   schedule: str, total_steps: int):
    """The optimiser over ``model``'s trainable parameters and its schedule (None when constant)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = None
    if schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total_steps)
    return opt, scheduler


@dataclass(frozen=True)
class Adversary:
    """Adversarial training for :func:`train_model` (Madry-style: adversarial rows *replace* clean ones).

    In every batch of an adversarial epoch, ``round(ratio · n)`` of its n rows, drawn at random
    (the training seed's generator), are attacked against the current weights (the model in eval
    mode, so BatchNorm statistics do not move); each of them that the scheme finds eligible is
    replaced by the attack's ``adv_images`` (detached: the last iterate when the attack did not
    succeed), the others stay clean. The loss is the usual BCE sum over the whole mixed batch.

    Attributes:
        attack: a name of :data:`tkmia.attacks.REGISTRY` (built as ``get(attack)(model, **options)``)
            or a factory ``model -> Attack`` (it must build the attack on the model it is given).
        selection: the scheme (:class:`~tkmia.selection.GlobalSelection` or
            :class:`~tkmia.selection.RandomSelection`) giving each row its specified labels.
        ratio: the fraction of each batch that is attacked, in (0, 1].
        start_epoch: warm-up: epochs 1 .. start_epoch are clean; 0 ≤ start_epoch < epochs.
        options: keyword arguments of the attack class when ``attack`` is a name (``k`` among them,
            e.g. ``{"k": 3, "max_iter": 20, "lr": 1e-2}``); must be empty with a factory.
    """

    attack: str | Callable[[nn.Module], attacks.Attack]
    selection: GlobalSelection | RandomSelection
    ratio: float = 1.0
    start_epoch: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.attack, str):
            attacks.get(self.attack)  # the registry's error for an unknown name
            if "k" not in self.options:
                raise ValueError(f"options={dict(self.options)!r} lack 'k', the top-k size the attack "
                                 f"{self.attack!r} needs; e.g. options={{'k': 3}}")
        elif not callable(self.attack):
            raise TypeError(f"attack must be a name of tkmia.attacks.REGISTRY ({list(attacks.REGISTRY)}) "
                            f"or a factory model -> Attack, got {type(self.attack).__name__}")
        elif self.options:
            raise ValueError(f"options={dict(self.options)!r} apply to an attack given by name only; "
                             "with a factory, pass them to the attack inside the factory")
        if not isinstance(self.selection, GlobalSelection | RandomSelection):
            raise TypeError("selection must be a selection scheme (tkmia.selection.GlobalSelection or "
                            f"RandomSelection), got {type(self.selection).__name__}")
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, int | float) or not 0 < self.ratio <= 1:
            raise ValueError(f"ratio={self.ratio!r}; expected a number in (0, 1], the fraction of each "
                             "batch replaced by adversarial examples")
        int_in(self.start_epoch, "start_epoch", 0)

    def build(self, model: nn.Module) -> attacks.Attack:
        """The attack on ``model`` (the model being trained, so it sees the current weights)."""
        if isinstance(self.attack, str):
            return attacks.get(self.attack)(model, **self.options)
        attack = self.attack(model)
        if not isinstance(attack, attacks.Attack) or attack.model is not model:
            raise ValueError(f"the attack factory {self.attack!r} must return a tkmia.attacks.Attack built "
                             f"on the model it is given, got {attack!r}")
        return attack

    def craft(self, attack: attacks.Attack, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
              generator: torch.Generator) -> tuple[torch.Tensor, int, int]:
        """One batch with ``round(ratio · n)`` random rows attacked (model in eval mode, restored after).

        Args:
            images: (n, 3, H, W) in the attack's box; labels: (n, C) in {0, 1}.

        Returns:
            ``(mixed images (n, 3, H, W) detached, adversarial rows, successes among them)``;
            the adversarial rows are those attacked and eligible.
        """
        n = len(images)
        m = max(1, round(self.ratio * n))
        rows = torch.randperm(n, generator=generator)[:m].to(images.device)
        was_training = model.training
        model.eval()
        try:
            result = attack(images[rows], labels[rows], self.selection)
        finally:
            model.train(was_training)
        eligible = result.eligible.to(images.device)
        mixed = images.clone()
        mixed[rows[eligible]] = result.adv_images.detach().to(images.dtype)[eligible]
        n_adv = int(eligible.sum())
        return mixed, n_adv, int((result.success.to(images.device) & eligible).sum())


def train_model(
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
    snapshots: bool = False,
    adversary: Adversary | None = None,
    cached_features: bool = False,
) -> TrainResult:
    """Train ``model`` in place with BCE-with-logits (reduction sum) and validate after each epoch.

    Args:
        model: maps images (N, 3, H, W) in [0, 1] to scores (N, C).
        train_set, val_set: datasets of (image, labels); ``val_set`` None skips validation.
        epochs, batch_size, lr: the usual; ``lr`` is the peak of the one-cycle schedule.
        optimizer: ``"adam"`` or ``"sgd"`` (with ``momentum``).
        schedule: ``"constant"`` or ``"onecycle"``.
        weight_decay: L2 weight decay of the optimiser.
        flip: random horizontal flips of training images.
        seed: seeds the initial shuffle order, flips and ``torch.manual_seed``.
        k: the k of the validation P@k.
        progress: show tqdm bars.
        snapshots: keep a CPU copy of the weights after each epoch (``result.snapshots``).
        adversary: adversarial training (see :class:`Adversary`); the history then also has
            ``adv_fraction`` (adversarial rows / rows trained on, 0 in warm-up epochs) and
            ``adv_success`` (the attack's success rate over the rows it found eligible; NaN
            where none). None: clean training.
        cached_features: train only the top of a model whose bottom is frozen (``model`` has
            ``frozen_blocks`` ≥ 1, ``stem_and_blocks(images, stop)`` and ``head(features, start)``,
            see :class:`tkmia.models.EfficientNetLite0`): the frozen blocks' output is computed once
            per image (:func:`frozen_features`) and the epochs run on it, ``flip`` flipping the
            feature maps; the history also records ``feature_seconds``.

    Returns:
        A :class:`TrainResult` (the model is trained in place and left in eval mode).
    """
    if cached_features:
        start_block = getattr(model, "frozen_blocks", 0)
        if not isinstance(start_block, int) or start_block < 1:
            raise ValueError(f"model.frozen_blocks={start_block!r}; cached_features (finetune_frozen) "
                             "needs >= 1 frozen block")
        if adversary is not None:
            raise ValueError("adversary and cached_features=True cannot be combined: the attack needs "
                             "images, the cached loop sees features; train end to end "
                             "(cached_features=False)")
    epochs, batch_size = check_settings(epochs, batch_size, lr, optimizer, schedule)
    if adversary is not None:
        if not isinstance(adversary, Adversary):
            raise TypeError("adversary must be a tkmia.training.Adversary or None, "
                            f"got {type(adversary).__name__}")
        if adversary.start_epoch >= epochs:
            raise ValueError(f"adversary.start_epoch={adversary.start_epoch} leaves no adversarial epoch "
                             f"of epochs={epochs}; use start_epoch < epochs")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model.to(device)
    start = time.perf_counter()
    forward: Callable[[torch.Tensor], torch.Tensor] = model
    if cached_features:
        train_set = _Features(*frozen_features(model, train_set, batch_size, device))
        if val_set is not None:
            val_set = _Features(*frozen_features(model, val_set, batch_size, device))
        feature_seconds = time.perf_counter() - start

        def forward(features: torch.Tensor) -> torch.Tensor:
            return model.head(features, start_block)

    steps_per_epoch = -(-len(train_set) // batch_size)
    opt, scheduler = make_optimizer(model, optimizer, lr, weight_decay, momentum, schedule,
                                    epochs * steps_per_epoch)
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
    attack = adversary.build(model) if adversary is not None else None
    result = TrainResult()
    for epoch in range(1, epochs + 1):
        model.train()
        total, seen = 0.0, 0
        n_adv = n_success = 0
        adversarial = adversary is not None and epoch > adversary.start_epoch
        bar = tqdm(
            batches(train_set, batch_size, True, generator, num_workers),
            total=steps_per_epoch, desc=f"epoch {epoch}/{epochs}", disable=not progress,
            leave=False, unit="batch",
        )  # fmt: skip
        for images, labels in bar:
            images, labels = images.to(device), labels.to(device).float()
            if flip:
                mask = torch.rand(len(images), generator=generator) < 0.5
                images = torch.where(mask.to(device)[:, None, None, None], images.flip(3), images)
            if adversarial:
                images, adv, success = adversary.craft(attack, model, images, labels, generator)
                n_adv, n_success = n_adv + adv, n_success + success
            loss = loss_fn(forward(images), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if scheduler is not None:
                scheduler.step()
            total += float(loss.detach())
            seen += len(images)
            if adversary is None:
                bar.set_postfix(loss=f"{total / seen:.3f}")
            else:
                bar.set_postfix(loss=f"{total / seen:.3f}", adv_fraction=f"{n_adv / seen:.2f}",
                                adv_success=f"{n_success / n_adv:.2f}" if n_adv else "-")
        record = {"epoch": epoch, "loss": total / max(seen, 1)}
        if adversary is not None:
            record["adv_fraction"] = n_adv / max(seen, 1)
            record["adv_success"] = n_success / n_adv if n_adv else float("nan")
        if val_set is not None:
            metrics = evaluate(model, val_set, k=k, device=device, forward=forward)
            record["val_map"] = metrics["map"]
            record["val_precision_at_k"] = metrics["precision_at_k"]
        record["seconds"] = time.perf_counter() - start
        if cached_features:
            record["feature_seconds"] = feature_seconds
        result.history.append(record)
        if snapshots:
            result.snapshots[epoch] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if progress:
            extra = (
                f" val mAP {record['val_map']:.4f} P@{k} {record['val_precision_at_k']:.4f}"
                if val_set is not None
                else ""
            )
            tqdm.write(f"epoch {epoch}/{epochs}: loss {record['loss']:.4f}{extra}")
    result.seconds = time.perf_counter() - start
    model.eval()
    return result


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device`, checked to exist on this machine.

    Raises:
        ValueError: not a device name, or CUDA (MPS) asked for where it is not available.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a torch device ({err}); "
                         "use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={str(device)!r}: CUDA is not available on this machine; "
                             "use device='cpu' (--device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={str(device)!r}: this machine has {torch.cuda.device_count()} CUDA "
                             f"device(s), cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={str(device)!r}: MPS is not available on this machine; use device='cpu'")
    return dev


def save_checkpoint(model: nn.Module, folder: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``model.pt`` (the state dict) and ``metadata.json`` into ``folder``, atomically.

    ``metadata`` gets ``tkmia_version`` added. The weights are written first, so a folder with a
    ``metadata.json`` always has complete weights.

    Returns:
        The folder.
    """
    folder = Path(folder)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(folder / "model.pt", lambda p: torch.save(state, p))
    write_json(folder / "metadata.json", {"tkmia_version": tkmia.__version__, **metadata})
    return folder


def load_checkpoint(model: nn.Module, folder: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Load ``model.pt`` into ``model`` (eval mode) and read ``metadata.json``.

    Returns:
        ``(model, metadata)``.
    """
    folder = Path(folder)
    fix = f"delete the folder {folder} (or retrain with `tkmia train --force`)"
    try:
        metadata = json.loads((folder / "metadata.json").read_text())
        state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"checkpoint file {err.filename} is missing; {fix}") from None
    except Exception as err:  # a truncated or damaged file: zip, pickle or JSON errors
        raise ValueError(f"checkpoint in {folder} is unreadable ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''}); {fix}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {folder / 'model.pt'} does not fit the model "
                         f"({str(err).splitlines()[0]}); {fix}") from None
    model.eval()
    return model, metadata


def result_dict(result: TrainResult) -> dict[str, Any]:
    """A :class:`TrainResult` as JSON-ready data (history and seconds; the snapshots are weights)."""
    return {"history": [dict(r) for r in result.history], "seconds": result.seconds}
