"""Open questions about the victim and the data: other architectures and transfer, label
cardinality against k, an attacker without ground truth, and how good the victim must be.

Book part "Open questions", chapters "Other architectures", "Label cardinality",
"No ground truth" and "Victim quality". Every victim is trained once through the victim cache
(:func:`tkmia.victims.load_victim`, keyed by the profile variant of :func:`variant_profile`) and
every attack goes through the run store (:func:`tkmia.experiments.run`), so chapters that share a
setting share its runs. The judging functions (:func:`judge`, :func:`ready_mask`) are pure
functions of score tensors.

Example:
    >>> victim, meta = budget_victim("tiny", arch="small_vit", train_images=300, epochs=1)
    >>> meta["eval"]["map"] > 0
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from tkmia import experiments
from tkmia.data import load_dataset
from tkmia.metrics import WATCHED_MEASURES, measures, measures_unchanged, topk_mask
from tkmia.profiles import Profile, load_profile
from tkmia.report import group_summary, with_deltas
from tkmia.selection import GlobalSelection, Specification, spare_rank
from tkmia.training import predict
from tkmia.victims import load_snapshot, load_victim

__all__ = [
    "ARCH_NAMES",
    "architecture_runs",
    "architecture_victims",
    "quality_victims",
    "transfer_table",
    "LabelledImages",
    "attack_victim",
    "budget_victim",
    "cardinality_frame",
    "cardinality_sweep",
    "cardinality_verdict",
    "judge",
    "multishapes_profile",
    "no_truth_frame",
    "no_truth_verdict",
    "pseudo_labels",
    "quality_frame",
    "quality_verdict",
    "ready_mask",
    "transfer_frame",
    "verdict_summary",
    "transfer_verdict",
    "variant_profile",
    "victim_table",
]

#: The book's names of the victim architectures compared in "Other architectures".
ARCH_NAMES = {"compact_cnn": "CompactCNN", "small_resnet": "SmallResNet", "small_vit": "SmallViT"}


def multishapes_profile(profile: Profile | str, fallback: str = "default") -> tuple[Profile | str, str]:
    """``profile`` when its dataset is MultiShapes, else ``fallback``, with a sentence saying so.

    The chapters "Other architectures", "Label cardinality" and "Victim quality" vary generated
    MultiShapes datasets and a MultiShapes victim's training run, so ``make book PROFILE=photos``
    builds them on ``fallback`` and the chapter prints the sentence.

    Returns:
        ``(profile, "")`` or ``(fallback, note)``.
    """
    base = profile if isinstance(profile, Profile) else load_profile(profile)
    if base.dataset.name == "multishapes":
        return profile, ""
    if load_profile(fallback).dataset.name != "multishapes":
        raise ValueError(f"fallback={fallback!r} is not a MultiShapes profile")
    return fallback, (f"This chapter studies MultiShapes variants and a MultiShapes victim's training; "
                      f"the profile {base.name!r} (dataset {base.dataset.name}) is not a MultiShapes "
                      f"profile, so the chapter runs on the {fallback!r} profile.")


def variant_profile(
    profile: Profile | str,
    *,
    arch: str | None = None,
    train_images: int | None = None,
    epochs: int | None = None,
    mean_labels: int | None = None,
    val_images: int = 200,
    finetune: bool = False,
) -> Profile:
    """The profile with another victim architecture, training budget or MultiShapes variant.

    Args:
        profile: a Profile or a profile name.
        arch: ``model.arch`` (e.g. ``"small_resnet"``); None keeps the profile's.
        train_images: training images (MultiShapes ``dataset.sizes.train``); with it, the
            validation split shrinks to ``val_images`` (validated every epoch).
        epochs: ``train.epochs``; None keeps the profile's.
        mean_labels: ``dataset.mean_labels`` (mean labels per image); None keeps the profile's.
        finetune: start from the weights of the profile's own victim (``train.init``, trained once
            and cached) instead of random weights; needs ``profile`` given by name.

    Returns:
        A validated :class:`~tkmia.profiles.Profile`; its victim has its own cache entry.
    """
    base = profile if isinstance(profile, Profile) else load_profile(profile)
    overrides: dict[str, Any] = {}
    if arch is not None:
        overrides["model"] = {"arch": arch}
    if train_images is not None:
        sizes = dict(base.dataset.sizes or {})
        if base.dataset.name != "multishapes":
            raise ValueError(f"train_images={train_images!r} applies to MultiShapes profiles, "
                             f"not dataset {base.dataset.name!r}")
        sizes.update(train=int(train_images), val=min(int(val_images), sizes.get("val", val_images)))
        overrides["dataset"] = {"sizes": sizes}
    if mean_labels is not None:
        overrides.setdefault("dataset", {})["mean_labels"] = mean_labels
    if epochs is not None:
        overrides["train"] = {"epochs": epochs}
    if finetune:
        if not isinstance(profile, str):
            raise ValueError("finetune=True needs the profile by name (or YAML path), which train.init "
                             f"records; got a Profile object ({base.name!r})")
        overrides.setdefault("train", {})["init"] = profile
    return base.replace(**overrides)


def budget_victim(profile: Profile | str, device: str = "cpu", **variant) -> tuple[nn.Module, dict]:
    """The victim of :func:`variant_profile` ``(profile, **variant)``: cached, or trained now.

    Returns:
        ``(model in eval mode, metadata)``; ``metadata["eval"]["map"]`` is its test mAP.
    """
    return load_victim(variant_profile(profile, **variant), device=device, progress=False)


@dataclass
class LabelledImages:
    """In-memory images with the labels an attack is given (e.g. an attacker's predicted labels).

    Attributes:
        images: (N, 3, H, W) in [0, 1].
        labels: (N, C) in {0, 1}.
        checksum: names the contents in the run store.
        classes: class names.
    """

    images: Tensor
    labels: Tensor
    checksum: str
    classes: Sequence[str] = ()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]


def attack_victim(
    profile: Profile,
    model: nn.Module,
    method: str = "tkmia",
    *,
    dataset=None,
    k: int | None = None,
    n_samples: int | None = None,
    save_images: int = 0,
    device: str = "cpu",
) -> experiments.Run:
    """Attack ``model`` on the first ``n_samples`` eligible samples (global scheme) through the
    run store; the other settings come from ``profile``.

    Args:
        profile: the (variant) profile whose attack and selection settings apply.
        model: the victim.
        method: an attack of :data:`tkmia.attacks.METHODS`.
        dataset: the samples; default the profile's evaluation split.
        save_images: how many samples' clean and adversarial images to keep (transfer needs all).
    """
    if dataset is None:
        dataset = load_dataset(profile, profile.dataset.eval_split)
    config = experiments.ExperimentConfig(profile=profile.name, method=method, scheme="global", k=k,
                                          n_samples=n_samples, save_images=save_images, device=device)
    return experiments.run(config.resolve(profile), model=model, dataset=dataset, progress=False,
                           box=tuple(profile.attack.box))


def judge(
    clean_scores: Tensor, adv_scores: Tensor, labels: Tensor, specified: Tensor, k: int
) -> dict[str, Tensor]:
    """Judge adversarial scores by the global rule on the given labels Y and specified labels S.

    Args:
        clean_scores, adv_scores: (N, C) logits of the clean and adversarial images.
        labels: Y, (N, C) in {0, 1}; specified: S ⊆ Y, (N, C) in {0, 1}.
        k: the top-k size.

    Returns:
        ``applicable`` (S ∩ T_k(x) ≠ ∅ and |Y| ≥ k + |S|), ``success`` (applicable and no label of
        S in T_k(x_adv)), ``imperceptible`` (success with P@k, mAP@k, NDCG@k unchanged to 1e-6),
        and ``delta_<measure>`` (adversarial minus clean) of every measure; each (N,).

    Example:
        >>> judge(torch.tensor([[3., 2, 1, 0]]), torch.tensor([[0., 2, 1, 3]]),
        ...       torch.tensor([[1., 1, 0, 1]]), torch.tensor([[1., 0, 0, 0]]), 2)["imperceptible"]
        tensor([True])
    """
    spec = Specification.from_mask(specified, clean_scores, labels, k)
    success = spec.success(clean_scores, adv_scores, k)
    truth = labels.to(clean_scores.dtype)
    before, after = measures(clean_scores, truth, k), measures(adv_scores, truth, k)
    out = {"applicable": spec.eligible, "success": success,
           "imperceptible": success & measures_unchanged(before, after)}
    out.update({f"delta_{key}": after[key] - before[key] for key in before})
    return out


def ready_mask(clean_scores: Tensor, labels: Tensor, specified: Tensor, k: int) -> Tensor:
    """Whether the best true label of Y \\ S outside the clean top-k (:func:`tkmia.selection.spare_rank`)
    sits at rank k+1 … k+|S|, ready to take a freed place (ranks count from 1).

    Shape: (N, C) each -> (N,) bool (False where Y \\ S has no label outside the top-k).
    """
    return spare_rank(clean_scores, labels, specified, k) <= k + specified.bool().sum(1)


def _masked_mean(values: Tensor, mask: Tensor) -> float:
    """Mean of ``values[mask]``; NaN when the mask is empty."""
    return float(values[mask].float().mean()) if bool(mask.any()) else float("nan")


def verdict_summary(verdict: Mapping[str, Tensor], columns: Sequence[str] = ()) -> dict[str, float]:
    """A :func:`judge` verdict of N samples in numbers (:func:`tkmia.report.group_summary` over the
    applicable samples): ``applicable`` (their share), ``success_rate``, ``imperceptible_rate`` and the
    mean of each of ``columns`` (e.g. ``"delta_precision_at_k"``) over them (NaN where none is), and
    ``imperceptible_yield`` (the share of all N that end as imperceptible successes)."""
    frame = pd.DataFrame({"eligible": verdict["applicable"].numpy(), "success": verdict["success"].numpy(),
                          "imperceptible": verdict["imperceptible"].numpy(),
                          **{c: verdict[c].double().numpy() for c in columns}})
    table = group_summary(frame, (), columns)
    stats = ["success_rate", "imperceptible_rate", *columns]
    nothing = dict.fromkeys(stats, float("nan"))  # no applicable sample
    values = table.iloc[0][stats].astype(float).to_dict() if len(table) else nothing
    return {"applicable": float(verdict["applicable"].float().mean()), **values,
            "imperceptible_yield": float(verdict["imperceptible"].float().mean())}




def transfer_frame(
    runs: Mapping[tuple[str, str], experiments.Run], victims: Mapping[str, Any], device: str = "cpu"
) -> pd.DataFrame:
    """Transfer of each run's adversarial images to every victim (its own included).

    Args:
        runs: ``(method, source victim name) -> Run`` with every attacked sample's images saved.
        victims: ``name -> model`` (or ``name -> (model, ...)`` as :func:`architecture_victims`
            returns); each source's images are scored by every model.

    Returns:
        One row per (method, source, target): ``n`` (samples attacked on the source),
        ``applicable`` (share of them whose S is in the target's clean top-k, with |Y| ≥ k + |S|),
        and over the applicable ones ``success_rate`` (S left the target's top-k),
        ``imperceptible_rate`` and the mean ``delta_precision_at_k``, ``delta_map_at_k``,
        ``delta_ndcg_at_k`` on the target. The diagonal is the white-box attack.
    """
    rows = []
    for (method, source), run_ in runs.items():
        saved = experiments.load_images(run_)
        records = run_.records.set_index("sample").loc[saved["sample"]].reset_index()
        if len(records) != len(run_.records):
            raise ValueError(f"run {run_.path} saved the images of {len(records)} of its "
                             f"{len(run_.records)} samples; rerun it with save_images >= n_samples")
        tensors = experiments.records_tensors(records, torch.float32)
        k = int(records["k"].iloc[0])
        for target, entry in victims.items():
            model = (entry[0] if isinstance(entry, tuple) else entry).to(device).eval()
            with torch.no_grad():
                clean = model(saved["clean"].to(device)).float().cpu()
                adv = model(saved["adv"].to(device)).float().cpu()
            verdict = judge(clean, adv, tensors["labels"], tensors["specified"], k)
            summary = verdict_summary(verdict, [f"delta_{m}" for m in WATCHED_MEASURES])
            del summary["imperceptible_yield"]
            rows.append({"method": method, "source": source, "target": target, "n": len(records), **summary})
    return pd.DataFrame(rows)


def cardinality_frame(
    profile: Profile,
    scores: Tensor,
    labels: Tensor,
    records: pd.DataFrame | None,
    mean_labels: int,
    k: int,
) -> pd.DataFrame:
    """Eligibility, success, imperceptible success and Pert per room |Y| − k of one dataset variant.

    Args:
        profile: the variant's profile (its global classes S_g).
        scores, labels: the victim's clean scores and the truth on the whole evaluation split, (N, C).
        records: the run's records (the first eligible samples), or None when none is eligible.
        mean_labels: the variant's mean labels per image (a column of the output).
        k: the top-k size.

    Returns:
        One row per room value: ``images`` (of the split), ``eligible`` (their eligible share),
        ``attacked``, ``success_rate``, ``imperceptible_rate`` (over attacked) and
        ``pert_l2_255`` (mean over successful; ×255 of [0, 1] pixel units).
    """
    spec = GlobalSelection(profile.selection.global_classes).select(scores, labels, k)
    room = (labels.sum(1) - k).long()
    split = pd.DataFrame({"room": room.tolist(), "eligible": spec.eligible.tolist()})
    table = split.groupby("room").agg(images=("eligible", "size"), eligible=("eligible", "mean"))
    if records is not None and len(records):
        attacked = records.assign(room=records["labels"].map(len) - k)
        summary = group_summary(attacked, ["room"], ["pert_l2_255"]).set_index("room")
        table = table.join(summary.rename(columns={"n": "attacked"}))
    for column in ("attacked", "success_rate", "imperceptible_rate", "pert_l2_255"):
        if column not in table:
            table[column] = float("nan")
    table["attacked"] = table["attacked"].fillna(0).astype(int)
    table = table.reset_index()
    table.insert(0, "mean_labels", mean_labels)
    return table


def pseudo_labels(scores: Tensor, rule: str, value: float) -> Tensor:
    """The labels an attacker without ground truth believes: the victim's top-m or its scores
    above a probability threshold.

    Args:
        scores: (N, C) logits.
        rule: ``"top"`` (the ``value`` = m highest scores) or ``"threshold"``
            (sigmoid(score) ≥ ``value``, a probability in (0, 1)).

    Returns:
        (N, C) float in {0, 1}.
    """
    if rule == "top":
        if float(value) != int(value) or not 1 <= int(value) <= scores.shape[1]:
            raise ValueError(f"value={value!r}; rule 'top' takes an int m in 1..{scores.shape[1]}")
        return topk_mask(scores, int(value)).float()
    if rule == "threshold":
        if not 0 < float(value) < 1:
            raise ValueError(f"value={value!r}; rule 'threshold' takes a probability in (0, 1)")
        return (torch.sigmoid(scores) >= float(value)).float()
    raise ValueError(f"rule={rule!r}; allowed: 'top', 'threshold'")


def no_truth_frame(
    profile: Profile,
    model: nn.Module,
    rules: Sequence[tuple[str, float]],
    *,
    method: str = "tkmia",
    n_samples: int | None = None,
    device: str = "cpu",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Attack with predicted labels as the attacker's Y; judge by the true labels.

    The rule ``("truth", 0)`` attacks with the true labels (the paper's attacker). Each rule attacks
    the first ``n_samples`` samples eligible under its own labels; the verdict uses the true
    labels Y and the true S = S_g ∩ Y (:func:`judge`).

    Returns:
        ``(summary, per_sample)``: per rule, ``attacked``, ``believed_success`` (success under
        the attacker's labels), ``truly_eligible`` (share of attacked samples eligible under the
        truth), and over the truly eligible ``success_rate``, ``imperceptible_rate`` and mean
        ``delta_precision_at_k``; ``imperceptible_yield`` (share of all attacked samples that
        end as true imperceptible successes); ``label_errors`` (mean |Ŷ Δ Y| of attacked samples).
    """
    test = load_dataset(profile, profile.dataset.eval_split)
    scores, truth = predict(model, test, device=device)
    chosen = torch.zeros(truth.shape[1])
    chosen[list(profile.selection.global_classes)] = 1.0
    rows, samples = [], []
    for rule, value in rules:
        believed = truth if rule == "truth" else pseudo_labels(scores, rule, value)
        name = "true labels" if rule == "truth" else (f"top-{int(value)}" if rule == "top"
                                                     else f"p ≥ {value:g}")
        selection = GlobalSelection(profile.selection.global_classes)
        if not bool(selection.select(scores, believed, profile.attack.k).eligible.any()):
            rows.append({"attacker_labels": name, "attacked": 0})  # nothing the attacker can attack
            continue
        data = LabelledImages(test.images, believed, f"{test.checksum}-{rule}-{value:g}", test.classes)
        run_ = attack_victim(profile, model, method, dataset=data, n_samples=n_samples, device=device)
        records = run_.records
        ids = torch.tensor(records["sample"].tolist())
        t = experiments.records_tensors(records, torch.float32)
        y = truth[ids]
        verdict = judge(t["clean_scores"], t["adv_scores"], y, y * chosen, int(records["k"].iloc[0]))
        summary = verdict_summary(verdict, ["delta_precision_at_k"])
        rows.append({"attacker_labels": name, "attacked": len(records),
                     "label_errors": float((believed[ids] != y).sum(1).float().mean()),
                     "believed_success": float(records["success"].mean()),
                     "truly_eligible": summary.pop("applicable"), **summary})
        samples.append(pd.DataFrame({"attacker_labels": name, "sample": ids.tolist(),
                                     **{key: v.tolist() for key, v in verdict.items()}}))
    return pd.DataFrame(rows), pd.concat(samples, ignore_index=True)


def quality_frame(
    victims: Mapping[str, tuple[nn.Module, float, Profile]],
    *,
    method: str = "tkmia",
    n_samples: int | None = None,
    device: str = "cpu",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """TkMIA against victims of increasing quality.

    Args:
        victims: ``name -> (model, test mAP, profile)``.

    Returns:
        ``(summary, per_sample)``: per victim ``map``, ``n`` (eligible samples attacked),
        ``success_rate``, ``imperceptible_rate``, mean ``delta_precision_at_k``, ``ready`` (share
        whose best unspecified true label outside the top-k sits at rank k+1 … k+|S|,
        :func:`ready_mask`), and the imperceptible rate among ready and among the other samples.
    """
    rows, samples = [], []
    for name, (model, victim_map, profile) in victims.items():
        records = attack_victim(profile, model, method, n_samples=n_samples, device=device).records
        t = experiments.records_tensors(records, torch.float32)
        ready = ready_mask(t["clean_scores"], t["labels"], t["specified"], int(records["k"].iloc[0]))
        imp = torch.tensor(records["imperceptible"].tolist())
        summary = group_summary(with_deltas(records), (), ["delta_precision_at_k"]).iloc[0]
        rows.append({"victim": name, "map": victim_map, "n": int(summary["n"]),
                     "success_rate": float(summary["success_rate"]),
                     "imperceptible_rate": float(summary["imperceptible_rate"]),
                     "delta_precision_at_k": float(summary["delta_precision_at_k"]),
                     "ready": float(ready.float().mean()),
                     "imperceptible_if_ready": _masked_mean(imp, ready),
                     "imperceptible_if_not": _masked_mean(imp, ~ready)})
        samples.append(pd.DataFrame({"victim": name, "map": victim_map, "ready": ready.tolist(),
                                     "imperceptible": imp.tolist()}))
    return pd.DataFrame(rows), pd.concat(samples, ignore_index=True)


#: ``name -> (model, test mAP, profile)``: victims as the chapters pass them around.
Victims = Mapping[str, tuple[nn.Module, float, Profile]]


def architecture_victims(
    profile: Profile | str,
    archs: Sequence[str] = tuple(ARCH_NAMES),
    *,
    train_images: int | None = None,
    epochs: int | None = None,
    device: str = "cpu",
) -> dict[str, tuple[nn.Module, float, Profile]]:
    """One victim per architecture under one training budget (cached): ``arch -> (model, test
    mAP, profile variant)``."""
    out = {}
    for arch in archs:
        variant = variant_profile(profile, arch=arch, train_images=train_images, epochs=epochs)
        model, meta = load_victim(variant, device=device, progress=False)
        out[arch] = (model, meta["eval"]["map"], variant)
    return out


def quality_victims(
    profile: Profile | str,
    epochs: Sequence[int],
    *,
    device: str = "cpu",
) -> dict[str, tuple[nn.Module, float, Profile]]:
    """The profile's victim after each of ``epochs`` epochs of its one training run (weights kept
    by :func:`tkmia.victims.load_snapshot`; the last epoch is the profile's victim itself):
    ``"epoch e" -> (model, test mAP, profile)``."""
    base = profile if isinstance(profile, Profile) else load_profile(profile)
    out = {}
    for e in sorted({int(e) for e in epochs}):
        model, meta = load_snapshot(base, e, device=device)
        out[f"epoch {e}"] = (model, meta["eval"]["map"], base)
    return out


def architecture_runs(
    victims: Victims, methods: Sequence[str] = ("tkmia", "tkml_ap_u"), *, n_samples: int | None = None,
    device: str = "cpu",
) -> dict[tuple[str, str], experiments.Run]:
    """Each method white-box on each victim, every attacked image kept (for
    :func:`transfer_frame`): ``(method, name) -> Run``."""
    return {(method, name): attack_victim(variant, model, method, n_samples=n_samples,
                                          save_images=n_samples or variant.attack.n_samples, device=device)
            for method in methods for name, (model, _, variant) in victims.items()}


def victim_table(victims: Victims) -> pd.DataFrame:
    """Name, trainable parameters and test mAP of each victim (names from :data:`ARCH_NAMES`)."""
    return pd.DataFrame([{"victim": ARCH_NAMES.get(name, name),
                          "parameters": sum(p.numel() for p in model.parameters()),
                          "test mAP": victim_map} for name, (model, victim_map, _) in victims.items()])


def transfer_table(frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`transfer_frame` with the book's method and victim names, columns in reading order."""
    from tkmia.plots.experiments import method_label

    return frame.assign(method=frame["method"].map(method_label), source=frame["source"].map(ARCH_NAMES),
                        target=frame["target"].map(ARCH_NAMES))[
        ["method", "source", "target", "n", "applicable", "success_rate", "imperceptible_rate",
         *(f"delta_{m}" for m in WATCHED_MEASURES)]]


def cardinality_sweep(
    profile: Profile | str,
    mean_labels: Sequence[int],
    *,
    train_images: int | None = None,
    epochs: int | None = None,
    finetune: bool = True,
    n_samples: int | None = None,
    device: str = "cpu",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """For each MultiShapes variant of ``mean_labels``: a victim (cached; by default the profile's
    victim fine-tuned on the variant, see :func:`variant_profile`) and a TkMIA attack (run store),
    summarised by :func:`cardinality_frame`.

    Returns:
        ``(by_room, victims)``: the concatenated :func:`cardinality_frame` rows, and per variant
        ``mean_labels``, ``labels_per_image`` (measured on the test split), ``eligible`` (share of
        test images) and the victim's test ``map``.
    """
    frames, rows = [], []
    for m in mean_labels:
        variant = variant_profile(profile, train_images=train_images, epochs=epochs, mean_labels=int(m),
                                  finetune=finetune)
        model, meta = load_victim(variant, device=device, progress=False)
        test = load_dataset(variant, variant.dataset.eval_split)
        scores, labels = predict(model, test, device=device)
        k = variant.attack.k
        spec = GlobalSelection(variant.selection.global_classes).select(scores, labels, k)
        records = None
        if bool(spec.eligible.any()):
            records = attack_victim(variant, model, "tkmia", dataset=test, n_samples=n_samples,
                                    device=device).records
        frames.append(cardinality_frame(variant, scores, labels, records, int(m), k))
        rows.append({"mean_labels": int(m), "labels_per_image": float(labels.sum(1).mean()),
                     "eligible": float(spec.eligible.float().mean()), "map": meta["eval"]["map"]})
    return pd.concat(frames, ignore_index=True), pd.DataFrame(rows)


def _pct(value: float) -> str:
    from tkmia.plots.theme import format_percent

    return "–" if value != value else format_percent(value)


def _num(value: float, signed: bool = False) -> str:
    from tkmia.plots.theme import format_number, format_signed

    if value != value:
        return "–"
    return format_signed(value) if signed else format_number(value)


def _compare(a: float, b: float, tolerance: float = 0.05) -> str:
    """"higher", "lower" or "about the same" for ``a`` against ``b``."""
    if a != a or b != b:
        return "cannot be compared (no applicable image)"
    if a > b + tolerance:
        return "higher"
    if a < b - tolerance:
        return "lower"
    return "about the same"


def transfer_verdict(frame: pd.DataFrame) -> dict[str, str]:
    """The numbers and words the architectures chapter quotes, computed from :func:`transfer_frame`.

    Keys: ``white_success``, ``white_imperceptible`` (TkMIA's diagonal, per victim),
    ``white_imperceptible_mean``, ``transfer_success_<method>``, ``transfer_delta_<method>``,
    ``transfer_imperceptible_tkmia`` (off-diagonal means), ``transfers`` ("does" when the
    off-diagonal imperceptible rate is at least half the white-box one, else "does not"),
    ``vit_success``, ``cnn_success``, ``vit_white``, ``cnn_white``, ``vit_in``, ``cnn_in`` (the
    transformer against the mean of the convolutional victims) and ``vit_word`` (the aspects among
    these that differ by more than 5 points, or "behaves like the convolutional victims").
    """
    diag = frame[frame["source"] == frame["target"]]
    off = frame[frame["source"] != frame["target"]]
    tk_diag = diag[diag["method"] == "tkmia"].set_index("source")
    out = {
        "white_success": ", ".join(_pct(v) for v in tk_diag["success_rate"]),
        "white_imperceptible": ", ".join(_pct(v) for v in tk_diag["imperceptible_rate"]),
        "white_imperceptible_mean": _pct(tk_diag["imperceptible_rate"].mean()),
    }
    for method in frame["method"].unique():
        part = off[off["method"] == method]
        out[f"transfer_success_{method}"] = _pct(part["success_rate"].mean())
        out[f"transfer_delta_{method}"] = _num(part["delta_precision_at_k"].mean(), signed=True)
    tk_off = off[off["method"] == "tkmia"]
    imp_off, imp_diag = tk_off["imperceptible_rate"].mean(), tk_diag["imperceptible_rate"].mean()
    out["transfer_imperceptible_tkmia"] = _pct(imp_off)
    out["transfers"] = "does" if imp_diag > 0 and imp_off >= 0.5 * imp_diag else "does not"
    cnns = [a for a in tk_diag.index if a != "small_vit"]
    vit_success = tk_diag["success_rate"].get("small_vit", float("nan"))
    cnn_success = tk_diag.loc[cnns, "success_rate"].mean()
    vit_white = tk_diag["imperceptible_rate"].get("small_vit", float("nan"))
    cnn_white = tk_diag.loc[cnns, "imperceptible_rate"].mean()
    into_vit = tk_off[(tk_off["target"] == "small_vit")]["success_rate"].mean()
    between_cnn = tk_off[tk_off["source"].isin(cnns) & tk_off["target"].isin(cnns)]["success_rate"].mean()
    out.update(vit_success=_pct(vit_success), cnn_success=_pct(cnn_success), vit_white=_pct(vit_white),
               cnn_white=_pct(cnn_white), vit_in=_pct(into_vit), cnn_in=_pct(between_cnn))
    versus = {"higher": "higher than", "lower": "lower than"}
    differences = []
    on_cnn, between = "on the convolutional victims", "between the convolutional victims"
    for what, vit, cnn, where in (("white-box success", vit_success, cnn_success, on_cnn),
                                  ("white-box imperceptible success", vit_white, cnn_white, on_cnn),
                                  ("transfer into it", into_vit, between_cnn, between)):
        word = _compare(vit, cnn)
        if word != "about the same":
            differences.append(f"{what} {versus.get(word, word + ', against')} {where}")
    out["vit_word"] = (f"behaves differently ({'; '.join(differences)})" if differences
                       else "behaves like the convolutional victims")
    return out


def cardinality_verdict(frame: pd.DataFrame) -> dict[str, str]:
    """Numbers and words of the cardinality chapter, from :func:`cardinality_sweep`'s frame."""
    eligible_rooms = frame[frame["eligible"] > 0]["room"]
    attacked = frame[frame["attacked"] > 0].groupby("room").apply(
        lambda g: pd.Series({
            "imperceptible_rate": (g["imperceptible_rate"] * g["attacked"]).sum() / g["attacked"].sum(),
            "pert_l2_255": g["pert_l2_255"].mean()}), include_groups=False)
    low = frame[frame["mean_labels"] == frame["mean_labels"].min()]
    low_share = (low["eligible"] * low["images"]).sum() / max(int(low["images"].sum()), 1)
    out = {"min_room": _num(eligible_rooms.min()) if len(eligible_rooms) else "any room (none eligible)",
           "low_eligible": _pct(low_share)}
    if attacked.empty:
        out.update(small_room="–", large_room="–", imp_small="–", imp_large="–", pert_small="–",
                   pert_large="–", trend="cannot be judged (nothing attacked)",
                   more_room="nothing was attacked, so this build cannot say more")
        return out
    small, large = attacked.index.min(), attacked.index.max()
    a, b = attacked.loc[small, "imperceptible_rate"], attacked.loc[large, "imperceptible_rate"]
    trend = {"higher": "rises", "lower": "falls", "about the same": "does not change much"}[_compare(b, a)]
    out.update(small_room=_num(small), large_room=_num(large), imp_small=_pct(a), imp_large=_pct(b),
               pert_small=_num(attacked.loc[small, "pert_l2_255"]),
               pert_large=_num(attacked.loc[large, "pert_l2_255"]), trend=trend)
    out["more_room"] = ("more spare true labels than the rule asks for make imperceptible success more likely"
                        if trend == "rises" else
                        "more spare true labels than the rule asks for do not make it more likely")
    return out


def no_truth_verdict(summary: pd.DataFrame, victim_map: float) -> dict[str, str]:
    """Numbers and words of the no-ground-truth chapter, from :func:`no_truth_frame`'s summary."""
    truth = summary[summary["attacker_labels"] == "true labels"].iloc[0]
    others = summary[summary["attacker_labels"] != "true labels"]
    best = others.sort_values("imperceptible_yield", ascending=False).iloc[0]
    base = truth["imperceptible_yield"]
    retained = best["imperceptible_yield"] / base if base > 0 else float("nan")
    if best["imperceptible_yield"] != best["imperceptible_yield"]:
        word = "no predicted-label attacker had a truly eligible image to attack"
    elif retained != retained:
        word = "no comparison: nothing was imperceptible with Y"
    else:
        word = ("most of it remains" if retained >= 0.8 else "part of it remains" if retained >= 0.4
                else "little of it remains")
    return {"truth_imp": _pct(truth["imperceptible_rate"]), "best_rule": str(best["attacker_labels"]),
            "best_imp": _pct(best["imperceptible_rate"]), "best_success": _pct(best["success_rate"]),
            "truth_yield": _pct(base), "best_yield": _pct(best["imperceptible_yield"]),
            "best_eligible": _pct(best["truly_eligible"]),
            "retained": _pct(retained), "word": word, "map": _num(victim_map)}


def quality_verdict(summary: pd.DataFrame, per_sample: pd.DataFrame) -> dict[str, str]:
    """Numbers and words of the victim quality chapter, from :func:`quality_frame`."""
    data = summary.sort_values("map")
    low, high = data.iloc[0], data.iloc[-1]
    trend = {"higher": "rises", "lower": "falls", "about the same": "does not change much"}[
        _compare(high["imperceptible_rate"], low["imperceptible_rate"], 0.1)]
    ready = per_sample["ready"].astype(bool)
    imp = per_sample["imperceptible"].astype(bool)
    if_ready = float(imp[ready].mean()) if ready.any() else float("nan")
    if_not = float(imp[~ready].mean()) if (~ready).any() else float("nan")
    mechanism = {"higher": "carries the imperceptible attacks", "lower": "does not explain them",
                 "about the same": "makes little difference here"}.get(_compare(if_ready, if_not, 0.1),
                                                                       "cannot be judged here")
    if trend == "rises":
        claim = "should be expected to be lower than on MultiShapes"
    elif high["map"] - low["map"] < 0.2:
        claim = (f"cannot be read from this narrow range of victims (mAP {_num(low['map'])} to "
                 f"{_num(high['map'])}); what decides it is how often a true label waits just below "
                 "the top-k, which is what to measure on them")
    else:
        claim = "need not be lower than on MultiShapes, by this measurement"
    return {"map_low": _num(low["map"]), "map_high": _num(high["map"]),
            "imp_low": _pct(low["imperceptible_rate"]), "imp_high": _pct(high["imperceptible_rate"]),
            "ready_low": _pct(low["ready"]), "ready_high": _pct(high["ready"]), "trend": trend,
            "imp_ready": _pct(if_ready), "imp_not": _pct(if_not), "mechanism": mechanism, "claim": claim}
