"""The photos victims and their cards, and the logic of the chapter "Real photographs".

:func:`photos_profiles` names the three victims of the chapter "Real photographs": the profile's
(pretrained, novel objects), the same on novel scenes, and the same architecture from scratch;
:func:`load_photos_victims` loads them (the victim cache trains a missing one) and
:func:`victim_card` measures each (test mAP, per-class AP and P@k, computed from its scores).

The chapter's tables are pure functions of run records: :func:`claim_table` and
:func:`claim_verdicts` (the paper's main claim per setting, by :func:`tkmia.report.claim_verdict`),
:func:`mechanism_frame` and :func:`mechanism_summary` (where the victim ranks the true label that
could take a freed place, :func:`tkmia.selection.spare_rank`, against whether the measures stayed
unchanged).

Example:
    >>> model, meta = load_victim("photos")  # doctest: +SKIP
    >>> card = victim_card(model, load_dataset(load_profile("photos"), "test"), k=3)  # doctest: +SKIP
    >>> card["map"], card["per_class"].head()  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from tkmia import experiments, report
from tkmia.data import load_dataset
from tkmia.metrics import WATCHED_MEASURES, topk_mask
from tkmia.profiles import Profile, load_profile
from tkmia.selection import spare_rank
from tkmia.training import class_average_precision, predict, score_summary
from tkmia.victims import eval_scores, load_victim

#: The book's names of the photos victims (:func:`photos_profiles`).
VICTIMS = ("novel objects", "novel scenes", "from scratch")

#: The chapter's name of the MultiShapes setting, compared beside the photos victims.
SHAPES = "MultiShapes"

#: Short keys of the settings, for glue names (``photos_claim_objects_verdict`` ...).
SETTING_KEYS = {SHAPES: "shapes", "novel objects": "objects", "novel scenes": "scenes",
                "from scratch": "scratch"}

#: The test mAP aimed at for the novel-objects victim when the setting was designed.
AIM_MAP = 0.65

#: The order of magnitude of test mAP commonly quoted for ImageNet-pretrained ResNet-101
#: victims on NUS-WIDE; not taken from a source in the book's bibliography.
QUOTED_REAL_MAP = 0.6

#: What became of an attacked image (:func:`mechanism_frame`), in reading order.
OUTCOMES = ("imperceptible success", "success, measures moved", "failed")

#: Columns of :func:`claim_table` besides setting and method, in order.
CLAIM_COLUMNS = ("n", "success_rate", "imperceptible_rate", "pert_l2_255",
                 *(f"delta_{m}" for m in WATCHED_MEASURES))


def photos_profiles(
    profile: Profile | str = "photos", scratch_epochs: int | None = None
) -> dict[str, Profile]:
    """The three photos victims' profiles, by their book names (:data:`VICTIMS`).

    Args:
        profile: a photos profile (``dataset.name`` photos) or its name.
        scratch_epochs: training epochs of the from-scratch ablation (None: the profile's).

    Returns:
        The three profiles by name: ``"novel objects"`` (setting novel_objects), ``"novel scenes"``
        (setting novel_scenes) and ``"from scratch"`` (novel objects, weights None, nothing
        frozen); each victim has its own cache entry.
    """
    base = profile if isinstance(profile, Profile) else load_profile(profile)
    if base.dataset.name != "photos":
        raise ValueError(f"profile {base.name!r} has dataset {base.dataset.name!r}; photos_profiles needs a "
                         "photos profile (e.g. 'photos')")
    scratch = {"model": {"weights": None, "frozen_blocks": 0}}
    if scratch_epochs is not None:
        if not isinstance(scratch_epochs, int) or isinstance(scratch_epochs, bool) or scratch_epochs < 1:
            raise ValueError(f"scratch_epochs={scratch_epochs!r}; expected a positive int or None")
        scratch["train"] = {"epochs": scratch_epochs}
    objects = base.replace(dataset={"setting": "novel_objects"})
    return {"novel objects": objects,
            "novel scenes": base.replace(dataset={"setting": "novel_scenes"}),
            "from scratch": objects.replace(**scratch)}


def victim_card(
    model: nn.Module,
    dataset: Dataset,
    k: int = 3,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    *,
    scored: tuple[Tensor, Tensor] | None = None,
) -> dict[str, Any]:
    """Test mAP, mean P@k and per-class AP of ``model`` on ``dataset`` (a photos split).

    Args:
        model: maps images (N, 3, S, S) in [0, 1] to scores (N, C).
        dataset: yields ``(image, multi-hot labels)``; its ``classes`` (C names) label the rows
            (``class 0``, ``class 1``, ... when it has none).
        k: the P@k cut-off (the profile's ``attack.k``).
        batch_size, device: as in :func:`tkmia.training.predict`.
        scored: ``(scores, labels)`` (N, C) each, the model's on ``dataset`` as
            :func:`tkmia.training.predict` gives them (e.g. :func:`tkmia.victims.eval_scores`,
            from the victim's training); None: computed here.

    Returns:
        ``{"map", "precision_at_k", "k", "n_images", "per_class"}``; ``per_class`` is a pandas
        DataFrame with one row per class: ``class``, ``AP`` (NaN without a positive image),
        ``positives`` (images holding the class) and ``P@k share`` (how often the class is in the
        top-k of an image holding it). ``map`` is the mean of the defined APs.
    """
    import pandas as pd

    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k={k!r}; expected a positive int (the profile's attack.k)")
    if len(dataset) == 0:
        raise ValueError("dataset is empty; pass a split with at least one image")
    if scored is None:
        scores, labels = predict(model, dataset, batch_size, device)
    else:
        scores, labels = scored
        if scores.shape[0] != len(dataset) or scores.shape != labels.shape:
            raise ValueError(f"scored holds scores {tuple(scores.shape)} and labels {tuple(labels.shape)}; "
                             f"expected two (N, C) tensors with N = len(dataset) = {len(dataset)}")
    n_classes = scores.shape[1]
    if k > n_classes:
        raise ValueError(f"k={k!r}; expected <= the number of classes ({n_classes})")
    classes = list(getattr(dataset, "classes", [f"class {c}" for c in range(n_classes)]))
    if len(classes) != n_classes:
        raise ValueError(f"dataset.classes has {len(classes)} names, the model gives {n_classes} scores")
    labels = labels.float()
    ap = class_average_precision(scores, labels)
    top = topk_mask(scores, k).float()
    positives = labels.sum(0)
    hit = (top * labels).sum(0) / positives.clamp(min=1)
    per_class = pd.DataFrame({
        "class": classes,
        "AP": ap.tolist(),
        "positives": positives.long().tolist(),
        f"P@{k} share": [float(h) if p > 0 else float("nan") for h, p in zip(hit, positives)],
    })  # fmt: skip
    return {**score_summary(scores, labels, k), "per_class": per_class}


def _positive_int(name: str, value: Any, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name}={value!r}; expected a positive int{' or None' if allow_none else ''}")
    return int(value)


# ---------------------------------------------------------------------------------- the victims
def load_photos_victims(
    profile: Profile | str = "photos",
    *,
    scratch_epochs: int | None = None,
    data_root: str | None = None,
    device: str = "cpu",
) -> dict[str, tuple[nn.Module, dict[str, Any], Profile]]:
    """The three photos victims of :func:`photos_profiles`, from the victim cache (trained now
    when missing; each is trained once and shared by every chapter).

    Args:
        profile, scratch_epochs: as in :func:`photos_profiles`.
        data_root: the folder of the Debian files (None: the profile's ``dataset.root``).
        device: where the models are put.

    Returns:
        ``{name: (model in eval mode, metadata, profile)}`` in the order of :data:`VICTIMS`;
        ``metadata["eval"]["map"]`` is the test mAP, ``metadata["training_seconds"]`` the
        training time in seconds.
    """
    out = {}
    for name, variant in photos_profiles(profile, scratch_epochs).items():
        model, meta = load_victim(variant, data_root=data_root, device=device, progress=False)
        out[name] = (model, meta, variant)
    return out


def victim_cards(
    victims: Mapping[str, tuple[nn.Module, dict[str, Any], Profile]],
    *,
    data_root: str | None = None,
    device: str = "cpu",
) -> dict[str, dict[str, Any]]:
    """:func:`victim_card` of each victim of :func:`load_photos_victims` on its own setting's
    evaluation split, at its profile's ``attack.k``: ``name -> card`` (from the scores the
    victim's training computed on that split, when its cache entry holds them)."""
    cards = {}
    for name, (model, _, variant) in victims.items():
        test = load_dataset(variant, variant.dataset.eval_split, root=data_root)
        cards[name] = victim_card(model, test, k=variant.attack.k, device=device,
                                  scored=eval_scores(variant, test))
    return cards


def victims_frame(
    victims: Mapping[str, tuple[nn.Module, dict[str, Any], Profile]], cards: Mapping[str, dict[str, Any]]
) -> pd.DataFrame:
    """One row per victim: ``victim``, ``test split`` (novel objects / novel scenes), ``start``
    (ImageNet weights or random), ``frozen blocks``, ``epochs``, ``test images``, ``test mAP``,
    ``P@k`` (mean over the test images, k of the card) and ``training seconds`` (from the
    victim's metadata: the time it took to train, on the machine that trained it)."""
    missing = [name for name in victims if name not in cards]
    if missing:
        raise ValueError(f"cards lack the victims {missing}; pass victim_cards(victims)")
    rows = []
    for name, (_, meta, variant) in victims.items():
        card = cards[name]
        rows.append({
            "victim": name,
            "test split": (variant.dataset.setting or "novel_objects").replace("_", " "),
            "start": "ImageNet" if variant.model.weights else "random",
            "frozen blocks": int(variant.model.frozen_blocks),
            "epochs": int(variant.train.epochs),
            "test images": int(card["n_images"]),
            "test mAP": float(card["map"]),
            f"P@{card['k']}": float(card["precision_at_k"]),
            "training seconds": float(meta.get("training_seconds", float("nan"))),
        })
    return pd.DataFrame(rows)


def per_class_frame(cards: Mapping[str, dict[str, Any]]) -> pd.DataFrame:
    """The per-class rows of every card, tidy: ``victim``, ``class``, ``AP``, ``positives`` and
    ``P@k share`` (see :func:`victim_card`), victims in the order of ``cards``."""
    if not cards:
        raise ValueError("cards is empty; pass victim_cards(victims)")
    frames = []
    for name, card in cards.items():
        part = card["per_class"].rename(columns={f"P@{card['k']} share": "P@k share"})
        frames.append(part.assign(victim=name)[["victim", "class", "AP", "positives", "P@k share"]])
    return pd.concat(frames, ignore_index=True)


def per_class_table(frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`per_class_frame` wide: one row per class (in label order), one AP column per victim."""
    _require(frame, ("victim", "class", "AP"), "per_class_table")
    order = list(dict.fromkeys(frame["class"]))
    wide = frame.pivot(index="class", columns="victim", values="AP").reindex(order)
    wide = wide[list(dict.fromkeys(frame["victim"]))]
    wide.columns = [f"AP ({v})" for v in wide.columns]
    return wide.reset_index()


def victims_prose(
    frame: pd.DataFrame,
    shapes_map: float | None = None,
    aim: float = AIM_MAP,
    real_map: float = QUOTED_REAL_MAP,
) -> dict[str, str]:
    """The numbers and words the chapter quotes about its victims, from :func:`victims_frame`.

    Keys: ``<key>_map`` and ``<key>_p`` (P@k) for each victim (keys of :data:`SETTING_KEYS`),
    ``<key>_seconds``, ``pretraining_gain`` (novel objects minus from scratch, test mAP),
    ``pretraining_word`` ("raises", "lowers" or, within 0.05, "barely changes"), ``aim``,
    ``aim_word`` ("reaches" / "stays below"), ``scenes_gain`` (novel scenes minus novel
    objects), ``shapes_map`` (MultiShapes' victim, "–" if None), ``real_map`` and ``closer``
    (which of the novel-objects and MultiShapes victims is closer to ``real_map`` by test mAP).
    """
    from tkmia.plots.theme import format_number, format_signed

    _require(frame, ("victim", "test mAP", "training seconds"), "victims_prose")
    rows = frame.set_index("victim")
    p_column = next(c for c in frame.columns if c.startswith("P@"))
    needed = [v for v in VICTIMS if v not in rows.index]
    if needed:
        raise ValueError(f"victims_prose needs the victims {list(VICTIMS)}; missing {needed}")
    out: dict[str, str] = {}
    for name in VICTIMS:
        key = SETTING_KEYS[name]
        out[f"{key}_map"] = format_number(rows.loc[name, "test mAP"])
        out[f"{key}_p"] = format_number(rows.loc[name, p_column])
        out[f"{key}_seconds"] = format_number(rows.loc[name, "training seconds"])
    gain = rows.loc["novel objects", "test mAP"] - rows.loc["from scratch", "test mAP"]
    out["pretraining_gain"] = format_signed(gain)
    out["pretraining_word"] = ("raises" if gain > 0.05 else "lowers" if gain < -0.05
                               else "barely changes")
    objects_map = rows.loc["novel objects", "test mAP"]
    out["aim"] = format_number(aim)
    out["aim_word"] = "reaches" if objects_map >= aim else "stays below"
    out["scenes_gain"] = format_signed(rows.loc["novel scenes", "test mAP"] - objects_map)
    out["shapes_map"] = "–" if shapes_map is None else format_number(shapes_map)
    out["real_map"] = format_number(real_map)
    if shapes_map is None:
        out["closer"] = "cannot be said (no MultiShapes victim given)"
    elif abs(objects_map - real_map) <= abs(shapes_map - real_map):
        out["closer"] = "the novel-objects victim"
    else:
        out["closer"] = "the MultiShapes victim"
    return out


# ---------------------------------------------------------------------------------- the runs
def victim_runs(
    profile: Profile,
    model: nn.Module,
    methods: Sequence[str] = ("tkmia", "tkml_ap_u"),
    *,
    n_samples: int | None = None,
    save_images: int = 0,
    data_root: str | None = None,
    device: str = "cpu",
) -> pd.DataFrame:
    """Each method on ``model`` (global scheme, the profile's k, S_g and attack settings), on the
    first ``n_samples`` eligible images of the profile's evaluation split, through the run store
    (:func:`tkmia.book.chapters.victim_questions.attack_victim`): all records in one table.

    For a victim that is not the profile's own (the novel-scenes victim is a variant of the
    photos profile): the runs are keyed by the model's weights and the dataset's contents.
    """
    from tkmia.book.chapters.victim_questions import attack_victim

    n_samples = _positive_int("n_samples", n_samples, allow_none=True)
    if not methods:
        raise ValueError("methods is empty; name at least one attack, e.g. ('tkmia',)")
    test = load_dataset(profile, profile.dataset.eval_split, root=data_root)
    frames = [attack_victim(profile, model, method, dataset=test, n_samples=n_samples,
                            save_images=save_images, device=device).records for method in methods]
    return pd.concat(frames, ignore_index=True)


def reference_records(
    exact: pd.DataFrame,
    profile: str,
    *,
    n_samples: int | None = None,
    data_root: str | None = None,
    device: str = "cpu",
) -> pd.DataFrame:
    """TkMIA's exact and reference parametrisations on the same images (global scheme), as
    :func:`tkmia.book.chapters.questions.comparison_table` and
    :func:`tkmia.book.chapters.questions.parametrisation_verdict`
    take them (a ``variant`` column).

    Args:
        exact: records of TkMIA's default (exact) global run on ``profile`` (e.g. the grid's); its
            first ``n_samples`` samples are those the reference run attacks (both take the first
            eligible images of the same plan), so no exact run is repeated.
        profile: the profile name (the reference run goes through the run store).
        n_samples: eligible images of the reference run (None: all of ``exact``).
    """
    _require(exact, ("method", "scheme", "sample", "k"), "exact")
    exact = exact[(exact["method"] == "tkmia") & (exact["scheme"] == "global")]
    if exact.empty:
        raise ValueError("exact holds no TkMIA global record; pass the records of TkMIA's global run")
    n_samples = _positive_int("n_samples", n_samples, allow_none=True) or len(exact)
    config = experiments.ExperimentConfig(
        profile=profile, method="tkmia", scheme="global", k=int(exact["k"].iloc[0]),
        n_samples=n_samples, options={"parametrisation": "reference"}, data_root=data_root,
        device=device, save_images=0)
    reference = experiments.run(config, progress=False).records
    shared = exact[exact["sample"].isin(set(reference["sample"]))]
    return pd.concat([shared.assign(variant="exact"), reference.assign(variant="reference")],
                     ignore_index=True)


# ---------------------------------------------------------------------------------- the claim
def _require(frame: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in frame]
    if missing:
        raise ValueError(f"{what} needs the columns {missing}; got {list(frame.columns)}")


def claim_table(
    tables: Mapping[str, pd.DataFrame], methods: Sequence[str] = ("tkmia", "tkml_ap_u")
) -> pd.DataFrame:
    """The main claim side by side: per setting (the keys of ``tables``, in order) and method, the
    columns :data:`CLAIM_COLUMNS` of its :func:`tkmia.report.summarize` table.

    Args:
        tables: ``setting -> summarize table`` of one scheme and one k (one row per method).
        methods: the methods shown, TkMIA first.

    Returns:
        Columns ``setting``, ``method`` and :data:`CLAIM_COLUMNS`: success and imperceptible rates
        over the n eligible images attacked, mean Pert over successful ones (×255 of [0, 1] pixel
        units), mean Δ (adversarial − clean) of P@k, mAP@k and NDCG@k.
    """
    if not tables:
        raise ValueError("tables is empty; pass setting -> report.summarize(records)")
    rows = []
    for setting, table in tables.items():
        _require(table, ("method", *CLAIM_COLUMNS), f"the table of {setting!r}")
        for column in ("scheme", "k"):
            if column in table and table[column].nunique() > 1:
                raise ValueError(f"the table of {setting!r} holds several {column} values "
                                 f"{sorted(table[column].unique())}; pass one {column}'s rows")
        by_method = table.set_index("method")
        if by_method.index.duplicated().any():
            raise ValueError(f"the table of {setting!r} has several rows per method; summarize one setting")
        for method in methods:
            if method not in by_method.index:
                raise ValueError(f"the table of {setting!r} has no row for {method!r} "
                                 f"(it has {list(by_method.index)})")
            rows.append({"setting": setting, "method": method,
                         **{c: by_method.loc[method, c] for c in CLAIM_COLUMNS}})
    return pd.DataFrame(rows, columns=["setting", "method", *CLAIM_COLUMNS])


def claim_verdicts(claim: pd.DataFrame, baseline: str = "tkml_ap_u",
                   majority: float = report.CLAIM_MAJORITY) -> pd.DataFrame:
    """:func:`tkmia.report.claim_verdict` (the book's one rule for the claim) per setting of
    :func:`claim_table`, against ``baseline``.

    Returns:
        Per setting: ``n``, TkMIA's ``success_rate`` and ``imperceptible_rate``, the baseline's
        ``baseline_imperceptible``, ``tkmia_worst`` (TkMIA's largest mean |Δ|), ``baseline_least``
        (the baseline's smallest mean |Δ|) and ``verdict``.
    """
    _require(claim, ("setting", "method", *CLAIM_COLUMNS), "claim_verdicts")
    deltas = [f"delta_{m}" for m in WATCHED_MEASURES]
    rows = []
    for setting, group in claim.groupby("setting", sort=False):
        by = group.set_index("method")
        for method in ("tkmia", baseline):
            if method not in by.index:
                raise ValueError(f"setting {setting!r} has no row for {method!r}")
        tk, base = by.loc["tkmia"], by.loc[baseline]
        worst = float(tk[deltas].abs().max())
        least = float(base[deltas].abs().min())
        rows.append({"setting": setting, "n": int(tk["n"]), "success_rate": float(tk["success_rate"]),
                     "imperceptible_rate": float(tk["imperceptible_rate"]),
                     "baseline_imperceptible": float(base["imperceptible_rate"]),
                     "tkmia_worst": worst, "baseline_least": least,
                     "verdict": report.claim_verdict(worst, least, float(tk["success_rate"]),
                                              float(tk["imperceptible_rate"]), majority)})
    return pd.DataFrame(rows)


def claim_prose(verdicts: pd.DataFrame) -> dict[str, str]:
    """Texts of :func:`claim_verdicts` for the chapter's prose: per setting (keys of
    :data:`SETTING_KEYS`) ``<key>_verdict``, ``<key>_n``, ``<key>_success``, ``<key>_imp``,
    ``<key>_base_imp``, ``<key>_worst`` and ``<key>_least``; and ``holds_where``: the settings
    where the claim holds, or "none of the three settings"."""
    from tkmia.plots.theme import distinct_numbers, format_percent

    _require(verdicts, ("setting", "verdict", "imperceptible_rate", "baseline_imperceptible",
                        "tkmia_worst", "baseline_least", "n", "success_rate"), "claim_prose")
    out: dict[str, str] = {}
    for _, row in verdicts.iterrows():
        key = SETTING_KEYS.get(row["setting"], str(row["setting"]).replace(" ", "_"))
        worst, least = distinct_numbers([row["tkmia_worst"], row["baseline_least"]])
        out.update({f"{key}_verdict": row["verdict"], f"{key}_n": f"{int(row['n']):d}",
                    f"{key}_success": format_percent(row["success_rate"]),
                    f"{key}_imp": format_percent(row["imperceptible_rate"]),
                    f"{key}_base_imp": format_percent(row["baseline_imperceptible"]),
                    f"{key}_worst": worst, f"{key}_least": least})
    holds = list(verdicts.loc[verdicts["verdict"] == "holds", "setting"])
    out["holds_where"] = " and ".join(holds) if holds else "none of the settings"
    return out


# ---------------------------------------------------------------------------------- the mechanism
def mechanism_frame(records: Mapping[str, pd.DataFrame], method: str = "tkmia") -> pd.DataFrame:
    """Per eligible image attacked by ``method``, where its spare true label was and what came of it.

    Args:
        records: ``setting -> run records`` (global scheme; rows of other methods are ignored).
        method: the attack whose images are read.

    Returns:
        One row per eligible image: ``setting``, ``sample``, ``k``, ``specified`` (|S|),
        ``spare_rank`` (:func:`tkmia.selection.spare_rank`), ``below`` (spare_rank − k: 1 = just
        below the top-k), ``ready`` (below ≤ |S|, as
        :func:`tkmia.book.chapters.victim_questions.ready_mask`) and ``outcome`` (one of
        :data:`OUTCOMES`).
    """
    frames = []
    for setting, data in records.items():
        _require(data, ("method", "eligible", "success", "imperceptible", "clean_scores", "labels",
                        "specified", "k", "sample"), f"the records of {setting!r}")
        data = data[(data["method"] == method) & data["eligible"].astype(bool)].reset_index(drop=True)
        if data.empty:
            raise ValueError(f"the records of {setting!r} hold no eligible image attacked by {method!r}")
        if data["k"].nunique() != 1:
            raise ValueError(f"the records of {setting!r} mix k values {sorted(data['k'].unique())}")
        k = int(data["k"].iloc[0])
        t = experiments.records_tensors(data, torch.float32)
        rank = spare_rank(t["clean_scores"], t["labels"], t["specified"], k).numpy()
        n_specified = t["specified"].sum(1).numpy().astype(int)
        success = data["success"].astype(bool).to_numpy()
        imperceptible = data["imperceptible"].astype(bool).to_numpy()
        outcome = np.where(imperceptible, OUTCOMES[0], np.where(success, OUTCOMES[1], OUTCOMES[2]))
        frames.append(pd.DataFrame({
            "setting": setting, "sample": data["sample"].astype(int), "k": k, "specified": n_specified,
            "spare_rank": rank, "below": rank - k, "ready": (rank - k) <= n_specified, "outcome": outcome,
        }))
    if not frames:
        raise ValueError("records is empty; pass setting -> run records")
    return pd.concat(frames, ignore_index=True)


def position_label(below: float, cap: int = 4) -> str:
    """The table's bucket of a spare label ``below`` places under the top-k: "1", "2", ... up to
    "≥ cap", or "none" (NaN)."""
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 2:
        raise ValueError(f"cap={cap!r}; expected an int >= 2")
    if below != below:
        return "none"
    if below < 1 or float(below) != int(below):
        raise ValueError(f"below={below!r}; expected a whole number of places >= 1 (or NaN)")
    return f"≥ {cap}" if below >= cap else f"{int(below)}"


def mechanism_table(frame: pd.DataFrame, cap: int = 4) -> pd.DataFrame:
    """:func:`mechanism_frame` per setting and position of the spare label (:func:`position_label`):
    ``images``, ``share`` (of the setting's images) and the share of each outcome among them
    (``imperceptible``, ``moved``: success with a measure changed, ``failed``)."""
    _require(frame, ("setting", "below", "outcome"), "mechanism_table")
    data = frame.assign(position=[position_label(b, cap) for b in frame["below"]])
    order = [f"{i}" for i in range(1, cap)] + [f"≥ {cap}", "none"]
    rows = []
    for setting, group in data.groupby("setting", sort=False):
        for position in order:
            part = group[group["position"] == position]
            if part.empty:
                continue
            rows.append({"setting": setting, "places below top-k": position, "images": len(part),
                         "share": len(part) / len(group),
                         "imperceptible": float((part["outcome"] == OUTCOMES[0]).mean()),
                         "moved": float((part["outcome"] == OUTCOMES[1]).mean()),
                         "failed": float((part["outcome"] == OUTCOMES[2]).mean())})
    return pd.DataFrame(rows)


def _masked_share(values: pd.Series, mask: pd.Series) -> float:
    return float(values[mask].mean()) if bool(mask.any()) else float("nan")


def mechanism_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per setting of :func:`mechanism_frame`: ``n``, ``ready`` (share with the spare label at
    rank k+1 … k+|S|), ``just_below`` (share at rank k+1), ``median_below``, the imperceptible
    rate overall, among ready images (``imperceptible_if_ready``) and among the others
    (``imperceptible_if_not``; NaN where a group is empty)."""
    _require(frame, ("setting", "below", "ready", "outcome"), "mechanism_summary")
    rows = []
    for setting, group in frame.groupby("setting", sort=False):
        imp = group["outcome"] == OUTCOMES[0]
        ready = group["ready"].astype(bool)
        rows.append({"setting": setting, "n": len(group), "ready": float(ready.mean()),
                     "just_below": float((group["below"] == 1).mean()),
                     "median_below": float(group["below"].median()),
                     "imperceptible": float(imp.mean()),
                     "imperceptible_if_ready": _masked_share(imp, ready),
                     "imperceptible_if_not": _masked_share(imp, ~ready)})
    return pd.DataFrame(rows)


def mechanism_prose(summary: pd.DataFrame, tolerance: float = 0.1) -> dict[str, str]:
    """Texts for the chapter's prose from :func:`mechanism_summary`: per setting (keys of
    :data:`SETTING_KEYS`) ``<key>_ready``, ``<key>_just``, ``<key>_imp_ready``, ``<key>_imp_not``;
    and ``word``: in which settings images with a ready spare label ended as imperceptible
    successes more often, by more than ``tolerance``, than the others ("in every setting",
    "in <settings> only", "in no setting"; a setting with an empty group is left out and named).
    Settings are compared one by one, not pooled: pooling mixes settings whose shares of ready
    images differ."""
    from tkmia.plots.theme import format_percent

    _require(summary, ("setting", "ready", "just_below", "imperceptible_if_ready", "imperceptible_if_not"),
             "mechanism_prose")
    if summary.empty:
        raise ValueError("summary is empty; pass mechanism_summary(mechanism_frame(...))")
    out: dict[str, str] = {}
    higher, judged, unjudged = [], [], []
    for _, row in summary.iterrows():
        setting = str(row["setting"])
        key = SETTING_KEYS.get(setting, setting.replace(" ", "_"))
        a, b = float(row["imperceptible_if_ready"]), float(row["imperceptible_if_not"])
        out[f"{key}_ready"] = format_percent(row["ready"])
        out[f"{key}_just"] = format_percent(row["just_below"])
        out[f"{key}_imp_ready"] = format_percent(a)
        out[f"{key}_imp_not"] = format_percent(b)
        if a != a or b != b:
            unjudged.append(setting)
            continue
        judged.append(setting)
        if a > b + tolerance:
            higher.append(setting)
    if not judged:
        word = "in no setting that can be judged (each lacks ready or other images)"
    elif len(higher) == len(judged):
        word = ("in every setting" if not unjudged
                else f"in every setting that can be judged ({', '.join(judged)})")
    elif higher:
        word = f"in {' and '.join(higher)} only"
    else:
        word = "in no setting"
    out["word"] = word + (f"; {', '.join(unjudged)} cannot be judged" if unjudged and judged else "")
    return out


# ---------------------------------------------------------------------------------- the data
def data_prose(sources: pd.DataFrame) -> dict[str, str]:
    """Counts the chapter quotes about the data, from :func:`tkmia.data.photos.source_table`:
    ``classes``, ``train_cutouts``, ``test_cutouts``, ``train_objects``, ``test_objects``,
    ``fewest_test_objects`` (the smallest number of test objects of a class, with the classes
    that have it),
    ``train_backgrounds`` and ``test_backgrounds``."""
    _require(sources, ("class", "train cut-outs", "test cut-outs", "train objects", "test objects"),
             "data_prose")
    is_bg = sources["class"].astype(str).str.startswith("background")
    objects, backgrounds = sources[~is_bg], sources[is_bg]
    if objects.empty:
        raise ValueError("sources holds no class row; pass tkmia.data.photos.source_table(...)")
    least = int(objects["test objects"].min())
    fewest = sorted(objects.loc[objects["test objects"] == least, "class"])
    return {"classes": f"{len(objects):d}",
            "train_cutouts": f"{int(objects['train cut-outs'].sum()):d}",
            "test_cutouts": f"{int(objects['test cut-outs'].sum()):d}",
            "train_objects": f"{int(objects['train objects'].sum()):d}",
            "test_objects": f"{int(objects['test objects'].sum()):d}",
            "fewest_test_objects": f"{least:d} ({', '.join(fewest)})",
            "train_backgrounds": f"{int(backgrounds['train cut-outs'].sum()):d}",
            "test_backgrounds": f"{int(backgrounds['test cut-outs'].sum()):d}"}
