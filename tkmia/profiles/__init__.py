"""Profiles: one YAML file per setting (dataset, victim, training, attack, selection, grid).

A profile is loaded into a frozen :class:`Profile` dataclass made of one frozen dataclass per
section, so values read as attributes (``profile.attack.k``) and cannot be changed by accident;
:meth:`Profile.replace` returns a modified copy. Loading validates the file: an unknown or missing
key raises ``ValueError`` naming it and the allowed keys, and values are type-checked.

Shipped profiles (``list_profiles()``): ``default`` (embedded MultiShapes, compact CNN, CPU),
``voc2012``, ``coco2014``, ``nuswide`` (the reference settings of the paper).

Example:
    >>> profile = load_profile("default", train={"epochs": 1})
    >>> profile.train.epochs, profile.dataset.name
    (1, 'multishapes')
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# The vocabularies a profile is checked against, each from the module that declares it.
from tkmia.attacks import METHODS
from tkmia.data import DATASETS, NUM_CLASSES
from tkmia.data.photos import SETTINGS
from tkmia.models import ARCHS
from tkmia.selection import SCHEMES
from tkmia.training import OPTIMIZERS, SCHEDULES

PROFILE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class DatasetConfig:
    """Which data: ``name`` in :data:`DATASETS`, ``root`` (None: the default location), image size.

    ``sizes`` (MultiShapes only) maps split -> number of images; ``val_split`` is validated after
    each training epoch, ``eval_split`` is the split that experiments attack.
    """

    name: str
    root: str | None
    image_size: int
    eval_split: str
    val_split: str = "val"
    seed: int = 0
    sizes: dict[str, int] | None = None
    setting: str | None = None  # photos only: novel_objects | novel_scenes
    mean_labels: int | None = None  # multishapes only: mean labels per image (None: the default mix)


@dataclass(frozen=True)
class ModelConfig:
    """The victim: ``arch`` in :data:`ARCHS`; ``weights`` None or a local ImageNet checkpoint."""

    arch: str
    weights: str | None
    width: int = 32
    frozen_blocks: int = 0  # efficientnet_lite0: stem and blocks 0..frozen_blocks-1 frozen


@dataclass(frozen=True)
class TrainConfig:
    """Victim training (BCE-with-logits, sum): optimiser ``adam`` or ``sgd``, peak ``lr``; ``init``
    names a profile whose victim gives the initial weights (fine-tuning), None: random weights."""

    epochs: int
    batch_size: int
    lr: float
    optimizer: str
    seed: int
    schedule: str = "constant"
    weight_decay: float = 0.0
    momentum: float = 0.9
    flip: bool = True
    num_workers: int = 0
    init: str | None = None  # a profile whose victim gives the initial weights (fine-tuning); None: random


@dataclass(frozen=True)
class AttackConfig:
    """Attack loop settings (book/reference.md); ``box`` is the pixel range."""

    k: int
    lr: float
    max_iter: int
    weight_decay: float
    box: tuple[float, float]
    batch_size: int
    n_samples: int
    #: the iteration budget of the named methods in place of ``max_iter`` (e.g. ``{kfool: 100}``:
    #: kFool takes k + 1 backward passes a step); empty: every method has ``max_iter``
    max_iter_by_method: dict[str, int] = dataclasses.field(default_factory=dict)

    def budget(self, method: str) -> int:
        """The iteration budget of ``method``: its ``max_iter_by_method`` entry, else ``max_iter``."""
        return self.max_iter_by_method.get(method, self.max_iter)


@dataclass(frozen=True)
class RandomConfig:
    """Random selection: ``n_pert`` labels drawn from Y ∩ T_k; success iff ΔN >= ``del_n``."""

    k: int
    n_pert: int
    del_n: int


@dataclass(frozen=True)
class SelectionConfig:
    """Global class list of the profile, the reference's named presets, random-scheme settings."""

    global_classes: tuple[int, ...]
    presets: dict[str, tuple[int, ...]]
    random: RandomConfig


@dataclass(frozen=True)
class GridConfig:
    """The experiment grid: methods x schemes x k."""

    methods: tuple[str, ...]
    schemes: tuple[str, ...]
    k: tuple[int, ...]


