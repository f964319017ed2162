"""Run the paper's protocol: a configuration -> one record per attacked sample, kept safely on disk.

A run attacks the first ``n_samples`` eligible samples of the evaluation split, in batches of
``batch_size``. Every finished batch is written atomically as its own Parquet file, so a run
interrupted at any point and started again skips the finished batches, redoes the partial one and
ends with exactly one row per sample. The same setting (configuration, victim, box, split and
dataset) loads the stored table instead of recomputing; ``force=True`` recomputes and re-plans.
``shard=(i, n)`` runs batches i, i + n, i + 2n, ... so that n processes (or GPUs) can share a run;
under ``torchrun`` each process takes its shard from ``RANK``/``WORLD_SIZE``. The last shard to
finish merges the table (:func:`merge`).
Book chapters "Global selection scheme", "Random selection scheme", "Sensitivity", "Full scale".
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm import tqdm

import tkmia
from tkmia import attacks
from tkmia._checks import as_float, as_int
from tkmia._io import atomic_write, write_json
from tkmia._paths import home
from tkmia.metrics import MEASURES, topk_indices
from tkmia.selection import SCHEMES, GlobalSelection, RandomSelection, make_selection

__all__ = [
    "ExperimentConfig",
    "Run",
    "records_tensors",
    "attack_records",
    "RunFileError",
    "SETTING_COLUMNS",
    "run",
    "run_grid",
    "grid_configs",
    "merge",
    "load_results",
    "results_root",
    "parse_shard",
    "shard_from_env",
    "select_eligible",
    "scan_cache",
    "fetch",
    "dataset_identity",
    "model_fingerprint",
]

_BATCH_GLOB = "batch_*.parquet"
# fields a profile fills when they are None
_PROFILE_FIELDS = ("k", "classes", "n_pert", "del_n", "lr", "max_iter", "weight_decay", "n_samples",
                   "batch_size")
# options that are configuration fields of their own
_OWN_FIELDS = ("k", "lr", "max_iter", "weight_decay", "box", "model")

#: The settings every record carries beside (scheme, k, method): the run's key fields, so that
#: :func:`tkmia.report.summarize` never pools runs of different settings. ``classes``, ``box`` and
#: ``options`` are text; a field that does not apply (lr for kFool, classes for the random scheme)
#: is empty.
SETTING_COLUMNS = ("profile", "victim", "dataset", "split", "box", "classes", "n_pert", "del_n", "seed",
                   "lr", "weight_decay", "max_iter", "options", "n_samples", "batch_size", "device")


@dataclass(frozen=True)
class ExperimentConfig:
    """One attack setting. ``None`` fields take the profile's value (see :meth:`resolve`).

    Integer fields accept numpy integers and ``classes`` any sequence or array of integers.

    Attributes:
        profile: a profile name (``tkmia.profiles.list_profiles()``) or a YAML path.
        method: a name of ``tkmia.attacks.REGISTRY`` (the paper's ``METHODS`` or a ``VARIANTS``).
        scheme: ``"global"`` or ``"random"``.
        k: the top-k size.
        classes: the global scheme's S_g (class indices); default the profile's.
        n_pert, del_n: the random scheme's parameters; default the profile's.
        lr, max_iter, weight_decay: the attack's optimiser; default the profile's.
        n_samples: how many eligible samples to attack (the first ones of the split).
        batch_size: images per attack batch.
        seed: seed of the random scheme's draws.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
        data_root: the real dataset's folder (paper profiles).
        options: extra keyword options of the attack class (e.g. ``{"lambda_mode": "gradient"}``).
        save_images: how many samples' clean and adversarial images to keep for figures.
    """

    profile: str = "default"
    method: str = "tkmia"
    scheme: str = "global"
    k: int | None = None
    classes: tuple[int, ...] | None = None
    n_pert: int | None = None
    del_n: int | None = None
    lr: float | None = None
    max_iter: int | None = None
    weight_decay: float | None = None
    n_samples: int | None = None
    batch_size: int | None = None
    seed: int = 0
    device: str = "cpu"
    data_root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    save_images: int = 8

    def __post_init__(self):
        if self.method not in attacks.REGISTRY:
            raise ValueError(f"method must be one of {list(attacks.REGISTRY)}, got {self.method!r}")
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {self.scheme!r}")
        if isinstance(self.profile, os.PathLike):
            object.__setattr__(self, "profile", os.fspath(self.profile))
        if self.classes is not None:
            classes = self.classes.tolist() if hasattr(self.classes, "tolist") else self.classes
            if isinstance(classes, str | bytes) or not isinstance(classes, Sequence):
                raise TypeError(f"classes must be a sequence of class indices, got {self.classes!r}")
            object.__setattr__(self, "classes", tuple(as_int(c, "classes") for c in classes))
        for name in ("k", "n_pert", "del_n", "max_iter", "n_samples", "batch_size", "seed", "save_images"):
            value = getattr(self, name)
            if value is not None:
                value = as_int(value, name)
                if value < 0:
                    raise ValueError(f"{name} must be a non-negative int, got {value!r}")
                object.__setattr__(self, name, value)
        if self.n_samples == 0 or self.batch_size == 0:
            raise ValueError("n_samples and batch_size must be >= 1")
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if value is not None:
                value = as_float(value, name)
                if value < 0 or (name == "lr" and value == 0):
                    raise ValueError(f"{name} must be {'> 0' if name == 'lr' else '>= 0'}, got {value!r}")
                object.__setattr__(self, name, value)
        if not isinstance(self.options, Mapping):
            raise TypeError(f"options must be a dict, got {type(self.options).__name__}")
        object.__setattr__(self, "options", dict(self.options))
        clash = [name for name in self.options if name in _OWN_FIELDS]
        if clash:
            raise ValueError(f"option {clash[0]!r} is a setting of its own: set it as {clash[0]}=... "
                             f"(--{clash[0].replace('_', '-')}), not as an option")

    def resolve(self, profile) -> ExperimentConfig:
        """Fill every ``None`` field from ``profile`` (a :class:`tkmia.profiles.Profile`)."""
        att, sel = profile.attack, profile.selection
        values = {
            "k": sel.random.k if self.scheme == "random" else att.k,
            "classes": tuple(sel.global_classes),
            "n_pert": sel.random.n_pert,
            "del_n": sel.random.del_n,
            "lr": att.lr,
            "max_iter": att.budget(self.method),
            "weight_decay": att.weight_decay,
            "n_samples": att.n_samples,
            "batch_size": att.batch_size,
        }
        filled = {key: value for key, value in values.items() if getattr(self, key) is None}
        out = dataclasses.replace(self, **filled)
        from tkmia.data import NUM_CLASSES  # floor 3, imported lazily

        out.check(NUM_CLASSES[profile.dataset.name])
        return out

    def check(self, num_classes: int) -> None:
        """Validate against the number of labels C of the dataset."""
        if not 1 <= self.k <= num_classes - 1:
            raise ValueError(f"k must be in [1, {num_classes - 1}] for this profile (C = {num_classes}), "
                             f"got k = {self.k}")
        if self.scheme == "random":
            if not 1 <= self.n_pert <= self.k:
                raise ValueError(f"n_pert must be in [1, k = {self.k}], got n_pert = {self.n_pert}")
            if not 1 <= self.del_n <= self.n_pert:
                raise ValueError(f"del_n must be in [1, n_pert = {self.n_pert}], got del_n = {self.del_n}")
        else:
            bad = [c for c in self.classes if not 0 <= c < num_classes]
            if bad:
                raise ValueError(f"classes must be in [0, {num_classes - 1}], got {bad}")

    def selection(self) -> GlobalSelection | RandomSelection:
        """The selection scheme object of this configuration."""
        if self.scheme == "global":
            return make_selection("global", classes=list(self.classes))
        return make_selection("random", n_pert=self.n_pert, del_n=self.del_n, seed=self.seed)

    @property
    def uses_optimiser(self) -> bool:
        """Whether ``lr`` and ``weight_decay`` apply to the method (not for kFool)."""
        return attacks.get(self.method).uses_optimiser

    def attack(self, model: nn.Module, box=(0.0, 1.0)) -> attacks.Attack:
        """The attack object of this configuration."""
        return self._build(model, box)

    def _build(self, model: nn.Module, box) -> attacks.Attack:
        cls = attacks.get(self.method)
        optimiser = {"lr": self.lr, "weight_decay": self.weight_decay} if cls.uses_optimiser else {}
        return cls(model, self.k, max_iter=self.max_iter, box=tuple(box), **optimiser, **self.options)

    def validate(self, box=(0.0, 1.0)) -> None:
        """Build the attack on a placeholder model: bad options, lr, budget or box raise here,
        before any victim is loaded and anything is written."""
        cls = attacks.get(self.method)
        allowed = _option_names(cls)
        unknown = [name for name in self.options if name not in allowed]
        if unknown:
            raise ValueError(f"option {unknown[0]!r} is not an option of {cls.__name__} ({self.method}); "
                             f"allowed options: {', '.join(sorted(allowed)) or 'none'}")
        try:
            self._build(nn.Identity(), box)
        except (TypeError, ValueError) as err:
            raise type(err)(f"{self.method}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["classes"] = list(self.classes) if self.classes is not None else None
        return out

    def key(self, victim: str, context: Mapping[str, Any] | None = None) -> str:
        """A short hash of everything that changes the numbers (not ``save_images``).

        ``context`` holds what the configuration does not: the box, the evaluation split, the
        dataset's identity and the profile's dataset section (see :func:`run`). Settings the
        method or scheme does not use (kFool's lr and weight decay, the global scheme's seed)
        are left out, so they do not split identical runs.
        """
        payload = self.to_dict()
        payload.pop("save_images")
        payload.pop("data_root")
        payload.update(_unused(self))
        payload["victim"] = victim
        payload["budget"] = BUDGET_CONVENTION
        payload.update(dict(context or {}))
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:10]


#: The meaning of ``max_iter`` the stored numbers were computed under, part of every run key:
#: "examined" = iterates 0 … max_iter − 1 checked, the clean start included (the reference's
#: ``maxiter``). Runs stored under the former meaning (0 … max_iter) are recomputed, not reused.
BUDGET_CONVENTION = "examined"


def _unused(config: ExperimentConfig) -> dict[str, None]:
    out: dict[str, None] = {}
    if config.scheme == "global":
        out.update(n_pert=None, del_n=None, seed=None)
    else:
        out.update(classes=None)
    if not config.uses_optimiser:
        out.update(lr=None, weight_decay=None)
    return out


def _option_names(cls: type) -> set[str]:
    """Keyword options of an attack class's constructor chain, less the configuration's own."""
    import inspect

    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind is p.KEYWORD_ONLY:
                names.add(p.name)
    not_used = set() if cls.uses_optimiser else {"momentum"}
    return names - set(_OWN_FIELDS) - not_used


@dataclass
class Run:
    """A run: its per-sample ``records``, its ``config`` and where they are stored.

    ``batches = (done, total)``; a shard that finishes before the others returns the records of
    the batches done so far with ``complete`` False (the table is written by the last shard).
    ``shard`` is the (i, n) this process ran, None for a whole run.
    """

    records: pd.DataFrame
    config: ExperimentConfig
    path: Path
    meta: dict[str, Any]
    batches: tuple[int, int] | None = None
    shard: tuple[int, int] | None = None

    @property
    def complete(self) -> bool:
        """Whether every batch of the run is done and the table is written."""
        return self.batches is None or self.batches[0] >= self.batches[1]


class RunFileError(ValueError):
    """A file of a stored run that cannot be read (``path``); the message says what to do."""

    def __init__(self, path: Path, message: str):
        super().__init__(message)
        self.path = Path(path)


def results_root() -> Path:
    """``tkmia._paths.home() / "results"``."""
    return home() / "results"


def parse_shard(spec: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"i/n"`` (0 ≤ i < n) -> (i, n); ``None`` -> ``None``."""
    if spec is None:
        return None
    if isinstance(spec, str):
        parts = spec.split("/")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"shard must look like 'i/n' with 0 <= i < n, got {spec!r}")
        spec = (int(parts[0]), int(parts[1]))
    if not isinstance(spec, Sequence) and not hasattr(spec, "tolist"):
        raise TypeError(f"shard must be 'i/n' or a pair (i, n), got {spec!r}")
    spec = spec.tolist() if hasattr(spec, "tolist") else spec
    if len(spec) != 2:
        raise ValueError(f"shard must look like 'i/n' with 0 <= i < n, got {spec!r}")
    index, count = as_int(spec[0], "shard index"), as_int(spec[1], "shard count")
    if not (count >= 1 and 0 <= index < count):
        raise ValueError(f"shard must look like 'i/n' with 0 <= i < n, got {index}/{count}")
    return index, count


