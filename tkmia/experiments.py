"""Run the paper's protocol: a configuration -> one record per attacked sample, kept safely on disk.

A run attacks the first ``n_samples`` eligible samples of the evaluation split, in batches of
``batch_size``. Every finished batch is written atomically as its own Parquet file, so a run
interrupted at any point and started again skips the finished batches, redoes the partial one and
ends with exactly one row per sample. The same configuration (and the same victim) loads the
stored table instead of recomputing; ``force=True`` recomputes. ``shard=(i, n)`` runs batches
i, i + n, i + 2n, ... so that n processes (or GPUs) can share a run; :func:`merge` combines them.
Book chapters "Global selection scheme", "Random selection scheme", "Sensitivity".
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn
from tqdm import tqdm

import tkmia
from tkmia import attacks
from tkmia._io import atomic_write, write_json
from tkmia._paths import home
from tkmia.metrics import MEASURES, topk_indices
from tkmia.selection import SCHEMES, GlobalSelection, RandomSelection, make_selection

__all__ = [
    "ExperimentConfig",
    "Run",
    "run",
    "run_grid",
    "merge",
    "load_results",
    "results_root",
    "parse_shard",
    "select_eligible",
]

_BATCH_GLOB = "batch_*.parquet"
# fields a profile fills when they are None
_PROFILE_FIELDS = ("k", "classes", "n_pert", "del_n", "lr", "max_iter", "weight_decay", "n_samples",
                   "batch_size")


@dataclass(frozen=True)
class ExperimentConfig:
    """One attack setting. ``None`` fields take the profile's value (see :meth:`resolve`).

    Attributes:
        profile: a profile name (``tkmia.profiles.list_profiles()``) or a YAML path.
        method: one of ``tkmia.attacks.METHODS``.
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
        if self.method not in attacks.METHODS:
            raise ValueError(f"method must be one of {list(attacks.METHODS)}, got {self.method!r}")
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {self.scheme!r}")
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(int(c) for c in self.classes))
        for name in ("k", "n_pert", "del_n", "max_iter", "n_samples", "batch_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if self.n_samples == 0 or self.batch_size == 0:
            raise ValueError("n_samples and batch_size must be >= 1")
        if not isinstance(self.options, dict):
            raise TypeError(f"options must be a dict, got {type(self.options).__name__}")

    def resolve(self, profile) -> ExperimentConfig:
        """Fill every ``None`` field from ``profile`` (a :class:`tkmia.profiles.Profile`)."""
        att, sel = profile.attack, profile.selection
        values = {
            "k": sel.random.k if self.scheme == "random" else att.k,
            "classes": tuple(sel.global_classes),
            "n_pert": sel.random.n_pert,
            "del_n": sel.random.del_n,
            "lr": att.lr,
            "max_iter": att.max_iter,
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

    def attack(self, model: nn.Module, box=(0.0, 1.0)) -> attacks.Attack:
        """The attack object of this configuration."""
        cls = attacks.get(self.method)
        optimiser = {"lr": self.lr, "weight_decay": self.weight_decay} if cls.uses_optimiser else {}
        return cls(model, self.k, max_iter=self.max_iter, box=tuple(box), **optimiser, **self.options)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["classes"] = list(self.classes) if self.classes is not None else None
        return out

    def key(self, victim: str) -> str:
        """A short hash of everything that changes the numbers (not ``save_images``)."""
        payload = self.to_dict()
        payload.pop("save_images")
        payload.pop("data_root")
        if self.scheme == "global":
            payload.update(n_pert=None, del_n=None, seed=None)
        else:
            payload.update(classes=None)
        payload["victim"] = victim
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:10]


@dataclass
class Run:
    """A finished run: its per-sample ``records``, its ``config`` and where they are stored."""

    records: pd.DataFrame
    config: ExperimentConfig
    path: Path
    meta: dict[str, Any]


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
    index, count = spec
    if not (count >= 1 and 0 <= index < count):
        raise ValueError(f"shard must look like 'i/n' with 0 <= i < n, got {index}/{count}")
    return index, count


def model_fingerprint(model: nn.Module) -> str:
    """A hash of the model's parameters and buffers (results of another victim never mix)."""
    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


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


def select_eligible(model, dataset, config: ExperimentConfig, chunk: int = 512) -> list[int]:
    """Indices of the first ``config.n_samples`` eligible samples of ``dataset``, in order."""
    selection = config.selection()
    found: list[int] = []
    for start in range(0, len(dataset), chunk):
        ids = list(range(start, min(start + chunk, len(dataset))))
        scores = clean_scores(model, dataset, ids, config.device)
        _, labels = _fetch(dataset, ids)
        spec = selection.select(scores, labels, config.k, ids=torch.tensor(ids))
        found.extend(i for i, ok in zip(ids, spec.eligible.tolist()) if ok)
        if len(found) >= config.n_samples:
            break
    return found[: config.n_samples]


def _records(result: attacks.AttackResult, ids: list[int], config: ExperimentConfig, seconds: float):
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
        rows.append(row)
    return rows


def _write_parquet(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda p: frame.to_parquet(p, index=False))


def _load_setting(config: ExperimentConfig, model, dataset, progress: bool = True):
    """(resolved config, model, evaluation dataset, box) from the profile, unless given."""
    from tkmia import profiles  # floor 3, imported lazily

    profile = profiles.load_profile(config.profile)
    config = config.resolve(profile)
    if model is None:
        from tkmia.victims import load_victim

        model, _ = load_victim(profile, data_root=config.data_root, device=config.device, progress=progress)
    if dataset is None:
        from tkmia.data import load_dataset

        dataset = load_dataset(profile, profile.dataset.eval_split, root=config.data_root)
    return config, model, dataset, tuple(profile.attack.box)


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
        force: recompute even if stored results exist.
        shard: ``"i/n"``: run only batches i, i + n, ...; the table is then partial until
            :func:`merge` (or a run without ``shard``) completes it.
        progress: show a tqdm bar over batches.

    Example:
        >>> out = run(ExperimentConfig(profile="default", method="tkmia", k=3, n_samples=100))
        >>> out.records.success.mean()
    """
    shard = parse_shard(shard)
    if model is None or dataset is None:
        config, model, dataset, profile_box = _load_setting(config, model, dataset, progress)
        box = box or profile_box
    else:
        missing = [f.name for f in dataclasses.fields(config) if f.name in _PROFILE_FIELDS
                   and getattr(config, f.name) is None
                   and not (f.name == "classes" and config.scheme == "random")
                   and not (f.name in ("n_pert", "del_n") and config.scheme == "global")]
        if missing:
            raise ValueError(f"with an explicit model and dataset, config must set {missing}")
    box = box or (0.0, 1.0)
    model = model.to(config.device).eval()
    victim = model_fingerprint(model)
    folder = Path(root or results_root()) / config.profile.replace("/", "_") / (
        f"{config.method}-{config.scheme}-k{config.k}-{config.key(victim)}"
    )
    table = folder / "records.parquet"
    if table.exists() and not force:
        return load_results(folder)
    if force:
        for stale in [*folder.glob(_BATCH_GLOB), *folder.glob("images_*.pt"), table]:
            stale.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"config": config.to_dict(), "victim": victim, "tkmia_version": tkmia.__version__,
            "box": list(box)}
    write_json(folder / "config.json", meta)

    plan_path = folder / "eligible.json"
    if plan_path.exists():
        eligible = json.loads(plan_path.read_text())["samples"]
    else:
        eligible = select_eligible(model, dataset, config)
        write_json(plan_path, {"samples": eligible, "n_dataset": len(dataset)})
    batches = [eligible[i : i + config.batch_size] for i in range(0, len(eligible), config.batch_size)]
    todo = [b for b in range(len(batches)) if shard is None or b % shard[1] == shard[0]]
    todo = [b for b in todo if not (folder / f"batch_{b:05d}.parquet").exists()]

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
                       pd.DataFrame(_records(result.to("cpu"), ids, config, seconds)))
    if shard is not None and len(list(folder.glob(_BATCH_GLOB))) < len(batches):
        return Run(_concat(folder), config, folder, meta)
    return merge(folder)


def _concat(folder: Path) -> pd.DataFrame:
    files = sorted(folder.glob(_BATCH_GLOB))
    if not files:
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def merge(folder: str | Path) -> Run:
    """Combine the batch files of a run (from one process or several shards) into its table.

    Raises ValueError naming the missing batches when the run is incomplete.
    """
    folder = Path(folder)
    plan = json.loads((folder / "eligible.json").read_text())["samples"]
    meta = json.loads((folder / "config.json").read_text())
    batch_size = meta["config"]["batch_size"]
    expected = (len(plan) + batch_size - 1) // batch_size
    present = {int(p.stem.split("_")[1]) for p in folder.glob(_BATCH_GLOB)}
    missing = sorted(set(range(expected)) - present)
    if missing:
        raise ValueError(f"run {folder} is incomplete: batches {missing[:10]} of {expected} are missing "
                         "(run the remaining shards, or the configuration without --shard)")
    records = _concat(folder)
    if list(records["sample"]) != plan:
        raise ValueError(f"run {folder}: the batch files do not match the eligible samples")
    _write_parquet(folder / "records.parquet", records)
    return load_results(folder)


def load_results(folder: str | Path) -> Run:
    """Load a finished run from its folder."""
    folder = Path(folder)
    table = folder / "records.parquet"
    if not table.exists():
        raise FileNotFoundError(f"no finished run in {folder} (records.parquet is missing)")
    meta = json.loads((folder / "config.json").read_text())
    cfg = dict(meta["config"])
    config = ExperimentConfig(**cfg)
    return Run(pd.read_parquet(table), config, folder, meta)


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


def run_grid(
    profile: str = "default",
    *,
    methods: Sequence[str] | None = None,
    schemes: Sequence[str] | None = None,
    ks: Sequence[int] | None = None,
    progress: bool = True,
    **overrides,
) -> pd.DataFrame:
    """Every (method, scheme, k) of the profile's ``grid`` (or the given lists); all records in one table.

    ``overrides`` are :class:`ExperimentConfig` fields applied to every run (e.g. ``n_samples``).
    For the random scheme, k values below the profile's ``n_pert`` are skipped.
    """
    from tkmia import profiles

    prof = profiles.load_profile(profile)
    grid = prof.grid
    frames = []
    for scheme in schemes or grid.schemes:
        for k in ks or grid.k:
            n_pert = overrides.get("n_pert") or prof.selection.random.n_pert
            if scheme == "random" and k < n_pert:
                continue
            for method in methods or grid.methods:
                config = ExperimentConfig(profile=profile, method=method, scheme=scheme, k=k, **overrides)
                frames.append(run(config, progress=progress).records)
    return pd.concat(frames, ignore_index=True)