@dataclass(frozen=True)
class Profile:
    """A validated profile; build it with :func:`load_profile`."""

    name: str
    description: str
    dataset: DatasetConfig
    model: ModelConfig
    train: TrainConfig
    attack: AttackConfig
    selection: SelectionConfig
    grid: GridConfig

    def to_dict(self) -> dict[str, Any]:
        """The profile as plain YAML-ready data (tuples become lists).

        ``dataset.setting``, ``dataset.mean_labels``, ``model.frozen_blocks``, ``train.init`` and
        ``attack.max_iter_by_method`` are left out at their defaults (None, None, 0, None, empty), so
        that the cache keys of the profiles that do not use them stay what they were.
        """
        data = _plain(dataclasses.asdict(self))
        if data["dataset"]["setting"] is None:
            del data["dataset"]["setting"]
        if data["dataset"]["mean_labels"] is None:
            del data["dataset"]["mean_labels"]
        if data["model"]["frozen_blocks"] == 0:
            del data["model"]["frozen_blocks"]
        if data["train"]["init"] is None:
            del data["train"]["init"]
        if not data["attack"]["max_iter_by_method"]:
            del data["attack"]["max_iter_by_method"]
        return data

    def replace(self, **overrides: Any) -> Profile:
        """A copy with overrides, given as in :func:`load_profile`; validated again."""
        data = self.to_dict()
        _apply_overrides(data, overrides)
        return _build(data, source=f"profile {self.name!r}")


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _convert(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against the type ``hint``; lists become tuples, ints may become floats."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _from_dict(hint, value, where)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise TypeError(f"{where}={value!r}: expected {hint}")
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy arrays and scalars
        value = value.tolist()
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise TypeError(f"{where}={value!r}: expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"{where}={value!r}: expected {len(args)} values")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{where}={value!r}: expected a mapping")
        return {
            _convert(k, args[0], f"{where} key"): _convert(v, args[1], f"{where}.{k}")
            for k, v in value.items()
        }
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{where}={value!r}: expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{where}={value!r}: expected an integer")
        return int(value)
    if hint is float:
        if isinstance(value, str):  # PyYAML reads 5e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise TypeError(f"{where}={value!r}: expected a number") from None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{where}={value!r}: expected a number")
        if not math.isfinite(value):
            raise ValueError(f"{where}={value!r}: expected a finite number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError(f"{where}={value!r}: expected a string")
        return value
    raise TypeError(f"{where}: unsupported type {hint}")  # pragma: no cover


def _from_dict(cls: type, data: Any, where: str) -> Any:
    """Build the dataclass ``cls`` from a mapping, naming unknown and missing keys."""
    label = where or "profile"
    if not isinstance(data, dict):
        raise TypeError(f"{label}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    allowed = ", ".join(fields)
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ValueError(f"unknown key {_join(where, unknown[0])!r} in {label}; allowed keys: {allowed}")
    required = [
        n
        for n, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [k for k in required if k not in data]
    if missing:
        raise ValueError(f"missing key {_join(where, missing[0])!r} in {label}; allowed keys: {allowed}")
    values = {k: _convert(v, hints[k], _join(where, k)) for k, v in data.items()}
    return cls(**values)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _choice(where: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{where}={value!r}; allowed: {', '.join(map(str, allowed))}")


def _validate(p: Profile) -> None:
    """Value checks beyond types."""
    _choice("dataset.name", p.dataset.name, DATASETS)
    _choice("model.arch", p.model.arch, ARCHS)
    _choice("train.optimizer", p.train.optimizer, OPTIMIZERS)
    _choice("train.schedule", p.train.schedule, SCHEDULES)
    for name in ("dataset.image_size", "model.width", "train.epochs", "train.batch_size",
                 "attack.k", "attack.max_iter", "attack.batch_size", "attack.n_samples",
                 "selection.random.k", "selection.random.n_pert", "selection.random.del_n"):  # fmt: skip
        section, *rest = name.split(".")
        value = getattr(p, section)
        for part in rest:
            value = getattr(value, part)
        if value < 1:
            raise ValueError(f"{name}={value!r}; expected >= 1")
    for name in ("train.lr", "attack.lr"):
        value = getattr(p, name.split(".")[0]).lr
        if value <= 0:
            raise ValueError(f"{name}={value!r}; expected > 0")
    lo, hi = p.attack.box
    if not lo < hi:
        raise ValueError(f"attack.box={list(p.attack.box)!r}; expected [low, high] with low < high")
    rnd = p.selection.random
    if not rnd.n_pert <= rnd.k:
        raise ValueError(f"selection.random.n_pert={rnd.n_pert} must be <= selection.random.k={rnd.k}")
    if not rnd.del_n <= rnd.n_pert:
        raise ValueError(
            f"selection.random.del_n={rnd.del_n} must be <= selection.random.n_pert={rnd.n_pert}"
        )
    if p.dataset.name == "photos":
        _choice("dataset.setting", p.dataset.setting, SETTINGS)
    elif p.dataset.setting is not None:
        raise ValueError(f"dataset.setting={p.dataset.setting!r} applies to photos only; set it to null")
    if p.dataset.mean_labels is not None and p.dataset.name != "multishapes":
        raise ValueError(f"dataset.mean_labels={p.dataset.mean_labels!r} applies to multishapes only; "
                         "set it to null")
    for m in p.grid.methods:
        _choice("grid.methods", m, METHODS)
    for m, budget in p.attack.max_iter_by_method.items():
        _choice("attack.max_iter_by_method key", m, METHODS)
        if budget < 1:
            raise ValueError(f"attack.max_iter_by_method.{m}={budget!r}; expected >= 1")
    for s in p.grid.schemes:
        _choice("grid.schemes", s, SCHEMES)
    n_classes = NUM_CLASSES[p.dataset.name]
    lists = {"selection.global_classes": p.selection.global_classes}
    lists.update({f"selection.presets.{k}": v for k, v in p.selection.presets.items()})
    for where, classes in lists.items():
        bad = [c for c in classes if not 0 <= c < n_classes]
        if bad:
            raise ValueError(
                f"{where} has class indices {bad} outside 0..{n_classes - 1} of {p.dataset.name}"
            )
    if p.dataset.sizes is not None:
        if p.dataset.name not in ("multishapes", "photos"):
            raise ValueError("dataset.sizes applies to multishapes and photos only; set it to null")
        for split, n in p.dataset.sizes.items():
            _choice("dataset.sizes key", split, ("train", "val", "test"))
            if n < 1:
                raise ValueError(f"dataset.sizes.{split}={n!r}; expected >= 1")


def _build(data: Any, source: str) -> Profile:
    try:
        profile = _from_dict(Profile, data, "")
    except (ValueError, TypeError) as err:
        raise type(err)(f"{source}: {err}") from None
    try:
        _validate(profile)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    return profile


def _apply_overrides(data: dict, overrides: dict[str, Any]) -> None:
    """Merge ``section={...}`` dicts and ``section__key=value`` pairs into ``data`` in place."""
    for key, value in overrides.items():
        path = key.split("__")
        target = data
        for part in path[:-1]:
            if not isinstance(target.get(part), dict):
                raise ValueError(f"override {key!r}: {part!r} is not a section of the profile")
            target = target[part]
        last = path[-1]
        if isinstance(value, dict) and isinstance(target.get(last), dict):
            merged = dict(target[last])
            _apply_overrides(merged, value)
            target[last] = merged
        else:
            target[last] = value


def list_profiles() -> list[str]:
    """Names of the shipped profiles (YAML files in this folder), sorted."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | Path | Profile, **overrides: Any) -> Profile:
    """Load and validate a profile by name (``list_profiles()``) or from a YAML path.

    Args:
        name_or_path: a shipped profile name, a path to a YAML file, or a Profile (copied).
        **overrides: ``section={"key": value}`` (merged into the section) or
            ``section__key=value``; e.g. ``train={"epochs": 1}`` or ``attack__k=2``.

    Returns:
        The validated, frozen :class:`Profile`.

    Raises:
        ValueError: unknown profile name, unknown or missing key (named), bad value.
        FileNotFoundError: a path that does not exist.

    Example:
        >>> load_profile("voc2012").model.arch
        'resnet50'
    """
    if isinstance(name_or_path, Profile):
        return name_or_path.replace(**overrides)
    text = str(name_or_path)
    if text in list_profiles():
        path = PROFILE_DIR / f"{text}.yaml"
    elif text.endswith((".yaml", ".yml")) or "/" in text or Path(text).is_file():
        path = Path(text).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"profile file {str(path)!r} does not exist")
    else:
        raise ValueError(f"profile={text!r} is not a profile; allowed: {list_profiles()} or a path")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"profile file {str(path)!r} is not valid YAML{where}: {problem}; "
                         "fix that line") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    _apply_overrides(data, overrides)
    return _build(data, source=f"profile {str(path)!r}")


__all__ = [
    "AttackConfig",
    "DatasetConfig",
    "GridConfig",
    "ModelConfig",
    "Profile",
    "RandomConfig",
    "SelectionConfig",
    "TrainConfig",
    "list_profiles",
    "load_profile",
]