def shard_from_env(environ: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """The shard of this process under ``torchrun``: (RANK, WORLD_SIZE), else (LOCAL_RANK,
    LOCAL_WORLD_SIZE); ``None`` outside torchrun or with a single process."""
    env = os.environ if environ is None else environ
    for rank_name, size_name in (("RANK", "WORLD_SIZE"), ("LOCAL_RANK", "LOCAL_WORLD_SIZE")):
        if size_name in env:
            try:
                size = int(env[size_name])
                rank = int(env.get(rank_name, env.get("LOCAL_RANK", "")))
            except ValueError:
                raise ValueError(f"{rank_name}={env.get(rank_name)!r}, {size_name}={env[size_name]!r}: "
                                 "expected integers (as torchrun sets them)") from None
            return None if size <= 1 else parse_shard((rank, size))
    return None


def model_fingerprint(model: nn.Module) -> str:
    """A hash of the model's parameters and buffers (results of another victim never mix).

    Works for every dtype (bf16 and fp16 included): the raw bytes are hashed with the dtype and shape.
    """
    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        if flat.dtype == torch.bool:
            flat = flat.to(torch.uint8)
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:12]


def dataset_identity(dataset, data_root: str | None = None) -> str:
    """What names the dataset's contents: its ``checksum`` attribute when it has one, else a hash
    of its in-memory ``images`` and ``labels``, else its type, length and ``data_root``."""
    checksum = getattr(dataset, "checksum", None)
    if checksum is not None:
        return str(checksum)
    images, labels = getattr(dataset, "images", None), getattr(dataset, "labels", None)
    if isinstance(images, Tensor) and isinstance(labels, Tensor):
        digest = hashlib.sha1()
        for tensor in (images, labels):
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{flat.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]
    return f"{type(dataset).__qualname__}:{len(dataset)}:{data_root}"


