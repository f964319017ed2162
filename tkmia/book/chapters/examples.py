"""The attacked examples that the chapters "The convex relaxation" and "The algorithm on one image"
follow step by step: the first eligible samples of a profile, attacked with a recorded history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

__all__ = ["AttackedExamples", "attack_examples"]


@dataclass
class AttackedExamples:
    """The first eligible samples of a profile's evaluation split, attacked with a recorded history.

    Attributes:
        result: the :class:`~tkmia.attacks.AttackResult` (``result.history`` holds "loss" and "scores").
        samples: the dataset indices of the attacked samples.
        images: their clean images (n, 3, H, W) in [0, 1].
        classes: the label names of the dataset.
        k: the top-k size used.
    """

    result: object
    samples: list[int]
    images: Tensor
    classes: list[str]
    k: int


def attack_examples(profile: str = "default", method: str = "tkmia", n: int = 1, k: int | None = None,
                    data_root: str | None = None, device: str = "cpu", max_iter: int | None = None,
                    model=None, dataset=None, classes: Sequence[str] | None = None,
                    **options) -> AttackedExamples:
    """Attack the first ``n`` eligible samples (global scheme, the profile's S_g and optimiser) with
    ``record_history=True``; for the chapters that follow an attack step by step (5 and 6).

    Args:
        profile: a profile name; its victim and evaluation split are loaded unless ``model`` and
            ``dataset`` are given.
        method: one of ``tkmia.attacks.METHODS``.
        n: how many eligible samples.
        k, max_iter: default the profile's.
        options: extra keyword options of the attack class (e.g. ``lambda_mode="gradient"``).

    Example:
        >>> ex = attack_examples("default", n=2, lambda_mode="gradient")
        >>> ex.result.history["loss"].shape  # (T, 2)
    """
    from tkmia import experiments, profiles

    prof = profiles.load_profile(profile)
    if model is None:
        from tkmia.victims import load_victim

        model, meta = load_victim(prof, data_root=data_root, device=device)
        classes = classes or meta.get("classes")
    if dataset is None:
        from tkmia.data import load_dataset

        dataset = load_dataset(prof, prof.dataset.eval_split, root=data_root)
    config = experiments.ExperimentConfig(
        profile=profile, method=method, scheme="global", k=k, n_samples=n, max_iter=max_iter,
        data_root=data_root, device=device, options=dict(options),
    ).resolve(prof)
    result, samples = experiments.attack_eligible(config, model, dataset, box=tuple(prof.attack.box),
                                                  record_history=True)
    images, _ = experiments.fetch(dataset, samples)
    if classes is None:
        classes = getattr(dataset, "classes", None) or [str(c) for c in range(result.labels.shape[1])]
    return AttackedExamples(result, samples, images.cpu(), list(classes), config.k)