def fetch(dataset, ids: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Images (n, 3, H, W) and labels (n, C) of the samples ``ids`` of ``dataset``."""
    return _fetch(dataset, ids)


def _fetch(dataset, ids: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Images (n, 3, H, W) and labels (n, C) of the samples ``ids`` of ``dataset``."""
    if hasattr(dataset, "images") and hasattr(dataset, "labels"):
        index = torch.as_tensor(list(ids), dtype=torch.long)
        return dataset.images[index], dataset.labels[index].float()
    pairs = [dataset[int(i)] for i in ids]
    return torch.stack([p[0] for p in pairs]), torch.stack([torch.as_tensor(p[1]) for p in pairs]).float()


@torch.no_grad()
def clean_scores(model: nn.Module, dataset, ids: Sequence[int], device, batch_size: int = 256) -> Tensor:
    """Logits of the samples ``ids``, (n, C), computed in eval mode, returned on the CPU."""
    model.eval()
    out = []
    for start in range(0, len(ids), batch_size):
        images, _ = _fetch(dataset, ids[start : start + batch_size])
        out.append(model(images.to(device)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def select_eligible(model, dataset, config: ExperimentConfig, chunk: int = 256, *,
                    box=(0.0, 1.0), cache: str | Path | None = None) -> list[int]:
    """Indices of the first ``config.n_samples`` eligible samples of ``dataset``, in order.

    Eligibility is judged on the point the attack starts from
    (``config.attack(model, box).starting_point(images)``: the image itself for
    ``parametrisation="exact"``, its tanh-distorted copy for ``"reference"``), so the plan agrees
    with the attack's own check. Each image is decoded (fetched) once.

    ``cache``: a file for the scan's scores (N_scanned, C), float32, CPU. It must name the victim,
    the dataset, the starting point and the device (:func:`run` keys it like the run store, see
    :func:`scan_cache`); the scores it holds are reused (the selection rule is applied to them
    again) and the chunks computed are appended (one atomic write at the end), so a cached scan
    gives the same plan as a fresh one. A damaged file is recomputed with a warning.
    """
    selection = config.selection()
    attack = config.attack(model, box)
    cached = _read_scan(Path(cache), len(dataset), chunk) if cache is not None else None
    computed = []
    was_training = model.training
    model.eval()
    found: list[int] = []
    try:
        for start in range(0, len(dataset), chunk):
            ids = list(range(start, min(start + chunk, len(dataset))))
            if cached is not None and start + len(ids) <= cached.shape[0]:
                scores = cached[start : start + len(ids)]
                labels = _labels(dataset, ids)
            else:
                images, labels = _fetch(dataset, ids)
                with torch.no_grad():
                    scores = model(attack.starting_point(images.to(config.device))).float().cpu()
                computed.append(scores)
            spec = selection.select(scores, labels.to(scores.dtype), config.k, ids=torch.tensor(ids))
            found.extend(i for i, ok in zip(ids, spec.eligible.tolist()) if ok)
            if len(found) >= config.n_samples:
                break
    finally:
        model.train(was_training)
    if cache is not None and computed:
        done = cached if cached is not None else torch.zeros(0, computed[0].shape[1])
        scanned = torch.cat([done, *computed])
        atomic_write(Path(cache), lambda p: torch.save(
            {"scores": scanned, "n_dataset": len(dataset), "chunk": chunk}, p))
    return found[: config.n_samples]


def scan_cache(root: str | Path, victim: str, dataset: str, attack: attacks.Attack, device: str) -> Path:
    """The file of :func:`select_eligible`'s scan scores for one victim (its fingerprint), one
    dataset (its identity) and one starting point (the attack's parametrisation and box) on one
    device: ``root/_scans/<victim>-<hash>.pt``. Shared by every run of that victim on that
    dataset (a grid scans its test split once)."""
    key = json.dumps({"victim": victim, "dataset": dataset, "parametrisation": attack.parametrisation,
                      "box": [float(b) for b in attack.box], "device": str(device)}, sort_keys=True)
    return Path(root) / "_scans" / f"{victim}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.pt"


def _read_scan(path: Path, n_dataset: int, chunk: int) -> Tensor | None:
    """The scores of a scan cache file (None when missing; a damaged or foreign one is removed
    with a warning, so the scan recomputes it)."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, weights_only=True)
        scores = payload["scores"]
        ok = (payload["n_dataset"] == n_dataset and payload["chunk"] == chunk
              and isinstance(scores, Tensor) and scores.dim() == 2 and scores.shape[0] <= n_dataset
              and bool(torch.isfinite(scores).all()))
    except Exception as err:  # a truncated or foreign file  # noqa: BLE001
        ok, why = False, f"unreadable ({type(err).__name__})"
    else:
        why = "made for another dataset or scan"
    if not ok:
        _warn(f"scan cache {path} is {why}; scanning again")
        path.unlink(missing_ok=True)
        return None
    return scores


def _labels(dataset, ids: Sequence[int]) -> Tensor:
    """Labels (n, C) of the samples ``ids`` (without decoding their images when the dataset
    holds a label tensor)."""
    labels = getattr(dataset, "labels", None)
    if isinstance(labels, Tensor):
        return labels[torch.as_tensor(list(ids), dtype=torch.long)].float()
    return _fetch(dataset, ids)[1]


def _settings(config: ExperimentConfig, context: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`SETTING_COLUMNS` values of a run (scalars: lists and dicts become text)."""
    values = config.to_dict()
    values.update(_unused(config))
    box = context.get("box")
    return {
        "profile": config.profile,
        "victim": context.get("victim"),
        "dataset": context.get("dataset"),
        "split": context.get("split"),
        "box": None if box is None else ",".join(f"{b:g}" for b in box),
        "classes": None if values["classes"] is None else ",".join(map(str, values["classes"])),
        "n_pert": values["n_pert"],
        "del_n": values["del_n"],
        "seed": values["seed"],
        "lr": values["lr"],
        "weight_decay": values["weight_decay"],
        "max_iter": config.max_iter,
        "options": json.dumps(config.options, sort_keys=True, default=str),
        "n_samples": config.n_samples,
        "batch_size": config.batch_size,
        "device": config.device,
    }


def _records(result: attacks.AttackResult, ids: list[int], config: ExperimentConfig, seconds: float,
             settings: Mapping[str, Any] | None = None):
    k = config.k
    clean_m, adv_m = result.clean_measures(), result.adv_measures()
    clean_top = topk_indices(result.clean_scores, k).tolist()
    adv_top = topk_indices(result.adv_scores, k).tolist()
    clean_scores_ = result.clean_scores.float().tolist()
    adv_scores_ = result.adv_scores.float().tolist()
    rows = []
    for n, sample in enumerate(ids):
        row = {
            "sample": int(sample),
            "method": config.method,
            "scheme": config.scheme,
            "k": k,
            "labels": result.labels[n].nonzero().flatten().tolist(),
            "specified": result.specified[n].nonzero().flatten().tolist(),
            "required": int(result.required[n]),
            "eligible": bool(result.eligible[n]),
            "success": bool(result.success[n]),
            "imperceptible": bool(result.imperceptible[n]),
            "iterations": int(result.iterations[n]),
            "pert_l2": float(result.perturbation_l2[n]),
            "pert_l2_255": float(result.perturbation_l2_255[n]),
            "tanh_space_l2": float(result.tanh_space_l2[n]),
            "delta_n": int(result.delta_n[n]),
            "clean_topk": clean_top[n],
            "adv_topk": adv_top[n],
            "clean_scores": clean_scores_[n],
            "adv_scores": adv_scores_[n],
            "seconds": seconds / len(ids),
        }
        for name in MEASURES:
            row[f"clean_{name}"] = float(clean_m[name][n])
            row[f"adv_{name}"] = float(adv_m[name][n])
        row.update(settings or {})
        rows.append(row)
    return rows


def attack_records(result: attacks.AttackResult, config: ExperimentConfig, ids: Sequence[int] | None = None,
                   seconds: float = 0.0) -> pd.DataFrame:
    """The per-sample records of one :class:`~tkmia.attacks.AttackResult` of N images, as :func:`run`
    writes them (without the setting columns): one row per image, ``sample`` = ``ids`` (default
    0 .. N − 1); ``config`` gives ``method``, ``scheme`` and ``k``; ``seconds`` is the batch's time."""
    ids = list(range(len(result))) if ids is None else [as_int(i, "ids") for i in ids]
    if len(ids) != len(result):
        raise ValueError(f"ids has {len(ids)} entries for a result of {len(result)} images; "
                         "pass one id per image")
    return pd.DataFrame(_records(result.to("cpu"), ids, config, seconds))


def _write_parquet(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda p: frame.to_parquet(p, index=False))


def _read_parquet(path: Path, what: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise RunFileError(path, f"{what} {path} is unreadable ({type(err).__name__}); delete it and run "
                                 "the same setting again to recompute it") from None


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.exists():
        raise RunFileError(path, f"{what} {path} is missing; run the same setting again to rewrite it")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunFileError(path, f"{what} {path} is unreadable ({type(err).__name__}); delete it and run "
                                 "the same setting again to rewrite it") from None
    if not isinstance(data, dict):
        raise RunFileError(path, f"{what} {path} does not hold a JSON object; delete it and run the same "
                                 "setting again to rewrite it")
    return data


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def _load_setting(config: ExperimentConfig, model, dataset, box, progress: bool = True):
    """(resolved config, model, evaluation dataset, box, profile context) from the profile.

    Everything that can be checked without the victim (profile, options, lr, device) is checked
    before the victim loads.
    """
    from tkmia import profiles  # floor 3, imported lazily
    from tkmia.training import check_device

    profile = profiles.load_profile(config.profile)
    config = config.resolve(profile)
    box = tuple(box or profile.attack.box)
    config.validate(box)
    check_device(config.device)
    if model is None:
        from tkmia.victims import load_victim

        model, _ = load_victim(profile, data_root=config.data_root, device=config.device, progress=progress)
    if dataset is None:
        from tkmia.data import load_dataset

        dataset = load_dataset(profile, profile.dataset.eval_split, root=config.data_root)
    context = {"split": profile.dataset.eval_split, "profile_dataset": profile.to_dict()["dataset"]}
    return config, model, dataset, box, context


def _check_plan(plan: Mapping[str, Any], dataset, identity: str, plan_path: Path) -> list[int]:
    samples = plan.get("samples")
    if not isinstance(samples, list) or not all(isinstance(s, int) for s in samples):
        raise RunFileError(plan_path, f"plan {plan_path} has no list of sample ids; delete it (or run with "
                                      "force=True / --force) to re-plan")
    n_plan, n_data = plan.get("n_dataset"), len(dataset)
    stale = (n_plan != n_data or (samples and max(samples) >= n_data)
             or plan.get("dataset", identity) != identity)
    if stale:
        raise ValueError(f"the stored plan {plan_path} was made for another dataset (n_dataset={n_plan}, "
                         f"dataset {plan.get('dataset')!r}; this one has {n_data} samples, dataset "
                         f"{identity!r}): rerun with force=True (--force) to re-plan, or delete "
                         f"{plan_path.parent}")
    return samples


def _batch_ok(path: Path, ids: list[int]) -> bool:
    """Whether the batch file exists and holds exactly the samples ``ids``; a damaged or
    foreign one is removed (with a warning) so that the batch is recomputed."""
    if not path.exists():
        return False
    try:
        frame = pd.read_parquet(path, columns=["sample"])
        ok = list(frame["sample"]) == list(ids)
    except Exception as err:  # a truncated or empty file
        ok, why = False, f"unreadable ({type(err).__name__})"
    else:
        why = "holds other samples than the plan"
    if not ok:
        _warn(f"batch file {path} is {why}; recomputing that batch")
        path.unlink(missing_ok=True)
    return ok


def run(
    config: ExperimentConfig,
    *,
    model: nn.Module | None = None,
    dataset=None,
    root: str | Path | None = None,
    force: bool = False,
    shard: str | tuple[int, int] | None = None,
    progress: bool = True,
    box: tuple[float, float] | None = None,
) -> Run:
    """Run (or load) one configuration; returns the :class:`Run` with one row per sample.

    Args:
        config: the setting; ``None`` fields come from its profile.
        model, dataset: the victim and the evaluation split; loaded from the profile when omitted
            (pass both, with a fully specified ``config``, to run without a profile).
        root: results folder (default :func:`results_root`).
        force: recompute and re-plan even if stored results exist (with a shard: this shard's
            batches; the plan is rewritten).
        shard: ``"i/n"``: run only batches i, i + n, ...; default: from ``RANK``/``WORLD_SIZE``
            under torchrun (:func:`shard_from_env`), else the whole run. A shard that finishes
            before the others returns ``complete`` False; the last one merges the table.
        progress: show a tqdm bar over batches.
        box: the pixel range (default the profile's ``attack.box``, else (0, 1)).

    Raises:
        ValueError: a bad setting (before the victim loads and before anything is written), no
            eligible sample, a stored plan made for another dataset.

    When fewer than ``n_samples`` samples are eligible, the run attacks all of them and warns
    with their number.

    Example:
        >>> out = run(ExperimentConfig(profile="default", method="tkmia", k=3, n_samples=100))
        >>> out.records.success.mean()
    """
    shard = parse_shard(shard) if shard is not None else shard_from_env()
    if model is None or dataset is None:
        config, model, dataset, box, context = _load_setting(config, model, dataset, box, progress)
    else:
        missing = [f.name for f in dataclasses.fields(config) if f.name in _PROFILE_FIELDS
                   and getattr(config, f.name) is None
                   and not (f.name == "classes" and config.scheme == "random")
                   and not (f.name in ("n_pert", "del_n") and config.scheme == "global")]
        if missing:
            raise ValueError(f"with an explicit model and dataset, config must set {missing}")
        from tkmia.training import check_device

        box = tuple(box or (0.0, 1.0))
        config.validate(box)
        check_device(config.device)
        context = {"split": None, "profile_dataset": None}
    box = tuple(float(b) for b in box)
    model = model.to(config.device).eval()
    context = {"victim": model_fingerprint(model), "box": list(box),
               "dataset": dataset_identity(dataset, config.data_root), **context}
    folder = Path(root or results_root()) / config.profile.replace("/", "_") / (
        f"{config.method}-{config.scheme}-k{config.k}-{config.key(context['victim'], context)}"
    )
    table, plan_path, meta_path = folder / "records.parquet", folder / "eligible.json", folder / "config.json"
    if force:
        def mine(path: Path) -> bool:  # a file of this shard's batches
            return shard is None or int(path.stem.split("_")[1]) % shard[1] == shard[0]

        files = [p for pattern in (_BATCH_GLOB, "images_*.pt") for p in folder.glob(pattern) if mine(p)]
        for path in [*files, table, *([plan_path] if shard is None else [])]:
            path.unlink(missing_ok=True)
    elif table.exists():
        try:
            found = load_results(folder)
        except RunFileError as err:  # rebuilt below from the batches (or recomputed)
            _warn(f"{err.path} is unreadable; rebuilding the run's table")
            err.path.unlink(missing_ok=True)
            table.unlink(missing_ok=True)
        else:
            unsaved = _batches_without_images(folder, config.save_images, found.meta["config"]["batch_size"],
                                              len(found.records))
            if not unsaved:
                return found
            # asked for more saved images than the stored run kept: attack those batches again
            # (the same samples and settings give the same records) and keep their images
            for b in unsaved:
                (folder / f"batch_{b:05d}.parquet").unlink(missing_ok=True)
            table.unlink(missing_ok=True)

    settings = _settings(config, context)
    meta = {"config": config.to_dict(), "victim": context["victim"], "tkmia_version": tkmia.__version__,
            "box": list(box), "split": context["split"], "dataset": context["dataset"],
            "profile_dataset": context["profile_dataset"], "settings": settings}
    identity = context["dataset"]
    if plan_path.exists() and not (force and shard is not None):
        eligible = _check_plan(_read_json(plan_path, "plan"), dataset, identity, plan_path)
    else:
        attack = config.attack(model, box)
        cache = scan_cache(root or results_root(), context["victim"], identity, attack, config.device)
        created = [p for p in (cache.parent.parent, cache.parent, cache) if not p.exists()]
        eligible = select_eligible(model, dataset, config, box=box, cache=cache)
        where = f"{context['split'] or 'the dataset'} ({len(dataset)} samples)"
        if not eligible:
            # a run that fails writes nothing: drop the scan cache this call created
            for p in reversed(created):
                if p.is_dir():
                    with contextlib.suppress(OSError):  # another run's scan may have landed there
                        p.rmdir()
                else:
                    p.unlink(missing_ok=True)
            what = (f"classes={list(config.classes)}" if config.scheme == "global"
                    else f"n_pert={config.n_pert}, del_n={config.del_n}")
            raise ValueError(f"no sample of {where} is eligible for {config.method} {config.scheme} "
                             f"k={config.k} ({what}): choose another k, other classes, or another split")
        if len(eligible) < config.n_samples:
            _warn(f"n_samples={config.n_samples} but only {len(eligible)} samples of {where} are eligible "
                  f"for {config.scheme} k={config.k}: attacking those {len(eligible)}")
        folder.mkdir(parents=True, exist_ok=True)
        write_json(plan_path, {"samples": eligible, "n_dataset": len(dataset), "dataset": identity})
    write_json(meta_path, meta)

    batches = [eligible[i : i + config.batch_size] for i in range(0, len(eligible), config.batch_size)]
    todo = [b for b in range(len(batches)) if shard is None or b % shard[1] == shard[0]]
    todo = [b for b in todo if not _batch_ok(folder / f"batch_{b:05d}.parquet", batches[b])]

    attack = config.attack(model, box)
    bar = tqdm(todo, desc=f"{config.method} {config.scheme} k={config.k}", disable=not progress, unit="batch")
    for b in bar:
        ids = batches[b]
        images, labels = _fetch(dataset, ids)
        images, labels = images.to(config.device), labels.to(config.device)
        start = time.perf_counter()
        result = attack(images, labels, config.selection(), ids=torch.tensor(ids))
        seconds = time.perf_counter() - start
        keep = max(0, min(len(ids), config.save_images - b * config.batch_size))
        if keep:  # images first: a batch counts as done once its records exist
            payload = {"sample": ids[:keep], "clean": images[:keep].cpu(),
                       "adv": result.adv_images[:keep].cpu()}
            atomic_write(folder / f"images_{b:05d}.pt", lambda p, x=payload: torch.save(x, p))
        _write_parquet(folder / f"batch_{b:05d}.parquet",
                       pd.DataFrame(_records(result.to("cpu"), ids, config, seconds, settings)))
    done = sum((folder / f"batch_{b:05d}.parquet").exists() for b in range(len(batches)))
    if shard is not None and done < len(batches):
        return Run(_concat(folder), config, folder, meta, batches=(done, len(batches)), shard=shard)
    return dataclasses.replace(merge(folder), shard=shard)


def _batches_without_images(folder: Path, save_images: int, batch_size: int, n_samples: int) -> list[int]:
    """The batches of a stored run whose images ``save_images`` asks for but no file holds."""
    wanted = min(int(save_images), n_samples)
    out = []
    for b in range(-(-wanted // batch_size)):
        path = folder / f"images_{b:05d}.pt"
        need = min(batch_size, wanted - b * batch_size)
        try:
            have = len(torch.load(path, weights_only=True)["sample"]) if path.exists() else 0
        except Exception:  # a damaged file: its batch is attacked again  # noqa: BLE001
            have = 0
        if have < need:
            out.append(b)
    return out


def _concat(folder: Path) -> pd.DataFrame:
    files = sorted(folder.glob(_BATCH_GLOB))
    if not files:
        return pd.DataFrame()
    return pd.concat([_read_parquet(f, "batch file") for f in files], ignore_index=True)


def merge(folder: str | Path) -> Run:
    """Combine the batch files of a run (from one process or several shards) into its table.

    Raises ValueError naming the missing batches when the run is incomplete.
    """
    folder = Path(folder)
    plan = _read_json(folder / "eligible.json", "plan")["samples"]
    meta = _read_json(folder / "config.json", "run configuration")
    batch_size = meta["config"]["batch_size"]
    expected = (len(plan) + batch_size - 1) // batch_size
    present = {int(p.stem.split("_")[1]) for p in folder.glob(_BATCH_GLOB)}
    missing = sorted(set(range(expected)) - present)
    if missing:
        raise ValueError(f"run {folder} is incomplete: batches {missing[:10]} of {expected} are missing "
                         "(run the remaining shards, or the configuration without --shard)")
    records = _concat(folder)
    if list(records["sample"]) != plan:
        raise ValueError(f"run {folder}: the batch files do not match the eligible samples; run the same "
                         "setting again (damaged batches are recomputed) or with --force")
    _write_parquet(folder / "records.parquet", records)
    return load_results(folder)


def load_results(folder: str | Path) -> Run:
    """Load a finished run from its folder.

    Raises:
        FileNotFoundError: no records.parquet in ``folder``.
        RunFileError: records.parquet or config.json is damaged (the message names the file).
    """
    folder = Path(folder)
    table = folder / "records.parquet"
    if not table.exists():
        raise FileNotFoundError(f"no finished run in {folder} (records.parquet is missing)")
    meta = _read_json(folder / "config.json", "run configuration")
    try:
        config = ExperimentConfig(**meta["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise RunFileError(folder / "config.json", f"run configuration {folder / 'config.json'} is not "
                           f"valid ({err}); delete it and run the same setting again") from None
    records = _read_parquet(table, "run table")
    return Run(records, config, folder, meta)


def load_images(run_: Run) -> dict[str, Any]:
    """The saved clean and adversarial images of a run: {"sample", "clean", "adv"}."""
    files = sorted(run_.path.glob("images_*.pt"))
    if not files:
        raise FileNotFoundError(f"no saved images in {run_.path}: the run saved none (save_images=0)")
    parts = [torch.load(f) for f in files]
    return {
        "sample": [s for p in parts for s in p["sample"]],
        "clean": torch.cat([p["clean"] for p in parts]),
        "adv": torch.cat([p["adv"] for p in parts]),
    }


def grid_configs(
    profile: str = "default",
    *,
    methods: Sequence[str] | None = None,
    schemes: Sequence[str] | None = None,
    ks: Sequence[int] | None = None,
    **overrides,
) -> list[ExperimentConfig]:
    """The configurations of the profile's ``grid`` (or the given lists), in run order.

    For the random scheme, k values below ``n_pert`` are skipped. Every configuration is
    validated here (options, lr ...), before any victim loads.
    """
    from tkmia import profiles

    prof = profiles.load_profile(profile)
    grid = prof.grid
    ks = list(ks.tolist() if hasattr(ks, "tolist") else ks) if ks is not None else list(grid.k)
    configs = []
    for scheme in schemes or grid.schemes:
        for k in ks:
            k = as_int(k, "ks")
            n_pert = overrides.get("n_pert") or prof.selection.random.n_pert
            if scheme == "random" and k < n_pert:
                continue
            for method in methods or grid.methods:
                config = ExperimentConfig(profile=profile, method=method, scheme=scheme, k=k, **overrides)
                config.resolve(prof).validate(tuple(prof.attack.box))
                configs.append(config)
    return configs


def run_grid(
    profile: str = "default",
    *,
    methods: Sequence[str] | None = None,
    schemes: Sequence[str] | None = None,
    ks: Sequence[int] | None = None,
    progress: bool = True,
    root: str | Path | None = None,
    force: bool = False,
    shard: str | tuple[int, int] | None = None,
    **overrides,
) -> pd.DataFrame:
    """Every (method, scheme, k) of the profile's ``grid`` (or the given lists); all records in one table.

    ``overrides`` are :class:`ExperimentConfig` fields applied to every run (e.g. ``n_samples``).
    For the random scheme, k values below the profile's ``n_pert`` are skipped. ``root``,
    ``force`` and ``shard`` are passed to :func:`run` (with a shard, the table holds this
    shard's records until the last shard merges each run).
    """
    configs = grid_configs(profile, methods=methods, schemes=schemes, ks=ks, **overrides)
    frames = [run(c, root=root, force=force, shard=shard, progress=progress).records for c in configs]
    return pd.concat(frames, ignore_index=True)


def records_tensors(records: pd.DataFrame, dtype: torch.dtype = torch.float64) -> dict[str, Tensor]:
    """The stored records of a run (one row per sample) back as tensors.

    Returns ``clean_scores`` and ``adv_scores`` (N, C) of ``dtype`` and the masks ``labels`` and
    ``specified`` (N, C) in {0, 1} of the same dtype, each for the columns ``records`` has (labels
    and specified are stored as lists of class indices).
    """
    if not len(records):
        raise ValueError("records is empty: no sample to turn into tensors")
    out = {column: torch.tensor(np.stack(records[column].map(np.asarray).tolist()), dtype=dtype)
           for column in ("clean_scores", "adv_scores") if column in records}
    if not out:
        raise ValueError(f"records has no clean_scores or adv_scores column (columns: {list(records)})")
    num_classes = next(iter(out.values())).shape[1]
    for column in ("labels", "specified"):
        if column in records:
            mask = torch.zeros(len(records), num_classes, dtype=dtype)
            for row, classes in enumerate(records[column]):
                mask[row, list(classes)] = 1
            out[column] = mask
    return out
